//! The background sender: one thread with its own tokio runtime owns the connection to the core
//! agent. It registers on every new connection, writes queued messages (pipelined, with a
//! bounded window of unacknowledged ones), reads and checks every reply on a reader task, sends
//! the CPU and memory samplers, reconnects with capped exponential backoff, and sends again on
//! the new connection whatever the old one did not acknowledge.
//!
//! Waking: when quiet, the sender waits on the queue, so the first message wakes it. While
//! messages keep coming it drains the queue every [`TICK`] instead, so that application
//! threads do not pay a wake-up (a system call) per request; they wake it early only when
//! the queue passes a high-water mark or on a flush. After [`IDLE_TICKS`] empty ticks it waits
//! on the queue again.

use crate::agent::Shared;
use crate::pool::StdRequest;
use crate::stats::{self, Stats};
use scout_core::Config;
use scout_core::command::{Encode, Register, RequestBatch};
use scout_core::config::Address;
use scout_core::json::FnSink;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, watch};

/// Largest message the agent sends (a 1 500-span request with long SQL is a few MB).
pub const MAX_FRAME: usize = 32 << 20;
/// Largest reply accepted from the core agent.
const MAX_REPLY: usize = 1 << 20;
/// Messages written but not yet acknowledged, per connection.
const WINDOW: usize = 256;
/// Most messages coalesced into one write.
const MAX_BATCH: usize = 64;
/// Attempts per message before it is dropped (a message that kills every connection).
const MAX_ATTEMPTS: u8 = 3;
const BACKOFF_START: Duration = Duration::from_millis(100);
const BACKOFF_CAP: Duration = Duration::from_secs(5);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// How often samplers run and non-zero drop counters are logged.
const SAMPLE_EVERY: Duration = Duration::from_secs(60);
/// While requests keep coming, the queue is drained on this tick rather than on a wake-up per
/// request (a wake-up is a system call the application thread would pay).
const TICK: Duration = Duration::from_millis(2);
/// Empty ticks after which the sender waits on the queue itself again (woken by the next
/// message: one wake-up per quiet period).
const IDLE_TICKS: u8 = 50;

/// What the application side queues.
pub(crate) enum Msg {
    Request(Box<StdRequest>),
    Frame(Vec<u8>),
    Flush(std::sync::mpsc::SyncSender<()>),
}

/// Controls a running sender.
#[derive(Debug)]
pub(crate) struct SenderCtl {
    shutdown: watch::Sender<Option<Instant>>,
    done: std::sync::mpsc::Receiver<Finished>,
}

/// How the sender ended.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Finished {
    pub(crate) flushed: bool,
    pub(crate) pending: u64,
}

impl SenderCtl {
    /// Asks the sender to flush and stop, and waits at most `timeout` (plus a small margin).
    pub(crate) fn shutdown(self, timeout: Duration, message: bool) -> Finished {
        let deadline = Instant::now() + timeout;
        if message && !timeout.is_zero() {
            eprintln!(
                "Scout draining queued events for up to {:.1} seconds",
                timeout.as_secs_f64()
            );
        }
        let _ = self.shutdown.send(Some(deadline));
        match self.done.recv_timeout(timeout + Duration::from_millis(200)) {
            Ok(f) => f,
            Err(_) => {
                log::warn!(target: "scout_apm", "core agent did not take queued data within {timeout:?}; shutting down anyway");
                Finished {
                    flushed: false,
                    pending: 0,
                }
            }
        }
    }
}

#[derive(Debug, Clone)]
struct Settings {
    address: String,
    app: String,
    key: String,
    host: Option<String>,
    log_payload: bool,
}

pub(crate) fn spawn(shared: Arc<Shared>, rx: mpsc::Receiver<Msg>, config: &Config) -> SenderCtl {
    let settings = Settings {
        address: config.core_agent_socket_path.as_str().to_owned(),
        app: config.name.as_str().to_owned(),
        key: config.key.as_str().to_owned(),
        host: config.hostname.map(|h| h.as_str().to_owned()),
        log_payload: config.log_payload_content,
    };
    let (shutdown, shutdown_rx) = watch::channel(None);
    let (done_tx, done) = std::sync::mpsc::sync_channel(1);
    let spawned = std::thread::Builder::new()
        .name("scout-sender".into())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    log::error!(target: "scout_apm", "cannot start the sender runtime: {e}");
                    return;
                }
            };
            // Built inside the runtime (it owns timers). A panic here would be a bug in the
            // agent: it is caught and logged so the application goes on (queued data is then
            // dropped and counted as the queue fills).
            let run = std::panic::AssertUnwindSafe(|| {
                rt.block_on(async move { Sender::new(shared, rx, settings, shutdown_rx).run().await })
            });
            match std::panic::catch_unwind(run) {
                Ok(finished) => {
                    let _ = done_tx.send(finished);
                }
                Err(_) => {
                    log::error!(target: "scout_apm", "the Scout sender stopped after an internal error; no more data will be sent");
                    let _ = done_tx.send(Finished { flushed: false, pending: 0 });
                }
            }
        });
    if let Err(e) = spawned {
        log::error!(target: "scout_apm", "cannot start the sender thread: {e}");
    }
    SenderCtl { shutdown, done }
}

trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

async fn connect(address: &str) -> std::io::Result<Box<dyn Stream>> {
    match Address::parse(address) {
        Address::Tcp(hp) => {
            let s = tokio::net::TcpStream::connect(hp).await?;
            let _ = s.set_nodelay(true);
            Ok(Box::new(s))
        }
        #[cfg(unix)]
        Address::Unix(path) => Ok(Box::new(tokio::net::UnixStream::connect(path).await?)),
        #[cfg(not(unix))]
        Address::Unix(_) => Err(std::io::Error::other("Unix sockets are not supported here")),
    }
}

/// A message on its way.
struct Out {
    frame: Vec<u8>,
    attempts: u8,
    register: bool,
    request: bool,
}

struct Sender {
    shared: Arc<Shared>,
    rx: mpsc::Receiver<Msg>,
    settings: Settings,
    shutdown: watch::Receiver<Option<Instant>>,
    deadline: Option<Instant>,
    /// Written on the current connection, awaiting a reply, in order.
    unacked: VecDeque<Out>,
    /// To write first on the next connection.
    resend: VecDeque<Out>,
    flush_waiters: Vec<std::sync::mpsc::SyncSender<()>>,
    samplers: crate::metadata::Samplers,
    samplers_started: bool,
    next_sample: Instant,
    last_logged: Stats,
    free_frames: Vec<Vec<u8>>,
    batch: Vec<Out>,
    wbuf: Vec<u8>,
    closed: bool,
    /// Draining on a tick (recent traffic) rather than waiting on the queue.
    ticking: bool,
    /// Consecutive ticks that found the queue empty.
    idle_ticks: u8,
}

enum Step {
    Reconnect,
    Stop,
}

impl Sender {
    fn new(
        shared: Arc<Shared>,
        rx: mpsc::Receiver<Msg>,
        settings: Settings,
        shutdown: watch::Receiver<Option<Instant>>,
    ) -> Self {
        Self {
            shared,
            rx,
            settings,
            shutdown,
            deadline: None,
            unacked: VecDeque::new(),
            resend: VecDeque::new(),
            flush_waiters: Vec::new(),
            samplers: crate::metadata::Samplers::new(),
            samplers_started: false,
            next_sample: Instant::now(),
            last_logged: Stats::default(),
            free_frames: Vec::new(),
            batch: Vec::new(),
            wbuf: Vec::new(),
            closed: false,
            ticking: false,
            idle_ticks: 0,
        }
    }

    fn pending(&self) -> u64 {
        (self.unacked.iter().filter(|o| !o.register).count() + self.resend.len() + self.rx.len())
            as u64
    }

    fn shutting_down_and_idle(&self) -> bool {
        (self.deadline.is_some() || self.closed)
            && self.rx.is_empty()
            && self.resend.is_empty()
            && self.unacked.iter().all(|o| o.register)
    }

    async fn run(mut self) -> Finished {
        let mut backoff = BACKOFF_START;
        let mut logged_failure = false;
        loop {
            if self.shutting_down_and_idle() {
                return Finished {
                    flushed: true,
                    pending: 0,
                };
            }
            if self.deadline.is_some_and(|d| Instant::now() >= d) {
                return Finished {
                    flushed: false,
                    pending: self.pending(),
                };
            }
            let dl = self.deadline;
            let address = self.settings.address.clone();
            let attempt = tokio::time::timeout(CONNECT_TIMEOUT, connect(&address));
            let stream = tokio::select! {
                r = attempt => match r {
                    Ok(Ok(s)) => Some(s),
                    Ok(Err(e)) => { self.connect_failed(&e.to_string(), &mut logged_failure); None }
                    Err(_) => { self.connect_failed("timed out", &mut logged_failure); None }
                },
                _ = wait_until(dl) => None,
                _ = self.shutdown.changed() => { self.deadline = *self.shutdown.borrow(); None }
            };
            let Some(stream) = stream else {
                let wait = tokio::time::sleep(backoff);
                tokio::select! {
                    _ = wait => {}
                    _ = wait_until(dl) => {}
                    _ = self.shutdown.changed() => { self.deadline = *self.shutdown.borrow(); }
                }
                backoff = (backoff * 2).min(BACKOFF_CAP);
                continue;
            };
            if logged_failure {
                log::info!(target: "scout_apm", "connected to the core agent at {}", self.settings.address);
            }
            logged_failure = false;
            backoff = BACKOFF_START;
            match self.serve(stream).await {
                Step::Stop => {
                    let flushed = self.shutting_down_and_idle();
                    return Finished {
                        flushed,
                        pending: self.pending(),
                    };
                }
                Step::Reconnect => {
                    stats::inc(&self.shared.counters.connections_lost);
                    // Whatever was not acknowledged goes first on the next connection.
                    while let Some(out) = self.unacked.pop_back() {
                        if !out.register {
                            self.resend.push_front(out);
                        }
                    }
                }
            }
        }
    }

    fn connect_failed(&mut self, why: &str, logged: &mut bool) {
        stats::inc(&self.shared.counters.connect_failures);
        if !*logged {
            log::warn!(target: "scout_apm", "cannot connect to the core agent at {}: {why}; retrying with backoff, data stays queued", self.settings.address);
            *logged = true;
        }
    }

    /// Works one connection until it fails or the sender stops.
    async fn serve(&mut self, stream: Box<dyn Stream>) -> Step {
        let (reader, mut writer) = tokio::io::split(stream);
        let (ack_tx, mut ack_rx) = mpsc::unbounded_channel();
        let reader_task = tokio::spawn(read_replies(reader, ack_tx, self.shared.clone()));
        let step = self.serve_inner(&mut writer, &mut ack_rx).await;
        reader_task.abort();
        step
    }

    async fn serve_inner(
        &mut self,
        writer: &mut (impl AsyncWrite + Unpin),
        acks: &mut mpsc::UnboundedReceiver<()>,
    ) -> Step {
        let register = self.register_frame();
        if !self
            .write(
                writer,
                Out {
                    frame: register,
                    attempts: 0,
                    register: true,
                    request: false,
                },
            )
            .await
        {
            return Step::Reconnect;
        }
        while let Some(mut out) = self.resend.pop_front() {
            out.attempts += 1;
            if out.attempts >= MAX_ATTEMPTS {
                stats::inc(&self.shared.counters.dropped_after_retries);
                continue;
            }
            stats::inc(&self.shared.counters.messages_resent);
            if !self.write(writer, out).await {
                return Step::Reconnect;
            }
        }
        loop {
            if self.shutting_down_and_idle() {
                self.answer_flushes();
                return Step::Stop;
            }
            let window_open = self.unacked.len() < WINDOW && !self.closed;
            let dl = self.deadline;
            let shared = self.shared.clone();
            tokio::select! {
                biased;
                ack = acks.recv() => match ack {
                    Some(()) => {
                        if let Some(out) = self.unacked.pop_front()
                            && !out.register
                        {
                            self.recycle(out.frame);
                        }
                        if self.unacked.iter().all(|o| o.register) {
                            self.answer_flushes();
                        }
                    }
                    None => return Step::Reconnect,
                },
                _ = wait_until(dl) => return Step::Stop,
                _ = self.shutdown.changed() => { self.deadline = *self.shutdown.borrow(); }
                msg = self.rx.recv(), if window_open && !self.ticking => match msg {
                    Some(msg) => {
                        self.ticking = true;
                        self.idle_ticks = 0;
                        if !self.send_queued(writer, Some(msg)).await {
                            return Step::Reconnect;
                        }
                    }
                    None => self.closed = true,
                },
                _ = tick_or_wake(&shared), if window_open && self.ticking => {
                    shared.wake_pending.store(false, std::sync::atomic::Ordering::Relaxed);
                    if self.rx.is_empty() {
                        self.idle_ticks = self.idle_ticks.saturating_add(1);
                        // Quiet: wait on the queue again (which also notices it closing).
                        self.ticking = self.idle_ticks < IDLE_TICKS;
                    } else {
                        self.idle_ticks = 0;
                        while !self.rx.is_empty() && self.unacked.len() < WINDOW {
                            if !self.send_queued(writer, None).await {
                                return Step::Reconnect;
                            }
                        }
                    }
                },
                _ = tokio::time::sleep_until(self.next_sample.into()), if self.samplers_started => {
                    self.next_sample = Instant::now() + SAMPLE_EVERY;
                    self.log_drops();
                    for frame in self.samplers.sample() {
                        if !self.write(writer, Out { frame, attempts: 0, register: false, request: false }).await {
                            return Step::Reconnect;
                        }
                    }
                }
            }
        }
    }

    /// Writes `first` and whatever else is queued (up to a batch, within the window) at once.
    /// False when the connection failed.
    async fn send_queued(
        &mut self,
        writer: &mut (impl AsyncWrite + Unpin),
        first: Option<Msg>,
    ) -> bool {
        let mut batch = std::mem::take(&mut self.batch);
        if let Some(msg) = first {
            batch.extend(self.prepare(msg));
        }
        while batch.len() < MAX_BATCH && self.unacked.len() + batch.len() < WINDOW {
            match self.rx.try_recv() {
                Ok(m) => batch.extend(self.prepare(m)),
                Err(_) => break,
            }
        }
        let ok = self.write_batch(writer, &mut batch).await;
        self.batch = batch;
        if ok && self.unacked.iter().all(|o| o.register) {
            self.answer_flushes();
        }
        ok
    }

    fn answer_flushes(&mut self) {
        if self.rx.is_empty() && self.resend.is_empty() {
            for w in self.flush_waiters.drain(..) {
                let _ = w.try_send(());
            }
        }
    }

    fn register_frame(&self) -> Vec<u8> {
        let reg = Register {
            app: &self.settings.app,
            key: &self.settings.key,
            host: self.settings.host.as_deref(),
            language: scout_core::LANGUAGE,
            api_version: scout_core::API_VERSION,
        };
        frame_of(&reg, Vec::new()).unwrap_or_default()
    }

    /// Turns a queued message into a frame (or handles it).
    fn prepare(&mut self, msg: Msg) -> Option<Out> {
        match msg {
            Msg::Frame(frame) => Some(Out {
                frame,
                attempts: 0,
                register: false,
                request: false,
            }),
            Msg::Flush(w) => {
                // Answered once everything before it is written and acknowledged.
                self.flush_waiters.push(w);
                None
            }
            Msg::Request(req) => {
                let out = self.encode_request(&req);
                self.shared.pool.give(req);
                out
            }
        }
    }

    fn encode_request(&mut self, req: &StdRequest) -> Option<Out> {
        let c = &self.shared.counters;
        let drops = req.drops();
        stats::add(&c.spans_dropped_limit, u64::from(drops.span_limit));
        stats::add(
            &c.data_dropped_capacity,
            drops.total() - u64::from(drops.span_limit),
        );
        if !self.samplers_started {
            self.samplers_started = true;
            self.next_sample = Instant::now();
        }
        let buf = self.free_frames.pop().unwrap_or_default();
        match frame_of(&RequestBatch(req), buf) {
            Some(frame) => {
                if self.settings.log_payload {
                    log::debug!(target: "scout_apm", "payload: {}", String::from_utf8_lossy(&frame[4..]));
                }
                Some(Out {
                    frame,
                    attempts: 0,
                    register: false,
                    request: true,
                })
            }
            None => {
                stats::inc(&c.dropped_too_large);
                None
            }
        }
    }

    fn recycle(&mut self, mut frame: Vec<u8>) {
        if self.free_frames.len() < 64 && frame.capacity() <= 256 * 1024 {
            frame.clear();
            self.free_frames.push(frame);
        }
    }

    /// Writes one frame; false when the connection failed (the frame is kept for resending).
    /// Writes several frames with one write; on failure they are all kept for resending.
    async fn write_batch(
        &mut self,
        writer: &mut (impl AsyncWrite + Unpin),
        batch: &mut Vec<Out>,
    ) -> bool {
        if batch.len() <= 1 {
            return match batch.pop() {
                Some(out) => self.write(writer, out).await,
                None => true,
            };
        }
        self.wbuf.clear();
        for out in batch.iter() {
            self.wbuf.extend_from_slice(&out.frame);
        }
        let r = tokio::time::timeout(WRITE_TIMEOUT, writer.write_all(&self.wbuf)).await;
        if self.wbuf.capacity() > 4 << 20 {
            self.wbuf = Vec::new();
        }
        let ok = matches!(r, Ok(Ok(())));
        if ok {
            for out in batch.drain(..) {
                if out.request && out.attempts == 0 {
                    stats::inc(&self.shared.counters.requests_sent);
                }
                self.unacked.push_back(out);
            }
        } else {
            log::warn!(target: "scout_apm", "lost the connection to the core agent while writing; will reconnect and resend");
            for out in batch.drain(..).rev() {
                if !out.register {
                    self.resend.push_front(out);
                }
            }
        }
        ok
    }

    async fn write(&mut self, writer: &mut (impl AsyncWrite + Unpin), out: Out) -> bool {
        let r = tokio::time::timeout(WRITE_TIMEOUT, writer.write_all(&out.frame)).await;
        let ok = matches!(r, Ok(Ok(())));
        if ok {
            if out.request && out.attempts == 0 {
                stats::inc(&self.shared.counters.requests_sent);
            }
            self.unacked.push_back(out);
        } else {
            log::warn!(target: "scout_apm", "lost the connection to the core agent while writing; will reconnect and resend");
            if !out.register {
                self.resend.push_front(out);
            }
        }
        ok
    }

    fn log_drops(&mut self) {
        let now = self.shared.counters.snapshot();
        if now.total_dropped() > self.last_logged.total_dropped() {
            log::warn!(target: "scout_apm", "Scout APM dropped data: {now:?}");
        }
        self.last_logged = now;
    }
}

async fn wait_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d.into()).await,
        None => std::future::pending().await,
    }
}

/// Frames `cmd` into `buf` (4-byte big-endian length, then the JSON).
pub(crate) fn frame_of<E: Encode>(cmd: &E, mut buf: Vec<u8>) -> Option<Vec<u8>> {
    buf.clear();
    buf.extend_from_slice(&[0; 4]);
    let _ = cmd.encode(&mut FnSink(|b: &[u8]| buf.extend_from_slice(b)));
    let len = buf.len() - 4;
    if len > MAX_FRAME {
        return None;
    }
    buf[..4].copy_from_slice(&(len as u32).to_be_bytes());
    Some(buf)
}

/// Reads replies until the connection ends; acknowledges each one to the writer.
async fn read_replies(
    reader: impl AsyncRead + Unpin,
    acks: mpsc::UnboundedSender<()>,
    shared: Arc<Shared>,
) {
    let mut reader = tokio::io::BufReader::with_capacity(64 * 1024, reader);
    let mut body = Vec::new();
    let mut logged = 0u32;
    loop {
        let mut len = [0u8; 4];
        if reader.read_exact(&mut len).await.is_err() {
            return;
        }
        let len = u32::from_be_bytes(len) as usize;
        if len > MAX_REPLY {
            log::warn!(target: "scout_apm", "core agent reply of {len} bytes is too large; reconnecting");
            stats::inc(&shared.counters.reply_errors);
            return;
        }
        body.resize(len, 0);
        if reader.read_exact(&mut body).await.is_err() {
            return;
        }
        stats::inc(&shared.counters.replies);
        match scout_core::reply::decode_reply(&body) {
            Ok(r) if r.is_success() => {}
            Ok(r) => {
                stats::inc(&shared.counters.reply_errors);
                if logged < 20 {
                    logged += 1;
                    log::warn!(target: "scout_apm", "core agent answered {}: {}", r.command, r.message.unwrap_or("(no message)"));
                }
            }
            Err(e) => {
                stats::inc(&shared.counters.reply_errors);
                if logged < 20 {
                    logged += 1;
                    log::warn!(target: "scout_apm", "undecodable core agent reply: {e}");
                }
            }
        }
        if acks.send(()).is_err() {
            return;
        }
    }
}

/// The next tick of a sender draining on ticks, or an early wake-up from the application.
async fn tick_or_wake(shared: &Shared) {
    tokio::select! {
        _ = tokio::time::sleep(TICK) => {}
        _ = shared.wake.notified() => {}
    }
}
