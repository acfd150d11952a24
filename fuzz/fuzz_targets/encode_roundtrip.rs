//! Arbitrary strings and values through `json::write_str`, `Value::write_json` and every
//! command struct.
//!
//! Invariants: strings are escaped byte for byte as Python's `json.dumps` (ensure_ascii)
//! escapes them; the output is pure ASCII (unless a `RawJson` value carries UTF-8, which is
//! passed through); it parses with serde_json; every string parses back to exactly the input;
//! `encoded_len` and the frame's length prefix equal the bytes written; a slice one byte too
//! short is refused, never truncated.
#![no_main]

use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;
use scout_core::command::{
    ApplicationEvent, Batch, CoreAgentShutdown, CoreAgentVersion, Encode, FinishRequest,
    FrameError, Register, StartRequest, StartSpan, StopSpan, TagRequest, TagSpan, encoded_len,
    write_frame, write_frame_to_slice,
};
use scout_core::json::{self, BufferFull, FnSink, SliceSink};
use scout_core::{RawJson, Timestamp, Value};
use scout_fuzz::{MVal, json_value_matches, known, py_dumps_str, py_float_repr};
use serde_json::{Value as J, json};

#[derive(Arbitrary, Debug)]
enum Val<'a> {
    Str(&'a str),
    Int(i64),
    Float(f64),
    Nan,
    Inf(bool),
    Bool(bool),
    Null,
    Json(&'a str),
}

impl<'a> Val<'a> {
    fn value(&self) -> Value<'a> {
        match *self {
            Val::Str(s) => Value::Str(s),
            Val::Int(i) => Value::Int(i),
            Val::Float(f) => Value::Float(f),
            Val::Nan => Value::Float(f64::NAN),
            Val::Inf(neg) => Value::Float(if neg {
                f64::NEG_INFINITY
            } else {
                f64::INFINITY
            }),
            Val::Bool(b) => Value::Bool(b),
            Val::Null => Value::Null,
            // Only JSON serde_json can turn into a `Value` (no lone surrogates, no 1e400), so
            // the whole command stays comparable; see reply_decode for the syntax differential.
            Val::Json(s) => match RawJson::new(s) {
                Ok(j) if serde_json::from_str::<J>(s).is_ok() => Value::Json(j),
                _ => Value::Str(s),
            },
        }
    }
}

#[derive(Arbitrary, Debug)]
struct Input<'a> {
    s: [&'a str; 8],
    host: Option<&'a str>,
    parent: Option<&'a str>,
    t: [u64; 2],
    values: Vec<Val<'a>>,
}

fn utf8_json(v: &Value<'_>) -> bool {
    matches!(v, Value::Json(j) if !j.as_str().is_ascii())
}

/// Encodes `cmd` every way there is, checks the framings agree, and returns the JSON text.
fn encode_all<E: Encode>(cmd: &E, ascii: bool) -> J {
    let mut v = Vec::new();
    cmd.encode(&mut FnSink(|b: &[u8]| v.extend_from_slice(b)))
        .unwrap();
    assert_eq!(encoded_len(cmd), v.len(), "encoded_len");
    if ascii {
        assert!(v.is_ascii(), "not ASCII: {}", String::from_utf8_lossy(&v));
    }
    // Streaming frame.
    let mut f = Vec::new();
    assert_eq!(
        write_frame(
            cmd,
            &mut FnSink(|b: &[u8]| f.extend_from_slice(b)),
            usize::MAX
        ),
        Ok(v.len() + 4)
    );
    assert_eq!(f[..4], (v.len() as u32).to_be_bytes());
    assert_eq!(f[4..], v[..]);
    // Single-pass slice frame: exact size works, one byte less is refused.
    let mut buf = vec![0u8; v.len() + 4];
    assert_eq!(
        write_frame_to_slice(cmd, &mut buf, usize::MAX),
        Ok(v.len() + 4)
    );
    assert_eq!(buf, f);
    assert_eq!(
        write_frame_to_slice(cmd, &mut buf[..v.len() + 3], usize::MAX),
        Err(FrameError::Sink(BufferFull))
    );
    if !v.is_empty() {
        assert_eq!(
            write_frame_to_slice(cmd, &mut buf, v.len() - 1),
            Err(FrameError::TooLarge(v.len()))
        );
        // The streaming framer refuses too, writing nothing.
        let mut none = Vec::new();
        assert_eq!(
            write_frame(
                cmd,
                &mut FnSink(|b: &[u8]| none.extend_from_slice(b)),
                v.len() - 1
            ),
            Err(FrameError::TooLarge(v.len()))
        );
        assert!(none.is_empty());
    }
    serde_json::from_slice(&v)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&v)))
}

fn check_same(got: &J, want: &J) {
    assert!(json_value_matches(got, want), "got {got}\nwant {want}");
}

fn ts(t: u64) -> String {
    String::from_utf8(Timestamp(t).to_rfc3339().to_vec()).unwrap()
}

fuzz_target!(|input: Input<'_>| {
    let [a, b, c, d, e, f, g, h] = input.s;

    // write_str: Python's bytes exactly, ASCII, and back to the same string.
    for s in input.s {
        let mut out = Vec::new();
        json::write_str(&mut FnSink(|x: &[u8]| out.extend_from_slice(x)), s).unwrap();
        let text = std::str::from_utf8(&out).expect("UTF-8");
        assert_eq!(text, py_dumps_str(s), "ensure_ascii escaping of {s:?}");
        assert!(out.is_ascii());
        assert_eq!(
            serde_json::from_str::<String>(text).expect("JSON string"),
            s
        );
        // write_key is the string plus Python's separator.
        let mut k = Vec::new();
        json::write_key(&mut FnSink(|x: &[u8]| k.extend_from_slice(x)), s).unwrap();
        assert_eq!(k, [&out[..], b": "].concat());
        // A slice sink one byte short refuses instead of writing a truncated string.
        let mut buf = vec![0u8; out.len()];
        let mut sink = SliceSink::new(&mut buf[..out.len() - 1]);
        assert_eq!(json::write_str(&mut sink, s), Err(BufferFull));
        let mut sink = SliceSink::new(&mut buf);
        json::write_str(&mut sink, s).unwrap();
        assert_eq!(sink.written(), &out[..]);
    }

    let values: Vec<Value<'_>> = input.values.iter().take(16).map(Val::value).collect();
    for v in &values {
        let ascii = !utf8_json(v);
        let got = encode_all(v, ascii);
        check_same(&got, &MVal::of(v).expected_json());
        // Integers are written exactly; floats as text that reads back to the same bits.
        if let Value::Float(x) = v
            && x.is_finite()
        {
            assert_eq!(
                got.as_f64().map(f64::to_bits),
                Some(x.to_bits()),
                "float {x:?}"
            );
            // Byte for byte what Python sends (finding `float-repr`: scout-core writes Rust's
            // `1e16` / `1e-5` where Python writes `1e+16` / `1e-05`).
            if !known("float-repr") {
                let mut out = Vec::new();
                v.write_json(&mut FnSink(|b: &[u8]| out.extend_from_slice(b)))
                    .unwrap();
                assert_eq!(
                    String::from_utf8(out).unwrap(),
                    py_float_repr(*x),
                    "float {x:?}"
                );
            }
        }
    }

    let t0 = input.t[0];
    let t1 = input.t[1];
    let reg = Register {
        app: a,
        key: b,
        host: input.host,
        language: c,
        api_version: d,
    };
    check_same(
        &encode_all(&reg, true),
        &json!({"Register": {"app": a, "key": b, "host": input.host, "language": c, "api_version": d}}),
    );
    check_same(
        &encode_all(
            &StartRequest {
                timestamp: Timestamp(t0),
                request_id: a,
            },
            true,
        ),
        &json!({"StartRequest": {"timestamp": ts(t0), "request_id": a}}),
    );
    check_same(
        &encode_all(
            &FinishRequest {
                timestamp: Timestamp(t1),
                request_id: e,
            },
            true,
        ),
        &json!({"FinishRequest": {"timestamp": ts(t1), "request_id": e}}),
    );
    check_same(
        &encode_all(
            &StartSpan {
                timestamp: Timestamp(t0),
                request_id: a,
                span_id: b,
                parent_id: input.parent,
                operation: f,
            },
            true,
        ),
        &json!({"StartSpan": {"timestamp": ts(t0), "request_id": a, "span_id": b,
                "parent_id": input.parent, "operation": f}}),
    );
    check_same(
        &encode_all(
            &StopSpan {
                timestamp: Timestamp(t1),
                request_id: g,
                span_id: h,
            },
            true,
        ),
        &json!({"StopSpan": {"timestamp": ts(t1), "request_id": g, "span_id": h}}),
    );
    let v0 = values.first().copied().unwrap_or(Value::Str(h));
    let ascii = !utf8_json(&v0);
    let want_v = MVal::of(&v0).expected_json();
    check_same(
        &encode_all(
            &TagRequest {
                timestamp: Timestamp(t0),
                request_id: a,
                tag: g,
                value: v0,
            },
            ascii,
        ),
        &json!({"TagRequest": {"timestamp": ts(t0), "request_id": a, "tag": g, "value": want_v}}),
    );
    check_same(
        &encode_all(
            &TagSpan {
                timestamp: Timestamp(t1),
                request_id: b,
                span_id: c,
                tag: d,
                value: v0,
            },
            ascii,
        ),
        &json!({"TagSpan": {"timestamp": ts(t1), "request_id": b, "span_id": c, "tag": d,
                "value": want_v}}),
    );
    check_same(
        &encode_all(
            &ApplicationEvent {
                timestamp: Timestamp(t0),
                event_type: e,
                event_value: v0,
                source: f,
            },
            ascii,
        ),
        &json!({"ApplicationEvent": {"timestamp": ts(t0), "event_type": e, "event_value": want_v,
                "source": f}}),
    );
    check_same(
        &encode_all(&CoreAgentVersion, true),
        &json!({"CoreAgentVersion": {}}),
    );
    check_same(
        &encode_all(&CoreAgentShutdown, true),
        &json!({"CoreAgentShutdown": {}}),
    );
    // A batch of values and of mixed commands.
    let ascii = !values.iter().any(utf8_json);
    let want: Vec<J> = values.iter().map(|v| MVal::of(v).expected_json()).collect();
    check_same(
        &encode_all(&Batch(&values), ascii),
        &json!({"BatchCommand": {"commands": want}}),
    );
    let stops: Vec<StopSpan<'_>> = input
        .s
        .iter()
        .map(|s| StopSpan {
            timestamp: Timestamp(t0 ^ t1),
            request_id: s,
            span_id: a,
        })
        .collect();
    let want: Vec<J> = input
        .s
        .iter()
        .map(|s| json!({"StopSpan": {"timestamp": ts(t0 ^ t1), "request_id": s, "span_id": a}}))
        .collect();
    check_same(
        &encode_all(&Batch(&stops), true),
        &json!({"BatchCommand": {"commands": want}}),
    );
});
