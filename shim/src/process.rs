//! One process the shim supervises: the container's init or an exec'd process. Its
//! lifecycle (created -> running <-> paused -> stopped), its stdio, and its exit, which
//! Wait blocks on.

use crate::stdio::{Io, StdioSpec};
use containerd_shim_protos::types::task::Status as PbStatus;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::SystemTime;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// Exec'd process registered by Exec, not started yet; or init after create.
    Created,
    Running,
    Paused,
    Stopped,
}

impl Status {
    pub fn to_proto(self) -> PbStatus {
        match self {
            Status::Created => PbStatus::CREATED,
            Status::Running => PbStatus::RUNNING,
            Status::Paused => PbStatus::PAUSED,
            Status::Stopped => PbStatus::STOPPED,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExitInfo {
    pub status: u32,
    pub at: SystemTime,
}

pub struct State {
    pub pid: u32,
    pub status: Status,
    pub exit: Option<ExitInfo>,
    pub io: Option<Arc<Io>>,
}

pub struct Proc {
    /// Empty for the init process.
    pub exec_id: String,
    pub stdio: StdioSpec,
    /// An exec's OCI process (JSON) until it is started.
    pub spec: Mutex<Option<Vec<u8>>>,
    state: Mutex<State>,
    exited: Condvar,
}

impl Proc {
    pub fn new(exec_id: &str, stdio: StdioSpec, spec: Option<Vec<u8>>) -> Arc<Proc> {
        Arc::new(Proc {
            exec_id: exec_id.to_string(),
            stdio,
            spec: Mutex::new(spec),
            state: Mutex::new(State {
                pid: 0,
                status: Status::Created,
                exit: None,
                io: None,
            }),
            exited: Condvar::new(),
        })
    }

    pub fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn pid(&self) -> u32 {
        self.state().pid
    }

    pub fn io(&self) -> Option<Arc<Io>> {
        self.state().io.clone()
    }

    /// Records the exit and wakes every Wait.
    pub fn set_exited(&self, info: ExitInfo) {
        let mut s = self.state();
        s.status = Status::Stopped;
        s.exit = Some(info);
        drop(s);
        self.exited.notify_all();
    }

    /// Blocks until the process has exited (and its output is flushed).
    pub fn wait(&self) -> ExitInfo {
        let mut s = self.state();
        loop {
            if let Some(e) = s.exit {
                return e;
            }
            s = self.exited.wait(s).unwrap_or_else(|e| e.into_inner());
        }
    }

    pub fn wait_timeout(&self, d: std::time::Duration) -> Option<ExitInfo> {
        let s = self.state();
        let (s, _) = self
            .exited
            .wait_timeout_while(s, d, |s| s.exit.is_none())
            .unwrap_or_else(|e| e.into_inner());
        s.exit
    }
}
