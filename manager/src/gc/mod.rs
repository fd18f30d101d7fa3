//! Garbage collection: mark and sweep over a graph of
//! `image/<name>`, `lease/<id>`, `content/<digest>` and `snapshots/<snapshotter>/<key>`.
//!
//! Roots, per namespace: images; leases that have not expired; content and snapshots
//! labelled `kura.io/gc.root`; active and view snapshots not owned by a lease (a later
//! issue adds containers as roots). Edges: an image to its target; a manifest or index
//! to what it lists; an image config to the snapshots of its layers' chain IDs (in
//! every snapshotter); a snapshot to its parent; a lease to its resources.
//!
//! Sweep: unmarked content and snapshot records go, then every blob file and snapshot
//! directory that no record of any namespace names (orphans of a crash included), and
//! ingests untouched for a day. The whole run holds the GC lock exclusively.

use crate::daemon::Kura;
use crate::images::oci;
use crate::metadata::{
    self, key, ContentRecord, ImageRecord, LeaseRecord, SnapshotKind, SnapshotRecord, CONTENT,
    IMAGES, LEASES, SNAPSHOTS,
};
use crate::snapshots::{NATIVE, OVERLAYFS};
use anyhow::Result;
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

#[derive(Debug, Default)]
pub struct GcResult {
    pub removed_content: Vec<String>,
    pub removed_snapshots: Vec<String>,
    pub reclaimed: u64,
}

struct Graph {
    roots: Vec<String>,
    edges: HashMap<String, Vec<String>>,
}

fn children_of_blob(k: &Kura, digest: &str, size: i64) -> Vec<String> {
    // Only JSON metadata blobs can reference anything; layers are large and not JSON.
    if size > 16 << 20 {
        return vec![];
    }
    let Ok(path) = k.content.blob_path(digest) else {
        return vec![];
    };
    let Ok(data) = std::fs::read(path) else {
        return vec![];
    };
    if data.first() != Some(&b'{') {
        return vec![];
    }
    // Parsed loosely: an image config also has a "config" key (the run config).
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(&data) else {
        return vec![];
    };
    let mut out = Vec::new();
    let digest_of =
        |d: &serde_json::Value| d.get("digest").and_then(|x| x.as_str()).map(str::to_string);
    for key in ["manifests", "layers"] {
        for d in v.get(key).and_then(|m| m.as_array()).into_iter().flatten() {
            if let Some(dg) = digest_of(d) {
                out.push(format!("content/{dg}"));
            }
        }
    }
    if let Some(dg) = v.get("config").and_then(digest_of) {
        out.push(format!("content/{dg}"));
    }
    if let Some(ids) = v.pointer("/rootfs/diff_ids").and_then(|d| d.as_array()) {
        let ids: Vec<String> = ids
            .iter()
            .filter_map(|i| i.as_str().map(str::to_string))
            .collect();
        for c in oci::chain_ids(&ids) {
            for sn in [OVERLAYFS, NATIVE] {
                out.push(format!("snapshots/{sn}/{c}"));
            }
        }
    }
    out
}

fn build(k: &Kura, ns: &str) -> Result<Graph> {
    let now = metadata::now();
    let pre = format!("{ns}/");
    let mut roots = Vec::new();
    let mut edges: HashMap<String, Vec<String>> = HashMap::new();
    for (name, img) in k.md.scan::<ImageRecord>(IMAGES, &pre)? {
        let n = format!("image/{name}");
        edges
            .entry(n.clone())
            .or_default()
            .push(format!("content/{}", img.target.digest));
        roots.push(n);
    }
    for (id, l) in k.md.scan::<LeaseRecord>(LEASES, &pre)? {
        if l.expires_at > 0 && l.expires_at < now {
            continue;
        }
        let n = format!("lease/{id}");
        let e = edges.entry(n.clone()).or_default();
        for r in l.resources {
            e.push(format!("{}/{}", r.kind, r.id));
        }
        roots.push(n);
    }
    for (d, c) in k.md.scan::<ContentRecord>(CONTENT, &pre)? {
        let n = format!("content/{d}");
        if c.labels.contains_key(metadata::LABEL_GC_ROOT) {
            roots.push(n.clone());
        }
        edges.insert(n, children_of_blob(k, &d, c.size));
    }
    for (sk, s) in k.md.scan::<SnapshotRecord>(SNAPSHOTS, &pre)? {
        let Some((sn, kk)) = sk.split_once('/') else {
            continue;
        };
        let n = format!("snapshots/{sk}");
        if s.labels.contains_key(metadata::LABEL_GC_ROOT)
            || (s.kind != SnapshotKind::Committed && s.lease.is_empty())
        {
            roots.push(n.clone());
        }
        let _ = kk;
        if !s.parent.is_empty() {
            edges.insert(n, vec![format!("snapshots/{sn}/{}", s.parent)]);
        }
    }
    Ok(Graph { roots, edges })
}

fn mark(g: &Graph) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    let mut q: VecDeque<String> = g.roots.iter().cloned().collect();
    while let Some(n) = q.pop_front() {
        if !seen.insert(n.clone()) {
            continue;
        }
        if let Some(cs) = g.edges.get(&n) {
            q.extend(cs.iter().cloned());
        }
    }
    seen
}

/// What keeps `object` alive in namespace `ns`: one path per root that reaches it.
pub fn references(k: &Kura, ns: &str, object: &str) -> Result<(bool, Vec<Vec<String>>)> {
    let g = build(k, ns)?;
    let exists = g.edges.contains_key(object) || {
        let (kind, rest) = object.split_once('/').unwrap_or(("", ""));
        match kind {
            "content" => {
                k.md.get::<ContentRecord>(CONTENT, &key(ns, rest))?
                    .is_some()
            }
            "snapshots" => {
                k.md.get::<SnapshotRecord>(SNAPSHOTS, &key(ns, rest))?
                    .is_some()
            }
            "image" => k.md.get::<ImageRecord>(IMAGES, &key(ns, rest))?.is_some(),
            _ => false,
        }
    };
    let mut chains = Vec::new();
    for root in &g.roots {
        let mut prev: BTreeMap<String, String> = BTreeMap::new();
        let mut q = VecDeque::from([root.clone()]);
        let mut seen = BTreeSet::from([root.clone()]);
        let mut found = root == object;
        while let Some(n) = q.pop_front() {
            if n == object {
                found = true;
                break;
            }
            for c in g.edges.get(&n).into_iter().flatten() {
                if seen.insert(c.clone()) {
                    prev.insert(c.clone(), n.clone());
                    q.push_back(c.clone());
                }
            }
        }
        if found {
            let mut path = vec![object.to_string()];
            let mut cur = object.to_string();
            while let Some(p) = prev.get(&cur) {
                path.push(p.clone());
                cur = p.clone();
            }
            path.reverse();
            chains.push(path);
        }
    }
    Ok((exists, chains))
}

/// One full collection over every namespace.
pub fn collect(k: &Kura) -> Result<GcResult> {
    let _g = k.gc_lock.write().unwrap();
    let mut res = GcResult::default();
    let now = metadata::now();
    for ns in metadata::namespaces(&k.md)? {
        let g = build(k, &ns)?;
        let live = mark(&g);
        let pre = format!("{ns}/");
        let dead_content: Vec<String> =
            k.md.scan::<ContentRecord>(CONTENT, &pre)?
                .into_iter()
                .map(|(d, _)| d)
                .filter(|d| !live.contains(&format!("content/{d}")))
                .collect();
        let dead_snaps: Vec<(String, SnapshotRecord)> =
            k.md.scan::<SnapshotRecord>(SNAPSHOTS, &pre)?
                .into_iter()
                .filter(|(sk, _)| !live.contains(&format!("snapshots/{sk}")))
                .collect();
        let expired: Vec<String> =
            k.md.scan::<LeaseRecord>(LEASES, &pre)?
                .into_iter()
                .filter(|(_, l)| l.expires_at > 0 && l.expires_at < now)
                .map(|(id, _)| id)
                .collect();
        k.md.write(|tx| {
            let mut t = tx.open_table(CONTENT)?;
            for d in &dead_content {
                t.remove(key(&ns, d).as_str())?;
            }
            let mut t = tx.open_table(SNAPSHOTS)?;
            for (sk, _) in &dead_snaps {
                t.remove(key(&ns, sk).as_str())?;
            }
            let mut t = tx.open_table(LEASES)?;
            for id in &expired {
                t.remove(key(&ns, id).as_str())?;
            }
            Ok(())
        })?;
        res.removed_snapshots
            .extend(dead_snaps.iter().map(|(sk, _)| format!("{ns}/{sk}")));
        tracing::debug!(
            ns,
            content = dead_content.len(),
            snapshots = dead_snaps.len(),
            "gc swept records"
        );
        for d in dead_content {
            res.removed_content.push(format!("{ns}/{d}"));
        }
    }
    // Files no record names: blobs, then snapshot directories.
    let tx = k.md.db.begin_read()?;
    let ct = tx.open_table(CONTENT)?;
    let mut known = BTreeSet::new();
    for item in redb::ReadableTable::iter(&ct)? {
        let (kk, _) = item?;
        if let Some((_, d)) = kk.value().split_once('/') {
            known.insert(d.to_string());
        }
    }
    for (d, size) in k.content.walk_blobs()? {
        if !known.contains(&d) {
            k.content.delete_blob(&d)?;
            res.reclaimed += size;
        }
    }
    let st = tx.open_table(SNAPSHOTS)?;
    let mut ids: BTreeMap<&str, BTreeSet<u64>> = BTreeMap::new();
    for item in redb::ReadableTable::iter(&st)? {
        let (kk, v) = item?;
        let sn = kk.value().split('/').nth(1).unwrap_or_default().to_string();
        let rec: SnapshotRecord = serde_json::from_slice(v.value())?;
        let sn: &str = if sn == OVERLAYFS { OVERLAYFS } else { NATIVE };
        ids.entry(sn).or_default().insert(rec.id);
    }
    for sn in [OVERLAYFS, NATIVE] {
        for id in k.snapshots.dirs_on_disk(sn)? {
            if !ids.get(sn).map(|s| s.contains(&id)).unwrap_or(false) {
                let (size, _) = crate::snapshots::du(&k.snapshots.dir(sn, id));
                if let Err(e) = k.snapshots.remove_dir(sn, id) {
                    tracing::warn!("gc: {e:#}");
                } else {
                    res.reclaimed += size;
                }
            }
        }
    }
    k.content.expire_ingests(24 * 3600)?;
    Ok(res)
}

/// Startup recovery: leases of operations that died with the previous kurad go, then GC
/// takes what they held (half-unpacked snapshots, blobs of an interrupted pull).
/// Partial ingests stay a day, so the pull that runs again resumes them.
pub fn recover(k: &Kura) -> Result<GcResult> {
    let mut dead = Vec::new();
    for ns in metadata::namespaces(&k.md)? {
        for (id, l) in k.md.scan::<LeaseRecord>(LEASES, &format!("{ns}/"))? {
            if l.labels.contains_key(metadata::LABEL_TEMPORARY) {
                dead.push((ns.clone(), id));
            }
        }
    }
    k.md.write(|tx| {
        let mut t = tx.open_table(LEASES)?;
        for (ns, id) in &dead {
            t.remove(key(ns, id).as_str())?;
        }
        Ok(())
    })?;
    if !dead.is_empty() {
        tracing::info!("dropped {} leases of interrupted operations", dead.len());
    }
    collect(k)
}
