//! # scout-core
//!
//! The `#![no_std]`, allocation-free core of the Scout APM Rust agent: the span model, the
//! configuration, and the wire encoding of Scout's core-agent protocol. Everything else (the
//! std agent, the Embassy adapter for firmware, the gateway) is built on it.
//!
//! - [`Config`]: every setting with its documented default, `const` builders, and `SCOUT_*`
//!   environment layering from key/value pairs.
//! - [`Request`]: a tracked request with its span stack, tags and drop counters, over
//!   fixed-capacity or pluggable [`storage`].
//! - [`command`]: the core-agent commands as JSON, byte-identical to the Python agent's, with
//!   4-byte big-endian framing, streamed into any [`json::Sink`]; [`reply`] decodes the answers.
//! - [`transport`]: the non-blocking [`Transport`] trait with error kinds.
//! - [`sampling`]: ignore and sampling decisions.
//!
//! Nothing here allocates, blocks or panics on bad input: capacity problems are values
//! ([`DropReason`], [`config::ErrorKind`], [`json::BufferFull`]) and are counted.
//!
//! ```
//! use scout_core::{Request, RequestIds, SpanFlags, Timestamp, Value};
//! use scout_core::command::{write_frame, RequestBatch};
//! use scout_core::json::SliceSink;
//!
//! let mut req: Request = Request::new();
//! req.begin(RequestIds::from_parts([1; 16], [2, 3]), Timestamp(1_700_000_000_000_000), 1500);
//! req.start_span("Job/SendEmail".into(), Timestamp(1_700_000_000_000_010), SpanFlags::NO_BACKTRACE);
//! req.tag_request("recipient_count".into(), Value::Int(3)).unwrap();
//! req.stop_span(Timestamp(1_700_000_000_004_000)).unwrap();
//!
//! let mut buf = [0u8; 2048];
//! let mut sink = SliceSink::new(&mut buf);
//! let n = write_frame(&RequestBatch(&req), &mut sink, 1 << 20).unwrap();
//! assert_eq!(n, sink.len());
//! ```
#![no_std]
#![warn(clippy::std_instead_of_core, clippy::alloc_instead_of_core)]

pub mod command;
pub mod config;
pub mod device;
pub mod id;
pub mod json;
pub mod reply;
pub mod request;
pub mod sampling;
pub mod storage;
pub mod time;
pub mod transport;
pub mod value;

pub use config::Config;
pub use id::{Entropy, RequestIds, SplitMix64};
pub use request::{DropReason, Drops, Request, SpanFlags, SpanIdx, SpanStart, SpanStop};
pub use storage::{Buffer, Fixed, Storage};
pub use time::{Clock, Timestamp};
pub use transport::{ErrorKind, Transport};
pub use value::{ContextError, RawJson, Text, Value, check_context};

/// The `language` this agent reports in `Register` and metadata.
pub const LANGUAGE: &str = "rust";
/// The protocol version sent in `Register`.
pub const API_VERSION: &str = "1.0";
/// This crate's version.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
