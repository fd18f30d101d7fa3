//! The message channel between the runtime and the processes it forks.
//!
//! A `SOCK_SEQPACKET` socketpair keeps message boundaries, so each message is one
//! send/recv with no framing code, and a peer that dies shows up as EOF instead of a hang.

use anyhow::{bail, Context, Result};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// What the two sides say to each other. The order is fixed by the process model
/// (see [`crate::process`]); any other message at a step is a protocol error.
#[derive(Debug, PartialEq, Eq)]
pub enum Msg {
    /// Bridge → runtime: the pid (in the runtime's pid namespace) of the process it
    /// cloned, and whether it was born in the container's cgroup2 directory.
    Pid { pid: i32, in_cgroup: bool },
    /// Runtime → child: ids mapped and the unified cgroup joined; go on (init joins v1 itself).
    Go,
    /// Child → runtime: mounts are done, run the createRuntime/prestart hooks now.
    HooksRequest,
    /// Child → runtime: setup finished; the child now blocks until `start`.
    Ready,
    /// Either side: the step failed; the text is the user-facing reason.
    Error(String),
}

const PID: u8 = 1;
const GO: u8 = 2;
const HOOKS: u8 = 3;
const READY: u8 = 4;
const ERROR: u8 = 5;

pub struct Channel {
    fd: OwnedFd,
}

/// Makes a connected pair; both ends are close-on-exec so neither leaks into the container.
pub fn pair() -> Result<(Channel, Channel)> {
    let mut fds = [0; 2];
    let r = unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    };
    if r < 0 {
        return Err(std::io::Error::last_os_error()).context("socketpair");
    }
    unsafe {
        Ok((
            Channel {
                fd: OwnedFd::from_raw_fd(fds[0]),
            },
            Channel {
                fd: OwnedFd::from_raw_fd(fds[1]),
            },
        ))
    }
}

impl Channel {
    pub fn send(&self, m: &Msg) -> Result<()> {
        let mut buf = Vec::with_capacity(16);
        match m {
            Msg::Pid { pid, in_cgroup } => {
                buf.push(PID);
                buf.extend_from_slice(&pid.to_ne_bytes());
                buf.push(*in_cgroup as u8);
            }
            Msg::Go => buf.push(GO),
            Msg::HooksRequest => buf.push(HOOKS),
            Msg::Ready => buf.push(READY),
            Msg::Error(s) => {
                buf.push(ERROR);
                // SEQPACKET messages are bounded by the socket buffer; keep errors well under it.
                let b = s.as_bytes();
                buf.extend_from_slice(&b[..b.len().min(32 * 1024)]);
            }
        }
        let n = unsafe {
            libc::send(
                self.fd.as_raw_fd(),
                buf.as_ptr().cast(),
                buf.len(),
                libc::MSG_NOSIGNAL,
            )
        };
        if n < 0 {
            return Err(std::io::Error::last_os_error()).context("sync: send");
        }
        Ok(())
    }

    /// Receives one message; `None` when the peer closed its end (it exited).
    pub fn recv(&self) -> Result<Option<Msg>> {
        let mut buf = [0u8; 32 * 1024 + 8];
        let n = loop {
            let n =
                unsafe { libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n < 0 {
                let e = std::io::Error::last_os_error();
                if e.raw_os_error() == Some(libc::EINTR) {
                    continue;
                }
                return Err(e).context("sync: recv");
            }
            break n as usize;
        };
        if n == 0 {
            return Ok(None);
        }
        let body = &buf[1..n];
        Ok(Some(match buf[0] {
            PID if body.len() == 5 => Msg::Pid {
                pid: i32::from_ne_bytes(body[..4].try_into().unwrap()),
                in_cgroup: body[4] != 0,
            },
            GO => Msg::Go,
            HOOKS => Msg::HooksRequest,
            READY => Msg::Ready,
            ERROR => Msg::Error(String::from_utf8_lossy(body).into_owned()),
            t => bail!("sync: unknown message type {t}"),
        }))
    }

    /// Waits for `want`; an `Error` from the peer becomes our error, EOF a clear message.
    pub fn expect(&self, want: Msg, peer: &str) -> Result<()> {
        match self.recv()? {
            Some(m) if m == want => Ok(()),
            Some(Msg::Error(e)) => bail!("{e}"),
            Some(m) => bail!("sync: expected {want:?} from {peer}, got {m:?}"),
            None => bail!("{peer} exited before {want:?}"),
        }
    }

    pub fn raw(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}
