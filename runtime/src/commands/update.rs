//! `update`: new resource limits from flags or from a LinuxResources JSON file.

use anyhow::{bail, Context, Result};
use oci_spec::runtime::{LinuxBlockIo, LinuxCpu, LinuxMemory, LinuxPids, LinuxResources};
use std::path::{Path, PathBuf};

#[derive(clap::Args)]
pub struct Args {
    pub id: String,
    /// LinuxResources JSON ("-" for stdin).
    #[arg(short, long)]
    pub resources: Option<PathBuf>,
    #[arg(long)]
    pub blkio_weight: Option<u16>,
    #[arg(long)]
    pub cpu_period: Option<u64>,
    #[arg(long)]
    pub cpu_quota: Option<i64>,
    #[arg(long)]
    pub cpu_share: Option<u64>,
    #[arg(long)]
    pub cpu_rt_period: Option<u64>,
    #[arg(long)]
    pub cpu_rt_runtime: Option<i64>,
    #[arg(long)]
    pub cpuset_cpus: Option<String>,
    #[arg(long)]
    pub cpuset_mems: Option<String>,
    /// Memory limit (bytes, or with k/m/g suffix; -1 for unlimited).
    #[arg(long, allow_hyphen_values = true)]
    pub memory: Option<String>,
    #[arg(long, allow_hyphen_values = true)]
    pub memory_reservation: Option<String>,
    #[arg(long, allow_hyphen_values = true)]
    pub memory_swap: Option<String>,
    #[arg(long, allow_hyphen_values = true)]
    pub pids_limit: Option<i64>,
    /// Accepted for runc compatibility; kernel memory limits are obsolete.
    #[arg(long, hide = true)]
    pub kernel_memory: Option<String>,
    #[arg(long, hide = true)]
    pub kernel_memory_tcp: Option<String>,
}

/// "512m" → 536870912, as docker and runc read sizes.
pub fn parse_bytes(s: &str) -> Result<i64> {
    if s == "-1" {
        return Ok(-1);
    }
    let s = s.trim().to_ascii_lowercase();
    let s = s.trim_end_matches('b');
    let (num, mult) = match s.chars().last() {
        Some('k') => (&s[..s.len() - 1], 1i64 << 10),
        Some('m') => (&s[..s.len() - 1], 1 << 20),
        Some('g') => (&s[..s.len() - 1], 1 << 30),
        Some('t') => (&s[..s.len() - 1], 1 << 40),
        _ => (s, 1),
    };
    let n: f64 = num.parse().with_context(|| format!("invalid size {s:?}"))?;
    if n < 0.0 {
        bail!("invalid size {s:?}");
    }
    Ok((n * mult as f64) as i64)
}

fn from_flags(a: &Args) -> Result<LinuxResources> {
    let mut r = LinuxResources::default();
    let mut mem = LinuxMemory::default();
    let mut any_mem = false;
    if let Some(m) = &a.memory {
        mem.set_limit(Some(parse_bytes(m)?));
        any_mem = true;
    }
    if let Some(m) = &a.memory_reservation {
        mem.set_reservation(Some(parse_bytes(m)?));
        any_mem = true;
    }
    if let Some(m) = &a.memory_swap {
        mem.set_swap(Some(parse_bytes(m)?));
        any_mem = true;
    }
    if any_mem {
        r.set_memory(Some(mem));
    }
    let mut cpu = LinuxCpu::default();
    let mut any_cpu = false;
    macro_rules! set {
        ($flag:expr, $setter:ident) => {
            if let Some(v) = $flag.clone() {
                cpu.$setter(Some(v));
                any_cpu = true;
            }
        };
    }
    set!(a.cpu_period, set_period);
    set!(a.cpu_quota, set_quota);
    set!(a.cpu_share, set_shares);
    set!(a.cpu_rt_period, set_realtime_period);
    set!(a.cpu_rt_runtime, set_realtime_runtime);
    set!(a.cpuset_cpus, set_cpus);
    set!(a.cpuset_mems, set_mems);
    if any_cpu {
        r.set_cpu(Some(cpu));
    }
    if let Some(p) = a.pids_limit {
        let mut pids = LinuxPids::default();
        pids.set_limit(p);
        r.set_pids(Some(pids));
    }
    if let Some(w) = a.blkio_weight {
        let mut b = LinuxBlockIo::default();
        b.set_weight(Some(w));
        r.set_block_io(Some(b));
    }
    Ok(r)
}

pub fn run(root: &Path, a: &Args) -> Result<()> {
    let r = match &a.resources {
        Some(p) => {
            let raw = if p.as_os_str() == "-" {
                let mut v = Vec::new();
                std::io::Read::read_to_end(&mut std::io::stdin(), &mut v)?;
                v
            } else {
                std::fs::read(p).with_context(|| format!("--resources: read {}", p.display()))?
            };
            serde_json::from_slice(&raw).context("--resources: invalid LinuxResources JSON")?
        }
        None => from_flags(a)?,
    };
    kura_runtime::container::update(root, &a.id, &r)
}
