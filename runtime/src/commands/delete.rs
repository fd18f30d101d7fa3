//! `delete [--force] ID`.

use anyhow::Result;
use std::path::Path;

#[derive(clap::Args)]
pub struct Args {
    /// Kill a running container first.
    #[arg(short, long)]
    pub force: bool,
    pub id: String,
}

pub fn run(root: &Path, a: &Args) -> Result<()> {
    kura_runtime::container::delete(root, &a.id, a.force)
}
