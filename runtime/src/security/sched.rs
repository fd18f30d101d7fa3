//! Scheduling attributes: process.scheduler (sched_setattr), process.ioPriority,
//! linux.personality and process.execCPUAffinity.

use anyhow::{bail, Context, Result};
use oci_spec::runtime::{
    IOPriorityClass, LinuxIOPriority, LinuxPersonality, LinuxPersonalityDomain, LinuxSchedulerFlag,
    LinuxSchedulerPolicy, Scheduler,
};

#[repr(C)]
#[derive(Default)]
struct SchedAttr {
    size: u32,
    policy: u32,
    flags: u64,
    nice: i32,
    priority: u32,
    runtime: u64,
    deadline: u64,
    period: u64,
}

pub fn apply_scheduler(s: &Scheduler) -> Result<()> {
    let policy = match s.policy() {
        LinuxSchedulerPolicy::SchedOther => 0,
        LinuxSchedulerPolicy::SchedFifo => 1,
        LinuxSchedulerPolicy::SchedRr => 2,
        LinuxSchedulerPolicy::SchedBatch => 3,
        LinuxSchedulerPolicy::SchedIso => 4,
        LinuxSchedulerPolicy::SchedIdle => 5,
        LinuxSchedulerPolicy::SchedDeadline => 6,
    };
    let mut flags = 0u64;
    for f in s.flags().iter().flatten() {
        flags |= match f {
            LinuxSchedulerFlag::SchedResetOnFork => 0x01,
            LinuxSchedulerFlag::SchedFlagReclaim => 0x02,
            LinuxSchedulerFlag::SchedFlagDLOverrun => 0x04,
            LinuxSchedulerFlag::SchedFlagKeepPolicy => 0x08,
            LinuxSchedulerFlag::SchedFlagKeepParams => 0x10,
            LinuxSchedulerFlag::SchedFlagUtilClampMin => 0x20,
            LinuxSchedulerFlag::SchedFlagUtilClampMax => 0x40,
        };
    }
    let attr = SchedAttr {
        size: std::mem::size_of::<SchedAttr>() as u32,
        policy,
        flags,
        nice: s.nice().unwrap_or(0),
        priority: s.priority().unwrap_or(0) as u32,
        runtime: s.runtime().unwrap_or(0),
        deadline: s.deadline().unwrap_or(0),
        period: s.period().unwrap_or(0),
    };
    let r = unsafe { libc::syscall(libc::SYS_sched_setattr, 0, &attr as *const SchedAttr, 0) };
    if r < 0 {
        return Err(std::io::Error::last_os_error()).context("process.scheduler: sched_setattr");
    }
    Ok(())
}

pub fn apply_io_priority(p: &LinuxIOPriority) -> Result<()> {
    let class: i64 = match p.class() {
        IOPriorityClass::IoprioClassRt => 1,
        IOPriorityClass::IoprioClassBe => 2,
        IOPriorityClass::IoprioClassIdle => 3,
    };
    if !(0..=7).contains(&p.priority()) {
        bail!(
            "process.ioPriority.priority: {} is outside 0..7",
            p.priority()
        );
    }
    const IOPRIO_WHO_PROCESS: i64 = 1;
    let r = unsafe {
        libc::syscall(
            libc::SYS_ioprio_set,
            IOPRIO_WHO_PROCESS,
            0,
            (class << 13) | p.priority(),
        )
    };
    if r < 0 {
        return Err(std::io::Error::last_os_error()).context("process.ioPriority: ioprio_set");
    }
    Ok(())
}

pub fn apply_personality(p: &LinuxPersonality) -> Result<()> {
    let persona: libc::c_ulong = match p.domain() {
        LinuxPersonalityDomain::PerLinux => 0,
        LinuxPersonalityDomain::PerLinux32 => 0x0008,
    };
    if let Some(flags) = p.flags() {
        if !flags.is_empty() {
            bail!("linux.personality.flags: no flags are supported (got {flags:?})");
        }
    }
    if unsafe { libc::personality(persona) } < 0 {
        return Err(std::io::Error::last_os_error()).context("linux.personality");
    }
    Ok(())
}

/// Parses a cpu list like "0-3,7" into a cpu_set_t.
pub fn parse_cpus(s: &str) -> Result<libc::cpu_set_t> {
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    let max = std::mem::size_of::<libc::cpu_set_t>() * 8;
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (a, b) = match part.split_once('-') {
            Some((a, b)) => (a.trim().parse::<usize>(), b.trim().parse::<usize>()),
            None => (part.parse::<usize>(), part.parse::<usize>()),
        };
        let (Ok(a), Ok(b)) = (a, b) else {
            bail!("invalid cpu list {s:?}")
        };
        if a > b || b >= max {
            bail!("invalid cpu range {part:?} in {s:?}");
        }
        for c in a..=b {
            unsafe { libc::CPU_SET(c, &mut set) };
        }
    }
    Ok(set)
}

pub fn set_affinity(list: &str, field: &str) -> Result<()> {
    let set = parse_cpus(list).with_context(|| field.to_owned())?;
    let r = unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) };
    if r < 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("{field}: sched_setaffinity {list}"));
    }
    Ok(())
}

pub fn set_oom_score_adj(v: i32) -> Result<()> {
    std::fs::write("/proc/self/oom_score_adj", v.to_string()).with_context(|| {
        if v < 0 {
            format!("process.oomScoreAdj: {v} refused (lowering it needs CAP_SYS_RESOURCE)")
        } else {
            format!("process.oomScoreAdj: set {v}")
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists() {
        let s = parse_cpus("0-2,5").unwrap();
        for c in [0, 1, 2, 5] {
            assert!(unsafe { libc::CPU_ISSET(c, &s) });
        }
        assert!(!unsafe { libc::CPU_ISSET(3, &s) });
        assert!(parse_cpus("3-1").is_err());
        assert!(parse_cpus("x").is_err());
    }
}
