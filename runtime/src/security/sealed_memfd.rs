//! Executable files that can be neither written nor resized once made: what both
//! CVE-2019-5736 defences exec from (the trampoline, and the re-exec's fallback
//! copy of the runtime).

use std::ffi::CStr;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd};

/// The seals that make a memfd immutable; `F_SEAL_EXEC` is added where known.
pub const SEALS: libc::c_int =
    libc::F_SEAL_SEAL | libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_WRITE;

/// A new close-on-exec memfd that may be sealed and executed.
pub fn create(name: &CStr) -> io::Result<File> {
    const MFD_EXEC: libc::c_uint = 0x10;
    let flags = libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING;
    // MFD_EXEC: where vm.memfd_noexec asks for non-executable memfds by default
    // (Linux 6.3+); kernels before it do not know the flag (EINVAL). Where that
    // sysctl forbids executable memfds altogether it fails (EACCES).
    let mut fd = unsafe { libc::memfd_create(name.as_ptr(), flags | MFD_EXEC) };
    if fd < 0 && io::Error::last_os_error().raw_os_error() == Some(libc::EINVAL) {
        fd = unsafe { libc::memfd_create(name.as_ptr(), flags) };
    }
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(unsafe { File::from_raw_fd(fd) })
}

/// Seals `f` against writes, resizing and further seals.
pub fn seal(f: &File) -> io::Result<()> {
    // F_SEAL_EXEC (Linux 6.3+) also fixes the mode bits; older kernels lack it.
    const F_SEAL_EXEC: libc::c_int = 0x20;
    let fd = f.as_raw_fd();
    if unsafe { libc::fcntl(fd, libc::F_ADD_SEALS, SEALS | F_SEAL_EXEC) } < 0
        && unsafe { libc::fcntl(fd, libc::F_ADD_SEALS, SEALS) } < 0
    {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
