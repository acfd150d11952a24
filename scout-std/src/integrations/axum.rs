//! Axum (feature `axum`): the [tower layers](super::tower), with endpoint names from the
//! matched route template (`Controller/GET /users/{id}`).
//!
//! Add [`ScoutLayer`] with `Router::layer` (last, so it runs first) and [`ControllerLayer`]
//! with `Router::route_layer` (so it runs only for matched routes, where `MatchedPath` is
//! known). Routes added after `route_layer` are not instrumented, so call it after the last
//! `route`. Unmatched requests (404s) are not reported. For the `user_ip` fallback to the
//! peer address, serve with `into_make_service_with_connect_info::<SocketAddr>()`.
//!
//! ```no_run
//! use axum::{Router, extract::Path, routing::get};
//! use scout_std::integrations::axum::{ControllerLayer, ScoutLayer};
//! use std::net::SocketAddr;
//!
//! async fn show_user(Path(id): Path<u64>) -> String {
//!     let _span = scout_std::instrument_kind("SQL", "Query");
//!     format!("user {id}")
//! }
//!
//! # async fn run() -> std::io::Result<()> {
//! let _agent = scout_std::install(scout_std::Config::new().name("My App").key("KEY").monitor(true));
//! let app = Router::new()
//!     .route("/users/{id}", get(show_user))
//!     .route_layer(ControllerLayer::new()) // around the handlers: Controller/GET /users/{id}
//!     // .layer(your own middleware): its time shows as `Middleware`
//!     .layer(ScoutLayer::new()); // outermost: the `Middleware` root span and request tags
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
//! axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>()).await
//! # }
//! ```

pub use super::tower::{
    ControllerLayer, ControllerService, PeerAddr, ResponseFuture, RouteInfo, ScoutFuture,
    ScoutLayer, ScoutService,
};
