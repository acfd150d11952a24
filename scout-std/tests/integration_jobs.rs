//! The job wrapper against the local core agent: tokio tasks, blocking pool, plain threads,
//! job tags, errors, panics (still propagated) and job queue time.

mod support;

use scout_std::FutureExt;
use scout_std::integrations::job::Job;
use serde_json::json;
use std::time::{Duration, SystemTime};
use support::*;

fn by_op<'a>(
    reqs: &'a [scout_std::local_agent::FinishedRequest],
    op: &str,
) -> &'a scout_std::local_agent::FinishedRequest {
    reqs.iter()
        .find(|r| r.operation.as_deref() == Some(op))
        .unwrap_or_else(|| panic!("no request {op}: {reqs:#?}"))
}

#[test]
fn jobs_on_tasks_and_threads() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let rt = support::runtime(2);
    rt.block_on(async {
        let (agent, _guard) = start(&[]).await;
        let enqueued = SystemTime::now() - Duration::from_millis(30);
        let ok = Job::new("SendInvoice")
            .tag("task_id", "t-1")
            .tag("queue", "mailers")
            .tag("priority", 3)
            .enqueued_at(enqueued)
            .spawn(async {
                tokio::task::yield_now().await;
                async { tokio::time::sleep(Duration::from_millis(1)).await }
                    .instrument_kind("HTTP", "POST")
                    .await;
                Ok::<_, String>(7)
            });
        assert_eq!(ok.await.unwrap(), Ok(7));

        let failed = Job::new("Failing")
            .spawn(async { Err::<(), _>("no such user".to_owned()) })
            .await
            .unwrap();
        assert!(failed.is_err());

        let panicked = Job::new("Panicking")
            .spawn(async {
                tokio::task::yield_now().await;
                if std::hint::black_box(true) {
                    panic!("job panicked on purpose");
                }
                Ok::<(), ()>(())
            })
            .await;
        assert!(panicked.unwrap_err().is_panic(), "the panic propagates");

        let blocking = Job::new("Blocking")
            .enqueued_at_timestamp(&epoch_ms_ago(Duration::from_millis(20)).to_string())
            .spawn_blocking(|| {
                let _s = scout_std::instrument("Crunch");
                Ok::<_, ()>(())
            });
        assert_eq!(blocking.await.unwrap(), Ok(()));

        let thread = Job::new("OnThread")
            .spawn_thread(|| {
                let _s = scout_std::instrument("Work");
            })
            .unwrap();
        thread.join().unwrap();

        let thread_panics = Job::new("ThreadPanics")
            .spawn_thread(|| -> Result<(), ()> { panic!("thread job panicked on purpose") })
            .unwrap();
        assert!(thread_panics.join().is_err(), "the panic propagates");

        // Future enqueue times are not tagged.
        Job::new("FromTheFuture")
            .enqueued_at(SystemTime::now() + Duration::from_secs(60))
            .run(async {})
            .await;

        let reqs = collect(&agent, 7).await;
        assert_eq!(reqs.len(), 7, "{reqs:#?}");

        let r = by_op(&reqs, "Job/SendInvoice");
        let mut t = tags(r);
        let q = t
            .remove("scout.job_queue_time_ns")
            .unwrap()
            .as_i64()
            .unwrap();
        assert!((30_000_000..5_000_000_000).contains(&q), "{q}");
        assert_eq!(
            serde_json::Value::Object(t),
            json!({"task_id": "t-1", "queue": "mailers", "priority": 3})
        );
        assert_parent(r, "Job/SendInvoice", None);
        assert_parent(r, "HTTP/POST", Some("Job/SendInvoice"));

        assert_eq!(
            serde_json::Value::Object(tags(by_op(&reqs, "Job/Failing"))),
            json!({"error": "true"})
        );
        assert_eq!(
            serde_json::Value::Object(tags(by_op(&reqs, "Job/Panicking"))),
            json!({"error": "true"})
        );
        assert_eq!(
            serde_json::Value::Object(tags(by_op(&reqs, "Job/ThreadPanics"))),
            json!({"error": "true"})
        );

        let b = by_op(&reqs, "Job/Blocking");
        assert!(b.tags["scout.job_queue_time_ns"].as_i64().unwrap() >= 20_000_000);
        assert_parent(b, "Custom/Crunch", Some("Job/Blocking"));
        let th = by_op(&reqs, "Job/OnThread");
        assert_eq!(serde_json::Value::Object(tags(th)), json!({}));
        assert_parent(th, "Custom/Work", Some("Job/OnThread"));
        assert_eq!(
            serde_json::Value::Object(tags(by_op(&reqs, "Job/FromTheFuture"))),
            json!({})
        );

        scout_std::shutdown();
        agent.shutdown().await;
    });
}

#[test]
fn jobs_without_agent_just_run() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    assert_eq!(Job::new("X").run_blocking(|| Ok::<_, ()>(1)), Ok(1));
    let rt = tokio::runtime::Runtime::new().unwrap();
    assert_eq!(
        rt.block_on(Job::new("Y").run(async { Err::<(), _>(2) })),
        Err(2)
    );
    assert!(!scout_std::in_request());
}
