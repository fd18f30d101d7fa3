//! Publishing task events (create, start, exit, OOM, ...) to the manager.
//!
//! containerd gives a shim two ways: the `TTRPC_ADDRESS` environment variable (its
//! ttrpc socket, with the events service's `Forward`), and `-publish-binary` (run as
//! `BIN --address A publish --topic T --namespace N` with the event on stdin). We use
//! the first when set, else the second, as containerd's own shims do.
//!
//! Events go through one thread so they leave in the order they happened; the thread
//! and its connection exist only while there is something to send, so an idle shim
//! pays for neither.

use crate::command;
use crate::reaper::Reaper;
use crate::time;
use containerd_shim_protos::shim::event::Envelope;
use containerd_shim_protos::shim::events::ForwardRequest;
use containerd_shim_protos::EventsClient;
use protobuf::well_known_types::any::Any;
use protobuf::Message;
use std::process::Command;
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, SystemTime};

pub mod topic {
    pub const TASK_CREATE: &str = "/tasks/create";
    pub const TASK_START: &str = "/tasks/start";
    pub const TASK_EXIT: &str = "/tasks/exit";
    pub const TASK_DELETE: &str = "/tasks/delete";
    pub const TASK_OOM: &str = "/tasks/oom";
    pub const TASK_EXEC_ADDED: &str = "/tasks/exec-added";
    pub const TASK_EXEC_STARTED: &str = "/tasks/exec-started";
    pub const TASK_PAUSED: &str = "/tasks/paused";
    pub const TASK_RESUMED: &str = "/tasks/resumed";
}

/// Type URLs as containerd's typeurl registry names the event messages.
pub mod type_url {
    pub const TASK_CREATE: &str = "containerd.events.TaskCreate";
    pub const TASK_START: &str = "containerd.events.TaskStart";
    pub const TASK_EXIT: &str = "containerd.events.TaskExit";
    pub const TASK_DELETE: &str = "containerd.events.TaskDelete";
    pub const TASK_OOM: &str = "containerd.events.TaskOOM";
    pub const TASK_EXEC_ADDED: &str = "containerd.events.TaskExecAdded";
    pub const TASK_EXEC_STARTED: &str = "containerd.events.TaskExecStarted";
    pub const TASK_PAUSED: &str = "containerd.events.TaskPaused";
    pub const TASK_RESUMED: &str = "containerd.events.TaskResumed";
}

struct Event {
    topic: &'static str,
    any: Any,
    at: SystemTime,
}

#[derive(Clone)]
struct Target {
    ttrpc_address: String,
    publish_binary: String,
    address: String,
    namespace: String,
    reaper: Arc<Reaper>,
}

struct Worker {
    tx: Sender<Event>,
    handle: JoinHandle<()>,
}

pub struct Publisher {
    target: Target,
    worker: Arc<Mutex<Option<Worker>>>,
}

/// How long the sender thread lingers (connection open) after the last event.
const LINGER: Duration = Duration::from_secs(2);
const ATTEMPTS: u32 = 5;

impl Publisher {
    pub fn new(
        ttrpc_address: String,
        publish_binary: String,
        address: String,
        namespace: String,
        reaper: Arc<Reaper>,
    ) -> Publisher {
        Publisher {
            target: Target {
                ttrpc_address,
                publish_binary,
                address,
                namespace,
                reaper,
            },
            worker: Arc::new(Mutex::new(None)),
        }
    }

    pub fn publish<M: Message>(&self, topic: &'static str, type_url: &str, msg: &M) {
        let mut any = Any::new();
        any.type_url = type_url.to_string();
        any.value = match msg.write_to_bytes() {
            Ok(v) => v,
            Err(e) => {
                log::warn(&format!("encode {topic} event: {e}"));
                return;
            }
        };
        let ev = Event {
            topic,
            any,
            at: SystemTime::now(),
        };
        let mut g = self.worker.lock().unwrap_or_else(|e| e.into_inner());
        let ev = match g.as_ref() {
            Some(w) => match w.tx.send(ev) {
                Ok(()) => return,
                Err(e) => e.0,
            },
            None => ev,
        };
        if self.target.ttrpc_address.is_empty() && self.target.publish_binary.is_empty() {
            return;
        }
        let (tx, rx) = channel();
        let _ = tx.send(ev);
        let target = self.target.clone();
        let slot = self.worker.clone();
        match thread::Builder::new()
            .name("publisher".into())
            .stack_size(256 * 1024)
            .spawn(move || run(target, rx, slot))
        {
            Ok(handle) => *g = Some(Worker { tx, handle }),
            Err(e) => log::warn(&format!("start publisher: {e}")),
        }
    }

    /// Sends what is queued before the shim exits.
    pub fn flush(&self) {
        let w = self.worker.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(w) = w {
            drop(w.tx);
            let _ = w.handle.join();
        }
    }
}

fn run(target: Target, rx: Receiver<Event>, slot: Arc<Mutex<Option<Worker>>>) {
    let mut client: Option<EventsClient> = None;
    loop {
        let ev = match rx.recv_timeout(LINGER) {
            Ok(ev) => ev,
            Err(RecvTimeoutError::Disconnected) => return,
            Err(RecvTimeoutError::Timeout) => {
                // Retire under the slot lock so no event is sent to a thread that is
                // about to exit: a publisher either sees us gone, or we see its event.
                let mut g = slot.lock().unwrap_or_else(|e| e.into_inner());
                match rx.try_recv() {
                    Ok(ev) => {
                        drop(g);
                        ev
                    }
                    Err(_) => {
                        // Detach ourselves; the JoinHandle is dropped, not joined.
                        g.take();
                        return;
                    }
                }
            }
        };
        send(&target, &mut client, ev);
    }
}

fn send(t: &Target, client: &mut Option<EventsClient>, ev: Event) {
    for attempt in 0..ATTEMPTS {
        let r = if t.ttrpc_address.is_empty() {
            send_binary(t, &ev)
        } else {
            send_ttrpc(t, client, &ev)
        };
        match r {
            Ok(()) => return,
            Err(e) => {
                *client = None;
                if attempt + 1 == ATTEMPTS {
                    log::warn(&format!("publish {}: {e}", ev.topic));
                    return;
                }
                thread::sleep(Duration::from_millis(50 << attempt));
            }
        }
    }
}

fn send_ttrpc(t: &Target, client: &mut Option<EventsClient>, ev: &Event) -> Result<(), String> {
    if client.is_none() {
        let addr = if t.ttrpc_address.contains("://") {
            t.ttrpc_address.clone()
        } else {
            format!("unix://{}", t.ttrpc_address)
        };
        let c = ttrpc::Client::connect(&addr).map_err(|e| format!("connect {addr}: {e}"))?;
        *client = Some(EventsClient::new(c));
    }
    let mut env = Envelope::new();
    env.timestamp = protobuf::MessageField::some(time::to_proto(ev.at));
    env.namespace = t.namespace.clone();
    env.topic = ev.topic.to_string();
    env.event = protobuf::MessageField::some(ev.any.clone());
    let mut req = ForwardRequest::new();
    req.envelope = protobuf::MessageField::some(env);
    client
        .as_ref()
        .expect("connected above")
        .forward(ttrpc::context::with_timeout(5_000_000_000), &req)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

fn send_binary(t: &Target, ev: &Event) -> Result<(), String> {
    let data = ev.any.write_to_bytes().map_err(|e| e.to_string())?;
    let mut c = Command::new(&t.publish_binary);
    c.args([
        "--address",
        &t.address,
        "publish",
        "--topic",
        ev.topic,
        "--namespace",
        &t.namespace,
    ]);
    let out = command::run(&t.reaper, &mut c, &data, true).map_err(|e| e.to_string())?;
    if out.status != 0 {
        return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
    }
    Ok(())
}

use crate::log;
