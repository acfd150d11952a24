//! Timestamps, the [`Clock`] trait and RFC 3339 formatting without allocation.

/// Microseconds since the Unix epoch (UTC).
///
/// On devices without a wall clock, the same type carries microseconds of uptime; the gateway
/// maps them to wall-clock time (see the device wire format).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Timestamp(pub u64);

/// Length of a formatted timestamp: `2026-11-24T20:58:48.336122+00:00`.
pub const RFC3339_LEN: usize = 32;

impl Timestamp {
    /// The epoch itself.
    pub const ZERO: Self = Self(0);

    /// Builds a timestamp from seconds and microseconds since the epoch.
    pub const fn from_secs_micros(secs: u64, micros: u32) -> Self {
        Self(secs.saturating_mul(1_000_000).saturating_add(micros as u64))
    }

    /// Microseconds since the epoch.
    pub const fn as_micros(self) -> u64 {
        self.0
    }

    /// Microseconds from `earlier` to `self` (0 if `earlier` is later).
    pub const fn micros_since(self, earlier: Self) -> u64 {
        self.0.saturating_sub(earlier.0)
    }

    /// Formats as RFC 3339 UTC with exactly six fraction digits and a `+00:00` suffix, the form
    /// the Python agent sends (`2026-11-24T20:58:48.336122+00:00`). Unlike Python, the fraction
    /// is present even when it is zero. Years past 9999 are clamped to 9999-12-31T23:59:59.999999.
    pub fn to_rfc3339(self) -> [u8; RFC3339_LEN] {
        const MAX: u64 = 253_402_300_799_999_999; // 9999-12-31T23:59:59.999999
        let t = if self.0 > MAX { MAX } else { self.0 };
        let micros = (t % 1_000_000) as u32;
        let secs = t / 1_000_000;
        let days = secs / 86_400;
        let sod = (secs % 86_400) as u32;
        let (y, m, d) = civil_from_days(days as i64);
        let mut out = *b"0000-00-00T00:00:00.000000+00:00";
        put_digits(&mut out[0..4], y as u32);
        put_digits(&mut out[5..7], m);
        put_digits(&mut out[8..10], d);
        put_digits(&mut out[11..13], sod / 3600);
        put_digits(&mut out[14..16], (sod / 60) % 60);
        put_digits(&mut out[17..19], sod % 60);
        put_digits(&mut out[20..26], micros);
        out
    }

    /// Parses an RFC 3339 timestamp (see [`parse_rfc3339_micros`]); `None` before the epoch.
    pub fn parse_rfc3339(s: &str) -> Option<Self> {
        parse_rfc3339_micros(s)
            .and_then(|m| u64::try_from(m).ok())
            .map(Self)
    }
}

/// Parses an RFC 3339 timestamp into signed microseconds since the epoch: `YYYY-MM-DDTHH:MM:SS`,
/// an optional fraction of 1 to 9 digits (digits past the sixth are truncated), and a `Z`,
/// `+hh:mm` or `-hh:mm` suffix; a missing suffix is read as UTC (Elixir's naive timestamps).
/// Dates must exist (no 30 February) and offsets be at most 23:59. These are the forms every
/// Scout agent sends: Python (6 digits, `+00:00`), Node (3 digits, `Z`), PHP, Elixir.
pub fn parse_rfc3339_micros(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 19 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let y = num(&b[0..4])?;
    let mo = num(&b[5..7])?;
    let d = num(&b[8..10])?;
    let h = num(&b[11..13])?;
    let mi = num(&b[14..16])?;
    let se = num(&b[17..19])?;
    if !(1..=12).contains(&mo) || d < 1 || d > days_in_month(i64::from(y), mo) {
        return None;
    }
    if h > 23 || mi > 59 || se > 60 {
        return None;
    }
    let mut i = 19;
    let mut micros = 0u32;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            if i - start < 6 {
                micros = micros * 10 + u32::from(b[i] - b'0');
            }
            i += 1;
        }
        let n = i - start;
        if n == 0 || n > 9 {
            return None;
        }
        for _ in n..6 {
            micros *= 10;
        }
    }
    let offset_secs: i64 = match b.get(i..)? {
        [] | [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let oh = num(&[*h1, *h2])?;
            let om = num(&[*m1, *m2])?;
            if oh > 23 || om > 59 {
                return None;
            }
            let v = i64::from(oh * 3600 + om * 60);
            if *sign == b'-' { -v } else { v }
        }
        _ => return None,
    };
    let days = days_from_civil(i64::from(y), mo, d);
    let secs = days * 86_400 + i64::from(h * 3600 + mi * 60 + se) - offset_secs;
    Some(secs * 1_000_000 + i64::from(micros))
}

/// Days in month `m` (1-12) of year `y`, proleptic Gregorian.
fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        2 if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

fn num(b: &[u8]) -> Option<u32> {
    let mut v = 0u32;
    for &c in b {
        if !c.is_ascii_digit() {
            return None;
        }
        v = v * 10 + u32::from(c - b'0');
    }
    Some(v)
}

fn put_digits(dst: &mut [u8], mut v: u32) {
    for slot in dst.iter_mut().rev() {
        *slot = b'0' + (v % 10) as u8;
        v /= 10;
    }
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (H. Hinnant's algorithm).
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (the inverse of [`civil_from_days`]).
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// A source of the current time.
///
/// Implementations must be cheap (this is read twice per span) and must never block or panic.
pub trait Clock {
    /// The current time.
    fn now(&self) -> Timestamp;
}

impl<C: Clock + ?Sized> Clock for &C {
    fn now(&self) -> Timestamp {
        (**self).now()
    }
}

/// A clock that returns a settable time; for tests and simulations.
#[derive(Debug, Default)]
pub struct ManualClock {
    now: core::cell::Cell<u64>,
}

impl ManualClock {
    /// A clock reading `start`.
    pub const fn new(start: Timestamp) -> Self {
        Self {
            now: core::cell::Cell::new(start.0),
        }
    }
    /// Sets the time.
    pub fn set(&self, t: Timestamp) {
        self.now.set(t.0);
    }
    /// Moves the time forward by `micros`.
    pub fn advance(&self, micros: u64) {
        self.now.set(self.now.get().saturating_add(micros));
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        Timestamp(self.now.get())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fmt(t: Timestamp) -> heapless::String<32> {
        heapless::String::from_utf8(heapless::Vec::from_slice(&t.to_rfc3339()).unwrap()).unwrap()
    }

    #[test]
    fn formats_python_style() {
        assert_eq!(fmt(Timestamp(0)), "1970-01-01T00:00:00.000000+00:00");
        // 2026-11-24T20:58:48.336122 UTC (a capture's timestamp)
        let t = Timestamp::from_secs_micros(1_795_553_928, 336_122);
        assert_eq!(fmt(t), "2026-11-24T20:58:48.336122+00:00");
        assert_eq!(
            fmt(Timestamp::from_secs_micros(951_782_400, 1)),
            "2000-02-29T00:00:00.000001+00:00"
        );
        assert_eq!(fmt(Timestamp(u64::MAX)), "9999-12-31T23:59:59.999999+00:00");
    }

    #[test]
    fn parses_all_agent_forms() {
        let t = Timestamp::from_secs_micros(1_795_553_928, 336_122);
        assert_eq!(
            Timestamp::parse_rfc3339("2026-11-24T20:58:48.336122+00:00"),
            Some(t)
        );
        assert_eq!(
            Timestamp::parse_rfc3339("2026-11-24T20:58:48.336122Z"),
            Some(t)
        );
        assert_eq!(
            Timestamp::parse_rfc3339("2026-11-24T20:58:48.336Z"),
            Some(Timestamp::from_secs_micros(1_795_553_928, 336_000))
        );
        assert_eq!(
            Timestamp::parse_rfc3339("2026-11-24T20:58:48+00:00"),
            Some(Timestamp::from_secs_micros(1_795_553_928, 0))
        );
        assert_eq!(
            Timestamp::parse_rfc3339("2026-11-24T21:58:48+01:00"),
            Some(Timestamp::from_secs_micros(1_795_553_928, 0))
        );
        assert_eq!(Timestamp::parse_rfc3339("2026-11-24 garbage"), None);
        for bad in [
            "2026-13-24T20:58:48Z",
            "2026-02-30T20:58:48Z",
            "2026-11-24T20:58:48+24:00",
            "2026-11-24T20:58:48+00:60",
            "2026-11-24T20:58:48.1234567890Z",
            "2026-11-24T20:58:48.Z",
        ] {
            assert_eq!(Timestamp::parse_rfc3339(bad), None, "{bad}");
        }
        assert!(Timestamp::parse_rfc3339("2024-02-29T00:00:00Z").is_some());
        assert_eq!(
            Timestamp::parse_rfc3339("2026-11-24T20:58:48"),
            Some(Timestamp::from_secs_micros(1_795_553_928, 0)),
            "no suffix: UTC"
        );
        assert_eq!(
            parse_rfc3339_micros("1969-12-31T23:59:59.999999Z"),
            Some(-1)
        );
        assert_eq!(Timestamp::parse_rfc3339("1969-12-31T23:59:59Z"), None);
    }

    #[test]
    fn round_trips_across_range() {
        let mut t = 0u64;
        while t < 253_402_300_799_000_000 {
            let s = t.to_le_bytes();
            let text = Timestamp(t).to_rfc3339();
            let parsed = Timestamp::parse_rfc3339(core::str::from_utf8(&text).unwrap());
            assert_eq!(parsed, Some(Timestamp(t)), "{s:?}");
            t = t * 3 + 987_654_321_123;
        }
    }
}
