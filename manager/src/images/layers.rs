//! Getting layers into the content store and into snapshots.
//!
//! A layer is streamed once: network → (compressed digest, content store ingest) →
//! decompressor → (diff ID) → tar apply, all in one blocking thread fed by a bounded
//! channel, so memory stays small whatever the layer size. With overlayfs, every layer
//! is applied to its own upper directory in parallel (within the download limit) and
//! committed under its chain ID once its parent is committed; with the native
//! snapshotter layers are applied in order. A committed chain ID is never unpacked
//! again: racing pulls wait on a per-chain lock and find it done.

use crate::daemon::{blocking, Kura};
use crate::images::oci::{self, Compression};
use crate::metadata::{Descriptor, Labels, SnapshotKind};
use crate::registry::Repo;
use crate::snapshots::{NATIVE, OVERLAYFS};
use crate::unpack::{self, Applied, Mode};
use anyhow::{anyhow, bail, Context, Result};
use futures_util::StreamExt;
use kura_proto::v1::LayerProgress;
use std::io::Read;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use tokio::sync::watch;

/// Progress of every layer of an operation, shared with whoever streams it out.
#[derive(Clone, Default)]
pub struct Progress(pub Arc<Mutex<Vec<LayerProgress>>>);

impl Progress {
    pub fn add(&self, d: &Descriptor, status: &str) -> usize {
        let mut v = self.0.lock().unwrap();
        v.push(LayerProgress {
            digest: d.digest.clone(),
            media_type: d.media_type.clone(),
            status: status.into(),
            offset: 0,
            total: d.size,
            message: String::new(),
        });
        v.len() - 1
    }
    pub fn status(&self, i: usize, s: &str) {
        if let Some(l) = self.0.lock().unwrap().get_mut(i) {
            l.status = s.into();
            if s == "done" || s == "exists" {
                l.offset = l.total;
            }
        }
    }
    pub fn offset(&self, i: usize, o: u64) {
        if let Some(l) = self.0.lock().unwrap().get_mut(i) {
            l.offset = o as i64;
        }
    }
    pub fn fail(&self, i: usize, msg: &str) {
        if let Some(l) = self.0.lock().unwrap().get_mut(i) {
            l.status = "failed".into();
            l.message = msg.into();
        }
    }
    pub fn snapshot(&self) -> Vec<LayerProgress> {
        self.0.lock().unwrap().clone()
    }
}

/// Test hook: `KURA_TEST_PULL_THROTTLE_MS` sleeps that long per received chunk, so tests
/// can interrupt a pull in the middle.
fn throttle() -> Option<std::time::Duration> {
    std::env::var("KURA_TEST_PULL_THROTTLE_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .map(std::time::Duration::from_millis)
}

/// Fetches blob `desc` into the content store (for namespace `ns`, under `lease`) and,
/// with `dest`, applies it as a layer to that directory. A blob already in the store is
/// not downloaded again. Returns what the apply did.
#[allow(clippy::too_many_arguments)]
pub async fn fetch(
    k: &Arc<Kura>,
    ns: &str,
    repo: Option<&Repo>,
    desc: &Descriptor,
    dest: Option<(PathBuf, Mode)>,
    lease: &str,
    progress: &Progress,
    slot: usize,
) -> Result<Option<Applied>> {
    let hint = oci::layer_compression(&desc.media_type).unwrap_or(Compression::None);
    let _dl = k.lock(format!("blob/{}", desc.digest)).await;
    if blocking(|| k.record_blob(ns, &desc.digest, lease))? {
        let Some((dir, mode)) = dest else {
            progress.status(slot, "exists");
            return Ok(None);
        };
        progress.status(slot, "extracting");
        progress.offset(slot, desc.size.max(0) as u64);
        let path = k.content.blob_path(&desc.digest)?;
        let applied = tokio::task::spawn_blocking(move || -> Result<Applied> {
            let f = std::fs::File::open(&path)?;
            let r = unpack::layer_reader(f, hint)?;
            unpack::apply(r, &dir, mode)
        })
        .await??;
        return Ok(Some(applied));
    }
    let repo =
        repo.with_context(|| format!("layer {} is not in the content store", desc.digest))?;
    let (k2, r, exp, total) = (
        k.clone(),
        desc.digest.clone(),
        desc.digest.clone(),
        desc.size,
    );
    let mut w = tokio::task::spawn_blocking(move || k2.content.writer(&r, &exp, total)).await??;
    let start = w.offset();
    if start > 0 {
        tracing::info!(digest = %desc.digest, offset = start, "resuming an interrupted download");
    }
    progress.status(slot, "downloading");
    progress.offset(slot, start);
    // A few chunks in flight per layer: hyper's chunks can be hundreds of KiB, and
    // kurad's memory must not grow with the number of parallel layers much.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<std::io::Result<bytes::Bytes>>(8);
    let (k2, ns2, lease2, digest) = (
        k.clone(),
        ns.to_string(),
        lease.to_string(),
        desc.digest.clone(),
    );
    let worker = tokio::task::spawn_blocking(move || -> Result<Option<Applied>> {
        let mut partial = Vec::new();
        if start > 0 {
            // Replay the part a previous run got, then what arrives now.
            let mut buf = Vec::new();
            w.replay(&mut buf)?;
            partial = buf;
        }
        let chan = ReceiverReader {
            rx: &mut rx,
            cur: bytes::Bytes::new(),
        };
        let mut raw = std::io::Cursor::new(partial).chain(unpack::TeeReader {
            inner: chan,
            w: &mut w,
        });
        let applied = match dest {
            Some((dir, mode)) => {
                let r = unpack::layer_reader(&mut raw, hint)?;
                Some(unpack::apply(r, &dir, mode)?)
            }
            None => None,
        };
        std::io::copy(&mut raw, &mut std::io::sink())?;
        drop(raw);
        let _g = k2.gc_lock.read().unwrap();
        let (d, size) = w.commit().map_err(|e| anyhow!("layer {digest}: {e:#}"))?;
        k2.record_blob_locked(&ns2, &d, size, Labels::new(), &lease2)?;
        Ok(applied)
    });
    let sent = if desc.size >= 0 && start >= desc.size as u64 {
        // Everything arrived before an interruption: nothing left to ask for (a Range
        // from the end would be answered 416).
        drop(tx);
        Ok(())
    } else {
        download(repo, desc, start, tx, progress, slot).await
    };
    let res = worker.await?;
    match (sent, res) {
        (Err(e), _) => Err(e),
        (Ok(()), Err(e)) if start > 0 => {
            // The bytes kept from before a crash may be what is wrong: drop them so the
            // next attempt starts from zero.
            let _ = k.content.abort(&desc.digest);
            Err(e.context(format!("{RESUMED_BAD} (resumed at byte {start})")))
        }
        (Ok(()), r) => r,
    }
}

/// In the error of a resumed download that failed to verify or unpack.
pub const RESUMED_BAD: &str = "resumed download did not verify";

struct ReceiverReader<'a> {
    rx: &'a mut tokio::sync::mpsc::Receiver<std::io::Result<bytes::Bytes>>,
    cur: bytes::Bytes,
}

impl Read for ReceiverReader<'_> {
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

/// Streams the blob from `start` into `tx`, resuming with Range requests after a broken
/// or stalled transfer. A transfer making no progress for the stall timeout is retried,
/// then fails with an error naming registry, layer and position.
async fn download(
    repo: &Repo,
    desc: &Descriptor,
    start: u64,
    tx: tokio::sync::mpsc::Sender<std::io::Result<bytes::Bytes>>,
    progress: &Progress,
    slot: usize,
) -> Result<()> {
    let stall = k_stall();
    let throttle = throttle();
    let mut pos = start;
    let mut attempts = 0;
    let total = desc.size as u64;
    loop {
        attempts += 1;
        let err: anyhow::Error = match repo.get_blob(&desc.digest, pos).await {
            Err(e) => e,
            Ok((resp, ranged)) => {
                let mut skip = if ranged { 0 } else { pos };
                let mut body = resp.bytes_stream();
                let mut failed = None;
                loop {
                    let next = match tokio::time::timeout(stall, body.next()).await {
                        Err(_) => {
                            failed = Some(anyhow!(
                                "registry {} stopped sending layer {} at {pos} of {total} bytes (no data for {}s)",
                                repo.display,
                                desc.digest,
                                stall.as_secs()
                            ));
                            break;
                        }
                        Ok(n) => n,
                    };
                    match next {
                        None => break,
                        Some(Err(e)) if e.is_timeout() => {
                            failed = Some(anyhow!(
                                "registry {} stopped sending layer {} at {pos} of {total} bytes (no data for {}s)",
                                repo.display,
                                desc.digest,
                                stall.as_secs()
                            ));
                            break;
                        }
                        Some(Err(e)) => {
                            failed = Some(anyhow!(
                                "registry {}: layer {} broke off at {pos} of {total} bytes: {}",
                                repo.display,
                                desc.digest,
                                crate::registry::error_chain(&e)
                            ));
                            break;
                        }
                        Some(Ok(mut chunk)) => {
                            if skip > 0 {
                                let n = (skip as usize).min(chunk.len());
                                bytes::Buf::advance(&mut chunk, n);
                                skip -= n as u64;
                            }
                            if chunk.is_empty() {
                                continue;
                            }
                            pos += chunk.len() as u64;
                            if pos > total {
                                let _ = tx
                                    .send(Err(std::io::Error::other(
                                        "blob larger than its descriptor",
                                    )))
                                    .await;
                                bail!("registry {}: layer {} is larger than the {total} bytes its manifest says", repo.display, desc.digest);
                            }
                            if tx.send(Ok(chunk)).await.is_err() {
                                // The apply side stopped (and says why).
                                return Ok(());
                            }
                            progress.offset(slot, pos);
                            if let Some(t) = throttle {
                                tokio::time::sleep(t).await;
                            }
                        }
                    }
                }
                match failed {
                    None if pos == total => return Ok(()),
                    None => anyhow!(
                        "registry {}: layer {} ended at {pos} of {total} bytes",
                        repo.display,
                        desc.digest
                    ),
                    Some(e) => e,
                }
            }
        };
        if attempts >= 4 {
            let _ = tx
                .send(Err(std::io::Error::other(format!("{err:#}"))))
                .await;
            return Err(err);
        }
        tracing::warn!("{err:#}; retrying from byte {pos}");
        tokio::time::sleep(std::time::Duration::from_millis(250 << attempts)).await;
    }
}

static STALL: std::sync::OnceLock<std::time::Duration> = std::sync::OnceLock::new();
fn k_stall() -> std::time::Duration {
    *STALL.get().unwrap_or(&std::time::Duration::from_secs(30))
}
pub fn set_stall(d: std::time::Duration) {
    let _ = STALL.set(d);
}

/// Gets every layer of an image into snapshots of `snapshotter` (committed under their
/// chain IDs) and the content store. Returns the top chain ID.
#[allow(clippy::too_many_arguments)]
pub async fn unpack_layers(
    k: &Arc<Kura>,
    ns: &str,
    repo: Option<Arc<Repo>>,
    layers: &[Descriptor],
    diff_ids: &[String],
    snapshotter: &str,
    lease: &str,
    progress: &Progress,
    slots: &[usize],
) -> Result<String> {
    let chains = oci::chain_ids(diff_ids);
    let sem = Arc::new(tokio::sync::Semaphore::new(
        k.config.max_concurrent_downloads.max(1),
    ));
    // committed[i] turns Some(true) once chain i is committed, Some(false) if it failed.
    #[allow(clippy::type_complexity)]
    let chans: Vec<(watch::Sender<Option<bool>>, watch::Receiver<Option<bool>>)> =
        (0..layers.len()).map(|_| watch::channel(None)).collect();
    let mut tasks = tokio::task::JoinSet::new();
    for (i, layer) in layers.iter().enumerate() {
        let (k, ns, repo, layer, sem, lease, progress) = (
            k.clone(),
            ns.to_string(),
            repo.clone(),
            layer.clone(),
            sem.clone(),
            lease.to_string(),
            progress.clone(),
        );
        let (chain, diff_id) = (chains[i].clone(), diff_ids[i].clone());
        let parent = if i > 0 {
            chains[i - 1].clone()
        } else {
            String::new()
        };
        let parent_rx = if i > 0 {
            Some(chans[i - 1].1.clone())
        } else {
            None
        };
        let done_tx = chans[i].0.clone();
        let sn = snapshotter.to_string();
        let slot = slots[i];
        tasks.spawn(async move {
            let r = unpack_one(
                &k,
                &ns,
                repo.as_deref(),
                &layer,
                &chain,
                &diff_id,
                &parent,
                parent_rx,
                &sn,
                &lease,
                &progress,
                slot,
                &sem,
            )
            .await;
            match &r {
                Ok(()) => {
                    progress.status(slot, "done");
                    let _ = done_tx.send(Some(true));
                }
                Err(e) => {
                    progress.fail(slot, &format!("{e:#}"));
                    let _ = done_tx.send(Some(false));
                }
            }
            (i, r)
        });
    }
    let mut first_err: Option<(usize, anyhow::Error)> = None;
    while let Some(j) = tasks.join_next().await {
        let (i, r) = j?;
        if let Err(e) = r {
            let is_parent = e.to_string() == "parent layer failed";
            let better = match &first_err {
                None => true,
                Some((fi, fe)) => {
                    let fe_parent = fe.to_string() == "parent layer failed";
                    (fe_parent && !is_parent) || (fe_parent == is_parent && i < *fi)
                }
            };
            if better {
                first_err = Some((i, e));
            }
        }
    }
    if let Some((_, e)) = first_err {
        return Err(e);
    }
    Ok(chains.last().cloned().unwrap_or_default())
}

#[allow(clippy::too_many_arguments)]
async fn unpack_one(
    k: &Arc<Kura>,
    ns: &str,
    repo: Option<&Repo>,
    layer: &Descriptor,
    chain: &str,
    diff_id: &str,
    parent: &str,
    parent_rx: Option<watch::Receiver<Option<bool>>>,
    sn: &str,
    lease: &str,
    progress: &Progress,
    slot: usize,
    sem: &tokio::sync::Semaphore,
) -> Result<()> {
    let wait_parent = |rx: Option<watch::Receiver<Option<bool>>>| async move {
        if let Some(mut rx) = rx {
            let v = rx
                .wait_for(|v| v.is_some())
                .await
                .map(|v| *v)
                .unwrap_or(Some(false));
            if v != Some(true) {
                bail!("parent layer failed");
            }
        }
        Ok(())
    };
    if oci::layer_compression(&layer.media_type).is_none() {
        bail!(
            "layer {} has unsupported media type {}",
            layer.digest,
            layer.media_type
        );
    }
    let _lock = k.lock(format!("unpack/{ns}/{sn}/{chain}")).await;
    if let Some(rec) = k.snapshots.get(ns, sn, chain)? {
        if rec.kind == SnapshotKind::Committed {
            // Already unpacked: keep it alive for this operation, make sure the blob is here.
            blocking(|| protect_snapshot(k, ns, sn, chain, lease))?;
            if !blocking(|| k.record_blob(ns, &layer.digest, lease))? && repo.is_some() {
                let _p = sem.acquire().await?;
                fetch(k, ns, repo, layer, None, lease, progress, slot).await?;
            }
            progress.status(slot, "exists");
            return Ok(());
        }
    }
    if sn == NATIVE {
        wait_parent(parent_rx.clone()).await?;
    }
    let _permit = sem.acquire().await?;
    let mode = if sn == OVERLAYFS {
        Mode::Overlay
    } else {
        Mode::Native
    };
    // A blob that does not match its digest is fetched once more from zero: what was
    // resumed after a crash may have been torn. A second mismatch is the registry's.
    let mut attempt = 0;
    let (tmp, dir, applied) = loop {
        attempt += 1;
        let tmp = format!("extract-{:08x}-{chain}", rand::random::<u32>());
        let mut labels = Labels::new();
        labels.insert("kura.io/unpacking".into(), chain.into());
        let (k2, ns2, sn2, tmp2, lease2) = (
            k.clone(),
            ns.to_string(),
            sn.to_string(),
            tmp.clone(),
            lease.to_string(),
        );
        let prep_parent = if sn == NATIVE {
            parent.to_string()
        } else {
            String::new()
        };
        tokio::task::spawn_blocking(move || {
            k2.snapshots.prepare(
                &ns2,
                &sn2,
                &tmp2,
                &prep_parent,
                labels,
                &lease2,
                SnapshotKind::Active,
            )
        })
        .await??;
        let rec = k
            .snapshots
            .get(ns, sn, &tmp)?
            .context("snapshot vanished")?;
        let dir = k.snapshots.fs_dir(sn, rec.id);
        match fetch(
            k,
            ns,
            repo,
            layer,
            Some((dir.clone(), mode)),
            lease,
            progress,
            slot,
        )
        .await
        {
            Ok(a) => break (tmp, dir, a.context("no apply result")?),
            Err(e) => {
                let _ = k.snapshots.remove(ns, sn, &tmp);
                if attempt == 1 && repo.is_some() && {
                    let m = format!("{e:#}");
                    m.contains("digest mismatch") || m.contains(RESUMED_BAD)
                } {
                    tracing::warn!(
                        "{e:#}; fetching layer {} again from the start",
                        layer.digest
                    );
                    continue;
                }
                return Err(e.context(format!("layer {}", layer.digest)));
            }
        }
    };
    let cleanup = |k: &Arc<Kura>| {
        let _ = k.snapshots.remove(ns, sn, &tmp);
    };
    drop(_permit);
    if applied.diff_id != diff_id {
        cleanup(k);
        bail!(
            "layer {}: uncompressed content has digest {}, but the image config says {diff_id}: refusing it",
            layer.digest,
            applied.diff_id
        );
    }
    progress.status(slot, "committing");
    if let Err(e) = wait_parent(parent_rx).await {
        cleanup(k);
        return Err(e);
    }
    let (k2, ns2, sn2, chain2, parent2, tmp2) = (
        k.clone(),
        ns.to_string(),
        sn.to_string(),
        chain.to_string(),
        parent.to_string(),
        tmp.clone(),
    );
    let res = tokio::task::spawn_blocking(move || -> Result<()> {
        if sn2 == OVERLAYFS && !applied.deferred.is_empty() {
            let lowers: Vec<PathBuf> = if parent2.is_empty() {
                vec![]
            } else {
                k2.snapshots
                    .chain(&ns2, &sn2, &parent2)?
                    .iter()
                    .map(|(_, r)| k2.snapshots.fs_dir(&sn2, r.id))
                    .collect()
            };
            unpack::finish_deferred(&dir, &lowers, &applied.deferred)?;
        }
        k2.snapshots
            .commit_with_parent(&ns2, &sn2, &chain2, &tmp2, &parent2)
    })
    .await?;
    if let Err(e) = res {
        cleanup(k);
        return Err(e.context(format!("layer {}", layer.digest)));
    }
    Ok(())
}

fn protect_snapshot(k: &Kura, ns: &str, sn: &str, chain: &str, lease: &str) -> Result<()> {
    k.md.write(|tx| {
        crate::metadata::lease_add(
            tx,
            ns,
            lease,
            crate::metadata::LeaseResource {
                kind: crate::snapshots::lease_kind(sn),
                id: chain.to_string(),
            },
        )
    })
}
