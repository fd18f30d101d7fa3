//! The container's record under `--root`: what later commands need to find and
//! manage it, written atomically so a crash never leaves a half-written file.
//!
//! The status is never stored: it is derived from the live system each time
//! (is the init process alive and the same one, does the exec fifo exist, is the
//! cgroup frozen), so it cannot go stale when a process dies behind our back.

use crate::cgroups::Cgroup;
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

pub const STATE_FILE: &str = "state.json";
pub const CONFIG_FILE: &str = "config.json";
pub const EXEC_FIFO: &str = "exec.fifo";

#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct State {
    pub id: String,
    pub pid: i32,
    /// Start time of the init process (field 22 of /proc/PID/stat), to tell our process
    /// from an unrelated one that reused its pid.
    pub pid_start: u64,
    pub bundle: PathBuf,
    pub rootfs: PathBuf,
    pub created: String,
    #[serde(default)]
    pub annotations: HashMap<String, String>,
    pub cgroup: Option<Cgroup>,
    /// User that created the container, as runc reports it in `list`.
    #[serde(default)]
    pub owner: String,
    /// Whether `start` has to read config.json (poststart hooks, or no process): most
    /// containers need neither, and parsing the spec is a third of `start`'s CPU.
    /// Absent in states written before it existed: then read it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_needs_spec: Option<bool>,
    /// The same for `delete` (poststop hooks, or no mount namespace of its own).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delete_needs_spec: Option<bool>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Creating,
    Created,
    Running,
    Paused,
    Stopped,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Creating => "creating",
            Status::Created => "created",
            Status::Running => "running",
            Status::Paused => "paused",
            Status::Stopped => "stopped",
        }
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Container ids become directory and cgroup names: keep them to runc's alphabet.
pub fn validate_id(id: &str) -> Result<()> {
    if id.is_empty() || id.len() > 1024 {
        bail!("container id must be 1 to 1024 characters");
    }
    if id == "." || id == ".." {
        bail!("invalid container id {id:?}");
    }
    if !id
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'+' | b'-' | b'.'))
    {
        bail!("invalid container id {id:?}: only letters, digits and _ + - . are allowed");
    }
    Ok(())
}

pub fn container_dir(root: &Path, id: &str) -> PathBuf {
    root.join(id)
}

impl State {
    pub fn load(root: &Path, id: &str) -> Result<State> {
        validate_id(id)?;
        let dir = container_dir(root, id);
        let p = dir.join(STATE_FILE);
        let raw = match std::fs::read(&p) {
            Ok(r) => r,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if dir.exists() {
                    bail!("container {id} is still being created");
                }
                bail!("container {id} does not exist");
            }
            Err(e) => return Err(e).with_context(|| format!("read {}", p.display())),
        };
        serde_json::from_slice(&raw).with_context(|| format!("corrupt state {}", p.display()))
    }

    pub fn save(&self, root: &Path) -> Result<()> {
        let dir = container_dir(root, &self.id);
        let tmp = dir.join(".state.json.tmp");
        let mut f =
            std::fs::File::create(&tmp).with_context(|| format!("create {}", tmp.display()))?;
        f.write_all(&serde_json::to_vec(self)?)?;
        std::fs::rename(&tmp, dir.join(STATE_FILE)).context("rename state.json")?;
        Ok(())
    }

    pub fn dir(&self, root: &Path) -> PathBuf {
        container_dir(root, &self.id)
    }

    /// Whether the recorded init process is still the one we started and not a zombie.
    pub fn init_alive(&self) -> bool {
        if self.pid <= 0 {
            return false;
        }
        match proc_stat(self.pid) {
            Some((state, start)) => start == self.pid_start && state != 'Z' && state != 'X',
            None => false,
        }
    }

    pub fn status(&self, root: &Path) -> Status {
        if !self.init_alive() {
            return Status::Stopped;
        }
        if self.dir(root).join(EXEC_FIFO).exists() {
            return Status::Created;
        }
        if let Some(cg) = &self.cgroup {
            if cg.is_frozen().unwrap_or(false) {
                return Status::Paused;
            }
        }
        Status::Running
    }

    /// The OCI state JSON, with runc's extra fields (rootfs, created, owner) that
    /// containerd and podman read.
    pub fn oci_json(&self, root: &Path) -> serde_json::Value {
        let status = self.status(root);
        let pid = if status == Status::Stopped {
            0
        } else {
            self.pid
        };
        serde_json::json!({
            "ociVersion": crate::OCI_VERSION,
            "id": self.id,
            "pid": pid,
            "status": status.as_str(),
            "bundle": self.bundle,
            "rootfs": self.rootfs,
            "created": self.created,
            "owner": self.owner,
            "annotations": self.annotations,
        })
    }

    /// The state the spec hands to hooks on stdin.
    pub fn hook_json(&self, status: Status) -> String {
        serde_json::json!({
            "ociVersion": crate::OCI_VERSION,
            "id": self.id,
            "pid": self.pid,
            "status": status.as_str(),
            "bundle": self.bundle,
            "annotations": self.annotations,
        })
        .to_string()
    }
}

/// (state letter, start time) from /proc/PID/stat. The comm field may hold spaces and
/// parentheses, so parse from the last ')'.
pub fn proc_stat(pid: i32) -> Option<(char, u64)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &s[s.rfind(')')? + 2..];
    let mut it = rest.split(' ');
    let state = it.next()?.chars().next()?;
    // Fields after comm start at 3 (state); starttime is field 22, i.e. the 20th here.
    let start = it.nth(18)?.parse().ok()?;
    Some((state, start))
}

/// Ids of all containers under `root`, sorted.
pub fn list_ids(root: &Path) -> Result<Vec<String>> {
    let mut ids = Vec::new();
    let rd = match std::fs::read_dir(root) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(ids),
        Err(e) => return Err(e).with_context(|| format!("read {}", root.display())),
    };
    for e in rd.flatten() {
        if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            if let Some(n) = e.file_name().to_str() {
                if validate_id(n).is_ok() {
                    ids.push(n.to_owned());
                }
            }
        }
    }
    ids.sort();
    Ok(ids)
}
