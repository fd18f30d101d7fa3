//! OCI and Docker image formats: media types, manifests, indexes, configs, platforms,
//! references and chain IDs.

use crate::metadata::Descriptor;
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";
pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const OCI_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
pub const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
pub const DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar";
pub const DOCKER_SCHEMA1: &str = "application/vnd.docker.distribution.manifest.v1+json";
pub const DOCKER_SCHEMA1_SIGNED: &str = "application/vnd.docker.distribution.manifest.v1+prettyjws";

/// What a registry is asked for when resolving a reference.
pub const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.v1+prettyjws;q=0.1";

pub fn is_index(mt: &str) -> bool {
    mt == OCI_INDEX || mt == DOCKER_LIST
}
pub fn is_manifest(mt: &str) -> bool {
    mt == OCI_MANIFEST || mt == DOCKER_MANIFEST
}
pub fn is_schema1(mt: &str) -> bool {
    mt == DOCKER_SCHEMA1 || mt == DOCKER_SCHEMA1_SIGNED
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

/// Layer compression from the media type; None when the type is not a layer we know.
pub fn layer_compression(mt: &str) -> Option<Compression> {
    match mt {
        OCI_LAYER | DOCKER_LAYER | "application/vnd.oci.image.layer.nondistributable.v1.tar" => {
            Some(Compression::None)
        }
        OCI_LAYER_GZIP
        | DOCKER_LAYER_GZIP
        | "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
        | "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip" => Some(Compression::Gzip),
        OCI_LAYER_ZSTD | "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd" => {
            Some(Compression::Zstd)
        }
        _ => None,
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Platform {
    pub architecture: String,
    pub os: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub variant: String,
    #[serde(
        rename = "os.version",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub os_version: String,
}

impl Platform {
    /// This host's platform (linux and the architecture kura was built for).
    pub fn host() -> Platform {
        let arch = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            "x86" => "386",
            "powerpc64" => "ppc64le",
            other => other,
        };
        Platform {
            architecture: arch.into(),
            os: "linux".into(),
            variant: if arch == "arm64" {
                "v8".into()
            } else {
                String::new()
            },
            os_version: String::new(),
        }
    }

    /// Parses `os/arch[/variant]` (or just `arch`); empty means the host.
    pub fn parse(s: &str) -> Result<Platform> {
        if s.is_empty() {
            return Ok(Platform::host());
        }
        let parts: Vec<&str> = s.split('/').collect();
        let (os, arch, variant) = match parts.as_slice() {
            [arch] => ("linux", *arch, ""),
            [os, arch] => (*os, *arch, ""),
            [os, arch, v] => (*os, *arch, *v),
            _ => bail!("invalid platform {s:?}: want os/arch[/variant]"),
        };
        let mut p = Platform {
            os: os.into(),
            architecture: normalize_arch(arch).into(),
            variant: variant.into(),
            os_version: String::new(),
        };
        if p.architecture == "arm64" && p.variant.is_empty() {
            p.variant = "v8".into();
        }
        Ok(p)
    }

    /// Whether a descriptor's platform is acceptable for this one.
    pub fn matches(&self, other: &Platform) -> bool {
        if self.os != other.os || self.architecture != normalize_arch(&other.architecture) {
            return false;
        }
        let v = if other.variant.is_empty() && other.architecture == "arm64" {
            "v8"
        } else {
            other.variant.as_str()
        };
        self.variant.is_empty() || v.is_empty() || self.variant == v
    }
}

fn normalize_arch(a: &str) -> &str {
    match a {
        "x86_64" | "x86-64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if !self.variant.is_empty() {
            write!(f, "/{}", self.variant)?;
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    #[serde(rename = "schemaVersion")]
    pub schema_version: u32,
    #[serde(
        rename = "mediaType",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub media_type: String,
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub annotations: std::collections::BTreeMap<String, String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Index {
    #[serde(rename = "schemaVersion")]
    pub schema_version: u32,
    #[serde(
        rename = "mediaType",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub media_type: String,
    pub manifests: Vec<Descriptor>,
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub annotations: std::collections::BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct RootFs {
    #[serde(default)]
    pub diff_ids: Vec<String>,
}

/// The parts of an image config kura needs (the whole JSON is kept as content).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ImageConfig {
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub os: String,
    #[serde(default)]
    pub variant: String,
    #[serde(default)]
    pub rootfs: RootFs,
}

/// The media type of a manifest-ish JSON blob, from its `mediaType` or its shape.
pub fn sniff_media_type(json: &[u8]) -> Result<String> {
    let v: serde_json::Value = serde_json::from_slice(json).context("not JSON")?;
    if let Some(mt) = v.get("mediaType").and_then(|m| m.as_str()) {
        return Ok(mt.to_string());
    }
    if v.get("schemaVersion").and_then(|s| s.as_u64()) == Some(1) {
        return Ok(DOCKER_SCHEMA1.into());
    }
    if v.get("manifests").is_some() {
        return Ok(OCI_INDEX.into());
    }
    if v.get("config").is_some() && v.get("layers").is_some() {
        return Ok(OCI_MANIFEST.into());
    }
    bail!("unknown manifest type")
}

/// chainID(L0) = diffID(L0); chainID(Ln) = sha256(chainID(Ln-1) + " " + diffID(Ln)).
pub fn chain_ids(diff_ids: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(diff_ids.len());
    for d in diff_ids {
        let next = match out.last() {
            None => d.clone(),
            Some(prev) => format!(
                "sha256:{}",
                hex::encode(Sha256::digest(format!("{prev} {d}").as_bytes()))
            ),
        };
        out.push(next);
    }
    out
}

/// A parsed image reference: `[domain/]path[:tag][@digest]`, docker style.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    pub domain: String,
    pub path: String,
    pub tag: Option<String>,
    pub digest: Option<String>,
}

pub const DOCKER_HUB: &str = "docker.io";

impl Reference {
    pub fn parse(s: &str) -> Result<Reference> {
        let orig = s;
        if s.is_empty() || s.chars().any(|c| c.is_whitespace()) {
            bail!("invalid image reference {orig:?}");
        }
        let (rest, digest) = match s.split_once('@') {
            Some((r, d)) => {
                crate::content::check_digest(d)
                    .with_context(|| format!("invalid image reference {orig:?}"))?;
                (r, Some(d.to_string()))
            }
            None => (s, None),
        };
        let (name, tag) = match rest.rfind(':') {
            Some(i) if !rest[i + 1..].contains('/') => {
                (&rest[..i], Some(rest[i + 1..].to_string()))
            }
            _ => (rest, None),
        };
        if let Some(t) = &tag {
            if t.is_empty()
                || t.len() > 128
                || !t
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
            {
                bail!("invalid tag in image reference {orig:?}");
            }
        }
        let (domain, path) = match name.split_once('/') {
            Some((d, p)) if d.contains('.') || d.contains(':') || d == "localhost" => {
                (d.to_string(), p.to_string())
            }
            _ => (DOCKER_HUB.to_string(), name.to_string()),
        };
        let path = if domain == DOCKER_HUB && !path.contains('/') {
            format!("library/{path}")
        } else {
            path
        };
        if path.is_empty()
            || path.split('/').any(|c| {
                c.is_empty()
                    || !c.chars().all(|ch| {
                        ch.is_ascii_lowercase()
                            || ch.is_ascii_digit()
                            || matches!(ch, '.' | '_' | '-')
                    })
            })
        {
            bail!("invalid repository name in image reference {orig:?} (lowercase letters, digits, '.', '_', '-')");
        }
        let tag = if tag.is_none() && digest.is_none() {
            Some("latest".to_string())
        } else {
            tag
        };
        Ok(Reference {
            domain,
            path,
            tag,
            digest,
        })
    }

    /// The repository without tag or digest: `docker.io/library/busybox`.
    pub fn repository(&self) -> String {
        format!("{}/{}", self.domain, self.path)
    }

    /// What the registry is asked for: the digest if any, else the tag.
    pub fn object(&self) -> &str {
        self.digest
            .as_deref()
            .or(self.tag.as_deref())
            .unwrap_or("latest")
    }
}

impl std::fmt::Display for Reference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.repository())?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

/// Normalizes a user-typed image name to the stored name (`busybox` →
/// `docker.io/library/busybox:latest`). Names that do not parse are kept as typed.
pub fn normalize_name(s: &str) -> String {
    Reference::parse(s)
        .map(|r| r.to_string())
        .unwrap_or_else(|_| s.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references() {
        let r = Reference::parse("busybox").unwrap();
        assert_eq!(r.to_string(), "docker.io/library/busybox:latest");
        let r = Reference::parse("127.0.0.1:5000/a/b:v1").unwrap();
        assert_eq!(
            (r.domain.as_str(), r.path.as_str()),
            ("127.0.0.1:5000", "a/b")
        );
        assert_eq!(r.object(), "v1");
        let d = format!("sha256:{}", "a".repeat(64));
        let r = Reference::parse(&format!("localhost/x@{d}")).unwrap();
        assert_eq!(r.object(), d);
        assert!(Reference::parse("UPPER/case").is_err());
        assert!(Reference::parse("a:").is_err());
    }

    #[test]
    fn platforms() {
        let p = Platform::parse("linux/arm64").unwrap();
        assert!(p.matches(&Platform {
            architecture: "arm64".into(),
            os: "linux".into(),
            ..Default::default()
        }));
        assert!(!Platform::parse("linux/amd64").unwrap().matches(&p));
    }

    #[test]
    fn chains() {
        let ids = chain_ids(&["sha256:a".into(), "sha256:b".into()]);
        assert_eq!(ids[0], "sha256:a");
        assert_eq!(ids[1], crate::content::sha256_digest(b"sha256:a sha256:b"));
    }
}
