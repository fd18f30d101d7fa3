//! Runtime logging to `--log FILE` in runc's text or JSON line format.
//!
//! containerd's runc shim reads the last `"level":"error"` JSON line of this file to
//! report why a runtime call failed, so errors must land here as well as on stderr.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::sync::OnceLock;
use std::time::SystemTime;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Format {
    Text,
    Json,
}

struct Logger {
    file: Option<File>,
    format: Format,
    debug: bool,
}

static LOGGER: OnceLock<Logger> = OnceLock::new();

/// Opens the log once per process. A log file that cannot be opened is an error the
/// caller reports: silently losing the log would hide failures from containerd.
pub fn init(path: Option<&std::path::Path>, format: Format, debug: bool) -> std::io::Result<()> {
    let file = match path {
        Some(p) => Some(OpenOptions::new().create(true).append(true).open(p)?),
        None => None,
    };
    let _ = LOGGER.set(Logger {
        file,
        format,
        debug,
    });
    Ok(())
}

pub fn debug_enabled() -> bool {
    LOGGER.get().is_some_and(|l| l.debug)
}

fn write(level: &str, msg: &str) {
    let Some(l) = LOGGER.get() else { return };
    let Some(mut f) = l.file.as_ref() else {
        if l.debug {
            eprintln!("{level}: {msg}");
        }
        return;
    };
    let now = rfc3339(SystemTime::now());
    let line = match l.format {
        Format::Json => {
            let v = serde_json::json!({"level": level, "msg": msg, "time": now});
            format!("{v}\n")
        }
        Format::Text => format!("time=\"{now}\" level={level} msg={msg:?}\n"),
    };
    // One write(2) per line so concurrent runtime processes appending to one file do not interleave.
    let _ = f.write_all(line.as_bytes());
}

pub fn error(msg: &str) {
    write("error", msg);
}

pub fn warn(msg: &str) {
    write("warning", msg);
}

pub fn debug(msg: &str) {
    if debug_enabled() {
        write("debug", msg);
    }
}

/// RFC 3339 in UTC with nanoseconds, the format of runc's log and of the OCI `created` field.
pub fn rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86400), secs.rem_euclid(86400));
    let (y, m, dd) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{dd:02}T{:02}:{:02}:{:02}.{:09}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60,
        d.subsec_nanos()
    )
}

// Howard Hinnant's days-to-civil algorithm; avoids pulling a date crate into the start path.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Step timings for profiling the start path: `KURA_RUNTIME_TRACE=1` prints the
/// microseconds since the process started at each named step, to stderr. Off, it
/// costs one cached environment check per step.
pub fn step(name: &str) {
    use std::sync::OnceLock;
    use std::time::Instant;
    static START: OnceLock<Option<Instant>> = OnceLock::new();
    let start =
        START.get_or_init(|| std::env::var_os("KURA_RUNTIME_TRACE").map(|_| Instant::now()));
    if let Some(t0) = start {
        let line = format!(
            "trace {:>6} {:>8}us {name}\n",
            std::process::id(),
            t0.elapsed().as_micros()
        );
        unsafe { libc::write(2, line.as_ptr().cast(), line.len()) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn rfc3339_known_dates() {
        assert_eq!(
            rfc3339(SystemTime::UNIX_EPOCH),
            "1970-01-01T00:00:00.000000000Z"
        );
        let t = SystemTime::UNIX_EPOCH + Duration::new(1_709_251_199, 5);
        assert_eq!(rfc3339(t), "2024-02-29T23:59:59.000000005Z");
    }
}
