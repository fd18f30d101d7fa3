//! The gRPC services of kurad (package kura.v1), each a thin layer over the modules
//! that do the work. The namespace comes from the `kura-namespace` metadata header.

#![allow(clippy::result_large_err)] // tonic::Status is what the services return

use crate::daemon::Kura;
use crate::images::{self, layers::Progress};
use crate::metadata::{self, Labels, SnapshotKind};
use crate::registry::{Auth, Options};
use kura_proto::v1 as pb;
use std::pin::Pin;
use std::sync::Arc;
use tokio_stream::Stream;
use tonic::{Request, Response, Status, Streaming};

pub mod containers;
pub mod networks;
pub mod serve;

type Res<T> = Result<Response<T>, Status>;
type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// Maps an error to a status whose message says what failed.
pub fn status(e: anyhow::Error) -> Status {
    let msg = format!("{e:#}");
    let l = msg.to_lowercase();
    // A command that is not in the image: `kura run` exits 127, as docker does.
    let code = if l.contains("executable file not found") || l.contains("no such executable") {
        tonic::Code::FailedPrecondition
    } else if l.contains("not found") {
        tonic::Code::NotFound
    } else if l.contains("already exists") {
        tonic::Code::AlreadyExists
    } else if l.contains("invalid") || l.contains("unsupported") || l.contains("refusing") {
        tonic::Code::InvalidArgument
    } else if l.contains("denied") || l.contains("authentication") || l.contains("login") {
        tonic::Code::PermissionDenied
    } else {
        tonic::Code::Unknown
    };
    Status::new(code, msg)
}

fn ns<T>(r: &Request<T>) -> Result<String, Status> {
    let ns = r
        .metadata()
        .get(kura_proto::NAMESPACE_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("default")
        .to_string();
    metadata::check_namespace(&ns).map_err(status)?;
    Ok(ns)
}

fn labels(m: std::collections::HashMap<String, String>) -> Labels {
    m.into_iter().collect()
}

fn auth(a: Option<pb::RegistryAuth>) -> Option<Auth> {
    a.map(|a| Auth {
        username: a.username,
        password: a.password,
        identity_token: a.identity_token,
        registry_token: a.registry_token,
    })
}

pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
) -> Result<T, Status> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Status::internal(e.to_string()))?
        .map_err(status)
}

#[derive(Clone)]
pub struct Svc(pub Arc<Kura>);

impl Svc {
    fn sn(&self, s: &str) -> Result<String, Status> {
        let s = if s.is_empty() {
            self.0.config.snapshotter.clone()
        } else {
            s.to_string()
        };
        crate::snapshots::check_snapshotter(&s).map_err(status)?;
        Ok(s)
    }
}

#[tonic::async_trait]
impl pb::version_server::Version for Svc {
    async fn version(&self, _: Request<pb::Empty>) -> Res<pb::VersionResponse> {
        Ok(Response::new(pb::VersionResponse {
            version: env!("CARGO_PKG_VERSION").into(),
            revision: option_env!("KURA_REVISION").unwrap_or("").into(),
            root: self.0.root.display().to_string(),
            state: self.0.state.display().to_string(),
            default_snapshotter: self.0.config.snapshotter.clone(),
        }))
    }
}

fn content_info(d: &str, r: metadata::ContentRecord) -> pb::ContentInfo {
    pb::ContentInfo {
        digest: d.into(),
        size: r.size,
        labels: r.labels.into_iter().collect(),
        created_at: r.created_at,
    }
}

fn ingest_pb(m: crate::content::IngestMeta, offset: u64) -> pb::IngestStatusResponse {
    pb::IngestStatusResponse {
        r#ref: m.r#ref,
        offset: offset as i64,
        total: m.total,
        expected_digest: m.expected,
        updated_at: m.updated_at,
    }
}

#[tonic::async_trait]
impl pb::content_server::Content for Svc {
    async fn info(&self, r: Request<pb::ContentInfoRequest>) -> Res<pb::ContentInfo> {
        let ns = ns(&r)?;
        let d = r.into_inner().digest;
        let rec = self
            .0
            .md
            .get::<metadata::ContentRecord>(metadata::CONTENT, &metadata::key(&ns, &d))
            .map_err(status)?;
        let rec = rec
            .ok_or_else(|| Status::not_found(format!("content {d} not found in namespace {ns}")))?;
        Ok(Response::new(content_info(&d, rec)))
    }
    async fn list(&self, r: Request<pb::ListContentRequest>) -> Res<pb::ListContentResponse> {
        let ns = ns(&r)?;
        let all = self
            .0
            .md
            .scan::<metadata::ContentRecord>(metadata::CONTENT, &format!("{ns}/"))
            .map_err(status)?;
        Ok(Response::new(pb::ListContentResponse {
            content: all.into_iter().map(|(d, r)| content_info(&d, r)).collect(),
        }))
    }
    async fn delete(&self, r: Request<pb::DeleteContentRequest>) -> Res<pb::Empty> {
        let ns = ns(&r)?;
        let d = r.into_inner().digest;
        let k = self.0.clone();
        blocking(move || {
            let gone = k.md.write(|tx| {
                Ok(tx
                    .open_table(metadata::CONTENT)?
                    .remove(metadata::key(&ns, &d).as_str())?
                    .is_some())
            })?;
            if !gone {
                anyhow::bail!("content {d} not found in namespace {ns}");
            }
            crate::gc::collect(&k)?;
            Ok(())
        })
        .await?;
        Ok(Response::new(pb::Empty {}))
    }
    async fn set_labels(&self, r: Request<pb::SetContentLabelsRequest>) -> Res<pb::ContentInfo> {
        let ns = ns(&r)?;
        let req = r.into_inner();
        let rec = self
            .0
            .md
            .write(|tx| {
                let mut t = tx.open_table(metadata::CONTENT)?;
                let kk = metadata::key(&ns, &req.digest);
                let mut rec: metadata::ContentRecord =
                    metadata::get_in(&t, &kk)?.ok_or_else(|| {
                        anyhow::anyhow!("content {} not found in namespace {ns}", req.digest)
                    })?;
                if req.replace {
                    rec.labels.clear();
                }
                for (k, v) in req.labels {
                    if v.is_empty() {
                        rec.labels.remove(&k);
                    } else {
                        rec.labels.insert(k, v);
                    }
                }
                metadata::put(&mut t, &kk, &rec)?;
                Ok(rec)
            })
            .map_err(status)?;
        Ok(Response::new(content_info(&req.digest, rec)))
    }
    type ReadStream = BoxStream<pb::DataChunk>;
    async fn read(&self, r: Request<pb::ReadContentRequest>) -> Res<Self::ReadStream> {
        let ns = ns(&r)?;
        let req = r.into_inner();
        if !self.0.has_blob(&ns, &req.digest).map_err(status)? {
            return Err(Status::not_found(format!(
                "content {} not found in namespace {ns}",
                req.digest
            )));
        }
        let f = self.0.content.open_blob(&req.digest).map_err(status)?;
        let (tx, rx) = tokio::sync::mpsc::channel(8);
        tokio::task::spawn_blocking(move || {
            use std::io::{Read, Seek};
            let mut f = f;
            if let Err(e) = f.seek(std::io::SeekFrom::Start(req.offset.max(0) as u64)) {
                let _ = tx.blocking_send(Err(Status::internal(e.to_string())));
                return;
            }
            let mut buf = vec![0u8; 1 << 16];
            loop {
                match f.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        if tx
                            .blocking_send(Ok(pb::DataChunk {
                                data: buf[..n].to_vec(),
                            }))
                            .is_err()
                        {
                            break;
                        }
                    }
                    Err(e) => {
                        let _ = tx.blocking_send(Err(Status::internal(e.to_string())));
                        break;
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }
    async fn write(&self, r: Request<Streaming<pb::WriteContentRequest>>) -> Res<pb::ContentInfo> {
        let ns = ns(&r)?;
        let mut s = r.into_inner();
        let first = s
            .message()
            .await?
            .ok_or_else(|| Status::invalid_argument("empty write"))?;
        let k = self.0.clone();
        let (r2, exp, total) = (
            first.r#ref.clone(),
            first.expected_digest.clone(),
            first.total,
        );
        let mut w = blocking(move || k.content.writer(&r2, &exp, total)).await?;
        if first.offset as u64 != w.offset() {
            if first.offset == 0 {
                w.truncate().map_err(status)?;
            } else {
                return Err(Status::failed_precondition(format!(
                    "ingest {} is at offset {}, not {}",
                    first.r#ref,
                    w.offset(),
                    first.offset
                )));
            }
        }
        use std::io::Write;
        w.write_all(&first.data)
            .map_err(|e| Status::internal(e.to_string()))?;
        while let Some(m) = s.message().await? {
            w.write_all(&m.data)
                .map_err(|e| Status::internal(e.to_string()))?;
        }
        let k = self.0.clone();
        let (lease, lbl) = (first.lease.clone(), labels(first.labels));
        let (d, size) = blocking(move || {
            let _g = k.gc_lock.read().unwrap();
            let (d, size) = w.commit()?;
            k.record_blob_locked(&ns, &d, size, lbl, &lease)?;
            Ok((d, size))
        })
        .await?;
        Ok(Response::new(pb::ContentInfo {
            digest: d,
            size: size as i64,
            labels: Default::default(),
            created_at: metadata::now(),
        }))
    }
    async fn ingest_status(
        &self,
        r: Request<pb::IngestStatusRequest>,
    ) -> Res<pb::IngestStatusResponse> {
        let rf = r.into_inner().r#ref;
        let m = self
            .0
            .content
            .ingest_status(&rf)
            .map_err(status)?
            .ok_or_else(|| Status::not_found(format!("ingest {rf} not found")))?;
        let off = self.0.content.ingest_offset(&rf);
        Ok(Response::new(ingest_pb(m, off)))
    }
    async fn list_ingests(&self, _: Request<pb::Empty>) -> Res<pb::ListIngestsResponse> {
        let all = self.0.content.list_ingests().map_err(status)?;
        Ok(Response::new(pb::ListIngestsResponse {
            ingests: all.into_iter().map(|(m, o)| ingest_pb(m, o)).collect(),
        }))
    }
    async fn abort_ingest(&self, r: Request<pb::IngestStatusRequest>) -> Res<pb::Empty> {
        self.0
            .content
            .abort(&r.into_inner().r#ref)
            .map_err(status)?;
        Ok(Response::new(pb::Empty {}))
    }
}

/// Streams `progress` every 100 ms until `work` ends, then its final message.
fn progress_stream<T: Send + 'static>(
    progress: Progress,
    msg: Arc<std::sync::Mutex<String>>,
    work: impl std::future::Future<Output = Result<T, Status>> + Send + 'static,
    make: impl Fn(Vec<pb::LayerProgress>, String, Option<&T>) -> pb::PullProgress + Send + 'static,
) -> BoxStream<pb::PullProgress> {
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    // The work runs on its own task: a client that goes away (Ctrl-C) does not cancel
    // it half way, so it always ends through its own cleanup (lease, GC on failure).
    let mut work = tokio::spawn(work);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_millis(100));
        let mut client = true;
        loop {
            tokio::select! {
                r = &mut work => {
                    let r = r.unwrap_or_else(|e| Err(Status::internal(e.to_string())));
                    let m = msg.lock().unwrap().clone();
                    let out = match r {
                        Ok(v) => Ok(make(progress.snapshot(), m, Some(&v))),
                        Err(e) => Err(e),
                    };
                    if client {
                        let _ = tx.send(out).await;
                    }
                    break;
                }
                _ = tick.tick(), if client => {
                    let m = msg.lock().unwrap().clone();
                    if tx.send(Ok(make(progress.snapshot(), m, None))).await.is_err() {
                        client = false;
                    }
                }
            }
        }
    });
    Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))
}

#[tonic::async_trait]
impl pb::images_server::Images for Svc {
    type PullStream = BoxStream<pb::PullProgress>;
    async fn pull(&self, r: Request<pb::PullRequest>) -> Res<Self::PullStream> {
        let ns = ns(&r)?;
        let req = r.into_inner();
        let sn = self.sn(&req.snapshotter)?;
        let k = self.0.clone();
        let progress = Progress::default();
        let msg = Arc::new(std::sync::Mutex::new(String::new()));
        let (p2, m2) = (progress.clone(), msg.clone());
        let opts = images::pull::PullOptions {
            reference: req.reference,
            platform: req.platform,
            snapshotter: sn.clone(),
            unpack: !req.no_unpack,
            registry: Options {
                plain_http: req.plain_http,
                skip_verify: req.skip_verify,
                auth: auth(req.auth),
            },
            labels: labels(req.labels),
            all_platforms: req.all_platforms,
        };
        let work = async move {
            let log = move |s: String| *m2.lock().unwrap() = s;
            let platform = images::oci::Platform::parse(&opts.platform).map_err(status)?;
            let pulled = match images::pull::pull(&k, &ns, opts, &p2, &log).await {
                Ok(p) => p,
                Err(e) => {
                    // What the failed pull wrote is no longer leased: take it now, so a
                    // refused layer leaves nothing behind.
                    let k2 = k.clone();
                    let _ = tokio::task::spawn_blocking(move || crate::gc::collect(&k2)).await;
                    return Err(status(e));
                }
            };
            let img = images::get(&k, &ns, &pulled.name).map_err(status)?;
            Ok(images::summary_for(&k, &ns, &img, &sn, &platform))
        };
        Ok(Response::new(progress_stream(
            progress,
            msg,
            work,
            |layers, message, done: Option<&pb::ImageSummary>| pb::PullProgress {
                layers,
                image: done.cloned(),
                resolved_digest: done
                    .and_then(|s| s.image.as_ref()?.target.as_ref().map(|t| t.digest.clone()))
                    .unwrap_or_default(),
                message,
            },
        )))
    }
    async fn list(&self, r: Request<pb::ListImagesRequest>) -> Res<pb::ListImagesResponse> {
        let ns = ns(&r)?;
        let filters = r.into_inner().filters;
        let k = self.0.clone();
        let sn = self.sn("")?;
        let images = blocking(move || {
            let all = images::list(&k, &ns)?;
            Ok(all
                .into_iter()
                .filter(|i| filters.iter().all(|f| filter_match(i, f)))
                .map(|i| images::summary(&k, &ns, &i, &sn))
                .collect())
        })
        .await?;
        Ok(Response::new(pb::ListImagesResponse { images }))
    }
    async fn inspect(&self, r: Request<pb::InspectImageRequest>) -> Res<pb::InspectImageResponse> {
        let ns = ns(&r)?;
        let req = r.into_inner();
        let sn = self.sn(&req.snapshotter)?;
        let k = self.0.clone();
        let out = blocking(move || {
            let img = images::get(&k, &ns, &req.name)?;
            let platform = images::oci::Platform::parse(&req.platform)?;
            let res = images::resolve(&k, &ns, &img.target, &platform)?;
            let chains = res.chain_ids();
            let layers = res
                .manifest
                .layers
                .iter()
                .enumerate()
                .map(|(i, l)| {
                    let snap = k
                        .snapshots
                        .get(&ns, &sn, &chains[i])
                        .ok()
                        .flatten()
                        .filter(|s| s.kind == SnapshotKind::Committed);
                    pb::LayerInfo {
                        descriptor: Some(images::desc_to_proto(l)),
                        diff_id: res.config.rootfs.diff_ids[i].clone(),
                        chain_id: chains[i].clone(),
                        unpacked: snap.is_some(),
                        unpacked_size: snap
                            .map(|s| crate::snapshots::du(&k.snapshots.fs_dir(&sn, s.id)).0 as i64)
                            .unwrap_or(0),
                    }
                })
                .collect();
            Ok(pb::InspectImageResponse {
                summary: Some(images::summary(&k, &ns, &img, &sn)),
                manifest: Some(images::desc_to_proto(&res.manifest_desc)),
                config_descriptor: Some(images::desc_to_proto(&res.manifest.config)),
                config: res.config_json.clone(),
                manifest_json: res.manifest_json.clone(),
                layers,
                index_manifests: res
                    .index
                    .as_ref()
                    .map(|i| i.manifests.iter().map(images::desc_to_proto).collect())
                    .unwrap_or_default(),
                chain_id: chains.last().cloned().unwrap_or_default(),
            })
        })
        .await?;
        Ok(Response::new(out))
    }
    async fn tag(&self, r: Request<pb::TagImageRequest>) -> Res<pb::Image> {
        let ns = ns(&r)?;
        let req = r.into_inner();
        let img = images::tag(&self.0, &ns, &req.source, &req.target, req.force).map_err(status)?;
        Ok(Response::new(images::to_proto(&img)))
    }
    async fn remove(&self, r: Request<pb::RemoveImageRequest>) -> Res<pb::RemoveImageResponse> {
        let ns = ns(&r)?;
        let req = r.into_inner();
        let k = self.0.clone();
        let (removed, gc) = blocking(move || {
            let removed = images::remove(&k, &ns, &req.names, req.ignore_missing)?;
            let gc = if req.no_gc {
                None
            } else {
                Some(crate::gc::collect(&k)?)
            };
            Ok((removed, gc))
        })
        .await?;
        Ok(Response::new(pb::RemoveImageResponse {
            removed,
            gc: gc.map(gc_pb),
        }))
    }
    async fn set_labels(&self, r: Request<pb::SetImageLabelsRequest>) -> Res<pb::Image> {
        let ns = ns(&r)?;
        let req = r.into_inner();
        let img = images::set_labels(&self.0, &ns, &req.name, labels(req.labels), req.replace)
            .map_err(status)?;
        Ok(Response::new(images::to_proto(&img)))
    }
    type PushStream = BoxStream<pb::PushProgress>;
    async fn push(&self, r: Request<pb::PushRequest>) -> Res<Self::PushStream> {
        let ns = ns(&r)?;
        let req = r.into_inner();
        let k = self.0.clone();
        let progress = Progress::default();
        let p2 = progress.clone();
        let work = async move {
            let opts = Options {
                plain_http: req.plain_http,
                skip_verify: req.skip_verify,
                auth: auth(req.auth),
            };
            images::push::push(
                &k,
                &ns,
                &req.name,
                &req.reference,
                &req.platform,
                &opts,
                &p2,
            )
            .await
            .map_err(status)
        };
        let s = progress_stream(
            progress,
            Arc::default(),
            work,
            |layers, message, d: Option<&String>| pb::PullProgress {
                layers,
                resolved_digest: d.cloned().unwrap_or_default(),
                message,
                image: None,
            },
        );
        use tokio_stream::StreamExt;
        Ok(Response::new(Box::pin(s.map(|r| {
            r.map(|p| pb::PushProgress {
                layers: p.layers,
                pushed_digest: p.resolved_digest,
                message: p.message,
            })
        }))))
    }
    type SaveStream = BoxStream<pb::DataChunk>;
    async fn save(&self, r: Request<pb::SaveRequest>) -> Res<Self::SaveStream> {
        let ns = ns(&r)?;
        let req = r.into_inner();
        let imgs = req
            .names
            .iter()
            .map(|n| images::get(&self.0, &ns, n))
            .collect::<anyhow::Result<Vec<_>>>()
            .map_err(status)?;
        let (tx, rx) = tokio::sync::mpsc::channel(8);
        let k = self.0.clone();
        tokio::task::spawn_blocking(move || {
            let w = ChunkWriter {
                tx: tx.clone(),
                buf: Vec::with_capacity(1 << 16),
            };
            if let Err(e) = images::archive::save(&k, &ns, &imgs, &req.platform, w) {
                let _ = tx.blocking_send(Err(status(e)));
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }
    async fn load(&self, r: Request<Streaming<pb::LoadRequest>>) -> Res<pb::LoadResponse> {
        let ns = ns(&r)?;
        let mut s = r.into_inner();
        let first = s
            .message()
            .await?
            .ok_or_else(|| Status::invalid_argument("empty load"))?;
        let sn = self.sn(&first.snapshotter)?;
        let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<bytes::Bytes>>(16);
        let k = self.0.clone();
        let lease = k.temp_lease(&ns, "load").map_err(status)?;
        let (ns2, lease2, name) = (ns.clone(), lease.clone(), first.name.clone());
        let worker = tokio::task::spawn_blocking(move || {
            let r = RxReader {
                rx,
                cur: bytes::Bytes::new(),
            };
            images::archive::load(&k, &ns2, r, &name, &lease2)
        });
        let _ = tx.send(Ok(bytes::Bytes::from(first.data))).await;
        while let Some(m) = s.message().await? {
            if tx.send(Ok(bytes::Bytes::from(m.data))).await.is_err() {
                break;
            }
        }
        drop(tx);
        let res = worker.await.map_err(|e| Status::internal(e.to_string()))?;
        let out = match res {
            Ok(imgs) => {
                let mut r = Ok(());
                if !first.no_unpack {
                    for img in &imgs {
                        if let Err(e) = unpack_image(&self.0, &ns, &img.name, "", &sn, &lease).await
                        {
                            r = Err(e);
                            break;
                        }
                    }
                }
                r.map(|_| imgs)
            }
            Err(e) => Err(e),
        };
        let _ = self.0.delete_lease(&ns, &lease);
        let imgs = out.map_err(status)?;
        Ok(Response::new(pb::LoadResponse {
            images: imgs.iter().map(images::to_proto).collect(),
        }))
    }
    async fn unpack(&self, r: Request<pb::UnpackRequest>) -> Res<pb::UnpackResponse> {
        let ns = ns(&r)?;
        let req = r.into_inner();
        let sn = self.sn(&req.snapshotter)?;
        let lease = self.0.temp_lease(&ns, "unpack").map_err(status)?;
        let res = unpack_image(&self.0, &ns, &req.name, &req.platform, &sn, &lease).await;
        let _ = self.0.delete_lease(&ns, &lease);
        Ok(Response::new(pb::UnpackResponse {
            chain_id: res.map_err(status)?,
        }))
    }
}

pub(crate) async fn unpack_image(
    k: &Arc<Kura>,
    ns: &str,
    name: &str,
    platform: &str,
    sn: &str,
    lease: &str,
) -> anyhow::Result<String> {
    let img = images::get(k, ns, name)?;
    let res = images::resolve(k, ns, &img.target, &images::oci::Platform::parse(platform)?)?;
    let progress = Progress::default();
    let slots: Vec<usize> = res
        .manifest
        .layers
        .iter()
        .map(|l| progress.add(l, "waiting"))
        .collect();
    images::layers::unpack_layers(
        k,
        ns,
        None,
        &res.manifest.layers,
        &res.config.rootfs.diff_ids,
        sn,
        lease,
        &progress,
        &slots,
    )
    .await
}

fn filter_match(i: &metadata::ImageRecord, f: &str) -> bool {
    if let Some((k, v)) = f.split_once("~=") {
        return k.trim() == "name" && i.name.contains(v.trim());
    }
    let Some((k, v)) = f.split_once("==").or_else(|| f.split_once('=')) else {
        return i.name.contains(f);
    };
    let (k, v) = (k.trim(), v.trim());
    match k {
        "name" => i.name == v || i.name == images::oci::normalize_name(v),
        _ => k
            .strip_prefix("labels.")
            .map(|l| i.labels.get(l).map(String::as_str) == Some(v))
            .unwrap_or(false),
    }
}

fn gc_pb(g: crate::gc::GcResult) -> pb::GcResult {
    pb::GcResult {
        removed_content: g.removed_content,
        removed_snapshots: g.removed_snapshots,
        reclaimed_bytes: g.reclaimed as i64,
    }
}

struct ChunkWriter {
    tx: tokio::sync::mpsc::Sender<Result<pb::DataChunk, Status>>,
    buf: Vec<u8>,
}

impl std::io::Write for ChunkWriter {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(b);
        if self.buf.len() >= 1 << 16 {
            self.flush()?;
        }
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        if !self.buf.is_empty() {
            let data = std::mem::replace(&mut self.buf, Vec::with_capacity(1 << 16));
            self.tx
                .blocking_send(Ok(pb::DataChunk { data }))
                .map_err(|_| std::io::Error::other("client went away"))?;
        }
        Ok(())
    }
}

struct RxReader {
    rx: tokio::sync::mpsc::Receiver<std::io::Result<bytes::Bytes>>,
    cur: bytes::Bytes,
}

impl std::io::Read for RxReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.cur.is_empty() {
            match self.rx.blocking_recv() {
                Some(Ok(b)) => self.cur = b,
                Some(Err(e)) => return Err(e),
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.cur.len());
        buf[..n].copy_from_slice(&self.cur[..n]);
        bytes::Buf::advance(&mut self.cur, n);
        Ok(n)
    }
}

#[tonic::async_trait]
impl pb::registry_server::Registry for Svc {
    async fn login(&self, r: Request<pb::LoginRequest>) -> Res<pb::LoginResponse> {
        let req = r.into_inner();
        let host = req
            .host
            .trim_start_matches("https://")
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_string();
        let reference = images::oci::Reference {
            domain: host.clone(),
            path: "kura-login-check".into(),
            tag: None,
            digest: None,
        };
        let opts = Options {
            plain_http: req.plain_http,
            skip_verify: req.skip_verify,
            auth: auth(req.auth),
        };
        let repo = self
            .0
            .registries
            .repo(&reference, &opts, false)
            .map_err(status)?;
        repo.ping()
            .await
            .map_err(|e| Status::permission_denied(format!("{e:#}")))?;
        Ok(Response::new(pb::LoginResponse {
            status: "Login Succeeded".into(),
            identity_token: String::new(),
        }))
    }
}

fn snap_info(name: &str, sn: &str, r: metadata::SnapshotRecord) -> pb::SnapshotInfo {
    pb::SnapshotInfo {
        name: name.into(),
        parent: r.parent,
        kind: r.kind.as_str().into(),
        labels: r.labels.into_iter().collect(),
        created_at: r.created_at,
        snapshotter: sn.into(),
    }
}

fn mounts_pb(m: Vec<crate::snapshots::Mount>) -> pb::MountsResponse {
    pb::MountsResponse {
        mounts: m
            .into_iter()
            .map(|m| pb::Mount {
                r#type: m.r#type,
                source: m.source,
                target: String::new(),
                options: m.options,
            })
            .collect(),
    }
}

#[tonic::async_trait]
impl pb::snapshots_server::Snapshots for Svc {
    async fn prepare(&self, r: Request<pb::PrepareSnapshotRequest>) -> Res<pb::MountsResponse> {
        let ns = ns(&r)?;
        let q = r.into_inner();
        let sn = self.sn(&q.snapshotter)?;
        let k = self.0.clone();
        let m = blocking(move || {
            k.snapshots.prepare(
                &ns,
                &sn,
                &q.key,
                &q.parent,
                labels(q.labels),
                &q.lease,
                SnapshotKind::Active,
            )
        })
        .await?;
        Ok(Response::new(mounts_pb(m)))
    }
    async fn view(&self, r: Request<pb::PrepareSnapshotRequest>) -> Res<pb::MountsResponse> {
        let ns = ns(&r)?;
        let q = r.into_inner();
        let sn = self.sn(&q.snapshotter)?;
        let k = self.0.clone();
        let m = blocking(move || {
            k.snapshots.prepare(
                &ns,
                &sn,
                &q.key,
                &q.parent,
                labels(q.labels),
                &q.lease,
                SnapshotKind::View,
            )
        })
        .await?;
        Ok(Response::new(mounts_pb(m)))
    }
    async fn commit(&self, r: Request<pb::CommitSnapshotRequest>) -> Res<pb::Empty> {
        let ns = ns(&r)?;
        let q = r.into_inner();
        let sn = self.sn(&q.snapshotter)?;
        self.0
            .snapshots
            .commit(&ns, &sn, &q.name, &q.key, labels(q.labels))
            .map_err(status)?;
        Ok(Response::new(pb::Empty {}))
    }
    async fn remove(&self, r: Request<pb::SnapshotKeyRequest>) -> Res<pb::Empty> {
        let ns = ns(&r)?;
        let q = r.into_inner();
        let sn = self.sn(&q.snapshotter)?;
        let k = self.0.clone();
        blocking(move || k.snapshots.remove(&ns, &sn, &q.key)).await?;
        Ok(Response::new(pb::Empty {}))
    }
    async fn mounts(&self, r: Request<pb::SnapshotKeyRequest>) -> Res<pb::MountsResponse> {
        let ns = ns(&r)?;
        let q = r.into_inner();
        let sn = self.sn(&q.snapshotter)?;
        Ok(Response::new(mounts_pb(
            self.0.snapshots.mounts(&ns, &sn, &q.key).map_err(status)?,
        )))
    }
    async fn stat(&self, r: Request<pb::SnapshotKeyRequest>) -> Res<pb::SnapshotInfo> {
        let ns = ns(&r)?;
        let q = r.into_inner();
        let sn = self.sn(&q.snapshotter)?;
        let rec = self.0.snapshots.get(&ns, &sn, &q.key).map_err(status)?;
        let rec = rec.ok_or_else(|| {
            Status::not_found(format!(
                "snapshot {} not found ({sn}, namespace {ns})",
                q.key
            ))
        })?;
        Ok(Response::new(snap_info(&q.key, &sn, rec)))
    }
    async fn list(&self, r: Request<pb::ListSnapshotsRequest>) -> Res<pb::ListSnapshotsResponse> {
        let ns = ns(&r)?;
        let sn = self.sn(&r.into_inner().snapshotter)?;
        let all = self.0.snapshots.list(&ns, &sn).map_err(status)?;
        Ok(Response::new(pb::ListSnapshotsResponse {
            snapshots: all
                .into_iter()
                .map(|(n, r)| snap_info(&n, &sn, r))
                .collect(),
        }))
    }
    async fn usage(&self, r: Request<pb::SnapshotKeyRequest>) -> Res<pb::SnapshotUsage> {
        let ns = ns(&r)?;
        let q = r.into_inner();
        let sn = self.sn(&q.snapshotter)?;
        let k = self.0.clone();
        let (size, inodes) = blocking(move || k.snapshots.usage(&ns, &sn, &q.key)).await?;
        Ok(Response::new(pb::SnapshotUsage {
            size: size as i64,
            inodes: inodes as i64,
        }))
    }
}

fn lease_pb(l: metadata::LeaseRecord) -> pb::Lease {
    pb::Lease {
        id: l.id,
        labels: l.labels.into_iter().collect(),
        created_at: l.created_at,
        expires_at: l.expires_at,
        resources: l
            .resources
            .into_iter()
            .map(|r| pb::LeaseResource {
                r#type: r.kind,
                id: r.id,
            })
            .collect(),
    }
}

#[tonic::async_trait]
impl pb::leases_server::Leases for Svc {
    async fn create(&self, r: Request<pb::CreateLeaseRequest>) -> Res<pb::Lease> {
        let ns = ns(&r)?;
        let q = r.into_inner();
        let l = self
            .0
            .create_lease(&ns, &q.id, labels(q.labels), q.expire_seconds)
            .map_err(status)?;
        Ok(Response::new(lease_pb(l)))
    }
    async fn delete(&self, r: Request<pb::DeleteLeaseRequest>) -> Res<pb::Empty> {
        let ns = ns(&r)?;
        let q = r.into_inner();
        if !self.0.delete_lease(&ns, &q.id).map_err(status)? {
            return Err(Status::not_found(format!("lease {} not found", q.id)));
        }
        if q.sync {
            let k = self.0.clone();
            blocking(move || crate::gc::collect(&k)).await?;
        }
        Ok(Response::new(pb::Empty {}))
    }
    async fn list(&self, r: Request<pb::Empty>) -> Res<pb::ListLeasesResponse> {
        let ns = ns(&r)?;
        let all = self
            .0
            .md
            .scan::<metadata::LeaseRecord>(metadata::LEASES, &format!("{ns}/"))
            .map_err(status)?;
        Ok(Response::new(pb::ListLeasesResponse {
            leases: all.into_iter().map(|(_, l)| lease_pb(l)).collect(),
        }))
    }
    async fn add_resource(&self, r: Request<pb::LeaseResourceRequest>) -> Res<pb::Empty> {
        let ns = ns(&r)?;
        let q = r.into_inner();
        let res = q
            .resource
            .ok_or_else(|| Status::invalid_argument("no resource"))?;
        self.0
            .md
            .write(|tx| {
                metadata::lease_add(
                    tx,
                    &ns,
                    &q.lease,
                    metadata::LeaseResource {
                        kind: res.r#type,
                        id: res.id,
                    },
                )
            })
            .map_err(status)?;
        Ok(Response::new(pb::Empty {}))
    }
    async fn delete_resource(&self, r: Request<pb::LeaseResourceRequest>) -> Res<pb::Empty> {
        let ns = ns(&r)?;
        let q = r.into_inner();
        let res = q
            .resource
            .ok_or_else(|| Status::invalid_argument("no resource"))?;
        self.0
            .md
            .write(|tx| {
                let mut t = tx.open_table(metadata::LEASES)?;
                let kk = metadata::key(&ns, &q.lease);
                let mut l: metadata::LeaseRecord = metadata::get_in(&t, &kk)?
                    .ok_or_else(|| anyhow::anyhow!("lease {} not found", q.lease))?;
                l.resources
                    .retain(|r| !(r.kind == res.r#type && r.id == res.id));
                metadata::put(&mut t, &kk, &l)
            })
            .map_err(status)?;
        Ok(Response::new(pb::Empty {}))
    }
}

#[tonic::async_trait]
impl pb::gc_server::Gc for Svc {
    async fn prune(&self, _: Request<pb::Empty>) -> Res<pb::GcResult> {
        let k = self.0.clone();
        Ok(Response::new(gc_pb(
            blocking(move || crate::gc::collect(&k)).await?,
        )))
    }
    async fn references(&self, r: Request<pb::ReferencesRequest>) -> Res<pb::ReferencesResponse> {
        let ns = ns(&r)?;
        let obj = r.into_inner().object;
        let k = self.0.clone();
        let (exists, chains) = blocking(move || crate::gc::references(&k, &ns, &obj)).await?;
        Ok(Response::new(pb::ReferencesResponse {
            exists,
            chains: chains
                .into_iter()
                .map(|path| pb::ReferenceChain { path })
                .collect(),
        }))
    }
}
