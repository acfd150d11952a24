//! Time per request through an in-process axum service, without and with the Scout layers
//! (agent not installed, and installed, reporting to an in-process local core agent).
//! `cargo bench -p scout-std --features axum --bench integrations`

use axum::Router;
use axum::body::Body;
use axum::http::Request;
use axum::routing::get;
use criterion::{Criterion, criterion_group, criterion_main};
use scout_std::integrations::axum::{ControllerLayer, ScoutLayer};
use scout_std::local_agent::{Address, LocalAgent, LocalAgentConfig};
use std::hint::black_box;
use tower::ServiceExt;

fn plain() -> Router {
    Router::new().route("/users/{id}", get(|| async { "ok" }))
}

fn layered() -> Router {
    plain()
        .route_layer(ControllerLayer::new())
        .layer(ScoutLayer::new())
}

fn run(c: &mut Criterion, rt: &tokio::runtime::Runtime, name: &str, app: Router) {
    c.bench_function(name, |b| {
        b.to_async(rt).iter(|| {
            let app = app.clone();
            async move {
                let req = Request::get("/users/7?q=1")
                    .header("x-forwarded-for", "203.0.113.5")
                    .body(Body::empty())
                    .unwrap();
                black_box(app.oneshot(req).await.unwrap())
            }
        })
    });
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    run(c, &rt, "axum/no layer", plain());
    run(c, &rt, "axum/scout layers, agent not installed", layered());
    let agent = rt
        .block_on(LocalAgent::start(LocalAgentConfig::new(
            Address::parse("tcp://127.0.0.1:0").unwrap(),
        )))
        .unwrap();
    let mut config = scout_std::Config::new()
        .name("Bench")
        .key("BENCHKEY0123456789ab")
        .monitor(true)
        .core_agent_launch(false)
        .core_agent_download(false);
    config
        .set("core_agent_socket_path", &agent.address().to_string())
        .unwrap();
    let _guard = scout_std::install_with(
        config,
        scout_std::InstallOptions {
            ignore_environment: true,
            ..Default::default()
        },
    );
    run(c, &rt, "axum/scout layers, agent installed", layered());
    scout_std::shutdown();
}

criterion_group!(benches, bench);
criterion_main!(benches);
