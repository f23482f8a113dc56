//! `Db`, `Builder`, `WriteBatch`, `Stats`: the face of silt. Forwards writes
//! to the writer task and serves reads from the index and registry directly.

use crate::builder::Builder;
use crate::error::{Error, Result};
use crate::record::MAX_KEY_LEN;
use crate::shared::Shared;
use crate::slab::FILE_HEADER_LEN;
use crate::sync::Ordering;
use crate::writer::{Facts, Op, Request, WriteRequest};
use crate::{CompactionReport, FileSpace, WriteBatch};
use bytes::Bytes;
use futures::Stream;
use std::path::Path;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

#[derive(Debug)]
struct Handle {
    role: Role,
    shared: Arc<Shared>,
}

/// What a handle talks to.
#[derive(Debug)]
enum Role {
    /// The writer task, and the store's runtime it runs on.
    Writer(mpsc::Sender<Request>, tokio::runtime::Handle),
    /// Nothing: a read-only follower, with what it has loaded, moved
    /// forward by `refresh` (one at a time).
    Follower(Arc<tokio::sync::Mutex<crate::follower::FollowerState>>),
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
#[derive(Clone)]
pub struct Db {
    inner: Arc<Handle>,
}

/// The path, the mode and a few counters; not the channels and maps
/// inside.
///
/// ```
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// # let dir = tempfile::tempdir().unwrap();
/// let db = silt::Db::open(dir.path()).await?;
/// db.put("k", "v").await?;
/// let shown = format!("{db:?}");
/// assert!(shown.starts_with("Db { path: "), "{shown}");
/// assert!(shown.contains("keys: 1") && shown.len() < 400, "{shown}");
/// # db.close().await?;
/// # Ok::<(), silt::Error>(()) }).unwrap();
/// ```
impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let shared = self.shared();
        let mode = match self.inner.role {
            Role::Writer(..) => "writer",
            Role::Follower(_) => "follower",
        };
        let (slabs, segments, _) = shared.registry.counts();
        f.debug_struct("Db")
            .field(
                "path",
                &shared.registry.data_dir().parent().unwrap_or(Path::new("")),
            )
            .field("mode", &mode)
            .field("durability", &shared.config.durability)
            .field("io_backend", &shared.backend)
            .field("open", &shared.check_open().is_ok())
            .field("keys", &shared.index.len())
            .field("slabs_in_memory", &slabs)
            .field("segments", &segments)
            .finish()
    }
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
    /// A handle on a freshly opened store (called by `Builder::open`).
    pub(crate) fn from_parts(
        tx: mpsc::Sender<Request>,
        shared: Arc<Shared>,
        rt: tokio::runtime::Handle,
    ) -> Db {
        Db {
            inner: Arc::new(Handle {
                role: Role::Writer(tx, rt),
                shared,
            }),
        }
    }

    /// A read-only follower's handle: no writer task behind it.
    pub(crate) fn follower(shared: Arc<Shared>, state: crate::follower::FollowerState) -> Db {
        Db {
            inner: Arc::new(Handle {
                role: Role::Follower(Arc::new(tokio::sync::Mutex::new(state))),
                shared,
            }),
        }
    }

    /// Opens a read-only follower of the store at `path` with default
    /// settings: it takes no lock, so it runs beside the writer (in this
    /// process or another), loads the segments and the valid prefix of the
    /// unsealed files, and sees the writer's later writes after
    /// [`Db::refresh`]. Writes through it are [`Error::ReadOnly`]. It sees a
    /// record once it is in the file: under `Durability::Sync` that can be
    /// just before the writer acknowledges it. `Db::builder(path)` knobs do
    /// not apply, except through [`Builder::open_read_only`]. Its `stats()`
    /// count what it has loaded; the space figures (`record_bytes`,
    /// `live_bytes`, [`Db::file_space`]) are kept by the writer only.
    ///
    /// # Cancel safety
    ///
    /// Dropped before it returns, the load it started runs to its end on
    /// a thread of its own and is then dropped. A follower holds no lock,
    /// so nothing waits for it.
    ///
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// # let dir = tempfile::tempdir().unwrap();
    /// let db = silt::Db::open(dir.path()).await?;
    /// db.put("k", "1").await?;
    /// let follower = silt::Db::open_read_only(dir.path()).await?;
    /// assert_eq!(follower.get(b"k").await?.unwrap(), "1");
    /// db.put("k", "2").await?;
    /// follower.refresh().await?;
    /// assert_eq!(follower.get(b"k").await?.unwrap(), "2");
    /// assert!(matches!(follower.put("k", "3").await, Err(silt::Error::ReadOnly)));
    /// # db.close().await?;
    /// # follower.close().await?;
    /// # Ok::<(), silt::Error>(()) }).unwrap();
    /// ```
    ///
    /// [`Builder::open_read_only`]: crate::Builder::open_read_only
    pub async fn open_read_only(path: impl AsRef<Path>) -> Result<Db> {
        Db::builder(path).open_read_only().await
    }

    /// Follower handles: loads what the writer added since the last refresh
    /// (new segments, the new part of unsealed files) and drops files it
    /// removed. Reads only what is new. On a writer's handle, `Ok` at once
    /// (it always sees its own writes).
    ///
    /// # Cancel safety
    ///
    /// Dropped before it took the follower's refresh lock, nothing
    /// happened. Dropped after, the refresh runs to its end on the blocking
    /// pool and what it loaded stays loaded; a later `refresh` waits for it
    /// and goes on from there (refreshes never interleave).
    pub async fn refresh(&self) -> Result<()> {
        let Role::Follower(state) = &self.inner.role else {
            return self.shared().check_open();
        };
        self.shared().check_open()?;
        // The blocking work owns the state's guard: dropped, this future
        // leaves it running to the end with the state in place, and the
        // next refresh waits for it.
        let mut state = state.clone().lock_owned().await;
        let shared = self.inner.shared.clone();
        crate::runtime::off_runtime(move || state.refresh(&shared).map(drop)).await?
    }

    /// The writer task's channel; `ReadOnly` on a follower.
    fn writer(&self) -> Result<&mpsc::Sender<Request>> {
        match &self.inner.role {
            Role::Writer(tx, _) => Ok(tx),
            Role::Follower(_) => Err(Error::ReadOnly),
        }
    }

    /// Opens the store at `path` with every default.
    ///
    /// # Cancel safety
    ///
    /// As [`Builder::open`](crate::Builder::open).
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
        Builder::new(path.as_ref())
    }

    pub(crate) fn shared(&self) -> &Shared {
        &self.inner.shared
    }

    async fn call<T>(&self, make: impl FnOnce(oneshot::Sender<Result<T>>) -> Request) -> Result<T> {
        self.shared().check_open()?;
        let writer = self.writer()?;
        let (tx, rx) = oneshot::channel();
        let sent = writer.send(make(tx)).await.is_ok();
        match rx.await {
            Ok(res) if sent => res,
            // The writer is gone, or going: once the store has stopped,
            // why is known (a panic is still unwinding when its requests'
            // replies are dropped).
            _ => {
                self.shared().wait_stopped().await;
                Err(self.shared().stopped_error())
            }
        }
    }

    async fn write_ops(&self, ops: Vec<Op>) -> Result<()> {
        self.writer()?;
        let room = self.shared().config.slab_size - FILE_HEADER_LEN;
        let mut total = 0usize;
        // A key must fit in a slab with its delete record, or it could be
        // put (through the XL path) but never deleted.
        let key_room = room.saturating_sub(crate::record::HEADER_LEN);
        for op in &ops {
            check_key(op.key())?;
            if op.key().len() > key_room {
                return Err(Error::InvalidArgument(format!(
                    "key is {} bytes; with slab_size {} the limit is {key_room} (a delete of it must fit in a slab)",
                    op.key().len(),
                    self.shared().config.slab_size
                )));
            }
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
        // A put or a batch larger than a slab gets a file of its own, whose
        // offsets must fit in 32 bits.
        let limit = u32::MAX as usize - 2 * FILE_HEADER_LEN;
        if total > limit {
            return Err(Error::InvalidArgument(format!(
                "the write needs {total} bytes (keys + values + {} bytes of header per record); the limit of one write is {limit}",
                crate::record::HEADER_LEN,
            )));
        }
        if ops.is_empty() {
            return self.shared().check_open();
        }
        let timer = crate::signals::Timer::start();
        // Read only where a recorder will take it (off the hot path else).
        #[cfg(feature = "metrics")]
        if let Ok(tx) = self.writer() {
            let waiting = tx.max_capacity() - tx.capacity();
            crate::signals::gauge("silt_queue_depth", waiting as f64);
        }
        let res = self.send_write(ops).await;
        timer.record("silt_write_seconds");
        if res.is_ok() {
            crate::signals::count("silt_written_bytes_total", total as u64);
        }
        res
    }

    /// Sends a write to the writer. The writer hands it back, nothing of it
    /// done, when a record it must compare a key with is not in memory;
    /// this task then reads those records on the I/O threads and sends it
    /// again with what it found (`crate::writer::decide`).
    async fn send_write(&self, mut ops: Vec<Op>) -> Result<()> {
        let mut facts = Facts::default();
        loop {
            self.shared().check_open()?;
            let writer = self.writer()?;
            let (reply, rx) = oneshot::channel();
            let (bounce, bounced) = oneshot::channel();
            let req = WriteRequest {
                ops,
                facts,
                reply,
                bounce,
            };
            let sent = writer.send(Request::Write(req)).await.is_ok();
            if let Ok(back) = bounced.await {
                ops = back.ops;
                facts = back.facts;
                self.shared().read_facts(back.unknown, &mut facts).await?;
                continue;
            }
            return match rx.await {
                Ok(res) if sent => res,
                // As in `call`.
                _ => {
                    self.shared().wait_stopped().await;
                    Err(self.shared().stopped_error())
                }
            };
        }
    }

    /// Sets `key` to `value`. Resolves when the write has the configured
    /// [`Durability`](crate::Durability); from then on every `get` sees it.
    /// The key is anything that derefs to bytes (`"k"`, `&String`,
    /// `Vec<u8>`, `Bytes`), copied; the value is taken as it is, so a
    /// `Bytes`, `Vec<u8>` or `String` value is never copied.
    ///
    /// # Cancel safety
    ///
    /// The write is queued with the writer at the first poll that finds
    /// room in its queue (the first poll, unless 4,096 requests wait
    /// there), after its arguments are checked. Dropped before that,
    /// nothing is written. Dropped after, it goes on exactly as if it were
    /// awaited (`tokio::time::timeout` polls it once even with a zero
    /// duration): it is applied or fails, and only the answer is lost;
    /// except that an overwrite or delete of a key whose old record is not
    /// in memory comes back to this future, which reads the old record's
    /// key and queues the write again: dropped meanwhile, nothing of it is
    /// written. Either way a write is applied whole or not at all. To
    /// learn the outcome, await a later [`Db::flush`], which returns once
    /// every write queued before it is applied or has failed; a `get` then
    /// tells which.
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
    pub async fn put(&self, key: impl AsRef<[u8]>, value: impl Into<Bytes>) -> Result<()> {
        let key = Bytes::copy_from_slice(key.as_ref());
        self.write_ops(vec![Op::Put(key, value.into())]).await
    }

    /// Deletes `key` (a no-op if absent, but still durable when it resolves).
    ///
    /// # Cancel safety
    ///
    /// As [`Db::put`].
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
    pub async fn delete(&self, key: impl AsRef<[u8]>) -> Result<()> {
        let key = Bytes::copy_from_slice(key.as_ref());
        self.write_ops(vec![Op::Delete(key)]).await
    }

    /// Applies a batch atomically.
    ///
    /// # Cancel safety
    ///
    /// As [`Db::put`]: once queued, the whole batch is applied or none of
    /// it, whether or not the future is still awaited.
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
        self.write_ops(batch.into_ops()).await
    }

    /// The value of `key`: without a copy if its record is in memory (the
    /// slab, or segment pages in the page cache); otherwise read by the
    /// store's I/O threads while this future is pending, so the runtime
    /// worker is free meanwhile (io_uring with many reads in flight, or a
    /// pool of threads on `IoBackend::Std`). Takes a unit of Tokio's
    /// cooperative budget, so a task looping on gets yields to others.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: a get changes nothing. Dropped while a read is in
    /// flight, the read finishes on its I/O thread and its bytes are freed.
    ///
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let db = silt::Db::open(dir.path()).await?;
    /// db.put("k", vec![7u8; 100]).await?;
    /// let v: bytes::Bytes = db.get("k").await?.unwrap();
    /// assert_eq!(v.len(), 100);
    /// assert_eq!(db.get(b"missing").await?, None);
    /// # db.close().await?;
    /// # Ok::<(), silt::Error>(()) }).unwrap();
    /// ```
    pub async fn get(&self, key: impl AsRef<[u8]>) -> Result<Option<Bytes>> {
        let key = key.as_ref();
        check_key(key)?;
        tokio::task::coop::consume_budget().await;
        let shared = self.shared();
        shared.check_open()?;
        let timer = crate::signals::Timer::start();
        let got = shared.get(key).await;
        timer.record("silt_get_seconds");
        if let Ok(Some(v)) = &got {
            crate::signals::count("silt_read_bytes_total", v.len() as u64);
        }
        got
    }

    /// Bytes `range` of `key`'s value, reading only those (and the
    /// record's header and key), as an object store serves a ranged GET:
    /// a large value can be streamed in chunks without holding it all.
    /// The range is clamped to the value (a range past its end is empty);
    /// `None` if the key has no value. The record's CRC covers the whole
    /// value, so a ranged read does not check it.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe, as [`Db::get`].
    ///
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let db = silt::Db::open(dir.path()).await?;
    /// db.put("blob", (0..=255u8).collect::<Vec<u8>>()).await?;
    /// assert_eq!(db.get_range("blob", 10..13).await?.unwrap(), &[10u8, 11, 12][..]);
    /// assert_eq!(db.get_range("blob", 250..300).await?.unwrap().len(), 6);
    /// assert_eq!(db.get_range("missing", 0..1).await?, None);
    /// # db.close().await?;
    /// # Ok::<(), silt::Error>(()) }).unwrap();
    /// ```
    pub async fn get_range(
        &self,
        key: impl AsRef<[u8]>,
        range: std::ops::Range<u64>,
    ) -> Result<Option<Bytes>> {
        let key = key.as_ref();
        check_key(key)?;
        if range.start > range.end {
            return Err(Error::InvalidArgument(format!(
                "range start {} is after its end {}",
                range.start, range.end
            )));
        }
        tokio::task::coop::consume_budget().await;
        let shared = self.shared();
        shared.check_open()?;
        shared.get_range(key, range).await
    }

    /// Whether `key` has a value (reads the record's header and key only).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe, as [`Db::get`].
    ///
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let db = silt::Db::open(dir.path()).await?;
    /// db.put("k", "").await?;
    /// assert!(db.contains_key("k").await?);
    /// assert!(!db.contains_key(b"other").await?);
    /// # db.close().await?;
    /// # Ok::<(), silt::Error>(()) }).unwrap();
    /// ```
    pub async fn contains_key(&self, key: impl AsRef<[u8]>) -> Result<bool> {
        let key = key.as_ref();
        check_key(key)?;
        tokio::task::coop::consume_budget().await;
        let shared = self.shared();
        shared.check_open()?;
        shared.contains(key).await
    }

    /// The values of `keys`, in order (duplicates and missing keys
    /// allowed). Records not in memory are read concurrently.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe, as [`Db::get`].
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
        for k in keys {
            check_key(k.as_ref())?;
        }
        tokio::task::coop::consume_budget().await;
        let shared = self.shared();
        shared.check_open()?;
        futures::future::try_join_all(keys.iter().map(|k| shared.get(k.as_ref()))).await
    }

    /// Every live pair, in no particular order, as an async stream: each
    /// step takes a unit of Tokio's cooperative budget, and records not in
    /// memory are read file by file in large sequential reads on the I/O
    /// threads. The index is visited a few shards at a time, so writes
    /// made during the scan may or may not be seen; every pair that was
    /// live before the scan and not changed during it is yielded exactly
    /// once (GC moving it meanwhile included).
    ///
    /// # Cancel safety
    ///
    /// Dropping the stream stops the scan; reads in flight finish on the
    /// I/O threads and their bytes are freed. It changes nothing.
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
        crate::scan::scan(self.inner.shared.clone())
    }

    /// Makes every acknowledged write durable (an fdatasync under
    /// `Buffered`, a flush under `None`; a no-op under `Sync`).
    ///
    /// # Cancel safety
    ///
    /// Under `Sync` it returns at once. Otherwise the request is queued at
    /// the first poll; dropped after that, the fdatasync (`Buffered`) or
    /// the flush (`None`) still runs to its end in the background, and
    /// only the answer is lost (a later `sync` covers the same writes).
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
    /// # Cancel safety
    ///
    /// The request is queued at the first poll. Dropped after that, the
    /// slabs are still sealed and flushed in the background; what is
    /// dropped is the wait for it.
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

    /// Drops every segment's pages from the page cache and forgets what
    /// was resident, so the next reads go to the disk (tests and
    /// benchmarks of cold reads).
    #[cfg(feature = "fault-injection")]
    #[doc(hidden)]
    pub fn drop_page_cache(&self) {
        for (_, source) in self.shared().registry.sources() {
            if let crate::registry::Source::Segment(seg) = source {
                seg.drop_cached();
            }
        }
    }

    /// Recounts every data file's record and live bytes from the files and
    /// the index and compares them with what `file_space` reports; the
    /// differences, if any (tests: call it while no write or compaction
    /// is under way).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it only reads (dropped while a compaction waits for
    /// it, the compaction goes on).
    #[cfg(feature = "fault-injection")]
    #[doc(hidden)]
    pub async fn check_space(&self) -> std::result::Result<(), String> {
        let shared = self.inner.shared.clone();
        let _no_compaction = shared.compacting.lock().await;
        let s = shared.clone();
        crate::runtime::off_runtime(move || crate::space::recount(&s))
            .await
            .map_err(|e| e.to_string())?
    }

    /// Rewrites the live records of every segment that holds dead bytes
    /// (overwritten or deleted records, tombstones no older file needs)
    /// and deletes the old files; returns what it did. Writes continue
    /// meanwhile and always win over the copies. Background GC does the
    /// same for segments under [`Builder::gc_threshold`]; this reclaims
    /// everything now. A no-op in cache mode. RocksDB: `CompactRange`.
    ///
    /// # Cancel safety
    ///
    /// Dropped, the compaction stops at its next await point on the
    /// store's runtime. Nothing is lost: records it already moved are in
    /// their new place, a segment is deleted only after its moves are
    /// durable, and what it did not reach waits for the next compaction.
    ///
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// # let dir = tempfile::tempdir().unwrap();
    /// let db = silt::Db::builder(dir.path())
    ///     .slab_size(64 << 10)
    ///     .gc_threshold(0.0) // no background GC: compact() finds all the garbage
    ///     .open()
    ///     .await?;
    /// for i in 0..1000u32 {
    ///     db.put(i.to_be_bytes().to_vec(), vec![1u8; 100]).await?;
    /// }
    /// for i in 0..900u32 {
    ///     db.delete(i.to_be_bytes().to_vec()).await?;
    /// }
    /// db.flush().await?;
    /// let before = db.stats();
    /// let report = db.compact().await?;
    /// let after = db.stats();
    /// assert!(report.files_rewritten > 0);
    /// assert!(after.record_bytes < before.record_bytes);
    /// assert_eq!(db.get(&950u32.to_be_bytes()).await?.unwrap().len(), 100);
    /// assert_eq!(db.get(&5u32.to_be_bytes()).await?, None);
    /// # db.close().await?;
    /// # Ok::<(), silt::Error>(()) }).unwrap();
    /// ```
    ///
    /// [`Builder::gc_threshold`]: crate::Builder::gc_threshold
    pub async fn compact(&self) -> Result<CompactionReport> {
        self.shared().check_open()?;
        let Role::Writer(writer, rt) = &self.inner.role else {
            return Err(Error::ReadOnly);
        };
        // On the store's runtime, so that its file work runs on the store's
        // blocking pool whatever executor the caller is on.
        let (shared, writer) = (self.inner.shared.clone(), writer.clone());
        let task = rt.spawn(async move {
            crate::gc::compact(&shared, &writer, crate::gc::Pick::AnyGarbage).await
        });
        let _stop_if_dropped = crate::runtime::AbortOnDrop(task.abort_handle());
        task.await.map_err(|_| self.shared().stopped_error())?
    }

    /// Record and live bytes of every data file, oldest first (the live
    /// ratio per segment that GC decides by).
    ///
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let db = silt::Db::open(dir.path()).await?;
    /// db.put("k", "1").await?;
    /// db.put("k", "2").await?;
    /// let files = db.file_space();
    /// assert_eq!(files.len(), 1);
    /// assert!(files[0].live_ratio() < 0.6);
    /// # db.close().await?;
    /// # Ok::<(), silt::Error>(()) }).unwrap();
    /// ```
    pub fn file_space(&self) -> Vec<FileSpace> {
        self.shared().space.files()
    }

    /// Drains queued writes, flushes every slab to a segment, fsyncs, stops
    /// the background threads and releases the directory lock. Other clones
    /// of this handle get [`Error::Closed`] afterwards. Closing an already
    /// closed store is `Ok`.
    ///
    /// # Cancel safety
    ///
    /// The request is queued at the first poll. Dropped after that, the
    /// store still shuts down to its end: writes drained, slabs flushed,
    /// threads joined and the lock released (a reopen works even while
    /// clones of this handle live on), and every clone gets
    /// [`Error::Closed`]. Dropped before, nothing happened.
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
        if let Role::Follower(_) = self.inner.role {
            self.shared().closed.store(true, Ordering::Release);
            let readers = self.shared().reader.shutdown();
            if !readers.is_empty() {
                crate::runtime::off_runtime(move || {
                    readers.into_iter().for_each(|t| drop(t.join()))
                })
                .await?;
            }
            return Ok(());
        }
        let res = match self.call(|reply| Request::Close { reply }).await {
            Err(Error::Closed) => Ok(()),
            other => other,
        };
        // A store that stopped on its own says why, once.
        self.shared().closed.store(true, Ordering::Release);
        // The store's thread stops GC, waits for a compaction, joins the
        // store's threads and releases the lock, then reports stopped: no
        // file of this store changes after `close` returns.
        self.shared().wait_stopped().await;
        if let Some(thread) = crate::sync::lock(&self.shared().store_thread).take() {
            crate::runtime::join_exiting(thread);
        }
        res
    }

    /// Makes the writer task panic, as a bug in it would (tests of what
    /// callers then see). Returns once the request is queued.
    ///
    /// # Cancel safety
    ///
    /// Dropped before its request is queued, nothing happens; after, the
    /// writer panics.
    #[cfg(feature = "fault-injection")]
    #[doc(hidden)]
    pub async fn panic_writer_for_tests(&self) {
        if let Ok(tx) = self.writer() {
            let _ = tx.send(Request::Panic).await;
        }
    }

    /// Stops the store where it is, as a killed process would: the writer
    /// is dropped at its current await point, nothing is sealed, flushed
    /// or closed; the lock is released once every handle is dropped.
    /// Tests use it to crash a store in this process.
    ///
    /// # Cancel safety
    ///
    /// The halt is sent at the first poll; dropped after that, the store
    /// still stops where it is; only the wait for it is dropped.
    #[cfg(feature = "fault-injection")]
    #[doc(hidden)]
    pub async fn simulate_crash(self) {
        if let Some(halt) = crate::sync::lock(&self.shared().halt).take() {
            let _ = halt.send(());
        }
        self.shared().wait_stopped().await;
    }
}
