//! The log thread: writes each group commit's new slab pages to
//! `data/<id>.log` at the same offsets (the WAL *is* the future segment) and
//! fdatasyncs when the group asks for it. It runs on its own OS thread so the
//! writer task never blocks; replies go back over oneshot channels.

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

/// Work for the log thread. Jobs run strictly in order, one at a time.
#[derive(Debug)]
pub(crate) enum LogJob {
    /// Write slab bytes `[from, to)` to the slab's file (created on first
    /// use, with a directory fsync), then fdatasync if `sync`.
    Write {
        slab: Arc<Slab>,
        from: usize,
        to: usize,
        sync: bool,
        reply: oneshot::Sender<Result<()>>,
    },
    /// fdatasync every open log file.
    SyncAll { reply: oneshot::Sender<Result<()>> },
    /// The slab was sealed: close its file (the flush worker reopens it).
    Retire { file_id: u32 },
}

/// Handle to the log thread. Dropping every sender stops it.
#[derive(Debug)]
pub(crate) struct LogThread {
    pub tx: crossbeam_channel::Sender<LogJob>,
}

struct LogState {
    vfs: Arc<dyn Vfs>,
    data_dir: PathBuf,
    direct: bool,
    direct_used: Arc<AtomicBool>,
    files: HashMap<u32, Box<dyn FileIo>>,
    bounce: AlignedBuf,
}

impl LogThread {
    /// Starts the thread. `direct` asks for O_DIRECT on log files;
    /// `direct_used` reports whether the file system granted it.
    pub fn start(
        vfs: Arc<dyn Vfs>,
        data_dir: PathBuf,
        direct: bool,
        direct_used: Arc<AtomicBool>,
    ) -> Result<LogThread> {
        let (tx, rx) = crossbeam_channel::unbounded::<LogJob>();
        let mut state = LogState {
            vfs,
            data_dir: data_dir.clone(),
            direct,
            direct_used,
            files: HashMap::new(),
            bounce: AlignedBuf::zeroed(PAGE),
        };
        std::thread::Builder::new()
            .name("silt-log".into())
            .spawn(move || {
                for job in rx {
                    state.run(job);
                }
            })
            .map_err(|e| Error::io("spawn log thread", data_dir, e))?;
        Ok(LogThread { tx })
    }
}

impl LogState {
    fn run(&mut self, job: LogJob) {
        match job {
            LogJob::Write {
                slab,
                from,
                to,
                sync,
                reply,
            } => {
                let _ = reply.send(self.write(&slab, from, to, sync));
            }
            LogJob::SyncAll { reply } => {
                let mut res = Ok(());
                for (id, f) in &self.files {
                    if let Err(e) = f.sync_data() {
                        res = Err(Error::io("fdatasync WAL", log_path(&self.data_dir, *id), e));
                        break;
                    }
                }
                let _ = reply.send(res);
            }
            LogJob::Retire { file_id } => {
                self.files.remove(&file_id);
            }
        }
    }

    fn write(&mut self, slab: &Slab, from: usize, to: usize, sync: bool) -> Result<()> {
        let id = slab.file_id();
        let path = log_path(&self.data_dir, id);
        if !self.files.contains_key(&id) {
            let (file, direct) = self
                .vfs
                .open_write(&path, true, self.direct)
                .map_err(|e| Error::io("create WAL", &path, e))?;
            self.direct_used.store(direct, Ordering::Relaxed);
            // The new directory entry must be durable before any write in
            // the file is acknowledged as durable.
            self.vfs
                .sync_dir(&self.data_dir)
                .map_err(|e| Error::io("fsync data directory", &self.data_dir, e))?;
            self.files.insert(id, file);
        }
        let file = self.files.get(&id).map(|f| &**f).ok_or(Error::Closed)?;
        write_slab_range(file, slab, from, to, &mut self.bounce)
            .map_err(|e| Error::io("write WAL", &path, e))?;
        if sync {
            file.sync_data()
                .map_err(|e| Error::io("fdatasync WAL", &path, e))?;
        }
        Ok(())
    }
}
