//! Where the shim keeps things. Sockets live under a short run directory (a unix socket
//! path is limited to 108 bytes, bundle paths are not); everything about one container
//! lives in its bundle directory, which containerd and kurad both already own and clean.

use std::path::{Path, PathBuf};

/// `KURA_SHIM_RUN_DIR` (for tests with private state) or `/run/kura`.
pub fn run_dir() -> PathBuf {
    std::env::var_os("KURA_SHIM_RUN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/run/kura"))
}

/// The ttrpc socket of the shim for (manager address, namespace, id). Deterministic, so
/// `start` can find a shim already serving the container and `delete` can remove it.
pub fn socket_path(address: &str, namespace: &str, id: &str) -> PathBuf {
    let key = format!("{address}\0{namespace}\0{id}");
    run_dir()
        .join("s")
        .join(format!("{:032x}", fnv1a_128(key.as_bytes())))
}

/// Creates the socket directory, private to root: whoever can connect to a shim can
/// run processes in its container.
pub fn make_socket_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
}

pub fn socket_address(path: &Path) -> String {
    format!("unix://{}", path.display())
}

/// The filesystem path behind `unix:///p` (or a bare path).
pub fn address_path(addr: &str) -> &str {
    addr.strip_prefix("unix://").unwrap_or(addr)
}

/// Files the shim writes in the bundle (containerd's conventions first).
pub mod bundle {
    /// The shim's ttrpc address, read by containerd 1.6 when it restarts.
    pub const ADDRESS: &str = "address";
    pub const SHIM_PID: &str = "shim.pid";
    /// The container init's pid, as the OCI runtime wrote it.
    pub const INIT_PID: &str = "init.pid";
    /// The init's exit, written durably when it is reaped (see `exitfile`).
    pub const EXIT: &str = "exit.json";
    /// Runtime binary/root/rootfs state the `delete` bootstrap command needs.
    pub const STATE: &str = "kura-shim.json";
    /// The OCI runtime's JSON log, where runc-compatible runtimes put their errors.
    pub const RUNTIME_LOG: &str = "log.json";
    /// A FIFO containerd creates and reads; the shim's own log goes there.
    pub const SHIM_LOG_FIFO: &str = "log";
}

/// FNV-1a, 128 bits: no hashing crate for one short key, and 128 bits make a
/// collision between two live containers' socket names practically impossible.
fn fnv1a_128(data: &[u8]) -> u128 {
    const OFFSET: u128 = 0x6c62272e07bb014262b821756295c58d;
    const PRIME: u128 = 0x0000000001000000000000000000013B;
    data.iter()
        .fold(OFFSET, |h, b| (h ^ u128::from(*b)).wrapping_mul(PRIME))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_paths_are_short_stable_and_distinct() {
        let a = socket_path("/run/containerd/containerd.sock", "default", "x");
        assert_eq!(
            a,
            socket_path("/run/containerd/containerd.sock", "default", "x")
        );
        assert_ne!(
            a,
            socket_path("/run/containerd/containerd.sock", "default", "y")
        );
        assert_ne!(
            a,
            socket_path("/run/containerd/containerd.sock", "defaultx", "")
        );
        assert!(a.as_os_str().len() < 100);
        assert_eq!(address_path(&socket_address(&a)), a.to_str().unwrap());
    }
}
