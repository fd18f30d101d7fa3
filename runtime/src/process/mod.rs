//! The process model: who forks whom, and which namespaces each step enters.
//!
//! ```text
//!  kura-runtime create (host)                      container init
//!  ─────────────────────────                       ──────────────
//!  validate config, mkdir state dir,
//!  create cgroup + apply resources,
//!  mkfifo exec.fifo, socketpair(sync)
//!  [joining namespaces by path or a new time ns?
//!     fork a bridge: setns(paths, user first),
//!     unshare(CLONE_NEWTIME) + offsets, and clone
//!     with CLONE_PARENT so init is still our child]
//!  clone3(CLONE_NEW{USER,PID,NS,NET,IPC,UTS},          pid 1 in its pid ns, born in
//!         CLONE_INTO_CGROUP) ──────────────────────►  its cgroup2 dir (v2/hybrid)
//!  write uid/gid maps                                     │ (waits)
//!  send Go ───────────────────────────────────────────►  │ join v1 cgroups (write 0 to tasks)
//!                                                          │ unshare(CLONE_NEWCGROUP)
//!                                                          │ mounts, devices (rootfs)
//!  run prestart + createRuntime hooks  ◄── HooksRequest ──│ (only if there are hooks)
//!  send Go ───────────────────────────────────────────►  │ createContainer hooks
//!                                                          │ pivot_root, masked/ro paths,
//!                                                          │ sysctl, hostname, pty, rlimits,
//!                                                          │ seccomp, uid/gid, capabilities
//!  write state.json, --pid-file; exit  ◄────── Ready ─────│ open(exec.fifo, O_WRONLY)  (blocks)
//!
//!  kura-runtime start: open(exec.fifo, O_RDONLY) ─────►  │ write 1 byte; startContainer hooks
//!  read the byte, unlink fifo, poststart hooks             │ execve(process.args)
//! ```
//!
//! There is no re-exec: init is a clone of the runtime that already holds the parsed
//! config. Every step fails by sending `Error` over the sync socket; the runtime then
//! kills init and removes the cgroup and state dir, so nothing is left behind.

pub mod exec;
pub mod init;
pub mod supervise;

use crate::cgroups::Cgroup;
use crate::hooks::{self, Kind};
use crate::namespaces::{self, Plan};
use crate::spec::Bundle;
use crate::state::{self, State, Status};
use crate::sync::{self, Channel, Msg};
use crate::{log, sys};
use anyhow::{bail, Context, Result};
use oci_spec::runtime::LinuxNamespaceType;
use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

pub struct CreateOpts {
    pub id: String,
    pub root: PathBuf,
    pub bundle: PathBuf,
    pub console_socket: Option<PathBuf>,
    /// For `run` in the foreground with a terminal: our end of a socketpair to
    /// receive the pty master on, in place of an external console socket.
    pub console_fd: Option<OwnedFd>,
    pub pid_file: Option<PathBuf>,
    pub no_pivot: bool,
    pub no_new_keyring: bool,
    pub preserve_fds: u32,
    pub systemd_cgroup: bool,
}

/// Undoes a half-made container unless disarmed: kills init, removes the cgroup
/// and the state dir. Bad input must leave nothing behind.
struct Cleanup {
    dir: Option<PathBuf>,
    cgroup: Option<Cgroup>,
    pid: i32,
}

impl Cleanup {
    fn disarm(mut self) {
        self.dir = None;
        self.cgroup = None;
        self.pid = 0;
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if self.pid > 0 {
            unsafe {
                libc::kill(self.pid, libc::SIGKILL);
                libc::waitpid(self.pid, std::ptr::null_mut(), 0);
            }
        }
        if let Some(cg) = self.cgroup.take() {
            let _ = cg.kill_all(libc::SIGKILL);
            if let Err(e) = cg.destroy() {
                log::warn(&format!("cleanup: remove cgroup: {e:#}"));
            }
        }
        if let Some(d) = self.dir.take() {
            let _ = std::fs::remove_dir_all(&d);
        }
    }
}

/// Everything init needs, built before the clone so init never re-parses anything.
pub struct InitArgs<'a> {
    pub bundle: &'a Bundle,
    pub id: &'a str,
    pub sync: Channel,
    pub fifo: OwnedFd,
    pub console: Option<OwnedFd>,
    pub seccomp_listener: Option<OwnedFd>,
    pub new_userns: bool,
    pub new_cgroupns: bool,
    pub no_pivot: bool,
    pub no_new_keyring: bool,
    pub preserve_fds: u32,
    pub notify_socket: Option<PathBuf>,
    pub runtime_hooks: bool,
    pub seccomp: Option<crate::seccomp::Program>,
    /// v1 `tasks` files init writes itself into (`Cgroup::join_v1`).
    pub cgroup_tasks: Vec<(PathBuf, OwnedFd)>,
    /// What init execs the container's program through (CVE-2019-5736).
    pub trampoline: Option<crate::security::exec_trampoline::Trampoline>,
}

/// Creates the container; returns its state and whether it has a terminal.
pub fn create(opts: CreateOpts) -> Result<(State, bool)> {
    state::validate_id(&opts.id)?;
    let bundle = crate::spec::load_bundle(&opts.bundle)?;
    let spec = &bundle.spec;
    let process = spec.process().as_ref();
    let terminal = process.and_then(|p| p.terminal()).unwrap_or(false);
    if terminal && opts.console_socket.is_none() && opts.console_fd.is_none() {
        bail!("process.terminal is true: --console-socket is required");
    }
    if !terminal && opts.console_socket.is_some() {
        bail!("--console-socket given but process.terminal is false");
    }
    if let Some(p) = process {
        crate::security::lsm::validate(
            p.apparmor_profile().as_deref(),
            p.selinux_label().as_deref(),
        )?;
    }
    let seccomp = match spec.linux().as_ref().and_then(|l| l.seccomp().as_ref()) {
        Some(s) => Some(crate::seccomp::compile(s)?),
        None => None,
    };
    // Before anything is connected to or created: this may restart the command.
    let trampoline = crate::security::exe_guard::plan(spec)?;
    let seccomp_listener = match spec
        .linux()
        .as_ref()
        .and_then(|l| l.seccomp().as_ref())
        .and_then(|s| s.listener_path().as_ref())
    {
        Some(p) if seccomp.as_ref().is_some_and(|s| s.notify) => Some(
            std::os::unix::net::UnixStream::connect(p)
                .map(OwnedFd::from)
                .with_context(|| format!("linux.seccomp.listenerPath: connect {}", p.display()))?,
        ),
        _ => None,
    };
    let console = match (&opts.console_socket, opts.console_fd) {
        (Some(p), _) => Some(crate::terminal::connect(p)?),
        (None, Some(fd)) if terminal => Some(fd),
        _ => None,
    };
    crate::log::step("config loaded");
    let plan = namespaces::plan(spec)?;
    let cgroup = Cgroup::new(
        spec.linux()
            .as_ref()
            .and_then(|l| l.cgroups_path().as_ref())
            .map(|p| p.to_string_lossy())
            .as_deref(),
        &opts.id,
        opts.systemd_cgroup,
    )
    .context("linux.cgroupsPath")?;
    let resources = crate::spec::resources_with_defaults(spec);
    crate::cgroups::validate(&resources, crate::cgroups::detect()?).context("linux.resources")?;

    // From here on we change the system; the guard undoes it on any error.
    std::fs::create_dir_all(&opts.root)
        .with_context(|| format!("--root {}", opts.root.display()))?;
    let dir = state::container_dir(&opts.root, &opts.id);
    // 0700: the state (and the fifo in it) is root's business; init reaches the
    // fifo through its already-open fd, so it needs no search permission here.
    match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            bail!("container {} already exists", opts.id)
        }
        Err(e) => return Err(e).with_context(|| format!("create {}", dir.display())),
    }
    let mut guard = Cleanup {
        dir: Some(dir.clone()),
        cgroup: None,
        pid: 0,
    };
    std::fs::write(dir.join(state::CONFIG_FILE), &bundle.raw).context("save config.json")?;
    let fifo_path = dir.join(state::EXEC_FIFO);
    let cfifo = CString::new(fifo_path.as_os_str().as_bytes())?;
    sys::errno_result(unsafe { libc::mkfifo(cfifo.as_ptr(), 0o622) })
        .context("mkfifo exec.fifo")?;
    // mkfifo's mode passes through the umask; the write bits for others matter.
    sys::errno_result(unsafe { libc::chmod(cfifo.as_ptr(), 0o622) }).context("chmod exec.fifo")?;
    // Init opens the fifo for writing as the process's user (0622 lets any uid);
    // in a user namespace the container's root is another host uid, which owns it.
    if let Some((uid, gid)) = mapped_root(spec) {
        sys::errno_result(unsafe { libc::chown(cfifo.as_ptr(), uid, gid) })
            .context("chown exec.fifo")?;
    }
    let fifo = {
        let fd = unsafe { libc::open(cfifo.as_ptr(), libc::O_PATH | libc::O_CLOEXEC) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error()).context("open exec.fifo");
        }
        unsafe { OwnedFd::from_raw_fd(fd) }
    };

    crate::log::step("state dir");
    cgroup.create().context("create cgroup")?;
    guard.cgroup = Some(cgroup.clone());
    cgroup.apply(&resources)?;

    crate::log::step("cgroup ready");
    let notify_socket = std::env::var_os("NOTIFY_SOCKET")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute() && p.exists());
    let (parent, child) = sync::pair()?;
    let mut args = InitArgs {
        bundle: &bundle,
        id: &opts.id,
        sync: child,
        fifo,
        console,
        seccomp_listener,
        new_userns: plan.has_new(LinuxNamespaceType::User),
        new_cgroupns: plan.has_new(LinuxNamespaceType::Cgroup),
        no_pivot: opts.no_pivot,
        no_new_keyring: opts.no_new_keyring,
        preserve_fds: opts.preserve_fds + listen_fds(),
        notify_socket,
        runtime_hooks: hooks::any(
            spec.hooks().as_ref(),
            &[Kind::Prestart, Kind::CreateRuntime],
        ),
        seccomp,
        cgroup_tasks: cgroup.open_v1_tasks().context("linux.cgroupsPath")?,
        trampoline,
    };
    let cgroup_dir = cgroup.open_unified().context("linux.cgroupsPath")?;
    let (pid, born_in_cgroup) = spawn_init(&plan, &parent, &mut args, cgroup_dir.as_ref())?;
    drop(cgroup_dir);
    crate::log::step("init cloned");
    guard.pid = pid;
    drop(args);

    let linux = spec.linux().as_ref();
    if plan.has_new(LinuxNamespaceType::User) {
        let none = Vec::new();
        let u = linux
            .and_then(|l| l.uid_mappings().as_ref())
            .unwrap_or(&none);
        let g = linux
            .and_then(|l| l.gid_mappings().as_ref())
            .unwrap_or(&none);
        namespaces::write_id_maps(pid, u, g)?;
    }
    // Init joins the v1 hierarchies itself once it has Go.
    if !born_in_cgroup {
        cgroup
            .add_pid_unified(pid)
            .context("add init to its cgroup")?;
    }
    parent.send(&Msg::Go)?;

    crate::log::step("init released");
    let mut st = State {
        id: opts.id.clone(),
        pid,
        pid_start: 0,
        bundle: bundle.dir.clone(),
        rootfs: bundle.rootfs.clone(),
        created: log::rfc3339(std::time::SystemTime::now()),
        annotations: spec.annotations().clone().unwrap_or_default(),
        cgroup: Some(cgroup.clone()),
        owner: owner_name(),
        start_needs_spec: Some(
            spec.process().is_none() || has_hooks(spec.hooks(), |h| h.poststart()),
        ),
        delete_needs_spec: Some(!has_mount_ns(spec) || has_hooks(spec.hooks(), |h| h.poststop())),
    };
    loop {
        match parent.recv()? {
            Some(Msg::HooksRequest) => {
                // prestart predates the created/creating split: its state says created, as runc's does.
                hooks::run(
                    spec.hooks().as_ref(),
                    Kind::Prestart,
                    &st.hook_json(Status::Created),
                )?;
                hooks::run(
                    spec.hooks().as_ref(),
                    Kind::CreateRuntime,
                    &st.hook_json(Status::Creating),
                )?;
                parent.send(&Msg::Go)?;
            }
            Some(Msg::Ready) => break,
            Some(Msg::Error(e)) => bail!("{e}"),
            Some(m) => bail!("sync: unexpected {m:?} from init"),
            None => bail!("container init exited during setup ({})", wait_status(pid)),
        }
    }
    crate::log::step("init ready");
    st.pid_start = state::proc_stat(pid)
        .map(|(_, s)| s)
        .context("container init vanished")?;
    st.save(&opts.root)?;
    if let Some(p) = &opts.pid_file {
        write_pid_file(p, pid)?;
    }
    guard.disarm();
    Ok((st, terminal))
}

/// The host uid/gid of the container's root when the config maps ids.
/// Whether the container gets (or joins) a mount namespace; without one its mounts
/// are the host's, and delete must unmount them.
pub fn has_mount_ns(spec: &oci_spec::runtime::Spec) -> bool {
    spec.linux()
        .as_ref()
        .and_then(|l| l.namespaces().as_ref())
        .is_some_and(|n| n.iter().any(|n| n.typ() == LinuxNamespaceType::Mount))
}

fn has_hooks(
    hooks: &Option<oci_spec::runtime::Hooks>,
    kind: impl Fn(&oci_spec::runtime::Hooks) -> &Option<Vec<oci_spec::runtime::Hook>>,
) -> bool {
    hooks
        .as_ref()
        .and_then(|h| kind(h).as_ref())
        .is_some_and(|v| !v.is_empty())
}

fn mapped_root(spec: &oci_spec::runtime::Spec) -> Option<(u32, u32)> {
    let l = spec.linux().as_ref()?;
    let find = |maps: &Option<Vec<oci_spec::runtime::LinuxIdMapping>>| {
        maps.iter()
            .flatten()
            .find(|m| m.container_id() == 0 && m.size() > 0)
            .map(|m| m.host_id())
    };
    Some((find(l.uid_mappings())?, find(l.gid_mappings())?))
}

/// Number of fds systemd socket activation passes (LISTEN_FDS), kept open for the container.
fn listen_fds() -> u32 {
    match (std::env::var("LISTEN_FDS"), std::env::var("LISTEN_PID")) {
        (Ok(n), Ok(p)) if p.parse::<u32>().ok() == Some(std::process::id()) => {
            n.parse().unwrap_or(0)
        }
        (Ok(n), Err(_)) => n.parse().unwrap_or(0),
        _ => 0,
    }
}

fn owner_name() -> String {
    let uid = unsafe { libc::geteuid() };
    if uid == 0 {
        "root".into()
    } else {
        uid.to_string()
    }
}

/// Reaps `pid` if it exited and describes how, for "init died" errors.
pub fn wait_status(pid: i32) -> String {
    let mut st = 0;
    let r = unsafe { libc::waitpid(pid, &mut st, libc::WNOHANG) };
    if r == pid {
        if libc::WIFEXITED(st) {
            return format!("exit status {}", libc::WEXITSTATUS(st));
        }
        if libc::WIFSIGNALED(st) {
            return format!("killed by signal {}", libc::WTERMSIG(st));
        }
    }
    "no status".into()
}

/// Writes the pid file atomically (tmp + rename) so a reader never sees it half-written.
pub fn write_pid_file(p: &Path, pid: i32) -> Result<()> {
    let p = if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir()?.join(p)
    };
    let dir = p.parent().context("--pid-file has no directory")?;
    let tmp = dir.join(format!(
        ".{}.tmp",
        p.file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default()
    ));
    std::fs::write(&tmp, pid.to_string())
        .with_context(|| format!("--pid-file: write {}", tmp.display()))?;
    std::fs::rename(&tmp, &p).with_context(|| format!("--pid-file: rename to {}", p.display()))?;
    Ok(())
}

/// Clones init (directly, or through a bridge process that first joins namespaces).
/// Returns init's pid in our pid namespace, and whether init was born in the
/// unified cgroup `cgroup_dir` (then it must not be moved there again).
fn spawn_init(
    plan: &Plan,
    parent: &Channel,
    args: &mut InitArgs,
    cgroup_dir: Option<&OwnedFd>,
) -> Result<(i32, bool)> {
    let time_new = plan.has_new(LinuxNamespaceType::Time);
    let new_flags = plan.new & !((libc::CLONE_NEWCGROUP | libc::CLONE_NEWTIME) as u64);
    // A joined cgroup namespace may not see our cgroup (nsdelegate): then migrate.
    let joins_cgroupns = plan
        .join
        .iter()
        .any(|(t, _)| *t == LinuxNamespaceType::Cgroup);
    let cgroup_fd = cgroup_dir
        .filter(|_| !joins_cgroupns)
        .map(|d| d.as_raw_fd());
    // Born in the cgroup if the kernel can; else an ordinary clone, moved later.
    let clone = |flags: u64| {
        unsafe { sys::clone_maybe_into_cgroup(flags, cgroup_fd) }.context("clone container init")
    };
    if plan.join.is_empty() && !time_new {
        let (pid, born_in_cgroup) = clone(new_flags)?;
        if pid == 0 {
            init::main(args, parent);
        }
        return Ok((pid, born_in_cgroup));
    }
    let bridge = unsafe { libc::fork() };
    if bridge < 0 {
        return Err(std::io::Error::last_os_error()).context("fork");
    }
    if bridge == 0 {
        let r = (|| -> Result<(i32, bool)> {
            namespaces::join(&plan.join)?;
            if time_new {
                sys::errno_result(unsafe { libc::unshare(libc::CLONE_NEWTIME) })
                    .context("create time namespace")?;
                namespaces::write_time_offsets(&args.bundle.spec)?;
            }
            let (pid, born_in_cgroup) = clone(new_flags | libc::CLONE_PARENT as u64)?;
            if pid == 0 {
                init::main(args, parent);
            }
            Ok((pid, born_in_cgroup))
        })();
        let _ = match r {
            Ok((pid, in_cgroup)) => args.sync.send(&Msg::Pid { pid, in_cgroup }),
            Err(e) => args.sync.send(&Msg::Error(format!("{e:#}"))),
        };
        unsafe { libc::_exit(0) };
    }
    unsafe { libc::waitpid(bridge, std::ptr::null_mut(), 0) };
    match parent.recv()? {
        Some(Msg::Pid { pid, in_cgroup }) => Ok((pid, in_cgroup)),
        Some(Msg::Error(e)) => bail!("{e}"),
        other => bail!("namespace bridge failed: {other:?}"),
    }
}

pub fn raw_fd(fd: &OwnedFd) -> i32 {
    fd.as_raw_fd()
}
