//! The sharded in-memory index: key → [`Entry`] of its newest record.
//!
//! Each entry is 12 bytes: 26 bits of the key's xxh3 hash, the file id,
//! the record's offset (31 bits) and a 7-bit [`LenClass`] (a bound on the
//! record's length, so a read of a record that is not in memory is one
//! I/O of about its size; six bits beside the hash, one above the offset).
//! The shard is picked by the top bits of the hash. Full key bytes live
//! only in the record: a lookup compares them, so two keys with equal
//! hashes are both kept and found correctly.
//!
//! Shards are deliberately unequal: shard `i` gets a share of the hash space
//! proportional to 2^(i/64). With equal shares every table would double at
//! the same moment and the whole index would swing between 13 and 30 bytes
//! per key; staggered, the shards' load factors spread over a whole doubling
//! and the index stays near 21 bytes per key (docs/decisions.md).
//!
//! **One entry per key, always.** A key's entry is its newest record if
//! that is a put, and a key whose newest record is a delete has none. Only
//! the writer actor (and recovery, before the writer starts) inserts, and
//! it replaces a key's entry only once it knows which entries with the
//! key's hash bits hold the key: where a record is not in memory, the
//! writer hands the write back to its caller, whose task reads the record
//! and sends the write again with what it found (`crate::writer::Facts`).
//! So readers, GC, scans, followers and space accounting never meet a key
//! with two entries or an entry that hides another.

use crate::sync::{read, write, RwLock};
use hashbrown::HashTable;

#[cfg(not(loom))]
const SHARDS: usize = 64;
/// Under loom every shard lock is a modelled object: keep the model small.
#[cfg(loom)]
const SHARDS: usize = 2;
/// The top `ROUTE_BITS` of a hash pick a slot of the routing table.
const ROUTE_BITS: u32 = 12;
/// The low bits of an entry's tag hold six bits of its [`LenClass`]; the
/// rest are hash.
const CLASS_BITS: u32 = 6;
const CLASS_MASK: u32 = (1 << CLASS_BITS) - 1;
/// Classes are 7 bits: the seventh is bit 31 of the offset field.
const CLASS_LIMIT: u8 = 127;
/// Records start below 2 GiB: a slab is at most 1 GiB, and a write with a
/// file of its own is refused if one of its records would start past
/// [`MAX_RECORD_OFFSET`] (the segment footer keeps 31 offset bits too).
/// That leaves the top bit of the offset field for the length class.
const CLASS_HIGH_BIT: u32 = 1 << 31;
const OFFSET_MASK: u32 = CLASS_HIGH_BIT - 1;
/// The largest offset at which a record may start.
pub const MAX_RECORD_OFFSET: u32 = OFFSET_MASK;

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
/// Ordered by file id, then offset: the order records were written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Location {
    pub file_id: u32,
    pub offset: u32,
}

/// A record's length rounded up to one of 127 sizes: 64-byte steps up to
/// 512 bytes, then eight steps per doubling (at most 12.5 % over) up to
/// 15 MiB. Longer records (and unknown lengths) are [`LenClass::UNKNOWN`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LenClass(u8);

impl LenClass {
    /// No bound known: read the record's header first.
    pub const UNKNOWN: LenClass = LenClass(CLASS_LIMIT);

    /// The smallest class whose bound holds `len` bytes.
    pub fn of(len: u64) -> LenClass {
        if len <= 512 {
            return LenClass(len.div_ceil(64).saturating_sub(1) as u8);
        }
        // 2^p < len <= 2^(p+1): the bounds of that doubling are 9 to 16
        // times 2^(p-3).
        let p = 63 - (len - 1).leading_zeros() as u64;
        let q = len.div_ceil(1 << (p - 3));
        let class = 8 + 8 * (p - 9) + (q - 9);
        if class >= u64::from(CLASS_LIMIT) {
            LenClass::UNKNOWN
        } else {
            LenClass(class as u8)
        }
    }

    /// The most bytes a record of this class has (`None`: unknown).
    pub fn bound(self) -> Option<u64> {
        let c = u64::from(self.0);
        match c {
            0..=7 => Some(64 * (c + 1)),
            _ if self == LenClass::UNKNOWN => None,
            _ => {
                let (e, m) = ((c - 8) / 8, (c - 8) % 8);
                Some((9 + m) << (e + 6))
            }
        }
    }
}

/// An index entry: where a key's newest record is, and a bound on its
/// length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    pub loc: Location,
    pub class: LenClass,
}

impl Entry {
    /// The entry of a record of `len` bytes at `loc`.
    pub fn put(loc: Location, len: u64) -> Entry {
        Entry {
            loc,
            class: LenClass::of(len),
        }
    }
}

/// Whether an entry's record holds a given key, as far as the writer can
/// tell without waiting for the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Identity {
    Same,
    Different,
    /// The record is not in memory.
    Unknown,
}

#[derive(Clone, Copy)]
struct Packed {
    tag: u32,
    file_id: u32,
    offset: u32,
}

impl Packed {
    fn new(hash: u64, e: Entry) -> Packed {
        let class = u32::from(e.class.0);
        Packed {
            tag: (hash as u32 & !CLASS_MASK) | (class & CLASS_MASK),
            file_id: e.loc.file_id,
            offset: (e.loc.offset & OFFSET_MASK)
                | if class > CLASS_MASK {
                    CLASS_HIGH_BIT
                } else {
                    0
                },
        }
    }

    fn location(&self) -> Location {
        Location {
            file_id: self.file_id,
            offset: self.offset & OFFSET_MASK,
        }
    }

    fn entry(&self) -> Entry {
        let high = if self.offset & CLASS_HIGH_BIT != 0 {
            CLASS_MASK + 1
        } else {
            0
        };
        Entry {
            loc: self.location(),
            class: LenClass(((self.tag & CLASS_MASK) | high) as u8),
        }
    }

    fn hash_bits(&self) -> u32 {
        self.tag & !CLASS_MASK
    }
}

/// The table hash hashbrown sees: the stored hash bits spread over 64, so
/// both the bucket bits (low) and the control bits (top 7) are well mixed.
/// It is derived from the entry alone, so growing a shard never reads a
/// record.
fn table_hash(bits: u32) -> u64 {
    (bits as u64 | (bits as u64) << 32).wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

#[derive(Default)]
struct Shard {
    table: HashTable<Packed>,
}

impl Shard {
    /// Entries with these hash bits.
    fn matching(&self, bits: u32) -> impl Iterator<Item = &Packed> {
        self.table
            .iter_hash(table_hash(bits))
            .filter(move |p| p.hash_bits() == bits)
    }

    fn insert(&mut self, bits: u32, p: Packed) {
        self.table
            .insert_unique(table_hash(bits), p, |e| table_hash(e.hash_bits()));
    }

    /// Removes the entry at `loc` with these hash bits.
    fn remove_at(&mut self, bits: u32, loc: Location) -> Option<Entry> {
        match self.table.find_entry(table_hash(bits), |p| {
            p.hash_bits() == bits && p.location() == loc
        }) {
            Ok(found) => Some(found.remove().0.entry()),
            Err(_) => None,
        }
    }
}

/// The sharded index.
pub struct Index {
    shards: Box<[RwLock<Shard>]>,
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
            shards: (0..SHARDS).map(|_| RwLock::new(Shard::default())).collect(),
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

    /// The shard of `hash` and the hash bits its entries keep.
    #[cfg(any(fuzzing, feature = "bench-internals"))]
    pub fn slot(&self, hash: u64) -> (usize, u32) {
        (self.shard_of(hash), hash as u32 & !CLASS_MASK)
    }

    fn split(&self, hash: u64) -> (&RwLock<Shard>, u32) {
        (&self.shards[self.shard_of(hash)], hash as u32 & !CLASS_MASK)
    }

    /// Calls `visit` with every entry that may be the key's (same hash
    /// bits), under the shard's read lock: `visit` must not block.
    pub fn candidates(&self, hash: u64, mut visit: impl FnMut(Entry)) {
        let (shard, bits) = self.split(hash);
        // `find` that never matches walks the same probe sequence as
        // `iter_hash`, with less iterator machinery on the hot path.
        read(shard).table.find(table_hash(bits), |p| {
            if p.hash_bits() == bits {
                visit(p.entry());
            }
            false
        });
    }

    /// The entry at `loc` if the index still has it under `hash` (GC's and
    /// eviction's liveness check: a location is unique, no key is read).
    pub fn entry_at(&self, hash: u64, loc: Location) -> Option<Entry> {
        let (shard, bits) = self.split(hash);
        let shard = read(shard);
        let found = shard
            .matching(bits)
            .find(|p| p.location() == loc)
            .map(Packed::entry);
        found
    }

    /// Applies `(hash, entry, is_delete)` changes, all of shard `i`, in
    /// order, under one lock, after sizing the table once (recovery).
    /// `same(old, new)` says whether two locations hold the same key; the
    /// locations that were superseded are returned (for space accounting).
    pub fn load_shard(
        &self,
        i: usize,
        changes: &[(u64, Entry, bool)],
        mut same: impl FnMut(Location, Location) -> bool,
    ) -> Vec<Location> {
        let Some(shard) = self.shards.get(i) else {
            return Vec::new();
        };
        let mut shard = write(shard);
        shard
            .table
            .reserve(changes.len(), |e| table_hash(e.hash_bits()));
        let mut superseded = Vec::new();
        for &(hash, entry, delete) in changes {
            let bits = hash as u32 & !CLASS_MASK;
            let old = shard
                .matching(bits)
                .map(Packed::location)
                .find(|&old| same(old, entry.loc));
            if let Some(old) = old {
                shard.remove_at(bits, old);
                superseded.push(old);
            }
            if !delete {
                shard.insert(bits, Packed::new(hash, entry));
            }
        }
        superseded
    }

    /// Applies a write of a key whose hash is `hash`: the entries `same`
    /// says hold the key are removed (and returned), and `new` (a put's
    /// entry; `None` for a delete) is added. `same` must know every entry
    /// with the key's hash bits: the writer decided them before the write
    /// was appended (see the module docs).
    pub fn apply(
        &self,
        hash: u64,
        new: Option<Entry>,
        mut same: impl FnMut(Entry) -> bool,
    ) -> Vec<Entry> {
        let (shard, bits) = self.split(hash);
        let mut shard = write(shard);
        let removed: Vec<Entry> = shard
            .matching(bits)
            .map(Packed::entry)
            .filter(|&e| same(e))
            .collect();
        for e in &removed {
            shard.remove_at(bits, e.loc);
        }
        if let Some(new) = new {
            shard.insert(bits, Packed::new(hash, new));
        }
        removed
    }

    /// GC's compare-and-swap: points the key from `from` to `to` if its
    /// entry is still at `from` (a key has one entry, so no other can hold
    /// it); returns whether it did.
    pub fn relocate(&self, hash: u64, from: Location, to: Entry) -> bool {
        let (shard, bits) = self.split(hash);
        let mut shard = write(shard);
        if shard.remove_at(bits, from).is_none() {
            return false;
        }
        shard.insert(bits, Packed::new(hash, to));
        true
    }

    /// Removes the entry at `loc` (eviction, a follower dropping a file);
    /// returns it if it was there.
    pub fn remove_at(&self, hash: u64, loc: Location) -> Option<Entry> {
        let (shard, bits) = self.split(hash);
        write(shard).remove_at(bits, loc)
    }

    /// Number of entries: the live keys.
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| read(s).table.len()).sum()
    }

    /// A copy of the entries of shard `i` (for scans),
    /// calling `visit` on each while the shard is still locked: an entry
    /// seen there is current, so its file is still registered (GC and
    /// eviction move or remove entries before they drop a file) and can be
    /// pinned.
    pub fn shard_entries(&self, i: usize, mut visit: impl FnMut(Entry)) -> Vec<Entry> {
        let Some(shard) = self.shards.get(i) else {
            return Vec::new();
        };
        let shard = read(shard);
        shard
            .table
            .iter()
            .map(|p| {
                let e = p.entry();
                visit(e);
                e
            })
            .collect()
    }

    /// Heap bytes held by the tables: buckets × (entry + control byte).
    pub fn heap_bytes(&self) -> usize {
        self.shards
            .iter()
            .map(|s| {
                let cap = read(s).table.capacity();
                let buckets = if cap == 0 {
                    0
                } else if cap < 8 {
                    (cap + 1).next_power_of_two()
                } else {
                    (cap / 7 * 8).next_power_of_two()
                };
                buckets * (std::mem::size_of::<Packed>() + 1)
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

    fn put(l: Location) -> Entry {
        Entry::put(l, 100)
    }

    /// The entry whose "record" (`keys`) holds `key`, as a reader finds
    /// it: every candidate compared.
    fn lookup(idx: &Index, h: u64, keys: &HashMap<Location, &str>, key: &str) -> Option<Entry> {
        let mut found = Vec::new();
        idx.candidates(h, |e| found.push(e));
        let mine: Vec<Entry> = found.into_iter().filter(|e| keys[&e.loc] == key).collect();
        assert!(mine.len() <= 1, "{key} has {} entries", mine.len());
        mine.first().copied()
    }

    fn holds<'a>(
        keys: &'a HashMap<Location, &str>,
        key: &'a str,
    ) -> impl FnMut(Entry) -> bool + 'a {
        move |e| keys[&e.loc] == key
    }

    #[test]
    fn entry_is_twelve_bytes() {
        assert_eq!(std::mem::size_of::<Packed>(), 12);
    }

    #[test]
    fn length_classes_bound_every_length_tightly() {
        let mut prev = 0;
        for len in (1..5000).chain((5000..=15 << 20).step_by(997)) {
            let c = LenClass::of(len);
            let bound = c.bound().expect("classed");
            assert!(bound >= len, "{len} → {bound}");
            assert!(bound <= (len + len / 8).max(len + 63), "{len} → {bound}");
            assert!(c.0 >= prev, "classes grow with the length");
            prev = c.0;
        }
        assert_eq!(LenClass::of(15 << 20).bound(), Some(15 << 20));
        assert_eq!(LenClass::of((15 << 20) + 1), LenClass::UNKNOWN);
        assert_eq!(LenClass::of(u32::MAX as u64 * 2), LenClass::UNKNOWN);
        assert_eq!(LenClass::UNKNOWN.bound(), None);
        // A 64 KiB value's record reads at most 72 KiB, a 4 KiB one 4.5.
        assert_eq!(LenClass::of(65_536 + 27).bound(), Some(72 << 10));
        assert_eq!(LenClass::of(4096 + 24).bound(), Some(4608));
    }

    #[test]
    fn packing_keeps_location_and_class() {
        for len in [70_000, 100, 10 << 20, 1 << 40] {
            for offset in [0, (1 << 30) + 4096, MAX_RECORD_OFFSET] {
                let e = Entry {
                    loc: loc(u32::MAX, offset),
                    class: LenClass::of(len),
                };
                let p = Packed::new(0xffff_ffff_ffff_ffff, e);
                assert_eq!(p.entry(), e);
                assert_eq!(p.hash_bits(), !CLASS_MASK);
            }
        }
    }

    /// Two different keys with the same hash must both be stored and found.
    #[test]
    fn hash_collisions_are_resolved_by_key_bytes() {
        let idx = Index::default();
        let mut keys: HashMap<Location, &'static str> = HashMap::new();
        keys.insert(loc(1, 10), "alpha");
        keys.insert(loc(1, 20), "beta");
        keys.insert(loc(1, 30), "alpha");
        keys.insert(loc(1, 40), "beta");
        let h = 0xdead_beef_0000_0001;
        let removed = idx.apply(h, Some(put(loc(1, 10))), holds(&keys, "alpha"));
        assert!(removed.is_empty());
        idx.apply(h, Some(put(loc(1, 20))), holds(&keys, "beta"));
        assert_eq!(idx.len(), 2);
        assert_eq!(lookup(&idx, h, &keys, "alpha").unwrap().loc, loc(1, 10));
        assert_eq!(lookup(&idx, h, &keys, "beta").unwrap().loc, loc(1, 20));
        assert_eq!(lookup(&idx, h, &keys, "gamma"), None);
        // Overwrite alpha; beta untouched.
        let removed = idx.apply(h, Some(put(loc(1, 30))), holds(&keys, "alpha"));
        assert_eq!(removed, vec![put(loc(1, 10))]);
        assert_eq!(lookup(&idx, h, &keys, "alpha").unwrap().loc, loc(1, 30));
        // Delete beta: its entry goes, nothing is added.
        let removed = idx.apply(h, None, holds(&keys, "beta"));
        assert_eq!(removed, vec![put(loc(1, 20))]);
        assert_eq!(lookup(&idx, h, &keys, "beta"), None);
        assert_eq!(idx.len(), 1);
    }

    #[test]
    fn relocation_moves_only_a_current_entry() {
        let idx = Index::default();
        let h = 77;
        let keys: HashMap<Location, &str> = [(loc(1, 10), "k"), (loc(2, 10), "k")].into();
        idx.apply(h, Some(put(loc(1, 10))), |_| false);
        let to = put(loc(9, 10));
        // A newer write replaced the moved record: the move finds nothing.
        idx.apply(h, Some(put(loc(2, 10))), holds(&keys, "k"));
        assert!(!idx.relocate(h, loc(1, 10), to));
        assert!(idx.entry_at(h, loc(1, 10)).is_none());
        // The current entry moves.
        assert!(idx.relocate(h, loc(2, 10), to));
        assert_eq!(idx.entry_at(h, loc(9, 10)), Some(to));
        assert!(!idx.relocate(h, loc(2, 10), to));
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
            (h, put(loc(1, 10)), false),
            (h, put(loc(1, 20)), false),
            (h, put(loc(2, 30)), false),
            (h, put(loc(2, 40)), true),
        ];
        let superseded = idx.load_shard(i, &changes, |a, b| key(a) == key(b));
        assert_eq!(superseded, vec![loc(1, 10), loc(1, 20)]);
        let mut found = Vec::new();
        idx.candidates(h, |e| found.push(e.loc));
        assert_eq!(found, vec![loc(2, 30)]);
        assert_eq!(idx.len(), 1);
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
            idx.apply(h, Some(put(loc(1, i as u32))), |_| false);
            if i >= 50_000 && i % 25_000 == 0 {
                worst = worst.max(idx.heap_bytes() as f64 / i as f64);
            }
        }
        assert!(worst <= 24.0, "worst {worst:.1} bytes per key");
        let total: usize = (0..idx.shard_count())
            .map(|i| idx.shard_entries(i, |_| {}).len())
            .sum();
        assert_eq!(total, 1_000_000);
        assert_eq!(idx.len(), 1_000_000);
    }
}
