//! The local core agent: the core agent's side of the protocol, aggregation and display.
