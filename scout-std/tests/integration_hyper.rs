//! The tower layers on a plain hyper 1 server (no framework router): custom route names,
//! gRPC-style names, peer address from a `PeerAddr` extension, Middleware > Controller.

mod support;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use scout_std::integrations::tower::{ControllerLayer, PeerAddr, ScoutLayer, auto_route_name};
use serde_json::json;
use std::convert::Infallible;
use support::*;
use tower::ServiceBuilder;

async fn router(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let _s = scout_std::instrument("Route");
    let status = if req.uri().path() == "/boom" {
        500
    } else {
        200
    };
    Ok(Response::builder()
        .status(status)
        .body(Full::new(Bytes::from_static(b"hi")))
        .unwrap())
}

#[test]
fn hyper_server_with_tower_layers() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let (agent, _guard) = start(&[]).await;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let (stream, peer) = listener.accept().await.unwrap();
                let svc = ServiceBuilder::new()
                    // The server's own layer records the peer address first.
                    .map_request(move |mut r: Request<Incoming>| {
                        r.extensions_mut().insert(PeerAddr(peer));
                        r
                    })
                    .layer(ScoutLayer::new())
                    .layer(ControllerLayer::new().name_with(|r| match r.uri.path() {
                        "/boom" => Some("GET /boom".to_owned()),
                        p if p.starts_with("/items/") => {
                            Some(format!("{} /items/{{id}}", r.method))
                        }
                        _ => auto_route_name(r), // gRPC methods; otherwise none
                    }))
                    .service_fn(router);
                tokio::spawn(async move {
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), TowerToHyperService::new(svc))
                        .await;
                });
            }
        });
        assert_eq!(http(addr, "GET", "/items/9?otp=1", &[]).await.0, 200);
        assert_eq!(http(addr, "GET", "/boom", &[]).await.0, 500);
        assert_eq!(http(addr, "GET", "/unnamed", &[]).await.0, 200);
        assert_eq!(
            http(
                addr,
                "POST",
                "/helloworld.Greeter/SayHello",
                &[("Content-Type", "application/grpc")]
            )
            .await
            .0,
            200
        );
        let reqs = collect(&agent, 3).await;
        assert_eq!(reqs.len(), 3, "unnamed route not reported: {reqs:#?}");
        let r = by_path(&reqs, "/items/9?otp=%5BFILTERED%5D");
        assert_eq!(r.operation.as_deref(), Some("Controller/GET /items/{id}"));
        assert_eq!(
            serde_json::Value::Object(tags(r)),
            json!({"path": "/items/9?otp=%5BFILTERED%5D", "user_ip": "127.0.0.1"})
        );
        assert_parent(r, "Controller/GET /items/{id}", Some("Middleware"));
        assert_parent(r, "Custom/Route", Some("Controller/GET /items/{id}"));
        assert_eq!(by_path(&reqs, "/boom").tags["error"], "true");
        let g = by_path(&reqs, "/helloworld.Greeter/SayHello");
        assert_eq!(
            g.operation.as_deref(),
            Some("Controller/helloworld.Greeter/SayHello")
        );
        scout_std::shutdown();
        agent.shutdown().await;
    });
}
