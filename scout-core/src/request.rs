//! The tracked request and its span stack.
//!
//! A [`Request`] records what one transaction did: its spans (operation, parent, start and stop
//! time, tags), its request tags, and counts of everything it could not keep. It never
//! allocates, never panics and never blocks: when storage runs out, the newest data is not
//! recorded and the reason is counted in [`Drops`].
//!
//! Times are passed in by the caller (read them from a [`crate::Clock`]), which keeps this type
//! pure and cheap: starting and stopping a span with a `'static` operation name costs two
//! small pushes and a pop.
//!
//! ```
//! use scout_core::{Request, RequestIds, Timestamp, Value, SpanFlags};
//!
//! let mut req: Request = Request::new();
//! req.begin(RequestIds::from_parts([7; 16], [1, 2]), Timestamp(1_000), 1500);
//! req.start_span("Controller/users#show".into(), Timestamp(1_000), SpanFlags::NONE);
//! req.start_span("SQL/Query".into(), Timestamp(1_100), SpanFlags::NONE);
//! req.tag_span("db.statement".into(), Value::Str("SELECT 1")).unwrap();
//! req.stop_span(Timestamp(1_400)).unwrap();
//! let out = req.stop_span(Timestamp(2_000)).unwrap();
//! assert!(out.finished);
//! assert!(req.is_real());
//! assert_eq!(req.operation(), Some("Controller/users#show"));
//! let ops: Vec<&str> = req.spans().map(|s| s.operation()).collect();
//! assert_eq!(ops, ["SQL/Query", "Controller/users#show"]); // completion order
//! ```

use crate::id::RequestIds;
use crate::storage::{Buffer, Fixed, Storage};
use crate::time::Timestamp;
use crate::value::{RawJson, Text, Value};

/// "No index" in span and tag links.
const NONE: u16 = u16::MAX;
/// Open-stack marker: this span was not recorded; its children are (parented to the nearest
/// recorded ancestor).
const SKIPPED: u16 = u16::MAX;
/// Open-stack marker: this span and all its descendants are not recorded.
const IGNORED_TREE: u16 = u16::MAX - 1;
/// Largest number of spans or tags one request can index.
pub const MAX_INDEX: usize = (u16::MAX - 2) as usize;

/// A string stored in a request: a `'static` reference or a range of the request's arena.
#[derive(Debug, Clone, Copy)]
enum StrRef {
    Static(&'static str),
    Arena { start: u32, len: u32 },
}

#[derive(Debug, Clone, Copy)]
enum StoredValue {
    Str(StrRef),
    Json(StrRef),
    Int(i64),
    Float(f64),
    Bool(bool),
    Null,
}

/// An operation name: one text, or parts to concatenate.
#[derive(Clone, Copy)]
enum Op<'a> {
    Text(Text<'a>),
    Parts(&'a [&'a str]),
}

/// One recorded span (opaque; read it through [`SpanView`]).
#[derive(Debug, Clone, Copy)]
pub struct SpanRecord {
    op: StrRef,
    start: Timestamp,
    end: Timestamp,
    parent: u16,
    first_tag: u16,
    last_tag: u16,
    next_done: u16,
    flags: u8,
}

/// One recorded tag (opaque; read it through [`SpanView::tags`] or [`Request::request_tags`]).
#[derive(Debug, Clone, Copy)]
pub struct TagRecord {
    key: StrRef,
    value: StoredValue,
    next: u16,
}

/// Options for a new span.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct SpanFlags(u8);

impl SpanFlags {
    /// No options.
    pub const NONE: Self = Self(0);
    /// Do not record this span (its children are recorded, under its parent).
    pub const IGNORE: Self = Self(1);
    /// Do not record any descendant of this span (e.g. a database driver's internal calls).
    pub const IGNORE_CHILDREN: Self = Self(2);
    /// Never attach a backtrace to this span (transaction roots).
    pub const NO_BACKTRACE: Self = Self(4);

    /// Both sets of options.
    pub const fn union(self, other: Self) -> Self {
        Self(self.0 | other.0)
    }
    /// True if every option of `other` is set.
    pub const fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }
}

/// Why something was not recorded. Each is counted in [`Drops`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum DropReason {
    /// The request already has `span_limit` completed spans.
    SpanLimit,
    /// The span storage is full.
    SpanCapacity,
    /// Spans are nested deeper than the open-span stack holds.
    Depth,
    /// The tag storage is full.
    TagCapacity,
    /// The string arena is full.
    Arena,
    /// The request is not open (never begun, or already finished).
    NotOpen,
}

impl core::fmt::Display for DropReason {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            Self::SpanLimit => "span limit reached",
            Self::SpanCapacity => "span storage full",
            Self::Depth => "spans nested too deep",
            Self::TagCapacity => "tag storage full",
            Self::Arena => "string storage full",
            Self::NotOpen => "request not open",
        })
    }
}

impl core::error::Error for DropReason {}

/// Counts of what a request could not record, by reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Drops {
    /// Spans not recorded because `span_limit` spans had completed.
    pub span_limit: u32,
    /// Spans not recorded because the span storage was full.
    pub span_capacity: u32,
    /// Spans not recorded because nesting exceeded the open-span stack.
    pub depth: u32,
    /// Tags not recorded because the tag storage was full.
    pub tag_capacity: u32,
    /// Spans or tags not recorded because the string arena was full.
    pub arena: u32,
    /// Calls made while the request was not open.
    pub not_open: u32,
}

impl Drops {
    /// Sum of all counts.
    pub fn total(&self) -> u64 {
        u64::from(self.span_limit)
            + u64::from(self.span_capacity)
            + u64::from(self.depth)
            + u64::from(self.tag_capacity)
            + u64::from(self.arena)
            + u64::from(self.not_open)
    }
    fn count(&mut self, reason: DropReason) {
        self.count_n(reason, 1);
    }
    fn count_n(&mut self, reason: DropReason, n: usize) {
        let n = u32::try_from(n).unwrap_or(u32::MAX);
        let c = match reason {
            DropReason::SpanLimit => &mut self.span_limit,
            DropReason::SpanCapacity => &mut self.span_capacity,
            DropReason::Depth => &mut self.depth,
            DropReason::TagCapacity => &mut self.tag_capacity,
            DropReason::Arena => &mut self.arena,
            DropReason::NotOpen => &mut self.not_open,
        };
        *c = c.saturating_add(n);
    }
}

/// Index of a recorded span within its request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct SpanIdx(pub u16);

/// What happened to a span that was started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum SpanStart {
    /// Recorded at this index.
    Recorded(SpanIdx),
    /// Deliberately not recorded (an ignore flag, or an ancestor's `IGNORE_CHILDREN`).
    Ignored,
    /// Not recorded for lack of room or state; counted.
    Dropped(DropReason),
}

/// What stopping the innermost span did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct SpanStop {
    /// The recorded span that stopped, if it was recorded.
    pub span: Option<SpanIdx>,
    /// Its duration in microseconds, if it was recorded.
    pub duration_us: Option<u64>,
    /// True when this was the last open span: the request is now finished.
    pub finished: bool,
}

/// `stop_span` was called with no open span (extra stops are ignored).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct NoOpenSpan;

impl core::fmt::Display for NoOpenSpan {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("no open span to stop")
    }
}

impl core::error::Error for NoOpenSpan {}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Idle,
    Open,
    Finished,
}

/// A tracked request: spans, tags and drop counts of one transaction.
///
/// `S` chooses the storage; the default [`Fixed`] keeps 64 spans, 128 tags, 4 KiB of strings and
/// 32 levels of nesting inline.
pub struct Request<S: Storage = Fixed> {
    ids: RequestIds,
    start: Timestamp,
    end: Timestamp,
    state: State,
    real: bool,
    operation: u16,
    span_limit: u32,
    completed: u32,
    first_done: u16,
    last_done: u16,
    req_first_tag: u16,
    req_last_tag: u16,
    top_recorded: u16,
    ignored_depth: u32,
    overflow_depth: u32,
    drops: Drops,
    spans: S::Spans,
    tags: S::Tags,
    arena: S::Arena,
    stack: S::Stack,
}

impl<S: Storage> core::fmt::Debug for Request<S> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Request")
            .field("id", &self.ids.request_id())
            .field("state", &self.state)
            .field("real", &self.real)
            .field("operation", &self.operation())
            .field("spans", &self.spans.len())
            .field("open", &self.stack.len())
            .field("drops", &self.drops)
            .finish()
    }
}

impl<S: Storage> Default for Request<S> {
    fn default() -> Self {
        Self::new()
    }
}

impl<S: Storage> Request<S> {
    /// An idle request; call [`Request::begin`] before recording.
    pub fn new() -> Self {
        Self {
            ids: RequestIds::default(),
            start: Timestamp::ZERO,
            end: Timestamp::ZERO,
            state: State::Idle,
            real: false,
            operation: NONE,
            span_limit: 1500,
            completed: 0,
            first_done: NONE,
            last_done: NONE,
            req_first_tag: NONE,
            req_last_tag: NONE,
            top_recorded: NONE,
            ignored_depth: 0,
            overflow_depth: 0,
            drops: Drops::default(),
            spans: Default::default(),
            tags: Default::default(),
            arena: Default::default(),
            stack: Default::default(),
        }
    }

    /// Starts a new request (discarding anything recorded before), keeping the storage.
    ///
    /// `span_limit` is the number of completed spans after which new spans are no longer
    /// recorded (the Python agent's 1 500); open ancestors still complete.
    pub fn begin(&mut self, ids: RequestIds, now: Timestamp, span_limit: u32) {
        self.spans.clear();
        self.tags.clear();
        self.arena.clear();
        self.stack.clear();
        self.ids = ids;
        self.start = now;
        self.end = now;
        self.state = State::Open;
        self.real = false;
        self.operation = NONE;
        self.span_limit = span_limit;
        self.completed = 0;
        self.first_done = NONE;
        self.last_done = NONE;
        self.req_first_tag = NONE;
        self.req_last_tag = NONE;
        self.top_recorded = NONE;
        self.ignored_depth = 0;
        self.overflow_depth = 0;
        self.drops = Drops::default();
    }

    /// Opens a span as a child of the innermost open span.
    ///
    /// An operation starting with `Controller/` or `Job/` makes the request real and, if it is
    /// the first such span, names the request.
    pub fn start_span(&mut self, op: Text<'_>, now: Timestamp, flags: SpanFlags) -> SpanStart {
        self.start_op(Op::Text(op), now, flags)
    }

    /// Opens a span whose operation is the concatenation of `parts` (e.g. `["SQL", "/",
    /// name]`), copied straight into the arena with no intermediate buffer.
    pub fn start_span_parts(
        &mut self,
        parts: &[&str],
        now: Timestamp,
        flags: SpanFlags,
    ) -> SpanStart {
        self.start_op(Op::Parts(parts), now, flags)
    }

    fn start_op(&mut self, op: Op<'_>, now: Timestamp, flags: SpanFlags) -> SpanStart {
        if self.state != State::Open {
            self.drops.count(DropReason::NotOpen);
            return SpanStart::Dropped(DropReason::NotOpen);
        }
        // While spans overflow the open-span stack, new ones are deeper still: count them as
        // overflow too, so they stay above the overflowed ones.
        if self.overflow_depth > 0 {
            self.overflow_depth += 1;
            self.drops.count(DropReason::Depth);
            return SpanStart::Dropped(DropReason::Depth);
        }
        // Reserve the stack slot first: a span too deep is dropped for depth alone.
        if self.stack.try_push(SKIPPED).is_err() {
            self.overflow_depth += 1;
            self.drops.count(DropReason::Depth);
            return SpanStart::Dropped(DropReason::Depth);
        }
        let (marker, outcome) = self.decide_span(op, now, flags);
        if let Some(top) = self.stack.as_mut_slice().last_mut() {
            *top = marker;
        }
        if marker == IGNORED_TREE {
            self.ignored_depth += 1;
        }
        if let SpanStart::Recorded(idx) = outcome {
            self.top_recorded = idx.0;
            if flags.contains(SpanFlags::IGNORE_CHILDREN) {
                self.ignored_depth += 1;
            }
        }
        outcome
    }

    fn decide_span(&mut self, op: Op<'_>, now: Timestamp, flags: SpanFlags) -> (u16, SpanStart) {
        // Marker for a span that is not recorded: its descendants are ignored too when it
        // ignores its children.
        let unrecorded = if flags.contains(SpanFlags::IGNORE_CHILDREN) {
            IGNORED_TREE
        } else {
            SKIPPED
        };
        if self.ignored_depth > 0 {
            return (IGNORED_TREE, SpanStart::Ignored);
        }
        if flags.contains(SpanFlags::IGNORE) {
            return (unrecorded, SpanStart::Ignored);
        }
        if let Some(reason) = self.no_room() {
            self.drops.count(reason);
            return (unrecorded, SpanStart::Dropped(reason));
        }
        let idx = self.spans.len();
        let arena_mark = self.arena.len();
        let Some(op_ref) = self.store_op(op) else {
            self.drops.count(DropReason::Arena);
            return (unrecorded, SpanStart::Dropped(DropReason::Arena));
        };
        let rec = SpanRecord {
            op: op_ref,
            start: now,
            end: now,
            parent: self.top_recorded,
            first_tag: NONE,
            last_tag: NONE,
            next_done: NONE,
            flags: flags.0,
        };
        if self.spans.try_push(rec).is_err() {
            self.arena.truncate(arena_mark);
            self.drops.count(DropReason::SpanCapacity);
            return (unrecorded, SpanStart::Dropped(DropReason::SpanCapacity));
        }
        let idx = idx as u16;
        if self.operation == NONE {
            let name = self.bytes(op_ref);
            if name.starts_with(b"Controller/") || name.starts_with(b"Job/") {
                self.operation = idx;
                self.real = true;
            }
        }
        (idx, SpanStart::Recorded(SpanIdx(idx)))
    }

    /// Stops the innermost open span.
    pub fn stop_span(&mut self, now: Timestamp) -> Result<SpanStop, NoOpenSpan> {
        if self.overflow_depth > 0 {
            self.overflow_depth -= 1;
            return Ok(SpanStop {
                span: None,
                duration_us: None,
                finished: false,
            });
        }
        let entry = self.stack.pop().ok_or(NoOpenSpan)?;
        let mut stop = SpanStop {
            span: None,
            duration_us: None,
            finished: false,
        };
        match entry {
            IGNORED_TREE => self.ignored_depth = self.ignored_depth.saturating_sub(1),
            SKIPPED => {}
            idx => stop = self.complete(idx, now),
        }
        self.top_recorded = self.innermost_recorded_on_stack();
        if self.stack.is_empty() {
            self.state = State::Finished;
            self.end = now;
            stop.finished = true;
        }
        Ok(stop)
    }

    /// Stops a specific recorded span, even if spans opened after it are still open (guards
    /// dropped out of order, concurrent futures). Spans still open keep their parent. If the
    /// span is not open, nothing happens and `Err(NoOpenSpan)` is returned.
    pub fn stop_span_at(&mut self, span: SpanIdx, now: Timestamp) -> Result<SpanStop, NoOpenSpan> {
        // Only indices of recorded spans name a span (the largest values are stack markers).
        if usize::from(span.0) >= self.spans.len() || span.0 >= IGNORED_TREE {
            return Err(NoOpenSpan);
        }
        let stack = self.stack.as_slice();
        let Some(pos) = stack.iter().rposition(|&e| e == span.0) else {
            return Err(NoOpenSpan);
        };
        if pos + 1 == stack.len() && self.overflow_depth == 0 {
            return self.stop_span(now);
        }
        // Remove the entry from the middle of the stack.
        let len = stack.len();
        let tail = self.stack.as_mut_slice();
        tail.copy_within(pos + 1..len, pos);
        self.stack.truncate(len - 1);
        let stop = self.complete(span.0, now);
        // The innermost recorded span may have changed.
        self.top_recorded = self.innermost_recorded_on_stack();
        Ok(stop)
    }

    /// The innermost recorded span still on the open-span stack.
    fn innermost_recorded_on_stack(&self) -> u16 {
        self.stack
            .as_slice()
            .iter()
            .rev()
            .copied()
            .find(|&e| e != SKIPPED && e != IGNORED_TREE)
            .unwrap_or(NONE)
    }

    /// Marks a recorded span (already removed from the stack) as completed.
    fn complete(&mut self, idx: u16, now: Timestamp) -> SpanStop {
        let last = self.last_done;
        let Some(rec) = self.spans.as_mut_slice().get_mut(usize::from(idx)) else {
            return SpanStop {
                span: None,
                duration_us: None,
                finished: false,
            };
        };
        rec.end = now;
        let duration = now.micros_since(rec.start);
        if SpanFlags(rec.flags).contains(SpanFlags::IGNORE_CHILDREN) {
            self.ignored_depth = self.ignored_depth.saturating_sub(1);
        }
        if last == NONE {
            self.first_done = idx;
        } else if let Some(prev) = self.spans.as_mut_slice().get_mut(usize::from(last)) {
            prev.next_done = idx;
        }
        self.last_done = idx;
        self.completed = self.completed.saturating_add(1);
        SpanStop {
            span: Some(SpanIdx(idx)),
            duration_us: Some(duration),
            finished: false,
        }
    }

    /// Stops every open span at `now`, finishing the request (for transactions abandoned
    /// mid-way, e.g. a dropped future). Does nothing if the request is not open.
    pub fn finish(&mut self, now: Timestamp) {
        while self.state == State::Open {
            if self.stop_span(now).is_err() {
                self.state = State::Finished;
                self.end = now;
            }
        }
    }

    /// Tags the innermost open span. Tagging a span that was not recorded does nothing.
    /// A key already present keeps its position and takes the new value.
    pub fn tag_span(&mut self, key: Text<'_>, value: Value<'_>) -> Result<(), DropReason> {
        if self.state != State::Open {
            self.drops.count(DropReason::NotOpen);
            return Err(DropReason::NotOpen);
        }
        match self.stack.as_slice().last() {
            Some(&idx) if idx != SKIPPED && idx != IGNORED_TREE && self.overflow_depth == 0 => {
                self.tag_span_at(SpanIdx(idx), key, value)
            }
            _ => Ok(()),
        }
    }

    /// Tags a recorded span by index (also after it stopped, before the request is encoded).
    pub fn tag_span_at(
        &mut self,
        span: SpanIdx,
        key: Text<'_>,
        value: Value<'_>,
    ) -> Result<(), DropReason> {
        let Some(rec) = self.spans.as_slice().get(usize::from(span.0)) else {
            return Ok(());
        };
        let (first, last) = (rec.first_tag, rec.last_tag);
        let (first, last) = self.set_tag(first, last, key, value)?;
        if let Some(rec) = self.spans.as_mut_slice().get_mut(usize::from(span.0)) {
            rec.first_tag = first;
            rec.last_tag = last;
        }
        Ok(())
    }

    /// Tags the request. A key already present keeps its position and takes the new value.
    /// (Apply [`crate::check_context`] first for user-supplied context.)
    pub fn tag_request(&mut self, key: Text<'_>, value: Value<'_>) -> Result<(), DropReason> {
        if self.state == State::Idle {
            self.drops.count(DropReason::NotOpen);
            return Err(DropReason::NotOpen);
        }
        let (first, last) = self.set_tag(self.req_first_tag, self.req_last_tag, key, value)?;
        self.req_first_tag = first;
        self.req_last_tag = last;
        Ok(())
    }

    fn set_tag(
        &mut self,
        first: u16,
        last: u16,
        key: Text<'_>,
        value: Value<'_>,
    ) -> Result<(u16, u16), DropReason> {
        // Existing key: replace the value in place.
        let mut cur = first;
        while cur != NONE {
            let Some(t) = self.tags.as_slice().get(usize::from(cur)) else {
                break;
            };
            if self.bytes(t.key) == key.as_str().as_bytes() {
                let mark = self.arena.len();
                let v = self
                    .store_value(value)
                    .ok_or_else(|| self.fail(DropReason::Arena, mark))?;
                if let Some(t) = self.tags.as_mut_slice().get_mut(usize::from(cur)) {
                    t.value = v;
                }
                return Ok((first, last));
            }
            cur = t.next;
        }
        let idx = self.tags.len();
        if idx >= MAX_INDEX {
            self.drops.count(DropReason::TagCapacity);
            return Err(DropReason::TagCapacity);
        }
        let mark = self.arena.len();
        let k = self
            .store_text(key)
            .ok_or_else(|| self.fail(DropReason::Arena, mark))?;
        let v = self
            .store_value(value)
            .ok_or_else(|| self.fail(DropReason::Arena, mark))?;
        if self
            .tags
            .try_push(TagRecord {
                key: k,
                value: v,
                next: NONE,
            })
            .is_err()
        {
            return Err(self.fail(DropReason::TagCapacity, mark));
        }
        let idx = idx as u16;
        if last != NONE {
            if let Some(t) = self.tags.as_mut_slice().get_mut(usize::from(last)) {
                t.next = idx;
            }
            Ok((first, idx))
        } else {
            Ok((idx, idx))
        }
    }

    fn fail(&mut self, reason: DropReason, arena_mark: usize) -> DropReason {
        self.arena.truncate(arena_mark);
        self.drops.count(reason);
        reason
    }

    fn store_op(&mut self, op: Op<'_>) -> Option<StrRef> {
        match op {
            Op::Text(t) => self.store_text(t),
            Op::Parts(parts) => {
                let start = self.arena.len();
                let total: usize = parts.iter().map(|p| p.len()).sum();
                if start.checked_add(total)? > u32::MAX as usize {
                    return None;
                }
                for p in parts {
                    if self.arena.try_extend(p.as_bytes()).is_err() {
                        self.arena.truncate(start);
                        return None;
                    }
                }
                Some(StrRef::Arena {
                    start: start as u32,
                    len: total as u32,
                })
            }
        }
    }

    fn store_text(&mut self, t: Text<'_>) -> Option<StrRef> {
        match t {
            Text::Static(s) => Some(StrRef::Static(s)),
            Text::Borrowed(s) => self.copy_str(s),
        }
    }

    fn copy_str(&mut self, s: &str) -> Option<StrRef> {
        let start = self.arena.len();
        if start.checked_add(s.len())? > u32::MAX as usize {
            return None;
        }
        self.arena.try_extend(s.as_bytes()).ok()?;
        Some(StrRef::Arena {
            start: start as u32,
            len: s.len() as u32,
        })
    }

    fn store_value(&mut self, v: Value<'_>) -> Option<StoredValue> {
        Some(match v {
            Value::Str(s) => StoredValue::Str(self.copy_str(s)?),
            Value::Static(s) => StoredValue::Str(StrRef::Static(s)),
            Value::Json(j) => StoredValue::Json(self.copy_str(j.as_str())?),
            Value::Int(i) => StoredValue::Int(i),
            Value::Float(f) => StoredValue::Float(f),
            Value::Bool(b) => StoredValue::Bool(b),
            Value::Null => StoredValue::Null,
        })
    }

    /// The bytes of a stored string (for comparisons: no UTF-8 check).
    fn bytes(&self, r: StrRef) -> &[u8] {
        match r {
            StrRef::Static(s) => s.as_bytes(),
            StrRef::Arena { start, len } => {
                let (start, len) = (start as usize, len as usize);
                self.arena.as_slice().get(start..start + len).unwrap_or(&[])
            }
        }
    }

    fn resolve(&self, r: StrRef) -> &str {
        match r {
            StrRef::Static(s) => s,
            StrRef::Arena { start, len } => {
                let (start, len) = (start as usize, len as usize);
                self.arena
                    .as_slice()
                    .get(start..start + len)
                    .and_then(|b| core::str::from_utf8(b).ok())
                    .unwrap_or("")
            }
        }
    }

    fn resolve_value(&self, v: StoredValue) -> Value<'_> {
        match v {
            StoredValue::Str(r) => Value::Str(self.resolve(r)),
            // Checked when tagged; copied verbatim.
            // Checked by `RawJson::new` when it was tagged; not checked again.
            StoredValue::Json(r) => Value::Json(RawJson::checked(self.resolve(r))),
            StoredValue::Int(i) => Value::Int(i),
            StoredValue::Float(f) => Value::Float(f),
            StoredValue::Bool(b) => Value::Bool(b),
            StoredValue::Null => Value::Null,
        }
    }

    /// Why a new span cannot be recorded now (span limit reached, or no index left), if so.
    fn no_room(&self) -> Option<DropReason> {
        if self.completed >= self.span_limit {
            Some(DropReason::SpanLimit)
        } else if self.spans.len() >= MAX_INDEX {
            Some(DropReason::SpanCapacity)
        } else {
            None
        }
    }

    /// The innermost open recorded span (the parent a new span would get).
    pub fn innermost_span(&self) -> Option<SpanIdx> {
        (self.top_recorded != NONE && self.state == State::Open)
            .then_some(SpanIdx(self.top_recorded))
    }

    /// Copies the completed spans of `other` (with their tags) into this request, its root
    /// spans becoming children of `under` (or roots). Used to merge work recorded by a spawned
    /// task into the request that spawned it. Returns the number of spans merged; whatever does
    /// not fit (span limit, storage) is counted in [`Drops`].
    pub fn absorb<S2: Storage>(&mut self, other: &Request<S2>, under: Option<SpanIdx>) -> usize {
        if self.state == State::Idle {
            self.drops.count(DropReason::NotOpen);
            return 0;
        }
        let base = self.spans.len();
        let parent_of_roots = under.map_or(NONE, |u| u.0);
        let mut copied = 0usize;
        let total = other.spans.len();
        for (i, rec) in other.spans.as_slice().iter().enumerate() {
            if let Some(reason) = self.no_room() {
                self.drops.count_n(reason, total - i);
                break;
            }
            let mark = self.arena.len();
            let Some(op) = self.copy_str(other.resolve(rec.op)) else {
                self.drops.count_n(DropReason::Arena, total - i);
                break;
            };
            let parent = if rec.parent == NONE {
                parent_of_roots
            } else {
                (base + usize::from(rec.parent)) as u16
            };
            let new = SpanRecord {
                op,
                start: rec.start,
                end: rec.end,
                parent,
                first_tag: NONE,
                last_tag: NONE,
                next_done: NONE,
                flags: rec.flags,
            };
            if self.spans.try_push(new).is_err() {
                self.arena.truncate(mark);
                self.drops.count_n(DropReason::SpanCapacity, total - i);
                break;
            }
            let idx = SpanIdx((base + i) as u16);
            let mut cur = rec.first_tag;
            while cur != NONE {
                let Some(t) = other.tags.as_slice().get(usize::from(cur)) else {
                    break;
                };
                let _ = self.tag_span_at(
                    idx,
                    Text::Borrowed(other.resolve(t.key)),
                    other.resolve_value(t.value),
                );
                cur = t.next;
            }
            self.completed = self.completed.saturating_add(1);
            copied += 1;
        }
        // Link the copied spans in the other request's completion order.
        let mut cur = other.first_done;
        while cur != NONE && usize::from(cur) < copied {
            let idx = (base + usize::from(cur)) as u16;
            let last = self.last_done;
            if last == NONE {
                self.first_done = idx;
            } else if let Some(prev) = self.spans.as_mut_slice().get_mut(usize::from(last)) {
                prev.next_done = idx;
            }
            self.last_done = idx;
            cur = other
                .spans
                .as_slice()
                .get(usize::from(cur))
                .map_or(NONE, |r| r.next_done);
        }
        copied
    }

    /// Marks the request real (it will be reported) without a `Controller/` or `Job/` span.
    pub fn mark_real(&mut self) {
        self.real = true;
    }
    /// True once a `Controller/` or `Job/` span started or [`Request::mark_real`] was called.
    /// Only real requests are reported.
    pub fn is_real(&self) -> bool {
        self.real
    }
    /// True between [`Request::begin`] and the stop of the last open span.
    pub fn is_open(&self) -> bool {
        self.state == State::Open
    }
    /// True once the last open span stopped.
    pub fn is_finished(&self) -> bool {
        self.state == State::Finished
    }
    /// The first `Controller/` or `Job/` operation, which names the request.
    pub fn operation(&self) -> Option<&str> {
        self.spans
            .as_slice()
            .get(usize::from(self.operation))
            .map(|s| self.resolve(s.op))
    }
    /// The request's ids.
    pub fn ids(&self) -> &RequestIds {
        &self.ids
    }
    /// When the request began.
    pub fn start_time(&self) -> Timestamp {
        self.start
    }
    /// When the request finished (its start while still open).
    pub fn end_time(&self) -> Timestamp {
        self.end
    }
    /// What could not be recorded.
    pub fn drops(&self) -> Drops {
        self.drops
    }
    /// Number of recorded spans (open and completed).
    pub fn span_count(&self) -> usize {
        self.spans.len()
    }
    /// Number of open spans (recorded or not).
    pub fn depth(&self) -> usize {
        self.stack.len() + self.overflow_depth as usize
    }
    /// Bytes of the string arena in use.
    pub fn arena_used(&self) -> usize {
        self.arena.len()
    }
    /// The value of a request tag.
    pub fn request_tag(&self, key: &str) -> Option<Value<'_>> {
        let mut cur = self.req_first_tag;
        while cur != NONE {
            let t = self.tags.as_slice().get(usize::from(cur))?;
            if self.bytes(t.key) == key.as_bytes() {
                return Some(self.resolve_value(t.value));
            }
            cur = t.next;
        }
        None
    }
    /// Request tags in first-insertion order.
    pub fn request_tags(&self) -> TagIter<'_, S> {
        TagIter {
            req: self,
            cur: self.req_first_tag,
        }
    }
    /// Completed spans in completion order (children before their parents).
    pub fn spans(&self) -> SpanIter<'_, S> {
        SpanIter {
            req: self,
            cur: self.first_done,
        }
    }
    /// The four buffers (spans, tags, arena, open stack), e.g. to measure or trim them.
    pub fn storage(&self) -> (&S::Spans, &S::Tags, &S::Arena, &S::Stack) {
        (&self.spans, &self.tags, &self.arena, &self.stack)
    }
    /// The four buffers, mutably. Changing their contents other than by clearing them breaks
    /// the request's invariants; use this to release memory of an idle or finished request.
    pub fn storage_mut(&mut self) -> (&mut S::Spans, &mut S::Tags, &mut S::Arena, &mut S::Stack) {
        (
            &mut self.spans,
            &mut self.tags,
            &mut self.arena,
            &mut self.stack,
        )
    }
    /// A recorded span by index.
    pub fn span(&self, idx: SpanIdx) -> Option<SpanView<'_, S>> {
        let rec = self.spans.as_slice().get(usize::from(idx.0))?;
        Some(SpanView {
            req: self,
            idx: idx.0,
            rec,
        })
    }
}

/// A recorded span, read-only.
#[derive(Debug)]
pub struct SpanView<'r, S: Storage> {
    req: &'r Request<S>,
    idx: u16,
    rec: &'r SpanRecord,
}

impl<'r, S: Storage> SpanView<'r, S> {
    /// Index within the request.
    pub fn index(&self) -> SpanIdx {
        SpanIdx(self.idx)
    }
    /// The operation, e.g. `SQL/Query`.
    pub fn operation(&self) -> &'r str {
        self.req.resolve(self.rec.op)
    }
    /// Start time.
    pub fn start_time(&self) -> Timestamp {
        self.rec.start
    }
    /// Stop time (the start time while open).
    pub fn end_time(&self) -> Timestamp {
        self.rec.end
    }
    /// The nearest recorded ancestor.
    pub fn parent(&self) -> Option<SpanIdx> {
        (self.rec.parent != NONE).then_some(SpanIdx(self.rec.parent))
    }
    /// Tags in first-insertion order.
    pub fn tags(&self) -> TagIter<'r, S> {
        TagIter {
            req: self.req,
            cur: self.rec.first_tag,
        }
    }
    /// The options the span was started with.
    pub fn flags(&self) -> SpanFlags {
        SpanFlags(self.rec.flags)
    }
    /// Duration in microseconds (0 while open).
    pub fn duration_us(&self) -> u64 {
        self.rec.end.micros_since(self.rec.start)
    }
}

/// Iterator over completed spans in completion order.
#[derive(Debug)]
pub struct SpanIter<'r, S: Storage> {
    req: &'r Request<S>,
    cur: u16,
}

impl<'r, S: Storage> Iterator for SpanIter<'r, S> {
    type Item = SpanView<'r, S>;
    fn next(&mut self) -> Option<Self::Item> {
        if self.cur == NONE {
            return None;
        }
        let rec = self.req.spans.as_slice().get(usize::from(self.cur))?;
        let view = SpanView {
            req: self.req,
            idx: self.cur,
            rec,
        };
        self.cur = rec.next_done;
        Some(view)
    }
}

/// Iterator over tags as `(key, value)`.
#[derive(Debug)]
pub struct TagIter<'r, S: Storage> {
    req: &'r Request<S>,
    cur: u16,
}

impl<'r, S: Storage> Iterator for TagIter<'r, S> {
    type Item = (&'r str, Value<'r>);
    fn next(&mut self) -> Option<Self::Item> {
        if self.cur == NONE {
            return None;
        }
        let t = self.req.tags.as_slice().get(usize::from(self.cur))?;
        self.cur = t.next;
        Some((self.req.resolve(t.key), self.req.resolve_value(t.value)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::Fixed;

    type Small = Request<Fixed<4, 4, 32, 3>>;

    fn begun<S: Storage>(limit: u32) -> Request<S> {
        let mut r = Request::new();
        r.begin(
            RequestIds::from_parts([1; 16], [2, 3]),
            Timestamp(100),
            limit,
        );
        r
    }

    fn ops<S: Storage>(r: &Request<S>) -> heapless::Vec<&str, 16> {
        r.spans().map(|s| s.operation()).collect()
    }

    #[test]
    fn nesting_parents_and_completion_order() {
        let mut r: Request = begun(1500);
        let root = r.start_span("Controller/a".into(), Timestamp(100), SpanFlags::NONE);
        let child = r.start_span("SQL/Query".into(), Timestamp(110), SpanFlags::NONE);
        let grandchild = r.start_span("Custom/x".into(), Timestamp(120), SpanFlags::NONE);
        assert_eq!(root, SpanStart::Recorded(SpanIdx(0)));
        assert_eq!(grandchild, SpanStart::Recorded(SpanIdx(2)));
        let s = r.stop_span(Timestamp(130)).unwrap();
        assert_eq!(
            s,
            SpanStop {
                span: Some(SpanIdx(2)),
                duration_us: Some(10),
                finished: false
            }
        );
        r.stop_span(Timestamp(140)).unwrap();
        r.start_span("HTTP/GET".into(), Timestamp(150), SpanFlags::NONE);
        r.stop_span(Timestamp(160)).unwrap();
        let last = r.stop_span(Timestamp(200)).unwrap();
        assert!(last.finished && r.is_finished());
        assert_eq!(r.end_time(), Timestamp(200));
        assert_eq!(
            ops(&r),
            ["Custom/x", "SQL/Query", "HTTP/GET", "Controller/a"]
        );
        let parents: heapless::Vec<Option<SpanIdx>, 4> = r.spans().map(|s| s.parent()).collect();
        assert_eq!(
            parents,
            [Some(SpanIdx(1)), Some(SpanIdx(0)), Some(SpanIdx(0)), None]
        );
        assert_eq!(child, SpanStart::Recorded(SpanIdx(1)));
        assert_eq!(
            r.stop_span(Timestamp(300)),
            Err(NoOpenSpan),
            "extra stops are refused"
        );
        assert_eq!(
            r.start_span("Custom/late".into(), Timestamp(300), SpanFlags::NONE),
            SpanStart::Dropped(DropReason::NotOpen)
        );
    }

    #[test]
    fn real_only_with_controller_or_job() {
        let mut r: Request = begun(1500);
        r.start_span("Custom/x".into(), Timestamp(1), SpanFlags::NONE);
        r.stop_span(Timestamp(2)).unwrap();
        assert!(!r.is_real());
        assert_eq!(r.operation(), None);
        let mut r: Request = begun(1500);
        r.start_span("Job/mail".into(), Timestamp(1), SpanFlags::NONE);
        assert!(r.is_real());
        assert_eq!(r.operation(), Some("Job/mail"));
    }

    #[test]
    fn span_limit_keeps_ancestors_and_counts() {
        let mut r: Request = begun(3);
        r.start_span("Controller/a".into(), Timestamp(1), SpanFlags::NONE);
        for i in 0..5 {
            let s = r.start_span("Custom/x".into(), Timestamp(2 + i), SpanFlags::NONE);
            assert_eq!(
                matches!(s, SpanStart::Dropped(DropReason::SpanLimit)),
                i >= 3
            );
            r.stop_span(Timestamp(3 + i)).unwrap();
        }
        r.stop_span(Timestamp(20)).unwrap();
        assert_eq!(r.spans().count(), 4, "3 children + the open root");
        assert_eq!(r.drops().span_limit, 2);
    }

    #[test]
    fn capacities_drop_and_count_never_panic() {
        let mut r: Small = begun(1500);
        for i in 0..6u64 {
            r.start_span("Custom/deep".into(), Timestamp(i), SpanFlags::NONE);
        }
        // 3 on the stack; 3 refused by depth.
        assert_eq!(r.drops().depth, 3);
        assert_eq!(r.depth(), 6);
        for i in 0..6u64 {
            let s = r.stop_span(Timestamp(10 + i)).unwrap();
            assert_eq!(s.finished, i == 5);
        }
        assert_eq!(r.spans().count(), 3);

        let mut r: Small = begun(1500);
        r.start_span("Controller/x".into(), Timestamp(0), SpanFlags::NONE);
        for i in 0..5u64 {
            r.start_span("Custom/y".into(), Timestamp(i), SpanFlags::NONE);
            r.stop_span(Timestamp(i + 1)).unwrap();
        }
        assert_eq!(r.drops().span_capacity, 2);
        // Tags: 4 slots.
        for (i, k) in ["a", "b", "c", "d", "e"].iter().enumerate() {
            let res = r.tag_request(Text::Static(k), Value::Int(i as i64));
            assert_eq!(res.is_err(), i == 4);
        }
        assert_eq!(r.drops().tag_capacity, 1);
        // Arena: 32 bytes; a long borrowed string does not fit and leaves nothing behind.
        let used = r.arena_used();
        assert_eq!(
            r.tag_request("a".into(), Value::Str("0123456789012345678901234567890123")),
            Err(DropReason::Arena)
        );
        assert_eq!(r.arena_used(), used);
        assert_eq!(r.request_tag("a"), Some(Value::Int(0)), "old value kept");
        r.stop_span(Timestamp(50)).unwrap();
        assert!(r.is_finished());
    }

    #[test]
    fn tags_overwrite_in_place() {
        let mut r: Request = begun(1500);
        r.start_span("Controller/x".into(), Timestamp(0), SpanFlags::NONE);
        r.tag_request("a".into(), Value::Int(1)).unwrap();
        r.tag_request("b".into(), Value::Str("two")).unwrap();
        r.tag_request(Text::Borrowed("a"), Value::Bool(true))
            .unwrap();
        {
            let tags: heapless::Vec<(&str, Value<'_>), 4> = r.request_tags().collect();
            assert_eq!(tags, [("a", Value::Bool(true)), ("b", Value::Str("two"))]);
        }
        r.tag_span("k".into(), Value::Float(0.5)).unwrap();
        r.tag_span("k".into(), Value::Float(1.5)).unwrap();
        let span = r.span(SpanIdx(0)).unwrap();
        let st: heapless::Vec<(&str, Value<'_>), 4> = span.tags().collect();
        assert_eq!(st, [("k", Value::Float(1.5))]);
    }

    #[test]
    fn ignore_and_ignore_children() {
        let mut r: Request = begun(1500);
        r.start_span("Controller/x".into(), Timestamp(0), SpanFlags::NONE);
        // An ignored span: its child is recorded under the root.
        assert_eq!(
            r.start_span("Custom/skip".into(), Timestamp(1), SpanFlags::IGNORE),
            SpanStart::Ignored
        );
        r.tag_span("ignored".into(), Value::Int(1)).unwrap();
        r.start_span("Custom/kept".into(), Timestamp(2), SpanFlags::NONE);
        r.stop_span(Timestamp(3)).unwrap();
        r.stop_span(Timestamp(4)).unwrap();
        // A span ignoring its children: recorded, its subtree is not.
        r.start_span(
            "Elasticsearch/Search".into(),
            Timestamp(5),
            SpanFlags::IGNORE_CHILDREN,
        );
        assert_eq!(
            r.start_span("HTTP/POST".into(), Timestamp(6), SpanFlags::NONE),
            SpanStart::Ignored
        );
        assert_eq!(
            r.start_span("HTTP/inner".into(), Timestamp(6), SpanFlags::NONE),
            SpanStart::Ignored
        );
        r.stop_span(Timestamp(7)).unwrap();
        r.stop_span(Timestamp(7)).unwrap();
        r.stop_span(Timestamp(8)).unwrap();
        // After it closed, children are recorded again.
        r.start_span("Custom/after".into(), Timestamp(9), SpanFlags::NONE);
        r.stop_span(Timestamp(10)).unwrap();
        r.stop_span(Timestamp(11)).unwrap();
        assert_eq!(
            ops(&r),
            [
                "Custom/kept",
                "Elasticsearch/Search",
                "Custom/after",
                "Controller/x"
            ]
        );
        let kept = r.spans().next().unwrap();
        assert_eq!(kept.parent(), Some(SpanIdx(0)));
        assert_eq!(r.drops().total(), 0, "deliberate ignores are not drops");
    }

    #[test]
    fn out_of_order_stop() {
        let mut r: Request = begun(1500);
        r.start_span("Controller/x".into(), Timestamp(0), SpanFlags::NONE);
        let SpanStart::Recorded(a) = r.start_span("Custom/a".into(), Timestamp(1), SpanFlags::NONE)
        else {
            panic!()
        };
        let SpanStart::Recorded(b) = r.start_span("Custom/b".into(), Timestamp(2), SpanFlags::NONE)
        else {
            panic!()
        };
        // `a` finishes first although `b` was opened inside it.
        let s = r.stop_span_at(a, Timestamp(3)).unwrap();
        assert_eq!(s.duration_us, Some(2));
        assert_eq!(r.stop_span_at(a, Timestamp(3)), Err(NoOpenSpan));
        // New spans now nest under `b`, the innermost open one.
        let SpanStart::Recorded(c) = r.start_span("Custom/c".into(), Timestamp(4), SpanFlags::NONE)
        else {
            panic!()
        };
        assert_eq!(r.span(c).unwrap().parent(), Some(b));
        r.stop_span_at(c, Timestamp(5)).unwrap();
        r.stop_span_at(b, Timestamp(6)).unwrap();
        let last = r.stop_span_at(SpanIdx(0), Timestamp(7)).unwrap();
        assert!(last.finished);
        assert_eq!(
            ops(&r),
            ["Custom/a", "Custom/c", "Custom/b", "Controller/x"]
        );
    }

    #[test]
    fn finish_closes_everything() {
        let mut r: Request = begun(1500);
        r.start_span("Controller/x".into(), Timestamp(0), SpanFlags::NONE);
        r.start_span("Custom/y".into(), Timestamp(1), SpanFlags::NONE);
        r.finish(Timestamp(9));
        assert!(r.is_finished());
        assert_eq!(r.spans().count(), 2);
        assert_eq!(r.end_time(), Timestamp(9));
    }

    #[test]
    fn parts_are_joined() {
        let mut r: Request = begun(1500);
        r.start_span_parts(
            &["Controller", "/", "users#show"],
            Timestamp(0),
            SpanFlags::NONE,
        );
        r.start_span_parts(&["SQL", "/", "Query"], Timestamp(1), SpanFlags::NONE);
        r.stop_span(Timestamp(2)).unwrap();
        r.stop_span(Timestamp(3)).unwrap();
        assert!(r.is_real());
        assert_eq!(r.operation(), Some("Controller/users#show"));
        assert_eq!(ops(&r), ["SQL/Query", "Controller/users#show"]);
        let mut tiny: Request<Fixed<4, 4, 8, 4>> = begun(1500);
        assert_eq!(
            tiny.start_span_parts(
                &["Controller", "/", "toolong"],
                Timestamp(0),
                SpanFlags::NONE
            ),
            SpanStart::Dropped(DropReason::Arena)
        );
        assert_eq!(tiny.arena_used(), 0);
    }

    #[test]
    fn absorb_merges_under_a_span() {
        let mut parent: Request = begun(1500);
        parent.start_span("Controller/x".into(), Timestamp(0), SpanFlags::NONE);
        let under = parent.innermost_span();
        assert_eq!(under, Some(SpanIdx(0)));
        let mut child: Request = begun(1500);
        child.start_span(Text::Borrowed("Custom/task"), Timestamp(1), SpanFlags::NONE);
        child.start_span("SQL/Query".into(), Timestamp(2), SpanFlags::NONE);
        child
            .tag_span(Text::Borrowed("db.statement"), Value::Str("SELECT 1"))
            .unwrap();
        child.stop_span(Timestamp(3)).unwrap();
        child.stop_span(Timestamp(4)).unwrap();
        assert_eq!(parent.absorb(&child, under), 2);
        parent.stop_span(Timestamp(9)).unwrap();
        assert_eq!(ops(&parent), ["SQL/Query", "Custom/task", "Controller/x"]);
        let task = parent.spans().nth(1).unwrap();
        assert_eq!(task.parent(), Some(SpanIdx(0)));
        let sql = parent.spans().next().unwrap();
        assert_eq!(sql.parent(), Some(task.index()));
        assert_eq!(
            sql.tags().next(),
            Some(("db.statement", Value::Str("SELECT 1")))
        );
        // Limits apply and are counted.
        let mut small: Request = begun(1);
        small.start_span("Controller/y".into(), Timestamp(0), SpanFlags::NONE);
        small.start_span("Custom/a".into(), Timestamp(0), SpanFlags::NONE);
        small.stop_span(Timestamp(1)).unwrap();
        assert_eq!(small.absorb(&child, None), 0);
        assert_eq!(small.drops().span_limit, 2);
    }

    #[test]
    fn borrowed_names_are_copied() {
        let mut r: Request = begun(1500);
        {
            let mut name = [0u8; 16];
            name[..14].copy_from_slice(b"Controller/dyn");
            let s = core::str::from_utf8(&name[..14]).unwrap();
            r.start_span(Text::Borrowed(s), Timestamp(0), SpanFlags::NONE);
        }
        r.stop_span(Timestamp(1)).unwrap();
        assert_eq!(r.operation(), Some("Controller/dyn"));
    }
}
