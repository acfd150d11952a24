//! Tag values, tag keys and the context rules for user-supplied request tags.

use crate::json::{self, Sink};

/// A tag value.
///
/// Strings are copied into the request's arena when tagged (see [`crate::request`]); use
/// [`Value::Static`] for `'static` text to skip the copy.
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Value<'a> {
    /// Text, copied into the request's arena.
    Str(&'a str),
    /// `'static` text, stored by reference.
    Static(&'static str),
    /// A signed integer.
    Int(i64),
    /// A float. NaN and infinities are encoded as `null`.
    Float(f64),
    /// A boolean.
    Bool(bool),
    /// JSON `null`.
    Null,
    /// A JSON document checked by [`RawJson::new`] (objects and lists, e.g. the `stack` tag).
    Json(RawJson<'a>),
}

impl<'a> From<&'a str> for Value<'a> {
    fn from(v: &'a str) -> Self {
        Value::Str(v)
    }
}
impl From<i64> for Value<'_> {
    fn from(v: i64) -> Self {
        Value::Int(v)
    }
}
impl From<i32> for Value<'_> {
    fn from(v: i32) -> Self {
        Value::Int(i64::from(v))
    }
}
impl From<u32> for Value<'_> {
    fn from(v: u32) -> Self {
        Value::Int(i64::from(v))
    }
}
impl From<f64> for Value<'_> {
    fn from(v: f64) -> Self {
        Value::Float(v)
    }
}
impl From<bool> for Value<'_> {
    fn from(v: bool) -> Self {
        Value::Bool(v)
    }
}

impl Value<'_> {
    /// Writes the value as JSON.
    pub fn write_json<S: Sink + ?Sized>(&self, out: &mut S) -> Result<(), S::Error> {
        match *self {
            Value::Str(s) => json::write_str(out, s),
            Value::Static(s) => json::write_str(out, s),
            Value::Int(v) => json::write_i64(out, v),
            Value::Float(v) => json::write_f64(out, v),
            Value::Bool(v) => json::write_bool(out, v),
            Value::Null => out.write(b"null"),
            Value::Json(raw) => out.write(raw.as_str().as_bytes()),
        }
    }
}

/// A tag key or other text that is either `'static` (stored by reference) or borrowed (copied).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Text<'a> {
    /// `'static` text, stored by reference: no copy.
    Static(&'static str),
    /// Borrowed text, copied into the request's arena.
    Borrowed(&'a str),
}

impl Text<'_> {
    /// The text.
    pub fn as_str(&self) -> &str {
        match self {
            Text::Static(s) => s,
            Text::Borrowed(s) => s,
        }
    }
}

impl From<&'static str> for Text<'_> {
    fn from(s: &'static str) -> Self {
        Text::Static(s)
    }
}

/// A string known to hold one valid JSON value (checked by [`RawJson::new`]), written verbatim
/// (after re-escaping nothing: the checker requires ASCII-only content outside of strings and
/// accepts any UTF-8 inside strings, which the encoder then passes through unchanged).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct RawJson<'a>(&'a str);

/// The text given to [`RawJson::new`] is not one JSON value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct InvalidJson {
    /// Byte offset of the first problem.
    pub at: usize,
}

impl core::fmt::Display for InvalidJson {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "invalid JSON at byte {}", self.at)
    }
}

impl core::error::Error for InvalidJson {}

impl<'a> RawJson<'a> {
    /// Checks that `s` is exactly one JSON value (whitespace around it allowed), at most 64
    /// levels deep, with no NaN/Infinity tokens.
    pub fn new(s: &'a str) -> Result<Self, InvalidJson> {
        crate::reply::validate_json(s.as_bytes()).map(|()| Self(s))
    }
    /// Wraps text that was already checked by [`RawJson::new`] (stored copies).
    pub(crate) fn checked(s: &'a str) -> Self {
        Self(s)
    }
    /// The JSON text.
    pub fn as_str(&self) -> &'a str {
        self.0
    }
}

/// Longest accepted context key, in bytes.
pub const MAX_CONTEXT_KEY_LEN: usize = 128;

/// Why a user-supplied request tag (context) was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum ContextError {
    /// The key is empty.
    EmptyKey,
    /// The key is longer than [`MAX_CONTEXT_KEY_LEN`].
    KeyTooLong,
    /// The key has a character other than `A-Z a-z 0-9 _ -`.
    InvalidKeyChar,
    /// The value is not a string, integer, float or boolean.
    InvalidValueType,
}

impl core::fmt::Display for ContextError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            Self::EmptyKey => "context key is empty",
            Self::KeyTooLong => "context key is longer than 128 bytes",
            Self::InvalidKeyChar => "context key may only contain A-Z a-z 0-9 _ -",
            Self::InvalidValueType => "context value must be a string, integer, float or boolean",
        })
    }
}

impl core::error::Error for ContextError {}

/// Checks a user-supplied request tag against the context rules (Scout's documented key
/// restrictions): keys non-empty, at most [`MAX_CONTEXT_KEY_LEN`] bytes, only `A-Z a-z 0-9 _ -`;
/// values a string, integer, float or boolean.
pub fn check_context(key: &str, value: &Value<'_>) -> Result<(), ContextError> {
    if key.is_empty() {
        return Err(ContextError::EmptyKey);
    }
    if key.len() > MAX_CONTEXT_KEY_LEN {
        return Err(ContextError::KeyTooLong);
    }
    if !key
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return Err(ContextError::InvalidKeyChar);
    }
    match value {
        Value::Str(_) | Value::Static(_) | Value::Int(_) | Value::Float(_) | Value::Bool(_) => {
            Ok(())
        }
        Value::Null | Value::Json(_) => Err(ContextError::InvalidValueType),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn context_rules() {
        assert_eq!(check_context("user_id", &Value::Int(1)), Ok(()));
        assert_eq!(check_context("A-z_09", &Value::Str("x")), Ok(()));
        assert_eq!(
            check_context("", &Value::Int(1)),
            Err(ContextError::EmptyKey)
        );
        assert_eq!(
            check_context("a.b", &Value::Int(1)),
            Err(ContextError::InvalidKeyChar)
        );
        assert_eq!(
            check_context("a b", &Value::Int(1)),
            Err(ContextError::InvalidKeyChar)
        );
        assert_eq!(
            check_context("ké", &Value::Int(1)),
            Err(ContextError::InvalidKeyChar)
        );
        let long = "k".repeat_in_test(129);
        assert_eq!(
            check_context(&long, &Value::Int(1)),
            Err(ContextError::KeyTooLong)
        );
        assert_eq!(
            check_context("k", &Value::Null),
            Err(ContextError::InvalidValueType)
        );
    }

    trait RepeatInTest {
        fn repeat_in_test(&self, n: usize) -> heapless::String<256>;
    }
    impl RepeatInTest for str {
        fn repeat_in_test(&self, n: usize) -> heapless::String<256> {
            let mut s = heapless::String::new();
            for _ in 0..n {
                s.push_str(self).unwrap();
            }
            s
        }
    }

    #[test]
    fn raw_json_checked() {
        assert!(RawJson::new("[{\"file\": \"a.rs\", \"line\": 3}]").is_ok());
        assert!(RawJson::new("{\"a\": [1, 2.5e3, true, null, \"\\u00e9\"]}").is_ok());
        assert!(RawJson::new("[1, 2").is_err());
        assert!(RawJson::new("NaN").is_err());
        assert!(RawJson::new("{} {}").is_err());
        assert!(RawJson::new("").is_err());
    }
}
