//! Durable records in the bundle: the init's exit status, written the moment it is
//! reaped (so a manager that was down at the time can still learn it, even if this
//! shim is gone too), and the runtime settings the `delete` bootstrap command needs to
//! clean up after a shim that died.
//!
//! Written to a temporary file and renamed: a reader sees either no record or a whole
//! one, whichever process dies when (see `write_atomic` for why not fsynced).

use crate::time::{parse_rfc3339_nano, rfc3339_nano};
use serde_json::{json, Value};
use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExitRecord {
    pub id: String,
    pub pid: u32,
    pub exit_status: u32,
    pub exited_at: SystemTime,
}

/// Replaces `path` whole (a reader sees the old or the new content, never a part),
/// which is what survives a crash of the shim or the manager. Not fsynced: these files
/// live in the bundle, under the state dir, and describe processes that a power loss
/// or reboot ends anyway; each fsync cost 1-2 ms on the path of every container start.
pub fn write_atomic(path: &Path, data: &[u8]) -> io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let tmp = dir.join(format!(
        ".{}.tmp",
        path.file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("record")
    ));
    let mut f = File::create(&tmp)?;
    f.write_all(data)?;
    drop(f);
    std::fs::rename(&tmp, path)
}

impl ExitRecord {
    pub fn to_json(&self) -> String {
        json!({
            "id": self.id,
            "pid": self.pid,
            "exit_status": self.exit_status,
            "exited_at": rfc3339_nano(self.exited_at),
        })
        .to_string()
    }

    pub fn parse(text: &str) -> Option<ExitRecord> {
        let v: Value = serde_json::from_str(text).ok()?;
        Some(ExitRecord {
            id: v["id"].as_str()?.to_string(),
            pid: v["pid"].as_u64()? as u32,
            exit_status: v["exit_status"].as_u64()? as u32,
            exited_at: parse_rfc3339_nano(v["exited_at"].as_str()?)?,
        })
    }

    pub fn write(&self, path: &Path) -> io::Result<()> {
        write_atomic(path, (self.to_json() + "\n").as_bytes())
    }

    pub fn read(path: &Path) -> Option<ExitRecord> {
        ExitRecord::parse(&std::fs::read_to_string(path).ok()?)
    }
}

/// What `delete` needs when the shim that created the container is gone.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ShimState {
    pub runtime: PathBuf,
    pub runtime_root: PathBuf,
    pub systemd_cgroup: bool,
    /// Whether the shim mounted the rootfs (and so must unmount it).
    pub mounted_rootfs: bool,
}

impl ShimState {
    pub fn write(&self, path: &Path) -> io::Result<()> {
        let v = json!({
            "runtime": self.runtime,
            "runtime_root": self.runtime_root,
            "systemd_cgroup": self.systemd_cgroup,
            "mounted_rootfs": self.mounted_rootfs,
        });
        write_atomic(path, v.to_string().as_bytes())
    }

    pub fn read(path: &Path) -> Option<ShimState> {
        let v: Value = serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()?;
        Some(ShimState {
            runtime: PathBuf::from(v["runtime"].as_str()?),
            runtime_root: PathBuf::from(v["runtime_root"].as_str()?),
            systemd_cgroup: v["systemd_cgroup"].as_bool().unwrap_or(false),
            mounted_rootfs: v["mounted_rootfs"].as_bool().unwrap_or(false),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn exit_record_round_trip() {
        let dir = std::env::temp_dir().join(format!("kura-shim-exit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let r = ExitRecord {
            id: "c1".into(),
            pid: 42,
            exit_status: 137,
            exited_at: UNIX_EPOCH + Duration::new(1_700_000_000, 123),
        };
        let p = dir.join("exit.json");
        r.write(&p).unwrap();
        assert_eq!(ExitRecord::read(&p), Some(r));
        let s = ShimState {
            runtime: "/usr/sbin/runc".into(),
            runtime_root: "/run/x".into(),
            systemd_cgroup: false,
            mounted_rootfs: true,
        };
        let sp = dir.join("state.json");
        s.write(&sp).unwrap();
        assert_eq!(ShimState::read(&sp), Some(s));
        let _ = std::fs::remove_dir_all(dir);
    }
}
