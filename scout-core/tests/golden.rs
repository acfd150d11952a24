//! Golden vectors: the Python agent's captured frames (tests/vectors/python) rebuilt through
//! `scout_core::Request` and the encoder, compared byte for byte where every input is known and
//! field by field after normalising ids otherwise.

use scout_core::command::{
    ApplicationEvent, Encode, Register, RequestBatch, encoded_len, write_frame,
};
use scout_core::json::FnSink;
use scout_core::storage::{Buffer, Storage};
use scout_core::{RawJson, Request, RequestIds, SpanFlags, Text, Timestamp, Value};
use serde_json::Value as J;
use std::collections::HashMap;

// ---- a std storage, to exercise the pluggable `Storage` trait ----

struct VecBuf<T>(Vec<T>);

impl<T> Default for VecBuf<T> {
    fn default() -> Self {
        Self(Vec::new())
    }
}

impl<T> Buffer<T> for VecBuf<T> {
    fn as_slice(&self) -> &[T] {
        &self.0
    }
    fn as_mut_slice(&mut self) -> &mut [T] {
        &mut self.0
    }
    fn try_push(&mut self, value: T) -> Result<(), T> {
        self.0.push(value);
        Ok(())
    }
    fn pop(&mut self) -> Option<T> {
        self.0.pop()
    }
    fn try_extend(&mut self, values: &[T]) -> Result<(), scout_core::storage::CapacityError>
    where
        T: Copy,
    {
        self.0.extend_from_slice(values);
        Ok(())
    }
    fn truncate(&mut self, len: usize) {
        self.0.truncate(len)
    }
    fn clear(&mut self) {
        self.0.clear()
    }
}

struct Heap;
impl Storage for Heap {
    type Spans = VecBuf<scout_core::request::SpanRecord>;
    type Tags = VecBuf<scout_core::request::TagRecord>;
    type Arena = VecBuf<u8>;
    type Stack = VecBuf<u16>;
}

// ---- Python's json.dumps (default separators, ensure_ascii) ----

fn py_dumps(v: &J) -> String {
    let mut out = String::new();
    py_write(v, &mut out);
    out
}

fn py_write(v: &J, out: &mut String) {
    match v {
        J::Null => out.push_str("null"),
        J::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        J::Number(n) => {
            if let Some(i) = n.as_i64() {
                out.push_str(&i.to_string())
            } else if let Some(u) = n.as_u64() {
                out.push_str(&u.to_string())
            } else {
                out.push_str(&format!("{:?}", n.as_f64().unwrap()))
            }
        }
        J::String(s) => py_str(s, out),
        J::Array(a) => {
            out.push('[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                py_write(x, out);
            }
            out.push(']');
        }
        J::Object(m) => {
            out.push('{');
            for (i, (k, x)) in m.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                py_str(k, out);
                out.push_str(": ");
                py_write(x, out);
            }
            out.push('}');
        }
    }
}

fn py_str(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            ' '..='~' => out.push(c),
            _ => {
                let mut units = [0u16; 2];
                for u in c.encode_utf16(&mut units) {
                    out.push_str(&format!("\\u{:04x}", u));
                }
            }
        }
    }
    out.push('"');
}

// ---- helpers ----

fn load(name: &str) -> J {
    let path = format!("{}/tests/vectors/python/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn encode<E: Encode>(cmd: &E) -> (String, usize) {
    let mut bytes = Vec::new();
    let n = write_frame(
        cmd,
        &mut FnSink(|b: &[u8]| bytes.extend_from_slice(b)),
        usize::MAX,
    )
    .unwrap();
    assert_eq!(n, bytes.len());
    let len = u32::from_be_bytes(bytes[..4].try_into().unwrap()) as usize;
    assert_eq!(
        len,
        bytes.len() - 4,
        "length prefix is the body's byte length"
    );
    assert_eq!(len, encoded_len(cmd));
    (String::from_utf8(bytes[4..].to_vec()).unwrap(), len)
}

fn ts(v: &J) -> Timestamp {
    Timestamp::parse_rfc3339(v.as_str().unwrap()).unwrap()
}

fn uuid_bytes(id: &str) -> [u8; 16] {
    let hex: String = id
        .split_once('-')
        .unwrap()
        .1
        .chars()
        .filter(|c| *c != '-')
        .collect();
    let mut b = [0u8; 16];
    for (i, byte) in b.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap();
    }
    b
}

/// Replaces every span id by `span-<n>` (n by first appearance), keeping the request id.
fn normalize_span_ids(text: &str) -> String {
    let mut map: HashMap<String, String> = HashMap::new();
    let mut out = String::new();
    let mut rest = text;
    while let Some(i) = rest.find("\"span-") {
        out.push_str(&rest[..i + 1]);
        let id = &rest[i + 1..i + 1 + 41];
        let n = map.len();
        out.push_str(
            map.entry(id.to_string())
                .or_insert_with(|| format!("span-{n}")),
        );
        rest = &rest[i + 1 + 41..];
    }
    out.push_str(rest);
    out
}

fn cmd_body<'a>(c: &'a J, name: &str) -> Option<&'a J> {
    c.as_object().unwrap().get(name)
}

fn to_value<'a>(v: &'a J, raw: &'a HashMap<*const J, String>) -> Value<'a> {
    match v {
        J::Null => Value::Null,
        J::Bool(b) => Value::Bool(*b),
        J::Number(n) => n
            .as_i64()
            .map(Value::Int)
            .unwrap_or_else(|| Value::Float(n.as_f64().unwrap())),
        J::String(s) => Value::Str(s),
        J::Array(_) | J::Object(_) => Value::Json(RawJson::new(&raw[&(v as *const J)]).unwrap()),
    }
}

struct SpanIn<'a> {
    op: &'a str,
    parent: Option<&'a str>,
    start: Timestamp,
    end: Timestamp,
    tags: Vec<(&'a str, &'a J)>,
    order: usize,
}

/// Replays one captured BatchCommand through a Request and checks the re-encoded batch.
fn replay_batch(message: &J, frame_length: usize) {
    let cmds = message["BatchCommand"]["commands"].as_array().unwrap();
    // Raw JSON renderings for object/array values.
    let mut raw: HashMap<*const J, String> = HashMap::new();
    let mut rid = "";
    let mut start = Timestamp::ZERO;
    let mut finish = Timestamp::ZERO;
    let mut req_tags: Vec<(&str, &J)> = Vec::new();
    let mut spans: HashMap<&str, SpanIn<'_>> = HashMap::new();
    for (i, c) in cmds.iter().enumerate() {
        if let Some(b) = cmd_body(c, "StartRequest") {
            rid = b["request_id"].as_str().unwrap();
            start = ts(&b["timestamp"]);
        } else if let Some(b) = cmd_body(c, "TagRequest") {
            req_tags.push((b["tag"].as_str().unwrap(), &b["value"]));
        } else if let Some(b) = cmd_body(c, "StartSpan") {
            spans.insert(
                b["span_id"].as_str().unwrap(),
                SpanIn {
                    op: b["operation"].as_str().unwrap(),
                    parent: b["parent_id"].as_str(),
                    start: ts(&b["timestamp"]),
                    end: Timestamp::ZERO,
                    tags: Vec::new(),
                    order: i,
                },
            );
        } else if let Some(b) = cmd_body(c, "TagSpan") {
            let s = spans.get_mut(b["span_id"].as_str().unwrap()).unwrap();
            s.tags.push((b["tag"].as_str().unwrap(), &b["value"]));
        } else if let Some(b) = cmd_body(c, "StopSpan") {
            spans.get_mut(b["span_id"].as_str().unwrap()).unwrap().end = ts(&b["timestamp"]);
        } else if let Some(b) = cmd_body(c, "FinishRequest") {
            finish = ts(&b["timestamp"]);
        }
    }
    for v in req_tags
        .iter()
        .map(|t| t.1)
        .chain(spans.values().flat_map(|s| s.tags.iter().map(|t| t.1)))
    {
        if v.is_array() || v.is_object() {
            raw.insert(v as *const J, py_dumps(v));
        }
    }
    // Children of each span, by start time then capture order.
    let mut children: HashMap<Option<&str>, Vec<&str>> = HashMap::new();
    for (id, s) in &spans {
        children.entry(s.parent).or_default().push(id);
    }
    for list in children.values_mut() {
        list.sort_by_key(|id| (spans[id].start, spans[id].order));
    }

    let mut req: Request<Heap> = Request::new();
    req.begin(
        RequestIds::from_parts(uuid_bytes(rid), [11, 12]),
        start,
        1500,
    );
    for (k, v) in &req_tags {
        req.tag_request(Text::Borrowed(k), to_value(v, &raw))
            .unwrap();
    }
    fn walk<'a>(
        req: &mut Request<Heap>,
        id: &str,
        spans: &HashMap<&'a str, SpanIn<'a>>,
        children: &HashMap<Option<&'a str>, Vec<&'a str>>,
        raw: &HashMap<*const J, String>,
    ) {
        let s = &spans[id];
        req.start_span(Text::Borrowed(s.op), s.start, SpanFlags::NONE);
        for (k, v) in &s.tags {
            req.tag_span(Text::Borrowed(k), to_value(v, raw)).unwrap();
        }
        for c in children.get(&Some(id)).map(|v| v.as_slice()).unwrap_or(&[]) {
            walk(req, c, spans, children, raw);
        }
        req.stop_span(s.end).unwrap();
    }
    let roots = children[&None].clone();
    assert_eq!(roots.len(), 1, "one root span");
    walk(&mut req, roots[0], &spans, &children, &raw);
    assert!(req.is_finished());
    assert!(req.is_real());
    assert_eq!(req.drops().total(), 0);

    let (ours, len) = encode(&RequestBatch(&req));
    // The request finishes when its last span stops; Python stamps FinishRequest a little
    // later. Put the captured finish time in our text to compare the rest byte for byte.
    let our_finish = String::from_utf8(req.end_time().to_rfc3339().to_vec()).unwrap();
    let cap_finish = String::from_utf8(finish.to_rfc3339().to_vec()).unwrap();
    let tail = format!("\"FinishRequest\": {{\"timestamp\": \"{our_finish}\"");
    assert!(ours.contains(&tail));
    let ours = ours.replace(
        &tail,
        &format!("\"FinishRequest\": {{\"timestamp\": \"{cap_finish}\""),
    );

    let expected = py_dumps(message);
    assert_eq!(len, expected.len());
    check_frame_length(&expected, frame_length);
    assert_eq!(normalize_span_ids(&ours), normalize_span_ids(&expected));
    // And field by field, through a JSON parser.
    let a: J = serde_json::from_str(&normalize_span_ids(&ours)).unwrap();
    let b: J = serde_json::from_str(&normalize_span_ids(&expected)).unwrap();
    assert_eq!(a, b);
}

/// The captures replace machine paths by placeholders (`$HARNESS_DIR`, ...), which changes
/// lengths; elsewhere Python's frame length must equal ours.
fn check_frame_length(expected: &str, frame_length: usize) {
    if !expected.contains('$') {
        assert_eq!(
            expected.len(),
            frame_length,
            "same bytes as the Python agent"
        );
    }
}

fn batches(capture: &J) -> Vec<(&J, usize)> {
    capture["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["message"].get("BatchCommand").is_some())
        .map(|m| (&m["message"], m["frame_length"].as_u64().unwrap() as usize))
        .collect()
}

#[test]
fn capture_00_register_and_metadata() {
    let cap = load("00-startup.json");
    let msgs = cap["messages"].as_array().unwrap();
    let reg = &msgs[0]["message"]["Register"];
    let (ours, len) = encode(&Register {
        app: reg["app"].as_str().unwrap(),
        key: reg["key"].as_str().unwrap(),
        host: reg["host"].as_str(),
        language: reg["language"].as_str().unwrap(),
        api_version: reg["api_version"].as_str().unwrap(),
    });
    assert_eq!(ours, py_dumps(&msgs[0]["message"]));
    assert_eq!(len as u64, msgs[0]["frame_length"].as_u64().unwrap());

    let ev = &msgs[1]["message"]["ApplicationEvent"];
    let value = py_dumps(&ev["event_value"]);
    let (ours, len) = encode(&ApplicationEvent {
        timestamp: ts(&ev["timestamp"]),
        event_type: ev["event_type"].as_str().unwrap(),
        event_value: Value::Json(RawJson::new(&value).unwrap()),
        source: ev["source"].as_str().unwrap(),
    });
    assert_eq!(ours, py_dumps(&msgs[1]["message"]));
    check_frame_length(&ours, msgs[1]["frame_length"].as_u64().unwrap() as usize);
    assert_eq!(len, ours.len());
}

#[test]
fn capture_01_web_transaction_nested() {
    let cap = load("01-web-transaction-nested.json");
    let b = batches(&cap);
    assert_eq!(b.len(), 1);
    replay_batch(b[0].0, b[0].1);
    // The sampler events that follow, byte for byte.
    for m in cap["messages"].as_array().unwrap() {
        let Some(ev) = m["message"].get("ApplicationEvent") else {
            continue;
        };
        let (ours, len) = encode(&ApplicationEvent {
            timestamp: ts(&ev["timestamp"]),
            event_type: ev["event_type"].as_str().unwrap(),
            event_value: Value::Float(ev["event_value"].as_f64().unwrap()),
            source: ev["source"].as_str().unwrap(),
        });
        assert_eq!(ours, py_dumps(&m["message"]));
        assert_eq!(len as u64, m["frame_length"].as_u64().unwrap());
    }
}

#[test]
fn capture_02_background_transactions() {
    let cap = load("02-background-transaction.json");
    let b = batches(&cap);
    assert_eq!(b.len(), 2);
    for (m, len) in b {
        replay_batch(m, len);
    }
}

#[test]
fn capture_03_ignored_via_api() {
    let cap = load("03-ignored-via-api-no-ignore-config.json");
    let b = batches(&cap);
    assert_eq!(b.len(), 1);
    replay_batch(b[0].0, b[0].1);
    assert!(py_dumps(b[0].0).contains("\"tag\": \"ignore_transaction\", \"value\": true"));
}

#[test]
fn capture_10_span_limit() {
    let cap = load("10-span-limit-summary.json");
    let summary = &cap["messages"][0]["message"]["BatchCommand"];
    let first = &summary["first_5_commands"];
    let rid = first[0]["StartRequest"]["request_id"].as_str().unwrap();
    let t0 = ts(&first[0]["StartRequest"]["timestamp"]);
    let mut req: Request<Heap> = Request::new();
    req.begin(RequestIds::from_parts(uuid_bytes(rid), [1, 2]), t0, 1500);
    req.tag_request("mem_delta".into(), Value::Float(1.46484375))
        .unwrap();
    let alloc_tags = |req: &mut Request<Heap>| {
        for k in ["allocations", "start_allocations", "stop_allocations"] {
            req.tag_span(k.into(), Value::Int(17)).unwrap();
        }
    };
    req.start_span("Controller/span-limit".into(), t0, SpanFlags::NO_BACKTRACE);
    alloc_tags(&mut req);
    let mut t = t0.0;
    for _ in 0..1600 {
        t += 20;
        req.start_span("Custom/Item".into(), Timestamp(t), SpanFlags::NONE);
        alloc_tags(&mut req);
        req.stop_span(Timestamp(t + 10)).unwrap();
    }
    let out = req.stop_span(Timestamp(t + 100)).unwrap();
    assert!(out.finished);
    assert_eq!(
        req.drops().span_limit,
        100,
        "every span past the limit is counted"
    );

    let (ours, _) = encode(&RequestBatch(&req));
    let parsed: J = serde_json::from_str(&ours).unwrap();
    let mut counts: HashMap<String, u64> = HashMap::new();
    for c in parsed["BatchCommand"]["commands"].as_array().unwrap() {
        *counts
            .entry(c.as_object().unwrap().keys().next().unwrap().clone())
            .or_default() += 1;
    }
    for (k, v) in summary["commands_count_by_type"].as_object().unwrap() {
        assert_eq!(counts.get(k).copied(), v.as_u64(), "{k}");
    }
    // Children first, the root last (its StopSpan just before FinishRequest).
    let cmds = parsed["BatchCommand"]["commands"].as_array().unwrap();
    assert_eq!(cmds[2]["StartSpan"]["operation"], "Custom/Item");
    let root_start = cmds.iter().rev().find_map(|c| c.get("StartSpan")).unwrap();
    assert_eq!(root_start["operation"], "Controller/span-limit");
    assert_eq!(root_start["parent_id"], J::Null);
    assert!(cmds[cmds.len() - 2].get("StopSpan").is_some());
}
