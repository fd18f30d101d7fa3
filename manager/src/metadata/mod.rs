//! Metadata in redb: one ACID database under `--root`. Every record is JSON under a key
//! that starts with its namespace (`ns/...`), so a namespace is a key prefix. Tables:
//!
//! | table | key | value |
//! |---|---|---|
//! | images | `ns/name` | [`ImageRecord`] |
//! | content | `ns/digest` | [`ContentRecord`] (the blob itself is in the content store, shared) |
//! | snapshots | `ns/snapshotter/key` | [`SnapshotRecord`] |
//! | leases | `ns/id` | [`LeaseRecord`] |
//! | counters | name | u64 |
//! | containers | `ns/id` | `containers::Record` |

use anyhow::{bail, Context, Result};
pub use redb::ReadableTable;
use redb::{Database, TableDefinition};
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

pub const IMAGES: TableDefinition<&str, &[u8]> = TableDefinition::new("images");
pub const CONTENT: TableDefinition<&str, &[u8]> = TableDefinition::new("content");
pub const SNAPSHOTS: TableDefinition<&str, &[u8]> = TableDefinition::new("snapshots");
pub const LEASES: TableDefinition<&str, &[u8]> = TableDefinition::new("leases");
pub const COUNTERS: TableDefinition<&str, u64> = TableDefinition::new("counters");
pub const CONTAINERS: TableDefinition<&str, &[u8]> = TableDefinition::new("containers");

pub type Labels = BTreeMap<String, String>;

/// Label on a lease that is deleted when kurad starts (its owner died with the daemon).
pub const LABEL_TEMPORARY: &str = "kura.io/temporary";
/// Label on content or snapshots that keeps them from GC.
pub const LABEL_GC_ROOT: &str = "kura.io/gc.root";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Descriptor {
    #[serde(rename = "mediaType", default)]
    pub media_type: String,
    pub digest: String,
    pub size: i64,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<crate::images::oci::Platform>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ImageRecord {
    pub name: String,
    pub target: Descriptor,
    #[serde(default)]
    pub labels: Labels,
    pub created_at: i64,
    pub updated_at: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ContentRecord {
    pub size: i64,
    #[serde(default)]
    pub labels: Labels,
    pub created_at: i64,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SnapshotKind {
    Active,
    View,
    Committed,
}

impl SnapshotKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SnapshotKind::Active => "active",
            SnapshotKind::View => "view",
            SnapshotKind::Committed => "committed",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SnapshotRecord {
    /// Directory number under the snapshotter's root.
    pub id: u64,
    pub kind: SnapshotKind,
    #[serde(default)]
    pub parent: String,
    #[serde(default)]
    pub labels: Labels,
    pub created_at: i64,
    /// Lease that owns this snapshot (an active or view snapshot with a lease is not a
    /// GC root: it lives as long as the lease).
    #[serde(default)]
    pub lease: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
pub struct LeaseResource {
    pub kind: String,
    pub id: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LeaseRecord {
    pub id: String,
    #[serde(default)]
    pub labels: Labels,
    pub created_at: i64,
    #[serde(default)]
    pub expires_at: i64,
    #[serde(default)]
    pub resources: Vec<LeaseResource>,
}

pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Namespaces are key prefixes: letters, digits, `.`, `_` and `-` only.
pub fn check_namespace(ns: &str) -> Result<()> {
    if ns.is_empty()
        || ns.len() > 76
        || !ns
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
    {
        bail!("invalid namespace {ns:?}: use letters, digits, '.', '_' and '-'");
    }
    Ok(())
}

pub fn key(ns: &str, rest: &str) -> String {
    format!("{ns}/{rest}")
}

pub struct Metadata {
    pub db: Database,
}

impl Metadata {
    pub fn open(path: &Path) -> Result<Metadata> {
        // The metadata is small; a bounded cache keeps kurad's memory small too.
        let db = Database::builder()
            .set_cache_size(8 << 20)
            .create(path)
            .with_context(|| format!("open {}", path.display()))?;
        let tx = db.begin_write()?;
        {
            tx.open_table(IMAGES)?;
            tx.open_table(CONTENT)?;
            tx.open_table(SNAPSHOTS)?;
            tx.open_table(LEASES)?;
            tx.open_table(COUNTERS)?;
            tx.open_table(CONTAINERS)?;
        }
        tx.commit()?;
        Ok(Metadata { db })
    }

    /// Runs `f` in one write transaction and commits it.
    pub fn write<T>(&self, f: impl FnOnce(&redb::WriteTransaction) -> Result<T>) -> Result<T> {
        let tx = self.db.begin_write()?;
        let v = f(&tx)?;
        tx.commit()?;
        Ok(v)
    }

    pub fn get<T: DeserializeOwned>(
        &self,
        table: TableDefinition<&str, &[u8]>,
        key: &str,
    ) -> Result<Option<T>> {
        let tx = self.db.begin_read()?;
        let t = tx.open_table(table)?;
        get_in(&t, key)
    }

    /// All records whose key starts with `prefix`, with the prefix stripped from the key.
    pub fn scan<T: DeserializeOwned>(
        &self,
        table: TableDefinition<&str, &[u8]>,
        prefix: &str,
    ) -> Result<Vec<(String, T)>> {
        let tx = self.db.begin_read()?;
        let t = tx.open_table(table)?;
        scan_in(&t, prefix)
    }
}

pub fn get_in<T: DeserializeOwned>(
    t: &impl ReadableTable<&'static str, &'static [u8]>,
    key: &str,
) -> Result<Option<T>> {
    match t.get(key)? {
        Some(v) => Ok(Some(
            serde_json::from_slice(v.value()).with_context(|| format!("decode record {key}"))?,
        )),
        None => Ok(None),
    }
}

pub fn scan_in<T: DeserializeOwned>(
    t: &impl ReadableTable<&'static str, &'static [u8]>,
    prefix: &str,
) -> Result<Vec<(String, T)>> {
    let mut out = Vec::new();
    for item in t.range(prefix..)? {
        let (k, v) = item?;
        let k = k.value();
        if !k.starts_with(prefix) {
            break;
        }
        let rec =
            serde_json::from_slice(v.value()).with_context(|| format!("decode record {k}"))?;
        out.push((k[prefix.len()..].to_string(), rec));
    }
    Ok(out)
}

pub fn put<T: Serialize>(
    t: &mut redb::Table<&'static str, &'static [u8]>,
    key: &str,
    v: &T,
) -> Result<()> {
    let bytes = serde_json::to_vec(v)?;
    t.insert(key, bytes.as_slice())?;
    Ok(())
}

/// Next value of a named counter (starts at 1), inside `tx`.
pub fn next_counter(tx: &redb::WriteTransaction, name: &str) -> Result<u64> {
    let mut t = tx.open_table(COUNTERS)?;
    let n = t.get(name)?.map(|v| v.value()).unwrap_or(0) + 1;
    t.insert(name, n)?;
    Ok(n)
}

/// Adds a resource to a lease inside `tx`; an unknown lease is an error.
pub fn lease_add(
    tx: &redb::WriteTransaction,
    ns: &str,
    lease: &str,
    res: LeaseResource,
) -> Result<()> {
    if lease.is_empty() {
        return Ok(());
    }
    let mut t = tx.open_table(LEASES)?;
    let k = key(ns, lease);
    let mut rec: LeaseRecord =
        get_in(&t, &k)?.with_context(|| format!("lease {lease} not found"))?;
    if !rec.resources.contains(&res) {
        rec.resources.push(res);
        put(&mut t, &k, &rec)?;
    }
    Ok(())
}

/// Namespaces that hold at least one record of any kind.
pub fn namespaces(md: &Metadata) -> Result<Vec<String>> {
    let tx = md.db.begin_read()?;
    let mut set = std::collections::BTreeSet::new();
    for table in [IMAGES, CONTENT, SNAPSHOTS, LEASES, CONTAINERS] {
        let t = tx.open_table(table)?;
        for item in t.iter()? {
            let (k, _) = item?;
            if let Some((ns, _)) = k.value().split_once('/') {
                set.insert(ns.to_string());
            }
        }
    }
    Ok(set.into_iter().collect())
}
