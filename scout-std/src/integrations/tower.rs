//! Tower layers for any `http` service: axum, hyper and tonic servers (feature `tower`).
//!
//! * [`ScoutLayer`], placed first (outermost), opens the request with a `Middleware` root
//!   span and sets the request tags (`path`, `user_ip`, `scout.queue_time_ns`, `error` on 5xx,
//!   panics and gRPC server-error statuses, `ignore_transaction`).
//! * [`ControllerLayer`], placed around the handler, opens `Controller/<METHOD> <route>`
//!   inside it. Used alone, it starts the request itself (with the same tags).
//!
//! A request in which no controller starts (no route matched, a 404) is not reported.
//!
//! gRPC errors come as HTTP 200 with a `grpc-status`: for gRPC requests the layers tag `error`
//! when the response headers carry a server-side code (UNKNOWN, DEADLINE_EXCEEDED,
//! UNIMPLEMENTED, INTERNAL, UNAVAILABLE, DATA_LOSS, as OpenTelemetry counts them), which is how
//! tonic answers a failed unary call. A status in trailers after a body (streaming) is not seen. The
//! route name comes from axum's `MatchedPath` (feature `axum`), the gRPC method path for
//! tonic (`Controller/helloworld.Greeter/SayHello`), or [`ControllerLayer::name_with`].
//!
//! A hyper server with a hand-written router:
//!
//! ```
//! use scout_std::integrations::tower::{ControllerLayer, ScoutLayer};
//! use tower_layer::Layer;
//!
//! # #[derive(Clone)] struct MyRouter;
//! # let my_router = MyRouter;
//! // `ScoutLayer` first, then the application's own middleware, then `ControllerLayer`.
//! let controller = ControllerLayer::new().name_with(|route| {
//!     // Low-cardinality names only: a template, never the raw path.
//!     route.uri.path().starts_with("/users/").then(|| "GET /users/{id}".to_owned())
//! });
//! let service = ScoutLayer::new()
//!     .collect_remote_ip(true)
//!     .layer(controller.layer(my_router));
//! # let _ = service;
//! ```
//!
//! For tonic, add the layers to the server builder; gRPC requests are named by method:
//!
//! ```ignore
//! tonic::transport::Server::builder()
//!     .layer(ScoutLayer::new().peer_ip(|ext| {
//!         ext.get::<tonic::transport::server::TcpConnectInfo>()?.remote_addr().map(|a| a.ip())
//!     }))
//!     .layer(ControllerLayer::new())
//!     .add_service(my_grpc_service)
//!     .serve(addr)
//! ```

use super::Tagged;
use super::web::{self, Headers, Overrides, RequestView, ScoutHeaders, TagPlan};
use crate::agent::Shared;
use crate::context::{Transaction, begin, in_request};
use http::header::CONTENT_TYPE;
use http::{Extensions, HeaderMap, Method, Request, Response, Uri};
use std::fmt;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tower_layer::Layer;
use tower_service::Service;

/// The client's address, for servers that do not record one in the request extensions
/// themselves: insert it (`request.extensions_mut().insert(PeerAddr(addr))`) before the
/// layers run and the `user_ip` tag falls back to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerAddr(pub SocketAddr);

/// Reads the client's IP from the request extensions (see [`ScoutLayer::peer_ip`]).
pub type PeerIpFn = fn(&Extensions) -> Option<IpAddr>;

/// The default [`PeerIpFn`]: [`PeerAddr`], axum's `ConnectInfo<SocketAddr>` (feature `axum`),
/// or a bare `SocketAddr` extension.
pub fn default_peer_ip(ext: &Extensions) -> Option<IpAddr> {
    if let Some(p) = ext.get::<PeerAddr>() {
        return Some(p.0.ip());
    }
    #[cfg(feature = "axum")]
    if let Some(c) = ext.get::<::axum::extract::ConnectInfo<SocketAddr>>() {
        return Some(c.0.ip());
    }
    ext.get::<SocketAddr>().map(|a| a.ip())
}

/// Set by the outer layer for the controller layer: the path is ignored, record nothing.
/// (When the outer layer records the request, the controller runs inside it: `in_request`.)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Skip;

impl Headers for HeaderMap {
    fn scout_headers(&self) -> ScoutHeaders<'_> {
        // One pass over the headers instead of four hashed lookups; the first value of each
        // name wins, as with `get`.
        let mut h = ScoutHeaders::default();
        for (name, value) in self {
            let slot = match name.as_str() {
                "x-forwarded-for" => &mut h.x_forwarded_for,
                "client-ip" => &mut h.client_ip,
                "x-queue-start" => &mut h.x_queue_start,
                "x-request-start" => &mut h.x_request_start,
                _ => continue,
            };
            if slot.is_none() {
                // A value that is not visible ASCII counts as absent (empty).
                *slot = Some(value.to_str().unwrap_or(""));
            }
        }
        h
    }
}

/// The request URI as the client sent it (axum's `OriginalUri` when nested).
fn original_uri<B>(req: &Request<B>) -> &Uri {
    #[cfg(feature = "axum")]
    if let Some(o) = req.extensions().get::<::axum::extract::OriginalUri>() {
        return &o.0;
    }
    req.uri()
}

/// Sets the request tags of `req` on the current request.
fn tag_current<B>(req: &Request<B>, plan: &TagPlan, peer_ip: PeerIpFn) {
    let uri = original_uri(req);
    let view = RequestView {
        path: uri.path(),
        query: uri.query(),
        path_and_query: uri.path_and_query().map(|p| p.as_str()),
        headers: req.headers().scout_headers(),
    };
    web::tag_current(plan, &view, || peer_ip(req.extensions()));
}

/// gRPC requests (always `POST`, `content-type: application/grpc...`).
fn is_grpc<B>(req: &Request<B>) -> bool {
    req.method() == Method::POST
        && req
            .headers()
            .get(CONTENT_TYPE)
            .is_some_and(|c| c.as_bytes().starts_with(b"application/grpc"))
}

/// gRPC status codes counted as errors: the server's failures (UNKNOWN, DEADLINE_EXCEEDED,
/// UNIMPLEMENTED, INTERNAL, UNAVAILABLE, DATA_LOSS), as OpenTelemetry's gRPC server
/// conventions count them; the other codes are the client's doing.
fn grpc_error_status(status: &[u8]) -> bool {
    matches!(status, b"2" | b"4" | b"12" | b"13" | b"14" | b"15")
}

/// For gRPC: a 5xx, or an error `grpc-status` in the response headers (a trailers-only
/// response, which is how servers answer a unary call with an error status).
fn grpc_failed<B, E>(r: &Result<Response<B>, E>) -> bool {
    r.as_ref().map_or(true, |r| {
        r.status().is_server_error()
            || r.headers()
                .get("grpc-status")
                .is_some_and(|s| grpc_error_status(s.as_bytes()))
    })
}

fn failed_fn<B, RB, E>(req: &Request<B>) -> fn(&Result<Response<RB>, E>) -> bool {
    if is_grpc(req) {
        grpc_failed::<RB, E>
    } else {
        http_failed::<RB, E>
    }
}

#[derive(Clone)]
struct Settings {
    overrides: Arc<Overrides>,
    peer_ip: PeerIpFn,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            overrides: Arc::default(),
            peer_ip: default_peer_ip,
        }
    }
}

impl fmt::Debug for Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Settings")
            .field("overrides", &self.overrides)
            .finish_non_exhaustive()
    }
}

impl Settings {
    /// The installed agent and the tag settings for `req`; `None` when the agent is not
    /// installed.
    fn plan<B>(&self, req: &Request<B>) -> Option<(Arc<Shared>, TagPlan)> {
        self.overrides.plan(original_uri(req).path())
    }
}

macro_rules! settings_builder {
    () => {
        override_builders!(settings.overrides);
        /// How to find the client's IP in the request extensions when no `X-Forwarded-For`
        /// or `Client-IP` header gives it (default [`default_peer_ip`]).
        #[must_use]
        pub fn peer_ip(mut self, f: PeerIpFn) -> Self {
            self.settings.peer_ip = f;
            self
        }
    };
}

/// The outermost layer: a `Middleware` root span and the request tags (see the
/// [module documentation](self)). The settings default to the installed agent's.
#[derive(Debug, Clone, Default)]
pub struct ScoutLayer {
    settings: Settings,
}

impl ScoutLayer {
    /// The layer with the agent's settings.
    pub fn new() -> Self {
        Self::default()
    }
    settings_builder!();
}

impl<S> Layer<S> for ScoutLayer {
    type Service = ScoutService<S>;
    fn layer(&self, inner: S) -> ScoutService<S> {
        ScoutService {
            inner,
            settings: self.settings.clone(),
        }
    }
}

/// The service made by [`ScoutLayer`].
#[derive(Debug, Clone)]
pub struct ScoutService<S> {
    inner: S,
    settings: Settings,
}

fn http_failed<B, E>(r: &Result<Response<B>, E>) -> bool {
    r.as_ref().map_or(true, |r| r.status().is_server_error())
}

impl<S, B, RB> Service<Request<B>> for ScoutService<S>
where
    S: Service<Request<B>, Response = Response<RB>> + Clone,
{
    type Response = Response<RB>;
    type Error = S::Error;
    type Future = ScoutFuture<S, Request<B>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        if !crate::agent::installed() {
            return ScoutFuture::bypass(self.inner.call(req));
        }
        if self.settings.overrides.skips(req.uri().path()) {
            req.extensions_mut().insert(Skip);
            return ScoutFuture::bypass(self.inner.call(req));
        }
        let Some((agent, plan)) = self.settings.plan(&req) else {
            return ScoutFuture::bypass(self.inner.call(req));
        };
        let failed = failed_fn::<B, RB, S::Error>(&req);
        let peer_ip = self.settings.peer_ip;
        // The request begins now and is current while the inner services are called, so that
        // work they do in `call` itself is recorded too, and the controller layer knows it
        // runs inside a request. The request tags are set first, borrowing from the request.
        let mut begun = begin(&["Middleware"], false, Some(agent));
        let fut = {
            let _current = begun.enter();
            tag_current(&req, &plan, peer_ip);
            self.inner.call(req)
        };
        let fut = begun.into_transaction(Tagged::new(fut, (), failed));
        ScoutFuture {
            kind: ScoutKind::Recorded { fut },
        }
    }
}

pin_project_lite::pin_project! {
    #[project = ScoutKindProj]
    enum ScoutKind<S: Service<Req>, Req> {
        Bypass { #[pin] fut: S::Future },
        Recorded { #[pin] fut: Transaction<Tagged<S::Future, ()>> },
    }
}

pin_project_lite::pin_project! {
    /// The response future of [`ScoutService`].
    pub struct ScoutFuture<S: Service<Req>, Req> {
        #[pin]
        kind: ScoutKind<S, Req>,
    }
}

impl<S: Service<Req>, Req> ScoutFuture<S, Req> {
    fn bypass(fut: S::Future) -> Self {
        Self {
            kind: ScoutKind::Bypass { fut },
        }
    }
}

impl<S: Service<Req>, Req> fmt::Debug for ScoutFuture<S, Req> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let recorded = matches!(self.kind, ScoutKind::Recorded { .. });
        f.debug_struct("ScoutFuture")
            .field("recorded", &recorded)
            .finish()
    }
}

impl<S, Req, RB> Future for ScoutFuture<S, Req>
where
    S: Service<Req, Response = Response<RB>>,
{
    type Output = Result<Response<RB>, S::Error>;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            ScoutKindProj::Bypass { fut } => fut.poll(cx),
            ScoutKindProj::Recorded { fut } => fut.poll(cx),
        }
    }
}

/// What [`ControllerLayer::name_with`] sees of a request.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct RouteInfo<'a> {
    /// The HTTP method.
    pub method: &'a Method,
    /// The request URI (as the inner service sees it).
    pub uri: &'a Uri,
    /// The request headers.
    pub headers: &'a HeaderMap,
    /// The request extensions (e.g. a router's matched route).
    pub extensions: &'a Extensions,
}

type NameFn = dyn Fn(&RouteInfo<'_>) -> Option<String> + Send + Sync;

#[derive(Clone, Default)]
enum Naming {
    #[default]
    Auto,
    Path,
    Custom(Arc<NameFn>),
}

/// Route name from the request: axum's matched route template (`GET /users/{id}`), or the
/// gRPC method (`helloworld.Greeter/SayHello`); `None` when neither is known.
pub fn auto_route_name(route: &RouteInfo<'_>) -> Option<String> {
    #[cfg(feature = "axum")]
    if let Some(m) = route.extensions.get::<::axum::extract::MatchedPath>() {
        return Some(format!("{} {}", route.method, m.as_str()));
    }
    let grpc = *route.method == Method::POST
        && route
            .headers
            .get(CONTENT_TYPE)
            .is_some_and(|c| c.as_bytes().starts_with(b"application/grpc"));
    if grpc {
        let p = route.uri.path().trim_start_matches('/');
        return (!p.is_empty()).then(|| p.to_owned());
    }
    None
}

/// The layer around the handler: `Controller/<name>` (see the [module documentation](self)).
#[derive(Clone, Default)]
pub struct ControllerLayer {
    settings: Settings,
    naming: Naming,
}

impl fmt::Debug for ControllerLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let naming = match self.naming {
            Naming::Auto => "auto",
            Naming::Path => "path",
            Naming::Custom(_) => "custom",
        };
        f.debug_struct("ControllerLayer")
            .field("settings", &self.settings)
            .field("naming", &naming)
            .finish()
    }
}

impl ControllerLayer {
    /// Names controllers with [`auto_route_name`]; requests it cannot name are not recorded.
    pub fn new() -> Self {
        Self::default()
    }
    /// Names controllers `<METHOD> <path>` from the raw path. Only for services whose paths
    /// are few and fixed (no ids in them): each distinct name is a separate endpoint.
    #[must_use]
    pub fn name_from_path(mut self) -> Self {
        self.naming = Naming::Path;
        self
    }
    /// Names controllers with `f` (`None`: not a route, not recorded). Names should be low
    /// cardinality: route templates, not paths with ids.
    #[must_use]
    pub fn name_with(
        mut self,
        f: impl Fn(&RouteInfo<'_>) -> Option<String> + Send + Sync + 'static,
    ) -> Self {
        self.naming = Naming::Custom(Arc::new(f));
        self
    }
    settings_builder!();

    #[cfg(test)]
    fn name<B>(&self, req: &Request<B>) -> Option<String> {
        self.with_name(req, |parts| parts.concat()[CONTROLLER.len()..].to_owned())
    }

    /// Calls `f` with the operation of `req` in parts (`Controller/`, method, ` `, route:
    /// copied into the request without an intermediate string); `None` when the request is
    /// not named.
    fn with_name<B, R>(&self, req: &Request<B>, f: impl FnOnce(&[&str]) -> R) -> Option<R> {
        match &self.naming {
            Naming::Auto => {
                #[cfg(feature = "axum")]
                if let Some(m) = req.extensions().get::<::axum::extract::MatchedPath>() {
                    return Some(f(&[CONTROLLER, req.method().as_str(), " ", m.as_str()]));
                }
                if is_grpc(req) {
                    let p = req.uri().path().trim_start_matches('/');
                    return (!p.is_empty()).then(|| f(&[CONTROLLER, p]));
                }
                None
            }
            Naming::Path => Some(f(&[
                CONTROLLER,
                req.method().as_str(),
                " ",
                req.uri().path(),
            ])),
            Naming::Custom(custom) => {
                let route = RouteInfo {
                    method: req.method(),
                    uri: req.uri(),
                    headers: req.headers(),
                    extensions: req.extensions(),
                };
                custom(&route).map(|n| f(&[CONTROLLER, &n]))
            }
        }
    }
}

const CONTROLLER: &str = "Controller/";

impl<S> Layer<S> for ControllerLayer {
    type Service = ControllerService<S>;
    fn layer(&self, inner: S) -> ControllerService<S> {
        ControllerService {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service made by [`ControllerLayer`].
#[derive(Debug, Clone)]
pub struct ControllerService<S> {
    inner: S,
    layer: ControllerLayer,
}

impl<S, B, RB> Service<Request<B>> for ControllerService<S>
where
    S: Service<Request<B>, Response = Response<RB>>,
{
    type Response = Response<RB>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let settings = &self.layer.settings;
        // Inside a request (a ScoutLayer's) this layer only opens the controller span; outside
        // one it starts the request and sets the request tags itself.
        let plan = if in_request() {
            None
        } else if !crate::agent::installed()
            || req.extensions().get::<Skip>().is_some()
            || settings.overrides.skips(req.uri().path())
        {
            return ResponseFuture::bypass(self.inner.call(req));
        } else {
            match settings.plan(&req) {
                Some(p) => Some(p),
                None => return ResponseFuture::bypass(self.inner.call(req)),
            }
        };
        let (agent, plan) = match plan {
            Some((agent, plan)) => (Some(agent), Some(plan)),
            None => (None, None),
        };
        let Some(mut begun) = self.layer.with_name(&req, |op| begin(op, true, agent)) else {
            return ResponseFuture::bypass(self.inner.call(req));
        };
        let failed = failed_fn::<B, RB, S::Error>(&req);
        let peer_ip = settings.peer_ip;
        let fut = {
            let _current = begun.enter();
            if let Some(plan) = &plan {
                tag_current(&req, plan, peer_ip);
            }
            self.inner.call(req)
        };
        ResponseFuture::recorded(begun.into_transaction(Tagged::new(fut, (), failed)))
    }
}

/// The response future of [`ControllerService`].
pub type ResponseFuture<F> = super::ControllerFuture<F>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_and_custom_names() {
        let req = Request::post("/helloworld.Greeter/SayHello")
            .header("content-type", "application/grpc+proto")
            .body(())
            .unwrap();
        let l = ControllerLayer::new();
        assert_eq!(l.name(&req).as_deref(), Some("helloworld.Greeter/SayHello"));
        let plain = Request::get("/users/7").body(()).unwrap();
        assert_eq!(l.name(&plain), None, "no route template: not recorded");
        let l = ControllerLayer::new().name_from_path();
        assert_eq!(l.name(&plain).as_deref(), Some("GET /users/7"));
        let l = ControllerLayer::new().name_with(|r| Some(format!("{} x", r.method)));
        assert_eq!(l.name(&plain).as_deref(), Some("GET x"));
    }

    #[test]
    fn grpc_error_statuses() {
        let with = |s: &str| {
            Ok::<_, ()>(
                Response::builder()
                    .header("grpc-status", s)
                    .body(())
                    .unwrap(),
            )
        };
        for (status, error) in [("0", false), ("5", false), ("3", false), ("13", true)] {
            assert_eq!(grpc_failed(&with(status)), error, "{status}");
        }
        for s in ["2", "4", "12", "14", "15"] {
            assert!(grpc_failed(&with(s)), "{s}");
        }
        assert!(!grpc_failed(&Ok::<_, ()>(Response::new(()))));
        assert!(grpc_failed(&Err::<Response<()>, ()>(())));
        let get = Request::get("/x")
            .header("content-type", "application/grpc")
            .body(())
            .unwrap();
        assert!(!is_grpc(&get), "gRPC is always POST");
    }

    #[test]
    fn one_pass_header_scan() {
        let mut h = HeaderMap::new();
        h.append("X-Forwarded-For", "203.0.113.5".parse().unwrap());
        h.append("x-forwarded-for", "198.51.100.1".parse().unwrap());
        h.insert("client-ip", http::HeaderValue::from_bytes(b"\xff").unwrap());
        h.insert("x-request-start", "t=1".parse().unwrap());
        let s = h.scout_headers();
        assert_eq!(
            s.x_forwarded_for,
            Some("203.0.113.5"),
            "the first value, as `get`"
        );
        assert_eq!(
            s.client_ip,
            Some(""),
            "not visible ASCII: empty, never used"
        );
        assert_eq!(s.x_queue_start, None);
        assert_eq!(s.queue_start(), Some("t=1"));
    }

    #[test]
    fn peer_ip_sources() {
        let mut e = Extensions::new();
        assert_eq!(default_peer_ip(&e), None);
        e.insert("10.0.0.2:80".parse::<SocketAddr>().unwrap());
        assert_eq!(default_peer_ip(&e), Some("10.0.0.2".parse().unwrap()));
        e.insert(PeerAddr("[::1]:80".parse().unwrap()));
        assert_eq!(default_peer_ip(&e), Some("::1".parse().unwrap()));
    }
}
