//! containerd's task service (runtime v2 shim API) over the container this shim owns.
//! Requests are translated to `Container` calls; lifecycle events are published here,
//! in the order the changes happened.

use crate::container::{Container, CreateRequest, Env};
use crate::error::{Error, Result};
use crate::events::{topic, type_url};
use crate::options::CreateOptions;
use crate::process::Status;
use crate::stdio::StdioSpec;
use crate::{log, time};
use containerd_shim_protos::api::{self, Empty};
use containerd_shim_protos::events::task::{
    TaskCreate, TaskDelete, TaskExecAdded, TaskExecStarted, TaskIO, TaskOOM, TaskPaused,
    TaskResumed, TaskStart,
};
use containerd_shim_protos::shim::oci::ProcessDetails;
use containerd_shim_protos::types::task::ProcessInfo;
use containerd_shim_protos::Task;
use protobuf::{Message, MessageField};
use std::path::Path;
use std::sync::{Arc, Mutex};
use ttrpc::TtrpcContext;

pub struct Service {
    env: Env,
    container: Mutex<Option<Arc<Container>>>,
}

type TtResult<T> = ttrpc::Result<T>;

fn wrap<T>(what: &str, r: Result<T>) -> TtResult<T> {
    r.map_err(|e| {
        log::debug(&format!("{what}: {e}"));
        e.into()
    })
}

impl Service {
    pub fn new(env: Env) -> Service {
        Service {
            env,
            container: Mutex::new(None),
        }
    }

    fn container(&self, id: &str) -> Result<Arc<Container>> {
        match self.container.lock().unwrap().as_ref() {
            Some(c) if c.id == id || id.is_empty() => Ok(c.clone()),
            _ => Err(Error::not_found(format!("container {id} does not exist"))),
        }
    }

    /// Whether a container is still held (created and not deleted).
    pub fn has_container(&self) -> bool {
        self.container.lock().unwrap().is_some()
    }

    /// Whether the shim holds no container and no Create is under way. Never blocks:
    /// the main loop asks, and a Create holds the lock while it waits for the main
    /// loop to reap the runtime.
    pub fn idle(&self) -> bool {
        match self.container.try_lock() {
            Ok(g) => g.is_none(),
            Err(_) => false,
        }
    }

    /// Called by the main loop when a container's cgroup reports an OOM kill.
    pub fn oom(&self, container_id: &str) {
        let mut ev = TaskOOM::new();
        ev.container_id = container_id.to_string();
        self.env
            .publisher
            .publish(topic::TASK_OOM, type_url::TASK_OOM, &ev);
    }

    fn do_create(&self, req: api::CreateTaskRequest) -> Result<api::CreateTaskResponse> {
        let mut slot = self.container.lock().unwrap();
        if slot.is_some() {
            return Err(Error::exists(format!(
                "container {} already exists",
                req.id
            )));
        }
        if !req.checkpoint.is_empty() {
            return Err(Error::unimplemented("checkpoint/restore is not supported"));
        }
        let stdio = StdioSpec {
            stdin: req.stdin.clone(),
            stdout: req.stdout.clone(),
            stderr: req.stderr.clone(),
            terminal: req.terminal,
        };
        let options = CreateOptions::parse(req.options.as_ref())?;
        let c = Container::create(
            self.env.clone(),
            CreateRequest {
                id: &req.id,
                bundle: Path::new(&req.bundle),
                rootfs: &req.rootfs,
                stdio,
                options,
            },
        )?;
        let pid = c.init.pid();
        *slot = Some(c);
        drop(slot);
        let mut io = TaskIO::new();
        io.stdin = req.stdin;
        io.stdout = req.stdout;
        io.stderr = req.stderr;
        io.terminal = req.terminal;
        let mut ev = TaskCreate::new();
        ev.container_id = req.id;
        ev.bundle = req.bundle;
        ev.rootfs = req.rootfs;
        ev.io = MessageField::some(io);
        ev.pid = pid;
        self.env
            .publisher
            .publish(topic::TASK_CREATE, type_url::TASK_CREATE, &ev);
        let mut r = api::CreateTaskResponse::new();
        r.pid = pid;
        Ok(r)
    }

    fn do_start(&self, req: api::StartRequest) -> Result<api::StartResponse> {
        let c = self.container(&req.id)?;
        let pid = if req.exec_id.is_empty() {
            let pid = c.start_init()?;
            let mut ev = TaskStart::new();
            ev.container_id = c.id.clone();
            ev.pid = pid;
            self.env
                .publisher
                .publish(topic::TASK_START, type_url::TASK_START, &ev);
            pid
        } else {
            let p = c.process(&req.exec_id)?;
            let pid = c.start_exec(&p)?;
            let mut ev = TaskExecStarted::new();
            ev.container_id = c.id.clone();
            ev.exec_id = req.exec_id.clone();
            ev.pid = pid;
            self.env
                .publisher
                .publish(topic::TASK_EXEC_STARTED, type_url::TASK_EXEC_STARTED, &ev);
            pid
        };
        let mut r = api::StartResponse::new();
        r.pid = pid;
        Ok(r)
    }

    fn do_delete(&self, req: api::DeleteRequest) -> Result<api::DeleteResponse> {
        let c = self.container(&req.id)?;
        let (pid, exit) = if req.exec_id.is_empty() {
            let r = c.delete()?;
            self.container.lock().unwrap().take();
            let mut ev = TaskDelete::new();
            ev.container_id = c.id.clone();
            ev.id = c.id.clone();
            ev.pid = r.0;
            ev.exit_status = r.1.status;
            ev.exited_at = MessageField::some(time::to_proto(r.1.at));
            self.env
                .publisher
                .publish(topic::TASK_DELETE, type_url::TASK_DELETE, &ev);
            r
        } else {
            c.delete_exec(&req.exec_id)?
        };
        let mut r = api::DeleteResponse::new();
        r.pid = pid;
        r.exit_status = exit.status;
        r.exited_at = MessageField::some(time::to_proto(exit.at));
        Ok(r)
    }

    fn do_state(&self, req: api::StateRequest) -> Result<api::StateResponse> {
        let c = self.container(&req.id)?;
        let p = c.process(&req.exec_id)?;
        let s = p.state();
        let mut r = api::StateResponse::new();
        r.id = if req.exec_id.is_empty() {
            c.id.clone()
        } else {
            req.exec_id.clone()
        };
        r.exec_id = req.exec_id.clone();
        r.bundle = c.bundle.to_string_lossy().into_owned();
        r.pid = s.pid;
        r.status = s.status.to_proto().into();
        r.stdin = p.stdio.stdin.clone();
        r.stdout = p.stdio.stdout.clone();
        r.stderr = p.stdio.stderr.clone();
        r.terminal = p.stdio.terminal;
        if let Some(e) = s.exit {
            r.exit_status = e.status;
            r.exited_at = MessageField::some(time::to_proto(e.at));
        }
        Ok(r)
    }
}

impl Task for Service {
    fn state(&self, _: &TtrpcContext, req: api::StateRequest) -> TtResult<api::StateResponse> {
        wrap("state", self.do_state(req))
    }

    fn create(
        &self,
        _: &TtrpcContext,
        req: api::CreateTaskRequest,
    ) -> TtResult<api::CreateTaskResponse> {
        log::debug(&format!("create {} bundle {}", req.id, req.bundle));
        wrap("create", self.do_create(req))
    }

    fn start(&self, _: &TtrpcContext, req: api::StartRequest) -> TtResult<api::StartResponse> {
        wrap("start", self.do_start(req))
    }

    fn delete(&self, _: &TtrpcContext, req: api::DeleteRequest) -> TtResult<api::DeleteResponse> {
        wrap("delete", self.do_delete(req))
    }

    fn pids(&self, _: &TtrpcContext, req: api::PidsRequest) -> TtResult<api::PidsResponse> {
        wrap(
            "pids",
            (|| {
                let c = self.container(&req.id)?;
                let mut r = api::PidsResponse::new();
                let execs = c.exec_pids();
                for pid in c.pids()? {
                    let mut pi = ProcessInfo::new();
                    pi.pid = pid;
                    // Tells clients which pid is which exec (ctr task ps's INFO column).
                    if let Some(exec_id) = execs.get(&pid) {
                        let mut d = ProcessDetails::new();
                        d.exec_id = exec_id.clone();
                        let mut any = protobuf::well_known_types::any::Any::new();
                        any.type_url = "containerd.runc.v1.ProcessDetails".into();
                        any.value = d.write_to_bytes().unwrap_or_default();
                        pi.info = MessageField::some(any);
                    }
                    r.processes.push(pi);
                }
                Ok(r)
            })(),
        )
    }

    fn pause(&self, _: &TtrpcContext, req: api::PauseRequest) -> TtResult<Empty> {
        wrap(
            "pause",
            (|| {
                let c = self.container(&req.id)?;
                c.pause()?;
                let mut ev = TaskPaused::new();
                ev.container_id = c.id.clone();
                self.env
                    .publisher
                    .publish(topic::TASK_PAUSED, type_url::TASK_PAUSED, &ev);
                Ok(Empty::new())
            })(),
        )
    }

    fn resume(&self, _: &TtrpcContext, req: api::ResumeRequest) -> TtResult<Empty> {
        wrap(
            "resume",
            (|| {
                let c = self.container(&req.id)?;
                c.resume()?;
                let mut ev = TaskResumed::new();
                ev.container_id = c.id.clone();
                self.env
                    .publisher
                    .publish(topic::TASK_RESUMED, type_url::TASK_RESUMED, &ev);
                Ok(Empty::new())
            })(),
        )
    }

    fn checkpoint(&self, _: &TtrpcContext, _: api::CheckpointTaskRequest) -> TtResult<Empty> {
        Err(Error::unimplemented("checkpoint is not supported").into())
    }

    fn kill(&self, _: &TtrpcContext, req: api::KillRequest) -> TtResult<Empty> {
        wrap(
            "kill",
            (|| {
                let c = self.container(&req.id)?;
                c.kill(&req.exec_id, req.signal, req.all)?;
                Ok(Empty::new())
            })(),
        )
    }

    fn exec(&self, _: &TtrpcContext, req: api::ExecProcessRequest) -> TtResult<Empty> {
        wrap(
            "exec",
            (|| {
                let c = self.container(&req.id)?;
                let spec = req
                    .spec
                    .as_ref()
                    .map(|a| a.value.clone())
                    .ok_or_else(|| Error::invalid("exec without a process spec"))?;
                let stdio = StdioSpec {
                    stdin: req.stdin.clone(),
                    stdout: req.stdout.clone(),
                    stderr: req.stderr.clone(),
                    terminal: req.terminal,
                };
                c.add_exec(&req.exec_id, stdio, spec)?;
                let mut ev = TaskExecAdded::new();
                ev.container_id = c.id.clone();
                ev.exec_id = req.exec_id.clone();
                self.env
                    .publisher
                    .publish(topic::TASK_EXEC_ADDED, type_url::TASK_EXEC_ADDED, &ev);
                Ok(Empty::new())
            })(),
        )
    }

    fn resize_pty(&self, _: &TtrpcContext, req: api::ResizePtyRequest) -> TtResult<Empty> {
        wrap(
            "resize",
            (|| {
                let c = self.container(&req.id)?;
                let p = c.process(&req.exec_id)?;
                let io = p
                    .io()
                    .ok_or_else(|| Error::precondition("process has no io"))?;
                io.resize(req.width, req.height)
                    .map_err(|e| Error::precondition(format!("resize: {e}")))?;
                Ok(Empty::new())
            })(),
        )
    }

    fn close_io(&self, _: &TtrpcContext, req: api::CloseIORequest) -> TtResult<Empty> {
        wrap(
            "close_io",
            (|| {
                let c = self.container(&req.id)?;
                let p = c.process(&req.exec_id)?;
                if req.stdin {
                    if let Some(io) = p.io() {
                        io.close_stdin();
                    }
                }
                Ok(Empty::new())
            })(),
        )
    }

    fn update(&self, _: &TtrpcContext, req: api::UpdateTaskRequest) -> TtResult<Empty> {
        wrap(
            "update",
            (|| {
                let c = self.container(&req.id)?;
                let res = req
                    .resources
                    .as_ref()
                    .ok_or_else(|| Error::invalid("update without resources"))?;
                c.update(&res.value)?;
                Ok(Empty::new())
            })(),
        )
    }

    fn wait(&self, _: &TtrpcContext, req: api::WaitRequest) -> TtResult<api::WaitResponse> {
        wrap(
            "wait",
            (|| {
                let c = self.container(&req.id)?;
                let p = c.process(&req.exec_id)?;
                let e = p.wait();
                let mut r = api::WaitResponse::new();
                r.exit_status = e.status;
                r.exited_at = MessageField::some(time::to_proto(e.at));
                Ok(r)
            })(),
        )
    }

    fn stats(&self, _: &TtrpcContext, req: api::StatsRequest) -> TtResult<api::StatsResponse> {
        wrap(
            "stats",
            (|| {
                let c = self.container(&req.id)?;
                if c.init.state().status == Status::Stopped {
                    return Err(Error::not_found(format!("container {} is stopped", c.id)));
                }
                let cg = c
                    .cgroup
                    .as_ref()
                    .ok_or_else(|| Error::not_found("container has no cgroup"))?;
                let any = cg.stats().map_err(|e| Error::io("read cgroup", e))?;
                let mut r = api::StatsResponse::new();
                r.stats = MessageField::some(any);
                Ok(r)
            })(),
        )
    }

    fn connect(
        &self,
        _: &TtrpcContext,
        req: api::ConnectRequest,
    ) -> TtResult<api::ConnectResponse> {
        let mut r = api::ConnectResponse::new();
        r.shim_pid = std::process::id();
        r.version = env!("CARGO_PKG_VERSION").to_string();
        if let Ok(c) = self.container(&req.id) {
            r.task_pid = c.init.pid();
        }
        Ok(r)
    }

    fn shutdown(&self, _: &TtrpcContext, req: api::ShutdownRequest) -> TtResult<Empty> {
        // A shim with a container left keeps running unless told `now`: containerd
        // sends Shutdown after every delete, also of exec'd processes.
        if req.now || !self.has_container() {
            self.env.control.request_exit();
        }
        Ok(Empty::new())
    }
}
