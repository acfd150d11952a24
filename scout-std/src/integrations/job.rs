//! Background jobs on tokio tasks and plain threads: `Job/<name>` requests with job tags,
//! `error` = `"true"` when the job returns an error or panics, and
//! `scout.job_queue_time_ns` when the caller knows when the job was enqueued.
//!
//! ```
//! use scout_std::integrations::job::Job;
//! use std::time::{Duration, SystemTime};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let enqueued = SystemTime::now() - Duration::from_millis(40);
//! // On a tokio task: the future is recorded as the job.
//! let handle = Job::new("SendInvoice")
//!     .tag("task_id", "8d1e")
//!     .tag("queue", "mailers")
//!     .enqueued_at(enqueued)
//!     .spawn(async {
//!         let _span = scout_std::instrument_kind("HTTP", "POST");
//!         Ok::<_, std::io::Error>(())
//!     });
//! handle.await.unwrap().unwrap();
//!
//! // On the current thread (a plain worker thread, or inside `spawn_blocking`).
//! let sum: Result<u64, String> = Job::new("Reindex").run_blocking(|| Ok(1 + 1));
//! assert_eq!(sum, Ok(2));
//! # }
//! ```
//!
//! A job started inside another transaction (e.g. awaited inside a request) joins that
//! request as a `Job/<name>` span instead of starting its own.

use super::web::{self, ambiguous_timestamp_ns, now_ns};
use super::{Apply, Tagged};
use crate::context::{FutureExt as _, Transaction, tag_request};
use scout_core::{RawJson, Value};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::SystemTime;

/// Whether a job's result counts as a failure (request tag `error`).
pub trait JobOutcome {
    /// True when the job failed.
    fn is_failure(&self) -> bool;
}

impl JobOutcome for () {
    fn is_failure(&self) -> bool {
        false
    }
}

impl<T, E> JobOutcome for Result<T, E> {
    fn is_failure(&self) -> bool {
        self.is_err()
    }
}

#[derive(Debug, Clone)]
enum OwnedValue {
    Str(Box<str>),
    Static(&'static str),
    Int(i64),
    Float(f64),
    Bool(bool),
    Null,
    Json(Box<str>),
}

impl OwnedValue {
    fn from_value(v: Value<'_>) -> Self {
        match v {
            Value::Str(s) => Self::Str(s.into()),
            Value::Static(s) => Self::Static(s),
            Value::Int(i) => Self::Int(i),
            Value::Float(f) => Self::Float(f),
            Value::Bool(b) => Self::Bool(b),
            Value::Null => Self::Null,
            Value::Json(j) => Self::Json(j.as_str().into()),
        }
    }

    fn as_value(&self) -> Value<'_> {
        match self {
            Self::Str(s) => Value::Str(s),
            Self::Static(s) => Value::Static(s),
            Self::Int(i) => Value::Int(*i),
            Self::Float(f) => Value::Float(*f),
            Self::Bool(b) => Value::Bool(*b),
            Self::Null => Value::Null,
            Self::Json(j) => RawJson::new(j).map_or(Value::Null, Value::Json),
        }
    }
}

/// When the job was enqueued.
#[derive(Debug, Clone, Copy)]
enum Enqueued {
    At(SystemTime),
    EpochNs(u128),
}

/// The request tags of a job, applied when it starts.
#[derive(Debug, Clone, Default)]
pub(crate) struct JobTags {
    tags: Vec<(Box<str>, OwnedValue)>,
    enqueued: Option<Enqueued>,
}

impl Apply for JobTags {
    fn apply(self) {
        for (k, v) in &self.tags {
            tag_request(k, v.as_value());
        }
        let queue_ns = match self.enqueued {
            Some(Enqueued::At(t)) => SystemTime::now()
                .duration_since(t)
                .ok()
                .map(|d| d.as_nanos()),
            Some(Enqueued::EpochNs(t)) => now_ns().checked_sub(t),
            None => None,
        };
        if let Some(q) = queue_ns {
            let q = i64::try_from(q).unwrap_or(i64::MAX);
            tag_request("scout.job_queue_time_ns", Value::Int(q));
        }
    }
}

/// A background job to run as `Job/<name>` (see the [module documentation](self)).
#[derive(Debug, Clone)]
#[must_use = "a Job does nothing until run or spawned"]
pub struct Job {
    name: Box<str>,
    tags: JobTags,
}

impl Job {
    /// A job named `Job/<name>`: use the task's name (low cardinality, no ids).
    pub fn new(name: &str) -> Self {
        Self {
            name: name.into(),
            tags: JobTags::default(),
        }
    }

    /// Adds a request tag (`task_id`, `queue`, `priority`, ...).
    pub fn tag<'a>(mut self, key: &str, value: impl Into<Value<'a>>) -> Self {
        self.tags
            .tags
            .push((key.into(), OwnedValue::from_value(value.into())));
        self
    }

    /// The time the job was enqueued: the job's request is tagged
    /// `scout.job_queue_time_ns` = start - `at` (not tagged if `at` is in the future).
    pub fn enqueued_at(mut self, at: SystemTime) -> Self {
        self.tags.enqueued = Some(Enqueued::At(at));
        self
    }

    /// The enqueue time as an epoch timestamp in seconds, milliseconds, microseconds or
    /// nanoseconds (unit guessed by magnitude, as Celery's `scout_task_start` header, spec
    /// §4.11). Ignored if it is not a timestamp.
    pub fn enqueued_at_timestamp(mut self, timestamp: &str) -> Self {
        if let Some(ns) = ambiguous_timestamp_ns(timestamp, now_ns()) {
            self.tags.enqueued = Some(Enqueued::EpochNs(ns));
        }
        self
    }

    /// Records `fut` as the job. The job's request is current whenever the future is polled,
    /// so spans recorded inside (and in what it awaits) belong to it.
    pub fn run<F>(self, fut: F) -> JobFuture<F>
    where
        F: Future,
        F::Output: JobOutcome,
    {
        let tagged = Tagged::new(fut, self.tags, <F::Output as JobOutcome>::is_failure);
        JobFuture {
            inner: tagged.background_transaction(&self.name),
        }
    }

    /// Spawns `fut` as the job on the current tokio runtime (panics outside one, as
    /// `tokio::spawn` does).
    pub fn spawn<F>(self, fut: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: JobOutcome + Send + 'static,
    {
        tokio::spawn(self.run(fut))
    }

    /// Runs `f` as the job on the current thread.
    pub fn run_blocking<R: JobOutcome>(self, f: impl FnOnce() -> R) -> R {
        let _tx = crate::context::background_transaction(&self.name);
        self.tags.apply();
        let panic_guard = TagOnPanic;
        let out = f();
        if out.is_failure() {
            web::tag_error();
        }
        drop(panic_guard);
        out
    }

    /// Runs `f` as the job on tokio's blocking thread pool.
    pub fn spawn_blocking<R, F>(self, f: F) -> tokio::task::JoinHandle<R>
    where
        F: FnOnce() -> R + Send + 'static,
        R: JobOutcome + Send + 'static,
    {
        tokio::task::spawn_blocking(move || self.run_blocking(f))
    }

    /// Runs `f` as the job on a new thread (named after the job).
    pub fn spawn_thread<R, F>(self, f: F) -> std::io::Result<std::thread::JoinHandle<R>>
    where
        F: FnOnce() -> R + Send + 'static,
        R: JobOutcome + Send + 'static,
    {
        std::thread::Builder::new()
            .name(format!("job {}", self.name))
            .spawn(move || self.run_blocking(f))
    }
}

/// Tags the current request `error` when dropped during a panic.
struct TagOnPanic;

impl Drop for TagOnPanic {
    fn drop(&mut self) {
        if std::thread::panicking() {
            web::tag_error();
        }
    }
}

pin_project_lite::pin_project! {
    /// The future of [`Job::run`].
    #[must_use = "futures do nothing unless polled"]
    #[derive(Debug)]
    pub struct JobFuture<F: Future> {
        #[pin]
        inner: Transaction<Tagged<F, JobTags>>,
    }
}

impl<F> Future for JobFuture<F>
where
    F: Future,
    F::Output: JobOutcome,
{
    type Output = F::Output;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        self.project().inner.poll(cx)
    }
}
