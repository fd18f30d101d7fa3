//! Everything that narrows what the container process may do, applied by init (and
//! by `exec`'s child) just before execve: ids, capabilities, rlimits, LSM labels,
//! scheduling attributes. Seccomp lives in [`crate::seccomp`].

pub mod caps;
pub mod exe_guard;
pub mod exec_trampoline;
pub mod lsm;
pub mod rlimits;
pub mod sched;
pub mod user;
