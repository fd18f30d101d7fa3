//! The `options` of a CreateTaskRequest: which OCI runtime to run and how.
//!
//! Two encodings are understood:
//! - containerd's runc options (`containerd.runc.v1.Options`, protobuf), what
//!   containerd sends for runc-style runtimes: `binary_name`, `root`, `systemd_cgroup`;
//! - kura's own (`kura.shim.v1.Options`, JSON in the Any's value), which adds the log
//!   file: `{"binary_name": "...", "root": "...", "systemd_cgroup": false,
//!   "log_path": "/var/log/...", "log_format": "cri" | "raw"}`.
//!
//! Without options the runtime is `KURA_SHIM_RUNTIME` from the shim's environment
//! (containerd passes its own environment on), else kura-runtime.

use crate::error::{Error, Result};
use crate::logfile::Format;
use containerd_shim_protos::shim::oci::Options as RuncOptions;
use protobuf::well_known_types::any::Any;
use protobuf::Message;
use std::path::PathBuf;

pub const KURA_OPTIONS: &str = "kura.shim.v1.Options";

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CreateOptions {
    pub binary_name: Option<PathBuf>,
    pub root: Option<PathBuf>,
    pub systemd_cgroup: bool,
    pub log: Option<(PathBuf, Format)>,
}

fn non_empty(s: &str) -> Option<PathBuf> {
    (!s.is_empty()).then(|| PathBuf::from(s))
}

impl CreateOptions {
    pub fn parse(any: Option<&Any>) -> Result<CreateOptions> {
        let Some(any) = any else {
            return Ok(CreateOptions::default());
        };
        let url = any.type_url.rsplit('/').next().unwrap_or("");
        match url {
            "" => Ok(CreateOptions::default()),
            "containerd.runc.v1.Options" | "io.containerd.runc.v1.Options" => {
                let o = RuncOptions::parse_from_bytes(&any.value)
                    .map_err(|e| Error::invalid(format!("runc options: {e}")))?;
                Ok(CreateOptions {
                    binary_name: non_empty(&o.binary_name),
                    root: non_empty(&o.root),
                    systemd_cgroup: o.systemd_cgroup,
                    log: None,
                })
            }
            KURA_OPTIONS => {
                let v: serde_json::Value = serde_json::from_slice(&any.value)
                    .map_err(|e| Error::invalid(format!("kura options: {e}")))?;
                let s = |k: &str| v[k].as_str().and_then(non_empty);
                let format = match v["log_format"].as_str().unwrap_or("cri") {
                    "cri" => Format::Cri,
                    "raw" => Format::Raw,
                    f => return Err(Error::invalid(format!("kura options: log_format {f:?}"))),
                };
                Ok(CreateOptions {
                    binary_name: s("binary_name"),
                    root: s("root"),
                    systemd_cgroup: v["systemd_cgroup"].as_bool().unwrap_or(false),
                    log: s("log_path").map(|p| (p, format)),
                })
            }
            other => Err(Error::invalid(format!("unknown options type {other:?}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runc_and_kura_options() {
        let mut o = RuncOptions::new();
        o.binary_name = "runc".into();
        o.root = "/run/r".into();
        let mut any = Any::new();
        any.type_url = "containerd.runc.v1.Options".into();
        any.value = o.write_to_bytes().unwrap();
        let p = CreateOptions::parse(Some(&any)).unwrap();
        assert_eq!(p.binary_name, Some(PathBuf::from("runc")));
        assert_eq!(p.root, Some(PathBuf::from("/run/r")));

        any.type_url = KURA_OPTIONS.into();
        any.value = br#"{"binary_name":"crun","log_path":"/l/c.log"}"#.to_vec();
        let p = CreateOptions::parse(Some(&any)).unwrap();
        assert_eq!(p.binary_name, Some(PathBuf::from("crun")));
        assert_eq!(p.log, Some((PathBuf::from("/l/c.log"), Format::Cri)));

        any.type_url = "bogus".into();
        assert!(CreateOptions::parse(Some(&any)).is_err());
        assert_eq!(
            CreateOptions::parse(None).unwrap(),
            CreateOptions::default()
        );
    }
}
