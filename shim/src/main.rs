//! kura-shim: one per container. Speaks containerd's runtime v2 shim protocol, so
//! containerd (as `containerd-shim-kura-v2`, runtime `io.containerd.kura.v2`) and kurad
//! start and drive it the same way. See README.md in this crate for the contract.

mod args;
mod bootstrap;
mod cgroup;
mod command;
mod console;
mod container;
mod control;
mod daemon;
mod error;
mod events;
mod exitfile;
mod log;
mod logfile;
mod mount;
mod options;
mod paths;
mod process;
mod reaper;
mod runtime;
mod service;
mod stdio;
mod time;

use std::io::Write;

fn main() {
    let flags = match args::parse(std::env::args().skip(1)) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("kura-shim: {e}");
            std::process::exit(2);
        }
    };
    if flags.version {
        println!("kura-shim {}", env!("CARGO_PKG_VERSION"));
        return;
    }
    log::set_debug(flags.debug);
    let r = match flags.action.as_deref() {
        Some("start") => bootstrap::start(&flags).map(|addr| {
            // containerd reads the whole output as the address.
            let _ = std::io::stdout().write_all(addr.as_bytes());
        }),
        Some("delete") => bootstrap::delete(&flags).map(|resp| {
            let _ = std::io::stdout().write_all(&resp);
        }),
        Some(other) => Err(format!("unknown action {other:?}")),
        None => daemon::serve(&flags),
    };
    if let Err(e) = r {
        eprintln!("kura-shim: {e}");
        std::process::exit(1);
    }
}
