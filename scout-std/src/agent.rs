//! Installing the agent, its shared state, and handing finished requests to the sender.

use crate::pool::{Pool, StdRequest};
use crate::sender::{self, Msg, SenderCtl};
use crate::stats::{self, Counters, Stats};
use scout_core::{Config, RequestIds, SplitMix64, Timestamp};
use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Finished requests (and events) that may wait for the sender. When full, the newest is
/// dropped and counted.
pub const QUEUE_CAPACITY: usize = 1024;

/// State shared by the application threads and the sender.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) counters: Counters,
    pub(crate) pool: Pool,
    pub(crate) config: RwLock<Config>,
    span_limit: AtomicU64,
    backtrace_us: AtomicU64,
    /// The settings send every request not tagged `ignore_transaction` (no sampling or
    /// ignore rule): the common case skips the sampling decision.
    sends_everything: AtomicBool,
    running: AtomicBool,
    tx: tokio::sync::mpsc::Sender<Msg>,
    /// Wakes a sender that is draining on its tick before the tick (queue filling up, flush).
    pub(crate) wake: tokio::sync::Notify,
    /// A wake-up is on its way (at most one per drain, whatever the number of threads).
    pub(crate) wake_pending: AtomicBool,
}

/// Queued messages from which the application wakes a ticking sender early.
const WAKE_AT: usize = 256;

impl Shared {
    /// A new request, begun at `now`, from the pool.
    pub(crate) fn new_request(&self, now: Timestamp) -> Box<StdRequest> {
        let ids = RNG.with(|r| RequestIds::generate(&mut *r.borrow_mut()));
        self.pool
            .take(ids, now, self.span_limit.load(Relaxed) as u32)
    }

    /// Hands a finished request to the sender without waiting.
    pub(crate) fn submit(&self, req: Box<StdRequest>) {
        if !req.is_real() {
            self.pool.give(req);
            return;
        }
        if !self.running.load(Relaxed) {
            stats::inc(&self.counters.dropped_not_running);
            self.pool.give(req);
            return;
        }
        // Ignore and sampling rules, decided when the request finishes (settings may change).
        let ignored = matches!(
            req.request_tag("ignore_transaction"),
            Some(scout_core::Value::Bool(true))
        );
        if (ignored || !self.sends_everything.load(Relaxed)) && !self.sampled_in(&req, ignored) {
            stats::inc(&self.counters.requests_sampled_out);
            self.pool.give(req);
            return;
        }
        match self.tx.try_send(Msg::Request(req)) {
            Ok(()) => {
                stats::inc(&self.counters.requests_queued);
                // While requests keep coming the sender drains the queue on a tick, so that
                // application threads do not pay for waking a thread on every request; it is
                // woken early only when the queue fills up.
                if self.tx.capacity() + WAKE_AT <= QUEUE_CAPACITY {
                    self.wake_sender();
                }
            }
            Err(e) => {
                stats::inc(&self.counters.dropped_queue_full);
                if let Msg::Request(req) = e.into_inner() {
                    self.pool.give(req);
                }
            }
        }
    }

    /// The sampling decision for a request under the current settings.
    fn sampled_in(&self, req: &StdRequest, ignored: bool) -> bool {
        let draw = RNG.with(|r| (r.borrow_mut().next_u64() >> 11) as f64 / (1u64 << 53) as f64);
        match self.config.read() {
            Ok(cfg) => scout_core::sampling::should_send(
                &cfg,
                req.operation().unwrap_or(""),
                ignored,
                draw,
            ),
            Err(_) => true,
        }
    }

    /// Wakes the sender now, once until it has drained the queue.
    pub(crate) fn wake_sender(&self) {
        if !self.wake_pending.swap(true, Relaxed) {
            self.wake.notify_one();
        }
    }

    /// Queues an already framed message (events).
    pub(crate) fn submit_frame(&self, frame: Vec<u8>) {
        if self.tx.try_send(Msg::Frame(frame)).is_err() {
            stats::inc(&self.counters.events_dropped_queue_full);
        }
    }

    pub(crate) fn backtrace_threshold_us(&self) -> u64 {
        self.backtrace_us.load(Relaxed)
    }
}

thread_local! {
    static RNG: RefCell<SplitMix64> = RefCell::new(SplitMix64::new(seed()));
}

/// Per-thread seed from std's randomly keyed hasher, the time and the thread.
pub(crate) fn seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos(),
    );
    h.write(format!("{:?}", std::thread::current().id()).as_bytes());
    h.finish()
}

/// The wall clock as a [`Timestamp`].
pub(crate) fn now() -> Timestamp {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    Timestamp::from_secs_micros(d.as_secs(), d.subsec_micros())
}

static AGENT: RwLock<Option<Arc<Shared>>> = RwLock::new(None);
static CONTROL: Mutex<Option<SenderCtl>> = Mutex::new(None);

/// Set while an agent is installed: lets the API skip the lock when none is (a hint only;
/// [`active`] decides).
static INSTALLED: AtomicBool = AtomicBool::new(false);

/// The installed, running agent.
pub(crate) fn active() -> Option<Arc<Shared>> {
    if !installed() {
        return None;
    }
    AGENT.read().ok().and_then(|a| a.clone())
}

/// False when no agent is installed (then nothing is recorded), without taking a lock.
pub(crate) fn installed() -> bool {
    INSTALLED.load(std::sync::atomic::Ordering::Acquire)
}

/// Optional facts for [`install_with`].
#[derive(Debug, Clone, Default)]
pub struct InstallOptions {
    /// A revision SHA captured at build time (see [`crate::build`]), used when neither the
    /// `revision_sha` setting, `SCOUT_REVISION_SHA` nor `HEROKU_SLUG_COMMIT` gives one.
    pub build_revision_sha: Option<String>,
    /// `(name, version)` of the libraries the application was built with, for the metadata.
    pub libraries: Vec<(String, String)>,
    /// Skip reading `SCOUT_*` environment variables (tests).
    pub ignore_environment: bool,
}

/// Installs the agent with `config` from code, under `SCOUT_*` environment variables.
///
/// Returns at once: connecting to (and, if configured, downloading and launching) the core
/// agent happens in the background while finished requests queue. With `monitor` off, or on
/// Windows, nothing starts and every API call is a near-free no-op. Dropping the returned
/// guard shuts the agent down, flushing for up to `shutdown_timeout_seconds`.
///
/// ```
/// let agent = scout_std::install(scout_core::Config::new().name("My App").key("...").monitor(false));
/// assert!(!agent.is_active());
/// ```
pub fn install(config: Config) -> AgentGuard {
    install_with(config, InstallOptions::default())
}

/// [`install`] with extra facts about the application.
pub fn install_with(config: Config, options: InstallOptions) -> AgentGuard {
    let config = crate::settings::resolve(config, &options);
    if cfg!(windows) {
        log::info!(target: "scout_apm", "Scout APM is not supported on Windows; not starting");
        return AgentGuard { active: false };
    }
    if !config.monitor {
        log::info!(target: "scout_apm", "monitor is off; Scout APM not started");
        return AgentGuard { active: false };
    }
    let Ok(mut slot) = AGENT.write() else {
        return AgentGuard { active: false };
    };
    if slot.is_some() {
        log::warn!(target: "scout_apm", "Scout APM already installed; ignoring the second install");
        return AgentGuard { active: false };
    }
    log::info!(
        target: "scout_apm",
        "installing Scout APM: app {:?}, key {}, core agent at {}",
        config.name.as_str(),
        config.key_prefix(),
        config.core_agent_socket_path.as_str()
    );
    let (tx, rx) = tokio::sync::mpsc::channel(QUEUE_CAPACITY);
    let shared = Arc::new(Shared {
        counters: Counters::default(),
        pool: Pool::default(),
        span_limit: AtomicU64::new(u64::from(config.span_limit)),
        backtrace_us: AtomicU64::new(u64::from(config.backtrace_threshold_ms) * 1000),
        sends_everything: AtomicBool::new(scout_core::sampling::sends_everything(&config)),
        running: AtomicBool::new(true),
        config: RwLock::new(config),
        tx,
        wake: tokio::sync::Notify::new(),
        wake_pending: AtomicBool::new(false),
    });
    shared.submit_frame(crate::metadata::metadata_frame(&config, &options.libraries));
    let ctl = sender::spawn(shared.clone(), rx, &config);
    #[cfg(feature = "download")]
    if config.core_agent_launch {
        crate::launch::spawn_manager(&config);
    }
    *slot = Some(shared);
    INSTALLED.store(true, std::sync::atomic::Ordering::Release);
    if let Ok(mut c) = CONTROL.lock() {
        *c = Some(ctl);
    }
    AgentGuard { active: true }
}

/// Shuts the agent down when dropped (see [`shutdown`]).
#[derive(Debug)]
#[must_use = "dropping the guard shuts the agent down"]
pub struct AgentGuard {
    active: bool,
}

impl AgentGuard {
    /// True if this guard installed a running agent.
    pub fn is_active(&self) -> bool {
        self.active
    }
    /// Keeps the agent running for the rest of the process (no flush at drop).
    pub fn forget(mut self) {
        self.active = false;
    }
}

impl Drop for AgentGuard {
    fn drop(&mut self) {
        if self.active {
            shutdown();
        }
    }
}

/// What [`shutdown`] achieved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShutdownReport {
    /// True if everything queued was sent and acknowledged before the timeout.
    pub flushed: bool,
    /// Messages still queued or unacknowledged when it returned.
    pub pending: u64,
    /// Counters at the end.
    pub stats: Stats,
}

/// Stops the agent: flushes what is queued for up to `shutdown_timeout_seconds`, then returns,
/// whatever the core agent does. Works with no runtime, and inside current-thread and
/// multi-thread tokio runtimes (the sender runs on its own thread). Later API calls are no-ops.
pub fn shutdown() -> ShutdownReport {
    let shared = AGENT.write().ok().and_then(|mut a| {
        INSTALLED.store(false, std::sync::atomic::Ordering::Release);
        a.take()
    });
    let ctl = CONTROL.lock().ok().and_then(|mut c| c.take());
    let Some(shared) = shared else {
        return ShutdownReport {
            flushed: true,
            pending: 0,
            stats: Stats::default(),
        };
    };
    shared.running.store(false, Relaxed);
    let (timeout, message) = shared
        .config
        .read()
        .map(|c| (c.shutdown_timeout_seconds, c.shutdown_message_enabled))
        .unwrap_or((2.0, true));
    let timeout = Duration::from_secs_f64(timeout.clamp(0.0, 3600.0));
    let report = match ctl {
        Some(ctl) => ctl.shutdown(timeout, message),
        None => sender::Finished {
            flushed: false,
            pending: 0,
        },
    };
    let stats = shared.counters.snapshot();
    if stats.total_dropped() > 0 {
        log::warn!(target: "scout_apm", "Scout APM shut down; data dropped: {stats:?}");
    }
    ShutdownReport {
        flushed: report.flushed,
        pending: report.pending,
        stats,
    }
}

/// The agent's counters (all zero when not installed).
pub fn stats() -> Stats {
    active().map(|a| a.counters.snapshot()).unwrap_or_default()
}

/// Waits until everything queued so far was sent and acknowledged, or `timeout` passed.
/// Returns true when flushed. Never call it on a hot path.
pub fn flush(timeout: Duration) -> bool {
    let Some(shared) = active() else { return true };
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    let queued = shared.tx.try_send(Msg::Flush(tx));
    shared.wake_sender();
    if queued.is_err() {
        return false;
    }
    rx.recv_timeout(timeout).is_ok()
}

/// Runs `f` with the installed agent's current settings (None when not installed). Cheap: a
/// shared read lock, no copy.
pub fn with_config<R>(f: impl FnOnce(&Config) -> R) -> Option<R> {
    let shared = active()?;
    let cfg = shared.config.read().ok()?;
    Some(f(&cfg))
}

/// Changes settings at run time (sampling, ignore lists, backtrace threshold, span limit) by
/// name, as with `SCOUT_*` variables. Connection settings apply only at install.
pub fn set_setting(key: &str, value: &str) -> Result<(), scout_core::config::ErrorKind> {
    let Some(shared) = active() else {
        return Ok(());
    };
    let mut cfg = shared
        .config
        .write()
        .map_err(|_| scout_core::config::ErrorKind::InvalidChoice)?;
    cfg.set(key, value)?;
    shared.span_limit.store(u64::from(cfg.span_limit), Relaxed);
    shared
        .backtrace_us
        .store(u64::from(cfg.backtrace_threshold_ms) * 1000, Relaxed);
    shared
        .sends_everything
        .store(scout_core::sampling::sends_everything(&cfg), Relaxed);
    Ok(())
}
