//! What a config.json asks for is what the container gets: namespaces, ids, mounts,
//! devices, limits, capabilities, seccomp. Each test runs one container and reads
//! the result from inside it.

use kura_integration::require_root;
use kura_integration::runtime::Rt;
use serde_json::json;

fn run_sh(rt: &mut Rt, prefix: &str, script: &str) -> String {
    let id = rt.id(prefix);
    rt.args(&["sh", "-c", script]);
    let (code, out, err) = rt.run(&id);
    assert_eq!(code, 0, "container failed: stdout {out:?} stderr {err:?}");
    out
}

#[test]
fn namespaces_hostname_and_pid1() {
    require_root!();
    let mut rt = Rt::new("ns");
    rt.config["hostname"] = json!("kura-test-host");
    rt.config["domainname"] = json!("example.org");
    let host_ns: Vec<String> = ["pid", "net", "ipc", "uts", "mnt", "cgroup"]
        .iter()
        .map(|n| {
            std::fs::read_link(format!("/proc/self/ns/{n}"))
                .unwrap()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    let out = run_sh(
        &mut rt,
        "ns",
        "echo $$; hostname; cat /proc/sys/kernel/domainname; for n in pid net ipc uts mnt cgroup; do readlink /proc/self/ns/$n; done",
    );
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "1", "the process is pid 1 in its pid namespace");
    assert_eq!(lines[1], "kura-test-host");
    assert_eq!(lines[2], "example.org");
    for (i, n) in ["pid", "net", "ipc", "uts", "mnt", "cgroup"]
        .iter()
        .enumerate()
    {
        assert_ne!(lines[3 + i], host_ns[i], "{n} namespace must be new");
    }
}

#[test]
fn joins_a_network_namespace_by_path() {
    require_root!();
    let mut rt = Rt::new("nsjoin");
    let name = kura_integration::unique_id("kuratest");
    let st = std::process::Command::new("ip")
        .args(["netns", "add", &name])
        .status()
        .unwrap();
    assert!(st.success(), "ip netns add");
    struct Del(String);
    impl Drop for Del {
        fn drop(&mut self) {
            let _ = std::process::Command::new("ip")
                .args(["netns", "delete", &self.0])
                .status();
        }
    }
    let _del = Del(name.clone());
    let path = format!("/var/run/netns/{name}");
    let want = std::fs::metadata(&path)
        .map(|m| std::os::unix::fs::MetadataExt::ino(&m))
        .unwrap();
    let ns = rt.config["linux"]["namespaces"].as_array_mut().unwrap();
    for n in ns.iter_mut() {
        if n["type"] == "network" {
            n["path"] = json!(path);
        }
    }
    let out = run_sh(&mut rt, "join", "readlink /proc/self/ns/net");
    assert_eq!(out.trim(), format!("net:[{want}]"));
}

#[test]
fn user_and_ids_and_groups() {
    require_root!();
    let mut rt = Rt::new("user");
    rt.config["process"]["user"] =
        json!({"uid": 1000, "gid": 1001, "additionalGids": [10, 20], "umask": 63});
    rt.config["process"]["cwd"] = json!("/tmp");
    let out = run_sh(
        &mut rt,
        "user",
        "id -u; id -g; id -G; umask; pwd; echo $HOME",
    );
    let l: Vec<&str> = out.lines().collect();
    assert_eq!(l[0], "1000");
    assert_eq!(l[1], "1001");
    assert_eq!(l[2], "1001 10 20");
    assert_eq!(l[3], "0077");
    assert_eq!(l[4], "/tmp");
    assert_eq!(l[5], "/", "HOME for a uid without a passwd entry");
}

#[test]
fn user_namespace_with_mappings() {
    require_root!();
    let mut rt = Rt::new("userns");
    rt.config["linux"]["namespaces"]
        .as_array_mut()
        .unwrap()
        .push(json!({"type": "user"}));
    rt.config["linux"]["uidMappings"] =
        json!([{"containerID": 0, "hostID": 100000, "size": 65536}]);
    rt.config["linux"]["gidMappings"] =
        json!([{"containerID": 0, "hostID": 100000, "size": 65536}]);
    let out = run_sh(
        &mut rt,
        "userns",
        "id -u; cat /proc/self/uid_map; cat /proc/self/gid_map",
    );
    let l: Vec<&str> = out.lines().collect();
    assert_eq!(l[0], "0");
    assert_eq!(
        l[1].split_whitespace().collect::<Vec<_>>(),
        vec!["0", "100000", "65536"]
    );
    assert_eq!(
        l[2].split_whitespace().collect::<Vec<_>>(),
        vec!["0", "100000", "65536"]
    );
}

#[test]
fn capabilities_rlimits_and_no_new_privs() {
    require_root!();
    let mut rt = Rt::new("caps");
    let caps = json!(["CAP_CHOWN", "CAP_KILL"]);
    rt.config["process"]["capabilities"] = json!({"bounding": caps, "effective": caps, "permitted": caps, "inheritable": [], "ambient": []});
    rt.config["process"]["rlimits"] = json!([
        {"type": "RLIMIT_NOFILE", "soft": 321, "hard": 654},
        {"type": "RLIMIT_CORE", "soft": 0, "hard": 0}
    ]);
    rt.config["process"]["noNewPrivileges"] = json!(true);
    let out = run_sh(
        &mut rt,
        "caps",
        "grep -E '^(CapBnd|CapEff|CapPrm|NoNewPrivs)' /proc/self/status; ulimit -n; ulimit -Hn",
    );
    // CAP_CHOWN is bit 0, CAP_KILL bit 5.
    assert!(out.contains("CapBnd:\t0000000000000021"), "{out}");
    assert!(out.contains("CapEff:\t0000000000000021"), "{out}");
    assert!(out.contains("CapPrm:\t0000000000000021"), "{out}");
    assert!(out.contains("NoNewPrivs:\t1"), "{out}");
    assert!(out.contains("\n321\n654\n"), "{out}");
}

#[test]
fn mounts_masked_and_readonly_paths() {
    require_root!();
    let mut rt = Rt::new("mounts");
    let host_dir = rt.scratch.join("shared");
    std::fs::create_dir_all(&host_dir).unwrap();
    std::fs::write(host_dir.join("hello"), "from host").unwrap();
    let mounts = rt.config["mounts"].as_array_mut().unwrap();
    mounts.push(json!({"destination": "/data", "type": "bind", "source": host_dir, "options": ["rbind", "ro"]}));
    mounts.push(json!({"destination": "/scratch/deep/dir", "type": "tmpfs", "source": "tmpfs", "options": ["size=1m", "noexec"]}));
    rt.config["linux"]["maskedPaths"] = json!(["/etc/secret", "/etc/secretdir"]);
    rt.config["linux"]["readonlyPaths"] = json!(["/etc/rodir"]);
    let rootfs = rt.bundle.join("rootfs");
    std::fs::write(rootfs.join("etc/secret"), "top secret").unwrap();
    std::fs::create_dir_all(rootfs.join("etc/secretdir")).unwrap();
    std::fs::write(rootfs.join("etc/secretdir/f"), "x").unwrap();
    std::fs::create_dir_all(rootfs.join("etc/rodir")).unwrap();
    let out = run_sh(
        &mut rt,
        "mounts",
        "cat /data/hello; echo; touch /data/x 2>/dev/null && echo data-writable || echo data-ro; \
         grep -c ' /scratch/deep/dir ' /proc/self/mountinfo; \
         cat /etc/secret | wc -c; ls /etc/secretdir | wc -l; \
         touch /etc/rodir/f 2>/dev/null && echo rodir-writable || echo rodir-ro; \
         touch /tmp/ok && echo root-writable",
    );
    let l: Vec<&str> = out.lines().collect();
    assert_eq!(
        l,
        vec![
            "from host",
            "data-ro",
            "1",
            "0",
            "0",
            "rodir-ro",
            "root-writable"
        ],
        "{out}"
    );
    assert!(!host_dir.join("x").exists());
}

#[test]
fn readonly_root_and_sysctl() {
    require_root!();
    let mut rt = Rt::new("rootro");
    rt.config["root"]["readonly"] = json!(true);
    rt.config["linux"]["sysctl"] = json!({"net.ipv4.ip_forward": "1", "kernel.shmmni": "2048"});
    // /sys/fs/cgroup must exist in a read-only root for the cgroup mount.
    std::fs::create_dir_all(rt.bundle.join("rootfs/sys/fs/cgroup")).unwrap();
    let out = run_sh(
        &mut rt,
        "rootro",
        "touch /x 2>/dev/null && echo rw || echo ro; cat /proc/sys/net/ipv4/ip_forward; cat /proc/sys/kernel/shmmni",
    );
    assert_eq!(out, "ro\n1\n2048\n");
}

#[test]
fn devices_default_and_configured() {
    require_root!();
    let mut rt = Rt::new("devices");
    rt.config["linux"]["devices"] = json!([
        {"path": "/dev/kura-null", "type": "c", "major": 1, "minor": 3, "fileMode": 432, "uid": 5, "gid": 6}
    ]);
    let out = run_sh(
        &mut rt,
        "dev",
        "for d in null zero full random urandom tty kura-null; do stat -c '%n %t:%T %a %u:%g' /dev/$d; done; \
         readlink /dev/ptmx; readlink /dev/fd; readlink /dev/stdin; echo x > /dev/null && echo writable; \
         head -c 1 /dev/zero | wc -c",
    );
    assert!(out.contains("/dev/null 1:3 666 0:0"), "{out}");
    assert!(out.contains("/dev/tty 5:0 666 0:0"), "{out}");
    assert!(out.contains("/dev/kura-null 1:3 660 5:6"), "{out}");
    assert!(
        out.contains("pts/ptmx\n/proc/self/fd\n/proc/self/fd/0\n"),
        "{out}"
    );
    assert!(out.contains("writable"), "{out}");
}

#[test]
fn devices_cgroup_denies_what_is_not_allowed() {
    require_root!();
    let mut rt = Rt::new("devcg");
    // A node for /dev/mem (1:1) exists but the cgroup only allows the defaults.
    rt.config["linux"]["devices"] =
        json!([{"path": "/dev/kmem-like", "type": "c", "major": 1, "minor": 1}]);
    rt.config["linux"]["resources"]["devices"] = json!([
        {"allow": false, "access": "rwm"},
        {"allow": false, "type": "c", "major": 1, "minor": 1, "access": "rwm"}
    ]);
    // linux.devices entries are allowed after the user's rules, as runc does, so
    // the denied node is made inside the container instead (CAP_MKNOD allows that).
    rt.config["linux"]["devices"] = json!([]);
    let caps = json!(["CAP_MKNOD"]);
    rt.config["process"]["capabilities"] =
        json!({"bounding": caps, "effective": caps, "permitted": caps});
    std::fs::create_dir_all(rt.bundle.join("rootfs/opt")).unwrap();
    let out = run_sh(
        &mut rt,
        "devcg",
        "mknod /opt/n c 1 3 && echo allowed; mknod /opt/m c 1 1 2>/dev/null || echo denied",
    );
    // The devices cgroup checks mknod ('m') too: an allowed node can be made, 1:1 not.
    assert_eq!(out, "allowed\ndenied\n");
}

#[test]
fn seccomp_errno_and_arguments() {
    require_root!();
    let mut rt = Rt::new("seccomp");
    rt.config["linux"]["seccomp"] = json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_AARCH64"],
        "syscalls": [
            {"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13},
            {"names": ["chmod", "fchmodat", "fchmodat2"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1}
        ]
    });
    let out = run_sh(
        &mut rt,
        "sc",
        "mkdir /tmp/d 2>&1 | grep -o 'Permission denied'; touch /tmp/f; chmod 600 /tmp/f 2>&1 | grep -o 'not permitted'; echo done",
    );
    assert_eq!(out, "Permission denied\nnot permitted\ndone\n", "{out}");
}

#[test]
fn pid_limits_are_enforced() {
    require_root!();
    let mut rt = Rt::new("pids");
    rt.config["linux"]["resources"]["pids"] = json!({"limit": 5});
    rt.config["linux"]["resources"]["memory"] = json!({"limit": 67108864});
    let out = run_sh(
        &mut rt,
        "pids",
        "(for i in 1 2 3 4 5 6 7 8; do sleep 5 & done) 2>/dev/null && echo unlimited || echo spawned; \
         cat /sys/fs/cgroup/pids/pids.max 2>/dev/null || cat /sys/fs/cgroup/pids.max; \
         cat /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null || cat /sys/fs/cgroup/memory.max",
    );
    assert!(out.contains("spawned\n5\n67108864\n"), "{out}");
}

#[test]
fn preserve_fds_and_no_leaks() {
    require_root!();
    let mut rt = Rt::new("fds");
    let id = rt.id("fds");
    rt.args(&[
        "sh",
        "-c",
        "ls /proc/self/fd | sort -n | tr '\\n' ' '; cat <&3",
    ]);
    rt.write_config(&id);
    let extra = rt.scratch.join("extra");
    std::fs::write(&extra, "via fd 3").unwrap();
    let f = std::fs::File::open(&extra).unwrap();
    let b = rt.bundle.to_string_lossy().into_owned();
    let mut cmd = rt.cmd();
    cmd.args(["run", "--bundle", &b, "--preserve-fds", "1", &id]);
    use std::os::fd::AsRawFd;
    let raw = f.as_raw_fd();
    unsafe {
        use std::os::unix::process::CommandExt;
        cmd.pre_exec(move || {
            // dup2 onto itself would keep O_CLOEXEC; clear it instead.
            if raw == 3 {
                libc::fcntl(3, libc::F_SETFD, 0);
            } else if libc::dup2(raw, 3) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let out = cmd.output().unwrap();
    let s = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // 0-2, the preserved 3, and the fd ls itself opens for /proc/self/fd.
    assert_eq!(
        s, "0 1 2 3 4 via fd 3",
        "only stdio and the preserved fd reach the container"
    );
}
