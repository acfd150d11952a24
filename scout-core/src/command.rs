//! The core-agent command set (spec §1.4), its JSON encoding and its framing.
//!
//! Every command encodes to exactly the JSON the Python agent sends, byte for byte (Python's
//! `json.dumps` spacing and `ensure_ascii` escaping; see [`crate::json`]), except where this
//! agent deliberately differs: timestamps always carry six fraction digits, `NaN`/`Infinity`
//! become `null`, and `language` is `"rust"`.
//!
//! A frame is a 4-byte big-endian length followed by the JSON. [`write_frame`] computes the
//! length with a counting pass and then streams the JSON into the sink, so no intermediate
//! buffer is needed.
//!
//! ```
//! use scout_core::command::{write_frame, Register};
//! let mut buf = [0u8; 256];
//! let mut sink = scout_core::json::SliceSink::new(&mut buf);
//! let reg = Register { app: "App", key: "KEY", host: None, language: "rust", api_version: "1.0" };
//! write_frame(&reg, &mut sink, 1 << 20).unwrap();
//! let frame = sink.written();
//! assert_eq!(&frame[..4], &[0, 0, 0, 98]);
//! assert_eq!(
//!     &frame[4..],
//!     br#"{"Register": {"app": "App", "key": "KEY", "host": null, "language": "rust", "api_version": "1.0"}}"#
//! );
//! ```

use crate::json::{self, CountingSink, Sink};
use crate::request::Request;
use crate::storage::Storage;
use crate::time::Timestamp;
use crate::value::Value;

/// Something that encodes itself as JSON.
pub trait Encode {
    /// Writes the JSON text.
    fn encode<S: Sink + ?Sized>(&self, out: &mut S) -> Result<(), S::Error>;
}

impl<E: Encode + ?Sized> Encode for &E {
    fn encode<S: Sink + ?Sized>(&self, out: &mut S) -> Result<(), S::Error> {
        (**self).encode(out)
    }
}

impl Encode for Value<'_> {
    fn encode<S: Sink + ?Sized>(&self, out: &mut S) -> Result<(), S::Error> {
        self.write_json(out)
    }
}

/// Length of the JSON text of `cmd`.
pub fn encoded_len<E: Encode + ?Sized>(cmd: &E) -> usize {
    let mut c = CountingSink::default();
    // A counting sink cannot fail.
    let _ = cmd.encode(&mut c);
    c.count
}

/// Why a frame was not written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum FrameError<E> {
    /// The JSON is longer than the allowed maximum (its length is given); nothing was written.
    TooLarge(usize),
    /// The sink failed.
    Sink(E),
}

impl<E: core::fmt::Display> core::fmt::Display for FrameError<E> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::TooLarge(n) => write!(f, "message of {n} bytes exceeds the frame limit"),
            Self::Sink(e) => write!(f, "{e}"),
        }
    }
}

impl<E: core::fmt::Debug + core::fmt::Display> core::error::Error for FrameError<E> {}

/// Writes `cmd` as one frame (4-byte big-endian length, then the JSON), refusing messages
/// longer than `max_len` (and than `u32::MAX`). Returns the frame's total length.
pub fn write_frame<E: Encode + ?Sized, S: Sink + ?Sized>(
    cmd: &E,
    out: &mut S,
    max_len: usize,
) -> Result<usize, FrameError<S::Error>> {
    let len = encoded_len(cmd);
    if len > max_len || len > u32::MAX as usize {
        return Err(FrameError::TooLarge(len));
    }
    out.write(&(len as u32).to_be_bytes())
        .map_err(FrameError::Sink)?;
    cmd.encode(out).map_err(FrameError::Sink)?;
    Ok(len + 4)
}

/// Writes `cmd` as one frame at the start of `buf` in a single pass (the length prefix is
/// patched in afterwards), refusing messages longer than `max_len`. Returns the frame length.
/// Prefer this over [`write_frame`] when the destination is a slice: it encodes once.
pub fn write_frame_to_slice<E: Encode + ?Sized>(
    cmd: &E,
    buf: &mut [u8],
    max_len: usize,
) -> Result<usize, FrameError<json::BufferFull>> {
    let limit = max_len
        .min(u32::MAX as usize)
        .min(buf.len().saturating_sub(4));
    let Some(body) = buf.get_mut(4..4 + limit) else {
        return Err(FrameError::Sink(json::BufferFull));
    };
    let mut sink = json::SliceSink::new(body);
    if cmd.encode(&mut sink).is_err() {
        let len = encoded_len(cmd);
        return Err(if len > max_len {
            FrameError::TooLarge(len)
        } else {
            FrameError::Sink(json::BufferFull)
        });
    }
    let len = sink.len();
    buf[..4].copy_from_slice(&(len as u32).to_be_bytes());
    Ok(len + 4)
}

/// Writes a constant piece, then a timestamp's digits (the piece ends with an opening quote).
#[inline]
fn ts<S: Sink + ?Sized>(out: &mut S, prefix: &[u8], t: Timestamp) -> Result<(), S::Error> {
    out.write(prefix)?;
    out.write(&t.to_rfc3339())
}

/// Writes a constant piece, then the escaped content of `v` (the piece ends with a quote).
#[inline]
fn text<S: Sink + ?Sized>(out: &mut S, prefix: &[u8], v: &str) -> Result<(), S::Error> {
    out.write(prefix)?;
    json::write_plain(out, v)
}

/// Writes `prefix` then `null` or the quoted, escaped `v`.
#[inline]
fn opt_text<S: Sink + ?Sized>(out: &mut S, prefix: &[u8], v: Option<&str>) -> Result<(), S::Error> {
    out.write(prefix)?;
    match v {
        Some(v) => {
            out.write(b"\"")?;
            json::write_plain(out, v)?;
            out.write(b"\"")
        }
        None => out.write(b"null"),
    }
}

/// `Register`: sent first on every connection.
#[derive(Debug, Clone, Copy)]
pub struct Register<'a> {
    /// Application name (config `name`).
    pub app: &'a str,
    /// Organisation key (config `key`).
    pub key: &'a str,
    /// Host name, or `null`.
    pub host: Option<&'a str>,
    /// Agent language: `"rust"`.
    pub language: &'a str,
    /// Always `"1.0"`.
    pub api_version: &'a str,
}

impl Encode for Register<'_> {
    fn encode<S: Sink + ?Sized>(&self, out: &mut S) -> Result<(), S::Error> {
        text(out, b"{\"Register\": {\"app\": \"", self.app)?;
        text(out, b"\", \"key\": \"", self.key)?;
        opt_text(out, b"\", \"host\": ", self.host)?;
        text(out, b", \"language\": \"", self.language)?;
        text(out, b"\", \"api_version\": \"", self.api_version)?;
        out.write(b"\"}}")
    }
}

/// `StartRequest`.
#[derive(Debug, Clone, Copy)]
pub struct StartRequest<'a> {
    /// Request start.
    pub timestamp: Timestamp,
    /// `req-<uuid>`.
    pub request_id: &'a str,
}

impl Encode for StartRequest<'_> {
    fn encode<S: Sink + ?Sized>(&self, out: &mut S) -> Result<(), S::Error> {
        ts(
            out,
            b"{\"StartRequest\": {\"timestamp\": \"",
            self.timestamp,
        )?;
        text(out, b"\", \"request_id\": \"", self.request_id)?;
        out.write(b"\"}}")
    }
}

/// `TagRequest`.
#[derive(Debug, Clone, Copy)]
pub struct TagRequest<'a> {
    /// The request's start time (as Python sends it).
    pub timestamp: Timestamp,
    /// Request id.
    pub request_id: &'a str,
    /// Tag key.
    pub tag: &'a str,
    /// Tag value.
    pub value: Value<'a>,
}

impl Encode for TagRequest<'_> {
    fn encode<S: Sink + ?Sized>(&self, out: &mut S) -> Result<(), S::Error> {
        ts(out, b"{\"TagRequest\": {\"timestamp\": \"", self.timestamp)?;
        text(out, b"\", \"request_id\": \"", self.request_id)?;
        text(out, b"\", \"tag\": \"", self.tag)?;
        out.write(b"\", \"value\": ")?;
        self.value.write_json(out)?;
        out.write(b"}}")
    }
}

/// `StartSpan`.
#[derive(Debug, Clone, Copy)]
pub struct StartSpan<'a> {
    /// Span start.
    pub timestamp: Timestamp,
    /// Request id.
    pub request_id: &'a str,
    /// `span-<uuid>`.
    pub span_id: &'a str,
    /// Parent span id; `null` for a root span.
    pub parent_id: Option<&'a str>,
    /// Operation, e.g. `Controller/users#show`.
    pub operation: &'a str,
}

impl Encode for StartSpan<'_> {
    fn encode<S: Sink + ?Sized>(&self, out: &mut S) -> Result<(), S::Error> {
        ts(out, b"{\"StartSpan\": {\"timestamp\": \"", self.timestamp)?;
        text(out, b"\", \"request_id\": \"", self.request_id)?;
        text(out, b"\", \"span_id\": \"", self.span_id)?;
        opt_text(out, b"\", \"parent_id\": ", self.parent_id)?;
        text(out, b", \"operation\": \"", self.operation)?;
        out.write(b"\"}}")
    }
}

/// `TagSpan`.
#[derive(Debug, Clone, Copy)]
pub struct TagSpan<'a> {
    /// The span's start time (as Python sends it).
    pub timestamp: Timestamp,
    /// Request id.
    pub request_id: &'a str,
    /// Span id.
    pub span_id: &'a str,
    /// Tag key.
    pub tag: &'a str,
    /// Tag value.
    pub value: Value<'a>,
}

impl Encode for TagSpan<'_> {
    fn encode<S: Sink + ?Sized>(&self, out: &mut S) -> Result<(), S::Error> {
        ts(out, b"{\"TagSpan\": {\"timestamp\": \"", self.timestamp)?;
        text(out, b"\", \"request_id\": \"", self.request_id)?;
        text(out, b"\", \"span_id\": \"", self.span_id)?;
        text(out, b"\", \"tag\": \"", self.tag)?;
        out.write(b"\", \"value\": ")?;
        self.value.write_json(out)?;
        out.write(b"}}")
    }
}

/// `StopSpan`.
#[derive(Debug, Clone, Copy)]
pub struct StopSpan<'a> {
    /// Span end.
    pub timestamp: Timestamp,
    /// Request id.
    pub request_id: &'a str,
    /// Span id.
    pub span_id: &'a str,
}

impl Encode for StopSpan<'_> {
    fn encode<S: Sink + ?Sized>(&self, out: &mut S) -> Result<(), S::Error> {
        ts(out, b"{\"StopSpan\": {\"timestamp\": \"", self.timestamp)?;
        text(out, b"\", \"request_id\": \"", self.request_id)?;
        text(out, b"\", \"span_id\": \"", self.span_id)?;
        out.write(b"\"}}")
    }
}

/// `FinishRequest`.
#[derive(Debug, Clone, Copy)]
pub struct FinishRequest<'a> {
    /// Request end.
    pub timestamp: Timestamp,
    /// Request id.
    pub request_id: &'a str,
}

impl Encode for FinishRequest<'_> {
    fn encode<S: Sink + ?Sized>(&self, out: &mut S) -> Result<(), S::Error> {
        ts(
            out,
            b"{\"FinishRequest\": {\"timestamp\": \"",
            self.timestamp,
        )?;
        text(out, b"\", \"request_id\": \"", self.request_id)?;
        out.write(b"\"}}")
    }
}

/// `ApplicationEvent` (`scout.metadata`, `CPU/Utilization`, `Memory/Physical`).
#[derive(Debug, Clone, Copy)]
pub struct ApplicationEvent<'a, V> {
    /// When the event was produced.
    pub timestamp: Timestamp,
    /// Event type, e.g. `Memory/Physical`.
    pub event_type: &'a str,
    /// Event value (any JSON).
    pub event_value: V,
    /// `Pid: <pid>`.
    pub source: &'a str,
}

impl<V: Encode> Encode for ApplicationEvent<'_, V> {
    fn encode<S: Sink + ?Sized>(&self, out: &mut S) -> Result<(), S::Error> {
        ts(
            out,
            b"{\"ApplicationEvent\": {\"timestamp\": \"",
            self.timestamp,
        )?;
        text(out, b"\", \"event_type\": \"", self.event_type)?;
        out.write(b"\", \"event_value\": ")?;
        self.event_value.encode(out)?;
        text(out, b", \"source\": \"", self.source)?;
        out.write(b"\"}}")
    }
}

/// `CoreAgentVersion`: asks the core agent for its version.
#[derive(Debug, Clone, Copy, Default)]
pub struct CoreAgentVersion;

impl Encode for CoreAgentVersion {
    fn encode<S: Sink + ?Sized>(&self, out: &mut S) -> Result<(), S::Error> {
        out.write(b"{\"CoreAgentVersion\": {}}")
    }
}

/// `CoreAgentShutdown`: asks the core agent to exit.
#[derive(Debug, Clone, Copy, Default)]
pub struct CoreAgentShutdown;

impl Encode for CoreAgentShutdown {
    fn encode<S: Sink + ?Sized>(&self, out: &mut S) -> Result<(), S::Error> {
        out.write(b"{\"CoreAgentShutdown\": {}}")
    }
}

/// `BatchCommand` over any list of commands.
#[derive(Debug, Clone, Copy)]
pub struct Batch<'a, C>(pub &'a [C]);

impl<C: Encode> Encode for Batch<'_, C> {
    fn encode<S: Sink + ?Sized>(&self, out: &mut S) -> Result<(), S::Error> {
        out.write(b"{\"BatchCommand\": {\"commands\": [")?;
        for (i, c) in self.0.iter().enumerate() {
            if i > 0 {
                out.write(b", ")?;
            }
            c.encode(out)?;
        }
        out.write(b"]}}")
    }
}

/// A finished request as one `BatchCommand`, in the Python agent's order (spec §1.7):
/// `StartRequest`, the request tags in insertion order, then for each completed span in
/// completion order (children before parents) its `StartSpan`, `TagSpan`s and `StopSpan`, and
/// `FinishRequest` last.
#[derive(Debug)]
pub struct RequestBatch<'r, S: Storage>(pub &'r Request<S>);

impl<St: Storage> Encode for RequestBatch<'_, St> {
    fn encode<S: Sink + ?Sized>(&self, out: &mut S) -> Result<(), S::Error> {
        // Ids and timestamps are generated here and are plain ASCII: they are written without
        // escaping, and each timestamp is formatted once.
        // `tests::batch_fast_path_equals_command_structs` keeps this in step with the structs.
        let req = self.0;
        let ids = req.ids();
        let rid = ids.request_id();
        let rid = rid.as_str().as_bytes();
        let t0 = req.start_time().to_rfc3339();
        out.write(b"{\"BatchCommand\": {\"commands\": [{\"StartRequest\": {\"timestamp\": \"")?;
        out.write(&t0)?;
        out.write(b"\", \"request_id\": \"")?;
        out.write(rid)?;
        out.write(b"\"}}")?;
        for (tag, value) in req.request_tags() {
            out.write(b", {\"TagRequest\": {\"timestamp\": \"")?;
            out.write(&t0)?;
            out.write(b"\", \"request_id\": \"")?;
            out.write(rid)?;
            text(out, b"\", \"tag\": \"", tag)?;
            out.write(b"\", \"value\": ")?;
            value.write_json(out)?;
            out.write(b"}}")?;
        }
        for span in req.spans() {
            let sid = ids.span_id(span.index().0);
            let sid = sid.as_str().as_bytes();
            let start = span.start_time().to_rfc3339();
            out.write(b", {\"StartSpan\": {\"timestamp\": \"")?;
            out.write(&start)?;
            out.write(b"\", \"request_id\": \"")?;
            out.write(rid)?;
            out.write(b"\", \"span_id\": \"")?;
            out.write(sid)?;
            match span.parent() {
                Some(p) => {
                    out.write(b"\", \"parent_id\": \"")?;
                    out.write(ids.span_id(p.0).as_str().as_bytes())?;
                    out.write(b"\"")?;
                }
                None => out.write(b"\", \"parent_id\": null")?,
            }
            text(out, b", \"operation\": \"", span.operation())?;
            out.write(b"\"}}")?;
            for (tag, value) in span.tags() {
                out.write(b", {\"TagSpan\": {\"timestamp\": \"")?;
                out.write(&start)?;
                out.write(b"\", \"request_id\": \"")?;
                out.write(rid)?;
                out.write(b"\", \"span_id\": \"")?;
                out.write(sid)?;
                text(out, b"\", \"tag\": \"", tag)?;
                out.write(b"\", \"value\": ")?;
                value.write_json(out)?;
                out.write(b"}}")?;
            }
            out.write(b", {\"StopSpan\": {\"timestamp\": \"")?;
            out.write(&span.end_time().to_rfc3339())?;
            out.write(b"\", \"request_id\": \"")?;
            out.write(rid)?;
            out.write(b"\", \"span_id\": \"")?;
            out.write(sid)?;
            out.write(b"\"}}")?;
        }
        out.write(b", {\"FinishRequest\": {\"timestamp\": \"")?;
        out.write(&req.end_time().to_rfc3339())?;
        out.write(b"\", \"request_id\": \"")?;
        out.write(rid)?;
        out.write(b"\"}}]}}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::json::SliceSink;
    use crate::{RequestIds, SpanFlags, Text};

    fn encode<E: Encode>(cmd: &E, out: &mut heapless::Vec<u8, 8192>) {
        cmd.encode(out).unwrap();
    }

    /// `RequestBatch` writes each command itself (ids and timestamps unescaped, formatted once);
    /// the result must equal the command structs' encodings joined as a `BatchCommand`.
    #[test]
    fn batch_fast_path_equals_command_structs() {
        let mut req: Request = Request::new();
        req.begin(
            RequestIds::from_parts([3; 16], [5, 6]),
            Timestamp(1_795_553_928_336_122),
            1500,
        );
        req.start_span(
            "Controller/x\u{e9}".into(),
            Timestamp(1_795_553_928_336_200),
            SpanFlags::NONE,
        );
        req.tag_request("user".into(), Value::Str("a\"b")).unwrap();
        req.start_span(
            Text::Borrowed("SQL/Query"),
            Timestamp(1_795_553_928_336_300),
            SpanFlags::NONE,
        );
        req.tag_span("n".into(), Value::Float(1e-7)).unwrap();
        req.tag_span("ok".into(), Value::Bool(true)).unwrap();
        req.stop_span(Timestamp(1_795_553_928_337_000)).unwrap();
        req.stop_span(Timestamp(1_795_553_928_338_000)).unwrap();

        let mut fast = [0u8; 8192];
        let mut sink = SliceSink::new(&mut fast);
        RequestBatch(&req).encode(&mut sink).unwrap();

        let mut slow: heapless::Vec<u8, 8192> = heapless::Vec::new();
        let ids = req.ids();
        let rid = ids.request_id();
        let rid = rid.as_str();
        slow.extend_from_slice(b"{\"BatchCommand\": {\"commands\": [")
            .unwrap();
        encode(
            &StartRequest {
                timestamp: req.start_time(),
                request_id: rid,
            },
            &mut slow,
        );
        for (tag, value) in req.request_tags() {
            slow.extend_from_slice(b", ").unwrap();
            encode(
                &TagRequest {
                    timestamp: req.start_time(),
                    request_id: rid,
                    tag,
                    value,
                },
                &mut slow,
            );
        }
        for span in req.spans() {
            let sid = ids.span_id(span.index().0);
            let pid = span.parent().map(|p| ids.span_id(p.0));
            slow.extend_from_slice(b", ").unwrap();
            encode(
                &StartSpan {
                    timestamp: span.start_time(),
                    request_id: rid,
                    span_id: sid.as_str(),
                    parent_id: pid.as_ref().map(|p| p.as_str()),
                    operation: span.operation(),
                },
                &mut slow,
            );
            for (tag, value) in span.tags() {
                slow.extend_from_slice(b", ").unwrap();
                let cmd = TagSpan {
                    timestamp: span.start_time(),
                    request_id: rid,
                    span_id: sid.as_str(),
                    tag,
                    value,
                };
                encode(&cmd, &mut slow);
            }
            slow.extend_from_slice(b", ").unwrap();
            encode(
                &StopSpan {
                    timestamp: span.end_time(),
                    request_id: rid,
                    span_id: sid.as_str(),
                },
                &mut slow,
            );
        }
        slow.extend_from_slice(b", ").unwrap();
        encode(
            &FinishRequest {
                timestamp: req.end_time(),
                request_id: rid,
            },
            &mut slow,
        );
        slow.extend_from_slice(b"]}}").unwrap();

        assert_eq!(sink.written(), &slow[..]);
    }
}
