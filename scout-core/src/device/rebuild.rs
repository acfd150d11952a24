//! Gateway side: replaying a [`Journal`] into a core [`Request`] (which
//! [`crate::command::RequestBatch`] then encodes), and mapping device ticks to wall-clock
//! time.

use super::wire::{Event, Journal, NO_NAME, UNNAMED};
use crate::id::RequestIds;
use crate::request::{Request, SpanFlags};
use crate::storage::Storage;
use crate::time::Timestamp;
use crate::value::{Text, Value};

/// Why a device request cannot be rebuilt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum InvalidRequest {
    /// The first event does not start the root span.
    NoRoot,
    /// A `Stop` with no open span but the root (which only `End` stops).
    Nesting,
    /// No `End` event.
    Unfinished,
}

impl core::fmt::Display for InvalidRequest {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            Self::NoRoot => "request does not start with its root span",
            Self::Nesting => "span stopped with no open span but the root",
            Self::Unfinished => "request has no end",
        })
    }
}

impl core::error::Error for InvalidRequest {}

/// Where a name id comes from on the gateway (the names a connection defined).
pub trait NameSource {
    /// The name with id `id`, if defined.
    fn name(&self, id: u16) -> Option<&str>;
}

/// Rebuilds `out` from a device request: begins it with `ids` and `span_limit` (the device's,
/// from its hello), replays each event with the same call a server makes (`start_span` with
/// the event's flags, `stop_span`, `tag_span`, `tag_request`, `finish`), with times mapped
/// through `to_wall` (device ticks since boot to wall-clock), and marks it real. Unknown name
/// ids become [`UNNAMED`]. The core's rules (ignore flags, span limit, tag replacement,
/// capacities and their drop counts) apply as on a server.
///
/// Returns the number of spans and tags the device itself could not record. The result
/// encodes with [`crate::command::RequestBatch`] like any server request.
pub fn rebuild<S: Storage, N: NameSource + ?Sized>(
    j: &Journal<'_>,
    names: &N,
    ids: RequestIds,
    span_limit: u32,
    to_wall: impl Fn(u64) -> Timestamp,
    out: &mut Request<S>,
) -> Result<u32, InvalidRequest> {
    let name = |id: u16| -> &str {
        if id == NO_NAME {
            UNNAMED
        } else {
            names.name(id).unwrap_or(UNNAMED)
        }
    };
    let mut t = j.start;
    let mut at = |delta: u32| {
        t = t.saturating_add(u64::from(delta));
        to_wall(t)
    };
    out.begin(ids, to_wall(j.start), span_limit);
    // Open spans, the root included (0 before the root).
    let mut open = 0usize;
    for e in j.events() {
        let (name_id, flags, delta) = match e {
            Event::Start { name, delta } => (name, 0, delta),
            Event::StartWith { name, flags, delta } => (name, flags, delta),
            // Anything but a start before the root (a stop too) means there is no root.
            _ if open == 0 => return Err(InvalidRequest::NoRoot),
            Event::Stop { delta } => {
                if open <= 1 {
                    return Err(InvalidRequest::Nesting);
                }
                open -= 1;
                let _ = out.stop_span(at(delta));
                continue;
            }
            Event::End { delta, dropped } => {
                out.finish(at(delta));
                out.mark_real();
                return Ok(dropped);
            }
            Event::SpanTag { key, value } => {
                let _ = out.tag_span(Text::Borrowed(name(key)), Value::from(value));
                continue;
            }
            Event::RequestTag { key, value } => {
                let _ = out.tag_request(Text::Borrowed(name(key)), Value::from(value));
                continue;
            }
        };
        let mut f = SpanFlags::NONE;
        if flags & 1 != 0 {
            f = f.union(SpanFlags::IGNORE);
        }
        if flags & 2 != 0 {
            f = f.union(SpanFlags::IGNORE_CHILDREN);
        }
        open += 1;
        let _ = out.start_span(Text::Borrowed(name(name_id)), at(delta), f);
    }
    Err(if open == 0 {
        InvalidRequest::NoRoot
    } else {
        InvalidRequest::Unfinished
    })
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
