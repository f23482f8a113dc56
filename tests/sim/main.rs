//! The simulator (issue 26): seeded random operations against the real
//! engine, checked against a model after every step, the way
//! FoundationDB's simulation and TigerBeetle's VOPR find the bugs no one
//! thought to write a test for.
//!
//! Each seed makes a case (`case.rs`): a configuration (durability, cache
//! mode, background GC off, at its default or aggressive) and a list of
//! operations: puts (some larger than a slab), deletes, batches, page
//! cache drops (so overwrites, deletes, reads and GC meet records on disk
//! only), flush, sync, compact, close and reopen, process crashes, power
//! cuts of three kinds, a follower's refresh, and one-shot EIO on reads,
//! writes and fdatasyncs. Two pairs of keys collide in the index. After
//! every step every read path (get, contains_key, get_range, get_many,
//! scan), `stats().keys` and the space accounting (total live bytes, and a
//! per-file recount) are checked against the history (`history.rs`); after
//! a reopen or crash, the recovered state must be one the store's
//! durability allows.
//!
//! A failing seed prints itself and the shortest case it shrank to, with
//! the command that replays it:
//!
//! ```sh
//! SILT_SIM_CASE='durability=Buffered cache=false gc=0.95; put 3 100; ...' \
//!     cargo test --release --test sim -- --ignored --exact replay --nocapture
//! SILT_SIM_SEEDS=1000 SILT_SIM_FIRST=5000 cargo test --release --test sim -- --exact seeds
//! ```

#[path = "../common/mod.rs"]
mod common;

mod case;
mod history;
mod keys;
mod run;
mod shrink;

use case::Case;
use std::time::{Duration, Instant};

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Most a case may take before it counts as hung.
const LIMIT: Duration = Duration::from_secs(120);

/// Runs seeds `first..first + n`; on a failure, shrinks it and panics
/// with the seed, the shrunk case and how to replay it. With
/// `SILT_SIM_KEEP_GOING` set, prints each failure and goes on, and fails
/// at the end with the count (a survey of many seeds).
fn run_seeds(first: u64, n: u64, ops: usize) {
    let started = Instant::now();
    let keep_going = std::env::var("SILT_SIM_KEEP_GOING").is_ok();
    let mut failed = 0;
    for seed in first..first + n {
        let case = Case::generate(seed, ops);
        let res = run::run_isolated(&case, LIMIT);
        if let (Err(failure), true) = (&res, keep_going) {
            eprintln!("seed {seed} failed: {failure}");
            failed += 1;
            continue;
        }
        if let Err(failure) = res {
            eprintln!("seed {seed} failed: {failure}\nshrinking...");
            let (small, why) = shrink::shrink(&case, failure.clone(), 300, LIMIT);
            panic!(
                "seed {seed} failed: {failure}\n\
                 replay the seed: SILT_SIM_FIRST={seed} SILT_SIM_SEEDS=1 SILT_SIM_OPS={ops} cargo test --release --test sim -- --exact seeds\n\
                 shrunk to {} ops, failing with: {why}\n\
                 replay it: SILT_SIM_CASE='{small}' cargo test --release --test sim -- --ignored --exact replay --nocapture",
                small.ops.len()
            );
        }
    }
    eprintln!(
        "simulator: seeds {first}..{} ({ops} ops each): {failed} failed, in {:.1} s",
        first + n,
        started.elapsed().as_secs_f64()
    );
    assert_eq!(failed, 0, "seeds failed");
}

/// CI's bounded run (`SILT_SIM_SEEDS`, `SILT_SIM_FIRST`, `SILT_SIM_OPS`
/// change it).
#[test]
fn seeds() {
    run_seeds(
        env("SILT_SIM_FIRST", 0),
        env("SILT_SIM_SEEDS", 200),
        env("SILT_SIM_OPS", 100) as usize,
    );
}

/// Replays the case in `SILT_SIM_CASE` (printed by a failing run).
#[test]
#[ignore = "replays SILT_SIM_CASE; run by hand"]
fn replay() {
    let text =
        std::env::var("SILT_SIM_CASE").expect("set SILT_SIM_CASE to a case a failing run printed");
    let case: Case = text.parse().unwrap_or_else(|e| panic!("{e}"));
    if let Err(e) = run::run_isolated(&case, LIMIT) {
        panic!("{e}");
    }
}
