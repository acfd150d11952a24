//! The framework-independent parts of the web integrations, as pure functions: the `path` tag
//! with filtered query parameters (spec §4.12), the `user_ip` tag, queue time from
//! `X-Queue-Start` / `X-Request-Start` (spec §4.11) and the `ignore` path prefixes.
//!
//! The tower and actix-web integrations use these; they are public so that other frameworks
//! can produce the same tags.
//!
//! ```
//! use scout_std::integrations::web;
//!
//! assert_eq!(
//!     web::filtered_query("q=b&password=hunter2&q=a"),
//!     "password=%5BFILTERED%5D&q=a&q=b"
//! );
//! assert_eq!(web::user_ip(Some("203.0.113.9, 10.0.0.1"), None, None).as_deref(), Some("203.0.113.9"));
//! // A header 50 ms old in milliseconds, for a request that started at `start_ns`.
//! let start_ns: u128 = 1_700_000_000_050_000_000;
//! assert_eq!(web::queue_time_ns("t=1700000000000", start_ns), Some(50_000_000));
//! ```

use crate::context::tag_request_static as tag_request;
use scout_core::Value;
use scout_core::config::UriReporting;
use std::net::IpAddr;
#[cfg(any(feature = "tower", feature = "actix-web"))]
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

/// Query parameter names (compared lower-cased) whose values are replaced by [`FILTERED`]
/// (spec §4.12).
pub const FILTERED_KEYS: &[&str] = &[
    "access",
    "access_token",
    "api_key",
    "apikey",
    "auth",
    "auth_token",
    "card[number]",
    "certificate",
    "credentials",
    "crypt",
    "key",
    "mysql_pwd",
    "otp",
    "passwd",
    "password",
    "private",
    "protected",
    "salt",
    "secret",
    "secret_key",
    "ssn",
    "stripetoken",
    "token",
];

/// The replacement for a filtered value.
pub const FILTERED: &str = "[FILTERED]";

/// True if a parameter with this name is filtered (case-insensitive).
pub fn is_filtered_key(key: &str) -> bool {
    is_filtered_key_bytes(key.as_bytes())
}

fn is_filtered_key_bytes(key: &[u8]) -> bool {
    // Every filtered name has 3 to 12 bytes: most keys are rejected by length alone.
    (3..=12).contains(&key.len())
        && FILTERED_KEYS
            .iter()
            .any(|k| k.as_bytes().eq_ignore_ascii_case(key))
}

/// The `path` tag: `path`, plus `?` and [`filtered_query`] when there are query parameters
/// and `uri_reporting` is [`UriReporting::FilteredParams`].
///
/// ```
/// use scout_std::integrations::web::path_tag;
/// use scout_core::config::UriReporting;
///
/// let p = path_tag("/users/7", Some("token=abc&page=2"), UriReporting::FilteredParams);
/// assert_eq!(p, "/users/7?page=2&token=%5BFILTERED%5D");
/// assert_eq!(path_tag("/users/7", Some("page=2"), UriReporting::Path), "/users/7");
/// ```
pub fn path_tag(path: &str, query: Option<&str>, uri_reporting: UriReporting) -> String {
    let query = match (uri_reporting, query) {
        (UriReporting::FilteredParams, Some(q)) => filtered_query(q),
        _ => String::new(),
    };
    if query.is_empty() {
        return path.to_owned();
    }
    let mut out = String::with_capacity(path.len() + 1 + query.len());
    out.push_str(path);
    out.push('?');
    out.push_str(&query);
    out
}

/// Decodes a query string (`&`-separated `key=value` pairs, `+` and `%XX` decoded, blank
/// values kept), replaces the values of [`FILTERED_KEYS`] with [`FILTERED`], sorts the pairs
/// and encodes them again (as Python's `urlencode`: unreserved characters kept, space as `+`,
/// everything else `%XX`). Returns an empty string when there is no parameter.
pub fn filtered_query(query: &str) -> String {
    let mut pairs: Vec<(String, String)> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            let k = decode(k);
            let v = if is_filtered_key(&k) {
                FILTERED.to_owned()
            } else {
                decode(v)
            };
            (k, v)
        })
        .collect();
    pairs.sort();
    let mut out = String::with_capacity(query.len() + 16);
    for (i, (k, v)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        encode_into(&mut out, k);
        out.push('=');
        encode_into(&mut out, v);
    }
    out
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Form decoding: `+` is a space, `%XX` a byte (malformed escapes kept as they are); invalid
/// UTF-8 is replaced.
fn decode(s: &str) -> String {
    let b = s.as_bytes();
    if !b.iter().any(|&c| c == b'+' || c == b'%') {
        return s.to_owned();
    }
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => match (hex(b[i + 1]), hex(b[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h << 4 | l);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn encode_into(out: &mut String, s: &str) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &c in s.as_bytes() {
        match c {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'_' | b'.' | b'-' | b'~' => {
                out.push(char::from(c))
            }
            b' ' => out.push('+'),
            _ => {
                out.push('%');
                out.push(char::from(HEX[usize::from(c >> 4)]));
                out.push(char::from(HEX[usize::from(c & 15)]));
            }
        }
    }
}

/// The `user_ip` tag: the first comma-separated item of `X-Forwarded-For`, else of
/// `Client-IP`, else the peer address (spec §4.4). Items are trimmed; empty ones are skipped
/// to the next source.
pub fn user_ip(
    x_forwarded_for: Option<&str>,
    client_ip: Option<&str>,
    peer: Option<IpAddr>,
) -> Option<String> {
    let first = |h: Option<&str>| {
        h.and_then(|v| v.split(',').next())
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(str::to_owned)
    };
    first(x_forwarded_for)
        .or_else(|| first(client_ip))
        .or_else(|| peer.map(|p| p.to_string()))
}

/// Nanoseconds since the Unix epoch, now.
pub fn now_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

/// Seconds since the epoch of 1 January, ten years before the year of `now_ns` (UTC): the
/// cutoff that tells the unit of an ambiguous timestamp (spec §4.11).
pub fn cutoff_epoch_s(now_ns: u128) -> u64 {
    let days = i64::try_from(now_ns / 86_400_000_000_000).unwrap_or(i64::MAX / 2);
    let (year, _, _) = scout_core::time::civil_from_days(days);
    u64::try_from(scout_core::time::days_from_civil(year - 10, 1, 1).max(0) * 86_400).unwrap_or(0)
}

/// Nanoseconds per unit of an epoch timestamp of this magnitude: 1 (ns), 1 000 (us),
/// 1 000 000 (ms) or 1 000 000 000 (s), or `None` when it is too small to be any of them.
pub fn timestamp_unit_ns(value: f64, cutoff_epoch_s: u64) -> Option<u128> {
    let c = cutoff_epoch_s as f64;
    if value > c * 1e9 {
        Some(1)
    } else if value > c * 1e6 {
        Some(1_000)
    } else if value > c * 1e3 {
        Some(1_000_000)
    } else if value > c {
        Some(1_000_000_000)
    } else {
        None
    }
}

/// Parses an epoch timestamp in s, ms, us or ns (the unit guessed by magnitude, spec §4.11;
/// an optional `t=` prefix; the first character must be a digit) into nanoseconds since the
/// epoch. Decimal numbers are converted exactly; exponent forms through `f64`.
pub fn ambiguous_timestamp_ns(value: &str, now_ns: u128) -> Option<u128> {
    let v = value.strip_prefix("t=").unwrap_or(value).trim_end();
    if !v.as_bytes().first()?.is_ascii_digit() {
        return None;
    }
    let f: f64 = v.parse().ok()?;
    if !f.is_finite() {
        return None;
    }
    let unit = timestamp_unit_ns(f, cutoff_epoch_s(now_ns))?;
    Some(exact_decimal_ns(v, unit).unwrap_or((f * unit as f64) as u128))
}

fn exact_decimal_ns(v: &str, unit: u128) -> Option<u128> {
    let (int, frac) = v.split_once('.').unwrap_or((v, ""));
    if !int.bytes().all(|b| b.is_ascii_digit()) || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let mut ns = int.parse::<u128>().ok()?.checked_mul(unit)?;
    let mut scale = unit;
    for d in frac.bytes() {
        scale /= 10;
        if scale == 0 {
            break;
        }
        ns += u128::from(d - b'0') * scale;
    }
    Some(ns)
}

/// Queue time of a web request from an `X-Queue-Start` / `X-Request-Start` header value:
/// `request_start_ns` minus the header time, or `None` when the header is not a timestamp or
/// lies after the request start.
pub fn queue_time_ns(header: &str, request_start_ns: u128) -> Option<u64> {
    let t = ambiguous_timestamp_ns(header, request_start_ns)?;
    if t > request_start_ns {
        return None;
    }
    u64::try_from(request_start_ns - t).ok()
}

/// True when a request path starts with one of the `ignore` prefixes. The path and the
/// prefixes are compared without surrounding spaces and leading `/` (spec §4.7); empty
/// prefixes never match.
///
/// ```
/// use scout_std::integrations::web::is_ignored_path;
/// assert!(is_ignored_path("/health/live", ["/health"]));
/// assert!(!is_ignored_path("/users", ["health", ""]));
/// ```
pub fn is_ignored_path<'a>(path: &str, prefixes: impl IntoIterator<Item = &'a str>) -> bool {
    let path = path.trim().trim_start_matches('/');
    prefixes.into_iter().any(|p| {
        let p = p.trim().trim_start_matches('/');
        !p.is_empty() && path.starts_with(p)
    })
}

#[cfg(any(feature = "tower", feature = "actix-web"))]
/// The headers the integrations read, whatever the framework's header map.
pub(crate) trait Headers {
    /// The first value of each header the tags need (a value that is not visible ASCII
    /// counts as absent).
    fn scout_headers(&self) -> ScoutHeaders<'_>;
}

#[cfg(any(feature = "tower", feature = "actix-web"))]
/// The request headers the web integrations read.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct ScoutHeaders<'a> {
    pub(crate) x_forwarded_for: Option<&'a str>,
    pub(crate) client_ip: Option<&'a str>,
    pub(crate) x_queue_start: Option<&'a str>,
    pub(crate) x_request_start: Option<&'a str>,
}

#[cfg(any(feature = "tower", feature = "actix-web"))]
impl<'a> ScoutHeaders<'a> {
    /// The queue-start header: `X-Queue-Start` unless empty, else `X-Request-Start`.
    pub(crate) fn queue_start(&self) -> Option<&'a str> {
        self.x_queue_start
            .filter(|v| !v.is_empty())
            .or(self.x_request_start)
    }
}

#[cfg(any(feature = "tower", feature = "actix-web"))]
/// Per-integration overrides of the settings the web integrations read from the installed
/// agent's configuration (`collect_remote_ip`, `uri_reporting`, `ignore`).
#[derive(Debug, Clone, Default)]
pub(crate) struct Overrides {
    pub(crate) collect_remote_ip: Option<bool>,
    pub(crate) uri_reporting: Option<UriReporting>,
    /// Path prefixes never recorded at all (in addition to the `ignore` setting, which tags).
    pub(crate) ignore: Vec<String>,
}

#[cfg(any(feature = "tower", feature = "actix-web"))]
impl Overrides {
    pub(crate) fn skips(&self, path: &str) -> bool {
        !self.ignore.is_empty() && is_ignored_path(path, self.ignore.iter().map(String::as_str))
    }
}

#[cfg(any(feature = "tower", feature = "actix-web"))]
/// The settings that decide the request tags, read once when the request arrives.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TagPlan {
    collect_ip: bool,
    uri_reporting: UriReporting,
    ignored: bool,
}

#[cfg(any(feature = "tower", feature = "actix-web"))]
impl Overrides {
    /// The installed agent and the tag settings for a request to `path` (these overrides
    /// over the agent's settings); `None` when the agent is not installed.
    pub(crate) fn plan(&self, path: &str) -> Option<(Arc<crate::agent::Shared>, TagPlan)> {
        let agent = crate::agent::active()?;
        let plan = {
            let c = agent.config.read().ok()?;
            TagPlan {
                collect_ip: self.collect_remote_ip.unwrap_or(c.collect_remote_ip),
                uri_reporting: self.uri_reporting.unwrap_or(c.uri_reporting),
                ignored: !c.ignore.is_empty() && is_ignored_path(path, c.ignore.iter()),
            }
        };
        Some((agent, plan))
    }
}

#[cfg(any(feature = "tower", feature = "actix-web"))]
/// What the request tags are computed from, borrowed from the framework's request.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RequestView<'a> {
    /// The path, as the client sent it.
    pub(crate) path: &'a str,
    /// The query string, without `?`.
    pub(crate) query: Option<&'a str>,
    /// The request target `path?query`, when the framework has it as one string.
    pub(crate) path_and_query: Option<&'a str>,
    pub(crate) headers: ScoutHeaders<'a>,
}

#[cfg(any(feature = "tower", feature = "actix-web"))]
/// Sets the request tags on the current request: `path`, `user_ip` (from the headers, else
/// `peer`), `scout.queue_time_ns`, `ignore_transaction`, in one access to the request.
/// Allocates only for a query string that needs rewriting.
pub(crate) fn tag_current(
    plan: &TagPlan,
    req: &RequestView<'_>,
    peer: impl FnOnce() -> Option<IpAddr>,
) {
    let mut rewritten = String::new();
    let path = path_value(
        req.path,
        req.query,
        req.path_and_query,
        plan.uri_reporting,
        &mut rewritten,
    );
    let mut ip_text = IpText {
        buf: [0; 48],
        len: 0,
    };
    let user_ip = if plan.collect_ip {
        user_ip_value(
            req.headers.x_forwarded_for,
            req.headers.client_ip,
            peer,
            &mut ip_text,
        )
    } else {
        None
    };
    let queue = req.headers.queue_start();
    crate::context::with_tagger(|t| {
        t.tag("path", Value::Str(path));
        if let Some(ip) = user_ip {
            t.tag("user_ip", Value::Str(ip));
        }
        if let Some(q) = queue {
            let start_ns = u128::from(t.start_time().as_micros()) * 1_000;
            if let Some(q) = queue_time_ns(q, start_ns) {
                t.tag(
                    "scout.queue_time_ns",
                    Value::Int(i64::try_from(q).unwrap_or(i64::MAX)),
                );
            }
        }
        if plan.ignored {
            t.tag("ignore_transaction", Value::Bool(true));
        }
    });
}

/// True when [`filtered_query`] would return `query` unchanged: every pair is `key=value` of
/// unreserved characters only (nothing to decode or encode), no key is filtered, and the pairs
/// are already sorted.
#[cfg(any(feature = "tower", feature = "actix-web"))]
fn is_canonical_query(query: &str) -> bool {
    let unreserved = |s: &[u8]| {
        s.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-' | b'~'))
    };
    let mut prev: Option<(&[u8], &[u8])> = None;
    for pair in query.as_bytes().split(|&b| b == b'&') {
        let Some(eq) = pair.iter().position(|&b| b == b'=') else {
            return false;
        };
        let (k, v) = pair.split_at(eq);
        let v = v.get(1..).unwrap_or_default();
        if !unreserved(k) || !unreserved(v) || is_filtered_key_bytes(k) {
            return false;
        }
        if prev.is_some_and(|p| p > (k, v)) {
            return false;
        }
        prev = Some((k, v));
    }
    true
}

#[cfg(any(feature = "tower", feature = "actix-web"))]
/// The `path` tag as [`path_tag`] computes it, borrowing `path_and_query` (the request
/// target, `path?query`) when the query needs no rewriting, else written into `rewritten`.
fn path_value<'a>(
    path: &'a str,
    query: Option<&'a str>,
    path_and_query: Option<&'a str>,
    uri_reporting: UriReporting,
    rewritten: &'a mut String,
) -> &'a str {
    let query = match (uri_reporting, query) {
        (UriReporting::FilteredParams, Some(q)) if !q.is_empty() => q,
        _ => return path,
    };
    if is_canonical_query(query)
        && let Some(pq) = path_and_query
        && pq.len() == path.len() + 1 + query.len()
        && pq.starts_with(path)
        && pq.ends_with(query)
    {
        return pq;
    }
    *rewritten = path_tag(path, Some(query), uri_reporting);
    rewritten
}

#[cfg(any(feature = "tower", feature = "actix-web"))]
/// The `user_ip` tag as [`user_ip`] computes it, without allocating (a peer address is
/// formatted into `buf`).
fn user_ip_value<'a>(
    x_forwarded_for: Option<&'a str>,
    client_ip: Option<&'a str>,
    peer: impl FnOnce() -> Option<IpAddr>,
    buf: &'a mut IpText,
) -> Option<&'a str> {
    fn first(h: Option<&str>) -> Option<&str> {
        let v = h?;
        // Up to the first `,` (ASCII: a char boundary), trimmed.
        let v = match v.bytes().position(|b| b == b',') {
            Some(i) => v.get(..i).unwrap_or(v),
            None => v,
        };
        Some(v.trim()).filter(|v| !v.is_empty())
    }
    if let Some(ip) = first(x_forwarded_for).or_else(|| first(client_ip)) {
        return Some(ip);
    }
    let ip = peer()?;
    use std::fmt::Write as _;
    write!(buf, "{ip}").ok()?;
    Some(buf.as_str())
}

#[cfg(any(feature = "tower", feature = "actix-web"))]
/// An IP address formatted on the stack (at most 45 bytes for IPv6).
struct IpText {
    buf: [u8; 48],
    len: usize,
}

#[cfg(any(feature = "tower", feature = "actix-web"))]
impl IpText {
    fn as_str(&self) -> &str {
        std::str::from_utf8(&self.buf[..self.len]).unwrap_or("")
    }
}

#[cfg(any(feature = "tower", feature = "actix-web"))]
impl std::fmt::Write for IpText {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let end = self.len + s.len();
        let dst = self.buf.get_mut(self.len..end).ok_or(std::fmt::Error)?;
        dst.copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

/// Tags the current request `error` = `"true"`.
pub(crate) fn tag_error() {
    tag_request("error", Value::Static("true"));
}

#[cfg(test)]
mod tests {
    use super::*;

    // 2023-11-14T22:13:20Z: cutoff is 2013-01-01T00:00:00Z = 1 356 998 400 s.
    const START_NS: u128 = 1_700_000_000_000_000_000;

    #[test]
    fn filtered_key_lengths_fit_the_quick_reject() {
        assert!(FILTERED_KEYS.iter().all(|k| (3..=12).contains(&k.len())));
        assert!(is_filtered_key("PassWord") && is_filtered_key("card[number]"));
        assert!(!is_filtered_key("q") && !is_filtered_key("page"));
    }

    #[test]
    fn cutoff_is_ten_years_before_this_year() {
        assert_eq!(cutoff_epoch_s(START_NS), 1_356_998_400);
        // 2024-01-01T00:00:00Z exactly, and the second before it.
        assert_eq!(cutoff_epoch_s(1_704_067_200 * 1_000_000_000), 1_388_534_400);
        assert_eq!(cutoff_epoch_s(1_704_067_199 * 1_000_000_000), 1_356_998_400);
        assert_eq!(cutoff_epoch_s(0), 0, "before 1980: clamped");
    }

    #[test]
    fn queue_time_in_every_unit() {
        let ago = 50_000_000u128; // 50 ms
        let t = START_NS - ago;
        for (header, expect) in [
            (format!("{}", t / 1_000_000_000), 0),
            (format!("{}.05", t / 1_000_000_000), 0),
            (format!("{}", t / 1_000_000), ago),
            (format!("t={}", t / 1_000_000), ago),
            (format!("{}", t / 1_000), ago),
            (format!("t={}", t / 1_000), ago),
            (format!("{t}"), ago),
            (format!("t={t}"), ago),
            (format!("{}.5", t / 1_000_000), ago - 500_000),
            (format!("{} ", t / 1_000), ago),
        ] {
            let got = queue_time_ns(&header, START_NS);
            match expect {
                0 => assert!(got.is_some(), "{header}"),
                e => assert_eq!(got, Some(u64::try_from(e).unwrap()), "{header}"),
            }
        }
        // Seconds: whole and fractional.
        assert_eq!(queue_time_ns("1699999999", START_NS), Some(1_000_000_000));
        assert_eq!(queue_time_ns("1699999999.75", START_NS), Some(250_000_000));
        assert_eq!(
            queue_time_ns("t=1699999999.75", START_NS),
            Some(250_000_000)
        );
        // Exponent form goes through f64.
        let e = queue_time_ns("1.69999999975e9", START_NS).unwrap();
        assert!(e.abs_diff(250_000_000) < 1_000, "{e}");
    }

    #[test]
    fn queue_time_rejections() {
        for bad in [
            "",
            "t=",
            "-1699999999",
            " 1699999999",
            "abc",
            "t=abc",
            "1699999999abc",
            "nan",
            "inf",
            "1e999",
            "12345",            // before the cutoff in every unit
            "1356998400",       // exactly the cutoff: not after it
            "1700000001",       // in the future (s)
            "1700000000001",    // in the future (ms)
            "1700000000000001", // in the future (us)
        ] {
            assert_eq!(queue_time_ns(bad, START_NS), None, "{bad:?}");
        }
        assert_eq!(
            queue_time_ns("1700000000", START_NS),
            Some(0),
            "same instant"
        );
        assert_eq!(
            queue_time_ns("1356998401", START_NS),
            Some(343_001_599_000_000_000)
        );
    }

    #[test]
    fn unit_thresholds() {
        let c = 1_356_998_400;
        assert_eq!(timestamp_unit_ns(1.4e9, c), Some(1_000_000_000));
        assert_eq!(timestamp_unit_ns(1.4e12, c), Some(1_000_000));
        assert_eq!(timestamp_unit_ns(1.4e15, c), Some(1_000));
        assert_eq!(timestamp_unit_ns(1.4e18, c), Some(1));
        assert_eq!(timestamp_unit_ns(1.3e9, c), None);
        assert_eq!(
            timestamp_unit_ns(1.3e12, c),
            Some(1_000_000_000),
            "1.3e12 s is in the future, rejected later"
        );
    }

    #[test]
    fn query_filtering() {
        assert_eq!(filtered_query(""), "");
        assert_eq!(filtered_query("&&"), "");
        assert_eq!(filtered_query("b=2&a=1"), "a=1&b=2");
        assert_eq!(
            filtered_query("q=b&q=a"),
            "q=a&q=b",
            "same key sorted by value"
        );
        assert_eq!(filtered_query("flag"), "flag=", "blank values kept");
        for k in FILTERED_KEYS {
            assert_eq!(
                filtered_query(&format!("{k}=v")),
                format!("{}=%5BFILTERED%5D", encode(k))
            );
        }
        assert_eq!(
            filtered_query("PassWord=x&API_KEY=y"),
            "API_KEY=%5BFILTERED%5D&PassWord=%5BFILTERED%5D"
        );
        assert_eq!(
            filtered_query("card%5Bnumber%5D=4111"),
            "card%5Bnumber%5D=%5BFILTERED%5D"
        );
        assert_eq!(
            filtered_query("SCOUT_KEY=x&keys=y"),
            "SCOUT_KEY=x&keys=y",
            "not in the list"
        );
        assert_eq!(
            filtered_query("q=a+b%20c&x=%E2%9C%93"),
            "q=a+b+c&x=%E2%9C%93"
        );
        assert_eq!(
            filtered_query("q=100%&r=%zz"),
            "q=100%25&r=%25zz",
            "malformed escapes kept"
        );
        assert_eq!(filtered_query("q=a=b&e=~_.-*"), "e=~_.-%2A&q=a%3Db");
        assert_eq!(
            filtered_query("q=%FF"),
            "q=%EF%BF%BD",
            "invalid UTF-8 replaced"
        );
    }

    fn encode(s: &str) -> String {
        let mut o = String::new();
        encode_into(&mut o, s);
        o
    }

    #[test]
    fn canonical_queries_are_their_own_filtered_form() {
        for q in [
            "a=1",
            "a=1&b=2",
            "q=a&q=b",
            "=v",
            "a=",
            "e=~_.-",
            "b=2&a=1",
            "q=b&q=a",
            "flag",
            "a=1&&b=2",
            "q=a+b",
            "q=%41",
            "password=x",
            "a=1=2",
            "a=%",
            "x=a b",
            "k=\u{e9}",
        ] {
            // Canonical queries are kept as they are; the others take the slow path (which
            // may still give the same text, e.g. `q=a+b`).
            if is_canonical_query(q) {
                assert_eq!(filtered_query(q), q);
            } else {
                assert!(filtered_query(q) != q || q.contains('+'), "{q:?}");
            }
        }
        assert!(is_canonical_query("a=1&b=2"));
        assert!(!is_canonical_query("b=2&a=1"));
    }

    #[test]
    fn path_tags() {
        use UriReporting::*;
        assert_eq!(path_tag("/", None, FilteredParams), "/");
        assert_eq!(path_tag("/a", Some(""), FilteredParams), "/a");
        assert_eq!(
            path_tag("/users/7", Some("q=b&password=p&q=a"), FilteredParams),
            "/users/7?password=%5BFILTERED%5D&q=a&q=b"
        );
        assert_eq!(path_tag("/users/7", Some("password=p"), Path), "/users/7");
    }

    #[test]
    fn user_ips() {
        let peer: IpAddr = "127.0.0.1".parse().unwrap();
        assert_eq!(
            user_ip(Some("1.2.3.4, 5.6.7.8"), Some("9.9.9.9"), Some(peer)).as_deref(),
            Some("1.2.3.4")
        );
        assert_eq!(
            user_ip(Some(" 1.2.3.4 "), None, None).as_deref(),
            Some("1.2.3.4")
        );
        assert_eq!(
            user_ip(Some(""), Some("9.9.9.9, 8.8.8.8"), Some(peer)).as_deref(),
            Some("9.9.9.9")
        );
        assert_eq!(
            user_ip(Some(",1.2.3.4"), None, Some(peer)).as_deref(),
            Some("127.0.0.1")
        );
        assert_eq!(
            user_ip(None, None, Some("::1".parse().unwrap())).as_deref(),
            Some("::1")
        );
        assert_eq!(user_ip(None, None, None), None);
    }

    #[test]
    fn ignored_paths() {
        assert!(is_ignored_path("/health", ["health"]));
        assert!(is_ignored_path("/health/live", [" /health "]));
        assert!(is_ignored_path("health", ["/health"]));
        assert!(!is_ignored_path("/users", ["/health"]));
        assert!(
            !is_ignored_path("/users", ["", "/"]),
            "empty prefixes never match"
        );
        assert!(!is_ignored_path("/", Vec::<&str>::new()));
        #[cfg(any(feature = "tower", feature = "actix-web"))]
        let o = Overrides {
            ignore: vec!["/metrics".into()],
            ..Default::default()
        };
        #[cfg(any(feature = "tower", feature = "actix-web"))]
        {
            assert!(o.skips("/metrics/x") && !o.skips("/users"));
            assert!(!Overrides::default().skips("/metrics"));
        }
    }
}
