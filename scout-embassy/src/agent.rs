//! The static agent: request slots (recorders, and the send queue), name table and counters
//! behind a critical section.

use core::cell::RefCell;
use core::task::Waker;

use critical_section::Mutex;
use scout_core::device::{DeviceDrops, NO_NAME, NameTable, Recorder};
use scout_core::{SpanFlags, Value};

use crate::fmt::log_warn;

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
    /// Completed spans per request after which new spans are dropped (and counted). Sent in
    /// the hello; the gateway applies it when it replays each request.
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
    /// Requests finished and ready to send.
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

pub(crate) struct State<const SLOTS: usize, const NAMES: usize, const BUF: usize> {
    pub(crate) slots: [Recorder<BUF>; SLOTS],
    pub(crate) names: NameTable<NAMES>,
    pub(crate) stats: AgentStats,
    /// The sequence number of the next finished request.
    pub(crate) seq: u32,
    /// The sequence number of the oldest finished request not yet sent (`seq` when none).
    pub(crate) unsent: u32,
    /// The link took a request from its slot and has not finished writing it.
    pub(crate) in_flight: bool,
    pub(crate) waker: Option<Waker>,
}

/// An agent's mutable state (opaque): `SLOTS` request slots of `BUF` bytes (each records one
/// transaction, then holds its frame until the link sends it), the table of `NAMES` names and
/// the counters, behind a `critical-section` mutex.
///
/// Its initial value is all zeros: in a `static` of its own it lives in `.bss` and takes no
/// flash, whereas inside an [`Agent`] (the default) it shares the agent's `static`, which the
/// configuration's string references put in `.data` (flash for the initial value, then RAM).
/// See [`StateRef`] to keep it apart.
pub struct AgentState<const SLOTS: usize, const NAMES: usize, const BUF: usize> {
    cell: Mutex<RefCell<State<SLOTS, NAMES, BUF>>>,
}

impl<const SLOTS: usize, const NAMES: usize, const BUF: usize> AgentState<SLOTS, NAMES, BUF> {
    /// A fresh state: idle slots, no names, zero counters.
    pub const fn new() -> Self {
        Self {
            cell: Mutex::new(RefCell::new(State {
                slots: [const { Recorder::new() }; SLOTS],
                names: NameTable::new(),
                stats: AgentStats {
                    queued: 0,
                    sent: 0,
                    bytes_sent: 0,
                    links: 0,
                    drops: ZERO_DROPS,
                },
                seq: 0,
                unsent: 0,
                in_flight: false,
                waker: None,
            })),
        }
    }
}

impl<const SLOTS: usize, const NAMES: usize, const BUF: usize> Default
    for AgentState<SLOTS, NAMES, BUF>
{
    fn default() -> Self {
        Self::new()
    }
}

impl<const SLOTS: usize, const NAMES: usize, const BUF: usize> core::fmt::Debug
    for AgentState<SLOTS, NAMES, BUF>
{
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("AgentState").finish_non_exhaustive()
    }
}

/// Where an [`Agent`] keeps its [`AgentState`]: inside itself ([`AgentState`] implements this
/// trait, and is the default), or in a `static` of its own, through a zero-sized type:
///
/// ```
/// use scout_embassy::{Agent, AgentConfig, AgentState, StateRef};
///
/// type State = AgentState<4, 32, 128>;
/// // All zeros: in `.bss`, no flash for its initial value.
/// static STATE: State = State::new();
///
/// struct Home;
/// impl StateRef<4, 32, 128> for Home {
///     const NEW: Self = Home;
///     fn state(&self) -> &State {
///         &STATE
///     }
/// }
///
/// // Only the configuration is left in the agent's `static` (read-only data).
/// static AGENT: Agent<4, 32, 128, Home> = Agent::new(AgentConfig::new().device_id("sensor-17"));
/// # let _ = &AGENT;
/// ```
pub trait StateRef<const SLOTS: usize, const NAMES: usize, const BUF: usize> {
    /// The value [`Agent::new`] stores.
    const NEW: Self;
    /// The state.
    fn state(&self) -> &AgentState<SLOTS, NAMES, BUF>;
}

impl<const SLOTS: usize, const NAMES: usize, const BUF: usize> StateRef<SLOTS, NAMES, BUF>
    for AgentState<SLOTS, NAMES, BUF>
{
    const NEW: Self = Self::new();
    fn state(&self) -> &Self {
        self
    }
}

/// The agent: `SLOTS` request slots of `BUF` bytes, `NAMES` interned names; its mutable state
/// is in `H` (see [`StateRef`]; by default inside the agent).
///
/// A transaction takes an idle slot and appends its events there as they happen (see
/// [`scout_core::device::Recorder`]: 5 to 7 bytes per span, usually); a finished one waits in
/// its slot until the link task ([`Agent::run_link`]) copies it out as a frame, so the slots
/// are also the send queue. A transaction that finds no idle slot records nothing and is
/// counted (`queue_full` when finished requests are waiting for the link, `no_link` when they
/// are and no link ever attached, `no_slot` when all slots are recording).
///
/// Put it in a `static` ([`Agent::new`] is `const`); every method takes `&self` and is usable
/// from any task or interrupt handler. State lives behind a `critical-section` mutex; each call
/// holds it for one append of a few bytes.
///
/// RAM: `SLOTS` × (`BUF` + about 48 bytes), the name table (`NAMES` string references), about
/// 60 bytes of counters; the link task adds one `BUF`-byte buffer, which also carries the hello
/// and each name definition (a name that does not fit stays undefined on the wire). The
/// defaults (4 slots of 128 bytes, 32 names: about 1.3 KB with the link) suit a host or a
/// roomy MCU; the demo firmware in `firmware/` runs with `Agent<2, 8, 64, _>`, its state in a
/// `static` of its own (see `docs/device-protocol.md`, "Firmware").
pub struct Agent<
    const SLOTS: usize = 4,
    const NAMES: usize = 32,
    const BUF: usize = 128,
    H: StateRef<SLOTS, NAMES, BUF> = AgentState<SLOTS, NAMES, BUF>,
> {
    pub(crate) config: AgentConfig,
    home: H,
}

impl<const SLOTS: usize, const NAMES: usize, const BUF: usize, H: StateRef<SLOTS, NAMES, BUF>>
    core::fmt::Debug for Agent<SLOTS, NAMES, BUF, H>
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
#[inline(never)]
pub(crate) fn bump(c: &mut u32, n: u32) {
    *c = c.saturating_add(n);
}

/// The slot of a transaction that got none (never an index).
const NO_SLOT: usize = usize::MAX;

/// One recording call on a transaction's slot.
enum Op<'v> {
    /// Take an idle slot and start the root span.
    Begin(&'static str),
    Start(&'static str, SpanFlags),
    Stop,
    /// Tag the request (`true`) or the innermost span.
    Tag(bool, &'static str, Value<'v>),
    /// Finish the request (ready for the link).
    Finish,
}

impl<const SLOTS: usize, const NAMES: usize, const BUF: usize, H: StateRef<SLOTS, NAMES, BUF>>
    Agent<SLOTS, NAMES, BUF, H>
{
    /// A new agent (usable in a `static`).
    pub const fn new(config: AgentConfig) -> Self {
        Self {
            config,
            home: H::NEW,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &AgentConfig {
        &self.config
    }

    /// Runs `f` on the state inside a critical section (`None` on re-entry, which never
    /// happens through this crate's API).
    pub(crate) fn with<R>(&self, f: impl FnOnce(&mut State<SLOTS, NAMES, BUF>) -> R) -> Option<R> {
        critical_section::with(|cs| {
            let mut st = self.home.state().cell.borrow(cs).try_borrow_mut().ok()?;
            Some(f(&mut st))
        })
    }

    /// Counters since boot.
    pub fn stats(&self) -> AgentStats {
        // Field by field: a plain struct copy links `memcpy` into firmware that otherwise
        // has no use for it.
        let mut out = AgentStats::default();
        self.with(|st| {
            let (s, d, o) = (&st.stats, &st.stats.drops, &mut out.drops);
            out.queued = s.queued;
            out.sent = s.sent;
            out.bytes_sent = s.bytes_sent;
            out.links = s.links;
            o.queue_full = d.queue_full;
            o.no_link = d.no_link;
            o.too_large = d.too_large;
            o.no_slot = d.no_slot;
            o.items = d.items;
            o.names = d.names;
            o.link_errors = d.link_errors;
        });
        out
    }

    /// Finished requests waiting for the link.
    pub fn pending(&self) -> usize {
        // Numbers `unsent..seq` are waiting (at most `SLOTS`).
        self.with(|st| st.seq.wrapping_sub(st.unsent) as usize)
            .unwrap_or(0)
    }

    /// Starts a transaction whose root span is `operation` (e.g. `Job/read_sensor`). When no
    /// slot is idle or the agent is disabled, the transaction records nothing (counted when
    /// no slot is idle).
    pub fn transaction(&self, operation: &'static str) -> Transaction<'_, SLOTS, NAMES, BUF, H> {
        let slot = match self.config.enabled {
            true => self.apply(NO_SLOT, Op::Begin(operation)),
            false => None,
        };
        Transaction {
            agent: self,
            slot: slot.unwrap_or(NO_SLOT),
        }
    }

    /// Applies one call to the recorder in `slot` (for [`Op::Begin`], an idle one), all in
    /// one critical section. Returns the slot `Begin` took, or whether `Start` recorded its
    /// span (as slot 0).
    #[inline(never)]
    fn apply(&self, slot: usize, op: Op<'_>) -> Option<usize> {
        let t = now();
        let out = self
            .with(|st| {
                let State {
                    slots,
                    names,
                    stats,
                    seq,
                    waker,
                    ..
                } = st;
                let i = match (slot, &op) {
                    (NO_SLOT, Op::Begin(_)) => {
                        let Some(i) = slots.iter().position(Recorder::is_idle) else {
                            // Finished requests wait for a link that never came, for
                            // the link, or every slot is recording.
                            let d = &mut stats.drops;
                            let waiting = slots.iter().any(Recorder::is_done);
                            bump(
                                match (waiting, stats.links) {
                                    (true, 0) => &mut d.no_link,
                                    (true, _) => &mut d.queue_full,
                                    _ => &mut d.no_slot,
                                },
                                1,
                            );
                            return None;
                        };
                        i
                    }
                    // `NO_SLOT` is no index: nothing happens.
                    (i, _) => i,
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
                        rec.begin(name, t);
                        return Some(i);
                    }
                    Op::Start(_, flags) => return rec.start_span(name, flags, t).then_some(0),
                    Op::Stop => rec.stop_span(t),
                    Op::Tag(request, _, value) => rec.tag(request, name, value),
                    Op::Finish => {
                        bump(&mut stats.drops.items, rec.dropped());
                        // It waits in its slot for a link.
                        if rec.finish(t, *seq) {
                            *seq = seq.wrapping_add(1);
                            bump(&mut stats.queued, 1);
                        } else {
                            bump(&mut stats.drops.too_large, 1);
                        }
                        // The link sends the frame, or the changed drop counters.
                        if let Some(wk) = waker.take() {
                            wk.wake();
                        }
                    }
                }
                None
            })
            .flatten();
        if slot == NO_SLOT && out.is_none() {
            log_warn!("scout: no idle request slot");
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
    const SLOTS: usize = 4,
    const NAMES: usize = 32,
    const BUF: usize = 128,
    H: StateRef<SLOTS, NAMES, BUF> = AgentState<SLOTS, NAMES, BUF>,
> {
    agent: &'a Agent<SLOTS, NAMES, BUF, H>,
    /// The slot, or [`NO_SLOT`].
    slot: usize,
}

impl<const SLOTS: usize, const NAMES: usize, const BUF: usize, H: StateRef<SLOTS, NAMES, BUF>>
    core::fmt::Debug for Transaction<'_, SLOTS, NAMES, BUF, H>
{
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Transaction")
            .field("recording", &self.is_recording())
            .finish()
    }
}

impl<'a, const SLOTS: usize, const NAMES: usize, const BUF: usize, H: StateRef<SLOTS, NAMES, BUF>>
    Transaction<'a, SLOTS, NAMES, BUF, H>
{
    /// True if this transaction is being recorded.
    pub fn is_recording(&self) -> bool {
        self.slot != NO_SLOT
    }

    /// Opens a span under the innermost open span (`flags`: [`SpanFlags::IGNORE`],
    /// [`SpanFlags::IGNORE_CHILDREN`], applied by the gateway as
    /// [`scout_core::Request::start_span`] does). False when the span was not recorded (no
    /// room left in the slot, or the transaction is not recorded).
    pub fn start_span(&self, operation: &'static str, flags: SpanFlags) -> bool {
        self.agent
            .apply(self.slot, Op::Start(operation, flags))
            .is_some()
    }

    /// Stops the innermost open span (never the root: use [`Transaction::finish`]).
    pub fn stop_span(&self) {
        self.agent.apply(self.slot, Op::Stop);
    }

    /// Opens a span that stops when the returned guard is dropped.
    pub fn span(&self, operation: &'static str) -> Span<'_, 'a, SLOTS, NAMES, BUF, H> {
        self.agent
            .apply(self.slot, Op::Start(operation, SpanFlags::NONE));
        Span { tx: self }
    }

    /// Tags the innermost open span. A key already on the span takes the new value.
    pub fn tag_span(&self, key: &'static str, value: Value<'_>) {
        self.agent.apply(self.slot, Op::Tag(false, key, value));
    }

    /// Tags the request. A key already on the request takes the new value.
    pub fn tag_request(&self, key: &'static str, value: Value<'_>) {
        self.agent.apply(self.slot, Op::Tag(true, key, value));
    }

    /// Stops every open span and leaves the request to the link (what dropping the
    /// transaction does).
    pub fn finish(self) {}
}

impl<const SLOTS: usize, const NAMES: usize, const BUF: usize, H: StateRef<SLOTS, NAMES, BUF>> Drop
    for Transaction<'_, SLOTS, NAMES, BUF, H>
{
    fn drop(&mut self) {
        if self.slot != NO_SLOT {
            self.agent.apply(self.slot, Op::Finish);
        }
    }
}

/// A span guard from [`Transaction::span`]: stops the span when dropped.
pub struct Span<
    't,
    'a,
    const SLOTS: usize = 4,
    const NAMES: usize = 32,
    const BUF: usize = 128,
    H: StateRef<SLOTS, NAMES, BUF> = AgentState<SLOTS, NAMES, BUF>,
> {
    tx: &'t Transaction<'a, SLOTS, NAMES, BUF, H>,
}

impl<const SLOTS: usize, const NAMES: usize, const BUF: usize, H: StateRef<SLOTS, NAMES, BUF>>
    core::fmt::Debug for Span<'_, '_, SLOTS, NAMES, BUF, H>
{
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Span").finish_non_exhaustive()
    }
}

impl<const SLOTS: usize, const NAMES: usize, const BUF: usize, H: StateRef<SLOTS, NAMES, BUF>> Drop
    for Span<'_, '_, SLOTS, NAMES, BUF, H>
{
    fn drop(&mut self) {
        self.tx.stop_span();
    }
}
