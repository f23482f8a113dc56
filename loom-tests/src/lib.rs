//! Loom models of silt's lock-free parts; run with RUSTFLAGS="--cfg loom".
