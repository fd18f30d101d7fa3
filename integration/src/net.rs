//! Helpers for the networking tests: unique subnets, what the host holds (veths,
//! iptables rules, IP leases), a plain HTTP GET.

use std::io::{Read, Write};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// A /24 no other test of this run uses (tests of one binary run in parallel; the
/// binaries one after another).
pub fn unique_subnet() -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    format!("10.{}.{}.0/24", 150 + std::process::id() % 100, n % 256)
}

/// The network's name for a test: short, unique.
pub fn unique_net(prefix: &str) -> String {
    crate::unique_id(prefix)
}

pub fn veths() -> usize {
    let o = Command::new("ip")
        .args(["-o", "link", "show", "type", "veth"])
        .output()
        .expect("ip link");
    String::from_utf8_lossy(&o.stdout).lines().count()
}

/// Every iptables rule and chain line (nat and filter), sorted.
pub fn iptables_rules() -> Vec<String> {
    let o = Command::new("iptables-save")
        .output()
        .expect("iptables-save");
    let mut v: Vec<String> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter(|l| !l.starts_with('#') && !l.starts_with('*') && l.trim() != "COMMIT")
        // Chain lines carry packet counters.
        .map(|l| l.split(" [").next().unwrap_or(l).to_string())
        .collect();
    v.sort();
    v
}

/// The IP leases host-local holds for a network.
pub fn leases(network: &str) -> Vec<String> {
    let d = Path::new("/var/lib/cni/networks").join(network);
    let mut v: Vec<String> = std::fs::read_dir(d)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().to_string())
                .filter(|n| n != "lock" && !n.starts_with("last_reserved_ip"))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

pub fn link_exists(name: &str) -> bool {
    Path::new("/sys/class/net").join(name).exists()
}

/// `GET path` on addr, the body; retried until `timeout` (the server may be starting).
pub fn http_get(addr: &str, path: &str, timeout: Duration) -> Result<String, String> {
    let end = Instant::now() + timeout;
    loop {
        let r = (|| -> std::io::Result<String> {
            let mut s = std::net::TcpStream::connect_timeout(
                &addr.parse().unwrap(),
                Duration::from_secs(2),
            )?;
            s.set_read_timeout(Some(Duration::from_secs(5)))?;
            write!(s, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n")?;
            let mut b = String::new();
            s.read_to_string(&mut b)?;
            Ok(b)
        })();
        match r {
            Ok(b) if b.starts_with("HTTP/1.") => {
                return Ok(b.split("\r\n\r\n").nth(1).unwrap_or("").to_string())
            }
            Ok(b) if Instant::now() >= end => return Err(format!("bad answer: {b:?}")),
            Err(e) if Instant::now() >= end => return Err(e.to_string()),
            _ => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

/// Why networking tests cannot run here, if they cannot.
pub fn missing_network_tools() -> Option<String> {
    for p in [
        "/usr/lib/cni/bridge",
        "/usr/lib/cni/portmap",
        "/usr/lib/cni/firewall",
    ] {
        if !Path::new(p).exists() {
            return Some(format!(
                "{p} missing (apt-get install containernetworking-plugins)"
            ));
        }
    }
    for t in ["iptables-save", "ip"] {
        if crate::shim::which(t).is_none() {
            return Some(format!("{t} missing (apt-get install iptables iproute2)"));
        }
    }
    None
}

/// Interface names in /proc/net/dev text, without the ones other tests make and
/// remove while this one runs (veths, kura's bridges).
pub fn stable_interfaces(proc_net_dev: &str) -> Vec<String> {
    let mut v: Vec<String> = proc_net_dev
        .lines()
        .filter_map(|l| l.split_once(':').map(|(n, _)| n.trim().to_string()))
        .filter(|n| !n.starts_with("veth") && !n.starts_with("kbr-") && !n.starts_with("kura"))
        .filter(|n| !n.contains('|'))
        .collect();
    v.sort();
    v
}
