//! `exec`: a new process in a running container, from `--process FILE` or from
//! the container's own process with the given args and overrides.

use anyhow::{bail, Context, Result};
use kura_runtime::process::exec::{self, ExecOpts};
use kura_runtime::state::State;
use oci_spec::runtime::{Capabilities, Capability, Process};
use std::path::{Path, PathBuf};
use std::str::FromStr;

#[derive(clap::Args)]
pub struct Args {
    pub id: String,
    /// The command and its arguments (unless --process).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
    /// A process.json (the config's `process` object) to run.
    #[arg(short, long)]
    pub process: Option<PathBuf>,
    #[arg(short, long)]
    pub tty: bool,
    #[arg(short, long)]
    pub detach: bool,
    #[arg(long)]
    pub pid_file: Option<PathBuf>,
    #[arg(long)]
    pub console_socket: Option<PathBuf>,
    #[arg(long)]
    pub cwd: Option<PathBuf>,
    /// KEY=VALUE, repeatable.
    #[arg(short, long)]
    pub env: Vec<String>,
    /// UID[:GID].
    #[arg(short, long)]
    pub user: Option<String>,
    /// Extra supplementary group, repeatable.
    #[arg(short = 'g', long)]
    pub additional_gids: Vec<u32>,
    /// Extra capability, repeatable.
    #[arg(short, long)]
    pub cap: Vec<String>,
    #[arg(long)]
    pub no_new_privs: bool,
    #[arg(long, default_value_t = 0)]
    pub preserve_fds: u32,
    #[arg(long)]
    pub apparmor: Option<String>,
    #[arg(long)]
    pub process_label: Option<String>,
    /// Accepted for runc compatibility.
    #[arg(long, hide = true)]
    pub ignore_paused: bool,
}

fn from_args(root: &Path, a: &Args) -> Result<Process> {
    if a.command.is_empty() {
        bail!("exec: give a command or --process FILE");
    }
    let st = State::load(root, &a.id)?;
    let spec = kura_runtime::container::saved_spec(root, &st)?;
    let mut p = spec
        .process()
        .clone()
        .context("container config has no process")?;
    p.set_args(Some(a.command.clone()));
    p.set_terminal(Some(a.tty));
    p.set_console_size(None);
    if let Some(c) = &a.cwd {
        p.set_cwd(c.clone());
    }
    let mut env = p.env().clone().unwrap_or_default();
    env.extend(a.env.iter().cloned());
    p.set_env(Some(env));
    if let Some(u) = &a.user {
        let (uid, gid) = match u.split_once(':') {
            Some((u, g)) => (u.parse::<u32>()?, g.parse::<u32>()?),
            None => (u.parse::<u32>().context("--user: UID[:GID] as numbers")?, 0),
        };
        let mut user = p.user().clone();
        user.set_uid(uid);
        user.set_gid(gid);
        p.set_user(user);
    }
    if !a.additional_gids.is_empty() {
        let mut user = p.user().clone();
        user.set_additional_gids(Some(a.additional_gids.clone()));
        p.set_user(user);
    }
    if !a.cap.is_empty() {
        let mut caps = p.capabilities().clone().unwrap_or_default();
        let extra: Capabilities = a
            .cap
            .iter()
            .map(|c| {
                Capability::from_str(c.trim_start_matches("CAP_"))
                    .map_err(|_| anyhow::anyhow!("--cap: unknown capability {c:?}"))
            })
            .collect::<Result<_>>()?;
        let add = |s: &Option<Capabilities>| -> Option<Capabilities> {
            let mut s = s.clone().unwrap_or_default();
            s.extend(extra.iter().copied());
            Some(s)
        };
        caps.set_bounding(add(caps.bounding()));
        caps.set_effective(add(caps.effective()));
        caps.set_permitted(add(caps.permitted()));
        p.set_capabilities(Some(caps));
    }
    if a.no_new_privs {
        p.set_no_new_privileges(Some(true));
    }
    if let Some(ap) = &a.apparmor {
        p.set_apparmor_profile(Some(ap.clone()));
    }
    if let Some(l) = &a.process_label {
        p.set_selinux_label(Some(l.clone()));
    }
    Ok(p)
}

pub fn run(root: &Path, a: &Args) -> Result<i32> {
    super::harden();
    let process = match &a.process {
        Some(f) => {
            let raw =
                std::fs::read(f).with_context(|| format!("--process: read {}", f.display()))?;
            let de = &mut serde_json::Deserializer::from_slice(&raw);
            serde_path_to_error::deserialize(de).map_err(|e| {
                anyhow::anyhow!("--process {}: {}: {}", f.display(), e.path(), e.inner())
            })?
        }
        None => from_args(root, a)?,
    };
    exec::exec(
        root,
        &a.id,
        ExecOpts {
            process,
            console_socket: a.console_socket.clone(),
            pid_file: a.pid_file.clone(),
            detach: a.detach,
            preserve_fds: a.preserve_fds,
        },
    )
}
