//! The command line containerd gives every runtime v2 shim: Go-style flags
//! (`-flag value`, `--flag=value`), then an optional action (`start`, `delete`).
//! Unknown flags are errors, as in Go's flag package, so a typo is not silently ignored.

use std::path::PathBuf;

#[derive(Debug, Default, Clone)]
pub struct Flags {
    pub namespace: String,
    /// containerd's (or kurad's) gRPC address; handed on to the publish binary.
    pub address: String,
    pub publish_binary: String,
    pub id: String,
    pub bundle: Option<PathBuf>,
    /// Where the daemon's ttrpc socket lives (set by `start` for the daemon it spawns).
    pub socket: Option<String>,
    pub debug: bool,
    pub version: bool,
    pub action: Option<String>,
}

pub fn parse<I: IntoIterator<Item = String>>(args: I) -> Result<Flags, String> {
    let mut f = Flags::default();
    let mut it = args.into_iter().peekable();
    while let Some(a) = it.next() {
        let Some(flag) = a.strip_prefix("--").or_else(|| a.strip_prefix('-')) else {
            if f.action.is_some() {
                return Err(format!("unexpected argument {a:?}"));
            }
            f.action = Some(a);
            continue;
        };
        let (name, inline) = match flag.split_once('=') {
            Some((n, v)) => (n, Some(v.to_string())),
            None => (flag, None),
        };
        match name {
            "debug" | "v" | "version" => {
                let on = inline.as_deref().map_or(true, |v| v == "true" || v == "1");
                if name == "debug" {
                    f.debug = on;
                } else {
                    f.version = on;
                }
                continue;
            }
            _ => {}
        }
        let value = match inline {
            Some(v) => v,
            None => it
                .next()
                .ok_or_else(|| format!("flag -{name} needs a value"))?,
        };
        match name {
            "namespace" => f.namespace = value,
            "address" => f.address = value,
            "publish-binary" => f.publish_binary = value,
            "id" => f.id = value,
            "bundle" => f.bundle = Some(PathBuf::from(value)),
            "socket" => f.socket = Some(value),
            // Accepted and ignored: containerd passes these to some shims.
            "runtime-root" | "criu" | "systemd-cgroup" | "log" => {}
            _ => return Err(format!("flag provided but not defined: -{name}")),
        }
    }
    Ok(f)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(v: &[&str]) -> Flags {
        parse(v.iter().map(|s| s.to_string())).unwrap()
    }

    #[test]
    fn containerd_start_line() {
        let f = p(&[
            "-namespace",
            "default",
            "-address",
            "/run/containerd/containerd.sock",
            "-publish-binary",
            "/usr/bin/containerd",
            "-id",
            "c1",
            "-debug",
            "start",
        ]);
        assert_eq!(f.namespace, "default");
        assert_eq!(f.id, "c1");
        assert!(f.debug);
        assert_eq!(f.action.as_deref(), Some("start"));
    }

    #[test]
    fn inline_values_and_errors() {
        let f = p(&["--id=x", "-bundle=/b", "delete"]);
        assert_eq!(f.id, "x");
        assert_eq!(f.bundle.unwrap(), PathBuf::from("/b"));
        assert!(parse(["-nope".to_string(), "1".to_string()]).is_err());
        assert!(parse(["-id".to_string()]).is_err());
        assert!(parse(["start".to_string(), "again".to_string()]).is_err());
    }
}
