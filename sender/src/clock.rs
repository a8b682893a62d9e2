//! Wall-clock time as Kickoff records it: milliseconds since the UNIX epoch,
//! RFC 3339 for people, and `"3s"`-style durations in files.
//!
//! One home for these so that every record, audit row and message agrees on
//! the unit and the format, and so that arithmetic on times read from
//! outside has one place to be checked.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Milliseconds since the UNIX epoch, now.
pub fn now_ms() -> u64 {
    ms(SystemTime::now())
}

/// Milliseconds since the UNIX epoch of `t` (0 before the epoch).
pub fn ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The instant `ms` milliseconds after the epoch.
pub fn at(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

/// `2026-12-02T10:23:26Z`.
pub fn rfc3339_s(ms: u64) -> String {
    humantime::format_rfc3339_seconds(at(ms)).to_string()
}

/// `2026-12-02T10:23:26.123Z`.
pub fn rfc3339_ms(ms: u64) -> String {
    humantime::format_rfc3339_millis(at(ms)).to_string()
}

/// `"3s"`-style durations in serde (`#[serde(with = "crate::clock::duration")]`).
pub mod duration {
    use std::time::Duration;

    /// Serializes as `"3s"`.
    pub fn serialize<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }

    /// Parses `"3s"`, `"1m 30s"`, `"250ms"`.
    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = <String as serde::Deserialize>::deserialize(d)?;
        humantime::parse_duration(&s).map_err(|e| serde::de::Error::custom(format!("{s:?} is not a duration like \"3s\": {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_and_round_trips() {
        assert_eq!(rfc3339_s(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339_ms(1_500), "1970-01-01T00:00:01.500Z");
        assert_eq!(ms(at(123_456)), 123_456);
        assert_eq!(ms(UNIX_EPOCH - Duration::from_secs(1)), 0);
    }
}
