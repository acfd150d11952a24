//! Hot-path benchmarks, side by side with their baselines in one run:
//! - a span (start + one tag + stop, including its two clock reads) against two clock reads;
//! - encoding a finished 10-span request against serde_json encoding the same commands.
//!
//! After the measurements it prints the ratios (`RATIO ...` lines) from criterion's estimates.

use criterion::{Criterion, criterion_group};
use scout_core::command::{RequestBatch, write_frame, write_frame_to_slice};
use scout_core::json::SliceSink;
use scout_core::{Fixed, Request, RequestIds, SpanFlags, SplitMix64, Timestamp, Value};
use serde::Serialize;
use std::hint::black_box;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

fn now() -> Timestamp {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    Timestamp::from_secs_micros(d.as_secs(), d.subsec_micros())
}

fn clock_and_span(c: &mut Criterion) {
    let mut g = c.benchmark_group("span");
    g.bench_function("two_instant_now", |b| {
        b.iter(|| {
            let a = Instant::now();
            let z = Instant::now();
            black_box((a, z))
        })
    });
    g.bench_function("two_system_time_now", |b| {
        b.iter(|| black_box((now(), now())))
    });
    let mut req: Box<Request<Fixed<1024, 2048, 4096, 32>>> = Box::default();
    let mut rng = SplitMix64::new(1);
    req.begin(RequestIds::generate(&mut rng), now(), 1500);
    req.start_span("Controller/bench".into(), now(), SpanFlags::NONE);
    g.bench_function("start_tag_stop", |b| {
        b.iter(|| {
            if req.span_count() >= 1000 {
                req.begin(RequestIds::generate(&mut rng), now(), 1500);
                req.start_span("Controller/bench".into(), now(), SpanFlags::NONE);
            }
            req.start_span(black_box("SQL/Query").into(), now(), SpanFlags::NONE);
            let _ = req.tag_span("rows".into(), Value::Int(black_box(3)));
            black_box(req.stop_span(now()))
        })
    });
    g.finish();
}

fn ten_span_request() -> Box<Request> {
    let mut req: Box<Request> = Box::default();
    let mut t = 1_795_553_928_336_122u64;
    req.begin(RequestIds::from_parts([9; 16], [1, 2]), Timestamp(t), 1500);
    req.start_span(
        "Controller/users#show".into(),
        Timestamp(t),
        SpanFlags::NONE,
    );
    req.tag_request("user_id".into(), Value::Int(42)).unwrap();
    for i in 0..9 {
        t += 17;
        req.start_span("SQL/Query".into(), Timestamp(t), SpanFlags::NONE);
        req.tag_span(
            "db.statement".into(),
            Value::Str("SELECT * FROM users WHERE id = $1"),
        )
        .unwrap();
        req.tag_span("rows".into(), Value::Int(i)).unwrap();
        t += 101;
        req.stop_span(Timestamp(t)).unwrap();
    }
    req.stop_span(Timestamp(t + 5)).unwrap();
    req
}

// The same commands for serde_json, pre-built (strings already formatted), so serde_json does
// strictly less work than the scout encoder, which formats ids and timestamps as it goes.
#[derive(Serialize)]
enum Cmd<'a> {
    StartRequest {
        timestamp: &'a str,
        request_id: &'a str,
    },
    TagRequest {
        timestamp: &'a str,
        request_id: &'a str,
        tag: &'a str,
        value: serde_json::Value,
    },
    StartSpan {
        timestamp: &'a str,
        request_id: &'a str,
        span_id: &'a str,
        parent_id: Option<&'a str>,
        operation: &'a str,
    },
    TagSpan {
        timestamp: &'a str,
        request_id: &'a str,
        span_id: &'a str,
        tag: &'a str,
        value: serde_json::Value,
    },
    StopSpan {
        timestamp: &'a str,
        request_id: &'a str,
        span_id: &'a str,
    },
    FinishRequest {
        timestamp: &'a str,
        request_id: &'a str,
    },
}

#[derive(Serialize)]
enum Batch<'a> {
    BatchCommand { commands: Vec<Cmd<'a>> },
}

fn encoding(c: &mut Criterion) {
    let req = ten_span_request();
    let mut buf = vec![0u8; 16 * 1024];
    let mut g = c.benchmark_group("encode");
    g.bench_function("scout_10_span_request", |b| {
        b.iter(|| {
            black_box(write_frame_to_slice(
                &RequestBatch(black_box(&*req)),
                &mut buf,
                usize::MAX,
            ))
        })
    });
    // Build the equivalent serde structures from our own output.
    let mut sink = SliceSink::new(&mut buf);
    write_frame(&RequestBatch(&*req), &mut sink, usize::MAX).unwrap();
    let ours: serde_json::Value = serde_json::from_slice(&sink.written()[4..]).unwrap();
    let cmds = ours["BatchCommand"]["commands"].as_array().unwrap();
    let s = |v: &serde_json::Value, k: &str| v[k].as_str().unwrap_or("").to_string();
    let strings: Vec<[String; 5]> = cmds
        .iter()
        .map(|c| {
            let (_, b) = c.as_object().unwrap().iter().next().unwrap();
            [
                s(b, "timestamp"),
                s(b, "request_id"),
                s(b, "span_id"),
                s(b, "tag"),
                s(b, "operation"),
            ]
        })
        .collect();
    let batch = Batch::BatchCommand {
        commands: cmds
            .iter()
            .zip(&strings)
            .map(|(c, st)| {
                let (name, b) = c.as_object().unwrap().iter().next().unwrap();
                match name.as_str() {
                    "StartRequest" => Cmd::StartRequest {
                        timestamp: &st[0],
                        request_id: &st[1],
                    },
                    "TagRequest" => Cmd::TagRequest {
                        timestamp: &st[0],
                        request_id: &st[1],
                        tag: &st[3],
                        value: b["value"].clone(),
                    },
                    "StartSpan" => Cmd::StartSpan {
                        timestamp: &st[0],
                        request_id: &st[1],
                        span_id: &st[2],
                        parent_id: b["parent_id"].as_str(),
                        operation: &st[4],
                    },
                    "TagSpan" => Cmd::TagSpan {
                        timestamp: &st[0],
                        request_id: &st[1],
                        span_id: &st[2],
                        tag: &st[3],
                        value: b["value"].clone(),
                    },
                    "StopSpan" => Cmd::StopSpan {
                        timestamp: &st[0],
                        request_id: &st[1],
                        span_id: &st[2],
                    },
                    _ => Cmd::FinishRequest {
                        timestamp: &st[0],
                        request_id: &st[1],
                    },
                }
            })
            .collect(),
    };
    let mut out: Vec<u8> = Vec::with_capacity(16 * 1024);
    g.bench_function("serde_json_10_span_request", |b| {
        b.iter(|| {
            out.clear();
            serde_json::to_writer(&mut out, black_box(&batch)).unwrap();
            black_box(out.len())
        })
    });
    g.finish();
}

criterion_group!(benches, clock_and_span, encoding);

fn estimate(group: &str, name: &str) -> Option<f64> {
    let base = std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| "../target".into());
    let path = format!("{base}/criterion/{group}/{name}/new/estimates.json");
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()?;
    v["mean"]["point_estimate"].as_f64()
}

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
    let pairs = [
        (
            "span",
            "start_tag_stop",
            "span",
            "two_system_time_now",
            "span / two SystemTime::now (target <= 1.3)",
        ),
        (
            "span",
            "start_tag_stop",
            "span",
            "two_instant_now",
            "span / two Instant::now",
        ),
        (
            "encode",
            "scout_10_span_request",
            "encode",
            "serde_json_10_span_request",
            "scout encoder time / serde_json time (target <= 0.5)",
        ),
    ];
    for (g1, n1, g2, n2, label) in pairs {
        match (estimate(g1, n1), estimate(g2, n2)) {
            (Some(a), Some(b)) => {
                println!("RATIO {label}: {:.2} ({a:.1} ns vs {b:.1} ns)", a / b)
            }
            _ => println!("RATIO {label}: estimates not found (run without filters)"),
        }
    }
}
