//! apalis integration tests (being written).
