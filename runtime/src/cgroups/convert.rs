//! OCI resources are cgroup v1 shaped; these map them to v2 files the way runc
//! and crun do, so a config means the same on either host.

use anyhow::{bail, Result};

/// cpu.shares [2, 262144] to cpu.weight [1, 10000]. The curve passes through
/// (2, 1), (1024, 100) and (262144, 10000), so the v1 default of 1024 lands on the
/// v2 default of 100; the older linear formula mapped 1024 to 39 and starved
/// containers next to v2-native workloads (runc and crun switched in 2025).
pub(crate) fn cpu_shares_to_weight(shares: u64) -> u64 {
    match shares {
        0 => 0,
        1..=2 => 1,
        262_144.. => 10_000,
        s => {
            let l = (s as f64).log2();
            let exponent = (l * l + 125.0 * l) / 612.0 - 7.0 / 34.0;
            // Round away float noise before ceil so that 1024 gives exactly 100.
            let v = 10f64.powf(exponent);
            let rounded = (v * 1e6).round() / 1e6;
            rounded.ceil() as u64
        }
    }
}

/// blkio.weight [10, 1000] to io.weight [1, 10000], linearly.
pub(crate) fn blkio_weight_to_io_weight(w: u16) -> u64 {
    if w == 0 {
        return 0;
    }
    1 + (u64::from(w).saturating_sub(10)) * 9999 / 990
}

/// OCI `swap` is memory+swap (v1's memsw); v2's memory.swap.max is swap alone.
/// Returns the memory.swap.max value: -1 = "max", 0 with `swap > 0` = no swap,
/// 0 with `swap` unset = leave alone.
pub(crate) fn memory_swap_to_v2(swap: i64, limit: i64) -> Result<i64> {
    // A v1 user who lifts the memory limit without naming swap lifts both.
    if limit == -1 && swap == 0 {
        return Ok(-1);
    }
    if swap == -1 || swap == 0 {
        return Ok(swap);
    }
    if limit == 0 || limit == -1 {
        bail!("linux.resources.memory.swap: a swap limit needs a memory limit on cgroup v2");
    }
    if limit < 0 || swap < 0 {
        bail!("linux.resources.memory: negative limit {limit} / swap {swap}");
    }
    if swap < limit {
        bail!("linux.resources.memory.swap: {swap} is below memory.limit {limit} (swap counts memory+swap)");
    }
    Ok(swap - limit)
}

/// "max" for negative numbers, the number otherwise.
pub(crate) fn max_or(v: i64) -> String {
    if v < 0 {
        "max".to_string()
    } else {
        v.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_to_weight() {
        assert_eq!(cpu_shares_to_weight(0), 0);
        assert_eq!(cpu_shares_to_weight(2), 1);
        assert_eq!(cpu_shares_to_weight(1024), 100);
        assert_eq!(cpu_shares_to_weight(262_144), 10_000);
        assert_eq!(cpu_shares_to_weight(1_000_000), 10_000);
        // Monotonic in between.
        let mut last = 0;
        for s in (2..262_144).step_by(997) {
            let w = cpu_shares_to_weight(s);
            assert!(w >= last && (1..=10_000).contains(&w), "{s} -> {w}");
            last = w;
        }
        assert!(cpu_shares_to_weight(512) < 100 && cpu_shares_to_weight(2048) > 100);
    }

    #[test]
    fn blkio_to_io() {
        assert_eq!(blkio_weight_to_io_weight(0), 0);
        assert_eq!(blkio_weight_to_io_weight(10), 1);
        assert_eq!(blkio_weight_to_io_weight(1000), 10_000);
        assert_eq!(blkio_weight_to_io_weight(500), 1 + 490 * 9999 / 990);
    }

    #[test]
    fn swap_semantics() {
        assert_eq!(memory_swap_to_v2(0, -1).unwrap(), -1);
        assert_eq!(memory_swap_to_v2(-1, 100).unwrap(), -1);
        assert_eq!(memory_swap_to_v2(0, 100).unwrap(), 0);
        assert_eq!(memory_swap_to_v2(300, 100).unwrap(), 200);
        assert_eq!(memory_swap_to_v2(100, 100).unwrap(), 0);
        assert!(memory_swap_to_v2(50, 100).is_err());
        assert!(memory_swap_to_v2(100, 0).is_err());
        assert!(memory_swap_to_v2(100, -1).is_err());
    }
}
