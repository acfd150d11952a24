//! The static agent: request recorders, name table and the send queue behind a critical
//! section.

use core::cell::RefCell;
use core::marker::PhantomData;
use core::task::Waker;

use critical_section::Mutex;
use scout_core::device::{Capacity, DeviceDrops, FrameWriter, NO_NAME, NameTable, Recorder};
use scout_core::{Fixed, SpanFlags, SpanIdx, SpanStart, Value};

use crate::fmt::{log_debug, log_warn};

/// Default request capacities on a device: 16 spans, 16 tags, 64 bytes of copied strings,
/// 8 levels (see [`scout_core::device::Capacity`]).
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
    /// Frames written to a link (the hello and the delimiter before it count as one).
    pub sent: u32,
    /// Bytes written to a link.
    pub bytes_sent: u32,
    /// Links attached so far.
    pub links: u32,
    /// Everything dropped, by reason.
    pub drops: DeviceDrops,
}

pub(crate) struct State<S: Capacity, const SLOTS: usize, const NAMES: usize, const QUEUE: usize> {
    slots: [Recorder<S>; SLOTS],
    pub(crate) names: NameTable<NAMES>,
    pub(crate) queue: Queue<QUEUE>,
    pub(crate) stats: AgentStats,
    seq: u32,
    pub(crate) link: bool,
    pub(crate) waker: Option<Waker>,
}

/// The send queue: a ring of whole frames, each ending with its `0x00` delimiter, back to
/// back. Requests are encoded straight into its free part; the link copies frames out byte by
/// byte (no `memcpy`/`memmove`).
pub(crate) struct Queue<const N: usize> {
    buf: [u8; N],
    head: usize,
    len: usize,
}

impl<const N: usize> Queue<N> {
    /// A writer of one frame of at most `max` bytes into the free part.
    fn writer(&mut self, max: usize) -> FrameWriter<'_> {
        let mut tail = self.head + self.len;
        if tail >= N {
            tail -= N;
        }
        let room = N.saturating_sub(self.len).min(max);
        FrameWriter::wrapping(&mut self.buf, tail, room)
    }

    /// Moves the oldest frame to the start of `out`: its length, or 0 when there is none
    /// (a frame longer than `out`, which the agent never queues, is discarded).
    pub(crate) fn pop_frame(&mut self, out: &mut [u8]) -> usize {
        let (mut i, mut n) = (self.head, 0);
        while n < self.len {
            let b = self.buf.get(i).copied().unwrap_or(0);
            if let Some(o) = out.get_mut(n) {
                *o = b;
            }
            n += 1;
            i += 1;
            if i >= N {
                i = 0;
            }
            if b == 0 {
                self.head = i;
                self.len -= n;
                return if n <= out.len() { n } else { 0 };
            }
        }
        0
    }
}

/// An agent's mutable state (opaque): `SLOTS` request recorders of capacities `S`, the table
/// of `NAMES` names, the `QUEUE`-byte send queue and the counters, behind a
/// `critical-section` mutex.
///
/// Its initial value is all zeros: in a `static` of its own it lives in `.bss` and takes no
/// flash, whereas inside an [`Agent`] (the default) it shares the agent's `static`, which the
/// configuration's string references put in `.data` (flash for the initial value, then RAM).
/// See [`StateRef`] to keep it apart.
pub struct AgentState<S: Capacity, const SLOTS: usize, const NAMES: usize, const QUEUE: usize> {
    cell: Mutex<RefCell<State<S, SLOTS, NAMES, QUEUE>>>,
}

impl<S: Capacity, const SLOTS: usize, const NAMES: usize, const QUEUE: usize>
    AgentState<S, SLOTS, NAMES, QUEUE>
{
    /// A fresh state: idle recorders, no names, an empty queue, zero counters.
    pub const fn new() -> Self {
        Self {
            cell: Mutex::new(RefCell::new(State {
                slots: [const { Recorder::new() }; SLOTS],
                names: NameTable::new(),
                queue: Queue {
                    buf: [0; QUEUE],
                    head: 0,
                    len: 0,
                },
                stats: AgentStats {
                    queued: 0,
                    sent: 0,
                    bytes_sent: 0,
                    links: 0,
                    drops: ZERO_DROPS,
                },
                seq: 0,
                link: false,
                waker: None,
            })),
        }
    }
}

impl<S: Capacity, const SLOTS: usize, const NAMES: usize, const QUEUE: usize> Default
    for AgentState<S, SLOTS, NAMES, QUEUE>
{
    fn default() -> Self {
        Self::new()
    }
}

impl<S: Capacity, const SLOTS: usize, const NAMES: usize, const QUEUE: usize> core::fmt::Debug
    for AgentState<S, SLOTS, NAMES, QUEUE>
{
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("AgentState").finish_non_exhaustive()
    }
}

/// Where an [`Agent`] keeps its [`AgentState`]: inside itself ([`AgentState`] implements this
/// trait, and is the default), or in a `static` of its own, through a zero-sized type:
///
/// ```
/// use scout_embassy::{Agent, AgentConfig, AgentState, DeviceStorage, StateRef};
///
/// type State = AgentState<DeviceStorage, 2, 32, 512>;
/// // All zeros: in `.bss`, no flash for its initial value.
/// static STATE: State = State::new();
///
/// struct Home;
/// impl StateRef<DeviceStorage, 2, 32, 512> for Home {
///     const NEW: Self = Home;
///     fn state(&self) -> &State {
///         &STATE
///     }
/// }
///
/// // Only the configuration is left in the agent's `static` (read-only data).
/// static AGENT: Agent<DeviceStorage, 2, 32, 512, 256, Home> =
///     Agent::new(AgentConfig::new().device_id("sensor-17"));
/// # let _ = &AGENT;
/// ```
pub trait StateRef<S: Capacity, const SLOTS: usize, const NAMES: usize, const QUEUE: usize> {
    /// The value [`Agent::new`] stores.
    const NEW: Self;
    /// The state.
    fn state(&self) -> &AgentState<S, SLOTS, NAMES, QUEUE>;
}

impl<S: Capacity, const SLOTS: usize, const NAMES: usize, const QUEUE: usize>
    StateRef<S, SLOTS, NAMES, QUEUE> for AgentState<S, SLOTS, NAMES, QUEUE>
{
    const NEW: Self = Self::new();
    fn state(&self) -> &Self {
        self
    }
}

/// The agent: `SLOTS` concurrent transactions recorded with capacities `S` (a
/// [`Fixed`]`<SPANS, TAGS, ARENA, DEPTH>`), `NAMES` interned names, a `QUEUE`-byte send queue,
/// and finished requests of at most `FRAME` encoded bytes; its mutable state is in `H` (see
/// [`StateRef`]; by default inside the agent).
///
/// Put it in a `static` ([`Agent::new`] is `const`); every method takes `&self` and is usable
/// from any task or interrupt handler. State lives behind a `critical-section` mutex; each call
/// holds it briefly (finishing a transaction encodes it into the queue inside the critical
/// section: about a microsecond per span on a Cortex-M).
///
/// RAM: the queue, the name table (`NAMES` string references), and `SLOTS` recorders of
/// `size_of::<Recorder<S>>()` each (12 bytes per span, 16 per tag on 32-bit targets, the
/// arena, 2 bytes per level, about 50 bytes more: about 560 bytes for [`DeviceStorage`]); the
/// link task ([`Agent::run_link`]) adds one `FRAME`-byte buffer, which also carries the hello
/// and each name definition (a name that does not fit stays undefined on the wire). The
/// defaults suit a host or a roomy MCU; the demo firmware in `firmware/` runs with
/// `Agent<Fixed<4, 2, 0, 3>, 1, 8, 128, 64, _>`, its state in a `static` of its own (see
/// `docs/device-protocol.md`, "Firmware").
pub struct Agent<
    S: Capacity = DeviceStorage,
    const SLOTS: usize = 2,
    const NAMES: usize = 32,
    const QUEUE: usize = 512,
    const FRAME: usize = 256,
    H: StateRef<S, SLOTS, NAMES, QUEUE> = AgentState<S, SLOTS, NAMES, QUEUE>,
> {
    pub(crate) config: AgentConfig,
    home: H,
    _capacity: PhantomData<fn() -> S>,
}

impl<
    S: Capacity,
    const SLOTS: usize,
    const NAMES: usize,
    const QUEUE: usize,
    const FRAME: usize,
    H: StateRef<S, SLOTS, NAMES, QUEUE>,
> core::fmt::Debug for Agent<S, SLOTS, NAMES, QUEUE, FRAME, H>
{
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Agent")
            .field("config", &self.config)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

const ZERO_DROPS: DeviceDrops = DeviceDrops {
    queue_full: 0,
    no_link: 0,
    too_large: 0,
    no_slot: 0,
    items: 0,
    names: 0,
    link_errors: 0,
};

/// The current time: microseconds since boot.
pub(crate) fn now() -> u64 {
    embassy_time::Instant::now().as_micros()
}

/// Adds `n` to a counter, saturating.
pub(crate) fn bump(c: &mut u32, n: u32) {
    *c = c.saturating_add(n);
}

/// One recording call on a transaction's slot.
enum Op<'v> {
    /// Take a free slot and start the root span.
    Begin(&'static str),
    Start(&'static str, SpanFlags),
    Stop,
    /// Tag the innermost span (`true`) or the request.
    Tag(bool, &'static str, Value<'v>),
    /// Finish and queue the request, and free the slot.
    Finish,
}

impl<
    S: Capacity,
    const SLOTS: usize,
    const NAMES: usize,
    const QUEUE: usize,
    const FRAME: usize,
    H: StateRef<S, SLOTS, NAMES, QUEUE>,
> Agent<S, SLOTS, NAMES, QUEUE, FRAME, H>
{
    /// A new agent (usable in a `static`).
    pub const fn new(config: AgentConfig) -> Self {
        Self {
            config,
            home: H::NEW,
            _capacity: PhantomData,
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
            let mut st = self.home.state().cell.borrow(cs).try_borrow_mut().ok()?;
            Some(f(&mut st))
        })
    }

    /// Counters since boot.
    pub fn stats(&self) -> AgentStats {
        // Field by field: a plain struct copy links `memcpy` into firmware that otherwise
        // has no use for it.
        self.with(|st| {
            let (s, d) = (&st.stats, &st.stats.drops);
            AgentStats {
                queued: s.queued,
                sent: s.sent,
                bytes_sent: s.bytes_sent,
                links: s.links,
                drops: DeviceDrops {
                    queue_full: d.queue_full,
                    no_link: d.no_link,
                    too_large: d.too_large,
                    no_slot: d.no_slot,
                    items: d.items,
                    names: d.names,
                    link_errors: d.link_errors,
                },
            }
        })
        .unwrap_or_default()
    }

    /// Bytes waiting in the send queue.
    pub fn queued_bytes(&self) -> usize {
        self.with(|st| st.queue.len).unwrap_or(0)
    }

    /// Starts a transaction whose root span is `operation` (e.g. `Job/read_sensor`). When
    /// every slot is busy or the agent is disabled, the transaction records nothing (counted
    /// as `no_slot` when busy).
    pub fn transaction(
        &self,
        operation: &'static str,
    ) -> Transaction<'_, S, SLOTS, NAMES, QUEUE, FRAME, H> {
        let slot = match self.config.enabled {
            true => match self.apply(None, Op::Begin(operation)) {
                Some(SpanStart::Recorded(i)) => Some(usize::from(i.0)),
                _ => None,
            },
            false => None,
        };
        Transaction { agent: self, slot }
    }

    /// Applies one call to the recorder in `slot` (for [`Op::Begin`], a free one), all in
    /// one critical section. Returns what `Start` did, or the slot `Begin` took (as
    /// `Recorded`).
    #[inline(never)]
    fn apply(&self, slot: Option<usize>, op: Op<'_>) -> Option<SpanStart> {
        let t = now();
        let out = self
            .with(|st| {
                let State {
                    slots,
                    names,
                    queue,
                    stats,
                    seq,
                    link,
                    waker,
                } = st;
                let i = match (slot, &op) {
                    (Some(i), _) => i,
                    (None, Op::Begin(_)) => {
                        let Some(i) = slots.iter().position(|r| !r.is_busy()) else {
                            bump(&mut stats.drops.no_slot, 1);
                            return None;
                        };
                        i
                    }
                    (None, _) => return None,
                };
                let rec = slots.get_mut(i)?;
                let name = match op {
                    Op::Begin(name) | Op::Start(name, _) | Op::Tag(_, name, _) => {
                        names.intern(name).unwrap_or_else(|| {
                            bump(&mut stats.drops.names, 1);
                            NO_NAME
                        })
                    }
                    Op::Stop | Op::Finish => NO_NAME,
                };
                match op {
                    Op::Begin(_) => {
                        rec.begin(t, self.config.span_limit);
                        rec.start_span(name, SpanFlags::NO_BACKTRACE, t);
                        return Some(SpanStart::Recorded(SpanIdx(i as u16)));
                    }
                    Op::Start(_, flags) => return Some(rec.start_span(name, flags, t)),
                    // Never the root: that is `Finish`.
                    Op::Stop if rec.open_spans() > 1 => {
                        rec.stop_span(t);
                    }
                    Op::Stop => {}
                    Op::Tag(true, _, value) => {
                        let _ = rec.tag_span(name, value);
                    }
                    Op::Tag(false, _, value) => {
                        let _ = rec.tag_request(name, value);
                    }
                    Op::Finish => {
                        rec.finish(t);
                        bump(&mut stats.drops.items, rec.dropped());
                        if *link {
                            let mut w = queue.writer(FRAME);
                            rec.encode(*seq, &mut w);
                            let needed = w.len();
                            match w.finish() {
                                Ok(n) => {
                                    queue.len += n;
                                    *seq = seq.wrapping_add(1);
                                    bump(&mut stats.queued, 1);
                                }
                                Err(_) if needed > FRAME => bump(&mut stats.drops.too_large, 1),
                                Err(_) => bump(&mut stats.drops.queue_full, 1),
                            }
                        } else {
                            log_debug!("scout: no link, request dropped");
                            bump(&mut stats.drops.no_link, 1);
                        }
                        rec.reset();
                        // The link sends the frame, or the changed drop counters.
                        if let Some(wk) = waker.take() {
                            wk.wake();
                        }
                    }
                }
                None
            })
            .flatten();
        if slot.is_none() && out.is_none() {
            log_warn!("scout: no free request slot");
        }
        out
    }
}

/// A transaction in progress (a request slot). Finish it with [`Transaction::finish`];
/// dropping it finishes it too.
///
/// All methods do nothing when the transaction got no slot.
pub struct Transaction<
    'a,
    S: Capacity = DeviceStorage,
    const SLOTS: usize = 2,
    const NAMES: usize = 32,
    const QUEUE: usize = 512,
    const FRAME: usize = 256,
    H: StateRef<S, SLOTS, NAMES, QUEUE> = AgentState<S, SLOTS, NAMES, QUEUE>,
> {
    agent: &'a Agent<S, SLOTS, NAMES, QUEUE, FRAME, H>,
    slot: Option<usize>,
}

impl<
    S: Capacity,
    const SLOTS: usize,
    const NAMES: usize,
    const QUEUE: usize,
    const FRAME: usize,
    H: StateRef<S, SLOTS, NAMES, QUEUE>,
> core::fmt::Debug for Transaction<'_, S, SLOTS, NAMES, QUEUE, FRAME, H>
{
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Transaction")
            .field("slot", &self.slot)
            .finish()
    }
}

impl<
    'a,
    S: Capacity,
    const SLOTS: usize,
    const NAMES: usize,
    const QUEUE: usize,
    const FRAME: usize,
    H: StateRef<S, SLOTS, NAMES, QUEUE>,
> Transaction<'a, S, SLOTS, NAMES, QUEUE, FRAME, H>
{
    /// True if this transaction is being recorded.
    pub fn is_recording(&self) -> bool {
        self.slot.is_some()
    }

    /// Opens a span under the innermost open span, as [`scout_core::Request::start_span`]
    /// (`flags`: [`SpanFlags::IGNORE`], [`SpanFlags::IGNORE_CHILDREN`]). `None` when the
    /// transaction is not recorded.
    pub fn start_span(&self, operation: &'static str, flags: SpanFlags) -> Option<SpanStart> {
        self.agent.apply(self.slot, Op::Start(operation, flags))
    }

    /// Stops the innermost open span (never the root: use [`Transaction::finish`]).
    pub fn stop_span(&self) {
        self.agent.apply(self.slot, Op::Stop);
    }

    /// Opens a span that stops when the returned guard is dropped.
    pub fn span(&self, operation: &'static str) -> Span<'_, 'a, S, SLOTS, NAMES, QUEUE, FRAME, H> {
        self.agent
            .apply(self.slot, Op::Start(operation, SpanFlags::NONE));
        Span { tx: self }
    }

    /// Tags the innermost open span. A key already on the span takes the new value.
    pub fn tag_span(&self, key: &'static str, value: Value<'_>) {
        self.agent.apply(self.slot, Op::Tag(true, key, value));
    }

    /// Tags the request. A key already on the request takes the new value.
    pub fn tag_request(&self, key: &'static str, value: Value<'_>) {
        self.agent.apply(self.slot, Op::Tag(false, key, value));
    }

    /// Stops every open span and queues the request for the link (what dropping the
    /// transaction does).
    pub fn finish(self) {}
}

impl<
    S: Capacity,
    const SLOTS: usize,
    const NAMES: usize,
    const QUEUE: usize,
    const FRAME: usize,
    H: StateRef<S, SLOTS, NAMES, QUEUE>,
> Drop for Transaction<'_, S, SLOTS, NAMES, QUEUE, FRAME, H>
{
    fn drop(&mut self) {
        if self.slot.is_some() {
            self.agent.apply(self.slot, Op::Finish);
        }
    }
}

/// A span guard from [`Transaction::span`]: stops the span when dropped.
pub struct Span<
    't,
    'a,
    S: Capacity = DeviceStorage,
    const SLOTS: usize = 2,
    const NAMES: usize = 32,
    const QUEUE: usize = 512,
    const FRAME: usize = 256,
    H: StateRef<S, SLOTS, NAMES, QUEUE> = AgentState<S, SLOTS, NAMES, QUEUE>,
> {
    tx: &'t Transaction<'a, S, SLOTS, NAMES, QUEUE, FRAME, H>,
}

impl<
    S: Capacity,
    const SLOTS: usize,
    const NAMES: usize,
    const QUEUE: usize,
    const FRAME: usize,
    H: StateRef<S, SLOTS, NAMES, QUEUE>,
> core::fmt::Debug for Span<'_, '_, S, SLOTS, NAMES, QUEUE, FRAME, H>
{
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Span").finish_non_exhaustive()
    }
}

impl<
    S: Capacity,
    const SLOTS: usize,
    const NAMES: usize,
    const QUEUE: usize,
    const FRAME: usize,
    H: StateRef<S, SLOTS, NAMES, QUEUE>,
> Drop for Span<'_, '_, S, SLOTS, NAMES, QUEUE, FRAME, H>
{
    fn drop(&mut self) {
        self.tx.stop_span();
    }
}
