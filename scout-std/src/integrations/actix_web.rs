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
use super::web::{self, Headers, Overrides, RequestView, ScoutHeaders, TagPlan};
use crate::context::{Transaction, begin};
use actix_web::HttpMessage as _;
use actix_web::dev::{Service, ServiceRequest, ServiceResponse, Transform};
use actix_web::http::header::HeaderMap;
use std::fmt;
use std::future::{Future, Ready, ready};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll};

impl Headers for HeaderMap {
    fn scout_headers(&self) -> ScoutHeaders<'_> {
        let header = |name: &str| self.get(name).and_then(|v| v.to_str().ok());
        ScoutHeaders {
            x_forwarded_for: header("x-forwarded-for"),
            client_ip: header("client-ip"),
            x_queue_start: header("x-queue-start"),
            x_request_start: header("x-request-start"),
        }
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

/// Sets the request tags of `req` on the current request.
fn tag_current(req: &ServiceRequest, plan: &TagPlan) {
    let view = RequestView {
        path: req.path(),
        query: Some(req.query_string()).filter(|q| !q.is_empty()),
        path_and_query: req.uri().path_and_query().map(|p| p.as_str()),
        headers: req.headers().scout_headers(),
    };
    web::tag_current(plan, &view, || req.peer_addr().map(|a| a.ip()));
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
        override_builders!(overrides);
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
        let Some((agent, plan)) = self.overrides.plan(req.path()) else {
            return MiddlewareFuture {
                kind: MwKind::Bypass {
                    fut: self.service.call(req),
                },
            };
        };
        req.extensions_mut().insert(Marker::TagsSet);
        // The request begins now and is current while the inner services are called, so that
        // work the application's middleware does in `call` itself is recorded as `Middleware`.
        let mut begun = begin(&["Middleware"], false, Some(agent));
        let fut = {
            let _current = begun.enter();
            tag_current(&req, &plan);
            self.service.call(req)
        };
        let fut = begun.into_transaction(Tagged::new(fut, (), failed::<B>));
        MiddlewareFuture {
            kind: MwKind::Recorded { fut },
        }
    }
}

pin_project_lite::pin_project! {
    #[project = MwKindProj]
    enum MwKind<S: Service<ServiceRequest>> {
        Bypass { #[pin] fut: S::Future },
        Recorded { #[pin] fut: Transaction<Tagged<S::Future, ()>> },
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
        let plan = if marker == Some(Marker::Skip) {
            return ActixFuture::bypass(self.service.call(req));
        } else if marker == Some(Marker::TagsSet) {
            None
        } else if self.overrides.skips(req.path()) {
            return ActixFuture::bypass(self.service.call(req));
        } else {
            match self.overrides.plan(req.path()) {
                Some(p) => Some(p),
                None => return ActixFuture::bypass(self.service.call(req)),
            }
        };
        let (agent, plan) = match plan {
            Some((agent, plan)) => (Some(agent), Some(plan)),
            None => (None, None),
        };
        let mut begun = match req.match_pattern() {
            Some(pattern) => begin(
                &["Controller/", req.method().as_str(), " ", &pattern],
                true,
                agent,
            ),
            None => return ActixFuture::bypass(self.service.call(req)),
        };
        let fut = {
            let _current = begun.enter();
            if let Some(plan) = &plan {
                tag_current(&req, plan);
            }
            self.service.call(req)
        };
        ActixFuture::recorded(begun.into_transaction(Tagged::new(fut, (), failed::<B>)))
    }
}

/// The response future of [`ScoutControllerService`].
pub type ActixFuture<F> = super::ControllerFuture<F>;
