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

/// The longest duration any setting takes unless it says otherwise: step
/// timeouts, `[fleet]` and `aws.toml` durations, send offsets, zombie mode.
/// Launch days are counted in hours; a bound keeps every `now + setting` in
/// range, whatever the file says.
pub const MAX_SETTING: Duration = Duration::from_secs(24 * 3600);

/// A duration from a file that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    /// Not a duration at all.
    #[error("{text:?} is not a duration like \"90s\" or \"10m\": {why}")]
    Syntax {
        /// What was written.
        text: String,
        /// Why it does not parse.
        why: String,
    },
    /// Longer than the setting allows.
    #[error("{text:?} is longer than the {max} allowed", max = humantime::format_duration(*max))]
    TooLong {
        /// What was written.
        text: String,
        /// The longest allowed.
        max: Duration,
    },
}

/// Parses `"90s"`, `"1m 30s"`, `"250ms"`, at most `max`.
pub fn parse_duration(text: &str, max: Duration) -> Result<Duration, DurationError> {
    let d = humantime::parse_duration(text.trim()).map_err(|e| DurationError::Syntax { text: text.to_owned(), why: e.to_string() })?;
    if d > max {
        return Err(DurationError::TooLong { text: text.to_owned(), max });
    }
    Ok(d)
}

/// The longest outage timeout (how long a fire waits for an unreachable
/// provider) a flag or a file may ask for.
pub const MAX_OUTAGE_TIMEOUT: Duration = Duration::from_secs(3600);

/// Parses an outage timeout as written in a flag or a file (`"90s"`,
/// `"5m"`): from 1 s to [`MAX_OUTAGE_TIMEOUT`]. Here, below every module
/// that reads one (flags, `kickoff.toml`, runbooks, `aws.toml`).
///
/// The error is text on purpose: every caller wraps it in its own typed
/// error with the place it read from (flag, file:line).
pub fn parse_outage_timeout(text: &str) -> Result<Duration, String> {
    let d = parse_duration(text, MAX_OUTAGE_TIMEOUT).map_err(|e| e.to_string())?;
    if d < Duration::from_secs(1) {
        return Err(format!("{text:?} is shorter than 1 s"));
    }
    Ok(d)
}

/// `"3s"`-style durations in serde (`#[serde(with = "crate::clock::duration")]`),
/// at most [`MAX_SETTING`].
pub mod duration {
    use std::time::Duration;

    /// Serializes as `"3s"`.
    pub fn serialize<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }

    /// Parses `"3s"`, `"1m 30s"`, `"250ms"`, up to [`super::MAX_SETTING`].
    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = <String as serde::Deserialize>::deserialize(d)?;
        super::parse_duration(&s, super::MAX_SETTING).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_are_bounded() {
        assert_eq!(parse_duration(" 90s", MAX_SETTING), Ok(Duration::from_secs(90)));
        assert!(matches!(parse_duration("soon", MAX_SETTING), Err(DurationError::Syntax { .. })));
        let e = parse_duration("18446744073709551615s", MAX_SETTING).unwrap_err();
        assert!(e.to_string().contains("longer than the 1day allowed"), "{e}");
        assert!(parse_duration("25h", MAX_SETTING).is_err() && parse_duration("24h", MAX_SETTING).is_ok());
    }

    #[test]
    fn formats_and_round_trips() {
        assert_eq!(rfc3339_s(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339_ms(1_500), "1970-01-01T00:00:01.500Z");
        assert_eq!(ms(at(123_456)), 123_456);
        assert_eq!(ms(UNIX_EPOCH - Duration::from_secs(1)), 0);
    }
}
