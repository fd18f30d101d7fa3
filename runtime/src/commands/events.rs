//! `events [--stats] [--interval 5s] ID`.

use anyhow::{bail, Result};
use std::path::Path;
use std::time::Duration;

#[derive(clap::Args)]
pub struct Args {
    /// Print stats once and exit.
    #[arg(long)]
    pub stats: bool,
    /// Time between stats (5s, 500ms, 1m).
    #[arg(long, default_value = "5s")]
    pub interval: String,
    pub id: String,
}

pub fn parse_duration(s: &str) -> Result<Duration> {
    let (num, unit) = s.split_at(
        s.find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(s.len()),
    );
    let n: f64 = num
        .parse()
        .map_err(|_| anyhow::anyhow!("--interval: bad duration {s:?}"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" | "" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => bail!("--interval: unknown unit in {s:?}"),
    };
    if secs <= 0.0 {
        bail!("--interval: must be positive");
    }
    Ok(Duration::from_secs_f64(secs))
}

pub fn run(root: &Path, a: &Args) -> Result<()> {
    let interval = parse_duration(&a.interval)?;
    let mut out = std::io::stdout().lock();
    kura_runtime::container::events(root, &a.id, interval, a.stats, &mut out)
}
