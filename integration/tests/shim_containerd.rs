//! containerd 1.6 running containers through kura-shim: `ctr run --runtime
//! io.containerd.kura.v2`, exec, kill, delete, container rm, on a private containerd.

use kura_integration::shim::{alive, containerd_missing, read_pid, wait_for, Containerd, RUNTIME};
use kura_integration::{require_root, skip};
use std::time::Duration;

#[test]
fn ctr_run_exec_kill_delete_through_kura_shim() {
    require_root!();
    if let Some(why) = containerd_missing() {
        skip!("{why}");
    }
    let ctd = Containerd::start("shim-ctr", &[]);
    let image = ctd.import_busybox();
    let id = "sleeper";
    ctd.ok(&["run", "-d", "--runtime", RUNTIME, image, id, "sleep", "300"]);
    assert_eq!(ctd.task_status(id), "RUNNING");
    let bundle = ctd.bundle(id);
    let shim_pid = read_pid(&bundle.join("shim.pid"));
    assert!(alive(shim_pid), "shim.pid names a live shim");
    let cmdline = std::fs::read_to_string(format!("/proc/{shim_pid}/cmdline")).unwrap();
    assert!(
        cmdline.contains("kura-shim"),
        "containerd started kura-shim: {cmdline}"
    );

    // exec: output and exit code come back through the shim.
    let o = ctd.ctr(&[
        "task",
        "exec",
        "--exec-id",
        "e1",
        id,
        "sh",
        "-c",
        "echo hi from exec; exit 3",
    ]);
    assert_eq!(
        o.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&o.stdout), "hi from exec\n");

    let ps = ctd.ok(&["task", "ps", id]);
    let init = read_pid(&bundle.join("init.pid"));
    assert!(
        ps.contains(&init.to_string()),
        "task ps lists the init {init}: {ps}"
    );

    ctd.ok(&["task", "pause", id]);
    assert_eq!(ctd.task_status(id), "PAUSED");
    ctd.ok(&["task", "resume", id]);
    assert_eq!(ctd.task_status(id), "RUNNING");
    let metrics = ctd.ok(&["task", "metrics", id]);
    assert!(
        metrics.contains("pids.current") || metrics.contains("memory"),
        "metrics: {metrics}"
    );

    ctd.ok(&["task", "kill", "-s", "SIGKILL", id]);
    wait_for("task to stop", Duration::from_secs(10), || {
        ctd.task_status(id) == "STOPPED"
    });
    let exit = std::fs::read_to_string(bundle.join("exit.json")).unwrap();
    assert!(exit.contains("\"exit_status\":137"), "exit record: {exit}");

    ctd.ok(&["task", "delete", id]);
    ctd.ok(&["container", "rm", id]);
    wait_for("shim to exit", Duration::from_secs(10), || !alive(shim_pid));
    assert!(!alive(init), "container init gone");
    assert!(!bundle.exists(), "containerd removed the bundle");
    assert!(ctd.ok(&["container", "ls", "-q"]).trim().is_empty());
}

#[test]
fn ctr_run_rm_passes_output_and_exit_code() {
    require_root!();
    if let Some(why) = containerd_missing() {
        skip!("{why}");
    }
    let ctd = Containerd::start("shim-ctr-rm", &[]);
    let image = ctd.import_busybox();
    let o = ctd.ctr(&[
        "run",
        "--rm",
        "--runtime",
        RUNTIME,
        image,
        "once",
        "sh",
        "-c",
        "echo out; echo err >&2; exit 7",
    ]);
    assert_eq!(
        o.status.code(),
        Some(7),
        "{}\n{}",
        String::from_utf8_lossy(&o.stderr),
        kura_integration::images::tail(&ctd.log(), 30)
    );
    assert_eq!(String::from_utf8_lossy(&o.stdout), "out\n");
    assert!(String::from_utf8_lossy(&o.stderr).contains("err"));
    assert!(
        ctd.ok(&["container", "ls", "-q"]).trim().is_empty(),
        "--rm removed it"
    );
}

#[test]
fn ctr_run_with_runc_as_the_shims_runtime() {
    require_root!();
    if let Some(why) = containerd_missing() {
        skip!("{why}");
    }
    if kura_integration::shim::which("runc").is_none() {
        skip!("runc not installed");
    }
    // containerd passes its environment to the shims it starts.
    let ctd = Containerd::start("shim-ctr-runc", &[("KURA_SHIM_RUNTIME", "runc")]);
    let image = ctd.import_busybox();
    let o = ctd.ctr(&[
        "run",
        "--rm",
        "--runtime",
        RUNTIME,
        image,
        "viarunc",
        "sh",
        "-c",
        "echo via runc; exit 5",
    ]);
    assert_eq!(
        o.status.code(),
        Some(5),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&o.stdout), "via runc\n");
}
