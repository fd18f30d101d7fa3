//! Everything that narrows what the container process may do, applied by init (and
//! by `exec`'s child) just before execve: ids, capabilities, rlimits, LSM labels,
//! scheduling attributes. Seccomp lives in [`crate::seccomp`].

pub mod caps;
pub mod exe_guard;
pub mod exec_trampoline;
pub mod lsm;
pub mod rlimits;
pub mod sched;
pub mod sealed_memfd;
pub mod user;

/// Keeps a process of ours unreadable and un-ptraceable from the container until
/// its execve (it holds our exe and host resources). Needed again after any uid or
/// gid change, which resets dumpable to `fs.suid_dumpable` (1 on some hosts).
pub fn stay_undumpable() {
    unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) };
}
