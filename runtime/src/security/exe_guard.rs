//! CVE-2019-5736: a container process that execs `/proc/self/exe` while it is still
//! the runtime (init before its execve, or an `exec` child) gets the runtime's host
//! file, and can reopen it for writing once we exit. So before forking anything
//! that enters a container, the runtime re-executes itself from a sealed memfd
//! copy: what /proc/PID/exe then names can be neither written nor resized.
//!
//! A binary on a read-only mount is already safe and skips the copy. The copy runs
//! only for create/run/exec, the commands that fork into containers.

use anyhow::{bail, Context, Result};
use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;

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
    let mut left = size as usize;
    while left > 0 {
        let n =
            unsafe { libc::sendfile(mem.as_raw_fd(), src.as_raw_fd(), std::ptr::null_mut(), left) };
        if n <= 0 {
            return Err(std::io::Error::last_os_error()).context("copy runtime binary into memfd");
        }
        left -= n as usize;
    }
    if unsafe { libc::fcntl(mem.as_raw_fd(), libc::F_ADD_SEALS, SEALS) } < 0 {
        return Err(std::io::Error::last_os_error()).context("seal memfd");
    }
    let args: Vec<CString> = std::env::args_os()
        .map(|a| CString::new(a.as_bytes()).unwrap_or_default())
        .collect();
    let mut argv: Vec<*const libc::c_char> = args.iter().map(|a| a.as_ptr()).collect();
    argv.push(std::ptr::null());
    extern "C" {
        static environ: *const *const libc::c_char;
    }
    unsafe {
        libc::syscall(
            libc::SYS_execveat,
            mem.as_raw_fd(),
            c"".as_ptr(),
            argv.as_ptr(),
            environ,
            libc::AT_EMPTY_PATH,
        )
    };
    bail!(
        "re-exec from sealed memfd: {}",
        std::io::Error::last_os_error()
    )
}
