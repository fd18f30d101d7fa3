//! The container this shim supervises: its bundle, runtime, init and exec'd
//! processes. Runs the runtime for each lifecycle step and turns reaped exits into
//! durable records, drained output, and exit events.

use crate::cgroup::{Cgroup, OomWatch};
use crate::console::ConsoleSocket;
use crate::control::Control;
use crate::error::{Error, Result};
use crate::events::{topic, type_url, Publisher};
use crate::exitfile::{ExitRecord, ShimState};
use crate::logfile::LogFile;
use crate::options::CreateOptions;
use crate::paths::{self, bundle as files};
use crate::process::{ExitInfo, Proc, Status};
use crate::reaper::{Exit, Reaper};
use crate::runtime::{self, ProcStdio, Runtime};
use crate::stdio::{Io, StdioSpec};
use crate::{log, mount, time};
use containerd_shim_protos::events::task::TaskExit;
use containerd_shim_protos::types::mount::Mount;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How long exit handling waits for a process's output to be copied out. A daemon the
/// process left behind can hold the pipe open forever; the exit must not wait for it.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);
const CONSOLE_TIMEOUT: Duration = Duration::from_secs(10);

/// Everything a process's exit handler needs, shared with the reaper's callback.
#[derive(Clone)]
pub struct Env {
    pub namespace: String,
    pub reaper: Arc<Reaper>,
    pub publisher: Arc<Publisher>,
    pub control: Arc<Control>,
}

pub struct Container {
    pub id: String,
    pub bundle: PathBuf,
    pub runtime: Runtime,
    pub init: Arc<Proc>,
    pub execs: Mutex<HashMap<String, Arc<Proc>>>,
    pub cgroup: Option<Cgroup>,
    mounted_rootfs: bool,
    /// The container has no pid namespace of its own (host's, or another's).
    shares_pid_ns: bool,
    env: Env,
}

pub struct CreateRequest<'a> {
    pub id: &'a str,
    pub bundle: &'a Path,
    pub rootfs: &'a [Mount],
    pub stdio: StdioSpec,
    pub options: CreateOptions,
}

fn runtime_for(env: &Env, bundle: &Path, o: &CreateOptions) -> Runtime {
    let binary = match &o.binary_name {
        Some(b) => runtime::find_in_path(&b.to_string_lossy()).unwrap_or_else(|| b.clone()),
        None => match std::env::var("KURA_SHIM_RUNTIME") {
            Ok(b) if !b.is_empty() => runtime::find_in_path(&b).unwrap_or_else(|| b.into()),
            _ => runtime::default_binary(),
        },
    };
    let root = o
        .root
        .clone()
        .unwrap_or_else(|| paths::run_dir().join("runtime").join(&env.namespace));
    Runtime {
        binary,
        root,
        systemd_cgroup: o.systemd_cgroup,
        log: bundle.join(files::RUNTIME_LOG),
    }
}

fn mount_rootfs(bundle: &Path, rootfs: &[Mount]) -> Result<bool> {
    if rootfs.is_empty() {
        return Ok(false);
    }
    let target = bundle.join("rootfs");
    std::fs::create_dir_all(&target).map_err(|e| Error::io("create rootfs dir", e))?;
    for m in rootfs {
        let spec = mount::MountSpec {
            kind: &m.type_,
            source: &m.source,
            options: &m.options,
        };
        if let Err(e) = mount::mount(&spec, &target) {
            let _ = mount::unmount_all(&target);
            return Err(Error::internal(format!(
                "mount rootfs ({} {}): {e}",
                m.type_, m.source
            )));
        }
    }
    Ok(true)
}

/// Whether config.json gives the container a new pid namespace (a `pid` entry
/// without a path to join). Unreadable config: assume it does, the common case.
fn own_pid_namespace(bundle: &Path) -> bool {
    let Ok(text) = std::fs::read(bundle.join("config.json")) else {
        return true;
    };
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(&text) else {
        return true;
    };
    v["linux"]["namespaces"].as_array().is_some_and(|ns| {
        ns.iter()
            .any(|n| n["type"] == "pid" && n["path"].as_str().map_or(true, str::is_empty))
    })
}

fn read_pid(path: &Path) -> Result<u32> {
    let s = std::fs::read_to_string(path)
        .map_err(|e| Error::io(format!("read {}", path.display()), e))?;
    s.trim()
        .parse()
        .map_err(|_| Error::internal(format!("bad pid file {}: {s:?}", path.display())))
}

/// Starts a process through `launch` (runtime create or exec) with its stdio wired:
/// pipes, or a pty passed back over a console socket.
fn launch(
    stdio: &StdioSpec,
    log: Option<&Arc<LogFile>>,
    launch: impl FnOnce(Option<&Path>, ProcStdio) -> Result<()>,
) -> Result<Arc<Io>> {
    if stdio.terminal {
        let sock = ConsoleSocket::new(&paths::run_dir().join("s"))
            .map_err(|e| Error::io("console socket", e))?;
        launch(Some(sock.path()), ProcStdio::null())?;
        let master = sock
            .receive(CONSOLE_TIMEOUT)
            .map_err(|e| Error::io("receive console", e))?;
        Io::console(stdio, master, log).map_err(|e| Error::io("console io", e))
    } else {
        let (io, child) = Io::pipes(stdio, log).map_err(|e| Error::io("open stdio", e))?;
        launch(None, child)?;
        Ok(io)
    }
}

impl Container {
    pub fn create(env: Env, req: CreateRequest) -> Result<Arc<Container>> {
        let runtime = runtime_for(&env, req.bundle, &req.options);
        let mounted_rootfs = mount_rootfs(req.bundle, req.rootfs)?;
        let state = ShimState {
            runtime: runtime.binary.clone(),
            runtime_root: runtime.root.clone(),
            systemd_cgroup: runtime.systemd_cgroup,
            mounted_rootfs,
        };
        let undo = |e: Error| {
            if mounted_rootfs {
                let _ = mount::unmount_all(&req.bundle.join("rootfs"));
            }
            e
        };
        state
            .write(&req.bundle.join(files::STATE))
            .map_err(|e| undo(Error::io("write shim state", e)))?;
        let log = match &req.options.log {
            Some((p, f)) => Some(
                LogFile::open(p, *f)
                    .map_err(|e| undo(Error::io(format!("open log {}", p.display()), e)))?,
            ),
            None => None,
        };
        let pid_file = req.bundle.join(files::INIT_PID);
        let _ = std::fs::remove_file(&pid_file);
        let created = launch(&req.stdio, log.as_ref(), |console, stdio| {
            runtime.create(&env.reaper, req.id, req.bundle, &pid_file, console, stdio)
        })
        .and_then(|io| Ok((io, read_pid(&pid_file)?)));
        let (io, pid) = match created {
            Ok(v) => v,
            Err(e) => {
                // The runtime may have created the container before a later step
                // (console handshake, pid file) failed: leave nothing behind.
                let _ = runtime.delete(&env.reaper, req.id, true);
                return Err(undo(e));
            }
        };
        let init = Proc::new("", req.stdio.clone(), None);
        {
            let mut s = init.state();
            s.pid = pid;
            s.io = Some(io);
        }
        let cgroup = Cgroup::of_pid(pid).ok();
        let c = Arc::new(Container {
            id: req.id.to_string(),
            bundle: req.bundle.to_path_buf(),
            runtime,
            init: init.clone(),
            execs: Mutex::new(HashMap::new()),
            cgroup,
            mounted_rootfs,
            shares_pid_ns: !own_pid_namespace(req.bundle),
            env: env.clone(),
        });
        c.watch_exit(&init, pid);
        if let Some(cg) = &c.cgroup {
            match OomWatch::new(&c.id, cg) {
                Ok(w) => env.control.watch_oom(w),
                Err(e) => log::debug(&format!("no OOM events for {}: {e}", c.id)),
            }
        }
        Ok(c)
    }

    /// Subscribes to `pid`'s exit: record (init: durably, first), drain output, wake
    /// Wait, publish TaskExit. Runs off the reaper's thread since draining may wait.
    fn watch_exit(self: &Arc<Self>, p: &Arc<Proc>, pid: u32) {
        let c = self.clone();
        let p = p.clone();
        self.env.reaper.watch(
            pid as i32,
            Box::new(move |e: Exit| {
                let spawned = std::thread::Builder::new()
                    .name("exit".into())
                    .stack_size(256 * 1024)
                    .spawn({
                        let (c, p) = (c.clone(), p.clone());
                        move || c.process_exited(&p, e, true)
                    });
                if spawned.is_err() {
                    // On the main loop: nothing here may wait for the reaper.
                    c.process_exited(&p, e, false);
                }
            }),
        );
    }

    /// `may_block`: false when running on the main loop (which reaps), so no runtime
    /// command may run and output is not waited for.
    fn process_exited(&self, p: &Proc, e: Exit, may_block: bool) {
        let info = ExitInfo {
            status: e.status as u32,
            at: e.at,
        };
        if p.exec_id.is_empty() {
            let rec = ExitRecord {
                id: self.id.clone(),
                pid: e.pid as u32,
                exit_status: info.status,
                exited_at: e.at,
            };
            if let Err(err) = rec.write(&self.bundle.join(files::EXIT)) {
                log::warn(&format!("record exit of {}: {err}", self.id));
            }
        }
        if p.exec_id.is_empty() && self.shares_pid_ns {
            self.kill_leftovers(may_block);
        }
        if let Some(io) = p.io() {
            io.drain(if may_block {
                DRAIN_TIMEOUT
            } else {
                Duration::ZERO
            });
        }
        p.set_exited(info);
        let mut ev = TaskExit::new();
        ev.container_id = self.id.clone();
        ev.id = if p.exec_id.is_empty() {
            self.id.clone()
        } else {
            p.exec_id.clone()
        };
        ev.pid = e.pid as u32;
        ev.exit_status = info.status;
        ev.exited_at = protobuf::MessageField::some(time::to_proto(e.at));
        self.env
            .publisher
            .publish(topic::TASK_EXIT, type_url::TASK_EXIT, &ev);
    }

    /// Without a pid namespace of its own, the container's other processes do not die
    /// with its init; the container is over, so they are killed (as runc's shim does).
    fn kill_leftovers(&self, may_run_runtime: bool) {
        let execs: Vec<Arc<Proc>> = self.execs.lock().unwrap().values().cloned().collect();
        for e in execs {
            let s = e.state();
            if matches!(s.status, Status::Running | Status::Paused) && s.pid > 0 {
                unsafe { libc::kill(s.pid as i32, libc::SIGKILL) };
            }
        }
        // Whatever else the init started: the runtime knows the cgroup (runc signals a
        // stopped container's cgroup with --all; not every runtime does, so the shim
        // also signals what is left in the cgroup itself).
        if may_run_runtime {
            let _ = self
                .runtime
                .kill(&self.env.reaper, &self.id, libc::SIGKILL as u32, true);
        }
        if let Some(cg) = &self.cgroup {
            for pid in cg.procs() {
                unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            }
        }
    }

    /// Exec'd processes by pid, for Pids.
    pub fn exec_pids(&self) -> HashMap<u32, String> {
        self.execs
            .lock()
            .unwrap()
            .values()
            .map(|p| (p.pid(), p.exec_id.clone()))
            .filter(|(pid, _)| *pid > 0)
            .collect()
    }

    pub fn process(&self, exec_id: &str) -> Result<Arc<Proc>> {
        if exec_id.is_empty() {
            return Ok(self.init.clone());
        }
        self.execs
            .lock()
            .unwrap()
            .get(exec_id)
            .cloned()
            .ok_or_else(|| Error::not_found(format!("process {exec_id} does not exist")))
    }

    pub fn start_init(&self) -> Result<u32> {
        // Not holding the state lock while the runtime runs: an init that exits at once
        // must be able to record its exit meanwhile.
        let pid = {
            let s = self.init.state();
            if s.status != Status::Created {
                return Err(Error::precondition(format!(
                    "container {} is not created",
                    self.id
                )));
            }
            s.pid
        };
        self.runtime.start(&self.env.reaper, &self.id)?;
        let mut s = self.init.state();
        if s.status == Status::Created {
            s.status = Status::Running;
        }
        Ok(pid)
    }

    pub fn add_exec(&self, exec_id: &str, stdio: StdioSpec, spec: Vec<u8>) -> Result<()> {
        if self.init.state().status == Status::Stopped {
            return Err(Error::precondition(format!(
                "container {} is stopped",
                self.id
            )));
        }
        let mut execs = self.execs.lock().unwrap();
        if execs.contains_key(exec_id) {
            return Err(Error::exists(format!("process {exec_id} already exists")));
        }
        execs.insert(exec_id.to_string(), Proc::new(exec_id, stdio, Some(spec)));
        Ok(())
    }

    pub fn start_exec(self: &Arc<Self>, p: &Arc<Proc>) -> Result<u32> {
        let spec =
            p.spec.lock().unwrap().take().ok_or_else(|| {
                Error::precondition(format!("process {} already started", p.exec_id))
            })?;
        let process_json = self.bundle.join(format!("exec-{}.json", p.exec_id));
        let pid_file = self.bundle.join(format!("exec-{}.pid", p.exec_id));
        std::fs::write(&process_json, &spec).map_err(|e| Error::io("write exec process", e))?;
        let _ = std::fs::remove_file(&pid_file);
        let r = launch(&p.stdio, None, |console, stdio| {
            self.runtime.exec(
                &self.env.reaper,
                &self.id,
                &process_json,
                &pid_file,
                console,
                stdio,
            )
        });
        let _ = std::fs::remove_file(&process_json);
        let io = r?;
        let pid = read_pid(&pid_file)?;
        let _ = std::fs::remove_file(&pid_file);
        {
            let mut s = p.state();
            s.pid = pid;
            s.io = Some(io);
            if s.exit.is_none() {
                s.status = Status::Running;
            }
        }
        self.watch_exit(p, pid);
        Ok(pid)
    }

    pub fn kill(&self, exec_id: &str, signal: u32, all: bool) -> Result<()> {
        let p = self.process(exec_id)?;
        let (pid, status) = {
            let s = p.state();
            (s.pid, s.status)
        };
        if exec_id.is_empty() {
            if status == Status::Stopped && !all {
                return Err(Error::not_found("process already finished"));
            }
            return self.runtime.kill(&self.env.reaper, &self.id, signal, all);
        }
        match status {
            Status::Stopped => Err(Error::not_found("process already finished")),
            Status::Created => Err(Error::precondition(format!(
                "process {exec_id} not started"
            ))),
            _ => {
                if unsafe { libc::kill(pid as i32, signal as i32) } < 0 {
                    let e = std::io::Error::last_os_error();
                    if e.raw_os_error() == Some(libc::ESRCH) {
                        return Err(Error::not_found("process already finished"));
                    }
                    return Err(Error::io("kill", e));
                }
                Ok(())
            }
        }
    }

    /// Deletes an exec'd process (stopped or never started).
    pub fn delete_exec(&self, exec_id: &str) -> Result<(u32, ExitInfo)> {
        let p = self.process(exec_id)?;
        let s = p.state();
        if matches!(s.status, Status::Running | Status::Paused) {
            return Err(Error::precondition(format!("process {exec_id} is running")));
        }
        let r = (
            s.pid,
            s.exit.unwrap_or(ExitInfo {
                status: 0,
                at: std::time::SystemTime::now(),
            }),
        );
        drop(s);
        self.execs.lock().unwrap().remove(exec_id);
        Ok(r)
    }

    /// Deletes the container: runtime state, rootfs mount.
    pub fn delete(&self) -> Result<(u32, ExitInfo)> {
        let (pid, status, exit) = {
            let s = self.init.state();
            (s.pid, s.status, s.exit)
        };
        if matches!(status, Status::Running | Status::Paused) {
            return Err(Error::precondition(format!(
                "container {} is running",
                self.id
            )));
        }
        // A created container still has a waiting init: force kills it.
        if let Err(e) = self
            .runtime
            .delete(&self.env.reaper, &self.id, status == Status::Created)
        {
            if e.code != ttrpc::Code::NOT_FOUND {
                return Err(e);
            }
        }
        if self.mounted_rootfs {
            mount::unmount_all(&self.bundle.join("rootfs"))
                .map_err(|e| Error::io("unmount rootfs", e))?;
        }
        let exit = match exit {
            Some(e) => e,
            // Created, never started: the forced delete killed it; its exit comes
            // through the reaper shortly.
            None => self
                .init
                .wait_timeout(Duration::from_secs(5))
                .unwrap_or(ExitInfo {
                    status: 128 + libc::SIGKILL as u32,
                    at: std::time::SystemTime::now(),
                }),
        };
        Ok((pid, exit))
    }

    pub fn pause(&self) -> Result<()> {
        self.runtime.pause(&self.env.reaper, &self.id)?;
        let mut s = self.init.state();
        if s.status == Status::Running {
            s.status = Status::Paused;
        }
        Ok(())
    }

    pub fn resume(&self) -> Result<()> {
        self.runtime.resume(&self.env.reaper, &self.id)?;
        let mut s = self.init.state();
        if s.status == Status::Paused {
            s.status = Status::Running;
        }
        Ok(())
    }

    pub fn pids(&self) -> Result<Vec<u32>> {
        self.runtime.ps(&self.env.reaper, &self.id)
    }

    pub fn update(&self, resources_json: &[u8]) -> Result<()> {
        let p = self.bundle.join("update-resources.json");
        std::fs::write(&p, resources_json).map_err(|e| Error::io("write resources", e))?;
        let r = self.runtime.update(&self.env.reaper, &self.id, &p);
        let _ = std::fs::remove_file(&p);
        r
    }
}
