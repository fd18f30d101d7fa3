//! Container networks through CNI: kurad owns each container's network namespace for
//! as long as its task runs, and attaches it to a network with the standard plugins
//! (bridge + host-local, portmap, firewall; loopback).
//!
//! A network is a CNI network list in `<root>/networks/<name>.conflist` (the default
//! `kura`, bridge `kura0` on 10.88.0.0/16, is written when absent). Each attachment is
//! recorded in `<state>/networks/<ns>/<id>.json` *before* the first plugin runs and
//! removed only after DEL succeeded, so a crash at any point leaves a record that the
//! next `detach` (container removal, kurad's start-up sweep) can undo: the veth, the
//! iptables rules, the IP lease. Netns files are `<state>/netns/<ns>/<id>`.
//!
//! Names on user networks resolve through `/etc/hosts`: kurad rewrites each member's
//! hosts file (the bundle's, bind-mounted, written in place) when one joins or leaves.

pub mod cidr;
pub mod cni;
pub mod netns;

use crate::containers::options::{Network, PortMap, RunOptions};
use anyhow::{bail, Context, Result};
use cidr::Cidr;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// The default network's name, bridge and subnet.
pub const DEFAULT: &str = "kura";
const DEFAULT_BRIDGE: &str = "kura0";
const DEFAULT_SUBNET: &str = "10.88.0.0/16";
const IFNAME: &str = "eth0";

/// A network as `kura network ls/inspect` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct NetInfo {
    pub name: String,
    pub driver: String,
    pub bridge: String,
    pub subnet: String,
    pub gateway: String,
    pub config_path: PathBuf,
}

/// One container's place on a network (or its own netns with only `lo`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Attachment {
    pub ns: String,
    pub id: String,
    /// Empty: `--network none`.
    pub network: String,
    /// CNI_CONTAINERID: unique per attachment, so that two kurads (or a container
    /// re-created under the same name) never release each other's leases.
    pub cni_id: String,
    pub netns: PathBuf,
    pub ports: Vec<PortMap>,
    /// Asked for (`--ip`) before ADD, the one given after.
    pub ip: String,
    pub gateway: String,
    pub mac: String,
    pub hostname: String,
    pub hosts_file: PathBuf,
    /// The list ADD ran with: DEL must see the same.
    pub conflist: Value,
    /// ADD's result; null until ADD succeeded.
    pub result: Value,
    /// The task is gone and DEL is under way (or failed and waits for a retry).
    pub releasing: bool,
}

pub struct Networks {
    conf_dir: PathBuf,
    attach_dir: PathBuf,
    netns_dir: PathBuf,
    pub cni: cni::Plugins,
    /// Port and address reservations, hosts files.
    lock: Mutex<()>,
    /// Releases running in the background: a clean shutdown waits for them, or the
    /// leases and rules of containers removed just before would wait for the next start.
    releasing: std::sync::atomic::AtomicUsize,
}

pub fn check_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if !ok {
        bail!("invalid network name {name:?}: [a-zA-Z0-9][a-zA-Z0-9_.-]*, at most 64 characters");
    }
    if matches!(name, "none" | "host" | "bridge" | "default") {
        bail!("network name {name:?} is reserved");
    }
    Ok(())
}

fn bridge_name(name: &str) -> String {
    if name == DEFAULT {
        DEFAULT_BRIDGE.into()
    } else {
        // Interface names have 15 characters at most.
        let h = crate::content::sha256_digest(name.as_bytes());
        format!("kbr-{}", &h[7..17])
    }
}

fn conflist(name: &str, bridge: &str, subnet: &Cidr, gateway: Ipv4Addr) -> Value {
    json!({
        "cniVersion": "1.0.0",
        "name": name,
        "plugins": [
            {
                "type": "bridge",
                "bridge": bridge,
                "isGateway": true,
                "ipMasq": true,
                "hairpinMode": true,
                "capabilities": {"ips": true},
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": subnet.to_string(), "gateway": gateway.to_string()}]],
                    "routes": [{"dst": "0.0.0.0/0"}]
                }
            },
            {"type": "portmap", "capabilities": {"portMappings": true}},
            {"type": "firewall", "backend": "iptables"}
        ]
    })
}

fn info(list: &Value, path: &Path) -> NetInfo {
    let br = list["plugins"]
        .as_array()
        .and_then(|a| a.iter().find(|p| p["type"] == "bridge"));
    let range = br.map(|b| &b["ipam"]["ranges"][0][0]);
    let s = |v: Option<&Value>| v.and_then(|v| v.as_str()).unwrap_or("").to_string();
    NetInfo {
        name: s(Some(&list["name"])),
        driver: if br.is_some() { "bridge" } else { "cni" }.into(),
        bridge: s(br.map(|b| &b["bridge"])),
        subnet: s(range.map(|r| &r["subnet"])),
        gateway: s(range.map(|r| &r["gateway"])),
        config_path: path.to_path_buf(),
    }
}

impl Networks {
    pub fn open(root: &Path, state: &Path, cni_dirs: Vec<PathBuf>) -> Result<Networks> {
        let n = Networks {
            conf_dir: root.join("networks"),
            attach_dir: state.join("networks"),
            netns_dir: state.join("netns"),
            cni: cni::Plugins { dirs: cni_dirs },
            lock: Mutex::new(()),
            releasing: Default::default(),
        };
        std::fs::create_dir_all(&n.conf_dir)
            .with_context(|| format!("create {}", n.conf_dir.display()))?;
        let p = n.conf_path(DEFAULT);
        if !p.exists() {
            let s = Cidr::parse(DEFAULT_SUBNET)?;
            write_atomic(&p, &conflist(DEFAULT, DEFAULT_BRIDGE, &s, s.first_host()))?;
        }
        Ok(n)
    }

    fn conf_path(&self, name: &str) -> PathBuf {
        self.conf_dir.join(format!("{name}.conflist"))
    }

    pub fn netns_path(&self, ns: &str, id: &str) -> PathBuf {
        self.netns_dir.join(ns).join(id)
    }

    fn attachment_path(&self, ns: &str, id: &str) -> PathBuf {
        self.attach_dir.join(ns).join(format!("{id}.json"))
    }

    /// A network's list and what it says, or a clear "not found".
    pub fn load(&self, name: &str) -> Result<(Value, NetInfo)> {
        let name = if name == "bridge" { DEFAULT } else { name };
        let p = self.conf_path(name);
        let raw = match std::fs::read(&p) {
            Ok(r) => r,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                bail!("network {name:?} not found (see kura network ls)")
            }
            Err(e) => return Err(e).with_context(|| format!("read {}", p.display())),
        };
        let list: Value =
            serde_json::from_slice(&raw).with_context(|| format!("parse {}", p.display()))?;
        let i = info(&list, &p);
        Ok((list, i))
    }

    pub fn list(&self) -> Result<Vec<NetInfo>> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(&self.conf_dir)?.flatten() {
            let n = e.file_name().to_string_lossy().to_string();
            if let Some(name) = n.strip_suffix(".conflist") {
                if let Ok((_, i)) = self.load(name) {
                    out.push(i);
                }
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// `kura network create`: a bridge network on `subnet` (or the first free /24 of
    /// 10.89.0.0/16), refused if it overlaps another network or an address of the host.
    pub fn create(&self, name: &str, subnet: &str, gateway: &str) -> Result<NetInfo> {
        check_name(name)?;
        let _g = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        let p = self.conf_path(name);
        if p.exists() {
            bail!("network {name:?} already exists");
        }
        let taken: Vec<(String, Cidr)> = self
            .list()?
            .into_iter()
            .filter_map(|i| Cidr::parse(&i.subnet).ok().map(|c| (i.name, c)))
            .collect();
        let host = host_addresses();
        let clash = |c: &Cidr| -> Option<String> {
            if let Some((n, s)) = taken.iter().find(|(_, s)| s.overlaps(c)) {
                return Some(format!("network {n:?} ({s})"));
            }
            host.iter()
                .find(|(_, a)| c.contains(*a))
                .map(|(i, a)| format!("the host's address {a} on {i}"))
        };
        let subnet = if subnet.is_empty() {
            (0..=255u32)
                .map(|i| Cidr {
                    addr: Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 89, 0, 0)) + (i << 8)),
                    prefix: 24,
                })
                .find(|c| clash(c).is_none())
                .context("no free /24 left in 10.89.0.0/16: give --subnet")?
        } else {
            let c = Cidr::parse(subnet)?;
            if let Some(w) = clash(&c) {
                bail!("subnet {c} overlaps {w}");
            }
            c
        };
        let gw = if gateway.is_empty() {
            subnet.first_host()
        } else {
            let g: Ipv4Addr = gateway
                .parse()
                .with_context(|| format!("gateway {gateway:?} is not an IPv4 address"))?;
            if !subnet.is_host(g) {
                bail!("gateway {g} is not a host address of subnet {subnet}");
            }
            g
        };
        let bridge = bridge_name(name);
        let list = conflist(name, &bridge, &subnet, gw);
        write_atomic(&p, &list)?;
        Ok(info(&list, &p))
    }

    /// `kura network rm`: refused while containers are attached; the bridge goes too.
    pub fn remove(&self, name: &str) -> Result<()> {
        if name == DEFAULT || name == "bridge" {
            bail!("the default network {DEFAULT:?} cannot be removed");
        }
        let _g = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        let (_, i) = self.load(name)?;
        let attached: Vec<Attachment> = self
            .attachments()
            .into_iter()
            .filter(|a| a.network == name)
            .collect();
        let users: Vec<String> = attached
            .iter()
            .filter(|a| !a.releasing)
            .map(|a| a.id.clone())
            .collect();
        if !users.is_empty() {
            bail!(
                "network {name:?} has containers attached: {} (stop or remove them first)",
                users.join(", ")
            );
        }
        drop(_g);
        for a in &attached {
            self.wait_released(a)?;
        }
        std::fs::remove_file(&i.config_path)?;
        if !i.bridge.is_empty() && Path::new("/sys/class/net").join(&i.bridge).exists() {
            let st = std::process::Command::new("ip")
                .args(["link", "delete", &i.bridge])
                .status();
            if !matches!(st, Ok(s) if s.success()) {
                tracing::warn!(bridge = i.bridge, "could not delete the bridge");
            }
        }
        let _ = std::fs::remove_dir_all(Path::new("/var/lib/cni/networks").join(name));
        Ok(())
    }

    pub fn attachments(&self) -> Vec<Attachment> {
        let mut out = Vec::new();
        let Ok(nss) = std::fs::read_dir(&self.attach_dir) else {
            return out;
        };
        for d in nss.flatten() {
            let Ok(files) = std::fs::read_dir(d.path()) else {
                continue;
            };
            for f in files.flatten() {
                if let Some(a) = std::fs::read(f.path())
                    .ok()
                    .and_then(|r| serde_json::from_slice::<Attachment>(&r).ok())
                {
                    out.push(a);
                }
            }
        }
        out
    }

    pub fn attachment(&self, ns: &str, id: &str) -> Option<Attachment> {
        std::fs::read(self.attachment_path(ns, id))
            .ok()
            .and_then(|r| serde_json::from_slice(&r).ok())
    }

    fn save(&self, a: &Attachment) -> Result<()> {
        write_atomic(&self.attachment_path(&a.ns, &a.id), a)
    }

    /// Checks a container's network options against the networks that exist, before
    /// anything is made (create time): unknown network, a missing plugin, a bad `--ip`.
    pub fn validate(&self, o: &RunOptions) -> Result<()> {
        match &o.network {
            Network::Bridge(name) => {
                let (list, i) = self.load(name)?;
                self.cni.check_present(&list)?;
                self.cni.check_present(&cni::loopback_list())?;
                if let Some(ip) = &o.ip {
                    let a: Ipv4Addr = ip
                        .parse()
                        .with_context(|| format!("--ip {ip:?} is not an IPv4 address"))?;
                    let s = Cidr::parse(&i.subnet)?;
                    if !s.is_host(a) || i.gateway == a.to_string() {
                        bail!(
                            "--ip {a} is not a free host address of network {:?} ({s}, gateway {})",
                            i.name,
                            i.gateway
                        );
                    }
                }
            }
            _ if !o.ports.is_empty() => {
                bail!("-p needs a bridge network (not --network none, host or container:)")
            }
            _ if o.ip.is_some() => bail!("--ip needs a bridge network"),
            _ => {}
        }
        Ok(())
    }

    /// Task start, first part: the address and ports reserved (recorded). None for host
    /// and `container:` networks. Fails (nothing left) on a port or address in use.
    pub fn reserve(
        &self,
        ns: &str,
        id: &str,
        o: &RunOptions,
        etc: &Path,
    ) -> Result<Option<Attachment>> {
        let name = match &o.network {
            Network::None => String::new(),
            Network::Bridge(n) => n.clone(),
            _ => return Ok(None),
        };
        // The last run's attachment: wait for its release, or undo what a crash left.
        match self.attachment(ns, id) {
            Some(a) if a.releasing => self.wait_released(&a)?,
            Some(_) => self.detach(ns, id)?,
            None => {}
        }
        let mut a = Attachment {
            ns: ns.into(),
            id: id.into(),
            network: name.clone(),
            cni_id: format!("kura-{ns}-{id}-{:08x}", rand::random::<u32>()),
            netns: self.netns_path(ns, id),
            ports: o.ports.clone(),
            ip: o.ip.clone().unwrap_or_default(),
            hostname: std::fs::read_to_string(etc.join("hostname"))
                .unwrap_or_default()
                .trim()
                .to_string(),
            hosts_file: etc.join("hosts"),
            ..Default::default()
        };
        if !name.is_empty() {
            a.conflist = self.load(&name)?.0;
            self.cni.check_present(&a.conflist)?;
            self.cni.check_present(&cni::loopback_list())?;
        }
        // Ports and the address are checked and recorded under one lock. One held by a
        // container whose release is under way is waited for.
        loop {
            let g = self.lock.lock().unwrap_or_else(|e| e.into_inner());
            let others = self.attachments();
            let mut busy = None;
            for p in &a.ports {
                if let Some(o) = others.iter().find(|o| o.ports.iter().any(|q| q.clashes(p))) {
                    if !o.releasing {
                        bail!(
                            "port {} is already published by container {}",
                            p.host_side(),
                            o.id
                        );
                    }
                    busy = Some(o.clone());
                }
            }
            if !a.ip.is_empty() {
                if let Some(o) = others.iter().find(|o| o.network == name && o.ip == a.ip) {
                    if !o.releasing {
                        bail!("--ip {}: the address is taken by container {}", a.ip, o.id);
                    }
                    busy = Some(o.clone());
                }
            }
            if let Some(o) = busy {
                drop(g);
                self.wait_released(&o)?;
                continue;
            }
            for p in &a.ports {
                p.check_free()?;
            }
            self.save(&a)?;
            break;
        }
        Ok(Some(a))
    }

    /// Task start, second part: the attachment's network namespace, for the runtime to
    /// create the container in. On failure the reservation is undone.
    pub fn make_netns(&self, a: &Attachment) -> Result<()> {
        netns::create(&a.netns).inspect_err(|_| {
            let _ = self.detach(&a.ns, &a.id);
        })
    }

    /// Task start, last part: the plugins' ADD (may run while the runtime creates the
    /// container; it must be done before the process starts). On failure it is undone.
    pub fn add(&self, mut a: Attachment) -> Result<()> {
        let (ns, id) = (a.ns.clone(), a.id.clone());
        if let Err(e) = self.add_plugins(&mut a) {
            if let Err(d) = self.detach(&ns, &id) {
                tracing::warn!(ns, id, "undo after a failed network setup: {d:#}");
            }
            return Err(e);
        }
        Ok(())
    }

    /// Both halves at once.
    pub fn attach(&self, ns: &str, id: &str, o: &RunOptions, etc: &Path) -> Result<()> {
        match self.reserve(ns, id, o, etc)? {
            Some(a) => {
                self.make_netns(&a)?;
                self.add(a)
            }
            None => Ok(()),
        }
    }

    /// Until an attachment being released is gone (bounded: a DEL that keeps failing
    /// leaves its record, and whoever waits gets an error naming it).
    fn wait_released(&self, a: &Attachment) -> Result<()> {
        let end = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while self
            .attachment(&a.ns, &a.id)
            .is_some_and(|x| x.cni_id == a.cni_id)
        {
            if std::time::Instant::now() >= end {
                bail!(
                    "container {}'s network {:?} is still being released",
                    a.id,
                    a.network
                );
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        Ok(())
    }

    /// The task is gone: the attachment stops counting (hosts files rewritten, not
    /// shown) and its DEL may run later (`detach`); its ports and address stay reserved
    /// until then, and a start that needs them waits. False if there is none or its
    /// release was already asked for (one DEL at a time).
    pub fn mark_releasing(&self, ns: &str, id: &str) -> bool {
        let _g = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        let Some(mut a) = self.attachment(ns, id) else {
            return false;
        };
        if a.releasing {
            return false;
        }
        a.releasing = true;
        if self.save(&a).is_ok() && !a.network.is_empty() {
            let _ = self.write_hosts(&a.network);
        }
        true
    }

    fn add_plugins(&self, a: &mut Attachment) -> Result<()> {
        if a.network.is_empty() {
            return Ok(());
        }
        let netns = a.netns.display().to_string();
        let t = cni::Target {
            container_id: &a.cni_id,
            netns: &netns,
            ifname: IFNAME,
        };
        // Two networks of one container: independent, so side by side.
        let rc = runtime_config(a);
        let (lo, result) = std::thread::scope(|sc| {
            let lo = sc.spawn(|| {
                self.cni.add(
                    &cni::loopback_list(),
                    &Value::Null,
                    &cni::Target { ifname: "lo", ..t },
                )
            });
            let r = self.cni.add(&a.conflist, &rc, &t);
            (lo.join(), r)
        });
        let result = result?;
        lo.unwrap_or_else(|_| Err(anyhow::anyhow!("loopback setup panicked")))?;
        let (ip, gw) = cni::result_ipv4(&result).with_context(|| {
            format!("network {:?}: the plugins gave no IPv4 address", a.network)
        })?;
        a.mac = result["interfaces"]
            .as_array()
            .and_then(|l| l.iter().find(|i| i["sandbox"].is_string()))
            .and_then(|i| i["mac"].as_str())
            .unwrap_or("")
            .to_string();
        a.ip = ip;
        a.gateway = gw;
        a.result = result;
        let _g = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        self.save(a)?;
        self.write_hosts(&a.network)?;
        Ok(())
    }

    /// Undoes `attach`: CNI DEL (IP released, veth and rules gone), the netns unbound,
    /// the record removed. A record whose DEL fails stays for the next try.
    pub fn detach(&self, ns: &str, id: &str) -> Result<()> {
        let Some(a) = self.attachment(ns, id) else {
            return Ok(());
        };
        let mut res = Ok(());
        if !a.network.is_empty() {
            let netns = if a.netns.exists() {
                a.netns.display().to_string()
            } else {
                String::new()
            };
            let t = cni::Target {
                container_id: &a.cni_id,
                netns: &netns,
                ifname: IFNAME,
            };
            let prev = (!a.result.is_null()).then_some(&a.result);
            res = self.cni.del(&a.conflist, &runtime_config(&a), prev, &t);
            let _ = self.cni.del(
                &cni::loopback_list(),
                &Value::Null,
                None,
                &cni::Target { ifname: "lo", ..t },
            );
        }
        netns::remove(&a.netns);
        if let Err(e) = res {
            return Err(e)
                .with_context(|| format!("network {:?}: releasing container {id}", a.network));
        }
        let _g = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        std::fs::remove_file(self.attachment_path(ns, id))?;
        if !a.network.is_empty() {
            self.write_hosts(&a.network)?;
        }
        Ok(())
    }

    /// `detach` on a thread of its own; counted until done.
    pub fn detach_in_background(self: &std::sync::Arc<Self>, ns: &str, id: &str) {
        use std::sync::atomic::Ordering;
        self.releasing.fetch_add(1, Ordering::SeqCst);
        let me = self.clone();
        let (ns, id) = (ns.to_string(), id.to_string());
        std::thread::spawn(move || {
            if let Err(e) = me.detach(&ns, &id) {
                tracing::warn!(ns, id, "{e:#}");
            }
            me.releasing.fetch_sub(1, Ordering::SeqCst);
        });
    }

    /// Until the background releases are done (kurad's clean shutdown), at most `limit`.
    pub fn wait_releases(&self, limit: std::time::Duration) {
        let end = std::time::Instant::now() + limit;
        while self.releasing.load(std::sync::atomic::Ordering::SeqCst) > 0
            && std::time::Instant::now() < end
        {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }

    /// CNI CHECK of a running container's attachment.
    pub fn check(&self, ns: &str, id: &str) -> Result<()> {
        let a = self
            .attachment(ns, id)
            .with_context(|| format!("container {id} has no network attachment"))?;
        if a.network.is_empty() {
            return Ok(());
        }
        let netns = a.netns.display().to_string();
        self.cni.check(
            &a.conflist,
            &runtime_config(&a),
            &a.result,
            &cni::Target {
                container_id: &a.cni_id,
                netns: &netns,
                ifname: IFNAME,
            },
        )
    }

    /// Every member's /etc/hosts: its own address, and on a user network the others'.
    /// Called with `lock` held.
    fn write_hosts(&self, network: &str) -> Result<()> {
        let members: Vec<Attachment> = self
            .attachments()
            .into_iter()
            .filter(|a| a.network == network && !a.result.is_null() && !a.releasing)
            .collect();
        for a in &members {
            let base_path = a.hosts_file.with_file_name("hosts.base");
            let base = match std::fs::read_to_string(&base_path) {
                Ok(b) => b,
                Err(_) => {
                    let b = std::fs::read_to_string(&a.hosts_file).unwrap_or_default();
                    std::fs::write(&base_path, &b)?;
                    b
                }
            };
            let mut s = base;
            s.push_str(&hosts_line(&a.ip, &a.hostname, &a.id));
            if network != DEFAULT {
                for p in members.iter().filter(|p| p.id != a.id || p.ns != a.ns) {
                    s.push_str(&hosts_line(&p.ip, &p.hostname, &p.id));
                }
            }
            // In place: the file is bind-mounted into the container.
            if a.hosts_file.exists() {
                std::fs::write(&a.hosts_file, s)?;
            }
        }
        Ok(())
    }
}

fn hosts_line(ip: &str, hostname: &str, id: &str) -> String {
    if hostname.is_empty() || hostname == id {
        format!("{ip}\t{id}\n")
    } else {
        format!("{ip}\t{id} {hostname}\n")
    }
}

fn runtime_config(a: &Attachment) -> Value {
    let mut rc = json!({});
    if !a.ports.is_empty() {
        rc["portMappings"] = Value::Array(a.ports.iter().map(PortMap::cni).collect());
    }
    // Only a requested address goes to IPAM (an assigned one is in `result`).
    if a.result.is_null() && !a.ip.is_empty() {
        rc["ips"] = json!([a.ip]);
    }
    rc
}

/// The host's IPv4 addresses, by interface.
fn host_addresses() -> Vec<(String, Ipv4Addr)> {
    let Ok(addrs) = nix::ifaddrs::getifaddrs() else {
        return vec![];
    };
    addrs
        .filter_map(|i| {
            let a = i.address?;
            let s = a.as_sockaddr_in()?;
            Some((i.interface_name, s.ip()))
        })
        .collect()
}

fn write_atomic(p: &Path, v: &impl Serialize) -> Result<()> {
    if let Some(d) = p.parent() {
        std::fs::create_dir_all(d)?;
    }
    let tmp = p.with_extension(format!("tmp-{:08x}", rand::random::<u32>()));
    std::fs::write(&tmp, serde_json::to_vec_pretty(v)?)
        .with_context(|| format!("write {}", tmp.display()))?;
    std::fs::rename(&tmp, p).with_context(|| format!("write {}", p.display()))
}
