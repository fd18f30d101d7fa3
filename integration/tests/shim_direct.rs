//! kura-shim driven directly, as kurad drives it: the `start` bootstrap command, then
//! the task API over ttrpc, with events forwarded to our own TTRPC_ADDRESS. Each test
//! runs with kura-runtime and with runc, to show any runc-compatible runtime works.

use containerd_shim_protos::api;
use containerd_shim_protos::events::task::{TaskExit, TaskOOM};
use containerd_shim_protos::types::task::Status;
use kura_integration::shim::{alive, which, DirectShim};
use kura_integration::{bin, require_root, skip};
use protobuf::Message;
use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::thread::JoinHandle;
use std::time::Duration;

fn runtimes() -> Vec<String> {
    let mut v = vec![bin("kura-runtime").display().to_string()];
    if which("runc").is_some() {
        v.push("runc".into());
    } else {
        eprintln!("SKIPPED (runc part): runc not installed");
    }
    v
}

/// Reads a FIFO to EOF in a thread (the shim closes its end when the stream ends).
/// Opened after the shim has its end open: a FIFO with no writer reads as EOF.
fn reader(p: &Path) -> JoinHandle<String> {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(p)
        .unwrap();
    unsafe {
        let fl = libc::fcntl(std::os::fd::AsRawFd::as_raw_fd(&f), libc::F_GETFL);
        libc::fcntl(
            std::os::fd::AsRawFd::as_raw_fd(&f),
            libc::F_SETFL,
            fl & !libc::O_NONBLOCK,
        );
    }
    std::thread::spawn(move || {
        let mut f = f;
        let mut s = String::new();
        let _ = f.read_to_string(&mut s);
        s
    })
}

fn exit_events(s: &DirectShim) -> Vec<TaskExit> {
    s.events
        .payloads("/tasks/exit")
        .iter()
        .map(|b| TaskExit::parse_from_bytes(b).unwrap())
        .collect()
}

#[test]
fn lifecycle_stdio_wait_and_events() {
    require_root!();
    for rt in runtimes() {
        let s = DirectShim::start(
            "shim-life",
            &["sh", "-c", "read line; echo got $line; echo e >&2; exit 4"],
        );
        let (i, o, e) = (s.fifo("in"), s.fifo("out"), s.fifo("err"));
        let r = s
            .create(
                &rt,
                (
                    i.to_str().unwrap(),
                    o.to_str().unwrap(),
                    e.to_str().unwrap(),
                ),
                false,
                None,
            )
            .unwrap_or_else(|e| panic!("{rt}: create: {e:?}"));
        let out = reader(&o);
        let err = reader(&e);
        assert!(r.pid > 0);
        assert_eq!(s.state("").status.enum_value(), Ok(Status::CREATED), "{rt}");
        let st = s.client.start(DirectShim::ctx(), &s.start_req("")).unwrap();
        assert_eq!(st.pid, r.pid);
        assert_eq!(s.state("").status.enum_value(), Ok(Status::RUNNING), "{rt}");
        File::options()
            .write(true)
            .open(&i)
            .unwrap()
            .write_all(b"hello\n")
            .unwrap();
        let w = s.wait("");
        assert_eq!(w.exit_status, 4, "{rt}");
        assert!(w.exited_at.seconds > 0);
        assert_eq!(out.join().unwrap(), "got hello\n", "{rt}");
        assert_eq!(err.join().unwrap(), "e\n", "{rt}");
        let st = s.state("");
        assert_eq!(st.status.enum_value(), Ok(Status::STOPPED));
        assert_eq!(st.exit_status, 4);

        // Durable record, before anyone deletes anything.
        let rec: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(s.bundle.join("exit.json")).unwrap())
                .unwrap();
        assert_eq!(rec["exit_status"], 4);
        assert_eq!(rec["pid"], r.pid);

        let d = s.delete("").unwrap();
        assert_eq!(d.exit_status, 4);
        assert_eq!(d.pid, r.pid);
        // Events leave through their own thread; give them a moment.
        kura_integration::shim::wait_for("delete event", Duration::from_secs(5), || {
            s.events.topics().contains(&"/tasks/delete".to_string())
        });
        let topics = s.events.topics();
        let pos = |t: &str| {
            topics
                .iter()
                .position(|x| x == t)
                .unwrap_or_else(|| panic!("{t} in {topics:?}"))
        };
        assert!(pos("/tasks/create") < pos("/tasks/start"));
        assert!(pos("/tasks/start") < pos("/tasks/exit"));
        assert!(pos("/tasks/exit") < pos("/tasks/delete"));
        let ex = exit_events(&s);
        assert_eq!(ex.len(), 1);
        assert_eq!(
            (ex[0].exit_status, ex[0].pid, ex[0].id.as_str()),
            (4, r.pid, s.id.as_str())
        );
        assert!(ex[0].exited_at.seconds > 0, "exit event has a timestamp");

        s.shutdown();
        kura_integration::shim::wait_for("shim exit", Duration::from_secs(5), || {
            !alive(s.shim_pid)
        });
        assert!(
            !Path::new(s.address.trim_start_matches("unix://")).exists(),
            "socket removed"
        );
    }
}

#[test]
fn exec_pids_stats_pause_kill_close_stdin() {
    require_root!();
    for rt in runtimes() {
        let s = DirectShim::start("shim-exec", &["sleep", "300"]);
        let r = s
            .create(&rt, ("", "", ""), false, None)
            .unwrap_or_else(|e| panic!("{rt}: {e:?}"));
        s.client.start(DirectShim::ctx(), &s.start_req("")).unwrap();

        // exec with stdin closed through CloseIO: cat sees EOF and exits 0.
        let (i, o) = (s.fifo("ein"), s.fifo("eout"));
        let mut process = s.config["process"].clone();
        process["args"] = serde_json::json!(["cat"]);
        let mut spec = protobuf::well_known_types::any::Any::new();
        spec.type_url = "types.containerd.io/opencontainers/runtime-spec/1/Process".into();
        spec.value = process.to_string().into_bytes();
        let mut ex = api::ExecProcessRequest::new();
        ex.id = s.id.clone();
        ex.exec_id = "e1".into();
        ex.stdin = i.display().to_string();
        ex.stdout = o.display().to_string();
        ex.spec = protobuf::MessageField::some(spec);
        s.client.exec(DirectShim::ctx(), &ex).unwrap();
        let dup = s
            .client
            .exec(DirectShim::ctx(), &ex)
            .unwrap_err()
            .to_string();
        assert!(dup.contains("exists"), "duplicate exec id refused: {dup}");
        let epid = s
            .client
            .start(DirectShim::ctx(), &s.start_req("e1"))
            .unwrap()
            .pid;
        let out = reader(&o);
        assert!(epid > 0 && epid != r.pid);
        File::options()
            .write(true)
            .open(&i)
            .unwrap()
            .write_all(b"abc")
            .unwrap();
        std::thread::sleep(Duration::from_millis(200));
        let mut close = api::CloseIORequest::new();
        close.id = s.id.clone();
        close.exec_id = "e1".into();
        close.stdin = true;
        s.client.close_io(DirectShim::ctx(), &close).unwrap();
        assert_eq!(s.wait("e1").exit_status, 0, "{rt}");
        assert_eq!(out.join().unwrap(), "abc");
        assert_eq!(s.delete("e1").unwrap().pid, epid);
        assert!(
            s.events.topics().iter().any(|t| t == "/tasks/exec-started") || {
                std::thread::sleep(Duration::from_millis(500));
                s.events.topics().iter().any(|t| t == "/tasks/exec-started")
            }
        );

        // A running exec shows up in Pids with its exec id.
        let mut process = s.config["process"].clone();
        process["args"] = serde_json::json!(["sleep", "300"]);
        let mut spec = protobuf::well_known_types::any::Any::new();
        spec.type_url = "types.containerd.io/opencontainers/runtime-spec/1/Process".into();
        spec.value = process.to_string().into_bytes();
        let mut ex = api::ExecProcessRequest::new();
        ex.id = s.id.clone();
        ex.exec_id = "sleeper".into();
        ex.spec = protobuf::MessageField::some(spec);
        s.client.exec(DirectShim::ctx(), &ex).unwrap();
        let spid = s
            .client
            .start(DirectShim::ctx(), &s.start_req("sleeper"))
            .unwrap()
            .pid;

        let mut pr = api::PidsRequest::new();
        pr.id = s.id.clone();
        let pids = s.client.pids(DirectShim::ctx(), &pr).unwrap();
        assert!(
            pids.processes.iter().any(|p| p.pid == r.pid),
            "{rt}: {pids:?}"
        );
        let info = pids
            .processes
            .iter()
            .find(|p| p.pid == spid)
            .and_then(|p| p.info.as_ref())
            .unwrap_or_else(|| panic!("{rt}: exec {spid} without info: {pids:?}"));
        let d = containerd_shim_protos::shim::oci::ProcessDetails::parse_from_bytes(&info.value)
            .unwrap();
        assert_eq!(d.exec_id, "sleeper");

        let mut sr = api::StatsRequest::new();
        sr.id = s.id.clone();
        let stats = s
            .client
            .stats(DirectShim::ctx(), &sr)
            .unwrap()
            .stats
            .unwrap();
        match stats.type_url.as_str() {
            "io.containerd.cgroups.v1.Metrics" => {
                let m = containerd_shim_protos::cgroups::metrics::Metrics::parse_from_bytes(
                    &stats.value,
                )
                .unwrap();
                assert!(m.pids.current >= 1, "{m:?}");
                assert!(m.memory.usage.usage > 0, "{m:?}");
            }
            "io.containerd.cgroups.v2.Metrics" => {
                let m = containerd_shim_protos::cgroups_v2::metrics::Metrics::parse_from_bytes(
                    &stats.value,
                )
                .unwrap();
                assert!(m.pids.current >= 1, "{m:?}");
            }
            other => panic!("stats type {other}"),
        }

        let mut pa = api::PauseRequest::new();
        pa.id = s.id.clone();
        s.client.pause(DirectShim::ctx(), &pa).unwrap();
        assert_eq!(s.state("").status.enum_value(), Ok(Status::PAUSED), "{rt}");
        let mut re = api::ResumeRequest::new();
        re.id = s.id.clone();
        s.client.resume(DirectShim::ctx(), &re).unwrap();
        assert_eq!(s.state("").status.enum_value(), Ok(Status::RUNNING), "{rt}");

        // Delete refuses a running container; kill --all then delete works.
        assert!(s.delete("").is_err());
        s.kill("", 9, true).unwrap();
        assert_eq!(s.wait("").exit_status, 137, "{rt}");
        let err = s.kill("", 9, false).unwrap_err().to_string();
        assert!(err.contains("finished"), "{err}");
        s.delete("").unwrap();
        s.shutdown();
    }
}

#[test]
fn tty_resize_and_cri_log() {
    require_root!();
    for rt in runtimes() {
        let s = DirectShim::start("shim-tty", &["sh", "-c", "stty size; tty; echo done"]);
        let o = s.fifo("out");
        let log = s.scratch.join("logs/c.log");
        s.create(&rt, ("", o.to_str().unwrap(), ""), true, Some(&log))
            .unwrap_or_else(|e| panic!("{rt}: {e:?}"));
        let out = reader(&o);
        let mut rz = api::ResizePtyRequest::new();
        rz.id = s.id.clone();
        rz.width = 100;
        rz.height = 50;
        s.client.resize_pty(DirectShim::ctx(), &rz).unwrap();
        s.client.start(DirectShim::ctx(), &s.start_req("")).unwrap();
        assert_eq!(s.wait("").exit_status, 0, "{rt}");
        let text = out.join().unwrap();
        assert!(text.contains("50 100"), "{rt}: {text:?}");
        assert!(text.contains("/dev/pts/"), "{rt}: {text:?}");
        let logged = std::fs::read_to_string(&log).unwrap();
        let lines: Vec<&str> = logged.lines().collect();
        assert!(
            lines.iter().any(|l| l.ends_with(" stdout F 50 100")),
            "{rt}: {logged:?}"
        );
        assert!(
            lines.iter().all(|l| l.split(' ').nth(1) == Some("stdout")),
            "{logged:?}"
        );
        s.delete("").unwrap();
        s.shutdown();
    }
}

#[test]
fn oom_kill_is_published() {
    require_root!();
    let rt = bin("kura-runtime").display().to_string();
    let mut s = DirectShim::start(
        "shim-oom",
        &[
            "sh",
            "-c",
            "x=$(head -c 400000000 /dev/zero | tr '\\0' a); echo survived",
        ],
    );
    s.config["linux"]["resources"] =
        serde_json::json!({"memory": {"limit": 16 * 1024 * 1024, "swap": 16 * 1024 * 1024}});
    if let Err(e) = s.create(&rt, ("", "", ""), false, None) {
        skip!("memory limit not available here: {e:?}");
    }
    s.client.start(DirectShim::ctx(), &s.start_req("")).unwrap();
    assert_eq!(s.wait("").exit_status, 137);
    kura_integration::shim::wait_for("OOM event", Duration::from_secs(5), || {
        !s.events.payloads("/tasks/oom").is_empty()
    });
    let ev = TaskOOM::parse_from_bytes(&s.events.payloads("/tasks/oom")[0]).unwrap();
    assert_eq!(ev.container_id, s.id);
    s.delete("").unwrap();
    s.shutdown();
}

/// Runs the `delete` bootstrap command for a shim that is gone; returns its answer.
fn delete_command(s: &DirectShim) -> api::DeleteResponse {
    let out = std::process::Command::new(bin("kura-shim"))
        .args([
            "-namespace",
            &s.ns,
            "-address",
            "/run/kura/kura.sock",
            "-id",
            &s.id,
        ])
        .arg("-bundle")
        .arg(&s.bundle)
        .arg("delete")
        .current_dir(&s.bundle)
        .env("KURA_SHIM_RUN_DIR", s.scratch.join("run"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "delete: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    api::DeleteResponse::parse_from_bytes(&out.stdout).unwrap()
}

#[test]
fn delete_command_cleans_up_after_a_killed_shim() {
    require_root!();
    let rt = bin("kura-runtime").display().to_string();

    // The container outlives a killed shim; `delete` kills it and reports 137.
    let s = DirectShim::start("shim-dead", &["sleep", "300"]);
    let pid = s.create(&rt, ("", "", ""), false, None).unwrap().pid as i32;
    s.client.start(DirectShim::ctx(), &s.start_req("")).unwrap();
    unsafe { libc::kill(s.shim_pid, libc::SIGKILL) };
    kura_integration::shim::wait_for("shim death", Duration::from_secs(5), || !alive(s.shim_pid));
    assert!(alive(pid), "container outlives its shim");
    let d = delete_command(&s);
    assert_eq!((d.exit_status, d.pid as i32), (137, pid));
    kura_integration::shim::wait_for("container gone", Duration::from_secs(5), || !alive(pid));
    let st = std::process::Command::new(&rt)
        .arg("--root")
        .arg(&s.runtime_root)
        .args(["state", &s.id])
        .output()
        .unwrap();
    assert!(!st.status.success(), "runtime state removed");

    // A shim that recorded the exit before dying: `delete` reports the real status.
    let s = DirectShim::start("shim-dead-exit", &["sh", "-c", "exit 9"]);
    s.create(&rt, ("", "", ""), false, None).unwrap();
    s.client.start(DirectShim::ctx(), &s.start_req("")).unwrap();
    assert_eq!(s.wait("").exit_status, 9);
    unsafe { libc::kill(s.shim_pid, libc::SIGKILL) };
    kura_integration::shim::wait_for("shim death", Duration::from_secs(5), || !alive(s.shim_pid));
    let d = delete_command(&s);
    assert_eq!(d.exit_status, 9);
    assert!(d.exited_at.seconds > 0);
}

#[test]
fn shim_without_a_container_gives_up() {
    require_root!();
    // A manager that dies between `start` and Create must not leave a shim forever.
    let s = DirectShim::start_env("shim-idle", &["true"], &[("KURA_SHIM_IDLE_EXIT", "1")]);
    assert!(alive(s.shim_pid));
    kura_integration::shim::wait_for("idle shim to exit", Duration::from_secs(10), || {
        !alive(s.shim_pid)
    });
    assert!(
        !Path::new(s.address.trim_start_matches("unix://")).exists(),
        "socket removed"
    );
}

#[test]
fn exec_with_a_tty() {
    require_root!();
    for rt in runtimes() {
        let s = DirectShim::start("shim-exec-tty", &["sleep", "300"]);
        s.create(&rt, ("", "", ""), false, None)
            .unwrap_or_else(|e| panic!("{rt}: {e:?}"));
        s.client.start(DirectShim::ctx(), &s.start_req("")).unwrap();
        let o = s.fifo("tout");
        let mut process = s.config["process"].clone();
        process["args"] = serde_json::json!(["sh", "-c", "tty; exit 2"]);
        process["terminal"] = serde_json::json!(true);
        let mut spec = protobuf::well_known_types::any::Any::new();
        spec.type_url = "types.containerd.io/opencontainers/runtime-spec/1/Process".into();
        spec.value = process.to_string().into_bytes();
        let mut ex = api::ExecProcessRequest::new();
        ex.id = s.id.clone();
        ex.exec_id = "t1".into();
        ex.terminal = true;
        ex.stdout = o.display().to_string();
        ex.spec = protobuf::MessageField::some(spec);
        s.client.exec(DirectShim::ctx(), &ex).unwrap();
        s.client
            .start(DirectShim::ctx(), &s.start_req("t1"))
            .unwrap_or_else(|e| panic!("{rt}: exec start: {e:?}"));
        let out = reader(&o);
        assert_eq!(s.wait("t1").exit_status, 2, "{rt}");
        let text = out.join().unwrap();
        assert!(text.contains("/dev/pts/"), "{rt}: {text:?}");
        s.kill("", 9, false).unwrap();
        s.wait("");
        s.delete("").unwrap();
        s.shutdown();
    }
}

#[test]
fn without_a_pid_namespace_leftovers_die_with_the_init() {
    require_root!();
    for rt in runtimes() {
        let mut s = DirectShim::start(
            "shim-nopidns",
            &[
                "sh",
                "-c",
                "sleep 300 & echo $! > /tmp/bg; sleep 0.3; exit 3",
            ],
        );
        let ns = s.config["linux"]["namespaces"].as_array().unwrap().clone();
        s.config["linux"]["namespaces"] =
            serde_json::Value::Array(ns.into_iter().filter(|n| n["type"] != "pid").collect());
        s.create(&rt, ("", "", ""), false, None)
            .unwrap_or_else(|e| panic!("{rt}: {e:?}"));
        s.client.start(DirectShim::ctx(), &s.start_req("")).unwrap();
        assert_eq!(s.wait("").exit_status, 3, "{rt}");
        let bg: i32 = std::fs::read_to_string(s.bundle.join("rootfs/tmp/bg"))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        kura_integration::shim::wait_for(
            "background process killed",
            Duration::from_secs(5),
            || !alive(bg),
        );
        s.delete("").unwrap();
        s.shutdown();
    }
}

#[test]
fn a_client_that_stops_reading_does_not_stop_a_logged_container() {
    require_root!();
    let rt = bin("kura-runtime").display().to_string();
    // 1 MB of output into a FIFO nobody reads (a manager killed while attached).
    let s = DirectShim::start(
        "shim-stall",
        &[
            "sh",
            "-c",
            "head -c 1000000 /dev/zero | tr '\\0' x; echo; echo end",
        ],
    );
    let o = s.fifo("out");
    let log = s.scratch.join("c.log");
    s.create(&rt, ("", o.to_str().unwrap(), ""), false, Some(&log))
        .unwrap();
    s.client.start(DirectShim::ctx(), &s.start_req("")).unwrap();
    // Without the defence the container blocks on its full stdout pipe and this
    // wait never returns.
    assert_eq!(s.wait("").exit_status, 0);
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(
        logged.lines().any(|l| l.ends_with(" stdout F end")),
        "log complete"
    );
    let xs: usize = logged
        .lines()
        .filter_map(|l| l.splitn(4, ' ').nth(3))
        .map(|t| t.bytes().filter(|b| *b == b'x').count())
        .sum();
    assert_eq!(xs, 1_000_000, "every byte logged");
    s.delete("").unwrap();
    s.shutdown();
}
