//! Resource usage in the JSON shape of runc's `events --stats` (runc's
//! `types/events.go`), so tools that parse runc's output parse kura's. v2 numbers
//! are converted to what v1 reported: nanoseconds for CPU time, and "swap" as
//! memory+swap.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::fsutil::{flat_keyed, read_u64_opt};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    pub cpu: Cpu,
    pub memory: Memory,
    pub pids: Pids,
    pub blkio: Blkio,
    pub hugetlb: BTreeMap<String, Hugetlb>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Cpu {
    pub usage: CpuUsage,
    pub throttling: Throttling,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

/// All times in nanoseconds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CpuUsage {
    #[serde(default, skip_serializing_if = "is_zero")]
    pub total: u64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub percpu: Vec<u64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub percpu_kernel: Vec<u64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub percpu_user: Vec<u64>,
    pub kernel: u64,
    pub user: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Throttling {
    #[serde(default, skip_serializing_if = "is_zero")]
    pub periods: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub throttled_periods: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub throttled_time: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MemoryEntry {
    pub limit: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub usage: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub max: u64,
    pub failcnt: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Memory {
    #[serde(default, skip_serializing_if = "is_zero")]
    pub cache: u64,
    pub usage: MemoryEntry,
    pub swap: MemoryEntry,
    pub kernel: MemoryEntry,
    #[serde(rename = "kernelTCP")]
    pub kernel_tcp: MemoryEntry,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub raw: BTreeMap<String, u64>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Pids {
    #[serde(default, skip_serializing_if = "is_zero")]
    pub current: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub limit: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BlkioEntry {
    #[serde(default, skip_serializing_if = "is_zero")]
    pub major: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub minor: u64,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub op: String,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub value: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Blkio {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub io_service_bytes_recursive: Vec<BlkioEntry>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub io_serviced_recursive: Vec<BlkioEntry>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Hugetlb {
    #[serde(default, skip_serializing_if = "is_zero")]
    pub usage: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub max: u64,
    pub failcnt: u64,
}

/// Page sizes the kernel offers, as hugetlb file names spell them ("2MB").
pub(crate) fn hugepage_sizes() -> Vec<String> {
    let Ok(rd) = std::fs::read_dir("/sys/kernel/mm/hugepages") else {
        return Vec::new();
    };
    let mut out: Vec<String> = rd
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let kb: u64 = name
                .strip_prefix("hugepages-")?
                .strip_suffix("kB")?
                .parse()
                .ok()?;
            Some(page_size_name(kb))
        })
        .collect();
    out.sort();
    out
}

fn page_size_name(mut kb: u64) -> String {
    for unit in ["KB", "MB", "GB", "TB"] {
        if kb < 1024 || kb % 1024 != 0 {
            return format!("{kb}{unit}");
        }
        kb /= 1024;
    }
    format!("{kb}PB")
}

fn read_text(dir: &Path, file: &str) -> String {
    std::fs::read_to_string(dir.join(file)).unwrap_or_default()
}

/// v1's "unlimited" is a page-rounded i64::MAX; report it as u64::MAX like v2's "max".
fn v1_limit(v: u64) -> u64 {
    if v >= (i64::MAX as u64) & !0xfff {
        u64::MAX
    } else {
        v
    }
}

pub(crate) mod v1 {
    use super::*;

    pub fn cpu(cpu: Option<&Path>, cpuacct: Option<&Path>, s: &mut Cpu) {
        if let Some(d) = cpuacct {
            s.usage.total = read_u64_opt(d, "cpuacct.usage").unwrap_or(0);
            s.usage.percpu = read_text(d, "cpuacct.usage_percpu")
                .split_whitespace()
                .filter_map(|v| v.parse().ok())
                .collect();
            // cpuacct.stat counts USER_HZ ticks.
            // SAFETY: sysconf has no memory-safety preconditions.
            let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
            for (k, v) in flat_keyed(&read_text(d, "cpuacct.stat")) {
                let ns = v.saturating_mul(1_000_000_000 / hz);
                match k {
                    "user" => s.usage.user = ns,
                    "system" => s.usage.kernel = ns,
                    _ => {}
                }
            }
        }
        if let Some(d) = cpu {
            throttling(&read_text(d, "cpu.stat"), 1, s);
        }
    }

    pub fn memory(d: &Path, s: &mut Memory) {
        let entry = |prefix: &str| MemoryEntry {
            limit: v1_limit(read_u64_opt(d, &format!("{prefix}.limit_in_bytes")).unwrap_or(0)),
            usage: read_u64_opt(d, &format!("{prefix}.usage_in_bytes")).unwrap_or(0),
            max: read_u64_opt(d, &format!("{prefix}.max_usage_in_bytes")).unwrap_or(0),
            failcnt: read_u64_opt(d, &format!("{prefix}.failcnt")).unwrap_or(0),
        };
        s.usage = entry("memory");
        s.swap = entry("memory.memsw");
        s.kernel = entry("memory.kmem");
        s.kernel_tcp = entry("memory.kmem.tcp");
        s.raw = flat_keyed(&read_text(d, "memory.stat"))
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        s.cache = s.raw.get("cache").copied().unwrap_or(0);
    }

    /// blkio.*_recursive: `8:0 Read 4096` lines and a `Total` line.
    pub fn blkio(d: &Path, s: &mut Blkio) {
        // CFQ files first, then BFQ, then the throttle layer that is always there.
        let pick = |names: [&str; 3]| {
            names
                .iter()
                .map(|n| parse_blkio(&read_text(d, n)))
                .find(|v| !v.is_empty())
                .unwrap_or_default()
        };
        s.io_service_bytes_recursive = pick([
            "blkio.io_service_bytes_recursive",
            "blkio.bfq.io_service_bytes_recursive",
            "blkio.throttle.io_service_bytes_recursive",
        ]);
        s.io_serviced_recursive = pick([
            "blkio.io_serviced_recursive",
            "blkio.bfq.io_serviced_recursive",
            "blkio.throttle.io_serviced_recursive",
        ]);
    }

    pub fn parse_blkio(text: &str) -> Vec<BlkioEntry> {
        text.lines()
            .filter_map(|l| {
                let mut f = l.split_whitespace();
                let dev = f.next()?;
                let op = f.next()?;
                let value = f.next()?.parse().ok()?;
                let (ma, mi) = dev.split_once(':')?;
                Some(BlkioEntry {
                    major: ma.parse().ok()?,
                    minor: mi.parse().ok()?,
                    op: op.to_string(),
                    value,
                })
            })
            .collect()
    }

    pub fn hugetlb(d: &Path, out: &mut BTreeMap<String, Hugetlb>) {
        for size in hugepage_sizes() {
            let f = |what: &str| read_u64_opt(d, &format!("hugetlb.{size}.{what}"));
            let Some(usage) = f("usage_in_bytes") else {
                continue;
            };
            out.insert(
                size.clone(),
                Hugetlb {
                    usage,
                    max: f("max_usage_in_bytes").unwrap_or(0),
                    failcnt: f("failcnt").unwrap_or(0),
                },
            );
        }
    }
}

pub(crate) mod v2 {
    use super::*;

    pub fn cpu(d: &Path, s: &mut Cpu) {
        let text = read_text(d, "cpu.stat");
        for (k, v) in flat_keyed(&text) {
            match k {
                "usage_usec" => s.usage.total = v * 1000,
                "user_usec" => s.usage.user = v * 1000,
                "system_usec" => s.usage.kernel = v * 1000,
                _ => {}
            }
        }
        throttling(&text, 1000, s);
    }

    pub fn memory(d: &Path, s: &mut Memory) {
        let limit = read_u64_opt(d, "memory.max").unwrap_or(u64::MAX);
        let failcnt = keyed(d, "memory.events", "max");
        s.usage = MemoryEntry {
            limit,
            usage: read_u64_opt(d, "memory.current").unwrap_or(0),
            max: read_u64_opt(d, "memory.peak").unwrap_or(0),
            failcnt,
        };
        // v1 reported memory+swap; keep that meaning for consumers of runc's format.
        let swap_limit = read_u64_opt(d, "memory.swap.max").unwrap_or(u64::MAX);
        s.swap = MemoryEntry {
            limit: if swap_limit == u64::MAX || limit == u64::MAX {
                u64::MAX
            } else {
                swap_limit + limit
            },
            usage: read_u64_opt(d, "memory.swap.current").unwrap_or(0) + s.usage.usage,
            max: 0,
            failcnt: keyed(d, "memory.swap.events", "max"),
        };
        s.raw = flat_keyed(&read_text(d, "memory.stat"))
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        s.cache = s.raw.get("file").copied().unwrap_or(0);
    }

    fn keyed(d: &Path, file: &str, key: &str) -> u64 {
        super::super::fsutil::keyed_value(d, file, key).unwrap_or(0)
    }

    /// io.stat: `8:0 rbytes=1 wbytes=2 rios=3 wios=4 dbytes=0 dios=0`.
    pub fn io(d: &Path, s: &mut Blkio) {
        for line in read_text(d, "io.stat").lines() {
            let mut f = line.split_whitespace();
            let Some((ma, mi)) = f.next().and_then(|dev| dev.split_once(':')) else {
                continue;
            };
            let (Ok(major), Ok(minor)) = (ma.parse(), mi.parse()) else {
                continue;
            };
            for kv in f {
                let Some((k, v)) = kv.split_once('=') else {
                    continue;
                };
                let Ok(value) = v.parse() else { continue };
                let (list, op) = match k {
                    "rbytes" => (&mut s.io_service_bytes_recursive, "Read"),
                    "wbytes" => (&mut s.io_service_bytes_recursive, "Write"),
                    "rios" => (&mut s.io_serviced_recursive, "Read"),
                    "wios" => (&mut s.io_serviced_recursive, "Write"),
                    _ => continue,
                };
                list.push(BlkioEntry {
                    major,
                    minor,
                    op: op.to_string(),
                    value,
                });
            }
        }
    }

    pub fn hugetlb(d: &Path, out: &mut BTreeMap<String, Hugetlb>) {
        for size in hugepage_sizes() {
            let Some(usage) = read_u64_opt(d, &format!("hugetlb.{size}.current")) else {
                continue;
            };
            out.insert(
                size.clone(),
                Hugetlb {
                    usage,
                    max: 0,
                    failcnt: keyed(d, &format!("hugetlb.{size}.events"), "max"),
                },
            );
        }
    }
}

/// cpu.stat throttling keys; v1 counts nanoseconds, v2 microseconds (`scale`).
fn throttling(text: &str, scale: u64, s: &mut Cpu) {
    for (k, v) in flat_keyed(text) {
        match k {
            "nr_periods" => s.throttling.periods = v,
            "nr_throttled" => s.throttling.throttled_periods = v,
            "throttled_time" | "throttled_usec" => s.throttling.throttled_time = v * scale,
            _ => {}
        }
    }
}

pub(crate) fn pids(d: &Path, s: &mut Pids) {
    s.current = read_u64_opt(d, "pids.current").unwrap_or(0);
    // "max" reads as u64::MAX; runc reports no limit as 0.
    s.limit = read_u64_opt(d, "pids.max")
        .filter(|v| *v != u64::MAX)
        .unwrap_or(0);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_shape_matches_runc() {
        let mut s = Stats::default();
        s.pids.current = 3;
        s.memory.usage.limit = 10;
        let v = serde_json::to_value(&s).unwrap();
        for k in ["cpu", "memory", "pids", "blkio", "hugetlb"] {
            assert!(v.get(k).is_some(), "{k}");
        }
        assert_eq!(v["pids"], serde_json::json!({"current": 3}));
        assert_eq!(
            v["memory"]["usage"],
            serde_json::json!({"limit": 10, "failcnt": 0})
        );
        assert!(v["memory"].get("kernelTCP").is_some());
        assert_eq!(
            v["cpu"]["usage"],
            serde_json::json!({"kernel": 0, "user": 0})
        );
        assert!(v["cpu"].get("throttling").is_some());
    }

    #[test]
    fn parses_blkio_and_io_stat() {
        let e = v1::parse_blkio("8:0 Read 4096\n8:0 Write 0\nTotal 4096\n");
        assert_eq!(e.len(), 2);
        assert_eq!(
            (e[0].major, e[0].minor, e[0].op.as_str(), e[0].value),
            (8, 0, "Read", 4096)
        );

        let dir = std::env::temp_dir().join(format!("kura-io-stat-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("io.stat"),
            "8:16 rbytes=10 wbytes=20 rios=1 wios=2 dbytes=0\n",
        )
        .unwrap();
        std::fs::write(dir.join("cpu.stat"), "usage_usec 5\nuser_usec 3\nsystem_usec 2\nnr_periods 4\nnr_throttled 1\nthrottled_usec 7\n").unwrap();
        let mut b = Blkio::default();
        v2::io(&dir, &mut b);
        let mut c = Cpu::default();
        v2::cpu(&dir, &mut c);
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(b.io_service_bytes_recursive.len(), 2);
        assert_eq!(b.io_serviced_recursive[1].value, 2);
        assert_eq!(c.usage.total, 5000);
        assert_eq!(c.throttling.throttled_time, 7000);
        assert_eq!(c.throttling.periods, 4);
    }

    #[test]
    fn page_size_names() {
        assert_eq!(page_size_name(2048), "2MB");
        assert_eq!(page_size_name(1_048_576), "1GB");
        assert_eq!(page_size_name(64), "64KB");
    }
}
