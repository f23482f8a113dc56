//! The keys a case writes: plain ones, and two pairs of different keys
//! whose index slots collide (same shard, same stored hash bits), so the
//! writer, GC, scans and followers must tell keys apart by their records.

use bytes::Bytes;
use std::collections::HashMap;
use std::sync::OnceLock;

use crate::case::{KEYS, PLAIN_KEYS};

/// Key `i` of every case.
pub fn key(i: u8) -> Bytes {
    static ALL: OnceLock<Vec<Bytes>> = OnceLock::new();
    ALL.get_or_init(build)[i as usize].clone()
}

fn build() -> Vec<Bytes> {
    let mut keys: Vec<Bytes> = (0..PLAIN_KEYS)
        .map(|i| Bytes::from(format!("k{i:02}")))
        .collect();
    let index = silt::internals::Index::default();
    let mut seen: HashMap<(usize, u32), u32> = HashMap::new();
    let mut n = 0u32;
    while keys.len() < KEYS as usize {
        let name = format!("collide-{n}");
        let slot = index.slot(silt::internals::key_hash(name.as_bytes()));
        if let Some(other) = seen.insert(slot, n) {
            keys.push(Bytes::from(format!("collide-{other}")));
            keys.push(Bytes::from(name));
            seen.clear();
        }
        n += 1;
    }
    keys
}

#[test]
fn the_colliding_keys_share_a_slot() {
    let index = silt::internals::Index::default();
    let slot = |i: u8| index.slot(silt::internals::key_hash(&key(i)));
    for pair in [PLAIN_KEYS, PLAIN_KEYS + 2] {
        assert_ne!(key(pair), key(pair + 1));
        assert_eq!(slot(pair), slot(pair + 1));
    }
}
