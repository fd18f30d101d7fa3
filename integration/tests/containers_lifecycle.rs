//! A detached container's life through the CLI: ps, logs (CRI format, --tail,
//! --timestamps, -f), exec, top, stats, pause/unpause, kill, wait, stop, rm; create +
//! start -a; attach; events; restart policies.

use kura_integration::images::{kurad_with_busybox, Kurad};
use kura_integration::require_root;
use kura_integration::shim::wait_for;
use std::io::{BufRead, BufReader, Write};
use std::process::Stdio;
use std::time::{Duration, Instant};

const IMG: &str = "docker.io/kura/busybox:v1";

fn kurad() -> Option<Kurad> {
    kurad_with_busybox(IMG)
}

fn status(k: &Kurad, id: &str) -> serde_json::Value {
    k.container_state(id)
}

#[test]
fn containers_detached_lifecycle() {
    require_root!();
    let Some(k) = kurad() else { return };
    let id = k.ok(&[
        "run",
        "-d",
        "--name",
        "ticker",
        IMG,
        "sh",
        "-c",
        "trap 'echo got-usr1' USR1; i=0; while true; do echo tick $i; i=$((i+1)); sleep 0.2; done",
    ]);
    assert_eq!(id.trim(), "ticker");
    let ps = k.ok(&["ps"]);
    assert!(ps.contains("ticker") && ps.contains("Up "), "{ps}");
    assert_eq!(k.ok(&["ps", "-q"]).trim(), "ticker");
    let v: serde_json::Value = serde_json::from_str(&k.ok(&["ps", "--format", "json"])).unwrap();
    assert_eq!(v[0]["State"]["Status"], "running");
    let pid = v[0]["State"]["Pid"].as_u64().unwrap();
    assert!(pid > 0);

    wait_for("three ticks", Duration::from_secs(10), || {
        k.ok(&["logs", "ticker"]).contains("tick 2\n")
    });
    // The log file is CRI's format: time, stream, tag, line.
    let raw = std::fs::read_to_string(k.root.join("logs/default/ticker.log")).unwrap();
    let first = raw.lines().next().unwrap();
    let f: Vec<&str> = first.splitn(4, ' ').collect();
    assert!(f[0].contains('T') && f[0].ends_with('Z'), "{first}");
    assert_eq!(&f[1..], &["stdout", "F", "tick 0"], "{first}");
    let tail = k.ok(&["logs", "--tail", "1", "ticker"]);
    assert_eq!(tail.lines().count(), 1, "{tail}");
    assert!(tail.starts_with("tick "), "{tail}");
    let ts = k.ok(&["logs", "-t", "--tail", "1", "ticker"]);
    assert!(ts.split(' ').next().unwrap().ends_with('Z'), "{ts}");
    // logs -f: a line written after we started following arrives.
    let mut f = k
        .kura_cmd("default", &["logs", "-f", "--tail", "0", "ticker"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut r = BufReader::new(f.stdout.take().unwrap());
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    assert!(line.starts_with("tick "), "{line}");
    let _ = f.kill();
    let _ = f.wait();

    // exec: exit code, env, workdir, user, stdin.
    let o = k.kura(&["exec", "ticker", "sh", "-c", "exit 7"]);
    assert_eq!(o.status.code(), Some(7));
    let so = k.ok(&[
        "exec",
        "-e",
        "X=y",
        "-w",
        "/etc",
        "-u",
        "65534",
        "ticker",
        "sh",
        "-c",
        "echo $X $(pwd) $(id -u)",
    ]);
    assert_eq!(so, "y /etc 65534\n");
    let mut c = k.kura_cmd("default", &["exec", "-i", "ticker", "tr", "a-z", "A-Z"]);
    let mut ch = c
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    ch.stdin.take().unwrap().write_all(b"shout\n").unwrap();
    let o = ch.wait_with_output().unwrap();
    assert_eq!(String::from_utf8_lossy(&o.stdout), "SHOUT\n");
    let o = k.kura(&["exec", "ticker", "/no/such/tool"]);
    assert_eq!(o.status.code(), Some(127));

    let top = k.ok(&["top", "ticker"]);
    assert!(
        top.contains(&pid.to_string()) && top.contains("sleep"),
        "{top}"
    );
    let st = k.ok(&["stats", "ticker"]);
    assert!(st.lines().nth(1).unwrap().starts_with("ticker"), "{st}");

    k.ok(&["pause", "ticker"]);
    assert_eq!(status(&k, "ticker")["Status"], "paused");
    let n1 = k.ok(&["logs", "ticker"]).lines().count();
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(
        k.ok(&["logs", "ticker"]).lines().count(),
        n1,
        "paused yet logging"
    );
    k.ok(&["unpause", "ticker"]);
    assert_eq!(status(&k, "ticker")["Status"], "running");

    k.ok(&["kill", "-s", "USR1", "ticker"]);
    wait_for("the trap", Duration::from_secs(10), || {
        k.ok(&["logs", "ticker"]).contains("got-usr1")
    });

    // stop: SIGTERM is trapped-by-default-ignored by a pid-1 shell, so the timeout
    // runs out and SIGKILL ends it.
    let t = Instant::now();
    k.ok(&["stop", "-t", "1", "ticker"]);
    assert!(t.elapsed() >= Duration::from_millis(900));
    let s = status(&k, "ticker");
    assert_eq!(s["Status"], "stopped");
    assert_eq!(s["ExitCode"], 137);
    let o = k.kura(&["wait", "ticker"]);
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "137");
    // The log outlives the process.
    assert!(k.ok(&["logs", "ticker"]).contains("tick 0\n"));
    // A stopped container starts again.
    k.ok(&["start", "ticker"]);
    assert_eq!(status(&k, "ticker")["Status"], "running");
    let se = k.fails(&["rm", "ticker"]);
    assert!(se.contains("running"), "{se}");
    k.ok(&["rm", "-f", "ticker"]);
    assert_eq!(k.ok(&["ps", "-a", "-q"]), "");
}

#[test]
fn containers_create_start_attach_wait() {
    require_root!();
    let Some(k) = kurad() else { return };
    k.ok(&[
        "create",
        "--name",
        "later",
        IMG,
        "sh",
        "-c",
        "echo started; exit 4",
    ]);
    assert_eq!(status(&k, "later")["Status"], "created");
    let o = k.kura(&["start", "-a", "later"]);
    assert_eq!(o.status.code(), Some(4));
    assert_eq!(String::from_utf8_lossy(&o.stdout), "started\n");

    // wait blocks until the exit and prints the code.
    k.ok(&[
        "run",
        "-d",
        "--name",
        "w",
        IMG,
        "sh",
        "-c",
        "sleep 0.5; exit 6",
    ]);
    let o = k.kura(&["wait", "w"]);
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "6");

    // attach: the client that started the container went away (its terminal closed);
    // the container runs on, and `attach` gets its later output and its exit code.
    let mut run = k
        .kura_cmd(
            "default",
            &[
                "run",
                "--name",
                "att",
                IMG,
                "sh",
                "-c",
                "sleep 2; echo late-line; exit 3",
            ],
        )
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    wait_for("att running", Duration::from_secs(10), || {
        k.kura(&["inspect", "att"]).status.success() && status(&k, "att")["Status"] == "running"
    });
    let _ = run.kill();
    let _ = run.wait();
    assert_eq!(status(&k, "att")["Status"], "running");
    let o = k.kura(&["attach", "att"]);
    assert_eq!(o.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&o.stdout).contains("late-line"));
}

#[test]
fn containers_events() {
    require_root!();
    let Some(k) = kurad() else { return };
    let mut ev = k
        .kura_cmd("default", &["events", "--filter", "/tasks"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut r = BufReader::new(ev.stdout.take().unwrap());
    // Subscribed once the daemon has the stream; a short wait is enough.
    std::thread::sleep(Duration::from_millis(300));
    k.ok(&["run", "--rm", "--name", "ev", IMG, "true"]);
    let mut seen = Vec::new();
    let end = Instant::now() + Duration::from_secs(10);
    while Instant::now() < end && !seen.iter().any(|l: &String| l.contains("/tasks/exit")) {
        let mut line = String::new();
        if r.read_line(&mut line).unwrap() == 0 {
            break;
        }
        seen.push(line);
    }
    let _ = ev.kill();
    let _ = ev.wait();
    let all = seen.concat();
    assert!(all.contains("/tasks/start") && all.contains("ev"), "{all}");
    assert!(all.contains("/tasks/exit"), "{all}");
    assert!(!all.contains("/containers/"), "filtered out:\n{all}");
}

#[test]
fn containers_restart_policies() {
    require_root!();
    let Some(k) = kurad() else { return };
    k.ok(&[
        "run",
        "-d",
        "--name",
        "onfail",
        "--restart",
        "on-failure:2",
        IMG,
        "sh",
        "-c",
        "echo run; exit 2",
    ]);
    k.ok(&[
        "run",
        "-d",
        "--name",
        "okexit",
        "--restart",
        "on-failure",
        IMG,
        "true",
    ]);
    k.ok(&[
        "run",
        "-d",
        "--name",
        "always",
        "--restart",
        "always",
        IMG,
        "sh",
        "-c",
        "echo up; sleep 0.2",
    ]);
    // on-failure:2: the first run and two restarts, then it stays down.
    wait_for("three runs", Duration::from_secs(30), || {
        k.ok(&["logs", "onfail"]).matches("run\n").count() == 3
            && status(&k, "onfail")["Status"] == "stopped"
    });
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(k.ok(&["logs", "onfail"]).matches("run\n").count(), 3);
    let v: serde_json::Value = serde_json::from_str(&k.ok(&["inspect", "onfail"])).unwrap();
    assert_eq!(v["RestartCount"], 2, "{v}");
    assert_eq!(v["State"]["ExitCode"], 2);
    // A clean exit is no failure.
    assert_eq!(status(&k, "okexit")["Status"], "stopped");
    // always: restarted after each exit, until the user stops it.
    wait_for("restarts", Duration::from_secs(30), || {
        k.ok(&["logs", "always"]).matches("up\n").count() >= 3
    });
    k.ok(&["stop", "-t", "1", "always"]);
    let n = k.ok(&["logs", "always"]).matches("up\n").count();
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(k.ok(&["logs", "always"]).matches("up\n").count(), n);
    assert_eq!(status(&k, "always")["Status"], "stopped");
}

/// `kura stop` landing while the restart policy is bringing the container back (before,
/// during or after its start) is never lost: the container stays down. Each round's
/// stop lands at another point of the cycle.
#[test]
fn containers_stop_wins_over_restart() {
    require_root!();
    let Some(k) = kurad() else { return };
    k.ok(&[
        "run",
        "-d",
        "--name",
        "bouncy",
        "--restart",
        "always",
        IMG,
        "sh",
        "-c",
        "echo up",
    ]);
    for round in 0..12u64 {
        if round > 0 {
            k.ok(&["start", "bouncy"]);
        }
        std::thread::sleep(Duration::from_millis(round * 25));
        k.ok(&["stop", "-t", "1", "bouncy"]);
        let n = k.ok(&["logs", "bouncy"]).matches("up\n").count();
        // Longer than the policy's first delays (100, 200, 400 ms after a user start).
        std::thread::sleep(Duration::from_millis(700));
        assert_eq!(
            k.ok(&["logs", "bouncy"]).matches("up\n").count(),
            n,
            "round {round}: restarted after stop"
        );
        assert_eq!(status(&k, "bouncy")["Status"], "stopped", "round {round}");
    }
}
