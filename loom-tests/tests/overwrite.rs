//! Model 4: two writes of one key and a concurrent reader, over the real
//! slab and index. The writer does what the writer task does for each
//! write: append, publish, then point the index at the record (and only
//! then acknowledge). The reader must always find the key, read the old or
//! the new value whole, and never the old one once the new one was
//! acknowledged.
#![cfg(loom)]

use loom::sync::atomic::{AtomicBool, Ordering};
use loom::sync::Arc;
use loom::thread;
use loom_tests::records::{record_at, PUT_ONE};
use silt::index::{Entry, Index, Location};
use silt::slab::{SlabWriter, FILE_HEADER_LEN};

#[test]
fn overwrite_is_seen_whole_and_never_undone() {
    loom::model(|| {
        let mut w = SlabWriter::new(1, FILE_HEADER_LEN + 128);
        let slab = Arc::clone(w.slab());
        let index = Arc::new(Index::default());
        let acked = Arc::new(AtomicBool::new(false));
        let hash = 0x5eed_u64;
        let put = |w: &mut SlabWriter, index: &Index, value: &[u8]| {
            let off = w.append(PUT_ONE, b"k", value).expect("room");
            w.publish();
            let slab = w.slab();
            let loc = Location {
                file_id: 1,
                offset: off as u32,
            };
            index.apply(
                hash,
                Some(Entry::put(loc, 11 + 1 + value.len() as u64)),
                |old| record_at(slab, old.loc).0 == b"k",
            );
        };
        put(&mut w, &index, b"old");

        let reader = {
            let (slab, index, acked) = (slab.clone(), index.clone(), acked.clone());
            thread::spawn(move || {
                for _ in 0..2 {
                    let was_acked = acked.load(Ordering::Acquire);
                    let mut found = None;
                    index.candidates(hash, |e| {
                        if record_at(&slab, e.loc).0 == b"k" {
                            found = Some(e.loc);
                        }
                    });
                    let loc = found.expect("the key is never missing");
                    let value = record_at(&slab, loc).1;
                    assert!(value == b"old" || value == b"new", "{value:?}");
                    if was_acked {
                        assert_eq!(value, b"new", "an acknowledged overwrite was undone");
                    }
                }
            })
        };
        put(&mut w, &index, b"new");
        acked.store(true, Ordering::Release);
        reader.join().unwrap();
    });
}
