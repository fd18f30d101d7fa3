//! The long-lived shim process: child subreaper, ttrpc task service, and a main loop
//! that owns signals (SIGCHLD -> reaper) and OOM notifications.
//!
//! Threads of an idle shim with one container: this main loop, the ttrpc server's
//! listener and connection threads, and one copier per open stdio stream.

use crate::args::Flags;
use crate::cgroup::{OomState, OomWatch};
use crate::container::Env;
use crate::control::Control;
use crate::events::Publisher;
use crate::paths::{self, bundle as files};
use crate::reaper::Reaper;
use crate::service::Service;
use crate::{log, stdio};
use containerd_shim_protos::create_task;
use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long a shim without a container waits for one (`KURA_SHIM_IDLE_EXIT` seconds).
const IDLE_EXIT: Duration = Duration::from_secs(300);

/// The listening socket `start` hands to the daemon.
pub const LISTENER_FD: RawFd = 3;

fn set_cloexec(fd: RawFd) {
    unsafe {
        let f = libc::fcntl(fd, libc::F_GETFD);
        if f >= 0 {
            libc::fcntl(fd, libc::F_SETFD, f | libc::FD_CLOEXEC);
        }
    }
}

fn is_socket(fd: RawFd) -> bool {
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    unsafe { libc::fstat(fd, &mut st) == 0 && (st.st_mode & libc::S_IFMT) == libc::S_IFSOCK }
}

/// Points stderr at containerd's `log` FIFO in the bundle, if a reader is there.
/// Non-blocking: a manager that stops reading must not stall the shim.
fn open_shim_log() {
    let f = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(files::SHIM_LOG_FIFO);
    if let Ok(f) = f {
        unsafe { libc::dup2(f.as_raw_fd(), 2) };
    }
}

/// Blocks the signals the main loop takes through a signalfd. Must run before any
/// thread starts, so every thread inherits the mask and none takes them instead.
fn signalfd() -> std::io::Result<OwnedFd> {
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for s in [libc::SIGCHLD, libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
            libc::sigaddset(&mut set, s);
        }
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        let fd = libc::signalfd(-1, &set, libc::SFD_CLOEXEC | libc::SFD_NONBLOCK);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(OwnedFd::from_raw_fd(fd))
    }
}

pub fn serve(flags: &Flags) -> Result<(), String> {
    if flags.id.is_empty() {
        return Err("-id is required".into());
    }
    open_shim_log();
    // One malloc arena for all threads: the shim's threads mostly sleep, and a
    // per-thread arena costs more resident memory than the contention it saves.
    unsafe { libc::mallopt(libc::M_ARENA_MAX, 1) };
    if unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) } < 0 {
        return Err(format!(
            "become subreaper: {}",
            std::io::Error::last_os_error()
        ));
    }
    let sigfd = signalfd().map_err(|e| format!("signalfd: {e}"))?;

    let socket_path = flags.socket.clone().unwrap_or_else(|| {
        paths::socket_path(&flags.address, &flags.namespace, &flags.id)
            .display()
            .to_string()
    });
    let listener = if is_socket(LISTENER_FD) {
        set_cloexec(LISTENER_FD);
        LISTENER_FD
    } else {
        // Started by hand (or by a manager that binds nothing): bind ourselves.
        let p = paths::address_path(&socket_path).to_string();
        if let Some(d) = std::path::Path::new(&p).parent() {
            let _ = std::fs::create_dir_all(d);
        }
        let _ = std::fs::remove_file(&p);
        let l = std::os::unix::net::UnixListener::bind(&p).map_err(|e| format!("bind {p}: {e}"))?;
        let fd = l.as_raw_fd();
        std::mem::forget(l);
        fd
    };

    let (wake_r, wake_w) = stdio::pipe().map_err(|e| format!("pipe: {e}"))?;
    unsafe { libc::fcntl(wake_r.as_raw_fd(), libc::F_SETFL, libc::O_NONBLOCK) };
    let reaper = Arc::new(Reaper::default());
    let control = Arc::new(Control::new(wake_w));
    let publisher = Arc::new(Publisher::new(
        std::env::var("TTRPC_ADDRESS").unwrap_or_default(),
        flags.publish_binary.clone(),
        flags.address.clone(),
        flags.namespace.clone(),
        reaper.clone(),
    ));
    let env = Env {
        namespace: flags.namespace.clone(),
        reaper: reaper.clone(),
        publisher: publisher.clone(),
        control: control.clone(),
    };
    let service = Arc::new(Service::new(env));

    // containerd 1.6 calls `containerd.task.v2.Task`, 2.x `containerd.task.v3.Task`;
    // the messages are the same, so both names route to one service.
    let v3 = create_task(service.clone());
    let v2 = create_task(service.clone())
        .into_iter()
        .map(|(k, v)| {
            (
                k.replace("/containerd.task.v3.Task/", "/containerd.task.v2.Task/"),
                v,
            )
        })
        .collect();
    let mut server = ttrpc::Server::new()
        .add_listener(listener)
        .map_err(|e| format!("ttrpc listener: {e}"))?
        .register_service(v3)
        .register_service(v2)
        .set_thread_count_min(1)
        .set_thread_count_default(2)
        .set_thread_count_max(3);
    server.start().map_err(|e| format!("ttrpc start: {e}"))?;
    log::debug(&format!("serving {} on {socket_path}", flags.id));

    main_loop(&sigfd, &wake_r, &reaper, &control, &service);

    publisher.flush();
    let _ = std::fs::remove_file(paths::address_path(&socket_path));
    log::debug("shim exiting");
    // The ttrpc threads may still hold connections; the process exit closes them.
    std::process::exit(0);
}

fn main_loop(
    sigfd: &OwnedFd,
    wake: &std::fs::File,
    reaper: &Reaper,
    control: &Control,
    service: &Service,
) {
    let mut watches: Vec<OomWatch> = Vec::new();
    // A shim that holds no container and hears nothing (its manager died between
    // `start` and Create, or after Delete without Shutdown) would otherwise live
    // forever; it gives up after a while.
    let idle_limit = std::env::var("KURA_SHIM_IDLE_EXIT")
        .ok()
        .and_then(|s| s.parse().ok())
        .map(Duration::from_secs)
        .unwrap_or(IDLE_EXIT);
    let mut idle_since = Instant::now();
    loop {
        if !service.idle() {
            idle_since = Instant::now();
        } else if idle_since.elapsed() >= idle_limit {
            log::info("no container for too long; exiting");
            return;
        }
        let mut fds = vec![
            libc::pollfd {
                fd: sigfd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: wake.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        fds.extend(watches.iter().map(|w| libc::pollfd {
            fd: w.fd(),
            events: libc::POLLIN,
            revents: 0,
        }));
        let timeout = idle_limit.min(Duration::from_secs(10)).as_millis().max(100) as i32;
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout) };
        if n < 0 {
            continue;
        }
        if fds[0].revents != 0 {
            let mut info = [0u8; std::mem::size_of::<libc::signalfd_siginfo>()];
            let mut sigchld = false;
            while unsafe { libc::read(sigfd.as_raw_fd(), info.as_mut_ptr().cast(), info.len()) }
                == info.len() as isize
            {
                let si: libc::signalfd_siginfo =
                    unsafe { std::ptr::read_unaligned(info.as_ptr().cast()) };
                if si.ssi_signo == libc::SIGCHLD as u32 {
                    sigchld = true;
                } else {
                    // The container outlives a shim that is merely told to stop; only
                    // Shutdown ends it.
                    log::info(&format!("ignoring signal {}", si.ssi_signo));
                }
            }
            if sigchld {
                reaper.reap();
            }
        }
        if fds[1].revents != 0 {
            let mut buf = [0u8; 64];
            while matches!((&*wake).read(&mut buf), Ok(n) if n > 0) {}
            watches.append(
                &mut control
                    .new_watches
                    .lock()
                    .unwrap_or_else(|e| e.into_inner()),
            );
            if control.exit_requested() {
                // Reap what is pending so no exit event is lost on the way out.
                reaper.reap();
                return;
            }
        }
        let mut i = 0;
        for f in &fds[2..] {
            if f.revents != 0 {
                match watches[i].ready() {
                    OomState::Oom => service.oom(&watches[i].container_id),
                    OomState::Nothing => {}
                    OomState::Gone => {
                        watches.remove(i);
                        continue;
                    }
                }
            }
            i += 1;
        }
    }
}
