//! `run`: create + start, then (unless --detach) wait for the container, forward
//! our signals to it, and exit with its exit code.

use crate::Cli;
use anyhow::{Context, Result};
use kura_runtime::{container, process, terminal};
use std::os::fd::{AsRawFd, OwnedFd};

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub create: super::create::CreateArgs,
    /// Return once the container is started.
    #[arg(short, long)]
    pub detach: bool,
    /// Keep the container's state after it exits.
    #[arg(long)]
    pub keep: bool,
}

pub fn run(cli: &Cli, a: &Args) -> Result<i32> {
    super::harden();
    let mut opts = super::create::opts(cli, &a.create);
    let mut mask = None;
    let mut ours = None;
    if !a.detach {
        // Orphans of a container without its own pid namespace are reparented to us.
        unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
        mask = Some(process::supervise::block_signals());
        if opts.console_socket.is_none() {
            // Used only if the config asks for a terminal: we proxy it ourselves.
            let (o, t) = std::os::unix::net::UnixStream::pair().context("socketpair")?;
            ours = Some(OwnedFd::from(o));
            opts.console_fd = Some(OwnedFd::from(t));
        }
    }
    let root = cli.root.clone();
    let id = a.create.id.clone();
    let (st, tty) = process::create(opts)?;
    let master = match (&ours, tty && a.create.console_socket.is_none() && !a.detach) {
        (Some(sock), true) => Some(terminal::recv_fd(sock.as_raw_fd())?),
        _ => None,
    };
    kura_runtime::log::step("created");
    if let Err(e) = container::start(&root, &id) {
        let _ = container::delete(&root, &id, true);
        return Err(e);
    }
    kura_runtime::log::step("started");
    let Some(set) = mask else { return Ok(0) };
    let code = process::supervise::wait(st.pid, &set, master)?;
    kura_runtime::log::step("exited");
    if !a.keep {
        container::delete(&root, &id, true)?;
    }
    kura_runtime::log::step("deleted");
    Ok(code)
}
