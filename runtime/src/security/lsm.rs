//! AppArmor profiles and SELinux labels: applied on exec when the host has the LSM,
//! refused with a clear error when it does not (silently running unconfined would
//! be worse than failing).

use anyhow::{bail, Context, Result};
use std::path::Path;

pub fn apparmor_enabled() -> bool {
    std::fs::read_to_string("/sys/module/apparmor/parameters/enabled")
        .map(|s| s.trim() == "Y")
        .unwrap_or(false)
}

pub fn selinux_enabled() -> bool {
    Path::new("/sys/fs/selinux/enforce").exists()
}

/// Cheap checks for create time, before anything exists.
pub fn validate(apparmor: Option<&str>, selinux: Option<&str>) -> Result<()> {
    if let Some(p) = apparmor.filter(|p| !p.is_empty()) {
        if !apparmor_enabled() {
            bail!("process.apparmorProfile: {p:?} asked for, but AppArmor is not enabled on this host");
        }
    }
    if let Some(l) = selinux.filter(|l| !l.is_empty()) {
        if !selinux_enabled() {
            bail!("process.selinuxLabel: {l:?} asked for, but SELinux is not enabled on this host");
        }
    }
    Ok(())
}

/// Arms the label for our next execve. Reads /proc, so it runs after /proc is mounted.
pub fn apply(apparmor: Option<&str>, selinux: Option<&str>) -> Result<()> {
    if let Some(p) = apparmor.filter(|p| !p.is_empty()) {
        let attr = if Path::new("/proc/self/attr/apparmor/exec").exists() {
            "/proc/self/attr/apparmor/exec"
        } else {
            "/proc/self/attr/exec"
        };
        std::fs::write(attr, format!("exec {p}"))
            .with_context(|| format!("process.apparmorProfile: apply {p:?}"))?;
    }
    if let Some(l) = selinux.filter(|l| !l.is_empty()) {
        std::fs::write("/proc/self/attr/exec", l)
            .with_context(|| format!("process.selinuxLabel: apply {l:?}"))?;
    }
    Ok(())
}
