//! Mounting the config's `mounts` inside the rootfs, before pivot_root.
//!
//! Binds use the new mount API (open_tree → mount_setattr → move_mount): the bind
//! is made read-only (or nosuid, idmapped…) while still detached, so no writable
//! window exists, and it is attached onto an fd resolved inside the rootfs.

use super::mountinfo::Hierarchy;
use super::options::{self, Options};
use super::resolve::{self, Kind};
use crate::sys::{self, MountAttr};
use anyhow::{bail, Context, Result};
use oci_spec::runtime::Mount;
use std::ffi::CString;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

pub struct Ctx<'a> {
    /// O_PATH fd of the rootfs; every destination is resolved against it.
    pub root: BorrowedFd<'a>,
    pub bundle: &'a Path,
    /// The container has its own user namespace: mknod and some fs types are off limits.
    pub userns: bool,
    /// The container has its own cgroup namespace: cgroupfs can be mounted directly.
    pub cgroupns: bool,
    pub cgroups: &'a [Hierarchy],
    /// User namespace fd for idmapped mounts without their own mappings.
    pub userns_fd: Option<BorrowedFd<'a>>,
}

fn cpath(p: &Path) -> Result<CString> {
    CString::new(p.as_os_str().as_bytes()).with_context(|| format!("{}: NUL in path", p.display()))
}

fn mount_raw(
    src: Option<&str>,
    target: &CString,
    fstype: Option<&str>,
    flags: libc::c_ulong,
    data: Option<&str>,
) -> std::io::Result<()> {
    let src = src.map(|s| CString::new(s).unwrap_or_default());
    let fstype = fstype.map(|s| CString::new(s).unwrap_or_default());
    let data = data.map(|s| CString::new(s).unwrap_or_default());
    let r = unsafe {
        libc::mount(
            src.as_ref().map_or(std::ptr::null(), |s| s.as_ptr()),
            target.as_ptr(),
            fstype.as_ref().map_or(std::ptr::null(), |s| s.as_ptr()),
            flags,
            data.as_ref()
                .map_or(std::ptr::null(), |s| s.as_ptr().cast()),
        )
    };
    sys::errno_result(r)
}

/// Mounts one config entry. `i` is its index, for error messages.
pub fn mount(ctx: &Ctx, i: usize, m: &Mount) -> Result<()> {
    let opts = options::parse(m.options().as_deref().unwrap_or(&[]))
        .with_context(|| format!("mounts[{i}].options"))?;
    let typ = m.typ().as_deref().unwrap_or("");
    let dest = m.destination();
    let r = if opts.bind || typ == "bind" {
        bind(ctx, m, &opts)
    } else if typ == "cgroup" || typ == "cgroup2" {
        cgroup(ctx, dest, &opts)
    } else {
        filesystem(ctx, m, typ, &opts)
    };
    r.with_context(|| {
        format!(
            "mounts[{i}]: mount {} on {}",
            m.source().as_deref().unwrap_or(Path::new(typ)).display(),
            dest.display()
        )
    })
}

fn bind(ctx: &Ctx, m: &Mount, o: &Options) -> Result<()> {
    let Some(src) = m.source() else {
        bail!("bind mount needs a source")
    };
    let src = if src.is_absolute() {
        src.clone()
    } else {
        ctx.bundle.join(src)
    };
    let csrc = cpath(&src)?;
    let mut flags = sys::OPEN_TREE_CLONE | sys::OPEN_TREE_CLOEXEC;
    if o.recursive {
        flags |= libc::AT_RECURSIVE as u32;
    }
    let tree = sys::open_tree(libc::AT_FDCWD, &csrc, flags)
        .with_context(|| format!("source {} is not accessible", src.display()))?;
    let kind = if resolve::is_dir(tree.as_fd()) {
        Kind::Dir
    } else {
        Kind::File
    };
    let attr = options::flags_to_attr(o.flags);
    if attr.attr_set != 0 || attr.attr_clr != 0 {
        sys::mount_setattr(tree.as_fd(), false, &attr).context("set bind mount flags")?;
    }
    if o.rec_attr.attr_set != 0 || o.rec_attr.attr_clr != 0 {
        sys::mount_setattr(tree.as_fd(), true, &o.rec_attr)
            .context("set recursive mount attributes")?;
    }
    if o.idmap {
        idmap(ctx, m, &tree, o.idmap_recursive)?;
    }
    let dst = resolve::ensure_in_root(ctx.root, m.destination(), kind, false)?;
    sys::move_mount_fd(tree.as_fd(), dst.as_fd()).context("attach bind mount")?;
    // The tree fd now names the attached mount: change its propagation through it.
    propagate(&tree, o)?;
    Ok(())
}

fn propagate(fd: &OwnedFd, o: &Options) -> Result<()> {
    if o.propagation.is_empty() {
        return Ok(());
    }
    let target = sys::proc_fd_path(fd.as_raw_fd());
    for &p in &o.propagation {
        mount_raw(None, &target, None, p, None).context("set mount propagation")?;
    }
    Ok(())
}

fn idmap(ctx: &Ctx, m: &Mount, tree: &OwnedFd, recursive: bool) -> Result<()> {
    let own;
    let userns = match (m.uid_mappings(), m.gid_mappings()) {
        (Some(u), Some(g)) if !u.is_empty() && !g.is_empty() => {
            own = crate::namespaces::userns_with_maps(u, g)
                .context("create user namespace for idmap")?;
            own.as_fd()
        }
        (None, None) => ctx
            .userns_fd
            .context("idmap mount needs uidMappings/gidMappings or a user namespace")?,
        _ => bail!("idmap mount needs both uidMappings and gidMappings"),
    };
    let attr = MountAttr {
        attr_set: sys::MOUNT_ATTR_IDMAP,
        userns_fd: userns.as_raw_fd() as u64,
        ..Default::default()
    };
    sys::mount_setattr(tree.as_fd(), recursive, &attr)
        .context("idmap the mount (does the filesystem support idmapped mounts?)")
}

fn filesystem(ctx: &Ctx, m: &Mount, typ: &str, o: &Options) -> Result<()> {
    if typ.is_empty() {
        bail!("mount type missing (and not a bind mount)");
    }
    // proc and sysfs over a symlink let a container redirect them (CVE-2019-16884, -19921).
    let no_symlinks = matches!(typ, "proc" | "sysfs");
    let dst = resolve::ensure_in_root(ctx.root, m.destination(), Kind::Dir, no_symlinks)?;
    if no_symlinks && !resolve::is_dir(dst.as_fd()) {
        bail!(
            "{} mount destination {} is not a directory",
            typ,
            m.destination().display()
        );
    }
    let saved = if o.tmpcopyup && typ == "tmpfs" {
        Some(resolve::reopen_dir(dst.as_fd())?)
    } else {
        None
    };
    let target = sys::proc_fd_path(dst.as_raw_fd());
    let source = m
        .source()
        .as_ref()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| typ.to_owned());
    let data = o.data.join(",");
    let data = (!data.is_empty()).then_some(data.as_str());
    let res = mount_raw(
        Some(&source),
        &target,
        Some(typ),
        o.flags & !libc::MS_REMOUNT,
        data,
    );
    if let Err(e) = res {
        // In a user namespace that does not own the network (or ipc) namespace, the
        // kernel refuses sysfs (mqueue); runc falls back to binding the host's.
        let fallback = match typ {
            "sysfs" => Some("/sys"),
            "mqueue" => Some("/dev/mqueue"),
            _ => None,
        };
        match (e.raw_os_error(), fallback) {
            (Some(libc::EPERM), Some(host)) if ctx.userns => {
                let tree = sys::open_tree(
                    libc::AT_FDCWD,
                    &cpath(Path::new(host))?,
                    sys::OPEN_TREE_CLONE | sys::OPEN_TREE_CLOEXEC | libc::AT_RECURSIVE as u32,
                )?;
                let attr = options::flags_to_attr(o.flags);
                sys::mount_setattr(tree.as_fd(), true, &attr)?;
                sys::move_mount_fd(tree.as_fd(), dst.as_fd())?;
            }
            _ => return Err(e.into()),
        }
    }
    let top =
        || resolve::open_in_root(ctx.root, m.destination(), no_symlinks).context("reopen mount");
    if let Some(old) = saved {
        copy_up(&old, &top()?)?;
    }
    if !o.propagation.is_empty() || o.rec_attr.attr_set != 0 || o.rec_attr.attr_clr != 0 {
        let fd = top()?;
        if o.rec_attr.attr_set != 0 || o.rec_attr.attr_clr != 0 {
            sys::mount_setattr(fd.as_fd(), true, &o.rec_attr)
                .context("set recursive mount attributes")?;
        }
        propagate(&fd, o)?;
    }
    Ok(())
}

/// `tmpcopyup`: the new tmpfs starts with a copy of what it covers.
fn copy_up(from: &OwnedFd, to: &OwnedFd) -> Result<()> {
    // The covered directory is reachable only through the fd kept before mounting.
    let src = PathBuf::from(format!("/proc/self/fd/{}", from.as_raw_fd()));
    let dst = PathBuf::from(format!("/proc/self/fd/{}", to.as_raw_fd()));
    copy_tree(&src, &dst).context("tmpcopyup")
}

fn copy_tree(src: &Path, dst: &Path) -> Result<()> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    for e in std::fs::read_dir(src)? {
        let e = e?;
        let md = e.metadata()?;
        let s = e.path();
        let d = dst.join(e.file_name());
        let ft = md.file_type();
        if ft.is_dir() {
            std::fs::create_dir(&d).or_else(|e| {
                if e.kind() == std::io::ErrorKind::AlreadyExists {
                    Ok(())
                } else {
                    Err(e)
                }
            })?;
            copy_tree(&s, &d)?;
        } else if ft.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(&s)?, &d)?;
        } else if ft.is_file() {
            std::fs::copy(&s, &d)?;
        } else {
            continue;
        }
        if !ft.is_symlink() {
            std::fs::set_permissions(&d, std::fs::Permissions::from_mode(md.mode() & 0o7777))?;
        }
        std::os::unix::fs::lchown(&d, Some(md.uid()), Some(md.gid()))?;
    }
    Ok(())
}

/// The `cgroup` mount type: cgroup2 (or a tmpfs of v1 hierarchies) showing the
/// container's own cgroup as the root, mounted natively in a cgroup namespace and
/// bound from the host otherwise.
fn cgroup(ctx: &Ctx, dest: &Path, o: &Options) -> Result<()> {
    let flags = o.flags & !libc::MS_REMOUNT;
    let unified_only = ctx.cgroups.iter().all(|h| h.controllers.is_none());
    if unified_only {
        let Some(h) = ctx.cgroups.first() else {
            bail!("no cgroup hierarchy found on the host")
        };
        return cgroup_one(ctx, dest, h, flags);
    }
    let dst = resolve::ensure_in_root(ctx.root, dest, Kind::Dir, true)?;
    let target = sys::proc_fd_path(dst.as_raw_fd());
    mount_raw(
        Some("tmpfs"),
        &target,
        Some("tmpfs"),
        libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
        Some("mode=755"),
    )
    .context("mount tmpfs for cgroup v1 hierarchies")?;
    for h in ctx.cgroups {
        if h.name.is_empty() || h.name.contains('/') && h.controllers.is_some() {
            continue;
        }
        let sub = dest.join(&h.name);
        cgroup_one(ctx, &sub, h, flags)?;
        // Co-mounted controllers ("cpu,cpuacct") get a symlink per controller, as on the host.
        if let Some(c) = &h.controllers {
            if c.contains(',') {
                for part in c.split(',') {
                    let link = dest.join(part);
                    let parent = resolve::open_in_root(ctx.root, dest, true)?;
                    let dirfd = resolve::reopen_dir(parent.as_fd())?;
                    let cname = cpath(Path::new(part))?;
                    let cto = cpath(Path::new(&h.name))?;
                    let r =
                        unsafe { libc::symlinkat(cto.as_ptr(), dirfd.as_raw_fd(), cname.as_ptr()) };
                    if r < 0 {
                        let e = std::io::Error::last_os_error();
                        if e.raw_os_error() != Some(libc::EEXIST) {
                            return Err(e).with_context(|| format!("symlink {}", link.display()));
                        }
                    }
                }
            }
        }
    }
    if flags & libc::MS_RDONLY != 0 {
        let top = resolve::open_in_root(ctx.root, dest, true)?;
        let attr = MountAttr {
            attr_set: sys::MOUNT_ATTR_RDONLY,
            ..Default::default()
        };
        sys::mount_setattr(top.as_fd(), false, &attr).context("make cgroup tmpfs read-only")?;
    }
    Ok(())
}

fn cgroup_one(ctx: &Ctx, dest: &Path, h: &Hierarchy, flags: libc::c_ulong) -> Result<()> {
    let dst = resolve::ensure_in_root(ctx.root, dest, Kind::Dir, true)?;
    if ctx.cgroupns {
        let target = sys::proc_fd_path(dst.as_raw_fd());
        let (fstype, data) = match &h.controllers {
            None => ("cgroup2", None),
            Some(c) => ("cgroup", Some(c.as_str())),
        };
        match mount_raw(Some("cgroup"), &target, Some(fstype), flags, data) {
            Ok(()) => return Ok(()),
            // A v1 hierarchy may refuse a second superblock in a userns; bind instead.
            Err(e)
                if e.raw_os_error() == Some(libc::EPERM)
                    || e.raw_os_error() == Some(libc::EBUSY) => {}
            Err(e) => {
                return Err(e).with_context(|| format!("mount {fstype} on {}", dest.display()))
            }
        }
    }
    let tree = sys::open_tree(
        libc::AT_FDCWD,
        &cpath(&h.host_dir)?,
        sys::OPEN_TREE_CLONE | sys::OPEN_TREE_CLOEXEC,
    )
    .with_context(|| format!("open cgroup {}", h.host_dir.display()))?;
    let attr = options::flags_to_attr(flags);
    if attr.attr_set != 0 {
        sys::mount_setattr(tree.as_fd(), false, &attr)?;
    }
    sys::move_mount_fd(tree.as_fd(), dst.as_fd())
        .with_context(|| format!("bind cgroup onto {}", dest.display()))
}
