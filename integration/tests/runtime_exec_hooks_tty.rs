//! exec into running containers, hooks with their state and namespaces, and the
//! terminal over --console-socket.

use kura_integration::require_root;
use kura_integration::runtime::Rt;
use serde_json::{json, Value};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

fn started(rt: &mut Rt, prefix: &str, args: &[&str]) -> String {
    let id = rt.id(prefix);
    rt.args(args);
    rt.create_ok(&id);
    rt.ok(&["start", &id]);
    id
}

#[test]
fn exec_runs_in_the_container_and_returns_its_code() {
    require_root!();
    let mut rt = Rt::new("exec");
    let id = started(&mut rt, "exec", &["sleep", "300"]);
    let init_pidns = std::fs::read_link(format!("/proc/{}/ns/pid", rt.state(&id)["pid"])).unwrap();
    let out = rt.rt(&[
        "exec",
        &id,
        "sh",
        "-c",
        "readlink /proc/self/ns/pid; hostname; exit 5",
    ]);
    assert_eq!(
        out.status.code(),
        Some(5),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let s = String::from_utf8_lossy(&out.stdout);
    assert!(s.starts_with(&format!("{}\n", init_pidns.display())), "{s}");
    assert!(s.contains("kura\n"), "{s}");

    let out = rt.rt(&[
        "exec",
        "--env",
        "FOO=bar",
        "--cwd",
        "/tmp",
        "--user",
        "1000:1000",
        &id,
        "sh",
        "-c",
        "echo $FOO $(pwd) $(id -u)",
    ]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "bar /tmp 1000\n");

    let out = rt.rt(&["exec", &id, "no-such-binary"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("executable file not found"));

    // --detach with --pid-file: the process outlives the exec command.
    let pidfile = rt.scratch.join("exec.pid");
    rt.ok(&[
        "exec",
        "--detach",
        "--pid-file",
        pidfile.to_str().unwrap(),
        &id,
        "sleep",
        "200",
    ]);
    let pid: i32 = std::fs::read_to_string(&pidfile).unwrap().parse().unwrap();
    assert!(std::path::Path::new(&format!("/proc/{pid}")).exists());
    let pids: Vec<i32> = serde_json::from_str(&rt.ok(&["ps", "--format", "json", &id])).unwrap();
    assert!(
        pids.contains(&pid),
        "exec'd process in the container's cgroup: {pids:?}"
    );
    // In every hierarchy (it is cloned into the cgroup2 one and moves itself into
    // each v1 one), and in the container's cgroup namespace, which it enters itself.
    let init = rt.state(&id)["pid"].as_i64().unwrap();
    let read = |p: String| std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{p}: {e}"));
    // Read from the host: the paths are the host's view, the same for both.
    assert_eq!(
        read(format!("/proc/{pid}/cgroup")),
        read(format!("/proc/{init}/cgroup")),
        "exec'd process and init in the same cgroups"
    );
    assert_eq!(
        std::fs::read_link(format!("/proc/{pid}/ns/cgroup")).unwrap(),
        std::fs::read_link(format!("/proc/{init}/ns/cgroup")).unwrap(),
        "exec'd process in the container's cgroup namespace"
    );
    rt.ok(&["delete", "--force", &id]);
}

#[test]
fn exec_process_file_cannot_raise_capabilities() {
    require_root!();
    let mut rt = Rt::new("exec-caps");
    let caps = json!(["CAP_KILL"]);
    rt.config["process"]["capabilities"] =
        json!({"bounding": caps, "effective": caps, "permitted": caps});
    let id = started(&mut rt, "execcap", &["sleep", "300"]);
    let proc_file = rt.scratch.join("process.json");
    let all = json!(["CAP_SYS_ADMIN", "CAP_KILL"]);
    std::fs::write(
        &proc_file,
        serde_json::to_vec(&json!({
            "args": ["sh", "-c", "grep CapEff /proc/self/status"], "cwd": "/",
            "user": {"uid": 0, "gid": 0},
            "capabilities": {"bounding": all, "effective": all, "permitted": all}
        }))
        .unwrap(),
    )
    .unwrap();
    let out = rt.rt(&["exec", "--process", proc_file.to_str().unwrap(), &id]);
    assert!(
        !out.status.success(),
        "exec raised capabilities: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("bounding set"));
    // Within the bounding set it works.
    std::fs::write(
        &proc_file,
        serde_json::to_vec(&json!({
            "args": ["sh", "-c", "grep CapEff /proc/self/status"], "cwd": "/",
            "user": {"uid": 0, "gid": 0},
            "capabilities": {"bounding": caps, "effective": caps, "permitted": caps}
        }))
        .unwrap(),
    )
    .unwrap();
    let out = rt.rt(&["exec", "--process", proc_file.to_str().unwrap(), &id]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "CapEff:\t0000000000000020\n"
    );
    rt.ok(&["delete", "--force", &id]);
}

#[test]
fn hooks_get_state_and_run_in_order() {
    require_root!();
    let mut rt = Rt::new("hooks");
    let log = rt.scratch.join("hooks.log");
    let hook = |name: &str| {
        // Each hook appends its name, the status it was given and its pid namespace.
        json!({"path": "/bin/sh", "args": ["sh", "-c", format!(
            "read s; st=$(echo \"$s\" | sed 's/.*\"status\":\"\\([a-z]*\\)\".*/\\1/'); echo {name} $st $(readlink /proc/self/ns/mnt) >> {}", log.display())]})
    };
    rt.config["hooks"] = json!({
        "prestart": [hook("prestart")],
        "createRuntime": [hook("createRuntime")],
        "createContainer": [hook("createContainer")],
        "poststart": [hook("poststart")],
        "poststop": [hook("poststop")]
    });
    let id = rt.id("hooks");
    rt.args(&["true"]);
    let (code, _, err) = rt.run(&id);
    assert_eq!(code, 0, "{err}");
    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<Vec<&str>> = text.lines().map(|l| l.split(' ').collect()).collect();
    let names: Vec<&str> = lines.iter().map(|l| l[0]).collect();
    assert_eq!(
        names,
        [
            "prestart",
            "createRuntime",
            "createContainer",
            "poststart",
            "poststop"
        ],
        "{text}"
    );
    let host_mnt = std::fs::read_link("/proc/self/ns/mnt")
        .unwrap()
        .to_string_lossy()
        .into_owned();
    assert_eq!(lines[1][1], "creating");
    assert_eq!(
        lines[1][2], host_mnt,
        "createRuntime runs in the runtime namespace"
    );
    assert_ne!(
        lines[2][2], host_mnt,
        "createContainer runs in the container's mount namespace"
    );
    assert_eq!(lines[3][1], "running");
    assert_eq!(lines[4][1], "stopped");
}

#[test]
fn start_container_hook_runs_inside() {
    require_root!();
    let mut rt = Rt::new("hook-start");
    rt.config["hooks"] = json!({"startContainer": [{"path": "/bin/sh", "args": ["sh", "-c", "hostname > /tmp/hooked"]}]});
    let id = rt.id("sc");
    rt.args(&["cat", "/tmp/hooked"]);
    let (code, out, err) = rt.run(&id);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "kura\n");
}

#[test]
fn hook_timeout_fails_create() {
    require_root!();
    let mut rt = Rt::new("hook-timeout");
    rt.config["hooks"] =
        json!({"prestart": [{"path": "/bin/sleep", "args": ["sleep", "30"], "timeout": 1}]});
    let id = rt.id("to");
    let t = std::time::Instant::now();
    let out = rt.create(&id);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("timed out"));
    assert!(t.elapsed().as_secs() < 20);
    assert!(!rt.state_dir(&id).exists());
}

/// A console socket like containerd's: receive the pty master, read what the
/// container writes to its terminal.
#[test]
fn console_socket_receives_the_pty() {
    require_root!();
    let mut rt = Rt::new("tty");
    rt.config["process"]["terminal"] = json!(true);
    rt.config["process"]["consoleSize"] = json!({"height": 33, "width": 101});
    let id = rt.id("tty");
    rt.args(&["sh", "-c", "tty; stty size; test -t 0 && echo stdin-tty"]);
    rt.write_config(&id);
    let sock_path = rt.scratch.join("console.sock");
    let listener = std::os::unix::net::UnixListener::bind(&sock_path).unwrap();
    let b = rt.bundle.to_string_lossy().into_owned();
    let receiver = std::thread::spawn(move || {
        let (conn, _) = listener.accept().unwrap();
        kura_runtime_recv_fd(conn.as_raw_fd())
    });
    rt.ok(&[
        "create",
        "--bundle",
        &b,
        "--console-socket",
        sock_path.to_str().unwrap(),
        &id,
    ]);
    let master = receiver.join().unwrap();
    rt.ok(&["start", &id]);
    let mut out = Vec::new();
    let mut f = std::fs::File::from(master);
    use std::io::Read;
    let mut buf = [0u8; 4096];
    loop {
        match f.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
    }
    let s = String::from_utf8_lossy(&out);
    assert!(s.contains("/dev/pts/0"), "{s}");
    assert!(s.contains("33 101"), "{s}");
    assert!(s.contains("stdin-tty"), "{s}");
    rt.wait_status(&id, "stopped");
    let st: Value = rt.state(&id);
    assert_eq!(st["status"], "stopped");
}

fn kura_runtime_recv_fd(sock: i32) -> OwnedFd {
    let mut buf = [0u8; 256];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    let mut cmsg = [0u8; 64];
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cmsg.as_mut_ptr().cast();
    msg.msg_controllen = cmsg.len();
    let n = unsafe { libc::recvmsg(sock, &mut msg, 0) };
    assert!(n >= 0, "recvmsg");
    let c = unsafe { libc::CMSG_FIRSTHDR(&msg) };
    assert!(!c.is_null(), "no fd received");
    let fd = unsafe { *(libc::CMSG_DATA(c) as *const i32) };
    unsafe { OwnedFd::from_raw_fd(fd) }
}
