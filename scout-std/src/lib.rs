//! Scout APM agent for Rust services.

pub mod local_agent;
#[cfg(feature = "download")]
pub mod manager;
