//! Running a helper program (the OCI runtime, the publish binary) to completion through
//! the reaper. Output goes to memfds rather than pipes: no reader threads, no deadlock
//! when a command fills one stream while we read the other, and a container the
//! runtime forks cannot keep our pipe open.

use crate::reaper::{Exit, Reaper};
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::fd::FromRawFd;
use std::process::{Command, Stdio};

pub struct Output {
    pub status: i32,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

pub fn memfd(name: &str) -> io::Result<File> {
    let c = std::ffi::CString::new(name).expect("no NUL in memfd name");
    let fd = unsafe { libc::memfd_create(c.as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(unsafe { File::from_raw_fd(fd) })
}

fn read_back(mut f: File) -> Vec<u8> {
    let mut v = Vec::new();
    let _ = f.seek(SeekFrom::Start(0));
    let _ = f.read_to_end(&mut v);
    v
}

/// Runs `cmd` with `input` on stdin (empty: /dev/null) and captures stdout and stderr,
/// unless the caller already set them.
pub fn run(reaper: &Reaper, cmd: &mut Command, input: &[u8], capture: bool) -> io::Result<Output> {
    if input.is_empty() {
        cmd.stdin(Stdio::null());
    } else {
        let mut f = memfd("stdin")?;
        f.write_all(input)?;
        f.seek(SeekFrom::Start(0))?;
        cmd.stdin(f);
    }
    let (out, err) = if capture {
        let o = memfd("stdout")?;
        let e = memfd("stderr")?;
        cmd.stdout(o.try_clone()?).stderr(e.try_clone()?);
        (Some(o), Some(e))
    } else {
        (None, None)
    };
    let (_pid, rx) = reaper.spawn(cmd)?;
    let Exit { status, .. } = rx
        .recv()
        .map_err(|_| io::Error::other("reaper went away"))?;
    Ok(Output {
        status,
        stdout: out.map(read_back).unwrap_or_default(),
        stderr: err.map(read_back).unwrap_or_default(),
    })
}

/// Runs `cmd` with the stdio its caller set (a container's pipes or pty side), waiting
/// for it through the reaper.
pub fn run_keep_stdio(reaper: &Reaper, cmd: &mut Command) -> io::Result<Output> {
    let (_pid, rx) = reaper.spawn(cmd)?;
    let Exit { status, .. } = rx
        .recv()
        .map_err(|_| io::Error::other("reaper went away"))?;
    Ok(Output {
        status,
        stdout: Vec::new(),
        stderr: Vec::new(),
    })
}
