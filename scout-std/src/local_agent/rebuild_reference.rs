//! Test-only reference model of the rebuilder: the straightforward implementation it replaced
//! (strings and `serde_json` maps per span, a sort per request), kept to check the optimised one
//! against it on random command streams (`rebuild::tests::same_as_reference_model`).
#![allow(dead_code, clippy::all)]

use std::borrow::Cow;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use serde_json::{Map, Value};

use super::super::config::Limits;
use super::super::model::{Counters, FinishedRequest, FinishedSpan};
use super::super::protocol::Command;
use super::super::timestamp::Timestamp;

const MAX_WARNINGS: usize = 20;
const CLOSED_IDS_KEPT: usize = 20_000;
/// Fixed per-item overhead added to the approximate size of pending data.
const OVERHEAD: usize = 64;
/// Spans of one request are found by a linear scan up to this many, then through an index.
const SPAN_INDEX_AFTER: usize = 24;

#[derive(Debug)]
struct PendingSpan {
    id: String,
    parent: Option<String>,
    operation: Option<String>,
    start: Option<Timestamp>,
    end: Option<Timestamp>,
    tags: Map<String, Value>,
}

#[derive(Debug)]
struct Pending {
    id: Arc<str>,
    app: Arc<str>,
    connection: u64,
    /// Time of the last command for this request (eviction is by inactivity).
    last_seen: Instant,
    start: Option<Timestamp>,
    tags: Map<String, Value>,
    /// Spans in first-seen order (the position breaks ties between equal start times).
    spans: Vec<PendingSpan>,
    /// `span_id` -> position, once the request has more than [`SPAN_INDEX_AFTER`] spans.
    span_index: Option<HashMap<String, usize>>,
    /// Position of the span the last command named (consecutive commands usually share it).
    last_span: usize,
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

/// Pending requests and the logic that turns them into [`FinishedRequest`]s.
#[derive(Debug)]
pub(crate) struct Rebuilder {
    limits: Limits,
    /// Pending requests; `None` slots are free (listed in `free`).
    slots: Vec<Option<Pending>>,
    free: Vec<usize>,
    /// `request_id` -> slot.
    index: HashMap<Arc<str>, usize>,
    /// Slot of the request the last command named.
    last: usize,
    pending_bytes: usize,
    closed: HashMap<Arc<str>, Closed>,
    closed_order: VecDeque<Arc<str>>,
}

/// Approximate in-memory size of a JSON value, stopping early once `limit` is exceeded.
fn approx_size(v: &Value, limit: usize) -> usize {
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

impl Rebuilder {
    pub(crate) fn new(limits: Limits) -> Self {
        Self {
            limits,
            slots: Vec::new(),
            free: Vec::new(),
            index: HashMap::new(),
            last: 0,
            pending_bytes: 0,
            closed: HashMap::new(),
            closed_order: VecDeque::new(),
        }
    }

    /// Number of unfinished requests.
    pub(crate) fn pending_bytes(&self) -> usize {
        self.pending_bytes
    }

    pub(crate) fn pending_len(&self) -> usize {
        self.index.len()
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
        let cached = self
            .slots
            .get(self.last)
            .and_then(Option::as_ref)
            .is_some_and(|p| *p.id == *id);
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
                tags: Map::new(),
                spans: Vec::new(),
                span_index: None,
                last_span: 0,
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
        let p = self.slots.get_mut(slot)?.as_mut()?;
        p.last_seen = now;
        Some(slot)
    }

    fn pending_mut(&mut self, slot: usize) -> Option<&mut Pending> {
        self.slots.get_mut(slot)?.as_mut()
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
        self.pending_mut(slot)
    }

    /// Removes the pending request in `slot`.
    fn take(&mut self, slot: usize) -> Option<Pending> {
        let p = self.slots.get_mut(slot)?.take()?;
        self.free.push(slot);
        self.index.remove(&*p.id);
        self.pending_bytes = self.pending_bytes.saturating_sub(p.bytes);
        Some(p)
    }

    /// Applies one request/span command (`ApplicationEvent`s are handled by the caller), pushing
    /// requests that finish to `out`. `now` substitutes for missing timestamps; `now_instant`
    /// is the receive time used for eviction.
    pub(crate) fn apply(
        &mut self,
        cmd: Command<'_>,
        origin: &Origin,
        now: Timestamp,
        now_instant: Instant,
        counters: &mut Counters,
        out: &mut Vec<FinishedRequest>,
    ) {
        let limits_tags = self.limits.max_tags;
        let max_value = self.limits.max_tag_value_bytes;
        let max_spans = self.limits.max_spans_per_request;
        let added = match cmd {
            Command::StartRequest { ts, request_id } => {
                let Some(p) = self.pending_for(&request_id, origin, now_instant, counters) else {
                    return;
                };
                p.start = Some(ts.unwrap_or(now));
                0
            }
            Command::TagRequest {
                request_id,
                tag,
                value,
            } => {
                let Some(p) = self.pending_for(&request_id, origin, now_instant, counters) else {
                    return;
                };
                let n = insert_tag(
                    &mut p.tags,
                    tag,
                    value.into_value(),
                    limits_tags,
                    max_value,
                    counters,
                );
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
                let Some(p) = self.pending_for(&request_id, origin, now_instant, counters) else {
                    return;
                };
                let n = span_bytes(&span_id)
                    + operation.len()
                    + parent_id.as_ref().map_or(0, |s| s.len());
                let Some(s) = span(p, span_id, max_spans, true) else {
                    return;
                };
                s.parent = parent_id.map(Cow::into_owned);
                s.operation = Some(operation.into_owned());
                s.start = Some(ts.unwrap_or(now));
                p.bytes += n;
                n
            }
            Command::TagSpan {
                request_id,
                span_id,
                tag,
                value,
            } => {
                let Some(p) = self.pending_for(&request_id, origin, now_instant, counters) else {
                    return;
                };
                let Some(s) = span(p, span_id, max_spans, false) else {
                    return;
                };
                let n = insert_tag(
                    &mut s.tags,
                    tag,
                    value.into_value(),
                    limits_tags,
                    max_value,
                    counters,
                );
                p.bytes += n;
                n
            }
            Command::StopSpan {
                ts,
                request_id,
                span_id,
            } => {
                let Some(p) = self.pending_for(&request_id, origin, now_instant, counters) else {
                    return;
                };
                let Some(s) = span(p, span_id, max_spans, false) else {
                    return;
                };
                s.end = Some(ts.unwrap_or(now));
                0
            }
            Command::FinishRequest { ts, request_id } => {
                let Some(slot) = self.request(&request_id, origin, now_instant, counters) else {
                    return;
                };
                if let Some(p) = self.take(slot) {
                    counters.dropped_spans += p.dropped_spans;
                    let id = Arc::clone(&p.id);
                    out.push(finish(p, ts.unwrap_or(now)));
                    self.close(id, Closed::Finished);
                }
                0
            }
            Command::Batch(mut cmds) => {
                // Everything but FinishRequest first, in order; then the finishes.
                for c in &mut cmds {
                    if !matches!(c, Command::FinishRequest { .. }) {
                        let c = std::mem::replace(c, Command::CoreAgentVersion);
                        self.apply(c, origin, now, now_instant, counters, out);
                    }
                }
                for c in cmds {
                    if matches!(c, Command::FinishRequest { .. }) {
                        self.apply(c, origin, now, now_instant, counters, out);
                    }
                }
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
            }
        }
        expired.len()
    }
}

fn span_bytes(id: &str) -> usize {
    id.len() + OVERHEAD * 2
}

/// Position of span `id` in `p.spans`, if it is known.
fn find_span(p: &Pending, id: &str) -> Option<usize> {
    if p.spans.get(p.last_span).is_some_and(|s| s.id == id) {
        return Some(p.last_span);
    }
    match &p.span_index {
        Some(index) => index.get(id).copied(),
        None => p.spans.iter().position(|s| s.id == id),
    }
}

fn span<'p>(
    p: &'p mut Pending,
    span_id: Cow<'_, str>,
    max_spans: usize,
    starting: bool,
) -> Option<&'p mut PendingSpan> {
    let pos = match find_span(p, &span_id) {
        Some(pos) => pos,
        None => {
            if p.spans.len() >= max_spans {
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
            let pos = p.spans.len();
            if p.spans.capacity() == 0 {
                p.spans.reserve(8);
            }
            let id = span_id.into_owned();
            match &mut p.span_index {
                Some(index) => {
                    index.insert(id.clone(), pos);
                }
                None if pos >= SPAN_INDEX_AFTER => {
                    let mut index: HashMap<String, usize> = p
                        .spans
                        .iter()
                        .enumerate()
                        .map(|(i, s)| (s.id.clone(), i))
                        .collect();
                    index.insert(id.clone(), pos);
                    p.span_index = Some(index);
                }
                None => {}
            }
            p.spans.push(PendingSpan {
                id,
                parent: None,
                operation: None,
                start: None,
                end: None,
                tags: Map::new(),
            });
            pos
        }
    };
    p.last_span = pos;
    p.spans.get_mut(pos)
}

/// Inserts or replaces a tag; returns the approximate bytes added.
fn insert_tag(
    tags: &mut Map<String, Value>,
    tag: Cow<'_, str>,
    value: Value,
    max_tags: usize,
    max_value: usize,
    counters: &mut Counters,
) -> usize {
    let size = approx_size(&value, max_value);
    let value = if size > max_value {
        counters.truncated_values += 1;
        Value::String(format!("[truncated: more than {max_value} bytes]"))
    } else {
        value
    };
    if tags.len() >= max_tags && !tags.contains_key(&*tag) {
        counters.dropped_tags += 1;
        return 0;
    }
    let n = tag.len() + size.min(max_value) + OVERHEAD;
    if tags.is_empty() {
        // Most spans carry a few tags: size the map once instead of growing it twice.
        *tags = Map::with_capacity(4);
    }
    tags.insert(tag.into_owned(), value);
    n
}

fn is_endpoint_op(op: &str) -> bool {
    op.starts_with("Controller/") || op.starts_with("Job/")
}

fn truthy(v: Option<&Value>) -> bool {
    match v {
        Some(Value::Bool(b)) => *b,
        Some(Value::String(s)) => s.eq_ignore_ascii_case("true"),
        _ => false,
    }
}

fn finish(p: Pending, finish_ts: Timestamp) -> FinishedRequest {
    let mut warnings = Vec::new();
    let mut warn = |w: String| {
        if warnings.len() < MAX_WARNINGS {
            warnings.push(w);
        }
    };
    // Spans that were never started are dropped; the others keep their first-seen order.
    let mut spans = p.spans;
    spans.retain(|s| {
        if s.operation.is_none() {
            warn(format!(
                "span {}: tagged or stopped but never started (dropped)",
                s.id
            ));
        }
        s.operation.is_some()
    });
    let n = spans.len();
    let start = p
        .start
        .or_else(|| spans.iter().filter_map(|s| s.start).min())
        .unwrap_or(finish_ts);
    if p.start.is_none() {
        warn("no StartRequest".into());
    }
    let end = finish_ts;
    for s in &mut spans {
        if s.end.is_none() {
            warn(format!(
                "span {}: never stopped (ends with the request)",
                s.id
            ));
            s.end = Some(end.max(s.start.unwrap_or(end)));
        }
    }
    // Parent of each span (None: a root, or a parent that is not in this request).
    let index: Option<HashMap<&str, usize>> = (n > SPAN_INDEX_AFTER).then(|| {
        spans
            .iter()
            .enumerate()
            .map(|(i, s)| (s.id.as_str(), i))
            .collect()
    });
    let lookup = |id: &str| match &index {
        Some(ix) => ix.get(id).copied(),
        None => spans.iter().position(|s| s.id == id),
    };
    let mut parent: Vec<Option<usize>> = Vec::with_capacity(n);
    let mut orphan_warnings = Vec::new();
    for (i, s) in spans.iter().enumerate() {
        parent.push(match s.parent.as_deref() {
            None => None,
            Some(pid) => match lookup(pid) {
                Some(pi) if pi != i => Some(pi),
                _ => {
                    orphan_warnings
                        .push(format!("span {}: parent {pid} not in this request", s.id));
                    None
                }
            },
        });
    }
    for w in orphan_warnings {
        warn(w);
    }
    // Children of each parent, contiguous and sorted by (start, first seen): sort the spans by
    // (parent, start, position) once; `first_child[p]..first_child[p + 1]` are p's children.
    let key = |i: usize| (spans[i].start, i);
    let mut by_parent: Vec<usize> = (0..n).collect();
    by_parent.sort_unstable_by_key(|&i| (parent[i].map_or(0, |p| p + 1), key(i)));
    let mut first_child = vec![0usize; n + 2];
    for &i in &by_parent {
        first_child[parent[i].map_or(0, |p| p + 1) + 1] += 1;
    }
    for b in 1..first_child.len() {
        first_child[b] += first_child[b - 1];
    }
    let children = |bucket: usize| &by_parent[first_child[bucket]..first_child[bucket + 1]];
    let dur = |s: &PendingSpan| {
        let (a, b) = (s.start.unwrap_or(end), s.end.unwrap_or(end));
        u64::try_from(b.0 - a.0).unwrap_or(0)
    };
    // Pre-order walk from the roots (bucket 0).
    let mut order: Vec<(usize, u32)> = Vec::with_capacity(n);
    let mut visited = vec![false; n];
    let mut stack: Vec<(usize, u32)> = children(0).iter().rev().map(|&r| (r, 0)).collect();
    while let Some((i, depth)) = stack.pop() {
        if std::mem::replace(&mut visited[i], true) {
            continue;
        }
        order.push((i, depth));
        for &c in children(i + 1).iter().rev() {
            stack.push((c, depth.saturating_add(1)));
        }
    }
    if order.len() < n {
        let mut rest: Vec<usize> = (0..n).filter(|&i| !visited[i]).collect();
        warn(format!("{} spans form a parent cycle", rest.len()));
        rest.sort_by_key(|&i| key(i));
        order.extend(rest.into_iter().map(|i| (i, 0)));
    }
    let exclusive: Vec<u64> = (0..n)
        .map(|i| {
            let child_time: u64 = children(i + 1).iter().map(|&c| dur(&spans[c])).sum();
            dur(&spans[i]).saturating_sub(child_time)
        })
        .collect();
    let mut out_spans = Vec::with_capacity(order.len());
    for (i, depth) in order {
        let s = &mut spans[i];
        let duration_us = dur(s);
        out_spans.push(FinishedSpan {
            id: std::mem::take(&mut s.id),
            parent_id: s.parent.take(),
            operation: s.operation.take().unwrap_or_default(),
            start: s.start.unwrap_or(end),
            end: s.end.unwrap_or(end),
            duration_us,
            exclusive_us: exclusive[i],
            depth,
            tags: std::mem::take(&mut s.tags),
        });
    }
    let operation = out_spans
        .iter()
        .find(|s| s.depth == 0 && is_endpoint_op(&s.operation))
        .or_else(|| out_spans.iter().find(|s| is_endpoint_op(&s.operation)))
        .map(|s| s.operation.clone());
    let endpoint = operation
        .as_ref()
        .map(|op| match p.tags.get("transaction.name") {
            Some(Value::String(name)) if !name.is_empty() => {
                let kind = op.split('/').next().unwrap_or("Controller");
                format!("{kind}/{name}")
            }
            _ => op.clone(),
        });
    FinishedRequest {
        id: String::from(&*p.id),
        app: p.app.to_string(),
        connection: p.connection,
        error: truthy(p.tags.get("error")),
        ignored: truthy(p.tags.get("ignore_transaction")),
        operation,
        endpoint,
        start,
        end,
        duration_us: u64::try_from(end.0 - start.0).unwrap_or(0),
        tags: p.tags,
        spans: out_spans,
        dropped_spans: p.dropped_spans,
        warnings,
    }
}
