//! openraft's state machine on one silt store: the replicated key-value
//! pairs, the last applied id and membership, and the current snapshot.

use std::collections::HashSet;
use std::io::Cursor;
use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt;
use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{
    BasicNode, EntryPayload, ErrorSubject, ErrorVerb, LogId, RaftSnapshotBuilder, SnapshotMeta,
    StorageError, StoredMembership,
};
use serde::{Deserialize, Serialize};
use silt::{Db, WriteBatch};
use tokio::sync::RwLock;

use crate::codec::{decode, encode, io_error, Damaged};
use crate::{Request, Response, TypeConfig};

type NodeId = u64;
type Membership = StoredMembership<NodeId, BasicNode>;
/// Replicated pairs, keys without their prefix.
type Pairs = Vec<(Vec<u8>, Vec<u8>)>;

/// Every replicated key is stored under this prefix; metadata keys start
/// with `m:`, so the two never meet.
const DATA: u8 = b'd';
const APPLIED: &[u8] = b"m:applied";
const SNAPSHOT: &[u8] = b"m:snapshot";
const SNAPSHOT_SEQ: &[u8] = b"m:snapshot-seq";
/// A snapshot's payload starts with this, then a CRC32 of what follows.
const SNAPSHOT_MAGIC: &[u8; 8] = b"siltsnp1";

/// The longest key a [`Request`] may carry: silt's limit less the prefix.
pub const MAX_KEY_LEN: usize = silt::MAX_KEY_LEN - 1;

fn data_key(key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(key.len() + 1);
    k.push(DATA);
    k.extend_from_slice(key);
    k
}

fn sm_err(verb: ErrorVerb, e: &(dyn std::error::Error + 'static)) -> StorageError<NodeId> {
    io_error(ErrorSubject::StateMachine, verb, e)
}

fn snapshot_err(verb: ErrorVerb, e: &(dyn std::error::Error + 'static)) -> StorageError<NodeId> {
    io_error(ErrorSubject::Snapshot(None), verb, e)
}

/// What `m:applied` holds: written in the same batch as the entries'
/// changes, so the pairs and the id they reflect never disagree.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Applied {
    last: Option<LogId<NodeId>>,
    membership: Membership,
}

/// The current snapshot, as `m:snapshot` holds it.
#[derive(Debug, Serialize, Deserialize)]
struct StoredSnapshot {
    meta: SnapshotMeta<NodeId, BasicNode>,
    data: Vec<u8>,
}

/// openraft's `RaftStateMachine` for [`TypeConfig`]: a replicated map from
/// byte keys to byte values, kept in a silt store.
///
/// Each `apply` call is one atomic [`WriteBatch`]: every entry's change and
/// the new last-applied id. The store is `Durability::Buffered`: a crash
/// can lose the last applies, and openraft then applies them again from
/// the log. A snapshot is built under a lock that holds applies back, and
/// the store is synced before the snapshot is reported, so the log is
/// never purged past what the state machine has on disk.
#[derive(Debug)]
pub struct StateMachine {
    db: Db,
    /// Held for writing by `apply` and `install_snapshot`, for reading while
    /// a snapshot scans the pairs.
    lock: Arc<RwLock<()>>,
    applied: Applied,
}

/// Reads the replicated map. Cheap to clone; reads go straight to silt.
#[derive(Debug, Clone)]
pub struct KvReader {
    db: Db,
}

impl KvReader {
    /// The value of `key` as this node has applied it (a follower may be
    /// behind; call `Raft::ensure_linearizable` first for a read that sees
    /// every acknowledged write).
    ///
    /// # Cancel safety
    ///
    /// A read: dropping it changes nothing.
    pub async fn get(&self, key: impl AsRef<[u8]>) -> Result<Option<Bytes>, silt::Error> {
        self.db.get(data_key(key.as_ref())).await
    }
}

/// Builds a snapshot of the state machine; see [`StateMachine`].
#[derive(Debug)]
pub struct SnapshotBuilder {
    db: Db,
    lock: Arc<RwLock<()>>,
}

impl StateMachine {
    /// Opens the state machine kept in `db` (empty for a new node).
    ///
    /// # Cancel safety
    ///
    /// It only reads; dropped, it leaves the store as it was.
    #[tracing::instrument(level = "info", skip_all, err(Display))]
    pub async fn open(db: Db) -> Result<StateMachine, StorageError<NodeId>> {
        let applied = read_applied(&db).await?;
        tracing::info!(applied = ?applied.last, "state machine opened");
        Ok(StateMachine {
            db,
            lock: Arc::new(RwLock::new(())),
            applied,
        })
    }

    /// A handle for reading the replicated map.
    pub fn reader(&self) -> KvReader {
        KvReader {
            db: self.db.clone(),
        }
    }

    /// The silt store under the state machine.
    pub fn db(&self) -> &Db {
        &self.db
    }
}

async fn read_applied(db: &Db) -> Result<Applied, StorageError<NodeId>> {
    match db
        .get(APPLIED)
        .await
        .map_err(|e| sm_err(ErrorVerb::Read, &e))?
    {
        Some(bytes) => decode(&bytes, "applied state").map_err(|e| sm_err(ErrorVerb::Read, &e)),
        None => Ok(Applied::default()),
    }
}

/// Every replicated pair, keys without their prefix.
async fn read_pairs(db: &Db) -> Result<Pairs, silt::Error> {
    let mut pairs = Vec::new();
    let mut scan = Box::pin(db.scan());
    while let Some(pair) = scan.next().await {
        let (key, value) = pair?;
        if key.first() == Some(&DATA) {
            pairs.push((key[1..].to_vec(), value.to_vec()));
        }
    }
    Ok(pairs)
}

fn frame_snapshot(pairs: &[(Vec<u8>, Vec<u8>)]) -> Result<Vec<u8>, Damaged> {
    let body = encode(&pairs, "snapshot")?;
    let mut data = Vec::with_capacity(body.len() + 12);
    data.extend_from_slice(SNAPSHOT_MAGIC);
    data.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
    data.extend_from_slice(&body);
    Ok(data)
}

/// The pairs in a snapshot's payload; a payload cut short or changed in
/// transit fails its CRC here, before anything is written.
fn parse_snapshot(data: &[u8]) -> Result<Pairs, Damaged> {
    if data.len() < 12 || &data[..8] != SNAPSHOT_MAGIC {
        return Err(Damaged(format!(
            "snapshot payload of {} bytes has no silt-raft header",
            data.len()
        )));
    }
    let (crc, body) = data[8..].split_at(4);
    let want = u32::from_le_bytes([crc[0], crc[1], crc[2], crc[3]]);
    if crc32fast::hash(body) != want {
        return Err(Damaged(format!(
            "snapshot payload of {} bytes fails its CRC",
            data.len()
        )));
    }
    decode(body, "snapshot")
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    #[tracing::instrument(level = "info", skip_all, err(Display))]
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError<NodeId>> {
        let rerr = |e: &(dyn std::error::Error + 'static)| snapshot_err(ErrorVerb::Read, e);
        let werr = |e: &(dyn std::error::Error + 'static)| snapshot_err(ErrorVerb::Write, e);
        let (applied, pairs) = {
            let _applies_wait = self.lock.read().await;
            (
                read_applied(&self.db).await?,
                read_pairs(&self.db).await.map_err(|e| rerr(&e))?,
            )
        };
        let data = frame_snapshot(&pairs).map_err(|e| werr(&e))?;
        let seq = match self.db.get(SNAPSHOT_SEQ).await.map_err(|e| rerr(&e))? {
            Some(b) => decode::<u64>(&b, "snapshot sequence").map_err(|e| rerr(&e))? + 1,
            None => 1,
        };
        let snapshot_id = match &applied.last {
            Some(l) => format!("{}-{}-{seq}", l.leader_id, l.index),
            None => format!("--{seq}"),
        };
        let meta = SnapshotMeta {
            last_log_id: applied.last,
            last_membership: applied.membership,
            snapshot_id,
        };
        let stored = StoredSnapshot {
            meta: meta.clone(),
            data,
        };
        let mut batch = WriteBatch::new();
        batch.put(SNAPSHOT, encode(&stored, "snapshot").map_err(|e| werr(&e))?);
        batch.put(
            SNAPSHOT_SEQ,
            encode(&seq, "snapshot sequence").map_err(|e| werr(&e))?,
        );
        self.db.write(batch).await.map_err(|e| werr(&e))?;
        // The log may be purged up to this snapshot as soon as it is
        // reported: the state it covers must be on disk first.
        self.db.sync().await.map_err(|e| werr(&e))?;
        tracing::info!(id = %meta.snapshot_id, pairs = pairs.len(), bytes = stored.data.len(), "snapshot built");
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(stored.data)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId<NodeId>>, Membership), StorageError<NodeId>> {
        Ok((self.applied.last, self.applied.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Response>, StorageError<NodeId>>
    where
        I: IntoIterator<Item = openraft::Entry<TypeConfig>> + Send,
        I::IntoIter: Send,
    {
        let mut applied = self.applied.clone();
        let mut batch = WriteBatch::new();
        let mut replies = Vec::new();
        for entry in entries {
            applied.last = Some(entry.log_id);
            let reply = match entry.payload {
                EntryPayload::Blank => Response::Done,
                EntryPayload::Membership(m) => {
                    applied.membership = StoredMembership::new(Some(entry.log_id), m);
                    Response::Done
                }
                EntryPayload::Normal(request) => match request.checked() {
                    Err(why) => Response::Rejected(why),
                    Ok(Request::Set { key, value }) => {
                        batch.put(data_key(&key), value);
                        Response::Done
                    }
                    Ok(Request::Delete { key }) => {
                        batch.delete(data_key(&key));
                        Response::Done
                    }
                },
            };
            replies.push(reply);
        }
        let Some(last) = applied.last else {
            return Ok(replies);
        };
        let werr = |e: &(dyn std::error::Error + 'static)| {
            io_error(ErrorSubject::Apply(last), ErrorVerb::Write, e)
        };
        batch.put(
            APPLIED,
            encode(&applied, "applied state").map_err(|e| werr(&e))?,
        );
        {
            let _snapshots_wait = self.lock.write().await;
            self.db.write(batch).await.map_err(|e| werr(&e))?;
        }
        self.applied = applied;
        Ok(replies)
    }

    async fn get_snapshot_builder(&mut self) -> SnapshotBuilder {
        SnapshotBuilder {
            db: self.db.clone(),
            lock: self.lock.clone(),
        }
    }

    async fn begin_receiving_snapshot(
        &mut self,
    ) -> Result<Box<Cursor<Vec<u8>>>, StorageError<NodeId>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    /// Replaces the state with the snapshot's in one atomic batch, then
    /// syncs: a payload that fails its check, or a write that fails half
    /// way, leaves the state machine as it was.
    #[tracing::instrument(level = "info", skip_all, fields(id = %meta.snapshot_id), err(Display))]
    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError<NodeId>> {
        let signature = Some(meta.signature());
        let rerr = |e: &(dyn std::error::Error + 'static)| {
            io_error(
                ErrorSubject::Snapshot(signature.clone()),
                ErrorVerb::Read,
                e,
            )
        };
        let werr = |e: &(dyn std::error::Error + 'static)| {
            io_error(
                ErrorSubject::Snapshot(signature.clone()),
                ErrorVerb::Write,
                e,
            )
        };
        let data = snapshot.into_inner();
        let pairs = parse_snapshot(&data).map_err(|e| rerr(&e))?;
        let applied = Applied {
            last: meta.last_log_id,
            membership: meta.last_membership.clone(),
        };
        let _snapshots_wait = self.lock.write().await;
        let incoming: HashSet<&[u8]> = pairs.iter().map(|(k, _)| k.as_slice()).collect();
        let mut batch = WriteBatch::new();
        for (key, _) in read_pairs(&self.db).await.map_err(|e| rerr(&e))? {
            if !incoming.contains(key.as_slice()) {
                batch.delete(data_key(&key));
            }
        }
        let n = pairs.len();
        for (key, value) in pairs {
            batch.put(data_key(&key), value);
        }
        batch.put(
            APPLIED,
            encode(&applied, "applied state").map_err(|e| werr(&e))?,
        );
        let stored = StoredSnapshot {
            meta: meta.clone(),
            data,
        };
        batch.put(SNAPSHOT, encode(&stored, "snapshot").map_err(|e| werr(&e))?);
        self.db.write(batch).await.map_err(|e| werr(&e))?;
        self.db.sync().await.map_err(|e| werr(&e))?;
        self.applied = applied;
        tracing::info!(pairs = n, "snapshot installed");
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<Snapshot<TypeConfig>>, StorageError<NodeId>> {
        let rerr = |e: &(dyn std::error::Error + 'static)| snapshot_err(ErrorVerb::Read, e);
        let Some(bytes) = self.db.get(SNAPSHOT).await.map_err(|e| rerr(&e))? else {
            return Ok(None);
        };
        let stored: StoredSnapshot = decode(&bytes, "snapshot").map_err(|e| rerr(&e))?;
        Ok(Some(Snapshot {
            meta: stored.meta,
            snapshot: Box::new(Cursor::new(stored.data)),
        }))
    }
}
