//! The apalis layer: a real apalis worker on the in-memory backend records each task as
//! `Job/<name>` with task tags, errors and the queue time from the enqueue timestamp.

mod support;

use apalis_core::backend::TaskSink;
use apalis_core::backend::memory::MemoryStorage;
use apalis_core::task::builder::TaskBuilder;
use apalis_core::worker::builder::WorkerBuilder;
use apalis_core::worker::context::WorkerContext;
use scout_std::integrations::apalis::{EnqueuedAt, ScoutJobLayer};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};
use support::*;

static DONE: AtomicUsize = AtomicUsize::new(0);

async fn email(n: u32, worker: WorkerContext) -> Result<(), std::io::Error> {
    let _s = scout_std::instrument("Render");
    drop(_s);
    tokio::task::yield_now().await;
    if DONE.fetch_add(1, Ordering::SeqCst) + 1 == 2 {
        let _ = worker.stop();
    }
    if n == 13 {
        return Err(std::io::Error::other("unlucky"));
    }
    Ok(())
}

#[test]
fn apalis_worker_jobs() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let (agent, _guard) = start(&[]).await;
        let mut storage = MemoryStorage::<u32>::new();
        let enqueued = EnqueuedAt(SystemTime::now() - Duration::from_millis(40));
        storage
            .push_task(TaskBuilder::new(1).metadata(&enqueued).build())
            .await
            .unwrap();
        storage.push(13).await.unwrap();
        let worker = WorkerBuilder::new("mailer")
            .backend(storage)
            .layer(ScoutJobLayer::named("SendEmail"))
            .build(email);
        let _ = tokio::time::timeout(Duration::from_secs(10), worker.run()).await;
        let reqs = collect(&agent, 2).await;
        assert_eq!(reqs.len(), 2, "{reqs:#?}");
        for r in &reqs {
            assert_eq!(r.operation.as_deref(), Some("Job/SendEmail"));
            assert_parent(r, "Custom/Render", Some("Job/SendEmail"));
            assert!(r.tags.contains_key("attempt"), "{r:#?}");
        }
        let with_q = reqs
            .iter()
            .find(|r| r.tags.contains_key("scout.job_queue_time_ns"))
            .expect("queue time from the enqueue timestamp");
        assert!(with_q.tags["scout.job_queue_time_ns"].as_i64().unwrap() >= 40_000_000);
        assert!(!with_q.tags.contains_key("error"));
        assert_eq!(
            reqs.iter()
                .filter(|r| r.tags.get("error").is_some_and(|e| e == "true"))
                .count(),
            1
        );
        scout_std::shutdown();
        agent.shutdown().await;
    });
}
