//! End-to-end tests of the core-agent manager against a loopback HTTP server.
#![allow(missing_docs)]

mod support_manager;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use scout_std::manager::{self, ManagerError, Outcome};
use support_manager::{
    FULL_NAME, FakeAgent, Fixture, HttpServer, RawEntry, Reply, URL_PATH, gzip, manifest, raw_tar,
    sha256_hex, standin_script, tar_with_crate,
};

fn mode(path: &std::path::Path) -> u32 {
    fs::metadata(path).expect("stat").permissions().mode() & 0o7777
}

#[test]
fn happy_path_downloads_verifies_launches_and_does_not_download_twice() {
    let fx = Fixture::new();
    let server = HttpServer::start(Reply::body(fx.good_tgz(0)));
    let mut cfg = fx.config(&format!("{}/", server.base_url())); // trailing slash: no `//`
    cfg.log_level = "debug".into();
    cfg.log_file = Some(fx.tmp.path().join("core.log"));
    cfg.config_file = Some(fx.tmp.path().join("core.toml"));
    cfg.ca_cert = Some(fx.tmp.path().join("ca.pem"));

    let outcome = manager::ensure_running(&cfg).expect("ensure_running");
    assert_eq!(outcome, Outcome::Launched { downloaded: true });
    assert_eq!(server.gets(), 1);
    assert_eq!(server.paths(), vec![URL_PATH.to_owned()]);

    // Layout and modes (spec §2.2, capture 14).
    let wd = fx.working_dir();
    assert_eq!(mode(&wd), 0o700);
    assert_eq!(mode(&wd.join("core-agent")), 0o755);
    assert_eq!(mode(&wd.join("manifest.json")), 0o644);
    let tgz = wd.join(format!("{FULL_NAME}.tgz"));
    assert!(tgz.is_file());
    assert_eq!(mode(&tgz) & 0o022, 0);
    let mut names: Vec<String> = fs::read_dir(&wd)
        .expect("read working dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        vec![
            "core-agent".to_owned(),
            "manifest.json".to_owned(),
            format!("{FULL_NAME}.tgz")
        ]
    );

    // Exact argv (spec §2.5).
    let p = |name: &str| fx.tmp.path().join(name).to_string_lossy().into_owned();
    assert_eq!(
        fx.recorded_argv(),
        vec![
            "start".to_owned(),
            "--daemonize".into(),
            "true".into(),
            "--log-level".into(),
            "debug".into(),
            "--log-file".into(),
            p("core.log"),
            "--config-file".into(),
            p("core.toml"),
            "--socket".into(),
            p("agent.sock"),
            "--ca-cert".into(),
            p("ca.pem"),
        ]
    );

    // Second run: verified copy is reused, nothing downloaded.
    fs::remove_file(&fx.marker).expect("remove marker");
    let outcome = manager::ensure_running(&cfg).expect("second ensure_running");
    assert_eq!(outcome, Outcome::Launched { downloaded: false });
    assert_eq!(server.gets(), 1, "second run must not download");
    assert!(fx.marker_exists());
    let v = manager::verify(&cfg).expect("verify");
    assert_eq!(v.manifest.core_agent_version, "1.6.0");
}

#[test]
fn tcp_address_gives_tcp_flag_and_default_argv() {
    let fx = Fixture::new();
    let server = HttpServer::start(Reply::body(fx.good_tgz(0)));
    let mut cfg = fx.config(&server.base_url());
    // A loopback port nobody listens on, so the probe fails and the launch happens.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    cfg.socket_address = format!("tcp://127.0.0.1:{port}");
    assert_eq!(
        manager::ensure_running(&cfg).expect("ensure_running"),
        Outcome::Launched { downloaded: true }
    );
    assert_eq!(
        fx.recorded_argv(),
        [
            "start",
            "--daemonize",
            "true",
            "--log-level",
            "info",
            "--tcp",
            &format!("127.0.0.1:{port}")
        ]
    );
}

#[test]
fn existing_verified_binary_is_not_downloaded_again() {
    let fx = Fixture::new();
    let server = HttpServer::start(Reply::Status(500));
    let cfg = fx.config(&server.base_url());
    let wd = fx.working_dir();
    fs::create_dir_all(&wd).expect("mkdir");
    fs::set_permissions(&wd, fs::Permissions::from_mode(0o700)).expect("chmod");
    let (bin, man) = fx.standin(0);
    fs::write(wd.join("core-agent"), &bin).expect("write bin");
    fs::set_permissions(wd.join("core-agent"), fs::Permissions::from_mode(0o755)).expect("chmod");
    fs::write(wd.join("manifest.json"), &man).expect("write manifest");

    let outcome = manager::ensure_running(&cfg).expect("ensure_running");
    assert_eq!(outcome, Outcome::Launched { downloaded: false });
    assert_eq!(server.gets(), 0);
    assert!(fx.marker_exists());
    assert!(matches!(
        manager::download(&cfg).expect("download"),
        manager::DownloadOutcome::AlreadyPresent(_)
    ));
    assert_eq!(server.gets(), 0);
}

#[test]
fn exit_status_3_means_already_running() {
    let fx = Fixture::new();
    let server = HttpServer::start(Reply::body(fx.good_tgz(3)));
    let cfg = fx.config(&server.base_url());
    let outcome = manager::ensure_running(&cfg).expect("ensure_running");
    assert_eq!(outcome, Outcome::LaunchReportedRunning { downloaded: true });
    assert!(fx.marker_exists(), "the launcher ran once");
    assert_eq!(
        manager::launch(&cfg).expect("launch"),
        manager::LaunchOutcome::AlreadyRunning
    );
}

#[test]
fn other_exit_status_is_an_error() {
    let fx = Fixture::new();
    let server = HttpServer::start(Reply::body(fx.good_tgz(7)));
    let cfg = fx.config(&server.base_url());
    let err = manager::ensure_running(&cfg).expect_err("exit 7 fails");
    assert!(matches!(err, ManagerError::LaunchFailed { .. }), "{err}");
    assert!(err.to_string().contains("7"), "{err}");
}

#[test]
fn hanging_launcher_is_killed_after_the_launch_timeout() {
    let fx = Fixture::new();
    let bin = b"#!/bin/sh\nexec sleep 30\n".to_vec();
    let man = manifest("core-agent", &sha256_hex(&bin));
    let tgz = gzip(&tar_with_crate(&[
        ("core-agent", &bin, 0o755),
        ("manifest.json", &man, 0o644),
    ]));
    let server = HttpServer::start(Reply::body(tgz));
    let mut cfg = fx.config(&server.base_url());
    cfg.launch_timeout = Duration::from_millis(500);
    let start = Instant::now();
    let err = manager::ensure_running(&cfg).expect_err("launch times out");
    assert!(err.is_timeout(), "{err}");
    assert!(start.elapsed() < Duration::from_secs(10));
    assert!(err.to_string().contains("launch"), "{err}");
}

#[test]
fn live_core_agent_is_not_launched_again() {
    let fx = Fixture::new();
    let agent = FakeAgent::start(
        &fx.socket,
        serde_json::json!({"CoreAgentVersion": {"version": "1.6.0"}}),
    );
    let server = HttpServer::start(Reply::body(fx.good_tgz(0)));
    let cfg = fx.config(&server.base_url());
    let outcome = manager::ensure_running(&cfg).expect("ensure_running");
    assert_eq!(
        outcome,
        Outcome::AlreadyRunning {
            version: Some("1.6.0".into())
        }
    );
    assert_eq!(server.gets(), 0);
    assert!(!fx.marker_exists());
    assert_eq!(
        manager::probe(&cfg.socket_address, Duration::from_secs(1)).expect("probe"),
        Some("1.6.0".into())
    );
    manager::shutdown(&cfg.socket_address, Duration::from_secs(1)).expect("shutdown");
    let received = agent.received.lock().expect("received").clone();
    assert_eq!(received[0], serde_json::json!({"CoreAgentVersion": {}}));
    assert_eq!(
        received.last(),
        Some(&serde_json::json!({"CoreAgentShutdown": {}}))
    );
}

#[test]
fn probe_without_agent_fails_fast() {
    let fx = Fixture::new();
    let err = manager::probe(&fx.socket.to_string_lossy(), Duration::from_millis(200))
        .expect_err("nothing listens");
    assert!(matches!(err, ManagerError::Socket { .. }), "{err}");
}

#[test]
fn launch_disabled_does_nothing() {
    let fx = Fixture::new();
    let server = HttpServer::start(Reply::body(fx.good_tgz(0)));
    let mut cfg = fx.config(&server.base_url());
    cfg.core_agent_launch = false;
    assert_eq!(
        manager::ensure_running(&cfg).expect("ensure_running"),
        Outcome::LaunchDisabled
    );
    assert_eq!(server.gets(), 0);
    fx.assert_nothing_installed();
}

#[test]
fn download_disabled_is_a_clear_error() {
    let fx = Fixture::new();
    let server = HttpServer::start(Reply::body(fx.good_tgz(0)));
    let mut cfg = fx.config(&server.base_url());
    cfg.core_agent_download = false;
    let err = manager::ensure_running(&cfg).expect_err("nothing installed");
    assert!(
        matches!(err, ManagerError::DownloadDisabled { .. }),
        "{err}"
    );
    assert!(err.to_string().contains("core_agent_download"), "{err}");
    assert_eq!(server.gets(), 0);
    fx.assert_nothing_installed();
}

// ---------------------------------------------------------------- failures

/// Runs `ensure_running` against a server answering `reply` and checks that it fails
/// without executing or installing anything.
fn expect_failure(fx: &Fixture, reply: Reply) -> (ManagerError, HttpServer) {
    let server = HttpServer::start(reply);
    let cfg = fx.config(&server.base_url());
    let err = manager::ensure_running(&cfg).expect_err("must fail");
    fx.assert_nothing_installed();
    (err, server)
}

#[test]
fn sha256_mismatch_is_refused() {
    let fx = Fixture::new();
    let bin = standin_script(&fx.marker, 0);
    let wrong = sha256_hex(b"something else");
    let man = manifest("core-agent", &wrong);
    let tgz = gzip(&tar_with_crate(&[
        ("core-agent", &bin, 0o755),
        ("manifest.json", &man, 0o644),
    ]));
    let (err, _s) = expect_failure(&fx, Reply::body(tgz));
    match &err {
        ManagerError::ShaMismatch {
            expected, actual, ..
        } => {
            assert_eq!(expected, &wrong);
            assert_eq!(actual, &sha256_hex(&bin));
        }
        other => panic!("expected ShaMismatch, got {other}"),
    }
    let msg = err.to_string();
    assert!(
        msg.contains(&wrong) && msg.contains(&sha256_hex(&bin)),
        "{msg}"
    );
    assert!(
        !fx.working_dir().join(format!("{FULL_NAME}.tgz")).exists(),
        "a rejected archive is not kept"
    );
}

#[test]
fn manifest_naming_a_path_is_refused() {
    let fx = Fixture::new();
    let bin = standin_script(&fx.marker, 0);
    let man = manifest("../core-agent", &sha256_hex(&bin));
    let tgz = gzip(&tar_with_crate(&[
        ("core-agent", &bin, 0o755),
        ("manifest.json", &man, 0o644),
    ]));
    let (err, _s) = expect_failure(&fx, Reply::body(tgz));
    assert!(matches!(err, ManagerError::ManifestInvalid { .. }), "{err}");
}

#[test]
fn http_404_is_not_retried() {
    let fx = Fixture::new();
    let server = HttpServer::start(Reply::Status(404));
    let mut cfg = fx.config(&server.base_url());
    cfg.download_retries = 2;
    let err = manager::ensure_running(&cfg).expect_err("404");
    assert!(
        matches!(err, ManagerError::HttpStatus { status: 404, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("404"), "{err}");
    assert!(err.to_string().contains(URL_PATH), "{err}");
    assert_eq!(server.gets(), 1);
    fx.assert_nothing_installed();
}

#[test]
fn http_500_is_retried_then_fails() {
    let fx = Fixture::new();
    let server = HttpServer::start(Reply::Status(500));
    let mut cfg = fx.config(&server.base_url());
    cfg.download_retries = 2;
    let err = manager::ensure_running(&cfg).expect_err("500");
    assert!(
        matches!(err, ManagerError::HttpStatus { status: 500, .. }),
        "{err}"
    );
    assert_eq!(server.gets(), 3, "one attempt plus two retries");
    fx.assert_nothing_installed();
}

#[test]
fn server_that_never_answers_times_out() {
    let fx = Fixture::new();
    let server = HttpServer::start(Reply::Hang);
    let mut cfg = fx.config(&server.base_url());
    cfg.download_timeout = Duration::from_millis(700);
    let start = Instant::now();
    let err = manager::ensure_running(&cfg).expect_err("timeout");
    assert!(err.is_timeout(), "{err}");
    assert!(err.to_string().contains("timed out"), "{err}");
    assert!(start.elapsed() < Duration::from_secs(8));
    fx.assert_nothing_installed();
}

#[test]
fn truncated_gzip_is_refused() {
    let fx = Fixture::new();
    let good = fx.good_tgz(0);
    for cut in [good.len() / 2, good.len() - 4] {
        let fx = Fixture::new();
        let (err, _s) = expect_failure(&fx, Reply::body(good[..cut].to_vec()));
        assert!(
            matches!(err, ManagerError::Archive { .. }),
            "cut at {cut}: {err}"
        );
    }
}

/// A tgz with the stand-in, its manifest and one extra hand-made member.
fn tgz_with(fx: &Fixture, extra: RawEntry<'_>) -> Vec<u8> {
    let (bin, man) = fx.standin(0);
    gzip(&raw_tar(&[
        extra,
        RawEntry::file("core-agent", &bin, 0o755),
        RawEntry::file("manifest.json", &man, 0o644),
    ]))
}

fn assert_unsafe_member(err: &ManagerError, reason: &str) {
    match err {
        ManagerError::UnsafeArchiveMember { reason: r, .. } => {
            assert!(r.contains(reason), "reason {r:?} should mention {reason:?}");
        }
        other => panic!("expected UnsafeArchiveMember, got {other}"),
    }
}

#[test]
fn parent_dir_member_is_refused() {
    let fx = Fixture::new();
    let tgz = tgz_with(&fx, RawEntry::file("../escaped", b"x", 0o644));
    let (err, _s) = expect_failure(&fx, Reply::body(tgz));
    assert_unsafe_member(&err, "..");
    assert!(err.to_string().contains("../escaped"), "{err}");
    assert!(!fx.agent_dir.join("escaped").exists());
}

#[test]
fn symlink_member_is_refused() {
    let fx = Fixture::new();
    let tgz = tgz_with(
        &fx,
        RawEntry {
            name: "link",
            kind: b'2',
            mode: 0o777,
            data: b"",
            link: "/bin/sh",
        },
    );
    let (err, _s) = expect_failure(&fx, Reply::body(tgz));
    assert_unsafe_member(&err, "symbolic link");
}

#[test]
fn hard_link_and_device_members_are_refused() {
    for (kind, reason) in [(b'1', "hard link"), (b'3', "device"), (b'6', "FIFO")] {
        let fx = Fixture::new();
        let tgz = tgz_with(
            &fx,
            RawEntry {
                name: "odd",
                kind,
                mode: 0o644,
                data: b"",
                link: "core-agent",
            },
        );
        let (err, _s) = expect_failure(&fx, Reply::body(tgz));
        assert_unsafe_member(&err, reason);
    }
}

#[test]
fn absolute_member_is_refused() {
    let fx = Fixture::new();
    let target = fx.tmp.path().join("absolute-escape");
    let name = target.to_string_lossy().into_owned();
    let tgz = tgz_with(&fx, RawEntry::file(&name, b"x", 0o644));
    let (err, _s) = expect_failure(&fx, Reply::body(tgz));
    assert_unsafe_member(&err, "absolute");
    assert!(!target.exists());
}

#[test]
fn oversize_archive_is_refused() {
    let fx = Fixture::new();
    let server = HttpServer::start(Reply::body(fx.good_tgz(0)));
    let mut cfg = fx.config(&server.base_url());
    cfg.max_extracted_bytes = 64;
    let err = manager::ensure_running(&cfg).expect_err("too large");
    assert!(matches!(err, ManagerError::TooLarge { .. }), "{err}");
    fx.assert_nothing_installed();

    let mut cfg = fx.config(&server.base_url());
    cfg.max_download_bytes = 16;
    let err = manager::ensure_running(&cfg).expect_err("too large");
    assert!(matches!(err, ManagerError::TooLarge { .. }), "{err}");
    fx.assert_nothing_installed();
}

#[test]
fn directory_writable_by_others_is_refused() {
    let fx = Fixture::new();
    let server = HttpServer::start(Reply::body(fx.good_tgz(0)));
    let cfg = fx.config(&server.base_url());
    // Even a correct, verified copy inside it must not be run.
    let wd = fx.working_dir();
    fs::create_dir_all(&wd).expect("mkdir");
    let (bin, man) = fx.standin(0);
    fs::write(wd.join("core-agent"), &bin).expect("write bin");
    fs::set_permissions(wd.join("core-agent"), fs::Permissions::from_mode(0o755)).expect("chmod");
    fs::write(wd.join("manifest.json"), &man).expect("write manifest");
    fs::set_permissions(&wd, fs::Permissions::from_mode(0o777)).expect("chmod 777");

    let err = manager::ensure_running(&cfg).expect_err("insecure dir");
    assert!(
        matches!(err, ManagerError::InsecureDirectory { .. }),
        "{err}"
    );
    assert!(err.to_string().contains("other users can write"), "{err}");
    assert_eq!(server.gets(), 0);
    assert!(!fx.marker_exists());
    assert!(manager::verify(&cfg).is_err());
    assert!(manager::launch(&cfg).is_err());
    assert!(!fx.marker_exists());
}

#[test]
fn held_lock_is_waited_for_with_a_bound() {
    let fx = Fixture::new();
    let server = HttpServer::start(Reply::body(fx.good_tgz(0)));
    let mut cfg = fx.config(&server.base_url());
    let wd = fx.working_dir();
    fs::create_dir_all(&wd).expect("mkdir");
    fs::set_permissions(&wd, fs::Permissions::from_mode(0o700)).expect("chmod");
    // A fresh lock held "by another process" that never finishes: bounded wait, clear error.
    fs::write(wd.join("download.lock"), b"12345\n").expect("lock");
    cfg.lock_wait = Duration::from_millis(400);
    let err = manager::download(&cfg).expect_err("lock held");
    assert!(matches!(err, ManagerError::LockTimeout { .. }), "{err}");
    assert_eq!(server.gets(), 0);
    assert!(wd.join("download.lock").exists(), "not ours to remove");
    // The other process finishes: the waiter uses its result.
    let (bin, man) = fx.standin(0);
    let wd2 = wd.clone();
    let finisher = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        fs::write(wd2.join("core-agent"), &bin).expect("write bin");
        fs::write(wd2.join("manifest.json"), &man).expect("write manifest");
        fs::remove_file(wd2.join("download.lock")).expect("unlock");
    });
    cfg.lock_wait = Duration::from_secs(10);
    let outcome = manager::download(&cfg).expect("waited");
    finisher.join().expect("finisher");
    assert!(
        matches!(outcome, manager::DownloadOutcome::DownloadedByOther(_)),
        "{outcome:?}"
    );
    assert_eq!(server.gets(), 0);
}

#[test]
fn works_when_called_from_inside_a_tokio_runtime() {
    let fx = Fixture::new();
    let server = HttpServer::start(Reply::body(fx.good_tgz(0)));
    let cfg = fx.config(&server.base_url());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let outcome = rt.block_on(async { manager::ensure_running(&cfg) });
    assert_eq!(
        outcome.expect("no panic, no error"),
        Outcome::Launched { downloaded: true }
    );
    assert_eq!(server.gets(), 1);
}
