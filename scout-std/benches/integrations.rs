//! Time per request through an in-process axum service (`GET /users/{id}?q=1` with an
//! `X-Forwarded-For` header, `tower::ServiceExt::oneshot`, current-thread runtime), side by
//! side on the same service:
//!
//! * no layer;
//! * the Scout layers, agent not installed, then installed (reporting to an in-process local
//!   core agent running on its own thread);
//! * sentry-tower (`NewSentryLayer` + `SentryHttpLayer` with transactions,
//!   `traces_sample_rate = 1.0`, a transport that drops envelopes);
//! * OpenTelemetry through tower-http's `TraceLayer` (INFO spans) and tracing-opentelemetry,
//!   an SDK tracer provider sampling everything with a batch processor and an exporter that
//!   drops the spans.
//!
//! Ends with a table: median ns per request, ns added over no layer, and heap allocations per
//! request on the request's thread.
//! `cargo bench -p scout-std --features axum --bench integrations`
// Counting allocations requires `unsafe impl GlobalAlloc`; it only forwards to the system
// allocator.
#![allow(unsafe_code)]

use axum::Router;
use axum::body::Body;
use axum::http::Request;
use axum::routing::get;
use criterion::{Criterion, criterion_group, criterion_main};
use scout_std::integrations::axum::{ControllerLayer, ScoutLayer};
use scout_std::local_agent::{Address, LocalAgent, LocalAgentConfig};
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::{Cell, RefCell};
use std::hint::black_box;
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tower::ServiceExt;

struct Counting;

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

fn count_one() {
    if COUNTING.try_with(Cell::get).unwrap_or(false) {
        let _ = ALLOCATIONS.try_with(|a| a.set(a.get() + 1));
    }
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count_one();
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count_one();
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn plain() -> Router {
    Router::new().route("/users/{id}", get(|| async { "ok" }))
}

fn scout() -> Router {
    plain()
        .route_layer(ControllerLayer::new())
        .layer(ScoutLayer::new())
}

fn sentry() -> Router {
    plain().layer(
        tower::ServiceBuilder::new()
            .layer(sentry_tower::NewSentryLayer::<Request<Body>>::new_from_top())
            .layer(sentry_tower::SentryHttpLayer::new().enable_transaction()),
    )
}

fn otel() -> Router {
    use tower_http::trace::{DefaultMakeSpan, TraceLayer};
    plain().layer(
        TraceLayer::new_for_http()
            .make_span_with(DefaultMakeSpan::new().level(tracing::Level::INFO)),
    )
}

/// Drops every envelope (sentry).
struct NoTransport;

impl sentry_core::Transport for NoTransport {
    fn send_envelope(&self, envelope: sentry_core::Envelope) {
        black_box(envelope);
    }
}

/// Binds a sentry client that samples every transaction to the process hub.
fn sentry_client() {
    let options = sentry_core::ClientOptions {
        dsn: Some("https://public@sentry.invalid/1".parse().unwrap()),
        traces_sample_rate: 1.0,
        transport: Some(Arc::new(Arc::new(NoTransport))),
        ..Default::default()
    };
    let client = sentry_core::Client::from(options);
    sentry_core::Hub::main().bind_client(Some(Arc::new(client)));
}

/// Drops every span (OpenTelemetry).
#[derive(Debug)]
struct NoExporter;

impl opentelemetry_sdk::trace::SpanExporter for NoExporter {
    async fn export(
        &self,
        batch: Vec<opentelemetry_sdk::trace::SpanData>,
    ) -> opentelemetry_sdk::error::OTelSdkResult {
        black_box(batch);
        Ok(())
    }
}

/// A tracing subscriber sending INFO spans to an OpenTelemetry SDK tracer provider.
fn otel_subscriber() -> (
    impl tracing::Subscriber + Send + Sync,
    opentelemetry_sdk::trace::SdkTracerProvider,
) {
    use opentelemetry::trace::TracerProvider as _;
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::{Layer as _, filter::LevelFilter};
    let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
        .with_sampler(opentelemetry_sdk::trace::Sampler::AlwaysOn)
        .with_batch_exporter(NoExporter)
        .build();
    let layer = tracing_opentelemetry::layer()
        .with_tracer(provider.tracer("bench"))
        .with_filter(LevelFilter::INFO);
    (tracing_subscriber::registry().with(layer), provider)
}

fn request() -> Request<Body> {
    Request::get("/users/7?q=1")
        .header("x-forwarded-for", "203.0.113.5")
        .body(Body::empty())
        .unwrap()
}

/// Per-sample medians (ns per request) and allocations per request, by bench.
static RESULTS: Mutex<Vec<(&'static str, f64, f64)>> = Mutex::new(Vec::new());

fn run(c: &mut Criterion, rt: &tokio::runtime::Runtime, name: &'static str, app: Router) {
    let samples = Rc::new(RefCell::new(Vec::new()));
    c.bench_function(name, |b| {
        b.to_async(rt).iter_custom(|iters| {
            let app = app.clone();
            let samples = samples.clone();
            async move {
                let start = Instant::now();
                for _ in 0..iters {
                    black_box(app.clone().oneshot(request()).await.unwrap());
                }
                let took = start.elapsed();
                samples
                    .borrow_mut()
                    .push(took.as_nanos() as f64 / iters as f64);
                took
            }
        })
    });
    let mut samples = samples.take();
    samples.sort_by(f64::total_cmp);
    let median = samples.get(samples.len() / 2).copied().unwrap_or(f64::NAN);
    let allocs = rt.block_on(async {
        const N: u64 = 1_000;
        COUNTING.with(|c| c.set(true));
        let before = ALLOCATIONS.with(Cell::get);
        for _ in 0..N {
            black_box(app.clone().oneshot(request()).await.unwrap());
        }
        COUNTING.with(|c| c.set(false));
        (ALLOCATIONS.with(Cell::get) - before) as f64 / N as f64
    });
    RESULTS.lock().unwrap().push((name, median, allocs));
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    run(c, &rt, "axum/no layer", plain());
    run(c, &rt, "axum/scout layers, agent not installed", scout());

    // The local core agent runs on its own runtime, as it would in its own process.
    let agent_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let agent = agent_rt
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
    let guard = scout_std::install_with(
        config,
        scout_std::InstallOptions {
            ignore_environment: true,
            ..Default::default()
        },
    );
    run(c, &rt, "axum/scout layers, agent installed", scout());
    scout_std::shutdown();
    drop(guard);
    drop(agent_rt);

    sentry_client();
    run(c, &rt, "axum/sentry-tower, traces 1.0", sentry());

    let (subscriber, provider) = otel_subscriber();
    {
        let _default = tracing::subscriber::set_default(subscriber);
        run(c, &rt, "axum/otel: tower-http TraceLayer", otel());
    }
    let _ = provider.shutdown_with_timeout(Duration::from_secs(5));

    print_table();
}

fn print_table() {
    let results = RESULTS.lock().unwrap();
    let Some(&(_, base, base_allocs)) = results.first() else {
        return;
    };
    println!();
    println!(
        "{:<40} {:>8} {:>9} {:>6} {:>10} {:>12}",
        "RATIO / ADDED (sample medians)",
        "ns/req",
        "ADDED ns",
        "RATIO",
        "allocs/req",
        "ADDED allocs"
    );
    for (name, ns, allocs) in results.iter() {
        println!(
            "{name:<40} {ns:>8.0} {:>9.0} {:>6.2} {allocs:>10.1} {:>12.1}",
            ns - base,
            ns / base,
            allocs - base_allocs,
        );
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
