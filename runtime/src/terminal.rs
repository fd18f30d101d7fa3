//! The container's terminal: a pty opened inside the container (so it belongs to the
//! container's devpts), its master sent over `--console-socket` with SCM_RIGHTS, its
//! slave made the controlling terminal and stdio of the process.

use anyhow::{Context, Result};
use std::ffi::CString;
use std::io::IoSlice;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::PathBuf;

pub struct Pty {
    pub master: OwnedFd,
    pub slave_path: PathBuf,
}

pub fn open_pty() -> Result<Pty> {
    let fd = unsafe {
        libc::open(
            c"/dev/ptmx".as_ptr(),
            libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error())
            .context("open /dev/ptmx (is /dev/pts mounted?)");
    }
    let master = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut unlock: libc::c_int = 0;
    if unsafe { libc::ioctl(fd, libc::TIOCSPTLCK, &mut unlock) } < 0 {
        return Err(std::io::Error::last_os_error()).context("unlock pty");
    }
    let mut n: libc::c_uint = 0;
    if unsafe { libc::ioctl(fd, libc::TIOCGPTN, &mut n) } < 0 {
        return Err(std::io::Error::last_os_error()).context("pty number");
    }
    Ok(Pty {
        master,
        slave_path: PathBuf::from(format!("/dev/pts/{n}")),
    })
}

pub fn set_size(fd: RawFd, rows: u16, cols: u16) {
    let ws = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    unsafe { libc::ioctl(fd, libc::TIOCSWINSZ, &ws) };
}

/// Makes the slave our controlling terminal and stdio. Needs a new session first.
pub fn become_controlling(slave_path: &std::path::Path) -> Result<()> {
    let c = CString::new(slave_path.to_string_lossy().as_bytes())?;
    let fd = unsafe { libc::open(c.as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("open {}", slave_path.display()));
    }
    if unsafe { libc::setsid() } < 0 {
        let e = std::io::Error::last_os_error();
        // Already a session leader (EPERM) is fine.
        if e.raw_os_error() != Some(libc::EPERM) {
            return Err(e).context("setsid");
        }
    }
    if unsafe { libc::ioctl(fd, libc::TIOCSCTTY, 0) } < 0 {
        return Err(std::io::Error::last_os_error()).context("make pty the controlling terminal");
    }
    for target in 0..3 {
        if unsafe { libc::dup3(fd, target, 0) } < 0 {
            return Err(std::io::Error::last_os_error()).context("dup pty to stdio");
        }
    }
    unsafe { libc::close(fd) };
    Ok(())
}

/// Sends `fd` over a connected unix socket with SCM_RIGHTS, with `name` as payload
/// (runc sends the pty's path; containerd ignores it, conmon reads it).
pub fn send_fd(sock: RawFd, fd: RawFd, name: &str) -> Result<()> {
    let payload = if name.is_empty() { "pty" } else { name };
    send_fd_with(sock, fd, payload.as_bytes()).context("send pty master over the console socket")
}

pub fn send_fd_with(sock: RawFd, fd: RawFd, payload: &[u8]) -> Result<()> {
    use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
    let iov = [IoSlice::new(payload)];
    let fds = [fd];
    let cmsg = [ControlMessage::ScmRights(&fds)];
    sendmsg::<()>(sock, &iov, &cmsg, MsgFlags::empty(), None).context("sendmsg with SCM_RIGHTS")?;
    Ok(())
}

/// Receives one fd sent with SCM_RIGHTS.
pub fn recv_fd(sock: RawFd) -> Result<OwnedFd> {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
    let mut buf = [0u8; 4096];
    let mut iov = [std::io::IoSliceMut::new(&mut buf)];
    let mut space = nix::cmsg_space!([RawFd; 1]);
    let msg = recvmsg::<()>(sock, &mut iov, Some(&mut space), MsgFlags::MSG_CMSG_CLOEXEC)
        .context("receive fd")?;
    for c in msg.cmsgs().context("control message")? {
        if let ControlMessageOwned::ScmRights(fds) = c {
            if let Some(&fd) = fds.first() {
                return Ok(unsafe { OwnedFd::from_raw_fd(fd) });
            }
        }
    }
    anyhow::bail!("no fd received")
}

/// Connects to `--console-socket` before anything forks, so a bad path fails early.
pub fn connect(path: &std::path::Path) -> Result<OwnedFd> {
    let s = std::os::unix::net::UnixStream::connect(path)
        .with_context(|| format!("--console-socket: connect {}", path.display()))?;
    Ok(OwnedFd::from(s))
}

pub fn raw(fd: &OwnedFd) -> RawFd {
    fd.as_raw_fd()
}
