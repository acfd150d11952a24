//! Shared helpers of the core-agent manager tests: a tiny HTTP/1.1 server, tarball builders
//! (with the `tar` crate and with raw headers), a stand-in core agent and a fake core agent socket.
#![allow(dead_code, unreachable_pub, missing_docs)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use flate2::Compression;
use flate2::write::GzEncoder;
use scout_std::manager::ManagerConfig;
use sha2::{Digest, Sha256};

pub const TRIPLE: &str = "x86_64-unknown-linux-musl";
pub const FULL_NAME: &str = "scout_apm_core-v1.6.0-x86_64-unknown-linux-musl";
pub const URL_PATH: &str =
    "/apm_core_agent/release/scout_apm_core-v1.6.0-x86_64-unknown-linux-musl.tgz";

/// What the test HTTP server answers to every request.
#[derive(Debug, Clone)]
pub enum Reply {
    /// 200 with this body, after a delay.
    Body { bytes: Vec<u8>, delay: Duration },
    /// This status with a short text body.
    Status(u16),
    /// Accept, read the request, never answer.
    Hang,
}

impl Reply {
    pub fn body(bytes: Vec<u8>) -> Self {
        Self::Body {
            bytes,
            delay: Duration::ZERO,
        }
    }
}

/// A loopback HTTP/1.1 server on its own threads, counting GET requests.
#[derive(Debug)]
pub struct HttpServer {
    pub addr: SocketAddr,
    gets: Arc<AtomicUsize>,
    paths: Arc<Mutex<Vec<String>>>,
}

impl HttpServer {
    pub fn start(reply: Reply) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        let addr = listener.local_addr().expect("local addr");
        let gets = Arc::new(AtomicUsize::new(0));
        let paths = Arc::new(Mutex::new(Vec::new()));
        let reply = Arc::new(reply);
        let (g, p) = (gets.clone(), paths.clone());
        thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let (reply, g, p) = (reply.clone(), g.clone(), p.clone());
                thread::spawn(move || serve(stream, &reply, &g, &p));
            }
        });
        Self { addr, gets, paths }
    }

    /// The `download_url` setting pointing at this server.
    pub fn base_url(&self) -> String {
        format!("http://{}/apm_core_agent/release", self.addr)
    }

    pub fn gets(&self) -> usize {
        self.gets.load(Ordering::SeqCst)
    }

    pub fn paths(&self) -> Vec<String> {
        self.paths.lock().expect("paths").clone()
    }
}

fn serve(mut stream: TcpStream, reply: &Reply, gets: &AtomicUsize, paths: &Mutex<Vec<String>>) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < 64 * 1024 {
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    let text = String::from_utf8_lossy(&buf);
    let mut first = text.lines().next().unwrap_or("").split(' ');
    let (method, path) = (first.next().unwrap_or(""), first.next().unwrap_or(""));
    if method == "GET" {
        gets.fetch_add(1, Ordering::SeqCst);
        paths.lock().expect("paths").push(path.to_owned());
    }
    match reply {
        Reply::Body { bytes, delay } => {
            thread::sleep(*delay);
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/gzip\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                bytes.len()
            );
            let _ = stream.write_all(head.as_bytes());
            let _ = stream.write_all(bytes);
        }
        Reply::Status(code) => {
            let body = format!("status {code}\n");
            let head = format!(
                "HTTP/1.1 {code} Test\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = stream.write_all(head.as_bytes());
            let _ = stream.write_all(body.as_bytes());
        }
        Reply::Hang => thread::sleep(Duration::from_secs(60)),
    }
    let _ = stream.flush();
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A `#!/bin/sh` stand-in core agent that writes its argv (one per line) to `marker`
/// and exits with `exit_code`.
pub fn standin_script(marker: &Path, exit_code: i32) -> Vec<u8> {
    format!(
        "#!/bin/sh\nfor a in \"$@\"; do printf '%s\\n' \"$a\"; done > '{}'\nexit {exit_code}\n",
        marker.display()
    )
    .into_bytes()
}

/// A manifest naming `binary` with `sha256`.
pub fn manifest(binary: &str, sha256: &str) -> Vec<u8> {
    serde_json::json!({
        "version": "1.6.0",
        "core_agent_version": "1.6.0",
        "core_agent_binary": binary,
        "core_agent_binary_sha256": sha256,
    })
    .to_string()
    .into_bytes()
}

/// A tar built with the `tar` crate from `(name, contents, mode)` regular files.
pub fn tar_with_crate(files: &[(&str, &[u8], u32)]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, data, mode) in files {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_size(data.len() as u64);
        h.set_mode(*mode);
        h.set_mtime(1_700_000_000);
        b.append_data(&mut h, name, *data).expect("append");
    }
    b.into_inner().expect("finish tar")
}

/// One member of a hand-made tar (the `tar` crate refuses to write some of these).
#[derive(Debug, Clone, Copy)]
pub struct RawEntry<'a> {
    pub name: &'a str,
    pub kind: u8,
    pub mode: u32,
    pub data: &'a [u8],
    pub link: &'a str,
}

impl<'a> RawEntry<'a> {
    pub fn file(name: &'a str, data: &'a [u8], mode: u32) -> Self {
        Self {
            name,
            kind: b'0',
            mode,
            data,
            link: "",
        }
    }
}

fn put(h: &mut [u8], at: usize, len: usize, s: &[u8]) {
    assert!(s.len() <= len, "tar field too long");
    h[at..at + s.len()].copy_from_slice(s);
}

/// A ustar archive written byte by byte.
pub fn raw_tar(entries: &[RawEntry<'_>]) -> Vec<u8> {
    let mut out = Vec::new();
    for e in entries {
        let mut h = [0u8; 512];
        put(&mut h, 0, 100, e.name.as_bytes());
        put(&mut h, 100, 8, format!("{:07o}\0", e.mode).as_bytes());
        put(&mut h, 108, 8, b"0000000\0");
        put(&mut h, 116, 8, b"0000000\0");
        put(
            &mut h,
            124,
            12,
            format!("{:011o}\0", e.data.len()).as_bytes(),
        );
        put(
            &mut h,
            136,
            12,
            format!("{:011o}\0", 1_700_000_000u64).as_bytes(),
        );
        put(&mut h, 148, 8, b"        ");
        h[156] = e.kind;
        put(&mut h, 157, 100, e.link.as_bytes());
        put(&mut h, 257, 6, b"ustar\0");
        put(&mut h, 263, 2, b"00");
        let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
        put(&mut h, 148, 8, format!("{sum:06o}\0 ").as_bytes());
        out.extend_from_slice(&h);
        out.extend_from_slice(e.data);
        let pad = (512 - e.data.len() % 512) % 512;
        out.extend(std::iter::repeat_n(0u8, pad));
    }
    out.extend(std::iter::repeat_n(0u8, 1024));
    out
}

pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = GzEncoder::new(Vec::new(), Compression::default());
    enc.write_all(bytes).expect("gzip");
    enc.finish().expect("gzip finish")
}

/// One test's world: a temp dir with the core agent dir, a marker path and a socket path.
#[derive(Debug)]
pub struct Fixture {
    pub tmp: tempfile::TempDir,
    pub agent_dir: PathBuf,
    pub marker: PathBuf,
    pub socket: PathBuf,
}

impl Fixture {
    pub fn new() -> Self {
        let tmp = tempfile::tempdir().expect("tempdir");
        let agent_dir = tmp.path().join("agents");
        let marker = tmp.path().join("marker");
        let socket = tmp.path().join("agent.sock");
        Self {
            tmp,
            agent_dir,
            marker,
            socket,
        }
    }

    pub fn working_dir(&self) -> PathBuf {
        self.agent_dir.join(FULL_NAME)
    }

    /// Config pointing at `server`, with short timeouts.
    pub fn config(&self, base_url: &str) -> ManagerConfig {
        ManagerConfig {
            core_agent_dir: self.agent_dir.clone(),
            core_agent_triple: Some(TRIPLE.to_owned()),
            download_url: base_url.to_owned(),
            socket_address: self.socket.to_string_lossy().into_owned(),
            connect_timeout: Duration::from_secs(2),
            download_timeout: Duration::from_secs(10),
            download_retries: 0,
            retry_backoff: Duration::from_millis(10),
            lock_wait: Duration::from_secs(20),
            launch_timeout: Duration::from_secs(10),
            probe_timeout: Duration::from_millis(500),
            ..ManagerConfig::default()
        }
    }

    /// The stand-in binary (exiting with `exit_code`) and its matching manifest.
    pub fn standin(&self, exit_code: i32) -> (Vec<u8>, Vec<u8>) {
        let bin = standin_script(&self.marker, exit_code);
        let man = manifest("core-agent", &sha256_hex(&bin));
        (bin, man)
    }

    /// A good `.tgz` holding the stand-in and its manifest, built with the `tar` crate.
    pub fn good_tgz(&self, exit_code: i32) -> Vec<u8> {
        let (bin, man) = self.standin(exit_code);
        gzip(&tar_with_crate(&[
            ("core-agent", &bin, 0o755),
            ("manifest.json", &man, 0o644),
        ]))
    }

    pub fn marker_exists(&self) -> bool {
        self.marker.exists()
    }

    pub fn recorded_argv(&self) -> Vec<String> {
        std::fs::read_to_string(&self.marker)
            .expect("marker written by the stand-in")
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// Asserts that nothing executable or half-done was left in the working directory.
    pub fn assert_nothing_installed(&self) {
        assert!(!self.marker_exists(), "the stand-in must not have run");
        let wd = self.working_dir();
        assert!(!wd.join("core-agent").exists(), "core-agent left behind");
        assert!(!wd.join("manifest.json").exists(), "manifest left behind");
        if let Ok(rd) = std::fs::read_dir(&wd) {
            for e in rd.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                assert!(
                    !name.starts_with(".extract-")
                        && name != "download.lock"
                        && !name.ends_with(".part"),
                    "left behind: {name}"
                );
            }
        }
    }
}

/// A fake core agent on a Unix socket answering every frame with `reply`; it records
/// the JSON of every frame received.
#[derive(Debug)]
pub struct FakeAgent {
    pub received: Arc<Mutex<Vec<serde_json::Value>>>,
}

impl FakeAgent {
    pub fn start(path: &Path, reply: serde_json::Value) -> Self {
        let listener = UnixListener::bind(path).expect("bind unix socket");
        let received = Arc::new(Mutex::new(Vec::new()));
        let rec = received.clone();
        let reply = reply.to_string().into_bytes();
        thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut s) = stream else { continue };
                let (rec, reply) = (rec.clone(), reply.clone());
                thread::spawn(move || {
                    loop {
                        let mut len = [0u8; 4];
                        if s.read_exact(&mut len).is_err() {
                            return;
                        }
                        let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
                        if s.read_exact(&mut body).is_err() {
                            return;
                        }
                        if let Ok(v) = serde_json::from_slice(&body) {
                            rec.lock().expect("rec").push(v);
                        }
                        let _ = s.write_all(&(reply.len() as u32).to_be_bytes());
                        let _ = s.write_all(&reply);
                    }
                });
            }
        });
        Self { received }
    }
}
