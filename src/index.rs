//! The sharded in-memory index: key → [`Location`] of its newest record.
//!
//! Each entry is 12 bytes: the low 32 bits of the key's xxh3 hash, the file id
//! and the offset of the record. The shard is picked by the top bits of the
//! hash, so an entry effectively matches 32 + `SHARD_BITS` hash bits. Full key
//! bytes live only in the record: every lookup compares them (through the
//! caller's `is_key`), so two keys with equal hashes are both kept and found
//! correctly.
//!
//! Only the writer actor (and recovery, before the writer starts) inserts or
//! removes, so "newest wins" is decided by the order the writer applies
//! durable records.

use crate::sync::{read, write, RwLock};
use hashbrown::HashTable;

const SHARD_BITS: u32 = 6;
const SHARDS: usize = 1 << SHARD_BITS;

/// Where a record lives: which file (slab or segment) and at what offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct Location {
    pub file_id: u32,
    pub offset: u32,
}

#[derive(Clone, Copy)]
struct Entry {
    h32: u32,
    file_id: u32,
    offset: u32,
}

impl Entry {
    fn location(&self) -> Location {
        Location {
            file_id: self.file_id,
            offset: self.offset,
        }
    }
}

/// The table hash hashbrown sees: the 32 stored bits spread over 64, so both
/// the bucket bits (low) and the control bits (top 7) are well mixed. It is
/// derived from the entry alone, so growing a shard never reads a record.
fn table_hash(h32: u32) -> u64 {
    (h32 as u64 | (h32 as u64) << 32).wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

fn split(hash: u64) -> (usize, u32) {
    ((hash >> (64 - SHARD_BITS)) as usize, hash as u32)
}

/// The sharded index.
pub(crate) struct Index {
    shards: Box<[RwLock<HashTable<Entry>>]>,
}

impl std::fmt::Debug for Index {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Index").field("len", &self.len()).finish()
    }
}

impl Default for Index {
    fn default() -> Self {
        Index {
            shards: (0..SHARDS).map(|_| RwLock::new(HashTable::new())).collect(),
        }
    }
}

impl Index {
    pub fn shard_count(&self) -> usize {
        self.shards.len()
    }

    /// The location of the key whose hash is `hash`. `is_key(loc)` must say
    /// whether the record at `loc` holds the key (`Err` if it cannot be read);
    /// the first such error is returned if no candidate matches.
    pub fn get<E>(
        &self,
        hash: u64,
        mut is_key: impl FnMut(Location) -> Result<bool, E>,
    ) -> Result<Option<Location>, E> {
        let (shard, h32) = split(hash);
        let table = read(&self.shards[shard]);
        let mut first_err = None;
        let found = table.find(table_hash(h32), |e| {
            e.h32 == h32
                && match is_key(e.location()) {
                    Ok(hit) => hit,
                    Err(err) => {
                        first_err.get_or_insert(err);
                        false
                    }
                }
        });
        match (found, first_err) {
            (Some(e), _) => Ok(Some(e.location())),
            (None, Some(err)) => Err(err),
            (None, None) => Ok(None),
        }
    }

    /// Points the key at `loc`; returns the location it replaced. `is_key`
    /// says whether an existing entry's record holds the same key.
    pub fn insert(
        &self,
        hash: u64,
        loc: Location,
        mut is_key: impl FnMut(Location) -> bool,
    ) -> Option<Location> {
        let (shard, h32) = split(hash);
        let mut table = write(&self.shards[shard]);
        let th = table_hash(h32);
        if let Some(e) = table.find_mut(th, |e| e.h32 == h32 && is_key(e.location())) {
            let old = e.location();
            e.file_id = loc.file_id;
            e.offset = loc.offset;
            return Some(old);
        }
        table.insert_unique(
            th,
            Entry {
                h32,
                file_id: loc.file_id,
                offset: loc.offset,
            },
            |e| table_hash(e.h32),
        );
        None
    }

    /// Removes the key; returns where it was.
    pub fn remove(&self, hash: u64, mut is_key: impl FnMut(Location) -> bool) -> Option<Location> {
        let (shard, h32) = split(hash);
        let mut table = write(&self.shards[shard]);
        match table.find_entry(table_hash(h32), |e| e.h32 == h32 && is_key(e.location())) {
            Ok(entry) => Some(entry.remove().0.location()),
            Err(_) => None,
        }
    }

    /// Number of live keys.
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| read(s).len()).sum()
    }

    /// A copy of the locations in shard `i` (for scans).
    pub fn shard_locations(&self, i: usize) -> Vec<Location> {
        self.shards
            .get(i)
            .map(|s| read(s).iter().map(Entry::location).collect())
            .unwrap_or_default()
    }

    /// Heap bytes held by the tables: buckets × (entry + control byte).
    pub fn heap_bytes(&self) -> usize {
        self.shards
            .iter()
            .map(|s| {
                let cap = read(s).capacity();
                let buckets = if cap == 0 {
                    0
                } else if cap < 8 {
                    (cap + 1).next_power_of_two()
                } else {
                    (cap / 7 * 8).next_power_of_two()
                };
                buckets * (std::mem::size_of::<Entry>() + 1)
            })
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn loc(file_id: u32, offset: u32) -> Location {
        Location { file_id, offset }
    }

    #[test]
    fn entry_is_twelve_bytes() {
        assert_eq!(std::mem::size_of::<Entry>(), 12);
    }

    /// Two different keys with the same hash must both be stored and found.
    #[test]
    fn hash_collisions_are_resolved_by_key_bytes() {
        let idx = Index::default();
        // "Records": location -> key.
        let mut keys: HashMap<Location, &'static str> = HashMap::new();
        keys.insert(loc(1, 10), "alpha");
        keys.insert(loc(1, 20), "beta");
        keys.insert(loc(1, 30), "alpha");
        fn same(
            want: &'static str,
            keys: &HashMap<Location, &'static str>,
        ) -> impl Fn(Location) -> bool {
            let keys = keys.clone();
            move |l: Location| keys[&l] == want
        }
        let h = 0xdead_beef_0000_0001;
        assert_eq!(idx.insert(h, loc(1, 10), same("alpha", &keys)), None);
        assert_eq!(idx.insert(h, loc(1, 20), same("beta", &keys)), None);
        assert_eq!(idx.len(), 2);
        let ok = |k: &'static str| {
            let s = same(k, &keys);
            move |l| Ok::<_, ()>(s(l))
        };
        assert_eq!(idx.get(h, ok("alpha")), Ok(Some(loc(1, 10))));
        assert_eq!(idx.get(h, ok("beta")), Ok(Some(loc(1, 20))));
        assert_eq!(idx.get(h, ok("gamma")), Ok(None));
        // Overwrite alpha; beta untouched.
        assert_eq!(
            idx.insert(h, loc(1, 30), same("alpha", &keys)),
            Some(loc(1, 10))
        );
        assert_eq!(idx.get(h, ok("alpha")), Ok(Some(loc(1, 30))));
        assert_eq!(idx.remove(h, same("beta", &keys)), Some(loc(1, 20)));
        assert_eq!(idx.get(h, ok("beta")), Ok(None));
        assert_eq!(idx.len(), 1);
    }

    #[test]
    fn read_errors_surface_only_without_a_match() {
        let idx = Index::default();
        idx.insert(5, loc(1, 1), |_| false);
        assert_eq!(idx.get(5, |_| Err::<bool, _>("bad")), Err("bad"));
        assert_eq!(idx.get(6, |_| Err::<bool, _>("bad")), Ok(None));
    }

    #[test]
    fn many_keys_and_memory() {
        let idx = Index::default();
        for i in 0..100_000u64 {
            let h = crate::record::key_hash(&i.to_le_bytes());
            assert_eq!(idx.insert(h, loc(1, i as u32), |_| false), None);
        }
        assert_eq!(idx.len(), 100_000);
        let per_key = idx.heap_bytes() as f64 / 100_000.0;
        assert!(per_key < 40.0, "{per_key} bytes per key");
        let total: usize = (0..idx.shard_count())
            .map(|i| idx.shard_locations(i).len())
            .sum();
        assert_eq!(total, 100_000);
    }
}
