//! `create`: set up the container and leave its process waiting for `start`.

use crate::Cli;
use anyhow::Result;
use kura_runtime::process::{self, CreateOpts};
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct CreateArgs {
    /// Container id.
    pub id: String,
    /// Bundle directory (config.json and rootfs).
    #[arg(short, long, default_value = ".")]
    pub bundle: PathBuf,
    /// Unix socket to send the pty master to (process.terminal).
    #[arg(long)]
    pub console_socket: Option<PathBuf>,
    /// File to write the container's pid to.
    #[arg(long)]
    pub pid_file: Option<PathBuf>,
    /// Use MS_MOVE + chroot instead of pivot_root (for ramfs roots).
    #[arg(long)]
    pub no_pivot: bool,
    /// Keep the runtime's session keyring instead of a new one.
    #[arg(long)]
    pub no_new_keyring: bool,
    /// Pass fds 3..3+N to the container process.
    #[arg(long, default_value_t = 0)]
    pub preserve_fds: u32,
}

pub fn opts(cli: &Cli, a: &CreateArgs) -> CreateOpts {
    CreateOpts {
        id: a.id.clone(),
        root: cli.root.clone(),
        bundle: a.bundle.clone(),
        console_socket: a.console_socket.clone(),
        console_fd: None,
        pid_file: a.pid_file.clone(),
        no_pivot: a.no_pivot,
        no_new_keyring: a.no_new_keyring,
        preserve_fds: a.preserve_fds,
        systemd_cgroup: cli.systemd_cgroup,
    }
}

pub fn run(cli: &Cli, a: &CreateArgs) -> Result<()> {
    super::harden();
    process::create(opts(cli, a))?;
    Ok(())
}
