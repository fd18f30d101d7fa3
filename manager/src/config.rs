//! kurad's configuration: `/etc/kura/config.toml` by default; an absent file means defaults.
//!
//! ```toml
//! log_level = "info"
//! snapshotter = "overlayfs"          # or "native"
//! max_concurrent_downloads = 3
//! stall_timeout_secs = 30            # a transfer making no progress this long fails
//! content_sync = true                # fsync blobs before they enter the store
//! [network]
//! cni_path = ["/usr/lib/cni", "/opt/cni/bin"]   # where CNI plugin binaries are looked for
//! [registry]
//! config_path = "/root/.docker/config.json"   # credentials used when a client sends none
//! [registry.hosts."127.0.0.1:5000"]
//! plain_http = true
//! skip_verify = false
//! mirrors = ["http://127.0.0.1:5001"]
//! ```

use anyhow::Context;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub log_level: String,
    pub snapshotter: String,
    pub max_concurrent_downloads: usize,
    pub stall_timeout_secs: u64,
    /// fsync each blob before it enters the content store.
    pub content_sync: bool,
    pub registry: RegistryConfig,
    pub network: NetworkConfig,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NetworkConfig {
    /// Directories searched for CNI plugins, in order (Debian's, then the upstream one).
    pub cni_path: Vec<PathBuf>,
}

impl Default for NetworkConfig {
    fn default() -> Self {
        NetworkConfig {
            cni_path: vec!["/usr/lib/cni".into(), "/opt/cni/bin".into()],
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RegistryConfig {
    pub config_path: Option<PathBuf>,
    pub hosts: BTreeMap<String, HostConfig>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HostConfig {
    /// Talk http instead of https to this host.
    pub plain_http: Option<bool>,
    /// Accept any TLS certificate from this host.
    pub skip_verify: bool,
    /// Endpoints tried in order before the host itself when pulling: `http(s)://host[:port]`.
    pub mirrors: Vec<String>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            log_level: "info".into(),
            snapshotter: "overlayfs".into(),
            max_concurrent_downloads: 3,
            stall_timeout_secs: 30,
            content_sync: true,
            registry: RegistryConfig::default(),
            network: NetworkConfig::default(),
        }
    }
}

impl Config {
    /// Reads `path`; a missing file yields the defaults, a malformed one an error.
    pub fn load(path: &Path) -> anyhow::Result<Config> {
        match std::fs::read_to_string(path) {
            Ok(s) => toml::from_str(&s).with_context(|| format!("parse {}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Config::default()),
            Err(e) => Err(e).with_context(|| format!("read {}", path.display())),
        }
    }
}
