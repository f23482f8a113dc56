//! Signals for operators: metrics through the `metrics` crate's facade
//! (feature `metrics`; a no-op without it, not even a clock read) and a
//! `warn` for an I/O step or a wait slower than `Builder::slow_op_warning`.
//!
//! Metric names (all prefixed `silt_`): `write_seconds`, `get_seconds`
//! (histograms per call), `written_bytes_total`, `read_bytes_total`,
//! `group_size` (writes per WAL group), `wal_write_seconds`,
//! `fdatasync_seconds`, `backpressure_wait_seconds`, `queue_depth` (gauge:
//! requests waiting for the writer), `flush_seconds` (per slab),
//! `gc_seconds` (per compaction), `evictions_total`.

use std::time::{Duration, Instant};

/// A start time, only where something will read it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timer(#[cfg(feature = "metrics")] Instant);

impl Timer {
    #[inline]
    pub fn start() -> Timer {
        Timer(
            #[cfg(feature = "metrics")]
            Instant::now(),
        )
    }

    /// Records the time since `start` in histogram `name`.
    #[inline]
    pub fn record(self, name: &'static str) {
        #[cfg(feature = "metrics")]
        metrics::histogram!(name).record(self.0.elapsed().as_secs_f64());
        #[cfg(not(feature = "metrics"))]
        let _ = name;
    }
}

/// Runs a step that may be slow (disk, or a wait for one): records its
/// duration in histogram `name` and warns if it took `slow` or more.
pub(crate) fn timed<T>(
    name: &'static str,
    what: &'static str,
    slow: Duration,
    step: impl FnOnce() -> T,
) -> T {
    let start = Instant::now();
    let out = step();
    took(name, what, slow, start.elapsed());
    out
}

/// See [`timed`], for a duration measured by the caller.
pub(crate) fn took(name: &'static str, what: &'static str, slow: Duration, d: Duration) {
    #[cfg(feature = "metrics")]
    metrics::histogram!(name).record(d.as_secs_f64());
    #[cfg(not(feature = "metrics"))]
    let _ = name;
    if d >= slow {
        tracing::warn!(
            ms = d.as_secs_f64() * 1e3,
            threshold_ms = slow.as_secs_f64() * 1e3,
            "slow {what}"
        );
    }
}

/// Adds `n` to counter `name`.
#[inline]
pub(crate) fn count(name: &'static str, n: u64) {
    #[cfg(feature = "metrics")]
    metrics::counter!(name).increment(n);
    #[cfg(not(feature = "metrics"))]
    let _ = (name, n);
}

/// Records `v` in histogram `name` (a size, not a time).
#[inline]
pub(crate) fn record(name: &'static str, v: f64) {
    #[cfg(feature = "metrics")]
    metrics::histogram!(name).record(v);
    #[cfg(not(feature = "metrics"))]
    let _ = (name, v);
}

/// Sets gauge `name` to `v` (only built with the feature: its callers
/// compute `v` only then).
#[cfg(feature = "metrics")]
#[inline]
pub(crate) fn gauge(name: &'static str, v: f64) {
    metrics::gauge!(name).set(v);
}
