//! Push: blobs first (skipping those the registry has), then manifests, then the tag.

use super::layers::Progress;
use super::oci::{self, Index, Manifest, Platform, Reference};
use crate::daemon::Kura;
use crate::metadata::Descriptor;
use crate::registry::{Options, Repo};
use anyhow::{Context, Result};
use std::sync::Arc;

async fn push_blob(k: &Arc<Kura>, repo: &Repo, d: &Descriptor, progress: &Progress) -> Result<()> {
    let slot = progress.add(d, "checking");
    if repo.blob_exists(&d.digest).await? {
        progress.status(slot, "exists");
        return Ok(());
    }
    let path = k.content.blob_path(&d.digest)?;
    if !path.exists() {
        anyhow::bail!(
            "blob {} is not in the content store (pull the image with --all-platforms?)",
            d.digest
        );
    }
    progress.status(slot, "uploading");
    let p = progress.clone();
    repo.upload_blob(&d.digest, d.size as u64, &path, move |n| p.offset(slot, n))
        .await?;
    progress.status(slot, "done");
    Ok(())
}

async fn push_manifest(
    k: &Arc<Kura>,
    ns: &str,
    repo: &Repo,
    d: &Descriptor,
    tag: Option<&str>,
    progress: &Progress,
) -> Result<()> {
    let data = k.read_blob(ns, &d.digest)?;
    let m: Manifest = serde_json::from_slice(&data).context("parse manifest")?;
    // Config and layers, in parallel within the download limit.
    let sem = Arc::new(tokio::sync::Semaphore::new(
        k.config.max_concurrent_downloads.max(1),
    ));
    let futs = std::iter::once(&m.config).chain(m.layers.iter()).map(|b| {
        let sem = sem.clone();
        async move {
            let _p = sem.acquire().await?;
            push_blob(k, repo, b, progress).await
        }
    });
    for r in futures_util::future::join_all(futs).await {
        r?;
    }
    repo.put_manifest(tag.unwrap_or(&d.digest), &d.media_type, data)
        .await
}

/// Pushes image `name` to `dest` (a reference; empty = the name). Returns the digest.
pub async fn push(
    k: &Arc<Kura>,
    ns: &str,
    name: &str,
    dest: &str,
    platform: &str,
    opts: &Options,
    progress: &Progress,
) -> Result<String> {
    let img = super::get(k, ns, name)?;
    let r = Reference::parse(if dest.is_empty() { &img.name } else { dest })?;
    let repo = k.registries.repo(&r, opts, true)?;
    let tag = r.tag.clone();
    let tag = tag.as_deref();
    if oci::is_index(&img.target.media_type) {
        if !platform.is_empty() {
            let res = super::resolve(k, ns, &img.target, &Platform::parse(platform)?)?;
            push_manifest(k, ns, &repo, &res.manifest_desc, tag, progress).await?;
            return Ok(res.manifest_desc.digest);
        }
        let data = k.read_blob(ns, &img.target.digest)?;
        let idx: Index = serde_json::from_slice(&data).context("parse index")?;
        for m in &idx.manifests {
            push_manifest(k, ns, &repo, m, None, progress).await?;
        }
        repo.put_manifest(
            tag.unwrap_or(&img.target.digest),
            &img.target.media_type,
            data,
        )
        .await?;
    } else {
        push_manifest(k, ns, &repo, &img.target, tag, progress).await?;
    }
    Ok(img.target.digest)
}
