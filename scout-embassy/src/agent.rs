//! The static agent: request slots, name table and the send queue behind a critical section.

use core::cell::RefCell;
use core::task::Waker;

use critical_section::Mutex;
use heapless::Deque;
use scout_core::device::{self, DeviceDrops, NameTable, RequestFrame};
use scout_core::{
    Fixed, Request, RequestIds, SpanFlags, SpanStart, Storage, Text, Timestamp, Value,
};

use crate::fmt::{log_debug, log_warn};

/// Default request storage on a device: 16 spans, 16 tags, 64 bytes of copied strings, 8 levels.
pub type DeviceStorage = Fixed<16, 16, 64, 8>;

/// What the agent needs to know, built with `const` setters.
#[derive(Debug, Clone, Copy)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct AgentConfig {
    pub(crate) enabled: bool,
    pub(crate) span_limit: u32,
    pub(crate) device_id: &'static str,
    pub(crate) firmware: &'static str,
    pub(crate) token: &'static str,
}

impl AgentConfig {
    /// Recording on, span limit 1 500, device id `device`, empty firmware and token.
    pub const fn new() -> Self {
        Self {
            enabled: true,
            span_limit: 1500,
            device_id: "device",
            firmware: "",
            token: "",
        }
    }

    /// Takes `span_limit` from the core configuration (evaluated at compile time when used in
    /// a `static`, so the `Config` itself never reaches flash). The Scout key and `monitor` are
    /// not used: the gateway holds the key and decides what to report.
    pub const fn from_core(config: &scout_core::Config) -> Self {
        let mut c = Self::new();
        c.span_limit = config.span_limit;
        c
    }

    /// Turns recording on or off.
    pub const fn enabled(mut self, on: bool) -> Self {
        self.enabled = on;
        self
    }
    /// Completed spans per request after which new spans are dropped (and counted).
    pub const fn span_limit(mut self, limit: u32) -> Self {
        self.span_limit = limit;
        self
    }
    /// The device id sent in the hello.
    pub const fn device_id(mut self, id: &'static str) -> Self {
        self.device_id = id;
        self
    }
    /// The firmware revision sent in the hello.
    pub const fn firmware(mut self, rev: &'static str) -> Self {
        self.firmware = rev;
        self
    }
    /// The device or fleet token the gateway checks (never the Scout key).
    pub const fn token(mut self, token: &'static str) -> Self {
        self.token = token;
        self
    }
}

impl Default for AgentConfig {
    fn default() -> Self {
        Self::new()
    }
}

/// Counters of the agent's activity since boot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct AgentStats {
    /// Requests encoded into the queue.
    pub queued: u32,
    /// Frames written to a link.
    pub sent: u32,
    /// Bytes written to a link.
    pub bytes_sent: u32,
    /// Links attached so far.
    pub links: u32,
    /// Everything dropped, by reason.
    pub drops: DeviceDrops,
}

pub(crate) struct State<S: Storage, const SLOTS: usize, const NAMES: usize, const QUEUE: usize> {
    slots: [Option<Request<S>>; SLOTS],
    busy: [bool; SLOTS],
    pub(crate) names: NameTable<NAMES>,
    pub(crate) queue: Deque<u8, QUEUE>,
    pub(crate) stats: AgentStats,
    seq: u32,
    pub(crate) link: bool,
    pub(crate) waker: Option<Waker>,
}

/// The agent: `SLOTS` concurrent transactions over storage `S`, `NAMES` interned names, a
/// `QUEUE`-byte send queue, and finished requests of at most `FRAME` encoded bytes.
///
/// Put it in a `static` ([`Agent::new`] is `const`); every method takes `&self` and is usable
/// from any task or interrupt handler. State lives behind a `critical-section` mutex; each call
/// holds it briefly (finishing a transaction encodes it inside the critical section: a few
/// microseconds per span).
///
/// RAM: the queue, the name table (`NAMES` pointers), and `SLOTS` requests of
/// `size_of::<Request<S>>()` each (about 1.7 KiB for [`DeviceStorage`]); the link task
/// ([`Agent::run_link`]) adds one `FRAME`-byte buffer, which also carries the hello and each
/// name definition (a name that does not fit stays undefined on the wire), and finishing a
/// transaction uses `FRAME` bytes of stack. The defaults suit a host or a roomy MCU; the
/// demo firmware in `firmware/` runs with `Agent<Fixed<4, 2, 0, 3>, 1, 8, 128, 64>` (see
/// `docs/device-protocol.md`, "Firmware").
pub struct Agent<
    S: Storage = DeviceStorage,
    const SLOTS: usize = 2,
    const NAMES: usize = 32,
    const QUEUE: usize = 512,
    const FRAME: usize = 256,
> {
    pub(crate) config: AgentConfig,
    pub(crate) state: Mutex<RefCell<State<S, SLOTS, NAMES, QUEUE>>>,
}

impl<S: Storage, const SLOTS: usize, const NAMES: usize, const QUEUE: usize, const FRAME: usize>
    core::fmt::Debug for Agent<S, SLOTS, NAMES, QUEUE, FRAME>
{
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Agent")
            .field("config", &self.config)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

/// The current time: microseconds since boot.
pub(crate) fn now() -> Timestamp {
    Timestamp(embassy_time::Instant::now().as_micros())
}

fn bump(c: &mut u32) {
    *c = c.saturating_add(1);
}

impl<S: Storage, const SLOTS: usize, const NAMES: usize, const QUEUE: usize, const FRAME: usize>
    Agent<S, SLOTS, NAMES, QUEUE, FRAME>
{
    /// A new agent (usable in a `static`).
    pub const fn new(config: AgentConfig) -> Self {
        Self {
            config,
            state: Mutex::new(RefCell::new(State {
                slots: [const { None }; SLOTS],
                busy: [false; SLOTS],
                names: NameTable::new(),
                queue: Deque::new(),
                stats: AgentStats {
                    queued: 0,
                    sent: 0,
                    bytes_sent: 0,
                    links: 0,
                    drops: DeviceDrops {
                        queue_full: 0,
                        no_link: 0,
                        too_large: 0,
                        no_slot: 0,
                        items: 0,
                        names: 0,
                        link_errors: 0,
                    },
                },
                seq: 0,
                link: false,
                waker: None,
            })),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &AgentConfig {
        &self.config
    }

    /// Runs `f` on the state inside a critical section (`None` on re-entry, which never
    /// happens through this crate's API).
    pub(crate) fn with<R>(
        &self,
        f: impl FnOnce(&mut State<S, SLOTS, NAMES, QUEUE>) -> R,
    ) -> Option<R> {
        critical_section::with(|cs| {
            let mut st = self.state.borrow(cs).try_borrow_mut().ok()?;
            Some(f(&mut st))
        })
    }

    /// Counters since boot.
    pub fn stats(&self) -> AgentStats {
        self.with(|st| st.stats).unwrap_or_default()
    }

    /// Bytes waiting in the send queue.
    pub fn queued_bytes(&self) -> usize {
        self.with(|st| st.queue.len()).unwrap_or(0)
    }

    /// Starts a transaction whose root span is `operation` (e.g. `Job/read_sensor`). When
    /// every slot is busy or the agent is disabled, the transaction records nothing (counted
    /// as `no_slot` when busy).
    pub fn transaction(
        &self,
        operation: &'static str,
    ) -> Transaction<'_, S, SLOTS, NAMES, QUEUE, FRAME> {
        let mut tx = Transaction {
            agent: self,
            slot: None,
        };
        if !self.config.enabled {
            return tx;
        }
        let t = now();
        tx.slot = self
            .with(|st| {
                let Some(i) = st.busy.iter().position(|b| !b) else {
                    bump(&mut st.stats.drops.no_slot);
                    return None;
                };
                st.busy[i] = true;
                let req = st.slots[i].get_or_insert_with(Request::new);
                req.begin(RequestIds::default(), t, self.config.span_limit);
                intern(&mut st.names, &mut st.stats.drops, operation);
                req.start_span(Text::Static(operation), t, SpanFlags::NO_BACKTRACE);
                req.mark_real();
                Some(i)
            })
            .flatten();
        if tx.slot.is_none() {
            log_warn!("scout: no free request slot");
        }
        tx
    }

    fn on_slot<R>(
        &self,
        slot: Option<usize>,
        f: impl FnOnce(&mut Request<S>, &mut NameTable<NAMES>, &mut DeviceDrops) -> R,
    ) -> Option<R> {
        let i = slot?;
        self.with(|st| {
            let State {
                slots,
                names,
                stats,
                ..
            } = st;
            let req = slots.get_mut(i)?.as_mut()?;
            Some(f(req, names, &mut stats.drops))
        })
        .flatten()
    }

    fn finish_slot(&self, i: usize) {
        let t = now();
        let queued = self.with(|st| {
            let State {
                slots,
                busy,
                names,
                queue,
                stats,
                seq,
                link,
                waker,
            } = st;
            let Some(req) = slots.get_mut(i).and_then(Option::as_mut) else {
                return false;
            };
            if let Some(b) = busy.get_mut(i) {
                *b = false;
            }
            req.finish(t);
            stats.drops.items = stats
                .drops
                .items
                .saturating_add(u32::try_from(req.drops().total()).unwrap_or(u32::MAX));
            if !*link {
                bump(&mut stats.drops.no_link);
                return false;
            }
            let mut buf = [0u8; FRAME];
            let frame = RequestFrame {
                request: &*req,
                names: &*names,
                seq: *seq,
            };
            let Ok(n) = device::encode(&frame, &mut buf) else {
                bump(&mut stats.drops.too_large);
                return false;
            };
            if QUEUE - queue.len() < n {
                bump(&mut stats.drops.queue_full);
                return false;
            }
            for &b in &buf[..n] {
                // Cannot fail: room checked above.
                let _ = queue.push_back(b);
            }
            *seq = seq.wrapping_add(1);
            bump(&mut stats.queued);
            if let Some(w) = waker.take() {
                w.wake();
            }
            true
        });
        if queued != Some(true) {
            log_debug!("scout: request dropped");
        }
    }
}

fn intern<const NAMES: usize>(
    names: &mut NameTable<NAMES>,
    drops: &mut DeviceDrops,
    name: &'static str,
) {
    if names.intern(name).is_none() {
        bump(&mut drops.names);
    }
}

/// A transaction in progress (a request slot). Finish it with [`Transaction::finish`];
/// dropping it finishes it too.
///
/// All methods do nothing when the transaction got no slot.
pub struct Transaction<
    'a,
    S: Storage = DeviceStorage,
    const SLOTS: usize = 2,
    const NAMES: usize = 32,
    const QUEUE: usize = 512,
    const FRAME: usize = 256,
> {
    agent: &'a Agent<S, SLOTS, NAMES, QUEUE, FRAME>,
    slot: Option<usize>,
}

impl<S: Storage, const SLOTS: usize, const NAMES: usize, const QUEUE: usize, const FRAME: usize>
    core::fmt::Debug for Transaction<'_, S, SLOTS, NAMES, QUEUE, FRAME>
{
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Transaction")
            .field("slot", &self.slot)
            .finish()
    }
}

impl<'a, S: Storage, const SLOTS: usize, const NAMES: usize, const QUEUE: usize, const FRAME: usize>
    Transaction<'a, S, SLOTS, NAMES, QUEUE, FRAME>
{
    /// True if this transaction is being recorded.
    pub fn is_recording(&self) -> bool {
        self.slot.is_some()
    }

    /// Opens a span under the innermost open span, as [`Request::start_span`].
    pub fn start_span(&self, operation: &'static str, flags: SpanFlags) -> Option<SpanStart> {
        let t = now();
        self.agent.on_slot(self.slot, |req, names, drops| {
            intern(names, drops, operation);
            req.start_span(Text::Static(operation), t, flags)
        })
    }

    /// Stops the innermost open span (never the root: use [`Transaction::finish`]).
    pub fn stop_span(&self) {
        let t = now();
        self.agent.on_slot(self.slot, |req, _, _| {
            if req.depth() > 1 {
                let _ = req.stop_span(t);
            }
        });
    }

    /// Opens a span that stops when the returned guard is dropped.
    pub fn span(&self, operation: &'static str) -> Span<'_, 'a, S, SLOTS, NAMES, QUEUE, FRAME> {
        self.start_span(operation, SpanFlags::NONE);
        Span { tx: self }
    }

    /// Tags the innermost open span.
    pub fn tag_span(&self, key: &'static str, value: Value<'_>) {
        self.agent.on_slot(self.slot, |req, names, drops| {
            intern(names, drops, key);
            let _ = req.tag_span(Text::Static(key), value);
        });
    }

    /// Tags the request.
    pub fn tag_request(&self, key: &'static str, value: Value<'_>) {
        self.agent.on_slot(self.slot, |req, names, drops| {
            intern(names, drops, key);
            let _ = req.tag_request(Text::Static(key), value);
        });
    }

    /// Stops every open span and queues the request for the link.
    pub fn finish(mut self) {
        if let Some(i) = self.slot.take() {
            self.agent.finish_slot(i);
        }
    }
}

impl<S: Storage, const SLOTS: usize, const NAMES: usize, const QUEUE: usize, const FRAME: usize>
    Drop for Transaction<'_, S, SLOTS, NAMES, QUEUE, FRAME>
{
    fn drop(&mut self) {
        if let Some(i) = self.slot.take() {
            self.agent.finish_slot(i);
        }
    }
}

/// A span guard from [`Transaction::span`]: stops the span when dropped.
pub struct Span<
    't,
    'a,
    S: Storage = DeviceStorage,
    const SLOTS: usize = 2,
    const NAMES: usize = 32,
    const QUEUE: usize = 512,
    const FRAME: usize = 256,
> {
    tx: &'t Transaction<'a, S, SLOTS, NAMES, QUEUE, FRAME>,
}

impl<S: Storage, const SLOTS: usize, const NAMES: usize, const QUEUE: usize, const FRAME: usize>
    core::fmt::Debug for Span<'_, '_, S, SLOTS, NAMES, QUEUE, FRAME>
{
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Span").finish_non_exhaustive()
    }
}

impl<S: Storage, const SLOTS: usize, const NAMES: usize, const QUEUE: usize, const FRAME: usize>
    Drop for Span<'_, '_, S, SLOTS, NAMES, QUEUE, FRAME>
{
    fn drop(&mut self) {
        self.tx.stop_span();
    }
}
