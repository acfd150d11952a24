//! The whole launch path with the real `scout-local-agent` as the core agent: a loopback HTTP
//! server serves it in a tarball with its manifest; `scout_std::install_with` downloads,
//! verifies and launches it through the manager; the application's transactions arrive in the
//! launched process; a second install finds it running and launches nothing; then it is shut
//! down. Also: `install_as_core_agent` output verifies and launches without a download.
#![cfg(feature = "download")]
#![allow(missing_docs)]

mod support_manager;

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use flate2::Compression;
use flate2::write::GzEncoder;
use scout_core::Config;
use scout_std::local_agent::{self, Address, CORE_AGENT_BINARY, client};
use scout_std::manager::{self, Outcome};
use scout_std::{Context, InstallOptions};
use support_manager::{FULL_NAME, HttpServer, Reply, TRIPLE, URL_PATH, manifest, tar_with_crate};

const BIN: &str = env!("CARGO_BIN_EXE_scout-local-agent");

/// Tests install global state (the agent, the logger), so they run one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

/// Log lines of this process, to see what the manager thread decided.
static LOGS: Mutex<Vec<String>> = Mutex::new(Vec::new());

struct CaptureLogger;

impl log::Log for CaptureLogger {
    fn enabled(&self, m: &log::Metadata<'_>) -> bool {
        m.level() <= log::Level::Info
    }

    fn log(&self, r: &log::Record<'_>) {
        if self.enabled(r.metadata()) {
            let line = format!("{} {}: {}", r.level(), r.target(), r.args());
            LOGS.lock().unwrap_or_else(|e| e.into_inner()).push(line);
        }
    }

    fn flush(&self) {}
}

fn capture_logs() {
    static LOGGER: CaptureLogger = CaptureLogger;
    if log::set_logger(&LOGGER).is_ok() {
        log::set_max_level(log::LevelFilter::Info);
    }
}

fn logs_containing(needle: &str) -> usize {
    LOGS.lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .filter(|l| l.contains(needle))
        .count()
}

fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Stops whatever agent answers at the socket when the test ends, even after a failure.
struct StopAgent(Address);

impl Drop for StopAgent {
    fn drop(&mut self) {
        let _ = local_agent::shutdown_and_wait(&self.0, Duration::from_secs(5));
    }
}

/// The real binary and its manifest in a gzip tarball (stored blocks: the binary is large and
/// this test is built without optimisation).
fn local_agent_tgz() -> Vec<u8> {
    let bin = std::fs::read(BIN).expect("read scout-local-agent");
    let sha = manager::sha256_file(Path::new(BIN)).expect("sha256");
    let man = manifest(CORE_AGENT_BINARY, &sha);
    let tar = tar_with_crate(&[
        (CORE_AGENT_BINARY, &bin, 0o755),
        ("manifest.json", &man, 0o644),
    ]);
    let mut gz = GzEncoder::new(Vec::new(), Compression::none());
    gz.write_all(&tar).expect("gzip");
    gz.finish().expect("gzip finish")
}

fn set(c: &mut Config, key: &str, value: &str) {
    c.set(key, value)
        .unwrap_or_else(|e| panic!("{key} = {value}: {e:?}"));
}

fn opts() -> InstallOptions {
    InstallOptions {
        ignore_environment: true,
        ..Default::default()
    }
}

fn record_requests(tag: &str) {
    for i in 0..3 {
        let tx = scout_std::web_transaction("Orders#show");
        tx.tag("round", tag);
        Context::add("order_id", i);
        {
            let sql = scout_std::instrument_kind("SQL", "Query");
            sql.tag("db.statement", "SELECT * FROM orders WHERE id = ?");
        }
        let _http = scout_std::instrument_kind("HTTP", "GET");
    }
    scout_std::with_background_transaction("Invoices", || {
        scout_std::instrument_fn("Render PDF", || {});
    });
}

fn read_export(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("export line is JSON"))
        .collect()
}

#[test]
fn application_data_arrives_in_the_downloaded_and_launched_local_agent() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    capture_logs();
    let tmp = tempfile::tempdir().unwrap();
    let agents = tmp.path().join("agents");
    let socket = tmp.path().join("core-agent.sock");
    let export = tmp.path().join("requests.jsonl");
    let settings = tmp.path().join("local-agent.json");
    std::fs::write(&settings, r#"{"export": "requests.jsonl"}"#).unwrap();
    let address = Address::Unix(socket.clone());
    let _stop = StopAgent(address.clone());
    let server = HttpServer::start(Reply::body(local_agent_tgz()));

    let mut config = Config::new()
        .name("Launch E2E")
        .key("LAUNCHE2EKEY0123456789")
        .monitor(true)
        .core_agent_download(true)
        .core_agent_launch(true);
    set(&mut config, "download_url", &server.base_url());
    set(&mut config, "core_agent_dir", &agents.to_string_lossy());
    set(&mut config, "core_agent_triple", TRIPLE);
    set(
        &mut config,
        "core_agent_socket_path",
        &socket.to_string_lossy(),
    );
    set(
        &mut config,
        "core_agent_config_file",
        &settings.to_string_lossy(),
    );
    set(
        &mut config,
        "core_agent_log_file",
        &tmp.path().join("core-agent.log").to_string_lossy(),
    );

    // First install: nothing answers, so the manager downloads, verifies and launches.
    let started = Instant::now();
    let guard = scout_std::install_with(config, opts());
    assert!(guard.is_active());
    record_requests("first");
    assert!(
        scout_std::flush(Duration::from_secs(60)),
        "the launched agent acknowledged everything; logs: {:#?}",
        LOGS.lock().unwrap()
    );
    eprintln!(
        "download + verify + launch + first flush: {:?}",
        started.elapsed()
    );
    assert_eq!(server.gets(), 1);
    assert_eq!(server.paths(), vec![URL_PATH.to_owned()]);
    wait_until("the manager's outcome", Duration::from_secs(10), || {
        logs_containing("core agent: Launched { downloaded: true }") == 1
    });
    let verified = manager::verify(&scout_std::launch::manager_config(&config)).expect("verifies");
    assert_eq!(verified.dir, agents.join(FULL_NAME));
    assert_eq!(
        verified.binary,
        agents.join(FULL_NAME).join(CORE_AGENT_BINARY)
    );

    // The data is in the launched process: its summary and its export file (--config-file).
    let first = client::summary(&address, Duration::from_secs(5)).expect("summary");
    let pid = first.pid.expect("pid");
    assert_ne!(pid, std::process::id(), "a separate process");
    assert_eq!(first.requests, 4, "{}", first.text);
    assert_eq!(first.bad_frames, 0, "{}", first.text);
    assert!(
        first.text.contains("Controller/Orders#show"),
        "{}",
        first.text
    );
    assert!(first.text.contains("Job/Invoices"), "{}", first.text);
    assert!(first.text.contains("App \"Launch E2E\""), "{}", first.text);
    assert!(first.text.contains("Slowest trace"), "{}", first.text);
    let lines = read_export(&export);
    assert_eq!(lines.len(), 4);
    let orders: Vec<_> = lines
        .iter()
        .filter(|l| l["endpoint"] == "Controller/Orders#show")
        .collect();
    assert_eq!(orders.len(), 3);
    for l in &orders {
        assert_eq!(l["app"], "Launch E2E");
        assert_eq!(l["tags"]["round"], "first");
        let ops: Vec<&str> = l["spans"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["operation"].as_str().unwrap())
            .collect();
        assert_eq!(ops, ["Controller/Orders#show", "SQL/Query", "HTTP/GET"]);
        assert_eq!(
            l["spans"][1]["tags"]["db.statement"],
            "SELECT * FROM orders WHERE id = ?"
        );
    }
    let report = scout_std::shutdown();
    assert!(report.flushed);
    assert_eq!(report.stats.total_dropped(), 0, "{:?}", report.stats);
    drop(guard);

    // Second install: the probe finds the running agent; nothing is downloaded or launched.
    let guard = scout_std::install_with(config, opts());
    assert!(guard.is_active());
    wait_until(
        "the second manager outcome",
        Duration::from_secs(10),
        || logs_containing("core agent: AlreadyRunning") == 1,
    );
    assert_eq!(logs_containing("core agent: Launched"), 1);
    assert_eq!(logs_containing("LaunchReportedRunning"), 0);
    record_requests("second");
    assert!(scout_std::flush(Duration::from_secs(30)));
    let second = client::summary(&address, Duration::from_secs(5)).expect("summary");
    assert_eq!(second.pid, Some(pid), "the same process");
    assert_eq!(second.requests, 8);
    assert_eq!(server.gets(), 1, "nothing downloaded again");
    assert!(scout_std::shutdown().flushed);
    drop(guard);
    assert_eq!(read_export(&export).len(), 8);

    // Shut the launched agent down: its process exits and its socket file is removed.
    manager::shutdown(&socket.to_string_lossy(), Duration::from_secs(5)).expect("shutdown");
    wait_until(
        "the launched agent to exit",
        Duration::from_secs(10),
        || !socket.exists() && proc_state(pid).is_none_or(|s| s == "Z" || s == "X"),
    );
    assert!(manager::probe(&socket.to_string_lossy(), Duration::from_millis(300)).is_err());
}

/// The state letter of a process (Linux), `None` if it does not exist.
fn proc_state(pid: u32) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_whitespace().next().map(str::to_owned)
}

#[test]
fn installed_local_agent_verifies_and_the_manager_launches_it_without_download() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("core");
    let name = "scout_apm_core-local-x86_64-unknown-linux-musl";
    let bin = local_agent::install_as_core_agent(Path::new(BIN), &dir, name).expect("install");
    assert_eq!(bin, dir.join(name).join("core-agent"));
    let mode = |p: &Path| {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
    };
    assert_eq!(mode(&dir.join(name)), 0o700);
    assert_eq!(mode(&bin), 0o755);
    // Installing again replaces the files in place.
    local_agent::install_as_core_agent(Path::new(BIN), &dir, name).expect("reinstall");
    assert!(local_agent::install_as_core_agent(Path::new(BIN), &dir, "../x").is_err());

    let socket: PathBuf = tmp.path().join("s.sock");
    let _stop = StopAgent(Address::Unix(socket.clone()));
    let cfg = manager::ManagerConfig {
        core_agent_dir: dir.clone(),
        core_agent_full_name: Some(name.to_owned()),
        core_agent_download: false,
        download_url: "http://127.0.0.1:9/never-used".to_owned(),
        socket_address: socket.to_string_lossy().into_owned(),
        probe_timeout: Duration::from_millis(300),
        ..manager::ManagerConfig::default()
    };
    let verified = manager::verify(&cfg).expect("the manifest and SHA-256 verify");
    assert_eq!(verified.manifest.core_agent_binary, "core-agent");
    assert_eq!(
        verified.manifest.core_agent_version,
        env!("CARGO_PKG_VERSION")
    );
    assert_eq!(
        manager::ensure_running(&cfg).expect("launch"),
        Outcome::Launched { downloaded: false }
    );
    assert!(matches!(
        manager::ensure_running(&cfg).expect("probe"),
        Outcome::AlreadyRunning { .. }
    ));
    // Exit status 3 of a second launch is "already running", as with Scout's core agent.
    assert_eq!(
        manager::launch(&cfg).expect("launch again"),
        manager::LaunchOutcome::AlreadyRunning
    );
    let s = client::summary(&Address::Unix(socket.clone()), Duration::from_secs(5)).unwrap();
    assert_eq!(s.requests, 0);
    assert!(
        s.text.starts_with("== Scout local agent: 0 requests"),
        "{}",
        s.text
    );
    assert!(
        local_agent::shutdown_and_wait(&Address::Unix(socket.clone()), Duration::from_secs(10))
            .expect("stops")
    );
    assert!(!socket.exists());
    assert!(
        !local_agent::shutdown_and_wait(&Address::Unix(socket), Duration::from_secs(1)).unwrap(),
        "nothing left to stop"
    );
}
