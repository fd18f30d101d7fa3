//! From `linux.cgroupsPath` to one directory per hierarchy, matching runc's
//! cgroupfs drivers:
//!
//! - absolute `/a/b`: `<mountpoint>/a/b` in every hierarchy;
//! - relative `a/b`: below the runtime's own cgroup (from `/proc/self/cgroup`) in
//!   each v1 hierarchy, and below the *parent* of its own cgroup on pure v2, because
//!   the runtime's own v2 cgroup usually holds processes and so could not enable
//!   controllers for a child (runc's fs2 `defaultDirPath` does the same);
//! - unset: the container id, as a relative path (runc sets `Name = id`);
//! - with `systemd = true`, `slice:prefix:name`. kura has no systemd driver, so this
//!   maps onto the same cgroupfs layout systemd would have made:
//!   `system.slice:kura:abc` -> `/system.slice/kura-abc.scope`, a nested slice
//!   `a-b.slice` expands to `/a.slice/a-b.slice`, an empty slice means
//!   `system.slice`, and an unset path means `system.slice:kura:<id>`.
//!
//! Paths are cleaned lexically first so that `..` can never climb out of a
//! hierarchy, and the hierarchy's root cgroup itself is refused: the runtime would
//! otherwise write limits on, and later rmdir, the whole host's cgroup.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};

use super::detect::{strip_mount_root, Hierarchies};
use super::Mode;

/// The cgroup path inside a hierarchy, before it is joined to a mountpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Inner {
    /// Starts with `/`, taken from the hierarchy's root.
    Absolute(String),
    /// Taken from the runtime's own cgroup.
    Relative(String),
}

pub(crate) fn inner_path(cgroups_path: Option<&str>, id: &str, systemd: bool) -> Result<Inner> {
    if id.is_empty() || id.contains('/') || id == "." || id == ".." {
        bail!("container id {id:?} cannot name a cgroup");
    }
    let given = cgroups_path.filter(|p| !p.is_empty());
    if systemd {
        return systemd_path(given.unwrap_or(""), id).map(Inner::Absolute);
    }
    let raw = given.unwrap_or(id);
    let cleaned = clean(raw);
    if cleaned.is_empty() || cleaned == "/" {
        bail!(
            "linux.cgroupsPath {raw:?} names the root cgroup; refusing to manage the host's cgroup"
        );
    }
    Ok(if cleaned.starts_with('/') {
        Inner::Absolute(cleaned)
    } else {
        Inner::Relative(cleaned)
    })
}

/// Lexical clean that never goes above the start: `a/../../b` -> `b`, `/../x` -> `/x`.
pub(crate) fn clean(p: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for c in p.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    let joined = parts.join("/");
    if p.starts_with('/') {
        format!("/{joined}")
    } else {
        joined
    }
}

fn systemd_path(spec: &str, id: &str) -> Result<String> {
    let (slice, prefix, name) = if spec.is_empty() {
        ("", "kura", id)
    } else {
        let parts: Vec<&str> = spec.split(':').collect();
        let [slice, prefix, name] = parts[..] else {
            bail!(
                "linux.cgroupsPath {spec:?}: with systemd cgroups it must be \"slice:prefix:name\""
            );
        };
        (slice, prefix, name)
    };
    if name.is_empty() || [slice, prefix, name].iter().any(|s| s.contains('/')) {
        bail!("linux.cgroupsPath {spec:?}: slice, prefix and name must not contain '/' and name must be set");
    }
    let slice = if slice.is_empty() {
        "system.slice"
    } else {
        slice
    };
    let mut path =
        expand_slice(slice).map_err(|e| anyhow::anyhow!("linux.cgroupsPath {spec:?}: {e}"))?;
    let unit = if name.ends_with(".slice") {
        name.to_string()
    } else if prefix.is_empty() {
        format!("{name}.scope")
    } else {
        format!("{prefix}-{name}.scope")
    };
    if path != "/" {
        path.push('/');
    }
    path.push_str(&unit);
    Ok(path)
}

/// systemd's slice naming: `a-b-c.slice` lives at `/a.slice/a-b.slice/a-b-c.slice`.
fn expand_slice(slice: &str) -> Result<String> {
    let Some(stem) = slice.strip_suffix(".slice") else {
        bail!("slice {slice:?} must end in \".slice\"");
    };
    if stem == "-" {
        return Ok("/".to_string());
    }
    if stem.is_empty() || stem.starts_with('-') || stem.ends_with('-') || stem.contains("--") {
        bail!("invalid slice name {slice:?}");
    }
    let mut out = String::new();
    let mut prefix = String::new();
    for comp in stem.split('-') {
        if !prefix.is_empty() {
            prefix.push('-');
        }
        prefix.push_str(comp);
        out.push('/');
        out.push_str(&prefix);
        out.push_str(".slice");
    }
    Ok(out)
}

/// The directory for one hierarchy. `own` is the runtime's cgroup in it.
pub(crate) fn join(
    mountpoint: &Path,
    mount_root: &str,
    own: Option<&str>,
    inner: &Inner,
    parent_of_own: bool,
) -> Result<PathBuf> {
    let rel = match inner {
        Inner::Absolute(p) => p.trim_start_matches('/').to_string(),
        Inner::Relative(p) => {
            let Some(own) = own else {
                bail!("relative cgroupsPath {p:?}: this process's cgroup for {} is not in /proc/self/cgroup", mountpoint.display());
            };
            let mut base = clean(strip_mount_root(own, mount_root));
            if parent_of_own {
                base = match base.rfind('/') {
                    Some(i) => base[..i].to_string(),
                    None => String::new(),
                };
            }
            let base = base.trim_start_matches('/');
            if base.is_empty() {
                p.clone()
            } else {
                format!("{base}/{p}")
            }
        }
    };
    Ok(mountpoint.join(rel))
}

/// Per-hierarchy directories for `inner` on host `h`.
pub(crate) struct Resolved {
    /// (controllers, mountpoint, dir) per v1 hierarchy.
    pub v1: Vec<(Vec<String>, PathBuf, PathBuf)>,
    /// (mountpoint, dir) in the unified hierarchy.
    pub unified: Option<(PathBuf, PathBuf)>,
}

pub(crate) fn resolve(h: &Hierarchies, inner: &Inner) -> Result<Resolved> {
    let mode = h.mode();
    let mut v1 = Vec::new();
    if mode != Mode::V2 {
        for m in &h.v1 {
            let own = m
                .controllers
                .iter()
                .find_map(|c| h.own_v1.get(c))
                .map(String::as_str);
            let dir = join(&m.mountpoint, &m.root, own, inner, false)?;
            v1.push((m.controllers.clone(), m.mountpoint.clone(), dir));
        }
    }
    let unified = match &h.v2 {
        Some(m) => {
            // On hybrid hosts the unified tree carries no controllers, so the
            // runtime's own cgroup is a fine parent, as in the v1 trees.
            let dir = join(
                &m.mountpoint,
                &m.root,
                h.own_v2.as_deref(),
                inner,
                mode == Mode::V2,
            )?;
            Some((m.mountpoint.clone(), dir))
        }
        None => None,
    };
    Ok(Resolved { v1, unified })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn abs(s: &str) -> Inner {
        Inner::Absolute(s.into())
    }
    fn rel(s: &str) -> Inner {
        Inner::Relative(s.into())
    }

    #[test]
    fn plain_paths() {
        assert_eq!(inner_path(Some("/a/b"), "id", false).unwrap(), abs("/a/b"));
        assert_eq!(inner_path(Some("a/b"), "id", false).unwrap(), rel("a/b"));
        assert_eq!(inner_path(None, "id", false).unwrap(), rel("id"));
        assert_eq!(inner_path(Some(""), "id", false).unwrap(), rel("id"));
        assert_eq!(
            inner_path(Some("/../../etc/x"), "id", false).unwrap(),
            abs("/etc/x")
        );
        assert_eq!(
            inner_path(Some("a/../../../b"), "id", false).unwrap(),
            rel("b")
        );
        assert!(inner_path(Some("/"), "id", false).is_err());
        assert!(inner_path(Some("a/.."), "id", false).is_err());
        assert!(inner_path(None, "a/b", false).is_err());
        assert!(inner_path(None, "..", false).is_err());
    }

    #[test]
    fn systemd_style_maps_to_scope_paths() {
        let p = |s: Option<&str>| inner_path(s, "abc", true).unwrap();
        assert_eq!(
            p(Some("system.slice:kura:abc")),
            abs("/system.slice/kura-abc.scope")
        );
        assert_eq!(p(None), abs("/system.slice/kura-abc.scope"));
        assert_eq!(p(Some(":kura:x")), abs("/system.slice/kura-x.scope"));
        assert_eq!(
            p(Some("user-1000.slice:docker:x")),
            abs("/user.slice/user-1000.slice/docker-x.scope")
        );
        assert_eq!(p(Some("-.slice::x")), abs("/x.scope"));
        assert_eq!(
            p(Some("machine.slice::m.slice")),
            abs("/machine.slice/m.slice")
        );
        assert!(inner_path(Some("a/b"), "abc", true).is_err());
        assert!(inner_path(Some("foo:kura:x"), "abc", true).is_err());
        assert!(inner_path(Some("a--b.slice:k:x"), "abc", true).is_err());
        assert!(inner_path(Some("system.slice:k:"), "abc", true).is_err());
    }

    #[test]
    fn joins_relative_to_own_cgroup() {
        let mnt = Path::new("/sys/fs/cgroup/memory");
        assert_eq!(
            join(mnt, "/", Some("/sandbox/x"), &rel("c1"), false).unwrap(),
            PathBuf::from("/sys/fs/cgroup/memory/sandbox/x/c1")
        );
        assert_eq!(
            join(mnt, "/", Some("/"), &rel("c1"), false).unwrap(),
            PathBuf::from("/sys/fs/cgroup/memory/c1")
        );
        // Pure v2: the parent of our own cgroup.
        let v2 = Path::new("/sys/fs/cgroup");
        assert_eq!(
            join(
                v2,
                "/",
                Some("/user.slice/u.slice/s.scope"),
                &rel("c1"),
                true
            )
            .unwrap(),
            PathBuf::from("/sys/fs/cgroup/user.slice/u.slice/c1")
        );
        assert_eq!(
            join(v2, "/", Some("/"), &rel("c1"), true).unwrap(),
            PathBuf::from("/sys/fs/cgroup/c1")
        );
        // Mount shows a sub-tree: own path is taken relative to it.
        assert_eq!(
            join(
                mnt,
                "/docker/ab",
                Some("/docker/ab/inner"),
                &rel("c1"),
                false
            )
            .unwrap(),
            PathBuf::from("/sys/fs/cgroup/memory/inner/c1")
        );
        assert_eq!(
            join(mnt, "/", None, &abs("/x/y"), false).unwrap(),
            PathBuf::from("/sys/fs/cgroup/memory/x/y")
        );
        assert!(join(mnt, "/", None, &rel("c1"), false).is_err());
    }

    #[test]
    fn resolves_per_hierarchy_on_hybrid() {
        let mi = "\
32 31 0:29 / /cg/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct
35 31 0:32 / /cg/memory rw - cgroup cgroup rw,memory
41 31 0:38 / /cg/unified rw - cgroup2 cgroup2 rw
";
        let own = "4:memory:/box/1\n1:cpu,cpuacct:/\n0::/u/v\n";
        let h = Hierarchies::parse(mi, own).unwrap();
        let r = resolve(&h, &rel("c")).unwrap();
        assert_eq!(r.v1[0].2, PathBuf::from("/cg/cpu,cpuacct/c"));
        assert_eq!(r.v1[1].2, PathBuf::from("/cg/memory/box/1/c"));
        assert_eq!(r.unified.unwrap().1, PathBuf::from("/cg/unified/u/v/c"));
    }
}
