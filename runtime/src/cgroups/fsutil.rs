//! Small file helpers for cgroupfs: every error names the file, and resource
//! writes also name the OCI field they came from.

use std::fs::OpenOptions;
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, Result};

/// One write(2) of `value`, as the kernel parses each write as one command.
/// O_TRUNC (not O_CREAT): cgroupfs ignores it, and regular files in tests then hold
/// only the last value written.
pub(crate) fn write(dir: &Path, file: &str, value: &str) -> io::Result<()> {
    let mut f = OpenOptions::new()
        .write(true)
        .truncate(true)
        .custom_flags(libc::O_CLOEXEC)
        .open(dir.join(file))?;
    f.write_all(value.as_bytes())
}

/// `write` for a resource: `linux.resources.memory.limit: writing "1" to /x/memory.max: ...`.
pub(crate) fn set(dir: &Path, file: &str, value: &str, field: &str) -> Result<()> {
    write(dir, file, value).map_err(|e| {
        anyhow!(
            "{field}: writing {value:?} to {}: {}",
            dir.join(file).display(),
            explain(&e)
        )
    })
}

/// The kernel's errno says little on cgroupfs; a hint saves a trip to the docs.
fn explain(e: &io::Error) -> String {
    let hint = match e.raw_os_error() {
        Some(libc::ENOENT) => " (this kernel or controller does not provide the file)",
        Some(libc::EINVAL) => " (value rejected by the kernel)",
        Some(libc::EBUSY) => " (in use, or conflicts with the current value)",
        _ => "",
    };
    format!("{e}{hint}")
}

pub(crate) fn read(dir: &Path, file: &str) -> Result<String> {
    std::fs::read_to_string(dir.join(file))
        .map_err(|e| anyhow!("reading {}: {e}", dir.join(file).display()))
}

pub(crate) fn exists(dir: &Path, file: &str) -> bool {
    dir.join(file).exists()
}

/// A single number, with the kernel's "max" as `u64::MAX`. v1 prints unlimited as
/// a huge number and the `-1` some files accept reads back as that too.
pub(crate) fn parse_u64(s: &str) -> Option<u64> {
    let s = s.trim();
    if s == "max" {
        return Some(u64::MAX);
    }
    s.parse::<u64>()
        .ok()
        .or_else(|| s.parse::<i64>().ok().map(|_| 0))
}

pub(crate) fn read_u64(dir: &Path, file: &str) -> Result<u64> {
    let s = read(dir, file)?;
    parse_u64(&s).ok_or_else(|| anyhow!("{}: not a number: {s:?}", dir.join(file).display()))
}

/// Reads a number if the file is there: stats skip what the kernel does not offer.
pub(crate) fn read_u64_opt(dir: &Path, file: &str) -> Option<u64> {
    std::fs::read_to_string(dir.join(file))
        .ok()
        .and_then(|s| parse_u64(&s))
}

/// `key value` lines (memory.stat, cpu.stat, memory.events, ...).
pub(crate) fn flat_keyed(text: &str) -> impl Iterator<Item = (&str, u64)> {
    text.lines().filter_map(|l| {
        let (k, v) = l.split_once(' ')?;
        Some((k, parse_u64(v)?))
    })
}

pub(crate) fn keyed_value(dir: &Path, file: &str, key: &str) -> Option<u64> {
    let text = std::fs::read_to_string(dir.join(file)).ok()?;
    let found = flat_keyed(&text).find(|(k, _)| *k == key).map(|(_, v)| v);
    found
}

/// Pids in `dir`'s `cgroup.procs`; an absent cgroup has none.
pub(crate) fn procs(dir: &Path) -> Result<Vec<i32>> {
    match std::fs::read_to_string(dir.join("cgroup.procs")) {
        Ok(s) => Ok(s.lines().filter_map(|l| l.trim().parse().ok()).collect()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(anyhow!(
            "reading {}: {e}",
            dir.join("cgroup.procs").display()
        )),
    }
}

/// Pids of `dir` and of every cgroup below it (a container may nest cgroups).
pub(crate) fn procs_recursive(dir: &Path) -> Result<Vec<i32>> {
    let mut out = procs(dir)?;
    for child in subdirs(dir) {
        out.extend(procs_recursive(&child)?);
    }
    Ok(out)
}

fn subdirs(dir: &Path) -> Vec<PathBuf> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    rd.filter_map(|e| e.ok())
        .filter(|e| e.file_type().map(|t| t.is_dir()).unwrap_or(false))
        .map(|e| e.path())
        .collect()
}

/// Moves `pid` into `dir`. EINVAL can mean the task is still being forked
/// (TASK_NEW); it settles within milliseconds, so retry a few times.
pub(crate) fn add_proc(dir: &Path, pid: i32) -> Result<()> {
    let mut delay = Duration::from_millis(2);
    for attempt in 0.. {
        match write(dir, "cgroup.procs", &pid.to_string()) {
            Ok(()) => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) && attempt < 5 => {
                std::thread::sleep(delay);
                delay *= 2;
            }
            Err(e) => {
                return Err(anyhow!(
                    "adding pid {pid} to {}: {e}",
                    dir.join("cgroup.procs").display()
                ))
            }
        }
    }
    unreachable!()
}

/// Removes `dir` and any cgroups below it. A cgroup whose last task is still
/// exiting answers EBUSY for a moment, so back off and retry for ~0.3 s in total.
pub(crate) fn remove_tree(dir: &Path) -> Result<()> {
    // The common case is a leaf: one rmdir, instead of listing every hierarchy's
    // directory first (a delete on a hybrid host touches ten of them).
    match std::fs::remove_dir(dir) {
        Ok(()) => return Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(_) => {}
    }
    for child in subdirs(dir) {
        remove_tree(&child)?;
    }
    let mut delay = Duration::from_millis(10);
    for attempt in 0.. {
        match std::fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) && attempt < 5 => {
                std::thread::sleep(delay);
                delay *= 2;
            }
            Err(e) => return Err(anyhow!("removing cgroup {}: {e}", dir.display())),
        }
    }
    unreachable!()
}

/// Polls `done` with growing sleeps until it holds or `timeout` passes.
pub(crate) fn wait_until(
    timeout: Duration,
    mut done: impl FnMut() -> Result<bool>,
) -> Result<bool> {
    let start = std::time::Instant::now();
    let mut delay = Duration::from_micros(200);
    loop {
        if done()? {
            return Ok(true);
        }
        if start.elapsed() >= timeout {
            return Ok(false);
        }
        std::thread::sleep(delay);
        delay = (delay * 2).min(Duration::from_millis(20));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_and_keyed_files() {
        assert_eq!(parse_u64("max\n"), Some(u64::MAX));
        assert_eq!(parse_u64(" 42\n"), Some(42));
        assert_eq!(parse_u64("-1"), Some(0));
        assert_eq!(parse_u64("x"), None);
        let t = "usage_usec 10\nuser_usec 7\nweird\n";
        let v: Vec<_> = flat_keyed(t).collect();
        assert_eq!(v, vec![("usage_usec", 10), ("user_usec", 7)]);
    }
}
