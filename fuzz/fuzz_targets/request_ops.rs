//! Arbitrary operation sequences on a `Request`, checked step by step against a model of the
//! documented behaviour, then encoded and parsed back.
//!
//! Storage is either `Fixed<8, 16, 256, 4>` (every limit is reached within a few operations)
//! or the default `Fixed`. After every operation the target compares the returned value, the
//! depth, state, drop counters, arena use, span count, operation name and `is_real` with the
//! model; before each `begin` and at the end it compares every span (operation, times, parent,
//! flags, tags in order) and the request tags, and encodes the request as a `RequestBatch`
//! frame, which must parse as JSON with serde_json, carry the right length prefix and say
//! exactly what the request holds. See docs/fuzzing.md for the list of invariants.
#![no_main]

use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;
use scout_core::command::{
    FrameError, RequestBatch, encoded_len, write_frame, write_frame_to_slice,
};
use scout_core::json::{BufferFull, FnSink};
use scout_core::request::NoOpenSpan;
use scout_core::{
    DropReason, Drops, Fixed, RawJson, Request, RequestIds, SpanFlags, SpanIdx, SpanStart,
    SpanStop, Storage, Text, Timestamp, Value,
};
use scout_fuzz::{MVal, json_value_matches, known};

/// `'static` operation names and tag keys (stored by reference, no arena use).
const NAMES: &[&str] = &[
    "",
    "Controller/users#show",
    "Job/mail",
    "SQL/Query",
    "Custom/é",
    "Controller/",
    "Job/",
    "日本語/😀",
    "a\"b\\c\n\u{0}\u{7f}",
    "HTTP/GET",
    "controller/lowercase",
    "Controller/GET /users/{id}",
    "db.statement",
    "stack",
];
const STATIC_VALUES: &[&str] = &["", "SELECT 1", "é\u{1}\"", "😀"];
const JSONS: &[&str] = &[
    "[]",
    "{}",
    "[{\"file\": \"a.rs\", \"line\": 3, \"function\": \"main\"}]",
    "{\"a\": [1, 2.5e3, true, null, \"\\u00e9\"]}",
    " 0 ",
    "\"é\"",
    "[[[[[[[[]]]]]]]]",
    "-0.0",
];

#[derive(Arbitrary, Debug)]
enum Name<'a> {
    Static(u8),
    Borrowed(&'a str),
}

impl<'a> Name<'a> {
    fn text(&self) -> Text<'a> {
        match *self {
            Name::Static(i) => Text::Static(NAMES[usize::from(i) % NAMES.len()]),
            Name::Borrowed(s) => Text::Borrowed(s),
        }
    }
    fn as_str(&self) -> &'a str {
        match *self {
            Name::Static(i) => NAMES[usize::from(i) % NAMES.len()],
            Name::Borrowed(s) => s,
        }
    }
    /// Bytes this name takes in the arena when stored as a `Text`.
    fn arena_bytes(&self) -> usize {
        match self {
            Name::Static(_) => 0,
            Name::Borrowed(s) => s.len(),
        }
    }
}

#[derive(Arbitrary, Debug)]
enum Val<'a> {
    Str(&'a str),
    Static(u8),
    Int(i64),
    Float(f64),
    Nan,
    Inf(bool),
    NegZero,
    Bool(bool),
    Null,
    /// Used as `Value::Json` when `RawJson` accepts it (and serde_json can parse it, so the
    /// encoded request stays parsable), else as a string.
    Json(&'a str),
    JsonStatic(u8),
}

impl<'a> Val<'a> {
    fn value(&self) -> Value<'a> {
        match *self {
            Val::Str(s) => Value::Str(s),
            Val::Static(i) => Value::Static(STATIC_VALUES[usize::from(i) % STATIC_VALUES.len()]),
            Val::Int(i) => Value::Int(i),
            Val::Float(f) => Value::Float(f),
            Val::Nan => Value::Float(f64::NAN),
            Val::Inf(neg) => Value::Float(if neg {
                f64::NEG_INFINITY
            } else {
                f64::INFINITY
            }),
            Val::NegZero => Value::Float(-0.0),
            Val::Bool(b) => Value::Bool(b),
            Val::Null => Value::Null,
            Val::Json(s) => match RawJson::new(s) {
                Ok(j) if serde_json::from_str::<serde_json::Value>(s).is_ok() => Value::Json(j),
                _ => Value::Str(s),
            },
            Val::JsonStatic(i) => {
                Value::Json(RawJson::new(JSONS[usize::from(i) % JSONS.len()]).expect("valid"))
            }
        }
    }
}

/// Bytes a value takes in the arena.
fn value_bytes(v: &Value<'_>) -> usize {
    match v {
        Value::Str(s) => s.len(),
        Value::Json(j) => j.as_str().len(),
        _ => 0,
    }
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Idx {
    /// The n-th recorded span (open or not).
    Recorded(u8),
    /// The n-th open recorded span.
    Open(u8),
    Raw(u16),
    /// The internal "skipped" / "ignored subtree" stack markers.
    Max,
    MaxMinus1,
}

#[derive(Arbitrary, Debug)]
enum Op<'a> {
    Begin {
        limit: u8,
        unlimited: bool,
        t: u64,
        seed: [u8; 16],
    },
    Start {
        name: Name<'a>,
        flags: u8,
        t: u64,
    },
    StartParts {
        parts: Vec<Name<'a>>,
        flags: u8,
        t: u64,
    },
    Stop {
        t: u64,
    },
    StopAt {
        idx: Idx,
        t: u64,
    },
    TagSpan {
        key: Name<'a>,
        val: Val<'a>,
    },
    TagSpanAt {
        idx: Idx,
        key: Name<'a>,
        val: Val<'a>,
    },
    TagRequest {
        key: Name<'a>,
        val: Val<'a>,
    },
    Finish {
        t: u64,
    },
    MarkReal,
}

#[derive(Arbitrary, Debug)]
struct Input<'a> {
    small: bool,
    /// Times only move forward (by up to 65 ms per operation); otherwise each time is arbitrary.
    monotonic: bool,
    ops: Vec<Op<'a>>,
}

fn flags(b: u8) -> SpanFlags {
    let mut f = SpanFlags::NONE;
    if b & 1 != 0 {
        f = f.union(SpanFlags::IGNORE);
    }
    if b & 2 != 0 {
        f = f.union(SpanFlags::IGNORE_CHILDREN);
    }
    if b & 4 != 0 {
        f = f.union(SpanFlags::NO_BACKTRACE);
    }
    f
}

// ----------------------------------------------------------------------------------------
// The model: the documented behaviour of `Request`, written without looking at its storage.
// ----------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq)]
enum St {
    Idle,
    Open,
    Finished,
}

#[derive(Debug, Clone, Copy)]
enum Entry {
    /// A recorded span; `true` if it ignores its children.
    Rec(u16, bool),
    /// An open span that was not recorded; `true` if its descendants are not recorded.
    Unrec(bool),
    /// A span refused because the open-span stack was full.
    Overflow,
}

#[derive(Debug)]
struct MSpan {
    op: String,
    start: u64,
    end: u64,
    parent: Option<u16>,
    flags: SpanFlags,
    tags: Vec<(String, MVal)>,
    done: bool,
}

#[derive(Debug, Clone, Copy)]
struct Caps {
    spans: usize,
    tags: usize,
    arena: usize,
    depth: usize,
}

#[derive(Debug)]
struct Model {
    caps: Caps,
    st: St,
    stack: Vec<Entry>,
    spans: Vec<MSpan>,
    done: Vec<u16>,
    req_tags: Vec<(String, MVal)>,
    ntags: usize,
    completed: u32,
    limit: u32,
    arena: usize,
    drops: Drops,
    start: u64,
    end: u64,
    operation: Option<u16>,
    real: bool,
    ids: RequestIds,
    started_any: bool,
    /// Finding `stale-parent`: the parent scout-core gives the next span today (after a pop,
    /// the popped span's own parent, even if that one was already stopped out of order).
    top_as_implemented: Option<u16>,
}

fn count(d: &mut Drops, r: DropReason) {
    let c = match r {
        DropReason::SpanLimit => &mut d.span_limit,
        DropReason::SpanCapacity => &mut d.span_capacity,
        DropReason::Depth => &mut d.depth,
        DropReason::TagCapacity => &mut d.tag_capacity,
        DropReason::Arena => &mut d.arena,
        DropReason::NotOpen => &mut d.not_open,
        _ => unreachable!("new DropReason: extend the model"),
    };
    *c = c.saturating_add(1);
}

const NO_STOP: SpanStop = SpanStop {
    span: None,
    duration_us: None,
    finished: false,
};

impl Model {
    fn new(caps: Caps) -> Self {
        Self {
            caps,
            st: St::Idle,
            stack: Vec::new(),
            spans: Vec::new(),
            done: Vec::new(),
            req_tags: Vec::new(),
            ntags: 0,
            completed: 0,
            limit: 1500,
            arena: 0,
            drops: Drops::default(),
            start: 0,
            end: 0,
            operation: None,
            real: false,
            ids: RequestIds::default(),
            started_any: false,
            top_as_implemented: None,
        }
    }

    fn begin(&mut self, ids: RequestIds, now: u64, limit: u32) {
        *self = Self {
            st: St::Open,
            limit,
            start: now,
            end: now,
            ids,
            ..Self::new(self.caps)
        };
    }

    fn start(&mut self, op: &str, op_bytes: usize, flags: SpanFlags, now: u64) -> SpanStart {
        if self.st != St::Open {
            count(&mut self.drops, DropReason::NotOpen);
            return SpanStart::Dropped(DropReason::NotOpen);
        }
        self.started_any = true;
        // While spans overflow the open-span stack, new ones are deeper still: they overflow
        // too (so they stay above the overflowed ones), even if a slot below was freed.
        if self.stack.iter().any(|e| matches!(e, Entry::Overflow)) {
            count(&mut self.drops, DropReason::Depth);
            self.stack.push(Entry::Overflow);
            return SpanStart::Dropped(DropReason::Depth);
        }
        let real_depth = self
            .stack
            .iter()
            .filter(|e| !matches!(e, Entry::Overflow))
            .count();
        if real_depth >= self.caps.depth {
            if known("depth-undo") {
                self.depth_undo_as_implemented(op, op_bytes, flags);
            }
            // One span, one reason: only `depth` is counted.
            count(&mut self.drops, DropReason::Depth);
            self.stack.push(Entry::Overflow);
            return SpanStart::Dropped(DropReason::Depth);
        }
        let ignore_children = flags.contains(SpanFlags::IGNORE_CHILDREN);
        let suppressed = self
            .stack
            .iter()
            .any(|e| matches!(e, Entry::Rec(_, true) | Entry::Unrec(true)));
        if suppressed {
            self.stack.push(Entry::Unrec(true));
            return SpanStart::Ignored;
        }
        if flags.contains(SpanFlags::IGNORE) {
            self.stack.push(Entry::Unrec(ignore_children));
            return SpanStart::Ignored;
        }
        // When the name fits neither the arena nor the span storage, either reason is true;
        // scout-core reports the arena (it copies the name before pushing the record).
        let reason = if self.completed >= self.limit {
            Some(DropReason::SpanLimit)
        } else if op_bytes > self.caps.arena - self.arena {
            Some(DropReason::Arena)
        } else if self.spans.len() >= self.caps.spans {
            Some(DropReason::SpanCapacity)
        } else {
            None
        };
        if let Some(r) = reason {
            count(&mut self.drops, r);
            self.stack.push(Entry::Unrec(ignore_children));
            return SpanStart::Dropped(r);
        }
        let idx = self.spans.len() as u16;
        let mut parent = self.stack.iter().rev().find_map(|e| match e {
            Entry::Rec(i, _) => Some(*i),
            _ => None,
        });
        if known("stale-parent") {
            parent = self.top_as_implemented;
        }
        self.top_as_implemented = Some(idx);
        self.spans.push(MSpan {
            op: op.to_owned(),
            start: now,
            end: now,
            parent,
            flags,
            tags: Vec::new(),
            done: false,
        });
        self.arena += op_bytes;
        if self.operation.is_none() && (op.starts_with("Controller/") || op.starts_with("Job/")) {
            self.operation = Some(idx);
            self.real = true;
        }
        self.stack.push(Entry::Rec(idx, ignore_children));
        SpanStart::Recorded(SpanIdx(idx))
    }

    /// Finding `depth-undo` (SCOUT_FUZZ_KNOWN=depth-undo): what scout-core does today when the
    /// open-span stack is full. It first decides the span as if there were room (counting a
    /// span-limit / capacity / arena drop, or recording it: copying its name into the arena and
    /// naming the request after it), then undoes only the span record.
    fn depth_undo_as_implemented(&mut self, op: &str, op_bytes: usize, flags: SpanFlags) {
        let suppressed = self
            .stack
            .iter()
            .any(|e| matches!(e, Entry::Rec(_, true) | Entry::Unrec(true)));
        if suppressed || flags.contains(SpanFlags::IGNORE) {
            return;
        }
        if self.completed >= self.limit {
            count(&mut self.drops, DropReason::SpanLimit);
        } else if op_bytes > self.caps.arena - self.arena {
            count(&mut self.drops, DropReason::Arena);
        } else if self.spans.len() >= self.caps.spans {
            count(&mut self.drops, DropReason::SpanCapacity);
        } else {
            self.arena += op_bytes;
            if self.operation.is_none() && (op.starts_with("Controller/") || op.starts_with("Job/"))
            {
                self.operation = Some(self.spans.len() as u16);
                self.real = true;
            }
        }
    }

    fn complete(&mut self, i: u16, now: u64) -> SpanStop {
        let s = &mut self.spans[usize::from(i)];
        s.end = now;
        s.done = true;
        self.done.push(i);
        self.completed = self.completed.saturating_add(1);
        SpanStop {
            span: Some(SpanIdx(i)),
            duration_us: Some(now.saturating_sub(s.start)),
            finished: false,
        }
    }

    fn stop(&mut self, now: u64) -> Result<SpanStop, NoOpenSpan> {
        let e = self.stack.pop().ok_or(NoOpenSpan)?;
        let mut out = NO_STOP;
        if let Entry::Rec(i, _) = e {
            out = self.complete(i, now);
            self.top_as_implemented = self.spans[usize::from(i)].parent;
        }
        if self.stack.is_empty() {
            self.st = St::Finished;
            self.end = now;
            out.finished = true;
        }
        Ok(out)
    }

    fn stop_at(&mut self, idx: u16, now: u64) -> Result<SpanStop, NoOpenSpan> {
        let pos = self
            .stack
            .iter()
            .rposition(|e| matches!(e, Entry::Rec(i, _) if *i == idx))
            .ok_or(NoOpenSpan)?;
        if pos + 1 == self.stack.len() {
            return self.stop(now);
        }
        self.stack.remove(pos);
        self.top_as_implemented = self.stack.iter().rev().find_map(|e| match e {
            Entry::Rec(i, _) => Some(*i),
            _ => None,
        });
        Ok(self.complete(idx, now))
    }

    fn finish(&mut self, now: u64) {
        if self.st != St::Open {
            return;
        }
        while !self.stack.is_empty() {
            let _ = self.stop(now);
        }
        self.st = St::Finished;
        self.end = now;
    }

    /// `target`: `None` for the request, `Some(i)` for span `i`.
    fn set_tag(
        &mut self,
        target: Option<u16>,
        key: &str,
        key_bytes: usize,
        v: &Value<'_>,
    ) -> Result<(), DropReason> {
        let vb = value_bytes(v);
        let free = self.caps.arena - self.arena;
        let list = match target {
            None => &mut self.req_tags,
            Some(i) => &mut self.spans[usize::from(i)].tags,
        };
        if let Some(pos) = list.iter().position(|(k, _)| k == key) {
            if vb > free {
                count(&mut self.drops, DropReason::Arena);
                return Err(DropReason::Arena);
            }
            list[pos].1 = MVal::of(v);
            self.arena += vb;
            return Ok(());
        }
        if key_bytes + vb > free {
            count(&mut self.drops, DropReason::Arena);
            return Err(DropReason::Arena);
        }
        if self.ntags >= self.caps.tags {
            count(&mut self.drops, DropReason::TagCapacity);
            return Err(DropReason::TagCapacity);
        }
        list.push((key.to_owned(), MVal::of(v)));
        self.ntags += 1;
        self.arena += key_bytes + vb;
        Ok(())
    }

    fn tag_span_at(
        &mut self,
        i: u16,
        key: &str,
        kb: usize,
        v: &Value<'_>,
    ) -> Result<(), DropReason> {
        if usize::from(i) >= self.spans.len() {
            return Ok(());
        }
        self.set_tag(Some(i), key, kb, v)
    }

    fn tag_span(&mut self, key: &str, kb: usize, v: &Value<'_>) -> Result<(), DropReason> {
        if self.st != St::Open {
            count(&mut self.drops, DropReason::NotOpen);
            return Err(DropReason::NotOpen);
        }
        match self.stack.last() {
            Some(Entry::Rec(i, _)) => {
                let i = *i;
                self.tag_span_at(i, key, kb, v)
            }
            _ => Ok(()),
        }
    }

    fn tag_request(&mut self, key: &str, kb: usize, v: &Value<'_>) -> Result<(), DropReason> {
        if self.st == St::Idle {
            count(&mut self.drops, DropReason::NotOpen);
            return Err(DropReason::NotOpen);
        }
        self.set_tag(None, key, kb, v)
    }

    fn resolve_idx(&self, idx: Idx) -> u16 {
        match idx {
            Idx::Recorded(n) if !self.spans.is_empty() => {
                (usize::from(n) % self.spans.len()) as u16
            }
            Idx::Open(n) => {
                let open: Vec<u16> = self
                    .stack
                    .iter()
                    .filter_map(|e| match e {
                        Entry::Rec(i, _) => Some(*i),
                        _ => None,
                    })
                    .collect();
                if open.is_empty() {
                    u16::from(n)
                } else {
                    open[usize::from(n) % open.len()]
                }
            }
            Idx::Recorded(n) => u16::from(n),
            Idx::Raw(r) => r,
            Idx::Max => u16::MAX,
            Idx::MaxMinus1 => u16::MAX - 1,
        }
    }
}

// ----------------------------------------------------------------------------------------
// Checks.
// ----------------------------------------------------------------------------------------

fn check_light<S: Storage>(req: &Request<S>, m: &Model, step: usize) {
    assert_eq!(req.depth(), m.stack.len(), "step {step}: depth");
    assert_eq!(req.is_open(), m.st == St::Open, "step {step}: is_open");
    assert_eq!(
        req.is_finished(),
        m.st == St::Finished,
        "step {step}: is_finished"
    );
    // The brief's invariant, stated directly: once begun, finished iff nothing is open (a
    // request that has not started a span yet is open with depth 0).
    if m.st != St::Idle {
        assert_eq!(
            req.is_finished(),
            req.depth() == 0 && m.started_any || m.st == St::Finished,
            "step {step}: finished iff depth() == 0"
        );
        if req.is_finished() {
            assert_eq!(req.depth(), 0, "step {step}: finished with open spans");
        }
    }
    assert_eq!(req.drops(), m.drops, "step {step}: drop counters");
    assert_eq!(req.arena_used(), m.arena, "step {step}: arena bytes in use");
    assert_eq!(req.span_count(), m.spans.len(), "step {step}: span_count");
    assert_eq!(
        req.operation(),
        m.operation
            .and_then(|i| m.spans.get(usize::from(i)))
            .map(|s| s.op.as_str()),
        "step {step}: operation()"
    );
    assert_eq!(req.is_real(), m.real, "step {step}: is_real");
    let innermost = if m.st != St::Open {
        None
    } else if known("stale-parent") {
        m.top_as_implemented
    } else {
        m.stack.iter().rev().find_map(|e| match e {
            Entry::Rec(i, _) => Some(*i),
            _ => None,
        })
    };
    assert_eq!(
        req.innermost_span(),
        innermost.map(SpanIdx),
        "step {step}: innermost_span"
    );
    assert_eq!(
        req.start_time(),
        Timestamp(m.start),
        "step {step}: start_time"
    );
    assert_eq!(req.end_time(), Timestamp(m.end), "step {step}: end_time");
}

fn check_tags<'r>(
    got: impl Iterator<Item = (&'r str, Value<'r>)>,
    want: &[(String, MVal)],
    what: (&str, usize),
) {
    let got: Vec<(&str, Value<'_>)> = got.collect();
    assert_eq!(
        got.len(),
        want.len(),
        "{what:?}: tag count {got:?} vs {want:?}"
    );
    for ((gk, gv), (wk, wv)) in got.iter().zip(want) {
        assert_eq!(gk, wk, "{what:?}: tag key");
        assert!(wv.same(gv), "{what:?}: tag {wk:?}: got {gv:?}, want {wv:?}");
    }
}

fn check_full<S: Storage>(req: &Request<S>, m: &Model, monotonic: bool) {
    // spans(): every completed span exactly once, in completion order.
    let views: Vec<_> = req.spans().collect();
    let order: Vec<u16> = views.iter().map(|v| v.index().0).collect();
    assert_eq!(
        order, m.done,
        "spans() must yield each completed span once, in completion order"
    );
    for v in &views {
        let i = v.index().0;
        let ms = &m.spans[usize::from(i)];
        assert_eq!(v.operation(), ms.op, "span {i}: operation");
        assert_eq!(v.start_time(), Timestamp(ms.start), "span {i}: start");
        assert_eq!(v.end_time(), Timestamp(ms.end), "span {i}: end");
        assert_eq!(
            v.duration_us(),
            ms.end.saturating_sub(ms.start),
            "span {i}: duration"
        );
        if monotonic {
            assert!(v.end_time() >= v.start_time(), "span {i}: end before start");
        }
        assert_eq!(v.flags(), ms.flags, "span {i}: flags");
        let parent = v.parent().map(|p| p.0);
        if let Some(p) = parent {
            assert!(p < i, "span {i}: parent {p} did not start earlier");
            assert!(
                usize::from(p) < m.spans.len(),
                "span {i}: parent {p} not recorded"
            );
        }
        assert_eq!(
            parent, ms.parent,
            "span {i}: parent is the innermost open recorded span"
        );
        check_tags(v.tags(), &ms.tags, ("span", usize::from(i)));
    }
    // Open spans are readable too; their end is their start.
    for (i, ms) in m.spans.iter().enumerate() {
        let v = req
            .span(SpanIdx(i as u16))
            .expect("recorded span readable by index");
        assert_eq!(v.operation(), ms.op);
        if !ms.done {
            assert_eq!(v.end_time(), v.start_time(), "open span {i}: end == start");
            check_tags(v.tags(), &ms.tags, ("open span", i));
        }
    }
    assert!(req.span(SpanIdx(m.spans.len() as u16)).is_none());
    check_tags(req.request_tags(), &m.req_tags, ("request", 0));
}

fn ts(t: u64) -> String {
    String::from_utf8(Timestamp(t).to_rfc3339().to_vec()).expect("ASCII")
}

/// The single `{"Name": {...}}` member of a command.
fn command<'v>(
    c: &'v serde_json::Value,
) -> (&'v str, &'v serde_json::Map<String, serde_json::Value>) {
    let o = c.as_object().expect("command is an object");
    assert_eq!(o.len(), 1, "command has one key: {c}");
    let (k, v) = o.iter().next().expect("one key");
    (
        k.as_str(),
        v.as_object().expect("command body is an object"),
    )
}

fn expect_fields(
    body: &serde_json::Map<String, serde_json::Value>,
    want: &[(&str, serde_json::Value)],
    what: &str,
) {
    assert_eq!(body.len(), want.len(), "{what}: fields {body:?}");
    for (k, w) in want {
        let g = body
            .get(*k)
            .unwrap_or_else(|| panic!("{what}: missing {k}"));
        assert!(json_value_matches(g, w), "{what}: {k}: got {g}, want {w}");
    }
}

fn check_encoding<S: Storage>(req: &Request<S>, m: &Model) {
    use serde_json::Value as J;
    let batch = RequestBatch(req);
    let len = encoded_len(&batch);
    let mut buf = vec![0u8; len + 4];
    let n = write_frame_to_slice(&batch, &mut buf, usize::MAX).expect("exact-size buffer");
    assert_eq!(n, len + 4, "frame length");
    assert_eq!(buf[..4], (len as u32).to_be_bytes(), "length prefix");
    // One byte short: refused, not truncated.
    let mut short = vec![0u8; len + 3];
    assert_eq!(
        write_frame_to_slice(&batch, &mut short, usize::MAX),
        Err(FrameError::Sink(BufferFull))
    );
    if len > 0 {
        let mut big = vec![0u8; len + 4];
        assert_eq!(
            write_frame_to_slice(&batch, &mut big, len - 1),
            Err(FrameError::TooLarge(len))
        );
    }
    // The streaming encoder writes the same bytes.
    let mut streamed = Vec::with_capacity(len + 4);
    let r = write_frame(
        &batch,
        &mut FnSink(|b: &[u8]| streamed.extend_from_slice(b)),
        usize::MAX,
    );
    assert_eq!(r, Ok(len + 4));
    assert_eq!(streamed, buf, "write_frame and write_frame_to_slice differ");

    let body = &buf[4..];
    let raw_non_ascii = m
        .spans
        .iter()
        .flat_map(|s| s.tags.iter())
        .chain(m.req_tags.iter())
        .any(|(_, v)| matches!(v, MVal::Json(j) if !j.is_ascii()));
    if !raw_non_ascii {
        assert!(
            body.is_ascii(),
            "encoder output must be ASCII: {}",
            String::from_utf8_lossy(body)
        );
    }
    let doc: J = serde_json::from_slice(body).unwrap_or_else(|e| {
        panic!(
            "RequestBatch is not JSON ({e}): {}",
            String::from_utf8_lossy(body)
        )
    });
    let top = doc.as_object().expect("object");
    assert_eq!(top.len(), 1);
    let cmds = doc["BatchCommand"]["commands"]
        .as_array()
        .expect("commands array");
    assert_eq!(doc["BatchCommand"].as_object().map(|o| o.len()), Some(1));

    let rid = req.ids().request_id().as_str().to_owned();
    assert_eq!(rid, m.ids.request_id().as_str());
    let t0 = ts(m.start);
    let mut it = cmds.iter();
    let mut next = |what: &str| it.next().unwrap_or_else(|| panic!("missing {what}"));

    let (name, b) = command(next("StartRequest"));
    assert_eq!(name, "StartRequest");
    expect_fields(
        b,
        &[
            ("timestamp", J::from(t0.clone())),
            ("request_id", J::from(rid.clone())),
        ],
        name,
    );
    for (k, v) in &m.req_tags {
        let (name, b) = command(next("TagRequest"));
        assert_eq!(name, "TagRequest");
        expect_fields(
            b,
            &[
                ("timestamp", J::from(t0.clone())),
                ("request_id", J::from(rid.clone())),
                ("tag", J::from(k.clone())),
                ("value", v.expected_json()),
            ],
            name,
        );
    }
    for &i in &m.done {
        let s = &m.spans[usize::from(i)];
        let sid = m.ids.span_id(i).as_str().to_owned();
        let start = ts(s.start);
        let parent = s
            .parent
            .map_or(J::Null, |p| J::from(m.ids.span_id(p).as_str()));
        let (name, b) = command(next("StartSpan"));
        assert_eq!(name, "StartSpan");
        expect_fields(
            b,
            &[
                ("timestamp", J::from(start.clone())),
                ("request_id", J::from(rid.clone())),
                ("span_id", J::from(sid.clone())),
                ("parent_id", parent),
                ("operation", J::from(s.op.clone())),
            ],
            name,
        );
        for (k, v) in &s.tags {
            let (name, b) = command(next("TagSpan"));
            assert_eq!(name, "TagSpan");
            expect_fields(
                b,
                &[
                    ("timestamp", J::from(start.clone())),
                    ("request_id", J::from(rid.clone())),
                    ("span_id", J::from(sid.clone())),
                    ("tag", J::from(k.clone())),
                    ("value", v.expected_json()),
                ],
                name,
            );
        }
        let (name, b) = command(next("StopSpan"));
        assert_eq!(name, "StopSpan");
        expect_fields(
            b,
            &[
                ("timestamp", J::from(ts(s.end))),
                ("request_id", J::from(rid.clone())),
                ("span_id", J::from(sid)),
            ],
            name,
        );
    }
    let (name, b) = command(next("FinishRequest"));
    assert_eq!(name, "FinishRequest");
    expect_fields(
        b,
        &[
            ("timestamp", J::from(ts(m.end))),
            ("request_id", J::from(rid)),
        ],
        name,
    );
    assert!(it.next().is_none(), "extra commands");
}

fn run<const SP: usize, const TG: usize, const AR: usize, const DP: usize>(input: &Input<'_>) {
    let mut req: Box<Request<Fixed<SP, TG, AR, DP>>> = Box::new(Request::new());
    let mut m = Model::new(Caps {
        spans: SP,
        tags: TG,
        arena: AR,
        depth: DP,
    });
    let mut now = 1_700_000_000_000_000u64;
    let mut clock = |t: u64| -> u64 {
        if input.monotonic {
            now = now.saturating_add(t & 0xffff);
        } else {
            now = t;
        }
        now
    };
    let mut encodes = 0;
    check_light(&*req, &m, 0);
    for (step, op) in input.ops.iter().enumerate() {
        let step = step + 1;
        match op {
            Op::Begin {
                limit,
                unlimited,
                t,
                seed,
            } => {
                check_full(&*req, &m, input.monotonic);
                if encodes < 4 {
                    encodes += 1;
                    check_encoding(&*req, &m);
                }
                let limit = if *unlimited {
                    u32::MAX
                } else {
                    u32::from(*limit)
                };
                let ids = RequestIds::from_parts(
                    *seed,
                    [u64::from_le_bytes(seed[..8].try_into().unwrap()), 7],
                );
                let now = clock(*t);
                req.begin(ids, Timestamp(now), limit);
                m.begin(ids, now, limit);
            }
            Op::Start { name, flags: f, t } => {
                let now = clock(*t);
                let got = req.start_span(name.text(), Timestamp(now), flags(*f));
                let want = m.start(name.as_str(), name.arena_bytes(), flags(*f), now);
                assert_eq!(got, want, "step {step}: start_span({:?})", name.as_str());
            }
            Op::StartParts { parts, flags: f, t } => {
                let now = clock(*t);
                let strs: Vec<&str> = parts.iter().map(|p| p.as_str()).collect();
                let got = req.start_span_parts(&strs, Timestamp(now), flags(*f));
                let joined = strs.concat();
                let want = m.start(&joined, joined.len(), flags(*f), now);
                assert_eq!(got, want, "step {step}: start_span_parts({strs:?})");
            }
            Op::Stop { t } => {
                let now = clock(*t);
                let got = req.stop_span(Timestamp(now));
                let want = m.stop(now);
                assert_eq!(got, want, "step {step}: stop_span");
            }
            Op::StopAt { idx, t } => {
                let now = clock(*t);
                let i = m.resolve_idx(*idx);
                if i >= u16::MAX - 1 && known("marker-idx") {
                    continue;
                }
                if known("overflow-order") && m.stack.iter().any(|e| matches!(e, Entry::Overflow)) {
                    continue;
                }
                let got = req.stop_span_at(SpanIdx(i), Timestamp(now));
                let want = m.stop_at(i, now);
                assert_eq!(got, want, "step {step}: stop_span_at({i})");
            }
            Op::TagSpan { key, val } => {
                let v = val.value();
                let got = req.tag_span(key.text(), v);
                let want = m.tag_span(key.as_str(), key.arena_bytes(), &v);
                assert_eq!(
                    got,
                    want,
                    "step {step}: tag_span({:?}, {v:?})",
                    key.as_str()
                );
            }
            Op::TagSpanAt { idx, key, val } => {
                let v = val.value();
                let i = m.resolve_idx(*idx);
                let got = req.tag_span_at(SpanIdx(i), key.text(), v);
                let want = m.tag_span_at(i, key.as_str(), key.arena_bytes(), &v);
                assert_eq!(
                    got,
                    want,
                    "step {step}: tag_span_at({i}, {:?}, {v:?})",
                    key.as_str()
                );
            }
            Op::TagRequest { key, val } => {
                let v = val.value();
                let got = req.tag_request(key.text(), v);
                let want = m.tag_request(key.as_str(), key.arena_bytes(), &v);
                assert_eq!(
                    got,
                    want,
                    "step {step}: tag_request({:?}, {v:?})",
                    key.as_str()
                );
            }
            Op::Finish { t } => {
                let now = clock(*t);
                req.finish(Timestamp(now));
                m.finish(now);
            }
            Op::MarkReal => {
                req.mark_real();
                m.real = true;
            }
        }
        check_light(&*req, &m, step);
    }
    check_full(&*req, &m, input.monotonic);
    check_encoding(&*req, &m);
}

fuzz_target!(|input: Input<'_>| {
    if input.small {
        run::<8, 16, 256, 4>(&input);
    } else {
        run::<64, 128, 4096, 32>(&input);
    }
});
