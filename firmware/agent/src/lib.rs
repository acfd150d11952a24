//! The demo firmware's `scout_embassy`.
//!
//! The firmware compiles the shared demo application (`scout-embassy/examples/common/app.rs`)
//! unchanged. That code names `scout_embassy::Agent` with the default sizes, which suit a host
//! or a roomy MCU. The firmware depends on this crate under the name `scout-embassy` instead,
//! so `Agent` here is the real agent with sizes fitted to the demo's transactions (4 spans,
//! 2 tags, 6 names: two 64-byte slots) and its state in a zero-initialised `static` of its own, and with the
//! `no-agent` feature a set of no-op stubs with the same API, which measures what the agent
//! costs.
#![no_std]

#[cfg(not(feature = "no-agent"))]
pub use real::*;
#[cfg(feature = "no-agent")]
pub use stub::*;

#[cfg(not(feature = "no-agent"))]
mod real {
    pub use scout_embassy::{AgentConfig, AgentStats, LinkEnd, Transaction};
    use scout_embassy::{AgentState, StateRef};

    /// Two request slots of 64 bytes (a demo request takes about 45 bytes framed: one
    /// recording while one waits for the UART), 8 names.
    type State = AgentState<2, 8, 64>;

    /// The agent's state, in a `static` of its own: all zeros, so in `.bss` (no flash for its
    /// initial value), while the app's `AGENT` keeps only the configuration.
    static STATE: State = State::new();

    /// Where the agent finds [`STATE`].
    #[derive(Debug)]
    pub struct Home;

    impl StateRef<2, 8, 64> for Home {
        const NEW: Self = Home;
        fn state(&self) -> &State {
            &STATE
        }
    }

    /// The agent.
    pub type Agent = scout_embassy::Agent<2, 8, 64, Home>;
}

#[cfg(feature = "no-agent")]
mod stub {
    use scout_core::Value;

    /// Stub of `scout_embassy::AgentConfig`.
    #[derive(Debug, Clone, Copy)]
    pub struct AgentConfig;

    impl AgentConfig {
        /// Ignores the configuration.
        pub const fn from_core(_config: &scout_core::Config) -> Self {
            Self
        }
        /// Ignored.
        pub const fn device_id(self, _id: &'static str) -> Self {
            self
        }
        /// Ignored.
        pub const fn firmware(self, _rev: &'static str) -> Self {
            self
        }
        /// Ignored.
        pub const fn token(self, _token: &'static str) -> Self {
            self
        }
    }

    /// Stub of `scout_embassy::AgentStats`: always one link, nothing queued.
    #[derive(Debug, Clone, Copy, Default)]
    pub struct AgentStats {
        /// Always 1, so the app does not wait for a link.
        pub links: u32,
    }

    /// Stub of `scout_embassy::Agent`: records nothing.
    #[derive(Debug)]
    pub struct Agent;

    impl Agent {
        /// A stub agent.
        pub const fn new(_config: AgentConfig) -> Self {
            Self
        }
        /// Counters: one link, so the app never waits.
        pub fn stats(&self) -> AgentStats {
            AgentStats { links: 1 }
        }
        /// Nothing is ever pending.
        pub fn pending(&self) -> usize {
            0
        }
        /// A transaction that records nothing.
        pub fn transaction(&self, _operation: &'static str) -> Transaction {
            Transaction
        }
    }

    /// Stub of `scout_embassy::Transaction`.
    #[derive(Debug)]
    pub struct Transaction;

    impl Transaction {
        /// A span guard that does nothing.
        pub fn span(&self, _operation: &'static str) -> Span {
            Span
        }
        /// Ignored.
        pub fn tag_span(&self, _key: &'static str, _value: Value<'_>) {}
        /// Ignored.
        pub fn tag_request(&self, _key: &'static str, _value: Value<'_>) {}
        /// Ignored.
        pub fn finish(self) {}
    }

    /// Stub of `scout_embassy::Span`.
    #[derive(Debug)]
    pub struct Span;
}
