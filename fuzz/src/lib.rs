//! Oracles shared by the fuzz targets (see docs/fuzzing.md).
//!
//! Everything here is written independently of scout-core's own code, so that a target
//! compares scout-core with a second opinion rather than with itself.

use std::fmt::Write as _;

use scout_core::Value;
use serde::de::{Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

/// Python's `json.dumps(s)` (default `ensure_ascii=True`), written from the Python source
/// (`Lib/json/encoder.py`, `py_encode_basestring_ascii`): `"` and `\` and the five short
/// escapes, every other byte outside `' '..='~'` as `\u00XX`, non-ASCII as `\uXXXX` (UTF-16,
/// lowercase hex, surrogate pairs above the BMP).
pub fn py_dumps_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
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
                    let _ = write!(out, "\\u{u:04x}");
                }
            }
        }
    }
    out.push('"');
    out
}

/// True if serde_json accepts `s` as one JSON text. Deserialising into `IgnoredAny` checks the
/// syntax only: it neither decodes `\u` escapes (so lone surrogates pass, as RFC 8259's grammar
/// allows) nor converts numbers (so `1e400` passes). serde_json refuses nesting deeper than 128.
pub fn serde_accepts(s: &str) -> bool {
    serde_json::from_str::<IgnoredAny>(s).is_ok()
}

/// Deepest nesting of `[`/`{` outside strings (meaningful for valid JSON).
pub fn bracket_depth(s: &str) -> usize {
    let (mut depth, mut max, mut in_str, mut esc) = (0usize, 0usize, false, false);
    for b in s.bytes() {
        if in_str {
            if esc {
                esc = false;
            } else if b == b'\\' {
                esc = true;
            } else if b == b'"' {
                in_str = false;
            }
            continue;
        }
        match b {
            b'"' => in_str = true,
            b'[' | b'{' => {
                depth += 1;
                max = max.max(depth);
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    max
}

/// A JSON value that keeps object members in order, duplicates included (serde_json's `Value`
/// keeps only one member per key). Parsing fails where serde_json's would: numbers out of f64
/// range, lone surrogate escapes.
#[derive(Debug, Clone, PartialEq)]
pub enum Json {
    Null,
    Bool(bool),
    Num(f64),
    Str(String),
    Arr(Vec<Json>),
    Obj(Vec<(String, Json)>),
}

impl Json {
    pub fn parse(s: &str) -> Option<Json> {
        serde_json::from_str(s).ok()
    }
    pub fn as_obj(&self) -> Option<&[(String, Json)]> {
        match self {
            Json::Obj(m) => Some(m),
            _ => None,
        }
    }
}

impl<'de> Deserialize<'de> for Json {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Json;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("JSON")
            }
            fn visit_unit<E>(self) -> Result<Json, E> {
                Ok(Json::Null)
            }
            fn visit_bool<E>(self, v: bool) -> Result<Json, E> {
                Ok(Json::Bool(v))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Json, E> {
                Ok(Json::Num(v as f64))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Json, E> {
                Ok(Json::Num(v as f64))
            }
            fn visit_f64<E>(self, v: f64) -> Result<Json, E> {
                Ok(Json::Num(v))
            }
            fn visit_str<E>(self, v: &str) -> Result<Json, E> {
                Ok(Json::Str(v.to_owned()))
            }
            fn visit_string<E>(self, v: String) -> Result<Json, E> {
                Ok(Json::Str(v))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> Result<Json, A::Error> {
                let mut v = Vec::new();
                while let Some(x) = a.next_element()? {
                    v.push(x);
                }
                Ok(Json::Arr(v))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<Json, A::Error> {
                let mut v = Vec::new();
                while let Some((k, x)) = a.next_entry::<String, Json>()? {
                    v.push((k, x));
                }
                Ok(Json::Obj(v))
            }
        }
        d.deserialize_any(V)
    }
}

/// A tag value as the model keeps it: what reading it back from a request must give.
#[derive(Debug, Clone)]
pub enum MVal {
    Str(String),
    Int(i64),
    /// Bits, so that NaN compares equal to itself.
    Float(u64),
    Bool(bool),
    Null,
    Json(String),
}

impl MVal {
    pub fn of(v: &Value<'_>) -> MVal {
        match *v {
            Value::Str(s) | Value::Static(s) => MVal::Str(s.to_owned()),
            Value::Int(i) => MVal::Int(i),
            Value::Float(f) => MVal::Float(f.to_bits()),
            Value::Bool(b) => MVal::Bool(b),
            Value::Null => MVal::Null,
            Value::Json(j) => MVal::Json(j.as_str().to_owned()),
        }
    }
    /// Same value (`Static` and `Str` read back alike; floats by bits).
    pub fn same(&self, v: &Value<'_>) -> bool {
        match (self, v) {
            (MVal::Str(a), Value::Str(b) | Value::Static(b)) => a == b,
            (MVal::Int(a), Value::Int(b)) => a == b,
            (MVal::Float(a), Value::Float(b)) => *a == b.to_bits(),
            (MVal::Bool(a), Value::Bool(b)) => a == b,
            (MVal::Null, Value::Null) => true,
            (MVal::Json(a), Value::Json(b)) => a == b.as_str(),
            _ => false,
        }
    }
    /// What the value must parse back to from the encoder's output. NaN and infinities are
    /// written as `null`; a raw JSON value parses to what its own text parses to.
    pub fn expected_json(&self) -> serde_json::Value {
        use serde_json::Value as J;
        match self {
            MVal::Str(s) => J::String(s.clone()),
            MVal::Int(i) => J::from(*i),
            MVal::Float(bits) => {
                let f = f64::from_bits(*bits);
                if f.is_finite() { J::from(f) } else { J::Null }
            }
            MVal::Bool(b) => J::Bool(*b),
            MVal::Null => J::Null,
            MVal::Json(s) => serde_json::from_str(s).expect("model keeps only serde-parsable JSON"),
        }
    }
}

/// Compares a parsed encoder value with the expected one. Floats must be bit-identical after
/// the round trip (the encoder writes the shortest text that reads back exactly).
pub fn json_value_matches(got: &serde_json::Value, want: &serde_json::Value) -> bool {
    use serde_json::Value as J;
    match (got, want) {
        (J::Number(a), J::Number(b)) => match (a.as_i64(), b.as_i64(), a.as_u64(), b.as_u64()) {
            (Some(x), Some(y), _, _) => x == y,
            (_, _, Some(x), Some(y)) => x == y,
            _ => match (a.as_f64(), b.as_f64()) {
                // -0.0 and 0.0 differ in bits; the encoder writes "-0.0".
                (Some(x), Some(y)) => x.to_bits() == y.to_bits() || (x == y && x != 0.0),
                _ => false,
            },
        },
        (J::Array(a), J::Array(b)) => {
            a.len() == b.len() && a.iter().zip(b).all(|(x, y)| json_value_matches(x, y))
        }
        (J::Object(a), J::Object(b)) => {
            a.len() == b.len()
                && a.iter()
                    .all(|(k, v)| b.get(k).is_some_and(|w| json_value_matches(v, w)))
        }
        _ => got == want,
    }
}

/// True if finding `id` is listed in `SCOUT_FUZZ_KNOWN` (comma-separated). A target then steers
/// around that finding's inputs instead of failing on them, so that a run can look for other
/// bugs while a reported one is being fixed. Unset (as in CI), every check is active.
pub fn known(id: &str) -> bool {
    static KNOWN: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    KNOWN
        .get_or_init(|| {
            std::env::var("SCOUT_FUZZ_KNOWN")
                .unwrap_or_default()
                .split(',')
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
                .collect()
        })
        .iter()
        .any(|k| k == id)
}

/// Python's `json.dumps(x)` of a finite float (`float.__repr__`): the shortest digits that
/// read back to `x`, in fixed notation for `1e-4 <= |x| < 1e16` (with `.0` when integral), else
/// as `d.ddde±XX` with a sign and at least two exponent digits (`1e+16`, `1e-05`). Rust's `{:?}`
/// picks the same digits and the same thresholds, so only the exponent is rewritten here.
pub fn py_float_repr(x: f64) -> String {
    let r = format!("{x:?}");
    match r.split_once('e') {
        None => r,
        Some((mant, exp)) => {
            let (sign, digits) = match exp.strip_prefix('-') {
                Some(d) => ('-', d),
                None => ('+', exp),
            };
            format!("{mant}e{sign}{digits:0>2}")
        }
    }
}
