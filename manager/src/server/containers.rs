//! The Containers, Tasks and Events services: thin gRPC layers over `containers`.

use super::{blocking, ns, status, BoxStream, Res};
use crate::containers::{options::RunOptions, Containers, Record, Status as TaskStatus};
use kura_proto::v1 as pb;
use std::sync::Arc;
use std::time::Duration;
use tonic::{Request, Response, Status};

#[derive(Clone)]
pub struct CSvc(pub Arc<Containers>);

/// The container as it is now, for a reply.
fn current(c: &Containers, ns: &str, id: &str) -> anyhow::Result<pb::Container> {
    Ok(to_proto(c, ns, &c.get(ns, id)?))
}

fn to_proto(c: &Containers, ns: &str, r: &Record) -> pb::Container {
    let (st, pid) = c.status(ns, r);
    // Status may have reaped a dead shim: read the exit again.
    let r = c.get(ns, &r.id).unwrap_or_else(|_| r.clone());
    with_status(c, ns, &r, st, pid)
}

/// The container with a status already known (a start's reply: no need to ask the
/// shim again what it just said).
fn with_status(c: &Containers, ns: &str, r: &Record, st: TaskStatus, pid: u32) -> pb::Container {
    let b = c.bundle(ns, &r.id);
    let net =
        c.k.networks
            .attachment(ns, &r.id)
            .filter(|a| !a.result.is_null() && !a.releasing);
    let path = |n: &str| {
        let p = b.join(n);
        if p.exists() {
            p.display().to_string()
        } else {
            String::new()
        }
    };
    pb::Container {
        id: r.id.clone(),
        image: r.image.clone(),
        image_digest: r.image_digest.clone(),
        status: st.as_str().into(),
        // A stopped task's shim may still answer with the old pid until the watcher
        // has deleted it.
        pid: if matches!(st, TaskStatus::Running | TaskStatus::Paused) {
            pid
        } else {
            0
        },
        exit_code: r.exit_code.map(|c| c as i32).unwrap_or(0),
        created_at: r.created_at,
        started_at: r.started_at,
        exited_at_ns: r.exited_at_ns,
        restart: r.restart.clone(),
        restart_count: r.restart_count,
        runtime: r.runtime.clone(),
        bundle: b.display().to_string(),
        log_path: c.log_path(ns, &r.id).display().to_string(),
        stdin_path: path("stdin"),
        stdout_path: path("stdout"),
        stderr_path: path("stderr"),
        tty: r.options.tty,
        options_json: serde_json::to_string(&r.options).unwrap_or_default(),
        spec_json: std::fs::read_to_string(b.join("config.json")).unwrap_or_default(),
        labels: r.labels.clone().into_iter().collect(),
        snapshot_key: r.snapshot_key.clone(),
        command: r.command.clone(),
        network: net.as_ref().map(|a| a.network.clone()).unwrap_or_default(),
        ip_address: net.as_ref().map(|a| a.ip.clone()).unwrap_or_default(),
        gateway: net.as_ref().map(|a| a.gateway.clone()).unwrap_or_default(),
        mac_address: net.as_ref().map(|a| a.mac.clone()).unwrap_or_default(),
        ports: net
            .map(|a| {
                a.ports
                    .iter()
                    .map(|p| {
                        format!(
                            "{}->{}/{}",
                            p.host_side().split('/').next().unwrap_or(""),
                            p.container_port,
                            p.protocol
                        )
                    })
                    .collect()
            })
            .unwrap_or_default(),
    }
}

#[tonic::async_trait]
impl pb::containers_server::Containers for CSvc {
    async fn create(&self, r: Request<pb::CreateContainerRequest>) -> Res<pb::Container> {
        let ns = ns(&r)?;
        let q = r.into_inner();
        let opts: RunOptions = if q.options_json.is_empty() {
            RunOptions::default()
        } else {
            serde_json::from_str(&q.options_json)
                .map_err(|e| Status::invalid_argument(format!("options_json: {e}")))?
        };
        let rec = self
            .0
            .create(
                &ns,
                &q.id,
                &q.image,
                opts,
                &q.restart,
                &q.runtime,
                q.labels.into_iter().collect(),
                &q.platform,
            )
            .await
            .map_err(status)?;
        let c = self.0.clone();
        Ok(Response::new(
            blocking(move || Ok(to_proto(&c, &ns, &rec))).await?,
        ))
    }

    async fn get(&self, r: Request<pb::ContainerRequest>) -> Res<pb::Container> {
        let ns = ns(&r)?;
        let id = r.into_inner().id;
        let c = self.0.clone();
        Ok(Response::new(
            blocking(move || current(&c, &ns, &id)).await?,
        ))
    }

    async fn list(&self, r: Request<pb::ListContainersRequest>) -> Res<pb::ListContainersResponse> {
        let ns = ns(&r)?;
        let all = r.into_inner().all;
        let c = self.0.clone();
        let containers = blocking(move || {
            let mut out: Vec<pb::Container> = c
                .list(&ns)?
                .iter()
                .map(|r| to_proto(&c, &ns, r))
                .filter(|p| all || p.status == "running" || p.status == "paused")
                .collect();
            out.sort_by_key(|p| std::cmp::Reverse(p.created_at));
            Ok(out)
        })
        .await?;
        Ok(Response::new(pb::ListContainersResponse { containers }))
    }

    async fn delete(&self, r: Request<pb::DeleteContainerRequest>) -> Res<pb::Empty> {
        let ns = ns(&r)?;
        let q = r.into_inner();
        let c = self.0.clone();
        blocking(move || c.remove(&ns, &q.id, q.force)).await?;
        Ok(Response::new(pb::Empty {}))
    }
}

fn exit(e: (u32, i64)) -> pb::TaskExit {
    pb::TaskExit {
        exit_status: e.0,
        exited_at_ns: e.1,
    }
}

#[tonic::async_trait]
impl pb::tasks_server::Tasks for CSvc {
    async fn start(&self, r: Request<pb::StartTaskRequest>) -> Res<pb::Container> {
        let ns = ns(&r)?;
        let q = r.into_inner();
        let id = q.id;
        let console = console(q.console_width, q.console_height);
        let c = self.0.clone();
        Ok(Response::new(
            blocking(move || {
                let pid = c.start(&ns, &id, true, console)?;
                Ok(with_status(
                    &c,
                    &ns,
                    &c.get(&ns, &id)?,
                    TaskStatus::Running,
                    pid,
                ))
            })
            .await?,
        ))
    }

    async fn wait(&self, r: Request<pb::ContainerRequest>) -> Res<pb::TaskExit> {
        let ns = ns(&r)?;
        let id = r.into_inner().id;
        let c = self.0.clone();
        Ok(Response::new(exit(
            blocking(move || c.wait(&ns, &id)).await?,
        )))
    }

    async fn kill(&self, r: Request<pb::KillTaskRequest>) -> Res<pb::Empty> {
        let ns = ns(&r)?;
        let q = r.into_inner();
        let c = self.0.clone();
        let sig = if q.signal == 0 { 15 } else { q.signal };
        blocking(move || c.kill(&ns, &q.id, &q.exec_id, sig, q.all)).await?;
        Ok(Response::new(pb::Empty {}))
    }

    async fn stop(&self, r: Request<pb::StopTaskRequest>) -> Res<pb::TaskExit> {
        let ns = ns(&r)?;
        let q = r.into_inner();
        let c = self.0.clone();
        let t = Duration::from_secs(q.timeout_seconds as u64);
        Ok(Response::new(exit(
            blocking(move || c.stop(&ns, &q.id, t)).await?,
        )))
    }

    async fn exec(&self, r: Request<pb::ExecRequest>) -> Res<pb::ExecResponse> {
        let ns = ns(&r)?;
        let q = r.into_inner();
        let c = self.0.clone();
        let (exec_id, p) = blocking(move || {
            c.exec(
                &ns,
                &q.id,
                q.args,
                q.env,
                &q.workdir,
                &q.user,
                q.tty,
                q.stdin,
                console(q.console_width, q.console_height),
            )
        })
        .await?;
        let [stdin_path, stdout_path, stderr_path] = p;
        Ok(Response::new(pb::ExecResponse {
            exec_id,
            stdin_path,
            stdout_path,
            stderr_path,
        }))
    }

    async fn wait_exec(&self, r: Request<pb::ExecIdRequest>) -> Res<pb::TaskExit> {
        let ns = ns(&r)?;
        let q = r.into_inner();
        let c = self.0.clone();
        Ok(Response::new(exit(
            blocking(move || c.wait_exec(&ns, &q.id, &q.exec_id)).await?,
        )))
    }

    async fn resize_pty(&self, r: Request<pb::ResizePtyRequest>) -> Res<pb::Empty> {
        let ns = ns(&r)?;
        let q = r.into_inner();
        let c = self.0.clone();
        blocking(move || {
            c.shim(&ns, &q.id)
                .ok_or_else(|| anyhow::anyhow!("container {} is not running", q.id))?
                .resize(&q.exec_id, q.width, q.height)
        })
        .await?;
        Ok(Response::new(pb::Empty {}))
    }

    async fn close_stdin(&self, r: Request<pb::ExecIdRequest>) -> Res<pb::Empty> {
        let ns = ns(&r)?;
        let q = r.into_inner();
        let c = self.0.clone();
        blocking(move || {
            c.shim(&ns, &q.id)
                .ok_or_else(|| anyhow::anyhow!("container {} is not running", q.id))?
                .close_stdin(&q.exec_id)
        })
        .await?;
        Ok(Response::new(pb::Empty {}))
    }

    async fn pause(&self, r: Request<pb::ContainerRequest>) -> Res<pb::Empty> {
        self.pause_resume(r, true).await
    }

    async fn resume(&self, r: Request<pb::ContainerRequest>) -> Res<pb::Empty> {
        self.pause_resume(r, false).await
    }

    async fn pids(&self, r: Request<pb::ContainerRequest>) -> Res<pb::PidsResponse> {
        let ns = ns(&r)?;
        let id = r.into_inner().id;
        let c = self.0.clone();
        let processes = blocking(move || {
            let s = c
                .shim(&ns, &id)
                .ok_or_else(|| anyhow::anyhow!("container {id} is not running"))?;
            Ok(s.pids()?
                .into_iter()
                .map(|(pid, exec_id)| pb::ProcessInfo {
                    pid,
                    exec_id,
                    command: std::fs::read(format!("/proc/{pid}/cmdline"))
                        .map(|b| {
                            String::from_utf8_lossy(&b)
                                .split('\0')
                                .filter(|s| !s.is_empty())
                                .collect::<Vec<_>>()
                                .join(" ")
                        })
                        .unwrap_or_default(),
                })
                .collect())
        })
        .await?;
        Ok(Response::new(pb::PidsResponse { processes }))
    }

    async fn metrics(&self, r: Request<pb::ContainerRequest>) -> Res<pb::MetricsResponse> {
        let ns = ns(&r)?;
        let id = r.into_inner().id;
        let c = self.0.clone();
        let (mem, limit, cpu, pids) = blocking(move || {
            c.shim(&ns, &id)
                .ok_or_else(|| anyhow::anyhow!("container {id} is not running"))?
                .stats()
        })
        .await?;
        Ok(Response::new(pb::MetricsResponse {
            memory_usage_bytes: mem,
            memory_limit_bytes: limit,
            cpu_usage_ns: cpu,
            pids_current: pids,
        }))
    }
}

impl CSvc {
    async fn pause_resume(&self, r: Request<pb::ContainerRequest>, pause: bool) -> Res<pb::Empty> {
        let ns = ns(&r)?;
        let id = r.into_inner().id;
        let c = self.0.clone();
        blocking(move || {
            let s = c
                .shim(&ns, &id)
                .ok_or_else(|| anyhow::anyhow!("container {id} is not running"))?;
            s.pause(pause)?;
            c.publish(
                if pause {
                    "/tasks/paused"
                } else {
                    "/tasks/resumed"
                },
                &ns,
                &id,
                vec![],
            );
            Ok(())
        })
        .await?;
        Ok(Response::new(pb::Empty {}))
    }
}

#[tonic::async_trait]
impl pb::events_server::Events for CSvc {
    type SubscribeStream = BoxStream<pb::Event>;

    async fn subscribe(&self, r: Request<pb::SubscribeRequest>) -> Res<Self::SubscribeStream> {
        let want_ns = r
            .metadata()
            .get(kura_proto::NAMESPACE_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(String::from);
        let topics = r.into_inner().topics;
        let mut rx = self.0.events.subscribe();
        let (tx, out) = tokio::sync::mpsc::channel(64);
        tokio::spawn(async move {
            loop {
                let e = match rx.recv().await {
                    Ok(e) => e,
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(_) => return,
                };
                if want_ns.as_ref().is_some_and(|n| *n != e.namespace) {
                    continue;
                }
                if !topics.is_empty() && !topics.iter().any(|t| e.topic.starts_with(t.as_str())) {
                    continue;
                }
                let ev = pb::Event {
                    topic: e.topic,
                    namespace: e.namespace,
                    id: e.id,
                    timestamp_ns: e.timestamp_ns,
                    attributes: e.attributes.into_iter().collect(),
                };
                if tx.send(Ok(ev)).await.is_err() {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(out),
        )))
    }
}

/// A size the client did not give is 0x0.
fn console(w: u32, h: u32) -> Option<(u32, u32)> {
    (w > 0 && h > 0).then_some((w, h))
}
