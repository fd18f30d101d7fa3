//! Mounting the rootfs containerd hands to Create (a snapshot: overlay, or a bind of a
//! directory) on `<bundle>/rootfs`, and taking it down again.

use std::ffi::CString;
use std::io;
use std::path::Path;

pub struct MountSpec<'a> {
    pub kind: &'a str,
    pub source: &'a str,
    pub options: &'a [String],
}

/// Splits fstab-style options into mount(2) flags and the filesystem's data string.
fn parse_options(options: &[String]) -> (libc::c_ulong, bool, String) {
    let mut flags: libc::c_ulong = 0;
    let mut readonly_bind = false;
    let mut data = Vec::new();
    for o in options {
        let (set, clear): (libc::c_ulong, libc::c_ulong) = match o.as_str() {
            "ro" => (libc::MS_RDONLY, 0),
            "rw" => (0, libc::MS_RDONLY),
            "bind" => (libc::MS_BIND, 0),
            "rbind" => (libc::MS_BIND | libc::MS_REC, 0),
            "nosuid" => (libc::MS_NOSUID, 0),
            "suid" => (0, libc::MS_NOSUID),
            "nodev" => (libc::MS_NODEV, 0),
            "dev" => (0, libc::MS_NODEV),
            "noexec" => (libc::MS_NOEXEC, 0),
            "exec" => (0, libc::MS_NOEXEC),
            "noatime" => (libc::MS_NOATIME, 0),
            "relatime" => (libc::MS_RELATIME, 0),
            "strictatime" => (libc::MS_STRICTATIME, 0),
            "sync" => (libc::MS_SYNCHRONOUS, 0),
            "remount" => (libc::MS_REMOUNT, 0),
            "private" | "rprivate" | "shared" | "rshared" | "slave" | "rslave" => (0, 0),
            _ => {
                data.push(o.clone());
                (0, 0)
            }
        };
        flags = (flags | set) & !clear;
    }
    if flags & libc::MS_BIND != 0 && flags & libc::MS_RDONLY != 0 {
        readonly_bind = true;
    }
    (flags, readonly_bind, data.join(","))
}

fn cstr(s: &str) -> io::Result<CString> {
    CString::new(s)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in mount argument"))
}

pub fn mount(m: &MountSpec, target: &Path) -> io::Result<()> {
    let (flags, readonly_bind, data) = parse_options(m.options);
    let kind = if m.kind == "bind" { "none" } else { m.kind };
    let src = cstr(m.source)?;
    let tgt = cstr(&target.to_string_lossy())?;
    let fstype = cstr(kind)?;
    let data = cstr(&data)?;
    // A bind mount ignores MS_RDONLY on the first call; it takes a remount.
    let first = flags & !if readonly_bind { libc::MS_RDONLY } else { 0 };
    let r = unsafe {
        libc::mount(
            src.as_ptr(),
            tgt.as_ptr(),
            fstype.as_ptr(),
            first,
            if data.as_bytes().is_empty() {
                std::ptr::null()
            } else {
                data.as_ptr().cast()
            },
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    if readonly_bind {
        let r = unsafe {
            libc::mount(
                std::ptr::null(),
                tgt.as_ptr(),
                std::ptr::null(),
                flags | libc::MS_REMOUNT,
                std::ptr::null(),
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Unmounts everything stacked on `target`; not mounted is fine.
pub fn unmount_all(target: &Path) -> io::Result<()> {
    let t = cstr(&target.to_string_lossy())?;
    for _ in 0..16 {
        if unsafe { libc::umount2(t.as_ptr(), libc::MNT_DETACH) } < 0 {
            let e = io::Error::last_os_error();
            return match e.raw_os_error() {
                Some(libc::EINVAL) | Some(libc::ENOENT) => Ok(()),
                _ => Err(e),
            };
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_split_into_flags_and_data() {
        let o: Vec<String> = ["rbind", "ro", "lowerdir=/a", "nosuid"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let (f, ro_bind, data) = parse_options(&o);
        assert_eq!(
            f,
            libc::MS_BIND | libc::MS_REC | libc::MS_RDONLY | libc::MS_NOSUID
        );
        assert!(ro_bind);
        assert_eq!(data, "lowerdir=/a");
    }
}
