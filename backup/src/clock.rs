//! Time: the clock (injectable for tests and drills), and the UTC stamps in
//! backup names (`20261129T144637Z`) and manifests (`2026-11-29T14:46:37Z`).

use crate::error::{Error, Result};
use time::{Date, Month, OffsetDateTime, PrimitiveDateTime, Time};

/// The variable that sets the clock: seconds since the epoch, or
/// `YYYY-MM-DDTHH:MM:SSZ`. Retention is tested with it over a simulated year.
pub const NOW_ENV: &str = "NXS_BACKUP_NOW";

/// Seconds since the epoch: `$NXS_BACKUP_NOW` if set, else the system clock.
pub fn now() -> Result<i64> {
    match std::env::var(NOW_ENV) {
        Ok(v) if !v.is_empty() => v
            .parse::<i64>()
            .ok()
            .or_else(|| parse_rfc3339(&v))
            .ok_or_else(|| Error::usage(format!("{NOW_ENV}=`{v}` is neither seconds nor YYYY-MM-DDTHH:MM:SSZ"))),
        _ => Ok(std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0)),
    }
}

pub fn utc(t: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(t).unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

/// `20261129T144637Z`, as in backup names.
pub fn stamp(t: i64) -> String {
    let d = utc(t);
    format!("{:04}{:02}{:02}T{:02}{:02}{:02}Z", d.year(), d.month() as u8, d.day(), d.hour(), d.minute(), d.second())
}

/// `2026-11-29T14:46:37Z`, as in manifests and listings.
pub fn rfc3339(t: i64) -> String {
    let d = utc(t);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        d.year(),
        d.month() as u8,
        d.day(),
        d.hour(),
        d.minute(),
        d.second()
    )
}

fn from_parts(y: &str, mo: &str, d: &str, h: &str, mi: &str, s: &str) -> Option<i64> {
    let n = |v: &str| -> Option<u32> { v.bytes().all(|b| b.is_ascii_digit()).then(|| v.parse().ok()).flatten() };
    let month = Month::try_from(n(mo)? as u8).ok()?;
    let date = Date::from_calendar_date(n(y)? as i32, month, n(d)? as u8).ok()?;
    let time = Time::from_hms(n(h)? as u8, n(mi)? as u8, n(s)? as u8).ok()?;
    Some(PrimitiveDateTime::new(date, time).assume_utc().unix_timestamp())
}

/// Reads a stamp as [`stamp`] writes it.
pub fn parse_stamp(s: &str) -> Option<i64> {
    if s.len() != 16 || s.as_bytes()[8] != b'T' || !s.ends_with('Z') {
        return None;
    }
    from_parts(&s[0..4], &s[4..6], &s[6..8], &s[9..11], &s[11..13], &s[13..15])
}

/// Reads a time as [`rfc3339`] writes it.
pub fn parse_rfc3339(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if s.len() != 20 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || b[13] != b':' || b[16] != b':' || b[19] != b'Z'
    {
        return None;
    }
    from_parts(&s[0..4], &s[5..7], &s[8..10], &s[11..13], &s[14..16], &s[17..19])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_round_trip() {
        for t in [0i64, 1_767_225_600, 1_796_000_000, 4_102_444_799] {
            assert_eq!(parse_stamp(&stamp(t)), Some(t));
            assert_eq!(parse_rfc3339(&rfc3339(t)), Some(t));
        }
        assert_eq!(stamp(1_767_225_600), "20260101T000000Z");
        assert_eq!(parse_stamp("20261331T000000Z"), None);
        assert_eq!(parse_stamp("2026-11-29T00000"), None);
        assert_eq!(parse_rfc3339("2026-02-30T00:00:00Z"), None);
    }
}
