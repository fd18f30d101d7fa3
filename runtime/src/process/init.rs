//! The container's init process, from the clone until execve. Runs every step of
//! the right-hand column in [`super`]'s diagram, reporting failures over the sync
//! socket so the runtime can undo everything.

use super::InitArgs;
use crate::hooks::{self, Kind};
use crate::rootfs::{self, mountinfo};
use crate::security::exec_trampoline::Trampoline;
use crate::security::{caps, lsm, rlimits, sched, user};
use crate::state::Status;
use crate::sync::{Channel, Msg};
use crate::sys;
use anyhow::{bail, Context, Result};
use oci_spec::runtime::{Process, Spec};
use std::convert::Infallible;
use std::ffi::CString;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Entry point in the cloned child; never returns.
pub fn main(args: &mut InitArgs, parent: &Channel) -> ! {
    // Our copy of the runtime's end would hide the runtime's death from us (no EOF).
    unsafe { libc::close(parent.raw()) };
    match run(args) {
        Ok(never) => match never {},
        Err(e) => {
            let _ = args.sync.send(&Msg::Error(format!("{e:#}")));
            unsafe { libc::_exit(1) }
        }
    }
}

/// The runtime blocks signals and Rust ignores SIGPIPE; both are inherited across
/// execve, and the container must start with a clean slate.
pub fn reset_signals() {
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
        for sig in 1..libc::SIGRTMAX() {
            if sig != libc::SIGKILL && sig != libc::SIGSTOP {
                libc::signal(sig, libc::SIG_DFL);
            }
        }
    }
}

fn host_pid() -> i32 {
    std::fs::read_link("/proc/self")
        .ok()
        .and_then(|p| p.to_str().and_then(|s| s.parse().ok()))
        .unwrap_or(0)
}

fn hook_state(args: &InitArgs, pid: i32, status: Status) -> String {
    serde_json::json!({
        "ociVersion": crate::OCI_VERSION,
        "id": args.id,
        "pid": pid,
        "status": status.as_str(),
        "bundle": args.bundle.dir,
        "annotations": args.bundle.spec.annotations().clone().unwrap_or_default(),
    })
    .to_string()
}

fn run(args: &mut InitArgs) -> Result<Infallible> {
    reset_signals();
    args.sync.expect(Msg::Go, "kura-runtime")?;
    // First, before anything is charged or namespaced: the v1 cgroups (the
    // unified one holds us already). We are still single-threaded, as join_v1 needs.
    crate::cgroups::Cgroup::join_v1(&args.cgroup_tasks)?;
    args.cgroup_tasks.clear();
    let spec: &Spec = &args.bundle.spec;
    if args.new_userns {
        // Become the mapped root so files we create are owned by a mapped id.
        check(
            unsafe { libc::syscall(libc::SYS_setresgid, 0, 0, 0) } as i32,
            "setresgid 0 in the user namespace",
        )?;
        check(
            unsafe { libc::syscall(libc::SYS_setresuid, 0, 0, 0) } as i32,
            "setresuid 0 in the user namespace",
        )?;
    }
    let wants_cgroupfs = spec
        .mounts()
        .iter()
        .flatten()
        .any(|m| matches!(m.typ().as_deref(), Some("cgroup") | Some("cgroup2")));
    // Our place in each hierarchy is visible only before the cgroup namespace hides it.
    let cgroups = if wants_cgroupfs {
        mountinfo::own_cgroups()
    } else {
        Vec::new()
    };
    if args.new_cgroupns {
        check(
            unsafe { libc::unshare(libc::CLONE_NEWCGROUP) },
            "create cgroup namespace",
        )?;
    }
    let hooks = spec.hooks().as_ref();
    let container_hooks = hooks::any(hooks, &[Kind::CreateContainer, Kind::StartContainer]);
    let pid = if container_hooks || args.seccomp_listener.is_some() {
        host_pid()
    } else {
        0
    };
    rootfs::check_rootfs(&args.bundle.rootfs)?;
    let setup = rootfs::Setup {
        spec,
        rootfs: &args.bundle.rootfs,
        bundle: &args.bundle.dir,
        userns: args.new_userns || has_ns(spec, oci_spec::runtime::LinuxNamespaceType::User),
        cgroupns: args.new_cgroupns,
        cgroups: &cgroups,
        notify_socket: args.notify_socket.as_deref(),
        host_mount_ns: !has_ns(spec, oci_spec::runtime::LinuxNamespaceType::Mount),
    };
    unsafe { libc::umask(0) };
    crate::log::step("init: before mounts");
    let root_fd = rootfs::prepare(&setup)?;
    crate::log::step("init: mounts done");
    if args.runtime_hooks {
        args.sync.send(&Msg::HooksRequest)?;
        args.sync
            .expect(Msg::Go, "kura-runtime (createRuntime hooks)")?;
    }
    hooks::run(
        hooks,
        Kind::CreateContainer,
        &hook_state(args, pid, Status::Creating),
    )?;
    let how = if setup.host_mount_ns {
        rootfs::RootSwitch::Chroot
    } else if args.no_pivot {
        rootfs::RootSwitch::MoveChroot
    } else {
        rootfs::RootSwitch::Pivot
    };
    let host_mount_ns = setup.host_mount_ns;
    rootfs::pivot(&args.bundle.rootfs, how)?;
    drop(root_fd);

    let Some(process) = spec.process().as_ref() else {
        // No process: the container exists but can never run; `start` refuses it.
        rootfs::finish(spec, host_mount_ns)?;
        args.sync.send(&Msg::Ready)?;
        let _ = wait_for_start(args.fifo.as_raw_fd());
        fail("process: not set in config.json; nothing to start");
    };
    if process.terminal().unwrap_or(false) {
        let console = args
            .console
            .take()
            .context("terminal without console socket")?;
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
        drop(console);
        rootfs::mount_console(&pty.slave_path)?;
        crate::terminal::become_controlling(&pty.slave_path)?;
    } else if unsafe { libc::setsid() } < 0 {
        bail!("setsid: {}", std::io::Error::last_os_error());
    }
    // Sysctls go in before readonlyPaths make /proc/sys read-only.
    rootfs::sysctl(spec)?;
    rootfs::finish(spec, host_mount_ns)?;
    if let Some(h) = spec.hostname() {
        nix::unistd::sethostname(h).with_context(|| format!("hostname: set {h:?}"))?;
    }
    if let Some(d) = spec.domainname() {
        let c = CString::new(d.as_str())?;
        check(
            unsafe { libc::setdomainname(c.as_ptr(), d.len()) },
            "domainname",
        )?;
    }
    if !args.no_new_keyring {
        join_session_keyring(args.id);
    }
    let linux = spec.linux().as_ref();
    if let Some(p) = linux.and_then(|l| l.personality().as_ref()) {
        sched::apply_personality(p)?;
    }
    crate::log::step("init: rootfs final");
    let env = prepare_common(process, args.preserve_fds, args.notify_socket.as_deref())?;
    let exe = find_executable(process, &env)?;

    let mut sets = caps::from_spec(process.capabilities().as_ref());
    let dropped = sets.limit_to(caps::held());
    if !dropped.is_empty() {
        crate::log::warn(&format!(
            "process.capabilities: the runtime does not hold {}; not granted",
            dropped.join(", ")
        ));
    }
    let nnp = process.no_new_privileges().unwrap_or(false);
    let mut listener = None;
    if let (Some(p), false) = (&args.seccomp, nnp) {
        listener = crate::seccomp::install(p).context("linux.seccomp: install filter")?;
    }
    caps::apply_bounding(&sets)?;
    user::switch(process.user(), user::setgroups_allowed())?;
    caps::apply_sets(&sets)?;
    crate::security::stay_undumpable();
    if nnp {
        check(
            unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) },
            "process.noNewPrivileges",
        )?;
        if let Some(p) = &args.seccomp {
            listener = crate::seccomp::install(p).context("linux.seccomp: install filter")?;
        }
    }
    if let (Some(fd), Some(sock)) = (listener, args.seccomp_listener.take()) {
        send_seccomp_fd(args, pid, &sock, &fd)?;
    }
    crate::log::step("init: ready");
    args.sync.send(&Msg::Ready)?;
    // The runtime's `create` exits now; from here on errors go to our stderr.
    let fifo = args.fifo.as_raw_fd();
    if let Err(e) = wait_for_start(fifo) {
        fail(&format!("{e:#}"));
    }
    if let Err(e) = hooks::run(
        hooks,
        Kind::StartContainer,
        &hook_state(args, pid, Status::Created),
    ) {
        fail(&format!("{e:#}"));
    }
    let e = exec(&exe, process, &env, args.trampoline.as_ref());
    fail(&format!("exec {}: {e}", exe.display()));
}

fn has_ns(spec: &Spec, t: oci_spec::runtime::LinuxNamespaceType) -> bool {
    spec.linux()
        .as_ref()
        .and_then(|l| l.namespaces().as_ref())
        .is_some_and(|n| n.iter().any(|n| n.typ() == t))
}

pub fn fail(msg: &str) -> ! {
    let line = format!("kura-runtime: {msg}\n");
    unsafe {
        libc::write(2, line.as_ptr().cast(), line.len());
        libc::_exit(127)
    }
}

fn check(r: i32, what: &str) -> Result<()> {
    if r < 0 {
        return Err(std::io::Error::last_os_error()).with_context(|| what.to_owned());
    }
    Ok(())
}

/// Steps shared by init and exec'd processes, after the filesystem is final:
/// limits, scheduling, LSM labels, umask, fds, cwd. Returns the environment.
pub fn prepare_common(
    process: &Process,
    preserve_fds: u32,
    notify: Option<&Path>,
) -> Result<Vec<CString>> {
    if let Some(v) = process.oom_score_adj() {
        sched::set_oom_score_adj(v)?;
    }
    if let Some(r) = process.rlimits() {
        rlimits::apply(r)?;
    }
    if let Some(s) = process.scheduler() {
        sched::apply_scheduler(s)?;
    }
    if let Some(p) = process.io_priority() {
        sched::apply_io_priority(p)?;
    }
    if let Some(list) = process
        .exec_cpu_affinity()
        .as_ref()
        .and_then(|a| a.cpu_affinity_final().as_deref())
    {
        sched::set_affinity(list, "process.execCPUAffinity.final")?;
    }
    lsm::apply(
        process.apparmor_profile().as_deref(),
        process.selinux_label().as_deref(),
    )?;
    unsafe { libc::umask(process.user().umask().unwrap_or(0o022) as libc::mode_t) };
    close_fds_from(3 + preserve_fds as i32)?;
    chdir_inside(process.cwd())?;

    let mut env: Vec<CString> = Vec::new();
    let mut has_home = false;
    for e in process.env().iter().flatten() {
        has_home |= e.starts_with("HOME=");
        env.push(
            CString::new(e.as_str()).with_context(|| format!("process.env: NUL byte in {e:?}"))?,
        );
    }
    if !has_home {
        env.push(CString::new(format!(
            "HOME={}",
            user::home_for(process.user().uid())
        ))?);
    }
    if preserve_fds > 0 && std::env::var_os("LISTEN_FDS").is_some() {
        env.push(CString::new(format!(
            "LISTEN_FDS={}",
            std::env::var("LISTEN_FDS").unwrap_or_default()
        ))?);
        env.push(CString::new(format!("LISTEN_PID={}", std::process::id()))?);
    }
    if let Some(n) = notify {
        env.push(CString::new(format!("NOTIFY_SOCKET={}", n.display()))?);
    }
    Ok(env)
}

/// Marks every fd from `first` up close-on-exec, so nothing of the runtime's (a host
/// directory above all, CVE-2024-21626) reaches the container.
fn close_fds_from(first: i32) -> Result<()> {
    let r = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            first as u32,
            u32::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        )
    };
    if r == 0 {
        return Ok(());
    }
    for e in std::fs::read_dir("/proc/self/fd")
        .context("list /proc/self/fd")?
        .flatten()
    {
        if let Some(fd) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) {
            if fd >= first {
                unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
            }
        }
    }
    Ok(())
}

/// chdir to process.cwd (creating nothing) and make sure it is inside our root: a
/// cwd reached through a leaked fd would be "(unreachable)" to getcwd.
fn chdir_inside(cwd: &Path) -> Result<()> {
    let c = CString::new(cwd.as_os_str().as_bytes())?;
    check(
        unsafe { libc::chdir(c.as_ptr()) },
        &format!("process.cwd: chdir {}", cwd.display()),
    )?;
    let here = std::env::current_dir().context("process.cwd: getcwd")?;
    if !here.is_absolute() || here.starts_with("(unreachable)") {
        bail!(
            "process.cwd: {} is outside the container root",
            cwd.display()
        );
    }
    Ok(())
}

/// Looks args[0] up in the process's PATH now, so a missing binary fails `create`
/// with a clear message instead of failing after `start`.
pub fn find_executable(process: &Process, env: &[CString]) -> Result<PathBuf> {
    let args = process.args().as_deref().unwrap_or(&[]);
    let name = args.first().context("process.args: empty")?;
    let ok = |p: &Path| {
        let c = match CString::new(p.as_os_str().as_bytes()) {
            Ok(c) => c,
            Err(_) => return false,
        };
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        let found = unsafe { libc::stat(c.as_ptr(), &mut st) } == 0;
        found && (st.st_mode & libc::S_IFMT) == libc::S_IFREG && st.st_mode & 0o111 != 0
    };
    // The kernel refuses to exec from a noexec mount; said now, at create, rather than
    // by a bare errno after start.
    let exec_allowed = |p: PathBuf| -> Result<PathBuf> {
        let c = CString::new(p.as_os_str().as_bytes())?;
        let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
        if unsafe { libc::statvfs(c.as_ptr(), &mut st) } == 0 && st.f_flag & libc::ST_NOEXEC != 0 {
            bail!("process.args[0]: {} is on a noexec mount", p.display());
        }
        Ok(p)
    };
    if name.contains('/') {
        let p = PathBuf::from(name);
        if ok(&p) {
            return exec_allowed(p);
        }
        bail!("process.args[0]: {name:?}: no such executable in the container");
    }
    let path = env
        .iter()
        .find_map(|e| {
            e.to_bytes()
                .strip_prefix(b"PATH=")
                .map(|v| String::from_utf8_lossy(v).into_owned())
        })
        .unwrap_or_else(|| DEFAULT_PATH.to_owned());
    for dir in path.split(':') {
        let dir = if dir.is_empty() { "." } else { dir };
        let p = Path::new(dir).join(name);
        if ok(&p) {
            return exec_allowed(p);
        }
    }
    bail!("process.args[0]: {name:?}: executable file not found in $PATH")
}

fn wait_for_start(fifo: i32) -> Result<()> {
    let p = sys::proc_fd_path(fifo);
    let fd = unsafe { libc::open(p.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error())
            .context("open exec fifo (is /proc mounted in the container?)");
    }
    let r = unsafe { libc::write(fd, b"0".as_ptr().cast(), 1) };
    unsafe { libc::close(fd) };
    if r != 1 {
        bail!("write exec fifo: {}", std::io::Error::last_os_error());
    }
    Ok(())
}

/// Execs the container's program: through the trampoline when the runtime has one
/// (see `security::exec_trampoline`), else directly (the runtime then already runs
/// from a protected copy of itself).
pub fn exec(
    exe: &Path,
    process: &Process,
    env: &[CString],
    via: Option<&Trampoline>,
) -> std::io::Error {
    let Ok(path) = CString::new(exe.as_os_str().as_bytes()) else {
        return std::io::Error::from_raw_os_error(libc::EINVAL);
    };
    let argv: Vec<CString> = process
        .args()
        .iter()
        .flatten()
        .map(|a| CString::new(a.as_str()).unwrap_or_default())
        .collect();
    if let Some(t) = via {
        return t.exec(&path, &argv, env);
    }
    let mut argv_p: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).collect();
    argv_p.push(std::ptr::null());
    let mut env_p: Vec<*const libc::c_char> = env.iter().map(|a| a.as_ptr()).collect();
    env_p.push(std::ptr::null());
    unsafe { libc::execve(path.as_ptr(), argv_p.as_ptr(), env_p.as_ptr()) };
    std::io::Error::last_os_error()
}

/// Joins a fresh session keyring named after the container, so containers do not
/// share the host's keys. Kernels or user namespaces that refuse it are not fatal.
fn join_session_keyring(id: &str) {
    const KEYCTL_JOIN_SESSION_KEYRING: libc::c_long = 1;
    if let Ok(name) = CString::new(format!("_ses.{id}")) {
        let r =
            unsafe { libc::syscall(libc::SYS_keyctl, KEYCTL_JOIN_SESSION_KEYRING, name.as_ptr()) };
        if r < 0 {
            crate::log::debug(&format!(
                "join session keyring: {}",
                std::io::Error::last_os_error()
            ));
        }
    }
}

/// Hands the seccomp notify fd to listenerPath with the container state, as the
/// spec's seccomp-notify protocol describes.
fn send_seccomp_fd(args: &InitArgs, pid: i32, sock: &OwnedFd, fd: &OwnedFd) -> Result<()> {
    let meta = args
        .bundle
        .spec
        .linux()
        .as_ref()
        .and_then(|l| l.seccomp().as_ref())
        .and_then(|s| s.listener_metadata().clone())
        .unwrap_or_default();
    let msg = serde_json::json!({
        "ociVersion": crate::OCI_VERSION,
        "fds": ["seccompFd"],
        "pid": pid,
        "metadata": meta,
        "state": serde_json::from_str::<serde_json::Value>(&hook_state(args, pid, Status::Creating))?,
    })
    .to_string();
    crate::terminal::send_fd_with(sock.as_raw_fd(), fd.as_raw_fd(), msg.as_bytes())
        .context("linux.seccomp.listenerPath: send notify fd")
}
