//! Fault tests for the std agent: core agent absent then appearing, closing mid-stream, never
//! reading, answering garbage, and dead at shutdown. Real sockets, one test at a time (the agent
//! is global).

mod support;

use scout_core::Config;
use scout_std::InstallOptions;
use scout_std::local_agent::{Address, LocalAgent, LocalAgentConfig};
use serde_json::Value as J;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn install(address: &str, shutdown_secs: f64) -> scout_std::AgentGuard {
    let mut c = Config::new()
        .name("Faults")
        .key("KEY")
        .monitor(true)
        .core_agent_launch(false)
        .core_agent_download(false)
        .shutdown_timeout_seconds(shutdown_secs)
        .shutdown_message_enabled(false);
    c.set("core_agent_socket_path", address).unwrap();
    scout_std::install_with(
        c,
        InstallOptions {
            ignore_environment: true,
            ..Default::default()
        },
    )
}

fn record(n: usize, prefix: &str) {
    for i in 0..n {
        let _t = scout_std::web_transaction(&format!("{prefix}{i}"));
        let _s = scout_std::instrument("Work");
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A scripted fake core agent on a Unix socket: records every frame per connection and
/// answers according to `behave(connection, frame_index) -> Action`.
#[derive(Clone, Copy, PartialEq)]
enum Action {
    Reply,
    Garbage,
    Close,
    NeverRead,
}

type Frames = Arc<Mutex<Vec<(usize, J)>>>;

fn fake_agent(
    path: std::path::PathBuf,
    behave: fn(usize, usize) -> Action,
) -> (Frames, tokio::runtime::Runtime) {
    let frames: Frames = Arc::default();
    let rt = support::runtime(1);
    let listener = rt.block_on(async { tokio::net::UnixListener::bind(&path).unwrap() });
    let f = frames.clone();
    rt.spawn(async move {
        let mut conn = 0;
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            conn += 1;
            let f = f.clone();
            tokio::spawn(async move {
                let mut i = 0;
                loop {
                    let action = behave(conn, i);
                    if action == Action::NeverRead {
                        tokio::time::sleep(Duration::from_secs(3600)).await;
                    }
                    if action == Action::Close {
                        return;
                    }
                    let mut len = [0u8; 4];
                    if s.read_exact(&mut len).await.is_err() {
                        return;
                    }
                    let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
                    if s.read_exact(&mut body).await.is_err() {
                        return;
                    }
                    let msg: J = serde_json::from_slice(&body).unwrap();
                    let key = msg.as_object().unwrap().keys().next().unwrap().clone();
                    f.lock().unwrap().push((conn, msg));
                    let reply = if action == Action::Garbage {
                        b"\x00not json at all".to_vec()
                    } else {
                        format!("{{\"{key}\": {{\"id\": null, \"result\": \"Success\"}}}}")
                            .into_bytes()
                    };
                    let mut out = (reply.len() as u32).to_be_bytes().to_vec();
                    out.extend_from_slice(&reply);
                    if s.write_all(&out).await.is_err() {
                        return;
                    }
                    i += 1;
                }
            });
        }
    });
    (frames, rt)
}

fn request_ops(frames: &Frames) -> Vec<String> {
    let mut ops: Vec<String> = frames
        .lock()
        .unwrap()
        .iter()
        .filter_map(|(_, m)| m.get("BatchCommand"))
        .filter_map(|b| {
            b["commands"]
                .as_array()
                .unwrap()
                .iter()
                .rev()
                .find_map(|c| c.get("StartSpan"))
                .map(|s| s["operation"].as_str().unwrap().to_string())
        })
        .collect();
    ops.sort();
    ops.dedup();
    ops
}

#[test]
fn core_agent_appearing_later_receives_everything_queued() {
    let _g = serial();
    let port = free_port();
    let address = format!("tcp://127.0.0.1:{port}");
    let guard = install(&address, 5.0);
    record(20, "Early");
    std::thread::sleep(Duration::from_secs(3));
    assert!(scout_std::stats().connect_failures > 0, "it kept trying");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let agent = rt
        .block_on(LocalAgent::start(LocalAgentConfig::new(
            Address::parse(&address).unwrap(),
        )))
        .unwrap();
    assert!(scout_std::flush(Duration::from_secs(15)));
    assert!(rt.block_on(agent.wait_for_requests(20, Duration::from_secs(5))));
    assert_eq!(agent.requests().len(), 20);
    assert!(
        agent
            .events()
            .iter()
            .any(|e| e.event_type == "scout.metadata")
    );
    let report = scout_std::shutdown();
    assert_eq!(report.stats.total_dropped(), 0);
    drop(guard);
    rt.block_on(agent.shutdown());
}

#[test]
fn connection_closed_mid_stream_reregisters_and_loses_nothing() {
    let _g = serial();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("agent.sock");
    // Connection 1 takes 4 frames (Register, metadata, 2 requests) and closes.
    let (frames, _rt) = fake_agent(path.clone(), |conn, i| {
        if conn == 1 && i >= 4 {
            Action::Close
        } else {
            Action::Reply
        }
    });
    let _guard = install(path.to_str().unwrap(), 5.0);
    for batch in 0..5 {
        record(6, &format!("B{batch}-"));
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(scout_std::flush(Duration::from_secs(15)));
    let ops = request_ops(&frames);
    assert_eq!(ops.len(), 30, "every request arrived: {ops:?}");
    let f = frames.lock().unwrap();
    let conns: Vec<usize> = f.iter().map(|(c, _)| *c).collect();
    assert!(conns.iter().any(|c| *c >= 2), "a new connection was made");
    for c in 1..=*conns.iter().max().unwrap() {
        let first = f.iter().find(|(cc, _)| *cc == c).unwrap();
        assert!(
            first.1.get("Register").is_some(),
            "connection {c} starts with Register"
        );
    }
    drop(f);
    let report = scout_std::shutdown();
    assert!(report.stats.connections_lost >= 1);
    assert!(report.stats.messages_resent >= 1);
    assert_eq!(report.stats.total_dropped(), 0);
}

#[test]
fn core_agent_that_never_reads_costs_the_app_nothing() {
    let _g = serial();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("agent.sock");
    let (_frames, _rt) = fake_agent(path.clone(), |_, _| Action::NeverRead);
    let _guard = install(path.to_str().unwrap(), 1.0);
    let started = Instant::now();
    record(5_000, "Stuck");
    let elapsed = started.elapsed();
    let stats = scout_std::stats();
    assert!(stats.dropped_queue_full > 0, "drops are counted: {stats:?}");
    assert!(stats.requests_queued <= (scout_std::QUEUE_CAPACITY + 512) as u64);
    assert_eq!(stats.requests_queued + stats.dropped_queue_full, 5_000);
    // Not a speed test: 5 000 tiny requests take milliseconds; blocking would take forever.
    assert!(
        elapsed < Duration::from_secs(10),
        "application never waits ({elapsed:?})"
    );
    let t = Instant::now();
    let report = scout_std::shutdown();
    assert!(
        t.elapsed() < Duration::from_secs(3),
        "shutdown bounded by its timeout"
    );
    assert!(!report.flushed);
}

#[test]
fn garbage_replies_are_counted_and_sending_goes_on() {
    let _g = serial();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("agent.sock");
    let (frames, _rt) = fake_agent(path.clone(), |_, _| Action::Garbage);
    let _guard = install(path.to_str().unwrap(), 5.0);
    record(10, "G");
    assert!(scout_std::flush(Duration::from_secs(10)));
    assert_eq!(request_ops(&frames).len(), 10);
    let report = scout_std::shutdown();
    assert!(report.stats.reply_errors >= 10, "{:?}", report.stats);
    assert_eq!(report.stats.requests_sent, 10);
}

#[test]
fn shutdown_with_a_dead_core_agent_returns_within_the_timeout() {
    let _g = serial();
    let port = free_port();
    let _guard = install(&format!("tcp://127.0.0.1:{port}"), 1.0);
    record(5, "Dead");
    let t = Instant::now();
    let report = scout_std::shutdown();
    let took = t.elapsed();
    assert!(
        took >= Duration::from_millis(900),
        "it tried for the timeout ({took:?})"
    );
    assert!(took < Duration::from_secs(2), "and no longer ({took:?})");
    assert!(!report.flushed);
    assert!(report.pending >= 5);
    // After shutdown the API is a no-op.
    record(3, "After");
    assert_eq!(scout_std::stats(), scout_std::Stats::default());
}

#[test]
fn shutdown_inside_runtimes_and_without_one() {
    let _g = serial();
    let port = free_port();
    for flavor in ["none", "current", "multi"] {
        let _guard = install(&format!("tcp://127.0.0.1:{port}"), 0.3);
        record(2, flavor);
        let t = Instant::now();
        match flavor {
            "none" => {
                scout_std::shutdown();
            }
            "current" => tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(async {
                    scout_std::shutdown();
                }),
            _ => tokio::runtime::Runtime::new().unwrap().block_on(async {
                tokio::spawn(async { scout_std::shutdown() }).await.unwrap();
            }),
        };
        assert!(t.elapsed() < Duration::from_secs(2), "{flavor}");
    }
}
