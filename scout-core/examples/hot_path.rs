//! Hot-path loops for exact instruction counts under callgrind (`scripts/callgrind.sh`).
//!
//! `hot_path <case> <iterations>` runs one case `iterations` times and exits:
//!
//! - `span`: on an open request, start a span (`'static` name), tag it with an integer and
//!   stop it, reading a fake clock (a counter, no system call) for the start and stop times;
//! - `encode`: encode a finished 10-span request (the one `benches/hot_path.rs` uses) as a
//!   `RequestBatch` frame into a buffer with `write_frame_to_slice`;
//! - `clock`: two `std::time::SystemTime::now()` calls, the baseline a real span adds to `span`.
//!
//! The script runs each case for two iteration counts and divides the difference in
//! instructions by the difference in iterations, so start-up and set-up costs cancel out.

use std::hint::black_box;
use std::time::SystemTime;

use scout_core::command::{RequestBatch, write_frame_to_slice};
use scout_core::time::ManualClock;
use scout_core::{Clock, Fixed, Request, RequestIds, SpanFlags, Timestamp, Value};

/// Room for every span of the longest run, so no iteration takes another path (no drops, no
/// re-`begin`): 16 384 spans and tags, no arena (the names and keys are `'static`).
type Roomy = Fixed<16384, 16384, 64, 8>;

fn span(n: u64) {
    let clock = ManualClock::new(Timestamp(1_795_553_928_336_122));
    let mut req: Box<Request<Roomy>> = Box::default();
    req.begin(
        RequestIds::from_parts([9; 16], [1, 2]),
        clock.now(),
        u32::MAX,
    );
    req.start_span("Controller/users#show".into(), clock.now(), SpanFlags::NONE);
    for i in 0..n {
        clock.advance(1);
        req.start_span(black_box("SQL/Query").into(), clock.now(), SpanFlags::NONE);
        let _ = black_box(req.tag_span("rows".into(), Value::Int(black_box(i as i64))));
        clock.advance(1);
        let _ = black_box(req.stop_span(clock.now()));
    }
    assert_eq!(req.span_count() as u64, n + 1, "every span recorded");
    assert_eq!(req.drops().total(), 0);
}

/// The 10-span request of `benches/hot_path.rs`.
fn ten_span_request() -> Box<Request> {
    let mut req: Box<Request> = Box::default();
    let mut t = 1_795_553_928_336_122u64;
    req.begin(RequestIds::from_parts([9; 16], [1, 2]), Timestamp(t), 1500);
    req.start_span(
        "Controller/users#show".into(),
        Timestamp(t),
        SpanFlags::NONE,
    );
    req.tag_request("user_id".into(), Value::Int(42))
        .expect("room");
    for i in 0..9 {
        t += 17;
        req.start_span("SQL/Query".into(), Timestamp(t), SpanFlags::NONE);
        req.tag_span(
            "db.statement".into(),
            Value::Str("SELECT * FROM users WHERE id = $1"),
        )
        .expect("room");
        req.tag_span("rows".into(), Value::Int(i)).expect("room");
        t += 101;
        req.stop_span(Timestamp(t)).expect("open");
    }
    req.stop_span(Timestamp(t + 5)).expect("open");
    req
}

fn encode(n: u64) {
    let req = ten_span_request();
    let mut buf = vec![0u8; 16 * 1024];
    let mut len = 0;
    for _ in 0..n {
        len = write_frame_to_slice(&RequestBatch(black_box(&*req)), &mut buf, usize::MAX)
            .expect("fits");
        black_box(&buf);
    }
    assert!(len > 4);
}

fn clock(n: u64) {
    for _ in 0..n {
        black_box((SystemTime::now(), SystemTime::now()));
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let case = args.next().unwrap_or_default();
    let n: u64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(1000);
    match case.as_str() {
        "span" => span(n),
        "encode" => encode(n),
        "clock" => clock(n),
        _ => {
            eprintln!("usage: hot_path span|encode|clock <iterations>");
            std::process::exit(2);
        }
    }
}
