//! An axum app instrumented with Scout: `cargo run -p scout-examples --example axum_app`.
//!
//! Settings come from `SCOUT_*` variables: `SCOUT_MONITOR=true`, `SCOUT_KEY=...`,
//! `SCOUT_NAME="My App"`. Try `curl localhost:3000/users/7?token=x` and `/slow`.

use axum::Router;
use axum::extract::{Path, Request};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::get;
use scout_std::FutureExt;
use scout_std::integrations::axum::{ControllerLayer, ScoutLayer};
use std::net::SocketAddr;
use std::time::Duration;

async fn show_user(Path(id): Path<u64>) -> String {
    scout_std::Context::add("user_id", i64::try_from(id).unwrap_or(-1));
    async { tokio::time::sleep(Duration::from_millis(3)).await }
        .instrument_kind("SQL", "Query")
        .await;
    format!("user {id}\n")
}

async fn slow() -> &'static str {
    tokio::time::sleep(Duration::from_millis(600)).await;
    "slow\n"
}

/// The application's own middleware: shows as `Middleware` time in Scout.
async fn auth(req: Request, next: Next) -> Response {
    next.run(req).await
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let _agent = scout_std::install(scout_std::Config::new().name("Axum example"));
    let app = Router::new()
        .route("/users/{id}", get(show_user))
        .route("/slow", get(slow))
        .route_layer(ControllerLayer::new())
        .layer(middleware::from_fn(auth))
        .layer(ScoutLayer::new());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
    println!("listening on http://127.0.0.1:3000");
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .await
}
