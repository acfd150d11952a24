//! Local agent ingest throughput on one core: JSON decode + command decode + request rebuild +
//! aggregation, no sockets. Reported as commands per second (`Throughput::Elements`).
//!
//! Run: `cargo bench -p scout-std --bench local_agent_ingest`.

use std::hint::black_box;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use scout_std::local_agent::{Ingest, Limits};
use serde_json::{Value, json};

const REQUESTS: usize = 500;

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

fn bench(c: &mut Criterion) {
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
    g.bench_function("python_batches", |b| {
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
    g.bench_function("single_command_frames", |b| {
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
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
