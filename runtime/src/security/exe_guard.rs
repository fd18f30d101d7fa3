//! CVE-2019-5736: a container process that execs `/proc/self/exe` while it is still
//! the runtime (init before its execve, or an `exec` child) gets the runtime's host
//! file, and can reopen it for writing once we exit. So before forking anything
//! that enters a container, the runtime re-executes itself from a sealed memfd
//! copy: what /proc/PID/exe then names can be neither written nor resized.
//!
//! The cheap way, taken first: re-execute from a private, detached, read-only bind
//! mount of the binary itself (open_tree(OPEN_TREE_CLONE) + mount_setattr(RDONLY)).
//! Opening /proc/PID/exe for writing then fails with EROFS, also through an O_PATH
//! fd kept after we exit; the detached mount is in no mount namespace, so no
//! container can clone it to drop the flag (open_tree needs the source mount in the
//! caller's namespace), and it propagates nowhere (the "mount storm" that made runc
//! drop its bind-mount variant). The exec maps the same page-cache pages as the
//! original: no copy, no extra memory. Where that is impossible (no CAP_SYS_ADMIN
//! in the mount namespace, a binary on an odd mount), a sealed memfd copy is the
//! fallback; it costs a 4 MB copy and cold text pages (~5 ms).
//!
//! A binary on a read-only mount is already safe and skips both. This runs only for
//! create/run/exec, the commands that fork into containers.

use anyhow::{bail, Context, Result};
use std::ffi::CString;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;

use crate::sys;

const SEALS: libc::c_int =
    libc::F_SEAL_SEAL | libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_WRITE;

/// Whether our executable can no longer be modified through /proc/self/exe.
pub fn is_protected() -> bool {
    let Ok(f) = std::fs::File::open("/proc/self/exe") else {
        return false;
    };
    let seals = unsafe { libc::fcntl(f.as_raw_fd(), libc::F_GET_SEALS) };
    if seals >= 0 && seals & SEALS == SEALS {
        return true;
    }
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    let ok = unsafe { libc::fstatvfs(f.as_raw_fd(), &mut st) } == 0;
    ok && st.f_flag & libc::ST_RDONLY != 0
}

/// Re-executes the runtime from a sealed memfd unless already protected. Returns
/// only on failure (or when already protected).
pub fn protect() -> Result<()> {
    if is_protected() {
        return Ok(());
    }
    let args: Vec<CString> = std::env::args_os()
        .map(|a| CString::new(a.as_bytes()).unwrap_or_default())
        .collect();
    let mut argv: Vec<*const libc::c_char> = args.iter().map(|a| a.as_ptr()).collect();
    argv.push(std::ptr::null());
    // KURA_RUNTIME_EXE_GUARD=memfd forces the fallback, so tests can attack both.
    let memfd_only = std::env::var_os("KURA_RUNTIME_EXE_GUARD").is_some_and(|v| v == "memfd");
    if let Some(tree) = (!memfd_only)
        .then(readonly_clone_of_self)
        .and_then(|r| r.ok())
    {
        // Returns only on failure; then the memfd below still protects us.
        execveat_empty(&tree, &argv);
    }
    let mem = sealed_copy_of_self()?;
    execveat_empty(&mem, &argv);
    bail!(
        "re-exec from sealed memfd: {}",
        std::io::Error::last_os_error()
    )
}

/// A detached bind mount of our own executable, read-only.
fn readonly_clone_of_self() -> std::io::Result<OwnedFd> {
    let tree = sys::open_tree(
        libc::AT_FDCWD,
        c"/proc/self/exe",
        sys::OPEN_TREE_CLONE | sys::OPEN_TREE_CLOEXEC,
    )?;
    let attr = sys::MountAttr {
        attr_set: sys::MOUNT_ATTR_RDONLY | sys::MOUNT_ATTR_NODEV,
        ..Default::default()
    };
    sys::mount_setattr(tree.as_fd(), false, &attr)?;
    Ok(tree)
}

fn execveat_empty(fd: &OwnedFd, argv: &[*const libc::c_char]) {
    extern "C" {
        static environ: *const *const libc::c_char;
    }
    unsafe {
        libc::syscall(
            libc::SYS_execveat,
            fd.as_raw_fd(),
            c"".as_ptr(),
            argv.as_ptr(),
            environ,
            libc::AT_EMPTY_PATH,
        )
    };
}

/// A sealed (unwritable, fixed-size) memfd copy of our own executable.
fn sealed_copy_of_self() -> Result<OwnedFd> {
    let src = std::fs::File::open("/proc/self/exe").context("open /proc/self/exe")?;
    let size = src.metadata()?.len();
    let fd = unsafe {
        libc::memfd_create(
            c"kura-runtime".as_ptr(),
            libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error()).context("memfd_create");
    }
    let mem = unsafe { OwnedFd::from_raw_fd(fd) };
    // read/write, not sendfile: sendfile splices page references through a pipe,
    // and F_SEAL_WRITE fails with EBUSY while any memfd page is still pinned by one.
    let mut buf = vec![0u8; 64 * 1024];
    let mut left = size as usize;
    while left > 0 {
        let n = unsafe { libc::read(src.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if n < 0 && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
            continue;
        }
        if n <= 0 {
            return Err(std::io::Error::last_os_error()).context("read runtime binary");
        }
        let mut chunk = &buf[..n as usize];
        while !chunk.is_empty() {
            let w = unsafe { libc::write(mem.as_raw_fd(), chunk.as_ptr().cast(), chunk.len()) };
            if w < 0 && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            if w <= 0 {
                return Err(std::io::Error::last_os_error())
                    .context("copy runtime binary into memfd");
            }
            chunk = &chunk[w as usize..];
        }
        left = left.saturating_sub(n as usize);
    }
    drop(buf);
    if unsafe { libc::fcntl(mem.as_raw_fd(), libc::F_ADD_SEALS, SEALS) } < 0 {
        return Err(std::io::Error::last_os_error()).context("seal memfd");
    }
    Ok(mem)
}
