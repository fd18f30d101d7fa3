//! Network namespaces that live as long as a container's task: made by kurad, kept by a
//! bind mount of the nsfs file (as `ip netns add` does), handed to the runtime by path.

use anyhow::{Context, Result};
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use std::path::Path;

/// A new network namespace bound at `path`, its `lo` up.
pub fn create(path: &Path) -> Result<()> {
    if let Some(d) = path.parent() {
        std::fs::create_dir_all(d).with_context(|| format!("create {}", d.display()))?;
    }
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .with_context(|| format!("create network namespace file {}", path.display()))?;
    let p = path.to_path_buf();
    // unshare(CLONE_NEWNET) moves only the calling thread: a thread of its own, gone
    // afterwards, so no pooled thread is left in the new namespace.
    let made = std::thread::spawn(move || -> Result<()> {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)
            .context("unshare a network namespace")?;
        loopback_up()?;
        let own = format!("/proc/self/task/{}/ns/net", nix::unistd::gettid());
        mount(
            Some(own.as_str()),
            &p,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .with_context(|| format!("bind the network namespace at {}", p.display()))?;
        Ok(())
    })
    .join()
    .unwrap_or_else(|_| Err(anyhow::anyhow!("network namespace thread panicked")));
    if made.is_err() {
        let _ = std::fs::remove_file(path);
    }
    made
}

/// Unbinds and removes it; the kernel frees the namespace when nothing else holds it.
pub fn remove(path: &Path) {
    let _ = umount2(path, MntFlags::MNT_DETACH);
    let _ = std::fs::remove_file(path);
}

/// `ip link set lo up` in the calling thread's network namespace.
fn loopback_up() -> Result<()> {
    use std::os::fd::AsRawFd;
    let sock = nix::sys::socket::socket(
        nix::sys::socket::AddressFamily::Inet,
        nix::sys::socket::SockType::Datagram,
        nix::sys::socket::SockFlag::SOCK_CLOEXEC,
        None,
    )
    .context("socket for lo")?;
    // SAFETY: ifreq is plain data; the name is NUL-terminated within IFNAMSIZ and the
    // ioctls read/write only the flags member.
    unsafe {
        let mut req: libc::ifreq = std::mem::zeroed();
        for (i, b) in b"lo\0".iter().enumerate() {
            req.ifr_name[i] = *b as libc::c_char;
        }
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) < 0 {
            return Err(std::io::Error::last_os_error()).context("get lo flags");
        }
        req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) < 0 {
            return Err(std::io::Error::last_os_error()).context("set lo up");
        }
    }
    Ok(())
}
