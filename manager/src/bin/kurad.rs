//! kurad: the kura daemon.

use anyhow::Context;
use clap::Parser;
use kura_manager::{config::Config, daemon::Kura};
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "kurad",
    version,
    about = "kura daemon: images, content, registries and snapshots over gRPC"
)]
struct Args {
    /// Unix socket to serve the API on.
    #[arg(long, default_value = "/run/kura/kura.sock")]
    address: PathBuf,
    /// Persistent state: metadata, content, snapshots.
    #[arg(long, default_value = "/var/lib/kura")]
    root: PathBuf,
    /// Runtime state.
    #[arg(long, default_value = "/run/kura")]
    state: PathBuf,
    /// Configuration file (absent = defaults).
    #[arg(long, default_value = "/etc/kura/config.toml")]
    config: PathBuf,
    /// Log level (overrides the config): error, warn, info, debug, trace, or a filter.
    #[arg(long)]
    log_level: Option<String>,
}

fn main() -> anyhow::Result<()> {
    // glibc makes a malloc arena per thread that ever allocates; with a blocking thread
    // per layer that is most of kurad's memory. Two arenas are plenty.
    unsafe { libc::mallopt(libc::M_ARENA_MAX, 2) };
    let args = Args::parse();
    let config = Config::load(&args.config)?;
    let level = args
        .log_level
        .clone()
        .unwrap_or_else(|| config.log_level.clone());
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_new(&level).context("bad log level")?)
        .with_writer(std::io::stderr)
        .init();
    kura_manager::images::layers::set_stall(std::time::Duration::from_secs(
        config.stall_timeout_secs.max(1),
    ));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .max_blocking_threads(64)
        .build()?;
    let res = rt.block_on(async move {
        let k = Kura::open(config, args.root.clone(), args.state.clone())?;
        let k2 = k.clone();
        let rec = tokio::task::spawn_blocking(move || kura_manager::gc::recover(&k2)).await??;
        if !rec.removed_content.is_empty() || !rec.removed_snapshots.is_empty() {
            tracing::info!(
                content = rec.removed_content.len(),
                snapshots = rec.removed_snapshots.len(),
                "recovered from an interrupted run"
            );
        }
        kura_manager::server::serve::serve(k, &args.address).await
    });
    // Work cut off by the shutdown (a blocking unpack thread) is not waited for long.
    rt.shutdown_timeout(std::time::Duration::from_secs(2));
    res
}
