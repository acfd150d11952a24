//! The static agent under concurrent use from several embassy tasks (embassy-executor on std):
//! every recorded request arrives whole, with its own spans and tags, and every transaction
//! that could not be recorded is counted. Without a link finished requests are dropped and
//! counted; with a stalled link the slots fill with finished requests and later transactions
//! are dropped and counted; recording never waits.

mod support;

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use embassy_executor::Executor;
use embassy_futures::yield_now;
use embassy_time::Timer;
use scout_core::Value;
use scout_embassy::{Agent, AgentConfig, LinkEnd};
use support::{Capture, Silent};

/// Runs `init` on a fresh executor on this thread until `done` holds (or panics after 20 s).
fn run_until(init: impl FnOnce(embassy_executor::Spawner), mut done: impl FnMut() -> bool) {
    let executor: &'static mut Executor = Box::leak(Box::new(Executor::new()));
    let deadline = Instant::now() + Duration::from_secs(20);
    executor.run_until(init, move || {
        assert!(Instant::now() < deadline, "test timed out");
        done()
    });
}

// --- several tasks, two slots ----------------------------------------------------------------

const TASKS: u32 = 4;
const PER_TASK: u32 = 40;

static MULTI: Agent<2, 16, 128> = Agent::new(AgentConfig::new().device_id("multi").token("t"));
static MULTI_RECORDED: AtomicU32 = AtomicU32::new(0);
static MULTI_FINISHED: AtomicU32 = AtomicU32::new(0);
static MULTI_OUT: OnceLock<Capture> = OnceLock::new();

#[embassy_executor::task]
async fn multi_link(out: Capture) {
    MULTI.run_link(Silent, out).await;
}

#[embassy_executor::task(pool_size = 4)]
async fn multi_worker(id: u32) {
    while MULTI.stats().links == 0 {
        Timer::after_millis(1).await;
    }
    for i in 0..PER_TASK {
        // Each transaction holds its slot across awaits, so four tasks compete for two slots.
        let tx = MULTI.transaction("Job/worker");
        if tx.is_recording() {
            MULTI_RECORDED.fetch_add(1, Ordering::Relaxed);
        }
        tx.tag_request("worker", Value::Int(i64::from(id)));
        {
            let _read = tx.span("Step/read");
            Timer::after_micros(100 + 150 * u64::from(id)).await;
            tx.tag_span("i", Value::Int(i64::from(i)));
        }
        {
            let _filter = tx.span("Step/filter");
            let _fft = tx.span("Math/fft");
            yield_now().await;
            tx.tag_span("worker", Value::Int(i64::from(id)));
        }
        tx.tag_request("i", Value::Int(i64::from(i)));
        tx.finish();
        yield_now().await;
    }
    MULTI_FINISHED.fetch_add(1, Ordering::Relaxed);
}

#[test]
fn tasks_share_the_agent_and_every_request_arrives_whole() {
    let out = MULTI_OUT.get_or_init(Capture::new).clone();
    run_until(
        |s| {
            s.spawn(multi_link(out).unwrap());
            for id in 0..TASKS {
                s.spawn(multi_worker(id).unwrap());
            }
        },
        || MULTI_FINISHED.load(Ordering::Relaxed) == TASKS && MULTI.pending() == 0,
    );

    let stats = MULTI.stats();
    let recorded = MULTI_RECORDED.load(Ordering::Relaxed);
    let attempts = TASKS * PER_TASK;
    let d = stats.drops;
    eprintln!("recorded {recorded} of {attempts}; {stats:?}");
    // A transaction that finds no idle slot is counted: `no_slot` when both slots are
    // recording, `queue_full` when one holds a finished request the link has not taken yet.
    assert!(
        d.no_slot > 0,
        "two slots for four tasks: some transactions must find both slots recording"
    );
    assert!(recorded >= PER_TASK, "recorded only {recorded}");
    assert_eq!(recorded + d.no_slot + d.queue_full, attempts);
    assert_eq!(stats.queued, recorded);
    assert_eq!(
        (d.no_link, d.too_large, d.items, d.names, d.link_errors),
        (0, 0, 0, 0, 0)
    );

    let stream = support::decode(&MULTI_OUT.get().unwrap().written());
    assert_eq!(
        (stream.hellos, stream.bad_frames, stream.undefined_names),
        (1, 0, 0)
    );
    assert_eq!(stream.requests.len(), recorded as usize);
    let mut seqs: Vec<u32> = stream.requests.iter().map(|r| r.seq).collect();
    seqs.sort_unstable();
    assert_eq!(seqs, (0..recorded).collect::<Vec<_>>());
    let mut seen = std::collections::HashSet::new();
    for r in &stream.requests {
        assert_eq!(
            r.names(),
            ["Job/worker", "Step/read", "Step/filter", "Math/fft"],
            "{r:?}"
        );
        assert_eq!(r.parents(), [None, Some(0), Some(0), Some(2)], "{r:?}");
        assert_eq!((r.dropped, r.drops.total()), (0, 0));
        // The request's own tags and its spans' tags come from the same task and iteration:
        // nothing leaked between concurrent transactions.
        let worker = r.tag(0, "worker").expect("worker tag");
        let i = r.tag(0, "i").expect("i tag");
        assert_eq!(r.tag(2, "i"), Some(i), "{r:?}");
        assert_eq!(r.tag(4, "worker"), Some(worker), "{r:?}");
        assert_eq!(r.tags.len(), 4, "{r:?}");
        assert!(r.spans[1].duration >= 100 + 150 * worker as u64, "{r:?}");
        assert!(seen.insert((worker, i)), "duplicate {worker}/{i}");
    }
}

// --- no link, then a stalled link with full slots, then a failing link ----------------------

/// Two slots: while the link is stalled, they hold two finished requests and every later
/// transaction of the burst is counted as `queue_full`.
static SMALL: Agent<2, 8, 64> = Agent::new(AgentConfig::new().device_id("small").token("t"));
static SMALL_OPEN: AtomicBool = AtomicBool::new(false);
static SMALL_FAIL: AtomicBool = AtomicBool::new(false);
static SMALL_END: Mutex<Option<LinkEnd>> = Mutex::new(None);
static SMALL_PHASE: AtomicUsize = AtomicUsize::new(0);
static SMALL_BURST: Mutex<Option<Duration>> = Mutex::new(None);

const BURST: u32 = 500;

fn record_small(i: u32) {
    let tx = SMALL.transaction("Job/small");
    {
        let _s = tx.span("Step");
        tx.tag_span("i", Value::Int(i64::from(i)));
    }
    tx.finish();
}

#[embassy_executor::task]
async fn small_link(out: Capture) {
    let end = SMALL.run_link(Silent, out).await;
    *SMALL_END.lock().unwrap() = Some(end);
}

#[embassy_executor::task]
async fn small_driver() {
    while SMALL.stats().links == 0 {
        Timer::after_millis(1).await;
    }
    // The link is attached but its writer is stalled (on the hello): both slots fill with
    // finished requests, the rest is dropped, and recording never waits for the link.
    let t0 = Instant::now();
    for i in 0..BURST {
        record_small(i);
    }
    *SMALL_BURST.lock().unwrap() = Some(t0.elapsed());
    SMALL_OPEN.store(true, Ordering::Release);
    while SMALL.pending() > 0 {
        Timer::after_millis(1).await;
    }
    // Let the link go idle (it then reports the drop counters), then break it.
    Timer::after_millis(20).await;
    SMALL_PHASE.store(1, Ordering::Release);
    SMALL_FAIL.store(true, Ordering::Release);
    record_small(BURST);
    while SMALL_END.lock().unwrap().is_none() {
        Timer::after_millis(1).await;
    }
    SMALL_PHASE.store(2, Ordering::Release);
}

#[test]
fn no_link_and_full_slots_drop_count_and_never_block() {
    // No link yet: the first two finished requests wait in the two slots, the other eight
    // find no slot and are counted as `no_link`.
    for i in 0..10 {
        record_small(i);
    }
    let s = SMALL.stats();
    assert_eq!((s.drops.no_link, s.queued, s.links), (8, 2, 0));
    assert_eq!(SMALL.pending(), 2);

    let out = Capture {
        bytes: Default::default(),
        open: &SMALL_OPEN,
        fail: &SMALL_FAIL,
    };
    let written = out.bytes.clone();
    run_until(
        |s| {
            s.spawn(small_link(out).unwrap());
            s.spawn(small_driver().unwrap());
        },
        || SMALL_PHASE.load(Ordering::Acquire) == 2,
    );

    let burst = SMALL_BURST.lock().unwrap().unwrap();
    let s = SMALL.stats();
    eprintln!("{BURST} transactions against a stalled link took {burst:?}; {s:?}");
    assert!(
        burst < Duration::from_secs(2),
        "recording waited: {burst:?}"
    );
    // The two slots still held the two requests from before the link: the whole burst was
    // dropped, as `queue_full` (a link had attached).
    assert_eq!((s.queued, s.drops.queue_full), (3, BURST), "{s:?}");
    assert_eq!(s.drops.no_slot, 0);
    // The last request finished while the link was broken: taken from its slot and lost.
    assert_eq!(s.drops.link_errors, 1, "{s:?}");
    assert_eq!(*SMALL_END.lock().unwrap(), Some(LinkEnd::Write));
    assert_eq!(s.drops.no_link, 8);

    // After the link is gone, a finished request waits in its slot for the next link.
    record_small(BURST + 1);
    let after = SMALL.stats();
    assert_eq!((after.queued, after.drops.no_link), (4, 8));
    assert_eq!(SMALL.pending(), 1);

    let stream = support::decode(&written.lock().unwrap());
    assert_eq!(
        (stream.hellos, stream.bad_frames, stream.undefined_names),
        (1, 0, 0)
    );
    assert_eq!(stream.requests.len() as u32, s.queued - 1);
    for (n, r) in stream.requests.iter().enumerate() {
        // The two recorded before the link, in order.
        assert_eq!(r.seq, n as u32);
        assert_eq!(r.names(), ["Job/small", "Step"]);
        assert_eq!(r.parents(), [None, Some(0)]);
        assert_eq!(r.tag(2, "i"), Some(n as i64));
    }
    // The drop counters reached the gateway once the link was idle.
    let last = stream.drops.last().expect("a Drops message");
    assert_eq!((last.no_link, last.queue_full), (8, s.drops.queue_full));
}
