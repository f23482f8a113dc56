//! Model 6: an overwrite whose old record the writer could not read
//! without the disk. The writer adds the new entry beside the old one
//! (`Identity::Unknown`) and acknowledges; a resolver later finds the old
//! record holds the same key and removes its entry. A reader that compares
//! keys newest first (as `Db::get` does) must never miss the key, read it
//! whole, and never see the old value once the new one was acknowledged,
//! however the three interleave.
//!
//! Shown able to fail (docs/decisions.md): with the reader taking the
//! oldest matching entry instead of the newest, loom finds an execution
//! where the acknowledged value is undone.
#![cfg(loom)]

use loom::sync::atomic::{AtomicBool, Ordering};
use loom::sync::Arc;
use loom::thread;
use loom_tests::records::{record_at, PUT_ONE};
use silt::index::{Entry, Identity, Index, Location};
use silt::slab::{Slab, SlabWriter, FILE_HEADER_LEN};

/// What a reader finds: the newest entry whose record holds the key.
fn lookup(index: &Index, slab: &Slab, hash: u64) -> Option<Vec<u8>> {
    let mut found: Vec<Entry> = Vec::new();
    index.candidates(hash, |e| found.push(e));
    found.sort_by_key(|e| std::cmp::Reverse(e.loc));
    found
        .into_iter()
        .map(|e| record_at(slab, e.loc))
        .find(|(k, _)| k == b"k")
        .map(|(_, v)| v)
}

#[test]
fn an_unresolved_overwrite_is_never_undone() {
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
        index.apply(hash, Entry::put(old, 15), false, |_| Identity::Different);

        let reader = {
            let (slab, index, acked) = (slab.clone(), index.clone(), acked.clone());
            thread::spawn(move || {
                for _ in 0..2 {
                    let was_acked = acked.load(Ordering::Acquire);
                    let value = lookup(&index, &slab, hash).expect("the key is never missing");
                    assert!(value == b"old" || value == b"new", "{value:?}");
                    if was_acked {
                        assert_eq!(value, b"new", "an acknowledged overwrite was undone");
                    }
                }
            })
        };
        // The writer: the old record is "on disk", so its key is unknown.
        let new = append(&mut w, b"new");
        let applied = index.apply(hash, Entry::put(new, 15), false, |_| Identity::Unknown);
        assert_eq!(applied.unknown.len(), 1);
        acked.store(true, Ordering::Release);
        // The resolver: reads the old key, removes the stale entry.
        let resolver = {
            let (slab, index) = (slab.clone(), index.clone());
            let stale = applied.unknown[0];
            thread::spawn(move || {
                if record_at(&slab, stale.loc).0 == b"k" {
                    assert!(index.remove_at(hash, stale.loc).is_some());
                }
            })
        };
        resolver.join().unwrap();
        reader.join().unwrap();
        let mut left = 0;
        index.candidates(hash, |_| left += 1);
        assert_eq!(left, 1, "the stale entry is gone once resolved");
    });
}
