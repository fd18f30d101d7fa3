//! Warming the kernel's cgroup migration lock before the runtime needs it.
//!
//! Adding a process to a cgroup (the runtime's write of init's pid to `cgroup.procs`)
//! takes the kernel's global `cgroup_threadgroup_rwsem` for writing, and when no
//! migration happened in the last few milliseconds that first waits for an RCU grace
//! period: 5-20 ms measured on this project's test host (`perf` tracepoints
//! `cgroup:cgroup_mkdir` to `cgroup:cgroup_attach_task`), the largest single part of
//! `kura run`. The lock stays fast for about one grace period after the last writer.
//!
//! So a task start begins with a migration that changes nothing: a short-lived thread
//! writes `0` ("the writer") to the `cgroup.procs` of the cgroup kurad is already in.
//! Its grace period then runs while kurad spawns the shim and the shim execs the
//! runtime, instead of after. Best effort: any error is ignored, and the runtime's own
//! write is correct either way (only slower).

use std::path::PathBuf;
use std::sync::OnceLock;

/// Starts the warm-up in the background, for runtimes that migrate init from outside
/// (runc). kura-runtime needs none: its init is born in its cgroup2 directory and
/// joins v1 hierarchies as a single thread moving itself, neither of which takes
/// that lock; a warm-up would then only hold the cgroup mutex through a grace period
/// while the runtime waits for it to make the container's cgroup. `runtime` is the
/// binary `shim::runtime_binary` resolved.
pub fn start(runtime: &str) {
    if std::path::Path::new(runtime).file_name() == Some("kura-runtime".as_ref()) {
        return;
    }
    let Some(procs) = own_procs_file() else {
        return;
    };
    let _ = std::thread::Builder::new()
        .name("cgroup-warm".into())
        .stack_size(64 * 1024)
        .spawn(move || {
            let _ = std::fs::write(procs, b"0");
        });
}

/// `cgroup.procs` of kurad's own cgroup in the unified hierarchy (pure v2 or hybrid),
/// else in the first v1 hierarchy; read once.
fn own_procs_file() -> Option<&'static PathBuf> {
    static FILE: OnceLock<Option<PathBuf>> = OnceLock::new();
    FILE.get_or_init(|| {
        let own = std::fs::read_to_string("/proc/self/cgroup").ok()?;
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
        locate(&own, &mountinfo)
    })
    .as_ref()
}

fn locate(own: &str, mountinfo: &str) -> Option<PathBuf> {
    // (hierarchy id's controllers, path) from /proc/self/cgroup: "0::/a", "4:memory:/b".
    let lines: Vec<(&str, &str)> = own
        .lines()
        .filter_map(|l| {
            let mut p = l.splitn(3, ':');
            let (_, ctrl, path) = (p.next()?, p.next()?, p.next()?);
            Some((ctrl, path))
        })
        .collect();
    let mounts: Vec<(&str, &str, &str, &str)> = mountinfo
        .lines()
        .filter_map(|l| {
            let (pre, post) = l.split_once(" - ")?;
            let mut pre = pre.split(' ');
            let root = pre.nth(3)?;
            let point = pre.next()?;
            let mut post = post.split(' ');
            let fstype = post.next()?;
            let opts = post.nth(1).unwrap_or("");
            Some((root, point, fstype, opts))
        })
        .collect();
    let join = |root: &str, point: &str, path: &str| {
        // Inside a cgroup namespace or a bind mount the mount shows a sub-tree.
        let rel = path
            .strip_prefix(root)
            .filter(|_| root != "/")
            .unwrap_or(path);
        Some(
            PathBuf::from(point)
                .join(rel.trim_start_matches('/'))
                .join("cgroup.procs"),
        )
    };
    if let Some((_, path)) = lines.iter().find(|(c, _)| c.is_empty()) {
        if let Some((root, point, _, _)) = mounts.iter().find(|m| m.2 == "cgroup2") {
            return join(root, point, path);
        }
    }
    lines
        .iter()
        .filter(|(c, _)| !c.is_empty())
        .find_map(|(ctrl, path)| {
            let first = ctrl.split(',').next()?;
            let (root, point, _, _) = mounts
                .iter()
                .find(|m| m.2 == "cgroup" && m.3.split(',').any(|o| o == first))?;
            join(root, point, path)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_unified_then_a_v1_hierarchy() {
        let mi = "\
31 23 0:28 / /sys/fs/cgroup rw - tmpfs tmpfs rw,mode=755
35 31 0:32 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory
41 31 0:38 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw
";
        let own = "4:memory:/m/x\n0::/k\n";
        assert_eq!(
            locate(own, mi),
            Some(PathBuf::from("/sys/fs/cgroup/unified/k/cgroup.procs"))
        );
        assert_eq!(
            locate("4:memory:/m/x\n", mi),
            Some(PathBuf::from("/sys/fs/cgroup/memory/m/x/cgroup.procs"))
        );
        // A mount that shows only a sub-tree (cgroup namespace).
        let mi = "41 31 0:38 /k /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n";
        assert_eq!(
            locate("0::/k/svc\n", mi),
            Some(PathBuf::from("/sys/fs/cgroup/svc/cgroup.procs"))
        );
    }
}
