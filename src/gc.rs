//! Space reclamation: compaction (rewriting the live records of mostly-dead
//! segments, [`compact`]) and cache-mode eviction (dropping the oldest
//! segments past `Builder::capacity`).
//!
//! Compaction of one segment F:
//! 1. read F's footer; collect its live records (those the index still
//!    points at) and the tombstones an older file still needs (an older
//!    file holds a record with the key's hash);
//! 2. send them to the writer as `Op::Move`/`Op::MoveTombstone`: it appends
//!    each one only if no newer write of the key exists, and applies a move
//!    as a compare-and-swap of the index entry, so a write that races with
//!    GC always wins;
//! 3. once the writer acknowledged them, make them durable (`Sync`), check
//!    that no index entry points into F any more (retrying the stragglers),
//!    then drop F from the registry and delete it.
//!
//! A reader that found a location in F holds the shard lock while it reads
//! the record (the entry cannot move meanwhile) and an `Arc` of F's mapping
//! afterwards, so deleting F never fails a read. Recovery applies files in
//! id order, and moved records always land in a newer file than every
//! record they supersede, so a crash at any point recovers the same data.
//!
//! Eviction (cache mode) does, in this order:
//! 1. remove each of the segment's index entries that still points into it
//!    (a compare-and-remove, so a newer write of the key is kept);
//! 2. remove the segment from the registry (a reader holding its `Arc`, or
//!    `Bytes` of it, keeps the mapping);
//! 3. delete the file and fsync the directory.
//!
//! Compaction is off in cache mode: eviction reclaims space there.

use crate::error::{Error, Result};
use crate::index::{Entry, Location};
use crate::registry::{segment_path, Source};
use crate::scan::OrderedReads;
use crate::segment::{FooterEntry, Segment};
use crate::shared::Shared;
use crate::slab::FILE_HEADER_LEN;
use crate::space::FileSpace;
use crate::sync::{lock, Ordering};
use crate::writer::{Op, Relocated, Request};
use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};
use tracing::Instrument as _;

/// What a compaction did.
///
/// ```
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// # let dir = tempfile::tempdir().unwrap();
/// let db = silt::Db::builder(dir.path())
///     .slab_size(64 << 10)
///     .gc_threshold(0.0) // no background GC: compact() finds all the garbage
///     .open()
///     .await?;
/// for i in 0..2000u32 {
///     db.put(format!("k{}", i % 100), vec![0u8; 100]).await?; // mostly overwrites
/// }
/// db.flush().await?;
/// let report: silt::CompactionReport = db.compact().await?;
/// assert!(report.files_rewritten > 0 && report.bytes_reclaimed > 0);
/// assert_eq!(db.get(b"k7").await?.unwrap().len(), 100);
/// # db.close().await?;
/// # Ok::<(), silt::Error>(()) }).unwrap();
/// ```
#[non_exhaustive]
#[derive(Debug, Clone, Default)]
pub struct CompactionReport {
    /// Segment files whose live records were rewritten and which were deleted.
    pub files_rewritten: usize,
    /// Segments chosen but kept, because a live record could not be moved
    /// (a value larger than a slab, or one a failed write left behind).
    pub files_kept: usize,
    /// Live records copied forward.
    pub records_moved: u64,
    /// Tombstones copied forward because an older file still holds their key.
    pub tombstones_kept: u64,
    /// Tombstones dropped: no older file holds their key any more.
    pub tombstones_dropped: u64,
    /// Bytes of deleted files, less the bytes written to copy records forward.
    pub bytes_reclaimed: u64,
    /// Wall time of the compaction.
    pub duration: Duration,
}

/// Records sent to the writer per request: small enough that user writes
/// interleave with GC's.
const MOVE_CHUNK_BYTES: usize = 1 << 20;
const MOVE_CHUNK_RECORDS: usize = 1024;
/// Rounds of moving stragglers (live records a racing write kept in place)
/// before a segment is left for the next compaction.
const MOVE_ROUNDS: usize = 3;

/// Compacts every segment for which `pick` says yes, oldest first. One
/// compaction runs at a time; a no-op in cache mode.
pub(crate) async fn compact(
    shared: &Arc<Shared>,
    tx: &mpsc::Sender<Request>,
    pick: Pick,
) -> Result<CompactionReport> {
    let _one_at_a_time = shared.compacting.lock().await;
    // `close` takes this lock after the writer stopped: a compaction that
    // gets it afterwards must not touch the files of a closed store.
    shared.check_open()?;
    let started = Instant::now();
    let mut report = CompactionReport::default();
    if shared.config.capacity.is_some() {
        return Ok(report);
    }
    let span = tracing::info_span!("compact");
    let segments: Vec<(FileSpace, Arc<Segment>)> = shared
        .space
        .files()
        .into_iter()
        .filter_map(|f| match shared.registry.get(f.file_id) {
            Some(Source::Segment(seg)) => Some((f, seg)),
            _ => None,
        })
        .collect();
    let candidates = pick.candidates(segments);
    for seg in candidates {
        shared.check_open()?;
        // Instrumented, not entered: a guard held across awaits would
        // mark whatever else runs on this thread meanwhile.
        let span = tracing::debug_span!(parent: &span, "compact_segment", file_id = seg.file_id());
        compact_segment(shared, tx, &seg, &mut report)
            .instrument(span)
            .await?;
    }
    report.duration = started.elapsed();
    crate::signals::record("silt_gc_seconds", report.duration.as_secs_f64());
    let c = &shared.counters;
    c.gc_runs.fetch_add(1, Ordering::Relaxed);
    c.gc_files
        .fetch_add(report.files_rewritten as u64, Ordering::Relaxed);
    c.gc_reclaimed_bytes
        .fetch_add(report.bytes_reclaimed, Ordering::Relaxed);
    span.in_scope(|| {
        // A routine background pass that found nothing is not news.
        if report.files_rewritten == 0 && report.files_kept == 0 {
            tracing::debug!(
                ms = report.duration.as_secs_f64() * 1e3,
                "compacted nothing"
            );
        } else {
            tracing::info!(
                files = report.files_rewritten,
                kept = report.files_kept,
                moved = report.records_moved,
                reclaimed = report.bytes_reclaimed,
                ms = report.duration.as_secs_f64() * 1e3,
                "compacted"
            )
        }
    });
    Ok(report)
}

/// Which segments a compaction rewrites.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Pick {
    /// Every segment holding dead records (`Db::compact`).
    AnyGarbage,
    /// Segments with dead records whose live bytes are under this share of
    /// the file's size (background GC).
    Threshold(f64),
}

impl Pick {
    /// The segments to rewrite, oldest first. A file's header page,
    /// padding and footer count against it, as its records do: besides
    /// files with dead records, files that are mostly such overhead (a
    /// short-lived store's one small write per open, say) are merged, when
    /// there are at least two of them, so space stays near the live bytes
    /// whatever the history. A lone one is left alone: rewriting it would
    /// only make another.
    fn candidates(self, segments: Vec<(FileSpace, Arc<Segment>)>) -> Vec<Arc<Segment>> {
        let size = |seg: &Segment| seg.len() as u64;
        let mostly_overhead = |f: &FileSpace, seg: &Segment| size(seg) > 2 * f.record_bytes;
        let merge = segments
            .iter()
            .filter(|(f, seg)| mostly_overhead(f, seg))
            .count()
            >= 2;
        segments
            .into_iter()
            .filter(|(f, seg)| {
                let dead = f.live_bytes < f.record_bytes
                    && match self {
                        Pick::AnyGarbage => true,
                        Pick::Threshold(t) => (f.live_bytes as f64) < t * size(seg) as f64,
                    };
                dead || (merge && mostly_overhead(f, seg))
            })
            .map(|(_, seg)| seg)
            .collect()
    }
}

/// Background GC: after each published segment (and once at open), compact
/// the segments whose live ratio is under `gc_threshold`. Stops when the
/// store closes or every handle is gone.
pub(crate) fn spawn_background(
    rt: &tokio::runtime::Handle,
    shared: Arc<Shared>,
    tx: mpsc::WeakSender<Request>,
) {
    let threshold = shared.config.gc_threshold;
    if threshold <= 0.0 || shared.config.capacity.is_some() {
        return;
    }
    shared.gc_wake.notify_one();
    let task_shared = shared.clone();
    let task = rt.spawn(async move {
        let shared = task_shared;
        loop {
            shared.gc_wake.notified().await;
            if shared.check_open().is_err() {
                return;
            }
            let Some(tx) = tx.upgrade() else { return };
            if let Err(e) = compact(&shared, &tx, Pick::Threshold(threshold)).await {
                tracing::warn!(error = %e, "background GC stopped early");
            }
        }
    });
    *lock(&shared.gc_task) = Some(task.abort_handle());
}

async fn ask<T>(
    tx: &mpsc::Sender<Request>,
    make: impl FnOnce(oneshot::Sender<Result<T>>) -> Request,
) -> Result<T> {
    let (reply, rx) = oneshot::channel();
    tx.send(make(reply)).await.map_err(|_| Error::Closed)?;
    // GC only runs while the store does; whoever stopped it reports why.
    rx.await.map_err(|_| Error::Closed)?
}

fn location(id: u32, e: &FooterEntry) -> Location {
    Location {
        file_id: id,
        offset: e.offset,
    }
}

fn is_live(shared: &Shared, id: u32, e: &FooterEntry) -> bool {
    !e.delete && shared.index.entry_at(e.hash, location(id, e)).is_some()
}

/// Runs `f` on the blocking pool: footers are walked through the
/// mappings, which may wait for the disk.
async fn blocking<T: Send + 'static>(
    shared: &Arc<Shared>,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T> {
    crate::runtime::spawn_blocking(shared, f)
        .await
        .map_err(|_| Error::Closed)
}

/// The records of `entries` (all in `seg`, in file order), read in order
/// by the I/O threads where they are not in memory.
async fn read_records(
    shared: &Arc<Shared>,
    seg: &Arc<Segment>,
    entries: &[&FooterEntry],
) -> Result<Vec<crate::read::Record>> {
    let id = seg.file_id();
    let todo = entries
        .iter()
        .map(|e| {
            let entry = Entry::put(location(id, e), u64::from(e.len));
            (entry, Source::Segment(seg.clone()))
        })
        .collect();
    let mut reads = OrderedReads::new(shared.clone(), todo, shared.config.verify_checksums);
    let mut out = Vec::with_capacity(entries.len());
    while let Some((_, rec)) = reads.next().await {
        out.push(rec?);
    }
    Ok(out)
}

async fn compact_segment(
    shared: &Arc<Shared>,
    tx: &mpsc::Sender<Request>,
    seg: &Arc<Segment>,
    report: &mut CompactionReport,
) -> Result<()> {
    let id = seg.file_id();
    let footer_of = seg.clone();
    let entries = blocking(shared, move || Source::Segment(footer_of).entries()).await?;
    let room = shared.config.slab_size - FILE_HEADER_LEN;
    if entries
        .iter()
        .any(|e| e.len as usize > room && is_live(shared, id, e))
    {
        // A live value larger than a slab stays where it is.
        report.files_kept += 1;
        return Ok(());
    }
    let needed = {
        let (shared, deleted) = (shared.clone(), deleted_hashes(&entries));
        blocking(&shared.clone(), move || {
            tombstones_needed(&shared, id, &deleted)
        })
        .await?
    };
    let (keep, drop): (Vec<&FooterEntry>, Vec<&FooterEntry>) = entries
        .iter()
        .filter(|e| e.delete)
        .partition(|e| needed.contains(&e.hash));
    report.tombstones_dropped += drop.len() as u64;
    // What the writer needs to know of other entries is read when sent.
    let mut tombstones: Vec<Op> = read_records(shared, seg, &keep)
        .await?
        .iter()
        .map(|rec| Op::MoveTombstone {
            key: rec.key_bytes(),
            facts: Default::default(),
        })
        .collect();
    let puts: Vec<&FooterEntry> = entries.iter().filter(|e| !e.delete).collect();
    let mut written = 0u64;
    let mut round = 0;
    loop {
        let live: Vec<&&FooterEntry> = puts.iter().filter(|e| is_live(shared, id, e)).collect();
        if live.is_empty() && tombstones.is_empty() {
            break;
        }
        if round == MOVE_ROUNDS {
            tracing::warn!(
                file_id = id,
                live = live.len(),
                tombstones = tombstones.len(),
                "records still live after moving; keeping the segment"
            );
            report.files_kept += 1;
            return Ok(());
        }
        round += 1;
        let mut ops = Vec::with_capacity(live.len() + tombstones.len());
        for op in std::mem::take(&mut tombstones) {
            let key = op.key().clone();
            let facts = shared.facts_for(&key).await;
            ops.push(Op::MoveTombstone { key, facts });
        }
        let live: Vec<&FooterEntry> = live.into_iter().copied().collect();
        for (e, rec) in live.iter().zip(read_records(shared, seg, &live).await?) {
            ops.push(Op::Move {
                key: rec.key_bytes(),
                value: rec.value_bytes(),
                from: location(id, e),
                from_len: e.len,
            });
        }
        let done = send_moves(tx, ops).await?;
        written += done.appended_bytes;
        report.records_moved += done.moves;
        report.tombstones_kept += done.tombstones;
        report.tombstones_dropped += done.tombstones_dropped;
        for op in done.deferred {
            if op.is_delete() {
                // Ask again once the write of its key is applied (or once
                // GC has read what the writer could not tell).
                tombstones.push(op);
            }
        }
    }
    // The moved records must be durable before the only other copy goes.
    ask(tx, |reply| Request::Sync { reply }).await?;
    // An unlink and a directory fsync: on the blocking pool, not the
    // store's runtime thread, where the writer runs.
    let s = shared.clone();
    blocking(shared, move || {
        drop_segment(&s, id, "delete compacted segment")
    })
    .await??;
    report.files_rewritten += 1;
    report.bytes_reclaimed += (seg.len() as u64).saturating_sub(written);
    Ok(())
}

/// Forgets segment `id` (registry, space accounting), deletes its file and
/// fsyncs the directory: the last step of both compaction and eviction,
/// once nothing in the index points into it.
fn drop_segment(shared: &Shared, id: u32, op: &'static str) -> Result<()> {
    // Unlinked (and the unlink made durable) before it is forgotten: while
    // the file may still be on disk, its records must stay where the
    // tombstone check sees them, or a later compaction drops a tombstone
    // that still hides one of its values, which a reopen would bring back.
    // A failure leaves it registered (no index entry points at it any
    // more), and the next compaction or eviction tries again.
    let dir = shared.registry.data_dir();
    let path = segment_path(dir, id);
    let next = shared.registry.max_id().saturating_add(1);
    shared.id_floor.cover(&*shared.vfs, dir, id, next)?;
    match shared.vfs.remove_file(&path) {
        Ok(()) => {}
        // A retry after the unlink went through but its fsync failed.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::io(op, &path, e)),
    }
    shared
        .vfs
        .sync_dir(dir)
        .map_err(|e| Error::io("fsync data directory", dir, e))?;
    shared.registry.remove(id);
    shared.space.forget(id);
    Ok(())
}

/// Sends moves in chunks; each reply means the writer appended or dropped
/// them and applied every earlier write. Returns what it did, and the
/// moves it deferred (a write of their key was not yet applied, or a
/// tombstone whose key's other entries it could not tell).
async fn send_moves(tx: &mpsc::Sender<Request>, moves: Vec<Op>) -> Result<Relocated> {
    let mut done = Relocated::default();
    let mut chunk = Vec::new();
    let mut bytes = 0;
    let mut iter = moves.into_iter().peekable();
    while let Some(op) = iter.next() {
        bytes += op.encoded_len();
        chunk.push(op);
        if bytes >= MOVE_CHUNK_BYTES || chunk.len() >= MOVE_CHUNK_RECORDS || iter.peek().is_none() {
            let moves = std::mem::take(&mut chunk);
            bytes = 0;
            let (outcome_tx, outcome_rx) = oneshot::channel();
            ask(tx, |reply| Request::Relocate {
                moves,
                outcome: outcome_tx,
                reply,
            })
            .await?;
            done.add(outcome_rx.await.unwrap_or_default());
        }
    }
    Ok(done)
}

/// Hashes of the deletes among `entries`.
fn deleted_hashes(entries: &[FooterEntry]) -> HashSet<u64> {
    entries
        .iter()
        .filter(|e| e.delete)
        .map(|e| e.hash)
        .collect()
}

/// Hashes of the tombstones in file `id` (`deleted`) that must be copied
/// forward: an older file (segment or slab) holds a put with the same key
/// hash, which the tombstone still hides. A hash match of a different key
/// only keeps a tombstone longer than needed. Walks the older files'
/// footers through their mappings: run it where blocking is allowed.
fn tombstones_needed(shared: &Shared, id: u32, deleted: &HashSet<u64>) -> HashSet<u64> {
    let mut needed = HashSet::new();
    if deleted.is_empty() {
        return needed;
    }
    for (older, source) in shared.registry.sources() {
        if older >= id {
            break;
        }
        for e in source.entries() {
            if !e.delete && deleted.contains(&e.hash) {
                needed.insert(e.hash);
            }
        }
    }
    needed
}

/// Evicts the oldest segments until published segments fit in the
/// capacity (at open). A no-op without one.
pub(crate) fn evict_over_capacity(shared: &Shared) -> Result<()> {
    let reserved = lock(&shared.evicting);
    make_room(shared, *reserved)
}

/// Room held for a file being written, so that published segments plus
/// the files being written stay within the capacity (cache mode; a plain
/// counter otherwise). Released when the file is published or dropped.
#[derive(Debug)]
pub(crate) struct Reservation<'a> {
    shared: &'a Shared,
    size: u64,
    held: bool,
}

/// Reserves `size` bytes, first evicting old segments until everything
/// published and reserved, plus `size`, fits.
pub(crate) fn reserve(shared: &Shared, size: u64) -> Result<Reservation<'_>> {
    let mut reserved = lock(&shared.evicting);
    make_room(shared, *reserved + size)?;
    *reserved += size;
    Ok(Reservation {
        shared,
        size,
        held: true,
    })
}

impl Reservation<'_> {
    /// Runs `publish` (which registers the file) and turns the reservation
    /// into published bytes, under the one lock.
    pub fn publish(mut self, publish: impl FnOnce() -> Result<()>) -> Result<()> {
        let mut reserved = lock(&self.shared.evicting);
        *reserved = reserved.saturating_sub(self.size);
        self.held = false;
        publish()
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        if self.held {
            let mut reserved = lock(&self.shared.evicting);
            *reserved = reserved.saturating_sub(self.size);
        }
    }
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

fn evict(shared: &Shared, segment: &Arc<Segment>) -> Result<()> {
    let id = segment.file_id();
    let _span = tracing::debug_span!("evict", file_id = id).entered();
    let entries = Source::Segment(segment.clone()).entries();
    for e in entries.iter().filter(|e| !e.delete) {
        let here = Location {
            file_id: id,
            offset: e.offset,
        };
        shared.index.remove_at(e.hash, here);
    }
    drop_segment(shared, id, "delete evicted segment")?;
    shared.counters.evictions.fetch_add(1, Ordering::Relaxed);
    crate::signals::count("silt_evictions_total", 1);
    shared
        .counters
        .evicted_bytes
        .fetch_add(segment.len() as u64, Ordering::Relaxed);
    Ok(())
}
