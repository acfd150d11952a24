//! End to end: the demo firmware (embassy-executor on std, the same application code a board
//! runs) talks to a live gateway over TCP, next to a link that sends random bytes and truncated
//! frames and a device with a wrong token; every request of the good device reaches the local
//! core agent with the right hierarchy, names, tags and times. A second device records spans
//! with ignore flags and announces a small span limit: the gateway's replay applies both, so
//! the local core agent sees what a server agent would have sent.

mod support;

#[path = "../../scout-embassy/examples/common/app.rs"]
mod app;
use scout_std::gateway;

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use embassy_executor::Executor;
use embassy_time::Timer;
use embedded_io_adapters::tokio_1::FromTokio;
use scout_core::device::{self, Down, Hello, PROTOCOL_VERSION, RejectReason, Up};
use scout_core::{SpanFlags, Value};
use scout_embassy::{Agent, AgentConfig};
use scout_std::local_agent::Address;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const COUNT: u32 = 15;

/// A TCP link to `addr`, split for `run_link`.
fn connect(
    addr: &str,
    rt: &tokio::runtime::Handle,
) -> (
    FromTokio<tokio::net::tcp::OwnedReadHalf>,
    FromTokio<tokio::net::tcp::OwnedWriteHalf>,
) {
    let _guard = rt.enter();
    let s = std::net::TcpStream::connect(addr).unwrap();
    s.set_nonblocking(true).unwrap();
    let (r, w) = tokio::net::TcpStream::from_std(s).unwrap().into_split();
    (FromTokio::new(r), FromTokio::new(w))
}

#[embassy_executor::task]
async fn device_link(addr: String, rt: tokio::runtime::Handle) {
    let (r, w) = connect(&addr, &rt);
    let end = app::AGENT.run_link(r, w).await;
    eprintln!("device link ended: {end:?}");
}

#[embassy_executor::task]
async fn device_main() {
    app::wait_for_link().await;
    app::sensor_loop(COUNT, 10).await;
}

fn frame(msg: &Up<'_>) -> Vec<u8> {
    let mut b = [0u8; 256];
    let n = device::encode_up(msg, &mut b).unwrap();
    b[..n].to_vec()
}

#[test]
fn device_spans_reach_the_core_agent_through_garbage() {
    let rt = support::runtime(2);
    let handle = rt.handle().clone();
    rt.block_on(async {
        let agent = support::start_agent(Address::parse("tcp://127.0.0.1:0").unwrap()).await;
        let mut config =
            gateway::GatewayConfig::new("DeviceApp", "KEY123", &agent.address().to_string());
        config
            .device_tokens
            .insert("demo-device".into(), "demo-token".into());
        config.sync_interval = Duration::from_millis(200);
        let gw = gateway::Gateway::new(config);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        tokio::spawn(gw.clone().serve_tcp(listener));

        // A noisy link: random bytes, then truncated frames of a valid device message.
        let noisy_addr = addr.clone();
        let noisy = tokio::spawn(async move {
            let mut s = tokio::net::TcpStream::connect(&noisy_addr).await.unwrap();
            let mut x = 0x2545_f491_4f6c_dd1du64;
            for _ in 0..50 {
                let mut junk = [0u8; 97];
                for b in &mut junk {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    *b = x as u8;
                }
                s.write_all(&junk).await.unwrap();
                let hello = frame(&Up::Hello(Hello {
                    version: PROTOCOL_VERSION,
                    device_id: "noisy",
                    firmware: "",
                    token: "x",
                    tick_hz: 1000,
                    uptime: 0,
                    span_limit: 10,
                }));
                s.write_all(&hello[..hello.len() / 2]).await.unwrap();
                s.write_all(&[0]).await.unwrap();
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        });

        // A device with a wrong token is rejected.
        let mut bad = tokio::net::TcpStream::connect(&addr).await.unwrap();
        bad.write_all(&frame(&Up::Hello(Hello {
            version: PROTOCOL_VERSION,
            device_id: "demo-device",
            firmware: "",
            token: "wrong",
            tick_hz: 1_000_000,
            uptime: 0,
            span_limit: 1500,
        })))
        .await
        .unwrap();
        let mut reply = [0u8; 16];
        let n = bad.read(&mut reply).await.unwrap();
        let down: Down = device::decode_down(&mut reply[..n]).unwrap();
        assert_eq!(
            down,
            Down::Reject {
                reason: RejectReason::Unauthorized
            }
        );

        // The demo firmware, on its own thread.
        let dev_addr = addr.clone();
        std::thread::spawn(move || {
            let executor: &'static mut Executor = Box::leak(Box::new(Executor::new()));
            executor.run(move |spawner| {
                spawner.spawn(device_link(dev_addr, handle).unwrap());
                spawner.spawn(device_main().unwrap());
            });
        });

        assert!(
            agent
                .wait_for_requests(u64::from(COUNT), Duration::from_secs(20))
                .await,
            "only {} requests arrived; gateway stats {:?}",
            agent.requests().len(),
            gw.stats()
        );
        noisy.await.unwrap();
        let now = scout_std::local_agent::Timestamp::now().as_micros();
        let requests = agent.requests();
        assert_eq!(requests.len(), COUNT as usize);
        let mut iterations: Vec<i64> = Vec::new();
        for r in &requests {
            assert_eq!(r.operation.as_deref(), Some("Job/read_sensor"));
            assert_eq!(r.app, "DeviceApp");
            assert_eq!(r.tags["device.id"], "demo-device");
            iterations.push(r.tags["iteration"].as_i64().unwrap());
            // Wall-clock times: within the last 30 s, not in the future beyond the bound.
            assert!(r.start.as_micros() > now - 30_000_000 && r.end.as_micros() <= now + 100_000);
            let by_op = |op: &str| r.spans.iter().find(|s| s.operation == op).unwrap();
            let root = by_op("Job/read_sensor");
            let i2c = by_op("I2C/read");
            let filter = by_op("Filter/apply");
            let fft = by_op("Math/fft");
            assert_eq!(r.spans.len(), 4);
            assert_eq!(root.parent_id, None);
            assert_eq!(i2c.parent_id.as_ref(), Some(&root.id));
            assert_eq!(filter.parent_id.as_ref(), Some(&root.id));
            assert_eq!(fft.parent_id.as_ref(), Some(&filter.id));
            assert_eq!(i2c.tags["bytes"], 6);
            assert!(i2c.duration_us >= 300, "{}", i2c.duration_us);
            assert!(fft.duration_us >= 200);
            assert!(i2c.start >= root.start && i2c.end <= root.end);
            assert!(fft.start >= filter.start && fft.end <= filter.end);
            assert!(filter.start >= i2c.end);
        }
        iterations.sort();
        assert_eq!(iterations, (0..i64::from(COUNT)).collect::<Vec<_>>());

        let stats = gw.stats();
        let dev = &stats["demo-device"];
        assert_eq!(
            (dev.requests, dev.forwarded, dev.lost, dev.bad_frames),
            (u64::from(COUNT), u64::from(COUNT), 0, 0)
        );
        assert_eq!(dev.invalid_requests, 0);
        assert!(
            dev.clock_error_us < 50_000,
            "clock bound {} µs",
            dev.clock_error_us
        );
        let noisy_bad: u64 = stats
            .iter()
            .filter(|(k, _)| k.starts_with("?tcp:"))
            .map(|(_, s)| s.bad_frames)
            .sum();
        assert!(noisy_bad >= 50, "{stats:?}");
        assert_eq!(dev.device_drops.total(), 0, "{:?}", dev.device_drops);
        eprintln!("gateway stats: {stats:#?}");
        eprintln!("device stats: {:?}", app::AGENT.stats());
        agent.shutdown().await;
    });
    // Blocking reads of the device links never return by themselves: do not wait for them.
    rt.shutdown_background();
}

// --- ignore flags and the span limit ----------------------------------------------------------

/// A device whose requests keep at most 3 completed spans (announced in its hello).
static FLAGS: Agent<1, 16, 256> = Agent::new(
    AgentConfig::new()
        .span_limit(3)
        .device_id("flags-device")
        .firmware("flags-1.0")
        .token("flags-token"),
);
const FLAGS_COUNT: u32 = 3;
/// Transactions in which `start_span` returned false.
static FLAGS_UNRECORDED: AtomicU32 = AtomicU32::new(0);

#[embassy_executor::task]
async fn flags_link(addr: String, rt: tokio::runtime::Handle) {
    let (r, w) = connect(&addr, &rt);
    let end = FLAGS.run_link(r, w).await;
    eprintln!("flags link ended: {end:?}");
}

/// Records, per transaction (every span on the device, `start_span` returning true):
///
/// ```text
/// Job/flags                      (request tag iteration = i)
/// ├── Driver/query               IGNORE_CHILDREN (tag rows = 3)
/// │   └── Driver/internal        hidden by its parent
/// │       └── Driver/deeper      hidden by its grandparent
/// ├── Wrapper                    IGNORE: not recorded, its child goes under the root
/// │   └── Step/inside
/// └── Step/a … Step/d            the span limit (3) keeps Step/a only
/// ```
#[embassy_executor::task]
async fn flags_main() {
    while FLAGS.stats().links == 0 {
        Timer::after_millis(5).await;
    }
    for i in 0..FLAGS_COUNT {
        let tx = FLAGS.transaction("Job/flags");
        tx.tag_request("iteration", Value::Int(i64::from(i)));
        let mut all = tx.start_span("Driver/query", SpanFlags::IGNORE_CHILDREN);
        tx.tag_span("rows", Value::Int(3));
        all &= tx.start_span("Driver/internal", SpanFlags::NONE);
        all &= tx.start_span("Driver/deeper", SpanFlags::NONE);
        Timer::after_micros(200).await;
        tx.stop_span();
        tx.stop_span();
        tx.stop_span();
        all &= tx.start_span("Wrapper", SpanFlags::IGNORE);
        all &= tx.start_span("Step/inside", SpanFlags::NONE);
        tx.stop_span();
        tx.stop_span();
        for step in ["Step/a", "Step/b", "Step/c", "Step/d"] {
            all &= tx.start_span(step, SpanFlags::NONE);
            tx.stop_span();
        }
        if !all {
            FLAGS_UNRECORDED.fetch_add(1, Ordering::Relaxed);
        }
        tx.finish();
        Timer::after_millis(10).await;
    }
}

#[test]
fn device_ignore_flags_and_span_limit_apply_at_the_core_agent() {
    let rt = support::runtime(2);
    let handle = rt.handle().clone();
    rt.block_on(async {
        let agent = support::start_agent(Address::parse("tcp://127.0.0.1:0").unwrap()).await;
        let mut config =
            gateway::GatewayConfig::new("FlagsApp", "KEY123", &agent.address().to_string());
        config.fleet_token = Some("flags-token".into());
        let gw = gateway::Gateway::new(config);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        tokio::spawn(gw.clone().serve_tcp(listener));
        std::thread::spawn(move || {
            let executor: &'static mut Executor = Box::leak(Box::new(Executor::new()));
            executor.run(move |spawner| {
                spawner.spawn(flags_link(addr, handle).unwrap());
                spawner.spawn(flags_main().unwrap());
            });
        });

        assert!(
            agent
                .wait_for_requests(u64::from(FLAGS_COUNT), Duration::from_secs(20))
                .await,
            "only {} requests arrived; gateway stats {:?}",
            agent.requests().len(),
            gw.stats()
        );
        let requests = agent.requests();
        assert_eq!(requests.len(), FLAGS_COUNT as usize);
        let mut iterations: Vec<i64> = Vec::new();
        for r in &requests {
            assert_eq!(r.operation.as_deref(), Some("Job/flags"));
            assert_eq!(r.tags["device.id"], "flags-device");
            assert_eq!(r.tags["device.firmware"], "flags-1.0");
            iterations.push(r.tags["iteration"].as_i64().unwrap());
            // Pre-order: a parent before its children, siblings by start time.
            let ops: Vec<&str> = r.spans.iter().map(|s| s.operation.as_str()).collect();
            assert_eq!(
                ops,
                ["Job/flags", "Driver/query", "Step/inside", "Step/a"],
                "{:#?}",
                r.spans
            );
            let root = &r.spans[0];
            assert_eq!(root.parent_id, None);
            for s in &r.spans[1..] {
                assert_eq!(s.parent_id.as_ref(), Some(&root.id), "{s:?}");
            }
            let query = &r.spans[1];
            assert_eq!(query.tags["rows"], 3);
            // Its hidden children's time is its own.
            assert!(query.duration_us >= 200, "{}", query.duration_us);
            assert_eq!(query.exclusive_us, query.duration_us);
        }
        iterations.sort_unstable();
        assert_eq!(iterations, (0..i64::from(FLAGS_COUNT)).collect::<Vec<_>>());

        let stats = gw.stats();
        let dev = &stats["flags-device"];
        assert_eq!(
            (dev.requests, dev.forwarded, dev.invalid_requests, dev.lost),
            (u64::from(FLAGS_COUNT), u64::from(FLAGS_COUNT), 0, 0)
        );
        // The device dropped nothing: the gateway applied the flags and the limit.
        assert_eq!(dev.device_drops.total(), 0, "{:?}", dev.device_drops);
        assert_eq!(FLAGS.stats().drops.total(), 0);
        assert_eq!(
            FLAGS_UNRECORDED.load(Ordering::Relaxed),
            0,
            "the device records every span"
        );
        agent.shutdown().await;
    });
    rt.shutdown_background();
}
