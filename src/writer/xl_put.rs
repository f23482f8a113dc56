//! The writer's XL path: a put or a batch too large for a slab gets its own
//! segment file (see `crate::xl`), written on a blocking thread while the
//! writer goes on with other writes (issue 16.8: it used to stall every
//! write for about a second per GiB).
//!
//! Order is kept by file ids and by holding back conflicting writes:
//! - Every write before the own-file one is sealed first, so its file id
//!   is higher than theirs and lower than every later write's.
//! - A later write that touches a key of an own-file write still in flight
//!   (by key hash), or a key of a write already held, waits in [`Held`]
//!   until that completes, then goes in arrival order. So a key's records
//!   land in files in the order their writes arrived, which is what the
//!   index ("replace what holds the key") and recovery ("newest file
//!   wins") assume, and a key never has a newer record in memory while an
//!   older one is still being written.
//! - Writes of other keys go on and may be acknowledged first: they are
//!   concurrent with the unacknowledged own-file write and touch none of
//!   its keys, so either order is a valid history.
//! - GC defers moves of its keys (`relocate`), as for any unapplied write.
//! - The next slab names the file before the own-file write as its
//!   predecessor, not the own-file write: that file is fdatasynced before
//!   it is renamed into place and acknowledged, so it is never short, and
//!   if it fails (or a crash interrupts it) the chain of acknowledged
//!   files stays whole.

use super::{in_batch, Change, Group, Op, Seen, Update, WriteRequest, Writer};
use crate::error::{Error, Result};
use crate::index::Location;
use crate::record::key_hash;
use crate::registry::Source;
use crate::xl::{write_xl_segment, XlRecord};
use std::collections::{HashMap, HashSet, VecDeque};
use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Most writes held back at once; past it the writer takes no new
/// requests until an own-file write completes (the request queue's bound
/// then holds callers back, as it does for any full queue).
pub(super) const HELD_MAX: usize = 4096;

pub(super) type Written = Result<(Vec<Op>, Vec<(u32, u32)>)>;

/// An own-file write in progress on a blocking thread.
#[derive(Debug)]
pub(super) struct OwnFileWrite {
    file_id: u32,
    hashes: HashSet<u64>,
    /// What each op's key's entries held when it started (see `decide`).
    seen: Vec<Vec<Seen>>,
    reply: oneshot::Sender<Result<()>>,
    task: JoinHandle<Written>,
}

/// Writes waiting for an own-file write of one of their keys (see the
/// module docs), oldest first.
#[derive(Debug, Default)]
pub(super) struct Held {
    queue: VecDeque<WriteRequest>,
    /// How many held writes touch each key hash.
    hashes: HashMap<u64, usize>,
    /// `flush` requests, answered once no own-file write is in flight (a
    /// flush covers every write queued before it).
    flushes: Vec<oneshot::Sender<Result<u32>>>,
}

impl Held {
    pub fn len(&self) -> usize {
        self.queue.len()
    }

    fn push(&mut self, req: WriteRequest) {
        for op in &req.ops {
            *self.hashes.entry(key_hash(op.key())).or_default() += 1;
        }
        self.queue.push_back(req);
    }

    pub fn hashes(&self) -> impl Iterator<Item = u64> + '_ {
        self.hashes.keys().copied()
    }
}

/// The first own-file write to complete, by its place in `writes` (never
/// resolves if none is in flight).
pub(super) async fn own_file_done(writes: &mut [OwnFileWrite]) -> (usize, Written) {
    poll_fn(|cx| {
        for (i, w) in writes.iter_mut().enumerate() {
            if let Poll::Ready(res) = Pin::new(&mut w.task).poll(cx) {
                // The thread panicked, or the runtime is shutting down.
                return Poll::Ready((i, res.unwrap_or(Err(Error::Closed))));
            }
        }
        Poll::Pending
    })
    .await
}

impl Writer {
    /// Key hashes of writes not yet applied that are not in a group:
    /// own-file writes in flight and the writes held behind them.
    pub(super) fn unapplied_hashes(&self) -> impl Iterator<Item = u64> + '_ {
        let own = self.own_files.iter().flat_map(|w| w.hashes.iter().copied());
        own.chain(self.held.hashes())
    }

    /// A client write: held back if it touches a key of an own-file write
    /// in flight or of a held write, else started.
    pub(super) async fn write(&mut self, req: WriteRequest) {
        let busy = |w: &Writer, op: &Op| {
            let h = key_hash(op.key());
            w.held.hashes.contains_key(&h) || w.own_files.iter().any(|x| x.hashes.contains(&h))
        };
        if req.ops.iter().any(|op| busy(self, op)) {
            self.held.push(req);
            return;
        }
        self.start(req).await;
    }

    /// Decides what the write replaces (or hands it back to be read, see
    /// `decide`), then appends it, or starts its own file.
    async fn start(&mut self, req: WriteRequest) {
        let WriteRequest {
            ops,
            facts,
            reply,
            bounce,
        } = req;
        if let Err(e) = self.shared.check_poisoned() {
            let _ = reply.send(Err(e));
            return;
        }
        let seen = match self.decide(&ops, &facts) {
            Ok(seen) => seen,
            Err(unknown) => {
                let _ = bounce.send(super::Bounced {
                    ops,
                    facts,
                    unknown,
                });
                return;
            }
        };
        drop(bounce);
        let total: usize = ops.iter().map(Op::encoded_len).sum();
        if total > self.shared.config.slab_size - crate::slab::FILE_HEADER_LEN {
            self.start_own_file(ops, seen, reply).await;
            return;
        }
        match self.append(&ops, seen).await {
            Ok(updates) => {
                self.pending.updates.extend(updates);
                self.pending.waiters.push(reply);
            }
            Err(e) => {
                let _ = reply.send(Err(e));
            }
        }
    }

    /// A write too large for a slab (one put, or a batch): a segment file
    /// of its own (see `xl.rs`), all or nothing, written on a blocking
    /// thread. Every earlier write is made durable and sealed first, so
    /// file ids keep the order of writes (see the module docs).
    async fn start_own_file(
        &mut self,
        ops: Vec<Op>,
        seen: Vec<Vec<Seen>>,
        reply: oneshot::Sender<Result<()>>,
    ) {
        let id = match self.seal_all().await.and_then(|()| self.take_file_id()) {
            Ok(id) => id,
            Err(e) => {
                let _ = reply.send(Err(e));
                return;
            }
        };
        let hashes = ops.iter().map(|op| key_hash(op.key())).collect();
        let shared = self.shared.clone();
        let predecessor = self.last_file;
        let task = crate::runtime::spawn_blocking(&self.shared.clone(), move || {
            let bytes: usize = ops.iter().map(|o| o.value().len()).sum();
            let _span =
                tracing::info_span!("xl_write", file_id = id, records = ops.len(), bytes).entered();
            let records: Vec<XlRecord<'_>> = ops
                .iter()
                .map(|o| XlRecord {
                    key: o.key(),
                    value: o.value(),
                    delete: o.is_delete(),
                })
                .collect();
            let dir = shared.registry.data_dir();
            let size = crate::xl::file_len(&records)?;
            let reservation = crate::gc::reserve(&shared, size)?;
            let (segment, placed) = write_xl_segment(&*shared.vfs, dir, id, predecessor, &records)?;
            reservation.publish(|| {
                shared
                    .registry
                    .insert(id, Source::Segment(Arc::new(segment)));
                Ok(())
            })?;
            drop(records);
            Ok((ops, placed))
        });
        self.own_files.push(OwnFileWrite {
            file_id: id,
            hashes,
            seen,
            reply,
            task,
        });
    }

    /// Own-file write `i` completed: applies and acknowledges it (or
    /// reports its failure: nothing of it was published), then starts the
    /// held writes it no longer blocks.
    pub(super) async fn own_file_written(&mut self, i: usize, res: Written) {
        let mut done = self.own_files.swap_remove(i);
        match res {
            Ok((ops, placed)) => {
                let id = done.file_id;
                let mut updates: Vec<Update> = Vec::with_capacity(ops.len());
                for (i, (op, (offset, len))) in ops.into_iter().zip(placed).enumerate() {
                    let mut seen = done.seen.get_mut(i).map(std::mem::take).unwrap_or_default();
                    seen.extend(in_batch(&updates, op.key()));
                    updates.push(Update {
                        seen,
                        change: if op.is_delete() {
                            Change::Delete
                        } else {
                            Change::Put
                        },
                        key: op.key().clone(),
                        loc: Location {
                            file_id: id,
                            offset,
                        },
                        len,
                    });
                }
                self.apply(Group {
                    updates,
                    waiters: vec![done.reply],
                });
            }
            Err(e) => {
                let _ = done.reply.send(Err(e));
            }
        }
        self.release_held().await;
    }

    /// Starts, in arrival order, every held write that no own-file write in
    /// flight and no earlier held write still blocks; once none is in
    /// flight, answers the held flushes.
    async fn release_held(&mut self) {
        let queue = std::mem::take(&mut self.held.queue);
        self.held.hashes.clear();
        for req in queue {
            // `write` holds it again if it is still blocked: by an own-file
            // write, or by an earlier one just held again.
            self.write(req).await;
        }
        if self.own_files.is_empty() {
            for reply in std::mem::take(&mut self.held.flushes) {
                self.flush(reply).await;
            }
        }
    }

    /// Seals every slab; replies with the highest file id to wait for.
    /// While an own-file write is in flight, waits for it first (without
    /// holding up other writes).
    pub(super) async fn flush(&mut self, reply: oneshot::Sender<Result<u32>>) {
        if !self.own_files.is_empty() {
            self.held.flushes.push(reply);
            return;
        }
        let res = self.seal_all().await.map(|()| self.highest_sealed);
        let _ = reply.send(res);
    }

    /// Waits for every own-file write in flight, and starts the writes held
    /// behind them (which may start more), until none is left: at shutdown.
    pub(super) async fn finish_own_files(&mut self) {
        while !self.own_files.is_empty() {
            let (i, res) = own_file_done(&mut self.own_files).await;
            self.own_file_written(i, res).await;
        }
    }
}
