//! `-u user[:group]` resolved through the container's own /etc/passwd and /etc/group.
//! The rootfs is untrusted: both files are opened with openat2(RESOLVE_IN_ROOT), so a
//! symlink in the image cannot make kurad read a host file, and read up to 1 MiB.

use anyhow::{bail, Context, Result};
use std::io::Read;
use std::os::fd::FromRawFd;
use std::path::Path;

pub struct User {
    pub uid: u32,
    pub gid: u32,
    pub additional_gids: Vec<u32>,
}

const RESOLVE_IN_ROOT: u64 = 0x10;

#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}

/// The contents of `rel` inside `root`, resolved as if `root` were `/`; None if absent.
fn read_in_root(root: &Path, rel: &str) -> Result<Option<String>> {
    use std::os::unix::ffi::OsStrExt;
    let dir = std::fs::File::open(root).with_context(|| format!("open {}", root.display()))?;
    let c = std::ffi::CString::new(Path::new(rel).as_os_str().as_bytes())?;
    let how = OpenHow {
        flags: (libc::O_RDONLY | libc::O_CLOEXEC) as u64,
        mode: 0,
        resolve: RESOLVE_IN_ROOT,
    };
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            std::os::fd::AsRawFd::as_raw_fd(&dir),
            c.as_ptr(),
            &how as *const OpenHow,
            std::mem::size_of::<OpenHow>(),
        )
    };
    if fd < 0 {
        let e = std::io::Error::last_os_error();
        if e.kind() == std::io::ErrorKind::NotFound {
            return Ok(None);
        }
        return Err(e).with_context(|| format!("open {rel} in the container"));
    }
    let f = unsafe { std::fs::File::from_raw_fd(fd as i32) };
    let mut s = String::new();
    f.take(1 << 20)
        .read_to_string(&mut s)
        .with_context(|| format!("read {rel} in the container"))?;
    Ok(Some(s))
}

/// Entries of a colon-separated database (passwd/group) as field vectors.
fn entries(text: &Option<String>) -> Vec<Vec<&str>> {
    text.as_deref()
        .unwrap_or("")
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| l.split(':').collect())
        .collect()
}

pub fn resolve(rootfs: &Path, spec: &str) -> Result<User> {
    let (user, group) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let user = if user.is_empty() { "0" } else { user };
    let passwd = read_in_root(rootfs, "/etc/passwd")?;
    let groups = read_in_root(rootfs, "/etc/group")?;
    let pw = entries(&passwd);
    let gr = entries(&groups);
    let entry = pw
        .iter()
        .find(|e| e.first() == Some(&user) || (e.get(2) == Some(&user)));
    let (uid, mut gid, name) = match (user.parse::<u32>(), entry) {
        (_, Some(e)) if e.len() >= 4 => (
            e[2].parse().context("bad uid in /etc/passwd")?,
            e[3].parse().context("bad gid in /etc/passwd")?,
            Some(e[0]),
        ),
        (Ok(n), _) => (n, 0, None),
        (Err(_), _) => bail!("user {user:?}: no such user in the container's /etc/passwd"),
    };
    if let Some(g) = group {
        gid = match g.parse::<u32>() {
            Ok(n) => n,
            Err(_) => gr
                .iter()
                .find(|e| e.first() == Some(&g) && e.len() >= 3)
                .with_context(|| {
                    format!("group {g:?}: no such group in the container's /etc/group")
                })?[2]
                .parse()
                .context("bad gid in /etc/group")?,
        };
    }
    let mut additional_gids = Vec::new();
    if let (Some(name), None) = (name, group) {
        for e in &gr {
            if e.len() >= 4 && e[3].split(',').any(|m| m == name) {
                if let Ok(g) = e[2].parse::<u32>() {
                    if g != gid && !additional_gids.contains(&g) {
                        additional_gids.push(g);
                    }
                }
            }
        }
    }
    Ok(User {
        uid,
        gid,
        additional_gids,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symlinks_stay_in_the_rootfs() {
        let dir = std::env::temp_dir().join(format!("kura-user-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("etc")).unwrap();
        // /etc/passwd -> /etc/host-passwd: must resolve inside the rootfs, where it is absent.
        std::os::unix::fs::symlink("/etc/host-passwd", dir.join("etc/passwd")).unwrap();
        std::fs::write(dir.join("etc/host-passwd"), "evil:x:7:7::/:/bin/sh\n").unwrap();
        assert_eq!(resolve(&dir, "evil").unwrap().uid, 7);
        std::fs::remove_file(dir.join("etc/passwd")).unwrap();
        // A file the host has and the rootfs does not: absent, not the host's.
        std::os::unix::fs::symlink("/etc/os-release", dir.join("etc/passwd")).unwrap();
        assert!(resolve(&dir, "root").is_err());
        assert_eq!(resolve(&dir, "1000:1000").unwrap().gid, 1000);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
