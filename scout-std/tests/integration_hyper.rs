//! hyper integration tests (being written).
