//! The sharded in-memory index: key → [`Location`] of its newest record.
//!
//! Each entry is 12 bytes: the low 32 bits of the key's xxh3 hash, the file id
//! and the offset of the record. The shard is picked by the top bits of the
//! hash. Full key bytes live only in the record: every lookup compares them
//! (through the caller's `is_key`), so two keys with equal hashes are both
//! kept and found correctly.
//!
//! Shards are deliberately unequal: shard `i` gets a share of the hash space
//! proportional to 2^(i/64). With equal shares every table would double at
//! the same moment and the whole index would swing between 13 and 30 bytes
//! per key; staggered, the shards' load factors spread over a whole doubling
//! and the index stays near 21 bytes per key (docs/decisions.md).
//!
//! Only the writer actor (and recovery, before the writer starts) inserts or
//! removes, so "newest wins" is decided by the order the writer applies
//! durable records.

use crate::sync::{read, write, RwLock};
use hashbrown::HashTable;

#[cfg(not(loom))]
const SHARDS: usize = 64;
/// Under loom every shard lock is a modelled object: keep the model small.
#[cfg(loom)]
const SHARDS: usize = 2;
/// The top `ROUTE_BITS` of a hash pick a slot of the routing table.
const ROUTE_BITS: u32 = 12;

/// slot → shard, with shard `i` owning a run of slots proportional to
/// 2^(i/SHARDS).
fn routing_table() -> Box<[u8]> {
    let slots = 1usize << ROUTE_BITS;
    let weights: Vec<f64> = (0..SHARDS)
        .map(|i| (i as f64 / SHARDS as f64).exp2())
        .collect();
    let total: f64 = weights.iter().sum();
    let mut table = Vec::with_capacity(slots);
    let mut acc = 0.0;
    for (i, w) in weights.iter().enumerate() {
        acc += w;
        let end = if i + 1 == SHARDS {
            slots
        } else {
            (acc / total * slots as f64).round() as usize
        };
        table.resize(end.max(table.len()), i as u8);
    }
    table.into_boxed_slice()
}

/// Where a record lives: which file (slab or segment) and at what offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Location {
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

/// Points the key (whose entry `is_key` recognises) at `loc` in a locked
/// shard; returns the location it replaced. Shared by the writer's inserts
/// and recovery's bulk load.
fn upsert_in(
    table: &mut HashTable<Entry>,
    h32: u32,
    loc: Location,
    mut is_key: impl FnMut(Location) -> bool,
) -> Option<Location> {
    let th = table_hash(h32);
    if let Some(e) = table.find_mut(th, |e| e.h32 == h32 && is_key(e.location())) {
        let old = e.location();
        e.file_id = loc.file_id;
        e.offset = loc.offset;
        return Some(old);
    }
    let entry = Entry {
        h32,
        file_id: loc.file_id,
        offset: loc.offset,
    };
    table.insert_unique(th, entry, |e| table_hash(e.h32));
    None
}

/// Removes the key's entry from a locked shard; returns where it pointed.
fn remove_in(
    table: &mut HashTable<Entry>,
    h32: u32,
    mut is_key: impl FnMut(Location) -> bool,
) -> Option<Location> {
    match table.find_entry(table_hash(h32), |e| e.h32 == h32 && is_key(e.location())) {
        Ok(entry) => Some(entry.remove().0.location()),
        Err(_) => None,
    }
}

/// The sharded index.
pub struct Index {
    shards: Box<[RwLock<HashTable<Entry>>]>,
    route: Box<[u8]>,
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
            route: routing_table(),
        }
    }
}

impl Index {
    pub fn shard_count(&self) -> usize {
        self.shards.len()
    }

    /// The shard of a key hash.
    pub fn shard_of(&self, hash: u64) -> usize {
        self.route[(hash >> (64 - ROUTE_BITS)) as usize] as usize
    }

    fn split(&self, hash: u64) -> (usize, u32) {
        (self.shard_of(hash), hash as u32)
    }

    /// Applies `(hash, location, is_delete)` changes, all of shard `i`, in
    /// order, under one lock, after sizing the table once (recovery).
    /// `same(old, new)` says whether two locations hold the same key; the
    /// locations that were superseded are returned (for space accounting).
    pub fn load_shard(
        &self,
        i: usize,
        changes: &[(u64, Location, bool)],
        mut same: impl FnMut(Location, Location) -> bool,
    ) -> Vec<Location> {
        let Some(shard) = self.shards.get(i) else {
            return Vec::new();
        };
        let mut table = write(shard);
        table.reserve(changes.len(), |e| table_hash(e.h32));
        let mut superseded = Vec::new();
        for &(hash, loc, delete) in changes {
            let is_key = |old: Location| same(old, loc);
            let old = if delete {
                remove_in(&mut table, hash as u32, is_key)
            } else {
                upsert_in(&mut table, hash as u32, loc, is_key)
            };
            superseded.extend(old);
        }
        superseded
    }

    /// The location of the key whose hash is `hash`. `is_key(loc)` must say
    /// whether the record at `loc` holds the key (`Err` if it cannot be read);
    /// the first such error is returned if no candidate matches.
    pub fn get<E>(
        &self,
        hash: u64,
        mut is_key: impl FnMut(Location) -> Result<bool, E>,
    ) -> Result<Option<Location>, E> {
        let (shard, h32) = self.split(hash);
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
        let (shard, h32) = self.split(hash);
        upsert_in(&mut write(&self.shards[shard]), h32, loc, &mut is_key)
    }

    /// Moves the key from `from` to `to` only if it still points at `from`
    /// (GC's compare-and-swap); returns whether it did.
    pub fn replace(&self, hash: u64, from: Location, to: Location) -> bool {
        let (shard, h32) = self.split(hash);
        let mut table = write(&self.shards[shard]);
        match table.find_mut(table_hash(h32), |e| e.h32 == h32 && e.location() == from) {
            Some(e) => {
                e.file_id = to.file_id;
                e.offset = to.offset;
                true
            }
            None => false,
        }
    }

    /// Removes the key; returns where it was.
    pub fn remove(&self, hash: u64, mut is_key: impl FnMut(Location) -> bool) -> Option<Location> {
        let (shard, h32) = self.split(hash);
        remove_in(&mut write(&self.shards[shard]), h32, &mut is_key)
    }

    /// Number of live keys.
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| read(s).len()).sum()
    }

    /// A copy of the locations in shard `i` (for scans), calling `visit` on
    /// each location while the shard is still locked: a location seen there is current,
    /// so its file is still registered (GC and eviction move or remove
    /// entries before they drop a file) and can be pinned.
    pub fn shard_locations_with(&self, i: usize, mut visit: impl FnMut(Location)) -> Vec<Location> {
        let Some(shard) = self.shards.get(i) else {
            return Vec::new();
        };
        let table = read(shard);
        table
            .iter()
            .map(|e| {
                visit(e.location());
                e.location()
            })
            .collect()
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

    /// Recovery's bulk load: same-hash different keys both kept, later
    /// records of one key win, deletes remove only their own key.
    #[test]
    fn load_shard_resolves_collisions_and_order() {
        let idx = Index::default();
        let h = 0x1234_5678_9abc_def0u64;
        let i = idx.shard_of(h);
        // Locations 10 and 30 hold "alpha", 20 and 40 hold "beta".
        let key = |l: Location| if l.offset % 20 == 10 { "alpha" } else { "beta" };
        let changes = [
            (h, loc(1, 10), false),
            (h, loc(1, 20), false),
            (h, loc(2, 30), false),
            (h, loc(2, 40), true),
        ];
        idx.load_shard(i, &changes, |a, b| key(a) == key(b));
        let find = |k: &'static str| idx.get(h, |l| Ok::<_, ()>(key(l) == k)).unwrap();
        assert_eq!(find("alpha"), Some(loc(2, 30)));
        assert_eq!(find("beta"), None);
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
            .map(|i| idx.shard_locations_with(i, |_| {}).len())
            .sum();
        assert_eq!(total, 100_000);
    }

    #[test]
    fn routing_spreads_shards_from_one_to_two() {
        let t = routing_table();
        assert_eq!(t.len(), 1 << ROUTE_BITS);
        let count = |i: u8| t.iter().filter(|&&s| s == i).count();
        let (first, last) = (count(0), count(SHARDS as u8 - 1));
        assert!(first > 30 && last > first, "{first} {last}");
        assert!(
            (last as f64 / first as f64 - 2.0).abs() < 0.2,
            "{first} {last}"
        );
        assert!(t.windows(2).all(|w| w[0] <= w[1]));
    }

    /// Index memory stays under 24 bytes per key at every size, not only
    /// right before the tables double (DESIGN §7 target).
    #[test]
    fn memory_per_key_stays_under_target_while_growing() {
        let idx = Index::default();
        let mut worst: f64 = 0.0;
        for i in 0..1_000_000u64 {
            let h = crate::record::key_hash(&i.to_le_bytes());
            idx.insert(h, loc(1, i as u32), |_| false);
            if i >= 50_000 && i % 25_000 == 0 {
                worst = worst.max(idx.heap_bytes() as f64 / i as f64);
            }
        }
        assert!(worst <= 24.0, "worst {worst:.1} bytes per key");
        let total: usize = (0..idx.shard_count())
            .map(|i| idx.shard_locations_with(i, |_| {}).len())
            .sum();
        assert_eq!(total, 1_000_000);
    }
}
