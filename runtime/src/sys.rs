//! Thin wrappers over the syscalls that nix does not cover (the new mount API,
//! openat2 with RESOLVE_IN_ROOT, raw clone). Constants are the kernel's stable ABI.

use std::ffi::CStr;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

pub const OPEN_TREE_CLONE: u32 = 1;
pub const OPEN_TREE_CLOEXEC: u32 = libc::O_CLOEXEC as u32;
pub const MOVE_MOUNT_F_EMPTY_PATH: u32 = 0x4;
pub const MOVE_MOUNT_T_EMPTY_PATH: u32 = 0x40;

pub const MOUNT_ATTR_RDONLY: u64 = 0x1;
pub const MOUNT_ATTR_NOSUID: u64 = 0x2;
pub const MOUNT_ATTR_NODEV: u64 = 0x4;
pub const MOUNT_ATTR_NOEXEC: u64 = 0x8;
pub const MOUNT_ATTR__ATIME: u64 = 0x70;
pub const MOUNT_ATTR_RELATIME: u64 = 0x0;
pub const MOUNT_ATTR_NOATIME: u64 = 0x10;
pub const MOUNT_ATTR_STRICTATIME: u64 = 0x20;
pub const MOUNT_ATTR_NODIRATIME: u64 = 0x80;
pub const MOUNT_ATTR_IDMAP: u64 = 0x100000;
pub const MOUNT_ATTR_NOSYMFOLLOW: u64 = 0x200000;

pub const RESOLVE_NO_MAGICLINKS: u64 = 0x02;
pub const RESOLVE_NO_SYMLINKS: u64 = 0x04;
pub const RESOLVE_IN_ROOT: u64 = 0x10;

#[repr(C)]
#[derive(Default, Debug, Clone, Copy)]
pub struct MountAttr {
    pub attr_set: u64,
    pub attr_clr: u64,
    pub propagation: u64,
    pub userns_fd: u64,
}

#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}

fn check(r: libc::c_long) -> io::Result<libc::c_long> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

fn fd_result(r: libc::c_long) -> io::Result<OwnedFd> {
    check(r).map(|fd| unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

pub fn openat2(
    dir: BorrowedFd,
    path: &CStr,
    flags: i32,
    mode: u32,
    resolve: u64,
) -> io::Result<OwnedFd> {
    let how = OpenHow {
        flags: (flags | libc::O_CLOEXEC) as u64,
        mode: mode as u64,
        resolve,
    };
    loop {
        let r = unsafe {
            libc::syscall(
                libc::SYS_openat2,
                dir.as_raw_fd(),
                path.as_ptr(),
                &how as *const OpenHow,
                std::mem::size_of::<OpenHow>(),
            )
        };
        // The kernel returns EAGAIN when a concurrent rename raced the lookup; retry.
        if r < 0 && io::Error::last_os_error().raw_os_error() == Some(libc::EAGAIN) {
            continue;
        }
        return fd_result(r);
    }
}

pub fn open_tree(dir: RawFd, path: &CStr, flags: u32) -> io::Result<OwnedFd> {
    fd_result(unsafe { libc::syscall(libc::SYS_open_tree, dir, path.as_ptr(), flags) })
}

/// Attaches the detached mount `from` on top of whatever `to` (an O_PATH fd) names.
pub fn move_mount_fd(from: BorrowedFd, to: BorrowedFd) -> io::Result<()> {
    check(unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            from.as_raw_fd(),
            c"".as_ptr(),
            to.as_raw_fd(),
            c"".as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH,
        )
    })
    .map(drop)
}

pub fn mount_setattr(fd: BorrowedFd, recursive: bool, attr: &MountAttr) -> io::Result<()> {
    let mut flags = libc::AT_EMPTY_PATH as u32;
    if recursive {
        flags |= libc::AT_RECURSIVE as u32;
    }
    check(unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            fd.as_raw_fd(),
            c"".as_ptr(),
            flags,
            attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    })
    .map(drop)
}

pub fn pivot_root(new_root: &CStr, put_old: &CStr) -> io::Result<()> {
    check(unsafe { libc::syscall(libc::SYS_pivot_root, new_root.as_ptr(), put_old.as_ptr()) })
        .map(drop)
}

/// fork(2) with namespace flags: `clone` without a new stack, so the child resumes
/// here on a copy of our address space, exactly like fork. Returns 0 in the child.
///
/// # Safety
/// The caller must be single-threaded, as with fork.
pub unsafe fn clone_fork(flags: u64) -> io::Result<i32> {
    // x86_64 and most arches take (flags, stack, parent_tid, child_tid, tls); a null
    // stack means "use the parent's stack pointer", which is fork's behaviour.
    let r = libc::syscall(
        libc::SYS_clone,
        flags | libc::SIGCHLD as u64,
        std::ptr::null_mut::<libc::c_void>(),
        std::ptr::null_mut::<libc::c_void>(),
        std::ptr::null_mut::<libc::c_void>(),
        0usize,
    );
    check(r).map(|p| p as i32)
}

const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// `clone_fork`, with the child born in the cgroup2 directory `cgroup_fd`
/// (clone3's CLONE_INTO_CGROUP, Linux 5.7). On any error no child exists
/// (ENOSYS, E2BIG or EINVAL on older kernels; EBUSY/EOPNOTSUPP for a cgroup that
/// cannot take processes); see `clone_maybe_into_cgroup`.
///
/// # Safety
/// As `clone_fork`.
pub unsafe fn clone_into_cgroup(flags: u64, cgroup_fd: RawFd) -> io::Result<i32> {
    // struct clone_args, CLONE_ARGS_SIZE_VER2: every field is a u64.
    #[repr(C)]
    #[derive(Default)]
    struct CloneArgs {
        flags: u64,
        pidfd: u64,
        child_tid: u64,
        parent_tid: u64,
        exit_signal: u64,
        stack: u64,
        stack_size: u64,
        tls: u64,
        set_tid: u64,
        set_tid_size: u64,
        cgroup: u64,
    }
    // clone3 refuses an exit signal with CLONE_PARENT: the child then inherits the
    // caller's own (SIGCHLD, for a forked caller), as clone(2) does.
    let exit_signal = if flags & libc::CLONE_PARENT as u64 != 0 {
        0
    } else {
        libc::SIGCHLD as u64
    };
    let args = CloneArgs {
        flags: flags | CLONE_INTO_CGROUP,
        exit_signal,
        cgroup: cgroup_fd as u64,
        ..Default::default()
    };
    // A zero stack makes the child run on the parent's stack, as fork does.
    let r = libc::syscall(
        libc::SYS_clone3,
        &args as *const CloneArgs,
        std::mem::size_of::<CloneArgs>(),
    );
    check(r).map(|p| p as i32)
}

/// `clone_fork` with the child born in the cgroup2 directory `cgroup` when one is
/// given and the kernel can; otherwise a plain clone, for the caller to move into the
/// cgroup. Returns the pid (0 in the child) and whether the child was born there.
/// Not retried as a plain clone: a refusal for the cgroup's limits (EAGAIN, pids.max)
/// or for memory, which a move would get around or meet again.
///
/// # Safety
/// As `clone_fork`.
pub unsafe fn clone_maybe_into_cgroup(
    flags: u64,
    cgroup: Option<RawFd>,
) -> io::Result<(i32, bool)> {
    if let Some(fd) = cgroup {
        match clone_into_cgroup(flags, fd) {
            Ok(pid) => return Ok((pid, true)),
            Err(e) if matches!(e.raw_os_error(), Some(libc::EAGAIN) | Some(libc::ENOMEM)) => {
                return Err(e)
            }
            Err(_) => {}
        }
    }
    clone_fork(flags).map(|pid| (pid, false))
}

/// `/proc/self/fd/N`: a path the kernel resolves to exactly the object behind fd N,
/// so mount(2) lands where we resolved, not where a swapped symlink points.
pub fn proc_fd_path(fd: RawFd) -> std::ffi::CString {
    std::ffi::CString::new(format!("/proc/self/fd/{fd}")).expect("no NUL in fd path")
}

/// execveat(fd, "", argv, envp, AT_EMPTY_PATH): execs the file behind `fd`.
/// Returns only on failure.
///
/// # Safety
/// `argv` and `envp` must be null-terminated arrays of valid C strings.
pub unsafe fn execveat_empty(
    fd: RawFd,
    argv: *const *const libc::c_char,
    envp: *const *const libc::c_char,
) -> io::Error {
    libc::syscall(
        libc::SYS_execveat,
        fd,
        c"".as_ptr(),
        argv,
        envp,
        libc::AT_EMPTY_PATH,
    );
    io::Error::last_os_error()
}

pub fn errno_result(r: libc::c_int) -> io::Result<()> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}
