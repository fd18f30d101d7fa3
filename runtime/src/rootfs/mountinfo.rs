//! Just enough of /proc/self/mountinfo and /proc/self/cgroup to mount a container's
//! view of its cgroups.

use std::path::PathBuf;

#[derive(Debug, Clone)]
pub struct Entry {
    pub root: String,
    pub mount_point: PathBuf,
    pub fstype: String,
    pub super_opts: String,
}

/// Undoes mountinfo's octal escapes (`\040` for space).
fn unescape(s: &str) -> String {
    if !s.contains('\\') {
        return s.to_owned();
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 4 <= b.len() {
            let digits = std::str::from_utf8(&b[i + 1..i + 4]).ok();
            if let Some(v) = digits.and_then(|d| u8::from_str_radix(d, 8).ok()) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub fn parse(text: &str) -> Vec<Entry> {
    text.lines()
        .filter_map(|l| {
            let (pre, post) = l.split_once(" - ")?;
            let pre: Vec<&str> = pre.split(' ').collect();
            let mut post = post.split(' ');
            let fstype = post.next()?.to_owned();
            let _source = post.next();
            let super_opts = post.next().unwrap_or("").to_owned();
            Some(Entry {
                root: unescape(pre.get(3)?),
                mount_point: PathBuf::from(unescape(pre.get(4)?)),
                fstype,
                super_opts,
            })
        })
        .collect()
}

pub fn read() -> Vec<Entry> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .map(|t| parse(&t))
        .unwrap_or_default()
}

/// One cgroup hierarchy as the container should see it.
#[derive(Debug, Clone)]
pub struct Hierarchy {
    /// `None` for cgroup2, else the v1 controllers ("cpu,cpuacct", "name=systemd").
    pub controllers: Option<String>,
    /// Host directory of the container's cgroup in this hierarchy (bind source).
    pub host_dir: PathBuf,
    /// Where the host mounts this hierarchy, relative to /sys/fs/cgroup ("cpu,cpuacct", "unified", "").
    pub name: String,
}

/// The hierarchies this process belongs to, with the host path of its cgroup in each.
/// Must run before unsharing the cgroup namespace, which hides these paths.
pub fn own_cgroups() -> Vec<Hierarchy> {
    let Ok(cg) = std::fs::read_to_string("/proc/self/cgroup") else {
        return Vec::new();
    };
    let mounts = read();
    let mut out = Vec::new();
    for line in cg.lines() {
        let mut it = line.splitn(3, ':');
        let (Some(_), Some(ctrls), Some(path)) = (it.next(), it.next(), it.next()) else {
            continue;
        };
        let m = if ctrls.is_empty() {
            mounts.iter().find(|m| m.fstype == "cgroup2")
        } else {
            let want: Vec<&str> = ctrls.split(',').collect();
            mounts.iter().find(|m| {
                m.fstype == "cgroup" && {
                    let have: Vec<&str> = m.super_opts.split(',').collect();
                    want.iter().all(|w| have.contains(w))
                }
            })
        };
        let Some(m) = m else { continue };
        let rel = path
            .strip_prefix(m.root.as_str())
            .unwrap_or(path)
            .trim_start_matches('/');
        let name = m
            .mount_point
            .strip_prefix("/sys/fs/cgroup")
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_else(|_| {
                m.mount_point
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default()
            });
        out.push(Hierarchy {
            controllers: (!ctrls.is_empty()).then(|| ctrls.to_owned()),
            host_dir: m.mount_point.join(rel),
            name,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_lines() {
        let t =
            "36 35 98:0 /mnt1 /mnt\\040x rw,noatime master:1 - ext3 /dev/root rw,errors=continue\n\
                 40 30 0:33 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct";
        let e = parse(t);
        assert_eq!(e.len(), 2);
        assert_eq!(e[0].mount_point, PathBuf::from("/mnt x"));
        assert_eq!(e[0].root, "/mnt1");
        assert_eq!(e[1].fstype, "cgroup");
        assert_eq!(e[1].super_opts, "rw,cpu,cpuacct");
    }
}
