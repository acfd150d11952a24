//! Decoding of core-agent commands from JSON values and encoding of replies.
//!
//! Decoding works on an already parsed [`serde_json::Value`] (the same value that is kept for
//! [`super::LocalAgentHandle::messages`]) and moves strings out of it instead of copying them.

use serde_json::{Map, Value};

use super::timestamp::Timestamp;

/// Commands allowed inside a `BatchCommand` are request/span commands and `ApplicationEvent`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Command {
    Register {
        app: String,
        key: String,
        language: Option<String>,
    },
    CoreAgentVersion,
    CoreAgentShutdown,
    StartRequest {
        ts: Option<Timestamp>,
        request_id: String,
    },
    TagRequest {
        request_id: String,
        tag: String,
        value: Value,
    },
    StartSpan {
        ts: Option<Timestamp>,
        request_id: String,
        span_id: String,
        parent_id: Option<String>,
        operation: String,
    },
    TagSpan {
        request_id: String,
        span_id: String,
        tag: String,
        value: Value,
    },
    StopSpan {
        ts: Option<Timestamp>,
        request_id: String,
        span_id: String,
    },
    FinishRequest {
        ts: Option<Timestamp>,
        request_id: String,
    },
    Batch(Vec<Self>),
    ApplicationEvent {
        ts: Option<Timestamp>,
        event_type: String,
        event_value: Value,
        source: Option<String>,
    },
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

/// Maximum length of ids, tag names, operations and event types (bytes).
pub(crate) const MAX_NAME_LEN: usize = 4096;

impl Command {
    /// The top-level key of this command (also the key of its reply).
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Self::Register { .. } => "Register",
            Self::CoreAgentVersion => "CoreAgentVersion",
            Self::CoreAgentShutdown => "CoreAgentShutdown",
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
            Self::Register { .. } | Self::CoreAgentVersion | Self::CoreAgentShutdown
        )
    }

    /// Number of primitive commands (a batch counts its elements).
    pub(crate) fn count(&self) -> usize {
        match self {
            Self::Batch(c) => c.len(),
            _ => 1,
        }
    }

    /// Decodes one top-level frame.
    pub(crate) fn decode(value: Value) -> Result<Self, DecodeError> {
        Self::decode_inner(value, true)
    }

    fn decode_inner(value: Value, top: bool) -> Result<Self, DecodeError> {
        let Value::Object(map) = value else {
            return Err(DecodeError::Shape(
                "expected a JSON object with one command key".into(),
            ));
        };
        if map.len() != 1 {
            return Err(DecodeError::Shape(format!(
                "expected exactly one command key, got {}",
                map.len()
            )));
        }
        let Some((name, body)) = map.into_iter().next() else {
            return Err(DecodeError::Shape("empty object".into()));
        };
        let mut f = match body {
            Value::Object(m) => Fields { cmd: name, map: m },
            // `{"CoreAgentVersion": null}` style bodies are tolerated for the argument-less commands.
            Value::Null => Fields {
                cmd: name,
                map: Map::new(),
            },
            _ => {
                return Err(DecodeError::Shape(format!(
                    "{}: expected an object body",
                    clip(&name)
                )));
            }
        };
        let cmd = match f.cmd.as_str() {
            "Register" if top => Self::Register {
                app: f.opt_str("app")?.unwrap_or_default(),
                key: f.opt_str("key")?.unwrap_or_default(),
                language: f.opt_str("language")?,
            },
            "CoreAgentVersion" if top => Self::CoreAgentVersion,
            "CoreAgentShutdown" if top => Self::CoreAgentShutdown,
            "StartRequest" => Self::StartRequest {
                ts: f.ts()?,
                request_id: f.id("request_id")?,
            },
            "TagRequest" => Self::TagRequest {
                request_id: f.id("request_id")?,
                tag: f.id("tag")?,
                value: f.value("value")?,
            },
            "StartSpan" => Self::StartSpan {
                ts: f.ts()?,
                request_id: f.id("request_id")?,
                span_id: f.id("span_id")?,
                parent_id: f.opt_str("parent_id")?,
                operation: f.id("operation")?,
            },
            "TagSpan" => Self::TagSpan {
                request_id: f.id("request_id")?,
                span_id: f.id("span_id")?,
                tag: f.id("tag")?,
                value: f.value("value")?,
            },
            "StopSpan" => Self::StopSpan {
                ts: f.ts()?,
                request_id: f.id("request_id")?,
                span_id: f.id("span_id")?,
            },
            "FinishRequest" => Self::FinishRequest {
                ts: f.ts()?,
                request_id: f.id("request_id")?,
            },
            "ApplicationEvent" => Self::ApplicationEvent {
                ts: f.ts()?,
                event_type: f.id("event_type")?,
                event_value: f.value("event_value")?,
                source: f.opt_str("source")?,
            },
            "BatchCommand" if top => {
                let Some(Value::Array(items)) = f.map.remove("commands") else {
                    return Err(DecodeError::Field(
                        "BatchCommand: field \"commands\" must be an array".into(),
                    ));
                };
                let mut out = Vec::with_capacity(items.len());
                for (i, item) in items.into_iter().enumerate() {
                    match Self::decode_inner(item, false) {
                        Ok(c) => out.push(c),
                        Err(e) => {
                            return Err(DecodeError::Field(format!(
                                "BatchCommand: element {i}: {}",
                                e.message()
                            )));
                        }
                    }
                }
                Self::Batch(out)
            }
            "Register" | "CoreAgentVersion" | "CoreAgentShutdown" | "BatchCommand" => {
                return Err(DecodeError::Field(format!(
                    "{} is not allowed inside a BatchCommand",
                    f.cmd
                )));
            }
            _ => return Err(DecodeError::Unknown(clip(&f.cmd))),
        };
        Ok(cmd)
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

struct Fields {
    cmd: String,
    map: Map<String, Value>,
}

impl Fields {
    fn err(&self, field: &str, what: &str) -> DecodeError {
        DecodeError::Field(format!("{}: field {field:?} {what}", self.cmd))
    }

    fn id(&mut self, field: &str) -> Result<String, DecodeError> {
        match self.map.remove(field) {
            Some(Value::String(s)) if s.len() <= MAX_NAME_LEN => Ok(s),
            Some(Value::String(_)) => Err(self.err(field, "is too long")),
            Some(_) => Err(self.err(field, "must be a string")),
            None => Err(self.err(field, "is missing")),
        }
    }

    fn opt_str(&mut self, field: &str) -> Result<Option<String>, DecodeError> {
        match self.map.remove(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) if s.len() <= MAX_NAME_LEN => Ok(Some(s)),
            Some(Value::String(_)) => Err(self.err(field, "is too long")),
            Some(_) => Err(self.err(field, "must be a string or null")),
        }
    }

    fn value(&mut self, field: &str) -> Result<Value, DecodeError> {
        self.map
            .remove(field)
            .ok_or_else(|| self.err(field, "is missing"))
    }

    /// The optional `timestamp` field; when present it must parse.
    fn ts(&mut self) -> Result<Option<Timestamp>, DecodeError> {
        match self.map.remove("timestamp") {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Timestamp::parse(&s)
                .map(Some)
                .ok_or_else(|| self.err("timestamp", "is not an RFC 3339 timestamp")),
            Some(_) => Err(self.err("timestamp", "must be a string")),
        }
    }
}

/// `{"<name>": {"id": null, "result": "Success"}}`, plus `version` for `CoreAgentVersion`.
pub(crate) fn success_reply(name: &str, version: Option<&str>) -> Vec<u8> {
    let mut inner = Map::new();
    inner.insert("id".into(), Value::Null);
    inner.insert("result".into(), Value::String("Success".into()));
    if let Some(v) = version {
        inner.insert("version".into(), Value::String(v.into()));
    }
    let mut outer = Map::new();
    outer.insert(name.into(), Value::Object(inner));
    serde_json::to_vec(&Value::Object(outer)).unwrap_or_default()
}

/// `{"Failure": {"message": "..."}}`.
pub(crate) fn failure_reply(message: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({"Failure": {"message": message}})).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn decodes_python_batch() {
        let v = json!({"BatchCommand": {"commands": [
            {"StartRequest": {"timestamp": "2026-11-24T20:59:25.383953+00:00", "request_id": "r"}},
            {"TagRequest": {"timestamp": "2026-11-24T20:59:25.383953+00:00", "request_id": "r", "tag": "n", "value": 3}},
            {"StartSpan": {"timestamp": "2026-11-24T20:59:25.384292+00:00", "request_id": "r", "span_id": "s", "parent_id": null, "operation": "Job/X"}},
            {"StopSpan": {"timestamp": "2026-11-24T20:59:25.389389+00:00", "request_id": "r", "span_id": "s"}},
            {"FinishRequest": {"timestamp": "2026-11-24T20:59:25.389512+00:00", "request_id": "r"}}
        ]}});
        let Command::Batch(c) = Command::decode(v).unwrap() else {
            panic!("not a batch")
        };
        assert_eq!(c.len(), 5);
        assert!(
            matches!(&c[2], Command::StartSpan { parent_id: None, operation, .. } if operation == "Job/X")
        );
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
            assert!(Command::decode(v.clone()).is_err(), "{v}");
        }
        assert_eq!(
            Command::decode(json!({"Nope": {}})),
            Err(DecodeError::Unknown("Nope".into()))
        );
    }

    #[test]
    fn replies() {
        assert_eq!(
            success_reply("Register", None),
            br#"{"Register":{"id":null,"result":"Success"}}"#
        );
        assert_eq!(
            failure_reply("x"),
            br#"{"Failure":{"message":"x"}}"#.to_vec()
        );
    }
}
