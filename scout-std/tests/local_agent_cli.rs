//! The `scout-local-agent` binary: core-agent compatible `start`, `probe`, `shutdown`, exit status 3,
//! daemonizing, signals, summary output and `--export`.

#[path = "fixtures/local_agent/client.rs"]
mod client;

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use client::{RawClient, is_success};
use scout_std::local_agent::Address;
use serde_json::json;

const BIN: &str = env!("CARGO_BIN_EXE_scout-local-agent");

fn agent(args: &[&str]) -> Command {
    let mut c = Command::new(BIN);
    c.args(args);
    c
}

fn run(args: &[&str]) -> Output {
    agent(args).output().expect("run scout-local-agent")
}

/// Kills the child on drop so a failing test leaves nothing behind.
struct Guard(Option<Child>);

impl Guard {
    fn spawn(c: &mut Command) -> Self {
        Self(Some(c.spawn().expect("spawn scout-local-agent")))
    }

    fn id(&self) -> u32 {
        self.0.as_ref().map_or(0, Child::id)
    }

    /// Waits for exit (off the async runtime) and returns the output.
    async fn output(mut self) -> Output {
        let child = self.0.take().unwrap();
        tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
            .await
            .unwrap()
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(c) = &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn probe_ok(addr: &str) -> bool {
    let flag = if addr.starts_with("tcp://") {
        "--tcp"
    } else {
        "--socket"
    };
    run(&["probe", flag, addr.trim_start_matches("tcp://")])
        .status
        .success()
}

fn free_tcp_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn send_request(addr: &Address, id: &str) {
    let mut c = RawClient::connect(addr).await;
    c.register("cli app").await;
    let r = c
        .send(&json!({"BatchCommand": {"commands": [
            {"StartRequest": {"timestamp": "2026-01-01T00:00:00.000000+00:00", "request_id": id}},
            {"TagRequest": {"timestamp": "2026-01-01T00:00:00.000000+00:00", "request_id": id, "tag": "path", "value": "/cli"}},
            {"StartSpan": {"timestamp": "2026-01-01T00:00:00.010000+00:00", "request_id": id, "span_id": "c", "parent_id": "p", "operation": "SQL/Query"}},
            {"StopSpan": {"timestamp": "2026-01-01T00:00:00.030000+00:00", "request_id": id, "span_id": "c"}},
            {"StartSpan": {"timestamp": "2026-01-01T00:00:00.001000+00:00", "request_id": id, "span_id": "p", "parent_id": null, "operation": "Controller/cli"}},
            {"StopSpan": {"timestamp": "2026-01-01T00:00:00.050000+00:00", "request_id": id, "span_id": "p"}},
            {"FinishRequest": {"timestamp": "2026-01-01T00:00:00.051000+00:00", "request_id": id}}
        ]}}))
        .await;
    assert!(is_success(&r, "BatchCommand"), "{r}");
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreground_start_probe_export_summary_and_shutdown_command() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("agent.sock");
    let export = dir.path().join("out.jsonl");
    let log = dir.path().join("agent.log");
    let sock_s = sock.to_str().unwrap();
    let child = Guard::spawn(
        agent(&[
            "start",
            "--daemonize",
            "false",
            "--log-level",
            "debug",
            "--log-file",
            log.to_str().unwrap(),
            "--config-file",
            "/nonexistent.toml",
            "--socket",
            sock_s,
            "--ca-cert",
            "/nonexistent.pem",
            "--export",
            export.to_str().unwrap(),
            "--refresh",
            "0.2",
        ])
        .stdout(Stdio::piped()),
    );
    wait_until("probe", || probe_ok(sock_s));
    let probe = run(&["probe", "--socket", sock_s]);
    assert!(String::from_utf8_lossy(&probe.stdout).contains(env!("CARGO_PKG_VERSION")));
    // Exit status 3 while it runs.
    let second = run(&["start", "--socket", sock_s, "--log-level", "error"]);
    assert_eq!(second.status.code(), Some(3), "{second:?}");
    send_request(&Address::Unix(sock.clone()), "req-1").await;
    send_request(&Address::Unix(sock.clone()), "req-2").await;
    let shut = run(&["shutdown", "--socket", sock_s]);
    assert!(shut.status.success(), "{shut:?}");
    let out = child.output().await;
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("Controller/cli"), "{stdout}");
    assert!(stdout.contains("Slowest trace"), "{stdout}");
    assert!(stdout.contains("SQL/Query"), "{stdout}");
    assert!(!sock.exists(), "socket file removed at exit");
    let lines: Vec<serde_json::Value> = read(&export)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["id"], "req-1");
    assert_eq!(lines[0]["endpoint"], "Controller/cli");
    assert_eq!(lines[0]["spans"][1]["parent_id"], "p");
    let log = read(&log);
    assert!(log.contains("listening on"), "{log}");
    assert!(log.contains("--config-file"), "{log}");
    assert!(log.contains("asked the agent to shut down"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_prints_the_summary_and_exits_zero_over_tcp() {
    let port = free_tcp_port();
    let addr = format!("127.0.0.1:{port}");
    let child = Guard::spawn(
        agent(&[
            "start",
            "--tcp",
            &addr,
            "--log-level",
            "warn",
            "--refresh",
            "0",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped()),
    );
    let tcp = format!("tcp://{addr}");
    wait_until("probe", || probe_ok(&tcp));
    let second = run(&["start", "--tcp", &addr, "--log-level", "off"]);
    assert_eq!(second.status.code(), Some(3), "{second:?}");
    send_request(&Address::parse(&tcp).unwrap(), "req-tcp").await;
    let pid = child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let out = child.output().await;
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("1 requests"), "{stdout}");
    assert!(stdout.contains("Controller/cli"), "{stdout}");
}

#[test]
fn daemonize_returns_once_listening_and_reports_already_running() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("d.sock");
    let log = dir.path().join("d.log");
    let sock_s = sock.to_str().unwrap();
    // The exact argv order Python uses (spec 2.5).
    let args = [
        "start",
        "--daemonize",
        "true",
        "--log-level",
        "info",
        "--log-file",
        log.to_str().unwrap(),
        "--socket",
        sock_s,
    ];
    let first = run(&args);
    assert_eq!(first.status.code(), Some(0), "{first:?}\n{}", read(&log));
    // It answers right away: the launcher returned only once it did.
    assert!(probe_ok(sock_s));
    let again = run(&args);
    assert_eq!(again.status.code(), Some(3), "{again:?}");
    assert!(run(&["shutdown", "--socket", sock_s]).status.success());
    wait_until("daemon exit", || !sock.exists());
    assert!(!probe_ok(sock_s));
    let log = read(&log);
    assert!(log.contains("listening on"), "{log}");
    assert!(log.contains("already running"), "{log}");
}

#[test]
fn stale_socket_is_replaced_and_usage_errors_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("stale.sock");
    drop(std::os::unix::net::UnixListener::bind(&sock).unwrap());
    let sock_s = sock.to_str().unwrap();
    let first = run(&[
        "start",
        "--daemonize",
        "true",
        "--socket",
        sock_s,
        "--log-level",
        "off",
    ]);
    assert_eq!(first.status.code(), Some(0), "{first:?}");
    assert!(probe_ok(sock_s));
    assert!(run(&["shutdown", "--socket", sock_s]).status.success());
    wait_until("daemon exit", || !sock.exists());

    let none = run(&["probe", "--socket", sock_s]);
    assert_eq!(none.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&none.stdout).contains("No agent found"));
    assert_eq!(
        run(&["start", "--daemonize", "perhaps"]).status.code(),
        Some(2)
    );
    assert_eq!(run(&["start", "--bogus"]).status.code(), Some(2));
    assert_eq!(run(&["launch"]).status.code(), Some(2));
    assert!(run(&["--help"]).status.success());
    let remote = run(&["start", "--tcp", "0.0.0.0:0", "--log-level", "off"]);
    assert_eq!(remote.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&remote.stderr).contains("--allow-remote"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn summary_subcommand_and_json_config_file_export() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("agent.sock");
    let sock_s = sock.to_str().unwrap();
    let config = dir.path().join("local-agent.json");
    std::fs::write(&config, r#"{"export": "from-config.jsonl"}"#).unwrap();
    // Nothing runs yet: `summary` exits 1.
    let none = run(&["summary", "--socket", sock_s]);
    assert_eq!(none.status.code(), Some(1), "{none:?}");
    let child = Guard::spawn(
        agent(&[
            "start",
            "--socket",
            sock_s,
            "--config-file",
            config.to_str().unwrap(),
            "--refresh",
            "0",
            "--no-summary",
        ])
        .stdout(Stdio::piped()),
    );
    wait_until("probe", || probe_ok(sock_s));
    send_request(&Address::Unix(sock.clone()), "req-s1").await;
    let out = run(&["summary", "--socket", sock_s]);
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.starts_with("== Scout local agent: 1 requests"),
        "{text}"
    );
    assert!(text.contains("Controller/cli"), "{text}");
    assert!(text.contains("Slowest trace"), "{text}");
    // The export path of the config file is relative to the file's directory.
    let exported = read(&dir.path().join("from-config.jsonl"));
    assert_eq!(exported.lines().count(), 1, "{exported}");
    assert!(exported.contains("\"id\":\"req-s1\""), "{exported}");
    assert!(run(&["shutdown", "--socket", sock_s]).status.success());
    let out = child.output().await;
    assert!(out.status.success(), "{out:?}");
    assert!(out.stdout.is_empty(), "--no-summary");
}
