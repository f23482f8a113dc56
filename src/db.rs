//! `Db`, `Builder`, `WriteBatch`, `Stats`: the face of silt. Forwards writes
//! to the writer task and serves reads from the index and registry directly.

use crate::error::{Error, Result};
use crate::flush;
use crate::io::std_backend::StdVfs;
use crate::io::uring::UringVfs;
use crate::io::Vfs;
use crate::record::{key_hash, MAX_KEY_LEN};
use crate::recovery;
use crate::registry::Registry;
use crate::shared::{Config, Shared};
use crate::slab::FILE_HEADER_LEN;
use crate::sync::Ordering;
use crate::wal::{Wal, WalFiles};
use crate::writer::{Op, Request, Writer};
use bytes::Bytes;
use futures::Stream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

/// What a write has survived when its future resolves.
///
/// | mode | `put` resolves after | survives |
/// |---|---|---|
/// | `Sync` | an `fdatasync` covering it (group commit) | `kill -9` and power loss |
/// | `Buffered` | its WAL `write(2)` returned | `kill -9`, not power loss |
/// | `None` | it is in the in-memory slab | nothing until the slab is flushed |
///
/// RocksDB: `WriteOptions::sync` = true / false / `disableWAL`.
/// fjall: `PersistMode::SyncData` / `Buffer` / no journal.
///
/// ```
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// # let dir = tempfile::tempdir().unwrap();
/// let db = silt::Db::builder(dir.path()).durability(silt::Durability::Sync).open().await?;
/// db.put("k", "v").await?; // resolved: survives power loss
/// assert_eq!(db.stats().durability, silt::Durability::Sync);
/// # db.close().await?;
/// # Ok::<(), silt::Error>(()) }).unwrap();
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Durability {
    /// Default. Acknowledged after an `fdatasync` that covers the write.
    #[default]
    Sync,
    /// Acknowledged once the WAL write reached the OS page cache.
    Buffered,
    /// Cache mode: no WAL; a write is durable once its slab is flushed
    /// (`flush`, `sync`, `close`, or the slab filling up).
    None,
}

/// Which I/O engine runs the log thread and flush workers.
///
/// ```
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// # let dir = tempfile::tempdir().unwrap();
/// let db = silt::Db::open(dir.path()).await?; // Auto
/// assert_ne!(db.stats().io_backend, silt::IoBackend::Auto); // names the one that runs
/// # db.close().await?;
/// # Ok::<(), silt::Error>(()) }).unwrap();
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum IoBackend {
    /// io_uring if the kernel allows it, else `Std`.
    #[default]
    Auto,
    /// io_uring: one ring per I/O thread; a flush has all its writes in
    /// flight at once. `open` fails with `Error::Config` if the kernel (or a
    /// seccomp policy) refuses io_uring.
    Uring,
    /// Blocking POSIX calls on dedicated threads.
    Std,
}

/// A set of writes applied atomically: after any crash, all or none of it.
/// A later operation on the same key wins over an earlier one.
///
/// ```
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// # let dir = tempfile::tempdir().unwrap();
/// let db = silt::Db::open(dir.path()).await?;
/// let mut batch = silt::WriteBatch::new();
/// batch.put("from", "0");
/// batch.put("to", "100");
/// db.write(batch).await?;
/// # db.close().await?;
/// # Ok::<(), silt::Error>(()) }).unwrap();
/// ```
#[derive(Debug, Default, Clone)]
pub struct WriteBatch {
    ops: Vec<Op>,
}

impl WriteBatch {
    /// An empty batch.
    ///
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// # let dir = tempfile::tempdir().unwrap();
    /// let mut batch = silt::WriteBatch::new();
    /// assert!(batch.is_empty());
    /// batch.put("k", "v");
    /// assert_eq!(batch.len(), 1);
    /// # Ok::<(), silt::Error>(()) }).unwrap();
    /// ```
    pub fn new() -> WriteBatch {
        WriteBatch::default()
    }
    /// Adds a put.
    ///
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// # let dir = tempfile::tempdir().unwrap();
    /// let mut batch = silt::WriteBatch::new();
    /// batch.put("k", "first");
    /// batch.put("k", "second"); // the later one wins
    /// let db = silt::Db::open(dir.path()).await?;
    /// db.write(batch).await?;
    /// assert_eq!(db.get(b"k").await?.unwrap(), "second");
    /// # db.close().await?;
    /// # Ok::<(), silt::Error>(()) }).unwrap();
    /// ```
    pub fn put(&mut self, key: impl Into<Bytes>, value: impl Into<Bytes>) {
        self.ops.push(Op::Put(key.into(), value.into()));
    }
    /// Adds a delete.
    ///
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// # let dir = tempfile::tempdir().unwrap();
    /// let db = silt::Db::open(dir.path()).await?;
    /// db.put("old", "x").await?;
    /// let mut batch = silt::WriteBatch::new();
    /// batch.delete("old");
    /// batch.put("new", "y");
    /// db.write(batch).await?;
    /// assert_eq!(db.get(b"old").await?, None);
    /// # db.close().await?;
    /// # Ok::<(), silt::Error>(()) }).unwrap();
    /// ```
    pub fn delete(&mut self, key: impl Into<Bytes>) {
        self.ops.push(Op::Delete(key.into()));
    }
    /// Number of operations.
    ///
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// # let dir = tempfile::tempdir().unwrap();
    /// let mut batch = silt::WriteBatch::new();
    /// batch.put("a", "1");
    /// batch.delete("b");
    /// assert_eq!(batch.len(), 2);
    /// # Ok::<(), silt::Error>(()) }).unwrap();
    /// ```
    pub fn len(&self) -> usize {
        self.ops.len()
    }
    /// True if the batch holds no operation.
    ///
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// # let dir = tempfile::tempdir().unwrap();
    /// assert!(silt::WriteBatch::new().is_empty());
    /// # Ok::<(), silt::Error>(()) }).unwrap();
    /// ```
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }
}

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
    /// Live keys in the index.
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
    /// Bytes cut off torn WAL tails at open.
    pub recovered_torn_bytes: u64,
    /// Records found at open.
    pub recovered_records: u64,
    /// Flush attempts that failed and were retried.
    pub flush_retries: u64,
    /// New slabs that reused the buffer of a flushed one.
    pub slabs_recycled: u64,
    /// Segments dropped by cache mode (`capacity`).
    pub evictions: u64,
    /// Bytes of the segments dropped by cache mode.
    pub evicted_bytes: u64,
    /// The I/O engine in use.
    pub io_backend: IoBackend,
    /// Whether WAL files are written with O_DIRECT (false for `Buffered`, on
    /// file systems that refuse O_DIRECT, or with `direct_io(false)`).
    pub wal_direct_io: bool,
    /// The durability mode.
    pub durability: Durability,
}

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
    io_backend: Option<IoBackend>,
    capacity: Option<u64>,
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
        Ok(Config {
            capacity: self.capacity,
            durability: self.durability,
            slab_size: self.slab_size,
            max_sealed_slabs: self.max_sealed_slabs,
            flush_workers: self.flush_workers,
            direct_io: self.direct_io,
            verify_checksums: self.verify_checksums,
        })
    }

    /// Opens (creating if needed) the store. Must run inside a Tokio
    /// runtime: the writer task is spawned on it.
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
        let rt = tokio::runtime::Handle::try_current().map_err(|_| {
            Error::Config("Db::open must be called from within a Tokio runtime".into())
        })?;
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
            );
            Some(if sync {
                Wal::spawn_thread(files, &shared.threads)?
            } else {
                Wal::Inline(files)
            })
        };
        let queue = shared.config.max_sealed_slabs + init.recovered.len();
        let flush_tx = flush::start_workers(shared.config.flush_workers, queue, shared.clone())?;
        let writer = Writer::new(shared.clone(), rx, wal, flush_tx, init);
        rt.spawn(writer.run());
        Ok(Db {
            inner: Arc::new(Handle { tx, shared }),
        })
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
    let shared = Shared::new(config, Registry::new(data_dir), vfs, backend, lock_file);
    let init = recovery::recover(&shared)?;
    tracing::info!(
        keys = shared.index.len(),
        torn_bytes = shared.counters.recovered_torn_bytes.load(Ordering::Relaxed),
        unsealed = init.recovered.len(),
        "opened"
    );
    Ok((Arc::new(shared), init))
}

#[derive(Debug)]
struct Handle {
    tx: mpsc::Sender<Request>,
    shared: Arc<Shared>,
}

/// A handle to an open store. Cheap to clone; every clone talks to the same
/// writer task. Dropping the last handle drains and flushes in the
/// background; call [`Db::close`] to wait for that and release the lock.
///
/// ```
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// # let dir = tempfile::tempdir().unwrap();
/// let db = silt::Db::open(dir.path()).await?;
/// let handle = db.clone(); // cheap; same store
/// tokio::spawn(async move { handle.put("k", "v").await }).await.unwrap()?;
/// assert_eq!(db.get(b"k").await?.unwrap(), "v");
/// db.close().await?;
/// # Ok::<(), silt::Error>(()) }).unwrap();
/// ```
#[derive(Debug, Clone)]
pub struct Db {
    inner: Arc<Handle>,
}

fn check_key(key: &[u8]) -> Result<()> {
    if key.is_empty() {
        return Err(Error::InvalidArgument("key must not be empty".into()));
    }
    if key.len() > MAX_KEY_LEN {
        return Err(Error::InvalidArgument(format!(
            "key is {} bytes; the limit is {MAX_KEY_LEN}",
            key.len()
        )));
    }
    Ok(())
}

impl Db {
    /// Opens the store at `path` with every default.
    ///
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// # let dir = tempfile::tempdir().unwrap();
    /// let db = silt::Db::open(dir.path()).await?;
    /// # db.close().await?;
    /// # Ok::<(), silt::Error>(()) }).unwrap();
    /// ```
    pub async fn open(path: impl AsRef<Path>) -> Result<Db> {
        Db::builder(path).open().await
    }

    /// A [`Builder`] for the store at `path`.
    ///
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// # let dir = tempfile::tempdir().unwrap();
    /// let db = silt::Db::builder(dir.path())
    ///     .durability(silt::Durability::Buffered)
    ///     .open()
    ///     .await?;
    /// # db.close().await?;
    /// # Ok::<(), silt::Error>(()) }).unwrap();
    /// ```
    pub fn builder(path: impl AsRef<Path>) -> Builder {
        Builder {
            path: path.as_ref().to_path_buf(),
            durability: Durability::Sync,
            slab_size: 64 * MIB,
            max_sealed_slabs: 4,
            flush_workers: 2,
            direct_io: true,
            verify_checksums: true,
            io_backend: None,
            capacity: None,
            #[cfg(feature = "fault-injection")]
            fault: None,
        }
    }

    fn shared(&self) -> &Shared {
        &self.inner.shared
    }

    async fn call<T>(&self, make: impl FnOnce(oneshot::Sender<Result<T>>) -> Request) -> Result<T> {
        self.shared().check_open()?;
        let (tx, rx) = oneshot::channel();
        self.inner
            .tx
            .send(make(tx))
            .await
            .map_err(|_| Error::Closed)?;
        rx.await.map_err(|_| Error::Closed)?
    }

    async fn write_ops(&self, ops: Vec<Op>) -> Result<()> {
        let room = self.shared().config.slab_size - FILE_HEADER_LEN;
        let mut total = 0usize;
        for op in &ops {
            check_key(op.key())?;
            if let Op::Put(_, v) = op {
                if v.len() > u32::MAX as usize {
                    return Err(Error::InvalidArgument(format!(
                        "value is {} bytes; the limit is {}",
                        v.len(),
                        u32::MAX
                    )));
                }
            }
            total = total.saturating_add(op.encoded_len());
        }
        if total > room {
            return Err(Error::InvalidArgument(format!(
                "the write needs {total} bytes but a slab holds {room}; raise slab_size (values larger than a slab are not supported yet)"
            )));
        }
        if ops.is_empty() {
            return self.shared().check_open();
        }
        self.call(|reply| Request::Write { ops, reply }).await
    }

    /// Sets `key` to `value`. Resolves when the write has the configured
    /// [`Durability`]; from then on every `get` sees it.
    ///
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let db = silt::Db::open(dir.path()).await?;
    /// db.put("user:1", "ada").await?;
    /// assert_eq!(db.get(b"user:1").await?.unwrap(), "ada");
    /// # db.close().await?;
    /// # Ok::<(), silt::Error>(()) }).unwrap();
    /// ```
    pub async fn put(&self, key: impl Into<Bytes>, value: impl Into<Bytes>) -> Result<()> {
        self.write_ops(vec![Op::Put(key.into(), value.into())])
            .await
    }

    /// Deletes `key` (a no-op if absent, but still durable when it resolves).
    ///
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let db = silt::Db::open(dir.path()).await?;
    /// db.put("k", "v").await?;
    /// db.delete("k").await?;
    /// assert_eq!(db.get(b"k").await?, None);
    /// # db.close().await?;
    /// # Ok::<(), silt::Error>(()) }).unwrap();
    /// ```
    pub async fn delete(&self, key: impl Into<Bytes>) -> Result<()> {
        self.write_ops(vec![Op::Delete(key.into())]).await
    }

    /// Applies a batch atomically.
    ///
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let db = silt::Db::open(dir.path()).await?;
    /// let mut batch = silt::WriteBatch::new();
    /// batch.put("a", "1");
    /// batch.put("b", "2");
    /// batch.delete("a");
    /// db.write(batch).await?; // all of it, or (after a crash) none
    /// assert_eq!(db.get(b"a").await?, None);
    /// assert_eq!(db.get(b"b").await?.unwrap(), "2");
    /// # db.close().await?;
    /// # Ok::<(), silt::Error>(()) }).unwrap();
    /// ```
    pub async fn write(&self, batch: WriteBatch) -> Result<()> {
        self.write_ops(batch.ops).await
    }

    /// The value of `key`, zero-copy from the slab or the segment mmap.
    ///
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let db = silt::Db::open(dir.path()).await?;
    /// db.put("k", vec![7u8; 100]).await?;
    /// let v: bytes::Bytes = db.get(b"k").await?.unwrap(); // no copy
    /// assert_eq!(v.len(), 100);
    /// assert_eq!(db.get(b"missing").await?, None);
    /// # db.close().await?;
    /// # Ok::<(), silt::Error>(()) }).unwrap();
    /// ```
    pub async fn get(&self, key: &[u8]) -> Result<Option<Bytes>> {
        self.get_now(key)
    }

    fn get_now(&self, key: &[u8]) -> Result<Option<Bytes>> {
        check_key(key)?;
        let shared = self.shared();
        shared.check_open()?;
        let verify = shared.config.verify_checksums;
        let mut value = None;
        shared.index.get(key_hash(key), |loc| {
            let rec = match shared.registry.record(loc, verify) {
                Ok(rec) => rec,
                // Evicted between the index lookup and now: absent.
                Err(_) if shared.evicted(loc) => return Ok(false),
                Err(e) => return Err(e),
            };
            let hit = rec.key() == key;
            if hit {
                value = Some(rec.value_bytes());
            }
            Ok::<_, Error>(hit)
        })?;
        Ok(value)
    }

    /// Whether `key` has a value.
    ///
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let db = silt::Db::open(dir.path()).await?;
    /// db.put("k", "").await?;
    /// assert!(db.contains_key(b"k").await?);
    /// assert!(!db.contains_key(b"other").await?);
    /// # db.close().await?;
    /// # Ok::<(), silt::Error>(()) }).unwrap();
    /// ```
    pub async fn contains_key(&self, key: &[u8]) -> Result<bool> {
        check_key(key)?;
        let shared = self.shared();
        shared.check_open()?;
        Ok(shared
            .index
            .get(key_hash(key), |loc| {
                match shared.registry.key_is(loc, key) {
                    Err(_) if shared.evicted(loc) => Ok(false),
                    other => other,
                }
            })?
            .is_some())
    }

    /// The values of `keys`, in order (duplicates and missing keys allowed).
    ///
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let db = silt::Db::open(dir.path()).await?;
    /// db.put("a", "1").await?;
    /// let got = db.get_many(&["a", "nope", "a"]).await?;
    /// assert_eq!(got, vec![Some("1".into()), None, Some("1".into())]);
    /// # db.close().await?;
    /// # Ok::<(), silt::Error>(()) }).unwrap();
    /// ```
    pub async fn get_many<K: AsRef<[u8]>>(&self, keys: &[K]) -> Result<Vec<Option<Bytes>>> {
        keys.iter().map(|k| self.get_now(k.as_ref())).collect()
    }

    /// Every live pair, in no particular order. Each index shard is copied
    /// when the stream reaches it, so writes made during the scan may or may
    /// not be seen; every pair that was live before the scan and not changed
    /// during it is yielded exactly once.
    ///
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let db = silt::Db::open(dir.path()).await?;
    /// use futures::StreamExt;
    /// db.put("a", "1").await?;
    /// db.put("b", "2").await?;
    /// let mut pairs = Box::pin(db.scan());
    /// let mut n = 0;
    /// while let Some(pair) = pairs.next().await {
    ///     let (_key, _value) = pair?;
    ///     n += 1;
    /// }
    /// assert_eq!(n, 2);
    /// # db.close().await?;
    /// # Ok::<(), silt::Error>(()) }).unwrap();
    /// ```
    pub fn scan(&self) -> impl Stream<Item = Result<(Bytes, Bytes)>> + Send + 'static {
        let shared = self.inner.shared.clone();
        let open = shared.check_open();
        let shards = if open.is_ok() {
            shared.index.shard_count()
        } else {
            0
        };
        let verify = shared.config.verify_checksums;
        let items = (0..shards).flat_map(move |i| {
            let shared = shared.clone();
            let locations = shared.index.shard_locations(i);
            locations
                .into_iter()
                .filter_map(move |loc| match shared.registry.record(loc, verify) {
                    Ok(rec) => Some(Ok((rec.key_bytes(), rec.value_bytes()))),
                    Err(_) if shared.evicted(loc) => None,
                    Err(e) => Some(Err(e)),
                })
        });
        futures::stream::iter(open.err().map(Err).into_iter().chain(items))
    }

    /// Makes every acknowledged write durable (an fdatasync under
    /// `Buffered`, a flush under `None`; a no-op under `Sync`).
    ///
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let db = silt::Db::open(dir.path()).await?;
    /// # let db = { db.close().await?; silt::Db::builder(dir.path()).durability(silt::Durability::Buffered).open().await? };
    /// db.put("k", "v").await?; // in the OS page cache
    /// db.sync().await?;          // now on disk
    /// # db.close().await?;
    /// # Ok::<(), silt::Error>(()) }).unwrap();
    /// ```
    pub async fn sync(&self) -> Result<()> {
        self.call(|reply| Request::Sync { reply }).await
    }

    /// Seals the active slab and waits until every slab is a published
    /// segment file.
    ///
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let db = silt::Db::open(dir.path()).await?;
    /// db.put("k", "v").await?;
    /// db.flush().await?;
    /// assert_eq!(db.stats().segments, 1);
    /// assert_eq!(db.stats().slabs_in_memory, 0);
    /// # db.close().await?;
    /// # Ok::<(), silt::Error>(()) }).unwrap();
    /// ```
    pub async fn flush(&self) -> Result<()> {
        let upto = self.call(|reply| Request::Flush { reply }).await?;
        self.shared().wait_flushed(upto).await
    }

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
            recovered_records: c.recovered_records.load(Ordering::Relaxed),
            flush_retries: c.flush_retries.load(Ordering::Relaxed),
            slabs_recycled: s.slab_pool.reused(),
            evictions: c.evictions.load(Ordering::Relaxed),
            evicted_bytes: c.evicted_bytes.load(Ordering::Relaxed),
            io_backend: s.backend,
            wal_direct_io: s.wal_direct.load(Ordering::Relaxed),
            durability: s.config.durability,
        }
    }

    /// Drains queued writes, flushes every slab to a segment, fsyncs, stops
    /// the background threads and releases the directory lock. Other clones
    /// of this handle get [`Error::Closed`] afterwards. Closing an already
    /// closed store is `Ok`.
    ///
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let db = silt::Db::open(dir.path()).await?;
    /// let other = db.clone();
    /// db.close().await?;
    /// assert!(matches!(other.get(b"k").await, Err(silt::Error::Closed)));
    /// # Ok::<(), silt::Error>(()) }).unwrap();
    /// ```
    pub async fn close(self) -> Result<()> {
        let res = match self.call(|reply| Request::Close { reply }).await {
            Err(Error::Closed) => Ok(()),
            other => other,
        };
        self.shared().closed.store(true, Ordering::Release);
        // The writer dropped the threads' channels before replying, so they
        // are exiting: wait for them, so nothing of this store runs on.
        let threads = std::mem::take(&mut *crate::sync::lock(&self.shared().threads));
        if !threads.is_empty() {
            let _ = tokio::task::spawn_blocking(move || {
                threads.into_iter().for_each(|t| drop(t.join()))
            })
            .await;
        }
        drop(crate::sync::lock(&self.shared().lock_file).take());
        res
    }
}
