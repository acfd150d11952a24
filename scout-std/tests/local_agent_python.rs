//! The real Python agent (`pip install scout-apm`) as the peer of the local agent.
//!
//! Skipped with a message when `scout_apm` cannot be imported, unless the `CI` environment
//! variable is set, in which case the test fails. The interpreter is `$PYTHON` or `python3`.

#[path = "fixtures/local_agent/client.rs"]
mod client;

use std::process::Command;
use std::time::Duration;

use client::assert_request_matches_batch;
use scout_std::local_agent::{Address, LocalAgent, LocalAgentConfig, LocalAgentHandle};
use serde_json::{Value, json};

const SCRIPT: &str = include_str!("fixtures/local_agent/python_app.py");

fn python() -> String {
    std::env::var("PYTHON").unwrap_or_else(|_| "python3".to_owned())
}

/// True if the Python agent is importable; panics in CI when it is not.
fn python_agent_available() -> bool {
    let ok = Command::new(python())
        .args(["-c", "import scout_apm"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !ok {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI is set but `{} -c 'import scout_apm'` failed: install it with `pip install scout-apm`",
            python()
        );
        println!(
            "SKIPPED: the Python agent is not installed (`pip install scout-apm` to run this test)"
        );
    }
    ok
}

async fn run_python(agent: &LocalAgentHandle, socket_setting: String) {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("app.py");
    std::fs::write(&script, SCRIPT).unwrap();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(python())
            .arg(&script)
            .arg(socket_setting)
            .output()
            .expect("run python")
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "python failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        agent.wait_for_requests(4, Duration::from_secs(20)).await,
        "requests: {:?}\nstderr: {}",
        agent.requests(),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn check(agent: &LocalAgentHandle) {
    let messages = agent.messages();
    let kinds: Vec<&str> = messages
        .iter()
        .map(|m| {
            m.message
                .as_object()
                .unwrap()
                .keys()
                .next()
                .unwrap()
                .as_str()
        })
        .collect();
    assert_eq!(kinds[0], "Register", "{kinds:?}");
    assert_eq!(
        messages[0].message["Register"]["app"],
        "Local Agent Python E2E"
    );
    assert_eq!(messages[0].message["Register"]["language"], "python");
    let batches: Vec<&Value> = messages
        .iter()
        .map(|m| &m.message)
        .filter(|m| m.get("BatchCommand").is_some())
        .collect();
    let requests = agent.requests();
    assert_eq!(batches.len(), 4, "{kinds:?}");
    assert_eq!(requests.len(), 4);
    // Every span, tag and parent link that Python sent is in the rebuilt request.
    for (b, r) in batches.iter().zip(&requests) {
        assert_request_matches_batch(b, r);
        assert_eq!(r.app, "Local Agent Python E2E");
    }

    let web = &requests[0];
    assert_eq!(
        web.endpoint.as_deref(),
        Some("Controller/UsersController.show")
    );
    let ops: Vec<(&str, u32)> = web
        .spans
        .iter()
        .map(|s| (s.operation.as_str(), s.depth))
        .collect();
    assert_eq!(
        ops,
        [
            ("Controller/UsersController.show", 0),
            ("SQL/Load user", 1),
            ("Custom/Format name", 2),
            ("HTTP/GET", 1),
        ]
    );
    let root = &web.spans[0];
    let sql = &web.spans[1];
    let fmt = &web.spans[2];
    let http = &web.spans[3];
    assert_eq!(root.parent_id, None);
    assert_eq!(sql.parent_id.as_deref(), Some(root.id.as_str()));
    assert_eq!(fmt.parent_id.as_deref(), Some(sql.id.as_str()));
    assert_eq!(http.parent_id.as_deref(), Some(root.id.as_str()));
    assert_eq!(sql.tags["db"], "primary");
    assert_eq!(sql.tags["rows"], 1);
    assert_eq!(http.tags["url"], "http://example.test/");
    assert_eq!(web.tags["tx_tag"], "from-constructor");
    assert_eq!(web.tags["user_id"], 42);
    assert_eq!(web.tags["flags"], json!({"beta": true, "ratio": 0.5}));
    assert!(web.tags.contains_key("mem_delta"));
    let keys: Vec<&str> = web.tags.keys().map(String::as_str).collect();
    assert_eq!(&keys[..3], ["tx_tag", "user_id", "flags"]);
    assert!(sql.duration_us >= 20_000, "{}", sql.duration_us);
    assert!(root.duration_us >= sql.duration_us + http.duration_us);

    let job = &requests[1];
    assert_eq!(job.endpoint.as_deref(), Some("Job/SendEmailJob"));
    assert_eq!(job.tags["recipient_count"], 3);
    assert_eq!(job.spans[1].operation, "HTTP/SMTP deliver");
    assert_eq!(job.spans[1].tags["host"], "smtp.example");

    let failing = &requests[2];
    assert_eq!(failing.endpoint.as_deref(), Some("Job/FailingJob"));
    assert!(failing.error);

    let ignored = &requests[3];
    assert_eq!(ignored.tags["ignore_transaction"], true);
    assert!(ignored.ignored);

    let endpoints = agent.endpoints();
    let names: Vec<&str> = endpoints.iter().map(|e| e.endpoint.as_str()).collect();
    assert_eq!(names.len(), 3, "{names:?}");
    let failing_stats = endpoints
        .iter()
        .find(|e| e.endpoint == "Job/FailingJob")
        .unwrap();
    assert_eq!(failing_stats.errors, 1);
    let web_stats = endpoints
        .iter()
        .find(|e| e.endpoint == "Controller/UsersController.show")
        .unwrap();
    assert!(
        web_stats
            .kinds
            .iter()
            .any(|k| k.kind == "SQL" && k.total_us >= 20_000)
    );

    let meta = agent
        .events()
        .into_iter()
        .find(|e| e.event_type == "scout.metadata")
        .expect("metadata event");
    assert_eq!(meta.value["language"], "python");
    assert_eq!(agent.counters().bad_frames(), 0);
    let summary = agent.summary();
    assert!(
        summary.contains("Controller/UsersController.show"),
        "{summary}"
    );
    println!("{summary}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_agent_over_unix_socket() {
    if !python_agent_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("core-agent.sock");
    let agent = LocalAgent::start(LocalAgentConfig::new(Address::Unix(path.clone())))
        .await
        .unwrap();
    run_python(&agent, path.display().to_string()).await;
    check(&agent);
    agent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_agent_over_tcp() {
    if !python_agent_available() {
        return;
    }
    let agent = LocalAgent::start(LocalAgentConfig::new(
        Address::parse("tcp://127.0.0.1:0").unwrap(),
    ))
    .await
    .unwrap();
    run_python(&agent, agent.address().to_string()).await;
    check(&agent);
    agent.shutdown().await;
}
