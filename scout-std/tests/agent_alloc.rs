//! Allocation and memory proofs for the std agent, through the public API:
//! - zero allocations per span (start, tag, stop) inside a transaction, agent connected;
//! - allocations per whole request after warm-up (reported);
//! - bytes held per in-flight request, and 1 000 concurrent 10-span requests under 16 MB.
// Implementing `GlobalAlloc` requires `unsafe impl`; it only forwards to the system allocator.
#![allow(unsafe_code)]

use scout_core::{RequestIds, SpanFlags, Text, Timestamp, Value};
use scout_std::local_agent::Address;
use scout_std::pool::{StdRequest, request_bytes};
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

struct Counting;
static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);
thread_local! {
    static ARMED: Cell<bool> = const { Cell::new(false) };
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if ARMED.try_with(|a| a.get()).unwrap_or(false) {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if ARMED.try_with(|a| a.get()).unwrap_or(false) {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

mod support;

#[global_allocator]
static GLOBAL: Counting = Counting;

fn armed(f: impl FnOnce()) -> usize {
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    ARMED.with(|a| a.set(true));
    f();
    ARMED.with(|a| a.set(false));
    ALLOCATIONS.load(Ordering::Relaxed) - before
}

fn request(i: i64) {
    let _t = scout_std::web_transaction("Alloc#index");
    scout_std::Context::add("user_id", i);
    for _ in 0..9 {
        let s = scout_std::instrument_kind("SQL", "Query");
        s.tag("db.statement", "SELECT * FROM users WHERE id = $1");
    }
}

#[test]
fn spans_allocate_nothing_and_requests_report_their_allocations() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let agent = rt.block_on(support::start_agent(
        Address::parse("tcp://127.0.0.1:0").unwrap(),
    ));
    let _guard = scout_std::install_with(
        support::config_for(&agent.address().to_string()),
        support::opts(),
    );

    // Warm up the pool and the request buffers: a service's requests repeat their shapes, so
    // pooled requests come back with the capacity they need.
    for i in 0..200 {
        request(i);
    }
    let spans = |n: i64| {
        let _t = scout_std::web_transaction("Alloc#spans");
        for i in 0..n {
            let s = scout_std::instrument_kind("SQL", "Query");
            s.tag("rows", i);
            s.tag("db.statement", "SELECT 1");
        }
    };
    spans(60);
    assert!(scout_std::flush(Duration::from_secs(10)));

    // Spans inside an open transaction: zero allocations. (A pooled request keeps up to 64
    // spans, 128 tags and 8 KiB of strings of capacity; a request growing past what its pooled
    // buffers hold doubles them: a few allocations for an unusually large request, never one
    // per span.)
    let tx = scout_std::web_transaction("Alloc#spans");
    for i in 0..10 {
        let s = scout_std::instrument_kind("SQL", "Query");
        s.tag("rows", i);
        s.tag("db.statement", "SELECT 1");
    }
    let per_span = armed(|| {
        for i in 0..40 {
            let s = scout_std::instrument_kind("SQL", "Query");
            s.tag("rows", i);
            s.tag("db.statement", "SELECT 1");
        }
    });
    drop(tx);
    assert_eq!(per_span, 0, "allocations for 40 spans");

    // Whole requests (transaction start, 10 spans, finish, enqueue): measured and reported.
    let mut total = 0;
    for round in 0..5 {
        assert!(scout_std::flush(Duration::from_secs(10)));
        total += armed(|| {
            for i in 0..20 {
                request(round * 20 + i);
            }
        });
    }
    println!("ALLOC whole requests: {total} allocations in 100 requests after warm-up");
    assert!(
        total <= 100,
        "at most one allocation per request on average ({total})"
    );
    assert!(scout_std::flush(Duration::from_secs(10)));
    let report = scout_std::shutdown();
    assert_eq!(report.stats.total_dropped(), 0);
    rt.block_on(agent.shutdown());
}

fn ten_span_request(i: u64) -> Box<StdRequest> {
    let mut req: Box<StdRequest> = Box::default();
    let t = 1_700_000_000_000_000 + i;
    req.begin(
        RequestIds::from_parts([i as u8; 16], [i, i]),
        Timestamp(t),
        1500,
    );
    req.start_span_parts(
        &["Controller", "/", "users#show"],
        Timestamp(t),
        SpanFlags::NO_BACKTRACE,
    );
    req.tag_request(Text::Borrowed("path"), Value::Str("/users/42?q=abc"))
        .unwrap();
    for k in 0..9 {
        req.start_span_parts(&["SQL", "/", "Query"], Timestamp(t + k), SpanFlags::NONE);
        req.tag_span(
            Text::Static("db.statement"),
            Value::Str("SELECT * FROM users WHERE id = $1"),
        )
        .unwrap();
        req.stop_span(Timestamp(t + k + 1)).unwrap();
    }
    req
}

#[test]
fn memory_per_in_flight_request() {
    let one = ten_span_request(1);
    let bytes = request_bytes(&one);
    println!("MEMORY one in-flight 10-span request holds {bytes} bytes");
    let in_flight: Vec<Box<StdRequest>> = (0..1_000).map(ten_span_request).collect();
    let total: usize = in_flight.iter().map(|r| request_bytes(r)).sum();
    println!(
        "MEMORY 1000 concurrent 10-span requests hold {:.2} MB",
        total as f64 / 1e6
    );
    assert!(total < 16_000_000, "{total} bytes");
    // One request may still record 1 500 spans.
    let mut big: Box<StdRequest> = Box::default();
    big.begin(RequestIds::default(), Timestamp(0), 1500);
    big.start_span("Controller/big".into(), Timestamp(0), SpanFlags::NONE);
    for i in 0..1_600u64 {
        big.start_span("Custom/x".into(), Timestamp(i), SpanFlags::NONE);
        big.stop_span(Timestamp(i + 1)).unwrap();
    }
    assert_eq!(big.span_count(), 1_501);
    println!(
        "MEMORY a 1500-span request holds {} bytes",
        request_bytes(&big)
    );
}
