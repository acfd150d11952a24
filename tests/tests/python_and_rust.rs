//! End to end, across languages: the real Python agent (scout-apm 4.0.0) and this Rust agent
//! record the same scenario against one local core agent, and the requests they produce must be
//! the same span for span: operations, parent links, request and span tags (minus what only
//! CPython reports: allocation counters, `mem_delta`, `stack`).
//!
//! Skipped with a message when `scout_apm` cannot be imported, unless `CI` is set (then it
//! fails).

use scout_core::Config;
use scout_std::local_agent::{Address, FinishedRequest, LocalAgent, LocalAgentConfig};
use serde_json::Value;
use std::collections::BTreeSet;
use std::process::Command;
use std::time::Duration;

const PYTHON_APP: &str = r#"
import sys
import scout_apm.api as api
from scout_apm.api import BackgroundTransaction, Context, WebTransaction, instrument

api.install(config={
    "monitor": True, "key": "PYKEY", "name": "Python peer",
    "core_agent_socket_path": sys.argv[1],
    "core_agent_download": False, "core_agent_launch": False,
})
with WebTransaction("Checkout", tags={"cart_size": 3}):
    Context.add("user_id", 42)
    with instrument("Load cart", kind="SQL", tags={"table": "carts"}):
        with instrument("Price") as span:
            span.tag("currency", "EUR")
    with instrument("Charge", kind="HTTP"):
        pass
with BackgroundTransaction("Mailer"):
    with instrument("Render", kind="Template"):
        pass
"#;

fn python() -> String {
    std::env::var("PYTHON").unwrap_or_else(|_| "python3".to_owned())
}

fn rust_app() {
    {
        let tx = scout_std::web_transaction("Checkout");
        tx.tag("cart_size", 3);
        scout_std::Context::add("user_id", 42);
        let load = scout_std::instrument_kind("SQL", "Load cart");
        load.tag("table", "carts");
        {
            let price = scout_std::instrument("Price");
            price.tag("currency", "EUR");
        }
        drop(load);
        let _charge = scout_std::instrument_kind("HTTP", "Charge");
    }
    scout_std::with_background_transaction("Mailer", || {
        let _r = scout_std::instrument_kind("Template", "Render");
    });
}

/// A request as a set of `(operation, parent operation, tags)` lines plus its request tags.
fn shape(r: &FinishedRequest) -> (String, BTreeSet<String>) {
    let python_only = [
        "allocations",
        "start_allocations",
        "stop_allocations",
        "mem_delta",
        "stack",
    ];
    let clean = |tags: &serde_json::Map<String, Value>| -> Vec<String> {
        let mut v: Vec<String> = tags
            .iter()
            .filter(|(k, _)| !python_only.contains(&k.as_str()))
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        v.sort();
        v
    };
    let spans = r
        .spans
        .iter()
        .map(|s| {
            let parent = s
                .parent_id
                .as_deref()
                .and_then(|p| r.span(p))
                .map_or("-", |p| p.operation.as_str());
            format!("{} < {} {:?}", s.operation, parent, clean(&s.tags))
        })
        .collect();
    (
        format!(
            "{} {:?}",
            r.operation.clone().unwrap_or_default(),
            clean(&r.tags)
        ),
        spans,
    )
}

#[test]
fn python_and_rust_agents_report_the_same_requests() {
    let ok = Command::new(python())
        .args(["-c", "import scout_apm"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !ok {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI is set but the Python agent is not installed (pip install scout-apm==4.0.0)"
        );
        println!("SKIPPED: pip install scout-apm==4.0.0 to run this test");
        return;
    }
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("core-agent.sock");
    let agent = rt
        .block_on(LocalAgent::start(LocalAgentConfig::new(Address::Unix(
            sock.clone(),
        ))))
        .unwrap();

    let out = Command::new(python())
        .args(["-c", PYTHON_APP, sock.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "python: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(rt.block_on(agent.wait_for_requests(2, Duration::from_secs(15))));

    let mut c = Config::new()
        .name("Rust peer")
        .key("RSKEY")
        .monitor(true)
        .core_agent_launch(false)
        .core_agent_download(false);
    c.set("core_agent_socket_path", sock.to_str().unwrap())
        .unwrap();
    let guard = scout_std::install_with(
        c,
        scout_std::InstallOptions {
            ignore_environment: true,
            ..Default::default()
        },
    );
    rust_app();
    assert!(scout_std::flush(Duration::from_secs(10)));
    drop(guard);
    assert!(rt.block_on(agent.wait_for_requests(4, Duration::from_secs(10))));

    let reqs = agent.requests();
    let by_app = |app: &str| {
        let mut v: Vec<_> = reqs.iter().filter(|r| r.app == app).map(shape).collect();
        v.sort();
        v
    };
    let python = by_app("Python peer");
    let rust = by_app("Rust peer");
    assert_eq!(python.len(), 2, "{reqs:#?}");
    assert_eq!(rust, python);
    // Both registered and sent their metadata on the same core agent.
    let langs: BTreeSet<String> = agent
        .messages()
        .iter()
        .filter_map(|m| m.message.get("Register"))
        .map(|r| r["language"].as_str().unwrap_or("").to_owned())
        .collect();
    assert_eq!(
        langs,
        BTreeSet::from(["python".to_owned(), "rust".to_owned()])
    );
    rt.block_on(agent.shutdown());
}
