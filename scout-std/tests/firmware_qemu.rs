//! End to end on an emulated microcontroller: the demo firmware (`firmware/`, a Cortex-M3
//! build of the shared demo app with scout-embassy) runs under `qemu-system-arm`
//! (lm3s6965evb). QEMU connects the board's UART0 as a TCP client to a gateway, the firmware
//! records its transactions, sends them over the UART and exits 0 through semihosting, and
//! every request reaches the local core agent with the right hierarchy, names and tags.
//!
//! Needs `qemu-system-arm` on `PATH` and the firmware ELF: `SCOUT_FIRMWARE_ELF`, or
//! `firmware/target/thumbv7m-none-eabi/release/scout-firmware` when it is newer than the
//! sources it is built from (`scripts/firmware.sh` builds it and runs this test). Without
//! them the test prints SKIPPED and passes, unless `SCOUT_REQUIRE_FIRMWARE` is set.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use scout_std::gateway::{Gateway, GatewayConfig};
use scout_std::local_agent::Address;

/// Transactions the firmware records (`COUNT` in `firmware/src/main.rs`).
const COUNT: u32 = 10;
/// How long QEMU may run.
const QEMU_TIMEOUT: Duration = Duration::from_secs(60);

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("repo root")
        .to_path_buf()
}

/// Newest modification time of the files under `dir`.
fn newest(dir: &Path) -> Option<SystemTime> {
    let mut latest = None;
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let path = entry.path();
        let t = if path.is_dir() {
            newest(&path)
        } else {
            entry.metadata().and_then(|m| m.modified()).ok()
        };
        latest = latest.max(t);
    }
    latest
}

/// The firmware to run, or why there is none.
fn firmware() -> Result<PathBuf, String> {
    if let Some(p) = std::env::var_os("SCOUT_FIRMWARE_ELF") {
        let p = PathBuf::from(p);
        return if p.is_file() {
            Ok(p)
        } else {
            Err(format!("SCOUT_FIRMWARE_ELF={} does not exist", p.display()))
        };
    }
    let root = repo();
    let elf = root.join("firmware/target/thumbv7m-none-eabi/release/scout-firmware");
    let built = std::fs::metadata(&elf)
        .and_then(|m| m.modified())
        .map_err(|_| {
            format!(
                "no firmware at {} (scripts/firmware.sh builds it)",
                elf.display()
            )
        })?;
    // A firmware left over from older sources would test old code: skip it instead.
    let sources = [
        "firmware/src",
        "firmware/agent/src",
        "scout-embassy/src",
        "scout-embassy/examples/common",
        "scout-core/src",
    ];
    for dir in sources {
        if newest(&root.join(dir)).is_some_and(|t| t > built) {
            return Err(format!(
                "{} is older than {dir} (rebuild with scripts/firmware.sh)",
                elf.display()
            ));
        }
    }
    Ok(elf)
}

fn qemu_available() -> Result<(), String> {
    match Command::new("qemu-system-arm")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
    {
        Ok(s) if s.success() => Ok(()),
        Ok(s) => Err(format!("qemu-system-arm --version failed: {s}")),
        Err(e) => Err(format!("qemu-system-arm not found: {e}")),
    }
}

/// Runs the firmware with UART0 connected to `port`; returns QEMU's exit code and output.
fn run_qemu(elf: &Path, port: u16) -> (Option<i32>, String) {
    let out = tempfile::NamedTempFile::new().expect("temp file");
    let log = out.reopen().expect("reopen the temp file");
    let mut child = Command::new("qemu-system-arm")
        .args(["-cpu", "cortex-m3", "-machine", "lm3s6965evb", "-nographic"])
        .args(["-monitor", "none"])
        .args(["-semihosting-config", "enable=on,target=native"])
        .arg("-serial")
        .arg(format!("tcp:127.0.0.1:{port}"))
        .arg("-kernel")
        .arg(elf)
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("clone the temp file"))
        .stderr(log)
        .spawn()
        .expect("start qemu-system-arm");
    let deadline = Instant::now() + QEMU_TIMEOUT;
    let code = loop {
        match child.try_wait().expect("wait for qemu") {
            Some(status) => break status.code(),
            None if Instant::now() > deadline => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            None => std::thread::sleep(Duration::from_millis(20)),
        }
    };
    let output = std::fs::read_to_string(out.path()).unwrap_or_default();
    (code, output)
}

#[test]
fn firmware_under_qemu_reaches_the_core_agent() {
    let setup = qemu_available().and_then(|()| firmware());
    let elf = match setup {
        Ok(elf) => elf,
        Err(why) if std::env::var_os("SCOUT_REQUIRE_FIRMWARE").is_some() => {
            panic!("SCOUT_REQUIRE_FIRMWARE is set but the test cannot run: {why}")
        }
        Err(why) => {
            println!("SKIPPED firmware_under_qemu_reaches_the_core_agent: {why}");
            return;
        }
    };

    let rt = support::runtime(2);
    rt.block_on(async {
        let agent = support::start_agent(Address::parse("tcp://127.0.0.1:0").unwrap()).await;
        let mut config = GatewayConfig::new("FirmwareApp", "KEY123", &agent.address().to_string());
        config
            .device_tokens
            .insert("demo-device".into(), "demo-token".into());
        config.sync_interval = Duration::from_millis(100);
        let gw = Gateway::new(config);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(gw.clone().serve_tcp(listener));

        let started = Instant::now();
        let (code, output) = tokio::task::spawn_blocking(move || run_qemu(&elf, port))
            .await
            .unwrap();
        eprintln!(
            "qemu exited with {code:?} after {:?}; output: {output:?}",
            started.elapsed()
        );
        assert_eq!(
            code,
            Some(0),
            "the firmware must exit 0 (None: killed after {QEMU_TIMEOUT:?}); gateway stats {:?}",
            gw.stats()
        );

        assert!(
            agent
                .wait_for_requests(u64::from(COUNT), Duration::from_secs(20))
                .await,
            "only {} requests arrived; gateway stats {:?}",
            agent.requests().len(),
            gw.stats()
        );
        let requests = agent.requests();
        assert_eq!(requests.len(), COUNT as usize);
        let mut iterations: Vec<i64> = Vec::new();
        for r in &requests {
            assert_eq!(r.operation.as_deref(), Some("Job/read_sensor"));
            assert_eq!(r.app, "FirmwareApp");
            assert_eq!(r.tags["device.id"], "demo-device");
            iterations.push(r.tags["iteration"].as_i64().unwrap());
            assert_eq!(r.spans.len(), 4, "{:?}", r.spans);
            let by_op = |op: &str| r.spans.iter().find(|s| s.operation == op).unwrap();
            let root = by_op("Job/read_sensor");
            let i2c = by_op("I2C/read");
            let filter = by_op("Filter/apply");
            let fft = by_op("Math/fft");
            assert_eq!(root.parent_id, None);
            assert_eq!(i2c.parent_id.as_ref(), Some(&root.id));
            assert_eq!(filter.parent_id.as_ref(), Some(&root.id));
            assert_eq!(fft.parent_id.as_ref(), Some(&filter.id));
            assert_eq!(i2c.tags["bytes"], 6);
            // The board's timer ticks at 1 kHz: waits of 300 and 200 µs last at least a tick.
            assert!(i2c.duration_us >= 300, "{}", i2c.duration_us);
            assert!(fft.duration_us >= 200, "{}", fft.duration_us);
            assert!(i2c.start >= root.start && i2c.end <= root.end);
            assert!(fft.start >= filter.start && fft.end <= filter.end);
            assert!(filter.start >= i2c.end);
        }
        iterations.sort_unstable();
        assert_eq!(iterations, (0..i64::from(COUNT)).collect::<Vec<_>>());

        let stats = gw.stats();
        let dev = &stats["demo-device"];
        eprintln!("gateway stats: {dev:?}");
        assert_eq!(
            (dev.requests, dev.forwarded, dev.lost, dev.bad_frames),
            (u64::from(COUNT), u64::from(COUNT), 0, 0)
        );
        assert_eq!(dev.invalid_requests, 0);
        assert_eq!(dev.device_drops.total(), 0, "{:?}", dev.device_drops);
        agent.shutdown().await;
    });
    rt.shutdown_background();
}
