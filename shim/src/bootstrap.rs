//! The two one-shot commands of the runtime v2 protocol.
//!
//! `start` (cwd = bundle): binds the shim's socket, spawns the daemon (this binary
//! without an action, listener on fd 3, its own session), records `address` and
//! `shim.pid` in the bundle and prints the address. The manager then dials it.
//!
//! `delete` (cwd = bundle, `-bundle`): cleanup after a shim that is gone: force-delete
//! the container in the runtime, unmount the rootfs, remove the socket, and print a
//! DeleteResponse (protobuf) with the exit the shim recorded, if it lived to record it.

use crate::args::Flags;
use crate::daemon::LISTENER_FD;
use crate::exitfile::{write_atomic, ExitRecord, ShimState};
use crate::paths::{self, bundle as files};
use crate::runtime::Runtime;
use crate::{mount, time};
use containerd_shim_protos::api::DeleteResponse;
use protobuf::{Message, MessageField};
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::SystemTime;

pub fn start(flags: &Flags) -> Result<String, String> {
    if flags.id.is_empty() {
        return Err("-id is required".into());
    }
    // containerd writes the runtime options to our stdin; Create carries them again.
    let sock = paths::socket_path(&flags.address, &flags.namespace, &flags.id);
    let addr = paths::socket_address(&sock);
    if let Some(d) = sock.parent() {
        paths::make_socket_dir(d).map_err(|e| format!("create {}: {e}", d.display()))?;
    }
    if sock.exists() {
        if UnixStream::connect(&sock).is_ok() {
            // A shim already serves this container (containerd retrying a start).
            write_files(&addr, None)?;
            return Ok(addr);
        }
        let _ = std::fs::remove_file(&sock);
    }
    let listener =
        UnixListener::bind(&sock).map_err(|e| format!("bind {}: {e}", sock.display()))?;
    let exe = std::env::current_exe().map_err(|e| format!("own path: {e}"))?;
    let mut cmd = Command::new(exe);
    cmd.args([
        "-namespace",
        &flags.namespace,
        "-id",
        &flags.id,
        "-address",
        &flags.address,
    ]);
    cmd.args(["-publish-binary", &flags.publish_binary]);
    cmd.arg("-socket").arg(&addr);
    if flags.debug {
        cmd.arg("-debug");
    }
    // The daemon must not hold the pipe containerd reads our output from, or
    // containerd would wait for it forever.
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let lfd = listener.as_raw_fd();
    unsafe {
        cmd.pre_exec(move || {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            // dup2 clears close-on-exec on the copy, but is a no-op when the listener
            // already is fd 3 (a start command run with only stdio open); then clear
            // the flag by hand, or the daemon would get no listener.
            if lfd == LISTENER_FD {
                let fl = libc::fcntl(lfd, libc::F_GETFD);
                if fl < 0 || libc::fcntl(lfd, libc::F_SETFD, fl & !libc::FD_CLOEXEC) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            } else if libc::dup2(lfd, LISTENER_FD) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd.spawn().map_err(|e| {
        let _ = std::fs::remove_file(&sock);
        format!("spawn shim daemon: {e}")
    })?;
    write_files(&addr, Some(child.id()))?;
    Ok(addr)
}

fn write_files(addr: &str, pid: Option<u32>) -> Result<(), String> {
    write_atomic(std::path::Path::new(files::ADDRESS), addr.as_bytes())
        .map_err(|e| format!("write address: {e}"))?;
    if let Some(pid) = pid {
        write_atomic(
            std::path::Path::new(files::SHIM_PID),
            pid.to_string().as_bytes(),
        )
        .map_err(|e| format!("write shim.pid: {e}"))?;
    }
    Ok(())
}

pub fn delete(flags: &Flags) -> Result<Vec<u8>, String> {
    let bundle = match &flags.bundle {
        Some(b) => b.clone(),
        None => std::env::current_dir().map_err(|e| e.to_string())?,
    };
    let mut warnings = Vec::new();
    if let Some(st) = ShimState::read(&bundle.join(files::STATE)) {
        let rt = Runtime {
            binary: st.runtime,
            root: st.runtime_root,
            systemd_cgroup: st.systemd_cgroup,
            log: bundle.join(files::RUNTIME_LOG),
        };
        // No reaper runs here, so the plain std wait is the right one.
        let out = rt
            .cmd()
            .args(["delete", "--force", &flags.id])
            .stdin(Stdio::null())
            .output();
        match out {
            Ok(o) if !o.status.success() => {
                let msg = String::from_utf8_lossy(&o.stderr);
                if !msg.contains("does not exist") && !msg.contains("not found") {
                    warnings.push(format!("runtime delete: {}", msg.trim()));
                }
            }
            Err(e) => warnings.push(format!("runtime delete: {e}")),
            _ => {}
        }
    }
    if let Err(e) = mount::unmount_all(&bundle.join("rootfs")) {
        warnings.push(format!("unmount rootfs: {e}"));
    }
    let sock = paths::socket_path(&flags.address, &flags.namespace, &flags.id);
    let _ = std::fs::remove_file(sock);
    for w in &warnings {
        eprintln!("kura-shim delete: {w}");
    }
    let mut r = DeleteResponse::new();
    match ExitRecord::read(&bundle.join(files::EXIT)) {
        Some(rec) => {
            r.pid = rec.pid;
            r.exit_status = rec.exit_status;
            r.exited_at = MessageField::some(time::to_proto(rec.exited_at));
        }
        None => {
            // The shim died before the container did: report it killed, as
            // containerd's shims do.
            r.pid = std::fs::read_to_string(bundle.join(files::INIT_PID))
                .ok()
                .and_then(|s| s.trim().parse().ok())
                .unwrap_or(0);
            r.exit_status = 128 + libc::SIGKILL as u32;
            r.exited_at = MessageField::some(time::to_proto(SystemTime::now()));
        }
    }
    r.write_to_bytes().map_err(|e| e.to_string())
}
