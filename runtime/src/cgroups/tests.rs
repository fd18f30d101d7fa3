//! Tests of the whole module: first against fake hierarchies made of plain
//! directories (file names and values written, no kernel needed), then against the
//! real kernel as root (skipped otherwise). Real-kernel tests hold their cgroups
//! and children in a guard whose Drop kills, reaps and removes them, so a failing
//! assertion leaves nothing behind.

use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

use oci_spec::runtime::{LinuxDeviceCgroup, LinuxResources};

use super::detect::Hierarchies;
use super::*;

fn unique(tag: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "kura-test-{tag}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

fn res(json: &str) -> LinuxResources {
    serde_json::from_str(json).unwrap()
}

fn cat(dir: &Path, file: &str) -> String {
    std::fs::read_to_string(dir.join(file))
        .unwrap_or_else(|e| panic!("{}: {e}", dir.join(file).display()))
        .trim()
        .to_string()
}

/// A scratch directory standing in for /sys/fs/cgroup; removed on drop.
struct FakeRoot(PathBuf);

impl FakeRoot {
    fn new() -> FakeRoot {
        let p = std::env::temp_dir().join(unique("fake"));
        std::fs::create_dir_all(&p).unwrap();
        FakeRoot(p)
    }
    /// Creates `dir` with the given files (name, initial content).
    fn files(&self, dir: &Path, files: &[(&str, &str)]) {
        std::fs::create_dir_all(dir).unwrap();
        for (f, v) in files {
            std::fs::write(dir.join(f), v).unwrap();
        }
    }
}

impl Drop for FakeRoot {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn v2_writes_converted_values_to_the_right_files() {
    let root = FakeRoot::new();
    let mi = format!("1 1 0:1 / {} rw - cgroup2 cgroup2 rw\n", root.0.display());
    let h = Hierarchies::parse(&mi, "0::/\n").unwrap();
    let cg = Cgroup::new_in(&h, Some("/c1"), "id", false).unwrap();
    assert_eq!(cg.mode(), Mode::V2);
    let d = root.0.join("c1");
    let files = [
        "memory.max",
        "memory.swap.max",
        "memory.low",
        "cpu.weight",
        "cpu.max",
        "cpu.max.burst",
        "cpu.idle",
        "cpuset.cpus",
        "cpuset.mems",
        "pids.max",
        "io.weight",
        "io.max",
        "hugetlb.2MB.max",
        "hugetlb.2MB.rsvd.max",
        "rdma.max",
        "memory.high",
    ];
    let mut init: Vec<(&str, &str)> = files.iter().map(|f| (*f, "")).collect();
    init.push((
        "cgroup.controllers",
        "cpuset cpu io memory hugetlb pids rdma\n",
    ));
    root.files(&d, &init);

    let r = res(
        r#"{"memory":{"limit":67108864,"swap":100663296,"reservation":1048576,"swappiness":10},
        "cpu":{"shares":1024,"quota":50000,"period":100000,"burst":1000,"idle":0,"cpus":"0-1","mems":"0"},
        "pids":{"limit":-1},
        "blockIO":{"weight":1000,"throttleWriteIOPSDevice":[{"major":8,"minor":0,"rate":0}]},
        "hugepageLimits":[{"pageSize":"2MB","limit":4194304}],
        "rdma":{"mlx5_0":{"hcaHandles":3}},
        "unified":{"memory.high":"50000000"}}"#,
    );
    // No device rules in the config: the device filter is left alone (no eBPF).
    cg.apply(&r).unwrap();
    let expect = [
        ("memory.max", "67108864"),
        ("memory.swap.max", "33554432"),
        ("memory.low", "1048576"),
        ("cpu.weight", "100"),
        ("cpu.max", "50000 100000"),
        ("cpu.max.burst", "1000"),
        ("cpu.idle", "0"),
        ("cpuset.cpus", "0-1"),
        ("cpuset.mems", "0"),
        ("pids.max", "max"),
        ("io.weight", "10000"),
        ("io.max", "8:0 wiops=max"),
        ("hugetlb.2MB.max", "4194304"),
        ("hugetlb.2MB.rsvd.max", "4194304"),
        ("rdma.max", "mlx5_0 hca_handle=3 hca_object=max"),
        ("memory.high", "50000000"),
    ];
    for (f, v) in expect {
        assert_eq!(cat(&d, f), v, "{f}");
    }

    // swap == limit disables swap; a period alone keeps the quota in force.
    cg.apply(&res(
        r#"{"memory":{"limit":1000,"swap":1000},"cpu":{"period":200000}}"#,
    ))
    .unwrap();
    assert_eq!(cat(&d, "memory.swap.max"), "0");
    assert_eq!(cat(&d, "cpu.max"), "50000 200000");

    // A controller that is not enabled is refused before anything is written.
    std::fs::write(d.join("cgroup.controllers"), "cpu\n").unwrap();
    let e = cg
        .apply(&res(r#"{"cpu":{"shares":2},"pids":{"limit":5}}"#))
        .unwrap_err();
    assert!(
        e.to_string().starts_with("linux.resources.pids.limit:"),
        "{e}"
    );
    assert_eq!(cat(&d, "cpu.weight"), "100");
    let e = cg
        .apply(&res(r#"{"unified":{"memory.high":"1"}}"#))
        .unwrap_err();
    assert!(e.to_string().contains("unified.memory.high"), "{e}");
}

fn fake_v1(root: &FakeRoot, ctrls: &[&str]) -> Hierarchies {
    // Our own cgroup is /box in memory and the root elsewhere.
    let mut mi = String::new();
    let mut own = String::new();
    for (i, c) in ctrls.iter().enumerate() {
        let mnt = root.0.join(c);
        std::fs::create_dir_all(&mnt).unwrap();
        mi.push_str(&format!(
            "{i} 1 0:{i} / {} rw - cgroup cgroup rw,{c}\n",
            mnt.display()
        ));
        let path = if *c == "memory" { "/box" } else { "/" };
        own.push_str(&format!("{}:{c}:{path}\n", i + 1));
    }
    Hierarchies::parse(&mi, &own).unwrap()
}

#[test]
fn v1_writes_files_in_each_hierarchy() {
    let root = FakeRoot::new();
    let h = fake_v1(
        &root,
        &[
            "memory",
            "cpu,cpuacct",
            "pids",
            "devices",
            "blkio",
            "cpuset",
        ],
    );
    let cg = Cgroup::new_in(&h, Some("c1"), "id", false).unwrap();
    assert_eq!(cg.mode(), Mode::V1);
    // Relative path: below our own memory cgroup, at the top elsewhere.
    let mem = root.0.join("memory/box/c1");
    assert_eq!(cg.v1_dir("memory"), Some(mem.as_path()));
    let cpu = root.0.join("cpu,cpuacct/c1");
    assert_eq!(cg.v1_dir("cpuacct"), Some(cpu.as_path()));

    let unlimited = "9223372036854771712";
    root.files(
        &mem,
        &[
            ("memory.limit_in_bytes", unlimited),
            ("memory.memsw.limit_in_bytes", unlimited),
            ("memory.soft_limit_in_bytes", ""),
            ("memory.swappiness", ""),
            ("memory.oom_control", ""),
        ],
    );
    root.files(
        &cpu,
        &[
            ("cpu.shares", ""),
            ("cpu.cfs_quota_us", ""),
            ("cpu.cfs_period_us", ""),
        ],
    );
    root.files(&root.0.join("pids/c1"), &[("pids.max", "")]);
    root.files(
        &root.0.join("devices/c1"),
        &[("devices.allow", ""), ("devices.deny", "")],
    );
    let blk = root.0.join("blkio/c1");
    root.files(
        &blk,
        &[
            ("blkio.bfq.weight", ""),
            ("blkio.throttle.read_bps_device", ""),
        ],
    );

    let r = res(
        r#"{"memory":{"limit":67108864,"swap":134217728,"reservation":1024,"swappiness":0,"disableOOMKiller":true},
        "cpu":{"shares":512,"quota":-1,"period":100000},"pids":{"limit":32},
        "blockIO":{"weight":300,"throttleReadBpsDevice":[{"major":8,"minor":0,"rate":1048576}]},
        "devices":[{"allow":false,"access":"rwm"},{"allow":false,"type":"c","major":1,"minor":3,"access":"w"},
                   {"allow":true,"type":"c","major":1,"minor":5,"access":"rwm"}]}"#,
    );
    cg.apply(&r).unwrap();
    for (d, f, v) in [
        (&mem, "memory.limit_in_bytes", "67108864"),
        (&mem, "memory.memsw.limit_in_bytes", "134217728"),
        (&mem, "memory.soft_limit_in_bytes", "1024"),
        (&mem, "memory.swappiness", "0"),
        (&mem, "memory.oom_control", "1"),
        (&cpu, "cpu.shares", "512"),
        (&cpu, "cpu.cfs_quota_us", "-1"),
        (&cpu, "cpu.cfs_period_us", "100000"),
        (&root.0.join("pids/c1"), "pids.max", "32"),
        (&blk, "blkio.bfq.weight", "300"),
        (&blk, "blkio.throttle.read_bps_device", "8:0 1048576"),
        // Files keep the last write: the last allow and the last deny.
        (&root.0.join("devices/c1"), "devices.allow", "c 1:5 rwm"),
        (&root.0.join("devices/c1"), "devices.deny", "c 1:3 w"),
    ] {
        assert_eq!(cat(d, f), v, "{f}");
    }

    // Missing controller: clear error, and no file touched before it.
    let e = cg
        .apply(&res(
            r#"{"memory":{"limit":1},"hugepageLimits":[{"pageSize":"2MB","limit":1}]}"#,
        ))
        .unwrap_err();
    assert!(
        e.to_string().contains(
            "linux.resources.hugepageLimits: the hugetlb cgroup controller is not mounted"
        ),
        "{e}"
    );
    assert_eq!(cat(&mem, "memory.limit_in_bytes"), "67108864");
    // Not asked for: no error. Empty cpus/mems are unset (the cpuset dir here has
    // no files, so any write would fail).
    cg.apply(&res(r#"{"hugepageLimits":[],"cpu":{"cpus":"","mems":""}}"#))
        .unwrap();
    // No device list: device rules stay as they were.
    assert_eq!(cat(&root.0.join("devices/c1"), "devices.deny"), "c 1:3 w");
}

#[test]
fn create_removes_what_it_made_on_failure() {
    let root = FakeRoot::new();
    let h = fake_v1(&root, &["memory", "pids"]);
    // Make the pids "mountpoint" a file so mkdir below it fails.
    std::fs::remove_dir(root.0.join("pids")).unwrap();
    std::fs::write(root.0.join("pids"), "").unwrap();
    let cg = Cgroup::new_in(&h, Some("/a/b"), "id", false).unwrap();
    let e = cg.create().unwrap_err();
    assert!(e.to_string().contains("creating cgroup"), "{e}");
    assert!(!root.0.join("memory/a").exists());
}

#[test]
fn hybrid_routes_unified_keys_to_the_unified_tree() {
    let root = FakeRoot::new();
    let mut h = fake_v1(&root, &["memory"]);
    let u = root.0.join("unified");
    h = Hierarchies::parse(
        &format!(
            "1 1 0:1 / {} rw - cgroup cgroup rw,memory\n2 1 0:2 / {} rw - cgroup2 cgroup2 rw\n",
            root.0.join("memory").display(),
            u.display()
        ),
        &format!("0::/\n1:memory:{}\n", h.own_v1["memory"]),
    )
    .unwrap();
    let cg = Cgroup::new_in(&h, Some("/c"), "id", false).unwrap();
    assert_eq!(cg.mode(), Mode::Hybrid);
    assert_eq!(cg.paths()[""], u.join("c"));
    root.files(
        &u.join("c"),
        &[("cgroup.controllers", ""), ("cgroup.max.depth", "")],
    );
    cg.apply(&res(r#"{"unified":{"cgroup.max.depth":"3"}}"#))
        .unwrap();
    assert_eq!(cat(&u.join("c"), "cgroup.max.depth"), "3");
    let e = cg
        .apply(&res(r#"{"unified":{"pids.max":"3"}}"#))
        .unwrap_err();
    assert!(
        e.to_string().contains("pids controller is not available"),
        "{e}"
    );
}

#[test]
fn serializes_for_state_json() {
    let root = FakeRoot::new();
    let h = fake_v1(&root, &["memory", "cpu,cpuacct"]);
    let cg = Cgroup::new_in(&h, None, "ctr", false).unwrap();
    let json = serde_json::to_string(&cg).unwrap();
    let back: Cgroup = serde_json::from_str(&json).unwrap();
    assert_eq!(back, cg);
    assert!(json.contains("\"mode\":\"v1\""), "{json}");
    assert_eq!(cg.paths()["cpu"], root.0.join("cpu,cpuacct/ctr"));
}

// ---------------------------------------------------------------------------
// Real kernel, as root.

fn host() -> Option<&'static Hierarchies> {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: needs root");
        return None;
    }
    match Hierarchies::host() {
        Ok(h) => Some(h),
        Err(e) => {
            eprintln!("skipped: {e}");
            None
        }
    }
}

/// Owns a real cgroup and the children put in it; cleans both up on drop.
struct Guard {
    cg: Cgroup,
    children: Vec<Child>,
}

impl Guard {
    fn new(cg: Cgroup) -> Guard {
        Guard {
            cg,
            children: Vec::new(),
        }
    }
    fn spawn(&mut self, cmd: &mut Command) -> i32 {
        let child = cmd.spawn().expect("spawn");
        let pid = child.id() as i32;
        self.children.push(child);
        self.cg.add_pid(pid).expect("add_pid");
        pid
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.cg.thaw();
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        if let Err(e) = self.cg.destroy() {
            eprintln!("cleanup: {e}");
        }
    }
}

fn sleeper() -> Command {
    let mut c = Command::new("sleep");
    c.arg("100");
    c
}

fn wait_signal(g: &mut Guard, i: usize) -> Option<i32> {
    use std::os::unix::process::ExitStatusExt;
    g.children[i].wait().unwrap().signal()
}

#[test]
fn host_lifecycle_limits_freeze_kill_destroy() {
    let Some(h) = host() else { return };
    let mode = h.mode();
    if mode == Mode::V2 {
        let root = &h.v2.as_ref().unwrap().mountpoint;
        let ctrls = v2::available(root).unwrap_or_default();
        if !["memory", "pids", "cpu"].iter().all(|c| ctrls.contains(*c)) {
            eprintln!("skipped: v2 host without memory/pids/cpu controllers");
            return;
        }
    }
    let name = unique("life");
    let cg = Cgroup::new(Some(&name), "unused", false).unwrap();
    let mut g = Guard::new(cg.clone());
    cg.create().unwrap();
    for p in cg.paths().values() {
        assert!(p.is_dir(), "{}", p.display());
    }

    // Devices: deny by default plus runc's defaults, as the runtime will pass them.
    let mut devices: Vec<LinuxDeviceCgroup> =
        serde_json::from_str(r#"[{"allow":false,"access":"rwm"}]"#).unwrap();
    devices.extend(default_allowed_devices());
    let mut r = res(r#"{"memory":{"limit":67108864},"pids":{"limit":32},
        "cpu":{"shares":512,"quota":50000,"period":100000,"cpus":"0"}}"#);
    r.set_devices(Some(devices));
    cg.apply(&r).unwrap();

    if mode == Mode::V2 {
        let d = &cg.paths()[""];
        assert_eq!(cat(d, "memory.max"), "67108864");
        assert_eq!(cat(d, "pids.max"), "32");
        assert_eq!(cat(d, "cpu.max"), "50000 100000");
    } else {
        assert_eq!(
            cat(&cg.paths()["memory"], "memory.limit_in_bytes"),
            "67108864"
        );
        assert_eq!(cat(&cg.paths()["pids"], "pids.max"), "32");
        assert_eq!(cat(&cg.paths()["cpu"], "cpu.shares"), "512");
        assert_eq!(cat(&cg.paths()["cpu"], "cpu.cfs_quota_us"), "50000");
        assert_eq!(cat(&cg.paths()["cpuset"], "cpuset.cpus"), "0");
        let list = cat(&cg.paths()["devices"], "devices.list");
        assert!(
            list.contains("c 1:3 rwm") && !list.contains("a *:* rwm"),
            "{list}"
        );
    }

    // A missing controller is a clear error when asked for.
    if cg.v1_dir("hugetlb").is_none() && mode != Mode::V2 {
        let e = cg
            .apply(&res(r#"{"hugepageLimits":[{"pageSize":"2MB","limit":0}]}"#))
            .unwrap_err();
        assert!(e.to_string().contains("hugetlb"), "{e}");
    }

    let pid = g.spawn(&mut sleeper());
    assert_eq!(cg.pids().unwrap(), vec![pid]);
    let own = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    assert!(own.contains(&name), "{own}");

    cg.freeze().unwrap();
    assert!(cg.is_frozen().unwrap());
    cg.thaw().unwrap();
    assert!(!cg.is_frozen().unwrap());

    let s = cg.stats().unwrap();
    assert_eq!(s.pids.current, 1);
    assert_eq!(s.pids.limit, 32);
    assert_eq!(s.memory.usage.limit, 67108864);
    assert!(serde_json::to_value(&s).unwrap().get("hugetlb").is_some());
    assert_eq!(cg.oom_kill_count().unwrap(), 0);

    cg.kill_all(libc::SIGKILL).unwrap();
    assert_eq!(wait_signal(&mut g, 0), Some(libc::SIGKILL));
    cg.destroy().unwrap();
    for p in cg.paths().values() {
        assert!(!p.exists(), "{} left behind", p.display());
    }
    cg.destroy().unwrap(); // absent is fine
}

#[test]
fn host_kill_all_with_sigterm_keeps_a_paused_container_paused() {
    let Some(_) = host() else { return };
    let cg = Cgroup::new(Some(&unique("term")), "unused", false).unwrap();
    let mut g = Guard::new(cg.clone());
    cg.create().unwrap();
    g.spawn(&mut sleeper());
    g.spawn(&mut sleeper());
    assert_eq!(cg.pids().unwrap().len(), 2);

    cg.freeze().unwrap();
    cg.kill_all(libc::SIGTERM).unwrap();
    assert!(cg.is_frozen().unwrap(), "a paused container stays paused");
    cg.thaw().unwrap();
    assert_eq!(wait_signal(&mut g, 0), Some(libc::SIGTERM));
    assert_eq!(wait_signal(&mut g, 1), Some(libc::SIGTERM));
}

/// A V2-mode cgroup on the host's cgroup2 mount, even on a hybrid host: the
/// freezer, cgroup.kill, cgroup.procs and device eBPF need no controller.
fn host_v2(tag: &str) -> Option<Guard> {
    let h = host()?;
    let Some(m) = &h.v2 else {
        eprintln!("skipped: no cgroup2 mount");
        return None;
    };
    if !fsutil::exists(&m.mountpoint, "cgroup.procs") {
        return None;
    }
    let mi = format!(
        "1 1 0:1 {} {} rw - cgroup2 cgroup2 rw\n",
        m.root,
        m.mountpoint.display()
    );
    let v2_only = Hierarchies::parse(&mi, "0::/\n").unwrap();
    let cg = Cgroup::new_in(
        &v2_only,
        Some(&format!("/{}", unique(tag))),
        "unused",
        false,
    )
    .unwrap();
    assert_eq!(cg.mode(), Mode::V2);
    cg.create().unwrap();
    Some(Guard::new(cg))
}

#[test]
fn host_v2_freeze_and_cgroup_kill() {
    let Some(mut g) = host_v2("v2") else { return };
    let cg = g.cg.clone();
    let pid = g.spawn(&mut sleeper());
    assert_eq!(cg.pids().unwrap(), vec![pid]);
    cg.freeze().unwrap();
    assert!(cg.is_frozen().unwrap());
    assert_eq!(
        fsutil::keyed_value(&cg.paths()[""], "cgroup.events", "frozen"),
        Some(1)
    );
    cg.thaw().unwrap();
    assert!(!cg.is_frozen().unwrap());
    cg.kill_all(libc::SIGKILL).unwrap();
    assert_eq!(wait_signal(&mut g, 0), Some(libc::SIGKILL));
    let s = cg.stats().unwrap();
    assert_eq!(s.pids.current, 0);
}

/// Runs a shell in the cgroup that opens /dev/null and /dev/zero for reading once
/// it has been moved in, and returns its stdout.
fn probe_devices(g: &mut Guard) -> String {
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg("read x; cat /dev/null; echo null=$?; head -c1 /dev/zero | wc -c | sed s/^/zero=/")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    g.spawn(&mut cmd);
    let child = g.children.last_mut().unwrap();
    child.stdin.take().unwrap().write_all(b"go\n").unwrap();
    let mut out = String::new();
    std::io::Read::read_to_string(child.stdout.as_mut().unwrap(), &mut out).unwrap();
    child.wait().unwrap();
    out
}

#[test]
fn host_v2_ebpf_device_filter_denies_dev_null() {
    let Some(mut g) = host_v2("bpf") else { return };
    let cg = g.cg.clone();
    let rules = r#"{"devices":[{"allow":true,"access":"rwm"},
        {"allow":false,"type":"c","major":1,"minor":3,"access":"rwm"}]}"#;
    cg.apply(&res(rules)).unwrap();
    let out = probe_devices(&mut g);
    assert!(out.contains("null=1") && out.contains("zero=1"), "{out}");

    // Replacing the rules detaches the old program: /dev/null opens again.
    cg.apply(&res(r#"{"devices":[{"allow":true,"access":"rwm"}]}"#))
        .unwrap();
    let out = probe_devices(&mut g);
    assert!(out.contains("null=0") && out.contains("zero=1"), "{out}");

    // Default deny with one allow.
    let r = r#"{"devices":[{"allow":false,"access":"rwm"},{"allow":true,"type":"c","major":1,"minor":5,"access":"r"}]}"#;
    cg.apply(&res(r)).unwrap();
    let out = probe_devices(&mut g);
    assert!(out.contains("null=1") && out.contains("zero=1"), "{out}");
}

/// Pure v2 as the kernel reports it: a private mount namespace with the cgroup
/// tmpfs replaced by a cgroup2 mount, read back through its mountinfo.
#[test]
fn host_detects_pure_v2_in_a_private_mount_namespace() {
    let Some(_) = host() else { return };
    let script = "umount -l /sys/fs/cgroup && mount -t cgroup2 none /sys/fs/cgroup && cat /proc/self/mountinfo";
    let out = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c", script])
        .output();
    let Some(out) = out.ok().filter(|o| o.status.success()) else {
        eprintln!("skipped: cannot make a private cgroup2 mount here");
        return;
    };
    let mi = String::from_utf8(out.stdout).unwrap();
    let h = Hierarchies::parse(&mi, "0::/init.scope\n").unwrap();
    assert_eq!(h.mode(), Mode::V2);
    let cg = Cgroup::new_in(&h, None, "ctr", false).unwrap();
    let want = BTreeMap::from([(String::new(), PathBuf::from("/sys/fs/cgroup/ctr"))]);
    assert_eq!(cg.paths(), want);
}

#[test]
fn clone_into_the_unified_cgroup_and_populated() {
    if host().is_none() {
        return;
    }
    let name = unique("born");
    let cg = Cgroup::new(Some(&name), "unused", false).unwrap();
    let g = Guard::new(cg.clone());
    cg.create().unwrap();
    let Some(dir) = cg.open_unified().unwrap() else {
        eprintln!("skipped: no unified hierarchy on this host");
        return;
    };
    assert!(!cg.is_populated(), "a new cgroup is empty");
    // The test harness is multi-threaded: the child only pauses and is killed.
    let pid = match unsafe { crate::sys::clone_into_cgroup(0, dir.as_raw_fd()) } {
        Ok(0) => unsafe {
            libc::pause();
            libc::_exit(0)
        },
        Ok(p) => p,
        Err(e) => {
            eprintln!("skipped: clone3(CLONE_INTO_CGROUP): {e} (Linux < 5.7?)");
            return;
        }
    };
    let line = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
    let populated = cg.is_populated();
    unsafe {
        libc::kill(pid, libc::SIGKILL);
        libc::waitpid(pid, std::ptr::null_mut(), 0);
    }
    let unified = line.lines().find(|l| l.starts_with("0::")).unwrap_or("");
    assert!(unified.ends_with(&format!("/{name}")), "{line}");
    assert!(populated, "the child was not seen in the cgroup");
    assert!(!cg.is_populated(), "populated after the child was reaped");

    // With CLONE_PARENT, as exec's joiner and create's bridge clone: from a forked
    // child, whose clone becomes our child and reports its pid through a pipe.
    let mut fds = [0; 2];
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    let bridge = unsafe { libc::fork() };
    if bridge == 0 {
        let r =
            unsafe { crate::sys::clone_into_cgroup(libc::CLONE_PARENT as u64, dir.as_raw_fd()) };
        let v: i32 = match r {
            Ok(0) => unsafe {
                libc::pause();
                libc::_exit(0)
            },
            Ok(p) => p,
            Err(e) => -e.raw_os_error().unwrap_or(1),
        };
        unsafe {
            libc::write(fds[1], (&v as *const i32).cast(), 4);
            libc::_exit(0)
        }
    }
    unsafe { libc::close(fds[1]) };
    let mut v: i32 = 0;
    let n = unsafe { libc::read(fds[0], (&mut v as *mut i32).cast(), 4) };
    unsafe {
        libc::close(fds[0]);
        libc::waitpid(bridge, std::ptr::null_mut(), 0);
    }
    assert_eq!(n, 4);
    assert!(
        v > 0,
        "clone3(CLONE_PARENT | CLONE_INTO_CGROUP) failed: errno {}",
        -v
    );
    let line = std::fs::read_to_string(format!("/proc/{v}/cgroup")).unwrap_or_default();
    let mut status = 0;
    let reaped = unsafe {
        libc::kill(v, libc::SIGKILL);
        libc::waitpid(v, &mut status, 0)
    };
    assert_eq!(reaped, v, "the CLONE_PARENT child is ours to reap");
    assert!(
        libc::WIFSIGNALED(status),
        "its exit reached us as a child's: {status:#x}"
    );
    let unified = line.lines().find(|l| l.starts_with("0::")).unwrap_or("");
    assert!(unified.ends_with(&format!("/{name}")), "{line}");
    drop(g);
}
