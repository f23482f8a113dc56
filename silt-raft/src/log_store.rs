//! openraft's log store on one silt store: entries keyed by index, the
//! vote, the committed id and the log's bounds beside them.

use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::sync::{Arc, RwLock};

use openraft::storage::{LogFlushed, LogState, RaftLogReader, RaftLogStorage};
use openraft::{
    ErrorSubject, ErrorVerb, LogId, NodeId, OptionalSend, RaftLogId, RaftTypeConfig, StorageError,
    Vote,
};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use silt::{Db, WriteBatch};
use tokio::sync::mpsc;

use crate::codec::{decode, encode, io_error, Damaged};

const VOTE: &[u8] = b"m:vote";
const COMMITTED: &[u8] = b"m:committed";
const BOUNDS: &[u8] = b"m:bounds";
/// How many entries one `get_many` reads.
const READ_CHUNK: usize = 256;

/// An entry's key: its index, big-endian (8 bytes; no metadata key is 8
/// bytes long).
fn entry_key(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}

/// Where the log is. Written in the same atomic batch as every change to
/// the entries, so a recovered store's bounds always describe its entries.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(bound(serialize = "NID: NodeId", deserialize = "NID: NodeId"))]
struct Bounds<NID: NodeId> {
    /// The last entry removed by `purge`.
    purged: Option<LogId<NID>>,
    /// The index of the first entry present (meaningful when `present`).
    first: u64,
    /// The last entry present, if any.
    last: Option<LogId<NID>>,
    /// Index ranges (inclusive) inside `first..=last` with no entry,
    /// sorted. A running Raft core never makes one; openraft's storage
    /// suite does (it appends index 3 after index 1), so a gap an append
    /// leaves is recorded rather than refused, and the check at open can
    /// still tell a recorded gap from a lost entry.
    #[serde(default)]
    gaps: Vec<(u64, u64)>,
}

impl<NID: NodeId> Bounds<NID> {
    /// The indexes of the entries present, first and last.
    fn present(&self) -> Option<(u64, u64)> {
        let last = self.last.as_ref()?;
        Some((self.first, last.index))
    }

    fn in_gap(&self, index: u64) -> bool {
        self.gaps.iter().any(|&(a, b)| (a..=b).contains(&index))
    }

    /// The highest index present below `index`, if any.
    fn present_below(&self, index: u64) -> Option<u64> {
        let mut i = index.checked_sub(1)?;
        while i >= self.first {
            match self.gaps.iter().find(|&&(a, b)| (a..=b).contains(&i)) {
                Some(&(a, _)) => i = a.checked_sub(1)?,
                None => return Some(i),
            }
        }
        None
    }
}

/// openraft's `RaftLogStorage` on a silt store.
///
/// Each `append` is one atomic [`WriteBatch`] (the entries and the log's
/// new bounds) acknowledged once it reached silt's WAL; its
/// [`LogFlushed`] callback fires after an `fdatasync` that covers it. One
/// background task runs those syncs, and every callback queued while one
/// runs is answered by the next: group commit across appends, while the
/// Raft core goes on to its next step. `save_vote` returns only once the
/// vote is on disk.
///
/// The store should be opened with `Durability::Buffered` (what
/// [`open`](crate::open) does): under `Sync` each append would wait for
/// its own fdatasync before returning.
pub struct LogStore<C: RaftTypeConfig> {
    db: Db,
    bounds: Bounds<C::NodeId>,
    reader: LogReader<C>,
    flushes: mpsc::UnboundedSender<LogFlushed<C>>,
}

impl<C: RaftTypeConfig> Debug for LogStore<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogStore")
            .field("purged", &self.bounds.purged)
            .field("first", &self.bounds.first)
            .field("last", &self.bounds.last)
            .finish_non_exhaustive()
    }
}

/// Reads entries for replication; cloned by openraft for each follower.
pub struct LogReader<C: RaftTypeConfig> {
    db: Db,
    /// The first and last index present, kept by the `LogStore`.
    span: Arc<RwLock<Option<(u64, u64)>>>,
    _config: std::marker::PhantomData<fn() -> C>,
}

impl<C: RaftTypeConfig> Clone for LogReader<C> {
    fn clone(&self) -> Self {
        LogReader {
            db: self.db.clone(),
            span: self.span.clone(),
            _config: std::marker::PhantomData,
        }
    }
}

impl<C: RaftTypeConfig> Debug for LogReader<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogReader").finish_non_exhaustive()
    }
}

fn read_err<NID: NodeId>(e: &(dyn std::error::Error + 'static)) -> StorageError<NID> {
    io_error(ErrorSubject::Logs, ErrorVerb::Read, e)
}

fn write_err<NID: NodeId>(e: &(dyn std::error::Error + 'static)) -> StorageError<NID> {
    io_error(ErrorSubject::Logs, ErrorVerb::Write, e)
}

impl<C> LogStore<C>
where
    C: RaftTypeConfig,
    C::Entry: Serialize + DeserializeOwned,
{
    /// Opens the log kept in `db` (empty for a new node) and checks it: the
    /// bounds must decode, every entry between them must be present, and
    /// the last one must be the entry the bounds name. A damaged log is an
    /// `Err`, never a shorter log.
    ///
    /// It spawns the task that runs the log's fdatasyncs, so it must be
    /// called inside a Tokio runtime.
    ///
    /// # Cancel safety
    ///
    /// It only reads; dropped, it leaves the store as it was (the `Db`
    /// moved in is dropped with it).
    #[tracing::instrument(level = "info", skip_all, err(Display))]
    pub async fn open(db: Db) -> Result<LogStore<C>, StorageError<C::NodeId>> {
        let bounds = match db.get(BOUNDS).await.map_err(|e| read_err(&e))? {
            Some(bytes) => {
                decode::<Bounds<C::NodeId>>(&bytes, "log bounds").map_err(|e| read_err(&e))?
            }
            None => Bounds {
                purged: None,
                first: 0,
                last: None,
                gaps: Vec::new(),
            },
        };
        check_log::<C>(&db, &bounds).await?;
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(run_flushes(db.clone(), rx));
        let reader = LogReader {
            db: db.clone(),
            span: Arc::new(RwLock::new(bounds.present())),
            _config: std::marker::PhantomData,
        };
        tracing::info!(purged = ?bounds.purged, last = ?bounds.last, "log opened");
        Ok(LogStore {
            db,
            bounds,
            reader,
            flushes: tx,
        })
    }

    /// The silt store under the log.
    pub fn db(&self) -> &Db {
        &self.db
    }

    /// Writes `batch` with the new bounds, then makes readers see them.
    async fn commit(
        &mut self,
        mut batch: WriteBatch,
        bounds: Bounds<C::NodeId>,
    ) -> Result<(), StorageError<C::NodeId>> {
        batch.put(
            BOUNDS,
            encode(&bounds, "log bounds").map_err(|e| write_err(&e))?,
        );
        self.db.write(batch).await.map_err(|e| write_err(&e))?;
        *self.reader.span.write().unwrap_or_else(|p| p.into_inner()) = bounds.present();
        self.bounds = bounds;
        Ok(())
    }

    /// The id of the entry at `index`, read back from the store.
    async fn log_id_at(&self, index: u64) -> Result<LogId<C::NodeId>, StorageError<C::NodeId>> {
        let bytes = self
            .db
            .get(entry_key(index))
            .await
            .map_err(|e| read_err(&e))?
            .ok_or_else(|| {
                read_err(&Damaged(format!(
                    "log entry {index} is missing inside the log's bounds"
                )))
            })?;
        let entry: C::Entry = decode(&bytes, "log entry").map_err(|e| read_err(&e))?;
        Ok(entry.get_log_id().clone())
    }
}

/// Every entry inside `bounds` is present, and the last is the one they
/// name. Presence is an index lookup (no value is read), so a log of a
/// million entries checks in about a second.
async fn check_log<C>(db: &Db, bounds: &Bounds<C::NodeId>) -> Result<(), StorageError<C::NodeId>>
where
    C: RaftTypeConfig,
    C::Entry: DeserializeOwned,
{
    let Some((first, last)) = bounds.present() else {
        return Ok(());
    };
    if let Some(p) = &bounds.purged {
        if first != p.index + 1 {
            return Err(read_err(&Damaged(format!(
                "log bounds say the first entry is {first} but entries up to {} were purged",
                p.index
            ))));
        }
    }
    for index in (first..=last).filter(|&i| !bounds.in_gap(i)) {
        if !db
            .contains_key(entry_key(index))
            .await
            .map_err(|e| read_err(&e))?
        {
            return Err(read_err(&Damaged(format!(
                "log entry {index} is missing: the log from {first} to {last} has a hole"
            ))));
        }
    }
    let bytes = db
        .get(entry_key(last))
        .await
        .map_err(|e| read_err(&e))?
        .unwrap_or_default();
    let entry: C::Entry = decode(&bytes, "last log entry").map_err(|e| read_err(&e))?;
    if Some(entry.get_log_id()) != bounds.last.as_ref() {
        return Err(read_err(&Damaged(format!(
            "the last log entry is {} but the log's bounds name {:?}",
            entry.get_log_id(),
            bounds.last
        ))));
    }
    Ok(())
}

/// Answers `append` callbacks once an fdatasync covers their entries.
/// Every callback that arrived while a sync ran shares the next one.
async fn run_flushes<C: RaftTypeConfig>(
    db: Db,
    mut flushes: mpsc::UnboundedReceiver<LogFlushed<C>>,
) {
    while let Some(first) = flushes.recv().await {
        let mut waiting = vec![first];
        while let Ok(more) = flushes.try_recv() {
            waiting.push(more);
        }
        let result = db.sync().await;
        if let Err(e) = &result {
            tracing::error!(error = %e, "fdatasync of the raft log failed");
        }
        for callback in waiting {
            callback.log_io_completed(result.clone().map_err(io::Error::other));
        }
    }
}

impl<C> RaftLogReader<C> for LogReader<C>
where
    C: RaftTypeConfig,
    C::Entry: Serialize + DeserializeOwned,
{
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<C::Entry>, StorageError<C::NodeId>> {
        let Some((first, last)) = *self.span.read().unwrap_or_else(|p| p.into_inner()) else {
            return Ok(Vec::new());
        };
        let start = match range.start_bound() {
            Bound::Included(&i) => i,
            Bound::Excluded(&i) => i.saturating_add(1),
            Bound::Unbounded => 0,
        }
        .max(first);
        let end = match range.end_bound() {
            Bound::Included(&i) => i,
            Bound::Excluded(&0) => return Ok(Vec::new()),
            Bound::Excluded(&i) => i - 1,
            Bound::Unbounded => u64::MAX,
        }
        .min(last);
        let mut entries = Vec::new();
        let mut next = start;
        while next <= end {
            let n = (end - next + 1).min(READ_CHUNK as u64);
            let keys: Vec<[u8; 8]> = (next..next + n).map(entry_key).collect();
            // An entry absent here is in a recorded gap, or was purged or
            // truncated since the span was read.
            for bytes in self
                .db
                .get_many(&keys)
                .await
                .map_err(|e| read_err(&e))?
                .into_iter()
                .flatten()
            {
                entries.push(decode(&bytes, "log entry").map_err(|e| read_err(&e))?);
            }
            next += n;
        }
        Ok(entries)
    }
}

impl<C> RaftLogReader<C> for LogStore<C>
where
    C: RaftTypeConfig,
    C::Entry: Serialize + DeserializeOwned,
{
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<C::Entry>, StorageError<C::NodeId>> {
        self.reader.try_get_log_entries(range).await
    }
}

impl<C> RaftLogStorage<C> for LogStore<C>
where
    C: RaftTypeConfig,
    C::Entry: Serialize + DeserializeOwned,
{
    type LogReader = LogReader<C>;

    async fn get_log_state(&mut self) -> Result<LogState<C>, StorageError<C::NodeId>> {
        Ok(LogState {
            last_purged_log_id: self.bounds.purged.clone(),
            last_log_id: self
                .bounds
                .last
                .clone()
                .or_else(|| self.bounds.purged.clone()),
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.reader.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<C::NodeId>) -> Result<(), StorageError<C::NodeId>> {
        let werr = |e: &(dyn std::error::Error + 'static)| {
            io_error(ErrorSubject::Vote, ErrorVerb::Write, e)
        };
        let bytes = encode(vote, "vote").map_err(|e| werr(&e))?;
        self.db.put(VOTE, bytes).await.map_err(|e| werr(&e))?;
        self.db.sync().await.map_err(|e| werr(&e))
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<C::NodeId>>, StorageError<C::NodeId>> {
        let rerr = |e: &(dyn std::error::Error + 'static)| {
            io_error(ErrorSubject::Vote, ErrorVerb::Read, e)
        };
        match self.db.get(VOTE).await.map_err(|e| rerr(&e))? {
            Some(bytes) => decode(&bytes, "vote").map(Some).map_err(|e| rerr(&e)),
            None => Ok(None),
        }
    }

    /// Written without its own fdatasync: openraft only needs a committed
    /// id that is not ahead of the log, and silt recovers a prefix of its
    /// writes, so a recovered id never names an entry that was lost.
    async fn save_committed(
        &mut self,
        committed: Option<LogId<C::NodeId>>,
    ) -> Result<(), StorageError<C::NodeId>> {
        let bytes = encode(&committed, "committed log id").map_err(|e| write_err(&e))?;
        self.db
            .put(COMMITTED, bytes)
            .await
            .map_err(|e| write_err(&e))
    }

    async fn read_committed(
        &mut self,
    ) -> Result<Option<LogId<C::NodeId>>, StorageError<C::NodeId>> {
        match self.db.get(COMMITTED).await.map_err(|e| read_err(&e))? {
            Some(bytes) => decode(&bytes, "committed log id").map_err(|e| read_err(&e)),
            None => Ok(None),
        }
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<C>,
    ) -> Result<(), StorageError<C::NodeId>>
    where
        I: IntoIterator<Item = C::Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut bounds = self.bounds.clone();
        let mut batch = WriteBatch::new();
        for entry in entries {
            let id = entry.get_log_id().clone();
            if bounds.purged.as_ref().is_some_and(|p| id.index <= p.index) {
                // Already covered by the state machine: openraft's start-up
                // purges up to the applied id when the log is behind it,
                // and its storage suite then appends below that point.
                tracing::debug!(%id, "append below the purged point skipped");
                continue;
            }
            match bounds
                .last
                .as_ref()
                .or(bounds.purged.as_ref())
                .map(|l| l.index + 1)
            {
                Some(next) if id.index < next => {
                    return Err(write_err(&Damaged(format!(
                        "append of entry {id} would overwrite the log without a truncate: the next index is {next}"
                    ))));
                }
                Some(next) if id.index > next => {
                    tracing::warn!(%id, next, "append leaves a gap in the log");
                    if bounds.last.is_some() {
                        bounds.gaps.push((next, id.index - 1));
                    } else {
                        bounds.first = id.index;
                    }
                }
                _ => {}
            }
            if bounds.last.is_none() {
                bounds.first = id.index;
            }
            batch.put(
                entry_key(id.index),
                encode(&entry, "log entry").map_err(|e| write_err(&e))?,
            );
            bounds.last = Some(id);
        }
        if batch.is_empty() {
            callback.log_io_completed(Ok(()));
            return Ok(());
        }
        self.commit(batch, bounds).await?;
        // The task ends only when this store is dropped, so the send fails
        // only if it panicked; say so through the callback.
        if let Err(mpsc::error::SendError(callback)) = self.flushes.send(callback) {
            callback.log_io_completed(Err(io::Error::other("the raft log's sync task is gone")));
        }
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId<C::NodeId>) -> Result<(), StorageError<C::NodeId>> {
        let Some((first, last)) = self.bounds.present() else {
            return Ok(());
        };
        let from = log_id.index.max(first);
        if from > last {
            return Ok(());
        }
        let mut batch = WriteBatch::new();
        for index in (from..=last).filter(|&i| !self.bounds.in_gap(i)) {
            batch.delete(entry_key(index));
        }
        let mut bounds = self.bounds.clone();
        bounds.last = match self.bounds.present_below(from) {
            Some(index) => Some(self.log_id_at(index).await?),
            None => None,
        };
        bounds.gaps.retain(|&(a, _)| a < from);
        for gap in &mut bounds.gaps {
            gap.1 = gap.1.min(from - 1);
        }
        tracing::debug!(from, last, "log truncated");
        self.commit(batch, bounds).await
    }

    async fn purge(&mut self, log_id: LogId<C::NodeId>) -> Result<(), StorageError<C::NodeId>> {
        if self
            .bounds
            .purged
            .as_ref()
            .is_some_and(|p| p.index >= log_id.index)
        {
            return Ok(());
        }
        let mut batch = WriteBatch::new();
        let mut bounds = self.bounds.clone();
        if let Some((first, last)) = self.bounds.present() {
            for index in (first..=log_id.index.min(last)).filter(|&i| !self.bounds.in_gap(i)) {
                batch.delete(entry_key(index));
            }
            if log_id.index >= last {
                bounds.last = None;
            }
        }
        bounds.gaps.retain(|&(_, b)| b > log_id.index);
        for gap in &mut bounds.gaps {
            gap.0 = gap.0.max(log_id.index + 1);
        }
        bounds.first = log_id.index + 1;
        bounds.purged = Some(log_id);
        tracing::debug!(upto = ?bounds.purged, "log purged");
        self.commit(batch, bounds).await
    }
}
