//! The agent logs through the `log` facade under its own target and never logs the key, only
//! its first three characters. A capturing logger records everything from install (with a
//! misconfigured setting), failed connections and shutdown.

use scout_core::Config;
use std::sync::Mutex;
use std::time::Duration;

static RECORDS: Mutex<Vec<(String, String)>> = Mutex::new(Vec::new());

struct Capture;

impl log::Log for Capture {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }
    fn log(&self, record: &log::Record<'_>) {
        if let Ok(mut r) = RECORDS.lock() {
            r.push((record.target().to_owned(), record.args().to_string()));
        }
    }
    fn flush(&self) {}
}

#[test]
fn key_is_never_logged() {
    log::set_boxed_logger(Box::new(Capture)).unwrap();
    log::set_max_level(log::LevelFilter::Trace);
    const KEY: &str = "SECRETKEY0123456789z";
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut c = Config::new()
        .name("Logging")
        .key(KEY)
        .monitor(true)
        .core_agent_launch(false)
        .core_agent_download(false)
        .shutdown_timeout_seconds(0.3)
        .log_payload_content(true);
    c.set("core_agent_socket_path", &format!("tcp://127.0.0.1:{port}"))
        .unwrap();
    let guard = scout_std::install_with(
        c,
        scout_std::InstallOptions {
            ignore_environment: true,
            ..Default::default()
        },
    );
    {
        let _t = scout_std::web_transaction("Logged");
    }
    std::thread::sleep(Duration::from_millis(300));
    drop(guard);

    let records = RECORDS.lock().unwrap();
    assert!(!records.is_empty());
    for (target, text) in records.iter() {
        assert!(!text.contains(KEY), "key in log line: {text}");
        if target.starts_with("scout") {
            assert_eq!(target, "scout_apm", "one target for the agent's own lines");
        }
    }
    assert!(
        records.iter().any(|(_, t)| t.contains("SEC***")),
        "the key prefix is shown: {records:?}"
    );
    assert!(
        records.iter().any(|(_, t)| t.contains("cannot connect")),
        "{records:?}"
    );
}
