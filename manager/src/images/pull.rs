//! Pull: resolve a reference, fetch index/manifest/config, stream the layers into the
//! content store and snapshots, name the image. The whole pull runs under a temporary
//! lease so GC cannot take what it is writing.

use super::layers::{self, Progress};
use super::oci::{self, Index, Manifest, Platform, Reference};
use crate::daemon::{blocking, Kura};
use crate::metadata::{Descriptor, Labels};
use crate::registry::{Options, Repo};
use anyhow::{bail, Context, Result};
use std::sync::Arc;

pub struct PullOptions {
    pub reference: String,
    pub platform: String,
    pub snapshotter: String,
    pub unpack: bool,
    pub registry: Options,
    pub labels: Labels,
    pub all_platforms: bool,
}

pub struct Pulled {
    pub name: String,
    pub digest: String,
}

/// Fetches a small JSON blob (manifest/config) by digest, stores it, returns the bytes.
async fn fetch_small(
    k: &Arc<Kura>,
    ns: &str,
    repo: &Repo,
    desc: &Descriptor,
    lease: &str,
) -> Result<Vec<u8>> {
    if blocking(|| k.record_blob(ns, &desc.digest, lease))? {
        return k.content.read_small(&desc.digest, 16 << 20);
    }
    let data = if oci::is_manifest(&desc.media_type) || oci::is_index(&desc.media_type) {
        repo.get_manifest(&desc.digest).await?.0
    } else {
        if desc.size > 16 << 20 {
            bail!("config {} is larger than 16 MiB", desc.digest);
        }
        let (resp, _) = repo.get_blob(&desc.digest, 0).await?;
        resp.bytes()
            .await
            .with_context(|| format!("registry {}: read blob {}", repo.display, desc.digest))?
            .to_vec()
    };
    blocking(|| k.put_blob(ns, &data, &desc.digest, lease))
        .with_context(|| format!("registry {}: blob {}", repo.display, desc.digest))?;
    Ok(data)
}

pub async fn pull(
    k: &Arc<Kura>,
    ns: &str,
    o: PullOptions,
    progress: &Progress,
    log: &(dyn Fn(String) + Sync),
) -> Result<Pulled> {
    let r = Reference::parse(&o.reference)?;
    let platform = Platform::parse(&o.platform)?;
    let repo = Arc::new(k.registries.repo(&r, &o.registry, false)?);
    log(format!("resolving {r}"));
    let (top, mt, digest) = repo.get_manifest(r.object()).await?;
    if oci::is_schema1(&mt) {
        bail!("{r} is a Docker schema 1 image, which kura does not support (deprecated since 2017): push it again with a current tool");
    }
    if !oci::is_index(&mt) && !oci::is_manifest(&mt) {
        bail!("{r}: unsupported manifest media type {mt:?}");
    }
    let lease = k.temp_lease(ns, &format!("pull {r}"))?;
    let res = pull_inner(
        k, ns, &o, &r, &repo, &platform, top, mt, digest, &lease, progress, log,
    )
    .await;
    let _ = k.delete_lease(ns, &lease);
    res
}

#[allow(clippy::too_many_arguments)]
async fn pull_inner(
    k: &Arc<Kura>,
    ns: &str,
    o: &PullOptions,
    r: &Reference,
    repo: &Arc<Repo>,
    platform: &Platform,
    top: Vec<u8>,
    mt: String,
    digest: String,
    lease: &str,
    progress: &Progress,
    log: &(dyn Fn(String) + Sync),
) -> Result<Pulled> {
    blocking(|| k.put_blob(ns, &top, &digest, lease))?;
    let target = Descriptor {
        media_type: mt.clone(),
        digest: digest.clone(),
        size: top.len() as i64,
        annotations: Default::default(),
        platform: None,
    };
    let mut manifests: Vec<(Descriptor, bool)> = Vec::new();
    if oci::is_index(&mt) {
        let idx: Index = serde_json::from_slice(&top).context("parse image index")?;
        let chosen = idx
            .manifests
            .iter()
            .find(|m| {
                m.platform
                    .as_ref()
                    .map(|p| platform.matches(p))
                    .unwrap_or(false)
            })
            .cloned()
            .with_context(|| {
                let have: Vec<String> = idx
                    .manifests
                    .iter()
                    .filter_map(|m| m.platform.as_ref().map(|p| p.to_string()))
                    .collect();
                format!(
                    "{r} has no image for platform {platform} (it has {})",
                    have.join(", ")
                )
            })?;
        manifests.push((chosen.clone(), true));
        if o.all_platforms {
            for m in idx.manifests.iter().filter(|m| m.digest != chosen.digest) {
                manifests.push((m.clone(), false));
            }
        }
    } else {
        manifests.push((target.clone(), true));
    }
    for (mdesc, main) in manifests {
        let mjson = if mdesc.digest == digest {
            top.clone()
        } else {
            fetch_small(k, ns, repo, &mdesc, lease).await?
        };
        let mt2 = if mdesc.media_type.is_empty() {
            oci::sniff_media_type(&mjson)?
        } else {
            mdesc.media_type.clone()
        };
        if !oci::is_manifest(&mt2) {
            if oci::is_schema1(&mt2) {
                bail!("{r}: schema 1 manifests are not supported");
            }
            bail!("{r}: unsupported manifest media type {mt2:?}");
        }
        let m: Manifest = serde_json::from_slice(&mjson).context("parse manifest")?;
        let cjson = fetch_small(k, ns, repo, &m.config, lease).await?;
        let cfg: oci::ImageConfig = serde_json::from_slice(&cjson).context("parse image config")?;
        if cfg.rootfs.diff_ids.len() != m.layers.len() {
            bail!(
                "{r}: image config lists {} diff_ids for {} layers",
                cfg.rootfs.diff_ids.len(),
                m.layers.len()
            );
        }
        let slots: Vec<usize> = m
            .layers
            .iter()
            .map(|l| progress.add(l, "waiting"))
            .collect();
        if main && o.unpack {
            log(format!(
                "unpacking {} layers into {}",
                m.layers.len(),
                o.snapshotter
            ));
            layers::unpack_layers(
                k,
                ns,
                Some(repo.clone()),
                &m.layers,
                &cfg.rootfs.diff_ids,
                &o.snapshotter,
                lease,
                progress,
                &slots,
            )
            .await?;
        } else {
            let sem = Arc::new(tokio::sync::Semaphore::new(
                k.config.max_concurrent_downloads.max(1),
            ));
            let mut set = tokio::task::JoinSet::new();
            for (l, slot) in m.layers.iter().zip(slots) {
                let (k, ns, repo, l, lease, progress, sem) = (
                    k.clone(),
                    ns.to_string(),
                    repo.clone(),
                    l.clone(),
                    lease.to_string(),
                    progress.clone(),
                    sem.clone(),
                );
                set.spawn(async move {
                    let _p = sem.acquire().await?;
                    let r = layers::fetch(&k, &ns, Some(&repo), &l, None, &lease, &progress, slot)
                        .await;
                    match &r {
                        Ok(_) => progress.status(slot, "done"),
                        Err(e) => progress.fail(slot, &format!("{e:#}")),
                    }
                    r.map(|_| ())
                });
            }
            while let Some(j) = set.join_next().await {
                j??;
            }
        }
    }
    let name = r.to_string();
    super::put(k, ns, &name, target, o.labels.clone())?;
    Ok(Pulled { name, digest })
}
