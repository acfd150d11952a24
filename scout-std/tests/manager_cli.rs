//! Tests of the `scout-core-agent-manager` binary, including four concurrent downloads.
#![allow(missing_docs)]

mod support_manager;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use support_manager::{FULL_NAME, FakeAgent, Fixture, HttpServer, Reply, TRIPLE};

const BIN: &str = env!("CARGO_BIN_EXE_scout-core-agent-manager");

fn cli(fx: &Fixture, url: &str, args: &[&str]) -> Command {
    let mut c = Command::new(BIN);
    c.args(args)
        .env_clear()
        .env("SCOUT_CORE_AGENT_DIR", &fx.agent_dir)
        .env("SCOUT_CORE_AGENT_TRIPLE", TRIPLE)
        .env("SCOUT_DOWNLOAD_URL", url)
        .env("SCOUT_CORE_AGENT_SOCKET_PATH", &fx.socket)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    c
}

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn four_processes_download_once() {
    let fx = Fixture::new();
    let server = HttpServer::start(Reply::Body {
        bytes: fx.good_tgz(0),
        delay: Duration::from_millis(1500),
    });
    let children: Vec<_> = (0..4)
        .map(|_| {
            cli(&fx, &server.base_url(), &["-v", "download"])
                .spawn()
                .expect("spawn manager")
        })
        .collect();
    let outputs: Vec<Output> = children
        .into_iter()
        .map(|c| c.wait_with_output().expect("wait"))
        .collect();
    let (mut downloaded, mut waited) = (0, 0);
    for out in &outputs {
        let (stdout, stderr) = text(out);
        assert!(out.status.success(), "stdout {stdout}\nstderr {stderr}");
        if stdout.contains("downloaded and verified") {
            downloaded += 1;
        }
        if stdout.contains("downloaded by another process") {
            waited += 1;
        }
    }
    assert_eq!(downloaded, 1, "exactly one process downloads");
    assert!(waited >= 1, "the others waited for the lock holder");
    assert_eq!(server.gets(), 1, "the server saw one GET");
    let wd = fx.working_dir();
    assert!(wd.join("core-agent").is_file());
    assert!(!wd.join("download.lock").exists());
    assert!(!fx.marker_exists(), "download does not launch");

    // verify succeeds now; launch runs the stand-in.
    let out = cli(&fx, &server.base_url(), &["verify"])
        .output()
        .expect("verify");
    assert!(out.status.success(), "{:?}", text(&out));
    assert!(text(&out).0.contains("verified"));
    let out = cli(&fx, &server.base_url(), &["launch"])
        .output()
        .expect("launch");
    assert!(out.status.success(), "{:?}", text(&out));
    assert!(fx.marker_exists());
    assert_eq!(server.gets(), 1);
}

#[test]
fn failures_exit_1_with_a_clear_message() {
    let fx = Fixture::new();
    let server = HttpServer::start(Reply::Status(404));
    let out = cli(&fx, &server.base_url(), &["download"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    let (_, stderr) = text(&out);
    assert!(stderr.contains("download failed"), "{stderr}");
    assert!(stderr.contains("HTTP status 404"), "{stderr}");
    assert!(stderr.contains(&format!("{FULL_NAME}.tgz")), "{stderr}");

    let out = cli(&fx, &server.base_url(), &["verify"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).1.contains("manifest"), "{:?}", text(&out));
}

#[test]
fn usage_errors_exit_2() {
    let fx = Fixture::new();
    for args in [&[][..], &["frobnicate"][..], &["-x", "verify"][..]] {
        let out = cli(&fx, "http://127.0.0.1:9/x", args)
            .output()
            .expect("run");
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(text(&out).1.contains("usage:"), "{args:?}");
    }
    let out = cli(&fx, "http://127.0.0.1:9/x", &["--help"])
        .output()
        .expect("run");
    assert!(out.status.success());
    assert!(text(&out).0.contains("exit codes"));
}

#[test]
fn bad_env_values_are_reported_and_others_still_apply() {
    let fx = Fixture::new();
    let server = HttpServer::start(Reply::body(fx.good_tgz(0)));
    let out = cli(&fx, &server.base_url(), &["download"])
        .env("SCOUT_CORE_AGENT_DOWNLOAD", "perhaps")
        .env("SCOUT_CORE_AGENT_PERMISSIONS", "0750")
        .output()
        .expect("run");
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stderr.contains("SCOUT_CORE_AGENT_DOWNLOAD"), "{stderr}");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(fx.working_dir())
        .expect("stat")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o750);

    // SCOUT_CORE_AGENT_DOWNLOAD=no applies: nothing to verify, no download.
    let fx2 = Fixture::new();
    let out = cli(&fx2, &server.base_url(), &["download"])
        .env("SCOUT_CORE_AGENT_DOWNLOAD", "No")
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).1.contains("core_agent_download is off"));
    assert_eq!(server.gets(), 1);
}

#[test]
fn probe_and_shutdown_exit_codes() {
    let fx = Fixture::new();
    let url = "http://127.0.0.1:9/x";
    let out = cli(&fx, url, &["probe"]).output().expect("run");
    assert_eq!(out.status.code(), Some(3), "{:?}", text(&out));
    let out = cli(&fx, url, &["shutdown"]).output().expect("run");
    assert_eq!(out.status.code(), Some(3), "{:?}", text(&out));

    let agent = FakeAgent::start(
        Path::new(&fx.socket),
        serde_json::json!({"CoreAgentVersion": {"version": "1.6.0"}}),
    );
    let out = cli(&fx, url, &["-vv", "probe"]).output().expect("run");
    assert!(out.status.success(), "{:?}", text(&out));
    assert!(text(&out).0.contains("1.6.0"));
    let out = cli(&fx, url, &["shutdown"]).output().expect("run");
    assert!(out.status.success(), "{:?}", text(&out));
    assert_eq!(
        agent.received.lock().expect("received").last(),
        Some(&serde_json::json!({"CoreAgentShutdown": {}}))
    );
}
