//! OCI hooks: each gets the container state on stdin, its own args and env, and is
//! killed when its timeout passes. Where a hook runs (runtime or container
//! namespace) is decided by the caller; this module only runs one list.

use anyhow::{bail, Context, Result};
use oci_spec::runtime::{Hook, Hooks};
use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Clone, Copy, Debug)]
pub enum Kind {
    Prestart,
    CreateRuntime,
    CreateContainer,
    StartContainer,
    Poststart,
    Poststop,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Prestart => "prestart",
            Kind::CreateRuntime => "createRuntime",
            Kind::CreateContainer => "createContainer",
            Kind::StartContainer => "startContainer",
            Kind::Poststart => "poststart",
            Kind::Poststop => "poststop",
        }
    }

    pub fn list(self, h: &Hooks) -> &[Hook] {
        #[allow(deprecated)]
        let l = match self {
            Kind::Prestart => h.prestart(),
            Kind::CreateRuntime => h.create_runtime(),
            Kind::CreateContainer => h.create_container(),
            Kind::StartContainer => h.start_container(),
            Kind::Poststart => h.poststart(),
            Kind::Poststop => h.poststop(),
        };
        l.as_deref().unwrap_or(&[])
    }
}

pub fn any(hooks: Option<&Hooks>, kinds: &[Kind]) -> bool {
    hooks.is_some_and(|h| kinds.iter().any(|k| !k.list(h).is_empty()))
}

/// Runs every hook of `kind` in order; the first failure stops the list.
pub fn run(hooks: Option<&Hooks>, kind: Kind, state_json: &str) -> Result<()> {
    let Some(h) = hooks else { return Ok(()) };
    for (i, hook) in kind.list(h).iter().enumerate() {
        run_one(hook, state_json)
            .with_context(|| format!("hooks.{}[{i}] ({})", kind.name(), hook.path().display()))?;
    }
    Ok(())
}

/// Runs all hooks of `kind`, logging failures instead of stopping (poststart and
/// poststop: the spec says a failure there is only a warning).
pub fn run_warn(hooks: Option<&Hooks>, kind: Kind, state_json: &str) {
    let Some(h) = hooks else { return };
    for (i, hook) in kind.list(h).iter().enumerate() {
        if let Err(e) = run_one(hook, state_json) {
            crate::log::warn(&format!(
                "hooks.{}[{i}] ({}): {e:#}",
                kind.name(),
                hook.path().display()
            ));
        }
    }
}

fn run_one(hook: &Hook, state_json: &str) -> Result<()> {
    let mut cmd = Command::new(hook.path());
    let args = hook.args().as_deref().unwrap_or(&[]);
    if let Some((argv0, rest)) = args.split_first() {
        cmd.arg0(argv0).args(rest);
    }
    cmd.env_clear();
    for e in hook.env().iter().flatten() {
        if let Some((k, v)) = e.split_once('=') {
            cmd.env(k, v);
        }
    }
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().context("cannot start hook")?;
    // A hook that never reads stdin must not block us: ignore EPIPE.
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(state_json.as_bytes());
    }
    let deadline = hook
        .timeout()
        .map(|t| Instant::now() + Duration::from_secs(t.max(1) as u64));
    let status = wait(&mut child, deadline)?;
    if !status.success() {
        let mut err = String::new();
        if let Some(mut e) = child.stderr.take() {
            let _ = e.by_ref().take(4096).read_to_string(&mut err);
        }
        let err = err.trim();
        if err.is_empty() {
            bail!("hook failed: {status}");
        }
        bail!("hook failed: {status}: {err}");
    }
    Ok(())
}

fn wait(
    child: &mut std::process::Child,
    deadline: Option<Instant>,
) -> Result<std::process::ExitStatus> {
    let Some(deadline) = deadline else {
        return Ok(child.wait()?);
    };
    // pidfd lets us sleep in poll until exit or timeout instead of spinning.
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, child.id() as libc::pid_t, 0) } as i32;
    loop {
        if let Some(s) = child.try_wait()? {
            if pidfd >= 0 {
                unsafe { libc::close(pidfd) };
            }
            return Ok(s);
        }
        let now = Instant::now();
        if now >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            if pidfd >= 0 {
                unsafe { libc::close(pidfd) };
            }
            bail!("hook timed out");
        }
        let ms = (deadline - now).as_millis().min(i32::MAX as u128) as i32;
        if pidfd >= 0 {
            let mut p = libc::pollfd {
                fd: pidfd,
                events: libc::POLLIN,
                revents: 0,
            };
            unsafe { libc::poll(&mut p, 1, ms) };
        } else {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}
