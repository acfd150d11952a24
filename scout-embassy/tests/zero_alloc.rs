//! The agent never allocates: 10 000 transactions with nested spans and tags, each recorded in
//! a request slot and written by the link task as a frame, on embassy-executor (std), under a
//! global allocator that counts every allocation the executor's thread makes while measured.
// A counting `GlobalAlloc` needs `unsafe impl`; it only forwards to the system allocator.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use embassy_executor::Executor;
use embassy_futures::yield_now;
use embassy_time::Timer;
use embedded_io_async::{ErrorKind, ErrorType, Read, Write};
use scout_core::Value;
use scout_embassy::{Agent, AgentConfig};

thread_local! {
    /// Allocations made by this thread while `MEASURING` is set.
    static COUNT: Cell<u64> = const { Cell::new(0) };
    static MEASURING: Cell<bool> = const { Cell::new(false) };
}

struct CountingAlloc;

fn note_allocation() {
    // `try_with`: the thread-locals may already be gone while a thread exits.
    let _ = MEASURING.try_with(|m| {
        if m.get() {
            let _ = COUNT.try_with(|c| c.set(c.get() + 1));
        }
    });
}

unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note_allocation();
        // SAFETY: same contract as the caller's; forwarded unchanged.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note_allocation();
        // SAFETY: as above.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note_allocation();
        // SAFETY: as above.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: CountingAlloc = CountingAlloc;

/// Runs `f` and returns its result with the allocations this thread made meanwhile.
fn measure<R>(f: impl FnOnce() -> R) -> (R, u64) {
    let before = COUNT.with(Cell::get);
    MEASURING.with(|m| m.set(true));
    let r = f();
    MEASURING.with(|m| m.set(false));
    (r, COUNT.with(Cell::get) - before)
}

#[test]
fn the_counter_sees_allocations() {
    let (v, n) = measure(|| std::hint::black_box(vec![1u8; 3]));
    assert_eq!((v.len(), n), (3, 1));
}

/// The link's receive half: nothing arrives.
struct Quiet;
impl ErrorType for Quiet {
    type Error = ErrorKind;
}
impl Read for Quiet {
    async fn read(&mut self, _buf: &mut [u8]) -> Result<usize, ErrorKind> {
        std::future::pending().await
    }
}

static BYTES: AtomicUsize = AtomicUsize::new(0);
static FRAMES: AtomicUsize = AtomicUsize::new(0);

/// The link's transmit half: counts bytes and frame delimiters, stores nothing.
struct Sink;
impl ErrorType for Sink {
    type Error = ErrorKind;
}
impl Write for Sink {
    async fn write(&mut self, buf: &[u8]) -> Result<usize, ErrorKind> {
        BYTES.fetch_add(buf.len(), Ordering::Relaxed);
        let ends = buf.iter().filter(|&&b| b == 0).count();
        FRAMES.fetch_add(ends, Ordering::Relaxed);
        Ok(buf.len())
    }
    async fn flush(&mut self) -> Result<(), ErrorKind> {
        Ok(())
    }
}

/// The default agent (4 slots of 128 bytes, 32 names).
static AGENT: Agent = Agent::new(
    AgentConfig::new()
        .device_id("alloc-free")
        .firmware("1.0")
        .token("t"),
);

const TRANSACTIONS: u32 = 10_000;

/// Allocations made while measuring; `u64::MAX` until the producer is done.
static RESULT: AtomicU64 = AtomicU64::new(u64::MAX);
static HELLO_FRAMES: AtomicUsize = AtomicUsize::new(0);

#[embassy_executor::task]
async fn link() {
    AGENT.run_link(Quiet, Sink).await;
}

#[embassy_executor::task]
async fn producer() {
    // Warm up outside the measurement: the link attaches and writes its hello, and the first
    // timer starts embassy-time's std driver thread.
    while AGENT.stats().links == 0 {
        Timer::after_millis(1).await;
    }
    Timer::after_millis(5).await;
    HELLO_FRAMES.store(FRAMES.load(Ordering::Relaxed), Ordering::Relaxed);

    let dynamic = String::from("sensor-\u{e9}-7");
    // Everything this thread runs from here on is measured: these transactions, the
    // executor, and the link task encoding names and writing frames.
    let before = COUNT.with(Cell::get);
    MEASURING.with(|m| m.set(true));
    for i in 0..TRANSACTIONS {
        let tx = AGENT.transaction("Job/read_sensor");
        tx.tag_request("iteration", Value::Int(i64::from(i)));
        {
            let _read = tx.span("I2C/read");
            tx.tag_span("bytes", Value::Int(6));
            tx.tag_span("bus", Value::Str(&dynamic));
        }
        {
            let _filter = tx.span("Filter/apply");
            tx.tag_span("gain", Value::Float(0.5));
            let _fft = tx.span("Math/fft");
            tx.tag_span("ok", Value::Bool(i % 2 == 0));
        }
        tx.finish();
        // Let the link task drain the frame (and, the first time, the name definitions).
        yield_now().await;
    }
    while AGENT.pending() > 0 {
        yield_now().await;
    }
    MEASURING.with(|m| m.set(false));
    RESULT.store(COUNT.with(Cell::get) - before, Ordering::Release);
}

#[test]
fn ten_thousand_transactions_allocate_nothing() {
    let executor: &'static mut Executor = Box::leak(Box::new(Executor::new()));
    executor.run_until(
        |s| {
            s.spawn(link().unwrap());
            s.spawn(producer().unwrap());
        },
        || RESULT.load(Ordering::Acquire) != u64::MAX,
    );
    let allocations = RESULT.load(Ordering::Acquire);
    let stats = AGENT.stats();
    let frames = FRAMES.load(Ordering::Relaxed) - HELLO_FRAMES.load(Ordering::Relaxed);
    eprintln!(
        "{TRANSACTIONS} transactions: {allocations} allocations; {} bytes, {frames} frames after \
         the hello; {stats:?}",
        BYTES.load(Ordering::Relaxed)
    );
    assert_eq!(allocations, 0, "the agent allocated");
    assert_eq!(stats.queued, TRANSACTIONS);
    assert_eq!(stats.drops.total(), 0, "{stats:?}");
    // One frame per request plus the definitions of 9 names.
    assert!(frames >= TRANSACTIONS as usize + 9, "{frames} frames");
}
