//! The actix-web middleware against a real server on loopback and the local core agent:
//! names from resource patterns, Middleware > Controller > user spans, request tags, 5xx,
//! panics, 404s, 200 concurrent requests, and the controller middleware alone.

mod support;

use actix_web::dev::Service as _;
use actix_web::{App, HttpResponse, HttpServer, web};
use scout_std::FutureExt;
use scout_std::integrations::actix_web::{ScoutController, ScoutMiddleware};
use serde_json::json;
use std::net::SocketAddr;
use std::time::Duration;
use support::*;

async fn show_user(id: web::Path<u64>) -> String {
    let id = id.into_inner();
    {
        let s = scout_std::instrument("Load user");
        s.tag("id", i64::try_from(id).unwrap());
    }
    async { actix_web::rt::time::sleep(Duration::from_millis(1)).await }
        .instrument_kind("SQL", "Query")
        .await;
    format!("user {id}")
}

async fn fail() -> HttpResponse {
    HttpResponse::InternalServerError().body("boom")
}

async fn panics() -> HttpResponse {
    panic!("actix handler panicked on purpose");
}

/// Runs an actix-web server (full stack or controller only) on its own thread.
fn serve(full: bool) -> SocketAddr {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        actix_web::rt::System::new().block_on(async move {
            let server = HttpServer::new(move || {
                let app = App::new()
                    .wrap(ScoutController::new())
                    // The application's own middleware, between the two.
                    .wrap_fn(|req, srv| {
                        {
                            let _s = scout_std::instrument("Auth");
                        }
                        srv.call(req)
                    });
                let app = app
                    .route("/users/{id}", web::get().to(show_user))
                    .route("/fail", web::get().to(fail))
                    .route("/panic", web::get().to(panics))
                    .route(
                        "/metrics",
                        web::get().to(|| async { HttpResponse::Ok().finish() }),
                    );
                let outer = ScoutMiddleware::new().ignore(["/metrics"]);
                app.wrap(actix_web::middleware::Condition::new(full, outer))
            })
            .workers(2)
            .bind("127.0.0.1:0")
            .unwrap();
            tx.send(server.addrs()[0]).unwrap();
            server.run().await.unwrap();
        });
    });
    rx.recv().unwrap()
}

#[test]
fn actix_names_hierarchy_tags_errors_and_concurrency() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let (agent, _guard) = start(&[]).await;
        let addr = serve(true);
        let queued = (epoch_ms_ago(Duration::from_millis(50)) * 1000).to_string();
        let (status, body) = http(
            addr,
            "GET",
            "/users/7?api_key=s3cr3t&b=2&a=1",
            &[("X-Request-Start", &queued)],
        )
        .await;
        assert_eq!((status, body.as_str()), (200, "user 7"));
        assert_eq!(http(addr, "GET", "/fail", &[]).await.0, 500);
        assert_eq!(
            http(addr, "GET", "/panic", &[]).await.0,
            0,
            "connection dropped"
        );
        assert_eq!(http(addr, "GET", "/nope", &[]).await.0, 404);
        assert_eq!(http(addr, "GET", "/metrics", &[]).await.0, 200);

        let reqs = collect(&agent, 3).await;
        assert_eq!(reqs.len(), 3, "{reqs:#?}");
        let r = by_path(&reqs, "/users/7?a=1&api_key=%5BFILTERED%5D&b=2");
        assert_eq!(r.operation.as_deref(), Some("Controller/GET /users/{id}"));
        let mut t = tags(r);
        let q = t.remove("scout.queue_time_ns").unwrap().as_i64().unwrap();
        assert!(
            (50_000_000..5_000_000_000).contains(&q),
            "microseconds form: {q}"
        );
        assert_eq!(
            serde_json::Value::Object(t),
            json!({"path": "/users/7?a=1&api_key=%5BFILTERED%5D&b=2", "user_ip": "127.0.0.1"})
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
        assert_parent(r, "Custom/Auth", Some("Middleware"));
        assert_parent(r, "Controller/GET /users/{id}", Some("Middleware"));
        assert_parent(r, "Custom/Load user", Some("Controller/GET /users/{id}"));
        assert_parent(r, "SQL/Query", Some("Controller/GET /users/{id}"));
        assert_eq!(
            serde_json::Value::Object(tags(by_path(&reqs, "/fail"))),
            json!({"path": "/fail", "user_ip": "127.0.0.1", "error": "true"})
        );
        let p = by_path(&reqs, "/panic");
        assert_eq!(p.operation.as_deref(), Some("Controller/GET /panic"));
        assert_eq!(p.tags["error"], "true");

        let mut tasks = Vec::new();
        for i in 0..200u64 {
            tasks.push(tokio::spawn(async move {
                http(
                    addr,
                    "GET",
                    &format!("/users/{i}"),
                    &[("X-Forwarded-For", &format!("10.0.0.{}", i % 250))],
                )
                .await
            }));
        }
        for (i, t) in tasks.into_iter().enumerate() {
            assert_eq!(t.await.unwrap(), (200, format!("user {i}")));
        }
        let reqs = collect(&agent, 203).await;
        for i in 0..200 {
            let r = by_path(&reqs, &format!("/users/{i}"));
            assert_eq!(r.spans.len(), 5, "{r:#?}");
            assert_eq!(span(r, "Custom/Load user").tags["id"], i);
            assert_eq!(r.tags["user_ip"], format!("10.0.0.{}", i % 250));
        }
        scout_std::shutdown();
        agent.shutdown().await;
    });
}

#[test]
fn actix_controller_alone() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let (agent, _guard) = start(&[]).await;
        let addr = serve(false);
        assert_eq!(http(addr, "GET", "/users/5", &[]).await.0, 200);
        assert_eq!(http(addr, "GET", "/nope", &[]).await.0, 404);
        let reqs = collect(&agent, 1).await;
        assert_eq!(reqs.len(), 1, "{reqs:#?}");
        let r = by_path(&reqs, "/users/5");
        assert_eq!(r.operation.as_deref(), Some("Controller/GET /users/{id}"));
        assert_eq!(
            serde_json::Value::Object(tags(r)),
            json!({"path": "/users/5", "user_ip": "127.0.0.1"})
        );
        // The user's middleware runs outside the controller, with no request yet.
        let ops: Vec<&str> = r.spans.iter().map(|s| s.operation.as_str()).collect();
        assert_eq!(
            ops,
            [
                "Controller/GET /users/{id}",
                "Custom/Load user",
                "SQL/Query"
            ]
        );
        scout_std::shutdown();
        agent.shutdown().await;
    });
}
