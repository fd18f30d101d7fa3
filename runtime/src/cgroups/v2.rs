//! cgroup v2: one directory in the unified hierarchy. OCI's v1-shaped values are
//! converted on the way in (see [`super::convert`]); device rules become an eBPF
//! program ([`super::devices_bpf`]).

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::time::Duration;

use anyhow::{anyhow, bail, Result};
use oci_spec::runtime::{LinuxBlockIo, LinuxCpu, LinuxMemory, LinuxResources};

use super::convert::{self, max_or};
use super::fsutil::{self, exists, read, set};
use super::{devices, devices_bpf, nz, set_str, v1};
use crate::log;

/// Controllers usable in `dir`, i.e. enabled in its parent's subtree_control.
pub(crate) fn available(dir: &Path) -> Result<BTreeSet<String>> {
    Ok(read(dir, "cgroup.controllers")?
        .split_whitespace()
        .map(str::to_string)
        .collect())
}

/// Enables every controller each ancestor offers for its children, from the
/// mount down to `leaf`'s parent. Errors are ignored: an ancestor holding
/// processes refuses (no internal processes rule), and the resource write that
/// needs the controller then fails with a clear message instead.
pub(crate) fn enable_controllers(mount: &Path, leaf: &Path) {
    let Ok(rel) = leaf.strip_prefix(mount) else {
        return;
    };
    let mut cur = mount.to_path_buf();
    let mut comps = rel.components().peekable();
    while let Some(comp) = comps.next() {
        if let Ok(ctrls) = available(&cur) {
            if !ctrls.is_empty() {
                let all: Vec<String> = ctrls.iter().map(|c| format!("+{c}")).collect();
                if fsutil::write(&cur, "cgroup.subtree_control", &all.join(" ")).is_err() {
                    for c in &all {
                        let _ = fsutil::write(&cur, "cgroup.subtree_control", c);
                    }
                }
            }
        }
        cur.push(comp);
        if comps.peek().is_none() {
            break;
        }
    }
}

fn required(r: &LinuxResources) -> Vec<(&'static str, &'static str)> {
    let mut need = Vec::new();
    if let Some(m) = r.memory() {
        if nz(m.limit()).is_some() || nz(m.reservation()).is_some() || nz(m.swap()).is_some() {
            need.push(("memory", "linux.resources.memory"));
        }
    }
    if let Some(c) = r.cpu() {
        let asked = c.shares().is_some_and(|v| v != 0)
            || nz(c.quota()).is_some()
            || c.period().is_some_and(|v| v != 0)
            || c.burst().is_some()
            || c.idle().is_some();
        if asked {
            need.push(("cpu", "linux.resources.cpu"));
        }
        if set_str(c.cpus()).is_some() || set_str(c.mems()).is_some() {
            need.push(("cpuset", "linux.resources.cpu.cpus/mems"));
        }
    }
    if r.pids().is_some_and(|p| p.limit() != 0) {
        need.push(("pids", "linux.resources.pids.limit"));
    }
    if r.block_io().as_ref().is_some_and(v1::block_io_asked) {
        need.push(("io", "linux.resources.blockIO"));
    }
    if r.hugepage_limits().as_ref().is_some_and(|h| !h.is_empty()) {
        need.push(("hugetlb", "linux.resources.hugepageLimits"));
    }
    if r.rdma().as_ref().is_some_and(|m| !m.is_empty()) {
        need.push(("rdma", "linux.resources.rdma"));
    }
    need
}

/// Writes `r` into the v2 cgroup `d`, after checking that every controller it
/// needs is enabled there.
pub(crate) fn apply(d: &Path, r: &LinuxResources, with_devices: bool) -> Result<()> {
    let avail = available(d)?;
    for (ctrl, field) in required(r) {
        if !avail.contains(ctrl) {
            bail!(
                "{field}: the {ctrl} controller is not enabled for {} (enable it in the parent's cgroup.subtree_control)",
                d.display()
            );
        }
    }
    if let Some(m) = r.memory() {
        memory(d, m)?;
    }
    if let Some(c) = r.cpu() {
        cpu(d, c)?;
        if let Some(v) = set_str(c.cpus()) {
            set(d, "cpuset.cpus", v, "linux.resources.cpu.cpus")?;
        }
        if let Some(v) = set_str(c.mems()) {
            set(d, "cpuset.mems", v, "linux.resources.cpu.mems")?;
        }
    }
    if let Some(p) = r.pids().filter(|p| p.limit() != 0) {
        set(
            d,
            "pids.max",
            &max_or(p.limit()),
            "linux.resources.pids.limit",
        )?;
    }
    if let Some(b) = r.block_io().as_ref().filter(|b| v1::block_io_asked(b)) {
        io(d, b)?;
    }
    for h in r.hugepage_limits().iter().flatten() {
        let size = h.page_size();
        let file = format!("hugetlb.{size}.max");
        if !exists(d, &file) {
            bail!(
                "linux.resources.hugepageLimits: page size {size} is not supported by this kernel"
            );
        }
        let v = max_or(h.limit());
        set(d, &file, &v, "linux.resources.hugepageLimits.limit")?;
        let rsvd = format!("hugetlb.{size}.rsvd.max");
        if exists(d, &rsvd) {
            set(d, &rsvd, &v, "linux.resources.hugepageLimits.limit")?;
        }
    }
    for (dev, l) in r.rdma().iter().flatten() {
        set(
            d,
            "rdma.max",
            &v1::rdma_line(dev, l),
            "linux.resources.rdma",
        )?;
    }
    if with_devices {
        let list = r.devices().clone().unwrap_or_default();
        devices_bpf::apply(d, &devices::rules(&list))?;
    }
    if let Some(u) = r.unified() {
        apply_unified(d, u, &avail)?;
    }
    Ok(())
}

/// `linux.resources.unified`: raw file writes, last so they override anything
/// converted above. Keys of controllers not enabled here are refused up front.
pub(crate) fn apply_unified(
    d: &Path,
    u: &HashMap<String, String>,
    avail: &BTreeSet<String>,
) -> Result<()> {
    let mut keys: Vec<&String> = u.keys().collect();
    keys.sort();
    for k in &keys {
        let ctrl = k.split('.').next().unwrap_or("");
        if ctrl != "cgroup" && !avail.contains(ctrl) {
            bail!(
                "linux.resources.unified.{k}: the {ctrl} controller is not available in the cgroup v2 hierarchy at {}",
                d.display()
            );
        }
    }
    for k in keys {
        set(d, k, &u[k], &format!("linux.resources.unified.{k}"))?;
    }
    Ok(())
}

fn warn_ignored(field: &str) {
    log::warn(&format!(
        "linux.resources.{field} has no cgroup v2 equivalent and is ignored"
    ));
}

fn memory(d: &Path, m: &LinuxMemory) -> Result<()> {
    if nz(m.kernel()).is_some() {
        warn_ignored("memory.kernel");
    }
    if nz(m.kernel_tcp()).is_some() {
        warn_ignored("memory.kernelTCP");
    }
    if m.swappiness().is_some() {
        warn_ignored("memory.swappiness");
    }
    if m.disable_oom_killer() == Some(true) {
        warn_ignored("memory.disableOOMKiller");
    }
    let limit = nz(m.limit());
    let swap = nz(m.swap());
    if m.check_before_update() == Some(true) {
        if let Some(l) = limit.filter(|l| *l > 0) {
            let usage = fsutil::read_u64(d, "memory.current")?;
            if (l as u64) < usage {
                bail!("linux.resources.memory.limit: {l} is below the current usage of {usage} bytes (checkBeforeUpdate)");
            }
        }
    }
    if limit.is_some() || swap.is_some() {
        let v = convert::memory_swap_to_v2(swap.unwrap_or(0), limit.unwrap_or(0))?;
        let value = match v {
            -1 => Some("max".to_string()),
            0 if swap.is_some() => Some("0".to_string()),
            0 => None,
            v => Some(v.to_string()),
        };
        if let Some(value) = value {
            match fsutil::write(d, "memory.swap.max", &value) {
                Ok(()) => {}
                // No swap accounting: "no limit" and "no swap" already hold.
                Err(e)
                    if e.kind() == std::io::ErrorKind::NotFound
                        && (value == "max" || value == "0") => {}
                Err(_) => set(d, "memory.swap.max", &value, "linux.resources.memory.swap")?,
            }
        }
        if let Some(l) = limit {
            set(d, "memory.max", &max_or(l), "linux.resources.memory.limit")?;
        }
    }
    if let Some(r) = nz(m.reservation()) {
        set(
            d,
            "memory.low",
            &max_or(r),
            "linux.resources.memory.reservation",
        )?;
    }
    Ok(())
}

fn cpu(d: &Path, c: &LinuxCpu) -> Result<()> {
    if nz(c.realtime_runtime()).is_some() || c.realtime_period().is_some_and(|p| p != 0) {
        bail!("linux.resources.cpu.realtimeRuntime: real-time limits do not exist on cgroup v2");
    }
    if let Some(s) = c.shares().filter(|s| *s != 0) {
        let w = convert::cpu_shares_to_weight(s);
        set(
            d,
            "cpu.weight",
            &w.to_string(),
            "linux.resources.cpu.shares",
        )?;
    }
    // The kernel wants burst <= quota at every step: try burst first (works when
    // shrinking it), and again after cpu.max (works when growing both).
    let burst_first = c
        .burst()
        .map(|b| fsutil::write(d, "cpu.max.burst", &b.to_string()));
    let quota = nz(c.quota());
    let period = c.period().filter(|p| *p != 0);
    if quota.is_some() || period.is_some() {
        let q = match quota {
            Some(q) if q > 0 => q.to_string(),
            Some(_) => "max".to_string(),
            // Only the period changes: keep the quota in force.
            None => read(d, "cpu.max")?
                .split_whitespace()
                .next()
                .unwrap_or("max")
                .to_string(),
        };
        let v = match period {
            Some(p) => format!("{q} {p}"),
            None => q,
        };
        let field = if quota.is_some() {
            "linux.resources.cpu.quota"
        } else {
            "linux.resources.cpu.period"
        };
        set(d, "cpu.max", &v, field)?;
    }
    if let (Some(b), Some(Err(_))) = (c.burst(), burst_first) {
        set(
            d,
            "cpu.max.burst",
            &b.to_string(),
            "linux.resources.cpu.burst",
        )?;
    }
    if let Some(i) = c.idle() {
        set(d, "cpu.idle", &i.to_string(), "linux.resources.cpu.idle")?;
    }
    Ok(())
}

fn io(d: &Path, b: &LinuxBlockIo) -> Result<()> {
    // BFQ's weight uses blkio's own 1..1000 scale; io.weight needs converting.
    let bfq = exists(d, "io.bfq.weight");
    if let Some(w) = b.weight().filter(|w| *w != 0) {
        if bfq {
            set(
                d,
                "io.bfq.weight",
                &w.to_string(),
                "linux.resources.blockIO.weight",
            )?;
        } else {
            let v = convert::blkio_weight_to_io_weight(w).to_string();
            set(d, "io.weight", &v, "linux.resources.blockIO.weight")?;
        }
    }
    if b.leaf_weight().is_some_and(|w| w != 0) {
        warn_ignored("blockIO.leafWeight");
    }
    for wd in b.weight_device().iter().flatten() {
        let dev = format!("{}:{}", wd.major(), wd.minor());
        if let Some(w) = wd.weight().filter(|w| *w != 0) {
            let field = "linux.resources.blockIO.weightDevice";
            if bfq {
                set(d, "io.bfq.weight", &format!("{dev} {w}"), field)?;
            } else {
                let v = convert::blkio_weight_to_io_weight(w);
                set(d, "io.weight", &format!("{dev} {v}"), field)?;
            }
        }
        if wd.leaf_weight().is_some_and(|w| w != 0) {
            warn_ignored("blockIO.weightDevice.leafWeight");
        }
    }
    for (list, key, field) in [
        (
            b.throttle_read_bps_device(),
            "rbps",
            "throttleReadBpsDevice",
        ),
        (
            b.throttle_write_bps_device(),
            "wbps",
            "throttleWriteBpsDevice",
        ),
        (
            b.throttle_read_iops_device(),
            "riops",
            "throttleReadIOPSDevice",
        ),
        (
            b.throttle_write_iops_device(),
            "wiops",
            "throttleWriteIOPSDevice",
        ),
    ] {
        for t in list.iter().flatten() {
            // v1 reads a rate of 0 as "no limit"; v2 would read it as "no I/O".
            let rate = if t.rate() == 0 {
                "max".to_string()
            } else {
                t.rate().to_string()
            };
            let line = format!("{}:{} {key}={rate}", t.major(), t.minor());
            set(
                d,
                "io.max",
                &line,
                &format!("linux.resources.blockIO.{field}"),
            )?;
        }
    }
    Ok(())
}

const FREEZE_TIMEOUT: Duration = Duration::from_secs(5);

pub(crate) fn freeze(d: &Path) -> Result<()> {
    if !exists(d, "cgroup.freeze") {
        bail!(
            "freezing {}: this kernel has no cgroup v2 freezer (needs Linux 5.2)",
            d.display()
        );
    }
    fsutil::write(d, "cgroup.freeze", "1").map_err(|e| anyhow!("freezing {}: {e}", d.display()))?;
    // cgroup.freeze is a request; cgroup.events says when every task has stopped.
    let frozen = fsutil::wait_until(FREEZE_TIMEOUT, || {
        Ok(fsutil::keyed_value(d, "cgroup.events", "frozen") == Some(1))
    })?;
    if !frozen {
        let _ = thaw(d);
        bail!(
            "freezing {}: tasks did not stop within {FREEZE_TIMEOUT:?}",
            d.display()
        );
    }
    Ok(())
}

pub(crate) fn thaw(d: &Path) -> Result<()> {
    fsutil::write(d, "cgroup.freeze", "0").map_err(|e| anyhow!("thawing {}: {e}", d.display()))
}

pub(crate) fn is_frozen(d: &Path) -> Result<bool> {
    if !exists(d, "cgroup.freeze") {
        return Ok(false);
    }
    Ok(read(d, "cgroup.freeze")?.trim() == "1")
}
