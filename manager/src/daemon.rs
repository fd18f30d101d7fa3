//! The daemon's shared state: metadata, content store, snapshotters, registries, and the
//! locks that keep GC, unpacks and pulls from stepping on each other.

use crate::config::Config;
use crate::content::ContentStore;
use crate::metadata::{
    self, key, ContentRecord, Labels, LeaseRecord, LeaseResource, Metadata, ReadableTable as _,
    CONTENT, LEASES,
};
use crate::registry::Registries;
use crate::snapshots::Snapshots;
use anyhow::{Context, Result};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};

pub struct Kura {
    pub config: Config,
    pub root: PathBuf,
    pub state: PathBuf,
    pub md: Arc<Metadata>,
    pub content: ContentStore,
    pub snapshots: Snapshots,
    pub registries: Registries,
    pub networks: Arc<crate::network::Networks>,
    /// Shared by writers of records+files, exclusive for GC's sweep.
    pub gc_lock: Arc<RwLock<()>>,
    /// One unpack per (namespace, snapshotter, chain ID) at a time; one download per digest.
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl Kura {
    pub fn open(config: Config, root: PathBuf, state: PathBuf) -> Result<Arc<Kura>> {
        std::fs::create_dir_all(&root).with_context(|| format!("create {}", root.display()))?;
        std::fs::create_dir_all(&state).with_context(|| format!("create {}", state.display()))?;
        crate::snapshots::check_snapshotter(&config.snapshotter)?;
        let md = Arc::new(Metadata::open(&root.join("meta.redb"))?);
        let gc_lock = Arc::new(RwLock::new(()));
        let content = ContentStore::open(&root, config.content_sync)?;
        let snapshots = Snapshots::open(md.clone(), &root, gc_lock.clone())?;
        let registries = Registries::new(&config)?;
        let networks = Arc::new(crate::network::Networks::open(
            &root,
            &state,
            config.network.cni_path.clone(),
        )?);
        Ok(Arc::new(Kura {
            config,
            root,
            state,
            md,
            content,
            snapshots,
            registries,
            networks,
            gc_lock,
            locks: Mutex::default(),
        }))
    }

    /// The named async lock (created on first use, dropped when nobody holds it).
    pub async fn lock(&self, name: String) -> tokio::sync::OwnedMutexGuard<()> {
        let m = {
            let mut map = self.locks.lock().unwrap();
            map.retain(|_, v| Arc::strong_count(v) > 1);
            map.entry(name).or_default().clone()
        };
        m.lock_owned().await
    }

    /// Records that namespace `ns` has blob `digest` (already in the store), under `lease`.
    /// The caller holds the GC lock shared.
    pub fn record_blob_locked(
        &self,
        ns: &str,
        digest: &str,
        size: u64,
        labels: Labels,
        lease: &str,
    ) -> Result<()> {
        self.md.write(|tx| {
            let mut t = tx.open_table(CONTENT)?;
            let k = key(ns, digest);
            let mut rec = metadata::get_in::<ContentRecord>(&t, &k)?.unwrap_or(ContentRecord {
                size: size as i64,
                labels: Labels::new(),
                created_at: metadata::now(),
            });
            rec.labels.extend(labels);
            metadata::put(&mut t, &k, &rec)?;
            drop(t);
            metadata::lease_add(
                tx,
                ns,
                lease,
                LeaseResource {
                    kind: "content".into(),
                    id: digest.into(),
                },
            )
        })
    }

    /// Records a blob that is on disk; false when it is not (GC took it).
    pub fn record_blob(&self, ns: &str, digest: &str, lease: &str) -> Result<bool> {
        let _g = self.gc_lock.read().unwrap();
        match self.content.stat(digest)? {
            Some(size) => {
                self.record_blob_locked(ns, digest, size, Labels::new(), lease)?;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// Writes a small blob (manifest, config) and records it.
    pub fn put_blob(&self, ns: &str, data: &[u8], expected: &str, lease: &str) -> Result<String> {
        use std::io::Write;
        let digest = crate::content::sha256_digest(data);
        if !expected.is_empty() && digest != expected {
            anyhow::bail!("digest mismatch: expected {expected}, got {digest}");
        }
        if self.record_blob(ns, &digest, lease)? {
            return Ok(digest);
        }
        let mut w = self.content.writer(
            &format!("put-{digest}-{}", rand::random::<u32>()),
            &digest,
            data.len() as i64,
        )?;
        w.truncate()?;
        w.write_all(data)?;
        let _g = self.gc_lock.read().unwrap();
        let (d, size) = w.commit()?;
        self.record_blob_locked(ns, &d, size, Labels::new(), lease)?;
        Ok(d)
    }

    /// Whether namespace `ns` knows blob `digest` and it is on disk.
    pub fn has_blob(&self, ns: &str, digest: &str) -> Result<bool> {
        Ok(self
            .md
            .get::<ContentRecord>(CONTENT, &key(ns, digest))?
            .is_some()
            && self.content.stat(digest)?.is_some())
    }

    /// Reads a small blob of namespace `ns`.
    pub fn read_blob(&self, ns: &str, digest: &str) -> Result<Vec<u8>> {
        if self
            .md
            .get::<ContentRecord>(CONTENT, &key(ns, digest))?
            .is_none()
        {
            anyhow::bail!("content {digest} not found in namespace {ns}");
        }
        self.content.read_small(digest, 16 << 20)
    }

    pub fn create_lease(
        &self,
        ns: &str,
        id: &str,
        labels: Labels,
        expire_secs: i64,
    ) -> Result<LeaseRecord> {
        let id = if id.is_empty() {
            format!("lease-{:016x}", rand::random::<u64>())
        } else {
            id.to_string()
        };
        let rec = LeaseRecord {
            id: id.clone(),
            labels,
            created_at: metadata::now(),
            expires_at: if expire_secs > 0 {
                metadata::now() + expire_secs
            } else {
                0
            },
            resources: vec![],
        };
        self.md.write(|tx| {
            let mut t = tx.open_table(LEASES)?;
            let k = key(ns, &id);
            if t.get(k.as_str())?.is_some() {
                anyhow::bail!("lease {id} already exists");
            }
            metadata::put(&mut t, &k, &rec)
        })?;
        Ok(rec)
    }

    pub fn delete_lease(&self, ns: &str, id: &str) -> Result<bool> {
        self.md.write(|tx| {
            let mut t = tx.open_table(LEASES)?;
            let r = t.remove(key(ns, id).as_str())?.is_some();
            Ok(r)
        })
    }

    /// A temporary lease for one operation (pull, load, unpack): deleted when the
    /// operation ends, or at the next start if kurad dies first.
    pub fn temp_lease(&self, ns: &str, what: &str) -> Result<String> {
        let mut labels = Labels::new();
        labels.insert(metadata::LABEL_TEMPORARY.into(), what.into());
        Ok(self.create_lease(ns, "", labels, 24 * 3600)?.id)
    }
}

/// Runs metadata work that may wait for the GC lock from async code without stalling
/// the runtime's few worker threads.
pub fn blocking<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f)
        }
        _ => f(),
    }
}
