//! openraft's storage on silt: a node's Raft log and its replicated
//! key-value state machine, each in its own silt store.
//!
//! silt gives each node durable appends at disk speed (group-committed
//! fdatasyncs), atomic batches, fast point reads and fast recovery;
//! openraft gives the cluster leader election, replication, membership
//! changes and snapshots. [`open`] returns the two halves openraft 0.9's
//! `storage-v2` API asks for:
//!
//! - [`LogStore`]: `RaftLogStorage`, generic over any type config whose
//!   entries serialize with serde. An `append` is one atomic batch; its
//!   callback fires once an fdatasync covers it. The vote is on disk
//!   before `save_vote` returns.
//! - [`StateMachine`]: `RaftStateMachine` for [`TypeConfig`], a map from
//!   byte keys to byte values. Read it through [`StateMachine::reader`].
//!
//! ```
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let dir = tempfile::tempdir().unwrap();
//! let (log, state_machine) = silt_raft::open(dir.path()).await?;
//! let reader = state_machine.reader();
//! // Hand `log` and `state_machine` to `openraft::Raft::new` with a
//! // network (see examples/raft_kv.rs); reads go through `reader`.
//! assert_eq!(reader.get("k").await.unwrap(), None);
//! # Ok::<(), openraft::StorageError<u64>>(()) }).unwrap();
//! ```

mod codec;
mod log_store;
pub mod router;
mod state_machine;

use std::path::Path;

use openraft::{ErrorSubject, ErrorVerb, StorageError};
use serde::{Deserialize, Serialize};
use silt::{Db, Durability};

pub use codec::Damaged;
pub use log_store::{LogReader, LogStore};
pub use state_machine::{KvReader, SnapshotBuilder, StateMachine, MAX_KEY_LEN};

openraft::declare_raft_types!(
    /// The type config of a silt-raft key-value cluster: `u64` node ids,
    /// [`openraft::BasicNode`] addresses, [`Request`] in, [`Response`] out.
    pub TypeConfig:
        D = Request,
        R = Response,
        SnapshotData = std::io::Cursor<Vec<u8>>,
);

/// A change to the replicated map, proposed with `Raft::client_write`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// Set `key` to `value`.
    Set {
        /// At most [`MAX_KEY_LEN`] bytes.
        key: Vec<u8>,
        /// The value.
        value: Vec<u8>,
    },
    /// Remove `key`.
    Delete {
        /// At most [`MAX_KEY_LEN`] bytes.
        key: Vec<u8>,
    },
}

impl Request {
    /// The request if silt can store it, else why not. The state machine
    /// applies the same check, so a request that slipped past a client
    /// becomes [`Response::Rejected`] on every node alike, never an error
    /// that would stop the node.
    pub fn checked(self) -> Result<Request, String> {
        let key = match &self {
            Request::Set { key, .. } | Request::Delete { key } => key,
        };
        if key.len() > MAX_KEY_LEN {
            return Err(format!(
                "key is {} bytes; the limit is {MAX_KEY_LEN}",
                key.len()
            ));
        }
        Ok(self)
    }
}

/// The outcome of an applied [`Request`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    /// Applied.
    Done,
    /// Not applied, on any node: the reason.
    Rejected(String),
}

/// Opens (or creates) a node's storage under `dir`: the log in `dir/log`
/// and the state machine in `dir/sm`, both silt stores under
/// `Durability::Buffered` (see [`LogStore`] for when each write is made
/// durable). For other silt settings, open the two stores yourself and
/// pass them to [`LogStore::open`] and [`StateMachine::open`].
///
/// # Cancel safety
///
/// Dropping the future drops any store it had opened; the next `open`
/// recovers it.
pub async fn open(
    dir: impl AsRef<Path>,
) -> Result<(LogStore<TypeConfig>, StateMachine), StorageError<u64>> {
    let dir = dir.as_ref();
    let log = open_db(&dir.join("log"), ErrorSubject::Logs).await?;
    let sm = open_db(&dir.join("sm"), ErrorSubject::StateMachine).await?;
    Ok((LogStore::open(log).await?, StateMachine::open(sm).await?))
}

async fn open_db(path: &Path, subject: ErrorSubject<u64>) -> Result<Db, StorageError<u64>> {
    Db::builder(path)
        .durability(Durability::Buffered)
        .open()
        .await
        .map_err(|e| codec::io_error(subject, ErrorVerb::Read, &e))
}
