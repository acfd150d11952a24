//! Public data types: rebuilt requests, spans, events, received messages and counters.

use serde::Serialize;
use serde_json::{Map, Value};

use super::timestamp::Timestamp;

/// A request rebuilt from its commands, after its `FinishRequest` arrived.
///
/// This is also the schema of one line of the `--export` file (see `docs/local-agent.md`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FinishedRequest {
    /// The `request_id` sent by the language agent.
    pub id: String,
    /// The `app` of the `Register` on the connection that started the request.
    pub app: String,
    /// 1-based number of the connection that sent the request's first command.
    pub connection: u64,
    /// The operation of the endpoint span (`Controller/...` or `Job/...`), if any.
    pub operation: Option<String>,
    /// The endpoint the request is aggregated under: `operation`, renamed by a `transaction.name`
    /// tag (`Controller/<name>`). `None` if no span is a `Controller/` or `Job/` span.
    pub endpoint: Option<String>,
    /// `StartRequest` timestamp (or the earliest span start if it was missing).
    pub start: Timestamp,
    /// `FinishRequest` timestamp (or the latest span end if it was missing).
    pub end: Timestamp,
    /// `end - start` in microseconds (0 if negative).
    pub duration_us: u64,
    /// The request tag `error` is `"true"` (or `true`).
    pub error: bool,
    /// The request tag `ignore_transaction` is `true`: kept here, left out of the endpoint statistics.
    pub ignored: bool,
    /// Request tags in first-insertion order; re-tagging keeps the position and replaces the value.
    pub tags: Map<String, Value>,
    /// Spans in tree pre-order (a parent before its children, siblings by start time).
    pub spans: Vec<FinishedSpan>,
    /// Spans dropped because the request exceeded the span limit.
    pub dropped_spans: u64,
    /// Inconsistencies found while rebuilding (span never stopped, unknown parent, ...).
    pub warnings: Vec<String>,
}

/// One span of a [`FinishedRequest`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FinishedSpan {
    /// `span_id`.
    pub id: String,
    /// `parent_id` as sent (`None` for a root span).
    pub parent_id: Option<String>,
    /// Operation, e.g. `SQL/Query`.
    pub operation: String,
    /// `StartSpan` timestamp.
    pub start: Timestamp,
    /// `StopSpan` timestamp (the request end if the span was never stopped).
    pub end: Timestamp,
    /// `end - start` in microseconds.
    pub duration_us: u64,
    /// Duration minus the time covered by direct children (never negative).
    pub exclusive_us: u64,
    /// Depth in the span tree (0 for roots and for spans whose parent is unknown).
    pub depth: u32,
    /// Span tags in first-insertion order.
    pub tags: Map<String, Value>,
}

impl FinishedRequest {
    /// The span with this id.
    pub fn span(&self, id: &str) -> Option<&FinishedSpan> {
        self.spans.iter().find(|s| s.id == id)
    }

    /// The first span with this operation.
    pub fn span_by_operation(&self, operation: &str) -> Option<&FinishedSpan> {
        self.spans.iter().find(|s| s.operation == operation)
    }
}

/// A received `ApplicationEvent` (metadata, CPU and memory samples, ...).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AppEvent {
    /// Connection number.
    pub connection: u64,
    /// App of the connection's `Register`.
    pub app: String,
    /// `event_type`, e.g. `scout.metadata`, `CPU/Utilization`, `Memory/Physical`.
    pub event_type: String,
    /// `event_value`.
    pub value: Value,
    /// `source`, e.g. `Pid: 1234`.
    pub source: Option<String>,
    /// `timestamp` (receive time if missing).
    pub timestamp: Timestamp,
}

/// One received frame that was valid JSON, in arrival order.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReceivedMessage {
    /// 1-based connection number.
    pub connection: u64,
    /// 1-based global arrival order.
    pub seq: u64,
    /// The decoded frame, key order preserved.
    pub message: Value,
}

/// Counters of everything received, rejected and dropped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Counters {
    /// Connections accepted.
    pub connections: u64,
    /// Connections refused because too many were open.
    pub connections_refused: u64,
    /// Frames read (good and bad).
    pub frames: u64,
    /// Primitive commands applied (batch elements counted one by one).
    pub commands: u64,
    /// Requests finished and rebuilt.
    pub requests: u64,
    /// `ApplicationEvent`s received.
    pub events: u64,
    /// Frames whose length prefix exceeded the limit (connection closed).
    pub oversized_frames: u64,
    /// Frames that were not UTF-8 JSON.
    pub invalid_json: u64,
    /// Frames with an unknown command.
    pub unknown_commands: u64,
    /// Frames of a known command with bad fields, or a bad batch element (whole frame rejected).
    pub invalid_commands: u64,
    /// Data commands sent before `Register`.
    pub unregistered_commands: u64,
    /// Connections closed because a frame stalled half-way.
    pub stalled_frames: u64,
    /// Connections closed because replies could not be written.
    pub write_failures: u64,
    /// Commands for a request that had already finished (ignored).
    pub late_commands: u64,
    /// Requests dropped because too many were pending or memory was exhausted.
    pub dropped_requests: u64,
    /// Requests that never finished and were evicted after the pending timeout.
    pub expired_requests: u64,
    /// Spans dropped because a request exceeded the span limit.
    pub dropped_spans: u64,
    /// Tags dropped because a span or request exceeded the tag limit.
    pub dropped_tags: u64,
    /// Tag values replaced by a marker because they exceeded the value-size limit.
    pub truncated_values: u64,
    /// Requests aggregated into the overflow endpoint because of the endpoint limit.
    pub overflow_endpoint_requests: u64,
    /// Finished requests tagged `ignore_transaction` (kept, not aggregated).
    pub ignored_requests: u64,
    /// Finished requests without a `Controller/` or `Job/` span (kept, not aggregated).
    pub requests_without_endpoint: u64,
    /// Export lines that could not be written.
    pub export_errors: u64,
}

impl Counters {
    /// Total number of bad frames (all rejection reasons).
    pub fn bad_frames(&self) -> u64 {
        self.oversized_frames
            + self.invalid_json
            + self.unknown_commands
            + self.invalid_commands
            + self.unregistered_commands
            + self.stalled_frames
    }
}
