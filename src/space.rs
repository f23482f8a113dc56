//! Live-byte accounting per data file: how many bytes of committed records a
//! file holds and how many of them are still the newest record of their key.
//! Garbage collection picks files by the ratio; `Db::stats` and
//! `Db::file_space` report it.
//!
//! Tombstones count as written but never as live: a tombstone that an older
//! file still needs is carried forward by GC, so its file stays collectable.
//!
//! Updated by the writer once per applied group, by recovery once at open,
//! and by GC and eviction when a file is dropped.

use crate::sync::{lock, Mutex};
use std::collections::BTreeMap;

/// Bytes of one data file.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FileSpace {
    /// The file's id (its name is `data/<id>.silt`, or `.log` while open).
    pub file_id: u32,
    /// Bytes of committed records in the file.
    pub record_bytes: u64,
    /// Bytes of records that are the newest of their key.
    pub live_bytes: u64,
}

impl FileSpace {
    /// `live_bytes / record_bytes` (1.0 for an empty file).
    pub fn live_ratio(&self) -> f64 {
        if self.record_bytes == 0 {
            1.0
        } else {
            self.live_bytes as f64 / self.record_bytes as f64
        }
    }
}

/// Changes collected outside the lock, applied under it at once.
#[derive(Debug, Default)]
pub(crate) struct SpaceDelta(Vec<(u32, i64, i64)>);

impl SpaceDelta {
    /// A record of `len` bytes was committed to `file_id`.
    pub fn written(&mut self, file_id: u32, len: u64, live: bool) {
        let len = len as i64;
        self.0.push((file_id, len, if live { len } else { 0 }));
    }

    /// A live record of `len` bytes in `file_id` was superseded.
    pub fn died(&mut self, file_id: u32, len: u64) {
        self.0.push((file_id, 0, -(len as i64)));
    }
}

/// See the module docs.
#[derive(Debug, Default)]
pub(crate) struct SpaceMap {
    files: Mutex<BTreeMap<u32, (u64, u64)>>,
}

impl SpaceMap {
    pub fn apply(&self, delta: SpaceDelta) {
        if delta.0.is_empty() {
            return;
        }
        let mut files = lock(&self.files);
        for (id, records, live) in delta.0 {
            let e = files.entry(id).or_default();
            e.0 = e.0.saturating_add_signed(records);
            e.1 = e.1.saturating_add_signed(live);
        }
    }

    /// Sets a file's figures (recovery).
    pub fn set(&self, file_id: u32, record_bytes: u64, live_bytes: u64) {
        lock(&self.files).insert(file_id, (record_bytes, live_bytes));
    }

    /// Drops a deleted file.
    pub fn forget(&self, file_id: u32) {
        lock(&self.files).remove(&file_id);
    }

    #[cfg(test)]
    pub fn get(&self, file_id: u32) -> FileSpace {
        let (record_bytes, live_bytes) =
            lock(&self.files).get(&file_id).copied().unwrap_or_default();
        FileSpace {
            file_id,
            record_bytes,
            live_bytes,
        }
    }

    /// Every file, oldest first.
    pub fn files(&self) -> Vec<FileSpace> {
        lock(&self.files)
            .iter()
            .map(|(&file_id, &(record_bytes, live_bytes))| FileSpace {
                file_id,
                record_bytes,
                live_bytes,
            })
            .collect()
    }

    /// (record bytes, live bytes) over all files.
    pub fn totals(&self) -> (u64, u64) {
        lock(&self.files)
            .values()
            .fold((0, 0), |(r, l), &(fr, fl)| (r + fr, l + fl))
    }
}

/// Recounts every file's record and live bytes from the files and the
/// index and compares them with the accounting (tests, through
/// `Db::check_space`). The store must be quiet: no write or GC between
/// the two. Reads through the mappings: for threads that may block.
#[cfg(feature = "fault-injection")]
pub(crate) fn recount(shared: &crate::shared::Shared) -> std::result::Result<(), String> {
    let mut want: BTreeMap<u32, (u64, u64)> = BTreeMap::new();
    let sources: BTreeMap<u32, crate::registry::Source> =
        shared.registry.sources().into_iter().collect();
    for (id, source) in &sources {
        let records = source.entries().iter().map(|e| u64::from(e.len)).sum();
        want.insert(*id, (records, 0));
    }
    for i in 0..shared.index.shard_count() {
        for e in shared.index.shard_entries(i, |_| {}) {
            let id = e.loc.file_id;
            let source = sources.get(&id).ok_or_else(|| {
                format!("an index entry points into file {id}, which is not loaded")
            })?;
            let off = e.loc.offset as usize;
            let header = source
                .bytes(off, crate::record::HEADER_LEN)
                .and_then(|h| crate::record::decode_fixed(h).ok())
                .ok_or_else(|| format!("no record header at {:?}", e.loc))?;
            want.entry(id).or_default().1 += header.record_len() as u64;
        }
    }
    let got: BTreeMap<u32, (u64, u64)> = shared
        .space
        .files()
        .into_iter()
        .map(|f| (f.file_id, (f.record_bytes, f.live_bytes)))
        .filter(|(_, v)| *v != (0, 0))
        .collect();
    want.retain(|_, v| *v != (0, 0));
    if got == want {
        Ok(())
    } else {
        let ids: std::collections::BTreeSet<&u32> = got.keys().chain(want.keys()).collect();
        let differ: Vec<String> = ids
            .into_iter()
            .filter(|id| got.get(id) != want.get(id))
            .map(|id| {
                format!(
                    "file {id}: accounted (records, live) {:?}, recounted {:?}",
                    got.get(id),
                    want.get(id)
                )
            })
            .collect();
        Err(differ.join("; "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deltas_add_up_and_ratio() {
        let m = SpaceMap::default();
        let mut d = SpaceDelta::default();
        d.written(1, 100, true);
        d.written(1, 50, false);
        d.written(2, 100, true);
        d.died(1, 100);
        m.apply(d);
        assert_eq!(m.get(1).record_bytes, 150);
        assert_eq!(m.get(1).live_bytes, 0);
        assert_eq!(m.get(1).live_ratio(), 0.0);
        assert_eq!(m.get(2).live_ratio(), 1.0);
        assert_eq!(m.totals(), (250, 100));
        m.forget(1);
        assert_eq!(m.files().len(), 1);
        assert_eq!(m.get(7).live_ratio(), 1.0);
    }
}
