//! # scout-embassy
//!
//! The Scout APM span model on a microcontroller: a `#![no_std]`, allocation-free static agent
//! for Embassy firmware. Each transaction takes a request slot and its calls are appended there
//! as the events of the compact device wire format ([`scout_core::device`]: span start, stop,
//! tag, end; names as small ids; usually 5-7 bytes per span, written by hand: no serde or
//! postcard code on the device) by [`scout_core::device::Recorder`]. A forwarding task sends
//! finished requests from their slots to any [`embedded_io_async::Write`] link (UART, USB CDC,
//! TCP) towards a gateway, which replays them into a [`scout_core::Request`] (the std agent's
//! span model and rules) and turns them into core-agent commands.
//!
//! The firmware never blocks, never panics and never waits for a host: finished requests wait
//! in their slots for a link; when every slot is busy new transactions record nothing, and
//! when a slot is full the events that do not fit are dropped, all counted
//! ([`scout_core::device::DeviceDrops`], also sent to the gateway).
//!
//! ```no_run
//! use scout_embassy::{Agent, AgentConfig};
//!
//! static AGENT: Agent = Agent::new(
//!     AgentConfig::from_core(&scout_core::Config::new().span_limit(64))
//!         .device_id("sensor-17")
//!         .firmware("1.4.2")
//!         .token("fleet-token"),
//! );
//!
//! async fn read_sensor() {
//!     let tx = AGENT.transaction("Job/read_sensor");
//!     {
//!         let _span = tx.span("I2C/read");
//!         // ... talk to the sensor ...
//!         tx.tag_span("bytes", 6.into());
//!     }
//!     tx.tag_request("sensor", scout_core::Value::Static("bme280"));
//!     tx.finish();
//! }
//!
//! // In a task: `AGENT.run_link(uart_rx, uart_tx).await` (again after a reconnect).
//! ```
//!
//! Features: `std` (host tests and examples: embassy-time's std driver and critical-section's
//! std implementation), `defmt` (`defmt::Format` for the public types and the crate's logs;
//! without it there is no logging code at all).
#![no_std]
#![warn(clippy::std_instead_of_core, clippy::alloc_instead_of_core)]

mod fmt;

mod agent;
mod link;

pub use agent::{Agent, AgentConfig, AgentState, AgentStats, Span, StateRef, Transaction};
pub use link::LinkEnd;
