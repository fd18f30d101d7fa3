//! `exec`: a new process inside a running container.
//!
//! ```text
//!  kura-runtime exec            joiner (fork)                 process (clone CLONE_PARENT)
//!  open /proc/<init>/ns/*  ──►  join the v1 cgroups, setns
//!                               (user first, mnt last; not   pid 1's namespaces, our child,
//!                               cgroup), clone3 into the ──► born in the cgroup2 dir
//!                               cgroup2 dir                  │ joins the cgroup ns
//!  ◄──────── Pid ───────────── exit                            │ waits
//!  send Go ───────────────────────────────────────────────►   │ pty, cwd, limits, seccomp,
//!  ◄──────────────────────── Ready ─────────────────────────  │ uid/gid, caps; execve
//!  --pid-file; wait (or exit with --detach)
//! ```
//! The joiner is needed because setns(pid) only affects children; CLONE_PARENT
//! makes the process our own child, so we can wait for it without a subreaper.

use crate::namespaces::{self, proc_name};
use crate::security::caps;
use crate::state::{State, Status};
use crate::sync::{self, Msg};
use crate::sys;
use anyhow::{bail, Context, Result};
use oci_spec::runtime::{Process, Spec};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

pub struct ExecOpts {
    pub process: Process,
    pub console_socket: Option<PathBuf>,
    pub pid_file: Option<PathBuf>,
    pub detach: bool,
    pub preserve_fds: u32,
}

/// Runs the process; returns its exit code (0 right away with --detach).
pub fn exec(root: &Path, id: &str, opts: ExecOpts) -> Result<i32> {
    let st = State::load(root, id)?;
    match st.status(root) {
        Status::Running | Status::Created => {}
        s => bail!("cannot exec in a {s} container"),
    }
    let raw = std::fs::read(st.dir(root).join(crate::state::CONFIG_FILE))
        .context("read saved config.json")?;
    let spec: Spec = crate::spec::parse(&raw)?;
    let process = opts.process;
    crate::spec::validate_process(&process, "process")?;
    // An untrusted --process may not ask for more than the container was given.
    let container_caps = caps::from_spec(
        spec.process()
            .as_ref()
            .and_then(|p| p.capabilities().as_ref()),
    );
    let wanted = caps::from_spec(process.capabilities().as_ref());
    let all =
        wanted.bounding | wanted.effective | wanted.permitted | wanted.inheritable | wanted.ambient;
    if all & !container_caps.bounding != 0 {
        bail!("process.capabilities: asks for capabilities outside the container's bounding set");
    }
    crate::security::lsm::validate(
        process.apparmor_profile().as_deref(),
        process.selinux_label().as_deref(),
    )?;
    // Before anything is connected to or created: this may restart the command.
    crate::security::exe_guard::protect_exec()?;
    let terminal = process.terminal().unwrap_or(false);
    // A foreground exec with a terminal and no console socket: we hold the pty
    // master ourselves and proxy our stdio to it, as runc does.
    let mut proxy = None;
    let console = match &opts.console_socket {
        Some(p) if terminal => Some(crate::terminal::connect(p)?),
        Some(_) => bail!("--console-socket given without --tty"),
        None if terminal && opts.detach => bail!("--tty with --detach needs --console-socket"),
        None if terminal => {
            let (ours, theirs) = std::os::unix::net::UnixStream::pair().context("socketpair")?;
            proxy = Some(OwnedFd::from(ours));
            Some(OwnedFd::from(theirs))
        }
        None => None,
    };
    let seccomp = match spec.linux().as_ref().and_then(|l| l.seccomp().as_ref()) {
        Some(s) => Some(crate::seccomp::compile(s)?),
        None => None,
    };
    // Every namespace the container has, taken from init so paths joined at create
    // time are found even if they were unmounted since.
    let mut join = Vec::new();
    for ns in spec
        .linux()
        .as_ref()
        .and_then(|l| l.namespaces().as_ref())
        .into_iter()
        .flatten()
    {
        let p = format!("/proc/{}/ns/{}", st.pid, proc_name(ns.typ()));
        let f = std::fs::File::open(&p).with_context(|| format!("open {p}"))?;
        join.push((ns.typ(), OwnedFd::from(f)));
    }
    let cgroup = st.cgroup.clone();
    // Opened before any setns. The joiner moves itself into the v1 hierarchies (a
    // lone thread moving itself skips the kernel's global migration lock, whose
    // first taking waits an RCU grace period) and clones the process straight into
    // the cgroup2 directory; see process/mod.rs for the same at create.
    let (cg_tasks, cg_dir) = match &cgroup {
        Some(cg) => (
            cg.open_v1_tasks().context("join the container's cgroup")?,
            cg.open_unified().context("join the container's cgroup")?,
        ),
        None => (Vec::new(), None),
    };
    // The cgroup namespace is entered by the process itself once it is born in the
    // container's cgroup: from inside it the kernel may not let us name that cgroup
    // (nsdelegate).
    let cgroupns = join
        .iter()
        .position(|(t, _)| *t == oci_spec::runtime::LinuxNamespaceType::Cgroup)
        .map(|i| join.remove(i).1);
    let initial_cpus = process
        .exec_cpu_affinity()
        .as_ref()
        .and_then(|a| a.initial().clone());

    let mask = if opts.detach {
        None
    } else {
        Some(super::supervise::block_signals())
    };
    let (parent, child) = sync::pair()?;
    let joiner = unsafe { libc::fork() };
    if joiner < 0 {
        return Err(std::io::Error::last_os_error()).context("fork");
    }
    if joiner == 0 {
        unsafe { libc::close(parent.raw()) };
        let r = (|| -> Result<(i32, bool)> {
            if let Some(list) = &initial_cpus {
                crate::security::sched::set_affinity(list, "process.execCPUAffinity.initial")?;
            }
            crate::cgroups::Cgroup::join_v1(&cg_tasks).context("join the container's cgroup")?;
            namespaces::join(&join)?;
            let (pid, in_cgroup) = unsafe {
                sys::clone_maybe_into_cgroup(
                    libc::CLONE_PARENT as u64,
                    cg_dir.as_ref().map(|d| d.as_raw_fd()),
                )
            }
            .context("clone")?;
            if pid == 0 {
                let Err(e) = child_main(
                    &child,
                    &process,
                    console,
                    seccomp.as_ref(),
                    opts.preserve_fds,
                    cgroupns.as_ref(),
                );
                let _ = child.send(&Msg::Error(format!("{e:#}")));
                unsafe { libc::_exit(1) };
            }
            Ok((pid, in_cgroup))
        })();
        let _ = match r {
            Ok((pid, in_cgroup)) => child.send(&Msg::Pid { pid, in_cgroup }),
            Err(e) => child.send(&Msg::Error(format!("{e:#}"))),
        };
        unsafe { libc::_exit(0) };
    }
    drop(child);
    unsafe { libc::waitpid(joiner, std::ptr::null_mut(), 0) };
    let (pid, in_cgroup) = match parent.recv()? {
        Some(Msg::Pid { pid, in_cgroup }) => (pid, in_cgroup),
        Some(Msg::Error(e)) => bail!("{e}"),
        other => bail!("exec: joining the container failed: {other:?}"),
    };
    let kill = |e: anyhow::Error| -> anyhow::Error {
        unsafe {
            libc::kill(pid, libc::SIGKILL);
            libc::waitpid(pid, std::ptr::null_mut(), 0);
        }
        e
    };
    // The kernel could not clone it into the cgroup2 directory (if there is one):
    // move it there.
    if let (false, Some(cg)) = (in_cgroup, &cgroup) {
        cg.add_pid_unified(pid)
            .context("join the container's cgroup")
            .map_err(kill)?;
    }
    parent.send(&Msg::Go).map_err(kill)?;
    match parent.recv() {
        Ok(Some(Msg::Ready)) => {}
        Ok(Some(Msg::Error(e))) => return Err(kill(anyhow::anyhow!("{e}"))),
        Ok(other) => {
            return Err(kill(anyhow::anyhow!(
                "exec: process failed to start: {other:?}"
            )))
        }
        Err(e) => return Err(kill(e)),
    }
    if let Some(p) = &opts.pid_file {
        super::write_pid_file(p, pid)?;
    }
    let master = match proxy {
        Some(sock) => Some(crate::terminal::recv_fd(sock.as_raw_fd()).map_err(kill)?),
        None => None,
    };
    match mask {
        None => Ok(0),
        Some(set) => super::supervise::wait(pid, &set, master),
    }
}

fn child_main(
    sync: &sync::Channel,
    process: &Process,
    console: Option<OwnedFd>,
    seccomp: Option<&crate::seccomp::Program>,
    preserve_fds: u32,
    cgroupns: Option<&OwnedFd>,
) -> Result<std::convert::Infallible> {
    super::init::reset_signals();
    sync.expect(Msg::Go, "kura-runtime")?;
    if let Some(ns) = cgroupns {
        sys::errno_result(unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWCGROUP) })
            .context("join cgroup namespace")?;
    }
    if process.terminal().unwrap_or(false) {
        let console = console.context("terminal without console")?;
        let pty = crate::terminal::open_pty()?;
        if let Some(sz) = process.console_size() {
            crate::terminal::set_size(
                pty.master.as_raw_fd(),
                sz.height() as u16,
                sz.width() as u16,
            );
        }
        crate::terminal::send_fd(
            console.as_raw_fd(),
            pty.master.as_raw_fd(),
            &pty.slave_path.to_string_lossy(),
        )?;
        crate::terminal::become_controlling(&pty.slave_path)?;
    } else if unsafe { libc::setsid() } < 0 {
        bail!("setsid: {}", std::io::Error::last_os_error());
    }
    let env = super::init::prepare_common(process, preserve_fds, None)?;
    let exe = super::init::find_executable(process, &env)?;
    let mut sets = caps::from_spec(process.capabilities().as_ref());
    sets.limit_to(caps::held());
    let nnp = process.no_new_privileges().unwrap_or(false);
    if let (Some(p), false) = (seccomp, nnp) {
        crate::seccomp::install(p).context("linux.seccomp: install filter")?;
    }
    caps::apply_bounding(&sets)?;
    crate::security::user::switch(process.user(), crate::security::user::setgroups_allowed())?;
    caps::apply_sets(&sets)?;
    crate::security::stay_undumpable();
    if nnp {
        if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } < 0 {
            bail!(
                "process.noNewPrivileges: {}",
                std::io::Error::last_os_error()
            );
        }
        if let Some(p) = seccomp {
            crate::seccomp::install(p).context("linux.seccomp: install filter")?;
        }
    }
    sync.send(&Msg::Ready)?;
    // The runtime stops listening after Ready: report a failed execve on stderr.
    let e = super::init::exec(&exe, process, &env, None);
    super::init::fail(&format!("exec {}: {e}", exe.display()))
}
