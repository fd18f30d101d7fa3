//! Checks on `linux.resources` that need no filesystem access, run before any
//! cgroup is created so a bad config fails without leaving anything behind.
//! Limits only the kernel knows (e.g. the largest cpu.shares) are left to it; the
//! write then fails naming the same field.

use anyhow::{bail, Result};
use oci_spec::runtime::LinuxResources;

use super::convert;
use super::Mode;

pub fn validate(r: &LinuxResources, mode: Mode) -> Result<()> {
    memory(r, mode)?;
    cpu(r, mode)?;
    block_io(r)?;
    hugepages(r)?;
    network(r, mode)?;
    devices(r)?;
    unified(r, mode)?;
    Ok(())
}

fn memory(r: &LinuxResources, mode: Mode) -> Result<()> {
    let Some(m) = r.memory() else { return Ok(()) };
    for (name, v) in [
        ("limit", m.limit()),
        ("reservation", m.reservation()),
        ("swap", m.swap()),
        ("kernel", m.kernel()),
        ("kernelTCP", m.kernel_tcp()),
    ] {
        if let Some(v) = v.filter(|v| *v < -1) {
            bail!("linux.resources.memory.{name}: {v} is neither a byte count nor -1 (unlimited)");
        }
    }
    let limit = m.limit().unwrap_or(0);
    let swap = m.swap().unwrap_or(0);
    if limit > 0 && swap > 0 && swap < limit {
        bail!("linux.resources.memory.swap: {swap} is below memory.limit {limit} (swap counts memory+swap)");
    }
    if mode == Mode::V2 && swap != 0 {
        convert::memory_swap_to_v2(swap, limit)?;
    }
    if let Some(s) = m.swappiness().filter(|s| *s > 100) {
        bail!("linux.resources.memory.swappiness: {s} is above 100");
    }
    Ok(())
}

fn cpu(r: &LinuxResources, mode: Mode) -> Result<()> {
    let Some(c) = r.cpu() else { return Ok(()) };
    if let Some(q) = c.quota().filter(|q| *q < -1) {
        bail!("linux.resources.cpu.quota: {q} is neither a duration in µs nor -1 (unlimited)");
    }
    if let Some(p) = c
        .period()
        .filter(|p| *p != 0 && !(1000..=1_000_000).contains(p))
    {
        bail!("linux.resources.cpu.period: {p} µs is outside the kernel's 1000..=1000000");
    }
    if let Some(i) = c.idle().filter(|i| *i != 0 && *i != 1) {
        bail!("linux.resources.cpu.idle: {i} is neither 0 nor 1");
    }
    if mode == Mode::V2 {
        if c.realtime_runtime().is_some_and(|v| v != 0) {
            bail!("linux.resources.cpu.realtimeRuntime: real-time scheduling limits do not exist on cgroup v2");
        }
        if c.realtime_period().is_some_and(|v| v != 0) {
            bail!("linux.resources.cpu.realtimePeriod: real-time scheduling limits do not exist on cgroup v2");
        }
    }
    for (name, v) in [("cpus", c.cpus()), ("mems", c.mems())] {
        if let Some(v) = v {
            let ok = v
                .chars()
                .all(|ch| ch.is_ascii_digit() || matches!(ch, ',' | '-' | ' ' | '\n'));
            if !ok {
                bail!("linux.resources.cpu.{name}: {v:?} is not a list like \"0-3,5\"");
            }
        }
    }
    Ok(())
}

fn weight_in_range(field: &str, w: Option<u16>) -> Result<()> {
    match w {
        Some(w) if w != 0 && !(10..=1000).contains(&w) => {
            bail!("{field}: {w} is outside 10..=1000")
        }
        _ => Ok(()),
    }
}

fn block_io(r: &LinuxResources) -> Result<()> {
    let Some(b) = r.block_io() else { return Ok(()) };
    weight_in_range("linux.resources.blockIO.weight", b.weight())?;
    weight_in_range("linux.resources.blockIO.leafWeight", b.leaf_weight())?;
    for d in b.weight_device().iter().flatten() {
        if d.major() < 0 || d.minor() < 0 {
            bail!(
                "linux.resources.blockIO.weightDevice: bad device {}:{}",
                d.major(),
                d.minor()
            );
        }
        weight_in_range("linux.resources.blockIO.weightDevice.weight", d.weight())?;
        weight_in_range(
            "linux.resources.blockIO.weightDevice.leafWeight",
            d.leaf_weight(),
        )?;
    }
    for (name, list) in [
        ("throttleReadBpsDevice", b.throttle_read_bps_device()),
        ("throttleWriteBpsDevice", b.throttle_write_bps_device()),
        ("throttleReadIOPSDevice", b.throttle_read_iops_device()),
        ("throttleWriteIOPSDevice", b.throttle_write_iops_device()),
    ] {
        for d in list.iter().flatten() {
            if d.major() < 0 || d.minor() < 0 {
                bail!(
                    "linux.resources.blockIO.{name}: bad device {}:{}",
                    d.major(),
                    d.minor()
                );
            }
        }
    }
    Ok(())
}

/// `2MB`, `1GB`, `64KB`: the spelling the hugetlb file names use.
pub(crate) fn valid_page_size(s: &str) -> bool {
    let digits = s.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    let unit = &s[digits.len()..];
    !digits.is_empty()
        && digits.chars().all(|c| c.is_ascii_digit())
        && ["KB", "MB", "GB", "TB", "PB"].contains(&unit)
}

fn hugepages(r: &LinuxResources) -> Result<()> {
    for h in r.hugepage_limits().iter().flatten() {
        if !valid_page_size(h.page_size()) {
            bail!(
                "linux.resources.hugepageLimits.pageSize: {:?} is not like \"2MB\"",
                h.page_size()
            );
        }
        if h.limit() < -1 {
            bail!(
                "linux.resources.hugepageLimits.limit: {} for {}",
                h.limit(),
                h.page_size()
            );
        }
    }
    Ok(())
}

fn network(r: &LinuxResources, mode: Mode) -> Result<()> {
    let Some(n) = r.network() else { return Ok(()) };
    if mode == Mode::V2 {
        if n.class_id().is_some_and(|c| c != 0) {
            bail!("linux.resources.network.classID: net_cls is a cgroup v1 controller; this host uses cgroup v2");
        }
        if n.priorities().as_ref().is_some_and(|p| !p.is_empty()) {
            bail!("linux.resources.network.priorities: net_prio is a cgroup v1 controller; this host uses cgroup v2");
        }
    }
    for p in n.priorities().iter().flatten() {
        if p.name().is_empty() || p.name().contains(char::is_whitespace) {
            bail!(
                "linux.resources.network.priorities: bad interface name {:?}",
                p.name()
            );
        }
    }
    Ok(())
}

fn devices(r: &LinuxResources) -> Result<()> {
    for d in r.devices().iter().flatten() {
        if let Some(a) = d.access() {
            if !a.chars().all(|c| matches!(c, 'r' | 'w' | 'm')) {
                bail!("linux.resources.devices.access: {a:?} must use only r, w and m");
            }
        }
        for (name, v) in [("major", d.major()), ("minor", d.minor())] {
            if let Some(v) = v.filter(|v| *v < -1 || *v > i64::from(u32::MAX)) {
                bail!("linux.resources.devices.{name}: {v} is not a device number");
            }
        }
    }
    Ok(())
}

fn unified(r: &LinuxResources, mode: Mode) -> Result<()> {
    let Some(u) = r.unified() else { return Ok(()) };
    if u.is_empty() {
        return Ok(());
    }
    if mode == Mode::V1 {
        bail!("linux.resources.unified: needs cgroup v2, and this host has only cgroup v1");
    }
    for (k, v) in u {
        let bad = k.contains('/') || k.starts_with('.') || !k.contains('.') || k.contains('\0');
        if bad {
            bail!("linux.resources.unified: {k:?} is not a cgroup interface file name");
        }
        if v.contains('\0') {
            bail!("linux.resources.unified.{k}: value contains NUL");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn res(json: &str) -> LinuxResources {
        serde_json::from_str(json).unwrap()
    }

    fn err(json: &str, mode: Mode) -> String {
        validate(&res(json), mode).unwrap_err().to_string()
    }

    #[test]
    fn accepts_a_typical_config() {
        let r = res(
            r#"{"devices":[{"allow":false,"access":"rwm"},{"allow":true,"type":"c","major":1,"minor":3,"access":"rwm"}],
            "memory":{"limit":67108864,"swap":134217728,"swappiness":60},
            "cpu":{"shares":512,"quota":50000,"period":100000,"cpus":"0-1","mems":"0"},
            "pids":{"limit":64},"blockIO":{"weight":500},
            "hugepageLimits":[{"pageSize":"2MB","limit":0}]}"#,
        );
        for mode in [Mode::V1, Mode::V2, Mode::Hybrid] {
            validate(&r, mode).unwrap();
        }
    }

    #[test]
    fn errors_name_the_field() {
        assert!(err(r#"{"memory":{"limit":-5}}"#, Mode::V1)
            .starts_with("linux.resources.memory.limit:"));
        assert!(err(r#"{"memory":{"limit":100,"swap":50}}"#, Mode::V1)
            .starts_with("linux.resources.memory.swap:"));
        assert!(
            err(r#"{"memory":{"swap":50}}"#, Mode::V2).starts_with("linux.resources.memory.swap:")
        );
        validate(&res(r#"{"memory":{"swap":50}}"#), Mode::V1).unwrap();
        assert!(err(r#"{"memory":{"swappiness":101}}"#, Mode::V1).contains("swappiness"));
        assert!(
            err(r#"{"cpu":{"period":10}}"#, Mode::V1).starts_with("linux.resources.cpu.period:")
        );
        assert!(err(r#"{"cpu":{"realtimeRuntime":5}}"#, Mode::V2).contains("realtimeRuntime"));
        validate(&res(r#"{"cpu":{"realtimeRuntime":5}}"#), Mode::Hybrid).unwrap();
        assert!(err(r#"{"cpu":{"cpus":"0;rm"}}"#, Mode::V1).contains("cpu.cpus"));
        assert!(err(r#"{"blockIO":{"weight":5}}"#, Mode::V1).contains("blockIO.weight"));
        assert!(err(
            r#"{"hugepageLimits":[{"pageSize":"2M","limit":1}]}"#,
            Mode::V1
        )
        .contains("pageSize"));
        assert!(err(r#"{"network":{"classID":7}}"#, Mode::V2).contains("network.classID"));
        validate(&res(r#"{"network":{"classID":7}}"#), Mode::Hybrid).unwrap();
        assert!(
            err(r#"{"devices":[{"allow":true,"access":"rx"}]}"#, Mode::V1)
                .contains("devices.access")
        );
        validate(&res(r#"{"devices":[{"allow":true,"type":"p"}]}"#), Mode::V1).unwrap();
        assert!(err(r#"{"unified":{"memory.max":"1"}}"#, Mode::V1).contains("unified"));
        assert!(err(r#"{"unified":{"../x":"1"}}"#, Mode::V2).contains("unified"));
        validate(&res(r#"{"unified":{"memory.max":"1"}}"#), Mode::Hybrid).unwrap();
    }

    #[test]
    fn page_sizes() {
        assert!(valid_page_size("2MB") && valid_page_size("64KB") && valid_page_size("1GB"));
        assert!(!valid_page_size("MB") && !valid_page_size("2mb") && !valid_page_size("2 MB"));
    }
}
