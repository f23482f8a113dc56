//! Model 6: an overwrite whose old record was compared before the write
//! was appended (by the writer where it was in memory, else by the
//! caller's read; `writer::decide`), applied while cache-mode eviction
//! removes the old entry and a reader looks the key up. However the three
//! interleave, the reader never finds two entries of the key, reads the
//! old or the new value whole (or nothing once the old file is evicted),
//! never the old one once the new one was acknowledged, and the key ends
//! with one entry: the new one.
//!
//! Shown able to fail: with the writer applying without the decision
//! (`|_| false`, the old entry taken for another key's), loom finds the
//! execution that leaves two entries.
#![cfg(loom)]

use loom::sync::atomic::{AtomicBool, Ordering};
use loom::sync::Arc;
use loom::thread;
use loom_tests::records::{record_at, PUT_ONE};
use silt::index::{Entry, Index, Location};
use silt::slab::{Slab, SlabWriter, FILE_HEADER_LEN};

/// The entries whose record holds the key.
fn entries_of_k(index: &Index, slab: &Slab, hash: u64) -> Vec<Entry> {
    let mut found = Vec::new();
    index.candidates(hash, |e| {
        if record_at(slab, e.loc).0 == b"k" {
            found.push(e);
        }
    });
    found
}

#[test]
fn an_overwrite_leaves_one_entry_whatever_races_it() {
    loom::model(|| {
        let mut w = SlabWriter::new(1, FILE_HEADER_LEN + 128);
        let slab = Arc::clone(w.slab());
        let index = Arc::new(Index::default());
        let acked = Arc::new(AtomicBool::new(false));
        let hash = 0x5eed_u64;
        let append = |w: &mut SlabWriter, value: &[u8]| {
            let off = w.append(PUT_ONE, b"k", value).expect("room");
            w.publish();
            Location {
                file_id: 1,
                offset: off as u32,
            }
        };
        let old = append(&mut w, b"old");
        index.apply(hash, Some(Entry::put(old, 15)), |_| false);

        let reader = {
            let (slab, index, acked) = (slab.clone(), index.clone(), acked.clone());
            thread::spawn(move || {
                for _ in 0..2 {
                    let was_acked = acked.load(Ordering::Acquire);
                    let found = entries_of_k(&index, &slab, hash);
                    assert!(found.len() <= 1, "two entries of one key: {found:?}");
                    if let Some(e) = found.first() {
                        let value = record_at(&slab, e.loc).1;
                        assert!(value == b"old" || value == b"new", "{value:?}");
                        if was_acked {
                            assert_eq!(value, b"new", "an acknowledged overwrite was undone");
                        }
                    } else {
                        assert!(!was_acked, "an acknowledged put is missing");
                    }
                }
            })
        };
        let evictor = {
            let index = index.clone();
            thread::spawn(move || {
                index.remove_at(hash, old);
            })
        };
        // The writer: decided before appending that `old` holds the key.
        let new = append(&mut w, b"new");
        index.apply(hash, Some(Entry::put(new, 15)), |e| e.loc == old);
        acked.store(true, Ordering::Release);
        evictor.join().unwrap();
        reader.join().unwrap();
        let left = entries_of_k(&index, &slab, hash);
        assert_eq!(left.len(), 1, "{left:?}");
        assert_eq!(left[0].loc, new);
    });
}
