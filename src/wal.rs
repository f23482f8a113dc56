//! The write-ahead log: each group commit's new slab pages are written to
//! `data/<id>.log` at the same offsets (the WAL *is* the future segment).
//!
//! Two ways to run it, chosen by measurement (docs/decisions.md):
//! - `Durability::Sync`: two log threads, one writing groups in order and
//!   one fdatasyncing what was written, so the writer task never waits on
//!   the device and a group's write overlaps the previous group's
//!   fdatasync; replies come back over oneshot channels while the next
//!   group accumulates. Where the backend makes a write durable in one
//!   operation (io_uring's `RWF_DSYNC`), the write thread does that and
//!   replies itself, and the fdatasync thread stays idle: each group then
//!   takes one trip through the kernel's io-wq instead of two.
//! - `Durability::Buffered`: the write is a copy into the page cache, so the
//!   writer task does it inline: a round trip to a thread costs two
//!   cross-thread wake-ups (~60 µs here), the write itself ~2 µs.

use crate::error::{Error, Result};
use crate::io::aligned::{page_ceil, AlignedBuf, PAGE};
use crate::io::{slab_range_bufs, DurableWriteError, FileIo, Vfs};
use crate::registry::log_path;
use crate::slab::Slab;
use crate::sync::{AtomicBool, AtomicU64, Ordering};
use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;

/// Why a WAL write failed.
#[derive(Debug, Clone)]
pub(crate) enum WalError {
    /// Creating or writing the file failed (e.g. ENOSPC): nothing after the
    /// group's start can be trusted, but earlier data is as durable as it
    /// was. The writer rolls back and carries on.
    Write(Error),
    /// fdatasync (or the directory fsync) failed: the kernel may have
    /// dropped dirty pages, so nothing written since the last good sync can
    /// be called durable, now or by a retry. The store is poisoned.
    Sync(Error),
}

impl WalError {
    pub fn error(&self) -> &Error {
        match self {
            WalError::Write(e) | WalError::Sync(e) => e,
        }
    }
}

/// One open WAL file.
#[derive(Debug)]
struct WalFile {
    io: Arc<dyn FileIo>,
    direct: bool,
    /// End of what was ever written to the file. After a rollback, a later
    /// write that ends before it zeroes the rest, so no record of a failed
    /// group can be found by recovery behind newer records.
    written_end: usize,
}

/// The open WAL files and the code that writes them.
#[derive(Debug)]
pub(crate) struct WalFiles {
    vfs: Arc<dyn Vfs>,
    data_dir: PathBuf,
    direct: bool,
    direct_used: Arc<AtomicBool>,
    /// fsync the directory when a file is created (needed for power-loss
    /// durability; `Buffered` does it in `sync` instead).
    sync_dir_on_create: bool,
    files: HashMap<u32, WalFile>,
    /// Without `sync_dir_on_create`: which creations `sync` must still
    /// make durable with a directory fsync. Each fsync of a directory is a
    /// device cache flush here, as costly as the fdatasync it follows, so
    /// `sync` does one only when a file was created since the last.
    dir_entries: Arc<DirEntries>,
    bounce: AlignedBuf,
    /// A write or fdatasync this slow is logged (`Builder::slow_op_warning`).
    slow: Duration,
}

/// Counts file creations (bumped by the writer, lock-free) against the
/// count the last directory fsync covered (kept under a lock held through
/// that fsync, so a `sync` that finds nothing left to do knows the fsync
/// that covered its files has finished, not merely started).
#[derive(Debug)]
struct DirEntries {
    created: AtomicU64,
    synced: crate::sync::Mutex<u64>,
}

impl DirEntries {
    /// fsyncs `dir` unless every creation counted so far is covered.
    fn sync(&self, vfs: &dyn Vfs, dir: &std::path::Path) -> Result<()> {
        let mut synced = crate::sync::lock(&self.synced);
        let created = self.created.load(Ordering::Acquire);
        if *synced < created {
            vfs.sync_dir(dir)
                .map_err(|e| Error::io("fsync data directory", dir, e))?;
            *synced = created;
        }
        Ok(())
    }
}

impl WalFiles {
    pub fn new(
        vfs: Arc<dyn Vfs>,
        data_dir: PathBuf,
        direct: bool,
        direct_used: Arc<AtomicBool>,
        sync_dir_on_create: bool,
        slow: Duration,
    ) -> WalFiles {
        WalFiles {
            vfs,
            data_dir,
            direct,
            direct_used,
            sync_dir_on_create,
            files: HashMap::new(),
            // One creation counted from the start: the first `sync` also
            // covers what open and recovery left in the directory.
            dir_entries: Arc::new(DirEntries {
                created: AtomicU64::new(1),
                synced: crate::sync::Mutex::new(0),
            }),
            bounce: AlignedBuf::zeroed(PAGE),
            slow,
        }
    }

    /// Writes slab bytes `[from, to)` to the slab's file (created on first
    /// use), then fdatasyncs if `sync`.
    pub fn write(
        &mut self,
        slab: &Slab,
        from: usize,
        to: usize,
        sync: bool,
    ) -> Result<(), WalError> {
        match self.write_range(slab, from, to, sync)? {
            Written::Unsynced(file) if sync => file.sync(&self.data_dir),
            _ => Ok(()),
        }
    }

    /// Writes slab bytes `[from, to)` to the slab's file (created on first
    /// use). With `durable`, and a backend whose durable write is one
    /// operation, the write is durable when this returns; otherwise it
    /// returns the file, for the fdatasync that makes the bytes durable.
    fn write_range(
        &mut self,
        slab: &Slab,
        from: usize,
        to: usize,
        durable: bool,
    ) -> Result<Written, WalError> {
        let id = slab.file_id();
        let path = log_path(&self.data_dir, id);
        if !self.files.contains_key(&id) {
            let (file, direct) = self
                .vfs
                .open_write(&path, true, self.direct)
                .map_err(|e| WalError::Write(Error::io("create WAL", &path, e)))?;
            self.direct_used.store(direct, Ordering::Relaxed);
            self.dir_entries.created.fetch_add(1, Ordering::Release);
            if self.sync_dir_on_create {
                // The new entry must be durable before any write in the file
                // is acknowledged as durable.
                self.vfs.sync_dir(&self.data_dir).map_err(|e| {
                    WalError::Sync(Error::io("fsync data directory", &self.data_dir, e))
                })?;
            }
            let file = WalFile {
                io: Arc::from(file),
                direct,
                written_end: 0,
            };
            self.files.insert(id, file);
        }
        let file = self
            .files
            .get_mut(&id)
            .ok_or(WalError::Write(Error::Closed))?;
        let write_err = |e| WalError::Write(Error::io("write WAL", &path, e));
        let io = file.io.clone();
        let durable = durable && io.durable_writes();
        let put = |bufs: &[&[u8]], at: u64| {
            if !durable {
                return io.write_gather(bufs, at).map_err(write_err);
            }
            io.write_gather_durable(bufs, at).map_err(|e| match e {
                DurableWriteError::Write(e) => write_err(e),
                DurableWriteError::Sync(e) => {
                    // The same step as on the sync thread, done by the write.
                    WalError::Sync(Error::io("fdatasync WAL", &path, e))
                }
            })
        };
        // Until the write succeeds, assume it reached anywhere up to `to`.
        let written_end = file.written_end.max(to);
        file.written_end = written_end;
        let (bufs, at) =
            slab_range_bufs(slab, from, to, file.direct, &mut self.bounce).map_err(write_err)?;
        let _span = tracing::trace_span!("wal_write", file_id = id, bytes = to - from).entered();
        crate::signals::timed("silt_wal_write_seconds", "WAL write", self.slow, || {
            put(&bufs, at)
        })?;
        if written_end > to {
            // Whole pages under O_DIRECT: the page holding `to` was already
            // zero-padded by the bounce buffer.
            let (start, end) = if file.direct {
                (page_ceil(to), page_ceil(written_end))
            } else {
                (to, written_end)
            };
            if end > start {
                let zeros = AlignedBuf::zeroed(end - start);
                put(&[&zeros.as_slice()[..end - start]], start as u64)?;
            }
        }
        file.written_end = to;
        Ok(if durable {
            Written::Durable
        } else {
            Written::Unsynced(SyncTarget {
                file_id: id,
                io,
                slow: self.slow,
            })
        })
    }

    /// The slab was sealed: close its file (the flush worker reopens it).
    pub fn retire(&mut self, file_id: u32) {
        self.files.remove(&file_id);
    }

    /// A job that fdatasyncs every open WAL file, and the directory if a
    /// file was created since its last fsync; runs on a blocking thread.
    pub fn sync_job(&self) -> impl FnOnce() -> Result<()> + Send + 'static {
        let files: Vec<SyncTarget> = self
            .files
            .iter()
            .map(|(id, f)| SyncTarget {
                file_id: *id,
                io: f.io.clone(),
                slow: self.slow,
            })
            .collect();
        let (vfs, dir, entries) = (
            self.vfs.clone(),
            self.data_dir.clone(),
            self.dir_entries.clone(),
        );
        move || {
            for f in files {
                f.sync(&dir).map_err(|e| e.error().clone())?;
            }
            entries.sync(vfs.as_ref(), &dir)
        }
    }
}

/// What a WAL write left to do.
#[derive(Debug)]
enum Written {
    /// Nothing: the write was durable (see [`FileIo::durable_writes`]).
    Durable,
    /// An fdatasync of the file, started from now on.
    Unsynced(SyncTarget),
}

/// A WAL file whose writes have completed; an fdatasync started from now
/// on makes them durable.
#[derive(Debug)]
struct SyncTarget {
    file_id: u32,
    io: Arc<dyn FileIo>,
    slow: Duration,
}

impl SyncTarget {
    fn sync(&self, dir: &std::path::Path) -> Result<(), WalError> {
        let synced =
            crate::signals::timed("silt_fdatasync_seconds", "WAL fdatasync", self.slow, || {
                self.io.sync_data()
            });
        synced
            .map_err(|e| WalError::Sync(Error::io("fdatasync WAL", log_path(dir, self.file_id), e)))
    }
}

/// One group's WAL write; see [`WalFiles::write`].
#[derive(Debug)]
pub(crate) struct WalWrite {
    pub slab: Arc<Slab>,
    pub from: usize,
    pub to: usize,
    pub sync: bool,
    /// Counts the writer's rollbacks: after a write fails, the jobs of the
    /// same epoch already queued behind it are refused without touching the
    /// file (their records are being rolled back; the writer resends from
    /// the failed write's start with the next epoch).
    pub epoch: u64,
    pub reply: oneshot::Sender<Result<(), WalError>>,
}

impl WalWrite {
    /// Whether this write starts where a write of `slab` ending at `to`
    /// stops, in the same epoch and mode, so both can go as one.
    fn continues(&self, slab: &Slab, to: usize, epoch: u64, sync: bool) -> bool {
        self.slab.file_id() == slab.file_id()
            && self.from == to
            && self.epoch == epoch
            && self.sync == sync
    }
}

/// Work for the log thread, done strictly in order.
#[derive(Debug)]
pub(crate) enum LogJob {
    Write(WalWrite),
    /// See [`WalFiles::retire`].
    Retire {
        file_id: u32,
    },
}

/// A completed write waiting for its fdatasync.
#[derive(Debug)]
struct SyncJob {
    target: Arc<SyncTarget>,
    reply: oneshot::Sender<Result<(), WalError>>,
}

/// Where the WAL is written from.
#[derive(Debug)]
pub(crate) enum Wal {
    /// On the log threads (Sync). Dropping the sender stops them.
    Thread(crossbeam_channel::Sender<LogJob>),
    /// On the writer task itself (Buffered).
    Inline(WalFiles),
}

impl Wal {
    /// Starts the log threads that own `files`: `silt-log` writes groups
    /// and hands their file to `silt-log-sync`, which fdatasyncs and
    /// replies. So a group's fdatasync runs while the next groups are
    /// written, and one fdatasync covers every write that completed before
    /// it started. (Where writes are durable themselves, `silt-log`
    /// replies and `silt-log-sync` gets nothing.) Handles go to `threads`
    /// (joined by `close`).
    pub fn spawn_thread(
        files: WalFiles,
        syncs: Arc<AtomicU64>,
        threads: &crate::sync::Mutex<Vec<std::thread::JoinHandle<()>>>,
    ) -> Result<Wal> {
        let (tx, rx) = crossbeam_channel::unbounded::<LogJob>();
        let (sync_tx, sync_rx) = crossbeam_channel::unbounded::<SyncJob>();
        let dir = files.data_dir.clone();
        let spawn = |name: &str, f: Box<dyn FnOnce() + Send>| {
            std::thread::Builder::new()
                .name(name.into())
                .spawn(f)
                .map_err(|e| Error::io("spawn log thread", &dir, e))
        };
        let sync_dir = dir.clone();
        let write_syncs = syncs.clone();
        let syncer = spawn(
            "silt-log-sync",
            Box::new(move || sync_loop(&sync_dir, sync_rx, &syncs)),
        )?;
        crate::sync::lock(threads).push(syncer);
        let writer = spawn(
            "silt-log",
            Box::new(move || write_loop(files, rx, sync_tx, &write_syncs)),
        )?;
        crate::sync::lock(threads).push(writer);
        Ok(Wal::Thread(tx))
    }
}

/// Writes groups in order, one write at a time. Groups queued while a write
/// ran go together as one write (they are contiguous in the slab), so the
/// device gets large writes back to back without waiting for the writer.
fn write_loop(
    mut files: WalFiles,
    rx: crossbeam_channel::Receiver<LogJob>,
    sync_tx: crossbeam_channel::Sender<SyncJob>,
    syncs: &AtomicU64,
) {
    let mut refused: Option<(u64, WalError)> = None;
    // After a failed durable write nothing is called durable again, as
    // after a failed fdatasync on the sync thread.
    let mut sync_failed: Option<WalError> = None;
    let mut queue: VecDeque<LogJob> = VecDeque::new();
    loop {
        let job = match queue.pop_front() {
            Some(job) => job,
            None => match rx.recv() {
                Ok(job) => job,
                Err(_) => return,
            },
        };
        let first = match job {
            LogJob::Write(w) => w,
            LogJob::Retire { file_id } => {
                files.retire(file_id);
                continue;
            }
        };
        if let Some((failed, e)) = &refused {
            if *failed == first.epoch {
                let _ = first.reply.send(Err(e.clone()));
                continue;
            }
        }
        if let Some(e) = &sync_failed {
            let _ = first.reply.send(Err(e.clone()));
            continue;
        }
        queue.extend(rx.try_iter());
        let (slab, from, epoch, sync) = (first.slab.clone(), first.from, first.epoch, first.sync);
        let mut to = first.to;
        let mut group = vec![first];
        while let Some(LogJob::Write(next)) = queue.front() {
            if !next.continues(&slab, to, epoch, sync) {
                break;
            }
            if let Some(LogJob::Write(next)) = queue.pop_front() {
                to = next.to;
                group.push(next);
            }
        }
        match files.write_range(&slab, from, to, sync) {
            Ok(Written::Durable) => {
                syncs.fetch_add(1, Ordering::Relaxed);
                for w in group {
                    let _ = w.reply.send(Ok(()));
                }
            }
            Ok(Written::Unsynced(target)) if sync => {
                let target = Arc::new(target);
                for w in group {
                    // If the sync thread is gone, the dropped reply reads as
                    // closed to the writer.
                    let _ = sync_tx.send(SyncJob {
                        target: target.clone(),
                        reply: w.reply,
                    });
                }
            }
            res => {
                match &res {
                    Err(e @ WalError::Sync(_)) => sync_failed = Some(e.clone()),
                    Err(e) => refused = Some((epoch, e.clone())),
                    Ok(_) => {}
                }
                let res = res.map(drop);
                for w in group {
                    let _ = w.reply.send(res.clone());
                }
            }
        }
    }
}

/// fdatasyncs every file the queued jobs wrote, once, then replies to all of
/// them in order. After a failed fdatasync nothing is called durable again
/// (a later success proves nothing about pages the kernel dropped).
fn sync_loop(dir: &std::path::Path, rx: crossbeam_channel::Receiver<SyncJob>, syncs: &AtomicU64) {
    let mut failed: Option<WalError> = None;
    let mut batch = Vec::new();
    while let Ok(first) = rx.recv() {
        batch.push(first);
        batch.extend(rx.try_iter());
        let res = match &failed {
            Some(e) => Err(e.clone()),
            None => sync_files(dir, &batch, syncs),
        };
        if let Err(e) = &res {
            failed = Some(e.clone());
        }
        for job in batch.drain(..) {
            let _ = job.reply.send(res.clone());
        }
    }
}

fn sync_files(dir: &std::path::Path, batch: &[SyncJob], syncs: &AtomicU64) -> Result<(), WalError> {
    let mut done: Vec<u32> = Vec::with_capacity(2);
    for job in batch {
        if !done.contains(&job.target.file_id) {
            job.target.sync(dir)?;
            syncs.fetch_add(1, Ordering::Relaxed);
            done.push(job.target.file_id);
        }
    }
    Ok(())
}
