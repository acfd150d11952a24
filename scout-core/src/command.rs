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
            FrameError::TooLarge(n) => write!(f, "message of {n} bytes exceeds the frame limit"),
            FrameError::Sink(e) => write!(f, "{e}"),
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

fn write_ts<S: Sink + ?Sized>(out: &mut S, t: Timestamp) -> Result<(), S::Error> {
    out.write(b"\"")?;
    out.write(&t.to_rfc3339())?;
    out.write(b"\"")
}

fn open<S: Sink + ?Sized>(out: &mut S, name: &str) -> Result<(), S::Error> {
    out.write(b"{")?;
    json::write_key(out, name)?;
    out.write(b"{")
}

fn field_str<S: Sink + ?Sized>(
    out: &mut S,
    key: &str,
    v: &str,
    first: bool,
) -> Result<(), S::Error> {
    if !first {
        out.write(b", ")?;
    }
    json::write_key(out, key)?;
    json::write_str(out, v)
}

fn field_opt_str<S: Sink + ?Sized>(
    out: &mut S,
    key: &str,
    v: Option<&str>,
) -> Result<(), S::Error> {
    out.write(b", ")?;
    json::write_key(out, key)?;
    match v {
        Some(v) => json::write_str(out, v),
        None => out.write(b"null"),
    }
}

fn field_ts<S: Sink + ?Sized>(out: &mut S, t: Timestamp) -> Result<(), S::Error> {
    json::write_key(out, "timestamp")?;
    write_ts(out, t)
}

fn field_value<S: Sink + ?Sized>(out: &mut S, key: &str, v: &Value<'_>) -> Result<(), S::Error> {
    out.write(b", ")?;
    json::write_key(out, key)?;
    v.write_json(out)
}

fn close<S: Sink + ?Sized>(out: &mut S) -> Result<(), S::Error> {
    out.write(b"}}")
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
        open(out, "Register")?;
        field_str(out, "app", self.app, true)?;
        field_str(out, "key", self.key, false)?;
        field_opt_str(out, "host", self.host)?;
        field_str(out, "language", self.language, false)?;
        field_str(out, "api_version", self.api_version, false)?;
        close(out)
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
        open(out, "StartRequest")?;
        field_ts(out, self.timestamp)?;
        field_str(out, "request_id", self.request_id, false)?;
        close(out)
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
        open(out, "TagRequest")?;
        field_ts(out, self.timestamp)?;
        field_str(out, "request_id", self.request_id, false)?;
        field_str(out, "tag", self.tag, false)?;
        field_value(out, "value", &self.value)?;
        close(out)
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
        open(out, "StartSpan")?;
        field_ts(out, self.timestamp)?;
        field_str(out, "request_id", self.request_id, false)?;
        field_str(out, "span_id", self.span_id, false)?;
        field_opt_str(out, "parent_id", self.parent_id)?;
        field_str(out, "operation", self.operation, false)?;
        close(out)
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
        open(out, "TagSpan")?;
        field_ts(out, self.timestamp)?;
        field_str(out, "request_id", self.request_id, false)?;
        field_str(out, "span_id", self.span_id, false)?;
        field_str(out, "tag", self.tag, false)?;
        field_value(out, "value", &self.value)?;
        close(out)
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
        open(out, "StopSpan")?;
        field_ts(out, self.timestamp)?;
        field_str(out, "request_id", self.request_id, false)?;
        field_str(out, "span_id", self.span_id, false)?;
        close(out)
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
        open(out, "FinishRequest")?;
        field_ts(out, self.timestamp)?;
        field_str(out, "request_id", self.request_id, false)?;
        close(out)
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
        open(out, "ApplicationEvent")?;
        field_ts(out, self.timestamp)?;
        field_str(out, "event_type", self.event_type, false)?;
        out.write(b", ")?;
        json::write_key(out, "event_value")?;
        self.event_value.encode(out)?;
        field_str(out, "source", self.source, false)?;
        close(out)
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
        let req = self.0;
        let ids = req.ids();
        let rid = ids.request_id();
        let rid = rid.as_str();
        out.write(b"{\"BatchCommand\": {\"commands\": [")?;
        StartRequest {
            timestamp: req.start_time(),
            request_id: rid,
        }
        .encode(out)?;
        for (tag, value) in req.request_tags() {
            out.write(b", ")?;
            TagRequest {
                timestamp: req.start_time(),
                request_id: rid,
                tag,
                value,
            }
            .encode(out)?;
        }
        for span in req.spans() {
            let sid = ids.span_id(span.index().0);
            let pid = span.parent().map(|p| ids.span_id(p.0));
            out.write(b", ")?;
            StartSpan {
                timestamp: span.start_time(),
                request_id: rid,
                span_id: sid.as_str(),
                parent_id: pid.as_ref().map(|p| p.as_str()),
                operation: span.operation(),
            }
            .encode(out)?;
            for (tag, value) in span.tags() {
                out.write(b", ")?;
                TagSpan {
                    timestamp: span.start_time(),
                    request_id: rid,
                    span_id: sid.as_str(),
                    tag,
                    value,
                }
                .encode(out)?;
            }
            out.write(b", ")?;
            StopSpan {
                timestamp: span.end_time(),
                request_id: rid,
                span_id: sid.as_str(),
            }
            .encode(out)?;
        }
        out.write(b", ")?;
        FinishRequest {
            timestamp: req.end_time(),
            request_id: rid,
        }
        .encode(out)?;
        out.write(b"]}}")
    }
}
