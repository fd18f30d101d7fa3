//! Lifecycle operations on an existing container: start, kill, delete, pause,
//! resume, update, and the read-only views (state, list, ps, events).

use crate::hooks::{self, Kind};
use crate::state::{self, State, Status};
use crate::{log, sys};
use anyhow::{bail, Context, Result};
use oci_spec::runtime::{LinuxResources, Spec};
use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::time::{Duration, Instant};

pub fn saved_spec(root: &Path, st: &State) -> Result<Spec> {
    let raw =
        std::fs::read(st.dir(root).join(state::CONFIG_FILE)).context("read saved config.json")?;
    crate::spec::parse(&raw)
}

/// A pidfd for init, checked against the recorded start time so a reused pid is
/// never signalled.
fn pidfd(st: &State) -> Option<OwnedFd> {
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, st.pid, 0) };
    if fd < 0 {
        return None;
    }
    let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    // Checked after opening: the pidfd pins the process we verified.
    st.init_alive().then_some(fd)
}

fn wait_pidfd(fd: &OwnedFd, timeout: Duration) -> bool {
    let mut p = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    unsafe { libc::poll(&mut p, 1, timeout.as_millis() as i32) > 0 }
}

pub fn start(root: &Path, id: &str) -> Result<()> {
    let st = State::load(root, id)?;
    match st.status(root) {
        Status::Created => {}
        s => bail!("cannot start a container that is {s}"),
    }
    let spec = match st.start_needs_spec {
        Some(false) => None,
        _ => Some(saved_spec(root, &st)?),
    };
    if spec.as_ref().is_some_and(|s| s.process().is_none()) {
        // The spec: start MUST fail without a process; the container then stops.
        let _ = kill(root, id, libc::SIGKILL, false);
        bail!("process: not set in config.json; the container cannot start");
    }
    // Pin init before opening the fifo: once it is open, init may exec and exit at once.
    let pfd = pidfd(&st).context("container init is not running")?;
    let dir = st.dir(root);
    let fifo_path = dir.join(state::EXEC_FIFO);
    let c = CString::new(fifo_path.as_os_str().as_bytes())?;
    // Non-blocking open: a dead init would otherwise leave us blocked forever.
    let fd = unsafe {
        libc::open(
            c.as_ptr(),
            libc::O_RDONLY | libc::O_NONBLOCK | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error())
            .context("open exec fifo (was the container already started?)");
    }
    let fifo = unsafe { OwnedFd::from_raw_fd(fd) };
    loop {
        let mut fds = [
            libc::pollfd {
                fd: fifo.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: pfd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        let n = unsafe { libc::poll(fds.as_mut_ptr(), 2, -1) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            return Err(e).context("poll exec fifo");
        }
        if fds[0].revents & libc::POLLIN != 0 {
            let mut b = [0u8; 1];
            let r = unsafe { libc::read(fifo.as_raw_fd(), b.as_mut_ptr().cast(), 1) };
            if r == 1 {
                break;
            }
        }
        if fds[1].revents & libc::POLLIN != 0 {
            bail!("container init exited before start");
        }
    }
    let _ = std::fs::remove_file(&fifo_path);
    if let Some(spec) = spec {
        hooks::run_warn(
            spec.hooks().as_ref(),
            Kind::Poststart,
            &st.hook_json(Status::Running),
        );
    }
    Ok(())
}

pub fn signal_number(s: &str) -> Result<i32> {
    if let Ok(n) = s.parse::<i32>() {
        if n <= 0 || n > libc::SIGRTMAX() {
            bail!("invalid signal number {n}");
        }
        return Ok(n);
    }
    let up = s.to_ascii_uppercase();
    let name = up.strip_prefix("SIG").unwrap_or(&up);
    if let Some(rest) = name.strip_prefix("RTMIN") {
        let off: i32 = if rest.is_empty() {
            0
        } else {
            rest.trim_start_matches('+')
                .parse()
                .context("bad RTMIN offset")?
        };
        return Ok(libc::SIGRTMIN() + off);
    }
    if let Some(rest) = name.strip_prefix("RTMAX") {
        let off: i32 = if rest.is_empty() {
            0
        } else {
            rest.trim_start_matches('-')
                .parse()
                .context("bad RTMAX offset")?
        };
        return Ok(libc::SIGRTMAX() - off);
    }
    let sig: nix::sys::signal::Signal = format!("SIG{name}")
        .parse()
        .map_err(|_| anyhow::anyhow!("unknown signal {s:?}"))?;
    Ok(sig as i32)
}

pub fn kill(root: &Path, id: &str, sig: i32, all: bool) -> Result<()> {
    let st = State::load(root, id)?;
    let status = st.status(root);
    if status == Status::Stopped {
        bail!("container {id} is not running");
    }
    if all {
        if let Some(cg) = &st.cgroup {
            return cg
                .kill_all(sig)
                .context("signal the processes of the container's cgroup");
        }
    }
    let fd = pidfd(&st).with_context(|| format!("container {id} is not running"))?;
    let r = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            fd.as_raw_fd(),
            sig,
            std::ptr::null::<u8>(),
            0,
        )
    };
    if r < 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("send signal {sig} to {id}"));
    }
    Ok(())
}

pub fn delete(root: &Path, id: &str, force: bool) -> Result<()> {
    state::validate_id(id)?;
    let dir = state::container_dir(root, id);
    let st = match State::load(root, id) {
        Ok(st) => st,
        // A container whose create died half-way has a dir but no state: only --force clears it.
        Err(_) if force && dir.exists() => {
            std::fs::remove_dir_all(&dir).with_context(|| format!("remove {}", dir.display()))?;
            return Ok(());
        }
        Err(e) => return Err(e),
    };
    let status = st.status(root);
    // The spec forbids deleting a created container too (runc allows it); --force
    // covers both, and is what containerd and podman pass when they mean it.
    if status != Status::Stopped && !force {
        bail!("cannot delete container {id} that is not stopped: {status}");
    }
    if status != Status::Stopped {
        if let Some(cg) = &st.cgroup {
            // A frozen cgroup holds SIGKILL until thawed.
            let _ = cg.kill_all(libc::SIGKILL);
            let _ = cg.thaw();
        }
        if let Some(fd) = pidfd(&st) {
            unsafe {
                libc::syscall(
                    libc::SYS_pidfd_send_signal,
                    fd.as_raw_fd(),
                    libc::SIGKILL,
                    std::ptr::null::<u8>(),
                    0,
                )
            };
            if !wait_pidfd(&fd, Duration::from_secs(10)) {
                bail!("container {id}: init did not die after SIGKILL");
            }
        }
    }
    if let Some(cg) = &st.cgroup {
        // Processes outside a pid namespace survive init; make sure none is left.
        // An empty cgroup needs no kill: a cgroup.kill write waits for the global
        // cgroup mutex, which other containers' creates may hold for milliseconds.
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if cg.is_populated() {
                let _ = cg.kill_all(libc::SIGKILL);
            }
            match cg.destroy() {
                Ok(()) => break,
                Err(e) if Instant::now() > deadline => {
                    log::warn(&format!("delete {id}: remove cgroup: {e:#}"));
                    break;
                }
                Err(_) => std::thread::sleep(Duration::from_millis(10)),
            }
        }
    }
    let spec = match st.delete_needs_spec {
        Some(false) => None,
        _ => saved_spec(root, &st).ok(),
    };
    let shares_host_mounts = spec
        .as_ref()
        .is_some_and(|s| !crate::process::has_mount_ns(s));
    if shares_host_mounts {
        crate::rootfs::unmount_under(&st.rootfs);
    }
    std::fs::remove_dir_all(&dir).with_context(|| format!("remove {}", dir.display()))?;
    if let Some(spec) = spec {
        hooks::run_warn(
            spec.hooks().as_ref(),
            Kind::Poststop,
            &st.hook_json(Status::Stopped),
        );
    }
    Ok(())
}

pub fn pause(root: &Path, id: &str) -> Result<()> {
    let st = State::load(root, id)?;
    match st.status(root) {
        Status::Running => {}
        s => bail!("cannot pause a container that is {s}"),
    }
    st.cgroup
        .as_ref()
        .context("container has no cgroup")?
        .freeze()
}

pub fn resume(root: &Path, id: &str) -> Result<()> {
    let st = State::load(root, id)?;
    match st.status(root) {
        Status::Paused => {}
        s => bail!("cannot resume a container that is {s}"),
    }
    st.cgroup
        .as_ref()
        .context("container has no cgroup")?
        .thaw()
}

/// Applies new resource limits and records them in the saved config, so later
/// commands (and `state`) see what is in force.
pub fn update(root: &Path, id: &str, r: &LinuxResources) -> Result<()> {
    let st = State::load(root, id)?;
    if st.status(root) == Status::Stopped {
        bail!("container {id} is stopped");
    }
    let cg = st.cgroup.as_ref().context("container has no cgroup")?;
    crate::cgroups::validate(r, crate::cgroups::detect()?)?;
    cg.apply(r)?;
    let mut spec = saved_spec(root, &st)?;
    if let Some(l) = spec.linux_mut().as_mut() {
        let merged = crate::spec::merge_resources(l.resources().clone().unwrap_or_default(), r);
        l.set_resources(Some(merged));
    }
    let tmp = st.dir(root).join(".config.json.tmp");
    std::fs::write(&tmp, serde_json::to_vec(&spec)?)?;
    std::fs::rename(&tmp, st.dir(root).join(state::CONFIG_FILE))?;
    Ok(())
}

pub fn pids(root: &Path, id: &str) -> Result<Vec<i32>> {
    let st = State::load(root, id)?;
    match &st.cgroup {
        Some(cg) => cg.pids(),
        None => Ok(if st.init_alive() {
            vec![st.pid]
        } else {
            vec![]
        }),
    }
}

pub fn stats_json(st: &State) -> Result<serde_json::Value> {
    let cg = st.cgroup.as_ref().context("container has no cgroup")?;
    Ok(serde_json::to_value(cg.stats()?)?)
}

/// `events`: stats every interval (or once), and an `oom` event whenever the
/// cgroup's OOM-kill count grows. Ends when the container stops.
pub fn events(
    root: &Path,
    id: &str,
    interval: Duration,
    once: bool,
    out: &mut dyn std::io::Write,
) -> Result<()> {
    let st = State::load(root, id)?;
    if once {
        let v = serde_json::json!({"type": "stats", "id": id, "data": stats_json(&st)?});
        writeln!(out, "{v}")?;
        return Ok(());
    }
    let cg = st.cgroup.clone().context("container has no cgroup")?;
    let mut ooms = cg.oom_kill_count().unwrap_or(0);
    let mut next_stats = Instant::now();
    loop {
        if st.status(root) == Status::Stopped {
            return Ok(());
        }
        let n = cg.oom_kill_count().unwrap_or(ooms);
        if n > ooms {
            writeln!(out, "{}", serde_json::json!({"type": "oom", "id": id}))?;
            ooms = n;
        }
        if Instant::now() >= next_stats {
            if let Ok(v) = stats_json(&st) {
                writeln!(
                    out,
                    "{}",
                    serde_json::json!({"type": "stats", "id": id, "data": v})
                )?;
            }
            out.flush()?;
            next_stats = Instant::now() + interval;
        }
        // OOM events are polled more often than stats so none is reported late.
        std::thread::sleep(interval.min(Duration::from_millis(500)));
    }
}

pub fn proc_fd(fd: &OwnedFd) -> std::ffi::CString {
    sys::proc_fd_path(fd.as_raw_fd())
}
