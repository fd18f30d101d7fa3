//! Mount options as runc accepts them: classic MS_* flags, propagation, recursive
//! attributes (`rro`, `rnosuid`…, applied with mount_setattr), idmap extensions,
//! and everything else passed to the filesystem as its data string.

use anyhow::{bail, Result};
use libc::c_ulong;

use crate::sys::*;

#[derive(Default, Debug, Clone)]
pub struct Options {
    /// MS_* flags for mount(2) (bind and rec are tracked separately).
    pub flags: c_ulong,
    pub bind: bool,
    pub recursive: bool,
    /// Propagation changes in the order given (MS_SHARED, MS_PRIVATE|MS_REC, …).
    pub propagation: Vec<c_ulong>,
    /// Recursive attributes from the r* options.
    pub rec_attr: MountAttr,
    pub idmap: bool,
    pub idmap_recursive: bool,
    pub tmpcopyup: bool,
    pub data: Vec<String>,
}

/// The mount_setattr attributes equivalent to the per-mount MS_* flags, for binds
/// made with open_tree (mount(2)'s remount dance is not needed then).
pub fn flags_to_attr(flags: c_ulong) -> MountAttr {
    let mut a = MountAttr::default();
    if flags & libc::MS_RDONLY != 0 {
        a.attr_set |= MOUNT_ATTR_RDONLY;
    }
    if flags & libc::MS_NOSUID != 0 {
        a.attr_set |= MOUNT_ATTR_NOSUID;
    }
    if flags & libc::MS_NODEV != 0 {
        a.attr_set |= MOUNT_ATTR_NODEV;
    }
    if flags & libc::MS_NOEXEC != 0 {
        a.attr_set |= MOUNT_ATTR_NOEXEC;
    }
    if flags & libc::MS_NODIRATIME != 0 {
        a.attr_set |= MOUNT_ATTR_NODIRATIME;
    }
    if flags & libc::MS_NOSYMFOLLOW != 0 {
        a.attr_set |= MOUNT_ATTR_NOSYMFOLLOW;
    }
    let atime = if flags & libc::MS_NOATIME != 0 {
        Some(MOUNT_ATTR_NOATIME)
    } else if flags & libc::MS_STRICTATIME != 0 {
        Some(MOUNT_ATTR_STRICTATIME)
    } else if flags & libc::MS_RELATIME != 0 {
        Some(MOUNT_ATTR_RELATIME)
    } else {
        None
    };
    if let Some(t) = atime {
        a.attr_clr |= MOUNT_ATTR__ATIME;
        a.attr_set |= t;
    }
    a
}

pub fn propagation_flag(s: &str) -> Option<c_ulong> {
    Some(match s {
        "private" => libc::MS_PRIVATE,
        "rprivate" => libc::MS_PRIVATE | libc::MS_REC,
        "shared" => libc::MS_SHARED,
        "rshared" => libc::MS_SHARED | libc::MS_REC,
        "slave" => libc::MS_SLAVE,
        "rslave" => libc::MS_SLAVE | libc::MS_REC,
        "unbindable" => libc::MS_UNBINDABLE,
        "runbindable" => libc::MS_UNBINDABLE | libc::MS_REC,
        _ => return None,
    })
}

/// (set, clear) for the classic flags; `clear` options like `rw` undo an earlier `ro`.
fn classic(o: &str) -> Option<(c_ulong, c_ulong)> {
    Some(match o {
        "defaults" => (0, 0),
        "ro" => (libc::MS_RDONLY, 0),
        "rw" => (0, libc::MS_RDONLY),
        "nosuid" => (libc::MS_NOSUID, 0),
        "suid" => (0, libc::MS_NOSUID),
        "nodev" => (libc::MS_NODEV, 0),
        "dev" => (0, libc::MS_NODEV),
        "noexec" => (libc::MS_NOEXEC, 0),
        "exec" => (0, libc::MS_NOEXEC),
        "sync" => (libc::MS_SYNCHRONOUS, 0),
        "async" => (0, libc::MS_SYNCHRONOUS),
        "dirsync" => (libc::MS_DIRSYNC, 0),
        "remount" => (libc::MS_REMOUNT, 0),
        "mand" => (libc::MS_MANDLOCK, 0),
        "nomand" => (0, libc::MS_MANDLOCK),
        "atime" => (0, libc::MS_NOATIME),
        "noatime" => (libc::MS_NOATIME, 0),
        "diratime" => (0, libc::MS_NODIRATIME),
        "nodiratime" => (libc::MS_NODIRATIME, 0),
        "relatime" => (libc::MS_RELATIME, 0),
        "norelatime" => (0, libc::MS_RELATIME),
        "strictatime" => (libc::MS_STRICTATIME, 0),
        "nostrictatime" => (0, libc::MS_STRICTATIME),
        "lazytime" => (libc::MS_LAZYTIME, 0),
        "nolazytime" => (0, libc::MS_LAZYTIME),
        "silent" => (libc::MS_SILENT, 0),
        "loud" => (0, libc::MS_SILENT),
        "iversion" => (libc::MS_I_VERSION, 0),
        "noiversion" => (0, libc::MS_I_VERSION),
        "nosymfollow" => (libc::MS_NOSYMFOLLOW, 0),
        "symfollow" => (0, libc::MS_NOSYMFOLLOW),
        _ => return None,
    })
}

/// (attr_set, attr_clr) for a recursive option.
fn recursive_attr(o: &str) -> Option<(u64, u64)> {
    Some(match o {
        "rro" => (MOUNT_ATTR_RDONLY, 0),
        "rrw" => (0, MOUNT_ATTR_RDONLY),
        "rnosuid" => (MOUNT_ATTR_NOSUID, 0),
        "rsuid" => (0, MOUNT_ATTR_NOSUID),
        "rnodev" => (MOUNT_ATTR_NODEV, 0),
        "rdev" => (0, MOUNT_ATTR_NODEV),
        "rnoexec" => (MOUNT_ATTR_NOEXEC, 0),
        "rexec" => (0, MOUNT_ATTR_NOEXEC),
        "rnodiratime" => (MOUNT_ATTR_NODIRATIME, 0),
        "rdiratime" => (0, MOUNT_ATTR_NODIRATIME),
        "rrelatime" => (MOUNT_ATTR_RELATIME, MOUNT_ATTR__ATIME),
        "rnorelatime" => (0, 0),
        "rnoatime" => (MOUNT_ATTR_NOATIME, MOUNT_ATTR__ATIME),
        "ratime" => (MOUNT_ATTR_RELATIME, MOUNT_ATTR__ATIME),
        "rstrictatime" => (MOUNT_ATTR_STRICTATIME, MOUNT_ATTR__ATIME),
        "rnostrictatime" => (0, 0),
        "rnosymfollow" => (MOUNT_ATTR_NOSYMFOLLOW, 0),
        "rsymfollow" => (0, MOUNT_ATTR_NOSYMFOLLOW),
        _ => return None,
    })
}

pub fn parse(opts: &[String]) -> Result<Options> {
    let mut o = Options::default();
    for opt in opts {
        let s = opt.as_str();
        if s == "bind" {
            o.bind = true;
        } else if s == "rbind" {
            o.bind = true;
            o.recursive = true;
        } else if let Some((set, clr)) = classic(s) {
            o.flags = (o.flags & !clr) | set;
        } else if let Some(p) = propagation_flag(s) {
            o.propagation.push(p);
        } else if let Some((set, clr)) = recursive_attr(s) {
            let a = &mut o.rec_attr;
            if clr == MOUNT_ATTR__ATIME {
                // The atime modes are one field: the kernel wants all of it cleared.
                a.attr_set = (a.attr_set & !MOUNT_ATTR__ATIME) | set;
                a.attr_clr |= MOUNT_ATTR__ATIME;
            } else {
                // A bit may not be both set and cleared: the later option wins.
                a.attr_set = (a.attr_set & !clr) | set;
                a.attr_clr = (a.attr_clr & !set) | clr;
            }
        } else if s == "idmap" {
            o.idmap = true;
        } else if s == "ridmap" {
            o.idmap = true;
            o.idmap_recursive = true;
        } else if s == "tmpcopyup" {
            o.tmpcopyup = true;
        } else if s.is_empty() {
            bail!("empty mount option");
        } else {
            o.data.push(opt.clone());
        }
    }
    Ok(o)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &[&str]) -> Vec<String> {
        s.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn classic_flags_and_data() {
        let o = parse(&v(&["nosuid", "strictatime", "mode=755", "size=65536k"])).unwrap();
        assert_eq!(o.flags, libc::MS_NOSUID | libc::MS_STRICTATIME);
        assert_eq!(o.data, v(&["mode=755", "size=65536k"]));
        assert!(!o.bind);
    }

    #[test]
    fn later_option_wins() {
        let o = parse(&v(&["ro", "rw"])).unwrap();
        assert_eq!(o.flags & libc::MS_RDONLY, 0);
    }

    #[test]
    fn bind_recursive_and_propagation() {
        let o = parse(&v(&["rbind", "rro", "rprivate", "rnosuid"])).unwrap();
        assert!(o.bind && o.recursive);
        assert_eq!(o.propagation, vec![libc::MS_PRIVATE | libc::MS_REC]);
        assert_eq!(o.rec_attr.attr_set, MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID);
    }

    #[test]
    fn attr_from_flags() {
        let a = flags_to_attr(libc::MS_RDONLY | libc::MS_NOATIME);
        assert_eq!(a.attr_set, MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOATIME);
        assert_eq!(a.attr_clr, MOUNT_ATTR__ATIME);
    }
}
