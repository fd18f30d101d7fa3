//! The container's log file, written by the shim itself so it is complete even while
//! no manager is attached. Two formats: `raw` (the bytes, as containerd's `file://` IO
//! writes them) and `cri` (kubelet's format: `<RFC3339Nano> <stream> <P|F> <text>`,
//! one line per write, so readers can follow it while it grows).

use crate::time::rfc3339_nano;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Raw,
    Cri,
}

pub struct LogFile {
    file: File,
    format: Format,
}

/// A CRI line longer than this is split into partial (`P`) lines, as containerd does.
const MAX_LINE: usize = 16 * 1024;

impl LogFile {
    pub fn open(path: &Path, format: Format) -> io::Result<Arc<LogFile>> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        Ok(Arc::new(LogFile { file, format }))
    }

    pub fn writer(self: &Arc<Self>, stream: &'static str) -> StreamWriter {
        StreamWriter {
            log: self.clone(),
            stream,
            pending: Vec::new(),
        }
    }
}

/// One stream's view of the log; keeps the unfinished line of a CRI log.
pub struct StreamWriter {
    log: Arc<LogFile>,
    stream: &'static str,
    pending: Vec<u8>,
}

impl StreamWriter {
    pub fn write(&mut self, data: &[u8]) {
        if self.log.format == Format::Raw {
            let _ = (&self.log.file).write_all(data);
            return;
        }
        let mut rest = data;
        while let Some(i) = rest.iter().position(|b| *b == b'\n') {
            self.pending.extend_from_slice(&rest[..i]);
            // A tty ends lines with CRLF; the CR is not part of the line.
            if self.pending.last() == Some(&b'\r') {
                self.pending.pop();
            }
            self.flush_line(b'F');
            rest = &rest[i + 1..];
        }
        self.pending.extend_from_slice(rest);
        while self.pending.len() >= MAX_LINE {
            let tail = self.pending.split_off(MAX_LINE);
            self.flush_line(b'P');
            self.pending = tail;
        }
    }

    /// Writes what is left of an unfinished line (the stream ended).
    pub fn finish(&mut self) {
        if !self.pending.is_empty() {
            self.flush_line(b'F');
        }
    }

    fn flush_line(&mut self, tag: u8) {
        let ts = rfc3339_nano(SystemTime::now());
        let mut line = Vec::with_capacity(ts.len() + self.stream.len() + self.pending.len() + 5);
        line.extend_from_slice(ts.as_bytes());
        line.push(b' ');
        line.extend_from_slice(self.stream.as_bytes());
        line.push(b' ');
        line.push(tag);
        line.push(b' ');
        line.append(&mut self.pending);
        line.push(b'\n');
        // One write(2) per line on an O_APPEND file: stdout and stderr lines from two
        // threads never interleave inside a line.
        let _ = (&self.log.file).write_all(&line);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cri_lines_partial_and_full() {
        let dir = std::env::temp_dir().join(format!("kura-shim-log-{}", std::process::id()));
        let p = dir.join("c.log");
        let log = LogFile::open(&p, Format::Cri).unwrap();
        let mut w = log.writer("stdout");
        w.write(b"hello\r\nwor");
        w.write(b"ld\n");
        w.write(&vec![b'x'; MAX_LINE + 3]);
        w.finish();
        let text = std::fs::read_to_string(&p).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4, "{text}");
        assert!(lines[0].ends_with(" stdout F hello"));
        assert!(!text.contains('\r'), "CR of CRLF dropped");
        assert!(lines[1].ends_with(" stdout F world"));
        assert!(lines[2].contains(" stdout P xxx"));
        assert!(lines[3].ends_with(" stdout F xxx"));
        let _ = std::fs::remove_dir_all(dir);
    }
}
