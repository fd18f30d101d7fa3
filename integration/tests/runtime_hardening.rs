//! Defences against runc's CVE history. Each test sets up the attack and would
//! fail on a runtime without the defence.

use kura_integration::runtime::Rt;
use kura_integration::{bin, require_root, Scratch};
use serde_json::json;
use std::path::Path;

fn run_sh(rt: &mut Rt, prefix: &str, script: &str) -> (i32, String, String) {
    let id = rt.id(prefix);
    rt.args(&["sh", "-c", script]);
    rt.run(&id)
}

fn sha(p: &Path) -> Vec<u8> {
    std::fs::read(p).unwrap()
}

/// CVE-2019-5736: a process the runtime starts in the container execs
/// /proc/self/exe — the runtime itself — and another container process keeps a
/// handle on that file to write through it once the runtime is gone. The runtime
/// used here is a private copy, so a failing defence damages only the copy.
/// `KURA_GUARD_OFF=1` runs the same attack with the guard disabled (to see it bite).
///
/// The victim is a `kura-runtime exec` process, which always re-executes from a
/// detached read-only mount of the binary (other containers may share the pid
/// namespace it joins, so the trampoline is not enough there).
#[test]
fn runtime_binary_cannot_be_overwritten_from_the_container() {
    require_root!();
    attack_runtime_binary("ro-mount", None);
}

/// The same attack against the re-exec's fallback (sealed memfd copy), used where a
/// detached read-only mount of the binary cannot be made.
#[test]
fn runtime_binary_cannot_be_overwritten_with_the_memfd_fallback() {
    require_root!();
    attack_runtime_binary("memfd", Some("memfd"));
}

/// The same attack's first step against a new container's init, which execs its
/// program through the sealed exec trampoline: an entry point that is
/// `/proc/self/exe` reaches only the trampoline (which, given no program it can
/// run, exits 127), never the runtime. Without the guard the runtime itself runs
/// in the container (and fails on its arguments: 1). Init is not dumpable until
/// that exec, so nothing reaches its exe before it (`init_is_not_dumpable_before_exec`).
#[test]
fn init_entry_point_reaches_only_the_trampoline() {
    require_root!();
    let mut rt = Rt::new("cve-5736-init");
    plant_evil(&rt, &bin("kura-runtime"));
    let id = rt.id("evil-init");
    rt.args(&["/evil", "update", "-r", "-", "x"]);
    let (code, out, err) = rt.run(&id);
    assert_eq!(code, 127, "/evil ran something: {out} {err}");
}

/// `/evil` -> /proc/self/exe in the rootfs, and what `binary` needs to run there,
/// as it could in any glibc-based image: its loader and libraries.
fn plant_evil(rt: &Rt, binary: &Path) {
    std::os::unix::fs::symlink("/proc/self/exe", rt.bundle.join("rootfs/evil")).unwrap();
    let ldd = std::process::Command::new("ldd")
        .arg(binary)
        .output()
        .unwrap();
    for lib in String::from_utf8_lossy(&ldd.stdout)
        .split_whitespace()
        .filter(|w| w.starts_with('/'))
    {
        let dst = rt.bundle.join("rootfs").join(lib.trim_start_matches('/'));
        std::fs::create_dir_all(dst.parent().unwrap()).unwrap();
        std::fs::copy(lib, &dst).unwrap();
    }
}

fn attack_runtime_binary(name: &str, guard: Option<&str>) {
    let mut rt = Rt::new(&format!("cve-5736-{name}"));
    let copy_dir = Scratch::new("rt-copy");
    let copy = copy_dir.join("kura-runtime");
    std::fs::copy(bin("kura-runtime"), &copy).unwrap();
    let before = sha(&copy);
    plant_evil(&rt, &copy);
    let id = rt.id("evil");
    rt.args(&["sleep", "300"]);
    rt.write_config(&id);
    let b = rt.bundle.to_string_lossy().into_owned();
    let root = rt.root.to_str().unwrap().to_owned();
    let runtime = |args: &[&str]| {
        let mut c = std::process::Command::new(&copy);
        c.arg("--root").arg(&root).args(args);
        if std::env::var_os("KURA_GUARD_OFF").is_some() {
            c.env("KURA_RUNTIME_UNSAFE_NO_EXE_GUARD", "1");
        }
        if let Some(g) = guard {
            c.env("KURA_RUNTIME_EXE_GUARD", g);
        }
        c
    };
    let st = runtime(&["run", "--detach", "--bundle", &b, &id])
        .stdin(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(st.success());
    // The victim: `exec` runs /evil, i.e. the runtime binary, inside the container,
    // blocked reading its stdin (`update -r -`), which we hold open.
    let mut victim = runtime(&["exec", &id, "/evil", "update", "-r", "-", "x"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Detached: a foreground exec would keep a runtime process (the same binary)
    // alive, and the file busy, for as long as the attacker runs.
    let attacker = runtime(&[
        "exec",
        "--detach",
        &id,
        "sh",
        "-c",
        "(for i in $(seq 100); do for p in /proc/[0-9]*; do grep -q '^/evil' $p/cmdline 2>/dev/null && pid=${p#/proc/}; done; \
           [ -n \"$pid\" ] && break; sleep 0.05; done; \
         echo victim=$pid; \
         if [ -n \"$pid\" ]; then exec 4</proc/$pid/exe || echo cannot-open; \
         echo x > /proc/$pid/exe 2>/dev/null && echo WROTE-WHILE-RUNNING; fi; \
         echo ready > /tmp/ready; n=0; while [ -n \"$pid\" ] && [ -e /proc/$pid ] && [ $n -lt 400 ]; do n=$((n+1)); sleep 0.05; done; \
         sleep 1; \
         [ -n \"$pid\" ] && echo x > /proc/self/fd/4 2>/dev/null && echo WROTE-AFTER-EXIT; echo done) > /tmp/attack.log 2>&1",
    ])
    .stdin(std::process::Stdio::null())
    .status()
    .unwrap();
    assert!(attacker.success());
    let ready = rt.bundle.join("rootfs/tmp/ready");
    for _ in 0..200 {
        if ready.exists() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(25));
    }
    drop(victim.stdin.take());
    let victim = victim.wait().unwrap();
    let log = rt.bundle.join("rootfs/tmp/attack.log");
    let mut stdout = String::new();
    for _ in 0..400 {
        stdout = std::fs::read_to_string(&log).unwrap_or_default();
        if stdout.contains("done") {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(25));
    }
    let _ = runtime(&["delete", "--force", &id]).status();
    assert!(
        stdout.contains("victim=") && stdout.contains("done"),
        "attack did not run: {stdout}"
    );
    eprintln!("attack output: {stdout}");
    assert!(
        !stdout.contains("WROTE"),
        "the runtime binary was writable from the container: {stdout}"
    );
    assert_eq!(sha(&copy), before, "runtime binary changed");
    // The re-executed runtime's protected copy did run there (and failed on its
    // arguments): the attacker had its chance.
    assert_eq!(
        victim.code(),
        Some(1),
        "/evil did not run the runtime: {victim:?}"
    );
}

/// CVE-2024-21626: a leaked host fd used as the cwd. process.cwd through
/// /proc/self/fd must not reach a host directory.
#[test]
fn no_host_fd_reaches_the_container_cwd() {
    require_root!();
    let mut rt = Rt::new("cve-21626");
    for fd in 3..12 {
        rt.config["process"]["cwd"] = json!(format!("/proc/self/fd/{fd}"));
        let id = rt.id("cwd");
        rt.args(&["sh", "-c", "pwd; ls /proc/self/fd"]);
        let out = rt.create(&id);
        if out.status.success() {
            // Only possible if the fd was one of ours inside the container; it must not be.
            let st = rt.state(&id);
            let pid = st["pid"].as_i64().unwrap();
            let cwd = std::fs::read_link(format!("/proc/{pid}/cwd")).unwrap();
            panic!("create with cwd through fd {fd} succeeded; init cwd {cwd:?}");
        }
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("process.cwd"), "{err}");
        assert!(!rt.state_dir(&id).exists());
    }
    // And the running process sees only stdio.
    rt.config["process"]["cwd"] = json!("/");
    let (code, out, err) = run_sh(&mut rt, "fds", "ls /proc/self/fd | sort -n | tr '\\n' ' '");
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        out, "0 1 2 3 ",
        "fd 3 is ls's own directory handle; nothing else"
    );
}

/// A mount destination through a symlink that points at the host lands inside
/// the rootfs instead (CVE-2021-30465 class).
#[test]
fn mount_destination_symlinks_stay_in_the_rootfs() {
    require_root!();
    let mut rt = Rt::new("mnt-escape");
    let host = rt.scratch.join("hostdir");
    std::fs::create_dir_all(&host).unwrap();
    let rootfs = rt.bundle.join("rootfs");
    // Absolute and relative escapes.
    std::os::unix::fs::symlink(&host, rootfs.join("abs")).unwrap();
    std::os::unix::fs::symlink(
        "../../../../../../../..".to_string() + host.to_str().unwrap(),
        rootfs.join("rel"),
    )
    .unwrap();
    let mounts = rt.config["mounts"].as_array_mut().unwrap();
    mounts.push(json!({"destination": "/abs/m1", "type": "tmpfs", "source": "tmpfs"}));
    mounts.push(json!({"destination": "/rel/m2", "type": "tmpfs", "source": "tmpfs"}));
    mounts.push(
        json!({"destination": "/abs/m3", "type": "bind", "source": "/etc", "options": ["bind"]}),
    );
    let (code, out, err) = run_sh(
        &mut rt,
        "esc",
        "grep -c ' /.*/m[123] ' /proc/self/mountinfo",
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        out.trim(),
        "3",
        "the three mounts exist inside the container"
    );
    assert!(
        std::fs::read_dir(&host).unwrap().next().is_none(),
        "something was created in the host dir"
    );
    let host_mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !host_mounts.contains(host.to_str().unwrap()),
        "a mount landed on the host"
    );
}

/// A symlink swapped in while setup runs cannot redirect a mount either: a thread
/// flips a directory in the rootfs to a host-pointing symlink while containers start.
#[test]
fn mount_destination_swapped_during_setup_stays_in_the_rootfs() {
    require_root!();
    let mut rt = Rt::new("mnt-race");
    let host = rt.scratch.join("hostdir");
    std::fs::create_dir_all(&host).unwrap();
    let rootfs = rt.bundle.join("rootfs");
    let target = rootfs.join("racy");
    std::fs::create_dir_all(&target).unwrap();
    rt.config["mounts"]
        .as_array_mut()
        .unwrap()
        .push(json!({"destination": "/racy/m", "type": "tmpfs", "source": "tmpfs"}));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flipper = {
        let (stop, target, host, rootfs) =
            (stop.clone(), target.clone(), host.clone(), rootfs.clone());
        std::thread::spawn(move || {
            let dir_copy = rootfs.join("racy.dir");
            let link = rootfs.join("racy.link");
            std::fs::create_dir_all(&dir_copy).unwrap();
            let _ = std::os::unix::fs::symlink(&host, &link);
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                // Swap target between a real directory and a symlink to the host.
                let _ = std::fs::rename(&target, rootfs.join("racy.tmp"));
                let _ = std::fs::rename(&link, &target);
                let _ = std::fs::rename(&target, &link);
                let _ = std::fs::rename(rootfs.join("racy.tmp"), &target);
            }
        })
    };
    for _ in 0..30 {
        rt.args(&["true"]);
        let id = rt.id("race");
        let _ = rt.run(&id);
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    flipper.join().unwrap();
    let host_mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !host_mounts.contains(host.to_str().unwrap()),
        "a mount landed on the host dir"
    );
    assert!(
        std::fs::read_dir(&host).unwrap().next().is_none(),
        "something was created in the host dir"
    );
}

/// /proc or /sys over a symlink would let the image point them somewhere else
/// (CVE-2019-16884, CVE-2019-19921): refused.
#[test]
fn proc_and_sys_over_symlinks_are_refused() {
    require_root!();
    for (dir, fstype) in [("proc", "proc"), ("sys", "sysfs")] {
        let mut rt = Rt::new("procsym");
        let rootfs = rt.bundle.join("rootfs");
        std::fs::remove_dir(rootfs.join(dir)).unwrap();
        std::fs::create_dir_all(rootfs.join("elsewhere")).unwrap();
        std::os::unix::fs::symlink("/elsewhere", rootfs.join(dir)).unwrap();
        let id = rt.id("procsym");
        rt.args(&["true"]);
        let out = rt.create(&id);
        assert!(!out.status.success(), "{fstype} over a symlink was mounted");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("symlink"), "{err}");
        assert!(!rt.state_dir(&id).exists());
    }
}

/// Masked and read-only paths that are symlinks resolve inside the container: the
/// host target is neither masked nor made read-only.
#[test]
fn masked_and_readonly_symlinks_stay_inside() {
    require_root!();
    let mut rt = Rt::new("mask-sym");
    let host = rt.scratch.join("hostfile-dir");
    std::fs::create_dir_all(&host).unwrap();
    std::fs::write(host.join("data"), "host data").unwrap();
    let rootfs = rt.bundle.join("rootfs");
    std::os::unix::fs::symlink(&host, rootfs.join("etc/masklink")).unwrap();
    std::os::unix::fs::symlink(&host, rootfs.join("etc/rolink")).unwrap();
    rt.config["linux"]["maskedPaths"] = json!(["/etc/masklink"]);
    rt.config["linux"]["readonlyPaths"] = json!(["/etc/rolink"]);
    let (code, _, err) = run_sh(&mut rt, "masksym", "true");
    assert_eq!(code, 0, "{err}");
    let host_mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!host_mounts.contains(host.to_str().unwrap()));
    std::fs::write(host.join("data"), "still writable").unwrap();
}

/// Creates a container (init then waits before its execve, holding host fds and
/// our exe), runs `script` in it with `kura-runtime exec [exec_opts]`, deletes the
/// container and returns what the script printed (stdout and stderr).
fn look_at_created_init(rt: &mut Rt, prefix: &str, exec_opts: &[&str], script: &str) -> String {
    let id = rt.id(prefix);
    rt.args(&["sleep", "300"]);
    rt.create_ok(&id);
    let mut args = vec!["exec"];
    args.extend_from_slice(exec_opts);
    args.extend_from_slice(&[&id, "sh", "-c", script]);
    let out = rt.rt(&args);
    rt.ok(&["delete", "--force", &id]);
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

const SECRET_ENV: [&str; 2] = ["PATH=/bin", "SECRET_FROM_HOST=hunter2"];

/// Init is non-dumpable until it execs: another process in the container, even
/// root, cannot read its environment or open its exe while it holds host fds.
#[test]
fn init_is_not_dumpable_before_exec() {
    require_root!();
    let mut rt = Rt::new("dumpable");
    rt.config["process"]["env"] = json!(SECRET_ENV);
    let s = look_at_created_init(
        &mut rt,
        "dump",
        &[],
        "cat /proc/1/environ 2>&1 | tr '\\0' ' '; ls -l /proc/1/exe 2>&1; ls /proc/1/fd 2>&1",
    );
    assert!(
        !s.contains("hunter2"),
        "init's environment is readable: {s}"
    );
    assert!(s.contains("Permission denied"), "{s}");
}

/// Changing uid resets dumpable to `fs.suid_dumpable`: on hosts where that is 1,
/// an init with a non-root `process.user` would turn readable, by a process of the
/// same uid, for its whole created state. The test sets the sysctl to 1 for its
/// duration (it only affects core dumps and /proc access of set-id processes).
#[test]
fn init_stays_undumpable_after_changing_uid() {
    require_root!();
    struct Restore(String);
    impl Drop for Restore {
        fn drop(&mut self) {
            let _ = std::fs::write("/proc/sys/fs/suid_dumpable", &self.0);
        }
    }
    let was = std::fs::read_to_string("/proc/sys/fs/suid_dumpable").unwrap();
    let _restore = Restore(was.trim().to_owned());
    std::fs::write("/proc/sys/fs/suid_dumpable", "1").unwrap();
    let mut rt = Rt::new("dumpable-uid");
    rt.config["process"]["env"] = json!(SECRET_ENV);
    rt.config["process"]["user"] = json!({"uid": 1000, "gid": 1000});
    // An ordinary unprivileged process: no capabilities, so a peer of the same uid
    // passes the kernel's capability-subset check and only dumpable stands between.
    rt.config["process"]["capabilities"] = json!({"bounding": ["CAP_KILL"]});
    let s = look_at_created_init(
        &mut rt,
        "dump-uid",
        &["--user", "1000:1000"],
        "cat /proc/1/environ 2>&1 | tr '\\0' ' '",
    );
    assert!(
        !s.contains("hunter2"),
        "init's environment is readable: {s}"
    );
    assert!(s.contains("Permission denied"), "{s}");
}

/// Non-dumpable is no shield against CAP_SYS_PTRACE: a container that may hold it
/// gets the re-exec, so init's exe is a read-only copy even for a process that can
/// open it. (Through the trampoline alone, init's exe would be the runtime's own
/// file until its execve: the open would succeed and only "Text file busy" would
/// stop the write.)
#[test]
fn a_ptrace_capable_container_gets_the_reexec() {
    require_root!();
    let mut rt = Rt::new("ptrace-guard");
    for set in ["bounding", "effective", "permitted"] {
        let list = rt.config["process"]["capabilities"][set]
            .as_array_mut()
            .unwrap();
        list.push(json!("CAP_SYS_PTRACE"));
    }
    let s = look_at_created_init(
        &mut rt,
        "ptrace",
        &[],
        "ls -l /proc/1/exe >/dev/null 2>&1 && echo can-see; echo x 2>&1 >/proc/1/exe",
    );
    assert!(
        s.contains("can-see"),
        "CAP_SYS_PTRACE did not reach init: {s}"
    );
    assert!(s.contains("Read-only file system"), "{s}");
}

/// Hostile config input is refused quickly with an error, never a crash.
#[test]
fn hostile_configs_fail_cleanly() {
    require_root!();
    let mut rt = Rt::new("hostile");
    let id = rt.id("hostile");
    rt.write_config(&id);
    let b = rt.bundle.to_string_lossy().into_owned();
    let deep = "[".repeat(100_000) + &"]".repeat(100_000);
    let huge_args = format!("{{\"ociVersion\":\"1.0.0\",\"process\":{{\"cwd\":\"/\",\"user\":{{\"uid\":0,\"gid\":0}},\"args\":[{}]}}}}", vec!["\"x\""; 200_000].join(","));
    let cases: Vec<(String, Vec<u8>)> = vec![
        ("deep nesting".into(), format!("{{\"ociVersion\":\"1.0.0\",\"annotations\":{deep}}}").into_bytes()),
        ("huge array".into(), huge_args.into_bytes()),
        ("overflow".into(), br#"{"ociVersion":"1.0.0","process":{"cwd":"/","user":{"uid":99999999999,"gid":0},"args":["sh"]}}"#.to_vec()),
        ("invalid utf-8".into(), b"{\"ociVersion\":\"1.0.0\",\"hostname\":\"\xc3\x28\"}".to_vec()),
        ("nul in args".into(), br#"{"ociVersion":"1.0.0","root":{"path":"rootfs"},"process":{"cwd":"/","user":{"uid":0,"gid":0},"args":["sh\u0000x"]},"linux":{"namespaces":[{"type":"mount"}]}}"#.to_vec()),
    ];
    for (what, body) in cases {
        std::fs::write(rt.bundle.join("config.json"), &body).unwrap();
        let out = rt.rt(&["create", "--bundle", &b, &id]);
        assert_eq!(
            out.status.code(),
            Some(1),
            "{what}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!rt.state_dir(&id).exists(), "{what}: state dir left");
    }
}
