//! Slow-span backtraces, sampling and ignore settings changed at run time, the span limit, and
//! conformance with the Python agent's captured scenarios (field by field after normalising
//! ids, timestamps and language-specific values).

use scout_core::Config;
use scout_std::local_agent::{Address, LocalAgentHandle};
use serde_json::Value as J;
use std::time::Duration;

mod support;
use support::SERIAL;

struct Env {
    rt: tokio::runtime::Runtime,
    agent: LocalAgentHandle,
    _guard: scout_std::AgentGuard,
}

fn setup(configure: impl FnOnce(Config) -> Config) -> Env {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let agent = rt.block_on(support::start_agent(
        Address::parse("tcp://127.0.0.1:0").unwrap(),
    ));
    let config = support::config_for(&agent.address().to_string());
    let guard = scout_std::install_with(configure(config), support::opts());
    Env {
        rt,
        agent,
        _guard: guard,
    }
}

impl Env {
    fn finish(self, n: u64) -> Vec<scout_std::local_agent::FinishedRequest> {
        assert!(scout_std::flush(Duration::from_secs(10)));
        assert!(
            self.rt
                .block_on(self.agent.wait_for_requests(n, Duration::from_secs(10)))
        );
        let r = self.agent.requests();
        scout_std::shutdown();
        self.rt.block_on(self.agent.shutdown());
        r
    }
}

#[inline(never)]
fn slow_user_function() {
    let _s = scout_std::instrument("Slow");
    std::thread::sleep(Duration::from_millis(60));
}

#[test]
fn slow_spans_get_a_stack_and_fast_ones_do_not() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let env = setup(|c| c.backtrace_threshold_ms(50));
    {
        let _t = scout_std::web_transaction("Backtraces");
        slow_user_function();
        let _fast = scout_std::instrument("Fast");
    }
    let reqs = env.finish(1);
    let r = &reqs[0];
    let slow = r.span_by_operation("Custom/Slow").unwrap();
    let stack = slow.tags["stack"]
        .as_array()
        .expect("stack tag on the slow span");
    assert!(!stack.is_empty() && stack.len() <= 50);
    for f in stack {
        assert!(
            f["file"].is_string() && f["line"].is_u64() && f["function"].is_string(),
            "{f}"
        );
        assert!(
            !f["function"].as_str().unwrap().starts_with("scout_std::"),
            "agent frames removed"
        );
    }
    assert!(
        stack.iter().any(|f| f["function"]
            .as_str()
            .unwrap()
            .contains("slow_user_function")),
        "the user's frame is there: {stack:?}"
    );
    assert!(
        !r.span_by_operation("Custom/Fast")
            .unwrap()
            .tags
            .contains_key("stack")
    );
    assert!(
        !r.span_by_operation("Controller/Backtraces")
            .unwrap()
            .tags
            .contains_key("stack"),
        "roots never"
    );
}

#[test]
fn sampling_and_ignores_change_at_run_time() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let env = setup(|c| c.ignore_endpoints(&["health"]));
    let run = |name: &str| drop(scout_std::web_transaction(name));
    run("health/live");
    run("users");
    scout_std::set_setting("ignore_endpoints", "users").unwrap();
    run("health/live");
    run("users");
    scout_std::set_setting("sample_jobs", "mail:0").unwrap();
    drop(scout_std::background_transaction("mail/send"));
    drop(scout_std::background_transaction("report"));
    assert!(scout_std::set_setting("sample_rate", "lots").is_err());
    assert!(scout_std::flush(Duration::from_secs(10)));
    assert_eq!(scout_std::stats().requests_sampled_out, 3);
    let reqs = env.finish(3);
    let ops: Vec<&str> = reqs.iter().filter_map(|r| r.operation.as_deref()).collect();
    assert_eq!(ops.len(), 3, "{ops:?}");
    assert!(ops.contains(&"Controller/users"), "{ops:?}");
    assert!(
        ops.contains(&"Controller/users")
            && ops.contains(&"Controller/health/live")
            && ops.contains(&"Job/report")
    );
}

#[test]
fn span_limit_drops_are_counted_and_ancestors_complete() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let env = setup(|c| c);
    {
        let _t = scout_std::web_transaction("Big");
        for _ in 0..1_600 {
            let _s = scout_std::instrument("Item");
        }
    }
    assert!(scout_std::flush(Duration::from_secs(10)));
    let stats = scout_std::stats();
    let reqs = env.finish(1);
    assert_eq!(
        reqs[0].spans.len(),
        1_501,
        "1 500 children + the open root, as Python"
    );
    assert_eq!(stats.spans_dropped_limit, 100);
}

fn capture(name: &str) -> J {
    let p = format!(
        "{}/../scout-core/tests/vectors/python/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

/// A batch reduced to its structure: command kinds in order, parent links and request tags
/// (minus Python-only tags), with ids numbered by first appearance.
fn shape(batch: &J, with_names: bool) -> Vec<String> {
    let python_only = [
        "allocations",
        "start_allocations",
        "stop_allocations",
        "mem_delta",
        "stack",
    ];
    let mut ids: Vec<String> = Vec::new();
    let mut id = |s: &J| -> String {
        match s.as_str() {
            None => "null".into(),
            Some(s) => {
                let n = ids.iter().position(|x| x == s).unwrap_or_else(|| {
                    ids.push(s.to_owned());
                    ids.len() - 1
                });
                format!("#{n}")
            }
        }
    };
    let mut out = Vec::new();
    for c in batch["BatchCommand"]["commands"].as_array().unwrap() {
        let (k, b) = c.as_object().unwrap().iter().next().unwrap();
        if b.get("tag")
            .and_then(J::as_str)
            .is_some_and(|t| python_only.contains(&t))
        {
            continue;
        }
        out.push(match k.as_str() {
            "StartSpan" if with_names => format!(
                "StartSpan {} parent={} {}",
                id(&b["span_id"]),
                id(&b["parent_id"]),
                b["operation"]
            ),
            "StartSpan" => format!(
                "StartSpan {} parent={}",
                id(&b["span_id"]),
                id(&b["parent_id"])
            ),
            "TagSpan" if with_names => {
                format!("TagSpan {} {}={}", id(&b["span_id"]), b["tag"], b["value"])
            }
            "TagSpan" => format!("TagSpan {}", id(&b["span_id"])),
            "StopSpan" => format!("StopSpan {}", id(&b["span_id"])),
            "TagRequest" => format!("TagRequest {}={}", b["tag"], b["value"]),
            other => other.to_string(),
        });
    }
    out
}

fn batches(c: &J) -> Vec<J> {
    c["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["message"].get("BatchCommand").is_some())
        .map(|m| m["message"].clone())
        .collect()
}

#[test]
fn conformance_with_python_captures() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let env = setup(|c| c);
    // 01: WebTransaction with constructor tags, Context.add, three levels of spans with tags,
    // a rename, and a slow span (whose `stack` differs by language and is left out).
    {
        let tx = scout_std::web_transaction("UsersController.show");
        tx.tag("tx_tag", "from-constructor");
        scout_std::Context::add("user_id", 42);
        scout_std::Context::add("plan", "pro");
        scout_std::tag_request(
            "flags",
            scout_std::Value::Json(
                scout_core::RawJson::new(r#"{"beta": true, "ratio": 0.5}"#).unwrap(),
            ),
        );
        scout_std::rename_transaction("Renamed/Users/show");
        {
            let load = scout_std::instrument("Load user");
            load.tag("db", "primary");
            load.tag("rows", 1);
            let _build = scout_std::instrument_kind("Compute", "Build profile");
            let _format = scout_std::instrument("Format name");
        }
        let _slow = scout_std::instrument_kind("External", "Slow call");
    }
    // 02: BackgroundTransaction with a tag and one child span.
    {
        let tx = scout_std::background_transaction("SendEmailJob");
        tx.tag("recipient_count", 3);
        let s = scout_std::instrument_kind("HTTP", "SMTP deliver");
        s.tag("host", "smtp.example");
    }
    // 03: ignore_transaction with no ignore configuration. Unlike Python 4.0.0, the Rust agent
    // does not send it: a user who ignores a transaction expects it ignored (spec §9.3).
    {
        let _t = scout_std::web_transaction("IgnoredView");
        scout_std::ignore_transaction();
    }
    assert!(scout_std::flush(Duration::from_secs(10)));
    let ours: Vec<J> = env
        .agent
        .messages()
        .into_iter()
        .filter(|m| m.message.get("BatchCommand").is_some())
        .map(|m| m.message)
        .collect();
    let reqs = env.finish(2);
    assert_eq!(reqs.len(), 2);
    assert_eq!(ours.len(), 2, "the ignored request is not sent");
    let py01 = &batches(&capture("01-web-transaction-nested.json"))[0];
    assert_eq!(shape(&ours[0], true), shape(py01, true));
    let py02 = &batches(&capture("02-background-transaction.json"))[0];
    assert_eq!(shape(&ours[1], true), shape(py02, true));
    let py03 = &batches(&capture("03-ignored-via-api-no-ignore-config.json"))[0];
    assert!(
        shape(py03, true)
            .iter()
            .any(|l| l == "TagRequest \"ignore_transaction\"=true")
    );
}
