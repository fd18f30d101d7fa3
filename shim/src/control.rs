//! What RPC handlers ask of the daemon's main loop (which owns the poll set): watch a
//! cgroup for OOM kills, and exit.

use crate::cgroup::OomWatch;
use std::fs::File;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

pub struct Control {
    wake: File,
    pub(crate) new_watches: Mutex<Vec<OomWatch>>,
    exit: AtomicBool,
}

impl Control {
    pub fn new(wake: File) -> Control {
        Control {
            wake,
            new_watches: Mutex::new(Vec::new()),
            exit: AtomicBool::new(false),
        }
    }

    fn poke(&self) {
        let _ = (&self.wake).write(&[1]);
    }

    pub fn watch_oom(&self, w: OomWatch) {
        self.new_watches
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(w);
        self.poke();
    }

    pub fn request_exit(&self) {
        self.exit.store(true, Ordering::SeqCst);
        self.poke();
    }

    pub fn exit_requested(&self) -> bool {
        self.exit.load(Ordering::SeqCst)
    }
}
