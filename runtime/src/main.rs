//! kura-runtime: an OCI runtime with runc's command line, so containerd, podman and
//! conformance suites can drive it unchanged.

mod commands;

use clap::{Parser, Subcommand, ValueEnum};
use kura_runtime::log;
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "kura-runtime",
    version,
    about = "kura's OCI runtime (runc-compatible CLI)"
)]
pub struct Cli {
    /// Directory for container state.
    #[arg(
        long,
        global = true,
        default_value = "/run/kura-runtime",
        env = "KURA_RUNTIME_ROOT"
    )]
    pub root: PathBuf,
    /// Log file (errors also go to stderr).
    #[arg(long, global = true)]
    pub log: Option<PathBuf>,
    /// Log line format.
    #[arg(long, global = true, value_enum, default_value = "text")]
    pub log_format: LogFormat,
    /// Log debug messages.
    #[arg(long, global = true)]
    pub debug: bool,
    /// Treat cgroupsPath as systemd's slice:prefix:name.
    #[arg(long, global = true)]
    pub systemd_cgroup: bool,
    /// Accepted for runc compatibility (checkpointing is not supported).
    #[arg(long, global = true, hide = true)]
    pub criu: Option<String>,
    #[command(subcommand)]
    pub cmd: Cmd,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
pub enum Cmd {
    /// Create a container from a bundle; its process waits for `start`.
    Create(commands::create::CreateArgs),
    /// Start a created container's process.
    Start(commands::simple::IdArg),
    /// Print a container's OCI state as JSON.
    State(commands::simple::IdArg),
    /// Send a signal to a container's init (or all its processes).
    Kill(commands::kill::Args),
    /// Delete a container and everything it holds.
    Delete(commands::delete::Args),
    /// Create and start a container, and wait for it.
    Run(commands::run::Args),
    /// Run a new process inside a container.
    Exec(commands::exec::Args),
    /// List the processes of a container.
    Ps(commands::ps::Args),
    /// List containers.
    List(commands::list::Args),
    /// Freeze a container's processes.
    Pause(commands::simple::IdArg),
    /// Thaw a paused container.
    Resume(commands::simple::IdArg),
    /// Print resource statistics and OOM events.
    Events(commands::events::Args),
    /// Change a container's resource limits.
    Update(commands::update::Args),
    /// Write a default config.json.
    Spec(commands::spec::Args),
    /// Print what this runtime supports (runtime-spec features.md).
    Features,
}

fn main() {
    kura_runtime::log::step("main");
    let cli = Cli::parse();
    let fmt = match cli.log_format {
        LogFormat::Text => log::Format::Text,
        LogFormat::Json => log::Format::Json,
    };
    if let Err(e) = log::init(cli.log.as_deref(), fmt, cli.debug) {
        eprintln!("kura-runtime: --log: {e}");
        std::process::exit(1);
    }
    let code = match commands::dispatch(&cli) {
        Ok(code) => code,
        Err(e) => {
            let msg = format!("{e:#}");
            log::error(&msg);
            eprintln!("kura-runtime: {msg}");
            1
        }
    };
    std::process::exit(code);
}
