//! Requests through an in-process axum service, for counting instructions per request with
//! callgrind (`scripts/callgrind-layers.sh`): the same service and request as the
//! `integrations` bench (`GET /users/{id}?q=1` with `X-Forwarded-For`, `oneshot`,
//! current-thread runtime).
//!
//! `layer_cost <plain|identity|scout-off|scout-on|api-10-spans> <requests>`: `scout-on`
//! installs the agent against an in-process local core agent on its own thread;
//! `api-10-spans` (agent installed too) records the `agent` bench's request instead of an
//! HTTP request: a web transaction with 9 tagged `SQL/Query` spans, through the public API. 1 000 requests warm up first;
//! then [`drive`] runs the given number, and only the application thread's instructions
//! inside it are of interest (the script collects that thread and that function).
//!
//! `cargo run --release -p scout-std --features axum --example layer_cost -- scout-on 1000`

use axum::Router;
use axum::body::Body;
use axum::http::Request;
use axum::routing::get;
use scout_std::integrations::axum::{ControllerLayer, ScoutLayer};
use scout_std::local_agent::{Address, Limits, LocalAgent, LocalAgentConfig};
use std::hint::black_box;
use tower::ServiceExt;

fn request() -> Request<Body> {
    Request::get("/users/7?q=1")
        .header("x-forwarded-for", "203.0.113.5")
        .body(Body::empty())
        .unwrap_or_default()
}

/// Runs `n` requests through `app`; the function callgrind collects.
#[inline(never)]
fn drive(rt: &tokio::runtime::Runtime, app: &Router, n: u64) {
    rt.block_on(async {
        for _ in 0..n {
            let _ = black_box(app.clone().oneshot(request()).await);
        }
    });
}

/// Runs `n` requests of 10 spans through the public API; with `LAYER_COST_PACE_US` set, waits
/// (spinning, no system call) that many microseconds after each request, so that the agent
/// keeps up instead of dropping at a full queue (e.g. to count wake-ups with `strace -c -f`).
#[inline(never)]
fn drive_api(n: u64) {
    let pace = std::env::var("LAYER_COST_PACE_US")
        .ok()
        .and_then(|v| v.parse().ok())
        .map(std::time::Duration::from_micros);
    for i in 0..n {
        {
            let _t = scout_std::web_transaction("Bench#index");
            for _ in 0..9 {
                let s = scout_std::instrument_kind("SQL", "Query");
                s.tag("rows", scout_std::Value::Int(i as i64));
            }
        }
        if let Some(p) = pace {
            let start = std::time::Instant::now();
            while start.elapsed() < p {
                std::hint::spin_loop();
            }
        }
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let mode = args.next().unwrap_or_else(|| "scout-on".to_owned());
    let n: u64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(1_000);
    let Ok(rt) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return;
    };
    let plain = Router::new().route("/users/{id}", get(|| async { "ok" }));
    let app = match mode.as_str() {
        "plain" => plain,
        "identity" => plain
            .route_layer(tower::layer::util::Identity::new())
            .layer(tower::layer::util::Identity::new()),
        _ => plain
            .route_layer(ControllerLayer::new())
            .layer(ScoutLayer::new()),
    };
    // As `axum::serve` prepares it: handlers turned into routes once, not per request.
    let app = app.with_state(());
    let agent_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build();
    let mut guard = None;
    let mut _agent = None;
    if (mode == "scout-on" || mode == "api-10-spans")
        && let Ok(agent_rt) = &agent_rt
    {
        let Ok(addr) = Address::parse("tcp://127.0.0.1:0") else {
            return;
        };
        let mut agent_config = LocalAgentConfig::new(addr);
        agent_config.limits = Limits::daemon();
        let Ok(agent) = agent_rt.block_on(LocalAgent::start(agent_config)) else {
            return;
        };
        let mut config = scout_std::Config::new()
            .name("Cost")
            .key("COSTKEY0123456789abc")
            .monitor(true)
            .core_agent_launch(false)
            .core_agent_download(false);
        if config
            .set("core_agent_socket_path", &agent.address().to_string())
            .is_err()
        {
            return;
        }
        guard = Some(scout_std::install_with(
            config,
            scout_std::InstallOptions {
                ignore_environment: true,
                ..Default::default()
            },
        ));
        _agent = Some(agent);
    }
    if mode == "api-10-spans" {
        drive_api(1_000);
        drive_api(n);
    } else {
        drive(&rt, &app, 1_000);
        drive(&rt, &app, n);
    }
    if guard.is_some() {
        let report = scout_std::shutdown();
        eprintln!("{report:?}");
    }
}
