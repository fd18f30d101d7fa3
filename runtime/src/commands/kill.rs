//! `kill ID [SIGNAL]`: signal names (KILL, SIGKILL, RTMIN+1) or numbers.

use anyhow::Result;
use kura_runtime::container;
use std::path::Path;

#[derive(clap::Args)]
pub struct Args {
    /// Signal every process in the container's cgroup, not just init.
    #[arg(short, long)]
    pub all: bool,
    pub id: String,
    #[arg(default_value = "SIGTERM")]
    pub signal: String,
}

pub fn run(root: &Path, a: &Args) -> Result<()> {
    let sig = container::signal_number(&a.signal)?;
    container::kill(root, &a.id, sig, a.all)
}
