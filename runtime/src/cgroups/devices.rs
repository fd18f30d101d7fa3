//! Device access rules: one normalized form shared by the v1 `devices` controller
//! and the v2 eBPF filter ([`super::devices_bpf`]).
//!
//! Semantics are v1's with a default deny: access starts closed, then the rules
//! apply in order and the last matching one decides. A rule allowing `a` (all
//! devices) with every access reopens everything, which is how a config asks for an
//! unrestricted container.

use std::path::Path;

use anyhow::Result;
use oci_spec::runtime::{LinuxDeviceCgroup, LinuxDeviceType};

use super::fsutil;

/// Access bits, numbered as the kernel's BPF_DEVCG_ACC_* so the filter can use
/// them directly.
pub(crate) const ACC_MKNOD: u8 = 1;
pub(crate) const ACC_READ: u8 = 2;
pub(crate) const ACC_WRITE: u8 = 4;
pub(crate) const ACC_ALL: u8 = ACC_MKNOD | ACC_READ | ACC_WRITE;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DevType {
    All,
    Block,
    Char,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Rule {
    pub allow: bool,
    pub typ: DevType,
    /// `None` matches any number.
    pub major: Option<u32>,
    pub minor: Option<u32>,
    pub access: u8,
}

impl Rule {
    /// Matches every device with every access: everything before it is moot.
    pub fn is_total(&self) -> bool {
        self.typ == DevType::All && self.access == ACC_ALL
    }

    /// The line v1's devices.allow / devices.deny parse: `c 1:3 rwm`, `a`.
    pub fn v1_line(&self) -> String {
        let t = match self.typ {
            // The kernel reads "a" as every device and access, whatever follows.
            DevType::All => return "a".to_string(),
            DevType::Block => 'b',
            DevType::Char => 'c',
        };
        let num = |n: Option<u32>| n.map_or("*".to_string(), |n| n.to_string());
        let mut acc = String::new();
        for (bit, c) in [(ACC_READ, 'r'), (ACC_WRITE, 'w'), (ACC_MKNOD, 'm')] {
            if self.access & bit != 0 {
                acc.push(c);
            }
        }
        format!("{t} {}:{} {acc}", num(self.major), num(self.minor))
    }
}

/// OCI rules in normalized form. Validation has already refused unknown access
/// letters. An unset or empty access means all three, as crun reads it; "u"
/// (unbuffered char) is a char device to the kernel; "p" (FIFO) rules are
/// dropped as runc drops them, since no cgroup controls FIFOs.
pub(crate) fn rules(list: &[LinuxDeviceCgroup]) -> Vec<Rule> {
    list.iter()
        .filter_map(|d| {
            let typ = match d.typ() {
                None | Some(LinuxDeviceType::A) => DevType::All,
                Some(LinuxDeviceType::B) => DevType::Block,
                Some(LinuxDeviceType::C | LinuxDeviceType::U) => DevType::Char,
                Some(LinuxDeviceType::P) => return None,
            };
            let num = |n: Option<i64>| n.filter(|n| *n >= 0).map(|n| n as u32);
            let mut access = 0;
            for c in d.access().as_deref().unwrap_or("").chars() {
                access |= match c {
                    'r' => ACC_READ,
                    'w' => ACC_WRITE,
                    'm' => ACC_MKNOD,
                    _ => 0,
                };
            }
            if access == 0 {
                access = ACC_ALL;
            }
            let all = typ == DevType::All;
            Some(Rule {
                allow: d.allow(),
                typ,
                major: if all { None } else { num(d.major()) },
                minor: if all { None } else { num(d.minor()) },
                access,
            })
        })
        .collect()
}

/// v1: close everything, then replay the rules in order.
pub(crate) fn apply_v1(dir: &Path, rules: &[Rule]) -> Result<()> {
    fsutil::set(dir, "devices.deny", "a", "linux.resources.devices")?;
    for r in rules {
        let file = if r.allow {
            "devices.allow"
        } else {
            "devices.deny"
        };
        fsutil::set(dir, file, &r.v1_line(), "linux.resources.devices")?;
    }
    Ok(())
}

/// The devices every container gets on top of its config's rules, as runc adds
/// them in its spec conversion: mknod of any node, and the standard /dev nodes a
/// runtime creates (null, zero, full, random, urandom, tty, console, ptmx, pts).
/// The cgroup module never adds them itself, so a config (or a test) can still
/// deny one; the caller appends them after the config's rules.
pub fn default_allowed_devices() -> Vec<LinuxDeviceCgroup> {
    let rule = |typ, major: Option<i64>, minor: Option<i64>, access: &str| {
        let mut d = LinuxDeviceCgroup::default();
        d.set_allow(true)
            .set_typ(Some(typ))
            .set_major(major)
            .set_minor(minor)
            .set_access(Some(access.to_string()));
        d
    };
    use LinuxDeviceType::{B, C};
    vec![
        rule(C, None, None, "m"),
        rule(B, None, None, "m"),
        rule(C, Some(1), Some(3), "rwm"),
        rule(C, Some(1), Some(5), "rwm"),
        rule(C, Some(1), Some(7), "rwm"),
        rule(C, Some(1), Some(8), "rwm"),
        rule(C, Some(1), Some(9), "rwm"),
        rule(C, Some(5), Some(0), "rwm"),
        rule(C, Some(5), Some(1), "rwm"),
        rule(C, Some(5), Some(2), "rwm"),
        rule(C, Some(136), None, "rwm"),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_and_formats_v1_lines() {
        let list: Vec<LinuxDeviceCgroup> = serde_json::from_str(
            r#"[{"allow":false,"access":"rwm"},
                {"allow":true,"type":"c","major":1,"minor":3,"access":"rw"},
                {"allow":true,"type":"b","major":8,"access":"m"},
                {"allow":true,"type":"u","major":4,"minor":-1},
                {"allow":true,"type":"p","major":0,"minor":0},
                {"allow":true,"type":"a","major":1,"minor":2,"access":"r"}]"#,
        )
        .unwrap();
        let r = rules(&list);
        let lines: Vec<String> = r.iter().map(Rule::v1_line).collect();
        assert_eq!(lines, vec!["a", "c 1:3 rw", "b 8:* m", "c 4:* rwm", "a"]);
        assert!(r[0].is_total() && !r[0].allow);
        assert!(!r[4].is_total());
        assert_eq!(r[4].major, None);
    }

    #[test]
    fn defaults_cover_dev_null_and_pts() {
        let r = rules(&default_allowed_devices());
        assert!(r.iter().any(|r| r.v1_line() == "c 1:3 rwm"));
        assert!(r.iter().any(|r| r.v1_line() == "c 136:* rwm"));
        assert!(r.iter().all(|r| r.allow));
    }
}
