//! `Db::stats`: a snapshot of the store's counters and sizes.

use crate::db::Db;
use crate::options::{Durability, IoBackend};
use crate::sync::Ordering;

/// A snapshot of the store's counters.
///
/// ```
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// # let dir = tempfile::tempdir().unwrap();
/// let db = silt::Db::open(dir.path()).await?;
/// db.put("k", "v").await?;
/// let st: silt::Stats = db.stats();
/// assert_eq!((st.keys, st.commit_groups), (1, 1));
/// # db.close().await?;
/// # Ok::<(), silt::Error>(()) }).unwrap();
/// ```
#[non_exhaustive]
#[derive(Debug, Clone)]
pub struct Stats {
    /// Live keys in the index (exact: a key has one entry).
    pub keys: u64,
    /// Heap bytes of the index tables.
    pub index_bytes: u64,
    /// Slabs in memory (the active one, sealed ones being flushed, recovered ones).
    pub slabs_in_memory: usize,
    /// Sealed slabs waiting for or in a flush.
    pub sealed_slabs: usize,
    /// Published segment files.
    pub segments: usize,
    /// Bytes of published segment files.
    pub segment_bytes: u64,
    /// Group commits completed.
    pub commit_groups: u64,
    /// Writes per group commit, on average.
    pub avg_group_size: f64,
    /// Largest group commit.
    pub max_group_size: u64,
    /// Bytes cut off torn WAL tails at open, and the record bytes of the
    /// files set aside (`recovered_dropped_files`).
    pub recovered_torn_bytes: u64,
    /// Files set aside at open (moved to `<dir>/dropped/`) because an
    /// unsealed file written before them had lost records: keeping them
    /// would recover writes without earlier ones they followed.
    pub recovered_dropped_files: u64,
    /// Records found at open.
    pub recovered_records: u64,
    /// Flush attempts that failed and were retried.
    pub flush_retries: u64,
    /// WAL writes that failed without a failed sync (ENOSPC, say): their
    /// groups and every later one were refused and rolled back.
    pub wal_rollbacks: u64,
    /// Of those, failures in a slab that was closing while the next one
    /// already held groups, which were dropped with them.
    pub wal_closing_rollbacks: u64,
    /// New slabs that reused the buffer of a flushed one.
    pub slabs_recycled: u64,
    /// Segments dropped by cache mode (`capacity`).
    pub evictions: u64,
    /// Bytes of the segments dropped by cache mode.
    pub evicted_bytes: u64,
    /// Bytes of committed records in all data files (slabs and segments).
    pub record_bytes: u64,
    /// Bytes of records that are the newest of their key: the rest is
    /// garbage that compaction reclaims (see [`Db::file_space`]).
    pub live_bytes: u64,
    /// Compactions run (background GC and [`Db::compact`]).
    pub gc_runs: u64,
    /// Segment files compaction rewrote and deleted.
    pub gc_files: u64,
    /// Bytes compaction reclaimed.
    pub gc_reclaimed_bytes: u64,
    /// The I/O engine in use.
    pub io_backend: IoBackend,
    /// Whether WAL files are written with O_DIRECT (false for `Buffered`, on
    /// file systems that refuse O_DIRECT, or with `direct_io(false)`).
    pub wal_direct_io: bool,
    /// fdatasyncs of WAL files (`Sync`), or on io_uring the durable
    /// (`RWF_DSYNC`) WAL writes that replace them: fewer than
    /// `commit_groups` when one covered several groups.
    pub wal_syncs: u64,
    /// The durability mode.
    pub durability: Durability,
    /// Read-only followers: bytes read from data files at open and by
    /// every `refresh` (new segments whole, unsealed files from where the
    /// last read stopped).
    pub follower_bytes_read: u64,
}

impl Db {
    /// Counters and sizes.
    ///
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let db = silt::Db::open(dir.path()).await?;
    /// db.put("k", "v").await?;
    /// let st = db.stats();
    /// assert_eq!(st.keys, 1);
    /// println!("{} index bytes, backend {:?}", st.index_bytes, st.io_backend);
    /// # db.close().await?;
    /// # Ok::<(), silt::Error>(()) }).unwrap();
    /// ```
    pub fn stats(&self) -> Stats {
        let s = self.shared();
        let c = &s.counters;
        let (slabs, segments, segment_bytes) = s.registry.counts();
        let (record_bytes, live_bytes) = s.space.totals();
        let groups = c.groups.load(Ordering::Relaxed);
        let writes = c.grouped_writes.load(Ordering::Relaxed);
        Stats {
            keys: s.index.len() as u64,
            index_bytes: s.index.heap_bytes() as u64,
            slabs_in_memory: slabs,
            sealed_slabs: s.flushing_count(),
            segments,
            segment_bytes,
            commit_groups: groups,
            avg_group_size: if groups == 0 {
                0.0
            } else {
                writes as f64 / groups as f64
            },
            max_group_size: c.max_group.load(Ordering::Relaxed),
            recovered_torn_bytes: c.recovered_torn_bytes.load(Ordering::Relaxed),
            recovered_dropped_files: c.recovered_dropped_files.load(Ordering::Relaxed),
            recovered_records: c.recovered_records.load(Ordering::Relaxed),
            flush_retries: c.flush_retries.load(Ordering::Relaxed),
            wal_rollbacks: c.wal_rollbacks.load(Ordering::Relaxed),
            wal_closing_rollbacks: c.wal_closing_rollbacks.load(Ordering::Relaxed),
            slabs_recycled: s.slab_pool.reused(),
            evictions: c.evictions.load(Ordering::Relaxed),
            evicted_bytes: c.evicted_bytes.load(Ordering::Relaxed),
            record_bytes,
            live_bytes,
            gc_runs: c.gc_runs.load(Ordering::Relaxed),
            gc_files: c.gc_files.load(Ordering::Relaxed),
            gc_reclaimed_bytes: c.gc_reclaimed_bytes.load(Ordering::Relaxed),
            io_backend: s.backend,
            wal_direct_io: s.wal_direct.load(Ordering::Relaxed),
            wal_syncs: s.wal_syncs.load(Ordering::Relaxed),
            durability: s.config.durability,
            follower_bytes_read: c.follower_bytes_read.load(Ordering::Relaxed),
        }
    }
}
