//! Framework integrations: one piece of configuration instruments a web app or a worker.
//!
//! | integration | cargo feature | what to add |
//! |---|---|---|
//! | [`tower`] (hyper, tonic, any `http` service) | `tower` | [`tower::ScoutLayer`] first, [`tower::ControllerLayer`] around the handler |
//! | [`axum`] | `axum` | [`axum::ScoutLayer`] with `.layer`, [`axum::ControllerLayer`] with `Router::route_layer` |
//! | [`actix_web`] | `actix-web` | `App::wrap(ScoutController)` first, `App::wrap(ScoutMiddleware)` last |
//! | [`job`] (tokio tasks, threads) | none | [`job::Job::run`], [`job::Job::spawn`], [`job::Job::run_blocking`] |
//! | [`apalis`] | `apalis` | [`apalis::ScoutJobLayer`] on the worker |
//!
//! Web requests are recorded as the Python agent records Django's: a `Middleware` root span
//! opened by the outermost layer, and inside it `Controller/<METHOD> <route template>` around
//! the handler, so the time spent in the application's own middleware shows as `Middleware`.
//! Requests that match no route (404s) are not reported. Request tags: `path` (query
//! parameters filtered), `user_ip`, `scout.queue_time_ns`, `error` on 5xx responses and
//! panics, `ignore_transaction` for the `ignore` path prefixes.
//!
//! Everything here is a pass-through costing one read of the agent slot when the agent is not
//! installed, never blocks, and never panics; a panic in the application still propagates
//! as it would without the agent (the request is tagged `error` first).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

/// The builder methods every web integration has for its setting overrides
/// (`collect_remote_ip`, `uri_reporting`, `ignore`), given the path to its
/// `Arc<web::Overrides>` field.
#[cfg(any(feature = "tower", feature = "actix-web"))]
macro_rules! override_builders {
    ($($field:ident).+) => {
        /// Overrides the `collect_remote_ip` setting (tag `user_ip`) here.
        #[must_use]
        pub fn collect_remote_ip(mut self, collect: bool) -> Self {
            std::sync::Arc::make_mut(&mut self.$($field).+).collect_remote_ip = Some(collect);
            self
        }
        /// Overrides the `uri_reporting` setting (query parameters in the `path` tag).
        #[must_use]
        pub fn uri_reporting(mut self, reporting: scout_core::config::UriReporting) -> Self {
            std::sync::Arc::make_mut(&mut self.$($field).+).uri_reporting = Some(reporting);
            self
        }
        /// Path prefixes (`/health`) whose requests are not recorded at all. (Paths under
        /// the `ignore` setting are recorded and tagged `ignore_transaction`, as in Python,
        /// and the sampler drops them.)
        #[must_use]
        pub fn ignore<I, P>(mut self, prefixes: I) -> Self
        where
            I: IntoIterator<Item = P>,
            P: Into<String>,
        {
            std::sync::Arc::make_mut(&mut self.$($field).+)
                .ignore
                .extend(prefixes.into_iter().map(Into::into));
            self
        }
    };
}

#[cfg(feature = "actix-web")]
pub mod actix_web;
#[cfg(feature = "apalis")]
pub mod apalis;
#[cfg(feature = "axum")]
pub mod axum;
pub mod job;
#[cfg(feature = "tower")]
pub mod tower;
pub mod web;

/// A handler's future recorded as the controller transaction of its request.
#[cfg(any(feature = "tower", feature = "actix-web"))]
type Recorded<F> = crate::context::Transaction<Tagged<F, ()>>;

#[cfg(any(feature = "tower", feature = "actix-web"))]
pin_project_lite::pin_project! {
    #[project = ControllerKindProj]
    enum ControllerKind<F: Future> {
        Bypass { #[pin] fut: F },
        Recorded { #[pin] fut: Recorded<F> },
    }
}

#[cfg(any(feature = "tower", feature = "actix-web"))]
pin_project_lite::pin_project! {
    /// The response future of the controller layers (tower's `ControllerService`, actix-web's
    /// `ScoutController`): the handler's future, recorded as the request's controller
    /// transaction or passed through untouched.
    pub struct ControllerFuture<F: Future> {
        #[pin]
        kind: ControllerKind<F>,
    }
}

#[cfg(any(feature = "tower", feature = "actix-web"))]
impl<F: Future> ControllerFuture<F> {
    pub(crate) fn bypass(fut: F) -> Self {
        Self {
            kind: ControllerKind::Bypass { fut },
        }
    }
    pub(crate) fn recorded(fut: Recorded<F>) -> Self {
        Self {
            kind: ControllerKind::Recorded { fut },
        }
    }
}

#[cfg(any(feature = "tower", feature = "actix-web"))]
impl<F: Future> std::fmt::Debug for ControllerFuture<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let recorded = matches!(self.kind, ControllerKind::Recorded { .. });
        f.debug_struct("ControllerFuture")
            .field("recorded", &recorded)
            .finish()
    }
}

#[cfg(any(feature = "tower", feature = "actix-web"))]
impl<F: Future> Future for ControllerFuture<F> {
    type Output = F::Output;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        match self.project().kind.project() {
            ControllerKindProj::Bypass { fut } => fut.poll(cx),
            ControllerKindProj::Recorded { fut } => fut.poll(cx),
        }
    }
}

/// Something applied to the request once it is current (at the first poll).
pub(crate) trait Apply {
    fn apply(self);
}

impl Apply for () {
    fn apply(self) {}
}

pin_project_lite::pin_project! {
    /// Runs inside the request: applies the tags at the first poll and tags `error` when the
    /// output says the work failed.
    pub(crate) struct Tagged<F: Future, T> {
        #[pin]
        inner: F,
        tags: Option<T>,
        failed: fn(&F::Output) -> bool,
    }
}

impl<F: Future, T: Apply> Tagged<F, T> {
    pub(crate) fn new(inner: F, tags: T, failed: fn(&F::Output) -> bool) -> Self {
        Self {
            inner,
            tags: Some(tags),
            failed,
        }
    }
}

impl<F: Future, T: Apply> Future for Tagged<F, T> {
    type Output = F::Output;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        if let Some(t) = this.tags.take() {
            t.apply();
        }
        let out = std::task::ready!(this.inner.poll(cx));
        if (this.failed)(&out) {
            web::tag_error();
        }
        Poll::Ready(out)
    }
}
