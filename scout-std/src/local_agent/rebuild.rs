//! Rebuilding requests from their commands, whatever the order they arrive in.
//!
//! Every command names its request; a request's state is created by whichever of its commands
//! comes first, and a span's state by whichever of `StartSpan`, `TagSpan` or `StopSpan` comes first.
//! Parent links are resolved only when `FinishRequest` arrives (at the end of a `BatchCommand`, after
//! every other command of the batch), so children-first (Python), parents-first (Node, PHP) and
//! one-command-per-frame (older agents) all give the same tree.
//!
//! Storage: a pending request keeps every string it receives (span ids, parent ids, operations,
//! tag names, string tag values) in one text buffer, and its spans and tags in flat vectors that
//! refer to it by range, so a command allocates nothing of its own. A finished request keeps the
//! same buffers plus the span order ([`Rebuilt`]); the public [`FinishedRequest`] is only built
//! from it when someone asks (request history, export, slowest traces). The buffers of requests
//! that are no longer referenced go back to a bounded pool, so steady traffic reuses them.

use std::collections::{HashMap, VecDeque};
use std::hash::BuildHasher as _;
use std::sync::Arc;
use std::time::Instant;

use serde_json::{Map, Value};

use super::config::Limits;
use super::hash::FastState;
use super::model::{Counters, FinishedRequest, FinishedSpan};
use super::protocol::{Command, TagValue};
use super::scan::starts_with;
use super::timestamp::Timestamp;

const MAX_WARNINGS: usize = 20;
const CLOSED_IDS_KEPT: usize = 20_000;
const CLOSED_IDS_START: usize = 1_024;
/// Fixed per-item overhead added to the approximate size of pending data.
const OVERHEAD: usize = 64;
/// Spans of one request are found by a linear scan up to this many, then through an index.
const SPAN_INDEX_AFTER: usize = 24;
/// Request buffers kept for reuse, and the largest buffers that are kept (bounded memory: at
/// most about 5 MB in the pool).
const POOL_MAX: usize = 64;
const POOL_MAX_TEXT: usize = 16 * 1024;
const POOL_MAX_ITEMS: usize = 256;
/// A request's text buffer is compacted once the text that replaced values and repeated
/// `StartSpan`s left behind exceeds this and half of the buffer (so it stays bounded by the
/// live text, as it was with one string per value).
const COMPACT_AFTER: usize = if cfg!(test) { 64 } else { 4096 };
/// "No tag" in a span's tag chain.
const NONE: usize = usize::MAX;
/// An empty `Buffers::shared` slot (frame 0 is never applied).
const NO_SHARED: (u64, usize, usize, Txt) = (0, 0, 0, Txt { start: 0, end: 0 });

/// A string stored in a request's text buffer (byte range).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Txt {
    start: usize,
    end: usize,
}

/// The text of `t` (empty if the range is not in `text`, which cannot happen).
#[inline]
fn txt(text: &str, t: Txt) -> &str {
    text.get(t.start..t.end).unwrap_or_default()
}

#[inline]
fn push_txt(text: &mut String, s: &str) -> Txt {
    let start = text.len();
    text.push_str(s);
    Txt {
        start,
        end: text.len(),
    }
}

#[inline]
fn eq(a: &str, b: &str) -> bool {
    a.len() == b.len() && starts_with(a.as_bytes(), b.as_bytes())
}

/// A cheap summary of an id for rejecting most unequal ones without comparing them: its length
/// and its last eight bytes (where generated ids differ).
#[inline]
fn fingerprint(id: &str) -> u64 {
    let b = id.as_bytes();
    let tail = match b.get(b.len().wrapping_sub(8)..) {
        Some(t) => word(t),
        None => b.iter().fold(0u64, |w, &c| (w << 8) | u64::from(c)),
    };
    tail ^ (b.len() as u64).rotate_right(8)
}

/// The first eight bytes of `b` (at least eight long), little-endian.
#[inline]
fn word(b: &[u8]) -> u64 {
    let mut w = [0u8; 8];
    if let Some(src) = b.get(..8) {
        w.copy_from_slice(src);
    }
    u64::from_le_bytes(w)
}

/// A stored tag value (see [`TagValue`]; strings are in the text buffer).
#[derive(Debug, Clone, PartialEq)]
enum Val {
    Null,
    Bool(bool),
    UInt(u64),
    Str(Txt),
    Json(Box<Value>),
}

#[derive(Debug)]
struct Tag {
    key: Txt,
    val: Val,
    /// The span's next tag (index in `Buffers::span_tags`), or [`NONE`]; unused for request tags.
    next: usize,
}

#[derive(Debug)]
struct PendingSpan {
    id: Txt,
    parent: Option<Txt>,
    operation: Option<Txt>,
    start: Option<Timestamp>,
    end: Option<Timestamp>,
    /// First and last tag of the span's chain in `Buffers::span_tags` (insertion order).
    first_tag: usize,
    last_tag: usize,
    tag_count: usize,
}

/// One span of a finished request, in tree pre-order.
#[derive(Debug, Clone, Copy)]
struct Node {
    /// Position in `Buffers::spans`.
    span: usize,
    depth: u32,
    duration_us: u64,
    exclusive_us: u64,
}

/// Everything a request holds, reused through the pool.
#[derive(Debug, Default)]
struct Buffers {
    text: String,
    /// Bytes of `text` no longer referenced (replaced values and operations).
    garbage: usize,
    /// Request tags in insertion order.
    tags: Vec<Tag>,
    /// Spans in first-seen order (the position breaks ties between equal start times).
    spans: Vec<PendingSpan>,
    /// [`fingerprint`] of each span's id, by position (scanned before any id is compared).
    fingerprints: Vec<u64>,
    /// Tags of all spans, chained per span.
    span_tags: Vec<Tag>,
    /// The spans in tree pre-order, once finished.
    order: Vec<Node>,
    /// Open-addressing index `span_id` -> position + 1 (0: free slot), once the request has
    /// more than [`SPAN_INDEX_AFTER`] spans; empty before.
    index: Vec<usize>,
    /// The last parent id and operation stored, with the frame, address and length of the
    /// command string they came from: the same string again (the scanner hands out one string
    /// for a repeated value within a frame) is stored once, and resolved once at the finish.
    shared: [(u64, usize, usize, Txt); 2],
}

impl Buffers {
    /// New buffers with room for a typical request (a dozen spans), so that it grows no vector.
    fn with_room() -> Self {
        Self {
            text: String::with_capacity(1024),
            garbage: 0,
            tags: Vec::with_capacity(8),
            spans: Vec::with_capacity(16),
            fingerprints: Vec::with_capacity(16),
            span_tags: Vec::with_capacity(16),
            order: Vec::with_capacity(16),
            index: Vec::new(),
            shared: [NO_SHARED; 2],
        }
    }

    fn clear(&mut self) {
        self.text.clear();
        self.garbage = 0;
        self.tags.clear();
        self.spans.clear();
        self.fingerprints.clear();
        self.span_tags.clear();
        self.order.clear();
        self.index.clear();
        self.shared = [NO_SHARED; 2];
    }

    fn poolable(&self) -> bool {
        self.text.capacity() <= POOL_MAX_TEXT
            && self.tags.capacity() <= POOL_MAX_ITEMS
            && self.spans.capacity() <= POOL_MAX_ITEMS
            && self.fingerprints.capacity() <= POOL_MAX_ITEMS
            && self.span_tags.capacity() <= POOL_MAX_ITEMS
            && self.order.capacity() <= POOL_MAX_ITEMS
            && self.index.capacity() <= 4 * POOL_MAX_ITEMS
    }

    /// Counts `t`'s text as unreferenced, and compacts the text when too much of it is.
    fn discard(&mut self, t: Txt) {
        self.garbage += t.end - t.start;
        if self.garbage > COMPACT_AFTER && self.garbage * 2 > self.text.len() {
            self.compact();
        }
    }

    /// Copies the referenced text into a new buffer (in the same order) and moves every range.
    fn compact(&mut self) {
        let old = std::mem::take(&mut self.text);
        let mut text = String::with_capacity(old.len() - self.garbage.min(old.len()));
        let mut keep = |t: &mut Txt| *t = push_txt(&mut text, txt(&old, *t));
        for s in &mut self.spans {
            keep(&mut s.id);
            if let Some(p) = &mut s.parent {
                keep(p);
            }
            if let Some(o) = &mut s.operation {
                keep(o);
            }
        }
        for t in self.tags.iter_mut().chain(self.span_tags.iter_mut()) {
            keep(&mut t.key);
            if let Val::Str(v) = &mut t.val {
                keep(v);
            }
        }
        self.text = text;
        self.garbage = 0;
        self.shared = [NO_SHARED; 2];
    }

    /// `s` (from a command of frame `frame`) stored in the text as slot `k` of `shared`: reused
    /// when it is the same command string as last time.
    fn push_shared(&mut self, k: usize, s: &str, frame: u64) -> Txt {
        let key = (frame, s.as_ptr() as usize, s.len());
        match self.shared.get(k) {
            Some(&(f, p, l, t)) if (f, p, l) == key => t,
            _ => {
                let t = push_txt(&mut self.text, s);
                if let Some(slot) = self.shared.get_mut(k) {
                    *slot = (key.0, key.1, key.2, t);
                }
                t
            }
        }
    }

    fn span_id(&self, i: usize) -> &str {
        self.spans.get(i).map_or("", |s| txt(&self.text, s.id))
    }

    /// Rebuilds the span index over the current positions.
    fn build_index(&mut self, hs: &FastState) {
        let cap = (self.spans.len() * 2).next_power_of_two().max(64);
        self.index.clear();
        self.index.resize(cap, 0);
        for i in 0..self.spans.len() {
            let h = hs.hash_one(self.span_id(i)) as usize;
            self.index_put(h, i);
        }
    }

    fn index_put(&mut self, hash: usize, pos: usize) {
        let mask = self.index.len() - 1;
        let mut slot = hash & mask;
        while self.index[slot] != 0 {
            slot = (slot + 1) & mask;
        }
        self.index[slot] = pos + 1;
    }

    /// Adds span `pos` (just pushed) to the index, growing it to stay at most half full.
    fn index_add(&mut self, pos: usize, hs: &FastState) {
        if self.index.is_empty() || self.spans.len() * 2 > self.index.len() {
            self.build_index(hs);
        } else {
            let h = hs.hash_one(self.span_id(pos)) as usize;
            self.index_put(h, pos);
        }
    }

    /// Position of span `id`, if it is known.
    fn find_span(&self, id: &str, hs: &FastState) -> Option<usize> {
        if self.index.is_empty() {
            let fp = fingerprint(id);
            return self
                .fingerprints
                .iter()
                .enumerate()
                .filter(|&(_, &f)| f == fp)
                .map(|(i, _)| i)
                .find(|&i| eq(self.span_id(i), id));
        }
        let mask = self.index.len() - 1;
        let mut slot = hs.hash_one(id) as usize & mask;
        loop {
            match self.index[slot] {
                0 => return None,
                p if eq(self.span_id(p - 1), id) => return Some(p - 1),
                _ => slot = (slot + 1) & mask,
            }
        }
    }

    fn request_tag(&self, key: &str) -> Option<&Val> {
        self.tags
            .iter()
            .find(|t| eq(txt(&self.text, t.key), key))
            .map(|t| &t.val)
    }

    fn value(&self, v: &Val) -> Value {
        match v {
            Val::Null => Value::Null,
            Val::Bool(b) => Value::Bool(*b),
            Val::UInt(u) => Value::from(*u),
            Val::Str(t) => Value::String(txt(&self.text, *t).to_owned()),
            Val::Json(v) => Value::clone(v),
        }
    }

    fn request_tag_map(&self) -> Map<String, Value> {
        let mut m = Map::with_capacity(self.tags.len());
        for t in &self.tags {
            m.insert(txt(&self.text, t.key).to_owned(), self.value(&t.val));
        }
        m
    }

    fn span_tag_map(&self, s: &PendingSpan) -> Map<String, Value> {
        let mut m = Map::with_capacity(s.tag_count);
        let mut cur = s.first_tag;
        while let Some(t) = self.span_tags.get(cur) {
            m.insert(txt(&self.text, t.key).to_owned(), self.value(&t.val));
            cur = t.next;
        }
        m
    }
}

#[derive(Debug)]
struct Pending {
    id: Arc<str>,
    app: Arc<str>,
    connection: u64,
    /// Time of the last command for this request (eviction is by inactivity).
    last_seen: Instant,
    start: Option<Timestamp>,
    buf: Buffers,
    /// Position of the span the last command named (consecutive commands usually share it).
    last_span: usize,
    /// The frame (`Rebuilder::frame`) and the address and length of the `span_id` string that
    /// named `last_span`: within one frame, the same string means the same span.
    last_span_key: (u64, usize, usize),
    bytes: usize,
    dropped_spans: u64,
}

/// Why a request id is no longer pending.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Closed {
    Finished,
    Rejected,
}

/// The connection a command came from.
#[derive(Debug, Clone)]
pub(crate) struct Origin {
    pub(crate) connection: u64,
    pub(crate) app: Arc<str>,
}

/// The receive time of a frame, which replaces missing timestamps: read from the clock the first
/// time a command of the frame needs it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ReceiveTime(Option<Timestamp>);

impl ReceiveTime {
    /// Reads the clock when first needed.
    pub(crate) fn lazy() -> Self {
        Self(None)
    }

    /// A fixed time (tests).
    #[cfg(test)]
    pub(crate) fn fixed(t: Timestamp) -> Self {
        Self(Some(t))
    }

    /// The receive time (the clock is read once).
    pub(crate) fn get(&mut self) -> Timestamp {
        *self.0.get_or_insert_with(Timestamp::now)
    }

    /// `ts`, or the receive time if it is missing.
    pub(crate) fn or(&mut self, ts: Option<Timestamp>) -> Timestamp {
        match ts {
            Some(t) => t,
            None => self.get(),
        }
    }
}

/// A finished request in the rebuilder's compact form; [`Rebuilt::to_finished`] gives the public one.
#[derive(Debug)]
pub(crate) struct Rebuilt {
    id: Arc<str>,
    app: Arc<str>,
    connection: u64,
    /// The endpoint span's operation (in the text buffer).
    operation: Option<Txt>,
    /// The endpoint when a `transaction.name` tag renamed it (else it is `operation`).
    renamed: Option<String>,
    start: Timestamp,
    end: Timestamp,
    duration_us: u64,
    error: bool,
    ignored: bool,
    dropped_spans: u64,
    warnings: Vec<String>,
    buf: Buffers,
}

impl Rebuilt {
    pub(crate) fn id(&self) -> &str {
        &self.id
    }

    pub(crate) fn app(&self) -> &str {
        &self.app
    }

    pub(crate) fn endpoint(&self) -> Option<&str> {
        match &self.renamed {
            Some(e) => Some(e),
            None => self.operation.map(|t| txt(&self.buf.text, t)),
        }
    }

    pub(crate) fn duration_us(&self) -> u64 {
        self.duration_us
    }

    pub(crate) fn error(&self) -> bool {
        self.error
    }

    pub(crate) fn ignored(&self) -> bool {
        self.ignored
    }

    pub(crate) fn span_count(&self) -> usize {
        self.buf.order.len()
    }

    /// (operation, exclusive µs) of every span, in tree pre-order.
    pub(crate) fn span_times(&self) -> impl Iterator<Item = (&str, u64)> + '_ {
        self.buf.order.iter().map(|n| {
            let op = self
                .buf
                .spans
                .get(n.span)
                .and_then(|s| s.operation)
                .map_or("", |t| txt(&self.buf.text, t));
            (op, n.exclusive_us)
        })
    }

    /// The public form, with at most `max_spans` spans (the others are counted as dropped).
    pub(crate) fn to_finished(&self, max_spans: usize) -> FinishedRequest {
        let b = &self.buf;
        let text = &b.text;
        let spans: Vec<FinishedSpan> = b
            .order
            .iter()
            .take(max_spans)
            .filter_map(|n| {
                let s = b.spans.get(n.span)?;
                Some(FinishedSpan {
                    id: txt(text, s.id).to_owned(),
                    parent_id: s.parent.map(|p| txt(text, p).to_owned()),
                    operation: s
                        .operation
                        .map(|o| txt(text, o).to_owned())
                        .unwrap_or_default(),
                    start: s.start.unwrap_or(self.end),
                    end: s.end.unwrap_or(self.end),
                    duration_us: n.duration_us,
                    exclusive_us: n.exclusive_us,
                    depth: n.depth,
                    tags: b.span_tag_map(s),
                })
            })
            .collect();
        let cut = b.order.len().saturating_sub(max_spans) as u64;
        FinishedRequest {
            id: String::from(&*self.id),
            app: String::from(&*self.app),
            connection: self.connection,
            operation: self.operation.map(|t| txt(text, t).to_owned()),
            endpoint: self.endpoint().map(str::to_owned),
            start: self.start,
            end: self.end,
            duration_us: self.duration_us,
            error: self.error,
            ignored: self.ignored,
            tags: b.request_tag_map(),
            spans,
            dropped_spans: self.dropped_spans + cut,
            warnings: self.warnings.clone(),
        }
    }
}

/// Working memory of [`Rebuilder::finish`], kept between requests.
#[derive(Debug, Default)]
struct Scratch {
    parent: Vec<usize>,
    first_child: Vec<usize>,
    cursor: Vec<usize>,
    by_parent: Vec<usize>,
    visited: Vec<bool>,
    stack: Vec<(usize, u32)>,
    child_time: Vec<u64>,
    rest: Vec<usize>,
}

/// Pending requests and the logic that turns them into [`Rebuilt`] requests.
#[derive(Debug)]
pub(crate) struct Rebuilder {
    limits: Limits,
    hash: FastState,
    /// Pending requests; `None` slots are free (listed in `free`).
    slots: Vec<Option<Pending>>,
    free: Vec<usize>,
    /// `request_id` -> slot.
    index: HashMap<Arc<str>, usize, FastState>,
    /// Slot of the request the last command named.
    last: usize,
    /// Address and length of the `request_id` string that named `last` in the current frame
    /// (the scanner hands out the same string for a repeated id; a frame's strings do not move
    /// while it is applied), so that a repeated id needs no comparison; `(0, 0)`: none.
    last_key: (usize, usize),
    /// Number of frames applied (tells `Pending::last_span_key` of other frames apart).
    frame: u64,
    pending_bytes: usize,
    closed: HashMap<Arc<str>, Closed, FastState>,
    closed_order: VecDeque<Arc<str>>,
    pool: Vec<Buffers>,
    scratch: Scratch,
}

/// Approximate in-memory size of a JSON value, stopping early once `limit` is exceeded.
pub(crate) fn approx_size(v: &Value, limit: usize) -> usize {
    match v {
        Value::Null | Value::Bool(_) => return 4,
        Value::Number(_) => return 8,
        Value::String(s) => return s.len() + 2,
        Value::Array(_) | Value::Object(_) => {}
    }
    let mut total = 0usize;
    let mut stack = vec![v];
    while let Some(v) = stack.pop() {
        total += match v {
            Value::Null | Value::Bool(_) => 4,
            Value::Number(_) => 8,
            Value::String(s) => s.len() + 2,
            Value::Array(a) => {
                stack.extend(a.iter());
                2
            }
            Value::Object(m) => {
                for (k, v) in m {
                    total += k.len() + 4;
                    stack.push(v);
                }
                2
            }
        };
        if total > limit {
            return total;
        }
    }
    total
}

/// [`approx_size`] of the value `v` stands for.
fn value_size(v: &TagValue<'_>, limit: usize) -> usize {
    match v {
        TagValue::Null | TagValue::Bool(_) => 4,
        TagValue::UInt(_) => 8,
        TagValue::Str(s) => s.len() + 2,
        TagValue::Json(v) => approx_size(v, limit),
    }
}

impl Rebuilder {
    pub(crate) fn new(limits: Limits) -> Self {
        let hash = FastState::new();
        Self {
            limits,
            hash,
            slots: Vec::new(),
            free: Vec::new(),
            index: HashMap::with_hasher(hash),
            last: 0,
            last_key: (0, 0),
            frame: 0,
            pending_bytes: 0,
            // Room for the first thousand ids from the start (about 64 KB): they grow to
            // `CLOSED_IDS_KEPT` over time, not all while the first requests arrive.
            closed: HashMap::with_capacity_and_hasher(CLOSED_IDS_START, hash),
            closed_order: VecDeque::with_capacity(CLOSED_IDS_START),
            pool: Vec::new(),
            scratch: Scratch::default(),
        }
    }

    /// Number of unfinished requests.
    pub(crate) fn pending_len(&self) -> usize {
        self.index.len()
    }

    /// Gives the buffers of a request nobody refers to any more back to the pool.
    pub(crate) fn recycle(&mut self, r: Rebuilt) {
        self.recycle_buffers(r.buf);
    }

    fn recycle_buffers(&mut self, mut b: Buffers) {
        if self.pool.len() < POOL_MAX && b.poolable() {
            b.clear();
            self.pool.push(b);
        }
    }

    fn close(&mut self, id: Arc<str>, how: Closed) {
        if self.closed.insert(Arc::clone(&id), how).is_none() {
            self.closed_order.push_back(id);
        }
        while self.closed_order.len() > CLOSED_IDS_KEPT {
            if let Some(old) = self.closed_order.pop_front() {
                self.closed.remove(&old);
            }
        }
    }

    /// The slot of pending request `id`, created if needed; `None` if the command must be ignored.
    fn request(
        &mut self,
        id: &str,
        origin: &Origin,
        now: Instant,
        counters: &mut Counters,
    ) -> Option<usize> {
        let key = (id.as_ptr() as usize, id.len());
        let cached = self
            .slots
            .get(self.last)
            .and_then(Option::as_ref)
            .is_some_and(|p| self.last_key == key || eq(&p.id, id));
        let slot = if cached {
            self.last
        } else if let Some(&slot) = self.index.get(id) {
            slot
        } else {
            match self.closed.get(id) {
                Some(Closed::Finished) => {
                    counters.late_commands += 1;
                    log::debug!("command for already finished request {id} ignored");
                    return None;
                }
                Some(Closed::Rejected) => return None,
                None => {}
            }
            if self.index.len() >= self.limits.max_pending_requests
                || self.pending_bytes >= self.limits.max_pending_bytes
            {
                counters.dropped_requests += 1;
                log::warn!(
                    "dropping request {id}: {} requests / ~{} bytes pending (limits {} / {})",
                    self.index.len(),
                    self.pending_bytes,
                    self.limits.max_pending_requests,
                    self.limits.max_pending_bytes
                );
                self.close(Arc::from(id), Closed::Rejected);
                return None;
            }
            let bytes = id.len() + OVERHEAD;
            self.pending_bytes += bytes;
            let id: Arc<str> = Arc::from(id);
            let pending = Pending {
                id: Arc::clone(&id),
                app: Arc::clone(&origin.app),
                connection: origin.connection,
                last_seen: now,
                start: None,
                buf: self.pool.pop().unwrap_or_else(Buffers::with_room),
                last_span: 0,
                last_span_key: (0, 0, 0),
                bytes,
                dropped_spans: 0,
            };
            let slot = match self.free.pop() {
                Some(s) => {
                    self.slots[s] = Some(pending);
                    s
                }
                None => {
                    self.slots.push(Some(pending));
                    self.slots.len() - 1
                }
            };
            self.index.insert(id, slot);
            slot
        };
        self.last = slot;
        self.last_key = key;
        let p = self.slots.get_mut(slot)?.as_mut()?;
        p.last_seen = now;
        Some(slot)
    }

    /// The pending request with this id, created if new (see `request`).
    fn pending_for(
        &mut self,
        id: &str,
        origin: &Origin,
        now: Instant,
        counters: &mut Counters,
    ) -> Option<&mut Pending> {
        let slot = self.request(id, origin, now, counters)?;
        self.slots.get_mut(slot)?.as_mut()
    }

    /// Removes the pending request in `slot`.
    fn take(&mut self, slot: usize) -> Option<Pending> {
        let p = self.slots.get_mut(slot)?.take()?;
        self.last_key = (0, 0);
        self.free.push(slot);
        self.index.remove(&*p.id);
        self.pending_bytes = self.pending_bytes.saturating_sub(p.bytes);
        Some(p)
    }

    /// Applies one request/span command (`ApplicationEvent`s are handled by the caller), pushing
    /// requests that finish to `out`. `now` substitutes for missing timestamps; `now_instant`
    /// is the receive time used for eviction. Strings and values are taken from `cmd`.
    pub(crate) fn apply(
        &mut self,
        cmd: &mut Command<'_>,
        origin: &Origin,
        now: &mut ReceiveTime,
        now_instant: Instant,
        counters: &mut Counters,
        out: &mut Vec<Rebuilt>,
    ) {
        // A new frame: string addresses of earlier frames mean nothing any more.
        self.last_key = (0, 0);
        self.frame += 1;
        if let Command::Batch(cmds) = cmd {
            // Everything but FinishRequest first, in order; then the finishes.
            for c in cmds.iter_mut() {
                if !matches!(c, Command::FinishRequest { .. }) {
                    self.apply_one(c, origin, now, now_instant, counters, out);
                }
            }
            for c in cmds.iter_mut() {
                if matches!(c, Command::FinishRequest { .. }) {
                    self.apply_one(c, origin, now, now_instant, counters, out);
                }
            }
        } else {
            self.apply_one(cmd, origin, now, now_instant, counters, out);
        }
    }

    fn apply_one(
        &mut self,
        cmd: &mut Command<'_>,
        origin: &Origin,
        now: &mut ReceiveTime,
        now_instant: Instant,
        counters: &mut Counters,
        out: &mut Vec<Rebuilt>,
    ) {
        let max_tags = self.limits.max_tags;
        let max_value = self.limits.max_tag_value_bytes;
        let max_spans = self.limits.max_spans_per_request;
        let hs = self.hash;
        let frame = self.frame;
        let added = match cmd {
            Command::StartRequest { ts, request_id } => {
                let Some(p) = self.pending_for(request_id, origin, now_instant, counters) else {
                    return;
                };
                p.start = Some(now.or(*ts));
                0
            }
            Command::TagRequest {
                request_id,
                tag,
                value,
            } => {
                let Some(p) = self.pending_for(request_id, origin, now_instant, counters) else {
                    return;
                };
                let n = insert_request_tag(&mut p.buf, tag, value, max_tags, max_value, counters);
                p.bytes += n;
                n
            }
            Command::StartSpan {
                ts,
                request_id,
                span_id,
                parent_id,
                operation,
            } => {
                let Some(p) = self.pending_for(request_id, origin, now_instant, counters) else {
                    return;
                };
                let n = span_bytes(span_id)
                    + operation.len()
                    + parent_id.as_ref().map_or(0, |s| s.len());
                let Some(pos) = span(p, span_id, max_spans, true, &hs, frame) else {
                    return;
                };
                let parent = parent_id.as_deref().map(|s| p.buf.push_shared(0, s, frame));
                let op = p.buf.push_shared(1, operation, frame);
                let start = now.or(*ts);
                let replaced = p.buf.spans.get_mut(pos).map(|s| {
                    s.start = Some(start);
                    (
                        std::mem::replace(&mut s.parent, parent),
                        s.operation.replace(op),
                    )
                });
                // A repeated StartSpan: its earlier parent and operation text is unreferenced.
                if let Some((old_parent, old_op)) = replaced {
                    for t in [old_parent, old_op].into_iter().flatten() {
                        p.buf.discard(t);
                    }
                }
                p.bytes += n;
                n
            }
            Command::TagSpan {
                request_id,
                span_id,
                tag,
                value,
            } => {
                let Some(p) = self.pending_for(request_id, origin, now_instant, counters) else {
                    return;
                };
                let Some(pos) = span(p, span_id, max_spans, false, &hs, frame) else {
                    return;
                };
                let n = insert_span_tag(&mut p.buf, pos, tag, value, max_tags, max_value, counters);
                p.bytes += n;
                n
            }
            Command::StopSpan {
                ts,
                request_id,
                span_id,
            } => {
                let Some(p) = self.pending_for(request_id, origin, now_instant, counters) else {
                    return;
                };
                let Some(pos) = span(p, span_id, max_spans, false, &hs, frame) else {
                    return;
                };
                let end = now.or(*ts);
                if let Some(s) = p.buf.spans.get_mut(pos) {
                    s.end = Some(end);
                }
                0
            }
            Command::FinishRequest { ts, request_id } => {
                let Some(slot) = self.request(request_id, origin, now_instant, counters) else {
                    return;
                };
                if let Some(p) = self.take(slot) {
                    counters.dropped_spans += p.dropped_spans;
                    let id = Arc::clone(&p.id);
                    let end = now.or(*ts);
                    out.push(self.finish(p, end));
                    self.close(id, Closed::Finished);
                }
                0
            }
            Command::Batch(_) => {
                self.apply(cmd, origin, now, now_instant, counters, out);
                0
            }
            _ => 0,
        };
        self.pending_bytes += added;
    }

    /// Evicts requests without any command for longer than the pending timeout; returns how many.
    pub(crate) fn expire(&mut self, counters: &mut Counters) -> usize {
        let timeout = self.limits.pending_timeout;
        let expired: Vec<usize> = self
            .slots
            .iter()
            .enumerate()
            .filter(|(_, p)| p.as_ref().is_some_and(|p| p.last_seen.elapsed() > timeout))
            .map(|(i, _)| i)
            .collect();
        for &slot in &expired {
            if let Some(p) = self.take(slot) {
                log::warn!(
                    "request {} (app {:?}, connection {}) never finished; evicted after {:?} without commands",
                    p.id,
                    p.app,
                    p.connection,
                    timeout
                );
                counters.expired_requests += 1;
                self.close(p.id, Closed::Rejected);
                self.recycle_buffers(p.buf);
            }
        }
        expired.len()
    }

    /// Turns a pending request into a finished one: drops spans never started, ends spans never
    /// stopped, resolves parents, orders the spans in tree pre-order (siblings by start time,
    /// then first seen) and computes depth, duration and exclusive time.
    fn finish(&mut self, p: Pending, finish_ts: Timestamp) -> Rebuilt {
        let Pending {
            id,
            app,
            connection,
            start: p_start,
            mut buf,
            dropped_spans,
            ..
        } = p;
        let hs = self.hash;
        let mut warnings = Vec::new();
        // Spans that were never started are dropped; the others keep their first-seen order.
        if buf.spans.iter().any(|s| s.operation.is_none()) {
            for s in &buf.spans {
                if s.operation.is_none() {
                    warn(
                        &mut warnings,
                        format!(
                            "span {}: tagged or stopped but never started (dropped)",
                            txt(&buf.text, s.id)
                        ),
                    );
                }
            }
            buf.spans.retain(|s| s.operation.is_some());
            buf.fingerprints.clear();
            let text = &buf.text;
            buf.fingerprints
                .extend(buf.spans.iter().map(|s| fingerprint(txt(text, s.id))));
            buf.index.clear();
        }
        let n = buf.spans.len();
        let start = p_start
            .or_else(|| buf.spans.iter().filter_map(|s| s.start).min())
            .unwrap_or(finish_ts);
        if p_start.is_none() {
            warn(&mut warnings, "no StartRequest".into());
        }
        let end = finish_ts;
        for s in &mut buf.spans {
            if s.end.is_none() {
                warn(
                    &mut warnings,
                    format!(
                        "span {}: never stopped (ends with the request)",
                        txt(&buf.text, s.id)
                    ),
                );
                s.end = Some(end.max(s.start.unwrap_or(end)));
            }
        }
        // Parent of each span (NONE: a root, or a parent that is not in this request).
        if n > SPAN_INDEX_AFTER {
            buf.build_index(&hs);
        } else {
            buf.index.clear();
        }
        let sc = &mut self.scratch;
        sc.parent.clear();
        // Siblings usually share their parent's stored id (see `Buffers::push_shared`).
        let mut last: Option<(Txt, Option<usize>)> = None;
        for (i, s) in buf.spans.iter().enumerate() {
            sc.parent.push(match s.parent {
                None => NONE,
                Some(pid_at) => {
                    let pid = txt(&buf.text, pid_at);
                    let found = match last {
                        Some((t, found)) if t == pid_at => found,
                        _ => {
                            let found = buf.find_span(pid, &hs);
                            last = Some((pid_at, found));
                            found
                        }
                    };
                    match found {
                        Some(pi) if pi != i => pi,
                        _ => {
                            warn(
                                &mut warnings,
                                format!(
                                    "span {}: parent {pid} not in this request",
                                    txt(&buf.text, s.id)
                                ),
                            );
                            NONE
                        }
                    }
                }
            });
        }
        // Children of each parent, contiguous and sorted by (start, first seen): bucket the
        // spans by parent (bucket 0: roots, p + 1: children of p) in position order, then sort
        // each bucket by start time unless it already is (agents usually send them in order).
        let bucket = |parent: usize| if parent == NONE { 0 } else { parent + 1 };
        sc.first_child.clear();
        sc.first_child.resize(n + 2, 0);
        for &p in &sc.parent {
            sc.first_child[bucket(p) + 1] += 1;
        }
        for b in 1..sc.first_child.len() {
            sc.first_child[b] += sc.first_child[b - 1];
        }
        sc.cursor.clear();
        sc.cursor.extend_from_slice(&sc.first_child);
        sc.by_parent.clear();
        sc.by_parent.resize(n, 0);
        for (i, &p) in sc.parent.iter().enumerate() {
            let c = &mut sc.cursor[bucket(p)];
            sc.by_parent[*c] = i;
            *c += 1;
        }
        let spans = &buf.spans;
        let key = |i: usize| (spans[i].start, i);
        for b in 0..=n {
            let kids = &mut sc.by_parent[sc.first_child[b]..sc.first_child[b + 1]];
            if kids.len() > 1 && !kids.is_sorted_by_key(|&i| key(i)) {
                kids.sort_unstable_by_key(|&i| key(i));
            }
        }
        let first_child = &sc.first_child;
        let by_parent = &sc.by_parent;
        let children = |bucket: usize| &by_parent[first_child[bucket]..first_child[bucket + 1]];
        let dur = |s: &PendingSpan| {
            let (a, b) = (s.start.unwrap_or(end), s.end.unwrap_or(end));
            u64::try_from(b.0.saturating_sub(a.0)).unwrap_or(0)
        };
        // Pre-order walk from the roots (bucket 0).
        buf.order.clear();
        sc.visited.clear();
        sc.visited.resize(n, false);
        sc.stack.clear();
        sc.stack.extend(children(0).iter().rev().map(|&r| (r, 0)));
        while let Some((i, depth)) = sc.stack.pop() {
            if std::mem::replace(&mut sc.visited[i], true) {
                continue;
            }
            buf.order.push(Node {
                span: i,
                depth,
                duration_us: 0,
                exclusive_us: 0,
            });
            for &c in children(i + 1).iter().rev() {
                sc.stack.push((c, depth.saturating_add(1)));
            }
        }
        if buf.order.len() < n {
            sc.rest.clear();
            sc.rest.extend((0..n).filter(|&i| !sc.visited[i]));
            warn(
                &mut warnings,
                format!("{} spans form a parent cycle", sc.rest.len()),
            );
            sc.rest.sort_by_key(|&i| key(i));
            buf.order.extend(sc.rest.iter().map(|&i| Node {
                span: i,
                depth: 0,
                duration_us: 0,
                exclusive_us: 0,
            }));
        }
        // Exclusive time: duration minus the durations of the direct children.
        sc.child_time.clear();
        sc.child_time.resize(n, 0);
        for (i, &p) in sc.parent.iter().enumerate() {
            if p != NONE {
                sc.child_time[p] = sc.child_time[p].saturating_add(dur(&spans[i]));
            }
        }
        for node in &mut buf.order {
            let d = dur(&spans[node.span]);
            node.duration_us = d;
            node.exclusive_us = d.saturating_sub(sc.child_time[node.span]);
        }
        let op_of = |node: &Node| spans[node.span].operation;
        let operation = buf
            .order
            .iter()
            .find(|nd| {
                nd.depth == 0 && op_of(nd).is_some_and(|o| is_endpoint_op(txt(&buf.text, o)))
            })
            .or_else(|| {
                buf.order
                    .iter()
                    .find(|nd| op_of(nd).is_some_and(|o| is_endpoint_op(txt(&buf.text, o))))
            })
            .and_then(op_of);
        let renamed = operation.and_then(|op| match buf.request_tag("transaction.name") {
            Some(Val::Str(name)) if name.end > name.start => {
                let op = txt(&buf.text, op);
                let kind = op.split('/').next().unwrap_or("Controller");
                Some(format!("{kind}/{}", txt(&buf.text, *name)))
            }
            _ => None,
        });
        let error = truthy(&buf, buf.request_tag("error"));
        let ignored = truthy(&buf, buf.request_tag("ignore_transaction"));
        Rebuilt {
            id,
            app,
            connection,
            operation,
            renamed,
            start,
            end,
            duration_us: u64::try_from(end.0.saturating_sub(start.0)).unwrap_or(0),
            error,
            ignored,
            dropped_spans,
            warnings,
            buf,
        }
    }
}

fn warn(warnings: &mut Vec<String>, w: String) {
    if warnings.len() < MAX_WARNINGS {
        warnings.push(w);
    }
}

fn span_bytes(id: &str) -> usize {
    id.len() + OVERHEAD * 2
}

/// Position of span `span_id` in `p`, created if new (`None`: over the span limit).
fn span(
    p: &mut Pending,
    span_id: &str,
    max_spans: usize,
    starting: bool,
    hs: &FastState,
    frame: u64,
) -> Option<usize> {
    let b = &mut p.buf;
    let last = p.last_span;
    let key = (frame, span_id.as_ptr() as usize, span_id.len());
    let found = if b
        .spans
        .get(last)
        .is_some_and(|s| p.last_span_key == key || eq(txt(&b.text, s.id), span_id))
    {
        Some(last)
    } else {
        b.find_span(span_id, hs)
    };
    let pos = match found {
        Some(pos) => pos,
        None => {
            if b.spans.len() >= max_spans {
                // Counted once per span, on its StartSpan; its tags and stop are ignored silently.
                if !starting {
                    return None;
                }
                p.dropped_spans += 1;
                if p.dropped_spans == 1 {
                    log::warn!("request exceeds {max_spans} spans; further spans are dropped");
                }
                return None;
            }
            let pos = b.spans.len();
            if b.spans.capacity() == 0 {
                b.spans.reserve(8);
            }
            let id = push_txt(&mut b.text, span_id);
            b.fingerprints.push(fingerprint(span_id));
            b.spans.push(PendingSpan {
                id,
                parent: None,
                operation: None,
                start: None,
                end: None,
                first_tag: NONE,
                last_tag: NONE,
                tag_count: 0,
            });
            if pos >= SPAN_INDEX_AFTER {
                b.index_add(pos, hs);
            }
            pos
        }
    };
    p.last_span = pos;
    p.last_span_key = key;
    Some(pos)
}

/// How a tag value is stored: its approximate size and whether it is over the limit (counted).
fn sized(value: &TagValue<'_>, max_value: usize, counters: &mut Counters) -> (usize, bool) {
    let size = value_size(value, max_value);
    let truncated = size > max_value;
    if truncated {
        counters.truncated_values += 1;
    }
    (size, truncated)
}

/// Stores `value` (taken from the command), or the truncation marker.
fn store(text: &mut String, value: &mut TagValue<'_>, truncated: bool, max_value: usize) -> Val {
    if truncated {
        let marker = format!("[truncated: more than {max_value} bytes]");
        return Val::Str(push_txt(text, &marker));
    }
    match std::mem::replace(value, TagValue::Null) {
        TagValue::Null => Val::Null,
        TagValue::Bool(b) => Val::Bool(b),
        TagValue::UInt(u) => Val::UInt(u),
        TagValue::Str(s) => Val::Str(push_txt(text, &s)),
        TagValue::Json(v) => Val::Json(v),
    }
}

/// The value to store for a tag about to be set, and the approximate bytes it adds; `None`
/// (counted) when it would be a new tag beyond `max_tags` (`count` tags already).
#[allow(clippy::too_many_arguments)]
fn admit_tag(
    text: &mut String,
    exists: bool,
    count: usize,
    tag: &str,
    value: &mut TagValue<'_>,
    max_tags: usize,
    max_value: usize,
    counters: &mut Counters,
) -> Option<(Val, usize)> {
    let (size, truncated) = sized(value, max_value, counters);
    if !exists && count >= max_tags {
        counters.dropped_tags += 1;
        return None;
    }
    let n = tag.len() + size.min(max_value) + OVERHEAD;
    Some((store(text, value, truncated, max_value), n))
}

/// Puts `val` in place of the value of tag `i` (of the span tags or the request tags),
/// releasing the text of the old one.
fn replace_tag_value(b: &mut Buffers, span_tag: bool, i: usize, val: Val) {
    let list = if span_tag {
        &mut b.span_tags
    } else {
        &mut b.tags
    };
    if let Some(t) = list.get_mut(i)
        && let Val::Str(old) = std::mem::replace(&mut t.val, val)
    {
        b.discard(old);
    }
}

/// Inserts or replaces a request tag; returns the approximate bytes added.
fn insert_request_tag(
    b: &mut Buffers,
    tag: &str,
    value: &mut TagValue<'_>,
    max_tags: usize,
    max_value: usize,
    counters: &mut Counters,
) -> usize {
    let found = b.tags.iter().position(|t| eq(txt(&b.text, t.key), tag));
    let count = b.tags.len();
    let Some((val, n)) = admit_tag(
        &mut b.text,
        found.is_some(),
        count,
        tag,
        value,
        max_tags,
        max_value,
        counters,
    ) else {
        return 0;
    };
    match found {
        Some(i) => replace_tag_value(b, false, i, val),
        None => {
            let key = push_txt(&mut b.text, tag);
            b.tags.push(Tag {
                key,
                val,
                next: NONE,
            });
        }
    }
    n
}

/// Inserts or replaces a tag of span `pos`; returns the approximate bytes added.
fn insert_span_tag(
    b: &mut Buffers,
    pos: usize,
    tag: &str,
    value: &mut TagValue<'_>,
    max_tags: usize,
    max_value: usize,
    counters: &mut Counters,
) -> usize {
    let Some(s) = b.spans.get(pos) else {
        return 0;
    };
    let (first, count) = (s.first_tag, s.tag_count);
    let mut found = None;
    let mut cur = first;
    while let Some(t) = b.span_tags.get(cur) {
        if eq(txt(&b.text, t.key), tag) {
            found = Some(cur);
            break;
        }
        cur = t.next;
    }
    let Some((val, n)) = admit_tag(
        &mut b.text,
        found.is_some(),
        count,
        tag,
        value,
        max_tags,
        max_value,
        counters,
    ) else {
        return 0;
    };
    match found {
        Some(i) => replace_tag_value(b, true, i, val),
        None => {
            let key = push_txt(&mut b.text, tag);
            let i = b.span_tags.len();
            b.span_tags.push(Tag {
                key,
                val,
                next: NONE,
            });
            let prev = b.spans.get(pos).map_or(NONE, |s| s.last_tag);
            if let Some(t) = b.span_tags.get_mut(prev) {
                t.next = i;
            }
            if let Some(s) = b.spans.get_mut(pos) {
                if s.first_tag == NONE {
                    s.first_tag = i;
                }
                s.last_tag = i;
                s.tag_count += 1;
            }
        }
    }
    n
}

fn is_endpoint_op(op: &str) -> bool {
    op.starts_with("Controller/") || op.starts_with("Job/")
}

fn truthy(b: &Buffers, v: Option<&Val>) -> bool {
    match v {
        Some(Val::Bool(v)) => *v,
        Some(Val::Str(t)) => txt(&b.text, *t).eq_ignore_ascii_case("true"),
        _ => false,
    }
}

#[cfg(test)]
#[path = "rebuild_reference.rs"]
mod reference;

#[cfg(test)]
mod tests {
    use super::*;
    use std::borrow::Cow;

    fn ts(s: u32) -> Option<Timestamp> {
        Some(Timestamp(i64::from(s) * 1000))
    }

    fn run(cmds: Vec<Command<'static>>) -> Vec<FinishedRequest> {
        let mut r = Rebuilder::new(Limits::default());
        let origin = Origin {
            connection: 1,
            app: Arc::from("app"),
        };
        let mut c = Counters::default();
        let mut out = Vec::new();
        for mut cmd in cmds {
            r.apply(
                &mut cmd,
                &origin,
                &mut ReceiveTime::fixed(Timestamp(0)),
                Instant::now(),
                &mut c,
                &mut out,
            );
        }
        assert_eq!(r.pending_len(), 0);
        out.iter().map(|r| r.to_finished(usize::MAX)).collect()
    }

    fn start(
        span: &'static str,
        parent: Option<&'static str>,
        op: &'static str,
        t: u32,
    ) -> Command<'static> {
        Command::StartSpan {
            ts: ts(t),
            request_id: "r".into(),
            span_id: span.into(),
            parent_id: parent.map(Into::into),
            operation: op.into(),
        }
    }

    fn stop(span: &'static str, t: u32) -> Command<'static> {
        Command::StopSpan {
            ts: ts(t),
            request_id: "r".into(),
            span_id: span.into(),
        }
    }

    #[test]
    fn any_order_gives_same_tree() {
        let req = Command::StartRequest {
            ts: ts(0),
            request_id: "r".into(),
        };
        let fin = Command::FinishRequest {
            ts: ts(100),
            request_id: "r".into(),
        };
        let tag = Command::TagRequest {
            request_id: "r".into(),
            tag: "error".into(),
            value: TagValue::Str("true".into()),
        };
        let children_first = vec![
            req.clone(),
            tag.clone(),
            start("c", Some("p"), "SQL/Query", 10),
            stop("c", 30),
            start("p", None, "Controller/x", 1),
            stop("p", 99),
            fin.clone(),
        ];
        let parents_first = vec![
            start("p", None, "Controller/x", 1),
            start("c", Some("p"), "SQL/Query", 10),
            stop("c", 30),
            stop("p", 99),
            tag,
            req,
            fin,
        ];
        let a = run(vec![Command::Batch(children_first.clone())]);
        let b = run(parents_first);
        let mut reversed = children_first;
        reversed.reverse();
        let c = run(vec![Command::Batch(reversed)]);
        assert_eq!(a, b);
        assert_eq!(a, c);
        let r = &a[0];
        assert_eq!(r.endpoint.as_deref(), Some("Controller/x"));
        assert!(r.error);
        assert_eq!(r.spans[0].id, "p");
        assert_eq!(r.spans[1].depth, 1);
        assert_eq!(r.spans[1].exclusive_us, 20_000);
        assert_eq!(r.spans[0].exclusive_us, 98_000 - 20_000);
        assert!(r.warnings.is_empty(), "{:?}", r.warnings);
    }

    #[test]
    fn stale_requests_expire_and_late_commands_are_ignored() {
        let limits = Limits {
            pending_timeout: std::time::Duration::ZERO,
            ..Limits::default()
        };
        let mut r = Rebuilder::new(limits);
        let origin = Origin {
            connection: 1,
            app: Arc::from("app"),
        };
        let mut c = Counters::default();
        let mut out = Vec::new();
        r.apply(
            &mut start("s", None, "Job/x", 1),
            &origin,
            &mut ReceiveTime::fixed(Timestamp(0)),
            Instant::now(),
            &mut c,
            &mut out,
        );
        std::thread::sleep(std::time::Duration::from_millis(2));
        assert_eq!(r.expire(&mut c), 1);
        assert_eq!(r.pending_len(), 0);
        r.apply(
            &mut stop("s", 2),
            &origin,
            &mut ReceiveTime::fixed(Timestamp(0)),
            Instant::now(),
            &mut c,
            &mut out,
        );
        assert_eq!(r.pending_len(), 0);
        assert!(out.is_empty());
        assert_eq!(c.expired_requests, 1);
    }

    /// Replaced tag values and repeated `StartSpan`s do not grow a request's text without bound.
    #[test]
    fn replaced_text_is_reclaimed() {
        let mut r = Rebuilder::new(Limits::default());
        let origin = Origin {
            connection: 1,
            app: Arc::from("app"),
        };
        let mut c = Counters::default();
        let mut out = Vec::new();
        let mut apply = |r: &mut Rebuilder, mut cmd: Command<'static>| {
            r.apply(
                &mut cmd,
                &origin,
                &mut ReceiveTime::fixed(Timestamp(0)),
                Instant::now(),
                &mut c,
                &mut out,
            );
        };
        for i in 0..2_000u32 {
            let big = format!("{i:04}{}", "v".repeat(1_000));
            apply(
                &mut r,
                Command::TagRequest {
                    request_id: "r".into(),
                    tag: "k".into(),
                    value: TagValue::Str(big.clone().into()),
                },
            );
            apply(
                &mut r,
                Command::TagSpan {
                    request_id: "r".into(),
                    span_id: "s".into(),
                    tag: "k".into(),
                    value: TagValue::Str(big.into()),
                },
            );
            let parent: &'static str = format!("p{i:04}").leak();
            apply(&mut r, start("s", Some(parent), "Job/x", i));
        }
        let text = r
            .slots
            .iter()
            .flatten()
            .map(|p| p.buf.text.len())
            .sum::<usize>();
        assert!(
            text < 8 * 1024,
            "{text} bytes of text for 3 live strings of 1 KB"
        );
        apply(&mut r, stop("s", 3_000));
        apply(
            &mut r,
            Command::FinishRequest {
                ts: ts(4_000),
                request_id: "r".into(),
            },
        );
        let done = out[0].to_finished(usize::MAX);
        let last = format!("1999{}", "v".repeat(1_000));
        assert_eq!(done.tags["k"], serde_json::json!(last));
        assert_eq!(done.spans[0].tags["k"], serde_json::json!(last));
        assert_eq!(done.spans[0].parent_id.as_deref(), Some("p1999"));
        assert_eq!(done.spans[0].operation, "Job/x");
    }

    use super::super::test_rng::Rng;

    /// A string for a command: shared between commands (as the scanner hands out one string
    /// for a repeated id within a frame) or a copy of its own, as an escaped string would be.
    fn text(rng: &mut Rng, s: &str) -> Cow<'static, str> {
        thread_local! {
            static SHARED: std::cell::RefCell<HashMap<String, &'static str>> =
                std::cell::RefCell::new(HashMap::new());
        }
        if rng.chance(70) {
            Cow::Borrowed(SHARED.with(|m| {
                *m.borrow_mut()
                    .entry(s.to_owned())
                    .or_insert_with(|| Box::leak(s.to_owned().into_boxed_str()))
            }))
        } else {
            Cow::Owned(s.to_owned())
        }
    }

    fn value(rng: &mut Rng) -> TagValue<'static> {
        match rng.below(9) {
            0 => TagValue::Null,
            1 => TagValue::Bool(rng.chance(50)),
            2 => TagValue::UInt(rng.next() % 1000),
            3 => {
                let s = rng_pick_str(rng);
                TagValue::Str(text(rng, s))
            }
            4 => TagValue::Str(Cow::Owned("x".repeat(rng.below(120)))),
            5 => TagValue::from_value(serde_json::json!([1, "two", {"three": 3.5}])),
            6 => TagValue::from_value(serde_json::json!(-7)),
            7 => TagValue::from_value(serde_json::json!(0.25)),
            _ => TagValue::from_value(serde_json::json!({"k": "v".repeat(rng.below(40))})),
        }
    }

    fn rng_pick_str(rng: &mut Rng) -> &'static str {
        const WORDS: [&str; 7] = ["true", "TRUE", "false", "", "Users#show", "é ü", "name"];
        WORDS[rng.below(WORDS.len())]
    }

    fn time(rng: &mut Rng) -> Option<Timestamp> {
        // Few distinct values, so that siblings often start at the same time.
        (!rng.chance(10)).then(|| Timestamp(1_000 * rng.below(12) as i64))
    }

    /// The commands of a random request, in a natural order (the caller shuffles some).
    fn request_commands(rng: &mut Rng, rid: &str) -> Vec<Command<'static>> {
        let mut cmds = Vec::new();
        let most = if rng.chance(20) { 45 } else { 12 };
        let spans = rng.below(most);
        let span_id = |j: usize| format!("span-{j:03}-{rid}");
        if rng.chance(85) {
            cmds.push(Command::StartRequest {
                ts: time(rng),
                request_id: text(rng, rid),
            });
        }
        for _ in 0..rng.below(5) {
            let tag = *rng.pick(&[
                "error",
                "ignore_transaction",
                "transaction.name",
                "user",
                "x",
            ]);
            cmds.push(Command::TagRequest {
                request_id: text(rng, rid),
                tag: text(rng, tag),
                value: value(rng),
            });
        }
        for j in 0..spans {
            let sid = span_id(j);
            if rng.chance(92) {
                let parent = match rng.below(10) {
                    0..=2 => None,
                    3 => Some(format!("unknown-{j}")),
                    4 => Some(sid.clone()),
                    _ => Some(span_id(rng.below(spans))),
                };
                let op = *rng.pick(&[
                    "Controller/Users#show",
                    "Job/Mail",
                    "SQL/Query",
                    "HTTP/GET",
                    "Custom",
                    "/odd",
                    "",
                ]);
                let start = Command::StartSpan {
                    ts: time(rng),
                    request_id: text(rng, rid),
                    span_id: text(rng, &sid),
                    parent_id: parent.map(|p| text(rng, &p)),
                    operation: text(rng, op),
                };
                if rng.chance(5) {
                    cmds.push(start.clone());
                }
                cmds.push(start);
            }
            for _ in 0..rng.below(4) {
                let tag = *rng.pick(&["a", "b", "c", "d", "e", "f"]);
                cmds.push(Command::TagSpan {
                    request_id: text(rng, rid),
                    span_id: text(rng, &sid),
                    tag: text(rng, tag),
                    value: value(rng),
                });
            }
            if rng.chance(85) {
                cmds.push(Command::StopSpan {
                    ts: time(rng),
                    request_id: text(rng, rid),
                    span_id: text(rng, &sid),
                });
            }
        }
        if rng.chance(92) {
            cmds.push(Command::FinishRequest {
                ts: time(rng).map(|t| Timestamp(t.0 + 20_000)),
                request_id: text(rng, rid),
            });
        }
        cmds
    }

    /// The optimised rebuilder and the reference model it replaced agree on random command
    /// streams: any order, batches and single commands, repeated and missing commands, orphans,
    /// cycles, more spans than the linear-search limit, and small limits on everything.
    #[test]
    fn same_as_reference_model() {
        let mut rng = Rng::new(0x9e37_79b9_7f4a_7c15);
        let (mut requests, mut spans) = (0usize, 0usize);
        for round in 0..400 {
            let limits = Limits {
                max_spans_per_request: 3 + rng.below(48),
                max_tags: 1 + rng.below(5),
                max_tag_value_bytes: 8 + rng.below(60),
                max_pending_requests: 2 + rng.below(4),
                max_pending_bytes: if rng.chance(20) { 2_000 } else { 1 << 30 },
                ..Limits::default()
            };
            let mut cmds = Vec::new();
            for k in 0..1 + rng.below(4) {
                let rid = format!("req-{round}-{}", k % 3);
                let mut one = request_commands(&mut rng, &rid);
                match rng.below(4) {
                    0 => one.reverse(),
                    1 => {
                        for i in (1..one.len()).rev() {
                            let j = rng.below(i + 1);
                            one.swap(i, j);
                        }
                    }
                    _ => {}
                }
                // Interleave with the requests so far.
                for c in one {
                    let at = if rng.chance(70) {
                        cmds.len()
                    } else {
                        rng.below(cmds.len() + 1)
                    };
                    cmds.insert(at, c);
                }
            }
            let mut frames = Vec::new();
            let mut rest = cmds.into_iter().peekable();
            while rest.peek().is_some() {
                let n = 1 + rng.below(12);
                let chunk: Vec<_> = rest.by_ref().take(n).collect();
                if chunk.len() == 1 && rng.chance(50) {
                    frames.extend(chunk);
                } else {
                    frames.push(Command::Batch(chunk));
                }
            }
            let mut new = Rebuilder::new(limits.clone());
            let mut old = reference::Rebuilder::new(limits);
            let origin = Origin {
                connection: 3,
                app: Arc::from("app"),
            };
            let old_origin = reference::Origin {
                connection: 3,
                app: Arc::from("app"),
            };
            let (mut c_new, mut c_old) = (Counters::default(), Counters::default());
            let (mut out_new, mut out_old) = (Vec::new(), Vec::new());
            let now = Timestamp(77_000);
            for frame in frames {
                let mut f = frame.clone();
                new.apply(
                    &mut f,
                    &origin,
                    &mut ReceiveTime::fixed(now),
                    Instant::now(),
                    &mut c_new,
                    &mut out_new,
                );
                old.apply(
                    frame,
                    &old_origin,
                    now,
                    Instant::now(),
                    &mut c_old,
                    &mut out_old,
                );
                assert_eq!(new.pending_len(), old.pending_len(), "round {round}");
                assert_eq!(new.pending_bytes, old.pending_bytes(), "round {round}");
            }
            assert_eq!(c_new, c_old, "round {round}");
            assert_eq!(out_new.len(), out_old.len(), "round {round}");
            for (n, o) in out_new.iter().zip(&out_old) {
                assert_eq!(n.to_finished(usize::MAX), *o, "round {round}");
                assert_eq!(n.endpoint(), o.endpoint.as_deref());
                let cut = rng.below(5);
                let mut short = o.clone();
                if short.spans.len() > cut {
                    short.dropped_spans += (short.spans.len() - cut) as u64;
                    short.spans.truncate(cut);
                }
                assert_eq!(n.to_finished(cut), short, "round {round}");
                let times: Vec<(String, u64)> = o
                    .spans
                    .iter()
                    .map(|s| (s.operation.clone(), s.exclusive_us))
                    .collect();
                let got: Vec<(String, u64)> =
                    n.span_times().map(|(op, t)| (op.to_owned(), t)).collect();
                assert_eq!(got, times);
                requests += 1;
                spans += o.spans.len();
            }
            // Buffers go back to the pool and are reused cleanly by the next requests.
            for r in out_new.drain(..) {
                new.recycle(r);
            }
        }
        assert!(
            requests > 300 && spans > 2_000,
            "{requests} requests, {spans} spans"
        );
    }
}
