//! Shrinking a failing case: drop runs of operations while it still fails
//! (delta debugging), so what is printed is short enough to read.

use crate::case::Case;
use crate::run::run_isolated;
use std::time::Duration;

/// The shortest case found that still fails, with its failure, after at
/// most `budget` runs. A failure that depends on timing may not repeat in
/// every run; then the case stays longer.
pub fn shrink(case: &Case, failure: String, budget: usize, limit: Duration) -> (Case, String) {
    let mut best = (case.clone(), failure);
    let mut runs = 0;
    let mut chunk = best.0.ops.len().div_ceil(2).max(1);
    loop {
        let mut i = 0;
        let mut removed = false;
        while i < best.0.ops.len() && runs < budget {
            let mut cand = best.0.clone();
            cand.ops.drain(i..(i + chunk).min(cand.ops.len()));
            runs += 1;
            match run_isolated(&cand, limit) {
                Err(e) if !e.starts_with("hung") => {
                    best = (cand, e);
                    removed = true;
                }
                _ => i += chunk,
            }
        }
        if runs >= budget || (chunk == 1 && !removed) {
            break;
        }
        if !removed {
            chunk = chunk.div_ceil(2);
        }
    }
    best
}
