//! Actix-web middleware (feature `actix-web`), with the behaviour and names of the
//! [tower layers](super::tower): [`ScoutMiddleware`] opens the request with a `Middleware`
//! root span and sets the request tags; [`ScoutController`] opens
//! `Controller/<METHOD> <resource pattern>` (`Controller/GET /users/{id}`). Requests that
//! match no resource (404s, default services) are not reported. [`ScoutController`] alone
//! starts the request itself, with the same tags.
//!
//! `App::wrap` runs the middleware registered last first: wrap [`ScoutController`] first and
//! [`ScoutMiddleware`] last, with the application's own middleware in between.
//!
//! ```no_run
//! use actix_web::{App, HttpServer, web};
//! use scout_std::integrations::actix_web::{ScoutController, ScoutMiddleware};
//!
//! async fn show_user(id: web::Path<u64>) -> String {
//!     let _span = scout_std::instrument_kind("SQL", "Query");
//!     format!("user {id}")
//! }
//!
//! # async fn run() -> std::io::Result<()> {
//! let _agent = scout_std::install(scout_std::Config::new().name("My App").key("KEY").monitor(true));
//! HttpServer::new(|| {
//!     App::new()
//!         .wrap(ScoutController::new()) // innermost: Controller/GET /users/{id}
//!         // .wrap(your own middleware): its time shows as `Middleware`
//!         .wrap(ScoutMiddleware::new()) // outermost: `Middleware` root span, request tags
//!         .route("/users/{id}", web::get().to(show_user))
//! })
//! .bind(("127.0.0.1", 8080))?
//! .run()
//! .await
//! # }
//! ```

use super::Tagged;
use super::web::{Headers, Overrides, RequestTags};
use crate::context::{FutureExt as _, Transaction, request_scope};
use actix_web::HttpMessage as _;
use actix_web::dev::{Service, ServiceRequest, ServiceResponse, Transform};
use actix_web::http::header::HeaderMap;
use scout_core::config::UriReporting;
use std::fmt;
use std::future::{Future, Ready, ready};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll};

impl Headers for HeaderMap {
    fn header(&self, name: &str) -> Option<&str> {
        self.get(name).and_then(|v| v.to_str().ok())
    }
}

/// What [`ScoutMiddleware`] decided, for [`ScoutController`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Marker {
    /// The request is recorded and its tags are set.
    TagsSet,
    /// The path is ignored: record nothing.
    Skip,
}

fn tags(o: &Arc<Overrides>, req: &ServiceRequest) -> Option<RequestTags> {
    let query = Some(req.query_string()).filter(|q| !q.is_empty());
    RequestTags::compute(o, req.path(), query, req.headers(), || {
        req.peer_addr().map(|a| a.ip())
    })
}

fn failed<B>(r: &Result<ServiceResponse<B>, actix_web::Error>) -> bool {
    r.as_ref().map_or(true, |r| r.status().is_server_error())
}

macro_rules! settings_builder {
    () => {
        /// The middleware with the installed agent's settings.
        pub fn new() -> Self {
            Self::default()
        }
        /// Overrides the `collect_remote_ip` setting (tag `user_ip`).
        #[must_use]
        pub fn collect_remote_ip(mut self, collect: bool) -> Self {
            Arc::make_mut(&mut self.overrides).collect_remote_ip = Some(collect);
            self
        }
        /// Overrides the `uri_reporting` setting (query parameters in the `path` tag).
        #[must_use]
        pub fn uri_reporting(mut self, reporting: UriReporting) -> Self {
            Arc::make_mut(&mut self.overrides).uri_reporting = Some(reporting);
            self
        }
        /// Path prefixes whose requests are not recorded at all (paths under the `ignore`
        /// setting are tagged `ignore_transaction` instead, as in Python).
        #[must_use]
        pub fn ignore<I, P>(mut self, prefixes: I) -> Self
        where
            I: IntoIterator<Item = P>,
            P: Into<String>,
        {
            Arc::make_mut(&mut self.overrides)
                .ignore
                .extend(prefixes.into_iter().map(Into::into));
            self
        }
    };
}

/// The outermost middleware: `Middleware` root span and request tags.
#[derive(Debug, Clone, Default)]
pub struct ScoutMiddleware {
    overrides: Arc<Overrides>,
}

impl ScoutMiddleware {
    settings_builder!();
}

/// The middleware around the handler: `Controller/<METHOD> <resource pattern>`.
#[derive(Debug, Clone, Default)]
pub struct ScoutController {
    overrides: Arc<Overrides>,
}

impl ScoutController {
    settings_builder!();
}

impl<S, B> Transform<S, ServiceRequest> for ScoutMiddleware
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error>,
{
    type Response = ServiceResponse<B>;
    type Error = actix_web::Error;
    type Transform = ScoutMiddlewareService<S>;
    type InitError = ();
    type Future = Ready<Result<Self::Transform, ()>>;

    fn new_transform(&self, service: S) -> Self::Future {
        ready(Ok(ScoutMiddlewareService {
            service: Rc::new(service),
            overrides: self.overrides.clone(),
        }))
    }
}

impl<S, B> Transform<S, ServiceRequest> for ScoutController
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error>,
{
    type Response = ServiceResponse<B>;
    type Error = actix_web::Error;
    type Transform = ScoutControllerService<S>;
    type InitError = ();
    type Future = Ready<Result<Self::Transform, ()>>;

    fn new_transform(&self, service: S) -> Self::Future {
        ready(Ok(ScoutControllerService {
            service,
            overrides: self.overrides.clone(),
        }))
    }
}

/// The service made by [`ScoutMiddleware`].
#[derive(Debug)]
pub struct ScoutMiddlewareService<S> {
    service: Rc<S>,
    overrides: Arc<Overrides>,
}

/// The service made by [`ScoutController`].
#[derive(Debug)]
pub struct ScoutControllerService<S> {
    service: S,
    overrides: Arc<Overrides>,
}

impl<S, B> Service<ServiceRequest> for ScoutMiddlewareService<S>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error>,
{
    type Response = ServiceResponse<B>;
    type Error = actix_web::Error;
    type Future = MiddlewareFuture<S>;

    actix_web::dev::forward_ready!(service);

    fn call(&self, req: ServiceRequest) -> Self::Future {
        if self.overrides.skips(req.path()) {
            req.extensions_mut().insert(Marker::Skip);
            return MiddlewareFuture {
                kind: MwKind::Bypass {
                    fut: self.service.call(req),
                },
            };
        }
        let Some(tags) = tags(&self.overrides, &req) else {
            return MiddlewareFuture {
                kind: MwKind::Bypass {
                    fut: self.service.call(req),
                },
            };
        };
        req.extensions_mut().insert(Marker::TagsSet);
        // The inner services are called at the first poll, inside the request, so that work
        // the application's middleware does in `call` itself is recorded as `Middleware`.
        let deferred = Deferred::Init {
            call: Some((self.service.clone(), req)),
        };
        let fut = Tagged::new(deferred, tags, failed::<B>);
        MiddlewareFuture {
            kind: MwKind::Recorded {
                fut: request_scope(fut, "Middleware"),
            },
        }
    }
}

pin_project_lite::pin_project! {
    /// Calls the service at the first poll.
    #[project = DeferredProj]
    enum Deferred<S: Service<ServiceRequest>> {
        Init { call: Option<(Rc<S>, ServiceRequest)> },
        Running { #[pin] fut: S::Future },
    }
}

impl<S: Service<ServiceRequest>> Future for Deferred<S> {
    type Output = Result<S::Response, S::Error>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        loop {
            match self.as_mut().project() {
                DeferredProj::Init { call } => {
                    let Some((svc, req)) = call.take() else {
                        return Poll::Pending;
                    };
                    let fut = svc.call(req);
                    self.set(Self::Running { fut });
                }
                DeferredProj::Running { fut } => return fut.poll(cx),
            }
        }
    }
}

pin_project_lite::pin_project! {
    #[project = MwKindProj]
    enum MwKind<S: Service<ServiceRequest>> {
        Bypass { #[pin] fut: S::Future },
        Recorded { #[pin] fut: Transaction<Tagged<Deferred<S>, RequestTags>> },
    }
}

pin_project_lite::pin_project! {
    /// The response future of [`ScoutMiddlewareService`].
    pub struct MiddlewareFuture<S: Service<ServiceRequest>> {
        #[pin]
        kind: MwKind<S>,
    }
}

impl<S: Service<ServiceRequest>> fmt::Debug for MiddlewareFuture<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let recorded = matches!(self.kind, MwKind::Recorded { .. });
        f.debug_struct("MiddlewareFuture")
            .field("recorded", &recorded)
            .finish()
    }
}

impl<S, B> Future for MiddlewareFuture<S>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error>,
{
    type Output = Result<ServiceResponse<B>, actix_web::Error>;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            MwKindProj::Bypass { fut } => fut.poll(cx),
            MwKindProj::Recorded { fut } => fut.poll(cx),
        }
    }
}

impl<S, B> Service<ServiceRequest> for ScoutControllerService<S>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error>,
{
    type Response = ServiceResponse<B>;
    type Error = actix_web::Error;
    type Future = ActixFuture<S::Future>;

    actix_web::dev::forward_ready!(service);

    fn call(&self, req: ServiceRequest) -> Self::Future {
        let marker = req.extensions().get::<Marker>().copied();
        let tags = if marker == Some(Marker::Skip) {
            return ActixFuture::bypass(self.service.call(req));
        } else if marker == Some(Marker::TagsSet) {
            None
        } else if self.overrides.skips(req.path()) {
            return ActixFuture::bypass(self.service.call(req));
        } else {
            match tags(&self.overrides, &req) {
                Some(t) => Some(t),
                None => return ActixFuture::bypass(self.service.call(req)),
            }
        };
        let Some(pattern) = req.match_pattern() else {
            return ActixFuture::bypass(self.service.call(req));
        };
        let name = format!("{} {}", req.method(), pattern);
        let fut = Tagged::new(self.service.call(req), tags, failed::<B>);
        ActixFuture::recorded(fut.web_transaction(&name))
    }
}

/// The response future of [`ScoutControllerService`].
pub type ActixFuture<F> = super::ControllerFuture<F>;
