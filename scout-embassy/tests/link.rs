//! The link task's protocol edges on embassy-executor (std): time-sync requests are answered
//! with the device's uptime, a rejection ends the link, a name too long for the frame buffer
//! stays undefined while the requests still go out, and a hello that does not fit ends the
//! link before anything is written.

mod support;

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use embassy_executor::Executor;
use embassy_time::Timer;
use embedded_io_async::{ErrorKind, ErrorType, Read};
use scout_core::device::{self, Down, FrameReader, RejectReason, Up};
use scout_core::{Fixed, Value};
use scout_embassy::{Agent, AgentConfig, LinkEnd};
use support::{Capture, Silent};

/// A receive half that delivers each chunk once the writer has written at least that many
/// frame delimiters, then nothing more.
struct Script {
    chunks: Vec<(usize, Vec<u8>)>,
    written: Arc<Mutex<Vec<u8>>>,
}

impl ErrorType for Script {
    type Error = ErrorKind;
}

impl Read for Script {
    async fn read(&mut self, buf: &mut [u8]) -> Result<usize, ErrorKind> {
        let Some((after, chunk)) = self.chunks.first_mut() else {
            return core::future::pending().await;
        };
        while self
            .written
            .lock()
            .unwrap()
            .iter()
            .filter(|&&b| b == 0)
            .count()
            < *after
        {
            Timer::after_millis(1).await;
        }
        let n = buf.len().min(chunk.len());
        buf[..n].copy_from_slice(&chunk[..n]);
        chunk.drain(..n);
        if chunk.is_empty() {
            self.chunks.remove(0);
        }
        Ok(n)
    }
}

fn frames(bytes: &[u8]) -> Vec<Up<'static>> {
    let mut out = Vec::new();
    let mut reader = FrameReader::<{ device::MAX_FRAME }>::new();
    reader.feed_raw(bytes, |f| {
        let owned: &'static mut [u8] = Box::leak(f.unwrap().to_vec().into_boxed_slice());
        out.push(device::decode_up(owned).unwrap());
    });
    out
}

fn run(init: impl FnOnce(embassy_executor::Spawner), mut done: impl FnMut() -> bool) {
    let executor: &'static mut Executor = Box::leak(Box::new(Executor::new()));
    let deadline = Instant::now() + Duration::from_secs(20);
    executor.run_until(init, move || {
        assert!(Instant::now() < deadline, "test timed out");
        done()
    });
}

static SYNC: Agent<Fixed<4, 2, 0, 3>, 1, 8, 128, 64> =
    Agent::new(AgentConfig::new().device_id("sync").token("t"));
static SYNC_END: Mutex<Option<LinkEnd>> = Mutex::new(None);
static SYNC_OUT: OnceLock<Capture> = OnceLock::new();

fn frame(m: &Down) -> Vec<u8> {
    let mut buf = [0u8; 16];
    let n = device::encode(m, &mut buf).unwrap();
    buf[..n].to_vec()
}

#[embassy_executor::task]
async fn sync_link(out: Capture) {
    let mut first = frame(&Down::Welcome { version: 1 });
    first.extend(frame(&Down::TimeSync { id: 0 }));
    let reject = frame(&Down::Reject {
        reason: RejectReason::Unauthorized,
    });
    let reader = Script {
        // After the hello (a lone delimiter, then the frame); the second time sync once the
        // first reply and the drop counters went out (only the latest request is answered);
        // the rejection after that reply.
        chunks: vec![
            (2, first),
            (4, frame(&Down::TimeSync { id: 70_000 })),
            (5, reject),
        ],
        written: out.bytes.clone(),
    };
    let end = SYNC.run_link(reader, out).await;
    *SYNC_END.lock().unwrap() = Some(end);
}

#[test]
fn time_syncs_are_answered_and_a_rejection_ends_the_link() {
    let out = SYNC_OUT.get_or_init(Capture::new).clone();
    run(
        |s| s.spawn(sync_link(out).unwrap()),
        || SYNC_END.lock().unwrap().is_some(),
    );
    assert_eq!(*SYNC_END.lock().unwrap(), Some(LinkEnd::Rejected));
    let written = SYNC_OUT.get().unwrap().written();
    assert_eq!(
        written.first(),
        Some(&0),
        "a lone delimiter starts the link"
    );
    let msgs = frames(&written);
    assert!(matches!(msgs.first(), Some(Up::Hello(h)) if h.device_id == "sync"));
    let ids: Vec<u32> = msgs
        .iter()
        .filter_map(|m| match m {
            Up::TimeSync(r) => Some(r.id),
            _ => None,
        })
        .collect();
    assert_eq!(ids, [0, 70_000]);
    assert!(
        msgs.iter()
            .any(|m| matches!(m, Up::TimeSync(r) if r.uptime > 0)),
        "{msgs:?}"
    );
    // After the link, requests are counted as `no_link`.
    SYNC.transaction("Job/after").finish();
    assert_eq!(SYNC.stats().drops.no_link, 1);
}

// A frame buffer of 40 bytes: the hello fits, a 60-byte name does not.
static SMALL: Agent<Fixed<4, 2, 0, 3>, 1, 8, 128, 40> =
    Agent::new(AgentConfig::new().device_id("small").token("t"));
static SMALL_DONE: AtomicBool = AtomicBool::new(false);
static SMALL_OUT: OnceLock<Capture> = OnceLock::new();

const LONG: &str = "Job/a-name-much-too-long-for-the-forty-byte-frame-buffer-here";

#[embassy_executor::task]
async fn small_link(out: Capture) {
    SMALL.run_link(Silent, out).await;
}

#[embassy_executor::task]
async fn small_app() {
    while SMALL.stats().links == 0 {
        Timer::after_millis(1).await;
    }
    let tx = SMALL.transaction(LONG);
    tx.tag_request("n", Value::Int(1));
    tx.finish();
    while SMALL.queued_bytes() > 0 {
        Timer::after_millis(1).await;
    }
    Timer::after_millis(10).await;
    SMALL_DONE.store(true, Ordering::Release);
}

#[test]
fn a_name_too_long_stays_undefined_and_the_request_still_goes_out() {
    let out = SMALL_OUT.get_or_init(Capture::new).clone();
    run(
        |s| {
            s.spawn(small_link(out).unwrap());
            s.spawn(small_app().unwrap());
        },
        || SMALL_DONE.load(Ordering::Acquire),
    );
    let stream = support::decode(&SMALL_OUT.get().unwrap().written());
    assert_eq!((stream.hellos, stream.bad_frames), (1, 0));
    assert_eq!(stream.requests.len(), 1);
    let r = &stream.requests[0];
    assert_eq!(r.spans[0].name, "#1", "the long name is not defined");
    assert_eq!(r.tag(0, "n"), Some(1));
    assert_eq!(SMALL.stats().drops.total(), 0);
}

// A frame buffer of 16 bytes: not even the hello fits.
static TINY: Agent<Fixed<4, 2, 0, 3>, 1, 8, 128, 16> = Agent::new(
    AgentConfig::new()
        .device_id("a-device-id-longer-than-the-frame")
        .token("t"),
);
static TINY_END: AtomicU32 = AtomicU32::new(0);
static TINY_OUT: OnceLock<Capture> = OnceLock::new();

#[embassy_executor::task]
async fn tiny_link(out: Capture) {
    let end = TINY.run_link(Silent, out).await;
    TINY_END.store(if end == LinkEnd::Write { 1 } else { 2 }, Ordering::Release);
}

#[test]
fn a_hello_too_long_ends_the_link_unwritten() {
    let out = TINY_OUT.get_or_init(Capture::new).clone();
    run(
        |s| s.spawn(tiny_link(out).unwrap()),
        || TINY_END.load(Ordering::Acquire) != 0,
    );
    assert_eq!(TINY_END.load(Ordering::Acquire), 1, "LinkEnd::Write");
    assert!(TINY_OUT.get().unwrap().written().is_empty());
    assert_eq!(TINY.stats().links, 1);
}
