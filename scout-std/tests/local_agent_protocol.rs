//! The local agent's server side of the protocol, driven by a raw framing client over Unix sockets
//! and TCP: real Python frames, other agents' orders, aggregation, export, limits and bad input.

#[path = "fixtures/local_agent/client.rs"]
mod client;

use std::collections::HashSet;
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use client::{RawClient, assert_request_matches_batch, failure_message, is_success, python_json};
use scout_std::local_agent::{
    Address, Limits, LocalAgent, LocalAgentConfig, LocalAgentHandle, StartError,
};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(20);
const PY_FRAMES: &str = include_str!("fixtures/local_agent/python-4.0.0-frames.json");

async fn start(address: Address, limits: Limits) -> LocalAgentHandle {
    let mut c = LocalAgentConfig::new(address);
    c.limits = limits;
    LocalAgent::start(c).await.expect("start local agent")
}

async fn start_unix(limits: Limits) -> (tempfile::TempDir, LocalAgentHandle) {
    let dir = tempfile::tempdir().unwrap();
    let agent = start(Address::Unix(dir.path().join("agent.sock")), limits).await;
    (dir, agent)
}

async fn start_tcp(limits: Limits) -> LocalAgentHandle {
    start(Address::parse("tcp://127.0.0.1:0").unwrap(), limits).await
}

fn python_frames() -> Vec<(String, Value)> {
    let v: Value = serde_json::from_str(PY_FRAMES).unwrap();
    v["frames"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["capture"].as_str().unwrap().to_owned(),
                f["message"].clone(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_frames_over_unix_socket_rebuild_every_span_tag_and_link() {
    let (_dir, agent) = start_unix(Limits::default()).await;
    let frames = python_frames();
    let mut c = RawClient::connect(agent.address()).await;
    for (_, msg) in &frames {
        // Python's own spacing and ASCII escaping.
        let reply = c.send_text(&python_json(msg)).await;
        let name = msg.as_object().unwrap().keys().next().unwrap();
        assert_eq!(
            reply,
            json!({name.clone(): {"id": null, "result": "Success"}})
        );
    }
    assert!(agent.wait_for_requests(4, WAIT).await);
    let requests = agent.requests();
    let batches: Vec<&Value> = frames
        .iter()
        .map(|(_, m)| m)
        .filter(|m| m.get("BatchCommand").is_some())
        .collect();
    assert_eq!(requests.len(), batches.len());
    for (b, r) in batches.iter().zip(&requests) {
        assert_request_matches_batch(b, r);
        assert_eq!(r.app, "Capture Harness App");
        assert_eq!(r.connection, 1);
    }
    let web = &requests[0];
    assert_eq!(
        web.operation.as_deref(),
        Some("Controller/UsersController.show")
    );
    assert_eq!(
        web.endpoint.as_deref(),
        Some("Controller/Renamed/Users/show")
    );
    assert_eq!(web.spans[0].operation, "Controller/UsersController.show");
    assert_eq!(web.spans[0].depth, 0);
    let fmt = web.span_by_operation("Custom/Format name").unwrap();
    assert_eq!(fmt.depth, 3);
    assert_eq!(web.tags["flags"], json!({"beta": true, "ratio": 0.5}));
    assert!(web.duration_us > 600_000 && web.duration_us < 700_000);
    assert!(!web.error && !web.ignored);
    assert_eq!(requests[1].endpoint.as_deref(), Some("Job/SendEmailJob"));
    assert_eq!(requests[2].endpoint.as_deref(), Some("Job/decorated_job"));
    assert!(requests[3].ignored);

    // Messages: every frame, in order, on connection 1; events: metadata, CPU, memory.
    let messages = agent.messages();
    assert_eq!(messages.len(), frames.len());
    for (m, (_, f)) in messages.iter().zip(&frames) {
        assert_eq!(&m.message, f);
        assert_eq!(m.connection, 1);
    }
    let events = agent.events();
    let types: Vec<&str> = events.iter().map(|e| e.event_type.as_str()).collect();
    assert_eq!(
        types,
        ["scout.metadata", "CPU/Utilization", "Memory/Physical"]
    );
    assert_eq!(events[2].value, json!(37.703125));

    // Aggregation and summary: the ignored request is not an endpoint.
    let endpoints = agent.endpoints();
    let names: Vec<&str> = endpoints.iter().map(|e| e.endpoint.as_str()).collect();
    assert_eq!(names.len(), 3, "{names:?}");
    assert!(!names.iter().any(|n| n.contains("Health")));
    let counters = agent.counters();
    assert_eq!(counters.ignored_requests, 1);
    assert_eq!(counters.bad_frames(), 0);
    let summary = agent.summary();
    assert!(
        summary.contains("Controller/Renamed/Users/show"),
        "{summary}"
    );
    assert!(summary.contains("Slowest trace"), "{summary}");
    assert!(summary.contains("External/Slow call"), "{summary}");
    agent.shutdown().await;
}

fn node_style_commands(rid: &str, ts: impl Fn(u32) -> String) -> Vec<Value> {
    // Node 0.2.3: one command per frame, parents first, tags after children, request tags last.
    vec![
        json!({"StartRequest": {"timestamp": ts(0), "request_id": rid}}),
        json!({"StartSpan": {"timestamp": ts(1), "request_id": rid, "span_id": "p", "parent_id": null, "operation": "Controller/GET /users"}}),
        json!({"StartSpan": {"timestamp": ts(2), "request_id": rid, "span_id": "c1", "parent_id": "p", "operation": "SQL/Query"}}),
        json!({"StopSpan": {"timestamp": ts(5), "request_id": rid, "span_id": "c1"}}),
        json!({"TagSpan": {"timestamp": ts(2), "request_id": rid, "span_id": "c1", "tag": "db.statement", "value": "SELECT 1"}}),
        json!({"StartSpan": {"timestamp": ts(6), "request_id": rid, "span_id": "c2", "parent_id": "p", "operation": "HTTP/GET"}}),
        json!({"StopSpan": {"timestamp": ts(9), "request_id": rid, "span_id": "c2"}}),
        json!({"StopSpan": {"timestamp": ts(10), "request_id": rid, "span_id": "p"}}),
        json!({"TagRequest": {"timestamp": ts(0), "request_id": rid, "tag": "path", "value": "/users"}}),
        json!({"TagRequest": {"timestamp": ts(0), "request_id": rid, "tag": "error", "value": "true"}}),
        json!({"FinishRequest": {"timestamp": ts(11), "request_id": rid}}),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_individual_commands_parents_first_with_any_timestamp_style() {
    let agent = start_tcp(Limits::default()).await;
    let Address::Tcp(sa) = agent.address() else {
        panic!("not tcp")
    };
    assert_ne!(sa.port(), 0);
    type Style = (&'static str, fn(u32) -> String);
    let styles: [Style; 4] = [
        ("ms-z", |s| format!("2026-01-02T03:04:{s:02}.000Z")),
        ("us-offset", |s| {
            format!("2026-01-02T03:04:{s:02}.000000+00:00")
        }),
        ("none-offset", |s| format!("2026-01-02T03:04:{s:02}+00:00")),
        ("us-z", |s| format!("2026-01-02T03:04:{s:02}.000000Z")),
    ];
    let mut c = RawClient::connect(agent.address()).await;
    c.register("node app").await;
    for (name, ts) in &styles {
        for cmd in node_style_commands(name, ts) {
            let key = cmd.as_object().unwrap().keys().next().unwrap().clone();
            let reply = c.send(&cmd).await;
            assert!(is_success(&reply, &key), "{reply}");
        }
    }
    assert!(agent.wait_for_requests(4, WAIT).await);
    let reqs = agent.requests();
    for r in &reqs {
        assert_eq!(r.app, "node app");
        assert_eq!(r.endpoint.as_deref(), Some("Controller/GET /users"));
        assert_eq!(r.duration_us, 11_000_000);
        let ops: Vec<(&str, u32)> = r
            .spans
            .iter()
            .map(|s| (s.operation.as_str(), s.depth))
            .collect();
        assert_eq!(
            ops,
            [
                ("Controller/GET /users", 0),
                ("SQL/Query", 1),
                ("HTTP/GET", 1)
            ]
        );
        assert_eq!(r.spans[0].exclusive_us, 9_000_000 - 6_000_000);
        assert_eq!(r.spans[1].tags["db.statement"], "SELECT 1");
        assert!(r.error);
        assert_eq!(r.start.to_string(), "2026-01-02T03:04:00.000000Z");
    }
    let e = &agent.endpoints()[0];
    assert_eq!((e.count, e.errors), (4, 4));
    assert_eq!(e.p50_us, 11_000_000);
    let kinds: Vec<&str> = e.kinds.iter().map(|k| k.kind.as_str()).collect();
    assert_eq!(kinds, ["Controller", "HTTP", "SQL"]);
    agent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_in_any_order_gives_the_same_request() {
    let (_dir, agent) = start_unix(Limits::default()).await;
    let mut c = RawClient::connect(agent.address()).await;
    c.register("orders").await;
    let ts = |s: u32| format!("2026-01-02T03:04:{s:02}.5Z");
    let base = node_style_commands("r", ts);
    let mut variants: Vec<Vec<Value>> = vec![base.clone()];
    let mut rev = base.clone();
    rev.reverse();
    variants.push(rev);
    // Python order: request tags, children first, root last.
    let py_order = [0, 8, 9, 2, 4, 3, 5, 6, 1, 7, 10];
    variants.push(py_order.iter().map(|&i| base[i].clone()).collect());
    for (n, v) in variants.iter().enumerate() {
        let text = serde_json::to_string(v)
            .unwrap()
            .replace("\"r\"", &format!("\"req-{n}\""));
        let cmds: Value = serde_json::from_str(&text).unwrap();
        let reply = c.send(&json!({"BatchCommand": {"commands": cmds}})).await;
        assert!(is_success(&reply, "BatchCommand"), "{reply}");
    }
    assert!(agent.wait_for_requests(3, WAIT).await);
    let mut reqs = agent.requests();
    for r in &mut reqs {
        r.id.clear();
    }
    assert_eq!(reqs[0], reqs[1]);
    assert_eq!(reqs[0], reqs[2]);
    assert!(reqs[0].warnings.is_empty());
    agent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aggregates_latency_errors_kinds_and_keeps_slowest_traces_bounded() {
    let limits = Limits {
        traces_per_endpoint: 3,
        max_spans_per_trace: 2,
        max_endpoints: 2,
        ..Limits::default()
    };
    let agent = start_tcp(limits).await;
    let mut c = RawClient::connect(agent.address()).await;
    c.register("agg").await;
    for i in 0..20u32 {
        let ms = |x: u32| format!("2026-01-02T03:00:00.{:06}Z", x);
        let dur = (i + 1) * 1000; // 1..20 ms
        let rid = format!("r{i}");
        let mut cmds = vec![
            json!({"StartRequest": {"timestamp": ms(0), "request_id": rid}}),
            json!({"StartSpan": {"timestamp": ms(0), "request_id": rid, "span_id": "root", "parent_id": null, "operation": "Controller/a"}}),
            json!({"StartSpan": {"timestamp": ms(0), "request_id": rid, "span_id": "q", "parent_id": "root", "operation": "SQL/Query"}}),
            json!({"StopSpan": {"timestamp": ms(dur / 2), "request_id": rid, "span_id": "q"}}),
            json!({"StartSpan": {"timestamp": ms(dur / 2), "request_id": rid, "span_id": "t", "parent_id": "root", "operation": "Template/Render"}}),
            json!({"StopSpan": {"timestamp": ms(dur / 2 + 10), "request_id": rid, "span_id": "t"}}),
            json!({"StopSpan": {"timestamp": ms(dur), "request_id": rid, "span_id": "root"}}),
            json!({"FinishRequest": {"timestamp": ms(dur), "request_id": rid}}),
        ];
        if i % 5 == 0 {
            cmds.insert(
                1,
                json!({"TagRequest": {"request_id": rid, "tag": "error", "value": "true"}}),
            );
        }
        c.send(&json!({"BatchCommand": {"commands": cmds}})).await;
    }
    // Two more endpoints: the third overflows the endpoint limit.
    for (i, op) in ["Job/b", "Job/c"].iter().enumerate() {
        let rid = format!("x{i}");
        c.send(&json!({"BatchCommand": {"commands": [
            {"StartSpan": {"request_id": rid, "span_id": "s", "parent_id": null, "operation": op}},
            {"StopSpan": {"request_id": rid, "span_id": "s"}},
            {"FinishRequest": {"request_id": rid}}]}}))
            .await;
    }
    assert!(agent.wait_for_requests(22, WAIT).await);
    let eps = agent.endpoints();
    let a = eps.iter().find(|e| e.endpoint == "Controller/a").unwrap();
    assert_eq!((a.count, a.errors), (20, 4));
    assert_eq!(a.mean_us, 10_500);
    assert!((9_800..=10_300).contains(&a.p50_us), "{}", a.p50_us);
    assert!((18_500..=19_500).contains(&a.p95_us), "{}", a.p95_us);
    assert_eq!(a.max_us, 20_000);
    assert_eq!(a.kinds[0].kind, "SQL");
    assert_eq!(a.kinds[0].total_us, (1..=20).map(|i| i * 500).sum::<u64>());
    let slow: Vec<u64> = a.slowest.iter().map(|r| r.duration_us).collect();
    assert_eq!(slow, [20_000, 19_000, 18_000]);
    assert_eq!(a.slowest[0].spans.len(), 2);
    assert_eq!(a.slowest[0].dropped_spans, 1);
    assert!(eps.iter().any(|e| e.endpoint == "Job/b"));
    assert!(
        eps.iter()
            .any(|e| e.endpoint == scout_std::local_agent::OVERFLOW_ENDPOINT)
    );
    assert_eq!(agent.counters().overflow_endpoint_requests, 1);
    // Unbounded request history is not kept by the aggregator: full requests stay intact.
    assert_eq!(agent.requests()[19].spans.len(), 3);
    agent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_four_concurrent_clients_lose_nothing() {
    const CLIENTS: usize = 64;
    const PER_CLIENT: usize = 25;
    let (_dir, agent) = start_unix(Limits::default()).await;
    let addr = agent.address().clone();
    let mut tasks = Vec::new();
    for n in 0..CLIENTS {
        let addr = addr.clone();
        tasks.push(tokio::spawn(async move {
            let mut c = RawClient::connect(&addr).await;
            c.register(&format!("app-{}", n % 4)).await;
            for i in 0..PER_CLIENT {
                let rid = format!("req-{n}-{i}");
                let mut cmds = vec![json!({"StartRequest": {"request_id": rid}})];
                for s in 0..5 {
                    let parent = if s == 0 { Value::Null } else { json!("s0") };
                    let op = if s == 0 { "Job/work".to_owned() } else { format!("Custom/step{s}") };
                    cmds.push(json!({"StartSpan": {"request_id": rid, "span_id": format!("s{s}"), "parent_id": parent, "operation": op}}));
                    cmds.push(json!({"TagSpan": {"request_id": rid, "span_id": format!("s{s}"), "tag": "n", "value": n}}));
                    cmds.push(json!({"StopSpan": {"request_id": rid, "span_id": format!("s{s}")}}));
                }
                cmds.push(json!({"FinishRequest": {"request_id": rid}}));
                if i % 2 == 0 {
                    let r = c.send(&json!({"BatchCommand": {"commands": cmds}})).await;
                    assert!(is_success(&r, "BatchCommand"));
                } else {
                    for cmd in cmds {
                        c.send(&cmd).await;
                    }
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let total = (CLIENTS * PER_CLIENT) as u64;
    assert!(agent.wait_for_requests(total, WAIT).await);
    let reqs = agent.requests();
    assert_eq!(reqs.len() as u64, total);
    let ids: HashSet<&str> = reqs.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(ids.len() as u64, total);
    for r in &reqs {
        assert_eq!(r.spans.len(), 5, "{}", r.id);
        let n: usize = r.id.split('-').nth(1).unwrap().parse().unwrap();
        assert_eq!(r.app, format!("app-{}", n % 4));
        assert!(r.spans.iter().all(|s| s.tags["n"] == json!(n)));
        assert!(r.warnings.is_empty());
    }
    let counters = agent.counters();
    assert_eq!(counters.connections, CLIENTS as u64);
    assert_eq!(counters.bad_frames(), 0);
    assert_eq!(
        agent.endpoints().iter().map(|e| e.count).sum::<u64>(),
        total
    );
    agent.shutdown().await;
}

/// A second connection in the middle of a request, used to prove bad input elsewhere changes nothing.
async fn half_request(agent: &LocalAgentHandle) -> RawClient {
    let mut c = RawClient::connect(agent.address()).await;
    c.register("good").await;
    c.send(&json!({"StartRequest": {"request_id": "good-1"}}))
        .await;
    c.send(&json!({"StartSpan": {"request_id": "good-1", "span_id": "s", "parent_id": null, "operation": "Controller/ok"}}))
        .await;
    c
}

async fn finish_half_request(agent: &LocalAgentHandle, c: &mut RawClient) {
    c.send(&json!({"StopSpan": {"request_id": "good-1", "span_id": "s"}}))
        .await;
    c.send(&json!({"FinishRequest": {"request_id": "good-1"}}))
        .await;
    assert!(agent.wait_for_requests(1, WAIT).await);
    let reqs = agent.requests();
    assert_eq!(reqs.len(), 1);
    assert_eq!(reqs[0].id, "good-1");
    assert_eq!(reqs[0].spans.len(), 1);
    assert_eq!(reqs[0].endpoint.as_deref(), Some("Controller/ok"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_frames_get_failure_replies_and_the_connection_stays_usable() {
    let (_dir, agent) = start_unix(Limits::default()).await;
    let mut good = half_request(&agent).await;
    let mut c = RawClient::connect(agent.address()).await;
    // Data commands before Register.
    let r = c
        .send(&json!({"StartRequest": {"request_id": "sneaky"}}))
        .await;
    assert!(failure_message(&r).unwrap().contains("Register"), "{r}");
    let r = c
        .send(&json!({"BatchCommand": {"commands": [{"FinishRequest": {"request_id": "sneaky"}}]}}))
        .await;
    assert!(failure_message(&r).is_some());
    // Unregistered commands that are allowed.
    let r = c.send(&json!({"CoreAgentVersion": {}})).await;
    assert!(is_success(&r, "CoreAgentVersion"));
    assert_eq!(r["CoreAgentVersion"]["version"], env!("CARGO_PKG_VERSION"));
    c.register("bad").await;
    // Invalid JSON, invalid UTF-8, empty frame, non-object, unknown command, bad fields, bad batch.
    let bad: Vec<Vec<u8>> = vec![
        b"{not json".to_vec(),
        vec![0xff, 0xfe, b'{', b'}'],
        Vec::new(),
        b"[1, 2]".to_vec(),
        b"{\"Explode\": {}}".to_vec(),
        b"{\"StartRequest\": {\"request_id\": 7}}".to_vec(),
        b"{\"StartRequest\": {\"request_id\": \"x\", \"timestamp\": \"noon\"}}".to_vec(),
        b"{\"StartSpan\": {\"request_id\": \"x\", \"span_id\": \"s\"}}".to_vec(),
        br#"{"BatchCommand": {"commands": [{"StartRequest": {"request_id": "half"}}, {"Nope": {}}]}}"#.to_vec(),
        br#"{"BatchCommand": {"commands": [{"BatchCommand": {"commands": []}}]}}"#.to_vec(),
        b"{\"A\": {}, \"B\": {}}".to_vec(),
        b"NaN".to_vec(),
    ];
    for body in &bad {
        c.write_frame(body).await;
        let r = c.read_reply().await.expect("a reply to a bad frame");
        assert!(
            failure_message(&r).is_some(),
            "{:?} -> {r}",
            String::from_utf8_lossy(body)
        );
    }
    // Still usable: a full request on the same connection works.
    c.send(&json!({"BatchCommand": {"commands": [
        {"StartSpan": {"request_id": "after", "span_id": "s", "parent_id": null, "operation": "Job/after"}},
        {"StopSpan": {"request_id": "after", "span_id": "s"}},
        {"FinishRequest": {"request_id": "after"}}]}}))
        .await;
    assert!(agent.wait_for_requests(1, WAIT).await);
    let reqs = agent.requests();
    assert_eq!(reqs.len(), 1, "the half batch must not have been applied");
    assert_eq!(reqs[0].id, "after");
    let counters = agent.counters();
    assert_eq!(counters.unregistered_commands, 2);
    assert_eq!(counters.invalid_json, 4);
    assert_eq!(counters.unknown_commands, 1);
    assert_eq!(counters.invalid_commands, 7);
    // The other connection never noticed.
    let r = good.send(&json!({"CoreAgentVersion": {}})).await;
    assert!(is_success(&r, "CoreAgentVersion"));
    agent.shutdown().await;
    // Pending "good-1" was not affected by the bad frames either (checked on a fresh agent below).
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_length_prefix_closes_only_that_connection() {
    let limits = Limits {
        max_frame_bytes: 64 * 1024,
        ..Limits::default()
    };
    let agent = start_tcp(limits).await;
    let mut good = half_request(&agent).await;
    let mut c = RawClient::connect(agent.address()).await;
    c.register("big").await;
    c.write_raw(&u32::MAX.to_be_bytes()).await;
    let r = c.read_reply().await.expect("failure reply");
    assert!(failure_message(&r).unwrap().contains("exceeds"), "{r}");
    assert!(c.is_closed().await);
    // Exactly at the limit is fine.
    let mut c2 = RawClient::connect(agent.address()).await;
    c2.register("edge").await;
    let pad = "x".repeat(64 * 1024 - 60);
    let body = format!(r#"{{"StartRequest": {{"request_id": "{pad}"}}}}"#);
    assert!(body.len() <= 64 * 1024);
    c2.write_frame(body.as_bytes()).await;
    let r = c2.read_reply().await.unwrap();
    assert!(
        failure_message(&r).is_some(),
        "ids over 4 KiB are rejected: {r}"
    );
    finish_half_request(&agent, &mut good).await;
    assert_eq!(agent.counters().oversized_frames, 1);
    agent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_stalling_mid_frame_is_closed_without_affecting_others() {
    let limits = Limits {
        frame_timeout: Duration::from_millis(300),
        ..Limits::default()
    };
    let (_dir, agent) = start_unix(limits).await;
    let mut good = half_request(&agent).await;
    // Stall inside the length prefix.
    let mut a = RawClient::connect(agent.address()).await;
    a.write_raw(&[0, 0]).await;
    // Stall inside the body.
    let mut b = RawClient::connect(agent.address()).await;
    b.write_raw(&100u32.to_be_bytes()).await;
    b.write_raw(b"{\"Register\"").await;
    // Idle between frames is fine: this one stays open.
    let mut idle = RawClient::connect(agent.address()).await;
    idle.register("idle").await;
    assert!(a.is_closed().await);
    assert!(b.is_closed().await);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let r = idle.send(&json!({"CoreAgentVersion": {}})).await;
    assert!(is_success(&r, "CoreAgentVersion"));
    finish_half_request(&agent, &mut good).await;
    assert_eq!(agent.counters().stalled_frames, 2);
    agent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_drop_and_count_instead_of_growing() {
    let limits = Limits {
        max_spans_per_request: 3,
        max_tags: 2,
        max_tag_value_bytes: 100,
        max_pending_requests: 2,
        retain_requests: 2,
        retain_messages: 3,
        ..Limits::default()
    };
    let agent = start_tcp(limits).await;
    let mut c = RawClient::connect(agent.address()).await;
    c.register("limits").await;
    let mut cmds = vec![json!({"StartRequest": {"request_id": "r"}})];
    for s in 0..5 {
        cmds.push(json!({"StartSpan": {"request_id": "r", "span_id": format!("s{s}"), "parent_id": null, "operation": "Job/x"}}));
        cmds.push(json!({"StopSpan": {"request_id": "r", "span_id": format!("s{s}")}}));
    }
    for t in 0..4 {
        cmds.push(json!({"TagRequest": {"request_id": "r", "tag": format!("t{t}"), "value": "y".repeat(50 * t)}}));
    }
    cmds.push(json!({"FinishRequest": {"request_id": "r"}}));
    c.send(&json!({"BatchCommand": {"commands": cmds}})).await;
    // Pending request limit: two open requests, the third is dropped.
    for r in ["p1", "p2", "p3"] {
        c.send(&json!({"StartRequest": {"request_id": r}})).await;
    }
    c.send(&json!({"FinishRequest": {"request_id": "p3"}}))
        .await;
    for r in ["p1", "p2"] {
        c.send(&json!({"FinishRequest": {"request_id": r}})).await;
    }
    // A late command for a finished request is ignored.
    c.send(&json!({"StartSpan": {"request_id": "p1", "span_id": "late", "parent_id": null, "operation": "Job/late"}}))
        .await;
    assert!(agent.wait_for_requests(3, WAIT).await);
    let counters = agent.counters();
    assert_eq!(counters.dropped_spans, 2);
    assert_eq!(counters.dropped_tags, 2);
    assert_eq!(counters.dropped_requests, 1);
    assert_eq!(counters.late_commands, 1);
    assert_eq!(counters.requests, 3);
    let reqs = agent.requests();
    assert_eq!(reqs.len(), 2, "retain_requests bounds the history");
    assert_eq!(
        agent.messages().len(),
        3,
        "retain_messages bounds the history"
    );
    agent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tag_values_over_the_size_limit_are_replaced_by_a_marker() {
    let limits = Limits {
        max_tag_value_bytes: 100,
        ..Limits::default()
    };
    let agent = start_tcp(limits).await;
    let mut c = RawClient::connect(agent.address()).await;
    c.register("big-tags").await;
    c.send(&json!({"BatchCommand": {"commands": [
        {"StartSpan": {"request_id": "r", "span_id": "s", "parent_id": null, "operation": "Job/x"}},
        {"TagSpan": {"request_id": "r", "span_id": "s", "tag": "stack", "value": vec![json!({"file": "f", "line": 1}); 50]}},
        {"TagSpan": {"request_id": "r", "span_id": "s", "tag": "small", "value": [1, 2]}},
        {"StopSpan": {"request_id": "r", "span_id": "s"}},
        {"FinishRequest": {"request_id": "r"}}]}}))
        .await;
    assert!(agent.wait_for_requests(1, WAIT).await);
    let r = &agent.requests()[0];
    assert!(
        r.spans[0].tags["stack"]
            .as_str()
            .unwrap()
            .starts_with("[truncated")
    );
    assert_eq!(r.spans[0].tags["small"], json!([1, 2]));
    assert_eq!(agent.counters().truncated_values, 1);
    agent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_command_stops_the_agent_and_removes_the_socket() {
    let (dir, agent) = start_unix(Limits::default()).await;
    let path = dir.path().join("agent.sock");
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "socket mode {mode:o}");
    let mut c = RawClient::connect(agent.address()).await;
    let r = c.send(&json!({"CoreAgentShutdown": {}})).await;
    assert!(is_success(&r, "CoreAgentShutdown"));
    tokio::time::timeout(WAIT, agent.stopping()).await.unwrap();
    agent.shutdown().await;
    assert!(!path.exists());
    assert!(tokio::net::UnixStream::connect(&path).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn already_running_stale_socket_and_private_directory() {
    let dir = tempfile::tempdir().unwrap();
    // A missing directory is created with mode 0700.
    let path = dir.path().join("nested/run/agent.sock");
    let a = start(Address::Unix(path.clone()), Limits::default()).await;
    let mode = std::fs::metadata(path.parent().unwrap())
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o700);
    match LocalAgent::start(LocalAgentConfig::new(Address::Unix(path.clone()))).await {
        Err(StartError::AlreadyRunning(_)) => {}
        other => panic!("expected AlreadyRunning, got {other:?}"),
    }
    a.shutdown().await;
    // A stale socket file (nobody listening) is replaced.
    let stale = dir.path().join("stale.sock");
    drop(std::os::unix::net::UnixListener::bind(&stale).unwrap());
    assert!(stale.exists());
    let b = start(Address::Unix(stale.clone()), Limits::default()).await;
    let mut c = RawClient::connect(b.address()).await;
    assert!(is_success(
        &c.send(&json!({"CoreAgentVersion": {}})).await,
        "CoreAgentVersion"
    ));
    b.shutdown().await;
    // A regular file is never deleted.
    let file = dir.path().join("not-a-socket");
    std::fs::write(&file, b"keep me").unwrap();
    assert!(
        LocalAgent::start(LocalAgentConfig::new(Address::Unix(file.clone())))
            .await
            .is_err()
    );
    assert_eq!(std::fs::read(&file).unwrap(), b"keep me");
    // TCP: address in use means already running.
    let t = start_tcp(Limits::default()).await;
    match LocalAgent::start(LocalAgentConfig::new(t.address().clone())).await {
        Err(StartError::AlreadyRunning(_)) => {}
        other => panic!("expected AlreadyRunning, got {other:?}"),
    }
    t.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_loopback_needs_allow_remote() {
    let cfg = LocalAgentConfig::new(Address::parse("tcp://0.0.0.0:0").unwrap());
    assert!(matches!(
        LocalAgent::start(cfg.clone()).await,
        Err(StartError::RemoteNotAllowed(_))
    ));
    let mut cfg = cfg;
    cfg.allow_remote = true;
    let agent = LocalAgent::start(cfg).await.unwrap();
    agent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_writes_one_json_line_per_finished_request() {
    let dir = tempfile::tempdir().unwrap();
    let export = dir.path().join("requests.jsonl");
    let mut cfg = LocalAgentConfig::new(Address::Unix(dir.path().join("a.sock")));
    cfg.export = Some(export.clone());
    let agent = LocalAgent::start(cfg).await.unwrap();
    let mut c = RawClient::connect(agent.address()).await;
    for (_, msg) in python_frames() {
        c.send(&msg).await;
    }
    assert!(agent.wait_for_requests(4, WAIT).await);
    agent.shutdown().await;
    let text = std::fs::read_to_string(&export).unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 4);
    let first = &lines[0];
    for key in [
        "id",
        "app",
        "connection",
        "operation",
        "endpoint",
        "start",
        "end",
        "duration_us",
        "error",
        "ignored",
        "tags",
        "spans",
        "dropped_spans",
        "warnings",
    ] {
        assert!(first.get(key).is_some(), "missing {key}");
    }
    assert_eq!(first["endpoint"], "Controller/Renamed/Users/show");
    assert!(first["start"].as_str().unwrap().ends_with('Z'));
    let span = &first["spans"][0];
    for key in [
        "id",
        "parent_id",
        "operation",
        "start",
        "end",
        "duration_us",
        "exclusive_us",
        "depth",
        "tags",
    ] {
        assert!(span.get(key).is_some(), "missing span {key}");
    }
    assert_eq!(lines[3]["ignored"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_agent_summary_extension_is_answered_without_register() {
    let (_dir, agent) = start_unix(Limits::default()).await;
    let mut c = RawClient::connect(agent.address()).await;
    let r = c.send(&json!({"LocalAgentSummary": {}})).await;
    let s = &r["LocalAgentSummary"];
    assert_eq!(s["result"], "Success", "{r}");
    assert_eq!(s["requests"], 0);
    assert_eq!(s["pid"], std::process::id());
    assert_eq!(s["version"], env!("CARGO_PKG_VERSION"));
    assert!(
        s["summary"]
            .as_str()
            .unwrap()
            .starts_with("== Scout local agent: 0 requests")
    );
    c.register("summary app").await;
    c.send(&json!({"BatchCommand": {"commands": [
        {"StartSpan": {"request_id": "r1", "span_id": "s", "parent_id": null, "operation": "Job/sum"}},
        {"StopSpan": {"request_id": "r1", "span_id": "s"}},
        {"FinishRequest": {"request_id": "r1"}}]}}))
        .await;
    let r = c.send(&json!({"LocalAgentSummary": null})).await;
    assert_eq!(r["LocalAgentSummary"]["requests"], 1, "{r}");
    // Every command counts, this one included: 2 summaries, Register and 3 in the batch.
    assert_eq!(r["LocalAgentSummary"]["commands"], 6, "{r}");
    assert!(
        r["LocalAgentSummary"]["summary"]
            .as_str()
            .unwrap()
            .contains("Job/sum")
    );
    // Not a data command: refused inside a batch, and nothing of that batch is applied.
    let r = c
        .send(&json!({"BatchCommand": {"commands": [
            {"StartRequest": {"request_id": "r2"}}, {"LocalAgentSummary": {}}]}}))
        .await;
    assert!(
        failure_message(&r)
            .unwrap()
            .contains("not allowed inside a BatchCommand"),
        "{r}"
    );
    // The blocking client used by the binary and the examples.
    let remote = scout_std::local_agent::client::summary(agent.address(), WAIT).unwrap();
    assert_eq!(remote.requests, 1);
    assert_eq!(remote.pid, Some(std::process::id()));
    assert!(remote.text.contains("Job/sum"));
    assert_eq!(agent.counters().invalid_commands, 1);
    agent.shutdown().await;
}
