//! The std agent end to end against the local core agent (real Unix sockets and TCP ports):
//! every API form, async requests interleaved on a multi-thread runtime, and the exact frames.
//! Tests install global state, so they run one at a time.

use scout_std::local_agent::{Address, FinishedRequest, LocalAgentHandle};
use scout_std::{Context, FutureExt};
use serde_json::Value as J;
use std::time::Duration;

mod support;
use support::{SERIAL, config_for, opts, start_agent};

fn by_op<'a>(reqs: &'a [FinishedRequest], op: &str) -> &'a FinishedRequest {
    reqs.iter()
        .find(|r| r.operation.as_deref() == Some(op))
        .unwrap_or_else(|| panic!("no request {op}: {reqs:#?}"))
}

fn record_every_api_form() {
    // Guard form with tags, nested spans, context and rename.
    {
        let tx = scout_std::web_transaction("Users#show");
        tx.tag("tx_tag", "from-guard");
        assert!(Context::add("user_id", 42));
        assert!(!Context::add("bad key!", 1), "invalid key is refused");
        scout_std::rename_transaction("Renamed/Users/show");
        let outer = scout_std::instrument("Outer");
        outer.tag("level", 1);
        {
            let inner = scout_std::instrument_kind("SQL", "Query");
            inner.tag("db.statement", "SELECT 1");
        }
        drop(outer);
    }
    // Closure form.
    scout_std::with_background_transaction("Mailer", || {
        scout_std::instrument_fn("Render", || {});
    });
    // Explicit start/stop.
    scout_std::start_web_transaction("Explicit");
    {
        let _s = scout_std::instrument_kind("HTTP", "GET");
    }
    scout_std::stop_transaction();
    // Ignored.
    {
        let _t = scout_std::web_transaction("Ignored");
        scout_std::ignore_transaction();
    }
    // Spans outside any transaction are not recorded.
    {
        let _s = scout_std::instrument("Orphan");
    }
}

fn check_every_api_form(agent: &LocalAgentHandle) {
    let reqs = agent.requests();
    assert_eq!(reqs.len(), 3, "ignored request not sent: {reqs:#?}");
    let r = by_op(&reqs, "Controller/Users#show");
    assert_eq!(r.tags["tx_tag"], "from-guard");
    assert_eq!(r.tags["user_id"], 42);
    assert_eq!(r.tags["transaction.name"], "Renamed/Users/show");
    assert!(!r.tags.contains_key("bad key!"));
    let root = r.span_by_operation("Controller/Users#show").unwrap();
    let outer = r.span_by_operation("Custom/Outer").unwrap();
    let sql = r.span_by_operation("SQL/Query").unwrap();
    assert_eq!(root.parent_id, None);
    assert_eq!(outer.parent_id.as_deref(), Some(root.id.as_str()));
    assert_eq!(sql.parent_id.as_deref(), Some(outer.id.as_str()));
    assert_eq!(outer.tags["level"], 1);
    assert_eq!(sql.tags["db.statement"], "SELECT 1");
    let job = by_op(&reqs, "Job/Mailer");
    assert!(job.span_by_operation("Custom/Render").is_some());
    let ex = by_op(&reqs, "Controller/Explicit");
    assert!(ex.span_by_operation("HTTP/GET").is_some());

    // The exact frames: Register first with our identity, then the metadata event.
    let msgs = agent.messages();
    let reg = &msgs[0].message["Register"];
    assert_eq!(reg["app"], support::APP);
    assert_eq!(reg["key"], support::KEY);
    assert_eq!(reg["host"], "test-host");
    assert_eq!(reg["language"], "rust");
    assert_eq!(reg["api_version"], "1.0");
    let meta = &msgs[1].message["ApplicationEvent"];
    assert_eq!(meta["event_type"], "scout.metadata");
    assert_eq!(meta["event_value"]["language"], "rust");
    assert_eq!(meta["event_value"]["hostname"], "test-host");
    assert!(meta["source"].as_str().unwrap().starts_with("Pid: "));
    // Each batch: StartRequest, TagRequests, spans children first, FinishRequest last.
    for m in msgs.iter().filter_map(|m| m.message.get("BatchCommand")) {
        let cmds = m["commands"].as_array().unwrap();
        let kinds: Vec<&str> = cmds
            .iter()
            .map(|c| c.as_object().unwrap().keys().next().unwrap().as_str())
            .collect();
        assert_eq!(kinds[0], "StartRequest");
        assert_eq!(*kinds.last().unwrap(), "FinishRequest");
        let first_span = kinds.iter().position(|k| *k == "StartSpan").unwrap();
        assert!(kinds[1..first_span].iter().all(|k| *k == "TagRequest"));
        let root = cmds.iter().rev().find_map(|c| c.get("StartSpan")).unwrap();
        assert_eq!(root["parent_id"], J::Null, "root span comes last");
    }
}

fn run_api_forms(address_of: impl FnOnce(&tempfile::TempDir) -> Address) {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let agent = rt.block_on(start_agent(address_of(&dir)));
    let addr = agent.address().to_string();
    let guard = scout_std::install_with(config_for(&addr), opts());
    assert!(guard.is_active());
    record_every_api_form();
    assert!(scout_std::flush(Duration::from_secs(10)), "flushed");
    assert!(rt.block_on(agent.wait_for_requests(3, Duration::from_secs(10))));
    check_every_api_form(&agent);
    let report = scout_std::shutdown();
    assert!(report.flushed);
    assert_eq!(report.stats.total_dropped(), 0, "{:?}", report.stats);
    assert_eq!(report.stats.requests_sent, 3);
    assert_eq!(report.stats.requests_sampled_out, 1);
    assert_eq!(report.stats.context_rejected, 1);
    drop(guard);
    rt.block_on(agent.shutdown());
}

#[test]
fn every_api_form_over_unix_socket() {
    run_api_forms(|d| Address::Unix(d.path().join("core-agent.sock")));
}

#[test]
fn every_api_form_over_tcp() {
    run_api_forms(|_| Address::parse("tcp://127.0.0.1:0").unwrap());
}

#[test]
fn async_requests_interleaved_on_a_multi_thread_runtime() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let rt = support::runtime(4);
    let agent = rt.block_on(start_agent(Address::parse("tcp://127.0.0.1:0").unwrap()));
    let _guard = scout_std::install_with(config_for(&agent.address().to_string()), opts());
    const N: usize = 64;
    rt.block_on(async {
        let mut tasks = Vec::new();
        for i in 0..N {
            tasks.push(tokio::spawn(
                async move {
                    Context::add("index", i as i64);
                    for step in 0..3 {
                        async {
                            tokio::task::yield_now().await;
                            tokio::time::sleep(Duration::from_millis((i % 5) as u64)).await;
                            let s = scout_std::instrument_kind("Step", &format!("{i}-{step}"));
                            s.tag("index", i as i64);
                        }
                        .instrument_kind("Phase", &format!("{i}-{step}"))
                        .await;
                    }
                    // A task spawned inside does not attach to this request.
                    tokio::spawn(async { assert!(!scout_std::in_request()) })
                        .await
                        .unwrap();
                    assert!(scout_std::in_request());
                }
                .web_transaction(&format!("Item{i}")),
            ));
        }
        for t in tasks {
            t.await.unwrap();
        }
    });
    assert!(scout_std::flush(Duration::from_secs(10)));
    assert!(rt.block_on(agent.wait_for_requests(N as u64, Duration::from_secs(10))));
    let reqs = agent.requests();
    assert_eq!(reqs.len(), N);
    for r in &reqs {
        let i = r.tags["index"].as_i64().unwrap();
        assert_eq!(
            r.operation.as_deref(),
            Some(format!("Controller/Item{i}").as_str())
        );
        assert_eq!(r.spans.len(), 7, "root + 3 phases + 3 steps");
        for span in &r.spans {
            let name = span.operation.split_once('/').unwrap().1;
            if span.operation.starts_with("Controller/") {
                continue;
            }
            assert!(
                name.starts_with(&format!("{i}-")),
                "span {} in request {i}",
                span.operation
            );
            if span.operation.starts_with("Step/") {
                let parent = r.span(span.parent_id.as_deref().unwrap()).unwrap();
                assert_eq!(parent.operation, format!("Phase/{name}"));
            }
        }
    }
    let report = scout_std::shutdown();
    assert_eq!(report.stats.total_dropped(), 0);
    rt.block_on(agent.shutdown());
}

#[test]
fn sync_requests_on_many_threads_do_not_mix() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let rt = tokio::runtime::Runtime::new().unwrap();
    let agent = rt.block_on(start_agent(Address::parse("tcp://127.0.0.1:0").unwrap()));
    let _guard = scout_std::install_with(config_for(&agent.address().to_string()), opts());
    let threads: Vec<_> = (0..8)
        .map(|t| {
            std::thread::spawn(move || {
                for k in 0..25 {
                    let _tx = scout_std::web_transaction(&format!("T{t}"));
                    Context::add("k", k);
                    let _a = scout_std::instrument(&format!("A{t}"));
                    let _b = scout_std::instrument(&format!("B{t}"));
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert!(scout_std::flush(Duration::from_secs(10)));
    assert!(rt.block_on(agent.wait_for_requests(200, Duration::from_secs(10))));
    for r in agent.requests() {
        let t = r
            .operation
            .as_deref()
            .unwrap()
            .trim_start_matches("Controller/T")
            .to_string();
        let ops: Vec<&str> = r.spans.iter().map(|s| s.operation.as_str()).collect();
        assert_eq!(ops.len(), 3);
        assert!(
            ops.contains(&format!("Custom/A{t}").as_str())
                && ops.contains(&format!("Custom/B{t}").as_str())
        );
    }
    scout_std::shutdown();
    rt.block_on(agent.shutdown());
}

#[test]
fn request_scope_joining_panics_and_cancellation() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let rt = support::runtime(2);
    let agent = rt.block_on(start_agent(Address::parse("tcp://127.0.0.1:0").unwrap()));
    let _guard = scout_std::install_with(config_for(&agent.address().to_string()), opts());
    rt.block_on(async {
        // Middleware > Controller > user span, as a framework integration nests them.
        scout_std::request_scope(
            async {
                tokio::task::yield_now().await;
                async {
                    let _s = scout_std::instrument("Handler work");
                }
                .web_transaction("GET /users/{id}")
                .await;
            },
            "Middleware",
        )
        .await;
        // A scope in which no controller ran (a 404) is not reported.
        scout_std::request_scope(async { tokio::task::yield_now().await }, "Middleware").await;
        // A panic inside: the request is reported with `error`, the panic still propagates,
        // and the worker thread is left with no current request.
        let r = tokio::spawn(
            async {
                let _s = scout_std::instrument("Before panic");
                drop(_s);
                tokio::task::yield_now().await;
                panic!("handler failed");
            }
            .web_transaction("Panics"),
        )
        .await;
        assert!(r.unwrap_err().is_panic());
        // A cancelled transaction is reported with what it recorded.
        let slow = async {
            let _s = scout_std::instrument("Never finishes");
            tokio::time::sleep(Duration::from_secs(60)).await;
        }
        .web_transaction("Cancelled");
        let _ = tokio::time::timeout(Duration::from_millis(20), slow).await;
        for _ in 0..4 {
            tokio::spawn(async { assert!(!scout_std::in_request()) })
                .await
                .unwrap();
        }
    });
    assert!(scout_std::flush(Duration::from_secs(10)));
    assert!(rt.block_on(agent.wait_for_requests(3, Duration::from_secs(10))));
    let reqs = agent.requests();
    assert_eq!(reqs.len(), 3, "{reqs:#?}");
    let r = by_op(&reqs, "Controller/GET /users/{id}");
    let mw = r.span_by_operation("Middleware").unwrap();
    let ctl = r.span_by_operation("Controller/GET /users/{id}").unwrap();
    let work = r.span_by_operation("Custom/Handler work").unwrap();
    assert_eq!(mw.parent_id, None);
    assert_eq!(ctl.parent_id.as_deref(), Some(mw.id.as_str()));
    assert_eq!(work.parent_id.as_deref(), Some(ctl.id.as_str()));
    let p = by_op(&reqs, "Controller/Panics");
    assert_eq!(p.tags["error"], "true");
    let c = by_op(&reqs, "Controller/Cancelled");
    assert!(c.span_by_operation("Custom/Never finishes").is_some());
    scout_std::shutdown();
    rt.block_on(agent.shutdown());
}

#[test]
fn carried_tasks_and_threads_merge_into_the_parent() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let rt = support::runtime(2);
    let agent = rt.block_on(start_agent(Address::parse("tcp://127.0.0.1:0").unwrap()));
    let _guard = scout_std::install_with(config_for(&agent.address().to_string()), opts());
    let (late_tx, late_rx) = std::sync::mpsc::channel::<tokio::task::JoinHandle<()>>();
    rt.block_on(async {
        async {
            let fetch = scout_std::instrument_kind("Phase", "Fetch");
            let carry = scout_std::carry();
            let tasks: Vec<_> = (0..3)
                .map(|i| {
                    tokio::spawn(
                        async move {
                            tokio::task::yield_now().await;
                            let s = scout_std::instrument_kind("SQL", "Query");
                            s.tag("task", i);
                        }
                        .carried(carry.clone(), &format!("Task{i}")),
                    )
                })
                .collect();
            for t in tasks {
                t.await.unwrap();
            }
            let carry = scout_std::carry().unwrap();
            std::thread::spawn(move || {
                let _t = carry.enter("Thread");
                let _s = scout_std::instrument("In thread");
            })
            .join()
            .unwrap();
            drop(fetch);
            // A task still running when the request finishes is counted, not merged.
            let carry = scout_std::carry();
            late_tx
                .send(tokio::spawn(
                    async { tokio::time::sleep(Duration::from_millis(100)).await }
                        .carried(carry, "Late"),
                ))
                .unwrap();
        }
        .web_transaction("Parent")
        .await;
        late_rx.recv().unwrap().await.unwrap();
    });
    assert!(scout_std::flush(Duration::from_secs(10)));
    assert!(rt.block_on(agent.wait_for_requests(1, Duration::from_secs(10))));
    let reqs = agent.requests();
    assert_eq!(reqs.len(), 1, "carried tasks are not separate requests");
    let r = &reqs[0];
    let fetch = r.span_by_operation("Phase/Fetch").unwrap();
    for i in 0..3 {
        let task = r.span_by_operation(&format!("Custom/Task{i}")).unwrap();
        assert_eq!(
            task.parent_id.as_deref(),
            Some(fetch.id.as_str()),
            "merged under the span current at spawn"
        );
        let sql = r
            .spans
            .iter()
            .find(|s| s.operation == "SQL/Query" && s.tags["task"] == i)
            .unwrap();
        assert_eq!(sql.parent_id.as_deref(), Some(task.id.as_str()));
    }
    let thread = r.span_by_operation("Custom/Thread").unwrap();
    let inner = r.span_by_operation("Custom/In thread").unwrap();
    assert_eq!(inner.parent_id.as_deref(), Some(thread.id.as_str()));
    assert!(r.span_by_operation("Custom/Late").is_none());
    let report = scout_std::shutdown();
    assert_eq!(report.stats.carried_too_late, 1);
    rt.block_on(agent.shutdown());
}
