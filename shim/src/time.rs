//! Wall-clock timestamps for exit records and CRI log lines, without a date crate:
//! RFC 3339 in UTC with nanoseconds, and protobuf Timestamps.

use protobuf::well_known_types::timestamp::Timestamp;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub fn to_proto(t: SystemTime) -> Timestamp {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let mut ts = Timestamp::new();
    ts.seconds = d.as_secs() as i64;
    ts.nanos = d.subsec_nanos() as i32;
    ts
}

/// `2024-05-01T12:00:00.123456789Z`.
pub fn rfc3339_nano(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (y, m, day) = civil_from_days((secs / 86_400) as i64);
    let s = secs % 86_400;
    format!(
        "{y:04}-{m:02}-{day:02}T{:02}:{:02}:{:02}.{:09}Z",
        s / 3600,
        s / 60 % 60,
        s % 60,
        d.subsec_nanos()
    )
}

/// Parses what [`rfc3339_nano`] writes (the exit record's own format).
pub fn parse_rfc3339_nano(s: &str) -> Option<SystemTime> {
    let b = s.as_bytes();
    if b.len() != 30 || b[29] != b'Z' {
        return None;
    }
    let n = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    let days = days_from_civil(n(0..4)?, n(5..7)?, n(8..10)?);
    let secs = days * 86_400 + n(11..13)? * 3600 + n(14..16)? * 60 + n(17..19)?;
    let nanos = n(20..29)?;
    Some(UNIX_EPOCH + Duration::new(secs.try_into().ok()?, nanos as u32))
}

// Howard Hinnant's days <-> civil date algorithms (proleptic Gregorian).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_and_parses() {
        let t = UNIX_EPOCH + Duration::new(1_700_000_000, 5);
        let s = rfc3339_nano(t);
        assert_eq!(s, "2023-11-14T22:13:20.000000005Z");
        assert_eq!(parse_rfc3339_nano(&s), Some(t));
        let leap = UNIX_EPOCH + Duration::new(951_782_400, 0); // 2000-02-29
        assert_eq!(&rfc3339_nano(leap)[..10], "2000-02-29");
        assert_eq!(parse_rfc3339_nano("garbage"), None);
    }
}
