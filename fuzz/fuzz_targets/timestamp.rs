//! `Timestamp::parse_rfc3339` and `to_rfc3339`, against a naive reference (day counting year by
//! year, month by month) written from RFC 3339 rather than from scout-core's algorithm.
//!
//! Invariants:
//! - no panic on any string;
//! - whatever parses formats and parses back to the same value (formatting clamps to
//!   9999-12-31T23:59:59.999999, as documented, so values past it come back clamped);
//! - every strict RFC 3339 timestamp (real calendar date, hour <= 23, minute <= 59,
//!   second <= 59, 1 to 9 fraction digits, `Z` or an offset up to 23:59, at or after the epoch)
//!   parses to the reference's value, with fraction digits past the sixth truncated;
//! - for the first 8 input bytes as a `u64`, `to_rfc3339` equals the reference's text, parses
//!   back to the same value, and so do its `Z` form and its millisecond form (truncated).
//!
//! - whatever parses is accepted, with the same value, by the reference extended with the two
//!   documented leniencies only: second 60 and a missing suffix (read as UTC).
#![no_main]

use libfuzzer_sys::fuzz_target;
use scout_core::Timestamp;

/// 9999-12-31T23:59:59.999999, the largest formatted value.
const MAX: u64 = 253_402_300_799_999_999;

fn leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

fn month_days(y: i64, m: u32) -> u32 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if leap(y) => 29,
        _ => 28,
    }
}

/// Days from 1970-01-01 to `y-m-d`, counted year by year.
fn days(y: i64, m: u32, d: u32) -> i64 {
    let mut n = 0i64;
    if y >= 1970 {
        for yy in 1970..y {
            n += if leap(yy) { 366 } else { 365 };
        }
    } else {
        for yy in y..1970 {
            n -= if leap(yy) { 366 } else { 365 };
        }
    }
    for mm in 1..m {
        n += i64::from(month_days(y, mm));
    }
    n + i64::from(d) - 1
}

fn digits(b: &[u8]) -> Option<u32> {
    b.iter().try_fold(0u32, |v, &c| {
        c.is_ascii_digit().then(|| v * 10 + u32::from(c - b'0'))
    })
}

/// Strict RFC 3339 (section 5.6), UTC result in microseconds; `None` outside the strict form.
fn reference_parse(s: &str) -> Option<u64> {
    reference(s, false)
}

/// The reference, or with `lenient` also second 60 and no suffix.
fn reference(s: &str, lenient: bool) -> Option<u64> {
    let b = s.as_bytes();
    if b.len() < 19
        || b[4] != b'-'
        || b[7] != b'-'
        || !matches!(b[10], b'T' | b't' | b' ')
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let y = i64::from(digits(&b[0..4])?);
    let mo = digits(&b[5..7])?;
    let d = digits(&b[8..10])?;
    let h = digits(&b[11..13])?;
    let mi = digits(&b[14..16])?;
    let se = digits(&b[17..19])?;
    let max_se = if lenient { 60 } else { 59 };
    if !(1..=12).contains(&mo) || d < 1 || d > month_days(y, mo) || h > 23 || mi > 59 || se > max_se
    {
        return None;
    }
    let mut rest = &b[19..];
    let mut micros = 0u64;
    if let Some(r) = rest.strip_prefix(b".") {
        let n = r.iter().take_while(|c| c.is_ascii_digit()).count();
        if !(1..=9).contains(&n) {
            return None;
        }
        let mut frac = r[..n.min(6)].to_vec();
        frac.resize(6, b'0');
        micros = u64::from(digits(&frac)?);
        rest = &r[n..];
    }
    let offset: i64 = match rest {
        [] if lenient => 0,
        [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let oh = digits(&[*h1, *h2])?;
            let om = digits(&[*m1, *m2])?;
            if oh > 23 || om > 59 {
                return None;
            }
            let v = i64::from(oh * 3600 + om * 60);
            if *sign == b'-' { -v } else { v }
        }
        _ => return None,
    };
    let secs = days(y, mo, d) * 86_400 + i64::from(h * 3600 + mi * 60 + se) - offset;
    (secs >= 0).then(|| secs as u64 * 1_000_000 + micros)
}

/// The Python agent's form, `YYYY-MM-DDTHH:MM:SS.ffffff+00:00`, by counting.
fn reference_format(t: u64) -> String {
    let micros = t % 1_000_000;
    let secs = t / 1_000_000;
    let mut day = (secs / 86_400) as i64;
    let sod = secs % 86_400;
    let mut y = 1970i64;
    loop {
        let len = if leap(y) { 366 } else { 365 };
        if day < len {
            break;
        }
        day -= len;
        y += 1;
    }
    let mut m = 1;
    while day >= i64::from(month_days(y, m)) {
        day -= i64::from(month_days(y, m));
        m += 1;
    }
    format!(
        "{y:04}-{m:02}-{:02}T{:02}:{:02}:{:02}.{micros:06}+00:00",
        day + 1,
        sod / 3600,
        sod / 60 % 60,
        sod % 60
    )
}

fn text(t: Timestamp) -> String {
    String::from_utf8(t.to_rfc3339().to_vec()).expect("ASCII")
}

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data) {
        let parsed = Timestamp::parse_rfc3339(s);
        if let Some(want) = reference_parse(s) {
            assert_eq!(parsed, Some(Timestamp(want)), "strict RFC 3339 {s:?}");
        }
        if let Some(t) = parsed {
            assert_eq!(
                reference(s, true),
                Some(t.0),
                "accepted beyond the documented forms: {s:?}"
            );
            let f = text(t);
            assert_eq!(
                Timestamp::parse_rfc3339(&f),
                Some(Timestamp(t.0.min(MAX))),
                "{s:?} parsed to {t:?}, formatted {f:?}"
            );
        }
    }
    if data.len() >= 8 {
        let t = u64::from_le_bytes(data[..8].try_into().unwrap());
        // Also bias toward the representable range, where most real values are.
        for t in [t, t % (MAX + 1)] {
            let clamped = t.min(MAX);
            let f = text(Timestamp(t));
            assert_eq!(f, reference_format(clamped), "to_rfc3339({t})");
            assert_eq!(
                Timestamp::parse_rfc3339(&f),
                Some(Timestamp(clamped)),
                "{f}"
            );
            let z = format!("{}Z", &f[..26]);
            assert_eq!(
                Timestamp::parse_rfc3339(&z),
                Some(Timestamp(clamped)),
                "{z}"
            );
            let ms = format!("{}Z", &f[..23]);
            assert_eq!(
                Timestamp::parse_rfc3339(&ms),
                Some(Timestamp(clamped - clamped % 1000)),
                "{ms}"
            );
        }
    }
});
