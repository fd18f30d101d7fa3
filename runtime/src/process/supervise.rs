//! Foreground `run` and `exec`: wait for the container process while forwarding our
//! signals to it, and, with a terminal, proxy our stdio to its pty. One poll loop
//! over a signalfd, no threads, no async runtime.

use anyhow::{Context, Result};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// Blocks the signals we forward, so they queue on the signalfd instead of killing
/// us. Call before forking: children inherit the mask and reset it before execve.
pub fn block_signals() -> libc::sigset_t {
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut set);
        for s in [
            libc::SIGKILL,
            libc::SIGSTOP,
            libc::SIGSEGV,
            libc::SIGBUS,
            libc::SIGILL,
            libc::SIGFPE,
        ] {
            libc::sigdelset(&mut set, s);
        }
        libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    }
}

/// Waits for `pid` to exit and returns its exit code the way a shell reports it
/// (128 + signal for a killed process).
pub fn wait(pid: i32, set: &libc::sigset_t, tty: Option<OwnedFd>) -> Result<i32> {
    let sfd = unsafe { libc::signalfd(-1, set, libc::SFD_CLOEXEC) };
    if sfd < 0 {
        return Err(std::io::Error::last_os_error()).context("signalfd");
    }
    let sfd = unsafe { OwnedFd::from_raw_fd(sfd) };
    // The child may have exited before the signalfd existed; check once up front.
    if let Some(code) = reap(pid) {
        if let Some(m) = &tty {
            drain(m.as_raw_fd());
        }
        return Ok(code);
    }
    let raw = tty.as_ref().map(|m| Raw::enter(m.as_raw_fd()));
    let master = tty.as_ref().map(|m| m.as_raw_fd());
    let mut stdin_open = master.is_some();
    loop {
        let mut fds = vec![libc::pollfd {
            fd: sfd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        }];
        if let Some(m) = master {
            fds.push(libc::pollfd {
                fd: m,
                events: libc::POLLIN,
                revents: 0,
            });
            if stdin_open {
                fds.push(libc::pollfd {
                    fd: 0,
                    events: libc::POLLIN,
                    revents: 0,
                });
            }
        }
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as _, -1) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            return Err(e).context("poll");
        }
        if let Some(m) = master {
            if fds[1].revents & (libc::POLLIN | libc::POLLHUP) != 0 {
                copy(m, 1);
            }
            if stdin_open
                && fds.len() > 2
                && fds[2].revents & (libc::POLLIN | libc::POLLHUP) != 0
                && !copy(0, m)
            {
                stdin_open = false;
            }
        }
        if fds[0].revents & libc::POLLIN != 0 {
            let mut info: libc::signalfd_siginfo = unsafe { std::mem::zeroed() };
            let sz = std::mem::size_of::<libc::signalfd_siginfo>();
            let r = unsafe {
                libc::read(
                    sfd.as_raw_fd(),
                    (&mut info as *mut libc::signalfd_siginfo).cast(),
                    sz,
                )
            };
            if r as usize != sz {
                continue;
            }
            let sig = info.ssi_signo as i32;
            match sig {
                libc::SIGCHLD => {
                    if let Some(code) = reap(pid) {
                        if let Some(m) = master {
                            drain(m);
                        }
                        drop(raw);
                        return Ok(code);
                    }
                }
                libc::SIGWINCH => {
                    if let Some(m) = master {
                        resize_from(0, m);
                    }
                }
                _ => unsafe {
                    libc::kill(pid, sig);
                },
            }
        }
    }
}

/// Reaps every exited child (we may be a subreaper); returns the code of `pid` if it exited.
fn reap(pid: i32) -> Option<i32> {
    let mut result = None;
    loop {
        let mut st = 0;
        let r = unsafe { libc::waitpid(-1, &mut st, libc::WNOHANG) };
        if r <= 0 {
            return result;
        }
        if r == pid {
            result = Some(if libc::WIFEXITED(st) {
                libc::WEXITSTATUS(st)
            } else if libc::WIFSIGNALED(st) {
                128 + libc::WTERMSIG(st)
            } else {
                255
            });
        }
    }
}

/// Copies what is readable now; false at EOF or error.
fn copy(from: RawFd, to: RawFd) -> bool {
    let mut buf = [0u8; 16 * 1024];
    let n = unsafe { libc::read(from, buf.as_mut_ptr().cast(), buf.len()) };
    if n <= 0 {
        return false;
    }
    let mut off = 0;
    while off < n as usize {
        let w = unsafe { libc::write(to, buf[off..].as_ptr().cast(), n as usize - off) };
        if w <= 0 {
            return false;
        }
        off += w as usize;
    }
    true
}

/// Output still buffered in the pty after the process exited.
fn drain(master: RawFd) {
    let flags = unsafe { libc::fcntl(master, libc::F_GETFL) };
    unsafe { libc::fcntl(master, libc::F_SETFL, flags | libc::O_NONBLOCK) };
    while copy(master, 1) {}
}

fn resize_from(tty: RawFd, master: RawFd) {
    let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
    if unsafe { libc::ioctl(tty, libc::TIOCGWINSZ, &mut ws) } == 0 {
        unsafe { libc::ioctl(master, libc::TIOCSWINSZ, &ws) };
    }
}

/// Our terminal in raw mode for the life of the proxy, restored on drop.
struct Raw {
    saved: Option<libc::termios>,
}

impl Raw {
    fn enter(master: RawFd) -> Raw {
        resize_from(0, master);
        let mut t: libc::termios = unsafe { std::mem::zeroed() };
        if unsafe { libc::isatty(0) } == 0 || unsafe { libc::tcgetattr(0, &mut t) } != 0 {
            return Raw { saved: None };
        }
        let saved = t;
        unsafe {
            libc::cfmakeraw(&mut t);
            libc::tcsetattr(0, libc::TCSANOW, &t);
        }
        Raw { saved: Some(saved) }
    }
}

impl Drop for Raw {
    fn drop(&mut self) {
        if let Some(t) = &self.saved {
            unsafe { libc::tcsetattr(0, libc::TCSANOW, t) };
        }
    }
}
