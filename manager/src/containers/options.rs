//! What a user asks of a container (`kura run` flags), shared by the CLI and kurad: the
//! CLI fills it, sends it as JSON, kurad turns it into an OCI spec (`spec.rs`).

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct RunOptions {
    /// Replaces the image's Cmd when not empty.
    pub cmd: Vec<String>,
    /// Some(v): replaces the image's Entrypoint and drops its Cmd (docker semantics).
    pub entrypoint: Option<Vec<String>>,
    /// KEY=VALUE, overriding the image's Env by key.
    pub env: Vec<String>,
    pub workdir: Option<String>,
    /// user | uid | user:group | uid:gid
    pub user: Option<String>,
    pub tty: bool,
    /// Keep stdin open (a FIFO the client writes).
    pub stdin: bool,
    /// A client reads the container's output through FIFOs (not `-d`).
    pub attach: bool,
    pub binds: Vec<Bind>,
    pub tmpfs: Vec<Tmpfs>,
    pub read_only: bool,
    pub memory: Option<i64>,
    pub cpus: Option<f64>,
    pub pids_limit: Option<i64>,
    pub cap_add: Vec<String>,
    pub cap_drop: Vec<String>,
    pub privileged: bool,
    pub security_opt: Vec<String>,
    pub hostname: Option<String>,
    pub network: Network,
    pub dns: Vec<String>,
    pub add_hosts: Vec<String>,
    /// `-p`: published ports (bridge networks).
    pub ports: Vec<PortMap>,
    /// `--ip`: a fixed address on the bridge network.
    pub ip: Option<String>,
    /// Remove the container when it exits (`--rm`); kurad does it even if the client is gone.
    pub auto_remove: bool,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Bind {
    pub source: String,
    pub destination: String,
    pub readonly: bool,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Tmpfs {
    pub destination: String,
    pub options: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "lowercase")]
pub enum Network {
    /// Its own network namespace with only `lo`.
    #[default]
    None,
    /// The host's network namespace.
    Host,
    /// Join this network namespace (a path).
    Netns(String),
    /// Attached to a kura network (CNI bridge) by name.
    Bridge(String),
    /// Share another container's network namespace (`container:ID`).
    Container(String),
}

impl Network {
    /// `none`, `host`, `container:ID`, a netns path, or a network's name (`bridge` is
    /// the default network, as docker and podman call it).
    pub fn parse(s: &str) -> Result<Network> {
        Ok(match s {
            "" | "none" => Network::None,
            "host" => Network::Host,
            p if p.starts_with('/') => Network::Netns(p.to_string()),
            c if c.starts_with("container:") => {
                let id = &c["container:".len()..];
                if id.is_empty() {
                    bail!("--network {c:?}: name the container (container:ID)");
                }
                Network::Container(id.to_string())
            }
            "bridge" => Network::Bridge(crate::network::DEFAULT.into()),
            n => {
                crate::network::check_name(n).with_context(|| format!("--network {n:?}"))?;
                Network::Bridge(n.to_string())
            }
        })
    }
}

/// A published port: `-p [IP:]HOST:CONTAINER[/tcp|udp]`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct PortMap {
    /// Empty: every address of the host.
    pub host_ip: String,
    pub host_port: u16,
    pub container_port: u16,
    pub protocol: String,
}

impl PortMap {
    pub fn parse(s: &str) -> Result<PortMap> {
        let (spec, proto) = s.split_once('/').unwrap_or((s, "tcp"));
        if !matches!(proto, "tcp" | "udp") {
            bail!("-p {s:?}: protocol {proto:?} is not tcp or udp");
        }
        // The host IP may itself hold colons only as IPv6, which kura networks lack.
        let parts: Vec<&str> = spec.split(':').collect();
        let (ip, host, cont) = match parts.as_slice() {
            [h, c] => ("", *h, *c),
            [i, h, c] => (*i, *h, *c),
            [_] => bail!("-p {s:?}: give the host port too (HOST:CONTAINER)"),
            _ => bail!("-p {s:?}: expected [IP:]HOST:CONTAINER[/tcp|udp]"),
        };
        if !ip.is_empty() {
            ip.parse::<std::net::Ipv4Addr>()
                .with_context(|| format!("-p {s:?}: {ip:?} is not an IPv4 address"))?;
        }
        let port = |p: &str, what: &str| -> Result<u16> {
            p.parse::<u16>()
                .ok()
                .filter(|n| *n > 0)
                .with_context(|| format!("-p {s:?}: the {what} port {p:?} is not 1..=65535"))
        };
        Ok(PortMap {
            host_ip: ip.into(),
            host_port: port(host, "host")?,
            container_port: port(cont, "container")?,
            protocol: proto.into(),
        })
    }

    /// `[IP:]PORT/PROTO` as the host sees it.
    pub fn host_side(&self) -> String {
        if self.host_ip.is_empty() {
            format!("{}/{}", self.host_port, self.protocol)
        } else {
            format!("{}:{}/{}", self.host_ip, self.host_port, self.protocol)
        }
    }

    /// Both would catch the same packets.
    pub fn clashes(&self, o: &PortMap) -> bool {
        self.host_port == o.host_port
            && self.protocol == o.protocol
            && (self.host_ip == o.host_ip || self.host_ip.is_empty() || o.host_ip.is_empty())
    }

    /// Nothing on the host listens there already (portmap's DNAT would hide it).
    pub fn check_free(&self) -> Result<()> {
        let ip = if self.host_ip.is_empty() {
            "0.0.0.0"
        } else {
            &self.host_ip
        };
        let addr = format!("{ip}:{}", self.host_port);
        let r = if self.protocol == "udp" {
            std::net::UdpSocket::bind(&addr).map(drop)
        } else {
            std::net::TcpListener::bind(&addr).map(drop)
        };
        r.with_context(|| format!("port {} is not free on the host", self.host_side()))
    }

    /// The CNI `portMappings` entry.
    pub fn cni(&self) -> serde_json::Value {
        let mut v = serde_json::json!({
            "hostPort": self.host_port,
            "containerPort": self.container_port,
            "protocol": self.protocol,
        });
        if !self.host_ip.is_empty() {
            v["hostIP"] = self.host_ip.clone().into();
        }
        v
    }
}

/// `-v SRC:DST[:ro|rw]`: SRC must be an absolute path that exists.
pub fn parse_bind(s: &str) -> Result<Bind> {
    let parts: Vec<&str> = s.split(':').collect();
    let (src, dst, mode) = match parts.as_slice() {
        [s, d] => (*s, *d, "rw"),
        [s, d, m] => (*s, *d, *m),
        _ => bail!("-v {s:?}: expected SRC:DST[:ro|rw]"),
    };
    if !src.starts_with('/') {
        bail!("-v {s:?}: the source {src:?} must be an absolute path (named volumes are not supported)");
    }
    if !dst.starts_with('/') {
        bail!("-v {s:?}: the destination {dst:?} must be an absolute path");
    }
    if !std::path::Path::new(src).exists() {
        bail!("-v {s:?}: the source {src} does not exist");
    }
    let readonly = match mode {
        "ro" => true,
        "rw" => false,
        m => bail!("-v {s:?}: unknown mode {m:?} (ro or rw)"),
    };
    Ok(Bind {
        source: src.into(),
        destination: dst.into(),
        readonly,
    })
}

/// `--mount type=bind,source=/a,target=/b[,readonly]` or `type=tmpfs,target=/t[,tmpfs-size=N]`.
pub fn parse_mount(s: &str, o: &mut RunOptions) -> Result<()> {
    let (mut typ, mut src, mut dst, mut ro, mut size) = ("volume", "", "", false, "");
    for kv in s.split(',') {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        match k {
            "type" => typ = v,
            "source" | "src" => src = v,
            "target" | "destination" | "dst" => dst = v,
            "readonly" | "ro" => ro = v.is_empty() || v == "true" || v == "1",
            "tmpfs-size" => size = v,
            _ => bail!("--mount {s:?}: unknown key {k:?}"),
        }
    }
    match typ {
        "bind" => {
            let mut b =
                parse_bind(&format!("{src}:{dst}")).with_context(|| format!("--mount {s:?}"))?;
            b.readonly = ro;
            o.binds.push(b);
        }
        "tmpfs" => {
            if !dst.starts_with('/') {
                bail!("--mount {s:?}: target must be an absolute path");
            }
            o.tmpfs.push(Tmpfs {
                destination: dst.into(),
                options: if size.is_empty() {
                    String::new()
                } else {
                    format!("size={size}")
                },
            });
        }
        t => bail!("--mount {s:?}: type {t:?} is not supported (bind or tmpfs)"),
    }
    Ok(())
}

/// `--memory 64m`: bytes, with b/k/m/g suffixes (powers of 1024, as docker).
pub fn parse_bytes(s: &str) -> Result<i64> {
    let l = s.trim().to_ascii_lowercase();
    let (num, mul) = match l.chars().last() {
        Some('b') => (&l[..l.len() - 1], 1),
        Some('k') => (&l[..l.len() - 1], 1 << 10),
        Some('m') => (&l[..l.len() - 1], 1 << 20),
        Some('g') => (&l[..l.len() - 1], 1 << 30),
        _ => (l.as_str(), 1),
    };
    let n: i64 = num
        .parse()
        .with_context(|| format!("{s:?} is not a size (like 512m or 1g)"))?;
    if n <= 0 {
        bail!("{s:?}: a size must be positive");
    }
    Ok(n * mul)
}

/// A restart policy: `no`, `always`, `on-failure[:N]`, `unless-stopped`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Restart {
    No,
    Always,
    OnFailure(Option<u32>),
    UnlessStopped,
}

impl Restart {
    pub fn parse(s: &str) -> Result<Restart> {
        Ok(match s {
            "" | "no" => Restart::No,
            "always" => Restart::Always,
            "unless-stopped" => Restart::UnlessStopped,
            "on-failure" => Restart::OnFailure(None),
            s if s.starts_with("on-failure:") => {
                let n = s["on-failure:".len()..]
                    .parse()
                    .with_context(|| format!("--restart {s:?}: bad retry count"))?;
                Restart::OnFailure(Some(n))
            }
            s => bail!("--restart {s:?}: expected no, always, on-failure[:N] or unless-stopped"),
        })
    }

    /// Whether a container that exited with `code`, after `restarts` restarts, and
    /// stopped by the user or not, starts again.
    pub fn applies(self, code: u32, restarts: u32, stopped_by_user: bool) -> bool {
        if stopped_by_user {
            return false;
        }
        match self {
            Restart::No => false,
            Restart::Always | Restart::UnlessStopped => true,
            Restart::OnFailure(max) => code != 0 && max.map_or(true, |m| restarts < m),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binds_and_sizes() {
        let b = parse_bind("/tmp:/data:ro").unwrap();
        assert!(b.readonly && b.destination == "/data");
        assert!(parse_bind("rel:/x")
            .unwrap_err()
            .to_string()
            .contains("absolute"));
        assert!(parse_bind("/nonexistent-kura:/x").is_err());
        assert!(parse_bind("/tmp:/x:zz").is_err());
        assert_eq!(parse_bytes("64m").unwrap(), 64 << 20);
        assert_eq!(parse_bytes("1G").unwrap(), 1 << 30);
        assert!(parse_bytes("lots").is_err());
    }

    #[test]
    fn restart_policies() {
        assert!(!Restart::parse("no").unwrap().applies(1, 0, false));
        assert!(Restart::parse("always").unwrap().applies(0, 9, false));
        assert!(!Restart::parse("always").unwrap().applies(0, 0, true));
        let f = Restart::parse("on-failure:2").unwrap();
        assert!(f.applies(1, 1, false) && !f.applies(1, 2, false) && !f.applies(0, 0, false));
        assert!(Restart::parse("sometimes").is_err());
    }

    #[test]
    fn ports_and_networks() {
        let p = PortMap::parse("127.0.0.1:8080:80/udp").unwrap();
        assert_eq!(
            (p.host_ip.as_str(), p.host_port, p.container_port),
            ("127.0.0.1", 8080, 80)
        );
        assert_eq!(p.protocol, "udp");
        let q = PortMap::parse("8080:80").unwrap();
        assert!(!q.clashes(&p));
        assert!(q.clashes(&PortMap::parse("127.0.0.1:8080:81").unwrap()));
        for bad in ["80", "0:80", "x:80", "1:2/sctp", "300.1.1.1:1:2", "1:2:3:4"] {
            assert!(PortMap::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(
            Network::parse("bridge").unwrap(),
            Network::Bridge("kura".into())
        );
        assert_eq!(
            Network::parse("container:web").unwrap(),
            Network::Container("web".into())
        );
        assert!(Network::parse("container:").is_err());
        assert!(Network::parse("no/slash").is_err());
    }
}
