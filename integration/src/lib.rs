//! Shared helpers for kura's end-to-end tests: where the real binaries are, private
//! scratch directories that clean up after themselves, and busybox bundles made by `hack/`.
//!
//! Every test gets its own ids and directories so the whole suite runs in parallel.

pub mod images;

pub mod net;

pub mod runtime;

pub mod shim;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

/// The workspace root (the integration crate lives one level below it).
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("integration crate has a parent")
        .to_path_buf()
}

/// Path of one of kura's binaries. `KURA_BIN_DIR` overrides `target/release`.
pub fn bin(name: &str) -> PathBuf {
    let dir = std::env::var_os("KURA_BIN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("target/release"));
    let p = dir.join(name);
    assert!(
        p.exists(),
        "{} not built: run `cargo build --release` first (or set KURA_BIN_DIR)",
        p.display()
    );
    p
}

/// A script from `hack/`.
pub fn hack(script: &str) -> PathBuf {
    workspace().join("hack").join(script)
}

/// True when running as root; integration tests need real namespaces, mounts and cgroups.
pub fn is_root() -> bool {
    unsafe { libc::geteuid() == 0 }
}

/// Skips the calling test with a visible reason, never a silent pass.
#[macro_export]
macro_rules! skip {
    ($($arg:tt)*) => {{
        eprintln!("SKIPPED: {}", format!($($arg)*));
        return;
    }};
}

/// Skips the test when not root.
#[macro_export]
macro_rules! require_root {
    () => {
        if !$crate::is_root() {
            $crate::skip!("needs root (namespaces, mounts, cgroups)");
        }
    };
}

/// An id unique to this process and call, safe to use as a container id, cgroup name,
/// network name or registry repository.
pub fn unique_id(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// A scratch directory removed (after unmounting anything left below it) on drop.
pub struct Scratch {
    path: PathBuf,
}

impl Scratch {
    pub fn new(prefix: &str) -> Scratch {
        let base = std::env::var_os("KURA_TEST_TMP")
            .map(PathBuf::from)
            .unwrap_or_else(std::env::temp_dir);
        let path = base.join(unique_id(&format!("kura-{prefix}")));
        std::fs::create_dir_all(&path).expect("create scratch dir");
        Scratch { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn join(&self, p: impl AsRef<Path>) -> PathBuf {
        self.path.join(p)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        unmount_below(&self.path);
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// Lazily unmounts every mount at or below `dir`, deepest first.
pub fn unmount_below(dir: &Path) {
    let Ok(mounts) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return;
    };
    let prefix = dir.to_string_lossy().to_string();
    let mut points: Vec<String> = mounts
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|m| *m == prefix || m.starts_with(&format!("{prefix}/")))
        .map(str::to_owned)
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for p in points {
        if let Ok(c) = std::ffi::CString::new(p) {
            unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
        }
    }
}

/// Builds a busybox rootfs at `dir` with `hack/mkrootfs.sh`.
pub fn busybox_rootfs(dir: &Path) {
    let st = Command::new(hack("mkrootfs.sh"))
        .arg(dir)
        .status()
        .expect("run hack/mkrootfs.sh");
    assert!(st.success(), "hack/mkrootfs.sh {} failed", dir.display());
}
