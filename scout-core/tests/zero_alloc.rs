//! Proof that the hot path never allocates: a global allocator that counts every allocation
//! made while armed drives 10 000 requests of 10 spans with tags through start, stop, finish
//! and encoding.
// Implementing `GlobalAlloc` is only possible through `unsafe impl`; this test binary does
// nothing else unsafe and forwards to the system allocator.
#![allow(unsafe_code)]

use scout_core::command::{RequestBatch, write_frame};
use scout_core::json::SliceSink;
use scout_core::{Request, RequestIds, SpanFlags, SplitMix64, Text, Timestamp, Value};
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};

struct Counting;
static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);
thread_local! {
    static ARMED: Cell<bool> = const { Cell::new(false) };
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if ARMED.with(|a| a.get()) {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn armed<R>(f: impl FnOnce() -> R) -> (R, usize) {
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    ARMED.with(|a| a.set(true));
    let r = f();
    ARMED.with(|a| a.set(false));
    (r, ALLOCATIONS.load(Ordering::Relaxed) - before)
}

#[test]
fn control_counts_a_vec() {
    let (_, n) = armed(|| vec![1u8, 2, 3]);
    assert_eq!(n, 1, "the counter sees allocations");
}

#[test]
fn ten_thousand_requests_allocate_nothing() {
    let mut req: Box<Request> = Box::default();
    let mut buf = vec![0u8; 64 * 1024];
    let mut rng = SplitMix64::new(42);
    let dynamic = String::from("SELECT * FROM users WHERE id = $1 -- \u{e9}\u{1F600}");
    let ((bytes, frames), allocations) = armed(|| {
        let mut bytes = 0usize;
        let mut frames = 0usize;
        let mut t = 1_700_000_000_000_000u64;
        for _ in 0..10_000 {
            req.begin(RequestIds::generate(&mut rng), Timestamp(t), 1500);
            req.start_span(
                "Controller/users#show".into(),
                Timestamp(t),
                SpanFlags::NO_BACKTRACE,
            );
            req.tag_request("user_id".into(), Value::Int(42)).unwrap();
            req.tag_request(Text::Borrowed("path"), Value::Str("/users/42?q=a"))
                .unwrap();
            for i in 0..9 {
                t += 7;
                req.start_span("SQL/Query".into(), Timestamp(t), SpanFlags::NONE);
                req.tag_span("db.statement".into(), Value::Str(&dynamic))
                    .unwrap();
                req.tag_span("rows".into(), Value::Int(i)).unwrap();
                req.tag_span("ratio".into(), Value::Float(0.25)).unwrap();
                t += 13;
                req.stop_span(Timestamp(t)).unwrap();
            }
            t += 3;
            let stop = req.stop_span(Timestamp(t)).unwrap();
            assert!(stop.finished);
            let mut sink = SliceSink::new(&mut buf);
            bytes += write_frame(&RequestBatch(&*req), &mut sink, usize::MAX).unwrap();
            frames += 1;
        }
        (bytes, frames)
    });
    assert_eq!(allocations, 0, "allocations on the hot path");
    assert_eq!(frames, 10_000);
    assert!(
        bytes > 10_000 * 5_000,
        "each frame carries the full request ({bytes} bytes)"
    );
    assert_eq!(req.spans().count(), 10);
}
