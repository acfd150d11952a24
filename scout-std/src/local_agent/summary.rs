//! The plain-text terminal summary: endpoint table and the slowest trace as a waterfall.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use serde_json::Value;

use super::aggregate::EndpointSummary;
use super::model::{Counters, FinishedRequest};

const WATERFALL_SPANS: usize = 40;
const BAR_WIDTH: usize = 24;
const TAGS_WIDTH: usize = 100;

/// What the summary knows about an application from its `ApplicationEvent`s.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct AppInfo {
    pub(crate) language: Option<String>,
    pub(crate) language_version: Option<String>,
    pub(crate) framework: Option<String>,
    pub(crate) cpu_percent: Option<f64>,
    pub(crate) memory_mb: Option<f64>,
}

/// Formats microseconds as `812 µs`, `12.3 ms`, `1.23 s`.
pub(crate) fn fmt_us(us: u64) -> String {
    if us < 1_000 {
        format!("{us} us")
    } else if us < 100_000 {
        format!("{:.1} ms", us as f64 / 1_000.0)
    } else if us < 10_000_000 {
        format!("{:.0} ms", us as f64 / 1_000.0)
    } else {
        format!("{:.1} s", us as f64 / 1_000_000.0)
    }
}

fn clip(s: &str, width: usize) -> String {
    if s.chars().count() <= width {
        return s.to_owned();
    }
    let mut out: String = s.chars().take(width.saturating_sub(3)).collect();
    out.push_str("...");
    out
}

fn fmt_value(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Array(a) => format!("[{} items]", a.len()),
        other => other.to_string(),
    }
}

/// Python's per-span allocation counters: stored and exported, but noise in the waterfall.
const HIDDEN_TAGS: [&str; 3] = ["allocations", "start_allocations", "stop_allocations"];

fn fmt_tags(tags: &serde_json::Map<String, Value>) -> String {
    let mut out = String::new();
    for (k, v) in tags {
        if HIDDEN_TAGS.contains(&k.as_str()) {
            continue;
        }
        if !out.is_empty() {
            out.push(' ');
        }
        let _ = write!(out, "{k}={}", clip(&fmt_value(v), 40));
        if out.len() > TAGS_WIDTH {
            break;
        }
    }
    clip(&out, TAGS_WIDTH)
}

/// Renders the whole summary.
pub(crate) fn render(
    uptime: Duration,
    counters: &Counters,
    pending: usize,
    endpoints: &[EndpointSummary],
    apps: &BTreeMap<String, AppInfo>,
) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "== Scout local agent: {} requests, {} errors, {} endpoints, {} pending, up {}s ==",
        counters.requests,
        endpoints.iter().map(|e| e.errors).sum::<u64>(),
        endpoints.len(),
        pending,
        uptime.as_secs()
    );
    let mut current_app: Option<&str> = None;
    for e in endpoints {
        if current_app != Some(e.app.as_str()) {
            current_app = Some(e.app.as_str());
            let mut line = format!("App {:?}", e.app);
            if let Some(info) = apps.get(&e.app) {
                if let Some(l) = &info.language {
                    let _ = write!(
                        line,
                        "  {l} {}",
                        info.language_version.as_deref().unwrap_or("")
                    );
                }
                if let Some(f) = info.framework.as_deref().filter(|f| !f.is_empty()) {
                    let _ = write!(line, "  framework {f}");
                }
                if let Some(c) = info.cpu_percent {
                    let _ = write!(line, "  cpu {c:.1}%");
                }
                if let Some(m) = info.memory_mb {
                    let _ = write!(line, "  mem {m:.1} MB");
                }
            }
            let _ = writeln!(o, "{}", line.trim_end());
            let _ = writeln!(
                o,
                "  {:<40} {:>6} {:>5} {:>9} {:>9} {:>9} {:>9} {:>9}  time by kind",
                "endpoint", "calls", "err", "mean", "p50", "p95", "p99", "max"
            );
        }
        let total: u64 = e.kinds.iter().map(|k| k.total_us).sum::<u64>().max(1);
        let kinds: Vec<String> = e
            .kinds
            .iter()
            .take(4)
            .map(|k| format!("{} {}%", k.kind, k.total_us * 100 / total))
            .collect();
        let _ = writeln!(
            o,
            "  {:<40} {:>6} {:>5} {:>9} {:>9} {:>9} {:>9} {:>9}  {}",
            clip(&e.endpoint, 40),
            e.count,
            e.errors,
            fmt_us(e.mean_us),
            fmt_us(e.p50_us),
            fmt_us(e.p95_us),
            fmt_us(e.p99_us),
            fmt_us(e.max_us),
            kinds.join(", ")
        );
    }
    let slowest = endpoints
        .iter()
        .filter_map(|e| e.slowest.first())
        .max_by_key(|r| r.duration_us);
    if let Some(r) = slowest {
        o.push_str(&waterfall(r));
    }
    let bad = counters.bad_frames();
    let dropped = counters.dropped_requests
        + counters.expired_requests
        + counters.dropped_spans
        + counters.dropped_tags;
    if bad > 0 || dropped > 0 || counters.ignored_requests > 0 || counters.late_commands > 0 {
        let _ = writeln!(
            o,
            "Notes: {bad} bad frames, {} ignored requests, {} without endpoint, dropped: {} requests, {} expired, {} spans, {} tags, {} late commands",
            counters.ignored_requests,
            counters.requests_without_endpoint,
            counters.dropped_requests,
            counters.expired_requests,
            counters.dropped_spans,
            counters.dropped_tags,
            counters.late_commands
        );
    }
    o
}

/// One request as an indented waterfall with offsets, durations, a timeline bar and tags.
pub(crate) fn waterfall(r: &FinishedRequest) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "Slowest trace: {} {} ({}) app {:?}{}",
        r.endpoint.as_deref().unwrap_or("(no endpoint)"),
        r.id,
        fmt_us(r.duration_us),
        r.app,
        if r.error { " ERROR" } else { "" }
    );
    if !r.tags.is_empty() {
        let _ = writeln!(o, "  request tags: {}", fmt_tags(&r.tags));
    }
    let total = r.duration_us.max(1);
    for s in r.spans.iter().take(WATERFALL_SPANS) {
        let offset = u64::try_from(s.start.0 - r.start.0).unwrap_or(0);
        let from = ((offset as f64 / total as f64) * BAR_WIDTH as f64) as usize;
        let len = ((s.duration_us as f64 / total as f64) * BAR_WIDTH as f64).ceil() as usize;
        let from = from.min(BAR_WIDTH - 1);
        let len = len.clamp(1, BAR_WIDTH - from);
        let bar: String = (0..BAR_WIDTH)
            .map(|i| {
                if i >= from && i < from + len {
                    '#'
                } else {
                    '.'
                }
            })
            .collect();
        let indent = "  ".repeat(s.depth.min(12) as usize);
        let tags = fmt_tags(&s.tags);
        let _ = writeln!(
            o,
            "  +{:>9} {:>9} [{bar}] {indent}{}{}{}",
            fmt_us(offset),
            fmt_us(s.duration_us),
            s.operation,
            if tags.is_empty() { "" } else { "  " },
            tags
        );
    }
    if r.spans.len() > WATERFALL_SPANS {
        let _ = writeln!(o, "  ... {} more spans", r.spans.len() - WATERFALL_SPANS);
    }
    if r.dropped_spans > 0 {
        let _ = writeln!(o, "  ({} spans dropped by limits)", r.dropped_spans);
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_durations() {
        assert_eq!(fmt_us(812), "812 us");
        assert_eq!(fmt_us(12_345), "12.3 ms");
        assert_eq!(fmt_us(615_000), "615 ms");
        assert_eq!(fmt_us(12_300_000), "12.3 s");
        assert_eq!(clip("abcdef", 5), "ab...");
    }
}
