//! `save` to and `load` from OCI image-layout tars (load also takes `docker save` tars).
//! Both stream: save writes the tar as it walks the content, load ingests each entry as
//! it arrives and verifies blob digests.

use super::oci::{self, Index, Manifest};
use crate::daemon::Kura;
use crate::metadata::{Descriptor, ImageRecord, Labels};
use anyhow::{bail, Context, Result};
use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::sync::Arc;

pub const ANNOTATION_REF_NAME: &str = "org.opencontainers.image.ref.name";
pub const ANNOTATION_IMAGE_NAME: &str = "io.containerd.image.name";

/// Blobs reachable from `d` that are present (for an index, missing platforms are
/// skipped), manifests and configs included.
fn reachable(k: &Kura, ns: &str, d: &Descriptor, out: &mut BTreeMap<String, i64>) -> Result<()> {
    if out.contains_key(&d.digest) || !k.has_blob(ns, &d.digest)? {
        return Ok(());
    }
    out.insert(d.digest.clone(), d.size);
    if oci::is_index(&d.media_type) {
        let idx: Index = serde_json::from_slice(&k.read_blob(ns, &d.digest)?)?;
        for m in &idx.manifests {
            reachable(k, ns, m, out)?;
        }
    } else if oci::is_manifest(&d.media_type) {
        let m: Manifest = serde_json::from_slice(&k.read_blob(ns, &d.digest)?)?;
        for b in std::iter::once(&m.config).chain(m.layers.iter()) {
            if !k.has_blob(ns, &b.digest)? {
                bail!(
                    "blob {} of manifest {} is not in the content store",
                    b.digest,
                    d.digest
                );
            }
            out.insert(b.digest.clone(), b.size);
        }
    }
    Ok(())
}

/// Writes an OCI layout tar of `images` to `w`.
pub fn save(
    k: &Kura,
    ns: &str,
    images: &[ImageRecord],
    platform: &str,
    w: impl Write,
) -> Result<()> {
    let mut blobs = BTreeMap::new();
    let mut index = Vec::new();
    for img in images {
        let mut target = img.target.clone();
        if !platform.is_empty() && oci::is_index(&target.media_type) {
            target =
                super::resolve(k, ns, &target, &oci::Platform::parse(platform)?)?.manifest_desc;
        }
        reachable(k, ns, &target, &mut blobs)?;
        let mut d = target.clone();
        d.annotations
            .insert(ANNOTATION_IMAGE_NAME.into(), img.name.clone());
        if let Ok(r) = oci::Reference::parse(&img.name) {
            if let Some(t) = r.tag {
                d.annotations.insert(ANNOTATION_REF_NAME.into(), t);
            }
        }
        index.push(d);
    }
    let mut tb = tar::Builder::new(w);
    let add = |tb: &mut tar::Builder<_>, path: &str, size: u64, r: &mut dyn Read| -> Result<()> {
        let mut h = tar::Header::new_ustar();
        h.set_size(size);
        h.set_mode(0o644);
        h.set_mtime(0);
        h.set_entry_type(tar::EntryType::Regular);
        tb.append_data(&mut h, path, r)?;
        Ok(())
    };
    let layout = br#"{"imageLayoutVersion":"1.0.0"}"#;
    add(&mut tb, "oci-layout", layout.len() as u64, &mut &layout[..])?;
    let idx = serde_json::to_vec(
        &serde_json::json!({"schemaVersion": 2, "mediaType": oci::OCI_INDEX, "manifests": index}),
    )?;
    add(&mut tb, "index.json", idx.len() as u64, &mut idx.as_slice())?;
    for (d, _) in blobs {
        let f = k.content.open_blob(&d)?;
        let size = f.metadata()?.len();
        let hex = crate::content::check_digest(&d)?.to_string();
        add(
            &mut tb,
            &format!("blobs/sha256/{hex}"),
            size,
            &mut f.take(size),
        )?;
    }
    tb.into_inner()?.flush()?;
    Ok(())
}

#[derive(serde::Deserialize)]
struct DockerManifest {
    #[serde(rename = "Config")]
    config: String,
    #[serde(rename = "RepoTags", default)]
    repo_tags: Option<Vec<String>>,
    #[serde(rename = "Layers")]
    layers: Vec<String>,
}

/// Reads a tar from `r`, stores its blobs under `lease` and names its images.
pub fn load(
    k: &Arc<Kura>,
    ns: &str,
    r: impl Read,
    default_name: &str,
    lease: &str,
) -> Result<Vec<ImageRecord>> {
    let mut ar = tar::Archive::new(r);
    let mut files: BTreeMap<String, (String, u64)> = BTreeMap::new();
    let mut index_json = None;
    let mut docker_manifest = None;
    for e in ar.entries().context("read archive")? {
        let mut e = e.context("read archive")?;
        if e.header().entry_type() != tar::EntryType::Regular {
            continue;
        }
        let path = String::from_utf8_lossy(&e.path_bytes())
            .trim_start_matches("./")
            .to_string();
        let size = e.header().size()?;
        match path.as_str() {
            "index.json" | "manifest.json" | "repositories" | "oci-layout" => {
                if size > 16 << 20 {
                    bail!("{path} in the archive is too large");
                }
                let mut b = Vec::new();
                e.read_to_end(&mut b)?;
                if path == "index.json" {
                    index_json = Some(b);
                } else if path == "manifest.json" {
                    docker_manifest = Some(b);
                }
                continue;
            }
            _ => {}
        }
        let expected = path
            .strip_prefix("blobs/sha256/")
            .map(|h| format!("sha256:{h}"))
            .filter(|d| crate::content::check_digest(d).is_ok())
            .unwrap_or_default();
        let mut w = k.content.writer(
            &format!("load-{:08x}-{path}", rand::random::<u32>()),
            &expected,
            size as i64,
        )?;
        w.truncate()?;
        std::io::copy(&mut e, &mut w).with_context(|| format!("read {path} from the archive"))?;
        let _g = k.gc_lock.read().unwrap();
        let (d, n) = w
            .commit()
            .with_context(|| format!("archive entry {path}"))?;
        k.record_blob_locked(ns, &d, n, Labels::new(), lease)?;
        files.insert(path, (d, n));
    }
    let mut out = Vec::new();
    if let Some(b) = index_json.filter(|_| docker_manifest.is_none() || !files.is_empty()) {
        let idx: Index = serde_json::from_slice(&b).context("parse index.json")?;
        let mut named = false;
        for m in &idx.manifests {
            let name = m
                .annotations
                .get(ANNOTATION_IMAGE_NAME)
                .cloned()
                .or_else(|| {
                    let r = m.annotations.get(ANNOTATION_REF_NAME)?;
                    if r.contains('/') || r.contains(':') {
                        Some(r.clone())
                    } else if !default_name.is_empty() {
                        // --name repo:tag names it; --name repo takes the layout's tag.
                        let tagged = default_name
                            .rsplit_once(':')
                            .map(|(_, t)| !t.contains('/'))
                            .unwrap_or(false);
                        Some(if tagged {
                            default_name.to_string()
                        } else {
                            format!("{default_name}:{r}")
                        })
                    } else {
                        None
                    }
                })
                .or_else(|| (!default_name.is_empty()).then(|| default_name.to_string()));
            let Some(name) = name else { continue };
            if !k.has_blob(ns, &m.digest)? {
                bail!(
                    "index.json names {} but the archive does not hold it",
                    m.digest
                );
            }
            let mut target = m.clone();
            target.annotations.clear();
            let name = oci::normalize_name(&name);
            out.push(super::put(k, ns, &name, target, Labels::new())?);
            named = true;
        }
        if named || docker_manifest.is_none() {
            if !named {
                bail!("the archive's index.json names no image: give one with --name");
            }
            return Ok(out);
        }
    }
    let Some(b) = docker_manifest else {
        bail!("not an image archive: no index.json nor manifest.json");
    };
    let dms: Vec<DockerManifest> = serde_json::from_slice(&b).context("parse manifest.json")?;
    for dm in dms {
        let (cd, cs) = files
            .get(&dm.config)
            .cloned()
            .with_context(|| format!("archive lacks {}", dm.config))?;
        let mut layers = Vec::new();
        for l in &dm.layers {
            let (d, s) = files
                .get(l)
                .cloned()
                .with_context(|| format!("archive lacks {l}"))?;
            let mut head = [0u8; 4];
            let n = k.content.open_blob(&d)?.read(&mut head)?;
            let mt = if n >= 2 && head[..2] == [0x1f, 0x8b] {
                oci::DOCKER_LAYER_GZIP
            } else if n == 4 && head == [0x28, 0xb5, 0x2f, 0xfd] {
                oci::OCI_LAYER_ZSTD
            } else {
                oci::DOCKER_LAYER
            };
            layers.push(Descriptor {
                media_type: mt.into(),
                digest: d,
                size: s as i64,
                annotations: Default::default(),
                platform: None,
            });
        }
        let manifest = Manifest {
            schema_version: 2,
            media_type: oci::DOCKER_MANIFEST.into(),
            config: Descriptor {
                media_type: oci::DOCKER_CONFIG.into(),
                digest: cd,
                size: cs as i64,
                annotations: Default::default(),
                platform: None,
            },
            layers,
            annotations: Default::default(),
        };
        let mj = serde_json::to_vec(&manifest)?;
        let md = k.put_blob(ns, &mj, "", lease)?;
        let target = Descriptor {
            media_type: oci::DOCKER_MANIFEST.into(),
            digest: md,
            size: mj.len() as i64,
            annotations: Default::default(),
            platform: None,
        };
        let mut names: BTreeSet<String> = dm.repo_tags.unwrap_or_default().into_iter().collect();
        if names.is_empty() && !default_name.is_empty() {
            names.insert(default_name.to_string());
        }
        if names.is_empty() {
            bail!("manifest.json entry without RepoTags: give a name with --name");
        }
        for n in names {
            out.push(super::put(
                k,
                ns,
                &oci::normalize_name(&n),
                target.clone(),
                Labels::new(),
            )?);
        }
    }
    Ok(out)
}
