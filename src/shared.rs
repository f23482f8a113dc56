//! State shared by the handles, the writer task, the log thread and the flush
//! workers: configuration, index, registry, counters, the sticky failure
//! ("poisoned") state and the set of slabs being flushed.

use crate::error::{Error, Result};
use crate::index::Index;
use crate::io::Vfs;
use crate::options::{Durability, IoBackend};
use crate::registry::Registry;
use crate::sync::{lock, AtomicBool, AtomicU64, Mutex, Ordering};
use std::fs::File;
use std::sync::Arc;
use tokio::sync::Notify;

/// The validated knobs of a `Builder`.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    pub durability: Durability,
    pub slab_size: usize,
    pub max_sealed_slabs: usize,
    pub flush_workers: usize,
    pub direct_io: bool,
    pub verify_checksums: bool,
    pub cold_reads: crate::options::ColdReads,
    /// Cache mode: evict the oldest segments past this many bytes.
    pub capacity: Option<u64>,
    /// Background GC rewrites segments whose live ratio is under this.
    pub gc_threshold: f64,
    /// An fdatasync, WAL write or backpressure wait this slow is logged.
    pub slow_op: std::time::Duration,
    /// A follower (`Db::open_read_only`): no writer, no lock, files are
    /// never changed; files the writer removed are dropped at `refresh`.
    pub read_only: bool,
}

/// Monotonic counters behind `Db::stats`.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub groups: AtomicU64,
    pub grouped_writes: AtomicU64,
    pub max_group: AtomicU64,
    pub recovered_torn_bytes: AtomicU64,
    pub recovered_dropped_files: AtomicU64,
    pub wal_rollbacks: AtomicU64,
    pub wal_closing_rollbacks: AtomicU64,
    pub recovered_records: AtomicU64,
    pub flush_retries: AtomicU64,
    pub follower_bytes_read: AtomicU64,
    pub evictions: AtomicU64,
    pub evicted_bytes: AtomicU64,
    pub gc_runs: AtomicU64,
    pub gc_files: AtomicU64,
    pub gc_reclaimed_bytes: AtomicU64,
}

/// See the module docs.
#[derive(Debug)]
pub(crate) struct Shared {
    pub config: Config,
    pub index: Index,
    pub registry: Registry,
    pub vfs: Arc<dyn Vfs>,
    /// The backend `vfs` runs on (never `Auto`).
    pub backend: IoBackend,
    /// The I/O threads that read records not in memory.
    pub reader: crate::io::read::Reader,
    /// The memory this process may use, for `ColdReads::Auto`.
    pub memory_limit: Option<u64>,
    /// Buffers of flushed slabs, for the next ones.
    pub slab_pool: Arc<crate::slab::SlabPool>,
    pub counters: Counters,
    /// Record and live bytes per data file.
    pub space: crate::space::SpaceMap,
    /// The durable floor under new file ids (`data/next_id`).
    pub id_floor: crate::id_floor::IdFloor,
    /// Poked when a segment is published: background GC looks for work.
    pub gc_wake: Notify,
    /// Held by the one compaction that may run at a time.
    pub compacting: tokio::sync::Mutex<()>,
    /// The background GC task, aborted when the store stops.
    pub gc_task: Mutex<Option<tokio::task::AbortHandle>>,
    /// Whether the file system accepted O_DIRECT for WAL writes.
    pub wal_direct: Arc<AtomicBool>,
    /// fdatasyncs of WAL files by the log sync thread.
    pub wal_syncs: Arc<AtomicU64>,
    /// Set once `close` ran (or the writer stopped): calls return `Closed`.
    pub closed: AtomicBool,
    /// The flock'ed `LOCK` file; dropped by `close`.
    pub lock_file: Mutex<Option<File>>,
    /// The log thread and flush workers, joined when the store stops.
    pub threads: Mutex<Vec<std::thread::JoinHandle<()>>>,
    /// `true` once the store has stopped: its threads joined, its lock
    /// released (see `crate::runtime`). `close` waits for it.
    pub stopped: tokio::sync::watch::Sender<bool>,
    /// The store's own thread (`StoreRuntime::Dedicated`), joined by
    /// `close` once it reported stopped.
    pub store_thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// Blocking-pool work still running (see `crate::runtime`).
    pub blocking_work: crate::runtime::BlockingWork,
    /// Stops the writer where it is, as a crash would (tests).
    pub halt: Mutex<Option<tokio::sync::oneshot::Sender<()>>>,
    /// Bytes reserved for files being written (cache mode); held while
    /// evicting, so flush workers finishing together cannot overshoot.
    pub evicting: Mutex<u64>,
    poisoned: Mutex<Option<Error>>,
    /// Why the store stopped without a `close`, if it did.
    stop_cause: Mutex<Option<crate::error::StopCause>>,
    flushing: crate::flushing::FlushTracker,
}

impl Shared {
    pub fn new(
        config: Config,
        registry: Registry,
        vfs: Arc<dyn Vfs>,
        backend: IoBackend,
        lock_file: Option<File>,
    ) -> Shared {
        Shared {
            config,
            index: Index::default(),
            registry,
            vfs,
            backend,
            reader: crate::io::read::Reader::new(backend == IoBackend::Uring),
            memory_limit: crate::memlimit::memory_limit(),
            // Two idle buffers cover the steady state: one slab filling,
            // the previous one's buffer back from its flush.
            slab_pool: Arc::new(crate::slab::SlabPool::new(2)),
            counters: Counters::default(),
            space: Default::default(),
            id_floor: Default::default(),
            gc_wake: Notify::new(),
            compacting: tokio::sync::Mutex::new(()),
            gc_task: Mutex::new(None),
            wal_direct: Arc::new(AtomicBool::new(false)),
            wal_syncs: Arc::new(AtomicU64::new(0)),
            closed: AtomicBool::new(false),
            lock_file: Mutex::new(lock_file),
            threads: Mutex::new(Vec::new()),
            stopped: tokio::sync::watch::Sender::new(false),
            halt: Mutex::new(None),
            blocking_work: Default::default(),
            store_thread: Mutex::new(None),
            evicting: Mutex::new(0),
            poisoned: Mutex::new(None),
            stop_cause: Mutex::new(None),
            flushing: crate::flushing::FlushTracker::new(),
        }
    }

    /// Enters the failed state (first cause wins).
    pub fn poison(&self, cause: &Error) {
        lock(&self.poisoned).get_or_insert_with(|| cause.clone());
    }

    /// Records why the store stopped without a `close`: the first cause
    /// stands, except that a panic's own message replaces the placeholder
    /// the writer's drop recorded while unwinding.
    pub fn stopped_because(&self, cause: crate::error::StopCause) {
        use crate::error::StopCause::WriterPanicked;
        let mut known = lock(&self.stop_cause);
        match (&*known, &cause) {
            (None, _) | (Some(WriterPanicked(_)), WriterPanicked(_)) => *known = Some(cause),
            // The first cause stands (a panic is not a runtime shutdown).
            _ => {}
        }
    }

    /// Waits until the store has stopped (see `crate::runtime`).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it only waits.
    pub async fn wait_stopped(&self) {
        let mut stopped = self.stopped.subscribe();
        // The sender lives in `self`, so this only ends once it is true.
        let _ = stopped.wait_for(|stopped| *stopped).await;
    }

    /// What a call on a stopped store gets: `Closed` after a `close` (or
    /// with every handle dropped), else `Stopped` with the cause.
    pub fn stopped_error(&self) -> Error {
        match lock(&self.stop_cause).clone() {
            Some(cause) => Error::Stopped { cause },
            None => Error::Closed,
        }
    }

    /// `Err(Poisoned)` once a write or flush has failed.
    pub fn check_poisoned(&self) -> Result<()> {
        match &*lock(&self.poisoned) {
            Some(cause) => Err(Error::Poisoned {
                cause: cause.to_string(),
                source: std::sync::Arc::new(cause.clone()),
            }),
            None => Ok(()),
        }
    }

    /// Whether a location's file was dropped by cache-mode eviction, or by
    /// a follower's refresh after the writer removed it (only then is a
    /// location without a loaded file expected).
    pub fn evicted(&self, loc: crate::index::Location) -> bool {
        (self.config.capacity.is_some() || self.config.read_only)
            && !self.registry.contains(loc.file_id)
    }

    pub fn check_open(&self) -> Result<()> {
        if self.closed.load(Ordering::Acquire) {
            Err(self.stopped_error())
        } else {
            Ok(())
        }
    }

    pub fn flush_started(&self, file_id: u32) {
        self.flushing.started(file_id);
    }

    pub fn flush_done(&self, file_id: u32) {
        self.flushing.done(file_id);
    }

    /// The writer is gone: waits for flushes return.
    pub fn flushes_shut(&self) {
        self.flushing.shut();
    }

    pub fn flushing_count(&self) -> usize {
        self.flushing.count()
    }

    /// Waits until every slab with a file id `<= upto` is flushed (or its
    /// flush failed, which poisons the store and is returned).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it only waits.
    pub async fn wait_flushed(&self, upto: u32) -> Result<()> {
        let all_flushed = self.flushing.wait(upto).await;
        self.check_poisoned()?;
        if all_flushed {
            Ok(())
        } else {
            Err(self.stopped_error())
        }
    }
}
