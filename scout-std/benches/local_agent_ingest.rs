//! Local agent ingest throughput on one core: JSON decode + command decode + request rebuild +
//! aggregation, no sockets. Reported as commands per second (`Throughput::Elements`), for
//! Python-shaped requests (one batch per request, and one command per frame) and for the frames
//! the std agent itself sends (captured from a real `scout_std::install`), which are compared
//! with the std agent's sender rate at the end. Every case is measured twice: with the fast frame
//! scanner (the default) and, suffixed `_serde_only`, with the serde decoder alone.
//!
//! The comparison is made per request, which is the same in spans and in commands: both sides
//! handle the same 10-span requests of 31 commands (`StartRequest`, 10 `StartSpan`, 9 `TagSpan`,
//! 10 `StopSpan`, `FinishRequest`), so the sender's spans/s times 31/10 is its commands/s.
//!
//! Each iteration ingests all of a case's frames into a new pipeline (`Ingest`), set up outside
//! the timing, one pipeline at a time as in a running agent (`BatchSize::PerIteration`; with
//! larger batches criterion keeps several pipelines alive at once, and the timing included the
//! kernel's first touch of each one's fresh memory). The comparison at the end runs the same
//! passes for two seconds and reports their mean rate (and the fastest pass).
//!
//! Run: `cargo bench -p scout-std --bench local_agent_ingest`.
//!
//! Profiling: with `LOCAL_AGENT_INGEST_PROFILE=N` set, the bench skips criterion and ingests one
//! case's frames N times (fast scanner; `LOCAL_AGENT_INGEST_FRAMES=rust` (default), `python` or
//! `single`), e.g. under `valgrind --tool=callgrind --toggle-collect='*Ingest*frame*'` for exact
//! instruction counts (the frames are also ingested once more as a check).

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
/// `cargo bench -p scout-std --bench agent` on the project VM (README, Performance: 1.44-1.80 M
/// spans/s over several runs; this is the middle): 10-span requests like [`rust_request`].
const SENDER_SPANS_PER_SEC: f64 = 1.66e6;
/// The fastest sender run recorded in the README (the comparison is also made against it).
const SENDER_SPANS_PER_SEC_BEST: f64 = 1.80e6;
/// Spans per request of [`rust_request`] (the transaction's span and 9 SQL spans).
const SPANS_PER_REQUEST: f64 = 10.0;

/// The request shape of the `agent` bench: a web transaction with 9 tagged SQL spans.
fn rust_request(i: u64) {
    let _t = scout_std::web_transaction("Bench#index");
    for _ in 0..9 {
        let s = scout_std::instrument_kind("SQL", "Query");
        s.tag("rows", scout_std::Value::Int(i as i64));
    }
}

/// The frames `scout_std` sends for `n` such requests (Register first), recorded by an
/// in-process local agent. The agent keeps each frame as a parsed JSON value (key order kept);
/// it is written back with the separators the std agent uses (`", "` and `": "`, as Python's
/// `json.dumps`), so the bytes are the ones that went over the socket.
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
        .map(|m| spaced(&m.message))
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

const REGISTER: &[u8] = br#"{"Register": {"app": "Bench App", "key": "TEST_KEY", "host": null, "language": "python", "api_version": "1.0"}}"#;

/// Python-shaped frames: (one batch per request, one command per frame, commands), checked.
fn python_frames() -> (Vec<Vec<u8>>, Vec<Vec<u8>>, u64) {
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
    for frames in [&batches, &singles] {
        let mut check = Ingest::new(Limits::daemon());
        check.frame(REGISTER);
        for f in frames {
            check.frame(f);
        }
        assert_eq!(check.counters().requests, REQUESTS as u64);
        assert_eq!(check.counters().bad_frames(), 0);
    }
    (batches, singles, commands)
}

fn bench(c: &mut Criterion) -> (Vec<Vec<u8>>, u64) {
    let register = REGISTER;
    let (batches, singles, commands) = python_frames();

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
                BatchSize::PerIteration,
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
                BatchSize::PerIteration,
            );
        });
    }
    scout_std::local_agent::set_fast_decode(true);
    // The std agent's own frames.
    let rust = rust_frames(REQUESTS as u64);
    let rust_commands = check_rust_frames(&rust);
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
                BatchSize::PerIteration,
            );
        });
    }
    scout_std::local_agent::set_fast_decode(true);
    g.finish();
    (rust, rust_commands)
}

/// The std agent's frames checked: every request rebuilt, nothing rejected; returns the number
/// of commands they hold.
fn check_rust_frames(rust: &[Vec<u8>]) -> u64 {
    let mut check = Ingest::new(Limits::daemon());
    for f in rust {
        check.frame(f);
    }
    assert_eq!(check.counters().requests, REQUESTS as u64);
    assert_eq!(check.counters().bad_frames(), 0);
    let commands = check.counters().commands;
    assert_eq!(
        commands,
        REQUESTS as u64 * 31 + 1,
        "31 commands per request, and Register"
    );
    commands
}

/// Ingest rate of the std agent's frames, requests per second: passes over them (each into a
/// new pipeline, as criterion does) for about two seconds, like the sender's measurement. Returns
/// the rate over the whole time and the rate of the fastest pass.
fn rust_rate(frames: &[Vec<u8>]) -> (f64, f64) {
    let (mut total, mut best, mut passes) = (0f64, f64::MAX, 0u32);
    while total < 2.0 || passes < 7 {
        let mut ingest = Ingest::new(Limits::daemon());
        let start = Instant::now();
        for f in frames {
            black_box(ingest.frame(f));
        }
        let t = start.elapsed().as_secs_f64();
        drop(ingest);
        total += t;
        best = best.min(t);
        passes += 1;
    }
    let requests = (frames.len() - 1) as f64;
    (requests * f64::from(passes) / total, requests / best)
}

fn main() {
    if let Ok(n) = std::env::var("LOCAL_AGENT_INGEST_PROFILE") {
        let passes: usize = n.parse().expect("LOCAL_AGENT_INGEST_PROFILE=<passes>");
        let case = std::env::var("LOCAL_AGENT_INGEST_FRAMES").unwrap_or_else(|_| "rust".into());
        let frames = match case.as_str() {
            "rust" => {
                let rust = rust_frames(REQUESTS as u64);
                check_rust_frames(&rust);
                rust
            }
            "python" | "single" => {
                let (batches, singles, _) = python_frames();
                let mut frames = vec![REGISTER.to_vec()];
                frames.extend(if case == "python" { batches } else { singles });
                frames
            }
            other => panic!("LOCAL_AGENT_INGEST_FRAMES={other}: rust, python or single"),
        };
        for _ in 0..passes {
            let mut ingest = Ingest::new(Limits::daemon());
            for f in &frames {
                black_box(ingest.frame(f));
            }
        }
        let bytes: usize = frames.iter().map(Vec::len).sum();
        println!(
            "PROFILE {case}: {passes} passes over {} frames ({bytes} bytes)",
            frames.len()
        );
        return;
    }
    let mut c = Criterion::default().configure_from_args();
    let (rust, commands) = bench(&mut c);
    c.final_summary();
    // Per request, the same ratio in spans and in commands: both sides handle the same requests.
    let commands_per_request = (commands - 1) as f64 / REQUESTS as f64;
    let sender_rps = SENDER_SPANS_PER_SEC / SPANS_PER_REQUEST;
    let sender_best_rps = SENDER_SPANS_PER_SEC_BEST / SPANS_PER_REQUEST;
    for (suffix, fast) in DECODERS {
        scout_std::local_agent::set_fast_decode(fast);
        let (req_per_sec, best_pass) = rust_rate(&rust);
        let decoder = if fast {
            "fast scanner"
        } else {
            "serde decoder only"
        };
        println!(
            "COMPARE{suffix} local agent ingest ({decoder}) of the std agent's own 10-span batches, one core, over 2 s: {:.0} requests/s = {:.2} M spans/s = {:.2} M commands/s (fastest pass {:.2} M commands/s); the std agent's sender to a Unix socket (README, --bench agent): {:.2} M spans/s = {:.2} M commands/s ({:.0} commands per request): {:.2}x (against its best run, {:.2} M spans/s: {:.2}x)",
            req_per_sec,
            req_per_sec * SPANS_PER_REQUEST / 1e6,
            req_per_sec * commands_per_request / 1e6,
            best_pass * commands_per_request / 1e6,
            SENDER_SPANS_PER_SEC / 1e6,
            sender_rps * commands_per_request / 1e6,
            commands_per_request,
            req_per_sec / sender_rps,
            SENDER_SPANS_PER_SEC_BEST / 1e6,
            req_per_sec / sender_best_rps,
        );
    }
    scout_std::local_agent::set_fast_decode(true);
}
