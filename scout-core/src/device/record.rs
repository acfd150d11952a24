//! Device side: [`Recorder`], a compact recorder of one request that writes itself as
//! [`Up::Request`](super::Up::Request) with [`FrameWriter`] (no serde, no name lookups at
//! encode time).

use super::frame::FrameWriter;
use super::wire::{MAX_SPANS, MAX_TAGS, NO_NAME, ROOT};
use crate::request::{DropReason, SpanFlags, SpanIdx, SpanStart};
use crate::storage::Fixed;
use crate::value::Value;

/// A fixed table of `T` the [`Recorder`] keeps records in: implemented for arrays.
pub trait Table<T>: Sized {
    /// The table with every slot blank.
    const EMPTY: Self;
    /// Every slot (used or not).
    fn slots(&self) -> &[T];
    /// Every slot, mutably.
    fn slots_mut(&mut self) -> &mut [T];
}

/// A record with a blank value, for [`Table::EMPTY`].
pub trait Blank: Copy {
    /// The blank record.
    const BLANK: Self;
}

impl Blank for u8 {
    const BLANK: Self = 0;
}

impl Blank for u16 {
    const BLANK: Self = 0;
}

impl<T: Blank, const N: usize> Table<T> for [T; N] {
    const EMPTY: Self = [T::BLANK; N];
    fn slots(&self) -> &[T] {
        self
    }
    fn slots_mut(&mut self) -> &mut [T] {
        self
    }
}

/// The capacities of a [`Recorder`]: implemented for [`Fixed`]`<SPANS, TAGS, ARENA, DEPTH>`
/// (spans, tags, bytes of copied strings, levels of nesting), so a device names its sizes
/// the way it would for a core [`crate::Request`].
///
/// At most [`MAX_SPANS`] spans and [`MAX_TAGS`] tags are used whatever the capacity (what one
/// device request can carry), and at most 65 535 arena bytes.
pub trait Capacity {
    /// The span records.
    type Spans: Table<SpanSlot>;
    /// The tag records.
    type Tags: Table<TagSlot>;
    /// Bytes of copied strings (borrowed tag values).
    type Arena: Table<u8>;
    /// The stack of open spans.
    type Stack: Table<u16>;
}

impl<const SPANS: usize, const TAGS: usize, const ARENA: usize, const DEPTH: usize> Capacity
    for Fixed<SPANS, TAGS, ARENA, DEPTH>
{
    type Spans = [SpanSlot; SPANS];
    type Tags = [TagSlot; TAGS];
    type Arena = [u8; ARENA];
    type Stack = [u16; DEPTH];
}

/// One recorded span of a [`Recorder`] (opaque), 12 bytes.
#[derive(Debug, Clone, Copy)]
pub struct SpanSlot {
    /// Ticks from the parent's start (the request's for the root): the wire's `start`.
    start: u32,
    /// While open, ticks from the request start to the span's start; once stopped, ticks
    /// from start to stop (the wire's `duration`).
    duration: u32,
    /// Name id.
    name: u16,
    /// [`ROOT`] or the parent's index plus one.
    parent: u8,
    /// The span was started with [`SpanFlags::IGNORE_CHILDREN`].
    ignore_children: bool,
}

impl Blank for SpanSlot {
    const BLANK: Self = Self {
        start: 0,
        duration: 0,
        name: NO_NAME,
        parent: ROOT,
        ignore_children: false,
    };
}

/// A stored tag value, ready for the wire: 8 bytes of payload on 32-bit targets (halves of
/// a `u64` keep the alignment at 4).
#[derive(Debug, Clone, Copy)]
enum Stored {
    /// The variant byte (0 `Null`, 1 `Bool`, 2 `Int`) and, unless null, a varint (the bool,
    /// the zigzagged integer) as two halves (low, high).
    Var(u8, [u32; 2]),
    /// `Float`: the bits, written as 8 bytes little-endian.
    Float([u32; 2]),
    Static(&'static str),
    /// Arena offset and length.
    Arena(u16, u16),
}

fn split(v: u64) -> [u32; 2] {
    [v as u32, (v >> 32) as u32]
}

fn join(v: [u32; 2]) -> u64 {
    u64::from(v[0]) | (u64::from(v[1]) << 32)
}

/// One recorded tag of a [`Recorder`] (opaque), 16 bytes on 32-bit targets.
#[derive(Debug, Clone, Copy)]
pub struct TagSlot {
    value: Stored,
    /// Name id of the key.
    key: u16,
    /// 0 for the request, else the span's index plus one.
    target: u8,
}

impl Blank for TagSlot {
    const BLANK: Self = Self {
        value: Stored::Var(0, [0; 2]),
        key: NO_NAME,
        target: 0,
    };
}

/// Stack marker of an open span that is not recorded (its children may be).
const SKIPPED: u16 = u16::MAX;
/// Stack marker of an open span whose whole subtree is ignored.
const IGNORED_TREE: u16 = u16::MAX - 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Idle,
    Open,
    Finished,
}

/// One device request: spans (parent, name id, start, duration), tags (target, key id,
/// value) and a count of what did not fit, in fixed tables sized by `C` (see [`Capacity`]).
///
/// It records with the semantics of [`crate::Request`] (the same parents, times, tags,
/// ignore flags, span limit and drop counts, so that both write the same request; see
/// [`Recorder::encode`]), without
/// what a device does not need: no request ids, context checks, renames or string operation
/// names. Operation names and tag keys are name ids (see [`super::NameTable`]); times are
/// ticks (scout-embassy uses microseconds), kept as 32-bit offsets from the request start
/// (times past 2³² ticks after it are clamped). Nothing here panics or allocates; whatever
/// does not fit is counted in [`Recorder::dropped`].
///
/// ```
/// use scout_core::device::{FrameWriter, Recorder};
/// use scout_core::{Fixed, SpanFlags, Value};
/// let mut r = Recorder::<Fixed<4, 2, 0, 3>>::new();
/// r.begin(5_000_000, 1500);
/// r.start_span(1, SpanFlags::NONE, 5_000_000); // the root, name id 1
/// r.start_span(2, SpanFlags::NONE, 5_000_120);
/// r.tag_span(5, Value::Int(6));
/// r.stop_span(5_000_970);
/// r.finish(5_001_400);
/// let mut buf = [0u8; 64];
/// let mut w = FrameWriter::new(&mut buf);
/// r.encode(3, &mut w);
/// let n = w.finish().unwrap();
/// // What the gateway reads:
/// let Ok(scout_core::device::Up::Request(w)) = scout_core::device::decode_up(&mut buf[..n])
/// else { panic!() };
/// assert_eq!((w.seq, w.start, w.duration, w.spans.len(), w.tags.len()), (3, 5_000_000, 1400, 2, 1));
/// assert_eq!((w.spans[1].parent, w.spans[1].start, w.spans[1].duration), (1, 120, 850));
/// ```
pub struct Recorder<C: Capacity = Fixed<16, 16, 64, 8>> {
    start: u64,
    /// Request duration, once finished.
    duration: u32,
    dropped: u32,
    span_limit: u32,
    /// Open spans deeper than the stack holds.
    overflow: u32,
    /// Completed recorded spans (at most 255).
    completed: u8,
    /// Open ignored subtrees (at most one per stack entry).
    ignored: u8,
    arena_len: u16,
    spans_len: u8,
    tags_len: u8,
    depth: u8,
    /// [`ROOT`] or the innermost open recorded span's index plus one.
    top: u8,
    state: State,
    spans: C::Spans,
    tags: C::Tags,
    arena: C::Arena,
    stack: C::Stack,
}

impl<C: Capacity> core::fmt::Debug for Recorder<C> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Recorder")
            .field("state", &self.state)
            .field("start", &self.start)
            .field("spans", &self.spans_len)
            .field("tags", &self.tags_len)
            .field("open", &self.open_spans())
            .field("dropped", &self.dropped)
            .finish_non_exhaustive()
    }
}

impl<C: Capacity> Default for Recorder<C> {
    fn default() -> Self {
        Self::new()
    }
}

impl<C: Capacity> Recorder<C> {
    /// An idle recorder (usable in a `static`).
    pub const fn new() -> Self {
        Self {
            start: 0,
            duration: 0,
            dropped: 0,
            span_limit: 0,
            completed: 0,
            overflow: 0,
            ignored: 0,
            arena_len: 0,
            spans_len: 0,
            tags_len: 0,
            depth: 0,
            top: ROOT,
            state: State::Idle,
            spans: C::Spans::EMPTY,
            tags: C::Tags::EMPTY,
            arena: C::Arena::EMPTY,
            stack: C::Stack::EMPTY,
        }
    }

    /// Starts a new request at `now` (discarding anything recorded before). `span_limit` is
    /// the number of completed spans after which new spans are dropped.
    pub fn begin(&mut self, now: u64, span_limit: u32) {
        self.start = now;
        self.duration = 0;
        self.dropped = 0;
        self.span_limit = span_limit;
        self.completed = 0;
        self.overflow = 0;
        self.ignored = 0;
        self.arena_len = 0;
        self.spans_len = 0;
        self.tags_len = 0;
        self.depth = 0;
        self.top = ROOT;
        self.state = State::Open;
    }

    /// Forgets the request: the recorder is idle again.
    pub fn reset(&mut self) {
        self.state = State::Idle;
    }

    /// True between [`Recorder::begin`] and [`Recorder::reset`].
    pub fn is_busy(&self) -> bool {
        self.state != State::Idle
    }

    /// True between [`Recorder::begin`] and the stop of the last open span.
    pub fn is_open(&self) -> bool {
        self.state == State::Open
    }

    /// Open spans (recorded or not).
    pub fn open_spans(&self) -> usize {
        usize::from(self.depth).saturating_add(self.overflow as usize)
    }

    /// Recorded spans.
    pub fn span_count(&self) -> usize {
        usize::from(self.spans_len)
    }

    /// Recorded tags.
    pub fn tag_count(&self) -> usize {
        usize::from(self.tags_len)
    }

    /// Spans and tags not recorded (capacity, depth, span limit, arena), and calls made while
    /// not open.
    pub fn dropped(&self) -> u32 {
        self.dropped
    }

    #[inline(never)]
    fn count(&mut self, reason: DropReason) -> DropReason {
        self.dropped = self.dropped.saturating_add(1);
        reason
    }

    /// Ticks from the request start to `now`, clamped to 32 bits.
    #[inline(never)]
    fn offset(&self, now: u64) -> u32 {
        u32::try_from(now.saturating_sub(self.start)).unwrap_or(u32::MAX)
    }

    fn stack_cap(&self) -> usize {
        self.stack.slots().len().min(usize::from(u8::MAX))
    }

    /// Counts a drop.
    #[inline(never)]
    fn drop_for(&mut self, reason: DropReason) -> SpanStart {
        SpanStart::Dropped(self.count(reason))
    }

    /// Opens a span named `name` under the innermost open recorded span at `now`. `flags`:
    /// [`SpanFlags::IGNORE`] and [`SpanFlags::IGNORE_CHILDREN`] as for [`crate::Request`].
    pub fn start_span(&mut self, name: u16, flags: SpanFlags, now: u64) -> SpanStart {
        if self.state != State::Open {
            return self.drop_for(DropReason::NotOpen);
        }
        let depth = usize::from(self.depth);
        if self.overflow > 0 || depth >= self.stack_cap() {
            self.overflow = self.overflow.saturating_add(1);
            return self.drop_for(DropReason::Depth);
        }
        let ignore_children = flags.contains(SpanFlags::IGNORE_CHILDREN);
        // The stack entry of a span not recorded: its subtree is ignored too when it ignores
        // its children or is inside an ignored subtree.
        let mut marker = if ignore_children || self.ignored > 0 {
            IGNORED_TREE
        } else {
            SKIPPED
        };
        let mut outcome = SpanStart::Ignored;
        if self.ignored == 0 && !flags.contains(SpanFlags::IGNORE) {
            outcome = self.record(name, ignore_children, now);
            if let SpanStart::Recorded(SpanIdx(i)) = outcome {
                marker = i;
            }
        }
        if let Some(slot) = self.stack.slots_mut().get_mut(depth) {
            *slot = marker;
        }
        // Below 255: the stack holds at most 255 entries.
        self.depth += 1;
        if marker == IGNORED_TREE {
            self.ignored += 1;
        }
        outcome
    }

    /// Appends a span record under the innermost open recorded span.
    fn record(&mut self, name: u16, ignore_children: bool, now: u64) -> SpanStart {
        if u32::from(self.completed) >= self.span_limit {
            return self.drop_for(DropReason::SpanLimit);
        }
        let idx = usize::from(self.spans_len);
        let at = self.offset(now);
        // The parent is open: its `duration` still holds its start.
        let base = match usize::from(self.top).checked_sub(1) {
            Some(p) => self.spans.slots().get(p).map_or(0, |p| p.duration),
            None => 0,
        };
        let parent = self.top;
        let slot = match self.spans.slots_mut().get_mut(idx) {
            Some(slot) if idx < MAX_SPANS => slot,
            _ => return self.drop_for(DropReason::SpanCapacity),
        };
        *slot = SpanSlot {
            start: at.saturating_sub(base),
            duration: at,
            name,
            parent,
            ignore_children,
        };
        // Below 255 before: at most 255 spans.
        self.spans_len += 1;
        self.top = self.spans_len;
        if ignore_children {
            self.ignored += 1;
        }
        SpanStart::Recorded(SpanIdx(idx as u16))
    }

    /// Stops the innermost open span at `now`; stopping the last one finishes the request.
    /// Returns false when no span was open.
    pub fn stop_span(&mut self, now: u64) -> bool {
        if self.overflow > 0 {
            self.overflow -= 1;
            return true;
        }
        let Some(depth) = self.depth.checked_sub(1) else {
            return false;
        };
        self.depth = depth;
        let entry = self
            .stack
            .slots()
            .get(usize::from(depth))
            .copied()
            .unwrap_or(SKIPPED);
        let end = self.offset(now);
        if entry == IGNORED_TREE {
            self.ignored = self.ignored.saturating_sub(1);
        } else if let Some(s) = self.spans.slots_mut().get_mut(usize::from(entry)) {
            // A recorded span (a skipped one's marker is no index).
            s.duration = end.saturating_sub(s.duration);
            self.ignored = self.ignored.saturating_sub(u8::from(s.ignore_children));
            // Its parent is the innermost recorded span still open.
            self.top = s.parent;
            // At most once per recorded span: below 255 before.
            self.completed += 1;
        }
        if depth == 0 {
            self.state = State::Finished;
            self.duration = end;
        }
        true
    }

    /// Stops every open span at `now`, finishing the request. Does nothing unless open.
    pub fn finish(&mut self, now: u64) {
        if self.state == State::Open {
            self.overflow = 0;
            while self.stop_span(now) {}
            self.state = State::Finished;
            self.duration = self.offset(now);
        }
    }

    /// Tags the innermost open span (nothing when it is not recorded). A key already on the
    /// span takes the new value.
    pub fn tag_span(&mut self, key: u16, value: Value<'_>) -> Result<(), DropReason> {
        if self.state != State::Open {
            return Err(self.count(DropReason::NotOpen));
        }
        let top = usize::from(self.depth).checked_sub(1);
        match top.and_then(|t| self.stack.slots().get(t)) {
            Some(&idx) if idx < IGNORED_TREE && self.overflow == 0 => {
                self.set_tag((idx as u8).saturating_add(1), key, value)
            }
            _ => Ok(()),
        }
    }

    /// Tags the request. A key already on the request takes the new value.
    pub fn tag_request(&mut self, key: u16, value: Value<'_>) -> Result<(), DropReason> {
        if self.state == State::Idle {
            return Err(self.count(DropReason::NotOpen));
        }
        self.set_tag(0, key, value)
    }

    fn set_tag(&mut self, target: u8, key: u16, value: Value<'_>) -> Result<(), DropReason> {
        // As `Request`: the value is stored first (a full arena is the reason given), then
        // the room for a new tag is checked (and the arena given back without it).
        let mark = self.arena_len;
        let Some(value) = self.store(value) else {
            return Err(self.count(DropReason::Arena));
        };
        let n = usize::from(self.tags_len);
        // Keys are compared by id: two different names without an id (a full name table) are
        // kept apart.
        let idx = self
            .tags
            .slots()
            .get(..n)
            .unwrap_or(&[])
            .iter()
            .position(|t| key != NO_NAME && t.target == target && t.key == key)
            .unwrap_or(n);
        match self.tags.slots_mut().get_mut(idx) {
            Some(slot) if idx < MAX_TAGS => {
                *slot = TagSlot { value, key, target };
                if idx == n {
                    // Below 255 before: at most 255 tags.
                    self.tags_len += 1;
                }
                Ok(())
            }
            _ => {
                self.arena_len = mark;
                Err(self.count(DropReason::TagCapacity))
            }
        }
    }

    fn store(&mut self, v: Value<'_>) -> Option<Stored> {
        Some(match v {
            Value::Str(s) => self.copy(s.as_bytes())?,
            Value::Json(j) => self.copy(j.as_str().as_bytes())?,
            Value::Static(s) => Stored::Static(s),
            Value::Int(i) => Stored::Var(2, split(((i << 1) ^ (i >> 63)) as u64)),
            Value::Float(f) => Stored::Float(split(f.to_bits())),
            Value::Bool(b) => Stored::Var(1, [u32::from(b), 0]),
            Value::Null => Stored::Var(0, [0; 2]),
        })
    }

    fn copy(&mut self, s: &[u8]) -> Option<Stored> {
        if self.arena.slots().is_empty() {
            // No arena (known at compile time): only the empty string fits, and no copy code
            // is linked.
            return s.is_empty().then_some(Stored::Arena(0, 0));
        }
        let start = self.arena_len;
        let len = u16::try_from(s.len()).ok()?;
        let end = start.checked_add(len)?;
        let dst = self
            .arena
            .slots_mut()
            .get_mut(usize::from(start)..usize::from(end))?;
        dst.copy_from_slice(s);
        self.arena_len = end;
        Some(Stored::Arena(start, len))
    }

    /// Writes the request as [`Up::Request`](super::Up::Request) number `seq`. Call it once
    /// finished.
    ///
    /// The frame is the one [`super::RequestFrame`] writes for a [`crate::Request`] that
    /// recorded the same calls, except for the order of tags on different targets: here they
    /// come in the order they were recorded, there the request's first, then each span's
    /// (the gateway applies them the same).
    #[inline(never)]
    pub fn encode(&self, seq: u32, w: &mut FrameWriter<'_>) {
        let spans = self
            .spans
            .slots()
            .get(..usize::from(self.spans_len))
            .unwrap_or(&[]);
        let tags = self
            .tags
            .slots()
            .get(..usize::from(self.tags_len))
            .unwrap_or(&[]);
        w.request_header(seq, self.start, self.duration);
        // At most 255 each.
        w.varint(spans.len() as u32);
        for s in spans {
            w.u8(s.parent);
            w.varint(u32::from(s.name));
            w.varint(s.start);
            w.varint(s.duration);
        }
        w.varint(tags.len() as u32);
        for t in tags {
            w.u8(t.target);
            w.varint(u32::from(t.key));
            self.value(&t.value, w);
        }
        w.varint(self.dropped);
    }

    fn value(&self, v: &Stored, w: &mut FrameWriter<'_>) {
        let text = match *v {
            Stored::Var(kind, x) => {
                w.u8(kind);
                if kind != 0 {
                    w.varint64(join(x));
                }
                return;
            }
            Stored::Float(f) => {
                w.u8(3);
                w.bytes(&join(f).to_le_bytes());
                return;
            }
            Stored::Static(s) => s.as_bytes(),
            Stored::Arena(start, len) => {
                let end = usize::from(start).saturating_add(usize::from(len));
                self.arena
                    .slots()
                    .get(usize::from(start)..end)
                    .unwrap_or(&[])
            }
        };
        w.u8(4);
        w.text(text);
    }
}
