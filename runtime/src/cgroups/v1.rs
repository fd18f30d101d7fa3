//! cgroup v1: one directory per controller hierarchy, files named after the OCI
//! fields. Also used for the v1 side of hybrid hosts.

use std::path::Path;
use std::time::Duration;

use anyhow::{anyhow, bail, Result};
use oci_spec::runtime::{LinuxBlockIo, LinuxCpu, LinuxMemory, LinuxResources};

use super::fsutil::{self, exists, read, set};
use super::{devices, nz, set_str, Cgroup};
use crate::log;

/// Controllers `r` asks for, with the field to blame when one is missing. Zero
/// means "unset" for the numeric fields, as in runc.
fn required(r: &LinuxResources, with_devices: bool) -> Vec<(&'static str, &'static str)> {
    let mut need = Vec::new();
    if let Some(m) = r.memory() {
        let asked = nz(m.limit()).is_some()
            || nz(m.reservation()).is_some()
            || nz(m.swap()).is_some()
            || nz(m.kernel_tcp()).is_some()
            || m.swappiness().is_some()
            || m.disable_oom_killer() == Some(true)
            || m.use_hierarchy() == Some(true);
        if asked {
            need.push(("memory", "linux.resources.memory"));
        }
    }
    if let Some(c) = r.cpu() {
        let asked = c.shares().is_some_and(|v| v != 0)
            || nz(c.quota()).is_some()
            || c.period().is_some_and(|v| v != 0)
            || c.burst().is_some()
            || nz(c.realtime_runtime()).is_some()
            || c.realtime_period().is_some_and(|v| v != 0)
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
    if r.block_io().as_ref().is_some_and(block_io_asked) {
        need.push(("blkio", "linux.resources.blockIO"));
    }
    if r.hugepage_limits().as_ref().is_some_and(|h| !h.is_empty()) {
        need.push(("hugetlb", "linux.resources.hugepageLimits"));
    }
    if let Some(n) = r.network() {
        if n.class_id().is_some_and(|c| c != 0) {
            need.push(("net_cls", "linux.resources.network.classID"));
        }
        if n.priorities().as_ref().is_some_and(|p| !p.is_empty()) {
            need.push(("net_prio", "linux.resources.network.priorities"));
        }
    }
    if r.rdma().as_ref().is_some_and(|m| !m.is_empty()) {
        need.push(("rdma", "linux.resources.rdma"));
    }
    if with_devices && r.devices().as_ref().is_some_and(|d| !d.is_empty()) {
        need.push(("devices", "linux.resources.devices"));
    }
    need
}

pub(crate) fn block_io_asked(b: &LinuxBlockIo) -> bool {
    b.weight().is_some_and(|w| w != 0)
        || b.leaf_weight().is_some_and(|w| w != 0)
        || [
            b.throttle_read_bps_device().as_ref().map(Vec::len),
            b.throttle_write_bps_device().as_ref().map(Vec::len),
            b.throttle_read_iops_device().as_ref().map(Vec::len),
            b.throttle_write_iops_device().as_ref().map(Vec::len),
            b.weight_device().as_ref().map(Vec::len),
        ]
        .iter()
        .any(|n| n.unwrap_or(0) > 0)
}

/// Writes `r` into the v1 hierarchies. All needed controllers are checked before
/// the first write, so a missing one leaves the cgroup untouched.
pub(crate) fn apply(cg: &Cgroup, r: &LinuxResources, with_devices: bool) -> Result<()> {
    for (ctrl, field) in required(r, with_devices) {
        if cg.v1_dir(ctrl).is_none() {
            bail!("{field}: the {ctrl} cgroup controller is not mounted on this host");
        }
    }
    // Checked above for every field that is set.
    let dir = |ctrl: &str| {
        cg.v1_dir(ctrl)
            .ok_or_else(|| anyhow!("the {ctrl} cgroup controller is not mounted on this host"))
    };
    if let Some(m) = r.memory() {
        if m.kernel().is_some_and(|k| k != 0) {
            log::warn("linux.resources.memory.kernel is deprecated and ignored (kernel memory is always accounted)");
        }
        if let Some(d) = cg.v1_dir("memory") {
            memory(d, m)?;
        }
    }
    if let Some(c) = r.cpu() {
        if let Some(d) = cg.v1_dir("cpu") {
            cpu(d, c)?;
        }
        if let Some(d) = cg.v1_dir("cpuset") {
            if let Some(v) = set_str(c.cpus()) {
                set(d, "cpuset.cpus", v, "linux.resources.cpu.cpus")?;
            }
            if let Some(v) = set_str(c.mems()) {
                set(d, "cpuset.mems", v, "linux.resources.cpu.mems")?;
            }
        }
    }
    if let Some(p) = r.pids().filter(|p| p.limit() != 0) {
        let v = if p.limit() > 0 {
            p.limit().to_string()
        } else {
            "max".to_string()
        };
        set(dir("pids")?, "pids.max", &v, "linux.resources.pids.limit")?;
    }
    if let Some(b) = r.block_io().as_ref().filter(|b| block_io_asked(b)) {
        blkio(dir("blkio")?, b)?;
    }
    for h in r.hugepage_limits().iter().flatten() {
        let d = dir("hugetlb")?;
        let size = h.page_size();
        let file = format!("hugetlb.{size}.limit_in_bytes");
        if !exists(d, &file) {
            bail!(
                "linux.resources.hugepageLimits: page size {size} is not supported by this kernel"
            );
        }
        let v = h.limit().to_string();
        set(d, &file, &v, "linux.resources.hugepageLimits.limit")?;
        // Reservation limits (5.7+) also stop a mapping that would fault later.
        let rsvd = format!("hugetlb.{size}.rsvd.limit_in_bytes");
        if exists(d, &rsvd) {
            set(d, &rsvd, &v, "linux.resources.hugepageLimits.limit")?;
        }
    }
    if let Some(n) = r.network() {
        if let Some(id) = n.class_id().filter(|c| *c != 0) {
            set(
                dir("net_cls")?,
                "net_cls.classid",
                &id.to_string(),
                "linux.resources.network.classID",
            )?;
        }
        for p in n.priorities().iter().flatten() {
            let line = format!("{} {}", p.name(), p.priority());
            set(
                dir("net_prio")?,
                "net_prio.ifpriomap",
                &line,
                "linux.resources.network.priorities",
            )?;
        }
    }
    for (dev, l) in r.rdma().iter().flatten() {
        set(
            dir("rdma")?,
            "rdma.max",
            &rdma_line(dev, l),
            "linux.resources.rdma",
        )?;
    }
    if with_devices {
        if let Some(d) = cg.v1_dir("devices") {
            let list = r.devices().clone().unwrap_or_default();
            devices::apply_v1(d, &devices::rules(&list))?;
        }
    }
    Ok(())
}

pub(crate) fn rdma_line(dev: &str, l: &oci_spec::runtime::LinuxRdma) -> String {
    let v = |n: Option<u32>| n.map_or("max".to_string(), |n| n.to_string());
    format!(
        "{dev} hca_handle={} hca_object={}",
        v(l.hca_handles()),
        v(l.hca_objects())
    )
}

fn memory(d: &Path, m: &LinuxMemory) -> Result<()> {
    let limit = nz(m.limit());
    let mut swap = nz(m.swap());
    if m.check_before_update() == Some(true) {
        if let Some(l) = limit.filter(|l| *l > 0) {
            let usage = fsutil::read_u64(d, "memory.usage_in_bytes")?;
            if (l as u64) < usage {
                bail!("linux.resources.memory.limit: {l} is below the current usage of {usage} bytes (checkBeforeUpdate)");
            }
        }
    }
    const MEMSW: &str = "memory.memsw.limit_in_bytes";
    // Lifting the memory limit without naming swap lifts swap too (when the
    // kernel accounts swap at all).
    if limit == Some(-1) && swap.is_none() && exists(d, MEMSW) {
        swap = Some(-1);
    }
    let (lf, sf) = (
        "linux.resources.memory.limit",
        "linux.resources.memory.swap",
    );
    match (limit, swap) {
        (Some(l), Some(s)) => {
            // The kernel keeps limit <= memsw at every step, so which file goes
            // first depends on whether the new pair grows or shrinks.
            let current = fsutil::read_u64(d, "memory.limit_in_bytes")?;
            let grows = s == -1 || (current < i64::MAX as u64 && (current as i64) < s);
            if grows {
                set(d, MEMSW, &s.to_string(), sf)?;
                set(d, "memory.limit_in_bytes", &l.to_string(), lf)?;
            } else {
                set(d, "memory.limit_in_bytes", &l.to_string(), lf)?;
                set(d, MEMSW, &s.to_string(), sf)?;
            }
        }
        (Some(l), None) => set(d, "memory.limit_in_bytes", &l.to_string(), lf)?,
        (None, Some(s)) => set(d, MEMSW, &s.to_string(), sf)?,
        (None, None) => {}
    }
    if let Some(v) = nz(m.reservation()) {
        set(
            d,
            "memory.soft_limit_in_bytes",
            &v.to_string(),
            "linux.resources.memory.reservation",
        )?;
    }
    if let Some(v) = nz(m.kernel_tcp()) {
        set(
            d,
            "memory.kmem.tcp.limit_in_bytes",
            &v.to_string(),
            "linux.resources.memory.kernelTCP",
        )?;
    }
    if let Some(v) = m.swappiness() {
        set(
            d,
            "memory.swappiness",
            &v.to_string(),
            "linux.resources.memory.swappiness",
        )?;
    }
    if m.disable_oom_killer() == Some(true) {
        set(
            d,
            "memory.oom_control",
            "1",
            "linux.resources.memory.disableOOMKiller",
        )?;
    }
    if m.use_hierarchy() == Some(true) {
        set(
            d,
            "memory.use_hierarchy",
            "1",
            "linux.resources.memory.useHierarchy",
        )?;
    }
    Ok(())
}

fn cpu(d: &Path, c: &LinuxCpu) -> Result<()> {
    if let Some(s) = c.shares().filter(|s| *s != 0) {
        set(
            d,
            "cpu.shares",
            &s.to_string(),
            "linux.resources.cpu.shares",
        )?;
        // The kernel clamps out-of-range shares silently; say so instead.
        let got = fsutil::read_u64(d, "cpu.shares")?;
        if got != s {
            bail!("linux.resources.cpu.shares: {s} is out of range; the kernel set {got} (range 2..=262144)");
        }
    }
    let quota = nz(c.quota());
    let mut period_pending = None;
    if let Some(p) = c.period().filter(|p| *p != 0) {
        match fsutil::write(d, "cpu.cfs_period_us", &p.to_string()) {
            Ok(()) => {}
            // A shorter period can be refused while the old quota/period ratio
            // would exceed the parent's; retry once the new quota is in.
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) && quota.is_some() => {
                period_pending = Some(p)
            }
            Err(_) => set(
                d,
                "cpu.cfs_period_us",
                &p.to_string(),
                "linux.resources.cpu.period",
            )?,
        }
    }
    if let Some(b) = c.burst() {
        set(
            d,
            "cpu.cfs_burst_us",
            &b.to_string(),
            "linux.resources.cpu.burst",
        )?;
    }
    if let Some(q) = quota {
        set(
            d,
            "cpu.cfs_quota_us",
            &q.to_string(),
            "linux.resources.cpu.quota",
        )?;
    }
    if let Some(p) = period_pending {
        set(
            d,
            "cpu.cfs_period_us",
            &p.to_string(),
            "linux.resources.cpu.period",
        )?;
    }
    if let Some(p) = c.realtime_period().filter(|p| *p != 0) {
        set(
            d,
            "cpu.rt_period_us",
            &p.to_string(),
            "linux.resources.cpu.realtimePeriod",
        )?;
    }
    if let Some(r) = nz(c.realtime_runtime()) {
        set(
            d,
            "cpu.rt_runtime_us",
            &r.to_string(),
            "linux.resources.cpu.realtimeRuntime",
        )?;
    }
    if let Some(i) = c.idle() {
        set(d, "cpu.idle", &i.to_string(), "linux.resources.cpu.idle")?;
    }
    Ok(())
}

fn blkio(d: &Path, b: &LinuxBlockIo) -> Result<()> {
    // CFQ is gone from current kernels; BFQ offers the same knob under its name.
    let bfq = !exists(d, "blkio.weight") && exists(d, "blkio.bfq.weight");
    let (weight, weight_device) = if bfq {
        ("blkio.bfq.weight", "blkio.bfq.weight_device")
    } else {
        ("blkio.weight", "blkio.weight_device")
    };
    if let Some(w) = b.weight().filter(|w| *w != 0) {
        if !exists(d, weight) {
            bail!("linux.resources.blockIO.weight: this kernel's I/O scheduler offers no blkio weight (neither CFQ nor BFQ)");
        }
        set(d, weight, &w.to_string(), "linux.resources.blockIO.weight")?;
    }
    if let Some(w) = b.leaf_weight().filter(|w| *w != 0) {
        set(
            d,
            "blkio.leaf_weight",
            &w.to_string(),
            "linux.resources.blockIO.leafWeight",
        )?;
    }
    for wd in b.weight_device().iter().flatten() {
        let dev = format!("{}:{}", wd.major(), wd.minor());
        if let Some(w) = wd.weight().filter(|w| *w != 0) {
            set(
                d,
                weight_device,
                &format!("{dev} {w}"),
                "linux.resources.blockIO.weightDevice",
            )?;
        }
        if let Some(w) = wd.leaf_weight().filter(|w| *w != 0) {
            let field = "linux.resources.blockIO.weightDevice.leafWeight";
            set(d, "blkio.leaf_weight_device", &format!("{dev} {w}"), field)?;
        }
    }
    for (list, file, field) in [
        (
            b.throttle_read_bps_device(),
            "blkio.throttle.read_bps_device",
            "throttleReadBpsDevice",
        ),
        (
            b.throttle_write_bps_device(),
            "blkio.throttle.write_bps_device",
            "throttleWriteBpsDevice",
        ),
        (
            b.throttle_read_iops_device(),
            "blkio.throttle.read_iops_device",
            "throttleReadIOPSDevice",
        ),
        (
            b.throttle_write_iops_device(),
            "blkio.throttle.write_iops_device",
            "throttleWriteIOPSDevice",
        ),
    ] {
        for t in list.iter().flatten() {
            let line = format!("{}:{} {}", t.major(), t.minor(), t.rate());
            set(d, file, &line, &format!("linux.resources.blockIO.{field}"))?;
        }
    }
    Ok(())
}

/// New cpuset cgroups start with empty cpus/mems and refuse tasks until both are
/// set; copy them down from the parent at every level we may have created.
pub(crate) fn init_cpuset(mount: &Path, leaf: &Path) -> Result<()> {
    let Ok(rel) = leaf.strip_prefix(mount) else {
        return Ok(());
    };
    let mut parent = mount.to_path_buf();
    for comp in rel.components() {
        let cur = parent.join(comp);
        for f in ["cpuset.cpus", "cpuset.mems"] {
            if read(&cur, f)?.trim().is_empty() {
                let v = read(&parent, f)?;
                fsutil::write(&cur, f, v.trim())
                    .map_err(|e| anyhow!("copying {f} into {}: {e}", cur.display()))?;
            }
        }
        parent = cur;
    }
    Ok(())
}

const FREEZE_TIMEOUT: Duration = Duration::from_secs(5);

/// Freezing is asynchronous: the state reads FREEZING until every task stopped.
/// Tasks in uninterruptible sleep can stall it, so the request is repeated while
/// waiting, and on timeout the cgroup is thawed rather than left half frozen.
pub(crate) fn freeze(d: &Path) -> Result<()> {
    fsutil::write(d, "freezer.state", "FROZEN")
        .map_err(|e| anyhow!("freezing {}: {e}", d.display()))?;
    let mut polls = 0u32;
    let frozen = fsutil::wait_until(FREEZE_TIMEOUT, || {
        polls += 1;
        if polls % 50 == 0 {
            let _ = fsutil::write(d, "freezer.state", "FROZEN");
        }
        Ok(read(d, "freezer.state")?.trim() == "FROZEN")
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
    fsutil::write(d, "freezer.state", "THAWED").map_err(|e| anyhow!("thawing {}: {e}", d.display()))
}

pub(crate) fn is_frozen(d: &Path) -> Result<bool> {
    // FREEZING counts as frozen: it is what pause asked for and has not undone.
    Ok(matches!(
        read(d, "freezer.state")?.trim(),
        "FROZEN" | "FREEZING"
    ))
}
