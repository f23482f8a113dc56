//! Placeholder, replaced by the replicated-write benchmark.
fn main() {}
