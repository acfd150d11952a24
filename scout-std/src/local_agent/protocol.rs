//! Decoding of core-agent commands straight from the frame's JSON text, and encoding of replies.
//!
//! A frame is decoded in one pass with serde into a typed [`Command`] whose ids, names and
//! operations borrow from the frame where the JSON has no escapes (no [`serde_json::Value`] tree
//! is built; only tag and event values become `Value`s, because they are stored as such). The
//! decoder always consumes the whole frame, so a frame that is not valid JSON is reported as
//! such even when an earlier field was already wrong, and semantic errors are reported in the
//! same order as the fields are checked: first the frame's shape, then the command name, then
//! its fields in declaration order, then the elements of a `BatchCommand` in order.

use std::borrow::Cow;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

use super::timestamp::Timestamp;

/// A string borrowed from the frame, or owned when the JSON string had escapes.
pub(crate) type Str<'a> = Cow<'a, str>;

/// Commands allowed inside a `BatchCommand` are request/span commands and `ApplicationEvent`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Command<'a> {
    Register {
        app: Str<'a>,
        key: Str<'a>,
        language: Option<Str<'a>>,
    },
    CoreAgentVersion,
    CoreAgentShutdown,
    /// Extension of the local agent: reply with the summary text (see `docs/local-agent.md`).
    LocalAgentSummary,
    StartRequest {
        ts: Option<Timestamp>,
        request_id: Str<'a>,
    },
    TagRequest {
        request_id: Str<'a>,
        tag: Str<'a>,
        value: TagValue<'a>,
    },
    StartSpan {
        ts: Option<Timestamp>,
        request_id: Str<'a>,
        span_id: Str<'a>,
        parent_id: Option<Str<'a>>,
        operation: Str<'a>,
    },
    TagSpan {
        request_id: Str<'a>,
        span_id: Str<'a>,
        tag: Str<'a>,
        value: TagValue<'a>,
    },
    StopSpan {
        ts: Option<Timestamp>,
        request_id: Str<'a>,
        span_id: Str<'a>,
    },
    FinishRequest {
        ts: Option<Timestamp>,
        request_id: Str<'a>,
    },
    Batch(Vec<Self>),
    ApplicationEvent {
        ts: Option<Timestamp>,
        event_type: Str<'a>,
        /// Boxed: events are rare, and the box keeps every other command small.
        event_value: Box<Value>,
        source: Option<Str<'a>>,
    },
}

/// A tag value as decoded: the common scalars without a [`Value`], strings borrowed from the
/// frame when they had no escapes. Both decoders produce the same variant for the same JSON
/// ([`TagValue::from_value`] is the normal form), so the value converts back to exactly the
/// [`Value`] serde_json would have built.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum TagValue<'a> {
    Null,
    Bool(bool),
    /// A non-negative integer (serde_json's unsigned representation).
    UInt(u64),
    Str(Str<'a>),
    /// Any other value: negative and non-integer numbers, arrays, objects.
    Json(Box<Value>),
}

impl TagValue<'_> {
    /// The normal form of `v`.
    pub(crate) fn from_value(v: Value) -> Self {
        match v {
            Value::Null => Self::Null,
            Value::Bool(b) => Self::Bool(b),
            Value::String(s) => Self::Str(Cow::Owned(s)),
            Value::Number(n) if n.is_u64() => match n.as_u64() {
                Some(u) => Self::UInt(u),
                None => Self::Json(Box::new(Value::Number(n))),
            },
            other => Self::Json(Box::new(other)),
        }
    }

    /// The [`Value`] this stands for.
    pub(crate) fn into_value(self) -> Value {
        match self {
            Self::Null => Value::Null,
            Self::Bool(b) => Value::Bool(b),
            Self::UInt(u) => Value::from(u),
            Self::Str(s) => Value::String(s.into_owned()),
            Self::Json(v) => *v,
        }
    }
}

/// Why a frame could not be decoded into a command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum DecodeError {
    /// Not an object with exactly one key.
    Shape(String),
    /// Unknown top-level key.
    Unknown(String),
    /// A known command with a missing or mistyped field.
    Field(String),
}

impl DecodeError {
    pub(crate) fn message(&self) -> String {
        match self {
            Self::Shape(m) | Self::Field(m) => m.clone(),
            Self::Unknown(name) => format!("unknown command {name:?}"),
        }
    }
}

/// Why a frame was rejected.
#[derive(Debug)]
pub(crate) enum ParseError {
    /// Not JSON (syntax, truncation, nesting too deep).
    Json(serde_json::Error),
    /// JSON, but not a valid command.
    Decode(DecodeError),
}

/// Whether [`Command::parse`] tries the fast scanner first (see [`set_fast_decode`]).
static FAST_DECODE: AtomicBool = AtomicBool::new(true);

/// Turns the fast frame scanner on (the default) or off for the whole process. Off, every frame
/// is decoded by the serde decoder alone; the results are the same either way, only the speed
/// differs. Meant for benchmarks and diagnostics.
#[doc(hidden)]
pub fn set_fast_decode(enabled: bool) {
    FAST_DECODE.store(enabled, Ordering::Relaxed);
}

/// Maximum length of ids, tag names, operations and event types (bytes).
pub(crate) const MAX_NAME_LEN: usize = 4096;

impl<'a> Command<'a> {
    /// The top-level key of this command (also the key of its reply).
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Self::Register { .. } => "Register",
            Self::CoreAgentVersion => "CoreAgentVersion",
            Self::CoreAgentShutdown => "CoreAgentShutdown",
            Self::LocalAgentSummary => "LocalAgentSummary",
            Self::StartRequest { .. } => "StartRequest",
            Self::TagRequest { .. } => "TagRequest",
            Self::StartSpan { .. } => "StartSpan",
            Self::TagSpan { .. } => "TagSpan",
            Self::StopSpan { .. } => "StopSpan",
            Self::FinishRequest { .. } => "FinishRequest",
            Self::Batch(_) => "BatchCommand",
            Self::ApplicationEvent { .. } => "ApplicationEvent",
        }
    }

    /// Commands that may be sent before `Register`.
    pub(crate) fn allowed_unregistered(&self) -> bool {
        matches!(
            self,
            Self::Register { .. }
                | Self::CoreAgentVersion
                | Self::CoreAgentShutdown
                | Self::LocalAgentSummary
        )
    }

    /// Number of primitive commands (a batch counts its elements).
    pub(crate) fn count(&self) -> usize {
        match self {
            Self::Batch(c) => c.len(),
            _ => 1,
        }
    }

    /// Decodes one frame's JSON text: with the fast scanner when it recognises the frame
    /// (see [`super::scan`]), otherwise (and for every rejected frame) with serde.
    pub(crate) fn parse(text: &'a str) -> Result<Self, ParseError> {
        if let Some(c) = Self::parse_fast(text.as_bytes()) {
            return Ok(c);
        }
        Self::parse_serde(text)
    }

    /// Decodes one frame with the fast scanner alone (`None`: not taken, or turned off by
    /// [`set_fast_decode`]); the frame need not have been checked to be UTF-8.
    pub(crate) fn parse_fast(bytes: &'a [u8]) -> Option<Self> {
        if FAST_DECODE.load(Ordering::Relaxed) {
            super::scan::parse_bytes(bytes)
        } else {
            None
        }
    }

    /// Decodes one frame's JSON text with the serde decoder only (the reference behaviour).
    pub(crate) fn parse_serde(text: &'a str) -> Result<Self, ParseError> {
        let mut de = serde_json::Deserializer::from_str(text);
        let mut one = None;
        let outcome = CommandSeed {
            top: true,
            sink: Sink::One(&mut one),
        }
        .deserialize(&mut de)
        .map_err(ParseError::Json)?;
        de.end().map_err(ParseError::Json)?;
        outcome.map_err(ParseError::Decode)?;
        one.ok_or_else(|| ParseError::Decode(not_an_object().unwrap_err()))
    }
}

fn clip(s: &str) -> String {
    if s.len() <= 64 {
        return s.to_owned();
    }
    let mut end = 64;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}

// ---------------------------------------------------------------------------------------------
// Deserialization. Every visitor consumes its whole input and returns `Ok(Err(..))` for a
// semantic error, so only JSON errors abort the parse. Decoded commands are written into a
// [`Sink`] rather than returned, so that they are moved once, not through every visitor layer.

/// The result of decoding one command (the command itself went to the sink).
type Outcome = Result<(), DecodeError>;

/// Where a decoded command goes.
enum Sink<'x, 'de> {
    One(&'x mut Option<Command<'de>>),
    Many(&'x mut Vec<Command<'de>>),
}

impl<'de> Sink<'_, 'de> {
    fn put(self, c: Command<'de>) {
        match self {
            Self::One(slot) => *slot = Some(c),
            Self::Many(v) => v.push(c),
        }
    }
}

fn drain_seq<'de, A: SeqAccess<'de>>(mut seq: A) -> Result<(), A::Error> {
    while seq.next_element::<IgnoredAny>()?.is_some() {}
    Ok(())
}

fn drain_map<'de, A: MapAccess<'de>>(mut map: A) -> Result<(), A::Error> {
    while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
    Ok(())
}

/// A command: an object with exactly one key.
struct CommandSeed<'x, 'de> {
    top: bool,
    sink: Sink<'x, 'de>,
}

impl<'de> DeserializeSeed<'de> for CommandSeed<'_, 'de> {
    type Value = Outcome;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Outcome, D::Error> {
        d.deserialize_any(self)
    }
}

fn not_an_object() -> Outcome {
    Err(DecodeError::Shape(
        "expected a JSON object with one command key".into(),
    ))
}

impl<'de> Visitor<'de> for CommandSeed<'_, 'de> {
    type Value = Outcome;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object with one command key")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Outcome, A::Error> {
        let mut keys = 0usize;
        let mut first = Ok(());
        let mut sink = Some(self.sink);
        while let Some(kind) = map.next_key_seed(KindSeed { top: self.top })? {
            keys += 1;
            match sink.take() {
                Some(sink) => first = map.next_value_seed(BodySeed { kind, sink })?,
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        if keys == 1 {
            Ok(first)
        } else {
            Ok(Err(DecodeError::Shape(format!(
                "expected exactly one command key, got {keys}"
            ))))
        }
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Outcome, A::Error> {
        drain_seq(seq)?;
        Ok(not_an_object())
    }

    fn visit_bool<E>(self, _: bool) -> Result<Outcome, E> {
        Ok(not_an_object())
    }

    fn visit_i64<E>(self, _: i64) -> Result<Outcome, E> {
        Ok(not_an_object())
    }

    fn visit_u64<E>(self, _: u64) -> Result<Outcome, E> {
        Ok(not_an_object())
    }

    fn visit_f64<E>(self, _: f64) -> Result<Outcome, E> {
        Ok(not_an_object())
    }

    fn visit_str<E>(self, _: &str) -> Result<Outcome, E> {
        Ok(not_an_object())
    }

    fn visit_unit<E>(self) -> Result<Outcome, E> {
        Ok(not_an_object())
    }
}

/// The command name, classified (the name is kept only when it is unknown).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    Register,
    CoreAgentVersion,
    CoreAgentShutdown,
    LocalAgentSummary,
    StartRequest,
    TagRequest,
    StartSpan,
    TagSpan,
    StopSpan,
    FinishRequest,
    ApplicationEvent,
    Batch,
    /// A top-level-only command inside a `BatchCommand`.
    NotInBatch(&'static str),
    Unknown(String),
}

impl Kind {
    fn name(&self) -> &str {
        match self {
            Self::Register => "Register",
            Self::CoreAgentVersion => "CoreAgentVersion",
            Self::CoreAgentShutdown => "CoreAgentShutdown",
            Self::LocalAgentSummary => "LocalAgentSummary",
            Self::StartRequest => "StartRequest",
            Self::TagRequest => "TagRequest",
            Self::StartSpan => "StartSpan",
            Self::TagSpan => "TagSpan",
            Self::StopSpan => "StopSpan",
            Self::FinishRequest => "FinishRequest",
            Self::ApplicationEvent => "ApplicationEvent",
            Self::Batch => "BatchCommand",
            Self::NotInBatch(n) => n,
            Self::Unknown(n) => n.as_str(),
        }
    }
}

struct KindSeed {
    top: bool,
}

impl<'de> DeserializeSeed<'de> for KindSeed {
    type Value = Kind;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Kind, D::Error> {
        d.deserialize_str(self)
    }
}

impl Visitor<'_> for KindSeed {
    type Value = Kind;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a command name")
    }

    fn visit_str<E>(self, v: &str) -> Result<Kind, E> {
        Ok(match v {
            "StartRequest" => Kind::StartRequest,
            "TagRequest" => Kind::TagRequest,
            "StartSpan" => Kind::StartSpan,
            "TagSpan" => Kind::TagSpan,
            "StopSpan" => Kind::StopSpan,
            "FinishRequest" => Kind::FinishRequest,
            "ApplicationEvent" => Kind::ApplicationEvent,
            "Register" if self.top => Kind::Register,
            "CoreAgentVersion" if self.top => Kind::CoreAgentVersion,
            "CoreAgentShutdown" if self.top => Kind::CoreAgentShutdown,
            "LocalAgentSummary" if self.top => Kind::LocalAgentSummary,
            "BatchCommand" if self.top => Kind::Batch,
            "Register" => Kind::NotInBatch("Register"),
            "CoreAgentVersion" => Kind::NotInBatch("CoreAgentVersion"),
            "CoreAgentShutdown" => Kind::NotInBatch("CoreAgentShutdown"),
            "LocalAgentSummary" => Kind::NotInBatch("LocalAgentSummary"),
            "BatchCommand" => Kind::NotInBatch("BatchCommand"),
            other => Kind::Unknown(other.to_owned()),
        })
    }
}

/// One string-or-null field as found in the body.
#[derive(Debug, Default)]
enum Slot<'a> {
    #[default]
    Missing,
    Null,
    Str(Str<'a>),
    /// Any other JSON type.
    Other,
}

struct SlotVisitor;

impl<'de> de::Deserialize<'de> for Slot<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(SlotVisitor)
    }
}

impl<'de> Visitor<'de> for SlotVisitor {
    type Value = Slot<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Slot::Str(Cow::Borrowed(v)))
    }

    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Slot::Str(Cow::Owned(v.to_owned())))
    }

    fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
        Ok(Slot::Str(Cow::Owned(v)))
    }

    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(Slot::Null)
    }

    fn visit_none<E>(self) -> Result<Self::Value, E> {
        Ok(Slot::Null)
    }

    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(Slot::Other)
    }

    fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
        Ok(Slot::Other)
    }

    fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
        Ok(Slot::Other)
    }

    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok(Slot::Other)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        drain_seq(seq)?;
        Ok(Slot::Other)
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        drain_map(map)?;
        Ok(Slot::Other)
    }
}

/// Body field names the decoder looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    Timestamp,
    RequestId,
    SpanId,
    ParentId,
    Operation,
    Tag,
    Value,
    App,
    Key,
    Language,
    EventType,
    EventValue,
    Source,
    Commands,
    Other,
}

struct FieldVisitor;

impl<'de> de::Deserialize<'de> for Field {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_str(FieldVisitor)
    }
}

impl Visitor<'_> for FieldVisitor {
    type Value = Field;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a field name")
    }

    fn visit_str<E>(self, v: &str) -> Result<Field, E> {
        Ok(match v {
            "timestamp" => Field::Timestamp,
            "request_id" => Field::RequestId,
            "span_id" => Field::SpanId,
            "parent_id" => Field::ParentId,
            "operation" => Field::Operation,
            "tag" => Field::Tag,
            "value" => Field::Value,
            "app" => Field::App,
            "key" => Field::Key,
            "language" => Field::Language,
            "event_type" => Field::EventType,
            "event_value" => Field::EventValue,
            "source" => Field::Source,
            "commands" => Field::Commands,
            _ => Field::Other,
        })
    }
}

/// The fields of one command body (a repeated key: the last one wins, as in a JSON object).
#[derive(Debug, Default)]
struct Fields<'a> {
    timestamp: Slot<'a>,
    request_id: Slot<'a>,
    span_id: Slot<'a>,
    parent_id: Slot<'a>,
    operation: Slot<'a>,
    tag: Slot<'a>,
    app: Slot<'a>,
    key: Slot<'a>,
    language: Slot<'a>,
    event_type: Slot<'a>,
    source: Slot<'a>,
    value: Option<Value>,
    event_value: Option<Value>,
    /// `BatchCommand.commands`.
    commands: Vec<Command<'a>>,
    /// How decoding `commands` went (`None`: the field is missing).
    commands_outcome: Option<Outcome>,
}

/// The body of a command of a known kind: an object (or `null` for argument-less commands).
struct BodySeed<'x, 'de> {
    kind: Kind,
    sink: Sink<'x, 'de>,
}

impl<'de> DeserializeSeed<'de> for BodySeed<'_, 'de> {
    type Value = Outcome;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Outcome, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> BodySeed<'_, 'de> {
    fn not_an_object(&self) -> Outcome {
        Err(DecodeError::Shape(format!(
            "{}: expected an object body",
            clip(self.kind.name())
        )))
    }

    fn finish(self, f: &mut Fields<'de>) -> Outcome {
        let c = build(self.kind, f)?;
        self.sink.put(c);
        Ok(())
    }
}

impl<'de> Visitor<'de> for BodySeed<'_, 'de> {
    type Value = Outcome;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a command body")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Outcome, A::Error> {
        let mut f = Fields::default();
        let batch = self.kind == Kind::Batch;
        while let Some(field) = map.next_key::<Field>()? {
            match field {
                Field::Commands if batch => {
                    f.commands_outcome = Some(map.next_value_seed(CommandsSeed {
                        out: &mut f.commands,
                    })?);
                }
                Field::Value => f.value = Some(map.next_value()?),
                Field::EventValue => f.event_value = Some(map.next_value()?),
                Field::Commands | Field::Other => {
                    map.next_value::<IgnoredAny>()?;
                }
                slot => {
                    let v: Slot<'de> = map.next_value()?;
                    *match slot {
                        Field::Timestamp => &mut f.timestamp,
                        Field::RequestId => &mut f.request_id,
                        Field::SpanId => &mut f.span_id,
                        Field::ParentId => &mut f.parent_id,
                        Field::Operation => &mut f.operation,
                        Field::Tag => &mut f.tag,
                        Field::App => &mut f.app,
                        Field::Key => &mut f.key,
                        Field::Language => &mut f.language,
                        Field::EventType => &mut f.event_type,
                        _ => &mut f.source,
                    } = v;
                }
            }
        }
        Ok(self.finish(&mut f))
    }

    fn visit_unit<E>(self) -> Result<Outcome, E> {
        // `{"CoreAgentVersion": null}` style bodies are tolerated (and read as `{}`).
        Ok(self.finish(&mut Fields::default()))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Outcome, A::Error> {
        drain_seq(seq)?;
        Ok(self.not_an_object())
    }

    fn visit_bool<E>(self, _: bool) -> Result<Outcome, E> {
        Ok(self.not_an_object())
    }

    fn visit_i64<E>(self, _: i64) -> Result<Outcome, E> {
        Ok(self.not_an_object())
    }

    fn visit_u64<E>(self, _: u64) -> Result<Outcome, E> {
        Ok(self.not_an_object())
    }

    fn visit_f64<E>(self, _: f64) -> Result<Outcome, E> {
        Ok(self.not_an_object())
    }

    fn visit_str<E>(self, _: &str) -> Result<Outcome, E> {
        Ok(self.not_an_object())
    }
}

/// `BatchCommand.commands`: an array of commands; the first bad element rejects the batch.
struct CommandsSeed<'x, 'de> {
    out: &'x mut Vec<Command<'de>>,
}

fn not_an_array() -> Outcome {
    Err(DecodeError::Field(
        "BatchCommand: field \"commands\" must be an array".into(),
    ))
}

impl<'de> DeserializeSeed<'de> for CommandsSeed<'_, 'de> {
    type Value = Outcome;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Outcome, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for CommandsSeed<'_, 'de> {
    type Value = Outcome;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array of commands")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Outcome, A::Error> {
        self.out.clear();
        self.out.reserve(32);
        let mut i = 0usize;
        while let Some(outcome) = seq.next_element_seed(CommandSeed {
            top: false,
            sink: Sink::Many(self.out),
        })? {
            if let Err(e) = outcome {
                drain_seq(seq)?;
                return Ok(Err(DecodeError::Field(format!(
                    "BatchCommand: element {i}: {}",
                    e.message()
                ))));
            }
            i += 1;
        }
        Ok(Ok(()))
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Outcome, A::Error> {
        drain_map(map)?;
        Ok(not_an_array())
    }

    fn visit_bool<E>(self, _: bool) -> Result<Outcome, E> {
        Ok(not_an_array())
    }

    fn visit_i64<E>(self, _: i64) -> Result<Outcome, E> {
        Ok(not_an_array())
    }

    fn visit_u64<E>(self, _: u64) -> Result<Outcome, E> {
        Ok(not_an_array())
    }

    fn visit_f64<E>(self, _: f64) -> Result<Outcome, E> {
        Ok(not_an_array())
    }

    fn visit_str<E>(self, _: &str) -> Result<Outcome, E> {
        Ok(not_an_array())
    }

    fn visit_unit<E>(self) -> Result<Outcome, E> {
        Ok(not_an_array())
    }
}

/// Checks the collected fields of a command of kind `kind` (in declaration order).
fn build<'a>(kind: Kind, f: &mut Fields<'a>) -> Result<Command<'a>, DecodeError> {
    let cmd = kind.name();
    let err =
        |field: &str, what: &str| DecodeError::Field(format!("{cmd}: field {field:?} {what}"));
    let id = |slot: Slot<'a>, field: &str| match slot {
        Slot::Str(s) if s.len() <= MAX_NAME_LEN => Ok(s),
        Slot::Str(_) => Err(err(field, "is too long")),
        Slot::Null | Slot::Other => Err(err(field, "must be a string")),
        Slot::Missing => Err(err(field, "is missing")),
    };
    let opt = |slot: Slot<'a>, field: &str| match slot {
        Slot::Missing | Slot::Null => Ok(None),
        Slot::Str(s) if s.len() <= MAX_NAME_LEN => Ok(Some(s)),
        Slot::Str(_) => Err(err(field, "is too long")),
        Slot::Other => Err(err(field, "must be a string or null")),
    };
    let value = |v: Option<Value>, field: &str| v.ok_or_else(|| err(field, "is missing"));
    let ts = |slot: Slot<'a>| match slot {
        Slot::Missing | Slot::Null => Ok(None),
        Slot::Str(s) => Timestamp::parse(&s)
            .map(Some)
            .ok_or_else(|| err("timestamp", "is not an RFC 3339 timestamp")),
        Slot::Other => Err(err("timestamp", "must be a string")),
    };
    let take = std::mem::take::<Slot<'a>>;
    Ok(match kind {
        Kind::Register => Command::Register {
            app: opt(take(&mut f.app), "app")?.unwrap_or_default(),
            key: opt(take(&mut f.key), "key")?.unwrap_or_default(),
            language: opt(take(&mut f.language), "language")?,
        },
        Kind::CoreAgentVersion => Command::CoreAgentVersion,
        Kind::CoreAgentShutdown => Command::CoreAgentShutdown,
        Kind::LocalAgentSummary => Command::LocalAgentSummary,
        Kind::StartRequest => Command::StartRequest {
            ts: ts(take(&mut f.timestamp))?,
            request_id: id(take(&mut f.request_id), "request_id")?,
        },
        Kind::TagRequest => Command::TagRequest {
            request_id: id(take(&mut f.request_id), "request_id")?,
            tag: id(take(&mut f.tag), "tag")?,
            value: TagValue::from_value(value(f.value.take(), "value")?),
        },
        Kind::StartSpan => Command::StartSpan {
            ts: ts(take(&mut f.timestamp))?,
            request_id: id(take(&mut f.request_id), "request_id")?,
            span_id: id(take(&mut f.span_id), "span_id")?,
            parent_id: opt(take(&mut f.parent_id), "parent_id")?,
            operation: id(take(&mut f.operation), "operation")?,
        },
        Kind::TagSpan => Command::TagSpan {
            request_id: id(take(&mut f.request_id), "request_id")?,
            span_id: id(take(&mut f.span_id), "span_id")?,
            tag: id(take(&mut f.tag), "tag")?,
            value: TagValue::from_value(value(f.value.take(), "value")?),
        },
        Kind::StopSpan => Command::StopSpan {
            ts: ts(take(&mut f.timestamp))?,
            request_id: id(take(&mut f.request_id), "request_id")?,
            span_id: id(take(&mut f.span_id), "span_id")?,
        },
        Kind::FinishRequest => Command::FinishRequest {
            ts: ts(take(&mut f.timestamp))?,
            request_id: id(take(&mut f.request_id), "request_id")?,
        },
        Kind::ApplicationEvent => Command::ApplicationEvent {
            ts: ts(take(&mut f.timestamp))?,
            event_type: id(take(&mut f.event_type), "event_type")?,
            event_value: Box::new(value(f.event_value.take(), "event_value")?),
            source: opt(take(&mut f.source), "source")?,
        },
        Kind::Batch => match f.commands_outcome.take() {
            Some(Ok(())) => Command::Batch(std::mem::take(&mut f.commands)),
            Some(Err(e)) => return Err(e),
            None => return Err(not_an_array().unwrap_err()),
        },
        Kind::NotInBatch(name) => {
            return Err(DecodeError::Field(format!(
                "{name} is not allowed inside a BatchCommand"
            )));
        }
        Kind::Unknown(name) => return Err(DecodeError::Unknown(clip(&name))),
    })
}

// ---------------------------------------------------------------------------------------------
// Replies.

/// A reply body: usually a constant, so most frames allocate nothing for their reply.
pub(crate) type ReplyBytes = Cow<'static, [u8]>;

/// `{"<name>": {"id": null, "result": "Success"}}`, plus `version` for `CoreAgentVersion`.
pub(crate) fn success_reply(name: &str, version: Option<&str>) -> ReplyBytes {
    macro_rules! ok {
        ($n:literal) => {
            concat!("{\"", $n, "\":{\"id\":null,\"result\":\"Success\"}}").as_bytes()
        };
    }
    if version.is_none() {
        let fixed: Option<&'static [u8]> = match name {
            "Register" => Some(ok!("Register")),
            "StartRequest" => Some(ok!("StartRequest")),
            "TagRequest" => Some(ok!("TagRequest")),
            "StartSpan" => Some(ok!("StartSpan")),
            "TagSpan" => Some(ok!("TagSpan")),
            "StopSpan" => Some(ok!("StopSpan")),
            "FinishRequest" => Some(ok!("FinishRequest")),
            "BatchCommand" => Some(ok!("BatchCommand")),
            "ApplicationEvent" => Some(ok!("ApplicationEvent")),
            "CoreAgentShutdown" => Some(ok!("CoreAgentShutdown")),
            _ => None,
        };
        if let Some(b) = fixed {
            return Cow::Borrowed(b);
        }
    }
    let mut inner = serde_json::Map::new();
    inner.insert("id".into(), Value::Null);
    inner.insert("result".into(), Value::String("Success".into()));
    if let Some(v) = version {
        inner.insert("version".into(), Value::String(v.into()));
    }
    let mut outer = serde_json::Map::new();
    outer.insert(name.into(), Value::Object(inner));
    Cow::Owned(serde_json::to_vec(&Value::Object(outer)).unwrap_or_default())
}

/// `{"Failure": {"message": "..."}}`.
pub(crate) fn failure_reply(message: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({"Failure": {"message": message}})).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn decode(v: Value) -> Result<Command<'static>, DecodeError> {
        let text: &'static str = Box::leak(v.to_string().into_boxed_str());
        match Command::parse(text) {
            Ok(c) => Ok(c),
            Err(ParseError::Decode(e)) => Err(e),
            Err(ParseError::Json(e)) => panic!("{v} is JSON: {e}"),
        }
    }

    #[test]
    fn decodes_python_batch() {
        let v = json!({"BatchCommand": {"commands": [
            {"StartRequest": {"timestamp": "2026-11-24T20:59:25.383953+00:00", "request_id": "r"}},
            {"TagRequest": {"timestamp": "2026-11-24T20:59:25.383953+00:00", "request_id": "r", "tag": "n", "value": 3}},
            {"StartSpan": {"timestamp": "2026-11-24T20:59:25.384292+00:00", "request_id": "r", "span_id": "s", "parent_id": null, "operation": "Job/X"}},
            {"StopSpan": {"timestamp": "2026-11-24T20:59:25.389389+00:00", "request_id": "r", "span_id": "s"}},
            {"FinishRequest": {"timestamp": "2026-11-24T20:59:25.389512+00:00", "request_id": "r"}}
        ]}});
        let Command::Batch(c) = decode(v).unwrap() else {
            panic!("not a batch")
        };
        assert_eq!(c.len(), 5);
        assert!(
            matches!(&c[2], Command::StartSpan { parent_id: None, operation, .. } if operation == "Job/X")
        );
        assert!(
            matches!(&c[1], Command::TagRequest { tag, value, .. } if tag == "n" && *value == TagValue::UInt(3))
        );
    }

    #[test]
    fn strings_borrow_unless_escaped() {
        let text = r#"{"StartSpan": {"request_id": "r1", "span_id": "s\u0041", "operation": "Job/\u00e9"}}"#;
        let Ok(Command::StartSpan {
            request_id,
            span_id,
            operation,
            ..
        }) = Command::parse(text)
        else {
            panic!("not a span")
        };
        assert!(matches!(request_id, Cow::Borrowed("r1")));
        assert_eq!(span_id, "sA");
        assert_eq!(operation, "Job/\u{e9}");
    }

    #[test]
    fn rejects_bad_shapes() {
        for v in [
            json!([1]),
            json!({}),
            json!({"A": {}, "B": {}}),
            json!({"StartRequest": 5}),
            json!({"StartRequest": {"request_id": 5}}),
            json!({"StartRequest": {"request_id": "r", "timestamp": "yesterday"}}),
            json!({"BatchCommand": {"commands": [{"Register": {"app": "x"}}]}}),
            json!({"BatchCommand": {"commands": [{"Nope": {}}]}}),
            json!({"BatchCommand": {}}),
        ] {
            assert!(decode(v.clone()).is_err(), "{v}");
        }
        assert_eq!(
            decode(json!({"Nope": {}})),
            Err(DecodeError::Unknown("Nope".into()))
        );
        assert_eq!(
            decode(json!({"StartRequest": 5, "B": {}})),
            Err(DecodeError::Shape(
                "expected exactly one command key, got 2".into()
            ))
        );
        assert_eq!(
            decode(json!({"StartSpan": {"request_id": "r", "span_id": 1}}))
                .map_err(|e| e.message()),
            Err("StartSpan: field \"span_id\" must be a string".into())
        );
        assert_eq!(
            decode(json!({"BatchCommand": {"commands": [{"StartRequest": {"request_id": "r"}}, {"StopSpan": {"request_id": "r"}}]}}))
                .map_err(|e| e.message()),
            Err("BatchCommand: element 1: StopSpan: field \"span_id\" is missing".into())
        );
        // A semantic error early in a frame that is not JSON later is reported as invalid JSON.
        assert!(matches!(
            Command::parse(r#"{"StartRequest": {"request_id": 5, "x": tru"#),
            Err(ParseError::Json(_))
        ));
        assert!(matches!(Command::parse("{} x"), Err(ParseError::Json(_))));
    }

    #[test]
    fn replies() {
        for name in [
            "Register",
            "StartSpan",
            "BatchCommand",
            "CoreAgentShutdown",
            "Other",
        ] {
            let v: Value = serde_json::from_slice(&success_reply(name, None)).unwrap();
            assert_eq!(v, json!({name: {"id": null, "result": "Success"}}));
        }
        assert_eq!(
            &*success_reply("Register", None),
            br#"{"Register":{"id":null,"result":"Success"}}"#
        );
        assert_eq!(
            failure_reply("x"),
            br#"{"Failure":{"message":"x"}}"#.to_vec()
        );
    }
}
