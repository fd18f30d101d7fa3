//! CVE-2019-5736: a container process that execs `/proc/self/exe` while it is still
//! the runtime (init before its execve, or an `exec` child) gets the runtime's host
//! file, and can reopen it for writing once we exit. [`plan`] picks the defence:
//!
//! - Usually, for a new container's init, the exec trampoline (`exec_trampoline`):
//!   init execs the container's program through a tiny sealed-memfd program, so
//!   the execve that could name `/proc/self/exe` runs with the trampoline as its exe.
//! - Where that is not enough (see `trampoline_refusal`, and always for
//!   `kura-runtime exec`: `protect_exec`), the runtime re-executes
//!   itself from a protected copy before it forks anything, so that every process
//!   it makes has that copy as its exe:
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
//! A binary on a read-only mount is already safe and needs neither.

use anyhow::{bail, Context, Result};
use std::ffi::CString;
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;

use crate::security::exec_trampoline::{self, Trampoline};
use crate::security::sealed_memfd;
use crate::sys;
use oci_spec::runtime::{Capability, LinuxNamespaceType, LinuxSeccompAction, Spec};

/// Decides how a new container's init is kept from reaching our file, before
/// anything is changed: `Some` trampoline for init to exec through; `None` when we
/// already run from a protected copy (or the guard is disabled). Otherwise
/// re-executes the runtime from a protected copy, which restarts this command and
/// does not return.
pub fn plan(spec: &Spec) -> Result<Option<Trampoline>> {
    if disabled() {
        return Ok(None);
    }
    let why = match trampoline_refusal(spec) {
        None => match Trampoline::new() {
            Ok(t) => return Ok(Some(t)),
            Err(e) => format!("exec trampoline: {e}"),
        },
        Some(why) => why.to_owned(),
    };
    crate::log::debug(&format!(
        "CVE-2019-5736 guard: re-executing from a protected copy ({why})"
    ));
    protect()?;
    Ok(None)
}

/// The guard for `kura-runtime exec`: always the re-exec. The exec child joins a
/// running container, whose pid namespace other containers may have joined since
/// (a pod sharing it, a debug container): one of those with CAP_SYS_PTRACE in our
/// user namespace could open the child's `/proc/<pid>/exe` despite it being
/// non-dumpable, and nothing in this container's config says whether one exists.
pub fn protect_exec() -> Result<()> {
    if disabled() {
        return Ok(());
    }
    protect()
}

fn disabled() -> bool {
    std::env::var_os("KURA_RUNTIME_UNSAFE_NO_EXE_GUARD").is_some() || is_protected()
}

/// Why the trampoline is not enough for this container's init, if it is not. It
/// guards the execve; until then init still has our file as its exe, shielded only
/// by being non-dumpable: a process that may ptrace it anyway could open
/// `/proc/<pid>/exe`. That takes CAP_SYS_PTRACE in our user namespace (init's mm
/// belongs to it until the execve, whatever user namespace init is in), so it is
/// refused when the container may get that capability without a user namespace of
/// its own, or when its pid namespace holds processes we did not start (one it
/// joins or shares with the host). LSM labels apply at the next exec, which would
/// be the trampoline's, in a domain that policies do not expect to run a memfd. The
/// trampoline is exec'd with execveat, which the seccomp profile must allow.
///
/// Left open: a process with CAP_SYS_PTRACE that joins this container's pid
/// namespace between `create` and `start` (by path, from another container). The
/// config cannot tell us that will happen; orchestrators start a pid namespace's
/// owner (the pod sandbox) before anything joins it.
pub fn trampoline_refusal(spec: &Spec) -> Option<&'static str> {
    if !exec_trampoline::SUPPORTED {
        return Some("no exec trampoline for this architecture");
    }
    if std::env::var_os("KURA_RUNTIME_EXE_GUARD").is_some() {
        return Some("KURA_RUNTIME_EXE_GUARD is set");
    }
    let linux = spec.linux().as_ref();
    let owns = |t: LinuxNamespaceType| {
        linux
            .and_then(|l| l.namespaces().as_ref())
            .is_some_and(|ns| ns.iter().any(|n| n.typ() == t && n.path().is_none()))
    };
    if !owns(LinuxNamespaceType::Pid) {
        return Some("the container has no pid namespace of its own");
    }
    if let Some(p) = spec.process() {
        // Inheritable counts: file capabilities can raise it past the bounding set.
        let ptrace = p.capabilities().as_ref().is_some_and(|c| {
            [
                c.bounding(),
                c.effective(),
                c.permitted(),
                c.inheritable(),
                c.ambient(),
            ]
            .iter()
            .any(|set| {
                set.as_ref()
                    .is_some_and(|s| s.contains(&Capability::SysPtrace))
            })
        });
        if ptrace && !owns(LinuxNamespaceType::User) {
            return Some("the container may hold CAP_SYS_PTRACE in the runtime's user namespace");
        }
        let label = |l: &Option<String>| l.as_ref().is_some_and(|l| !l.is_empty());
        if label(p.apparmor_profile()) || label(p.selinux_label()) {
            return Some("an LSM label is set for the process");
        }
    }
    if let Some(s) = linux.and_then(|l| l.seccomp().as_ref()) {
        let passes = |a: LinuxSeccompAction| {
            matches!(
                a,
                LinuxSeccompAction::ScmpActAllow | LinuxSeccompAction::ScmpActLog
            )
        };
        let mut named = false;
        for sc in s.syscalls().iter().flatten() {
            if sc.names().iter().any(|n| n == "execveat") {
                named = true;
                let conditional = sc.args().as_ref().is_some_and(|a| !a.is_empty());
                if !passes(sc.action()) || conditional {
                    return Some("the seccomp profile may refuse execveat");
                }
            }
        }
        if !named && !passes(s.default_action()) {
            return Some("the seccomp profile may refuse execveat");
        }
    }
    None
}

/// Whether our executable can no longer be modified through /proc/self/exe.
pub fn is_protected() -> bool {
    let Ok(f) = std::fs::File::open("/proc/self/exe") else {
        return false;
    };
    let seals = unsafe { libc::fcntl(f.as_raw_fd(), libc::F_GET_SEALS) };
    if seals >= 0 && seals & sealed_memfd::SEALS == sealed_memfd::SEALS {
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

fn execveat_empty(fd: &impl AsRawFd, argv: &[*const libc::c_char]) {
    extern "C" {
        static environ: *const *const libc::c_char;
    }
    unsafe { sys::execveat_empty(fd.as_raw_fd(), argv.as_ptr(), environ) };
}

/// A sealed (unwritable, fixed-size) memfd copy of our own executable.
fn sealed_copy_of_self() -> Result<std::fs::File> {
    let mut src = std::fs::File::open("/proc/self/exe").context("open /proc/self/exe")?;
    let mut mem = sealed_memfd::create(c"kura-runtime").context("memfd_create")?;
    // read/write, not io::copy: that may splice page references through a pipe
    // (sendfile), and F_SEAL_WRITE fails with EBUSY while any memfd page is still
    // pinned by one.
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match src.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e).context("read runtime binary"),
        };
        mem.write_all(&buf[..n])
            .context("copy runtime binary into memfd")?;
    }
    sealed_memfd::seal(&mem).context("seal memfd")?;
    Ok(mem)
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use super::trampoline_refusal;
    use oci_spec::runtime::Spec;
    use serde_json::json;

    fn spec(linux: serde_json::Value, bounding: &[&str]) -> Spec {
        serde_json::from_value(json!({
            "ociVersion": "1.0.2",
            "root": {"path": "rootfs"},
            "process": {
                "cwd": "/", "args": ["sh"], "user": {"uid": 0, "gid": 0},
                "capabilities": {"bounding": bounding, "effective": bounding, "permitted": bounding},
            },
            "linux": linux,
        }))
        .unwrap()
    }

    fn own_pid_ns() -> serde_json::Value {
        json!({"namespaces": [{"type": "pid"}, {"type": "mount"}]})
    }

    #[test]
    fn the_trampoline_suffices_for_an_ordinary_container() {
        assert_eq!(trampoline_refusal(&spec(own_pid_ns(), &["CAP_KILL"])), None);
        // Docker's default profile: errno by default, execveat allowed by name.
        let mut l = own_pid_ns();
        l["seccomp"] = json!({"defaultAction": "SCMP_ACT_ERRNO",
            "syscalls": [{"names": ["execve", "execveat"], "action": "SCMP_ACT_ALLOW"}]});
        assert_eq!(trampoline_refusal(&spec(l, &["CAP_KILL"])), None);
    }

    #[test]
    fn containers_the_trampoline_cannot_cover_re_execute() {
        let refused =
            |l: serde_json::Value, caps: &[&str]| trampoline_refusal(&spec(l, caps)).is_some();
        // No pid namespace, or one joined by path: processes we did not start can see init.
        assert!(refused(json!({"namespaces": [{"type": "mount"}]}), &[]));
        assert!(refused(
            json!({"namespaces": [{"type": "pid", "path": "/proc/1/ns/pid"}]}),
            &[]
        ));
        assert!(refused(own_pid_ns(), &["CAP_KILL", "CAP_SYS_PTRACE"]));
        for seccomp in [
            json!({"defaultAction": "SCMP_ACT_ERRNO"}),
            json!({"defaultAction": "SCMP_ACT_ALLOW",
                "syscalls": [{"names": ["execveat"], "action": "SCMP_ACT_KILL"}]}),
            json!({"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"names": ["execveat"],
                "action": "SCMP_ACT_ALLOW", "args": [{"index": 4, "value": 0, "op": "SCMP_CMP_EQ"}]}]}),
        ] {
            let mut l = own_pid_ns();
            l["seccomp"] = seccomp.clone();
            assert!(refused(l, &[]), "{seccomp}");
        }
    }

    #[test]
    fn ptrace_matters_only_without_a_user_namespace_of_its_own() {
        let mut l = own_pid_ns();
        l["namespaces"] = json!([{"type": "pid"}, {"type": "user"}]);
        let with_userns = spec(l, &["CAP_SYS_PTRACE"]);
        assert_eq!(trampoline_refusal(&with_userns), None);
        let mut inheritable = spec(own_pid_ns(), &["CAP_KILL"]);
        let mut p = inheritable.process().clone().unwrap();
        let mut c = p.capabilities().clone().unwrap();
        c.set_inheritable(Some(
            [oci_spec::runtime::Capability::SysPtrace]
                .into_iter()
                .collect(),
        ));
        p.set_capabilities(Some(c));
        inheritable.set_process(Some(p));
        assert!(trampoline_refusal(&inheritable).is_some());
    }

    #[test]
    fn labels_and_logging_seccomp_are_judged_by_effect() {
        let labelled = |label: &str| {
            let mut s = spec(own_pid_ns(), &["CAP_KILL"]);
            let mut p = s.process().clone().unwrap();
            p.set_apparmor_profile(Some(label.to_owned()));
            s.set_process(Some(p));
            trampoline_refusal(&s)
        };
        assert!(labelled("docker-default").is_some());
        // lsm::apply ignores an empty label, so nothing changes at the exec.
        assert_eq!(labelled(""), None);
        let mut l = own_pid_ns();
        l["seccomp"] = json!({"defaultAction": "SCMP_ACT_LOG"});
        assert_eq!(trampoline_refusal(&spec(l, &[])), None);
    }
}
