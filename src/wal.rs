//! The write-ahead log: each group commit's new slab pages are written to
//! `data/<id>.log` at the same offsets (the WAL *is* the future segment).
//!
//! Two ways to run it, chosen by measurement (docs/decisions.md):
//! - `Durability::Sync`: a log thread does the write and the fdatasync, so
//!   the writer task never waits on the device; replies come back over
//!   oneshot channels while the next group accumulates.
//! - `Durability::Buffered`: the write is a copy into the page cache, so the
//!   writer task does it inline: a round trip to a thread costs two
//!   cross-thread wake-ups (~60 µs here), the write itself ~2 µs.

use crate::error::{Error, Result};
use crate::io::aligned::{AlignedBuf, PAGE};
use crate::io::{write_slab_range, FileIo, Vfs};
use crate::registry::log_path;
use crate::slab::Slab;
use crate::sync::{AtomicBool, Ordering};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::sync::oneshot;

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
    /// Open files and whether each is O_DIRECT.
    files: HashMap<u32, (Arc<dyn FileIo>, bool)>,
    bounce: AlignedBuf,
}

impl WalFiles {
    pub fn new(
        vfs: Arc<dyn Vfs>,
        data_dir: PathBuf,
        direct: bool,
        direct_used: Arc<AtomicBool>,
        sync_dir_on_create: bool,
    ) -> WalFiles {
        WalFiles {
            vfs,
            data_dir,
            direct,
            direct_used,
            sync_dir_on_create,
            files: HashMap::new(),
            bounce: AlignedBuf::zeroed(PAGE),
        }
    }

    /// Writes slab bytes `[from, to)` to the slab's file (created on first
    /// use), then fdatasyncs if `sync`.
    pub fn write(&mut self, slab: &Slab, from: usize, to: usize, sync: bool) -> Result<()> {
        let id = slab.file_id();
        let path = log_path(&self.data_dir, id);
        if !self.files.contains_key(&id) {
            let (file, direct) = self
                .vfs
                .open_write(&path, true, self.direct)
                .map_err(|e| Error::io("create WAL", &path, e))?;
            self.direct_used.store(direct, Ordering::Relaxed);
            if self.sync_dir_on_create {
                // The new entry must be durable before any write in the file
                // is acknowledged as durable.
                self.vfs
                    .sync_dir(&self.data_dir)
                    .map_err(|e| Error::io("fsync data directory", &self.data_dir, e))?;
            }
            self.files.insert(id, (Arc::from(file), direct));
        }
        let (file, direct) = self.files.get(&id).ok_or(Error::Closed)?;
        write_slab_range(&**file, slab, from, to, *direct, &mut self.bounce)
            .map_err(|e| Error::io("write WAL", &path, e))?;
        if sync {
            file.sync_data()
                .map_err(|e| Error::io("fdatasync WAL", &path, e))?;
        }
        Ok(())
    }

    /// The slab was sealed: close its file (the flush worker reopens it).
    pub fn retire(&mut self, file_id: u32) {
        self.files.remove(&file_id);
    }

    /// A job that fdatasyncs every open WAL file and the directory; runs on
    /// a blocking thread.
    pub fn sync_job(&self) -> impl FnOnce() -> Result<()> + Send + 'static {
        let files: Vec<(u32, Arc<dyn FileIo>)> = self
            .files
            .iter()
            .map(|(id, (f, _))| (*id, f.clone()))
            .collect();
        let (vfs, dir) = (self.vfs.clone(), self.data_dir.clone());
        move || {
            for (id, f) in files {
                f.sync_data()
                    .map_err(|e| Error::io("fdatasync WAL", log_path(&dir, id), e))?;
            }
            vfs.sync_dir(&dir)
                .map_err(|e| Error::io("fsync data directory", &dir, e))
        }
    }
}

/// Work for the log thread. Jobs run strictly in order, one at a time.
#[derive(Debug)]
pub(crate) enum LogJob {
    /// See [`WalFiles::write`].
    Write {
        slab: Arc<Slab>,
        from: usize,
        to: usize,
        sync: bool,
        reply: oneshot::Sender<Result<()>>,
    },
    /// See [`WalFiles::retire`].
    Retire { file_id: u32 },
}

/// Where the WAL is written from.
#[derive(Debug)]
pub(crate) enum Wal {
    /// On the log thread (Sync). Dropping the sender stops the thread.
    Thread(crossbeam_channel::Sender<LogJob>),
    /// On the writer task itself (Buffered).
    Inline(WalFiles),
}

impl Wal {
    /// Starts the log thread that owns `files`.
    pub fn spawn_thread(mut files: WalFiles) -> Result<Wal> {
        let (tx, rx) = crossbeam_channel::unbounded::<LogJob>();
        let dir = files.data_dir.clone();
        std::thread::Builder::new()
            .name("silt-log".into())
            .spawn(move || {
                for job in rx {
                    match job {
                        LogJob::Write {
                            slab,
                            from,
                            to,
                            sync,
                            reply,
                        } => {
                            let _ = reply.send(files.write(&slab, from, to, sync));
                        }
                        LogJob::Retire { file_id } => files.retire(file_id),
                    }
                }
            })
            .map_err(|e| Error::io("spawn log thread", dir, e))?;
        Ok(Wal::Thread(tx))
    }
}
