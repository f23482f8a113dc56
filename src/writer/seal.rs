//! The writer's slab lifecycle: sealing the active slab and handing it to
//! the flush workers (with backpressure), `sync`, and shutdown.

use super::{Closing, Writer};
use crate::backpressure::SealedBudget;
use crate::error::{Error, Result};
use crate::flush::SealedSlab;
use crate::options::Durability;
use crate::slab::{Predecessor, Slab, SlabWriter, FILE_HEADER_LEN};
use crate::sync::Ordering;
use crate::wal::{LogJob, Wal};
use std::sync::Arc;
use tokio::sync::oneshot;

impl Writer {
    /// The active slab is full: a new one takes the next appends. With the
    /// log threads (`Sync`), the full slab is sealed only once its groups
    /// in flight complete (`seal_closing`), and appends go on meanwhile:
    /// waiting for them first left the device idle for a write, an
    /// fdatasync and the pipeline's refill at every rotation (1–7 ms, 32
    /// times per 2 GiB; docs/decisions.md). Otherwise it is sealed now.
    pub(super) async fn rotate(&mut self) -> Result<()> {
        if self.closing.is_some() {
            // One slab closes at a time.
            self.drain_wal().await;
        }
        self.shared.check_poisoned()?;
        self.advance();
        let threaded = matches!(self.wal, Some(Wal::Thread(_)));
        if !threaded || !self.pending.is_empty() || self.inflight.is_empty() {
            self.drain_wal().await;
            self.shared.check_poisoned()?;
            return self.seal_active().await;
        }
        let Some(w) = self.active.take() else {
            return Ok(());
        };
        self.last_file = Some(end_of(&w));
        self.closing = Some(Closing {
            writer: w,
            logged_upto: self.logged_upto,
        });
        Ok(())
    }

    /// Seals the closing slab once none of its groups is in flight. Not
    /// after a poisoning failure: what the WAL could not make durable must
    /// not reach a segment (the slab stays readable until the store closes).
    pub(super) async fn seal_closing(&mut self) {
        let Some(c) = &self.closing else {
            return;
        };
        // Groups are in flight oldest first, and every group of the
        // closing slab is older than those of the active one.
        let id = c.writer.slab().file_id();
        if self.inflight.front().is_some_and(|i| i.file_id == id)
            || self.shared.check_poisoned().is_err()
        {
            return;
        }
        let Some(c) = self.closing.take() else {
            return;
        };
        self.seal(c.writer, c.logged_upto).await;
    }

    /// A WAL write of slab `file_id` failed: drops the records from `start`
    /// (the failed group's first) on, and those of every later group; the
    /// next WAL write of the slab starts at `from` again (where the failed
    /// one began). If the failure was in the closing slab, every group in
    /// the active slab came after it: the active slab is emptied (the log
    /// thread refused its writes, so its file holds none of them).
    pub(super) fn roll_back(&mut self, file_id: u32, start: usize, from: usize) {
        let counters = &self.shared.counters;
        counters.wal_rollbacks.fetch_add(1, Ordering::Relaxed);
        match &mut self.closing {
            Some(c) if c.writer.slab().file_id() == file_id => {
                // SAFETY: the failed group and those after it were never
                // applied (no index entry points at them), the log thread
                // refuses the writes queued behind the failed one, and GC
                // never walks the closing slab.
                unsafe { c.writer.rollback(start) };
                c.logged_upto = c.logged_upto.min(from).min(start);
                // The closing slab ends earlier now (or is empty and will be
                // dropped): the next file names the new end, or what came
                // before it.
                self.last_file = if c.writer.is_empty() {
                    c.writer.predecessor()
                } else {
                    Some(end_of(&c.writer))
                };
                if let Some(w) = &mut self.active {
                    if !w.is_empty() {
                        counters
                            .wal_closing_rollbacks
                            .fetch_add(1, Ordering::Relaxed);
                    }
                    // SAFETY: as above; every group of the active slab came
                    // after the failed one, and its header page is read by
                    // nothing until its next WAL write (which writes it
                    // again).
                    unsafe {
                        w.rollback(FILE_HEADER_LEN);
                        w.set_predecessor(self.last_file);
                    }
                    self.logged_upto = 0;
                }
            }
            _ => {
                if let Some(w) = &mut self.active {
                    // SAFETY: as for the closing slab above.
                    unsafe { w.rollback(start) };
                    self.logged_upto = self.logged_upto.min(from).min(start);
                }
            }
        }
    }

    pub(super) async fn seal_active(&mut self) -> Result<()> {
        let Some(w) = self.active.take() else {
            return Ok(());
        };
        if !w.is_empty() {
            self.last_file = Some(end_of(&w));
        }
        let written = if self.wal() { self.logged_upto } else { 0 };
        self.seal(w, written).await;
        Ok(())
    }

    /// A slab that takes no more appends and has no WAL write in flight:
    /// closes its WAL file (the log thread does so after the writes queued
    /// before) and queues it for flushing, `[0, written_upto)` being in the
    /// file already. An empty slab (nothing appended, or every group rolled
    /// back) is dropped instead.
    async fn seal(&mut self, w: SlabWriter, written_upto: usize) {
        let id = w.slab().file_id();
        match &mut self.wal {
            Some(Wal::Thread(tx)) => {
                let _ = tx.send(LogJob::Retire { file_id: id });
            }
            Some(Wal::Inline(files)) => files.retire(id),
            None => {}
        }
        if w.is_empty() {
            self.shared.registry.remove(id);
            return;
        }
        w.publish();
        self.send_to_flush(w.slab().clone(), written_upto).await;
    }

    /// Waits for a backpressure permit, then queues the slab for flushing.
    pub(super) async fn send_to_flush(&mut self, slab: Arc<Slab>, written_upto: usize) {
        let id = slab.file_id();
        let waiting = std::time::Instant::now();
        let permit = SealedBudget::acquire(&self.permits).await;
        crate::signals::took(
            "silt_backpressure_wait_seconds",
            "wait for a slab flush (backpressure: writes wait meanwhile)",
            self.shared.config.slow_op,
            waiting.elapsed(),
        );
        self.shared.flush_started(id);
        self.highest_sealed = self.highest_sealed.max(id);
        let sent = self.flush_tx.as_ref().map(|tx| {
            tx.send(SealedSlab {
                slab,
                written_upto,
                permit,
            })
        });
        if !matches!(sent, Some(Ok(()))) {
            let gone = crate::error::StopCause::ThreadGone("flush workers");
            self.shared.poison(&Error::Stopped { cause: gone });
            self.shared.flush_done(id);
        }
    }

    /// Everything appended is durable and every slab is sealed and queued.
    pub(super) async fn seal_all(&mut self) -> Result<()> {
        self.drain_wal().await;
        self.shared.check_poisoned()?;
        self.seal_active().await
    }

    pub(super) async fn sync(&mut self, reply: oneshot::Sender<Result<()>>) {
        match self.shared.config.durability {
            // Every acknowledged write was fdatasync'ed before its ack.
            Durability::Sync => {
                let _ = reply.send(self.shared.check_poisoned());
            }
            Durability::Buffered => {
                // Acknowledged writes reached the page cache: fdatasync the
                // open WAL files (off the runtime); sealed slabs are covered
                // once their flush completes.
                let job = match &self.wal {
                    Some(Wal::Inline(files)) => Some(files.sync_job()),
                    _ => None,
                };
                let upto = self.highest_sealed;
                let shared = self.shared.clone();
                tokio::spawn(async move {
                    let res = match job {
                        Some(job) => crate::runtime::spawn_blocking(&shared, job)
                            .await
                            .unwrap_or(Err(Error::Closed)),
                        None => Err(Error::Closed),
                    };
                    let res = match res {
                        Ok(()) => shared.wait_flushed(upto).await,
                        Err(e) => Err(e),
                    };
                    let _ = reply.send(res);
                });
            }
            // Without a WAL, durable means flushed to a segment.
            Durability::None => {
                let res = self.seal_all().await;
                let upto = self.highest_sealed;
                let shared = self.shared.clone();
                tokio::spawn(async move {
                    let res = match res {
                        Ok(()) => shared.wait_flushed(upto).await,
                        Err(e) => Err(e),
                    };
                    let _ = reply.send(res);
                });
            }
        }
    }

    /// Finishes the own-file writes and the writes held behind them, drains,
    /// seals and waits for every flush, then stops the threads.
    pub(super) async fn shutdown(&mut self) -> Result<()> {
        self.finish_own_files().await;
        self.drain_wal().await;
        let sealed = match self.shared.check_poisoned() {
            Ok(()) => self.seal_active().await,
            Err(e) => Err(e),
        };
        let flushed = self.shared.wait_flushed(self.highest_sealed).await;
        // Dropping the senders stops the log thread and the flush workers.
        self.wal = None;
        self.flush_tx = None;
        self.shared.closed.store(true, Ordering::Release);
        self.shared.gc_wake.notify_one();
        sealed.and(flushed)
    }
}

/// A slab that takes no more appends, as the next file's predecessor.
fn end_of(w: &SlabWriter) -> Predecessor {
    Predecessor {
        file_id: w.slab().file_id(),
        end: w.appended() as u64,
    }
}
