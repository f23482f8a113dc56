//! `Builder`: the knobs, their validation, and opening a store (directory,
//! lock, recovery, then the threads and the writer task).

use crate::db::Db;
use crate::error::{Error, Result};
use crate::flush;
use crate::io::std_backend::StdVfs;
use crate::io::uring::UringVfs;
use crate::io::Vfs;
use crate::options::{ColdReads, Durability, IoBackend, StoreRuntime};
use crate::recovery;
use crate::registry::Registry;
use crate::shared::{Config, Shared};
use crate::sync::Ordering;
use crate::wal::{Wal, WalFiles};
use crate::writer::Writer;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::sync::mpsc;

/// Configures and opens a [`Db`]. Every knob has a default.
///
/// ```
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// # let dir = tempfile::tempdir().unwrap();
/// let db = silt::Db::builder(dir.path())
///     .durability(silt::Durability::Sync)
///     .slab_size(16 << 20)
///     .max_sealed_slabs(4)
///     .flush_workers(2)
///     .open()
///     .await?;
/// # db.close().await?;
/// # Ok::<(), silt::Error>(()) }).unwrap();
/// ```
#[derive(Debug, Clone)]
pub struct Builder {
    path: PathBuf,
    durability: Durability,
    slab_size: usize,
    max_sealed_slabs: usize,
    flush_workers: usize,
    direct_io: bool,
    verify_checksums: bool,
    cold_reads: ColdReads,
    io_backend: Option<IoBackend>,
    capacity: Option<u64>,
    gc_threshold: f64,
    runtime: StoreRuntime,
    slow_op: std::time::Duration,
    #[cfg(feature = "fault-injection")]
    fault: Option<Arc<crate::FaultInjector>>,
}

/// Overrides the default `IoBackend` (not an explicit `Builder::io_backend`)
/// with `std`, `uring` or `auto`, so a whole test suite can run on each.
///
/// ```
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// # let dir = tempfile::tempdir().unwrap();
/// std::env::set_var(silt::IO_BACKEND_ENV, "std");
/// let db = silt::Db::open(dir.path()).await?;
/// assert_eq!(db.stats().io_backend, silt::IoBackend::Std);
/// # std::env::remove_var(silt::IO_BACKEND_ENV);
/// # db.close().await?;
/// # Ok::<(), silt::Error>(()) }).unwrap();
/// ```
pub const IO_BACKEND_ENV: &str = "SILT_IO_BACKEND";

const KIB: usize = 1024;
const MIB: usize = 1024 * KIB;

impl Builder {
    pub(crate) fn new(path: &Path) -> Builder {
        Builder {
            path: path.to_path_buf(),
            durability: Durability::Sync,
            slab_size: 64 * MIB,
            max_sealed_slabs: 4,
            flush_workers: 2,
            direct_io: true,
            verify_checksums: true,
            cold_reads: ColdReads::Auto,
            io_backend: None,
            capacity: None,
            gc_threshold: 0.5,
            runtime: StoreRuntime::Auto,
            slow_op: std::time::Duration::from_millis(500),
            #[cfg(feature = "fault-injection")]
            fault: None,
        }
    }

    /// Durability of writes (default [`Durability::Sync`]).
    ///
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// # let dir = tempfile::tempdir().unwrap();
    /// let db = silt::Db::builder(dir.path()).durability(silt::Durability::Buffered).open().await?;
    /// db.put("k", "v").await?;
    /// # db.close().await?;
    /// # Ok::<(), silt::Error>(()) }).unwrap();
    /// ```
    pub fn durability(mut self, d: Durability) -> Self {
        self.durability = d;
        self
    }
    /// Size of an in-memory slab and so of a segment file (default 64 MiB;
    /// 64 KiB..=1 GiB, a multiple of 4 KiB). RocksDB: `write_buffer_size`;
    /// fjall: `max_memtable_size`. A single write (or batch) must fit in one
    /// slab.
    ///
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// # let dir = tempfile::tempdir().unwrap();
    /// let db = silt::Db::builder(dir.path()).slab_size(4 << 20).open().await?;
    /// db.put("k", "v").await?;
    /// # db.close().await?;
    /// # Ok::<(), silt::Error>(()) }).unwrap();
    /// ```
    pub fn slab_size(mut self, bytes: usize) -> Self {
        self.slab_size = bytes;
        self
    }
    /// Sealed slabs allowed to wait for flushing before writers wait
    /// (default 4). RocksDB: `max_write_buffer_number`.
    ///
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// # let dir = tempfile::tempdir().unwrap();
    /// let db = silt::Db::builder(dir.path()).max_sealed_slabs(2).open().await?;
    /// db.put("k", "v").await?;
    /// # db.close().await?;
    /// # Ok::<(), silt::Error>(()) }).unwrap();
    /// ```
    pub fn max_sealed_slabs(mut self, n: usize) -> Self {
        self.max_sealed_slabs = n;
        self
    }
    /// Flush worker threads (default 2). RocksDB: `max_background_flushes`.
    ///
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// # let dir = tempfile::tempdir().unwrap();
    /// let db = silt::Db::builder(dir.path()).flush_workers(1).open().await?;
    /// db.put("k", "v").await?;
    /// # db.close().await?;
    /// # Ok::<(), silt::Error>(()) }).unwrap();
    /// ```
    pub fn flush_workers(mut self, n: usize) -> Self {
        self.flush_workers = n;
        self
    }
    /// Use O_DIRECT for segment and `Sync` WAL writes where the file system
    /// allows it (default true). RocksDB: `use_direct_io_for_flush_and_compaction`.
    ///
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// # let dir = tempfile::tempdir().unwrap();
    /// let db = silt::Db::builder(dir.path()).direct_io(false).open().await?;
    /// db.put("k", "v").await?;
    /// # db.close().await?;
    /// # Ok::<(), silt::Error>(()) }).unwrap();
    /// ```
    pub fn direct_io(mut self, on: bool) -> Self {
        self.direct_io = on;
        self
    }
    /// Check each record's CRC on every read (default true). RocksDB:
    /// `ReadOptions::verify_checksums`.
    ///
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// # let dir = tempfile::tempdir().unwrap();
    /// let db = silt::Db::builder(dir.path()).verify_checksums(false).open().await?;
    /// db.put("k", "v").await?;
    /// # db.close().await?;
    /// # Ok::<(), silt::Error>(()) }).unwrap();
    /// ```
    pub fn verify_checksums(mut self, on: bool) -> Self {
        self.verify_checksums = on;
        self
    }

    /// How records that are not in memory are read (default
    /// [`ColdReads::Auto`]). RocksDB: `use_direct_reads`.
    ///
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// # let dir = tempfile::tempdir().unwrap();
    /// let db = silt::Db::builder(dir.path())
    ///     .cold_reads(silt::ColdReads::PageCache)
    ///     .open()
    ///     .await?;
    /// # db.close().await?;
    /// # Ok::<(), silt::Error>(()) }).unwrap();
    /// ```
    pub fn cold_reads(mut self, mode: ColdReads) -> Self {
        self.cold_reads = mode;
        self
    }

    /// Cache mode: keep at most about `bytes` of segment files; past that
    /// the oldest segments are dropped (FIFO) and their keys read as absent.
    /// Disk use stays within `capacity` plus the slabs not yet flushed.
    /// Default: unbounded. At least twice `slab_size`. Usually combined with
    /// `Durability::None`. foyer: the device capacity; RocksDB:
    /// `FIFOCompactionOptions::max_table_files_size`.
    ///
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// # let dir = tempfile::tempdir().unwrap();
    /// let cache = silt::Db::builder(dir.path())
    ///     .durability(silt::Durability::None)
    ///     .slab_size(1 << 20)
    ///     .capacity(16 << 20)
    ///     .open()
    ///     .await?;
    /// cache.put("k", "v").await?;
    /// # cache.close().await?;
    /// # Ok::<(), silt::Error>(()) }).unwrap();
    /// ```
    pub fn capacity(mut self, bytes: u64) -> Self {
        self.capacity = Some(bytes);
        self
    }

    /// Background GC rewrites the live records of every segment whose live
    /// ratio (live bytes / record bytes) falls under this, then deletes it
    /// (default 0.5; `0.0..1.0`; 0.0 turns background GC off, and
    /// [`Db::compact`](crate::Db::compact) still works). Off in cache mode,
    /// where eviction reclaims space. RocksDB BlobDB:
    /// `blob_garbage_collection_age_cutoff`; fjall: the blob GC staleness
    /// threshold.
    ///
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// # let dir = tempfile::tempdir().unwrap();
    /// let db = silt::Db::builder(dir.path()).gc_threshold(0.25).open().await?;
    /// db.put("k", "v").await?;
    /// # db.close().await?;
    /// # Ok::<(), silt::Error>(()) }).unwrap();
    /// ```
    pub fn gc_threshold(mut self, live_ratio: f64) -> Self {
        self.gc_threshold = live_ratio;
        self
    }

    /// A WAL write or fdatasync that takes this long or longer, or a write
    /// that waits this long for a slab flush (backpressure), is logged as a
    /// `warn` with its duration (default 500 ms).
    ///
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// # let dir = tempfile::tempdir().unwrap();
    /// let db = silt::Db::builder(dir.path())
    ///     .slow_op_warning(std::time::Duration::from_millis(50))
    ///     .open()
    ///     .await?;
    /// # db.close().await?;
    /// # Ok::<(), silt::Error>(()) }).unwrap();
    /// ```
    pub fn slow_op_warning(mut self, threshold: std::time::Duration) -> Self {
        self.slow_op = threshold;
        self
    }

    /// Where the writer task runs (default [`StoreRuntime::Auto`]: the
    /// opener's runtime if it is multi-thread, else a runtime of the
    /// store's own).
    ///
    /// ```
    /// # let dir = tempfile::tempdir().unwrap();
    /// // No Tokio runtime here: the store brings its own.
    /// futures::executor::block_on(async {
    ///     let db = silt::Db::builder(dir.path())
    ///         .runtime(silt::StoreRuntime::Dedicated)
    ///         .open()
    ///         .await?;
    ///     db.put("k", "v").await?;
    ///     db.close().await
    /// })?;
    /// # Ok::<(), silt::Error>(())
    /// ```
    pub fn runtime(mut self, placement: StoreRuntime) -> Self {
        self.runtime = placement;
        self
    }

    /// The I/O engine (default [`IoBackend::Auto`]: io_uring if the kernel
    /// allows it, else blocking calls; the `SILT_IO_BACKEND` environment
    /// variable changes the default). `stats().io_backend` says which runs.
    /// RocksDB: `use_io_uring` (MultiRead only).
    ///
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// # let dir = tempfile::tempdir().unwrap();
    /// let db = silt::Db::builder(dir.path()).io_backend(silt::IoBackend::Std).open().await?;
    /// assert_eq!(db.stats().io_backend, silt::IoBackend::Std);
    /// # db.close().await?;
    /// # Ok::<(), silt::Error>(()) }).unwrap();
    /// ```
    pub fn io_backend(mut self, b: IoBackend) -> Self {
        self.io_backend = Some(b);
        self
    }

    /// Where the writer will run (see [`StoreRuntime`]).
    fn placement(&self) -> Result<crate::runtime::Placement> {
        use crate::runtime::Placement;
        let current = tokio::runtime::Handle::try_current().ok();
        let multi_thread = current
            .as_ref()
            .is_some_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
        let dedicated = || crate::runtime::start().map(|(h, l)| Placement::Dedicated(h, l));
        match (self.runtime, current) {
            (StoreRuntime::Dedicated, _) => dedicated(),
            (StoreRuntime::Auto, Some(h)) if multi_thread => Ok(Placement::Caller(h)),
            (StoreRuntime::Auto, _) => dedicated(),
            (StoreRuntime::Caller, Some(h)) => Ok(Placement::Caller(h)),
            (StoreRuntime::Caller, None) => Err(Error::Config(
                "StoreRuntime::Caller needs a Tokio runtime to open from".into(),
            )),
        }
    }

    /// The backend that will run: the explicit choice, else the environment
    /// variable, else Auto; Auto probes io_uring once.
    fn resolve_backend(&self) -> Result<IoBackend> {
        let wanted = match self.io_backend {
            Some(b) => b,
            None => match std::env::var(IO_BACKEND_ENV).ok().as_deref() {
                None | Some("") | Some("auto") => IoBackend::Auto,
                Some("std") => IoBackend::Std,
                Some("uring") => IoBackend::Uring,
                Some(other) => {
                    return Err(Error::Config(format!(
                        "{IO_BACKEND_ENV} must be std, uring or auto, got {other:?}"
                    )))
                }
            },
        };
        let probe = || -> std::io::Result<()> {
            #[cfg(feature = "fault-injection")]
            if self.fault.as_ref().is_some_and(|f| f.refuses_io_uring()) {
                return Err(std::io::Error::from_raw_os_error(libc::EPERM));
            }
            crate::io::uring::probe()
        };
        match wanted {
            IoBackend::Std => Ok(IoBackend::Std),
            IoBackend::Uring => match probe() {
                Ok(()) => Ok(IoBackend::Uring),
                Err(e) => Err(Error::Config(format!(
                    "io_backend is Uring but the kernel refused io_uring: {e}"
                ))),
            },
            IoBackend::Auto => match probe() {
                Ok(()) => Ok(IoBackend::Uring),
                Err(e) => {
                    tracing::warn!(error = %e, "io_uring unavailable; using blocking I/O");
                    Ok(IoBackend::Std)
                }
            },
        }
    }

    /// Routes every file write, sync, rename and directory fsync through a
    /// [`crate::FaultInjector`] (feature `fault-injection`; tests only).
    #[cfg(feature = "fault-injection")]
    pub fn fault_injector(mut self, inj: Arc<crate::FaultInjector>) -> Self {
        self.fault = Some(inj);
        self
    }

    fn vfs(&self, backend: IoBackend) -> Arc<dyn Vfs> {
        let base: Arc<dyn Vfs> = match backend {
            IoBackend::Uring => Arc::new(UringVfs),
            IoBackend::Std | IoBackend::Auto => Arc::new(StdVfs),
        };
        #[cfg(feature = "fault-injection")]
        if let Some(inj) = &self.fault {
            return Arc::new(crate::io::fault::FaultVfs::new(base, inj.clone()));
        }
        base
    }

    fn config(&self) -> Result<Config> {
        if !(64 * KIB..=1024 * MIB).contains(&self.slab_size)
            || !self.slab_size.is_multiple_of(4096)
        {
            return Err(Error::Config(format!(
                "slab_size must be 64 KiB..=1 GiB and a multiple of 4 KiB, got {}",
                self.slab_size
            )));
        }
        if !(1..=1024).contains(&self.max_sealed_slabs) {
            return Err(Error::Config(format!(
                "max_sealed_slabs must be 1..=1024, got {}",
                self.max_sealed_slabs
            )));
        }
        if !(1..=64).contains(&self.flush_workers) {
            return Err(Error::Config(format!(
                "flush_workers must be 1..=64, got {}",
                self.flush_workers
            )));
        }
        if let Some(cap) = self.capacity {
            if cap < 2 * self.slab_size as u64 {
                return Err(Error::Config(format!(
                    "capacity must be at least twice slab_size ({} bytes), got {cap}",
                    2 * self.slab_size
                )));
            }
        }
        if !(0.0..1.0).contains(&self.gc_threshold) {
            return Err(Error::Config(format!(
                "gc_threshold must be in 0.0..1.0, got {}",
                self.gc_threshold
            )));
        }
        Ok(Config {
            capacity: self.capacity,
            gc_threshold: self.gc_threshold,
            durability: self.durability,
            slab_size: self.slab_size,
            max_sealed_slabs: self.max_sealed_slabs,
            flush_workers: self.flush_workers,
            direct_io: self.direct_io,
            verify_checksums: self.verify_checksums,
            cold_reads: self.cold_reads,
            slow_op: self.slow_op,
            read_only: false,
        })
    }

    /// Opens (creating if needed) the store. Its writer runs where
    /// [`Builder::runtime`] says: by default on the opener's runtime if it
    /// is multi-thread, else on a thread and runtime of the store's own
    /// (so this also works on a `current_thread` runtime or outside any).
    ///
    /// # Cancel safety
    ///
    /// Dropped before it returns, the recovery it started runs to its end
    /// on the blocking pool and the store it opened is dropped with its
    /// lock (before its writer starts: nothing is written); nothing is
    /// lost. Open again to use it.
    ///
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// # let dir = tempfile::tempdir().unwrap();
    /// let db = silt::Db::builder(dir.path()).slab_size(1 << 20).open().await?;
    /// let bad = silt::Db::builder(dir.path().join("x")).slab_size(1000).open().await;
    /// assert!(matches!(bad, Err(silt::Error::Config(_))));
    /// # db.close().await?;
    /// # Ok::<(), silt::Error>(()) }).unwrap();
    /// ```
    pub async fn open(self) -> Result<Db> {
        let config = self.config()?;
        let placement = self.placement()?;
        let rt = placement.handle().clone();
        let path = self.path.clone();
        let backend = self.resolve_backend()?;
        let vfs = self.vfs(backend);
        // Buffered commits are written inline on the writer task: a
        // page-cache copy, for which io_uring only adds a hop to its worker
        // threads (16–44 k vs 343–414 k sequential puts/s measured), so
        // that path always uses pwrite (docs/decisions.md).
        let inline_vfs = self.vfs(IoBackend::Std);
        let span = tracing::info_span!("open", path = %path.display());
        let opened = rt
            .spawn_blocking(move || {
                let _enter = span.enter();
                open_blocking(path, config, vfs, backend)
            })
            .await
            .map_err(|_| Error::Closed)??;
        // From here on nothing awaits: a dropped `open` either never got
        // this far (the recovered store is dropped with its lock) or
        // returns the launched store to nobody (every sender dropped, the
        // writer shuts it down).
        let (shared, init) = opened;
        let (tx, rx) = mpsc::channel(4096);
        let sync = shared.config.durability == Durability::Sync;
        let wal = if shared.config.durability == Durability::None {
            None
        } else {
            // Buffered WAL writes go through the page cache: they return in
            // microseconds, while O_DIRECT would wait for the device
            // (docs/decisions.md).
            let files = WalFiles::new(
                if sync { shared.vfs.clone() } else { inline_vfs },
                shared.registry.data_dir().to_path_buf(),
                shared.config.direct_io && sync,
                shared.wal_direct.clone(),
                sync,
                shared.config.slow_op,
            );
            Some(if sync {
                Wal::spawn_thread(files, shared.wal_syncs.clone(), &shared.threads)?
            } else {
                Wal::Inline(files)
            })
        };
        let queue = shared.config.max_sealed_slabs + init.recovered.len();
        let flush_tx = flush::start_workers(shared.config.flush_workers, queue, shared.clone())?;
        let writer = Writer::new(shared.clone(), rx, wal, flush_tx, init);
        crate::gc::spawn_background(&rt, shared.clone(), tx.downgrade());
        let (halt_tx, halt_rx) = tokio::sync::oneshot::channel();
        *crate::sync::lock(&shared.halt) = Some(halt_tx);
        let life = crate::runtime::store_life(writer, shared.clone(), halt_rx);
        placement.run(life, shared.clone());
        Ok(Db::from_parts(tx, shared, rt))
    }
}

impl Builder {
    /// Opens a read-only follower of the store ([`Db::open_read_only`]): no
    /// lock, no writer task, no threads. Of the knobs, `verify_checksums`
    /// applies (records of unsealed files are always CRC-checked); the
    /// others are the writer's.
    ///
    /// # Cancel safety
    ///
    /// As [`Db::open_read_only`].
    ///
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// # let dir = tempfile::tempdir().unwrap();
    /// # silt::Db::open(dir.path()).await?.close().await?;
    /// let follower = silt::Db::builder(dir.path())
    ///     .verify_checksums(false)
    ///     .open_read_only()
    ///     .await?;
    /// # follower.close().await?;
    /// # Ok::<(), silt::Error>(()) }).unwrap();
    /// ```
    pub async fn open_read_only(self) -> Result<Db> {
        let mut config = self.config()?;
        config.read_only = true;
        let data_dir = self.path.join("data");
        let span = tracing::info_span!("open_read_only", path = %self.path.display());
        let opened = crate::runtime::off_runtime(move || {
            let _enter = span.enter();
            if !data_dir.is_dir() {
                return Err(Error::io(
                    "open data directory",
                    &data_dir,
                    std::io::ErrorKind::NotFound.into(),
                ));
            }
            let shared = Shared::new(
                config,
                Registry::new(data_dir),
                Arc::new(StdVfs),
                IoBackend::Std,
                None,
            );
            let mut state = crate::follower::FollowerState::default();
            let found = state.refresh(&shared)?;
            tracing::info!(
                keys = shared.index.len(),
                records = found.records,
                "follower opened"
            );
            Ok((shared, state))
        })
        .await??;
        let (shared, state) = opened;
        Ok(Db::follower(Arc::new(shared), state))
    }
}

/// Directory set-up, lock and recovery: blocking work, run off the runtime.
fn open_blocking(
    path: PathBuf,
    config: Config,
    vfs: Arc<dyn Vfs>,
    backend: IoBackend,
) -> Result<(Arc<Shared>, crate::writer::WriterInit)> {
    let data_dir = path.join("data");
    let fresh = !data_dir.exists();
    std::fs::create_dir_all(&data_dir)
        .map_err(|e| Error::io("create data directory", &data_dir, e))?;
    if fresh {
        for d in [&path, &data_dir] {
            vfs.sync_dir(d)
                .map_err(|e| Error::io("fsync directory", d, e))?;
        }
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            vfs.sync_dir(parent)
                .map_err(|e| Error::io("fsync directory", parent, e))?;
        }
    }
    let lock_path = path.join("LOCK");
    let lock_file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&lock_path)
        .map_err(|e| Error::io("open lock file", &lock_path, e))?;
    match lock_file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => return Err(Error::Locked { path: lock_path }),
        Err(std::fs::TryLockError::Error(e)) => return Err(Error::io("lock", &lock_path, e)),
    }
    let shared = Shared::new(
        config,
        Registry::new(data_dir),
        vfs,
        backend,
        Some(lock_file),
    );
    let init = recovery::recover(&shared)?;
    tracing::info!(
        keys = shared.index.len(),
        torn_bytes = shared.counters.recovered_torn_bytes.load(Ordering::Relaxed),
        unsealed = init.recovered.len(),
        "opened"
    );
    Ok((Arc::new(shared), init))
}
