//! The content store: sha256-addressed blobs under `<root>/content/blobs/sha256/<hex>`.
//!
//! A blob is written to an ingest (`<root>/content/ingest/<sha256(ref)>/data`), hashed as
//! it streams in, verified against the expected size and digest, and renamed into place.
//! Ingests survive a crash: opening the same ref again resumes from the bytes already on
//! disk (they are re-hashed, never trusted). Blobs are shared between namespaces; which
//! namespace knows a blob is metadata (see `metadata::CONTENT`).

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

pub mod digest;
pub use digest::{check_digest, sha256_digest};

#[derive(Clone)]
pub struct ContentStore {
    root: PathBuf,
    locked: Arc<Mutex<HashSet<String>>>,
    /// fsync a blob before it is renamed into place (survives power loss, not just kill -9).
    sync: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IngestMeta {
    pub r#ref: String,
    #[serde(default)]
    pub expected: String,
    #[serde(default)]
    pub total: i64,
    #[serde(default)]
    pub updated_at: i64,
}

impl ContentStore {
    pub fn open(root: &Path, sync: bool) -> Result<ContentStore> {
        let root = root.join("content");
        fs::create_dir_all(root.join("blobs/sha256"))?;
        fs::create_dir_all(root.join("ingest"))?;
        Ok(ContentStore {
            root,
            locked: Arc::default(),
            sync,
        })
    }

    pub fn blob_path(&self, digest: &str) -> Result<PathBuf> {
        let hex = check_digest(digest)?;
        Ok(self.root.join("blobs/sha256").join(hex))
    }

    /// Size of the blob when present.
    pub fn stat(&self, digest: &str) -> Result<Option<u64>> {
        match fs::metadata(self.blob_path(digest)?) {
            Ok(m) => Ok(Some(m.len())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    pub fn open_blob(&self, digest: &str) -> Result<File> {
        let p = self.blob_path(digest)?;
        File::open(&p).with_context(|| format!("content {digest} not found in the content store"))
    }

    /// Reads a small blob whole (manifests, configs), verifying its digest.
    pub fn read_small(&self, digest: &str, limit: u64) -> Result<Vec<u8>> {
        let f = self.open_blob(digest)?;
        let len = f.metadata()?.len();
        if len > limit {
            bail!("content {digest} is {len} bytes, more than the {limit} expected for metadata");
        }
        let mut buf = Vec::with_capacity(len as usize);
        f.take(limit).read_to_end(&mut buf)?;
        if sha256_digest(&buf) != digest {
            bail!("content {digest} is corrupt on disk (digest mismatch)");
        }
        Ok(buf)
    }

    /// Every blob on disk: (digest, size).
    pub fn walk_blobs(&self) -> Result<Vec<(String, u64)>> {
        let mut out = Vec::new();
        for e in fs::read_dir(self.root.join("blobs/sha256"))? {
            let e = e?;
            let name = e.file_name().to_string_lossy().to_string();
            if name.len() == 64 && name.bytes().all(|b| b.is_ascii_hexdigit()) {
                out.push((
                    format!("sha256:{name}"),
                    e.metadata().map(|m| m.len()).unwrap_or(0),
                ));
            }
        }
        Ok(out)
    }

    pub fn delete_blob(&self, digest: &str) -> Result<()> {
        match fs::remove_file(self.blob_path(digest)?) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.into()),
            _ => Ok(()),
        }
    }

    fn ingest_dir(&self, r: &str) -> PathBuf {
        self.root.join("ingest").join(ingest_name(r))
    }

    /// Opens (or resumes) the ingest `r`. Only one writer per ref at a time.
    pub fn writer(&self, r: &str, expected: &str, total: i64) -> Result<Writer> {
        if r.is_empty() {
            bail!("an ingest needs a ref");
        }
        if !expected.is_empty() {
            check_digest(expected)?;
        }
        if !self.locked.lock().unwrap().insert(r.to_string()) {
            bail!("ingest {r} is being written by another client");
        }
        let guard = IngestLock {
            set: self.locked.clone(),
            r: r.to_string(),
        };
        let dir = self.ingest_dir(r);
        fs::create_dir_all(&dir).with_context(|| format!("ingest {r}: {}", dir.display()))?;
        let meta_path = dir.join("meta.json");
        let mut meta = IngestMeta {
            r#ref: r.to_string(),
            expected: expected.to_string(),
            total,
            updated_at: crate::metadata::now(),
        };
        let mut hasher = Sha256::new();
        let mut offset = 0u64;
        let data = dir.join("data");
        if let Ok(old) = fs::read(&meta_path)
            .map_err(anyhow::Error::from)
            .and_then(|b| Ok(serde_json::from_slice::<IngestMeta>(&b)?))
        {
            if old.expected == meta.expected && data.exists() {
                // Resume: re-hash what is there.
                let mut f = File::open(&data)?;
                let mut buf = vec![0u8; 1 << 16];
                loop {
                    let n = f.read(&mut buf)?;
                    if n == 0 {
                        break;
                    }
                    hasher.update(&buf[..n]);
                    offset += n as u64;
                }
                if total > 0 && offset > total as u64 {
                    hasher = Sha256::new();
                    offset = 0;
                    fs::remove_file(&data)?;
                }
            } else {
                let _ = fs::remove_file(&data);
            }
        }
        fs::write(&meta_path, serde_json::to_vec(&meta)?)
            .with_context(|| format!("ingest {r}: {}", meta_path.display()))?;
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&data)
            .with_context(|| format!("ingest {r}: {}", data.display()))?;
        if offset == 0 {
            file.set_len(0)?;
        }
        meta.updated_at = crate::metadata::now();
        Ok(Writer {
            store: self.clone(),
            dir,
            file: std::io::BufWriter::with_capacity(1 << 17, file),
            hasher,
            offset,
            meta,
            _lock: guard,
        })
    }

    pub fn ingest_status(&self, r: &str) -> Result<Option<IngestMeta>> {
        let dir = self.ingest_dir(r);
        let Ok(b) = fs::read(dir.join("meta.json")) else {
            return Ok(None);
        };
        let mut m: IngestMeta = serde_json::from_slice(&b)?;
        m.updated_at = modified(&dir.join("data")).unwrap_or(m.updated_at);
        Ok(Some(m))
    }

    /// Current size of an ingest's data.
    pub fn ingest_offset(&self, r: &str) -> u64 {
        fs::metadata(self.ingest_dir(r).join("data"))
            .map(|m| m.len())
            .unwrap_or(0)
    }

    pub fn list_ingests(&self) -> Result<Vec<(IngestMeta, u64)>> {
        let mut out = Vec::new();
        for e in fs::read_dir(self.root.join("ingest"))? {
            let dir = e?.path();
            let Ok(b) = fs::read(dir.join("meta.json")) else {
                continue;
            };
            let Ok(mut m) = serde_json::from_slice::<IngestMeta>(&b) else {
                continue;
            };
            let len = fs::metadata(dir.join("data")).map(|m| m.len()).unwrap_or(0);
            m.updated_at = modified(&dir.join("data")).unwrap_or(m.updated_at);
            out.push((m, len));
        }
        Ok(out)
    }

    pub fn abort(&self, r: &str) -> Result<()> {
        // Held while removing, so a writer cannot open the ref in between.
        let locked = self.locked.lock().unwrap();
        if locked.contains(r) {
            bail!("ingest {r} is being written");
        }
        let dir = self.ingest_dir(r);
        if dir.exists() {
            fs::remove_dir_all(dir)?;
        }
        Ok(())
    }

    /// Removes ingests untouched for `max_age` seconds and those with no metadata.
    pub fn expire_ingests(&self, max_age: i64) -> Result<Vec<String>> {
        let now = crate::metadata::now();
        let mut gone = Vec::new();
        for e in fs::read_dir(self.root.join("ingest"))? {
            let dir = e?.path();
            let meta = fs::read(dir.join("meta.json"))
                .ok()
                .and_then(|b| serde_json::from_slice::<IngestMeta>(&b).ok());
            let age = now
                - modified(&dir.join("data"))
                    .or_else(|| modified(&dir))
                    .unwrap_or(0);
            if meta.is_some() && age <= max_age {
                continue;
            }
            // A writer makes its dir before its meta.json: an open ingest is recognised
            // by its dir name, not its meta. The set stays locked through the removal so
            // no writer can open the ref between the check and the remove.
            let locked = self.locked.lock().unwrap();
            let name = dir.file_name().map(|n| n.to_string_lossy().to_string());
            if locked.iter().any(|r| Some(ingest_name(r)) == name) {
                continue;
            }
            let _ = fs::remove_dir_all(&dir);
            drop(locked);
            gone.push(meta.map(|m| m.r#ref).unwrap_or_default());
        }
        Ok(gone)
    }
}

/// An ingest's directory name: its ref hashed (refs may hold any character).
fn ingest_name(r: &str) -> String {
    hex::encode(Sha256::digest(r.as_bytes()))
}

fn modified(p: &Path) -> Option<i64> {
    let m = fs::metadata(p).ok()?.modified().ok()?;
    Some(m.duration_since(std::time::UNIX_EPOCH).ok()?.as_secs() as i64)
}

struct IngestLock {
    set: Arc<Mutex<HashSet<String>>>,
    r: String,
}

impl Drop for IngestLock {
    fn drop(&mut self) {
        self.set.lock().unwrap().remove(&self.r);
    }
}

/// An open ingest. Dropping it without `commit` leaves the data for a later resume.
pub struct Writer {
    store: ContentStore,
    dir: PathBuf,
    file: std::io::BufWriter<File>,
    hasher: Sha256,
    offset: u64,
    meta: IngestMeta,
    _lock: IngestLock,
}

impl Writer {
    /// Bytes already in the ingest (where the next write lands).
    pub fn offset(&self) -> u64 {
        self.offset
    }

    pub fn expected(&self) -> &str {
        &self.meta.expected
    }

    /// Starts over from zero (the source could not resume).
    pub fn truncate(&mut self) -> Result<()> {
        self.file.flush()?;
        self.file.get_ref().set_len(0)?;
        self.hasher = Sha256::new();
        self.offset = 0;
        Ok(())
    }

    /// Copies what is already in the ingest into `w` (to replay a resumed stream).
    pub fn replay(&mut self, w: &mut dyn Write) -> Result<()> {
        self.file.flush()?;
        let mut f = File::open(self.dir.join("data"))?;
        std::io::copy(&mut (&mut f).take(self.offset), w)?;
        Ok(())
    }

    /// Verifies size and digest and moves the blob into place. Returns its digest.
    /// `commit` runs under `before_rename` so the caller can record it atomically enough
    /// (e.g. holding the GC lock).
    pub fn commit(mut self) -> Result<(String, u64)> {
        self.file.flush()?;
        if self.store.sync {
            self.file.get_ref().sync_data()?;
        }
        let digest = format!("sha256:{}", hex::encode(self.hasher.clone().finalize()));
        if self.meta.total > 0 && self.offset != self.meta.total as u64 {
            let (total, off) = (self.meta.total, self.offset);
            self.discard();
            bail!(
                "size mismatch for {}: expected {total} bytes, got {off}",
                self.meta.expected
            );
        }
        if !self.meta.expected.is_empty() && digest != self.meta.expected {
            let exp = self.meta.expected.clone();
            self.discard();
            bail!("digest mismatch: expected {exp}, got {digest}");
        }
        let dst = self.store.blob_path(&digest)?;
        if dst.exists() {
            self.discard();
        } else {
            fs::rename(self.dir.join("data"), &dst).with_context(|| format!("commit {digest}"))?;
            let _ = fs::remove_dir_all(&self.dir);
        }
        Ok((digest, self.offset))
    }

    /// Removes the ingest's data.
    pub fn discard(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

impl Write for Writer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.file.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.offset += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ingest_resumes_and_verifies() {
        let dir = std::env::temp_dir().join(format!("kura-content-{}", std::process::id()));
        let cs = ContentStore::open(&dir, false).unwrap();
        let data = b"hello kura content store".repeat(1000);
        let d = sha256_digest(&data);
        {
            let mut w = cs.writer("r1", &d, data.len() as i64).unwrap();
            assert!(
                cs.writer("r1", &d, data.len() as i64).is_err(),
                "one writer per ref"
            );
            w.write_all(&data[..5000]).unwrap();
            w.flush().unwrap();
        } // dropped without commit: an interrupted write
        assert_eq!(cs.ingest_offset("r1"), 5000);
        let mut w = cs.writer("r1", &d, data.len() as i64).unwrap();
        assert_eq!(w.offset(), 5000);
        w.write_all(&data[5000..]).unwrap();
        let (got, size) = w.commit().unwrap();
        assert_eq!((got.as_str(), size), (d.as_str(), data.len() as u64));
        assert_eq!(cs.stat(&d).unwrap(), Some(data.len() as u64));
        assert!(cs.list_ingests().unwrap().is_empty());
        // A wrong digest is refused and leaves nothing.
        let other = sha256_digest(b"something else");
        let mut w = cs.writer("r2", &other, 0).unwrap();
        w.write_all(b"not that").unwrap();
        let e = w.commit().unwrap_err().to_string();
        assert!(e.contains("digest mismatch"), "{e}");
        assert!(cs.stat(&other).unwrap().is_none() && cs.list_ingests().unwrap().is_empty());
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn expiry_spares_an_open_ingest_without_meta() {
        let dir = std::env::temp_dir().join(format!("kura-expire-{}", std::process::id()));
        let cs = ContentStore::open(&dir, false).unwrap();
        let data = b"written while GC runs".repeat(100);
        let mut w = cs.writer("open", "", 0).unwrap();
        // The window between a writer's mkdir and its meta.json (the GC race CI hit).
        std::fs::remove_file(cs.ingest_dir("open").join("meta.json")).unwrap();
        assert!(cs.expire_ingests(0).unwrap().is_empty());
        w.write_all(&data).unwrap();
        let (d, _) = w.commit().unwrap();
        assert_eq!(d, sha256_digest(&data));
        // Closed and without meta: the next expiry takes it.
        drop(cs.writer("orphan", "", 0).unwrap());
        std::fs::remove_file(cs.ingest_dir("orphan").join("meta.json")).unwrap();
        assert_eq!(cs.expire_ingests(3600).unwrap().len(), 1);
        assert!(cs.list_ingests().unwrap().is_empty());
        let _ = std::fs::remove_dir_all(dir);
    }
}
