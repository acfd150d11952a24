//! Per-endpoint statistics: counts, errors, latency histogram, time by span kind, slowest traces.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use serde::Serialize;

use super::config::Limits;
use super::hash::FastState;
use super::model::{Counters, FinishedRequest};
use super::rebuild::Rebuilt;

/// Name of the row that collects endpoints beyond [`Limits::max_endpoints`].
pub const OVERFLOW_ENDPOINT: &str = "(other endpoints)";
const MAX_KINDS: usize = 64;
const OTHER_KIND: &str = "(other kinds)";

/// A log-linear latency histogram over microseconds: exact below 32 µs, then 32 sub-buckets per
/// power of two (at most 1.6% relative error), sparse so that its size follows the spread of values.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Histogram {
    buckets: BTreeMap<u16, u64>,
    count: u64,
    sum: u128,
    min: u64,
    max: u64,
}

fn bucket_of(v: u64) -> u16 {
    if v < 32 {
        return v as u16;
    }
    let e = 63 - v.leading_zeros();
    let mantissa = (v >> (e - 5)) & 31;
    (32 + (e - 5) * 32 + mantissa as u32) as u16
}

fn bucket_mid(idx: u16) -> u64 {
    if idx < 32 {
        return u64::from(idx);
    }
    let i = u32::from(idx) - 32;
    let shift = i / 32;
    let mantissa = u64::from(i % 32);
    let low = (32 + mantissa) << shift;
    low + ((1u64 << shift) >> 1)
}

impl Histogram {
    /// Records one value.
    pub fn record(&mut self, v: u64) {
        *self.buckets.entry(bucket_of(v)).or_insert(0) += 1;
        if self.count == 0 || v < self.min {
            self.min = v;
        }
        self.max = self.max.max(v);
        self.count += 1;
        self.sum += u128::from(v);
    }

    /// Number of values.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Mean (0 when empty).
    pub fn mean(&self) -> u64 {
        if self.count == 0 {
            0
        } else {
            u64::try_from(self.sum / u128::from(self.count)).unwrap_or(u64::MAX)
        }
    }

    /// Smallest value (0 when empty).
    pub fn min(&self) -> u64 {
        self.min
    }

    /// Largest value (0 when empty).
    pub fn max(&self) -> u64 {
        self.max
    }

    /// The value at quantile `q` (0.0..=1.0), clamped to the observed min and max.
    pub fn quantile(&self, q: f64) -> u64 {
        if self.count == 0 {
            return 0;
        }
        let rank = ((q.clamp(0.0, 1.0) * self.count as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (&b, &n) in &self.buckets {
            seen += n;
            if seen >= rank {
                return bucket_mid(b).clamp(self.min, self.max);
            }
        }
        self.max
    }
}

/// Total time of one span kind (the first segment of the operation: `SQL`, `HTTP`, `Custom`, ...).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KindTime {
    /// Span kind.
    pub kind: String,
    /// Sum of exclusive span time, microseconds.
    pub total_us: u64,
    /// Number of spans.
    pub spans: u64,
}

/// Statistics of one endpoint of one application.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EndpointSummary {
    /// Register `app`.
    pub app: String,
    /// `Controller/...` or `Job/...` (or [`OVERFLOW_ENDPOINT`]).
    pub endpoint: String,
    /// Requests.
    pub count: u64,
    /// Requests tagged `error`.
    pub errors: u64,
    /// Mean latency, µs.
    pub mean_us: u64,
    /// Median latency, µs.
    pub p50_us: u64,
    /// 95th percentile, µs.
    pub p95_us: u64,
    /// 99th percentile, µs.
    pub p99_us: u64,
    /// Fastest, µs.
    pub min_us: u64,
    /// Slowest, µs.
    pub max_us: u64,
    /// Exclusive time by span kind, largest first.
    pub kinds: Vec<KindTime>,
    /// The slowest requests, slowest first (spans possibly truncated, see `dropped_spans`).
    pub slowest: Vec<FinishedRequest>,
}

/// Exclusive time of one span kind: (kind, total µs, spans).
#[derive(Debug)]
struct KindSlot {
    kind: Box<str>,
    total_us: u64,
    spans: u64,
}

#[derive(Debug, Default)]
struct EndpointAgg {
    errors: u64,
    latency: Histogram,
    /// At most [`MAX_KINDS`] + 1 kinds, found by a linear scan (a handful in practice).
    kinds: Vec<KindSlot>,
    /// Shared with the request history; spans are cut to `max_spans_per_trace` when a summary
    /// is built.
    slowest: Vec<Arc<Rebuilt>>,
    first_seen: u64,
}

impl EndpointAgg {
    /// Position of the slot of `kind` (created; beyond [`MAX_KINDS`] kinds, the overflow slot).
    fn kind_pos(&mut self, kind: &str) -> usize {
        if let Some(p) = self.kinds.iter().position(|k| *k.kind == *kind) {
            return p;
        }
        let key = if self.kinds.len() < MAX_KINDS {
            kind
        } else {
            OTHER_KIND
        };
        if let Some(p) = self.kinds.iter().position(|k| *k.kind == *key) {
            return p;
        }
        self.kinds.push(KindSlot {
            kind: key.into(),
            total_us: 0,
            spans: 0,
        });
        self.kinds.len() - 1
    }

    fn add(&mut self, r: &Arc<Rebuilt>, limits: &Limits) {
        self.latency.record(r.duration_us());
        if r.error() {
            self.errors += 1;
        }
        // Consecutive spans often share a kind: remember the last slot.
        let mut last: Option<(&str, usize)> = None;
        for (op, exclusive_us) in r.span_times() {
            let kind = op
                .as_bytes()
                .iter()
                .position(|&c| c == b'/')
                .map_or(op, |i| op.get(..i).unwrap_or_default());
            let kind = if kind.is_empty() { "(none)" } else { kind };
            let pos = match last {
                Some((k, pos)) if k == kind => pos,
                _ => {
                    let pos = self.kind_pos(kind);
                    last = Some((kind, pos));
                    pos
                }
            };
            if let Some(slot) = self.kinds.get_mut(pos) {
                slot.total_us += exclusive_us;
                slot.spans += 1;
            }
        }
        let keep = limits.traces_per_endpoint;
        if keep == 0 {
            return;
        }
        let qualifies = self.slowest.len() < keep
            || self
                .slowest
                .last()
                .is_some_and(|s| s.duration_us() < r.duration_us());
        if qualifies {
            let pos = self
                .slowest
                .partition_point(|s| s.duration_us() >= r.duration_us());
            self.slowest.insert(pos, Arc::clone(r));
            self.slowest.truncate(keep);
        }
    }
}

/// All endpoint statistics.
#[derive(Debug)]
pub(crate) struct Aggregator {
    limits: Limits,
    /// app -> endpoint -> statistics (nested so that lookups need no owned key).
    endpoints: HashMap<String, HashMap<String, EndpointAgg, FastState>, FastState>,
    hash: FastState,
    tracked: usize,
    seq: u64,
}

impl Aggregator {
    pub(crate) fn new(limits: Limits) -> Self {
        let hash = FastState::new();
        Self {
            limits,
            endpoints: HashMap::with_hasher(hash),
            hash,
            tracked: 0,
            seq: 0,
        }
    }

    /// Adds a finished request (ignored and endpoint-less requests are only counted).
    pub(crate) fn record(&mut self, r: &Arc<Rebuilt>, counters: &mut Counters) {
        if r.ignored() {
            counters.ignored_requests += 1;
            return;
        }
        let Some(endpoint) = r.endpoint() else {
            counters.requests_without_endpoint += 1;
            return;
        };
        self.seq += 1;
        let seq = self.seq;
        let limits = &self.limits;
        if let Some(agg) = self
            .endpoints
            .get_mut(r.app())
            .and_then(|m| m.get_mut(endpoint))
        {
            agg.add(r, limits);
            return;
        }
        let name = if self.tracked >= limits.max_endpoints {
            counters.overflow_endpoint_requests += 1;
            OVERFLOW_ENDPOINT
        } else {
            self.tracked += 1;
            endpoint
        };
        let hash = self.hash;
        let app = match self.endpoints.get_mut(r.app()) {
            Some(m) => m,
            None => self
                .endpoints
                .entry(r.app().to_owned())
                .or_insert_with(|| HashMap::with_hasher(hash)),
        };
        let agg = match app.get_mut(name) {
            Some(a) => a,
            None => app.entry(name.to_owned()).or_insert_with(|| EndpointAgg {
                first_seen: seq,
                ..EndpointAgg::default()
            }),
        };
        agg.add(r, limits);
    }

    /// Snapshot of all endpoints, by app then by total time (largest first).
    pub(crate) fn summaries(&self) -> Vec<EndpointSummary> {
        self.summaries_with(usize::MAX)
    }

    /// [`Self::summaries`] with at most `traces` slowest traces per endpoint (building a trace
    /// costs more than the rest of a row).
    pub(crate) fn summaries_with(&self, traces: usize) -> Vec<EndpointSummary> {
        let max_spans = self.limits.max_spans_per_trace;
        let mut rows: Vec<((&String, &String), &EndpointAgg)> = self
            .endpoints
            .iter()
            .flat_map(|(app, m)| m.iter().map(move |(e, a)| ((app, e), a)))
            .collect();
        rows.sort_by(|a, b| {
            a.0.0.cmp(b.0.0).then_with(|| {
                let ta = a.1.latency.sum;
                let tb = b.1.latency.sum;
                tb.cmp(&ta).then(a.1.first_seen.cmp(&b.1.first_seen))
            })
        });
        rows.into_iter()
            .map(|((app, endpoint), a)| {
                let mut kinds: Vec<KindTime> = a
                    .kinds
                    .iter()
                    .map(|k| KindTime {
                        kind: k.kind.to_string(),
                        total_us: k.total_us,
                        spans: k.spans,
                    })
                    .collect();
                kinds.sort_by(|x, y| y.total_us.cmp(&x.total_us).then(x.kind.cmp(&y.kind)));
                EndpointSummary {
                    app: app.to_owned(),
                    endpoint: endpoint.to_owned(),
                    count: a.latency.count(),
                    errors: a.errors,
                    mean_us: a.latency.mean(),
                    p50_us: a.latency.quantile(0.50),
                    p95_us: a.latency.quantile(0.95),
                    p99_us: a.latency.quantile(0.99),
                    min_us: a.latency.min(),
                    max_us: a.latency.max(),
                    kinds,
                    slowest: a
                        .slowest
                        .iter()
                        .take(traces)
                        .map(|r| r.to_finished(max_spans))
                        .collect(),
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_quantiles() {
        let mut h = Histogram::default();
        for v in 1..=1000u64 {
            h.record(v * 1000);
        }
        let p50 = h.quantile(0.5) as f64;
        let p99 = h.quantile(0.99) as f64;
        assert!((p50 - 500_000.0).abs() / 500_000.0 < 0.02, "{p50}");
        assert!((p99 - 990_000.0).abs() / 990_000.0 < 0.02, "{p99}");
        assert_eq!(h.quantile(1.0), 1_000_000);
        assert_eq!(h.quantile(0.0), 1000);
        assert_eq!(h.mean(), 500_500);
        for v in [0, 1, 31, 32, 33, 63, 64, 1 << 40, u64::MAX] {
            let mid = bucket_mid(bucket_of(v));
            let err = (mid as f64 - v as f64).abs() / (v.max(1) as f64);
            assert!(err < 0.02, "{v} -> {mid}");
        }
    }
}
