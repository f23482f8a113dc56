//! A RocksDB log store in the layout of openraft's RocksDB store (a `logs`
//! column family keyed by big-endian index, a `meta` family for the vote,
//! the committed and the purged id), on the v2 storage API; the published
//! `openraft-rocksstore` 0.9 implements the v1 `RaftStorage` (see
//! mem.rs). As in openraft's `raft-kv-rocksdb` example, the state machine
//! beside it lives in memory. An append is one write batch with a synced
//! WAL before its callback, so it is as durable as silt-raft's. As
//! openraft's store does, the write runs on the runtime worker (blocking
//! it for the fdatasync); `off_runtime` moves it to a blocking thread, as
//! silt's sync is.

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::path::Path;
use std::sync::Arc;

use openraft::storage::{LogFlushed, LogState, RaftLogReader, RaftLogStorage};
use openraft::{Entry, LogId, OptionalSend, StorageError, StorageIOError, Vote};
use rocksdb::{
    ColumnFamilyDescriptor, Direction, IteratorMode, Options, WriteBatch, WriteOptions, DB,
};
use silt_raft::TypeConfig;

#[derive(Clone)]
pub struct RocksLog {
    db: Arc<DB>,
    /// Synced writes on a blocking thread (`spawn_blocking`) instead of
    /// on the runtime worker, which openraft's RocksDB store blocks.
    off_runtime: bool,
}

fn werr(e: &(impl std::error::Error + 'static)) -> StorageError<u64> {
    StorageIOError::write_logs(e).into()
}

fn rerr(e: &(impl std::error::Error + 'static)) -> StorageError<u64> {
    StorageIOError::read_logs(e).into()
}

impl RocksLog {
    pub fn open(path: &Path, off_runtime: bool) -> RocksLog {
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        let cfs = ["logs", "meta"].map(|n| ColumnFamilyDescriptor::new(n, Options::default()));
        let db = DB::open_cf_descriptors(&opts, path, cfs).expect("open RocksDB");
        RocksLog {
            db: Arc::new(db),
            off_runtime,
        }
    }

    /// Writes `batch`, with a synced WAL if `sync`.
    async fn write(&self, batch: WriteBatch, sync: bool) -> Result<(), StorageError<u64>> {
        let mut wo = WriteOptions::default();
        wo.set_sync(sync);
        if !self.off_runtime {
            return self.db.write_opt(batch, &wo).map_err(|e| werr(&e));
        }
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || db.write_opt(batch, &wo))
            .await
            .map_err(|e| werr(&e))?
            .map_err(|e| werr(&e))
    }

    fn get_meta<T: serde::de::DeserializeOwned>(
        &self,
        key: &str,
    ) -> Result<Option<T>, StorageError<u64>> {
        let cf = self.db.cf_handle("meta").expect("meta family");
        match self.db.get_cf(cf, key).map_err(|e| rerr(&e))? {
            Some(bytes) => Ok(Some(postcard::from_bytes(&bytes).map_err(|e| rerr(&e))?)),
            None => Ok(None),
        }
    }

    async fn put_meta<T: serde::Serialize>(
        &self,
        key: &str,
        value: &T,
        sync: bool,
    ) -> Result<(), StorageError<u64>> {
        let mut batch = WriteBatch::default();
        let cf = self.db.cf_handle("meta").expect("meta family");
        batch.put_cf(cf, key, postcard::to_allocvec(value).map_err(|e| werr(&e))?);
        self.write(batch, sync).await
    }
}

impl RaftLogReader<TypeConfig> for RocksLog {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>, StorageError<u64>> {
        let start = match range.start_bound() {
            Bound::Included(&i) => i,
            Bound::Excluded(&i) => i + 1,
            Bound::Unbounded => 0,
        };
        let cf = self.db.cf_handle("logs").expect("logs family");
        let mut entries = Vec::new();
        for item in self.db.iterator_cf(
            cf,
            IteratorMode::From(&start.to_be_bytes(), Direction::Forward),
        ) {
            let (key, value) = item.map_err(|e| rerr(&e))?;
            let index = u64::from_be_bytes(key.as_ref().try_into().expect("8-byte key"));
            if !range.contains(&index) {
                break;
            }
            entries.push(postcard::from_bytes(&value).map_err(|e| rerr(&e))?);
        }
        Ok(entries)
    }
}

impl RaftLogStorage<TypeConfig> for RocksLog {
    type LogReader = RocksLog;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError<u64>> {
        let cf = self.db.cf_handle("logs").expect("logs family");
        let last = match self.db.iterator_cf(cf, IteratorMode::End).next() {
            Some(item) => {
                let (_, value) = item.map_err(|e| rerr(&e))?;
                let entry: Entry<TypeConfig> =
                    postcard::from_bytes(&value).map_err(|e| rerr(&e))?;
                Some(entry.log_id)
            }
            None => None,
        };
        let purged: Option<LogId<u64>> = self.get_meta("purged")?;
        Ok(LogState {
            last_purged_log_id: purged,
            last_log_id: last.or(purged),
        })
    }

    async fn get_log_reader(&mut self) -> RocksLog {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<u64>) -> Result<(), StorageError<u64>> {
        self.put_meta("vote", vote, true).await
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<u64>>, StorageError<u64>> {
        self.get_meta("vote")
    }

    async fn save_committed(
        &mut self,
        committed: Option<LogId<u64>>,
    ) -> Result<(), StorageError<u64>> {
        self.put_meta("committed", &committed, false).await
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<u64>>, StorageError<u64>> {
        Ok(self.get_meta::<Option<LogId<u64>>>("committed")?.flatten())
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError<u64>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let cf = self.db.cf_handle("logs").expect("logs family");
        let mut batch = WriteBatch::default();
        for e in entries {
            batch.put_cf(
                cf,
                e.log_id.index.to_be_bytes(),
                postcard::to_allocvec(&e).map_err(|e| werr(&e))?,
            );
        }
        self.write(batch, true).await?;
        callback.log_io_completed(Ok(()));
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId<u64>) -> Result<(), StorageError<u64>> {
        let cf = self.db.cf_handle("logs").expect("logs family");
        let mut batch = WriteBatch::default();
        batch.delete_range_cf(cf, log_id.index.to_be_bytes(), u64::MAX.to_be_bytes());
        self.write(batch, true).await
    }

    async fn purge(&mut self, log_id: LogId<u64>) -> Result<(), StorageError<u64>> {
        self.put_meta("purged", &log_id, false).await?;
        let cf = self.db.cf_handle("logs").expect("logs family");
        let mut batch = WriteBatch::default();
        batch.delete_range_cf(cf, 0u64.to_be_bytes(), (log_id.index + 1).to_be_bytes());
        self.write(batch, false).await
    }
}
