//! Driving a runc-compatible OCI runtime (kura-runtime, runc, crun, ...) by its command
//! line. Errors come from the runtime's `--log` in JSON, where runc-compatible runtimes
//! write the reason a command failed, falling back to its stderr.

use crate::command::{self, Output};
use crate::error::{Error, Result};
use crate::reaper::Reaper;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

#[derive(Clone, Debug)]
pub struct Runtime {
    pub binary: PathBuf,
    pub root: PathBuf,
    pub systemd_cgroup: bool,
    /// `--log` file; the bundle's log.json.
    pub log: PathBuf,
}

/// The container's stdio as the runtime should hand it to the process it creates.
pub struct ProcStdio {
    pub stdin: Stdio,
    pub stdout: Stdio,
    pub stderr: Stdio,
}

impl ProcStdio {
    pub fn null() -> ProcStdio {
        ProcStdio {
            stdin: Stdio::null(),
            stdout: Stdio::null(),
            stderr: Stdio::null(),
        }
    }
}

/// Finds the default runtime: next to the shim binary, then on PATH.
pub fn default_binary() -> PathBuf {
    let name = "kura-runtime";
    if let Some(dir) = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(Path::to_path_buf))
    {
        let p = dir.join(name);
        if p.exists() {
            return p;
        }
    }
    find_in_path(name).unwrap_or_else(|| PathBuf::from(name))
}

pub fn find_in_path(name: &str) -> Option<PathBuf> {
    if name.contains('/') {
        return Some(PathBuf::from(name));
    }
    std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    })
}

impl Runtime {
    pub fn cmd(&self) -> Command {
        let mut c = Command::new(&self.binary);
        c.arg("--root").arg(&self.root);
        c.arg("--log")
            .arg(&self.log)
            .arg("--log-format")
            .arg("json");
        if self.systemd_cgroup {
            c.arg("--systemd-cgroup");
        }
        c
    }

    fn check(&self, what: &str, out: std::io::Result<Output>) -> Result<Output> {
        let out = out.map_err(|e| Error::io(format!("run {}", self.binary.display()), e))?;
        if out.status == 0 {
            return Ok(out);
        }
        let reason = self
            .last_error()
            .or_else(|| {
                let s = String::from_utf8_lossy(&out.stderr).trim().to_string();
                (!s.is_empty()).then_some(s)
            })
            .unwrap_or_else(|| format!("exit status {}", out.status));
        let msg = format!("{} {what}: {reason}", self.binary.display());
        // containerd turns these into errdefs; "not running" and "does not exist" are
        // the answers clients test for.
        let lower = reason.to_lowercase();
        Err(
            if lower.contains("does not exist") || lower.contains("not found") {
                Error::not_found(msg)
            } else if lower.contains("not running") || lower.contains("is stopped") {
                Error::precondition(msg)
            } else {
                Error::internal(msg)
            },
        )
    }

    /// The message of the last error line the runtime logged, if any.
    fn last_error(&self) -> Option<String> {
        let text = std::fs::read_to_string(&self.log).ok()?;
        text.lines().rev().find_map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).ok()?;
            (v["level"] == "error").then(|| v["msg"].as_str().unwrap_or_default().to_string())
        })
    }

    /// Empties the log so an error found after a command is that command's.
    fn reset_log(&self) {
        let _ = std::fs::write(&self.log, b"");
    }

    fn simple(&self, reaper: &Reaper, args: &[&str]) -> Result<Output> {
        self.reset_log();
        let mut c = self.cmd();
        c.args(args);
        let out = command::run(reaper, &mut c, b"", true);
        self.check(args[0], out)
    }

    /// `create`: the container's init is left waiting for `start`. Its stdio is the
    /// runtime's stdio, which the runtime hands on.
    pub fn create(
        &self,
        reaper: &Reaper,
        id: &str,
        bundle: &Path,
        pid_file: &Path,
        console_socket: Option<&Path>,
        stdio: ProcStdio,
    ) -> Result<()> {
        self.reset_log();
        let mut c = self.cmd();
        c.arg("create")
            .arg("--bundle")
            .arg(bundle)
            .arg("--pid-file")
            .arg(pid_file);
        if let Some(s) = console_socket {
            c.arg("--console-socket").arg(s);
        }
        c.arg(id);
        c.stdin(stdio.stdin)
            .stdout(stdio.stdout)
            .stderr(stdio.stderr);
        let out = command::run_keep_stdio(reaper, &mut c);
        drop(c);
        self.check("create", out).map(|_| ())
    }

    pub fn start(&self, reaper: &Reaper, id: &str) -> Result<()> {
        self.simple(reaper, &["start", id]).map(|_| ())
    }

    /// `exec --detach`: runs the process described by `process_json` in the container.
    pub fn exec(
        &self,
        reaper: &Reaper,
        id: &str,
        process_json: &Path,
        pid_file: &Path,
        console_socket: Option<&Path>,
        stdio: ProcStdio,
    ) -> Result<()> {
        self.reset_log();
        let mut c = self.cmd();
        c.arg("exec")
            .arg("--detach")
            .arg("--process")
            .arg(process_json);
        c.arg("--pid-file").arg(pid_file);
        if let Some(s) = console_socket {
            c.arg("--console-socket").arg(s);
        }
        c.arg(id);
        c.stdin(stdio.stdin)
            .stdout(stdio.stdout)
            .stderr(stdio.stderr);
        let out = command::run_keep_stdio(reaper, &mut c);
        drop(c);
        self.check("exec", out).map(|_| ())
    }

    pub fn kill(&self, reaper: &Reaper, id: &str, signal: u32, all: bool) -> Result<()> {
        let sig = signal.to_string();
        let mut args = vec!["kill"];
        if all {
            args.push("--all");
        }
        args.push(id);
        args.push(&sig);
        self.simple(reaper, &args).map(|_| ())
    }

    pub fn delete(&self, reaper: &Reaper, id: &str, force: bool) -> Result<()> {
        let mut args = vec!["delete"];
        if force {
            args.push("--force");
        }
        args.push(id);
        self.simple(reaper, &args).map(|_| ())
    }

    pub fn pause(&self, reaper: &Reaper, id: &str) -> Result<()> {
        self.simple(reaper, &["pause", id]).map(|_| ())
    }

    pub fn resume(&self, reaper: &Reaper, id: &str) -> Result<()> {
        self.simple(reaper, &["resume", id]).map(|_| ())
    }

    pub fn update(&self, reaper: &Reaper, id: &str, resources_json: &Path) -> Result<()> {
        let r = resources_json.to_string_lossy();
        self.simple(reaper, &["update", "--resources", &r, id])
            .map(|_| ())
    }

    /// The pids of every process in the container.
    pub fn ps(&self, reaper: &Reaper, id: &str) -> Result<Vec<u32>> {
        let out = self.simple(reaper, &["ps", "--format", "json", id])?;
        let text = String::from_utf8_lossy(&out.stdout);
        let text = text.trim();
        if text.is_empty() || text == "null" {
            return Ok(Vec::new());
        }
        serde_json::from_str(text).map_err(|e| Error::internal(format!("ps output {text:?}: {e}")))
    }
}
