//! `kura run` against a real kurad: exit codes, stdio, the options that shape the OCI
//! spec (env, user, workdir, volumes, tmpfs, read-only root, resources, capabilities,
//! network), the 127 case, bad input that leaves nothing behind, and runc as runtime.

use kura_integration::images::{kurad_with_busybox, Kurad};
use kura_integration::shim::which;
use kura_integration::{require_root, skip, Scratch};
use std::io::Write;
use std::process::Stdio;

const IMG: &str = "docker.io/kura/busybox:v1";

fn kurad() -> Option<Kurad> {
    kurad_with_busybox(IMG)
}

fn out(o: &std::process::Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).to_string(),
        String::from_utf8_lossy(&o.stderr).to_string(),
    )
}

/// What a removed container must not leave: its bundle (rootfs mount, FIFOs), its
/// shim's directory, its active snapshot, its log, its cgroup.
fn assert_nothing_left(k: &Kurad, id: &str) {
    let state = k.dir.join("state");
    let bundle = state.join("containers/default").join(id);
    assert!(!bundle.exists(), "bundle {} left behind", bundle.display());
    let shims: Vec<_> = std::fs::read_dir(state.join("shim/s"))
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(shims.is_empty(), "shim sockets left: {shims:?}");
    let snaps = k.ok(&["snapshot", "ls"]);
    assert!(
        !snaps.lines().any(|l| l.contains("active")),
        "active snapshot left:\n{snaps}"
    );
    assert!(!k
        .root
        .join("logs/default")
        .join(format!("{id}.log"))
        .exists());
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mounts.contains(&bundle.display().to_string()),
        "mount left under {}",
        bundle.display()
    );
    for base in [
        "/sys/fs/cgroup/memory/kura/default",
        "/sys/fs/cgroup/pids/kura/default",
        "/sys/fs/cgroup/unified/kura/default",
        "/sys/fs/cgroup/kura/default",
    ] {
        let p = std::path::Path::new(base).join(id);
        assert!(!p.exists(), "cgroup {} left behind", p.display());
    }
}

#[test]
fn containers_run_exit_code_stdio_and_127() {
    require_root!();
    let Some(k) = kurad() else { return };
    let o = k.kura(&[
        "run",
        "--rm",
        "--name",
        "rc3",
        IMG,
        "sh",
        "-c",
        "echo out; echo err >&2; exit 3",
    ]);
    let (so, se) = out(&o);
    assert_eq!(o.status.code(), Some(3), "stdout {so} stderr {se}");
    assert_eq!(so, "out\n");
    assert!(se.contains("err\n"), "{se}");
    assert_nothing_left(&k, "rc3");

    // Docker's convention: a command the image does not have exits 127.
    let o = k.kura(&["run", "--rm", "--name", "nocmd", IMG, "/no/such/binary"]);
    let (_, se) = out(&o);
    assert_eq!(o.status.code(), Some(127), "{se}");
    assert!(se.contains("/no/such/binary"), "{se}");
    assert_nothing_left(&k, "nocmd");
    assert_eq!(k.ok(&["ps", "-a", "-q"]), "");

    // Without --rm the exit stays on record.
    let o = k.kura(&["run", "--name", "kept", IMG, "sh", "-c", "exit 42"]);
    assert_eq!(o.status.code(), Some(42));
    let ps = k.ok(&["ps", "-a"]);
    assert!(ps.contains("kept") && ps.contains("Exited (42)"), "{ps}");
    let v: serde_json::Value = serde_json::from_str(&k.ok(&["inspect", "kept"])).unwrap();
    assert_eq!(v["State"]["ExitCode"], 42);
    assert_eq!(v["Spec"]["process"]["args"][0], "sh");
    k.ok(&["rm", "kept"]);
    assert_nothing_left(&k, "kept");
}

#[test]
fn containers_run_stdin() {
    require_root!();
    let Some(k) = kurad() else { return };
    // Input written and closed before the task even starts must still arrive.
    let mut c = k.kura_cmd("default", &["run", "-i", "--rm", IMG, "wc", "-l"]);
    let mut ch = c
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut w = ch.stdin.take().unwrap();
    let data: String = (0..20000).map(|i| format!("line {i}\n")).collect();
    w.write_all(data.as_bytes()).unwrap();
    drop(w);
    let o = ch.wait_with_output().unwrap();
    let (so, se) = out(&o);
    assert!(o.status.success(), "{se}");
    assert_eq!(so.trim(), "20000");
    // Without -i the process gets no input at all (EOF at once).
    let o = k.kura(&["run", "--rm", IMG, "cat"]);
    assert!(o.status.success());
    assert_eq!(out(&o).0, "");
}

#[test]
fn containers_run_options_shape_the_spec() {
    require_root!();
    let Some(k) = kurad() else { return };
    let s = Scratch::new("vol");
    std::fs::write(s.join("in.txt"), "from host\n").unwrap();
    let env_file = s.join("env");
    std::fs::write(&env_file, "# comment\nFROM_FILE=yes\n").unwrap();
    let vol = format!("{}:/data:ro", s.path().display());
    let script = "echo user=$(id -u):$(id -g) cwd=$(pwd) host=$(hostname) A=$A F=$FROM_FILE; \
         cat /data/in.txt; touch /data/x 2>/dev/null && echo data-rw || echo data-ro; \
         touch /t/x && echo tmpfs-rw; touch /root-x 2>/dev/null && echo root-rw || echo root-ro; \
         grep -c . /etc/hosts >/dev/null && echo hosts; cat /etc/hostname; \
         grep CapEff /proc/self/status; cat /proc/net/dev | grep -c :";
    let o = k.kura(&[
        "run",
        "--rm",
        "-e",
        "A=1",
        "--env-file",
        env_file.to_str().unwrap(),
        "-u",
        "65534:65534",
        "-w",
        "/tmp",
        "--hostname",
        "boxy",
        "-v",
        &vol,
        "--tmpfs",
        "/t",
        "--read-only",
        "--network",
        "none",
        IMG,
        "sh",
        "-c",
        script,
    ]);
    let (so, se) = out(&o);
    assert!(o.status.success(), "{so}\n{se}");
    assert!(
        so.contains("user=65534:65534 cwd=/tmp host=boxy A=1 F=yes"),
        "{so}"
    );
    assert!(so.contains("from host"), "{so}");
    assert!(so.contains("data-ro"), "{so}");
    assert!(so.contains("tmpfs-rw"), "{so}");
    assert!(so.contains("root-ro"), "{so}");
    assert!(so.contains("hosts\nboxy\n"), "{so}");
    // A non-root user has no effective capabilities.
    assert!(so.contains("CapEff:\t0000000000000000"), "{so}");
    // --network none: loopback only.
    assert_eq!(so.lines().last().unwrap().trim(), "1", "{so}");

    // Root gets docker's default set; --cap-drop removes, --privileged gives all.
    let caps = |extra: &[&str]| -> u64 {
        let mut a = vec!["run", "--rm"];
        a.extend_from_slice(extra);
        a.extend_from_slice(&[IMG, "grep", "CapEff", "/proc/self/status"]);
        let so = k.ok(&a);
        u64::from_str_radix(so.split_whitespace().nth(1).unwrap(), 16).unwrap()
    };
    let default = caps(&[]);
    assert_eq!(default, 0xa80425fb, "docker's 14 default capabilities");
    assert_eq!(caps(&["--cap-drop", "NET_RAW"]), default & !(1 << 13));
    assert_eq!(caps(&["--cap-add", "SYS_ADMIN"]), default | (1 << 21));
    assert!(caps(&["--privileged"]).count_ones() >= 38);

    // --network host shares the host's interfaces.
    let host_ifs = kura_integration::net::stable_interfaces(
        &std::fs::read_to_string("/proc/net/dev").unwrap(),
    );
    let so = k.ok(&[
        "run",
        "--rm",
        "--network",
        "host",
        IMG,
        "cat",
        "/proc/net/dev",
    ]);
    assert_eq!(
        kura_integration::net::stable_interfaces(&so),
        host_ifs,
        "{so}"
    );

    // The default seccomp profile: keyctl is refused, with --security-opt
    // seccomp=unconfined it reaches the kernel (and fails there differently or not).
    let o = k.kura(&["run", "--rm", IMG, "cat", "/proc/self/status"]);
    assert!(out(&o).0.contains("Seccomp:\t2"), "filter mode expected");
    let o = k.kura(&[
        "run",
        "--rm",
        "--security-opt",
        "seccomp=unconfined",
        IMG,
        "cat",
        "/proc/self/status",
    ]);
    assert!(out(&o).0.contains("Seccomp:\t0"), "no filter expected");
}

#[test]
fn containers_run_resources_in_cgroups() {
    require_root!();
    let Some(k) = kurad() else { return };
    k.ok(&[
        "run",
        "-d",
        "--name",
        "res",
        "-m",
        "64m",
        "--pids-limit",
        "33",
        "--cpus",
        "0.5",
        IMG,
        "sleep",
        "1000",
    ]);
    // Read back from inside: the container's own cgroup files (cgroup namespace).
    let mem = k.ok(&[
        "exec",
        "res",
        "sh",
        "-c",
        "cat /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null || cat /sys/fs/cgroup/memory.max",
    ]);
    assert_eq!(mem.trim(), (64u64 << 20).to_string());
    let pids = k.ok(&[
        "exec",
        "res",
        "sh",
        "-c",
        "cat /sys/fs/cgroup/pids/pids.max 2>/dev/null || cat /sys/fs/cgroup/pids.max",
    ]);
    assert_eq!(pids.trim(), "33");
    let cpu = k.ok(&[
        "exec",
        "res",
        "sh",
        "-c",
        "cat /sys/fs/cgroup/cpu,cpuacct/cpu.cfs_quota_us 2>/dev/null || cat /sys/fs/cgroup/cpu/cpu.cfs_quota_us 2>/dev/null || cat /sys/fs/cgroup/cpu.max",
    ]);
    assert!(
        cpu.trim() == "50000" || cpu.trim().starts_with("50000 "),
        "{cpu}"
    );
    let st = k.ok(&["stats", "res"]);
    assert!(st.contains("res") && st.contains("64.0 MiB"), "{st}");
    k.ok(&["rm", "-f", "res"]);
    assert_nothing_left(&k, "res");
}

#[test]
fn containers_run_bad_input_leaves_nothing() {
    require_root!();
    let Some(k) = kurad() else { return };
    let cases: &[(&[&str], &str)] = &[
        (&["-m", "lots"], "\"lots\" is not a size"),
        (&["-v", "/no/such/dir:/x"], "/no/such/dir"),
        (&["-v", "relative:/x"], "relative"),
        (&["--cap-add", "CAP_FLY"], "CAP_FLY"),
        (&["-u", "nobody-here"], "nobody-here"),
        (&["--restart", "sometimes"], "sometimes"),
        (&["--network", "bridge0"], "bridge0"),
        (&["--runtime", "/no/such/runtime"], "/no/such/runtime"),
        (
            &["--security-opt", "seccomp=/no/profile.json"],
            "/no/profile.json",
        ),
    ];
    for (i, (flags, want)) in cases.iter().enumerate() {
        let name = format!("bad{i}");
        let mut a = vec!["run", "--rm", "--name", &name];
        a.extend_from_slice(flags);
        a.extend_from_slice(&[IMG, "true"]);
        let o = k.kura(&a);
        let (_, se) = out(&o);
        assert!(!o.status.success(), "{flags:?} should fail");
        assert!(
            se.contains(want),
            "{flags:?}: error should name {want}: {se}"
        );
        assert_nothing_left(&k, &name);
    }
    // An image that is in no registry: the pull fails, nothing is created.
    let se = k.fails(&[
        "run",
        "--rm",
        "--name",
        "noimg",
        "127.0.0.1:1/no/img:v1",
        "true",
    ]);
    assert!(se.contains("127.0.0.1:1"), "{se}");
    assert_nothing_left(&k, "noimg");
    // A name in use.
    k.ok(&["create", "--name", "dup", IMG, "true"]);
    let se = k.fails(&["create", "--name", "dup", IMG, "true"]);
    assert!(se.contains("dup") && se.contains("exists"), "{se}");
    k.ok(&["rm", "dup"]);
    assert_nothing_left(&k, "dup");
    assert_eq!(k.ok(&["ps", "-a", "-q"]), "");
}

#[test]
fn containers_run_with_runc() {
    require_root!();
    if which("runc").is_none() {
        skip!("runc not installed");
    }
    let Some(k) = kurad() else { return };
    let o = k.kura(&[
        "run",
        "--rm",
        "--runtime",
        "runc",
        "--name",
        "viarunc",
        IMG,
        "sh",
        "-c",
        "echo hi; exit 5",
    ]);
    assert_eq!(o.status.code(), Some(5), "{}", out(&o).1);
    assert_eq!(out(&o).0, "hi\n");
    assert_nothing_left(&k, "viarunc");
}
