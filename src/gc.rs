//! Space reclamation. Cache mode (`Builder::capacity`): when published
//! segments pass the capacity, the oldest are dropped, FIFO, and their keys
//! leave the index. (Compaction of dead bytes is a later issue.)
//!
//! The order makes concurrent writers and readers safe:
//! 1. remove each of the segment's index entries that still points into it
//!    (a compare-and-remove, so a newer write of the key is kept);
//! 2. remove the segment from the registry (a reader holding its `Arc`, or
//!    `Bytes` of it, keeps the mapping);
//! 3. delete the file and fsync the directory.
//!
//! A reader that found a location just before step 1 meets a missing file
//! and reads the key as absent, which it now is.

use crate::error::{Error, Result};
use crate::index::Location;
use crate::registry::segment_path;
use crate::segment::{decode_footer, scan_records, Segment};
use crate::shared::Shared;
use crate::sync::{lock, Ordering};

/// Evicts the oldest segments until published segments fit in the
/// capacity (at open). A no-op without one.
pub(crate) fn evict_over_capacity(shared: &Shared) -> Result<()> {
    let _one_at_a_time = lock(&shared.evicting);
    make_room(shared, 0)
}

/// Runs `publish` (which registers a new segment of `size` bytes) after
/// evicting enough old segments that the published total stays within the
/// capacity, all under one lock so two flush workers cannot both overshoot.
pub(crate) fn publish_within_capacity(
    shared: &Shared,
    size: u64,
    publish: impl FnOnce() -> Result<()>,
) -> Result<()> {
    let _one_at_a_time = lock(&shared.evicting);
    make_room(shared, size)?;
    publish()
}

fn make_room(shared: &Shared, incoming: u64) -> Result<()> {
    let Some(capacity) = shared.config.capacity else {
        return Ok(());
    };
    loop {
        let (total, oldest) = shared.registry.segments_by_age();
        if total + incoming <= capacity {
            return Ok(());
        }
        let Some(segment) = oldest else { return Ok(()) };
        evict(shared, &segment)?;
    }
}

fn evict(shared: &Shared, segment: &Segment) -> Result<()> {
    let id = segment.file_id();
    let _span = tracing::debug_span!("evict", file_id = id).entered();
    let image = segment.bytes(0, segment.len()).unwrap_or_default();
    let entries = match decode_footer(image) {
        Ok(f) => f.entries,
        Err(_) => scan_records(image, false).entries,
    };
    for e in entries.iter().filter(|e| !e.delete) {
        let here = Location {
            file_id: id,
            offset: e.offset,
        };
        shared.index.remove(e.hash, |loc| loc == here);
    }
    shared.registry.remove(id);
    let dir = shared.registry.data_dir();
    let path = segment_path(dir, id);
    shared
        .vfs
        .remove_file(&path)
        .map_err(|e| Error::io("delete evicted segment", &path, e))?;
    shared
        .vfs
        .sync_dir(dir)
        .map_err(|e| Error::io("fsync data directory", dir, e))?;
    shared.counters.evictions.fetch_add(1, Ordering::Relaxed);
    shared
        .counters
        .evicted_bytes
        .fetch_add(segment.len() as u64, Ordering::Relaxed);
    Ok(())
}
