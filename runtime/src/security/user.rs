//! Switching to the process's uid, gid and supplementary groups while keeping the
//! capabilities the config grants (PR_SET_KEEPCAPS across setresuid).

use anyhow::{Context, Result};
use oci_spec::runtime::User;

fn check(r: libc::c_long, what: &str) -> Result<()> {
    if r < 0 {
        return Err(std::io::Error::last_os_error()).with_context(|| what.to_owned());
    }
    Ok(())
}

/// Raw syscalls: glibc's setresuid broadcasts to all threads via signals, which we
/// neither need (single-threaded) nor want in a freshly cloned child.
pub fn switch(u: &User, set_groups: bool) -> Result<()> {
    let groups: Vec<libc::gid_t> = u.additional_gids().clone().unwrap_or_default();
    if set_groups {
        check(
            unsafe { libc::syscall(libc::SYS_setgroups, groups.len(), groups.as_ptr()) },
            "process.user.additionalGids: setgroups",
        )?;
    }
    check(
        unsafe { libc::prctl(libc::PR_SET_KEEPCAPS, 1, 0, 0, 0) } as libc::c_long,
        "keep capabilities",
    )?;
    check(
        unsafe { libc::syscall(libc::SYS_setresgid, u.gid(), u.gid(), u.gid()) },
        &format!(
            "process.user.gid: setresgid {} (is it mapped in the user namespace?)",
            u.gid()
        ),
    )?;
    check(
        unsafe { libc::syscall(libc::SYS_setresuid, u.uid(), u.uid(), u.uid()) },
        &format!(
            "process.user.uid: setresuid {} (is it mapped in the user namespace?)",
            u.uid()
        ),
    )?;
    check(
        unsafe { libc::prctl(libc::PR_SET_KEEPCAPS, 0, 0, 0, 0) } as libc::c_long,
        "reset keep capabilities",
    )?;
    Ok(())
}

/// Whether setgroups(2) is allowed: in a user namespace whose setgroups file says
/// "deny" it is not, and the kernel would fail it.
pub fn setgroups_allowed() -> bool {
    std::fs::read_to_string("/proc/self/setgroups")
        .map(|s| s.trim() != "deny")
        .unwrap_or(true)
}

/// HOME from the container's /etc/passwd when the config does not set it, as runc does.
pub fn home_for(uid: u32) -> String {
    if let Ok(pw) = std::fs::read_to_string("/etc/passwd") {
        for line in pw.lines() {
            let f: Vec<&str> = line.split(':').collect();
            if f.len() >= 6 && f[2].parse::<u32>().ok() == Some(uid) {
                return f[5].to_owned();
            }
        }
    }
    "/".to_owned()
}
