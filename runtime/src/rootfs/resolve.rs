//! Path resolution inside the container's rootfs that never leaves it.
//!
//! Every mount destination and device path is looked up with openat2(RESOLVE_IN_ROOT):
//! the kernel treats the rootfs as `/` for `..` and absolute symlinks, so a hostile
//! image (or a symlink swapped in while we work) cannot point a mount at the host
//! (the CVE-2021-30465 class). We then act on the fd through `/proc/self/fd/N`.

use crate::sys::{self, RESOLVE_IN_ROOT, RESOLVE_NO_MAGICLINKS, RESOLVE_NO_SYMLINKS};
use anyhow::{bail, Context, Result};
use std::ffi::CString;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::path::{Component, Path};

/// What to create when the destination does not exist.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Kind {
    Dir,
    File,
}

fn cstr(p: &Path) -> Result<CString> {
    use std::os::unix::ffi::OsStrExt;
    CString::new(p.as_os_str().as_bytes())
        .with_context(|| format!("{}: NUL byte in path", p.display()))
}

/// The path relative to the root, with `.` and leading `/` dropped.
fn relative(p: &Path) -> std::path::PathBuf {
    p.components()
        .filter(|c| !matches!(c, Component::RootDir | Component::CurDir))
        .collect()
}

/// Opens `path` (absolute, relative to `root`) as O_PATH without leaving `root`.
pub fn open_in_root(root: BorrowedFd, path: &Path, no_symlinks: bool) -> io::Result<OwnedFd> {
    let rel = relative(path);
    let c = if rel.as_os_str().is_empty() {
        c".".to_owned()
    } else {
        cstr(&rel).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?
    };
    let mut resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS;
    if no_symlinks {
        resolve |= RESOLVE_NO_SYMLINKS;
    }
    sys::openat2(root, &c, libc::O_PATH, 0, resolve)
}

/// Opens `path` inside `root`, creating it (and missing parents, as directories with
/// mode 0755) when absent. Returns an O_PATH fd of the object.
pub fn ensure_in_root(
    root: BorrowedFd,
    path: &Path,
    kind: Kind,
    no_symlinks: bool,
) -> Result<OwnedFd> {
    match open_in_root(root, path, no_symlinks) {
        Ok(fd) => return Ok(fd),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) && no_symlinks => {
            bail!(
                "{} is a symlink (refused for this mount type)",
                path.display()
            )
        }
        Err(e) => return Err(e).with_context(|| format!("open {} in rootfs", path.display())),
    }
    let rel = relative(path);
    let (Some(parent), Some(name)) = (rel.parent(), rel.file_name()) else {
        bail!("{}: cannot create the rootfs itself", path.display());
    };
    let pfd = ensure_in_root(root, parent, Kind::Dir, no_symlinks)?;
    let cname = cstr(Path::new(name))?;
    // O_PATH fds cannot be used with mkdirat directly in old kernels; reopen as a dir.
    let dirfd = reopen_dir(pfd.as_fd())?;
    let r = match kind {
        Kind::Dir => unsafe { libc::mkdirat(dirfd.as_raw_fd(), cname.as_ptr(), 0o755) },
        Kind::File => {
            let fd = unsafe {
                libc::openat(
                    dirfd.as_raw_fd(),
                    cname.as_ptr(),
                    libc::O_CREAT
                        | libc::O_EXCL
                        | libc::O_WRONLY
                        | libc::O_CLOEXEC
                        | libc::O_NOFOLLOW,
                    0o644,
                )
            };
            if fd >= 0 {
                unsafe { libc::close(fd) };
                0
            } else {
                -1
            }
        }
    };
    if r < 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EEXIST) {
            return Err(e).with_context(|| format!("create {} in rootfs", path.display()));
        }
    }
    open_in_root(root, path, no_symlinks)
        .with_context(|| format!("open {} in rootfs", path.display()))
}

/// Turns an O_PATH fd of a directory into a real directory fd.
pub fn reopen_dir(fd: BorrowedFd) -> Result<OwnedFd> {
    let p = sys::proc_fd_path(fd.as_raw_fd());
    let r = unsafe {
        libc::open(
            p.as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error()).context("reopen directory");
    }
    Ok(unsafe { OwnedFd::from_raw_fd(r) })
}

/// Opens a directory on the host (or current root) as an fd to resolve against.
pub fn open_root(path: &Path) -> Result<OwnedFd> {
    let c = cstr(path)?;
    let r = unsafe {
        libc::open(
            c.as_ptr(),
            libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error()).with_context(|| format!("open {}", path.display()));
    }
    Ok(unsafe { OwnedFd::from_raw_fd(r) })
}

pub fn is_dir(fd: BorrowedFd) -> bool {
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    let r = unsafe { libc::fstat(fd.as_raw_fd(), &mut st) };
    r == 0 && (st.st_mode & libc::S_IFMT) == libc::S_IFDIR
}
