//! Snapshotters: `overlayfs` (default) and `native` (copies, for hosts or filesystems
//! where overlay is not available). Both keep their directories under
//! `<root>/snapshots/<snapshotter>/<id>/{fs,work}` and their records in metadata
//! (`ns/snapshotter/key`), so the same key space serves images (committed layers named
//! by chain ID) and, later, containers (active snapshots).
//!
//! Crash safety: a record is written before its directory is made and removed before the
//! directory is; a directory without a record is an orphan that GC deletes.

use crate::metadata::{
    self, key, Labels, LeaseResource, Metadata, ReadableTable as _, SnapshotKind, SnapshotRecord,
    SNAPSHOTS,
};
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

pub mod mount;
pub use mount::Mount;

pub const OVERLAYFS: &str = "overlayfs";
pub const NATIVE: &str = "native";

pub fn check_snapshotter(name: &str) -> Result<()> {
    match name {
        OVERLAYFS | NATIVE => Ok(()),
        other => bail!("unknown snapshotter {other:?} (have overlayfs, native)"),
    }
}

#[derive(Clone)]
pub struct Snapshots {
    md: Arc<Metadata>,
    root: PathBuf,
    /// Held shared by anything that creates records and directories, exclusively by GC.
    pub gc_lock: Arc<RwLock<()>>,
}

pub fn lease_kind(snapshotter: &str) -> String {
    format!("snapshots/{snapshotter}")
}

impl Snapshots {
    pub fn open(md: Arc<Metadata>, root: &Path, gc_lock: Arc<RwLock<()>>) -> Result<Snapshots> {
        let root = root.join("snapshots");
        for s in [OVERLAYFS, NATIVE] {
            std::fs::create_dir_all(root.join(s))?;
        }
        Ok(Snapshots { md, root, gc_lock })
    }

    pub fn dir(&self, snapshotter: &str, id: u64) -> PathBuf {
        self.root.join(snapshotter).join(id.to_string())
    }

    pub fn fs_dir(&self, snapshotter: &str, id: u64) -> PathBuf {
        self.dir(snapshotter, id).join("fs")
    }

    fn rec_key(ns: &str, snapshotter: &str, k: &str) -> String {
        key(ns, &format!("{snapshotter}/{k}"))
    }

    pub fn get(&self, ns: &str, snapshotter: &str, k: &str) -> Result<Option<SnapshotRecord>> {
        self.md.get(SNAPSHOTS, &Self::rec_key(ns, snapshotter, k))
    }

    pub fn list(&self, ns: &str, snapshotter: &str) -> Result<Vec<(String, SnapshotRecord)>> {
        self.md.scan(SNAPSHOTS, &format!("{ns}/{snapshotter}/"))
    }

    /// The snapshot and its ancestors, nearest first.
    pub fn chain(
        &self,
        ns: &str,
        snapshotter: &str,
        k: &str,
    ) -> Result<Vec<(String, SnapshotRecord)>> {
        let mut out = Vec::new();
        let mut cur = k.to_string();
        while !cur.is_empty() {
            let rec = self.get(ns, snapshotter, &cur)?.with_context(|| {
                format!("snapshot {cur} not found ({snapshotter}, namespace {ns})")
            })?;
            let next = rec.parent.clone();
            out.push((cur, rec));
            cur = next;
            if out.len() > 500 {
                bail!("snapshot chain of {k} too long");
            }
        }
        Ok(out)
    }

    /// Makes an active (writable) or view (read-only) snapshot on top of `parent`.
    #[allow(clippy::too_many_arguments)]
    pub fn prepare(
        &self,
        ns: &str,
        snapshotter: &str,
        k: &str,
        parent: &str,
        labels: Labels,
        lease: &str,
        kind: SnapshotKind,
    ) -> Result<Vec<Mount>> {
        check_snapshotter(snapshotter)?;
        if k.is_empty() {
            bail!("a snapshot needs a key");
        }
        let _g = self.gc_lock.read().unwrap();
        let rk = Self::rec_key(ns, snapshotter, k);
        let parent_rec = if parent.is_empty() {
            None
        } else {
            let p = self
                .get(ns, snapshotter, parent)?
                .with_context(|| format!("parent snapshot {parent} not found"))?;
            if p.kind != SnapshotKind::Committed {
                bail!("parent snapshot {parent} is not committed");
            }
            Some(p)
        };
        let rec = self.md.write(|tx| {
            let mut t = tx.open_table(SNAPSHOTS)?;
            if t.get(rk.as_str())?.is_some() {
                bail!("snapshot {k} already exists");
            }
            let id = metadata::next_counter(tx, "snapshot")?;
            let rec = SnapshotRecord {
                id,
                kind,
                parent: parent.to_string(),
                labels,
                created_at: metadata::now(),
                lease: lease.to_string(),
            };
            metadata::put(&mut t, &rk, &rec)?;
            drop(t);
            metadata::lease_add(
                tx,
                ns,
                lease,
                LeaseResource {
                    kind: lease_kind(snapshotter),
                    id: k.to_string(),
                },
            )?;
            Ok(rec)
        })?;
        let dir = self.dir(snapshotter, rec.id);
        let made = (|| -> Result<()> {
            std::fs::create_dir_all(dir.join("fs"))?;
            if snapshotter == OVERLAYFS {
                std::fs::create_dir_all(dir.join("work"))?;
            } else if let Some(p) = &parent_rec {
                copy_tree(&self.fs_dir(snapshotter, p.id), &dir.join("fs"))?;
            }
            Ok(())
        })();
        if let Err(e) = made {
            drop(_g);
            let _ = self.remove(ns, snapshotter, k);
            return Err(e);
        }
        drop(_g);
        self.mounts(ns, snapshotter, k)
    }

    /// Commits active snapshot `k` under `name`.
    pub fn commit(
        &self,
        ns: &str,
        snapshotter: &str,
        name: &str,
        k: &str,
        labels: Labels,
    ) -> Result<()> {
        self.commit_inner(ns, snapshotter, name, k, labels, None)
    }

    /// Commits `k` as `name` with `parent` as its parent (overlay layers are applied
    /// before their parent exists; this puts them in their place in the chain).
    pub fn commit_with_parent(
        &self,
        ns: &str,
        snapshotter: &str,
        name: &str,
        k: &str,
        parent: &str,
    ) -> Result<()> {
        self.commit_inner(ns, snapshotter, name, k, Labels::new(), Some(parent))
    }

    fn commit_inner(
        &self,
        ns: &str,
        snapshotter: &str,
        name: &str,
        k: &str,
        labels: Labels,
        parent: Option<&str>,
    ) -> Result<()> {
        let _g = self.gc_lock.read().unwrap();
        let (rk, rn) = (
            Self::rec_key(ns, snapshotter, k),
            Self::rec_key(ns, snapshotter, name),
        );
        self.md.write(|tx| {
            let mut t = tx.open_table(SNAPSHOTS)?;
            let mut rec: SnapshotRecord = metadata::get_in(&t, &rk)?.with_context(|| {
                format!("snapshot {k} not found ({snapshotter}, namespace {ns})")
            })?;
            if rec.kind != SnapshotKind::Active {
                bail!("snapshot {k} is not active, cannot commit it");
            }
            if t.get(rn.as_str())?.is_some() {
                bail!("snapshot {name} already exists");
            }
            if let Some(p) = parent {
                if !p.is_empty() {
                    let prec: SnapshotRecord =
                        metadata::get_in(&t, &Self::rec_key(ns, snapshotter, p))?
                            .with_context(|| format!("parent snapshot {p} not found"))?;
                    if prec.kind != SnapshotKind::Committed {
                        bail!("parent snapshot {p} is not committed");
                    }
                }
                rec.parent = p.to_string();
            }
            t.remove(rk.as_str())?;
            rec.kind = SnapshotKind::Committed;
            rec.labels.extend(labels);
            rec.labels.remove("kura.io/unpacking");
            rec.created_at = metadata::now();
            let lease = std::mem::take(&mut rec.lease);
            metadata::put(&mut t, &rn, &rec)?;
            drop(t);
            if !lease.is_empty() {
                // The lease now protects the committed name.
                let mut lt = tx.open_table(metadata::LEASES)?;
                let lk = key(ns, &lease);
                if let Some(mut l) = metadata::get_in::<metadata::LeaseRecord>(&lt, &lk)? {
                    let kind = lease_kind(snapshotter);
                    l.resources.retain(|r| !(r.kind == kind && r.id == k));
                    l.resources.push(LeaseResource {
                        kind,
                        id: name.to_string(),
                    });
                    metadata::put(&mut lt, &lk, &l)?;
                }
            }
            Ok(())
        })?;
        if snapshotter == OVERLAYFS {
            // The work dir is only for the writable upper layer.
            if let Some(rec) = self.get(ns, snapshotter, name)? {
                let _ = std::fs::remove_dir_all(self.dir(snapshotter, rec.id).join("work"));
            }
        }
        Ok(())
    }

    /// Removes a snapshot that has no children.
    pub fn remove(&self, ns: &str, snapshotter: &str, k: &str) -> Result<()> {
        let dir = self.forget(ns, snapshotter, k)?;
        remove_tree(&dir)
    }

    /// Removes a snapshot's record and returns its directory, for the caller to delete
    /// when it suits: until then it is an orphan, which GC deletes after a crash.
    pub fn forget(&self, ns: &str, snapshotter: &str, k: &str) -> Result<PathBuf> {
        self.md.write(|tx| self.forget_in(tx, ns, snapshotter, k))
    }

    /// `forget` inside the caller's transaction (one commit with the caller's changes).
    pub fn forget_in(
        &self,
        tx: &redb::WriteTransaction,
        ns: &str,
        snapshotter: &str,
        k: &str,
    ) -> Result<PathBuf> {
        let rk = Self::rec_key(ns, snapshotter, k);
        let prefix = format!("{ns}/{snapshotter}/");
        let mut t = tx.open_table(SNAPSHOTS)?;
        let rec: SnapshotRecord = metadata::get_in(&t, &rk)?
            .with_context(|| format!("snapshot {k} not found ({snapshotter}, namespace {ns})"))?;
        for (child, c) in metadata::scan_in::<SnapshotRecord>(&t, &prefix)? {
            if c.parent == k {
                bail!("snapshot {k} has a child ({child}); remove it first");
            }
        }
        t.remove(rk.as_str())?;
        Ok(self.dir(snapshotter, rec.id))
    }

    pub fn mounts(&self, ns: &str, snapshotter: &str, k: &str) -> Result<Vec<Mount>> {
        let chain = self.chain(ns, snapshotter, k)?;
        let (_, rec) = &chain[0];
        let ro = rec.kind != SnapshotKind::Active;
        let own = self.fs_dir(snapshotter, rec.id);
        if snapshotter == NATIVE || chain.len() == 1 {
            return Ok(vec![Mount::bind(&own, ro)]);
        }
        if rec.kind == SnapshotKind::View && chain.len() == 2 {
            // A view of a single layer: bind its directory read-only.
            return Ok(vec![Mount::bind(
                &self.fs_dir(snapshotter, chain[1].1.id),
                true,
            )]);
        }
        let lowers: Vec<String> = chain[1..]
            .iter()
            .map(|(_, r)| self.fs_dir(snapshotter, r.id).display().to_string())
            .collect();
        let mut options = Vec::new();
        if rec.kind == SnapshotKind::Active {
            options.push(format!(
                "workdir={}",
                self.dir(snapshotter, rec.id).join("work").display()
            ));
            options.push(format!("upperdir={}", own.display()));
            options.push(format!("lowerdir={}", lowers.join(":")));
        } else {
            // A view: its own empty dir stays unused, the parents are the lower layers.
            options.push(format!("lowerdir={}", lowers.join(":")));
        }
        options.push("index=off".into());
        Ok(vec![Mount {
            r#type: "overlay".into(),
            source: "overlay".into(),
            options,
        }])
    }

    /// Disk used by the snapshot's own directory (not its parents).
    pub fn usage(&self, ns: &str, snapshotter: &str, k: &str) -> Result<(u64, u64)> {
        let rec = self
            .get(ns, snapshotter, k)?
            .with_context(|| format!("snapshot {k} not found"))?;
        Ok(du(&self.fs_dir(snapshotter, rec.id)))
    }

    /// Snapshot ids that have a directory on disk, per snapshotter.
    pub fn dirs_on_disk(&self, snapshotter: &str) -> Result<Vec<u64>> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(self.root.join(snapshotter))? {
            if let Ok(id) = e?.file_name().to_string_lossy().parse::<u64>() {
                out.push(id);
            }
        }
        Ok(out)
    }

    pub fn remove_dir(&self, snapshotter: &str, id: u64) -> Result<()> {
        remove_tree(&self.dir(snapshotter, id))
    }
}

/// Removes a directory tree; immutable flags or mounts below it make this fail loudly.
pub fn remove_tree(p: &Path) -> Result<()> {
    match std::fs::remove_dir_all(p) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(e).with_context(|| format!("remove {}", p.display()))
        }
        _ => Ok(()),
    }
}

/// Copies a tree preserving everything (owners, modes, links, xattrs, times).
fn copy_tree(src: &Path, dst: &Path) -> Result<()> {
    let out = std::process::Command::new("cp")
        .arg("-a")
        .arg("--reflink=auto")
        .arg(format!("{}/.", src.display()))
        .arg(dst)
        .output()
        .context("run cp")?;
    if !out.status.success() {
        bail!(
            "copy {} to {}: {}",
            src.display(),
            dst.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// (bytes in blocks, inodes) of a tree, hardlinks counted once.
pub fn du(p: &Path) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    let mut seen = std::collections::HashSet::new();
    let (mut size, mut inodes) = (0u64, 0u64);
    let mut stack = vec![p.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(m) = std::fs::symlink_metadata(&d) else {
            continue;
        };
        if seen.insert((m.dev(), m.ino())) {
            size += m.blocks() * 512;
            inodes += 1;
        }
        if m.is_dir() {
            if let Ok(rd) = std::fs::read_dir(&d) {
                stack.extend(rd.flatten().map(|e| e.path()));
            }
        }
    }
    (size, inodes)
}
