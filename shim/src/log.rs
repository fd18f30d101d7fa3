//! The shim's own log: lines on stderr, which the daemon points at the `log` FIFO
//! containerd reads from the bundle (or /dev/null when nobody reads it).

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::SystemTime;

static DEBUG: AtomicBool = AtomicBool::new(false);

pub fn set_debug(on: bool) {
    DEBUG.store(on, Ordering::Relaxed);
}

fn line(level: &str, msg: &str) {
    let ts = crate::time::rfc3339_nano(SystemTime::now());
    let _ = writeln!(
        std::io::stderr().lock(),
        "time=\"{ts}\" level={level} msg={msg:?} runtime=io.containerd.kura.v2"
    );
}

pub fn debug(msg: &str) {
    if DEBUG.load(Ordering::Relaxed) {
        line("debug", msg);
    }
}

pub fn info(msg: &str) {
    line("info", msg);
}

pub fn warn(msg: &str) {
    line("warning", msg);
}
