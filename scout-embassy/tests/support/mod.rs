//! Links for driving `Agent::run_link` in tests, and a decoder of what a device wrote.
#![allow(dead_code)] // Each test binary uses a different subset.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use embassy_time::Timer;
use embedded_io_async::{ErrorKind, ErrorType, Read, Write};
use scout_core::device::{self, DeviceDrops, FrameReader, Up, WireValue};

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

/// A decoded span: parent (0 = root, else index + 1), name, start offset, duration.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Span {
    pub(crate) parent: u8,
    pub(crate) name: String,
    pub(crate) start: u32,
    pub(crate) duration: u32,
}

/// A decoded tag: target (0 = request, else span index + 1), key, value (ints only here).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Tag {
    pub(crate) target: u8,
    pub(crate) key: String,
    pub(crate) value: Option<i64>,
}

/// A decoded request with names resolved.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Request {
    pub(crate) seq: u32,
    pub(crate) spans: Vec<Span>,
    pub(crate) tags: Vec<Tag>,
    pub(crate) dropped: u32,
}

impl Request {
    /// The integer value of tag `key` on `target`.
    pub(crate) fn tag(&self, target: u8, key: &str) -> Option<i64> {
        self.tags
            .iter()
            .find(|t| t.target == target && t.key == key)
            .and_then(|t| t.value)
    }
}

/// Everything a device wrote, decoded.
#[derive(Debug, Default)]
pub(crate) struct Stream {
    pub(crate) hellos: usize,
    pub(crate) requests: Vec<Request>,
    pub(crate) drops: Vec<DeviceDrops>,
    pub(crate) bad_frames: usize,
    pub(crate) undefined_names: usize,
}

/// Decodes a device's byte stream as the gateway would, checking that every name id is
/// defined before a request uses it.
pub(crate) fn decode(bytes: &[u8]) -> Stream {
    let mut out = Stream::default();
    let mut names: HashMap<u16, String> = HashMap::new();
    let mut reader = FrameReader::<{ device::MAX_FRAME }>::new();
    reader.feed_raw(bytes, |frame| match frame.and_then(device::decode_up) {
        Ok(Up::Hello(_)) => out.hellos += 1,
        Ok(Up::Name(n)) => {
            names.insert(n.id, n.name.to_owned());
        }
        Ok(Up::Request(r)) => {
            let mut name = |id: u16| match names.get(&id) {
                Some(n) => n.clone(),
                None => {
                    out.undefined_names += 1;
                    format!("#{id}")
                }
            };
            let spans = r
                .spans
                .iter()
                .map(|s| Span {
                    parent: s.parent,
                    name: name(s.name),
                    start: s.start,
                    duration: s.duration,
                })
                .collect();
            let tags = r
                .tags
                .iter()
                .map(|t| Tag {
                    target: t.target,
                    key: name(t.key),
                    value: match t.value {
                        WireValue::Int(i) => Some(i),
                        _ => None,
                    },
                })
                .collect();
            out.requests.push(Request {
                seq: r.seq,
                spans,
                tags,
                dropped: r.dropped,
            });
        }
        Ok(Up::Drops(d)) => out.drops.push(d),
        Ok(Up::TimeSync(_)) => {}
        Err(_) => out.bad_frames += 1,
    });
    out
}
