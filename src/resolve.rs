//! Background resolution of index entries the writer could not compare
//! without the disk (see `crate::index`): for each, read the old record's
//! key on the I/O threads and, if it is the written key's, remove the
//! stale entry (and, after a delete, the tombstone entry that hid it).
//!
//! Until then lookups stay right (they compare keys, newest first); what
//! waits is memory, `stats().keys` (which counts such a key twice) and the
//! space accounting of the old record. `Db::flush` waits for it.

use crate::index::Entry;
use crate::registry::Source;
use crate::shared::Shared;
use crate::space::SpaceDelta;
use crate::sync::Ordering;
use bytes::Bytes;
use futures::stream::{FuturesUnordered, StreamExt};
use std::sync::Arc;
use tokio::sync::mpsc;

/// Resolutions run at once (each reads a few record headers).
const CONCURRENT: usize = 64;

/// A written key whose entry sits beside entries of unknown keys.
#[derive(Debug)]
pub(crate) struct Resolve {
    pub hash: u64,
    pub key: Bytes,
    /// The write's entry (a tombstone entry for a delete).
    pub newest: Entry,
    /// The entries whose records were not in memory, with their files.
    pub unknown: Vec<(Entry, Option<Source>)>,
}

/// Starts the resolver task on `rt`; it ends once the sender is dropped
/// and its work is done.
pub(crate) fn spawn(
    rt: &tokio::runtime::Handle,
    shared: Arc<Shared>,
) -> mpsc::UnboundedSender<Resolve> {
    let (tx, rx) = mpsc::unbounded_channel();
    rt.spawn(run(shared, rx));
    tx
}

/// Counts a job as pending before the writer sends it.
pub(crate) fn started(shared: &Shared) {
    shared.resolving.fetch_add(1, Ordering::AcqRel);
}

async fn run(shared: Arc<Shared>, mut rx: mpsc::UnboundedReceiver<Resolve>) {
    let mut running = FuturesUnordered::new();
    let mut open = true;
    while open || !running.is_empty() {
        tokio::select! {
            job = rx.recv(), if open && running.len() < CONCURRENT => match job {
                Some(job) => running.push(resolve(&shared, job)),
                None => open = false,
            },
            Some(()) = running.next(), if !running.is_empty() => {}
        }
    }
    // Jobs never started (the writer is gone) count as done.
    while rx.try_recv().is_ok() {
        finished(&shared);
    }
}

/// Counts a job as done.
pub(crate) fn finished(shared: &Shared) {
    if shared.resolving.fetch_sub(1, Ordering::AcqRel) == 1 {
        shared.resolved.notify_waiters();
    }
}

async fn resolve(shared: &Shared, job: Resolve) {
    let mut space = SpaceDelta::default();
    let mut all_read = true;
    for (entry, source) in &job.unknown {
        // Gone: evicted, and its entries with it.
        let Some(source) = source else { continue };
        match shared.header_if_key(source, *entry, &job.key).await {
            Ok(Some(header)) => {
                if shared.index.remove_at(job.hash, entry.loc).is_some() {
                    space.died(entry.loc.file_id, header.record_len() as u64);
                }
            }
            Ok(None) => {}
            Err(e) => {
                all_read = false;
                tracing::warn!(error = %e, file_id = entry.loc.file_id,
                    "could not read a record to resolve an overwrite; its index entry stays");
            }
        }
    }
    // The tombstone entry hid the old ones; with them gone it hides
    // nothing. If one could not be read, it must stay.
    if job.newest.tombstone && all_read {
        shared.index.remove_at(job.hash, job.newest.loc);
    }
    shared.space.apply(space);
    finished(shared);
}
