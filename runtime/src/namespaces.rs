//! Linux namespaces: which to create, which to join, uid/gid maps, time offsets.

use crate::sys;
use anyhow::{bail, Context, Result};
use oci_spec::runtime::{LinuxIdMapping, LinuxNamespaceType, Spec};
use std::fmt::Write as _;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

pub fn clone_flag(t: LinuxNamespaceType) -> u64 {
    (match t {
        LinuxNamespaceType::Mount => libc::CLONE_NEWNS,
        LinuxNamespaceType::Cgroup => libc::CLONE_NEWCGROUP,
        LinuxNamespaceType::Uts => libc::CLONE_NEWUTS,
        LinuxNamespaceType::Ipc => libc::CLONE_NEWIPC,
        LinuxNamespaceType::User => libc::CLONE_NEWUSER,
        LinuxNamespaceType::Pid => libc::CLONE_NEWPID,
        LinuxNamespaceType::Network => libc::CLONE_NEWNET,
        LinuxNamespaceType::Time => libc::CLONE_NEWTIME,
    }) as u64
}

/// The name used under /proc/PID/ns/.
pub fn proc_name(t: LinuxNamespaceType) -> &'static str {
    match t {
        LinuxNamespaceType::Mount => "mnt",
        LinuxNamespaceType::Cgroup => "cgroup",
        LinuxNamespaceType::Uts => "uts",
        LinuxNamespaceType::Ipc => "ipc",
        LinuxNamespaceType::User => "user",
        LinuxNamespaceType::Pid => "pid",
        LinuxNamespaceType::Network => "net",
        LinuxNamespaceType::Time => "time",
    }
}

/// The container's namespace plan, read once from the config.
#[derive(Default)]
pub struct Plan {
    /// CLONE_NEW* flags for namespaces created fresh (time and cgroup are handled apart).
    pub new: u64,
    /// Namespaces joined by path, opened before anything else so a later setns
    /// (into another mount namespace) cannot change what the paths mean.
    pub join: Vec<(LinuxNamespaceType, OwnedFd)>,
}

impl Plan {
    pub fn has_new(&self, t: LinuxNamespaceType) -> bool {
        self.new & clone_flag(t) != 0
    }
    pub fn joins(&self, t: LinuxNamespaceType) -> bool {
        self.join.iter().any(|(k, _)| *k == t)
    }
}

pub fn plan(spec: &Spec) -> Result<Plan> {
    let mut p = Plan::default();
    let list = spec.linux().as_ref().and_then(|l| l.namespaces().as_ref());
    for (i, ns) in list.iter().flat_map(|l| l.iter()).enumerate() {
        match ns.path() {
            None => p.new |= clone_flag(ns.typ()),
            Some(path) => {
                let f = std::fs::File::open(path).with_context(|| {
                    format!("linux.namespaces[{i}].path: open {}", path.display())
                })?;
                let fd = OwnedFd::from(f);
                check_ns_type(&fd, ns.typ())
                    .with_context(|| format!("linux.namespaces[{i}].path: {}", path.display()))?;
                p.join.push((ns.typ(), fd));
            }
        }
    }
    Ok(p)
}

/// A namespace file of the wrong kind would be joined as something else; check with NS_GET_NSTYPE.
fn check_ns_type(fd: &OwnedFd, t: LinuxNamespaceType) -> Result<()> {
    const NS_GET_NSTYPE: libc::c_ulong = 0xb703;
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), NS_GET_NSTYPE as _) };
    if r < 0 {
        bail!("not a namespace file");
    }
    if r as u64 != clone_flag(t) {
        bail!("is not a {} namespace", proc_name(t));
    }
    Ok(())
}

/// Joins the namespaces of the plan: the user namespace first (it grants the
/// capabilities needed for the others), the mount namespace last (it changes what
/// paths mean).
pub fn join(join: &[(LinuxNamespaceType, OwnedFd)]) -> Result<()> {
    let rank = |t: LinuxNamespaceType| match t {
        LinuxNamespaceType::User => 0,
        LinuxNamespaceType::Mount => 2,
        _ => 1,
    };
    let mut order: Vec<&(LinuxNamespaceType, OwnedFd)> = join.iter().collect();
    order.sort_by_key(|(t, _)| rank(*t));
    for (t, fd) in order {
        let r = unsafe { libc::setns(fd.as_raw_fd(), clone_flag(*t) as i32) };
        sys::errno_result(r).with_context(|| format!("join {} namespace", proc_name(*t)))?;
    }
    Ok(())
}

fn map_text(maps: &[LinuxIdMapping]) -> String {
    let mut s = String::new();
    for m in maps {
        let _ = writeln!(s, "{} {} {}", m.container_id(), m.host_id(), m.size());
    }
    s
}

/// Writes uid_map and gid_map of `pid`'s user namespace, as one write each (the kernel
/// accepts a map only once, in a single write).
pub fn write_id_maps(pid: i32, uid: &[LinuxIdMapping], gid: &[LinuxIdMapping]) -> Result<()> {
    if !uid.is_empty() {
        std::fs::write(format!("/proc/{pid}/uid_map"), map_text(uid))
            .context("linux.uidMappings: write uid_map")?;
    }
    if !gid.is_empty() {
        std::fs::write(format!("/proc/{pid}/gid_map"), map_text(gid))
            .context("linux.gidMappings: write gid_map")?;
    }
    Ok(())
}

/// A user namespace with the given maps, for idmapped mounts: a short-lived child
/// unshares it, we map it and keep a handle to it, and the child goes away.
pub fn userns_with_maps(uid: &[LinuxIdMapping], gid: &[LinuxIdMapping]) -> Result<OwnedFd> {
    let (a, b) = crate::sync::pair()?;
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(std::io::Error::last_os_error()).context("fork");
    }
    if pid == 0 {
        let ok = unsafe { libc::unshare(libc::CLONE_NEWUSER) } == 0;
        let _ = b.send(&if ok {
            crate::sync::Msg::Ready
        } else {
            crate::sync::Msg::Error("unshare".into())
        });
        // Wait until the parent holds the namespace; EOF means it is done with us.
        let _ = b.recv();
        unsafe { libc::_exit(0) };
    }
    drop(b);
    let res = (|| {
        a.expect(crate::sync::Msg::Ready, "idmap helper")?;
        write_id_maps(pid, uid, gid)?;
        let f = std::fs::File::open(format!("/proc/{pid}/ns/user"))
            .context("open idmap user namespace")?;
        Ok(OwnedFd::from(f))
    })();
    drop(a);
    unsafe {
        libc::kill(pid, libc::SIGKILL);
        libc::waitpid(pid, std::ptr::null_mut(), 0);
    }
    res
}

/// Sets the clock offsets of the time namespace our children will be born into.
pub fn write_time_offsets(spec: &Spec) -> Result<()> {
    let Some(offs) = spec
        .linux()
        .as_ref()
        .and_then(|l| l.time_offsets().as_ref())
    else {
        return Ok(());
    };
    let mut s = String::new();
    for (clock, o) in offs {
        let name = match clock.as_str() {
            "monotonic" => "monotonic",
            "boottime" => "boottime",
            other => bail!("linux.timeOffsets: unknown clock {other:?} (monotonic or boottime)"),
        };
        let _ = writeln!(
            s,
            "{name} {} {}",
            o.secs().unwrap_or(0),
            o.nanosecs().unwrap_or(0)
        );
    }
    std::fs::write("/proc/self/timens_offsets", s)
        .context("linux.timeOffsets: write timens_offsets")
}

/// An fd is a plain number for the kernel; keep the helpers honest about ownership.
pub fn dup(fd: &OwnedFd) -> Result<OwnedFd> {
    let r = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 0) };
    if r < 0 {
        return Err(std::io::Error::last_os_error()).context("dup");
    }
    Ok(unsafe { OwnedFd::from_raw_fd(r) })
}
