//! Gateway side: checking a [`WireRequest`], mapping device ticks to wall-clock time, and
//! rebuilding a core [`Request`] from it (which [`crate::command::RequestBatch`] then encodes).

use super::wire::{MAX_SPANS, NO_NAME, ROOT, UNNAMED, WireRequest, WireValue};
use crate::id::RequestIds;
use crate::request::{Request, SpanFlags, SpanIdx, SpanStart};
use crate::storage::Storage;
use crate::time::Timestamp;
use crate::value::{Text, Value};

/// Why a device request cannot be rebuilt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum InvalidRequest {
    /// No spans.
    NoSpans,
    /// Span 0 is not a root, or a later span is.
    Roots,
    /// A span names a parent that is not an earlier span.
    Parent,
    /// A span's parent had already stopped when it started (not a stack-shaped tree).
    Nesting,
    /// A tag targets a span that does not exist.
    TagTarget,
    /// The gateway's request storage is too small for this request.
    Capacity,
}

impl core::fmt::Display for InvalidRequest {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            Self::NoSpans => "request has no spans",
            Self::Roots => "request must have exactly one root, first",
            Self::Parent => "span parent is not an earlier span",
            Self::Nesting => "spans are not nested",
            Self::TagTarget => "tag targets a missing span",
            Self::Capacity => "request too large for gateway storage",
        })
    }
}

impl core::error::Error for InvalidRequest {}

/// Checks the shape of a request: one root, first; parents earlier; tags on existing spans.
/// (Nesting is checked while rebuilding.)
pub fn validate(r: &WireRequest<'_>) -> Result<(), InvalidRequest> {
    let n = r.spans.len();
    if n == 0 {
        return Err(InvalidRequest::NoSpans);
    }
    for (i, s) in r.spans.iter().enumerate() {
        match (i, s.parent) {
            (0, ROOT) => {}
            (0, _) | (_, ROOT) => return Err(InvalidRequest::Roots),
            (i, p) if usize::from(p) > i => return Err(InvalidRequest::Parent),
            _ => {}
        }
    }
    if r.tags.iter().any(|t| usize::from(t.target) > n) {
        return Err(InvalidRequest::TagTarget);
    }
    Ok(())
}

/// Where a name id comes from on the gateway (the names a connection defined).
pub trait NameSource {
    /// The name with id `id`, if defined.
    fn name(&self, id: u16) -> Option<&str>;
}

/// Rebuilds `out` from a device request: begins it with `ids`, replays its spans in start
/// order with their start and stop times mapped through `to_wall` (device ticks since boot to
/// wall-clock), applies its tags, and marks it real. Unknown name ids become [`UNNAMED`].
///
/// The result encodes with [`crate::command::RequestBatch`] like any server request.
pub fn rebuild<S: Storage, N: NameSource + ?Sized>(
    r: &WireRequest<'_>,
    names: &N,
    ids: RequestIds,
    to_wall: impl Fn(u64) -> Timestamp,
    out: &mut Request<S>,
) -> Result<(), InvalidRequest> {
    validate(r)?;
    let name = |id: u16| -> &str {
        if id == NO_NAME {
            UNNAMED
        } else {
            names.name(id).unwrap_or(UNNAMED)
        }
    };
    // Absolute start and end of each span, in device ticks.
    let mut starts = [0u64; MAX_SPANS];
    let mut ends = [0u64; MAX_SPANS];
    let mut stack: heapless::Vec<u8, MAX_SPANS> = heapless::Vec::new();
    out.begin(ids, to_wall(r.start), u32::MAX);
    for (i, s) in r.spans.iter().enumerate() {
        let base = match s.parent {
            ROOT => r.start,
            p => starts[usize::from(p - 1)],
        };
        starts[i] = base.saturating_add(u64::from(s.start));
        ends[i] = starts[i].saturating_add(u64::from(s.duration));
        if s.parent != ROOT {
            let p = s.parent - 1;
            if !stack.contains(&p) {
                return Err(InvalidRequest::Nesting);
            }
            while let Some(&top) = stack.last() {
                if top == p {
                    break;
                }
                stack.pop();
                let _ = out.stop_span(to_wall(ends[usize::from(top)]));
            }
        }
        let started = out.start_span(
            Text::Borrowed(name(s.name)),
            to_wall(starts[i]),
            SpanFlags::NONE,
        );
        if started != SpanStart::Recorded(SpanIdx(i as u16)) || stack.push(i as u8).is_err() {
            return Err(InvalidRequest::Capacity);
        }
    }
    while let Some(top) = stack.pop() {
        let _ = out.stop_span(to_wall(ends[usize::from(top)]));
    }
    for t in &r.tags {
        let key = Text::Borrowed(name(t.key));
        let value = match t.value {
            WireValue::Null => Value::Null,
            WireValue::Bool(b) => Value::Bool(b),
            WireValue::Int(i) => Value::Int(i),
            WireValue::Float(f) => Value::Float(f),
            WireValue::Str(s) => Value::Str(s),
        };
        let res = match t.target {
            0 => out.tag_request(key, value),
            i => out.tag_span_at(SpanIdx(u16::from(i - 1)), key, value),
        };
        if res.is_err() {
            return Err(InvalidRequest::Capacity);
        }
    }
    out.mark_real();
    Ok(())
}

/// Maps device ticks since boot to wall-clock time, from time-sync samples.
///
/// A sample pairs a device reading with the gateway's wall clock:
///
/// - **Exchange** ([`ClockSync::exchange`]): the gateway sends [`super::Down::TimeSync`] at
///   wall time `t0`, the device answers with its uptime `u`, the answer arrives at `t1`. The
///   device read its clock somewhere in `[t0, t1]`, so mapping `u` to the midpoint is off by
///   at most `(t1 - t0) / 2`, plus one device tick of resolution.
/// - **Hello** ([`ClockSync::hello`]): only an upper bound; the device's reading happened
///   before the arrival by the link's one-way delay, which is unknown. Used until the first
///   exchange; its bound is reported as the time since the connection opened.
///
/// Between samples the bound grows with clock drift, `drift_ppm` parts per million of the time
/// since the sample (crystals are typically within ±50 ppm). A new sample replaces the current
/// one when its bound is at most the current, aged bound.
///
/// **Error bound** of a mapped time: `error_us() = rtt/2 + tick + drift_ppm * age / 10^6`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ClockSync {
    tick_hz: u32,
    drift_ppm: u32,
    /// wall µs − device µs at the sample.
    offset_us: i128,
    /// Bound at the sample time.
    error_us: u64,
    /// Wall time of the sample.
    at_us: u64,
    synced: bool,
}

impl ClockSync {
    /// No sample yet; `tick_hz` from the hello, `drift_ppm` the assumed worst clock drift.
    pub const fn new(tick_hz: u32, drift_ppm: u32) -> Self {
        Self {
            tick_hz: if tick_hz == 0 { 1 } else { tick_hz },
            drift_ppm,
            offset_us: 0,
            error_us: u64::MAX,
            at_us: 0,
            synced: false,
        }
    }

    /// Device ticks to microseconds.
    pub fn ticks_to_us(&self, ticks: u64) -> u64 {
        let us = u128::from(ticks) * 1_000_000 / u128::from(self.tick_hz);
        u64::try_from(us).unwrap_or(u64::MAX)
    }

    fn tick_us(&self) -> u64 {
        1_000_000u64.div_ceil(u64::from(self.tick_hz))
    }

    /// The one-way sample of a hello carrying `uptime` ticks, received at `wall_us`.
    pub fn hello(&mut self, uptime: u64, wall_us: u64) {
        if !self.synced {
            self.offset_us = i128::from(wall_us) - i128::from(self.ticks_to_us(uptime));
            self.error_us = u64::MAX;
            self.at_us = wall_us;
        }
    }

    /// An exchange sent at `t0_us`, answered with `uptime` ticks, received at `t1_us`.
    /// Returns true if the sample was kept.
    pub fn exchange(&mut self, t0_us: u64, uptime: u64, t1_us: u64) -> bool {
        if t1_us < t0_us {
            return false;
        }
        let rtt = t1_us - t0_us;
        let bound = rtt / 2 + self.tick_us();
        if self.synced && bound > self.error_at(t1_us) {
            return false;
        }
        let mid = t0_us + rtt / 2;
        self.offset_us = i128::from(mid) - i128::from(self.ticks_to_us(uptime));
        self.error_us = bound;
        self.at_us = t1_us;
        self.synced = true;
        true
    }

    /// True once an exchange was kept.
    pub fn is_synced(&self) -> bool {
        self.synced
    }

    /// The error bound in microseconds of times mapped at wall time `now_us` (`u64::MAX`
    /// before the first exchange).
    pub fn error_at(&self, now_us: u64) -> u64 {
        if !self.synced {
            return u64::MAX;
        }
        let age = now_us.saturating_sub(self.at_us);
        let drift = u64::try_from(u128::from(age) * u128::from(self.drift_ppm) / 1_000_000)
            .unwrap_or(u64::MAX);
        self.error_us.saturating_add(drift)
    }

    /// Device ticks since boot to wall-clock time.
    pub fn to_wall(&self, ticks: u64) -> Timestamp {
        let t = i128::from(self.ticks_to_us(ticks)) + self.offset_us;
        Timestamp(u64::try_from(t.max(0)).unwrap_or(u64::MAX))
    }
}
