//! Drop and error counters, readable at any time with [`crate::stats`].

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

macro_rules! counters {
    ($( $(#[$doc:meta])* $name:ident ),* $(,)?) => {
        /// A snapshot of the agent's counters. Every datum the agent could not deliver is counted
        /// under exactly one reason.
        #[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
        pub struct Stats {
            $( $(#[$doc])* pub $name: u64, )*
        }

        #[derive(Debug, Default)]
        pub(crate) struct Counters {
            $( pub(crate) $name: AtomicU64, )*
        }

        impl Counters {
            pub(crate) fn snapshot(&self) -> Stats {
                Stats { $( $name: self.$name.load(Relaxed), )* }
            }
        }
    };
}

counters! {
    /// Finished real requests handed to the sender.
    requests_queued,
    /// Requests written to the core agent.
    requests_sent,
    /// Requests not reported by the sampling or ignore rules (not a loss).
    requests_sampled_out,
    /// Requests dropped because the queue was full.
    dropped_queue_full,
    /// Requests dropped because the agent was shutting down or not running.
    dropped_not_running,
    /// Messages dropped because they exceeded the frame size limit.
    dropped_too_large,
    /// Messages dropped after being resent too often.
    dropped_after_retries,
    /// Spans not recorded because a request reached its span limit.
    spans_dropped_limit,
    /// Spans, tags or strings not recorded because a request's storage was full.
    data_dropped_capacity,
    /// Events (metadata, samplers) dropped because the queue was full.
    events_dropped_queue_full,
    /// Requests of carried tasks that finished after the request they were carried from.
    carried_too_late,
    /// Context tags refused by the key/value rules.
    context_rejected,
    /// Connection attempts that failed.
    connect_failures,
    /// Connections lost while writing or reading.
    connections_lost,
    /// Messages sent again on a new connection after the old one failed.
    messages_resent,
    /// Replies that were not `Success` or could not be decoded.
    reply_errors,
    /// Replies received.
    replies,
}

impl Stats {
    /// Everything that was lost (sampling excluded).
    pub fn total_dropped(&self) -> u64 {
        self.dropped_queue_full
            + self.dropped_not_running
            + self.dropped_too_large
            + self.dropped_after_retries
            + self.spans_dropped_limit
            + self.data_dropped_capacity
            + self.events_dropped_queue_full
            + self.carried_too_late
    }
}

pub(crate) fn add(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Relaxed);
}

pub(crate) fn inc(c: &AtomicU64) {
    c.fetch_add(1, Relaxed);
}
