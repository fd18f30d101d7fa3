//! Containers outlive kurad: kill -9 the daemon under three running containers (one
//! with a tty) and one that exits while it is down, start it again, and everything is
//! found with the right status; a shim killed -9 leaves its container stopped and
//! cleaned. Also `kura run -it` on a real pty.

use kura_integration::images::{kurad_with_busybox, Kurad};
use kura_integration::shim::{alive, wait_for, which};
use kura_integration::{require_root, skip};
use std::process::{Command, Stdio};
use std::time::Duration;

const IMG: &str = "docker.io/kura/busybox:v1";

fn kurad() -> Option<Kurad> {
    kurad_with_busybox(IMG)
}

fn state(k: &Kurad, id: &str) -> serde_json::Value {
    k.container_state(id)
}

#[test]
fn containers_survive_kurad_kill9() {
    require_root!();
    let Some(mut k) = kurad() else { return };
    let counter = "i=0; while true; do echo n$i; i=$((i+1)); sleep 0.1; done";
    k.ok(&["run", "-d", "--name", "c1", IMG, "sh", "-c", counter]);
    k.ok(&["run", "-d", "--name", "c2", IMG, "sleep", "1000"]);
    k.ok(&["run", "-d", "-t", "--name", "c3", IMG, "sh"]);
    k.ok(&[
        "run",
        "-d",
        "--name",
        "dies",
        IMG,
        "sh",
        "-c",
        "sleep 1; exit 9",
    ]);
    let pids: Vec<u64> = ["c1", "c2", "c3"]
        .iter()
        .map(|id| state(&k, id)["Pid"].as_u64().unwrap())
        .collect();

    k.kill9();
    // While kurad is down: the containers run on, one of them exits.
    std::thread::sleep(Duration::from_millis(1500));
    for p in &pids {
        assert!(alive(*p as i32), "pid {p} died with kurad");
    }
    k.spawn();

    for (id, p) in ["c1", "c2", "c3"].iter().zip(&pids) {
        let s = state(&k, id);
        assert_eq!(s["Status"], "running", "{id}: {s}");
        assert_eq!(s["Pid"].as_u64(), Some(*p), "{id}");
    }
    let s = state(&k, "dies");
    assert_eq!(s["Status"], "stopped", "{s}");
    assert_eq!(s["ExitCode"], 9, "exit while kurad was down: {s}");
    let ps = k.ok(&["ps"]);
    assert_eq!(ps.lines().count(), 4, "{ps}");

    assert_eq!(k.ok(&["exec", "c2", "echo", "hello"]), "hello\n");
    assert!(k.ok(&["exec", "-t", "c3", "tty"]).starts_with("/dev/pts/"));
    // The log has every line, with none lost across the restart.
    k.ok(&["stop", "-t", "1", "c1"]);
    let logs = k.ok(&["logs", "c1"]);
    let nums: Vec<u32> = logs
        .lines()
        .map(|l| l.trim_start_matches('n').parse().unwrap())
        .collect();
    assert!(nums.len() >= 15, "{logs}");
    assert!(
        nums.iter().enumerate().all(|(i, n)| *n == i as u32),
        "gap in log:\n{logs}"
    );
    for id in ["c2", "c3"] {
        k.ok(&["stop", "-t", "1", id]);
        assert_eq!(state(&k, id)["Status"], "stopped");
    }
}

#[test]
fn containers_dead_shim_means_stopped() {
    require_root!();
    let Some(k) = kurad() else { return };
    k.ok(&["run", "-d", "--name", "orphan", IMG, "sleep", "1000"]);
    let pid = state(&k, "orphan")["Pid"].as_u64().unwrap() as i32;
    let bundle = k.dir.join("state/containers/default/orphan");
    // The shim is the container's parent.
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let ppid: i32 = stat
        .rsplit(')')
        .next()
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let comm = std::fs::read_to_string(format!("/proc/{ppid}/comm")).unwrap();
    assert_eq!(comm.trim(), "kura-shim");
    unsafe { libc::kill(ppid, libc::SIGKILL) };
    wait_for("orphan reported stopped", Duration::from_secs(15), || {
        state(&k, "orphan")["Status"] == "stopped"
    });
    wait_for("container process gone", Duration::from_secs(10), || {
        !alive(pid)
    });
    assert!(!bundle.join("address").exists());
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains(&bundle.join("rootfs").display().to_string()));
    for c in ["memory", "pids"] {
        let p = format!("/sys/fs/cgroup/{c}/kura/default/orphan");
        assert!(!std::path::Path::new(&p).exists(), "{p} left");
    }
    // It can start again.
    k.ok(&["start", "orphan"]);
    assert_eq!(state(&k, "orphan")["Status"], "running");
}

/// `kura run -it` inside a pty that `script` provides: a tty in the container with
/// our size, raw input (Ctrl-C reaches the container's process), the exit code.
#[test]
fn containers_run_interactive_tty() {
    require_root!();
    if which("script").is_none() {
        skip!("script (util-linux) not installed");
    }
    let Some(k) = kurad() else { return };
    let kura = format!(
        "{} --address {}",
        kura_integration::bin("kura").display(),
        k.sock.display()
    );
    let run = |inner: &str, input: &str| {
        let cmd = format!("stty cols 97 rows 31; {kura} run -it --rm {IMG} {inner}");
        let mut c = Command::new("sh")
            .arg("-c")
            .arg(format!("({input}) | script -qec \"$0\" /dev/null",))
            .arg(&cmd)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let o = std::mem::take(&mut c.stdout);
        let mut s = String::new();
        std::io::Read::read_to_string(&mut o.unwrap(), &mut s).unwrap();
        let st = c.wait().unwrap();
        (st, s)
    };
    // script passes the exit status of its command on with -e.
    let (st, so) = run("sh -c 'tty; stty size; exit 4'", "sleep 2");
    assert_eq!(st.code(), Some(4), "{so}");
    assert!(so.contains("/dev/pts/0"), "{so}");
    assert!(so.contains("31 97"), "window size not passed: {so}");
    // Input typed at the terminal reaches the process; Ctrl-C (0x03) goes through
    // our raw terminal to the container's, which sends SIGINT to its foreground
    // group: the shell's trap runs (had our client taken the signal, it would have
    // died instead), then the exit code comes back.
    let (st, so) = run(
        "sh -c 'trap \"echo caught-int\" INT; read l; echo got=$l; sleep 30; exit 3'",
        "sleep 1; printf 'typed\\n'; sleep 1; printf '\\003'; sleep 2",
    );
    assert!(so.contains("got=typed"), "{so}");
    assert!(so.contains("caught-int"), "{so}");
    assert_eq!(st.code(), Some(3), "{so}");
}
