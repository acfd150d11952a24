//! The link task's protocol edges. On embassy-executor (std): time-sync requests are answered
//! with the device's uptime, a rejection ends the link, a name too long for the link's buffer
//! stays undefined while the requests still go out, and a hello that does not fit ends the
//! link before anything is written. Polled by hand (each poll runs the link as far as it can):
//! the hello comes first after a lone delimiter, names before the requests that use them, the
//! oldest finished request first, the drop counters when they change; a failing or zero-length
//! write ends the link (a request being written is counted in `link_errors`), and so does a
//! closed or failing read.

mod support;

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use embassy_executor::Executor;
use embassy_time::Timer;
use embedded_io_async::{ErrorKind, ErrorType, Read};
use scout_core::Value;
use scout_core::device::{self, Down, PROTOCOL_VERSION, RejectReason, Up};
use scout_embassy::{Agent, AgentConfig, LinkEnd};
use support::{Capture, Gate, Mode, Polled, Silent, frames};

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

fn run(init: impl FnOnce(embassy_executor::Spawner), mut done: impl FnMut() -> bool) {
    let executor: &'static mut Executor = Box::leak(Box::new(Executor::new()));
    let deadline = Instant::now() + Duration::from_secs(20);
    executor.run_until(init, move || {
        assert!(Instant::now() < deadline, "test timed out");
        done()
    });
}

static SYNC: Agent<1, 8, 64> = Agent::new(AgentConfig::new().device_id("sync").token("t"));
static SYNC_END: Mutex<Option<LinkEnd>> = Mutex::new(None);
static SYNC_OUT: OnceLock<Capture> = OnceLock::new();

fn frame(m: &Down) -> Vec<u8> {
    let mut buf = [0u8; 16];
    let n = device::encode(m, &mut buf).unwrap();
    buf[..n].to_vec()
}

#[embassy_executor::task]
async fn sync_link(out: Capture) {
    let mut first = frame(&Down::Welcome {
        version: PROTOCOL_VERSION,
    });
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
    // After the link, a finished request waits in its slot for the next one.
    let queued = SYNC.stats().queued;
    SYNC.transaction("Job/after").finish();
    let s = SYNC.stats();
    assert_eq!(
        (s.queued, s.drops.no_link, SYNC.pending()),
        (queued + 1, 0, 1)
    );
}

// A buffer of 40 bytes (the slot, and the link's buffer): the hello and the request fit, a
// 60-byte name does not.
static SMALL: Agent<1, 8, 40> = Agent::new(AgentConfig::new().device_id("small").token("t"));
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
    while SMALL.pending() > 0 {
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
    assert_eq!(stream.undefined_names, 1, "the long name is not defined");
    assert_eq!(r.names(), [device::UNNAMED]);
    assert_eq!(r.tag(0, "n"), Some(1));
    assert_eq!(SMALL.stats().drops.total(), 0);
}

// A buffer of 16 bytes: not even the hello fits.
static TINY: Agent<1, 8, 16> = Agent::new(
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

// --- polled by hand ---------------------------------------------------------------------------

fn config(id: &'static str) -> AgentConfig {
    AgentConfig::new().device_id(id).token("t")
}

#[test]
fn hello_first_then_names_before_requests_oldest_first() {
    let agent: Agent<3, 8, 128> = Agent::new(config("order"));
    let gate = Gate::new(Mode::Open);
    let mut link = Polled::new(agent.run_link(Silent, gate.clone()));
    assert!(!link.poll());
    let attached = gate.written();
    assert_eq!(attached.first(), Some(&0), "a lone delimiter first");
    let msgs = frames(&attached);
    assert!(
        matches!(msgs.first(), Some(Up::Hello(h)) if h.device_id == "order"
            && h.version == PROTOCOL_VERSION && h.tick_hz == device::MICROS_HZ),
        "{msgs:?}"
    );
    // Then the (zero) drop counters, once.
    assert!(
        matches!(msgs[1..], [Up::Drops(d)] if d.total() == 0),
        "{msgs:?}"
    );

    // Three requests finished out of slot order: slot 0 holds the newest.
    let a = agent.transaction("Job/a");
    let b = agent.transaction("Job/b");
    b.tag_request("n", Value::Int(1));
    b.finish();
    let c = agent.transaction("Job/c");
    c.finish();
    a.finish();
    assert_eq!(agent.pending(), 3);
    assert!(!link.poll());
    assert_eq!(agent.pending(), 0);

    let written = gate.written();
    let later = frames(&written[attached.len()..]);
    let kinds: Vec<char> = later
        .iter()
        .map(|m| match m {
            Up::Name(_) => 'n',
            Up::Request(_) => 'r',
            _ => '?',
        })
        .collect();
    // Every name first (they were all interned before the link looked), then the requests.
    assert_eq!(kinds, ['n', 'n', 'n', 'n', 'r', 'r', 'r'], "{later:?}");
    let stream = support::decode(&written);
    assert_eq!(
        (stream.hellos, stream.bad_frames, stream.undefined_names),
        (1, 0, 0)
    );
    let order: Vec<(u32, &str)> = stream
        .requests
        .iter()
        .map(|r| (r.seq, r.spans[0].name.as_str()))
        .collect();
    assert_eq!(order, [(0, "Job/b"), (1, "Job/c"), (2, "Job/a")]);
    assert_eq!(stream.requests[0].tag(0, "n"), Some(1));
    let s = agent.stats();
    assert_eq!((s.queued, s.links, s.drops.total()), (3, 1, 0));
    assert_eq!(
        s.sent as usize,
        1 + 1 + 4 + 3,
        "hello, drops, names, requests"
    );
    assert_eq!(s.bytes_sent as usize, written.len());
}

#[test]
fn drop_counters_are_sent_when_they_change() {
    let agent: Agent<1, 8, 128> = Agent::new(config("drops"));
    let gate = Gate::new(Mode::Open);
    let mut link = Polled::new(agent.run_link(Silent, gate.clone()));
    link.poll();
    let first = frames(&gate.written()).len();
    // Nothing changed: nothing more.
    link.poll();
    assert_eq!(frames(&gate.written()).len(), first);

    let tx = agent.transaction("Job/one");
    assert!(!agent.transaction("Job/two").is_recording());
    tx.finish();
    link.poll();
    link.poll();
    let msgs = frames(&gate.written());
    let drops: Vec<_> = msgs
        .iter()
        .filter_map(|m| match m {
            Up::Drops(d) => Some(*d),
            _ => None,
        })
        .collect();
    assert_eq!(drops.len(), 2, "{msgs:?}");
    assert_eq!((drops[1].no_slot, drops[1].total()), (1, 1));
    // The request went before the new counters.
    assert!(matches!(msgs[msgs.len() - 2], Up::Request(_)), "{msgs:?}");
    assert!(matches!(msgs[msgs.len() - 1], Up::Drops(_)), "{msgs:?}");
}

#[test]
fn a_failing_write_ends_the_link_and_loses_only_a_request_being_written() {
    // A frame other than a request (here a name definition) is not counted.
    let agent: Agent<1, 8, 128> = Agent::new(config("fail"));
    let gate = Gate::new(Mode::Open);
    let mut link = Polled::new(agent.run_link(Silent, gate.clone()));
    link.poll();
    gate.set(Mode::Fail);
    let open = agent.transaction("Job/open");
    assert!(!agent.transaction("Job/refused").is_recording());
    assert!(link.poll(), "the link ended");
    assert_eq!(link.output(), Some(&LinkEnd::Write));
    assert_eq!(agent.stats().drops.link_errors, 0);
    // Without a link, the open transaction waits in its slot when it finishes.
    open.finish();
    let d = agent.stats().drops;
    assert_eq!((d.no_link, d.link_errors, d.no_slot), (0, 0, 1));
    assert_eq!(agent.pending(), 1);

    // The next link sends it; a request being written when the write fails is lost and
    // counted.
    let gate = Gate::new(Mode::Open);
    let mut link = Polled::new(agent.run_link(Silent, gate.clone()));
    link.poll();
    assert_eq!(agent.pending(), 0, "the waiting request was sent");
    assert!(
        frames(&gate.written())
            .iter()
            .any(|m| matches!(m, Up::Request(_)))
    );
    let before = gate.written().len();
    gate.set(Mode::Fail);
    // A name this link has defined: the request is the next frame.
    agent.transaction("Job/open").finish();
    assert_eq!(agent.pending(), 1);
    assert!(link.poll());
    assert_eq!(link.output(), Some(&LinkEnd::Write));
    assert_eq!(agent.pending(), 0, "taken from its slot");
    let s = agent.stats();
    assert_eq!((s.queued, s.drops.link_errors, s.links), (2, 1, 2));
    assert_eq!(gate.written().len(), before, "nothing of it was written");
    agent.transaction("Job/open").finish();
    assert_eq!((agent.stats().drops.no_link, agent.pending()), (0, 1));
}

#[test]
fn a_zero_length_write_ends_the_link() {
    let agent: Agent<1, 8, 128> = Agent::new(config("zero"));
    // No link: it waits in its slot.
    agent.transaction("Job/lost").finish();
    assert_eq!(agent.pending(), 1);
    // Writing the hello.
    let gate = Gate::new(Mode::Zero);
    let mut link = Polled::new(agent.run_link(Silent, gate.clone()));
    assert!(link.poll());
    assert_eq!(link.output(), Some(&LinkEnd::Write));
    assert_eq!(*gate.attempts.lock().unwrap(), 1);
    assert_eq!(agent.stats().drops.link_errors, 0);

    // The next link sends the waiting request; writing the next one: lost and counted.
    let gate = Gate::new(Mode::Open);
    let mut link = Polled::new(agent.run_link(Silent, gate.clone()));
    link.poll();
    assert_eq!(agent.pending(), 0);
    gate.set(Mode::Zero);
    agent.transaction("Job/lost").finish();
    assert!(link.poll());
    assert_eq!(link.output(), Some(&LinkEnd::Write));
    let s = agent.stats();
    assert_eq!((s.queued, s.drops.link_errors, s.links), (2, 1, 2));
    assert_eq!(s.drops.no_link, 0);
}

/// A receive half whose first read returns `result`, then nothing.
struct OneRead(Option<Result<usize, ErrorKind>>);

impl ErrorType for OneRead {
    type Error = ErrorKind;
}

impl Read for OneRead {
    async fn read(&mut self, _buf: &mut [u8]) -> Result<usize, ErrorKind> {
        match self.0.take() {
            Some(r) => r,
            None => core::future::pending().await,
        }
    }
}

#[test]
fn a_closed_or_failing_read_ends_the_link() {
    let agent: Agent<1, 8, 128> = Agent::new(config("read"));
    for (read, end) in [
        (Ok(0), LinkEnd::Closed),
        (Err(ErrorKind::ConnectionReset), LinkEnd::Read),
    ] {
        let gate = Gate::new(Mode::Open);
        let mut link = Polled::new(agent.run_link(OneRead(Some(read)), gate));
        assert!(link.poll());
        assert_eq!(link.output(), Some(&end));
        // The link is gone: a finished request waits for the next one (the second finds
        // the slot taken by the first, and no link ever attached: both ended before their
        // hello, so it counts as `no_link`).
        agent.transaction("Job/after").finish();
    }
    let s = agent.stats();
    assert_eq!((s.drops.no_link, s.drops.queue_full, s.queued), (1, 0, 1));
    assert_eq!(s.links, 0);
    assert_eq!(agent.pending(), 1);
}

#[test]
fn a_dropped_link_future_loses_only_the_request_it_was_writing_and_counts_it() {
    let agent: Agent<2, 8, 128> = Agent::new(config("cancel"));
    let gate = Gate::new(Mode::Open);
    let mut link = Polled::new(agent.run_link(Silent, gate.clone()));
    link.poll();
    // Defines the names (requests 0 and 1).
    agent.transaction("Job/cut").finish();
    agent.transaction("Job/next").finish();
    link.poll();
    assert_eq!(agent.pending(), 0);
    // The write of request 2 stalls, and the link's future is dropped (cancelled).
    gate.set(Mode::Stalled);
    agent.transaction("Job/cut").finish();
    assert!(!link.poll(), "the write waits");
    assert_eq!(agent.pending(), 0, "taken from its slot");
    drop(link);
    // A request finished meanwhile waits for the next link.
    agent.transaction("Job/next").finish();
    assert_eq!(agent.pending(), 1);

    // The next link counts the cut request as lost and sends the waiting one.
    let gate = Gate::new(Mode::Open);
    let mut link = Polled::new(agent.run_link(Silent, gate.clone()));
    link.poll();
    let s = agent.stats();
    assert_eq!((s.drops.link_errors, s.links, s.queued), (1, 2, 4), "{s:?}");
    assert_eq!(agent.pending(), 0);
    let sent: Vec<u32> = frames(&gate.written())
        .iter()
        .filter_map(|m| match m {
            Up::Request(j) => Some(j.seq),
            _ => None,
        })
        .collect();
    assert_eq!(sent, [3]);
}
