//! The axum integration against a real server on loopback and the local core agent: names
//! from route templates, Middleware > Controller > user spans, every request tag, 5xx and
//! panics, 404s and ignored paths not reported, 200 concurrent requests on a multi-thread
//! runtime, and the controller layer used alone.

mod support;

use axum::Router;
use axum::extract::{Path, Request};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::get;
use scout_std::FutureExt;
use scout_std::integrations::axum::{ControllerLayer, ScoutLayer};
use serde_json::json;
use std::net::SocketAddr;
use std::time::Duration;
use support::*;

async fn show_user(Path(id): Path<u64>) -> String {
    {
        let s = scout_std::instrument("Load user");
        s.tag("id", i64::try_from(id).unwrap());
    }
    async {
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(1)).await;
        scout_std::tag_span("db.statement", "SELECT * FROM users WHERE id = ?".into());
    }
    .instrument_kind("SQL", "Query")
    .await;
    format!("user {id}")
}

async fn fail() -> (StatusCode, &'static str) {
    (StatusCode::SERVICE_UNAVAILABLE, "down")
}

async fn panics() -> &'static str {
    tokio::task::yield_now().await;
    panic!("handler panicked on purpose");
}

/// The application's own middleware: its time (and span) belongs to `Middleware`.
async fn auth(req: Request, next: Next) -> Response {
    {
        let _s = scout_std::instrument("Auth");
    }
    next.run(req).await
}

fn app() -> Router {
    Router::new()
        .route("/users/{id}", get(show_user))
        .route("/fail", get(fail))
        .route("/panic", get(panics))
        .route("/health", get(|| async { "ok" }))
        .route("/metrics", get(|| async { "ok" }))
        .route_layer(ControllerLayer::new())
        .layer(middleware::from_fn(auth))
        .layer(ScoutLayer::new().ignore(["/metrics"]))
}

async fn serve(app: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
        .unwrap();
    });
    addr
}

#[test]
fn axum_names_hierarchy_tags_errors_and_concurrency() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let rt = support::runtime(4);
    rt.block_on(async {
        let (agent, _guard) = start(&[("ignore", "/health")]).await;
        let addr = serve(app()).await;

        let queued = epoch_ms_ago(Duration::from_millis(50)).to_string();
        let (status, body) = http(
            addr,
            "GET",
            "/users/7?q=b&password=hunter2&q=a",
            &[
                ("X-Forwarded-For", "203.0.113.5, 10.0.0.1"),
                ("X-Queue-Start", &format!("t={queued}")),
            ],
        )
        .await;
        assert_eq!((status, body.as_str()), (200, "user 7"));
        assert_eq!(http(addr, "GET", "/fail", &[]).await.0, 503);
        assert_eq!(
            http(addr, "GET", "/panic", &[]).await.0,
            0,
            "connection dropped"
        );
        assert_eq!(http(addr, "GET", "/nope", &[]).await.0, 404);
        assert_eq!(http(addr, "GET", "/health", &[]).await.0, 200);
        assert_eq!(http(addr, "GET", "/metrics", &[]).await.0, 200);

        let reqs = collect(&agent, 3).await;
        assert_eq!(
            reqs.len(),
            3,
            "404, ignored and skipped paths not reported: {reqs:#?}"
        );

        let r = by_path(&reqs, "/users/7?password=%5BFILTERED%5D&q=a&q=b");
        assert_eq!(r.operation.as_deref(), Some("Controller/GET /users/{id}"));
        let mut t = tags(r);
        let q = t.remove("scout.queue_time_ns").unwrap().as_i64().unwrap();
        assert!((50_000_000..5_000_000_000).contains(&q), "queue time {q}");
        assert_eq!(
            serde_json::Value::Object(t),
            json!({"path": "/users/7?password=%5BFILTERED%5D&q=a&q=b", "user_ip": "203.0.113.5"})
        );
        let ops: Vec<&str> = r.spans.iter().map(|s| s.operation.as_str()).collect();
        assert_eq!(
            ops,
            [
                "Middleware",
                "Custom/Auth",
                "Controller/GET /users/{id}",
                "Custom/Load user",
                "SQL/Query"
            ]
        );
        assert_parent(r, "Middleware", None);
        assert_parent(r, "Custom/Auth", Some("Middleware"));
        assert_parent(r, "Controller/GET /users/{id}", Some("Middleware"));
        assert_parent(r, "Custom/Load user", Some("Controller/GET /users/{id}"));
        assert_parent(r, "SQL/Query", Some("Controller/GET /users/{id}"));
        assert_eq!(span(r, "Custom/Load user").tags["id"], 7);
        assert!(span(r, "SQL/Query").tags.contains_key("db.statement"));

        let f = by_path(&reqs, "/fail");
        assert_eq!(f.operation.as_deref(), Some("Controller/GET /fail"));
        assert_eq!(
            serde_json::Value::Object(tags(f)),
            json!({"path": "/fail", "user_ip": "127.0.0.1", "error": "true"})
        );
        let p = by_path(&reqs, "/panic");
        assert_eq!(p.operation.as_deref(), Some("Controller/GET /panic"));
        assert_eq!(p.tags["error"], "true");
        assert_parent(p, "Controller/GET /panic", Some("Middleware"));

        // 200 concurrent requests: each request's spans and tags stay its own.
        let mut tasks = Vec::new();
        for i in 0..200u64 {
            tasks.push(tokio::spawn(async move {
                let start = epoch_ms_ago(Duration::from_millis(10)) / 1000;
                http(
                    addr,
                    "GET",
                    &format!("/users/{i}"),
                    &[("X-Request-Start", &format!("{start}"))],
                )
                .await
            }));
        }
        for (i, t) in tasks.into_iter().enumerate() {
            assert_eq!(t.await.unwrap(), (200, format!("user {i}")));
        }
        let reqs = collect(&agent, 203).await;
        assert_eq!(reqs.len(), 203);
        for i in 0..200 {
            let r = by_path(&reqs, &format!("/users/{i}"));
            assert_eq!(r.operation.as_deref(), Some("Controller/GET /users/{id}"));
            assert_eq!(r.spans.len(), 5, "{r:#?}");
            assert_eq!(span(r, "Custom/Load user").tags["id"], i);
            assert_parent(r, "SQL/Query", Some("Controller/GET /users/{id}"));
            assert_eq!(r.tags["user_ip"], "127.0.0.1");
            assert!(
                r.tags["scout.queue_time_ns"].as_i64().unwrap() > 0,
                "seconds form"
            );
            assert!(r.warnings.is_empty(), "{r:#?}");
        }
        scout_std::shutdown();
        agent.shutdown().await;
    });
}

#[test]
fn controller_layer_alone_starts_the_request() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let (agent, _guard) =
            start(&[("collect_remote_ip", "false"), ("uri_reporting", "path")]).await;
        let app = Router::new()
            .nest(
                "/api",
                Router::new()
                    .route("/users/{id}", get(show_user))
                    .route("/fail", get(fail)),
            )
            .route_layer(ControllerLayer::new());
        let addr = serve(app).await;
        let (status, _) = http(
            addr,
            "GET",
            "/api/users/3?token=x",
            &[
                ("Client-IP", "198.51.100.1"),
                ("X-Request-Start", "not a time"),
            ],
        )
        .await;
        assert_eq!(status, 200);
        assert_eq!(http(addr, "GET", "/api/fail", &[]).await.0, 503);
        assert_eq!(http(addr, "GET", "/api/missing", &[]).await.0, 404);
        let reqs = collect(&agent, 2).await;
        assert_eq!(reqs.len(), 2, "{reqs:#?}");
        let r = by_path(&reqs, "/api/users/3");
        assert_eq!(
            r.operation.as_deref(),
            Some("Controller/GET /api/users/{id}")
        );
        assert_eq!(
            serde_json::Value::Object(tags(r)),
            json!({"path": "/api/users/3"})
        );
        let ops: Vec<&str> = r.spans.iter().map(|s| s.operation.as_str()).collect();
        assert_eq!(
            ops,
            [
                "Controller/GET /api/users/{id}",
                "Custom/Load user",
                "SQL/Query"
            ]
        );
        assert_parent(r, "Controller/GET /api/users/{id}", None);
        let f = by_path(&reqs, "/api/fail");
        assert_eq!(f.tags["error"], "true");
        scout_std::shutdown();
        agent.shutdown().await;
    });
}

#[test]
fn not_installed_is_a_pass_through() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let addr = serve(app()).await;
        assert_eq!(
            http(addr, "GET", "/users/1", &[]).await,
            (200, "user 1".to_owned())
        );
        assert_eq!(http(addr, "GET", "/fail", &[]).await.0, 503);
        assert_eq!(http(addr, "GET", "/panic", &[]).await.0, 0);
        assert!(!scout_std::in_request());
    });
}
