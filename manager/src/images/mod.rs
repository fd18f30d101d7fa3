//! Images: named references to a manifest or index in the content store, plus
//! everything that moves them (pull, push, save, load, unpack).

use crate::daemon::Kura;
use crate::metadata::{self, key, Descriptor, ImageRecord, Labels, IMAGES};
use anyhow::{bail, Context, Result};
use oci::{ImageConfig, Index, Manifest, Platform};

pub mod archive;
pub mod layers;
pub mod oci;
pub mod pull;
pub mod push;

/// An image resolved for one platform.
pub struct Resolved {
    pub manifest_desc: Descriptor,
    pub manifest: Manifest,
    pub manifest_json: Vec<u8>,
    pub config_json: Vec<u8>,
    pub config: ImageConfig,
    pub index: Option<Index>,
}

impl Resolved {
    pub fn chain_ids(&self) -> Vec<String> {
        oci::chain_ids(&self.config.rootfs.diff_ids)
    }
    pub fn platform(&self) -> Platform {
        Platform {
            architecture: self.config.architecture.clone(),
            os: self.config.os.clone(),
            variant: self.config.variant.clone(),
            os_version: String::new(),
        }
    }
    pub fn size(&self) -> i64 {
        self.manifest.config.size + self.manifest.layers.iter().map(|l| l.size).sum::<i64>()
    }
}

pub fn get(k: &Kura, ns: &str, name: &str) -> Result<ImageRecord> {
    let n = oci::normalize_name(name);
    if let Some(r) = k.md.get::<ImageRecord>(IMAGES, &key(ns, &n))? {
        return Ok(r);
    }
    if let Some(r) = k.md.get::<ImageRecord>(IMAGES, &key(ns, name))? {
        return Ok(r);
    }
    // A digest prefix or full digest of the target.
    let needle = name.strip_prefix("sha256:").unwrap_or(name);
    if needle.len() >= 6 && needle.bytes().all(|b| b.is_ascii_hexdigit()) {
        let hits: Vec<ImageRecord> = list(k, ns)?
            .into_iter()
            .filter(|i| {
                i.target
                    .digest
                    .trim_start_matches("sha256:")
                    .starts_with(needle)
            })
            .collect();
        if let Some(first) = hits.first() {
            return Ok(first.clone());
        }
    }
    bail!("image {name} not found in namespace {ns}")
}

pub fn list(k: &Kura, ns: &str) -> Result<Vec<ImageRecord>> {
    Ok(k.md
        .scan::<ImageRecord>(IMAGES, &format!("{ns}/"))?
        .into_iter()
        .map(|(_, r)| r)
        .collect())
}

pub fn put(
    k: &Kura,
    ns: &str,
    name: &str,
    target: Descriptor,
    labels: Labels,
) -> Result<ImageRecord> {
    let now = metadata::now();
    k.md.write(|tx| {
        let mut t = tx.open_table(IMAGES)?;
        let kk = key(ns, name);
        let created = metadata::get_in::<ImageRecord>(&t, &kk)?
            .map(|r| r.created_at)
            .unwrap_or(now);
        let rec = ImageRecord {
            name: name.to_string(),
            target,
            labels,
            created_at: created,
            updated_at: now,
        };
        metadata::put(&mut t, &kk, &rec)?;
        Ok(rec)
    })
}

/// Resolves an image's target to the manifest for `platform` (from the content store).
pub fn resolve(k: &Kura, ns: &str, target: &Descriptor, platform: &Platform) -> Result<Resolved> {
    let mut desc = target.clone();
    let mut index = None;
    if oci::is_index(&desc.media_type) {
        let idx: Index =
            serde_json::from_slice(&k.read_blob(ns, &desc.digest)?).context("parse image index")?;
        let pick = idx
            .manifests
            .iter()
            .find(|m| {
                m.platform
                    .as_ref()
                    .map(|p| platform.matches(p))
                    .unwrap_or(false)
                    && k.has_blob(ns, &m.digest).unwrap_or(false)
            })
            .or_else(|| {
                idx.manifests.iter().find(|m| {
                    m.platform
                        .as_ref()
                        .map(|p| platform.matches(p))
                        .unwrap_or(false)
                })
            })
            .cloned()
            .with_context(|| {
                let have: Vec<String> = idx
                    .manifests
                    .iter()
                    .filter_map(|m| m.platform.as_ref().map(|p| p.to_string()))
                    .collect();
                format!(
                    "no manifest for platform {platform} (the image has {})",
                    have.join(", ")
                )
            })?;
        desc = pick;
        index = Some(idx);
    }
    if !oci::is_manifest(&desc.media_type) {
        bail!(
            "unsupported manifest type {:?} for {}",
            desc.media_type,
            desc.digest
        );
    }
    let manifest_json = k
        .read_blob(ns, &desc.digest)
        .with_context(|| format!("manifest {} for {platform}", desc.digest))?;
    let manifest: Manifest = serde_json::from_slice(&manifest_json).context("parse manifest")?;
    let config_json = k
        .read_blob(ns, &manifest.config.digest)
        .context("image config")?;
    let config: ImageConfig = serde_json::from_slice(&config_json).context("parse image config")?;
    if config.rootfs.diff_ids.len() != manifest.layers.len() {
        bail!(
            "image config lists {} diff_ids for {} layers",
            config.rootfs.diff_ids.len(),
            manifest.layers.len()
        );
    }
    Ok(Resolved {
        manifest_desc: desc,
        manifest,
        manifest_json,
        config_json,
        config,
        index,
    })
}

pub fn summary(
    k: &Kura,
    ns: &str,
    img: &ImageRecord,
    snapshotter: &str,
) -> kura_proto::v1::ImageSummary {
    summary_for(k, ns, img, snapshotter, &Platform::host())
}

/// The summary of an image for one platform.
pub fn summary_for(
    k: &Kura,
    ns: &str,
    img: &ImageRecord,
    snapshotter: &str,
    platform: &Platform,
) -> kura_proto::v1::ImageSummary {
    let mut s = kura_proto::v1::ImageSummary {
        image: Some(to_proto(img)),
        ..Default::default()
    };
    // An index pulled for another platform only: describe the platform it has.
    let resolved = resolve(k, ns, &img.target, platform).or_else(|e| {
        let idx: Index = serde_json::from_slice(&k.read_blob(ns, &img.target.digest)?)?;
        let p = idx
            .manifests
            .iter()
            .find(|m| m.platform.is_some() && k.has_blob(ns, &m.digest).unwrap_or(false))
            .and_then(|m| m.platform.clone())
            .ok_or(e)?;
        resolve(k, ns, &img.target, &p)
    });
    if let Ok(r) = resolved {
        s.size = r.size();
        s.platform = r.platform().to_string();
        if let Some(top) = r.chain_ids().last() {
            if let Ok(Some(rec)) = k.snapshots.get(ns, snapshotter, top) {
                s.unpacked = rec.kind == metadata::SnapshotKind::Committed;
                if s.unpacked {
                    s.unpacked_size = r
                        .chain_ids()
                        .iter()
                        .filter_map(|c| k.snapshots.usage(ns, snapshotter, c).ok())
                        .map(|(b, _)| b as i64)
                        .sum();
                }
            }
        } else {
            s.unpacked = true;
        }
    }
    s
}

pub fn to_proto(r: &ImageRecord) -> kura_proto::v1::Image {
    kura_proto::v1::Image {
        name: r.name.clone(),
        target: Some(desc_to_proto(&r.target)),
        labels: r.labels.clone().into_iter().collect(),
        created_at: r.created_at,
        updated_at: r.updated_at,
    }
}

pub fn desc_to_proto(d: &Descriptor) -> kura_proto::v1::Descriptor {
    kura_proto::v1::Descriptor {
        media_type: d.media_type.clone(),
        digest: d.digest.clone(),
        size: d.size,
        annotations: d.annotations.clone().into_iter().collect(),
        platform: d.platform.as_ref().map(|p| kura_proto::v1::Platform {
            os: p.os.clone(),
            architecture: p.architecture.clone(),
            variant: p.variant.clone(),
        }),
    }
}

pub fn tag(k: &Kura, ns: &str, source: &str, target: &str, force: bool) -> Result<ImageRecord> {
    let src = get(k, ns, source)?;
    let name = oci::Reference::parse(target)
        .with_context(|| format!("invalid target name {target}"))?
        .to_string();
    if !force {
        if let Some(old) = k.md.get::<ImageRecord>(IMAGES, &key(ns, &name))? {
            if old.target.digest != src.target.digest {
                bail!("image {name} already exists (use --force to move it)");
            }
        }
    }
    put(k, ns, &name, src.target.clone(), src.labels.clone())
}

/// Removes image names. Returns the removed names.
pub fn remove(k: &Kura, ns: &str, names: &[String], ignore_missing: bool) -> Result<Vec<String>> {
    let mut recs = Vec::new();
    for n in names {
        match get(k, ns, n) {
            Ok(r) => recs.push(r.name),
            Err(e) if !ignore_missing => return Err(e),
            Err(_) => {}
        }
    }
    k.md.write(|tx| {
        let mut t = tx.open_table(IMAGES)?;
        for n in &recs {
            t.remove(key(ns, n).as_str())?;
        }
        Ok(())
    })?;
    Ok(recs)
}

pub fn set_labels(
    k: &Kura,
    ns: &str,
    name: &str,
    labels: Labels,
    replace: bool,
) -> Result<ImageRecord> {
    let mut img = get(k, ns, name)?;
    if replace {
        img.labels = labels;
    } else {
        for (kk, v) in labels {
            if v.is_empty() {
                img.labels.remove(&kk);
            } else {
                img.labels.insert(kk, v);
            }
        }
    }
    put(k, ns, &img.name.clone(), img.target.clone(), img.labels)
}
