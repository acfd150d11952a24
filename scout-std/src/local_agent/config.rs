//! Configuration of an in-process or command-line local agent.

use std::path::PathBuf;
use std::time::Duration;

use super::address::Address;

/// Bounds on everything the local agent keeps or accepts. The defaults suit tests and laptops.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Largest accepted frame (length prefix), bytes. Larger: `Failure` reply and the connection closes.
    pub max_frame_bytes: usize,
    /// Bytes of partially received frames held by all connections together.
    pub max_inflight_bytes: usize,
    /// A started frame must make progress within this time, else the connection is closed.
    pub frame_timeout: Duration,
    /// A reply must be written within this time, else the connection is closed.
    pub write_timeout: Duration,
    /// Open connections; further ones are closed immediately.
    pub max_connections: usize,
    /// Requests started but not finished.
    pub max_pending_requests: usize,
    /// Approximate bytes held by unfinished requests together.
    pub max_pending_bytes: usize,
    /// Unfinished requests that receive no command for this long are evicted.
    pub pending_timeout: Duration,
    /// Spans kept per request (more are counted as dropped).
    pub max_spans_per_request: usize,
    /// Tags kept per request and per span.
    pub max_tags: usize,
    /// Approximate size above which a tag value is replaced by a `"[truncated: N bytes]"` marker.
    pub max_tag_value_bytes: usize,
    /// Endpoints tracked (per agent); later ones are aggregated into `(other endpoints)`.
    pub max_endpoints: usize,
    /// Slowest traces kept per endpoint.
    pub traces_per_endpoint: usize,
    /// Spans kept in each stored slow trace.
    pub max_spans_per_trace: usize,
    /// Finished requests kept for [`super::LocalAgentHandle::requests`] (oldest dropped first).
    pub retain_requests: usize,
    /// Received frames kept for [`super::LocalAgentHandle::messages`] (0 disables).
    pub retain_messages: usize,
    /// Application events kept for [`super::LocalAgentHandle::events`].
    pub retain_events: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_frame_bytes: 16 * 1024 * 1024,
            max_inflight_bytes: 128 * 1024 * 1024,
            frame_timeout: Duration::from_secs(10),
            write_timeout: Duration::from_secs(10),
            max_connections: 1024,
            max_pending_requests: 10_000,
            max_pending_bytes: 256 * 1024 * 1024,
            pending_timeout: Duration::from_secs(600),
            max_spans_per_request: 5_000,
            max_tags: 256,
            max_tag_value_bytes: 64 * 1024,
            max_endpoints: 1_000,
            traces_per_endpoint: 5,
            max_spans_per_trace: 1_000,
            retain_requests: 10_000,
            retain_messages: 100_000,
            retain_events: 10_000,
        }
    }
}

impl Limits {
    /// Limits for a long-running command-line agent: no frame history, few stored requests.
    pub fn daemon() -> Self {
        Self {
            retain_requests: 100,
            retain_messages: 0,
            retain_events: 1_000,
            ..Self::default()
        }
    }
}

/// How to run a [`super::LocalAgent`].
#[derive(Debug, Clone)]
pub struct LocalAgentConfig {
    /// Where to listen. TCP port 0 picks a free port (see [`super::LocalAgentHandle::address`]).
    pub address: Address,
    /// Allow a TCP address that is not loopback (logged as a warning).
    pub allow_remote: bool,
    /// Stop when a client sends `CoreAgentShutdown` (default true).
    pub honor_shutdown_command: bool,
    /// Append one JSON line per finished request to this file.
    pub export: Option<PathBuf>,
    /// Version reported to `CoreAgentVersion`.
    pub version: String,
    /// Memory and protocol bounds.
    pub limits: Limits,
}

impl LocalAgentConfig {
    /// Defaults for `address`.
    pub fn new(address: Address) -> Self {
        Self {
            address,
            allow_remote: false,
            honor_shutdown_command: true,
            export: None,
            version: env!("CARGO_PKG_VERSION").to_owned(),
            limits: Limits::default(),
        }
    }
}
