//! A worker running background jobs with Scout: `cargo run -p scout-examples --example worker`.
//!
//! Settings come from `SCOUT_*` variables: `SCOUT_MONITOR=true`, `SCOUT_KEY=...`,
//! `SCOUT_NAME="My Worker"`. Each job shows as `Job/<name>` with its queue time.

use scout_std::FutureExt;
use scout_std::integrations::job::Job;
use std::time::{Duration, SystemTime};

#[tokio::main]
async fn main() {
    let _agent = scout_std::install(scout_std::Config::new().name("Worker example"));
    let (tx, mut rx) = tokio::sync::mpsc::channel::<(u32, SystemTime)>(100);
    tokio::spawn(async move {
        for n in 0..10 {
            let _ = tx.send((n, SystemTime::now())).await;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    while let Some((n, enqueued)) = rx.recv().await {
        let job = Job::new("ResizeImage")
            .tag("image_id", i64::from(n))
            .enqueued_at(enqueued);
        let result = job
            .spawn(async move {
                async { tokio::time::sleep(Duration::from_millis(5)).await }
                    .instrument_kind("HTTP", "GET")
                    .await;
                if n % 5 == 4 {
                    Err("corrupt image")
                } else {
                    Ok(())
                }
            })
            .await;
        println!("job {n}: {result:?}");
    }
    // A job on a plain thread.
    let handle = Job::new("Cleanup")
        .spawn_thread(|| {
            let _span = scout_std::instrument("Sweep");
        })
        .expect("thread starts");
    let _ = handle.join();
    scout_std::flush(Duration::from_secs(5));
}
