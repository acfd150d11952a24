//! RFC 3339 UTC timestamps as sent by the language agents.
//!
//! Accepted: `YYYY-MM-DDTHH:MM:SS`, an optional fraction of 0 to 9 digits, and a `Z`, `+00:00` or other
//! `+hh:mm` / `-hh:mm` suffix (a missing suffix is read as UTC, like Elixir's naive timestamps).
//! Python sends 6 digits (none when the microsecond is 0) and `+00:00`; Node 3 digits and `Z`.

use std::fmt;

use serde::{Serialize, Serializer};

/// A point in time: microseconds since the Unix epoch (UTC).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp(pub i64);

impl Timestamp {
    /// Microseconds since the Unix epoch.
    pub fn as_micros(self) -> i64 {
        self.0
    }

    /// The current system time.
    pub fn now() -> Self {
        let now = std::time::SystemTime::now();
        match now.duration_since(std::time::UNIX_EPOCH) {
            Ok(d) => Self(i64::try_from(d.as_micros()).unwrap_or(i64::MAX)),
            Err(e) => Self(-i64::try_from(e.duration().as_micros()).unwrap_or(i64::MAX)),
        }
    }

    /// Parses an RFC 3339 timestamp (see the module documentation). Returns `None` if malformed.
    pub fn parse(s: &str) -> Option<Self> {
        scout_core::time::parse_rfc3339_micros(s).map(Self)
    }
}

impl fmt::Display for Timestamp {
    /// Formats as `YYYY-MM-DDTHH:MM:SS.ffffffZ`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = self.0.div_euclid(1_000_000);
        let micros = self.0.rem_euclid(1_000_000);
        let days = secs.div_euclid(86_400);
        let sod = secs.rem_euclid(86_400);
        let (y, m, d) = scout_core::time::civil_from_days(days);
        write!(
            f,
            "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{micros:06}Z",
            sod / 3600,
            (sod / 60) % 60,
            sod % 60
        )
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_all_agent_styles() {
        let py = Timestamp::parse("2026-11-24T20:58:48.336122+00:00").unwrap();
        assert_eq!(Timestamp::parse("2026-11-24T20:58:48.336122Z"), Some(py));
        let ms = Timestamp::parse("2026-11-24T20:58:48.336Z").unwrap();
        assert_eq!(py.0 - ms.0, 122);
        let none = Timestamp::parse("2026-11-24T20:58:48+00:00").unwrap();
        assert_eq!(ms.0 - none.0, 336_000);
        assert_eq!(py.to_string(), "2026-11-24T20:58:48.336122Z");
        assert_eq!(Timestamp::parse("1970-01-01T00:00:00Z"), Some(Timestamp(0)));
        assert_eq!(
            Timestamp::parse("1970-01-01T01:00:00+01:00"),
            Some(Timestamp(0))
        );
        assert_eq!(Timestamp(-1).to_string(), "1969-12-31T23:59:59.999999Z");
    }

    #[test]
    fn rejects_garbage() {
        for bad in [
            "",
            "2026-11-24",
            "2026-13-24T20:58:48Z",
            "2026-02-30T20:58:48Z",
            "2026-11-24T20:58:48.Z",
            "2026-11-24T20:58:48.1234567890Z",
            "2026-11-24T20:58:48+0000",
            "2026-11-24T20:58:48Zjunk",
            "2026-11-24X20:58:48Z",
            "２０２６-11-24T20:58:48Z",
        ] {
            assert_eq!(Timestamp::parse(bad), None, "{bad}");
        }
    }
}
