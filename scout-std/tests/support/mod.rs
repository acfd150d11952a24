//! Shared by the std agent's tests: the local core agent, install, a raw HTTP/1.1 client.

#![allow(dead_code, unreachable_pub)]

use scout_core::Config;
use scout_std::InstallOptions;
use scout_std::local_agent::{
    Address, FinishedRequest, FinishedSpan, LocalAgent, LocalAgentConfig, LocalAgentHandle,
};
use std::sync::Mutex;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Tests install the global agent: one at a time per binary.
pub static SERIAL: Mutex<()> = Mutex::new(());

/// A multi-thread tokio runtime with `workers` worker threads and every driver enabled.
pub fn runtime(workers: usize) -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// The app name the tests register with.
pub const APP: &str = "Integration App";
/// The key the tests register with.
pub const KEY: &str = "INTEGRATIONKEY012345";

/// A configuration reporting to the core agent at `address`, with nothing downloaded or
/// launched.
pub fn config_for(address: &str) -> Config {
    let mut c = Config::new()
        .name(APP)
        .key(KEY)
        .monitor(true)
        .core_agent_launch(false)
        .core_agent_download(false);
    c.set("core_agent_socket_path", address).unwrap();
    c.set("hostname", "test-host").unwrap();
    c
}

pub fn opts() -> InstallOptions {
    InstallOptions {
        ignore_environment: true,
        ..Default::default()
    }
}

/// Starts the local core agent at `address`.
pub async fn start_agent(address: Address) -> LocalAgentHandle {
    LocalAgent::start(LocalAgentConfig::new(address))
        .await
        .expect("local agent starts")
}

/// Starts the local core agent on loopback TCP and installs the std agent reporting to it,
/// with extra settings.
pub async fn start(settings: &[(&str, &str)]) -> (LocalAgentHandle, scout_std::AgentGuard) {
    let agent = LocalAgent::start(LocalAgentConfig::new(
        Address::parse("tcp://127.0.0.1:0").unwrap(),
    ))
    .await
    .expect("local agent starts");
    let mut config = config_for(&agent.address().to_string());
    for (k, v) in settings {
        config.set(k, v).unwrap();
    }
    let guard = scout_std::install_with(config, opts());
    (agent, guard)
}

/// Flushes the std agent and waits until `n` requests reached the local agent.
pub async fn collect(agent: &LocalAgentHandle, n: usize) -> Vec<FinishedRequest> {
    assert!(scout_std::flush(Duration::from_secs(10)), "flush");
    assert!(
        agent
            .wait_for_requests(n as u64, Duration::from_secs(10))
            .await,
        "{n} requests expected, got {:#?}",
        agent.requests()
    );
    // Anything sent after the expected requests would show up here.
    tokio::time::sleep(Duration::from_millis(100)).await;
    agent.requests()
}

pub fn by_path<'a>(reqs: &'a [FinishedRequest], path: &str) -> &'a FinishedRequest {
    reqs.iter()
        .find(|r| r.tags.get("path").and_then(|p| p.as_str()) == Some(path))
        .unwrap_or_else(|| panic!("no request with path {path}: {reqs:#?}"))
}

pub fn span<'a>(r: &'a FinishedRequest, op: &str) -> &'a FinishedSpan {
    r.span_by_operation(op)
        .unwrap_or_else(|| panic!("no span {op} in {r:#?}"))
}

/// Asserts `child`'s parent is `parent`.
pub fn assert_parent(r: &FinishedRequest, child: &str, parent: Option<&str>) {
    let c = span(r, child);
    let p = parent.map(|p| span(r, p).id.as_str());
    assert_eq!(c.parent_id.as_deref(), p, "parent of {child} in {r:#?}");
}

/// Sends one HTTP/1.1 request on a new connection; returns the status (0 when the
/// connection closed without a response, e.g. after a panic) and the body.
pub async fn http(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, String) {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out).await;
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// Milliseconds since the epoch, `ago` in the past.
pub fn epoch_ms_ago(ago: Duration) -> u128 {
    (std::time::SystemTime::now() - ago)
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis()
}

/// The request tags minus those every request carries (`mem_delta`).
pub fn tags(r: &FinishedRequest) -> serde_json::Map<String, serde_json::Value> {
    let mut t = r.tags.clone();
    t.remove("mem_delta");
    t
}
