//! The writer actor: a tokio task that owns the active slab and the WAL
//! state.
//!
//! Group commit: drain the request queue (`recv_many`), append the group's
//! records to the slab, hand the new pages to the log thread, and once the
//! group's durability is met, update the index and acknowledge. A group
//! goes to the log thread as soon as it is formed; the log thread writes
//! one range at a time (every group queued meanwhile in one write) while
//! the fdatasync of earlier writes runs. The task never blocks: file I/O
//! happens on the log threads and the flush workers.

mod apply;
mod decide;
mod relocate;
mod seal;
mod xl_put;

use crate::backpressure::SealedBudget;
use crate::error::{Error, Result};
use crate::flush::SealedSlab;
use crate::index::Location;
use crate::options::Durability;
use crate::record::{self, FLAG_BEGIN, FLAG_DELETE, FLAG_END, FLAG_PUT};
use crate::registry::Source;
use crate::shared::Shared;
use crate::slab::{Predecessor, Slab, SlabWriter, FILE_HEADER_LEN};
use crate::sync::Ordering;
use crate::wal::{LogJob, Wal, WalError, WalWrite};
use bytes::Bytes;
use decide::{Seen, Unapplied};
use std::collections::VecDeque;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

/// Most requests taken from the queue into one group.
const MAX_GROUP: usize = 1024;

/// Most groups handed to the log threads and not yet acknowledged: a bound
/// on bookkeeping, not a pipeline depth. Measured: a cap of 8 left the log
/// thread waiting for the writer while groups sat in fdatasync
/// (docs/decisions.md).
const WAL_DEPTH: usize = 1024;

/// One write operation.
#[derive(Debug, Clone)]
pub(crate) enum Op {
    Put(Bytes, Bytes),
    Delete(Bytes),
    /// GC: the live record at `from` (`from_len` bytes) copied forward. It
    /// takes effect only if the key still points at `from` when it is
    /// applied, so it never hides a newer write.
    Move {
        key: Bytes,
        value: Bytes,
        from: Location,
        from_len: u32,
    },
    /// GC: a tombstone that an older file still needs, copied forward, with
    /// what GC read of the key's other entries (see [`Facts`]).
    MoveTombstone {
        key: Bytes,
        facts: Facts,
    },
}

pub(crate) use decide::{Bounced, Facts, Unknown};
pub(crate) use relocate::Relocated;

impl Op {
    pub fn key(&self) -> &Bytes {
        match self {
            Op::Put(k, _) | Op::Delete(k) => k,
            Op::Move { key, .. } | Op::MoveTombstone { key, .. } => key,
        }
    }
    pub fn value(&self) -> &[u8] {
        match self {
            Op::Put(_, v) | Op::Move { value: v, .. } => v,
            Op::Delete(_) | Op::MoveTombstone { .. } => &[],
        }
    }
    pub fn is_delete(&self) -> bool {
        matches!(self, Op::Delete(_) | Op::MoveTombstone { .. })
    }
    pub fn encoded_len(&self) -> usize {
        record::encoded_len(self.key().len(), self.value().len())
    }
}

/// A client write: `ops`, atomically.
#[derive(Debug)]
pub(crate) struct WriteRequest {
    pub ops: Vec<Op>,
    /// What the caller read of records the writer could not compare.
    pub facts: Facts,
    /// The outcome, once applied (or failed).
    pub reply: oneshot::Sender<Result<()>>,
    /// The write handed back, nothing of it done, when a record its keys
    /// must be compared with is not in memory (see `decide`). Dropped
    /// unused once the write is taken.
    pub bounce: oneshot::Sender<Bounced>,
}

/// A message to the writer.
#[derive(Debug)]
pub(crate) enum Request {
    /// Apply a client write.
    Write(WriteRequest),
    /// Make every acknowledged write durable.
    Sync { reply: oneshot::Sender<Result<()>> },
    /// Seal the active slab; reply with the highest file id to wait for.
    Flush { reply: oneshot::Sender<Result<u32>> },
    /// Drain, flush, stop.
    Close { reply: oneshot::Sender<Result<()>> },
    /// GC: append these `Op::Move` / `Op::MoveTombstone` records, each on
    /// its own, dropping those a newer write made unnecessary and handing
    /// back at once (in `outcome`) those whose key has a write not yet
    /// applied; reply once the appended ones and every earlier write are
    /// applied (not necessarily fsync'ed: GC calls `Sync` before deleting
    /// anything).
    Relocate {
        moves: Vec<Op>,
        outcome: oneshot::Sender<Relocated>,
        reply: oneshot::Sender<Result<()>>,
    },
    /// Tests: the writer panics, as a bug in it would.
    #[cfg(feature = "fault-injection")]
    Panic,
}

/// How an applied record changes the index.
#[derive(Debug, Clone, Copy)]
enum Change {
    Put,
    Delete,
    Move { from: Location, from_len: u32 },
    Tombstone,
}

impl Change {
    /// Whether it adds an index entry.
    fn adds_entry(self) -> bool {
        matches!(self, Change::Put | Change::Move { .. })
    }
}

/// A durable-on-completion index change.
#[derive(Debug)]
struct Update {
    key: Bytes,
    /// A client write's: what the entries of its key's hash hold.
    seen: Vec<Seen>,
    loc: Location,
    len: u32,
    change: Change,
}

#[derive(Debug, Default)]
struct Group {
    updates: Vec<Update>,
    waiters: Vec<oneshot::Sender<Result<()>>>,
}

impl Group {
    fn is_empty(&self) -> bool {
        self.waiters.is_empty() && self.updates.is_empty()
    }
}

#[derive(Debug)]
struct Inflight {
    group: Group,
    /// The slab the group's records are in (the active one, or the one
    /// closing behind it).
    file_id: u32,
    /// Slab offset of the group's first record (the rollback point).
    start: usize,
    /// Where its WAL write began (the rewrite point if it fails: for a new
    /// file that is 0, the header page).
    from: usize,
    rx: oneshot::Receiver<Result<(), WalError>>,
}

/// What the earlier records of one atomic write that add an entry hold of
/// `key` (they are applied before it, in the same group).
fn in_batch<'a>(earlier: &'a [Update], key: &'a Bytes) -> impl Iterator<Item = Seen> + 'a {
    let hash = record::key_hash(key);
    earlier
        .iter()
        .filter(move |u| u.change.adds_entry() && record::key_hash(&u.key) == hash)
        .map(move |u| Seen {
            loc: u.loc,
            len: (u.key == *key).then_some(u64::from(u.len)),
        })
}

/// Everything the writer starts with (from recovery).
#[derive(Debug)]
pub(crate) struct WriterInit {
    pub next_file_id: u32,
    /// Slabs rebuilt from unsealed files, each with its valid length, to be
    /// flushed before anything else.
    pub recovered: Vec<(Arc<Slab>, usize)>,
    /// The newest file kept, and where its records end.
    pub last_file: Option<Predecessor>,
}

/// The actor's state.
#[derive(Debug)]
pub(crate) struct Writer {
    shared: Arc<Shared>,
    rx: mpsc::Receiver<Request>,
    wal: Option<Wal>,
    flush_tx: Option<crossbeam_channel::Sender<SealedSlab>>,
    permits: Arc<SealedBudget>,
    active: Option<SlabWriter>,
    /// Bytes of the active slab already handed to the log thread.
    logged_upto: usize,
    /// The previous active slab, full, whose last groups are still in the
    /// WAL pipeline: it is sealed once they complete, while appends go on
    /// into `active` (see `seal::Writer::rotate`).
    closing: Option<Closing>,
    next_file_id: u32,
    pending: Group,
    /// Slab offset of the pending group's first record.
    pending_start: usize,
    /// Oldest first; at most `WAL_DEPTH`.
    inflight: VecDeque<Inflight>,
    /// Bumped by each rolled-back WAL write; see `LogJob::Write`.
    wal_epoch: u64,
    highest_sealed: u32,
    recovered: Vec<(Arc<Slab>, usize)>,
    /// The newest file that takes no more appends, and where its records
    /// end: the next file names it in its header (see `Predecessor`).
    last_file: Option<Predecessor>,
    /// Appended writes not yet applied (see `decide`).
    unapplied: Unapplied,
    /// Writes too large for a slab, being written to files of their own.
    own_files: Vec<xl_put::OwnFileWrite>,
    /// Writes waiting for one of those (see `xl_put`).
    held: xl_put::Held,
    /// `run` reached its end (closed, or every handle dropped).
    finished: bool,
}

/// A full slab waiting for its last WAL writes before it is sealed.
#[derive(Debug)]
struct Closing {
    writer: SlabWriter,
    /// Bytes of it handed to the log thread.
    logged_upto: usize,
}

enum Event {
    Logged(Result<(), WalError>),
    Requests(usize),
    OwnFile(usize, xl_put::Written),
}

/// A WAL write whose log thread is gone (it exited or panicked).
fn log_thread_gone() -> Error {
    Error::Stopped {
        cause: crate::error::StopCause::ThreadGone("log thread"),
    }
}

/// The oldest group's reply (never resolves if none is in flight).
async fn oldest_logged(inflight: &mut VecDeque<Inflight>) -> Result<(), WalError> {
    match inflight.front_mut() {
        Some(inf) => (&mut inf.rx)
            .await
            .unwrap_or(Err(WalError::Sync(log_thread_gone()))),
        None => std::future::pending().await,
    }
}

/// However the writer ends (closed, every handle dropped, its runtime shut
/// down, or a panic), nobody may keep waiting for it: the store reads as
/// closed, waits for flushes return, background GC stops.
impl Drop for Writer {
    fn drop(&mut self) {
        if !self.finished {
            // Not through `run`'s end: a panic, or its runtime shutting
            // down (or a simulated crash, which took the halt sender).
            let halted = crate::sync::lock(&self.shared.halt).is_none();
            if std::thread::panicking() {
                self.shared
                    .stopped_because(crate::error::StopCause::WriterPanicked(
                        "see the panic message on stderr".into(),
                    ));
            } else if !halted {
                self.shared
                    .stopped_because(crate::error::StopCause::RuntimeShutDown);
            }
        }
        self.shared.closed.store(true, Ordering::Release);
        self.shared.flushes_shut();
        self.shared.gc_wake.notify_one();
    }
}

impl Writer {
    pub fn new(
        shared: Arc<Shared>,
        rx: mpsc::Receiver<Request>,
        wal: Option<Wal>,
        flush_tx: crossbeam_channel::Sender<SealedSlab>,
        init: WriterInit,
    ) -> Writer {
        Writer {
            permits: SealedBudget::new(shared.config.max_sealed_slabs),
            shared,
            rx,
            wal,
            flush_tx: Some(flush_tx),
            active: None,
            logged_upto: 0,
            closing: None,
            next_file_id: init.next_file_id,
            pending: Group::default(),
            pending_start: 0,
            inflight: VecDeque::with_capacity(WAL_DEPTH),
            wal_epoch: 0,
            highest_sealed: 0,
            recovered: init.recovered,
            last_file: init.last_file,
            unapplied: Unapplied::default(),
            own_files: Vec::new(),
            held: xl_put::Held::default(),
            finished: false,
        }
    }

    fn wal(&self) -> bool {
        self.shared.config.durability != Durability::None
    }

    /// The actor loop. Returns when every handle is gone or `close` ran.
    ///
    /// # Cancel safety
    ///
    /// Dropped (its runtime shut down, or a simulated crash), the store
    /// stops where it is, as a killed process would: what was acknowledged
    /// is in the WAL (or flushed, under `None`), nothing else is done.
    pub async fn run(mut self) {
        for (slab, valid_len) in std::mem::take(&mut self.recovered) {
            self.send_to_flush(slab, valid_len).await;
        }
        let mut reqs = Vec::with_capacity(MAX_GROUP);
        let mut close_reply = None;
        loop {
            let event = tokio::select! {
                biased;
                r = oldest_logged(&mut self.inflight) => Event::Logged(r),
                (i, r) = xl_put::own_file_done(&mut self.own_files) => Event::OwnFile(i, r),
                n = self.rx.recv_many(&mut reqs, MAX_GROUP), if self.held.len() < xl_put::HELD_MAX
                    => Event::Requests(n),
            };
            match event {
                Event::Logged(res) => {
                    if let Some(inf) = self.inflight.pop_front() {
                        self.complete(inf.group, inf.file_id, inf.start, inf.from, res);
                    }
                    self.seal_closing().await;
                }
                Event::OwnFile(i, res) => self.own_file_written(i, res).await,
                Event::Requests(0) => break,
                Event::Requests(_) => {
                    for req in reqs.drain(..) {
                        match req {
                            Request::Close { reply } => close_reply = Some(reply),
                            req => self.handle(req).await,
                        }
                    }
                }
            }
            self.advance();
            if close_reply.is_some() {
                break;
            }
        }
        let res = self.shutdown().await;
        self.finished = true;
        if let Some(reply) = close_reply {
            let _ = reply.send(res);
        }
    }

    /// Submits the pending group if fewer than `WAL_DEPTH` groups are in
    /// flight (WAL modes), or
    /// completes it at once (Durability::None: durable once in the slab
    /// means "in memory"; the flush makes it durable later).
    fn advance(&mut self) {
        if self.pending.is_empty() || self.inflight.len() >= WAL_DEPTH {
            return;
        }
        if let Some(w) = &self.active {
            w.publish();
        }
        let start = self.pending_start;
        let group = std::mem::take(&mut self.pending);
        if !self.wal() {
            self.complete(group, 0, start, start, Ok(()));
            return;
        }
        let (Some(w), Some(wal)) = (&self.active, &mut self.wal) else {
            self.complete(
                group,
                0,
                start,
                start,
                Err(WalError::Sync(log_thread_gone())),
            );
            return;
        };
        let file_id = w.slab().file_id();
        let to = w.appended();
        let from = self.logged_upto;
        self.logged_upto = to;
        match wal {
            Wal::Inline(files) => {
                let res = files.write(w.slab(), from, to, false);
                self.complete(group, file_id, start, from, res);
            }
            Wal::Thread(tx) => {
                let (reply, rx) = oneshot::channel();
                let job = LogJob::Write(WalWrite {
                    slab: w.slab().clone(),
                    from,
                    to,
                    sync: self.shared.config.durability == Durability::Sync,
                    epoch: self.wal_epoch,
                    reply,
                });
                if tx.send(job).is_err() {
                    self.complete(
                        group,
                        file_id,
                        start,
                        from,
                        Err(WalError::Sync(log_thread_gone())),
                    );
                    return;
                }
                self.inflight.push_back(Inflight {
                    group,
                    file_id,
                    start,
                    from,
                    rx,
                });
            }
        }
    }

    /// Applies a finished group: index first, then acknowledgements, so an
    /// acknowledged write is always visible to its writer. `file_id` is the
    /// slab the group is in, `start` the slab offset of its first record,
    /// `from` where its WAL write began.
    fn complete(
        &mut self,
        group: Group,
        file_id: u32,
        start: usize,
        from: usize,
        res: Result<(), WalError>,
    ) {
        let failure = match res {
            Ok(()) => {
                self.apply(group);
                return;
            }
            Err(f) => f,
        };
        let e = failure.error().clone();
        match failure {
            WalError::Sync(_) => {
                tracing::error!(error = %e, "WAL sync failed; the store refuses writes until reopened");
                self.shared.poison(&e);
            }
            WalError::Write(_) => {
                // Nothing of this group or later ones is acknowledged; drop
                // their records so the slab continues from the last good one.
                tracing::warn!(error = %e, "WAL write failed; the group's writes are refused");
                // The failed write may have left anything from `from` on
                // (for a new file, even its header page): the next write
                // starts there again, in a new epoch (the log thread refuses
                // the groups queued behind the failed one, so no write reads
                // the slab while it is rolled back).
                self.wal_epoch += 1;
                self.roll_back(file_id, start, from);
            }
        }
        // Groups behind a failed one fail with it, whatever their own reply:
        // after a failed fdatasync a later one proves nothing.
        let inflight: Vec<Group> = self.inflight.drain(..).map(|i| i.group).collect();
        let later = std::mem::take(&mut self.pending);
        for u in group
            .updates
            .iter()
            .chain(inflight.iter().flat_map(|g| &g.updates))
            .chain(&later.updates)
        {
            self.unapplied.remove(u);
        }
        let waiters = inflight.into_iter().flat_map(|g| g.waiters);
        for w in group
            .waiters
            .into_iter()
            .chain(waiters)
            .chain(later.waiters)
        {
            let _ = w.send(Err(e.clone()));
        }
    }

    async fn handle(&mut self, req: Request) {
        match req {
            Request::Write(req) => self.write(req).await,
            Request::Sync { reply } => self.sync(reply).await,
            Request::Flush { reply } => self.flush(reply).await,
            Request::Close { reply } => {
                // Handled by `run`; unreachable through it.
                let _ = reply.send(Err(Error::Closed));
            }
            Request::Relocate {
                moves,
                outcome,
                reply,
            } => self.relocate(moves, outcome, reply).await,
            #[cfg(feature = "fault-injection")]
            Request::Panic => panic!("the writer was asked to panic (a test)"),
        }
    }

    /// The next file id. Ids only grow (recovery and "newest wins" rely on
    /// it), so when they run out writes fail instead of wrapping around
    /// onto the ids of live files.
    fn take_file_id(&mut self) -> Result<u32> {
        let id = self.next_file_id;
        self.next_file_id = id.checked_add(1).ok_or_else(|| {
            Error::InvalidArgument(format!(
                "file ids are used up (the next would pass {}); copy the data to a new store",
                u32::MAX
            ))
        })?;
        Ok(id)
    }

    /// Appends the records of one atomic write, each with what its key's
    /// entries were found to hold (`seen`, empty for GC's copies); rotates
    /// first if it does not fit in what is left of the active slab.
    async fn append(&mut self, ops: &[Op], mut seen: Vec<Vec<Seen>>) -> Result<Vec<Update>> {
        let total: usize = ops.iter().map(Op::encoded_len).sum();
        let room = self.shared.config.slab_size - FILE_HEADER_LEN;
        if total > room {
            return Err(Error::InvalidArgument(format!(
                "the write needs {total} bytes but a slab holds {room}"
            )));
        }
        if self.active.as_ref().is_some_and(|w| w.remaining() < total) {
            self.rotate().await?;
        }
        let active = match &mut self.active {
            Some(w) => w,
            None => {
                let id = self.take_file_id()?;
                let mut w = SlabWriter::with_pool(
                    id,
                    self.shared.config.slab_size,
                    Some(&self.shared.slab_pool),
                );
                // SAFETY: a new slab: nothing has read it yet.
                unsafe { w.set_predecessor(self.last_file) };
                self.shared
                    .registry
                    .insert(id, Source::Slab(w.slab().clone()));
                self.logged_upto = 0;
                self.active.insert(w)
            }
        };
        if self.pending.is_empty() {
            self.pending_start = active.appended();
        }
        let file_id = active.slab().file_id();
        let last = ops.len().saturating_sub(1);
        let mut updates = Vec::with_capacity(ops.len());
        for (i, op) in ops.iter().enumerate() {
            let mut flags = if i == 0 { FLAG_BEGIN } else { 0 };
            if i == last {
                flags |= FLAG_END;
            }
            let kind = if op.is_delete() {
                FLAG_DELETE
            } else {
                FLAG_PUT
            };
            let off = active.append(flags | kind, op.key(), op.value());
            // Room for the whole write was checked above.
            let off =
                off.ok_or_else(|| Error::InvalidArgument("write does not fit in a slab".into()))?;
            let change = match op {
                Op::Put(..) => Change::Put,
                Op::Delete(_) => Change::Delete,
                Op::Move { from, from_len, .. } => Change::Move {
                    from: *from,
                    from_len: *from_len,
                },
                Op::MoveTombstone { .. } => Change::Tombstone,
            };
            let loc = Location {
                file_id,
                offset: off as u32,
            };
            let mut seen = seen.get_mut(i).map(std::mem::take).unwrap_or_default();
            seen.extend(in_batch(&updates, op.key()));
            updates.push(Update {
                seen,
                key: op.key().clone(),
                loc,
                len: op.encoded_len() as u32,
                change,
            });
        }
        for u in &updates {
            self.unapplied.add(u);
        }
        Ok(updates)
    }

    /// Submits the pending group and waits for every group in flight, so
    /// everything appended is durable (or failed); seals the closing slab.
    async fn drain_wal(&mut self) {
        loop {
            self.advance();
            let Some(inf) = self.inflight.pop_front() else {
                break;
            };
            let res = inf
                .rx
                .await
                .unwrap_or(Err(WalError::Sync(log_thread_gone())));
            self.complete(inf.group, inf.file_id, inf.start, inf.from, res);
        }
        self.seal_closing().await;
    }
}
