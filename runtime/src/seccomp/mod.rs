//! Seccomp: compiles an OCI `linux.seccomp` section to classic BPF and installs it.
//!
//! seccompiler's filter builder has one match action per filter and knows only
//! x86_64/aarch64, while OCI profiles need an action (and errno) per rule, several
//! ABIs in one filter (x86 and x32 next to x86_64) and libseccomp's rule semantics.
//! So we keep its BPF types as the program representation and compile ourselves.
//!
//! Behaviour follows runc (on libseccomp); the choices worth knowing:
//!
//! - **Architectures**: the native one is always covered, plus those listed;
//!   an empty list means native only. libseccomp's filter starts with the native
//!   arch and runc never removes it. Arches we cannot filter for are an error.
//! - **Unknown syscall names** are skipped per arch without error, as runc skips
//!   names libseccomp cannot resolve: profiles list syscalls of every arch and
//!   of kernels newer than our tables.
//! - **Bad arch** (`seccomp_data.arch` not covered, or an x32 number on a filter
//!   without x32): `SECCOMP_RET_KILL_PROCESS`. libseccomp's default kills only
//!   the thread; a foreign-ABI syscall is an escape attempt, not something to
//!   limp on from, and a lone dead thread can wedge its process. A syscall
//!   number of -1 on x86_64 (a tracer skipping the call) gets the default
//!   action, as in libseccomp.
//! - **Several rules for one syscall**: an unconditional rule overrides the
//!   conditional ones, and the first unconditional rule wins (libseccomp).
//!   Conditional rules are tried in profile order, the first whose conditions
//!   all hold decides (libseccomp merges them into a tree and rejects some
//!   overlaps with conflicting actions, which we accept). A rule whose action
//!   equals the default action is dropped, as runc does.
//! - **Conditions** in a rule are ANDed, except when two test the same argument
//!   index: then, like runc, each condition becomes a rule of its own (ORed).
//!   Arguments compare as unsigned 64-bit values on 64-bit ABIs and by their
//!   low 32 bits on 32-bit ABIs, x32 included (libseccomp). `SCMP_CMP_MASKED_EQ`
//!   is `(arg & value) == valueTwo`.
//! - **ENOSYS**: unless the default action is ALLOW, LOG or TRACE, a number
//!   above the highest one the profile names for that arch returns ENOSYS
//!   instead of the default action (runc's patchbpf): libc then falls back from
//!   syscalls newer than the profile (clone3 to clone) instead of failing with
//!   EPERM. On s390x number 0 too, the kernel's stand-in for unknown numbers.
//!   runc leaves out arches the profile does not list; we cover them too.
//! - **Validation**: `errnoRet`/`defaultErrnoRet` on an action without an
//!   errno is an error (runtime-spec MUST; runc ignores it), as are
//!   `SCMP_ACT_NOTIFY` as default action and NOTIFY rules without
//!   `listenerPath`. Errors name the field, e.g. `linux.seccomp.syscalls[3].errnoRet`.
//! - **Flags**: absent `flags` means `SECCOMP_FILTER_FLAG_SPEC_ALLOW`, as in
//!   runc. `WAIT_KILLABLE_RECV` is dropped when no rule uses `SCMP_ACT_NOTIFY`
//!   (the kernel rejects it without a listener). `TSYNC` is passed on; with a
//!   listener `install` adds `TSYNC_ESRCH`, which the kernel requires then.
//! - **Not done**: libseccomp also turns rules on `socket`, `semop` & co. into
//!   rules on the `socketcall`/`ipc` multiplexers of x86 and s390x; here rules
//!   match the direct syscalls only.

mod arch;
mod asm;
mod codegen;
#[cfg(test)]
mod tests;

use std::os::fd::{FromRawFd, OwnedFd, RawFd};

use anyhow::{anyhow, bail, Result};
use oci_spec::runtime::{
    LinuxSeccomp, LinuxSeccompAction, LinuxSeccompFilterFlag, LinuxSeccompOperator,
};

use codegen::{Cond, Op, Options, Rule};

pub const SECCOMP_FILTER_FLAG_TSYNC: u32 = 1 << 0;
pub const SECCOMP_FILTER_FLAG_LOG: u32 = 1 << 1;
pub const SECCOMP_FILTER_FLAG_SPEC_ALLOW: u32 = 1 << 2;
pub const SECCOMP_FILTER_FLAG_NEW_LISTENER: u32 = 1 << 3;
pub const SECCOMP_FILTER_FLAG_TSYNC_ESRCH: u32 = 1 << 4;
pub const SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV: u32 = 1 << 5;

const SECCOMP_SET_MODE_FILTER: libc::c_ulong = 1;

// SECCOMP_RET_* action values.
const RET_KILL_PROCESS: u32 = 0x8000_0000;
const RET_KILL_THREAD: u32 = 0x0000_0000;
const RET_TRAP: u32 = 0x0003_0000;
const RET_ERRNO: u32 = 0x0005_0000;
const RET_USER_NOTIF: u32 = 0x7fc0_0000;
const RET_TRACE: u32 = 0x7ff0_0000;
const RET_LOG: u32 = 0x7ffc_0000;
const RET_ALLOW: u32 = 0x7fff_0000;

/// Every action `compile` accepts.
pub const SUPPORTED_ACTIONS: &[&str] = &[
    "SCMP_ACT_KILL",
    "SCMP_ACT_KILL_PROCESS",
    "SCMP_ACT_KILL_THREAD",
    "SCMP_ACT_TRAP",
    "SCMP_ACT_ERRNO",
    "SCMP_ACT_TRACE",
    "SCMP_ACT_ALLOW",
    "SCMP_ACT_LOG",
    "SCMP_ACT_NOTIFY",
];

/// Every architecture `compile` can filter for (`SCMP_ARCH_NATIVE` is also
/// accepted when the runtime's own arch is among these).
pub const SUPPORTED_ARCHES: &[&str] = &[
    "SCMP_ARCH_X86",
    "SCMP_ARCH_X86_64",
    "SCMP_ARCH_X32",
    "SCMP_ARCH_ARM",
    "SCMP_ARCH_AARCH64",
    "SCMP_ARCH_MIPS",
    "SCMP_ARCH_MIPSEL",
    "SCMP_ARCH_MIPS64",
    "SCMP_ARCH_MIPSEL64",
    "SCMP_ARCH_PPC64",
    "SCMP_ARCH_PPC64LE",
    "SCMP_ARCH_S390X",
    "SCMP_ARCH_RISCV64",
    "SCMP_ARCH_LOONGARCH64",
];

/// Every filter flag `compile` accepts. Whether the running kernel takes
/// them is only known at `install` (LOG: 4.14, SPEC_ALLOW: 4.17,
/// WAIT_KILLABLE_RECV: 5.19).
pub const SUPPORTED_FLAGS: &[&str] = &[
    "SECCOMP_FILTER_FLAG_TSYNC",
    "SECCOMP_FILTER_FLAG_LOG",
    "SECCOMP_FILTER_FLAG_SPEC_ALLOW",
    "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV",
];

/// Every argument operator `compile` accepts.
pub const SUPPORTED_OPERATORS: &[&str] = &[
    "SCMP_CMP_NE",
    "SCMP_CMP_LT",
    "SCMP_CMP_LE",
    "SCMP_CMP_EQ",
    "SCMP_CMP_GE",
    "SCMP_CMP_GT",
    "SCMP_CMP_MASKED_EQ",
];

/// A compiled filter, ready for [`install`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Program {
    pub filter: seccompiler::BpfProgram,
    /// `SECCOMP_FILTER_FLAG_*` bits; `install` adds the listener bits.
    pub flags: u32,
    /// Some rule uses `SCMP_ACT_NOTIFY`: `install` returns a listener fd.
    pub notify: bool,
}

/// Compiles a profile. Pure computation: no kernel calls, no I/O.
pub fn compile(s: &LinuxSeccomp) -> Result<Program> {
    use LinuxSeccompAction as A;

    let default_action = s.default_action();
    if default_action == A::ScmpActNotify {
        // The process that must hand the listener fd out would block on itself.
        bail!("linux.seccomp.defaultAction: SCMP_ACT_NOTIFY cannot be the default action");
    }
    let default = action_value(default_action, s.default_errno_ret(), || {
        "linux.seccomp.defaultErrnoRet".into()
    })?;

    let native = arch::native().ok_or_else(|| {
        anyhow!(
            "linux.seccomp: seccomp is not supported on {}",
            std::env::consts::ARCH
        )
    })?;
    let mut arches = vec![native];
    for (i, &a) in s.architectures().iter().flatten().enumerate() {
        let def = arch::from_oci(a).ok_or_else(|| {
            anyhow!("linux.seccomp.architectures[{i}]: unsupported architecture \"{a}\"")
        })?;
        if !arches.iter().any(|d| std::ptr::eq(*d, def)) {
            arches.push(def);
        }
    }

    let mut flags = match s.flags() {
        None => SECCOMP_FILTER_FLAG_SPEC_ALLOW,
        Some(list) => list.iter().fold(0, |acc, f| {
            acc | match f {
                LinuxSeccompFilterFlag::SeccompFilterFlagTsync => SECCOMP_FILTER_FLAG_TSYNC,
                LinuxSeccompFilterFlag::SeccompFilterFlagLog => SECCOMP_FILTER_FLAG_LOG,
                LinuxSeccompFilterFlag::SeccompFilterFlagSpecAllow => {
                    SECCOMP_FILTER_FLAG_SPEC_ALLOW
                }
                LinuxSeccompFilterFlag::SeccompFilterFlagWaitKillableRecv => {
                    SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV
                }
            }
        }),
    };

    let syscalls = s.syscalls().as_deref().unwrap_or_default();
    let mut rules = Vec::with_capacity(syscalls.len());
    let mut notify = false;
    for (i, sc) in syscalls.iter().enumerate() {
        if sc.names().is_empty() {
            bail!("linux.seccomp.syscalls[{i}].names: must name at least one syscall");
        }
        if let Some(j) = sc.names().iter().position(|n| n.is_empty()) {
            bail!("linux.seccomp.syscalls[{i}].names[{j}]: empty syscall name");
        }
        let action = action_value(sc.action(), sc.errno_ret(), || {
            format!("linux.seccomp.syscalls[{i}].errnoRet")
        })?;
        notify |= sc.action() == A::ScmpActNotify;

        let args = sc.args().as_deref().unwrap_or_default();
        let mut conds = Vec::with_capacity(args.len());
        let (mut seen, mut any) = (0u8, false);
        for (j, a) in args.iter().enumerate() {
            if a.index() > 5 {
                bail!(
                    "linux.seccomp.syscalls[{i}].args[{j}].index: {} is out of range (0-5)",
                    a.index()
                );
            }
            let bit = 1u8 << a.index();
            any |= seen & bit != 0;
            seen |= bit;
            conds.push(Cond {
                index: a.index() as u8,
                op: operator(a.op()),
                value: a.value(),
                value_two: a.value_two().unwrap_or(0),
            });
        }
        rules.push(Rule {
            names: sc.names(),
            action,
            redundant: action == default,
            conds,
            any,
        });
    }

    let listener = s
        .listener_path()
        .as_ref()
        .is_some_and(|p| !p.as_os_str().is_empty());
    if notify && !listener {
        bail!("linux.seccomp.listenerPath: must be set when a rule uses SCMP_ACT_NOTIFY");
    }
    if s.listener_metadata().is_some() && !listener {
        bail!("linux.seccomp.listenerMetadata: must not be set without listenerPath");
    }
    if !notify {
        flags &= !SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV;
    }

    let enosys_ret = RET_ERRNO | libc::ENOSYS as u32;
    let opts = Options {
        default,
        bad_arch: RET_KILL_PROCESS,
        enosys: !matches!(
            default_action,
            A::ScmpActAllow | A::ScmpActLog | A::ScmpActTrace
        ) && default != enosys_ret,
        enosys_ret,
    };
    let filter = codegen::generate(&arches, &rules, &opts)?;
    Ok(Program {
        filter,
        flags,
        notify,
    })
}

/// The `SECCOMP_RET_*` value of an action; `field` names the errno field for
/// error messages.
fn action_value(
    a: LinuxSeccompAction,
    errno: Option<u32>,
    field: impl Fn() -> String,
) -> Result<u32> {
    use LinuxSeccompAction as A;
    let data = match (a, errno) {
        (A::ScmpActErrno | A::ScmpActTrace, None) => libc::EPERM as u32,
        // SECCOMP_RET_DATA is 16 bits; the kernel caps errnos at 4095 itself.
        (A::ScmpActErrno | A::ScmpActTrace, Some(e)) if e <= 0xffff => e,
        (A::ScmpActErrno | A::ScmpActTrace, Some(e)) => {
            bail!("{}: {e} is out of range (0-65535)", field())
        }
        (_, Some(_)) => bail!(
            "{}: only SCMP_ACT_ERRNO and SCMP_ACT_TRACE take an errno, not {a}",
            field()
        ),
        (_, None) => 0,
    };
    Ok(match a {
        A::ScmpActKill | A::ScmpActKillThread => RET_KILL_THREAD,
        A::ScmpActKillProcess => RET_KILL_PROCESS,
        A::ScmpActTrap => RET_TRAP,
        A::ScmpActErrno => RET_ERRNO | data,
        A::ScmpActTrace => RET_TRACE | data,
        A::ScmpActNotify => RET_USER_NOTIF,
        A::ScmpActLog => RET_LOG,
        A::ScmpActAllow => RET_ALLOW,
    })
}

fn operator(op: LinuxSeccompOperator) -> Op {
    use LinuxSeccompOperator as O;
    match op {
        O::ScmpCmpNe => Op::Ne,
        O::ScmpCmpLt => Op::Lt,
        O::ScmpCmpLe => Op::Le,
        O::ScmpCmpEq => Op::Eq,
        O::ScmpCmpGe => Op::Ge,
        O::ScmpCmpGt => Op::Gt,
        O::ScmpCmpMaskedEq => Op::MaskedEq,
    }
}

#[repr(C)]
struct SockFprog {
    len: libc::c_ushort,
    filter: *const seccompiler::sock_filter,
}

/// Installs the filter on the calling thread (all threads with TSYNC).
///
/// Needs no_new_privs set or CAP_SYS_ADMIN. Returns the notification
/// listener when `p.notify`. Allocation-free unless it fails, so it is safe
/// between fork and exec.
pub fn install(p: &Program) -> Result<Option<OwnedFd>> {
    let len = p.filter.len();
    if len == 0 || len > asm::MAX_INSNS {
        bail!("seccomp: filter of {len} instructions cannot be installed");
    }
    let mut flags = p.flags;
    if p.notify {
        flags |= SECCOMP_FILTER_FLAG_NEW_LISTENER;
        if flags & SECCOMP_FILTER_FLAG_TSYNC != 0 {
            flags |= SECCOMP_FILTER_FLAG_TSYNC_ESRCH;
        }
    }
    let prog = SockFprog {
        len: len as libc::c_ushort,
        filter: p.filter.as_ptr(),
    };
    // SAFETY: `prog` points at `len` initialised instructions laid out as the
    // kernel's `struct sock_filter` (seccompiler's type is `repr(C)` with the
    // same fields); both outlive the call and the kernel copies them.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            SECCOMP_SET_MODE_FILTER,
            libc::c_ulong::from(flags),
            &prog as *const SockFprog,
        )
    };
    if ret < 0 {
        let err = std::io::Error::last_os_error();
        let hint = match err.raw_os_error() {
            Some(libc::EACCES) => "; set no_new_privs first or hold CAP_SYS_ADMIN",
            Some(libc::EINVAL) => "; the kernel may not support a flag or action in it",
            Some(libc::ESRCH) => "; another thread could not be synchronized",
            _ => "",
        };
        return Err(anyhow::Error::new(err).context(format!(
            "installing seccomp filter (flags {flags:#x}){hint}"
        )));
    }
    if p.notify {
        // SAFETY: with NEW_LISTENER the kernel returns a new fd we now own.
        return Ok(Some(unsafe { OwnedFd::from_raw_fd(ret as RawFd) }));
    }
    if ret > 0 {
        // TSYNC without ESRCH reports the thread that could not sync.
        bail!("installing seccomp filter: thread {ret} could not be synchronized (TSYNC)");
    }
    Ok(None)
}
