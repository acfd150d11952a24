//! Arbitrary bytes through `reply::decode_reply` and `RawJson::new`, with serde_json as the
//! oracle for what JSON is.
//!
//! Invariants: no panic; if `RawJson` accepts, serde_json accepts; if serde_json accepts and
//! the text nests at most 64 deep, `RawJson` accepts (it refuses NaN/Infinity, which serde_json
//! refuses too); if `decode_reply` returns `Ok`, the input is UTF-8 JSON of the form
//! `{"<Command>": {...}}` and the fields it returns are the last string-valued `result` /
//! `message` / `version` members; conversely every such JSON text nesting at most 64 deep
//! decodes; `Shape` is only returned for valid JSON; error offsets lie within the input.
//!
//! Deliberate differences from serde_json (see docs/fuzzing.md): serde_json nests up to 128
//! and scout-core up to 64; serde_json's syntax check (`IgnoredAny`) is used, which like
//! scout-core accepts lone surrogate escapes and numbers beyond f64's range.
#![no_main]

use libfuzzer_sys::fuzz_target;
use scout_core::RawJson;
use scout_core::reply::{MAX_DEPTH, ReplyError, decode_reply};
use scout_fuzz::{Json, bracket_depth, known, serde_accepts};

fuzz_target!(|data: &[u8]| {
    let decoded = decode_reply(data);
    let text = std::str::from_utf8(data);
    if let Err(ReplyError::Syntax(at)) = decoded {
        assert!(
            at <= data.len(),
            "error offset {at} past the end ({})",
            data.len()
        );
    }
    let Ok(s) = text else {
        assert!(
            matches!(decoded, Err(ReplyError::Syntax(_))),
            "non-UTF-8 decoded: {decoded:?}"
        );
        return;
    };

    let serde_ok = serde_accepts(s);
    let raw_ok = RawJson::new(s);
    if let Ok(raw) = raw_ok {
        assert_eq!(raw.as_str(), s);
        assert!(serde_ok, "RawJson accepted what serde_json refuses: {s:?}");
    }
    if let Err(e) = raw_ok {
        assert!(
            e.at <= s.len(),
            "RawJson error offset {} past the end",
            e.at
        );
        assert!(
            !serde_ok || bracket_depth(s) > MAX_DEPTH,
            "RawJson refused valid JSON (depth {}): {s:?} ({e})",
            bracket_depth(s)
        );
    }

    match decoded {
        Ok(reply) => {
            assert!(serde_ok, "decode_reply accepted invalid JSON: {s:?}");
            // Check what it says against an independent parse (when serde_json can build
            // values: not for lone surrogates or numbers out of range).
            let Some(doc) = Json::parse(s) else { return };
            let top = doc.as_obj().expect("decoded reply is an object");
            assert_eq!(top.len(), 1, "decoded reply has one member: {s:?}");
            let (cmd, body) = &top[0];
            let body = body.as_obj().expect("decoded reply's member is an object");
            if s.contains('\\') {
                return; // fields are returned raw (escapes not decoded): compare plain ones only
            }
            assert_eq!(reply.command, cmd);
            for (field, got) in [
                ("result", reply.result),
                ("message", reply.message),
                ("version", reply.version),
            ] {
                let want = body.iter().rev().find_map(|(k, v)| match v {
                    Json::Str(x) if k == field => Some(x.as_str()),
                    _ => None,
                });
                assert_eq!(got, want, "field {field} of {s:?}");
            }
            assert_eq!(
                reply.is_success(),
                reply.command != "Failure" && reply.result == Some("Success")
            );
        }
        Err(ReplyError::Shape) => {
            if !known("shape-on-invalid") {
                assert!(serde_ok, "Shape returned for invalid JSON: {s:?}");
            }
            if serde_ok && let Some(doc) = Json::parse(s) {
                let well_shaped = doc
                    .as_obj()
                    .is_some_and(|m| m.len() == 1 && m[0].1.as_obj().is_some());
                assert!(!well_shaped, "well-shaped reply refused as Shape: {s:?}");
            }
        }
        Err(ReplyError::Syntax(_)) => {
            // Valid JSON may be refused as `Syntax` when it is not an object at all (`[1]`,
            // `{}`), but never a well-shaped reply nesting at most 64 deep.
            if serde_ok
                && bracket_depth(s) <= MAX_DEPTH
                && let Some(doc) = Json::parse(s)
            {
                let well_shaped = doc
                    .as_obj()
                    .is_some_and(|m| m.len() == 1 && m[0].1.as_obj().is_some());
                assert!(
                    !well_shaped,
                    "well-shaped reply refused as a syntax error: {s:?}"
                );
            }
        }
        Err(e) => panic!("new ReplyError variant {e:?}: extend the target"),
    }
});
