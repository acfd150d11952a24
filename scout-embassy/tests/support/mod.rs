//! Links for driving `Agent::run_link` in tests (on an executor, or polled by hand), and a
//! decoder of what a device wrote that replays each request as the gateway does.
#![allow(dead_code)] // Each test binary uses a different subset.

use std::collections::HashMap;
use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use embassy_time::Timer;
use embedded_io_async::{ErrorKind, ErrorType, Read, Write};
use scout_core::device::{self, DeviceDrops, Event, FrameReader, NameSource, Up};
use scout_core::{Drops, Fixed, RequestIds, SpanIdx, Storage, Timestamp, Value};

/// A receive half on which nothing ever arrives.
#[derive(Debug)]
pub(crate) struct Silent;

impl ErrorType for Silent {
    type Error = ErrorKind;
}

impl Read for Silent {
    async fn read(&mut self, _buf: &mut [u8]) -> Result<usize, ErrorKind> {
        core::future::pending().await
    }
}

/// A transmit half that appends to a shared buffer; while `open` is false its writes wait
/// (a stalled link), and once `fail` is set they fail.
#[derive(Debug, Clone)]
pub(crate) struct Capture {
    pub(crate) bytes: Arc<Mutex<Vec<u8>>>,
    pub(crate) open: &'static AtomicBool,
    pub(crate) fail: &'static AtomicBool,
}

static ALWAYS: AtomicBool = AtomicBool::new(true);
static NEVER: AtomicBool = AtomicBool::new(false);

impl Capture {
    /// An always-open, never-failing capture.
    pub(crate) fn new() -> Self {
        Self {
            bytes: Arc::default(),
            open: &ALWAYS,
            fail: &NEVER,
        }
    }

    /// A copy of everything written so far.
    pub(crate) fn written(&self) -> Vec<u8> {
        self.bytes.lock().unwrap().clone()
    }
}

impl ErrorType for Capture {
    type Error = ErrorKind;
}

impl Write for Capture {
    async fn write(&mut self, buf: &[u8]) -> Result<usize, ErrorKind> {
        while !self.open.load(Ordering::Acquire) {
            Timer::after_millis(1).await;
        }
        if self.fail.load(Ordering::Acquire) {
            return Err(ErrorKind::BrokenPipe);
        }
        self.bytes.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    async fn flush(&mut self) -> Result<(), ErrorKind> {
        Ok(())
    }
}

// --- polled by hand ----------------------------------------------------------------------------

/// How a [`Gate`] answers writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Writes complete at once.
    Open,
    /// Writes wait (a stalled link): pending until the mode changes.
    Stalled,
    /// Writes fail.
    Fail,
    /// Writes return `Ok(0)`.
    Zero,
}

/// A transmit half for futures polled by hand ([`Polled`]): no timers, so each poll runs the
/// link as far as it can go right now.
#[derive(Debug, Clone)]
pub(crate) struct Gate {
    pub(crate) bytes: Arc<Mutex<Vec<u8>>>,
    mode: Arc<Mutex<Mode>>,
    /// Write calls that reached the mode check.
    pub(crate) attempts: Arc<Mutex<usize>>,
}

impl Gate {
    /// A gate in `mode`.
    pub(crate) fn new(mode: Mode) -> Self {
        Self {
            bytes: Arc::default(),
            mode: Arc::new(Mutex::new(mode)),
            attempts: Arc::default(),
        }
    }

    /// Changes how writes are answered (a pending write sees it at its next poll).
    pub(crate) fn set(&self, mode: Mode) {
        *self.mode.lock().unwrap() = mode;
    }

    /// A copy of everything written so far.
    pub(crate) fn written(&self) -> Vec<u8> {
        self.bytes.lock().unwrap().clone()
    }
}

impl ErrorType for Gate {
    type Error = ErrorKind;
}

impl Write for Gate {
    async fn write(&mut self, buf: &[u8]) -> Result<usize, ErrorKind> {
        let mode = poll_fn(|_| match *self.mode.lock().unwrap() {
            Mode::Stalled => Poll::Pending,
            m => Poll::Ready(m),
        })
        .await;
        *self.attempts.lock().unwrap() += 1;
        match mode {
            Mode::Fail => Err(ErrorKind::BrokenPipe),
            Mode::Zero => Ok(0),
            _ => {
                self.bytes.lock().unwrap().extend_from_slice(buf);
                Ok(buf.len())
            }
        }
    }

    async fn flush(&mut self) -> Result<(), ErrorKind> {
        Ok(())
    }
}

/// A future polled by hand with a no-op waker: each [`Polled::poll`] runs it until it waits.
pub(crate) struct Polled<'a, T> {
    fut: Pin<Box<dyn Future<Output = T> + 'a>>,
    done: Option<T>,
}

impl<'a, T> Polled<'a, T> {
    pub(crate) fn new(fut: impl Future<Output = T> + 'a) -> Self {
        Self {
            fut: Box::pin(fut),
            done: None,
        }
    }

    /// Polls once (no more once it returned); true when it has returned.
    pub(crate) fn poll(&mut self) -> bool {
        if self.done.is_none()
            && let Poll::Ready(v) = self
                .fut
                .as_mut()
                .poll(&mut Context::from_waker(Waker::noop()))
        {
            self.done = Some(v);
        }
        self.done.is_some()
    }

    /// What it returned, if it has.
    pub(crate) fn output(&self) -> Option<&T> {
        self.done.as_ref()
    }
}

// --- decoding as the gateway does ------------------------------------------------------------

/// A span of a rebuilt request: parent (an index into the request's spans, which are in start
/// order), name, start (µs since the request start), duration (µs).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Span {
    pub(crate) parent: Option<usize>,
    pub(crate) name: String,
    pub(crate) start: u64,
    pub(crate) duration: u64,
}

/// A tag of a rebuilt request: target (0 = request, else span index + 1), key, value (ints
/// only here).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Tag {
    pub(crate) target: usize,
    pub(crate) key: String,
    pub(crate) value: Option<i64>,
}

/// A request as the gateway rebuilds it, names resolved.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Request {
    pub(crate) seq: u32,
    pub(crate) spans: Vec<Span>,
    pub(crate) tags: Vec<Tag>,
    /// Spans and tags the device could not record (its `End` event).
    pub(crate) dropped: u32,
    /// What the replay itself did not record (span limit, ignore flags are not drops).
    pub(crate) drops: Drops,
    /// Events in the journal, `End` included.
    pub(crate) events: usize,
}

impl Request {
    /// The integer value of tag `key` on `target`.
    pub(crate) fn tag(&self, target: usize, key: &str) -> Option<i64> {
        self.tags
            .iter()
            .find(|t| t.target == target && t.key == key)
            .and_then(|t| t.value)
    }

    /// The span names, in start order.
    pub(crate) fn names(&self) -> Vec<&str> {
        self.spans.iter().map(|s| s.name.as_str()).collect()
    }

    /// The parents, in start order.
    pub(crate) fn parents(&self) -> Vec<Option<usize>> {
        self.spans.iter().map(|s| s.parent).collect()
    }
}

/// The spans of a core request in start order, times relative to its start.
pub(crate) fn spans_of<S: Storage>(r: &scout_core::Request<S>) -> Vec<Span> {
    let t0 = r.start_time();
    (0..r.span_count())
        .filter_map(|i| r.span(SpanIdx(i as u16)))
        .map(|s| Span {
            parent: s.parent().map(|p| usize::from(p.0)),
            name: s.operation().to_owned(),
            start: s.start_time().micros_since(t0),
            duration: s.duration_us(),
        })
        .collect()
}

/// The tags of a core request: the request's, then each span's in start order.
pub(crate) fn tags_of<S: Storage>(r: &scout_core::Request<S>) -> Vec<Tag> {
    let tag = |target: usize, (k, v): (&str, Value<'_>)| Tag {
        target,
        key: k.to_owned(),
        value: match v {
            Value::Int(i) => Some(i),
            _ => None,
        },
    };
    let mut out: Vec<Tag> = r.request_tags().map(|t| tag(0, t)).collect();
    for i in 0..r.span_count() {
        if let Some(s) = r.span(SpanIdx(i as u16)) {
            out.extend(s.tags().map(|t| tag(i + 1, t)));
        }
    }
    out
}

/// The gateway's request storage (`scout-std`'s `GatewayStorage`).
pub(crate) type GatewayStorage = Fixed<1024, 1024, 16384, 255>;

/// Everything a device wrote, decoded.
#[derive(Debug, Default)]
pub(crate) struct Stream {
    pub(crate) hellos: usize,
    /// The span limit of the last hello.
    pub(crate) span_limit: Option<u32>,
    pub(crate) requests: Vec<Request>,
    pub(crate) drops: Vec<DeviceDrops>,
    pub(crate) time_syncs: usize,
    pub(crate) bad_frames: usize,
    /// Journals `rebuild` refused.
    pub(crate) invalid: usize,
    /// Name ids a request used before their definition.
    pub(crate) undefined_names: usize,
}

struct Names(HashMap<u16, String>);

impl NameSource for Names {
    fn name(&self, id: u16) -> Option<&str> {
        self.0.get(&id).map(String::as_str)
    }
}

/// Decodes a device's byte stream as the gateway would: each request is replayed by
/// `device::rebuild` with the span limit of the device's hello (ticks are microseconds, the
/// request's times are kept relative to its start). Checks that every name id is defined
/// before a request uses it.
pub(crate) fn decode(bytes: &[u8]) -> Stream {
    let mut out = Stream::default();
    let mut names = Names(HashMap::new());
    let mut req: Box<scout_core::Request<GatewayStorage>> = Box::default();
    let mut reader = FrameReader::<{ device::MAX_FRAME }>::new();
    reader.feed_raw(bytes, |frame| match frame.and_then(device::decode_up) {
        Ok(Up::Hello(h)) => {
            out.hellos += 1;
            out.span_limit = Some(h.span_limit);
            names.0.clear();
        }
        Ok(Up::Name(n)) => {
            names.0.insert(n.id, n.name.to_owned());
        }
        Ok(Up::Request(j)) => {
            let mut events = 0;
            for e in j.events() {
                events += 1;
                let id = match e {
                    Event::Start { name, .. } | Event::StartWith { name, .. } => name,
                    Event::SpanTag { key, .. } | Event::RequestTag { key, .. } => key,
                    Event::Stop { .. } | Event::End { .. } => continue,
                };
                if !names.0.contains_key(&id) {
                    out.undefined_names += 1;
                }
            }
            let limit = out.span_limit.unwrap_or(u32::MAX);
            let ids = RequestIds::default();
            match device::rebuild(&j, &names, ids, limit, Timestamp, &mut req) {
                Ok(dropped) => out.requests.push(Request {
                    seq: j.seq,
                    spans: spans_of(&req),
                    tags: tags_of(&req),
                    dropped,
                    drops: req.drops(),
                    events,
                }),
                Err(_) => out.invalid += 1,
            }
        }
        Ok(Up::Drops(d)) => out.drops.push(d),
        Ok(Up::TimeSync(_)) => out.time_syncs += 1,
        Err(_) => out.bad_frames += 1,
    });
    out
}

/// Every frame of a device's byte stream, decoded (leaked: for tests only).
pub(crate) fn frames(bytes: &[u8]) -> Vec<Up<'static>> {
    let mut out = Vec::new();
    let mut reader = FrameReader::<{ device::MAX_FRAME }>::new();
    reader.feed_raw(bytes, |f| {
        let owned: &'static mut [u8] = Box::leak(f.unwrap().to_vec().into_boxed_slice());
        out.push(device::decode_up(owned).unwrap());
    });
    out
}
