//! Container cgroups on cgroup v1, v2 and hybrid hosts, found at run time.
//!
//! The host's layout comes from one read of `/proc/self/mountinfo` (plus
//! `/proc/self/cgroup` for relative paths): pure v2 when only cgroup2 is mounted,
//! v1 when only v1 controllers are, hybrid when both are. On hybrid hosts every
//! resource, devices and the freezer go to the v1 controllers, and the container
//! also gets a directory in the unified tree (as runc does), which gives it
//! `cgroup.kill` and a place for `linux.resources.unified` keys whose controller
//! is bound there. See `paths.rs` for how `linux.cgroupsPath` becomes directories.
//!
//! A [`Cgroup`] is plain data (the resolved directories) and serializes into the
//! container's state, so `kill`, `pause`, `events`, `update` and `delete` act on
//! the same directories `create` made, without resolving anything again.
//!
//! # Why not cgroups-rs
//! The architecture names cgroups-rs; it was evaluated and not used because:
//! - its `hierarchies::auto()` picks v2 only when `/sys/fs/cgroup` itself is
//!   cgroup2 and otherwise treats the host as v1, so a hybrid host's unified tree
//!   is never used, and its v2 root is the hard-coded `/sys/fs/cgroup`;
//! - it has no cgroup v2 device control (no eBPF program), which is a security
//!   boundary an OCI runtime cannot drop;
//! - building a cgroup walks every subsystem of the hierarchy object and its
//!   manager re-reads mountinfo, more work than `create` can spend when the whole
//!   create+start+delete path has a budget of a few milliseconds.
//!
//! So this module writes the files itself, as runc's fs/fs2 drivers and crun do:
//! `create` is one mkdir per hierarchy (plus the v1 cpuset copy and the v2
//! subtree_control writes), and `apply` only touches files for fields the config
//! sets.

mod convert;
mod detect;
mod devices;
mod devices_bpf;
mod fsutil;
mod paths;
pub mod stats;
mod v1;
mod v2;
mod validate;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Result};
use oci_spec::runtime::LinuxResources;
use serde::{Deserialize, Serialize};

use detect::{is_below, Hierarchies};

pub use devices::default_allowed_devices;
pub use stats::Stats;
pub use validate::validate;

/// How the host mounts cgroups.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Only v1 controller hierarchies.
    V1,
    /// Only the unified (cgroup2) hierarchy.
    V2,
    /// v1 controllers plus a cgroup2 mount that carries (usually) no controllers.
    Hybrid,
}

/// The host's cgroup mode, from `/proc/self/mountinfo`.
pub fn detect() -> Result<Mode> {
    Ok(Hierarchies::host()?.mode())
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct V1Dir {
    /// Controllers of this hierarchy; co-mounted ones (`cpu,cpuacct`) share a dir.
    controllers: Vec<String>,
    mount: PathBuf,
    path: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct UnifiedDir {
    mount: PathBuf,
    path: PathBuf,
}

/// One container's cgroup: its directory in every hierarchy of the host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cgroup {
    mode: Mode,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    v1: Vec<V1Dir>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    unified: Option<UnifiedDir>,
}

/// OCI uses 0 for "unset" in most numeric resource fields, as runc reads them.
pub(crate) fn nz(v: Option<i64>) -> Option<i64> {
    v.filter(|v| *v != 0)
}

/// Empty strings are "unset" too: writing "" to cpuset.cpus would empty the set
/// and make the cgroup refuse every task.
pub(crate) fn set_str(v: &Option<String>) -> Option<&str> {
    v.as_deref().filter(|s| !s.trim().is_empty())
}

impl Cgroup {
    /// Resolves `linux.cgroupsPath` (rules in `paths.rs`) on this host.
    /// Reads /proc only; nothing is created.
    pub fn new(cgroups_path: Option<&str>, id: &str, systemd: bool) -> Result<Cgroup> {
        Cgroup::new_in(Hierarchies::host()?, cgroups_path, id, systemd)
    }

    pub(crate) fn new_in(
        h: &Hierarchies,
        cgroups_path: Option<&str>,
        id: &str,
        systemd: bool,
    ) -> Result<Cgroup> {
        let inner = paths::inner_path(cgroups_path, id, systemd)?;
        let r = paths::resolve(h, &inner)?;
        let v1: Vec<V1Dir> =
            r.v1.into_iter()
                .map(|(controllers, mount, path)| V1Dir {
                    controllers,
                    mount,
                    path,
                })
                .collect();
        let unified = r.unified.map(|(mount, path)| UnifiedDir { mount, path });
        let cg = Cgroup {
            mode: h.mode(),
            v1,
            unified,
        };
        for (mount, path) in cg.dirs() {
            if !is_below(path, mount) {
                bail!(
                    "cgroup {} is not below its hierarchy {}",
                    path.display(),
                    mount.display()
                );
            }
        }
        Ok(cg)
    }

    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Directory per controller ("" for the unified hierarchy, as runc's state
    /// records it).
    pub fn paths(&self) -> BTreeMap<String, PathBuf> {
        let mut m = BTreeMap::new();
        for d in &self.v1 {
            for c in &d.controllers {
                m.insert(c.clone(), d.path.clone());
            }
        }
        if let Some(u) = &self.unified {
            m.insert(String::new(), u.path.clone());
        }
        m
    }

    pub(crate) fn v1_dir(&self, controller: &str) -> Option<&Path> {
        self.v1
            .iter()
            .find(|d| d.controllers.iter().any(|c| c == controller))
            .map(|d| d.path.as_path())
    }

    fn unified_dir(&self) -> Option<&Path> {
        self.unified.as_ref().map(|u| u.path.as_path())
    }

    /// (mountpoint, directory) of every hierarchy, each directory once.
    fn dirs(&self) -> Vec<(&Path, &Path)> {
        let mut seen = BTreeSet::new();
        let mut out = Vec::new();
        let all = self
            .v1
            .iter()
            .map(|d| (d.mount.as_path(), d.path.as_path()))
            .chain(
                self.unified
                    .iter()
                    .map(|u| (u.mount.as_path(), u.path.as_path())),
            );
        for (m, p) in all {
            if seen.insert(p) {
                out.push((m, p));
            }
        }
        out
    }

    /// True if any of the directories exists.
    pub fn exists(&self) -> bool {
        self.dirs().iter().any(|(_, p)| p.is_dir())
    }

    /// Makes the directories (and missing parents) in every hierarchy. On error,
    /// removes every directory it made, so a failed create leaves nothing behind.
    pub fn create(&self) -> Result<()> {
        let mut made = Vec::new();
        let r = self.create_inner(&mut made);
        if r.is_err() {
            for d in made.iter().rev() {
                let _ = std::fs::remove_dir(d);
            }
        }
        r
    }

    fn create_inner(&self, made: &mut Vec<PathBuf>) -> Result<()> {
        for (mount, path) in self.dirs() {
            mkdir_below(mount, path, made)?;
        }
        for d in &self.v1 {
            if d.controllers.iter().any(|c| c == "cpuset") {
                v1::init_cpuset(&d.mount, &d.path)?;
            }
        }
        if self.mode == Mode::V2 {
            if let Some(u) = &self.unified {
                v2::enable_controllers(&u.mount, &u.path);
            }
        }
        Ok(())
    }

    /// Applies `linux.resources`, validating first; used by `create` and by
    /// `update`. Only fields that are set are written, and that includes the
    /// device rules: `devices: Some(rules)` replaces the rules (default deny, then
    /// `rules` in order; an empty list denies every device), `devices: None`
    /// leaves them as they are, so an `update` of memory does not touch device
    /// access. On create the caller must therefore pass a list, with the runtime's
    /// own nodes appended (see [`default_allowed_devices`], or
    /// `spec::resources_with_defaults`); a new cgroup's default is the parent's
    /// access, usually everything.
    pub fn apply(&self, r: &LinuxResources) -> Result<()> {
        self.set(r, r.devices().is_some())
    }

    fn set(&self, r: &LinuxResources, with_devices: bool) -> Result<()> {
        validate(r, self.mode)?;
        match self.mode {
            Mode::V2 => v2::apply(self.need_unified()?, r, with_devices),
            Mode::V1 => v1::apply(self, r, with_devices),
            Mode::Hybrid => {
                v1::apply(self, r, with_devices)?;
                match r.unified().as_ref().filter(|u| !u.is_empty()) {
                    Some(u) => {
                        let d = self.need_unified()?;
                        v2::apply_unified(d, u, &v2::available(d)?)
                    }
                    None => Ok(()),
                }
            }
        }
    }

    fn need_unified(&self) -> Result<&Path> {
        self.unified_dir()
            .ok_or_else(|| anyhow!("this cgroup has no directory in the unified hierarchy"))
    }

    /// Moves `pid` into the container's cgroup in every hierarchy.
    pub fn add_pid(&self, pid: i32) -> Result<()> {
        for (_, p) in self.dirs() {
            fsutil::add_proc(p, pid)?;
        }
        Ok(())
    }

    /// Moves `pid` into the unified directory only (v1 hierarchies are joined by
    /// init itself, see `open_v1_tasks`).
    pub fn add_pid_unified(&self, pid: i32) -> Result<()> {
        match self.unified_dir() {
            Some(d) => fsutil::add_proc(d, pid),
            None => Ok(()),
        }
    }

    /// The `tasks` file of every v1 directory, opened for writing, for the new
    /// process to join with `join_v1`: a thread that moves itself (writes 0 to
    /// `tasks`) skips the global threadgroup lock whose first taking waits for an
    /// RCU grace period: 0.05 ms against 7-11 ms for a write of its pid to
    /// cgroup.procs from outside, on our test host. Kernels without that fast path
    /// (before ~5.17) take the lock either way.
    pub fn open_v1_tasks(&self) -> Result<Vec<(PathBuf, std::os::fd::OwnedFd)>> {
        let unified = self.unified_dir();
        let mut out = Vec::new();
        for (_, d) in self.dirs() {
            if Some(d) == unified {
                continue;
            }
            let p = d.join("tasks");
            let f = std::fs::OpenOptions::new()
                .write(true)
                .open(&p)
                .map_err(|e| anyhow!("open {}: {e}", p.display()))?;
            out.push((p, f.into()));
        }
        Ok(out)
    }

    /// Moves the calling thread, which must be its process's only thread, into
    /// every v1 directory `open_v1_tasks` opened.
    pub fn join_v1(tasks: &[(PathBuf, std::os::fd::OwnedFd)]) -> Result<()> {
        use std::os::fd::AsRawFd;
        for (p, fd) in tasks {
            let n = unsafe { libc::write(fd.as_raw_fd(), b"0".as_ptr().cast(), 1) };
            if n != 1 {
                let e = std::io::Error::last_os_error();
                bail!("joining cgroup {}: {e}", p.display());
            }
        }
        Ok(())
    }

    /// The unified directory, opened for clone3's CLONE_INTO_CGROUP. A process born
    /// in its cgroup is never migrated, and a migration (a write to cgroup.procs)
    /// waits for an RCU grace period, 7-11 ms on our test host, holding the global
    /// cgroup mutex that every other container's mkdir, rmdir and attach needs. On a
    /// pure v2 host that is the only write there was; on a hybrid host the v1
    /// hierarchies still take theirs. None when there is no unified directory.
    pub fn open_unified(&self) -> Result<Option<std::os::fd::OwnedFd>> {
        use std::os::unix::fs::OpenOptionsExt;
        let Some(d) = self.unified_dir() else {
            return Ok(None);
        };
        let f = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC)
            .open(d)
            .map_err(|e| anyhow!("open {}: {e}", d.display()))?;
        Ok(Some(f.into()))
    }

    /// Whether any process is left in the cgroup or below it, from the unified
    /// `cgroup.events` (recursive, and read without the cgroup mutex). Without a
    /// unified directory (a v1 host), or when unsure, says yes.
    pub fn is_populated(&self) -> bool {
        let Some(d) = self.unified_dir() else {
            return true;
        };
        match std::fs::read_to_string(d.join("cgroup.events")) {
            Ok(ev) => !ev.lines().any(|l| l.trim() == "populated 0"),
            Err(_) => true,
        }
    }

    fn freezer(&self) -> Result<Freezer<'_>> {
        if let Some(d) = self.v1_dir("freezer") {
            return Ok(Freezer::V1(d));
        }
        // The unified tree's freezer works without any controller, so hybrid
        // hosts lacking a v1 freezer can still pause.
        match self.unified_dir() {
            Some(d) if self.mode == Mode::V2 || fsutil::exists(d, "cgroup.freeze") => {
                Ok(Freezer::V2(d))
            }
            _ => bail!("no freezer: the freezer controller is not mounted on this host"),
        }
    }

    pub fn freeze(&self) -> Result<()> {
        match self.freezer()? {
            Freezer::V1(d) => v1::freeze(d),
            Freezer::V2(d) => v2::freeze(d),
        }
    }

    pub fn thaw(&self) -> Result<()> {
        match self.freezer()? {
            Freezer::V1(d) => v1::thaw(d),
            Freezer::V2(d) => v2::thaw(d),
        }
    }

    pub fn is_frozen(&self) -> Result<bool> {
        match self.freezer()? {
            Freezer::V1(d) => v1::is_frozen(d),
            Freezer::V2(d) => v2::is_frozen(d),
        }
    }

    /// Every pid in the container's cgroup, nested cgroups included.
    pub fn pids(&self) -> Result<Vec<i32>> {
        if self.mode == Mode::V2 {
            return fsutil::procs_recursive(self.need_unified()?);
        }
        // Any v1 hierarchy holds all the container's tasks; pick one that is
        // always joined.
        let dir = ["pids", "freezer", "devices", "memory", "cpu"]
            .iter()
            .find_map(|c| self.v1_dir(c))
            .or_else(|| self.v1.first().map(|d| d.path.as_path()))
            .ok_or_else(|| anyhow!("this cgroup has no v1 directory"))?;
        fsutil::procs_recursive(dir)
    }

    /// Sends `sig` to every process in the cgroup.
    ///
    /// SIGKILL uses `cgroup.kill` where the unified tree offers it: the kernel
    /// kills everything, including tasks forking meanwhile. Otherwise the cgroup is
    /// frozen while pids are listed and signalled so none can fork a child the list
    /// misses, then thawed, unless it was paused before and the signal does not
    /// kill (a paused container stays paused).
    pub fn kill_all(&self, sig: i32) -> Result<()> {
        // Raw numbers, not nix's Signal: real-time signals (SIGRTMIN+3 stops
        // systemd in a container) must work too.
        if sig <= 0 || sig > libc::SIGRTMAX() {
            bail!("signal {sig} is not a valid signal number");
        }
        if sig == libc::SIGKILL {
            if let Some(d) = self.unified_dir() {
                // Fails with ENOENT before Linux 5.14; then fall through.
                if fsutil::write(d, "cgroup.kill", "1").is_ok() {
                    return Ok(());
                }
            }
        }
        let was_frozen = self.is_frozen().unwrap_or(false);
        let froze = !was_frozen && self.freeze().is_ok();
        let result = self.pids().map(|pids| {
            for p in pids {
                // SAFETY: kill(2) has no memory-safety preconditions. A process
                // that exited meanwhile (ESRCH) is fine to ignore.
                unsafe { libc::kill(p, sig) };
            }
        });
        if froze || (was_frozen && sig == libc::SIGKILL) {
            self.thaw()?;
        }
        result
    }

    /// Removes the directories (and any nested cgroups) in every hierarchy.
    /// Already absent is fine. Parents are left, as runc leaves them.
    pub fn destroy(&self) -> Result<()> {
        let mut first_err = None;
        for (_, p) in self.dirs() {
            if let Err(e) = fsutil::remove_tree(p) {
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    /// Usage numbers in runc's `events --stats` shape. Missing controllers or
    /// files leave zeros.
    pub fn stats(&self) -> Result<Stats> {
        let mut s = Stats::default();
        if self.mode == Mode::V2 {
            let d = self.need_unified()?;
            stats::v2::cpu(d, &mut s.cpu);
            stats::v2::memory(d, &mut s.memory);
            stats::pids(d, &mut s.pids);
            stats::v2::io(d, &mut s.blkio);
            stats::v2::hugetlb(d, &mut s.hugetlb);
            return Ok(s);
        }
        stats::v1::cpu(self.v1_dir("cpu"), self.v1_dir("cpuacct"), &mut s.cpu);
        if let Some(d) = self.v1_dir("memory") {
            stats::v1::memory(d, &mut s.memory);
        }
        if let Some(d) = self.v1_dir("pids") {
            stats::pids(d, &mut s.pids);
        }
        if let Some(d) = self.v1_dir("blkio") {
            stats::v1::blkio(d, &mut s.blkio);
        }
        if let Some(d) = self.v1_dir("hugetlb") {
            stats::v1::hugetlb(d, &mut s.hugetlb);
        }
        Ok(s)
    }

    /// How many times the kernel's OOM killer killed a task in this cgroup
    /// (0 when the memory controller or the counter is missing).
    pub fn oom_kill_count(&self) -> Result<u64> {
        let found = match self.mode {
            Mode::V2 => fsutil::keyed_value(self.need_unified()?, "memory.events", "oom_kill"),
            Mode::V1 | Mode::Hybrid => self
                .v1_dir("memory")
                .and_then(|d| fsutil::keyed_value(d, "memory.oom_control", "oom_kill")),
        };
        Ok(found.unwrap_or(0))
    }
}

enum Freezer<'a> {
    V1(&'a Path),
    V2(&'a Path),
}

/// `mkdir -p path`, never above `mount`; records each directory it made.
fn mkdir_below(mount: &Path, path: &Path, made: &mut Vec<PathBuf>) -> Result<()> {
    let rel = path
        .strip_prefix(mount)
        .map_err(|_| anyhow!("{} is not below {}", path.display(), mount.display()))?;
    let mut cur = mount.to_path_buf();
    for comp in rel.components() {
        cur.push(comp);
        match std::fs::create_dir(&cur) {
            Ok(()) => made.push(cur.clone()),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(anyhow!("creating cgroup {}: {e}", cur.display())),
        }
    }
    Ok(())
}
