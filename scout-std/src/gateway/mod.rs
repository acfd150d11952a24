//! The device gateway: accepts `scout-embassy` devices over TCP and serial lines, decodes their
//! frames (see [`scout_core::device`]), authenticates them, maps their uptime to wall-clock time
//! and forwards their requests to the core agent as ordinary `BatchCommand`s.
//!
//! - **Bounded and isolated.** Each link has its own [`FrameReader`] of
//!   [`device::MAX_FRAME`] bytes and its own forwarding queue and core-agent connection (see
//!   [`Forward`]); a device that floods, stalls or sends garbage only loses its own data.
//! - **Garbage.** A bad frame costs only itself: decoding resumes at the next `0x00`. Every bad
//!   frame is counted per device ([`DeviceStats::bad_frames`]; before the hello, under the
//!   link's name, then moved to the device).
//! - **Requests.** A device request is a journal of events ([`device::Journal`]); the gateway
//!   replays it into a core [`Request`] with [`device::rebuild`] and the span limit from the
//!   device's hello, so ignore flags, the span limit and tag replacement apply as on a server,
//!   then tags it with `device.id` and `device.firmware`. A journal that does not replay
//!   (bad nesting, no root) is counted in [`DeviceStats::invalid_requests`]; gaps in the
//!   sequence numbers in [`DeviceStats::lost`].
//! - **Keys.** The gateway holds the Scout key and app name; devices present a per-device or a
//!   fleet token in their hello and are rejected (with [`Down::Reject`]) when unknown.
//! - **Time.** Device times are ticks since boot. The gateway sends [`Down::TimeSync`] when a
//!   device connects and every [`GatewayConfig::sync_interval`]; [`ClockSync`] keeps the
//!   tightest sample. Error bound of forwarded times: half the round trip of the kept exchange,
//!   plus one device tick, plus `drift_ppm` (default 100 ppm) of the time since that exchange.
//!   Requests that arrive before the first exchange is answered are mapped from the hello's
//!   arrival time (late by the link's one-way delay).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use scout_core::command::{Register, RequestBatch, write_frame_to_slice};
use scout_core::device::{
    self, ClockSync, DeviceDrops, Down, FrameReader, NameSource, PROTOCOL_VERSION, RejectReason, Up,
};
use scout_core::{Fixed, Request, RequestIds, SplitMix64, Text, Value};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

mod forward;
#[cfg(test)]
mod tests;

pub use forward::{CoreAgentConnection, Dropped, Forward};

/// Request storage used to replay one device request: a frame of at most
/// [`device::MAX_FRAME`] bytes carries at most about 2 700 span starts (3 bytes each at least,
/// 5 with their stop) or 2 700 tags (3 bytes); past 1 024 spans or tags, 16 KiB of strings or
/// 255 levels the core's drop counters count the rest, as on a server.
type GatewayStorage = Fixed<1024, 1024, 16384, 255>;

/// Gateway settings.
#[derive(Clone)]
pub struct GatewayConfig {
    /// Scout application name (sent in `Register`).
    pub app: String,
    /// Scout key (sent in `Register`; devices never see it).
    pub key: String,
    /// Core agent address: `tcp://host:port` or a Unix socket path.
    pub core_agent: String,
    /// Tokens by device id.
    pub device_tokens: HashMap<String, String>,
    /// A token any device not listed in `device_tokens` may use.
    pub fleet_token: Option<String>,
    /// How often to repeat the time-sync exchange.
    pub sync_interval: Duration,
    /// Assumed worst device clock drift, in parts per million.
    pub drift_ppm: u32,
    /// Frames waiting per device for the core-agent connection before new ones are dropped.
    pub queue: usize,
}

impl std::fmt::Debug for GatewayConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GatewayConfig")
            .field("app", &self.app)
            .field("key", &scout_core::config::KeyPrefix(&self.key))
            .field("core_agent", &self.core_agent)
            .field("devices", &self.device_tokens.len())
            .field("fleet_token", &self.fleet_token.is_some())
            .field("sync_interval", &self.sync_interval)
            .finish_non_exhaustive()
    }
}

impl GatewayConfig {
    /// Settings with a 10 s sync interval, 100 ppm drift and a queue of 1 024 frames.
    pub fn new(app: &str, key: &str, core_agent: &str) -> Self {
        Self {
            app: app.into(),
            key: key.into(),
            core_agent: core_agent.into(),
            device_tokens: HashMap::new(),
            fleet_token: None,
            sync_interval: Duration::from_secs(10),
            drift_ppm: 100,
            queue: 1024,
        }
    }

    fn authorized(&self, device_id: &str, token: &str) -> bool {
        match self.device_tokens.get(device_id) {
            Some(t) => ct_eq(t.as_bytes(), token.as_bytes()),
            None => self
                .fleet_token
                .as_deref()
                .is_some_and(|t| ct_eq(t.as_bytes(), token.as_bytes())),
        }
    }
}

fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Counters of one device (or of one unidentified link, keyed `?<source>`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeviceStats {
    /// Connections accepted.
    pub connections: u64,
    /// Frames decoded (every message: hello, names, requests, drops, time-sync replies).
    pub frames: u64,
    /// Frames that failed to decode (COBS, payload or length).
    pub bad_frames: u64,
    /// Requests received.
    pub requests: u64,
    /// Requests refused: a journal that does not replay (bad nesting, no root), or a request
    /// that could not be encoded for the core agent.
    pub invalid_requests: u64,
    /// Requests handed to the core-agent connection.
    pub forwarded: u64,
    /// Requests dropped because the core-agent queue was full.
    pub forward_dropped: u64,
    /// Requests missing from the sequence numbers within a connection (frames garbled or cut
    /// on the link; a request lost in a failed write ends the link and is counted by the
    /// device, in `link_errors`).
    pub lost: u64,
    /// Connections rejected (unknown device, wrong token, version, no hello).
    pub rejected: u64,
    /// The device's own drop counters (cumulative since its boot), as last reported.
    pub device_drops: DeviceDrops,
    /// Error bound of the time mapping in µs when last synced (`u64::MAX` before).
    pub clock_error_us: u64,
}

/// Why a device session ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionEnd {
    /// The link closed.
    Closed,
    /// Reading or writing failed.
    Io(String),
    /// The device was rejected.
    Rejected(RejectReason),
}

/// Makes the forwarder of a device from its id.
type ForwarderFactory = Box<dyn Fn(&GatewayConfig, &str) -> Arc<dyn Forward> + Send + Sync>;

/// The gateway: shared by every link it serves.
pub struct Gateway {
    config: GatewayConfig,
    stats: Mutex<HashMap<String, DeviceStats>>,
    forwarders: Mutex<HashMap<String, Arc<dyn Forward>>>,
    factory: ForwarderFactory,
    sessions: AtomicU64,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn wall_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

struct Names(HashMap<u16, String>);
impl NameSource for Names {
    fn name(&self, id: u16) -> Option<&str> {
        self.0.get(&id).map(String::as_str)
    }
}

impl Gateway {
    /// A gateway forwarding each device through its own [`CoreAgentConnection`] (registered
    /// with the device id as host). Must be called inside a tokio runtime.
    pub fn new(config: GatewayConfig) -> Arc<Self> {
        Self::with_forwarder(config, |c, device_id| {
            Arc::new(CoreAgentConnection::spawn(
                &c.core_agent,
                &c.app,
                &c.key,
                device_id,
                c.queue,
            )) as Arc<dyn Forward>
        })
    }

    /// A gateway whose per-device forwarders come from `factory` (called once per device id).
    pub fn with_forwarder(
        config: GatewayConfig,
        factory: impl Fn(&GatewayConfig, &str) -> Arc<dyn Forward> + Send + Sync + 'static,
    ) -> Arc<Self> {
        Arc::new(Self {
            config,
            stats: Mutex::new(HashMap::new()),
            forwarders: Mutex::new(HashMap::new()),
            factory: Box::new(factory),
            sessions: AtomicU64::new(0),
        })
    }

    /// Counters by device id (`?<source>` for links that never said hello).
    pub fn stats(&self) -> HashMap<String, DeviceStats> {
        lock(&self.stats).clone()
    }

    fn stat(&self, key: &str, f: impl FnOnce(&mut DeviceStats)) {
        f(lock(&self.stats).entry(key.to_string()).or_default());
    }

    /// Accepts devices on `listener` until it fails; each connection is served in its own
    /// task.
    pub async fn serve_tcp(
        self: Arc<Self>,
        listener: tokio::net::TcpListener,
    ) -> std::io::Result<()> {
        loop {
            let (stream, peer) = listener.accept().await?;
            let _ = stream.set_nodelay(true);
            let gw = Arc::clone(&self);
            tokio::spawn(async move {
                let (r, w) = stream.into_split();
                let end = gw.session(r, w, &peer_name(peer)).await;
                log::info!("device link {peer} ended: {end:?}");
            });
        }
    }

    /// Serves the serial device at `path` (a tty, already configured: baud rate and raw mode,
    /// e.g. with `stty -F PATH 115200 raw`), reopening it one second after each session ends.
    pub async fn serve_serial(self: Arc<Self>, path: String) {
        loop {
            match open_serial(&path) {
                Ok((r, w)) => {
                    let end = self.session(r, w, &path).await;
                    log::info!("serial {path} session ended: {end:?}");
                }
                Err(e) => log::warn!("cannot open {path}: {e}"),
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    /// Serves one device link until it closes. `source` names the link in logs and stats.
    pub async fn session<R, W>(&self, mut reader: R, mut writer: W, source: &str) -> SessionEnd
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        let nonce = self.sessions.fetch_add(1, Ordering::Relaxed) ^ wall_us();
        let mut s = Session {
            gw: self,
            key: format!("?{source}"),
            device: None,
            names: Names(HashMap::new()),
            pending_sync: HashMap::new(),
            next_sync: 0,
            next_seq: None,
            nonce,
            req: Box::default(),
            out: vec![0u8; 1 << 20],
        };
        let mut rx: Box<FrameReader<{ device::MAX_FRAME }>> = Box::default();
        let mut buf = vec![0u8; 4096];
        let mut sync_timer = tokio::time::interval(self.config.sync_interval);
        sync_timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let mut replies: Vec<u8> = Vec::new();
            tokio::select! {
                r = reader.read(&mut buf) => {
                    let n = match r {
                        Ok(0) => return SessionEnd::Closed,
                        Ok(n) => n,
                        Err(e) => return SessionEnd::Io(e.to_string()),
                    };
                    let mut end = None;
                    rx.feed_raw(&buf[..n], |frame| {
                        if end.is_none() {
                            end = s.on_frame(frame, &mut replies);
                        }
                    });
                    if !replies.is_empty() {
                        if let Err(e) = writer.write_all(&replies).await {
                            return SessionEnd::Io(e.to_string());
                        }
                        let _ = writer.flush().await;
                    }
                    if let Some(reason) = end {
                        return SessionEnd::Rejected(reason);
                    }
                }
                _ = sync_timer.tick(), if s.device.is_some() => {
                    s.sync(&mut replies);
                    if let Err(e) = writer.write_all(&replies).await {
                        return SessionEnd::Io(e.to_string());
                    }
                    let _ = writer.flush().await;
                }
            }
        }
    }
}

fn peer_name(peer: SocketAddr) -> String {
    format!("tcp:{peer}")
}

struct Device {
    id: String,
    firmware: String,
    /// The device's span limit, from its hello.
    span_limit: u32,
    clock: ClockSync,
    forward: Arc<dyn Forward>,
}

struct Session<'g> {
    gw: &'g Gateway,
    key: String,
    device: Option<Device>,
    names: Names,
    pending_sync: HashMap<u32, u64>,
    next_sync: u32,
    next_seq: Option<u32>,
    nonce: u64,
    req: Box<Request<GatewayStorage>>,
    out: Vec<u8>,
}

fn push_down(out: &mut Vec<u8>, msg: &Down) {
    let mut b = [0u8; 16];
    if let Ok(n) = device::encode(msg, &mut b) {
        out.extend_from_slice(&b[..n]);
    }
}

impl Session<'_> {
    fn sync(&mut self, out: &mut Vec<u8>) {
        let id = self.next_sync;
        self.next_sync = self.next_sync.wrapping_add(1);
        if self.pending_sync.len() > 16 {
            self.pending_sync.clear();
        }
        self.pending_sync.insert(id, wall_us());
        push_down(out, &Down::TimeSync { id });
    }

    /// Handles one frame; returns a reason to end the session.
    fn on_frame(
        &mut self,
        frame: Result<&mut [u8], device::DecodeError>,
        out: &mut Vec<u8>,
    ) -> Option<RejectReason> {
        let msg = match frame.and_then(device::decode_up) {
            Ok(m) => m,
            Err(e) => {
                log::debug!("{}: bad frame: {e}", self.key);
                self.gw.stat(&self.key, |s| s.bad_frames += 1);
                return None;
            }
        };
        self.gw.stat(&self.key, |s| s.frames += 1);
        match (msg, self.device.is_some()) {
            (Up::Hello(h), _) => {
                let reason = if h.version != PROTOCOL_VERSION {
                    Some(RejectReason::Version)
                } else if !self.gw.config.authorized(h.device_id, h.token) {
                    Some(RejectReason::Unauthorized)
                } else {
                    None
                };
                if let Some(reason) = reason {
                    log::warn!(
                        "{}: rejected device {:?}: {reason:?}",
                        self.key,
                        h.device_id
                    );
                    self.gw.stat(&self.key, |s| s.rejected += 1);
                    push_down(out, &Down::Reject { reason });
                    return Some(reason);
                }
                let now = wall_us();
                let mut clock = ClockSync::new(h.tick_hz, self.gw.config.drift_ppm);
                clock.hello(h.uptime, now);
                let id = h.device_id.to_string();
                let forward = {
                    let mut f = lock(&self.gw.forwarders);
                    Arc::clone(
                        f.entry(id.clone())
                            .or_insert_with(|| (self.gw.factory)(&self.gw.config, &id)),
                    )
                };
                // Move what was counted under the link's name to the device (a device that
                // says hello again on the same link, after a reboot, keeps its counters).
                let pre = match self.device {
                    None => lock(&self.gw.stats).remove(&self.key).unwrap_or_default(),
                    Some(_) => DeviceStats::default(),
                };
                self.key = id.clone();
                self.gw.stat(&self.key, |s| {
                    s.connections += 1;
                    s.frames += pre.frames;
                    s.bad_frames += pre.bad_frames;
                });
                log::info!("device {id} (firmware {}) connected", h.firmware);
                self.device = Some(Device {
                    id,
                    firmware: h.firmware.to_string(),
                    span_limit: h.span_limit,
                    clock,
                    forward,
                });
                self.names.0.clear();
                self.next_seq = None;
                push_down(
                    out,
                    &Down::Welcome {
                        version: PROTOCOL_VERSION,
                    },
                );
                self.sync(out);
            }
            (_, false) => {
                self.gw.stat(&self.key, |s| s.rejected += 1);
                push_down(
                    out,
                    &Down::Reject {
                        reason: RejectReason::Protocol,
                    },
                );
                return Some(RejectReason::Protocol);
            }
            (Up::Name(n), true) => {
                if self.names.0.len() < 65_536 {
                    self.names.0.insert(n.id, n.name.to_string());
                }
            }
            (Up::Drops(d), true) => self.gw.stat(&self.key, |s| s.device_drops = d),
            (Up::TimeSync(r), true) => {
                if let (Some(t0), Some(dev)) =
                    (self.pending_sync.remove(&r.id), self.device.as_mut())
                {
                    let t1 = wall_us();
                    dev.clock.exchange(t0, r.uptime, t1);
                    let err = dev.clock.error_at(t1);
                    self.gw.stat(&self.key, |s| s.clock_error_us = err);
                }
            }
            (Up::Request(r), true) => self.on_request(&r),
        }
        None
    }

    fn on_request(&mut self, r: &device::Journal<'_>) {
        let Some(dev) = self.device.as_ref() else {
            return;
        };
        let lost = match self.next_seq {
            Some(expected) => u64::from(r.seq.wrapping_sub(expected)).min(1 << 20),
            None => 0,
        };
        self.next_seq = Some(r.seq.wrapping_add(1));
        self.gw.stat(&self.key, |s| {
            s.requests += 1;
            s.lost += lost;
        });
        let mut rng =
            SplitMix64::new(self.nonce ^ (u64::from(r.seq) << 32) ^ hash(dev.id.as_bytes()));
        let ids = RequestIds::generate(&mut rng);
        let clock = dev.clock;
        let limit = dev.span_limit;
        let to_wall = |t| clock.to_wall(t);
        match device::rebuild(r, &self.names, ids, limit, to_wall, &mut self.req) {
            Ok(0) => {}
            // Also in the device's cumulative `DeviceDrops::items`.
            Ok(n) => log::debug!("{}: request {}: {n} items not recorded", self.key, r.seq),
            Err(e) => {
                log::debug!("{}: invalid request {}: {e}", self.key, r.seq);
                self.gw.stat(&self.key, |s| s.invalid_requests += 1);
                return;
            }
        }
        let _ = self
            .req
            .tag_request(Text::Static("device.id"), Value::Str(&dev.id));
        if !dev.firmware.is_empty() {
            let _ = self
                .req
                .tag_request(Text::Static("device.firmware"), Value::Str(&dev.firmware));
        }
        let n = match write_frame_to_slice(&RequestBatch(&*self.req), &mut self.out, 1 << 24) {
            Ok(n) => n,
            Err(e) => {
                log::warn!("{}: request {} not encoded: {e:?}", self.key, r.seq);
                self.gw.stat(&self.key, |s| s.invalid_requests += 1);
                return;
            }
        };
        match dev.forward.forward(self.out[..n].to_vec()) {
            Ok(()) => self.gw.stat(&self.key, |s| s.forwarded += 1),
            Err(Dropped) => self.gw.stat(&self.key, |s| s.forward_dropped += 1),
        }
    }
}

fn hash(b: &[u8]) -> u64 {
    b.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &x| {
        (h ^ u64::from(x)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Opens a serial device twice (one handle to read, one to write, so neither waits for the
/// other).
fn open_serial(path: &str) -> std::io::Result<(tokio::fs::File, tokio::fs::File)> {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)?;
    let w = f.try_clone()?;
    Ok((tokio::fs::File::from_std(f), tokio::fs::File::from_std(w)))
}

/// The `Register` frame a forwarder sends first.
pub(crate) fn register_frame(app: &str, key: &str, host: &str) -> Vec<u8> {
    let mut buf = vec![0u8; 4096];
    let reg = Register {
        app,
        key,
        host: Some(host),
        language: scout_core::LANGUAGE,
        api_version: scout_core::API_VERSION,
    };
    match write_frame_to_slice(&reg, &mut buf, 4092) {
        Ok(n) => {
            buf.truncate(n);
            buf
        }
        Err(_) => Vec::new(),
    }
}

/// Channel type of [`CoreAgentConnection`].
pub(crate) type FrameTx = mpsc::Sender<Vec<u8>>;
