//! A container outlives its manager: kill -9 containerd while the container runs; the
//! shim and the container keep running, the exit status is recorded durably when the
//! container exits, and a restarted containerd reports and deletes the task.

use kura_integration::shim::{alive, containerd_missing, read_pid, wait_for, Containerd, RUNTIME};
use kura_integration::{require_root, skip};
use std::time::Duration;

#[test]
fn exit_status_survives_a_dead_containerd() {
    require_root!();
    if let Some(why) = containerd_missing() {
        skip!("{why}");
    }
    let mut ctd = Containerd::start("shim-survive", &[]);
    let image = ctd.import_busybox();
    let id = "survivor";
    ctd.ok(&[
        "run",
        "-d",
        "--runtime",
        RUNTIME,
        image,
        id,
        "sh",
        "-c",
        "trap 'exit 7' TERM; while true; do sleep 0.1; done",
    ]);
    // A second container just keeps running through the restart.
    let keep = "keeper";
    ctd.ok(&[
        "run",
        "-d",
        "--runtime",
        RUNTIME,
        image,
        keep,
        "sleep",
        "300",
    ]);
    let bundle = ctd.bundle(id);
    let shim = read_pid(&bundle.join("shim.pid"));
    let init = read_pid(&bundle.join("init.pid"));
    assert!(alive(shim) && alive(init));

    let containerd = ctd.pid();
    ctd.kill9();
    assert!(!alive(containerd));
    std::thread::sleep(Duration::from_millis(300));
    assert!(alive(shim), "shim outlives containerd");
    assert!(alive(init), "container outlives containerd");
    assert!(!bundle.join("exit.json").exists());

    // The container exits while nobody manages it.
    unsafe { libc::kill(init, libc::SIGTERM) };
    wait_for("exit record", Duration::from_secs(10), || {
        bundle.join("exit.json").exists()
    });
    let rec: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(bundle.join("exit.json")).unwrap()).unwrap();
    assert_eq!(rec["exit_status"], 7, "{rec}");
    assert_eq!(rec["pid"], init, "{rec}");
    assert!(rec["exited_at"].as_str().unwrap().ends_with('Z'), "{rec}");
    assert!(
        alive(shim),
        "shim waits for its manager after the container exits"
    );

    // containerd comes back, reconnects to the shim, and sees the task stopped.
    ctd.spawn();
    wait_for("STOPPED after restart", Duration::from_secs(10), || {
        ctd.task_status(id) == "STOPPED"
    });
    ctd.ok(&["task", "delete", id]);
    ctd.ok(&["container", "rm", id]);
    wait_for("shim to exit", Duration::from_secs(10), || !alive(shim));

    // The running one is still managed: exec, kill, delete.
    assert_eq!(ctd.task_status(keep), "RUNNING");
    let o = ctd.ctr(&[
        "task",
        "exec",
        "--exec-id",
        "after",
        keep,
        "echo",
        "still here",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(String::from_utf8_lossy(&o.stdout), "still here\n");
    ctd.ok(&["task", "kill", "-s", "SIGKILL", keep]);
    wait_for("keeper to stop", Duration::from_secs(10), || {
        ctd.task_status(keep) == "STOPPED"
    });
    ctd.ok(&["task", "delete", keep]);
    ctd.ok(&["container", "rm", keep]);
}
