//! `spec`: write a default config.json into the bundle directory.

use anyhow::{bail, Context, Result};
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// Generate a config for a rootless container (user namespace, no cgroups).
    #[arg(long)]
    pub rootless: bool,
    #[arg(short, long, default_value = ".")]
    pub bundle: PathBuf,
}

pub fn run(a: &Args) -> Result<()> {
    let p = a.bundle.join("config.json");
    if p.exists() {
        bail!("{} already exists; remove it first", p.display());
    }
    let v = kura_runtime::template::default_spec(a.rootless);
    std::fs::write(&p, serde_json::to_string_pretty(&v)? + "\n")
        .with_context(|| format!("write {}", p.display()))?;
    Ok(())
}
