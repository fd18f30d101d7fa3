//! Capability sets as bitmasks, applied with one capset(2) instead of a syscall per
//! capability: the five sets are cheap to get right and this is the start path.

use anyhow::{Context, Result};
use oci_spec::runtime::{Capabilities, LinuxCapabilities};
use std::str::FromStr;

#[derive(Default, Debug, Clone, Copy)]
pub struct Sets {
    pub bounding: u64,
    pub effective: u64,
    pub permitted: u64,
    pub inheritable: u64,
    pub ambient: u64,
}

pub fn last_cap() -> u32 {
    std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(40)
}

/// Index of a capability; names the kernel does not know (newer than it) are skipped
/// as runc does, since a config written for a newer kernel should still run.
fn mask(set: &Option<Capabilities>, last: u32) -> u64 {
    let mut m = 0u64;
    for c in set.iter().flatten() {
        if let Ok(k) = caps::Capability::from_str(&format!("CAP_{c}")) {
            let i = k.index() as u32;
            if i <= last {
                m |= 1 << i;
            }
        }
    }
    m
}

pub fn from_spec(c: Option<&LinuxCapabilities>) -> Sets {
    let last = last_cap();
    match c {
        None => Sets::default(),
        Some(c) => Sets {
            bounding: mask(c.bounding(), last),
            effective: mask(c.effective(), last),
            permitted: mask(c.permitted(), last),
            inheritable: mask(c.inheritable(), last),
            ambient: mask(c.ambient(), last),
        },
    }
}

/// Our own permitted set. A runtime that was itself started without some
/// capability (a sandbox without CAP_SYS_RESOURCE, say) cannot grant it; asking the
/// kernel anyway fails the whole container, so such capabilities are dropped with
/// a warning instead, as docker does for privileged containers.
pub fn held() -> u64 {
    let hdr = CapHeader {
        version: 0x2008_0522,
        pid: 0,
    };
    let mut data = [CapData::default(); 2];
    let r = unsafe {
        libc::syscall(
            libc::SYS_capget,
            &hdr as *const CapHeader,
            data.as_mut_ptr(),
        )
    };
    if r < 0 {
        return u64::MAX;
    }
    (data[0].permitted as u64) | ((data[1].permitted as u64) << 32)
}

impl Sets {
    /// Limits every set to `have`, naming what was dropped (empty when nothing).
    pub fn limit_to(&mut self, have: u64) -> Vec<String> {
        let asked =
            self.bounding | self.effective | self.permitted | self.inheritable | self.ambient;
        let missing = asked & !have;
        self.bounding &= have;
        self.effective &= have;
        self.permitted &= have;
        self.inheritable &= have;
        self.ambient &= have;
        (0..64u8)
            .filter(|i| missing & (1 << i) != 0)
            .map(|i| {
                caps::all()
                    .into_iter()
                    .find(|c| c.index() == i)
                    .map(|c| c.to_string())
                    .unwrap_or(i.to_string())
            })
            .collect()
    }
}

/// Capability names for `features` and `exec --cap`: all the kernel knows.
pub fn known_names() -> Vec<String> {
    let last = last_cap();
    let mut v: Vec<(u8, String)> = caps::all()
        .into_iter()
        .filter(|c| (c.index() as u32) <= last)
        .map(|c| (c.index(), c.to_string()))
        .collect();
    v.sort();
    v.into_iter().map(|(_, n)| n).collect()
}

/// Drops every capability outside the bounding set. Needs CAP_SETPCAP, so it runs
/// before the uid switch.
pub fn apply_bounding(s: &Sets) -> Result<()> {
    for i in 0..=last_cap() {
        if s.bounding & (1 << i) == 0 {
            let r = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, i as libc::c_ulong, 0, 0, 0) };
            if r < 0 {
                let e = std::io::Error::last_os_error();
                // EINVAL: the kernel does not know this capability; nothing to drop.
                if e.raw_os_error() != Some(libc::EINVAL) {
                    return Err(e)
                        .with_context(|| format!("drop capability {i} from the bounding set"));
                }
            }
        }
    }
    Ok(())
}

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

#[repr(C)]
#[derive(Default, Clone, Copy)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// Effective, permitted and inheritable in one capset(2), then the ambient set.
pub fn apply_sets(s: &Sets) -> Result<()> {
    let hdr = CapHeader {
        version: 0x2008_0522,
        pid: 0,
    };
    let lo = |m: u64| m as u32;
    let hi = |m: u64| (m >> 32) as u32;
    let data = [
        CapData {
            effective: lo(s.effective),
            permitted: lo(s.permitted),
            inheritable: lo(s.inheritable),
        },
        CapData {
            effective: hi(s.effective),
            permitted: hi(s.permitted),
            inheritable: hi(s.inheritable),
        },
    ];
    let r = unsafe { libc::syscall(libc::SYS_capset, &hdr as *const CapHeader, data.as_ptr()) };
    if r < 0 {
        return Err(std::io::Error::last_os_error()).context("capset (process.capabilities)");
    }
    let r = unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
            0,
            0,
            0,
        )
    };
    if r < 0 {
        return Err(std::io::Error::last_os_error()).context("clear ambient capabilities");
    }
    for i in 0..64u32 {
        if s.ambient & (1 << i) != 0 {
            let r = unsafe {
                libc::prctl(
                    libc::PR_CAP_AMBIENT,
                    libc::PR_CAP_AMBIENT_RAISE as libc::c_ulong,
                    i as libc::c_ulong,
                    0,
                    0,
                )
            };
            if r < 0 {
                // The kernel refuses an ambient cap that is not both permitted and
                // inheritable; runc ignores it the same way.
                continue;
            }
        }
    }
    Ok(())
}

/// Reads our current bounding set, to cap what an `exec --process` may ask for.
pub fn current_bounding() -> u64 {
    let mut m = 0;
    for i in 0..=last_cap() {
        if unsafe { libc::prctl(libc::PR_CAPBSET_READ, i as libc::c_ulong, 0, 0, 0) } == 1 {
            m |= 1 << i;
        }
    }
    m
}
