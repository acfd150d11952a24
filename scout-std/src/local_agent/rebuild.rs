//! Rebuilding requests from their commands, whatever the order they arrive in.
//!
//! Every command names its request; a request's state is created by whichever of its commands
//! comes first, and a span's state by whichever of `StartSpan`, `TagSpan` or `StopSpan` comes first.
//! Parent links are resolved only when `FinishRequest` arrives (at the end of a `BatchCommand`, after
//! every other command of the batch), so children-first (Python), parents-first (Node, PHP) and
//! one-command-per-frame (older agents) all give the same tree.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use serde_json::{Map, Value};

use super::config::Limits;
use super::model::{Counters, FinishedRequest, FinishedSpan};
use super::protocol::Command;
use super::timestamp::Timestamp;

const MAX_WARNINGS: usize = 20;
const CLOSED_IDS_KEPT: usize = 20_000;
/// Fixed per-item overhead added to the approximate size of pending data.
const OVERHEAD: usize = 64;

#[derive(Debug)]
struct PendingSpan {
    seq: u32,
    parent: Option<String>,
    operation: Option<String>,
    start: Option<Timestamp>,
    end: Option<Timestamp>,
    tags: Map<String, Value>,
}

#[derive(Debug)]
struct Pending {
    app: Arc<str>,
    connection: u64,
    /// Time of the last command for this request (eviction is by inactivity).
    last_seen: Instant,
    start: Option<Timestamp>,
    tags: Map<String, Value>,
    spans: HashMap<String, PendingSpan>,
    next_seq: u32,
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
    pending: HashMap<String, Pending>,
    pending_bytes: usize,
    closed: HashMap<String, Closed>,
    closed_order: VecDeque<String>,
}

/// Approximate in-memory size of a JSON value, stopping early once `limit` is exceeded.
pub(crate) fn approx_size(v: &Value, limit: usize) -> usize {
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
            pending: HashMap::new(),
            pending_bytes: 0,
            closed: HashMap::new(),
            closed_order: VecDeque::new(),
        }
    }

    /// Number of unfinished requests.
    pub(crate) fn pending_len(&self) -> usize {
        self.pending.len()
    }

    fn close(&mut self, id: String, how: Closed) {
        if self.closed.insert(id.clone(), how).is_none() {
            self.closed_order.push_back(id);
        }
        while self.closed_order.len() > CLOSED_IDS_KEPT {
            if let Some(old) = self.closed_order.pop_front() {
                self.closed.remove(&old);
            }
        }
    }

    /// The pending request `id`, created if needed; `None` if the command must be ignored.
    fn request(
        &mut self,
        id: &str,
        origin: &Origin,
        counters: &mut Counters,
    ) -> Option<&mut Pending> {
        if !self.pending.contains_key(id) {
            match self.closed.get(id) {
                Some(Closed::Finished) => {
                    counters.late_commands += 1;
                    log::debug!("command for already finished request {id} ignored");
                    return None;
                }
                Some(Closed::Rejected) => return None,
                None => {}
            }
            if self.pending.len() >= self.limits.max_pending_requests
                || self.pending_bytes >= self.limits.max_pending_bytes
            {
                counters.dropped_requests += 1;
                log::warn!(
                    "dropping request {id}: {} requests / ~{} bytes pending (limits {} / {})",
                    self.pending.len(),
                    self.pending_bytes,
                    self.limits.max_pending_requests,
                    self.limits.max_pending_bytes
                );
                self.close(id.to_owned(), Closed::Rejected);
                return None;
            }
            let bytes = id.len() + OVERHEAD;
            self.pending_bytes += bytes;
            self.pending.insert(
                id.to_owned(),
                Pending {
                    app: origin.app.clone(),
                    connection: origin.connection,
                    last_seen: Instant::now(),
                    start: None,
                    tags: Map::new(),
                    spans: HashMap::new(),
                    next_seq: 0,
                    bytes,
                    dropped_spans: 0,
                },
            );
        }
        let p = self.pending.get_mut(id)?;
        p.last_seen = Instant::now();
        Some(p)
    }

    /// Applies one request/span command (`ApplicationEvent`s are handled by the caller), pushing
    /// requests that finish to `out`. `now` substitutes for missing timestamps.
    pub(crate) fn apply(
        &mut self,
        cmd: Command,
        origin: &Origin,
        now: Timestamp,
        counters: &mut Counters,
        out: &mut Vec<FinishedRequest>,
    ) {
        let limits_tags = self.limits.max_tags;
        let max_value = self.limits.max_tag_value_bytes;
        let max_spans = self.limits.max_spans_per_request;
        let added = match cmd {
            Command::StartRequest { ts, request_id } => {
                let Some(p) = self.request(&request_id, origin, counters) else {
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
                let Some(p) = self.request(&request_id, origin, counters) else {
                    return;
                };
                let n = insert_tag(&mut p.tags, tag, value, limits_tags, max_value, counters);
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
                let Some(p) = self.request(&request_id, origin, counters) else {
                    return;
                };
                let n = span_bytes(&span_id)
                    + operation.len()
                    + parent_id.as_ref().map_or(0, String::len);
                let Some(s) = span(p, span_id, max_spans, true) else {
                    return;
                };
                s.parent = parent_id;
                s.operation = Some(operation);
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
                let Some(p) = self.request(&request_id, origin, counters) else {
                    return;
                };
                let Some(s) = span(p, span_id, max_spans, false) else {
                    return;
                };
                let n = insert_tag(&mut s.tags, tag, value, limits_tags, max_value, counters);
                p.bytes += n;
                n
            }
            Command::StopSpan {
                ts,
                request_id,
                span_id,
            } => {
                let Some(p) = self.request(&request_id, origin, counters) else {
                    return;
                };
                let Some(s) = span(p, span_id, max_spans, false) else {
                    return;
                };
                s.end = Some(ts.unwrap_or(now));
                0
            }
            Command::FinishRequest { ts, request_id } => {
                if self.request(&request_id, origin, counters).is_none() {
                    return;
                }
                if let Some(p) = self.pending.remove(&request_id) {
                    self.pending_bytes = self.pending_bytes.saturating_sub(p.bytes);
                    counters.dropped_spans += p.dropped_spans;
                    out.push(finish(request_id.clone(), p, ts.unwrap_or(now)));
                    self.close(request_id, Closed::Finished);
                }
                0
            }
            Command::Batch(cmds) => {
                let mut finishes = Vec::new();
                for c in cmds {
                    match c {
                        Command::FinishRequest { .. } => finishes.push(c),
                        Command::ApplicationEvent { .. } | Command::Batch(_) => {}
                        c => self.apply(c, origin, now, counters, out),
                    }
                }
                for c in finishes {
                    self.apply(c, origin, now, counters, out);
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
        let expired: Vec<String> = self
            .pending
            .iter()
            .filter(|(_, p)| p.last_seen.elapsed() > timeout)
            .map(|(id, _)| id.clone())
            .collect();
        for id in &expired {
            if let Some(p) = self.pending.remove(id) {
                self.pending_bytes = self.pending_bytes.saturating_sub(p.bytes);
                log::warn!(
                    "request {id} (app {:?}, connection {}) never finished; evicted after {:?} without commands",
                    p.app,
                    p.connection,
                    timeout
                );
            }
            counters.expired_requests += 1;
            self.close(id.clone(), Closed::Rejected);
        }
        expired.len()
    }
}

fn span_bytes(id: &str) -> usize {
    id.len() + OVERHEAD * 2
}

fn span(
    p: &mut Pending,
    span_id: String,
    max_spans: usize,
    starting: bool,
) -> Option<&mut PendingSpan> {
    if !p.spans.contains_key(&span_id) {
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
        let seq = p.next_seq;
        p.next_seq = p.next_seq.saturating_add(1);
        p.spans.insert(
            span_id.clone(),
            PendingSpan {
                seq,
                parent: None,
                operation: None,
                start: None,
                end: None,
                tags: Map::new(),
            },
        );
    }
    p.spans.get_mut(&span_id)
}

/// Inserts or replaces a tag; returns the approximate bytes added.
fn insert_tag(
    tags: &mut Map<String, Value>,
    tag: String,
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
    if !tags.contains_key(&tag) && tags.len() >= max_tags {
        counters.dropped_tags += 1;
        return 0;
    }
    let n = tag.len() + size.min(max_value) + OVERHEAD;
    tags.insert(tag, value);
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

fn finish(id: String, p: Pending, finish_ts: Timestamp) -> FinishedRequest {
    let mut warnings = Vec::new();
    let mut warn = |w: String| {
        if warnings.len() < MAX_WARNINGS {
            warnings.push(w);
        }
    };
    let mut spans: Vec<(String, PendingSpan)> = Vec::with_capacity(p.spans.len());
    for (sid, s) in p.spans {
        if s.operation.is_none() {
            warn(format!(
                "span {sid}: tagged or stopped but never started (dropped)"
            ));
        } else {
            spans.push((sid, s));
        }
    }
    let start = p
        .start
        .or_else(|| spans.iter().filter_map(|(_, s)| s.start).min())
        .unwrap_or(finish_ts);
    if p.start.is_none() {
        warn("no StartRequest".into());
    }
    let end = finish_ts;
    for (sid, s) in &mut spans {
        if s.end.is_none() {
            warn(format!("span {sid}: never stopped (ends with the request)"));
            s.end = Some(end.max(s.start.unwrap_or(end)));
        }
    }
    // Tree: index, children lists, roots.
    let index: HashMap<&str, usize> = spans
        .iter()
        .enumerate()
        .map(|(i, (sid, _))| (sid.as_str(), i))
        .collect();
    let mut children: Vec<Vec<usize>> = vec![Vec::new(); spans.len()];
    let mut roots = Vec::new();
    let mut orphan_warnings = Vec::new();
    for (i, (sid, s)) in spans.iter().enumerate() {
        match s.parent.as_deref() {
            None => roots.push(i),
            Some(pid) => match index.get(pid) {
                Some(&pi) if pi != i => children[pi].push(i),
                _ => {
                    orphan_warnings.push(format!("span {sid}: parent {pid} not in this request"));
                    roots.push(i);
                }
            },
        }
    }
    for w in orphan_warnings {
        warn(w);
    }
    let key = |i: &usize| (spans[*i].1.start, spans[*i].1.seq);
    roots.sort_by_key(key);
    for c in &mut children {
        c.sort_by_key(key);
    }
    let mut order: Vec<(usize, u32)> = Vec::with_capacity(spans.len());
    let mut visited = vec![false; spans.len()];
    let mut stack: Vec<(usize, u32)> = roots.iter().rev().map(|&r| (r, 0)).collect();
    while let Some((i, depth)) = stack.pop() {
        if std::mem::replace(&mut visited[i], true) {
            continue;
        }
        order.push((i, depth));
        for &c in children[i].iter().rev() {
            stack.push((c, depth.saturating_add(1)));
        }
    }
    let mut rest: Vec<usize> = (0..spans.len()).filter(|&i| !visited[i]).collect();
    if !rest.is_empty() {
        warn(format!("{} spans form a parent cycle", rest.len()));
        rest.sort_by_key(key);
        order.extend(rest.into_iter().map(|i| (i, 0)));
    }
    let dur = |s: &PendingSpan| {
        let (a, b) = (s.start.unwrap_or(end), s.end.unwrap_or(end));
        u64::try_from(b.0 - a.0).unwrap_or(0)
    };
    let child_time: Vec<u64> = children
        .iter()
        .map(|c| c.iter().map(|&ci| dur(&spans[ci].1)).sum())
        .collect();
    let exclusive: Vec<u64> = (0..spans.len())
        .map(|i| dur(&spans[i].1).saturating_sub(child_time[i]))
        .collect();
    let mut slots: Vec<Option<(String, PendingSpan)>> = spans.into_iter().map(Some).collect();
    let mut out_spans = Vec::with_capacity(order.len());
    for (i, depth) in order {
        let Some((sid, s)) = slots[i].take() else {
            continue;
        };
        let duration_us = dur(&s);
        out_spans.push(FinishedSpan {
            id: sid,
            parent_id: s.parent,
            operation: s.operation.unwrap_or_default(),
            start: s.start.unwrap_or(end),
            end: s.end.unwrap_or(end),
            duration_us,
            exclusive_us: exclusive[i],
            depth,
            tags: s.tags,
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
        id,
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ts(s: u32) -> Option<Timestamp> {
        Some(Timestamp(i64::from(s) * 1000))
    }

    fn run(cmds: Vec<Command>) -> Vec<FinishedRequest> {
        let mut r = Rebuilder::new(Limits::default());
        let origin = Origin {
            connection: 1,
            app: Arc::from("app"),
        };
        let mut c = Counters::default();
        let mut out = Vec::new();
        for cmd in cmds {
            r.apply(cmd, &origin, Timestamp(0), &mut c, &mut out);
        }
        assert_eq!(r.pending_len(), 0);
        out
    }

    fn start(span: &str, parent: Option<&str>, op: &str, t: u32) -> Command {
        Command::StartSpan {
            ts: ts(t),
            request_id: "r".into(),
            span_id: span.into(),
            parent_id: parent.map(Into::into),
            operation: op.into(),
        }
    }

    fn stop(span: &str, t: u32) -> Command {
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
            value: json!("true"),
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
            start("s", None, "Job/x", 1),
            &origin,
            Timestamp(0),
            &mut c,
            &mut out,
        );
        std::thread::sleep(std::time::Duration::from_millis(2));
        assert_eq!(r.expire(&mut c), 1);
        assert_eq!(r.pending_len(), 0);
        r.apply(stop("s", 2), &origin, Timestamp(0), &mut c, &mut out);
        assert_eq!(r.pending_len(), 0);
        assert!(out.is_empty());
        assert_eq!(c.expired_requests, 1);
    }
}
