//! create / start / state / kill / delete / run / pause / resume / ps / list / events /
//! update against the real kernel.

use kura_integration::require_root;
use kura_integration::runtime::{cgroup_exists, Rt};
use serde_json::Value;

#[test]
fn run_passes_the_exit_code_on() {
    require_root!();
    let mut rt = Rt::new("run-exit");
    let id = rt.id("exit");
    rt.args(&["sh", "-c", "echo out; echo err >&2; exit 7"]);
    let (code, out, err) = rt.run(&id);
    assert_eq!(code, 7, "stderr: {err}");
    assert_eq!(out, "out\n");
    assert!(err.contains("err"));
    assert!(
        !rt.state_dir(&id).exists(),
        "run without --keep deletes the container"
    );
    assert!(!cgroup_exists(&id), "cgroup removed after run");
}

#[test]
fn killed_process_reports_128_plus_signal() {
    require_root!();
    let mut rt = Rt::new("run-sig");
    let id = rt.id("sig");
    rt.args(&["sleep", "300"]);
    rt.write_config(&id);
    let b = rt.bundle.to_string_lossy().into_owned();
    let mut child = rt
        .cmd()
        .args(["run", "--bundle", &b, &id])
        .stdin(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // pid 1 of a namespace ignores signals it has no handler for, except from outside.
    for _ in 0..500 {
        if rt.rt(&["state", &id]).status.success() && rt.status(&id) == "running" {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    rt.ok(&["kill", &id, "KILL"]);
    let st = child.wait().unwrap();
    assert_eq!(st.code(), Some(137));
}

#[test]
fn full_lifecycle() {
    require_root!();
    let mut rt = Rt::new("lifecycle");
    let id = rt.id("life");
    rt.args(&["sleep", "300"]);
    let pidfile = rt.scratch.join("pid");
    rt.write_config(&id);
    let b = rt.bundle.to_string_lossy().into_owned();
    rt.ok(&[
        "create",
        "--bundle",
        &b,
        "--pid-file",
        pidfile.to_str().unwrap(),
        &id,
    ]);

    let st = rt.state(&id);
    assert_eq!(st["status"], "created");
    assert_eq!(st["id"], id.as_str());
    assert_eq!(st["ociVersion"], "1.3.0");
    let pid = st["pid"].as_i64().unwrap();
    assert!(pid > 0);
    assert_eq!(std::fs::read_to_string(&pidfile).unwrap(), pid.to_string());
    assert!(cgroup_exists(&id), "cgroup exists while the container does");
    // The process must not have run yet: it is blocked before execve.
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap_or_default();
    assert!(
        !exe.to_string_lossy().contains("sleep"),
        "process.args ran before start: {exe:?}"
    );

    rt.ok(&["start", &id]);
    assert_eq!(rt.status(&id), "running");
    let out = rt.rt(&["start", &id]);
    assert!(
        !out.status.success(),
        "start of a running container must fail"
    );

    // delete without --force refuses a live container and leaves it alone.
    let out = rt.rt(&["delete", &id]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not stopped"));
    assert_eq!(rt.status(&id), "running");

    rt.ok(&["pause", &id]);
    assert_eq!(rt.status(&id), "paused");
    rt.ok(&["resume", &id]);
    assert_eq!(rt.status(&id), "running");

    let pids: Vec<i64> = serde_json::from_str(&rt.ok(&["ps", "--format", "json", &id])).unwrap();
    assert_eq!(pids, vec![pid]);

    let list: Value = serde_json::from_str(&rt.ok(&["list", "--format", "json"])).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(list[0]["id"], id.as_str());
    assert_eq!(list[0]["status"], "running");

    rt.ok(&["kill", &id, "KILL"]);
    rt.wait_status(&id, "stopped");
    assert_eq!(rt.state(&id)["pid"], 0);
    let out = rt.rt(&["kill", &id, "KILL"]);
    assert!(
        !out.status.success(),
        "kill of a stopped container is an error"
    );

    rt.ok(&["delete", &id]);
    assert!(!rt.state_dir(&id).exists());
    assert!(!cgroup_exists(&id));
    let out = rt.rt(&["state", &id]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("does not exist"));
}

#[test]
fn delete_force_kills_a_running_container() {
    require_root!();
    let mut rt = Rt::new("delete-force");
    let id = rt.id("force");
    rt.args(&["sleep", "300"]);
    rt.create_ok(&id);
    rt.ok(&["start", &id]);
    let pid = rt.state(&id)["pid"].as_i64().unwrap();
    rt.ok(&["delete", "--force", &id]);
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists() || {
            let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            s.contains(") Z")
        }
    );
    assert!(!rt.state_dir(&id).exists());
    assert!(!cgroup_exists(&id));
}

#[test]
fn kill_accepts_names_and_numbers_and_all() {
    require_root!();
    let mut rt = Rt::new("kill");
    for (i, sig) in ["SIGUSR1", "USR1", "10"].iter().enumerate() {
        let id = rt.id(&format!("kill{i}"));
        // The shell exits 42 when USR1 arrives.
        rt.args(&[
            "sh",
            "-c",
            "trap 'exit 42' USR1; while true; do sleep 0.05; done",
        ]);
        assert!(rt.create(&id).status.success());
        rt.ok(&["start", &id]);
        std::thread::sleep(std::time::Duration::from_millis(100));
        rt.ok(&["kill", &id, sig]);
        rt.wait_status(&id, "stopped");
        rt.ok(&["delete", &id]);
    }
    let id = rt.id("killall");
    rt.args(&["sh", "-c", "sleep 300 & sleep 300"]);
    assert!(rt.create(&id).status.success());
    rt.ok(&["start", &id]);
    rt.ok(&["kill", "--all", &id, "KILL"]);
    rt.wait_status(&id, "stopped");
    let bad = rt.rt(&["kill", &id, "NOTASIGNAL"]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("unknown signal"));
}

#[test]
fn events_stats_and_update() {
    require_root!();
    let mut rt = Rt::new("events");
    let id = rt.id("ev");
    rt.args(&["sleep", "300"]);
    assert!(rt.create(&id).status.success());
    rt.ok(&["start", &id]);
    let ev: Value = serde_json::from_str(rt.ok(&["events", "--stats", &id]).trim()).unwrap();
    assert_eq!(ev["type"], "stats");
    assert!(ev["data"]["pids"]["current"].as_u64().unwrap() >= 1, "{ev}");
    assert!(ev["data"]["memory"].is_object(), "{ev}");

    rt.ok(&["update", "--pids-limit", "42", &id]);
    let ev: Value = serde_json::from_str(rt.ok(&["events", "--stats", &id]).trim()).unwrap();
    assert_eq!(ev["data"]["pids"]["limit"], 42, "{ev}");
    let res = rt.scratch.join("res.json");
    std::fs::write(&res, r#"{"pids": {"limit": 17}}"#).unwrap();
    rt.ok(&["update", "-r", res.to_str().unwrap(), &id]);
    let ev: Value = serde_json::from_str(rt.ok(&["events", "--stats", &id]).trim()).unwrap();
    assert_eq!(ev["data"]["pids"]["limit"], 17, "{ev}");
    rt.ok(&["delete", "--force", &id]);
}

#[test]
fn spec_and_features() {
    require_root!();
    let rt = Rt::new("spec");
    let dir = rt.scratch.join("specdir");
    std::fs::create_dir_all(&dir).unwrap();
    rt.ok(&["spec", "--bundle", dir.to_str().unwrap()]);
    let c: Value =
        serde_json::from_slice(&std::fs::read(dir.join("config.json")).unwrap()).unwrap();
    assert_eq!(c["process"]["args"][0], "sh");
    let again = rt.rt(&["spec", "--bundle", dir.to_str().unwrap()]);
    assert!(!again.status.success(), "spec refuses to overwrite");
    std::fs::remove_file(dir.join("config.json")).unwrap();
    rt.ok(&["spec", "--rootless", "--bundle", dir.to_str().unwrap()]);
    let c: Value =
        serde_json::from_slice(&std::fs::read(dir.join("config.json")).unwrap()).unwrap();
    assert!(c["linux"]["namespaces"]
        .as_array()
        .unwrap()
        .iter()
        .any(|n| n["type"] == "user"));

    let f: Value = serde_json::from_str(&rt.ok(&["features"])).unwrap();
    let ns: Vec<&str> = f["linux"]["namespaces"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    for want in [
        "cgroup", "ipc", "mount", "network", "pid", "time", "user", "uts",
    ] {
        assert!(ns.contains(&want), "features lacks namespace {want}");
    }
    assert_eq!(f["linux"]["seccomp"]["enabled"], true);
    assert!(f["linux"]["capabilities"]
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c == "CAP_SYS_ADMIN"));
    assert!(f["mountOptions"]
        .as_array()
        .unwrap()
        .iter()
        .any(|o| o == "rro"));
}
