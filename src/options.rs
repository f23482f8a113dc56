//! The modes a store runs in: `Durability` and `IoBackend`.

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

/// How a get reads a record whose bytes are not in memory (always on an
/// I/O thread, never on the caller's runtime worker).
///
/// ```
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// # let dir = tempfile::tempdir().unwrap();
/// let db = silt::Db::builder(dir.path())
///     .cold_reads(silt::ColdReads::Direct) // a blob store much larger than memory
///     .open()
///     .await?;
/// # db.close().await?;
/// # Ok::<(), silt::Error>(()) }).unwrap();
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ColdReads {
    /// `PageCache` while the segment files fit in half the memory the
    /// process may use (its cgroup's limit, else the machine's), `Direct`
    /// once they outgrow it.
    #[default]
    Auto,
    /// Through the page cache: what was read stays in memory, so the next
    /// get of it is served from there without a copy.
    PageCache,
    /// `O_DIRECT`: only the sectors that hold the record are read and
    /// nothing is cached, so the page cache keeps what fits (measured: 63 %
    /// of the disk's random-read bandwidth through the page cache against
    /// 100 % direct, docs/decisions.md).
    Direct,
}

/// Where the store's writer task (and background GC) runs.
///
/// ```
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// # let dir = tempfile::tempdir().unwrap();
/// let db = silt::Db::builder(dir.path())
///     .runtime(silt::StoreRuntime::Dedicated) // outlives this runtime
///     .open()
///     .await?;
/// # db.close().await?;
/// # Ok::<(), silt::Error>(()) }).unwrap();
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum StoreRuntime {
    /// `Caller` when opened on a multi-thread Tokio runtime; `Dedicated`
    /// on a `current_thread` runtime (whose one thread may be busy with
    /// synchronous work while other runtimes call the store) or outside
    /// any Tokio runtime.
    #[default]
    Auto,
    /// On the runtime that opens the store: a write from one of its tasks
    /// reaches the writer without a thread switch (measured: 284,000
    /// sequential `Buffered` puts/s from one task, against 58,000 with
    /// `Dedicated`). The store stops when that runtime shuts down: its
    /// lock is released and handles used elsewhere get
    /// [`Error::Closed`](crate::Error::Closed). Opening outside a
    /// runtime is an [`Error::Config`](crate::Error::Config).
    Caller,
    /// On a thread and `current_thread` runtime of the store's own: it
    /// outlives the runtime that opened it and serves callers on any
    /// runtime (or none, e.g. `futures::executor::block_on`); each write
    /// crosses threads.
    Dedicated,
}
