//! Commands that take only a container id.

use anyhow::Result;
use kura_runtime::state::State;
use std::path::Path;

#[derive(clap::Args)]
pub struct IdArg {
    pub id: String,
}

pub fn state(root: &Path, id: &str) -> Result<()> {
    let st = State::load(root, id)?;
    println!("{}", serde_json::to_string_pretty(&st.oci_json(root))?);
    Ok(())
}
