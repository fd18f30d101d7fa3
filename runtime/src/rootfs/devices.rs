//! Device nodes in the container's /dev: the defaults every container gets (when /dev
//! is a fresh mount), the config's `linux.devices`, and the standard symlinks.
//! In a user namespace mknod is refused, so nodes are bind-mounted from the host.

use super::resolve::{self, Kind};
use crate::sys;
use anyhow::{bail, Context, Result};
use oci_spec::runtime::{LinuxDevice, LinuxDeviceType};
use std::ffi::CString;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// (path, type, major, minor): the nodes runc and docker give every container.
pub const DEFAULT_DEVICES: &[(&str, char, i64, i64)] = &[
    ("/dev/null", 'c', 1, 3),
    ("/dev/zero", 'c', 1, 5),
    ("/dev/full", 'c', 1, 7),
    ("/dev/random", 'c', 1, 8),
    ("/dev/urandom", 'c', 1, 9),
    ("/dev/tty", 'c', 5, 0),
];

/// Extra cgroup device rules every container gets besides its nodes: the pty devices.
pub const DEFAULT_CGROUP_EXTRA: &[(char, i64, i64)] = &[('c', 5, 2), ('c', 136, -1), ('c', 5, 1)];

const SYMLINKS: &[(&str, &str)] = &[
    ("/proc/self/fd", "/dev/fd"),
    ("/proc/self/fd/0", "/dev/stdin"),
    ("/proc/self/fd/1", "/dev/stdout"),
    ("/proc/self/fd/2", "/dev/stderr"),
];

pub struct Node<'a> {
    pub path: &'a Path,
    pub kind: char,
    pub major: i64,
    pub minor: i64,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
}

pub fn type_char(t: LinuxDeviceType) -> char {
    match t {
        LinuxDeviceType::B => 'b',
        LinuxDeviceType::C | LinuxDeviceType::U => 'c',
        LinuxDeviceType::P => 'p',
        LinuxDeviceType::A => 'a',
    }
}

pub fn from_spec(d: &LinuxDevice) -> Node<'_> {
    Node {
        path: d.path(),
        kind: type_char(d.typ()),
        major: d.major(),
        minor: d.minor(),
        mode: d.file_mode().unwrap_or(0o666),
        uid: d.uid().unwrap_or(0),
        gid: d.gid().unwrap_or(0),
    }
}

pub fn create(root: BorrowedFd, n: &Node, userns: bool) -> Result<()> {
    let dev = n.path;
    let parent = dev.parent().context("device path has no parent")?;
    let name = dev.file_name().context("device path has no name")?;
    if userns && n.kind != 'p' {
        return bind_host(root, dev);
    }
    let pfd = resolve::ensure_in_root(root, parent, Kind::Dir, false)?;
    let dirfd = resolve::reopen_dir(pfd.as_fd())?;
    let cname = CString::new(name.as_bytes())?;
    let fmt = match n.kind {
        'c' | 'u' => libc::S_IFCHR,
        'b' => libc::S_IFBLK,
        'p' => libc::S_IFIFO,
        t => bail!("device {}: unsupported type {t:?}", dev.display()),
    };
    let devno = libc::makedev(n.major as u32, n.minor as u32);
    // An existing file (from the image) is replaced: the config decides what the node is.
    unsafe { libc::unlinkat(dirfd.as_raw_fd(), cname.as_ptr(), 0) };
    let r = unsafe {
        libc::mknodat(
            dirfd.as_raw_fd(),
            cname.as_ptr(),
            fmt | (n.mode & 0o7777),
            devno,
        )
    };
    sys::errno_result(r).with_context(|| format!("mknod {}", dev.display()))?;
    let r = unsafe {
        libc::fchownat(
            dirfd.as_raw_fd(),
            cname.as_ptr(),
            n.uid,
            n.gid,
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    sys::errno_result(r).with_context(|| format!("chown {}", dev.display()))?;
    // mknod's mode is filtered by the umask; chmod makes it exact.
    let r = unsafe { libc::fchmodat(dirfd.as_raw_fd(), cname.as_ptr(), n.mode & 0o7777, 0) };
    sys::errno_result(r).with_context(|| format!("chmod {}", dev.display()))
}

fn bind_host(root: BorrowedFd, dev: &Path) -> Result<()> {
    let host = CString::new(dev.as_os_str().as_bytes())?;
    let tree = sys::open_tree(
        libc::AT_FDCWD,
        &host,
        sys::OPEN_TREE_CLONE | sys::OPEN_TREE_CLOEXEC,
    )
    .with_context(|| {
        format!(
            "device {} does not exist on the host to bind into the user namespace",
            dev.display()
        )
    })?;
    let dst = resolve::ensure_in_root(root, dev, Kind::File, false)?;
    sys::move_mount_fd(tree.as_fd(), dst.as_fd()).with_context(|| format!("bind {}", dev.display()))
}

pub fn create_defaults(root: BorrowedFd, userns: bool, skip: &[&Path]) -> Result<()> {
    for &(path, kind, major, minor) in DEFAULT_DEVICES {
        if skip.iter().any(|p| *p == Path::new(path)) {
            continue;
        }
        let n = Node {
            path: Path::new(path),
            kind,
            major,
            minor,
            mode: 0o666,
            uid: 0,
            gid: 0,
        };
        create(root, &n, userns)?;
    }
    Ok(())
}

/// /dev/fd, /dev/std{in,out,err}, /dev/ptmx → pts/ptmx, and /dev/core if the host has kcore.
pub fn symlinks(root: BorrowedFd) -> Result<()> {
    let devfd = resolve::ensure_in_root(root, Path::new("/dev"), Kind::Dir, false)?;
    let dir = resolve::reopen_dir(devfd.as_fd())?;
    let mut links: Vec<(&str, &str)> = SYMLINKS.to_vec();
    links.push(("pts/ptmx", "/dev/ptmx"));
    if Path::new("/proc/kcore").exists() {
        links.push(("/proc/kcore", "/dev/core"));
    }
    for (target, link) in links {
        let name = &link["/dev/".len()..];
        let cname = CString::new(name)?;
        let ct = CString::new(target)?;
        if name == "ptmx" {
            // A ptmx node from the image would bypass the container's devpts instance.
            unsafe { libc::unlinkat(dir.as_raw_fd(), cname.as_ptr(), 0) };
        }
        let r = unsafe { libc::symlinkat(ct.as_ptr(), dir.as_raw_fd(), cname.as_ptr()) };
        if r < 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EEXIST) {
                return Err(e).with_context(|| format!("symlink {link}"));
            }
        }
    }
    Ok(())
}
