//! Local agent ingest throughput on one core: JSON decode + command decode + request rebuild +
//! aggregation, no sockets. Reported as commands per second (`Throughput::Elements`), for
//! Python-shaped requests (one batch per request, and one command per frame) and for the frames
//! the std agent itself sends (captured from a real `scout_std::install`), which are compared
//! with the std agent's sender rate at the end. Every case is measured twice: with the fast frame
//! scanner (the default) and, suffixed `_serde_only`, with the serde decoder alone.
//!
//! Run: `cargo bench -p scout-std --bench local_agent_ingest`.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{BatchSize, Criterion, Throughput};
use scout_core::Config;
use scout_std::local_agent::{Address, Ingest, Limits, LocalAgent, LocalAgentConfig};
use serde_json::{Value, json};

const REQUESTS: usize = 500;

/// Bench-name suffix and decoder: the fast scanner (with its serde fallback, the default) and
/// the serde decoder alone (what every frame went through before the scanner).
const DECODERS: [(&str, bool); 2] = [("", true), ("_serde_only", false)];

/// The std agent's sender rate to a Unix socket, spans per second, as measured by
/// `cargo bench -p scout-std --bench agent` on the project VM (README, Performance): 10-span
/// requests like [`rust_request`].
const SENDER_SPANS_PER_SEC: f64 = 1.66e6;

/// The request shape of the `agent` bench: a web transaction with 9 tagged SQL spans.
fn rust_request(i: u64) {
    let _t = scout_std::web_transaction("Bench#index");
    for _ in 0..9 {
        let s = scout_std::instrument_kind("SQL", "Query");
        s.tag("rows", scout_std::Value::Int(i as i64));
    }
}

/// The frames `scout_std` sends for `n` such requests (Register first), recorded by an
/// in-process local agent.
fn rust_frames(n: u64) -> Vec<Vec<u8>> {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let agent = rt
        .block_on(LocalAgent::start(LocalAgentConfig::new(
            Address::parse("tcp://127.0.0.1:0").unwrap(),
        )))
        .unwrap();
    let mut config = Config::new()
        .name("Bench App")
        .key("BENCHKEY")
        .monitor(true)
        .core_agent_launch(false)
        .core_agent_download(false);
    config
        .set("core_agent_socket_path", &agent.address().to_string())
        .unwrap();
    let options = scout_std::InstallOptions {
        ignore_environment: true,
        ..Default::default()
    };
    let guard = scout_std::install_with(config, options);
    for i in 0..n {
        rust_request(i);
    }
    assert!(scout_std::flush(Duration::from_secs(30)));
    drop(guard);
    let frames: Vec<Vec<u8>> = agent
        .messages()
        .iter()
        .filter(|m| m.message.get("Register").is_some() || m.message.get("BatchCommand").is_some())
        .map(|m| serde_json::to_vec(&m.message).unwrap())
        .collect();
    rt.block_on(agent.shutdown());
    assert_eq!(
        frames.len() as u64,
        n + 1,
        "Register + one batch per request"
    );
    frames
}

/// A Python-shaped web request (spaced JSON, `+00:00` timestamps, children first, allocation tags).
fn python_request(i: usize) -> Vec<Value> {
    let rid = format!("req-{i:08}-c692-4232-a063-aa9b7d1d8da7");
    let ts = |us: u32| format!("2026-11-24T20:59:23.{us:06}+00:00");
    let mut cmds = vec![json!({"StartRequest": {"timestamp": ts(0), "request_id": rid}})];
    for (tag, value) in [
        ("path", json!(format!("/users/{i}"))),
        ("user_id", json!(i)),
        ("plan", json!("pro")),
        ("mem_delta", json!(0.07)),
    ] {
        cmds.push(json!({"TagRequest": {"timestamp": ts(0), "request_id": rid, "tag": tag, "value": value}}));
    }
    let spans = [
        ("s3", Some("s2"), "SQL/Query", 300, 900),
        ("s2", Some("s1"), "Custom/Load user", 200, 1000),
        ("s4", Some("s1"), "Template/Render", 1100, 1500),
        ("s5", Some("s1"), "HTTP/GET", 1600, 2500),
        ("s1", None, "Controller/UsersController.show", 100, 2600),
    ];
    for (id, parent, op, start, stop) in spans {
        let sid = format!("span-{id}-{i:08}-4173-4c93-a752-18027d8216d8");
        let pid = parent.map(|p| format!("span-{p}-{i:08}-4173-4c93-a752-18027d8216d8"));
        cmds.push(json!({"StartSpan": {"timestamp": ts(start), "request_id": rid, "span_id": sid, "parent_id": pid, "operation": op}}));
        if op == "SQL/Query" {
            cmds.push(json!({"TagSpan": {"timestamp": ts(start), "request_id": rid, "span_id": sid, "tag": "db.statement", "value": "SELECT * FROM users WHERE id = ?"}}));
        }
        for (tag, v) in [
            ("allocations", 17),
            ("start_allocations", 61245),
            ("stop_allocations", 61262),
        ] {
            cmds.push(json!({"TagSpan": {"timestamp": ts(start), "request_id": rid, "span_id": sid, "tag": tag, "value": v}}));
        }
        cmds.push(json!({"StopSpan": {"timestamp": ts(stop), "request_id": rid, "span_id": sid}}));
    }
    cmds.push(json!({"FinishRequest": {"timestamp": ts(2700), "request_id": rid}}));
    cmds
}

/// Python's separators (`", "`, `": "`), which serde_json's compact output does not have.
struct PythonSpacing;

impl serde_json::ser::Formatter for PythonSpacing {
    fn begin_array_value<W: ?Sized + std::io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        if first { Ok(()) } else { w.write_all(b", ") }
    }

    fn begin_object_key<W: ?Sized + std::io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        if first { Ok(()) } else { w.write_all(b", ") }
    }

    fn begin_object_value<W: ?Sized + std::io::Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        w.write_all(b": ")
    }
}

fn spaced(v: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    let mut ser = serde_json::Serializer::with_formatter(&mut out, PythonSpacing);
    serde::Serialize::serialize(v, &mut ser).unwrap();
    out
}

fn bench(c: &mut Criterion) -> (Vec<Vec<u8>>, u64) {
    let register = br#"{"Register": {"app": "Bench App", "key": "TEST_KEY", "host": null, "language": "python", "api_version": "1.0"}}"#;
    let mut batches = Vec::new();
    let mut singles = Vec::new();
    let mut commands = 0u64;
    for i in 0..REQUESTS {
        let cmds = python_request(i);
        commands += cmds.len() as u64;
        singles.extend(cmds.iter().map(spaced));
        batches.push(spaced(&json!({"BatchCommand": {"commands": cmds}})));
    }
    // Sanity: every request is rebuilt and nothing is rejected.
    let mut check = Ingest::new(Limits::daemon());
    check.frame(register);
    for f in &batches {
        check.frame(f);
    }
    assert_eq!(check.counters().requests, REQUESTS as u64);
    assert_eq!(check.counters().bad_frames(), 0);

    let mut g = c.benchmark_group("local_agent_ingest");
    g.throughput(Throughput::Elements(commands));
    for (suffix, fast) in DECODERS {
        scout_std::local_agent::set_fast_decode(fast);
        g.bench_function(format!("python_batches{suffix}"), |b| {
            b.iter_batched(
                || {
                    let mut i = Ingest::new(Limits::daemon());
                    i.frame(register);
                    i
                },
                |mut ingest| {
                    for f in &batches {
                        black_box(ingest.frame(f));
                    }
                    ingest
                },
                BatchSize::LargeInput,
            );
        });
        g.bench_function(format!("single_command_frames{suffix}"), |b| {
            b.iter_batched(
                || {
                    let mut i = Ingest::new(Limits::daemon());
                    i.frame(register);
                    i
                },
                |mut ingest| {
                    for f in &singles {
                        black_box(ingest.frame(f));
                    }
                    ingest
                },
                BatchSize::LargeInput,
            );
        });
    }
    scout_std::local_agent::set_fast_decode(true);
    // The std agent's own frames.
    let rust = rust_frames(REQUESTS as u64);
    let mut check = Ingest::new(Limits::daemon());
    for f in &rust {
        check.frame(f);
    }
    assert_eq!(check.counters().requests, REQUESTS as u64);
    assert_eq!(check.counters().bad_frames(), 0);
    let rust_commands = check.counters().commands;
    g.throughput(Throughput::Elements(rust_commands));
    for (suffix, fast) in DECODERS {
        scout_std::local_agent::set_fast_decode(fast);
        g.bench_function(format!("rust_agent_batches{suffix}"), |b| {
            b.iter_batched(
                || Ingest::new(Limits::daemon()),
                |mut ingest| {
                    for f in &rust {
                        black_box(ingest.frame(f));
                    }
                    ingest
                },
                BatchSize::LargeInput,
            );
        });
    }
    scout_std::local_agent::set_fast_decode(true);
    g.finish();
    (rust, rust_commands)
}

/// Best of a few timed runs over the std agent's frames: (requests/s, commands/s).
fn rust_rate(frames: &[Vec<u8>], commands: u64) -> (f64, f64) {
    let mut best = f64::MAX;
    for _ in 0..7 {
        let mut ingest = Ingest::new(Limits::daemon());
        let start = Instant::now();
        for f in frames {
            black_box(ingest.frame(f));
        }
        best = best.min(start.elapsed().as_secs_f64());
    }
    let requests = (frames.len() - 1) as f64;
    (requests / best, commands as f64 / best)
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    let (rust, commands) = bench(&mut c);
    c.final_summary();
    for (suffix, fast) in DECODERS {
        scout_std::local_agent::set_fast_decode(fast);
        let (req_per_sec, cmd_per_sec) = rust_rate(&rust, commands);
        let spans_per_sec = req_per_sec * 10.0;
        let decoder = if fast {
            "fast scanner"
        } else {
            "serde decoder only"
        };
        println!(
            "COMPARE{suffix} local agent ingest ({decoder}) of the std agent's own 10-span batches, one core: {:.0} requests/s = {:.2} M spans/s ({:.2} M commands/s); the std agent's sender writes {:.2} M spans/s to a Unix socket (README, --bench agent): {:.2}x",
            req_per_sec,
            spans_per_sec / 1e6,
            cmd_per_sec / 1e6,
            SENDER_SPANS_PER_SEC / 1e6,
            spans_per_sec / SENDER_SPANS_PER_SEC
        );
    }
    scout_std::local_agent::set_fast_decode(true);
}
