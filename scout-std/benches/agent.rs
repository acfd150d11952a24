//! The std agent's hot path and sender, side by side with the bare core in one run:
//! - a span (start + one tag + stop) through the public API, agent installed and connected,
//!   against the same span on a bare `scout_core::Request`;
//! - a whole 10-span request through the public API, including the enqueue;
//! - the sender's throughput to a Unix socket (a minimal core agent that answers at once).
//!
//! Prints `RATIO` and `THROUGHPUT` lines at the end.

use criterion::{Criterion, criterion_group};
use scout_core::{Config, Fixed, Request, RequestIds, SpanFlags, SplitMix64, Value};
use std::hint::black_box;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A core agent that reads frames and answers each with a fixed Success reply.
fn start_sink(path: std::path::PathBuf) -> tokio::runtime::Runtime {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let listener = rt.block_on(async { tokio::net::UnixListener::bind(&path).unwrap() });
    rt.spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (r, mut w) = s.into_split();
                let mut r = tokio::io::BufReader::with_capacity(1 << 20, r);
                let reply = b"{\"BatchCommand\": {\"id\": null, \"result\": \"Success\"}}";
                let mut out = (reply.len() as u32).to_be_bytes().to_vec();
                out.extend_from_slice(reply);
                let mut body = Vec::new();
                loop {
                    let mut len = [0u8; 4];
                    if r.read_exact(&mut len).await.is_err() {
                        return;
                    }
                    body.resize(u32::from_be_bytes(len) as usize, 0);
                    if r.read_exact(&mut body).await.is_err() {
                        return;
                    }
                    if w.write_all(&out).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    rt
}

fn ten_span_request(i: u64) {
    let _t = scout_std::web_transaction("Bench#index");
    for _ in 0..9 {
        let s = scout_std::instrument_kind("SQL", "Query");
        s.tag("rows", Value::Int(black_box(i as i64)));
    }
}

fn benches(c: &mut Criterion) {
    // Before install: every API call must be a near-free no-op.
    let mut g = c.benchmark_group("disabled");
    g.bench_function("api_not_installed", |b| {
        b.iter(|| {
            let s = scout_std::instrument_kind("SQL", black_box("Query"));
            s.tag("rows", Value::Int(black_box(3)));
        })
    });
    g.finish();

    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("sink.sock");
    // Kept alive for the whole run (the throughput probe uses it after the benches).
    std::mem::forget(start_sink(sock.clone()));
    let mut cfg = Config::new()
        .name("Bench")
        .key("KEY")
        .monitor(true)
        .core_agent_launch(false)
        .shutdown_message_enabled(false);
    cfg.set("core_agent_socket_path", sock.to_str().unwrap())
        .unwrap();
    // Shut down explicitly at the end of main, after the throughput probe.
    scout_std::install_with(
        cfg,
        scout_std::InstallOptions {
            ignore_environment: true,
            ..Default::default()
        },
    )
    .forget();

    let mut g = c.benchmark_group("span");
    let mut req: Box<Request<Fixed<1024, 2048, 4096, 32>>> = Box::default();
    let mut rng = SplitMix64::new(1);
    req.begin(RequestIds::generate(&mut rng), scout_std::now(), 1500);
    req.start_span("Controller/bench".into(), scout_std::now(), SpanFlags::NONE);
    g.bench_function("core_start_tag_stop", |b| {
        b.iter(|| {
            if req.span_count() >= 50 {
                req.begin(RequestIds::generate(&mut rng), scout_std::now(), 1500);
                req.start_span("Controller/bench".into(), scout_std::now(), SpanFlags::NONE);
            }
            req.start_span(
                black_box("SQL/Query").into(),
                scout_std::now(),
                SpanFlags::NONE,
            );
            let _ = req.tag_span("rows".into(), Value::Int(black_box(3)));
            black_box(req.stop_span(scout_std::now()))
        })
    });
    let mut tx = Some(scout_std::web_transaction("Bench#span"));
    let mut n = 0u32;
    g.bench_function("api_start_tag_stop", |b| {
        b.iter(|| {
            n += 1;
            if n == 50 {
                tx = None;
                tx = Some(scout_std::web_transaction("Bench#span"));
                n = 0;
            }
            let s = scout_std::instrument_kind("SQL", black_box("Query"));
            s.tag("rows", Value::Int(black_box(3)));
        })
    });
    drop(tx);
    g.finish();

    let mut g = c.benchmark_group("request");
    let mut i = 0u64;
    g.bench_function("api_10_spans_with_enqueue", |b| {
        b.iter(|| {
            i += 1;
            ten_span_request(i)
        })
    });
    g.finish();
    scout_std::flush(Duration::from_secs(10));
}

criterion_group!(group, benches);

fn estimate(group: &str, name: &str) -> Option<f64> {
    let base = std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| "../target".into());
    let path = format!("{base}/criterion/{group}/{name}/new/estimates.json");
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()?;
    v["mean"]["point_estimate"].as_f64()
}

/// Spans per second the sender writes to a Unix socket: the app records requests as fast as
/// the queue takes them (waiting when it is full, which the real app never does), for ~2 s.
fn sender_throughput() {
    let before = scout_std::stats();
    let start = Instant::now();
    let mut i = 0u64;
    while start.elapsed() < Duration::from_secs(2) {
        let s = scout_std::stats();
        if s.requests_queued - s.requests_sent > 900 {
            std::thread::yield_now();
            continue;
        }
        ten_span_request(i);
        i += 1;
    }
    scout_std::flush(Duration::from_secs(20));
    let secs = start.elapsed().as_secs_f64();
    let after = scout_std::stats();
    let sent = after.requests_sent - before.requests_sent;
    println!(
        "THROUGHPUT sender to a Unix socket: {:.0} requests/s = {:.2} M spans/s (10 spans each; {} dropped)",
        sent as f64 / secs,
        sent as f64 * 10.0 / secs / 1e6,
        after.dropped_queue_full - before.dropped_queue_full
    );
}

fn main() {
    group();
    sender_throughput();
    Criterion::default().configure_from_args().final_summary();
    match (
        estimate("span", "api_start_tag_stop"),
        estimate("span", "core_start_tag_stop"),
    ) {
        (Some(a), Some(b)) => println!(
            "RATIO public API span / bare core span: {:.2} ({a:.1} ns vs {b:.1} ns)",
            a / b
        ),
        _ => println!("RATIO span: estimates not found"),
    }
    if let Some(r) = estimate("disabled", "api_not_installed") {
        println!("NOT INSTALLED span through the public API: {r:.1} ns");
    }
    if let Some(r) = estimate("request", "api_10_spans_with_enqueue") {
        println!(
            "RATIO 10-span request incl. enqueue / 1.5 us target: {:.2} ({r:.0} ns)",
            r / 1500.0
        );
    }
    scout_std::shutdown();
}
