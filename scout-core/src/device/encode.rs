//! The name table, and the encoding of a finished core [`Request`] as
//! [`Up::Request`](super::Up::Request) through serde and postcard, streamed straight from the
//! request (no copy). Devices record with [`super::Recorder`] instead, which writes the same
//! frame without serde; this path serves hosts and checks that both agree.

use serde::Serialize;
use serde::ser::{SerializeSeq, SerializeStruct, Serializer};

use super::wire::{MAX_SPANS, NO_NAME, ROOT, WireSpan, WireTag, WireValue};
use crate::request::{Request, SpanIdx};
use crate::storage::Storage;
use crate::value::Value;

/// Ticks per second of the times [`RequestFrame`] writes ([`crate::Timestamp`] microseconds),
/// and of those `scout-embassy` records.
pub const MICROS_HZ: u32 = 1_000_000;

/// Maps names to the small ids sent on the wire.
pub trait NameLookup {
    /// The id of `name`, or [`NO_NAME`].
    fn id_of(&self, name: &str) -> u16;
}

/// A fixed table of up to `N` `'static` names, append-only; name `i` has id `i + 1`.
///
/// Ids are stable for the life of the table, so requests encoded before a connection exists
/// stay valid; a forwarder sends the definitions of all names at the start of each connection
/// and of new names before the first frame that uses them.
#[derive(Debug)]
pub struct NameTable<const N: usize> {
    names: heapless::Vec<&'static str, N>,
}

impl<const N: usize> Default for NameTable<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> NameTable<N> {
    /// An empty table.
    pub const fn new() -> Self {
        Self {
            names: heapless::Vec::new(),
        }
    }

    /// The id of `name`, adding it if new; `None` when the table is full.
    pub fn intern(&mut self, name: &'static str) -> Option<u16> {
        let id = self.id_of(name);
        if id != NO_NAME {
            return Some(id);
        }
        if self.names.len() >= usize::from(u16::MAX - 1) {
            return None;
        }
        self.names.push(name).ok()?;
        Some(self.names.len() as u16)
    }

    /// The name with id `id`.
    pub fn get(&self, id: u16) -> Option<&'static str> {
        self.names.get(usize::from(id).checked_sub(1)?).copied()
    }

    /// Number of names.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }
}

impl<const N: usize> NameLookup for NameTable<N> {
    fn id_of(&self, name: &str) -> u16 {
        for (i, n) in self.names.iter().enumerate() {
            if same(n, name) {
                return (i + 1) as u16;
            }
        }
        NO_NAME
    }
}

/// String equality byte by byte (no `memcmp`/`bcmp` on a device).
fn same(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a.get(i) != b.get(i) {
            return false;
        }
        i += 1;
    }
    true
}

/// A finished request encoded as [`Up::Request`](super::Up::Request) with times in
/// microseconds ([`MICROS_HZ`]), ready for [`super::encode`].
///
/// Spans go in start order; only the first [`MAX_SPANS`] are sent and the rest are added to
/// `dropped`. Span 0 must be the root (the request's first span).
#[derive(Debug)]
pub struct RequestFrame<'r, S: Storage, L: NameLookup> {
    /// The request.
    pub request: &'r Request<S>,
    /// Where names get their ids.
    pub names: &'r L,
    /// The request's sequence number.
    pub seq: u32,
}

fn clamp32(v: u64) -> u32 {
    u32::try_from(v).unwrap_or(u32::MAX)
}

impl<S: Storage, L: NameLookup> RequestFrame<'_, S, L> {
    fn span_count(&self) -> usize {
        self.request.span_count().min(MAX_SPANS)
    }

    fn wire_span(&self, i: usize) -> Option<WireSpan> {
        let span = self.request.span(SpanIdx(i as u16))?;
        let (parent, base) = match span.parent() {
            Some(p) => (
                u8::try_from(usize::from(p.0) + 1).ok()?,
                self.request.span(p)?.start_time(),
            ),
            None => (ROOT, self.request.start_time()),
        };
        Some(WireSpan {
            parent,
            name: self.names.id_of(span.operation()),
            start: clamp32(span.start_time().micros_since(base)),
            duration: clamp32(span.duration_us()),
        })
    }

    /// Tags as `(target, key, value)`, request tags first.
    fn for_each_tag(&self, mut f: impl FnMut(WireTag<'_>) -> bool) {
        for (k, v) in self.request.request_tags() {
            if !f(self.wire_tag(0, k, v)) {
                return;
            }
        }
        for i in 0..self.span_count() {
            if let Some(span) = self.request.span(SpanIdx(i as u16)) {
                for (k, v) in span.tags() {
                    if !f(self.wire_tag((i + 1) as u8, k, v)) {
                        return;
                    }
                }
            }
        }
    }

    fn wire_tag<'v>(&self, target: u8, key: &str, v: Value<'v>) -> WireTag<'v> {
        WireTag {
            target,
            key: self.names.id_of(key),
            value: match v {
                Value::Str(s) | Value::Static(s) => WireValue::Str(s),
                Value::Json(j) => WireValue::Str(j.as_str()),
                Value::Int(i) => WireValue::Int(i),
                Value::Float(f) => WireValue::Float(f),
                Value::Bool(b) => WireValue::Bool(b),
                Value::Null => WireValue::Null,
            },
        }
    }

    fn tag_count(&self) -> usize {
        let mut n = 0usize;
        self.for_each_tag(|_| {
            n += 1;
            n < super::wire::MAX_TAGS
        });
        n
    }
}

struct Spans<'a, 'r, S: Storage, L: NameLookup>(&'a RequestFrame<'r, S, L>);
struct Tags<'a, 'r, S: Storage, L: NameLookup>(&'a RequestFrame<'r, S, L>);
struct Body<'a, 'r, S: Storage, L: NameLookup>(&'a RequestFrame<'r, S, L>);

impl<S: Storage, L: NameLookup> Serialize for Spans<'_, '_, S, L> {
    fn serialize<Z: Serializer>(&self, s: Z) -> Result<Z::Ok, Z::Error> {
        let n = self.0.span_count();
        let mut seq = s.serialize_seq(Some(n))?;
        for i in 0..n {
            // Every index below span_count exists; a missing one is encoded as an empty root
            // and the gateway rejects the request as malformed.
            let span = self.0.wire_span(i).unwrap_or(WireSpan {
                parent: ROOT,
                name: NO_NAME,
                start: 0,
                duration: 0,
            });
            seq.serialize_element(&span)?;
        }
        seq.end()
    }
}

impl<S: Storage, L: NameLookup> Serialize for Tags<'_, '_, S, L> {
    fn serialize<Z: Serializer>(&self, s: Z) -> Result<Z::Ok, Z::Error> {
        let n = self.0.tag_count();
        let mut seq = s.serialize_seq(Some(n))?;
        let mut err = None;
        let mut done = 0usize;
        self.0.for_each_tag(|t| {
            if done >= n {
                return false;
            }
            done += 1;
            match seq.serialize_element(&t) {
                Ok(()) => true,
                Err(e) => {
                    err = Some(e);
                    false
                }
            }
        });
        if let Some(e) = err {
            return Err(e);
        }
        seq.end()
    }
}

impl<S: Storage, L: NameLookup> Serialize for Body<'_, '_, S, L> {
    fn serialize<Z: Serializer>(&self, s: Z) -> Result<Z::Ok, Z::Error> {
        let f = self.0;
        let req = f.request;
        let omitted = req.span_count().saturating_sub(MAX_SPANS) as u64;
        let mut st = s.serialize_struct("WireRequest", 6)?;
        st.serialize_field("seq", &f.seq)?;
        st.serialize_field("start", &req.start_time().as_micros())?;
        st.serialize_field(
            "duration",
            &clamp32(req.end_time().micros_since(req.start_time())),
        )?;
        st.serialize_field("spans", &Spans(f))?;
        st.serialize_field("tags", &Tags(f))?;
        st.serialize_field("dropped", &clamp32(req.drops().total() + omitted))?;
        st.end()
    }
}

impl<S: Storage, L: NameLookup> Serialize for RequestFrame<'_, S, L> {
    fn serialize<Z: Serializer>(&self, s: Z) -> Result<Z::Ok, Z::Error> {
        s.serialize_newtype_variant("Up", 2, "Request", &Body(self))
    }
}
