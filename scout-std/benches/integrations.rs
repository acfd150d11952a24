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
//! Also two identity layers added the same way as Scout's (`route_layer` + `layer`): what axum
//! itself costs per layer. Each router is prepared with `with_state(())` as `axum::serve`
//! prepares it (handlers turned into routes once, not per request).
//!
//! Each sample is timed twice: wall clock, and CPU time of the request's thread (the agents'
//! background threads excluded, and time the thread lost to other processes on a busy
//! machine). Criterion reports CPU time. Ends with a table: median ns per request, ns added
//! over no layer, and heap allocations per request on the request's thread.
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
use scout_std::local_agent::{Address, Limits, LocalAgent, LocalAgentConfig};
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

fn identity() -> Router {
    use tower::layer::util::Identity;
    plain().route_layer(Identity::new()).layer(Identity::new())
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
    let mut options = sentry_core::ClientOptions::new()
        .dsn("https://public@sentry.invalid/1")
        .traces_sample_rate(1.0);
    options.transport = Some(Arc::new(Arc::new(NoTransport)));
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

/// Per bench: medians of the samples' wall and CPU ns per request, allocations per request.
static RESULTS: Mutex<Vec<(&'static str, f64, f64, f64)>> = Mutex::new(Vec::new());

/// CPU time of this thread.
fn thread_cpu() -> Duration {
    use nix::time::{ClockId, clock_gettime};
    clock_gettime(ClockId::CLOCK_THREAD_CPUTIME_ID).map_or(Duration::ZERO, Duration::from)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

fn run(c: &mut Criterion, rt: &tokio::runtime::Runtime, name: &'static str, app: Router) {
    // What `axum::serve` and `into_make_service` do before serving: turn every handler into a
    // route once, rather than on each request (which would charge each layer an extra boxing
    // and clone per request that served applications never pay).
    let app = app.with_state(());
    let samples = Rc::new(RefCell::new(Vec::new()));
    c.bench_function(name, |b| {
        b.to_async(rt).iter_custom(|iters| {
            let app = app.clone();
            let samples = samples.clone();
            async move {
                let (start, cpu) = (Instant::now(), thread_cpu());
                for _ in 0..iters {
                    black_box(app.clone().oneshot(request()).await.unwrap());
                }
                let (wall, cpu) = (start.elapsed(), thread_cpu().saturating_sub(cpu));
                let per = |d: Duration| d.as_nanos() as f64 / iters as f64;
                samples.borrow_mut().push((per(wall), per(cpu)));
                cpu
            }
        })
    });
    let samples = samples.take();
    let wall = median(samples.iter().map(|s| s.0).collect());
    let cpu = median(samples.iter().map(|s| s.1).collect());
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
    RESULTS.lock().unwrap().push((name, wall, cpu, allocs));
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    run(c, &rt, "axum/no layer", plain());
    run(c, &rt, "axum/2 identity layers", identity());
    run(c, &rt, "axum/scout layers, agent not installed", scout());

    // The local core agent runs on its own runtime, as it would in its own process, keeping
    // no history (as the command-line agent does).
    let agent_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let mut agent_config = LocalAgentConfig::new(Address::parse("tcp://127.0.0.1:0").unwrap());
    agent_config.limits = Limits::daemon();
    let agent = agent_rt.block_on(LocalAgent::start(agent_config)).unwrap();
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
    let Some(&(_, base_wall, base_cpu, base_allocs)) = results.first() else {
        return;
    };
    println!();
    println!(
        "{:<40} {:>8} {:>8} {:>6} {:>8} {:>8} {:>6} {:>7} {:>7}",
        "RATIO / ADDED (sample medians)",
        "wall ns",
        "ADDED",
        "RATIO",
        "cpu ns",
        "ADDED",
        "RATIO",
        "allocs",
        "ADDED"
    );
    for (name, wall, cpu, allocs) in results.iter() {
        println!(
            "{name:<40} {wall:>8.0} {:>8.0} {:>6.2} {cpu:>8.0} {:>8.0} {:>6.2} {allocs:>7.1} {:>7.1}",
            wall - base_wall,
            wall / base_wall,
            cpu - base_cpu,
            cpu / base_cpu,
            allocs - base_allocs,
        );
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
