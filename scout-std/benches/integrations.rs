//! Integration benchmarks (being written).
fn main() {}
