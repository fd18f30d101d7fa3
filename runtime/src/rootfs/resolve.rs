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
use std::os::unix::ffi::{OsStrExt, OsStringExt};
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
    if no_symlinks {
        create_plain(root, path, kind)?;
    } else {
        create_following(root, path, kind)?;
    }
    open_in_root(root, path, no_symlinks)
        .with_context(|| format!("open {} in rootfs", path.display()))
}

fn mkdirat_or_exists(dir: BorrowedFd, name: &CString) -> io::Result<()> {
    if unsafe { libc::mkdirat(dir.as_raw_fd(), name.as_ptr(), 0o755) } < 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EEXIST) {
            return Err(e);
        }
    }
    Ok(())
}

fn create_leaf(dir: BorrowedFd, name: &CString, kind: Kind) -> io::Result<()> {
    match kind {
        Kind::Dir => mkdirat_or_exists(dir, name),
        Kind::File => {
            let fd = unsafe {
                libc::openat(
                    dir.as_raw_fd(),
                    name.as_ptr(),
                    libc::O_CREAT | libc::O_WRONLY | libc::O_CLOEXEC | libc::O_NOFOLLOW,
                    0o644,
                )
            };
            if fd < 0 {
                return Err(io::Error::last_os_error());
            }
            unsafe { libc::close(fd) };
            Ok(())
        }
    }
}

/// Creates every missing component of `path` without following any symlink.
fn create_plain(root: BorrowedFd, path: &Path, kind: Kind) -> Result<()> {
    let rel = relative(path);
    let mut cur = sys::openat2(
        root,
        c".",
        libc::O_PATH | libc::O_DIRECTORY,
        0,
        RESOLVE_IN_ROOT,
    )?;
    let parts: Vec<_> = rel.components().collect();
    for (i, c) in parts.iter().enumerate() {
        let name = CString::new(c.as_os_str().as_bytes())?;
        let last = i + 1 == parts.len();
        let leaf = if last { kind } else { Kind::Dir };
        let dirfd = reopen_dir(cur.as_fd())?;
        let _ = create_leaf(dirfd.as_fd(), &name, leaf);
        let resolve = RESOLVE_IN_ROOT | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS;
        cur = sys::openat2(dirfd.as_fd(), &name, libc::O_PATH, 0, resolve).with_context(|| {
            format!(
                "{}: component {:?} is a symlink or cannot be created",
                path.display(),
                c.as_os_str()
            )
        })?;
    }
    Ok(())
}

/// Creates what is missing along `path`, following symlinks as the kernel would if
/// the rootfs were `/` (a dangling `/data -> /srv/data` makes /srv/data): the
/// securejoin walk, done one fd-relative step at a time so nothing resolves
/// outside the rootfs even if the tree changes under us.
fn create_following(root: BorrowedFd, path: &Path, kind: Kind) -> Result<()> {
    use std::collections::VecDeque;
    let mut todo: VecDeque<std::ffi::OsString> = relative(path)
        .components()
        .map(|c| c.as_os_str().to_owned())
        .collect();
    // Directories from the root down to where we are; `..` pops, never past the root.
    let root_dir = sys::openat2(
        root,
        c".",
        libc::O_PATH | libc::O_DIRECTORY,
        0,
        RESOLVE_IN_ROOT,
    )?;
    let mut stack: Vec<OwnedFd> = Vec::new();
    let mut links = 0;
    while let Some(name) = todo.pop_front() {
        if name == ".." {
            stack.pop();
            continue;
        }
        if name == "." || name.is_empty() {
            continue;
        }
        let cur = stack.last().map(|f| f.as_fd()).unwrap_or(root_dir.as_fd());
        let dirfd = reopen_dir(cur)?;
        let cname = CString::new(name.as_bytes())?;
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        let r = unsafe {
            libc::fstatat(
                dirfd.as_raw_fd(),
                cname.as_ptr(),
                &mut st,
                libc::AT_SYMLINK_NOFOLLOW,
            )
        };
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::ENOENT) {
                return Err(e).with_context(|| format!("{}: stat {:?}", path.display(), name));
            }
            let leaf = if todo.is_empty() { kind } else { Kind::Dir };
            create_leaf(dirfd.as_fd(), &cname, leaf)
                .with_context(|| format!("create {} in rootfs", path.display()))?;
            if todo.is_empty() {
                return Ok(());
            }
        } else if st.st_mode & libc::S_IFMT == libc::S_IFLNK {
            links += 1;
            if links > 40 {
                bail!("{}: too many levels of symbolic links", path.display());
            }
            let mut buf = vec![0u8; libc::PATH_MAX as usize];
            let n = unsafe {
                libc::readlinkat(
                    dirfd.as_raw_fd(),
                    cname.as_ptr(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                )
            };
            if n < 0 {
                return Err(io::Error::last_os_error())
                    .with_context(|| format!("readlink {:?}", name));
            }
            buf.truncate(n as usize);
            let target = std::path::PathBuf::from(std::ffi::OsString::from_vec(buf));
            if target.is_absolute() {
                stack.clear();
            }
            for c in target.components().rev() {
                match c {
                    Component::RootDir | Component::CurDir => {}
                    other => todo.push_front(other.as_os_str().to_owned()),
                }
            }
            continue;
        } else if todo.is_empty() {
            return Ok(());
        }
        let next = sys::openat2(
            dirfd.as_fd(),
            &cname,
            libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW,
            0,
            RESOLVE_IN_ROOT | RESOLVE_NO_SYMLINKS,
        )
        .with_context(|| format!("{}: {:?} is not a directory", path.display(), name))?;
        stack.push(next);
    }
    Ok(())
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
