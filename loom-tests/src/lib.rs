//! Loom models of silt's lock-free parts. Run with
//! `RUSTFLAGS="--cfg loom" cargo test -p loom-tests --release`; without
//! `--cfg loom` this crate is empty.
