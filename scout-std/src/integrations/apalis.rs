//! Apalis 1.x job runner (feature `apalis`): [`ScoutJobLayer`] records every task a worker
//! runs as `Job/<name>`, with request tags `task_id`, `queue`, `attempt`, `priority` (those
//! the backend knows), `error` = `"true"` when the task returns an error or panics, and
//! `scout.job_queue_time_ns`, taken from the enqueue time stored in the task's metadata
//! as [`EnqueuedAt`], else from the task's `run_at`
//! time.
//!
//! ```no_run
//! use apalis_core::backend::memory::MemoryStorage;
//! use apalis_core::worker::builder::WorkerBuilder;
//! use scout_std::integrations::apalis::ScoutJobLayer;
//!
//! #[derive(Debug, Clone)]
//! struct SendEmail {
//!     to: String,
//! }
//!
//! async fn send_email(job: SendEmail) -> Result<(), std::io::Error> {
//!     let _span = scout_std::instrument_kind("HTTP", "POST");
//!     Ok(())
//! }
//!
//! # async fn run() {
//! let _agent = scout_std::install(scout_std::Config::new().name("Worker").key("KEY").monitor(true));
//! let storage = MemoryStorage::<SendEmail>::new();
//! let worker = WorkerBuilder::new("mailer")
//!     .backend(storage)
//!     .layer(ScoutJobLayer::named("SendEmail")) // Job/SendEmail
//!     .build(send_email);
//! worker.run().await.unwrap();
//! # }
//! ```

use super::job::Job;
use apalis_core::task::Task;
use apalis_core::task::metadata::{Metadata, MetadataError, MetadataStore};
use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tower_layer::Layer;
use tower_service::Service;

/// The metadata key holding the enqueue time (epoch timestamp; seconds, milliseconds,
/// microseconds or nanoseconds, unit guessed by magnitude).
pub const ENQUEUED_AT_KEY: &str = "scout_enqueued_at";

/// The enqueue time of a task, stored in its metadata under [`ENQUEUED_AT_KEY`] as epoch
/// nanoseconds: `TaskBuilder::new(args).metadata(&EnqueuedAt::now())` when pushing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EnqueuedAt(pub SystemTime);

impl EnqueuedAt {
    /// Now.
    pub fn now() -> Self {
        Self(SystemTime::now())
    }
}

impl Metadata for EnqueuedAt {
    type Error = MetadataError;
    fn extract(store: &MetadataStore) -> Result<Self, MetadataError> {
        let ns = store
            .get(ENQUEUED_AT_KEY)
            .and_then(|v| super::web::ambiguous_timestamp_ns(v, super::web::now_ns()))
            .and_then(|ns| u64::try_from(ns).ok())
            .unwrap_or(0);
        Ok(Self(UNIX_EPOCH + Duration::from_nanos(ns)))
    }
    fn inject(&self, store: &mut MetadataStore) -> Result<(), MetadataError> {
        let ns = self
            .0
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        store.insert(ENQUEUED_AT_KEY, ns.to_string())
    }
}

/// Records each task as `Job/<name>` (see the [module documentation](self)).
#[derive(Clone, Default)]
pub struct ScoutJobLayer {
    name: Option<Arc<str>>,
}

impl fmt::Debug for ScoutJobLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScoutJobLayer")
            .field("name", &self.name)
            .finish()
    }
}

impl ScoutJobLayer {
    /// Names jobs after the task's argument type (`Job/my_app::jobs::SendEmail`).
    pub fn new() -> Self {
        Self::default()
    }
    /// Names jobs `Job/<name>`.
    pub fn named(name: &str) -> Self {
        Self {
            name: Some(name.into()),
        }
    }
}

impl<S> Layer<S> for ScoutJobLayer {
    type Service = ScoutJobService<S>;
    fn layer(&self, inner: S) -> ScoutJobService<S> {
        ScoutJobService {
            inner,
            name: self.name.clone(),
        }
    }
}

/// The service made by [`ScoutJobLayer`].
#[derive(Debug, Clone)]
pub struct ScoutJobService<S> {
    inner: S,
    name: Option<Arc<str>>,
}

fn enqueued_ns<Args>(task: &Task<Args>) -> Option<String> {
    let ctx = task.ctx();
    if let Some(v) = ctx.metadata().get(ENQUEUED_AT_KEY) {
        return Some(v.to_owned());
    }
    ctx.run_at().map(|s| s.to_string())
}

impl<S, Args> Service<Task<Args>> for ScoutJobService<S>
where
    S: Service<Task<Args>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = super::job::JobFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, task: Task<Args>) -> Self::Future {
        let name = match &self.name {
            Some(n) => Job::new(n),
            None => Job::new(std::any::type_name::<Args>()),
        };
        let mut job = name;
        let ctx = task.ctx();
        if let Some(id) = ctx.task_id() {
            job = job.tag("task_id", id.to_string().as_str());
        }
        if let Some(q) = ctx.queue() {
            job = job.tag("queue", q.as_ref());
        }
        job = job.tag("attempt", i64::try_from(ctx.attempt()).unwrap_or(i64::MAX));
        if let Some(p) = ctx.priority() {
            job = job.tag("priority", i64::try_from(p).unwrap_or(i64::MAX));
        }
        if let Some(t) = enqueued_ns(&task) {
            job = job.enqueued_at_timestamp(&t);
        }
        job.run(self.inner.call(task))
    }
}
