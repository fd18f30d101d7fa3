//! A process's stdio as the shim holds it. The container writes into pipes (or a pty)
//! the shim owns; copier threads move the bytes to the client's FIFOs and to the log
//! file. The shim in the middle means: the log is complete even with no client, a
//! client that goes away never makes the container die of SIGPIPE, and stdin can be
//! closed on request (CloseIO) without the client closing its FIFO.

use crate::logfile::{LogFile, StreamWriter};
use crate::runtime::ProcStdio;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::process::Stdio;
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::Duration;

/// What the client asked for: FIFO paths (or `file://` URIs, or empty) and a tty flag.
#[derive(Clone, Debug, Default)]
pub struct StdioSpec {
    pub stdin: String,
    pub stdout: String,
    pub stderr: String,
    pub terminal: bool,
}

/// Copier threads are small: a stack buffer and a few frames.
const COPIER_STACK: usize = 64 * 1024;
const BUF: usize = 8 * 1024;
/// How long output may wait in a FIFO for its reader after the process is gone.
const LINGER: Duration = Duration::from_secs(10);

pub fn pipe() -> io::Result<(File, File)> {
    let mut fds = [0; 2];
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } < 0 {
        return Err(io::Error::last_os_error());
    }
    unsafe { Ok((File::from_raw_fd(fds[0]), File::from_raw_fd(fds[1]))) }
}

/// Opens where an output stream goes. A FIFO is opened read-write: the open never
/// blocks waiting for a reader, and writes never fail with EPIPE while a client
/// reconnects (containerd's shims keep a reader open for the same reason).
fn open_output(target: &str) -> io::Result<Option<File>> {
    if target.is_empty() {
        return Ok(None);
    }
    if let Some(path) = target.strip_prefix("file://") {
        if let Some(d) = std::path::Path::new(path).parent() {
            std::fs::create_dir_all(d)?;
        }
        let f = OpenOptions::new().create(true).append(true).open(path)?;
        return Ok(Some(f));
    }
    if target.contains("://") {
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            format!("stdio URI {target:?}: only FIFOs and file:// are supported"),
        ));
    }
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_CLOEXEC)
        .open(target)?;
    Ok(Some(f))
}

/// Counts running output copiers so exit handling can wait for the last bytes.
#[derive(Default)]
struct Pending {
    n: Mutex<usize>,
    cv: Condvar,
}

/// The shim's side of one process's stdio.
#[derive(Default)]
pub struct Io {
    /// Write end of the container's stdin (pipe), or a dup of the pty master.
    stdin: Arc<Mutex<Option<File>>>,
    /// Wakes the stdin copier so it lets go of the FIFO.
    stop_input: Mutex<Option<File>>,
    console: Mutex<Option<File>>,
    pending: Arc<Pending>,
}

impl Io {
    /// Pipes for a process without a tty. Returns the ends the runtime hands to the
    /// process; copiers on our ends start at once.
    pub fn pipes(spec: &StdioSpec, log: Option<&Arc<LogFile>>) -> io::Result<(Arc<Io>, ProcStdio)> {
        let io = Arc::new(Io::default());
        let mut child = ProcStdio::null();
        for (target, stream) in [(&spec.stdout, "stdout"), (&spec.stderr, "stderr")] {
            let sink = open_output(target)?;
            if sink.is_none() && log.is_none() {
                continue;
            }
            let (r, w) = pipe()?;
            io.spawn_output(r, sink, log.map(|l| l.writer(stream)))?;
            if stream == "stdout" {
                child.stdout = Stdio::from(w);
            } else {
                child.stderr = Stdio::from(w);
            }
        }
        if !spec.stdin.is_empty() {
            let (r, w) = pipe()?;
            io.spawn_input(&spec.stdin, w)?;
            child.stdin = Stdio::from(r);
        }
        Ok((io, child))
    }

    /// Wires a pty master received from the runtime: one output stream, input from
    /// the stdin FIFO.
    pub fn console(
        spec: &StdioSpec,
        master: File,
        log: Option<&Arc<LogFile>>,
    ) -> io::Result<Arc<Io>> {
        let io = Arc::new(Io::default());
        let sink = open_output(&spec.stdout)?;
        io.spawn_output(master.try_clone()?, sink, log.map(|l| l.writer("stdout")))?;
        if !spec.stdin.is_empty() {
            io.spawn_input(&spec.stdin, master.try_clone()?)?;
        }
        *io.console.lock().unwrap() = Some(master);
        Ok(io)
    }

    fn spawn_output(
        &self,
        src: File,
        sink: Option<File>,
        log: Option<StreamWriter>,
    ) -> io::Result<()> {
        *self.pending.n.lock().unwrap() += 1;
        let pending = self.pending.clone();
        let r = thread::Builder::new()
            .name("stdout".into())
            .stack_size(COPIER_STACK)
            .spawn(move || {
                let sink = copy_output(src, sink, log);
                *pending.n.lock().unwrap() -= 1;
                pending.cv.notify_all();
                linger(sink);
            });
        if let Err(e) = r {
            *self.pending.n.lock().unwrap() -= 1;
            return Err(e);
        }
        Ok(())
    }

    fn spawn_input(&self, fifo_path: &str, dst: File) -> io::Result<()> {
        // Read-write so the open does not wait for a writer and a client closing its
        // end is not EOF: EOF reaches the container only through CloseIO.
        let fifo = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_CLOEXEC)
            .open(fifo_path)?;
        let (stop_r, stop_w) = pipe()?;
        *self.stdin.lock().unwrap() = Some(dst);
        *self.stop_input.lock().unwrap() = Some(stop_w);
        let slot = self.stdin.clone();
        thread::Builder::new()
            .name("stdin".into())
            .stack_size(COPIER_STACK)
            .spawn(move || {
                copy_input(fifo, stop_r, &slot);
                slot.lock().unwrap().take();
            })?;
        Ok(())
    }

    /// CloseIO: the container sees EOF on stdin (for a tty, input just stops).
    pub fn close_stdin(&self) {
        // With a copier running, it closes the pipe once it has passed on what the
        // FIFO already holds; otherwise the pipe closes here.
        if self.stop_input.lock().unwrap().take().is_none() {
            self.stdin.lock().unwrap().take();
        }
    }

    pub fn resize(&self, width: u32, height: u32) -> io::Result<()> {
        match self.console.lock().unwrap().as_ref() {
            Some(m) => crate::console::resize(m, width, height),
            None => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "process has no tty",
            )),
        }
    }

    /// Waits (bounded: a daemon the process left behind may hold the pipe) until the
    /// output copiers have written everything, then lets go of stdin and the pty.
    pub fn drain(&self, timeout: Duration) {
        let n = self.pending.n.lock().unwrap();
        let _ = self.pending.cv.wait_timeout_while(n, timeout, |n| *n > 0);
        self.close_stdin();
        self.console.lock().unwrap().take();
    }
}

/// Copies until the process side closes; returns the sink, still open.
fn copy_output(mut src: File, sink: Option<File>, mut log: Option<StreamWriter>) -> Option<File> {
    let mut sink = sink.map(|f| Sink::new(f, log.is_some()));
    let mut buf = [0u8; BUF];
    loop {
        let n = match src.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            // EIO: the pty's last slave fd closed.
            Err(_) => break,
        };
        if let Some(l) = log.as_mut() {
            l.write(&buf[..n]);
        }
        if let Some(s) = sink.as_mut() {
            if s.write(&buf[..n]).is_err() {
                sink = None;
            }
        }
    }
    if let Some(l) = log.as_mut() {
        l.finish();
    }
    sink.map(|s| s.file)
}

/// How long a full FIFO may hold up a logged stream before its copy is dropped.
const STALL: Duration = Duration::from_secs(2);

/// A client's FIFO (or file). A reader that stops reading (a manager killed while
/// attached) must not stop the log nor, through the full pipe, the container: when the
/// stream is also logged, a FIFO full for longer than STALL is skipped, without
/// further waiting, until its reader catches up; the log keeps everything. Without a
/// log the FIFO is the only copy, so writes wait for the reader, as containerd's
/// shims do.
struct Sink {
    file: File,
    bounded: bool,
    stalled: bool,
}

impl Sink {
    fn new(file: File, bounded: bool) -> Sink {
        unsafe {
            let fd = file.as_raw_fd();
            let fl = libc::fcntl(fd, libc::F_GETFL);
            libc::fcntl(fd, libc::F_SETFL, fl | libc::O_NONBLOCK);
        }
        Sink {
            file,
            bounded,
            stalled: false,
        }
    }

    fn write(&mut self, mut data: &[u8]) -> io::Result<()> {
        while !data.is_empty() {
            match (&self.file).write(data) {
                Ok(n) => {
                    data = &data[n..];
                    self.stalled = false;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if self.stalled {
                        return Ok(());
                    }
                    let timeout = if self.bounded {
                        STALL.as_millis() as i32
                    } else {
                        -1
                    };
                    let mut p = libc::pollfd {
                        fd: self.file.as_raw_fd(),
                        events: libc::POLLOUT,
                        revents: 0,
                    };
                    if unsafe { libc::poll(&mut p, 1, timeout) } == 0 {
                        self.stalled = true;
                        return Ok(());
                    }
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

/// Closing the last open end of a FIFO discards what is still in it. A client that
/// opens its end late (after a short exec already finished) would lose the output,
/// so the sink stays open, for a bounded time, until the FIFO has been read.
fn linger(sink: Option<File>) {
    let Some(f) = sink else { return };
    let deadline = std::time::Instant::now() + LINGER;
    while std::time::Instant::now() < deadline {
        let mut unread: libc::c_int = 0;
        if unsafe { libc::ioctl(f.as_raw_fd(), libc::FIONREAD, &mut unread) } < 0 || unread == 0 {
            return;
        }
        thread::sleep(Duration::from_millis(10));
    }
}

fn copy_input(mut fifo: File, stop: File, slot: &Mutex<Option<File>>) {
    let mut buf = [0u8; BUF];
    loop {
        let mut fds = [
            libc::pollfd {
                fd: fifo.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: stop.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        let r = unsafe { libc::poll(fds.as_mut_ptr(), 2, -1) };
        if r < 0 {
            if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return;
        }
        // The stop pipe becomes readable (EOF) when CloseIO drops its write end. What
        // the client wrote before asking for the close still goes in: `echo x | kura
        // run -i` writes and closes at once, often before this thread has run.
        if fds[1].revents != 0 {
            drain_input(&mut fifo, slot, &mut buf);
            return;
        }
        let n = match fifo.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return,
        };
        let mut g = slot.lock().unwrap();
        let Some(dst) = g.as_mut() else { return };
        if dst.write_all(&buf[..n]).is_err() {
            g.take();
            return;
        }
    }
}

/// Copies what the FIFO holds now, without waiting for more.
fn drain_input(fifo: &mut File, slot: &Mutex<Option<File>>, buf: &mut [u8]) {
    loop {
        let mut pfd = libc::pollfd {
            fd: fifo.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        if unsafe { libc::poll(&mut pfd, 1, 0) } <= 0 || pfd.revents & libc::POLLIN == 0 {
            return;
        }
        let n = match fifo.read(buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let mut g = slot.lock().unwrap();
        let Some(dst) = g.as_mut() else { return };
        if dst.write_all(&buf[..n]).is_err() {
            return;
        }
    }
}
