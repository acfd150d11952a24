//! # scout-std
//!
//! The Scout APM agent for Rust services and workers. After [`install`], transactions and
//! spans recorded with this API (or by the framework integrations) reach Scout's core agent
//! exactly as the Python agent's do, while the application never waits for the agent:
//! recording a span touches only a thread-local request, finished requests go to one
//! background sender through a bounded queue, and when anything is full the newest data is
//! dropped and counted ([`stats`]).
//!
//! ```no_run
//! use scout_core::Config;
//! use scout_std::FutureExt;
//!
//! # async fn handler() {}
//! # async fn run() {
//! // Settings from code, overridden by SCOUT_* environment variables.
//! let _agent = scout_std::install(Config::new().name("My App").key("YOUR_KEY").monitor(true));
//!
//! // A background job, synchronously:
//! scout_std::with_background_transaction("NightlyReport", || {
//!     let _span = scout_std::instrument("Build report");
//! });
//!
//! // A web request, asynchronously: the request follows the future across .await points.
//! async {
//!     scout_std::Context::add("user_id", 42);
//!     handler().instrument_kind("HTTP", "GET").await;
//! }
//! .web_transaction("UsersController#show")
//! .await;
//! # }
//! ```
//!
//! Also here: [`local_agent`], a local core agent that shows traces with no account, and
//! [`manager`], which downloads, verifies and launches Scout's core agent.

mod agent;
pub mod backtrace;
#[path = "build_support.rs"]
pub mod build;
mod context;
mod exchange;
pub mod gateway;
pub mod integrations;
#[cfg(feature = "download")]
pub mod launch;
pub mod local_agent;
#[cfg(feature = "download")]
pub mod manager;
mod metadata;
pub mod pool;
mod sender;
mod settings;
mod stats;

pub use agent::{
    AgentGuard, InstallOptions, QUEUE_CAPACITY, ShutdownReport, flush, install, install_with,
    set_setting, shutdown, stats, with_config,
};
pub use context::{
    Carry, Context, FutureExt, Instrumented, SpanGuard, Transaction, TransactionGuard,
    background_transaction, carry, current_request_id, ignore_transaction, in_request, instrument,
    instrument_fn, instrument_kind, instrument_with_flags, now, rename_transaction, request_scope,
    request_start, start_background_transaction, start_web_transaction, stop_transaction,
    tag_request, tag_span, web_transaction, with_background_transaction, with_web_transaction,
};
pub use metadata::RUSTC_VERSION;
pub use sender::MAX_FRAME;
pub use settings::os_hostname;
pub use stats::Stats;

/// Re-exported core types used in this API.
pub use scout_core::{Config, SpanFlags, Value};
