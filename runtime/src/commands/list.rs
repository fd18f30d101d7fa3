//! `list`: every container under --root, as a table or runc's JSON.

use anyhow::Result;
use kura_runtime::state::{self, State};
use std::path::Path;

#[derive(clap::Args)]
pub struct Args {
    #[arg(short, long, default_value = "table")]
    pub format: String,
    /// Print only ids.
    #[arg(short, long)]
    pub quiet: bool,
}

pub fn run(root: &Path, a: &Args) -> Result<()> {
    let mut rows = Vec::new();
    for id in state::list_ids(root)? {
        if let Ok(st) = State::load(root, &id) {
            rows.push(st.oci_json(root));
        }
    }
    if a.quiet {
        for r in &rows {
            println!("{}", r["id"].as_str().unwrap_or(""));
        }
        return Ok(());
    }
    if a.format == "json" {
        println!("{}", serde_json::to_string(&rows)?);
        return Ok(());
    }
    println!(
        "{:<20} {:<8} {:<10} {:<40} {:<32} OWNER",
        "ID", "PID", "STATUS", "BUNDLE", "CREATED"
    );
    for r in rows {
        println!(
            "{:<20} {:<8} {:<10} {:<40} {:<32} {}",
            r["id"].as_str().unwrap_or(""),
            r["pid"],
            r["status"].as_str().unwrap_or(""),
            r["bundle"].as_str().unwrap_or(""),
            r["created"].as_str().unwrap_or(""),
            r["owner"].as_str().unwrap_or("")
        );
    }
    Ok(())
}
