//! IPv4 subnets: parsing, containment, overlap (kura networks are IPv4 for now).

use anyhow::{bail, Context, Result};
use std::net::Ipv4Addr;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    pub addr: Ipv4Addr,
    pub prefix: u8,
}

impl Cidr {
    pub fn parse(s: &str) -> Result<Cidr> {
        let (a, p) = s.split_once('/').with_context(|| {
            format!("subnet {s:?}: expected ADDRESS/PREFIX (like 10.89.0.0/24)")
        })?;
        let addr: Ipv4Addr = a
            .parse()
            .with_context(|| format!("subnet {s:?}: {a:?} is not an IPv4 address"))?;
        let prefix: u8 = p
            .parse()
            .ok()
            .filter(|p| *p <= 30)
            .with_context(|| format!("subnet {s:?}: the prefix must be 0..=30"))?;
        let c = Cidr { addr, prefix };
        if c.network() != addr {
            bail!(
                "subnet {s:?}: host bits are set (the network is {}/{prefix})",
                c.network()
            );
        }
        Ok(c)
    }

    fn mask(&self) -> u32 {
        if self.prefix == 0 {
            0
        } else {
            u32::MAX << (32 - self.prefix)
        }
    }

    pub fn network(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr) & self.mask())
    }

    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & self.mask() == u32::from(self.network())
    }

    pub fn overlaps(&self, o: &Cidr) -> bool {
        self.contains(o.network()) || o.contains(self.network())
    }

    /// The first address after the network's own: the usual gateway.
    pub fn first_host(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network()) + 1)
    }

    /// Whether `ip` may be given to a host: inside, not the network or broadcast address.
    pub fn is_host(&self, ip: Ipv4Addr) -> bool {
        let n = u32::from(self.network());
        let b = n | !self.mask();
        self.contains(ip) && u32::from(ip) != n && u32::from(ip) != b
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_contain_overlap() {
        let a = Cidr::parse("10.88.0.0/16").unwrap();
        let b = Cidr::parse("10.88.5.0/24").unwrap();
        let c = Cidr::parse("10.89.0.0/24").unwrap();
        assert!(a.overlaps(&b) && b.overlaps(&a) && !a.overlaps(&c));
        assert_eq!(a.first_host().to_string(), "10.88.0.1");
        assert!(a.is_host("10.88.3.4".parse().unwrap()));
        assert!(!b.is_host("10.88.5.255".parse().unwrap()));
        assert!(Cidr::parse("10.88.0.1/16")
            .unwrap_err()
            .to_string()
            .contains("host bits"));
        assert!(Cidr::parse("10.88.0.0").is_err());
        assert!(Cidr::parse("10.88.0.0/31").is_err());
        assert!(Cidr::parse("fe80::/64").is_err());
    }
}
