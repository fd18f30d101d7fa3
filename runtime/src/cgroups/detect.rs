//! Where the cgroup hierarchies are mounted and which cgroup this process is in.
//!
//! Everything comes from one read of `/proc/self/mountinfo` and one of
//! `/proc/self/cgroup`; no directory is listed and no controller file is opened, so
//! this costs two small reads per runtime command.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use anyhow::{bail, Context, Result};

use super::Mode;

/// v1 controllers kura knows how to drive, plus the named hierarchy systemd uses
/// to track processes (runc joins it too, so `systemd-cgls` shows containers).
const V1_CONTROLLERS: &[&str] = &[
    "cpu",
    "cpuacct",
    "cpuset",
    "memory",
    "devices",
    "freezer",
    "blkio",
    "pids",
    "hugetlb",
    "net_cls",
    "net_prio",
    "perf_event",
    "rdma",
    "misc",
    "name=systemd",
];

/// One mounted v1 hierarchy; co-mounted controllers (`cpu,cpuacct`) share it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct V1Mount {
    pub controllers: Vec<String>,
    pub mountpoint: PathBuf,
    /// The cgroup shown at `mountpoint` (not "/" inside some containers).
    pub root: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct V2Mount {
    pub mountpoint: PathBuf,
    pub root: String,
}

/// The host's cgroup layout as this process sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Hierarchies {
    pub v1: Vec<V1Mount>,
    pub v2: Option<V2Mount>,
    /// This process's cgroup per v1 controller (`/proc/self/cgroup`).
    pub own_v1: BTreeMap<String, String>,
    /// This process's cgroup in the unified hierarchy (the `0::` line).
    pub own_v2: Option<String>,
}

impl Hierarchies {
    /// The host's layout, read once per process: a runtime command is short-lived
    /// and the mounts do not change under it.
    pub fn host() -> Result<&'static Hierarchies> {
        static HOST: OnceLock<Hierarchies> = OnceLock::new();
        if let Some(h) = HOST.get() {
            return Ok(h);
        }
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")
            .context("reading /proc/self/mountinfo")?;
        let own =
            std::fs::read_to_string("/proc/self/cgroup").context("reading /proc/self/cgroup")?;
        let h = Hierarchies::parse(&mountinfo, &own)?;
        Ok(HOST.get_or_init(|| h))
    }

    /// Builds the layout from the text of a mountinfo and a `/proc/<pid>/cgroup`
    /// file; tests use it to point the module at any cgroup mount.
    pub fn parse(mountinfo: &str, self_cgroup: &str) -> Result<Hierarchies> {
        let mut v1: Vec<V1Mount> = Vec::new();
        let mut v2 = None;
        for line in mountinfo.lines() {
            let Some(m) = parse_mountinfo_line(line) else {
                continue;
            };
            match m.fstype {
                // The first cgroup2 mount is the system's; later ones are usually
                // bind mounts of sub-trees made by container engines.
                "cgroup2" if v2.is_none() => {
                    v2 = Some(V2Mount {
                        mountpoint: m.mountpoint,
                        root: m.root,
                    });
                }
                "cgroup" => {
                    let controllers: Vec<String> = m
                        .super_options
                        .split(',')
                        .filter(|o| V1_CONTROLLERS.contains(o))
                        .map(str::to_string)
                        .collect();
                    let known = |c: &String| v1.iter().any(|h| h.controllers.contains(c));
                    if controllers.is_empty() || controllers.iter().any(known) {
                        continue;
                    }
                    v1.push(V1Mount {
                        controllers,
                        mountpoint: m.mountpoint,
                        root: m.root,
                    });
                }
                _ => {}
            }
        }
        if v1.is_empty() && v2.is_none() {
            bail!("no cgroup filesystem is mounted (looked in /proc/self/mountinfo)");
        }
        let (own_v1, own_v2) = parse_self_cgroup(self_cgroup);
        Ok(Hierarchies {
            v1,
            v2,
            own_v1,
            own_v2,
        })
    }

    pub fn mode(&self) -> Mode {
        // A v1 mount that only carries name=systemd controls nothing: a host with
        // cgroup2 plus such a mount still does all resource control through v2.
        let v1_controls = self
            .v1
            .iter()
            .any(|m| m.controllers.iter().any(|c| c != "name=systemd"));
        match (v1_controls, self.v2.is_some()) {
            (false, true) => Mode::V2,
            (true, true) => Mode::Hybrid,
            _ => Mode::V1,
        }
    }
}

struct MountLine<'a> {
    root: String,
    mountpoint: PathBuf,
    fstype: &'a str,
    super_options: &'a str,
}

/// `36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue`
fn parse_mountinfo_line(line: &str) -> Option<MountLine<'_>> {
    let (pre, post) = line.split_once(" - ")?;
    let mut pre = pre.split(' ');
    let root = unescape(pre.nth(3)?);
    let mountpoint = PathBuf::from(unescape(pre.next()?));
    let mut post = post.split(' ');
    let fstype = post.next()?;
    let _source = post.next()?;
    let super_options = post.next().unwrap_or("");
    Some(MountLine {
        root,
        mountpoint,
        fstype,
        super_options,
    })
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape(s: &str) -> String {
    if !s.contains('\\') {
        return s.to_string();
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let octal = i + 3 < b.len() && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c));
        if b[i] == b'\\' && octal {
            let digit = |k: usize| u32::from(b[i + k] - b'0');
            // Values above 0o377 are not produced by the kernel; truncate like C would.
            out.push((digit(1) * 64 + digit(2) * 8 + digit(3)) as u8);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `/proc/self/cgroup`: `4:memory:/a/b`, `1:cpu,cpuacct:/`, `9:name=systemd:/`, `0::/c`.
fn parse_self_cgroup(text: &str) -> (BTreeMap<String, String>, Option<String>) {
    let mut v1 = BTreeMap::new();
    let mut v2 = None;
    for line in text.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(id), Some(ctrls), Some(path)) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        if id == "0" && ctrls.is_empty() {
            v2 = Some(path.to_string());
            continue;
        }
        for c in ctrls.split(',') {
            v1.insert(c.to_string(), path.to_string());
        }
    }
    (v1, v2)
}

/// `own` expressed relative to a mount whose root is `root`: inside a container the
/// mount may show only a sub-tree, and /proc/self/cgroup paths are then longer.
pub(crate) fn strip_mount_root<'a>(own: &'a str, root: &str) -> &'a str {
    if root == "/" || root.is_empty() {
        return own;
    }
    match own.strip_prefix(root) {
        Some(rest) if rest.is_empty() || rest.starts_with('/') => rest,
        _ => own,
    }
}

/// True when `path` lies strictly below `mount` (never the mount itself).
pub(crate) fn is_below(path: &Path, mount: &Path) -> bool {
    path != mount && path.starts_with(mount)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime shared:9 - cgroup cgroup rw,cpu,cpuacct
34 31 0:31 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset,clone_children
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

    #[test]
    fn parses_hybrid_with_comounted_controllers() {
        let own = "4:memory:/sandbox/x\n1:cpu,cpuacct:/\n9:name=systemd:/\n0::/u\n";
        let h = Hierarchies::parse(HYBRID, own).unwrap();
        assert_eq!(h.mode(), Mode::Hybrid);
        assert_eq!(h.v1.len(), 4);
        assert_eq!(h.v1[0].controllers, vec!["cpu", "cpuacct"]);
        assert_eq!(
            h.v1[0].mountpoint,
            PathBuf::from("/sys/fs/cgroup/cpu,cpuacct")
        );
        assert_eq!(h.v1[1].controllers, vec!["cpuset"]);
        assert_eq!(h.v1[3].controllers, vec!["name=systemd"]);
        assert_eq!(
            h.v2.as_ref().unwrap().mountpoint,
            PathBuf::from("/sys/fs/cgroup/unified")
        );
        assert_eq!(h.own_v1["memory"], "/sandbox/x");
        assert_eq!(h.own_v1["cpuacct"], "/");
        assert_eq!(h.own_v2.as_deref(), Some("/u"));
    }

    #[test]
    fn pure_v2_and_pure_v1() {
        let v2 = "30 23 0:26 / /sys/fs/cgroup rw,nosuid shared:4 - cgroup2 cgroup2 rw,nsdelegate\n";
        let h = Hierarchies::parse(v2, "0::/user.slice/s.scope\n").unwrap();
        assert_eq!(h.mode(), Mode::V2);
        assert!(h.v1.is_empty());

        let v1 = "35 31 0:32 / /cg/memory rw - cgroup cgroup rw,memory\n";
        assert_eq!(Hierarchies::parse(v1, "").unwrap().mode(), Mode::V1);

        // name=systemd alone does not make a host hybrid.
        let only_named =
            format!("{v2}40 31 0:37 / /sys/fs/cgroup/systemd rw - cgroup cgroup rw,name=systemd\n");
        assert_eq!(
            Hierarchies::parse(&only_named, "").unwrap().mode(),
            Mode::V2
        );

        assert!(Hierarchies::parse("1 2 0:1 / / rw - ext4 /dev/sda rw\n", "").is_err());
    }

    #[test]
    fn first_mount_of_a_controller_wins_and_escapes_decode() {
        let mi = "\
35 31 0:32 / /cg/memory rw - cgroup cgroup rw,memory
99 31 0:32 /docker /other\\040place rw - cgroup cgroup rw,memory
98 31 0:40 /sub /a\\040b rw - cgroup2 cgroup2 rw
";
        let h = Hierarchies::parse(mi, "").unwrap();
        assert_eq!(h.v1.len(), 1);
        assert_eq!(h.v2.as_ref().unwrap().mountpoint, PathBuf::from("/a b"));
        assert_eq!(h.v2.as_ref().unwrap().root, "/sub");
    }

    #[test]
    fn mount_root_is_stripped_from_own_path() {
        assert_eq!(strip_mount_root("/docker/abc/x", "/docker/abc"), "/x");
        assert_eq!(strip_mount_root("/docker/abc", "/docker/abc"), "");
        assert_eq!(strip_mount_root("/dockerx", "/docker"), "/dockerx");
        assert_eq!(strip_mount_root("/a", "/"), "/a");
    }
}
