//! The container's cgroup, found from its init's /proc/<pid>/cgroup so it works with
//! whatever path any runtime chose: metrics for Stats (containerd's cgroups v1 or v2
//! Metrics message) and OOM notifications.

use containerd_shim_protos::cgroups::metrics as v1;
use containerd_shim_protos::cgroups_v2::metrics as v2;
use protobuf::well_known_types::any::Any;
use protobuf::{Message, MessageField};
use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};

pub const V1_METRICS: &str = "io.containerd.cgroups.v1.Metrics";
pub const V2_METRICS: &str = "io.containerd.cgroups.v2.Metrics";

#[derive(Clone, Debug)]
pub enum Cgroup {
    /// Directory per v1 controller (memory, cpuacct, cpu, pids, ...).
    V1(HashMap<String, PathBuf>),
    /// The one unified directory.
    V2(PathBuf),
}

/// Mount points of cgroup hierarchies: (v1 controller -> mount point, v2 mount point).
fn mounts() -> (HashMap<String, PathBuf>, Option<PathBuf>) {
    let mut v1 = HashMap::new();
    let mut v2 = None;
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    for line in text.lines() {
        let Some((pre, post)) = line.split_once(" - ") else {
            continue;
        };
        let mp = pre.split(' ').nth(4).unwrap_or("");
        let mut post = post.split(' ');
        match post.next() {
            Some("cgroup2") => v2 = Some(PathBuf::from(mp)),
            Some("cgroup") => {
                let opts = post.nth(1).unwrap_or("");
                for o in opts.split(',') {
                    v1.insert(o.to_string(), PathBuf::from(mp));
                }
            }
            _ => {}
        }
    }
    (v1, v2)
}

fn join(mount: &Path, rel: &str) -> PathBuf {
    mount.join(rel.trim_start_matches('/'))
}

impl Cgroup {
    pub fn of_pid(pid: u32) -> io::Result<Cgroup> {
        let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))?;
        let (v1m, v2m) = mounts();
        let mut v1 = HashMap::new();
        let mut unified = None;
        for line in text.lines() {
            let mut parts = line.splitn(3, ':');
            let (_, ctrls, path) = (
                parts.next(),
                parts.next().unwrap_or(""),
                parts.next().unwrap_or(""),
            );
            if ctrls.is_empty() {
                unified = Some(path.to_string());
                continue;
            }
            for c in ctrls.split(',') {
                if let Some(m) = v1m.get(c) {
                    v1.insert(c.to_string(), join(m, path));
                }
            }
        }
        // Hybrid hosts mount v1 controllers and an empty unified tree; the
        // controllers are where the limits and counters are.
        if v1.contains_key("memory") || v1.contains_key("cpuacct") || v1.contains_key("pids") {
            return Ok(Cgroup::V1(v1));
        }
        match (unified, v2m) {
            (Some(p), Some(m)) => Ok(Cgroup::V2(join(&m, &p))),
            _ => Err(io::Error::new(
                io::ErrorKind::NotFound,
                "no cgroup for process",
            )),
        }
    }

    /// The pids in the cgroup.
    pub fn procs(&self) -> Vec<u32> {
        let dir = match self {
            Cgroup::V2(d) => Some(d.clone()),
            Cgroup::V1(c) => ["pids", "memory", "cpuacct", "freezer", "devices"]
                .iter()
                .find_map(|k| c.get(*k).cloned()),
        };
        dir.and_then(|d| std::fs::read_to_string(d.join("cgroup.procs")).ok())
            .map(|t| t.lines().filter_map(|l| l.trim().parse().ok()).collect())
            .unwrap_or_default()
    }

    /// Metrics packed as containerd's Stats response carries them.
    pub fn stats(&self) -> io::Result<Any> {
        let (url, value) = match self {
            Cgroup::V1(c) => (V1_METRICS, stats_v1(c).write_to_bytes()),
            Cgroup::V2(d) => (V2_METRICS, stats_v2(d).write_to_bytes()),
        };
        let mut any = Any::new();
        any.type_url = url.to_string();
        any.value = value.map_err(io::Error::other)?;
        Ok(any)
    }
}

fn read_u64(p: &Path) -> u64 {
    std::fs::read_to_string(p)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

fn read_kv(p: &Path) -> HashMap<String, u64> {
    std::fs::read_to_string(p)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(' ')?;
            Some((k.to_string(), v.trim().parse().ok()?))
        })
        .collect()
}

fn stats_v1(c: &HashMap<String, PathBuf>) -> v1::Metrics {
    let mut m = v1::Metrics::new();
    if let Some(d) = c.get("pids") {
        let mut p = v1::PidsStat::new();
        p.current = read_u64(&d.join("pids.current"));
        p.limit = read_u64(&d.join("pids.max"));
        m.pids = MessageField::some(p);
    }
    if let Some(d) = c.get("cpuacct") {
        let mut u = v1::CPUUsage::new();
        u.total = read_u64(&d.join("cpuacct.usage"));
        u.per_cpu = std::fs::read_to_string(d.join("cpuacct.usage_percpu"))
            .unwrap_or_default()
            .split_whitespace()
            .filter_map(|s| s.parse().ok())
            .collect();
        // cpuacct.stat counts USER_HZ ticks; the message wants nanoseconds.
        let tick = 1_000_000_000 / ticks_per_second();
        let st = read_kv(&d.join("cpuacct.stat"));
        u.user = st.get("user").copied().unwrap_or(0) * tick;
        u.kernel = st.get("system").copied().unwrap_or(0) * tick;
        let mut cpu = v1::CPUStat::new();
        cpu.usage = MessageField::some(u);
        if let Some(cd) = c.get("cpu") {
            let st = read_kv(&cd.join("cpu.stat"));
            let mut t = v1::Throttle::new();
            t.periods = st.get("nr_periods").copied().unwrap_or(0);
            t.throttled_periods = st.get("nr_throttled").copied().unwrap_or(0);
            t.throttled_time = st.get("throttled_time").copied().unwrap_or(0);
            cpu.throttling = MessageField::some(t);
        }
        m.cpu = MessageField::some(cpu);
    }
    if let Some(d) = c.get("memory") {
        let s = read_kv(&d.join("memory.stat"));
        let g = |k: &str| s.get(k).copied().unwrap_or(0);
        let mut ms = v1::MemoryStat::new();
        ms.cache = g("cache");
        ms.rss = g("rss");
        ms.rss_huge = g("rss_huge");
        ms.mapped_file = g("mapped_file");
        ms.dirty = g("dirty");
        ms.writeback = g("writeback");
        ms.pg_pg_in = g("pgpgin");
        ms.pg_pg_out = g("pgpgout");
        ms.pg_fault = g("pgfault");
        ms.pg_maj_fault = g("pgmajfault");
        ms.inactive_anon = g("inactive_anon");
        ms.active_anon = g("active_anon");
        ms.inactive_file = g("inactive_file");
        ms.active_file = g("active_file");
        ms.unevictable = g("unevictable");
        ms.hierarchical_memory_limit = g("hierarchical_memory_limit");
        ms.hierarchical_swap_limit = g("hierarchical_memsw_limit");
        ms.total_cache = g("total_cache");
        ms.total_rss = g("total_rss");
        ms.total_rss_huge = g("total_rss_huge");
        ms.total_mapped_file = g("total_mapped_file");
        ms.total_dirty = g("total_dirty");
        ms.total_writeback = g("total_writeback");
        ms.total_pg_pg_in = g("total_pgpgin");
        ms.total_pg_pg_out = g("total_pgpgout");
        ms.total_pg_fault = g("total_pgfault");
        ms.total_pg_maj_fault = g("total_pgmajfault");
        ms.total_inactive_anon = g("total_inactive_anon");
        ms.total_active_anon = g("total_active_anon");
        ms.total_inactive_file = g("total_inactive_file");
        ms.total_active_file = g("total_active_file");
        ms.total_unevictable = g("total_unevictable");
        let entry = |prefix: &str| {
            let mut e = v1::MemoryEntry::new();
            e.usage = read_u64(&d.join(format!("{prefix}.usage_in_bytes")));
            e.limit = read_u64(&d.join(format!("{prefix}.limit_in_bytes")));
            e.max = read_u64(&d.join(format!("{prefix}.max_usage_in_bytes")));
            e.failcnt = read_u64(&d.join(format!("{prefix}.failcnt")));
            MessageField::some(e)
        };
        ms.usage = entry("memory");
        ms.swap = entry("memory.memsw");
        ms.kernel = entry("memory.kmem");
        ms.kernel_tcp = entry("memory.kmem.tcp");
        m.memory = MessageField::some(ms);
        let oc = read_kv(&d.join("memory.oom_control"));
        let mut o = v1::MemoryOomControl::new();
        o.oom_kill_disable = oc.get("oom_kill_disable").copied().unwrap_or(0);
        o.under_oom = oc.get("under_oom").copied().unwrap_or(0);
        o.oom_kill = oc.get("oom_kill").copied().unwrap_or(0);
        m.memory_oom_control = MessageField::some(o);
    }
    m
}

fn stats_v2(d: &Path) -> v2::Metrics {
    let mut m = v2::Metrics::new();
    let max = |f: &str| {
        let s = std::fs::read_to_string(d.join(f)).unwrap_or_default();
        s.trim().parse().unwrap_or(0)
    };
    let mut p = v2::PidsStat::new();
    p.current = read_u64(&d.join("pids.current"));
    p.limit = max("pids.max");
    m.pids = MessageField::some(p);
    let st = read_kv(&d.join("cpu.stat"));
    let g = |k: &str| st.get(k).copied().unwrap_or(0);
    let mut cpu = v2::CPUStat::new();
    cpu.usage_usec = g("usage_usec");
    cpu.user_usec = g("user_usec");
    cpu.system_usec = g("system_usec");
    cpu.nr_periods = g("nr_periods");
    cpu.nr_throttled = g("nr_throttled");
    cpu.throttled_usec = g("throttled_usec");
    m.cpu = MessageField::some(cpu);
    let s = read_kv(&d.join("memory.stat"));
    let g = |k: &str| s.get(k).copied().unwrap_or(0);
    let mut ms = v2::MemoryStat::new();
    ms.anon = g("anon");
    ms.file = g("file");
    ms.kernel_stack = g("kernel_stack");
    ms.slab = g("slab");
    ms.sock = g("sock");
    ms.shmem = g("shmem");
    ms.file_mapped = g("file_mapped");
    ms.file_dirty = g("file_dirty");
    ms.file_writeback = g("file_writeback");
    ms.anon_thp = g("anon_thp");
    ms.inactive_anon = g("inactive_anon");
    ms.active_anon = g("active_anon");
    ms.inactive_file = g("inactive_file");
    ms.active_file = g("active_file");
    ms.unevictable = g("unevictable");
    ms.slab_reclaimable = g("slab_reclaimable");
    ms.slab_unreclaimable = g("slab_unreclaimable");
    ms.pgfault = g("pgfault");
    ms.pgmajfault = g("pgmajfault");
    ms.usage = read_u64(&d.join("memory.current"));
    ms.usage_limit = max("memory.max");
    ms.swap_usage = read_u64(&d.join("memory.swap.current"));
    ms.swap_limit = max("memory.swap.max");
    m.memory = MessageField::some(ms);
    let ev = read_kv(&d.join("memory.events"));
    let g = |k: &str| ev.get(k).copied().unwrap_or(0);
    let mut e = v2::MemoryEvents::new();
    e.low = g("low");
    e.high = g("high");
    e.max = g("max");
    e.oom = g("oom");
    e.oom_kill = g("oom_kill");
    m.memory_events = MessageField::some(e);
    m
}

fn ticks_per_second() -> u64 {
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as u64
    } else {
        100
    }
}

/// Watches one cgroup for OOM kills. The main loop polls `fd()` and calls `ready()`.
pub struct OomWatch {
    pub container_id: String,
    fd: OwnedFd,
    kind: WatchKind,
}

enum WatchKind {
    /// eventfd registered with memory.oom_control through cgroup.event_control.
    V1 { dir: PathBuf },
    /// inotify on memory.events; the oom_kill counter tells real kills from other changes.
    V2 { events: PathBuf, last: u64 },
}

pub enum OomState {
    Oom,
    Nothing,
    /// The cgroup is gone; stop watching.
    Gone,
}

impl OomWatch {
    pub fn new(container_id: &str, cg: &Cgroup) -> io::Result<OomWatch> {
        let container_id = container_id.to_string();
        match cg {
            Cgroup::V1(c) => {
                let dir = c
                    .get("memory")
                    .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no memory cgroup"))?
                    .clone();
                let efd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
                if efd < 0 {
                    return Err(io::Error::last_os_error());
                }
                let fd = unsafe { OwnedFd::from_raw_fd(efd) };
                let ctl = File::open(dir.join("memory.oom_control"))?;
                std::fs::write(
                    dir.join("cgroup.event_control"),
                    format!("{} {}", fd.as_raw_fd(), ctl.as_raw_fd()),
                )?;
                Ok(OomWatch {
                    container_id,
                    fd,
                    kind: WatchKind::V1 { dir },
                })
            }
            Cgroup::V2(d) => {
                let ifd = unsafe { libc::inotify_init1(libc::IN_CLOEXEC | libc::IN_NONBLOCK) };
                if ifd < 0 {
                    return Err(io::Error::last_os_error());
                }
                let fd = unsafe { OwnedFd::from_raw_fd(ifd) };
                let events = d.join("memory.events");
                let c = std::ffi::CString::new(events.to_string_lossy().as_bytes())
                    .map_err(io::Error::other)?;
                if unsafe { libc::inotify_add_watch(ifd, c.as_ptr(), libc::IN_MODIFY) } < 0 {
                    return Err(io::Error::last_os_error());
                }
                let last = read_kv(&events).get("oom_kill").copied().unwrap_or(0);
                Ok(OomWatch {
                    container_id,
                    fd,
                    kind: WatchKind::V2 { events, last },
                })
            }
        }
    }

    pub fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    pub fn ready(&mut self) -> OomState {
        let mut buf = [0u8; 4096];
        let n = unsafe { libc::read(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        match &mut self.kind {
            WatchKind::V1 { dir } => {
                // The eventfd also fires when the cgroup is removed.
                if n < 0 || !dir.join("memory.oom_control").exists() {
                    OomState::Gone
                } else {
                    OomState::Oom
                }
            }
            WatchKind::V2 { events, last } => {
                let mut f = match File::open(&*events) {
                    Ok(f) => f,
                    Err(_) => return OomState::Gone,
                };
                let mut s = String::new();
                if f.read_to_string(&mut s).is_err() {
                    return OomState::Gone;
                }
                let now = s
                    .lines()
                    .find_map(|l| l.strip_prefix("oom_kill "))
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(*last);
                if now > *last {
                    *last = now;
                    OomState::Oom
                } else {
                    OomState::Nothing
                }
            }
        }
    }
}
