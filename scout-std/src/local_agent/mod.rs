//! The local core agent: the core agent's side of the protocol, aggregation and display.
//!
//! Scout's real core agent is a closed binary downloaded at run time. This module is a small,
//! self-contained replacement that needs no account and no download: it accepts the same socket
//! protocol, rebuilds every request, aggregates per endpoint and shows the result in the terminal
//! (binary `scout-local-agent`) or to a test that runs it in-process ([`LocalAgent::start`]).
//!
//! # Design
//!
//! * **Transport** ([`server`]): a tokio accept loop on a Unix socket or a TCP address
//!   ([`Address`]). TCP must be loopback unless [`LocalAgentConfig::allow_remote`] is set (logged).
//!   Unix sockets are created in a mode-0700 directory when the directory is missing, and the socket
//!   file itself is mode 0600 before it becomes reachable (bound in a private staging directory,
//!   then hard-linked into place). A stale socket file that does not answer is replaced; one that
//!   answers means "already running" ([`StartError::AlreadyRunning`], exit status 3 of the binary).
//! * **Framing**: 4-byte big-endian length + UTF-8 JSON, strict request/reply lock-step per
//!   connection, any number of connections. Frames above [`Limits::max_frame_bytes`] get a
//!   `Failure` reply and the connection is closed (the stream cannot be resynchronised); a frame
//!   that stops making progress for [`Limits::frame_timeout`] closes the connection; the bytes of
//!   partially received frames are bounded across all connections by a semaphore
//!   ([`Limits::max_inflight_bytes`]). Memory for a frame grows with the bytes actually received,
//!   never with the announced length.
//! * **Commands** (`protocol`, `scan`): each frame is decoded straight into a typed command whose
//!   ids and names borrow from the frame (no [`serde_json::Value`] tree; a `Value` of the frame is
//!   built only when frames are retained for [`LocalAgentHandle::messages`]): first by a
//!   hand-written scanner for the frames agents send, which gives up on anything unusual, then
//!   (for those) by the serde decoder, whose results and errors are the reference.
//!   Decoding happens before the state lock is taken, so connections decode in parallel.
//!   Invalid JSON, unknown commands, malformed fields and data commands before `Register` get a
//!   `{"Failure": {"message": ..}}` reply; the connection stays usable and nothing is stored. A
//!   `BatchCommand` is decoded completely before any of it is applied, so one bad element rejects
//!   the whole batch. Replies have the real shape: `{"<Command>": {"id": null, "result":
//!   "Success"}}`, plus `"version"` for `CoreAgentVersion`. One extension: `LocalAgentSummary`
//!   returns the summary text and counters ([`client::summary`]).
//! * **Rebuilding** (`rebuild`): request and span state is created by whichever command comes
//!   first, so any order works (children first as Python sends them, parents first as Node and PHP
//!   do, one command per frame as older agents do, or one batch). Inside a batch, `FinishRequest`
//!   is applied after the other commands. Parent links are resolved at finish; spans are returned
//!   in tree pre-order with depth, duration and exclusive time. Missing timestamps are replaced by
//!   the receive time; spans never stopped end with the request (a warning is recorded).
//!   Unfinished requests are bounded in count and approximate bytes and evicted after
//!   [`Limits::pending_timeout`] without a command. A request keeps its strings in one text
//!   buffer and its spans and tags in flat vectors (reused through a pool), so a command
//!   allocates nothing; the public [`FinishedRequest`] is built from that form only when asked
//!   for (request history, export, slowest traces).
//! * **Aggregation** (`aggregate`): per application (`Register.app`) and endpoint (the
//!   `Controller/...` or `Job/...` span, renamed by a `transaction.name` tag): call and error counts
//!   (`error` tag `"true"`), a log-linear latency histogram (mean, p50/p95/p99), exclusive time by
//!   span kind (first segment of the operation), and the slowest few traces. Requests tagged
//!   `ignore_transaction` are kept in [`LocalAgentHandle::requests`] but not aggregated, which is
//!   what the real core agent does with them. Every bound counts what it drops ([`Counters`]).
//! * **Output** (`summary`): a plain-text endpoint table and the slowest trace as an indented
//!   waterfall; the binary prints it every `--refresh` seconds and at exit, and writes one JSON line
//!   per finished request to `--export FILE` (schema: [`FinishedRequest`], documented in
//!   `docs/local-agent.md`).
//! * **Command line** ([`cli`]): compatible with the core agent's `start` (section 2.5 of the
//!   spec), plus `probe`, `summary` and `shutdown`.
//! * **Launch through the manager** ([`install_as_core_agent`], [`Sandbox`]; `download`
//!   feature): the binary installed as a verified core agent, so that [`crate::install`]'s own
//!   launch path starts it.
//!
//! All state sits behind one mutex that is held only for the synchronous handling of a single
//! frame; no lock is held across an `.await`.
//!
//! # Example
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use scout_std::local_agent::{Address, LocalAgent, LocalAgentConfig};
//! use std::time::Duration;
//!
//! let agent = LocalAgent::start(LocalAgentConfig::new(Address::parse("tcp://127.0.0.1:0")?)).await?;
//! println!("point the language agent at {}", agent.address());
//! if agent.wait_for_requests(1, Duration::from_secs(5)).await {
//!     println!("{}", agent.summary());
//! }
//! agent.shutdown().await;
//! # Ok(()) }
//! ```

mod address;
mod aggregate;
pub mod cli;
pub mod client;
mod config;
mod hash;
#[cfg(feature = "download")]
mod install;
mod logger;
mod model;
mod protocol;
mod rebuild;
mod scan;
pub mod server;
mod state;
mod summary;
#[cfg(test)]
mod test_rng;
mod timestamp;

pub use address::{Address, AddressError};
pub use aggregate::{EndpointSummary, Histogram, KindTime, OVERFLOW_ENDPOINT};
pub use client::RemoteSummary;
pub use config::{Limits, LocalAgentConfig};
#[cfg(feature = "download")]
pub use install::{
    CORE_AGENT_BINARY, LOCAL_AGENT_BIN_ENV, SANDBOX_FULL_NAME, Sandbox, find_local_agent_binary,
    install_as_core_agent, shutdown_and_wait,
};
pub use model::{AppEvent, Counters, FinishedRequest, FinishedSpan, ReceivedMessage};
#[doc(hidden)]
pub use protocol::set_fast_decode;
pub use server::{LocalAgent, LocalAgentHandle, StartError};
pub use state::Ingest;
pub use timestamp::Timestamp;
