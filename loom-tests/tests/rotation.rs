//! Model 2: rotation. The writer seals slab A and opens slab B; a flush
//! worker turns A into a segment file and swaps it into the registry (the
//! real `Registry::publish_segment`), while a reader that found a location
//! in A reads it through the registry. The reader must get the right value
//! every time: never "file not found" (the swap is one step), never another
//! value (the segment holds A's bytes at the same offsets).
#![cfg(loom)]

use loom::sync::Arc;
use loom::thread;
use silt::registry::{Registry, Source};
use silt::segment::{encode_footer, scan_records, Segment};
use silt::slab::{SlabWriter, FILE_HEADER_LEN};
use std::io::Write;

const PUT_ONE: u8 = 1 | 4 | 8;

#[test]
fn reader_keeps_its_value_through_seal_flush_and_swap() {
    let dir = std::env::temp_dir().join(format!("silt-loom-rotation-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let seg_path = dir.join("00000001.silt");
    let data_dir = dir.clone();
    loom::model(move || {
        let registry = Arc::new(Registry::new(data_dir.clone()));
        let mut a = SlabWriter::new(1, FILE_HEADER_LEN + 64);
        let off = a.append(PUT_ONE, b"k", b"v1").expect("room");
        a.publish();
        registry.insert(1, Source::Slab(a.slab().clone()));
        let len = 11 + 1 + 2;

        // A reader that looked up "k" and got (file 1, off).
        let reader = {
            let registry = registry.clone();
            thread::spawn(move || {
                for _ in 0..2 {
                    let source = registry.get(1).expect("file 1 is never missing");
                    let rec = source.copy_out(off, len).expect("the record is readable");
                    assert_eq!(&rec[11..], b"kv1", "wrong bytes at the location");
                }
            })
        };

        // The writer seals A (no more appends) and opens B.
        let sealed = a.slab().clone();
        drop(a);
        let b = SlabWriter::new(2, FILE_HEADER_LEN + 64);
        registry.insert(2, Source::Slab(b.slab().clone()));

        // A flush worker writes A's bytes, footer and trailer, and swaps.
        let flusher = {
            let (registry, path) = (registry.clone(), seg_path.clone());
            thread::spawn(move || {
                let image = sealed
                    .copy_out(0, sealed.published())
                    .expect("sealed bytes");
                let scan = scan_records(&image, true);
                let (footer_off, tail) = encode_footer(&scan.entries, scan.valid_end);
                let mut file = image;
                file.resize(footer_off, 0);
                file.extend_from_slice(&tail);
                std::fs::File::create(&path)
                    .and_then(|mut f| f.write_all(&file))
                    .expect("write segment");
                let (segment, _) = Segment::open(&path, 1, true).expect("open segment");
                let replaced = registry.publish_segment(Arc::new(segment));
                assert!(matches!(replaced, Some(Source::Slab(_))));
                // The flush's reference to the slab goes; a reader's stays.
                drop(sealed);
            })
        };
        reader.join().unwrap();
        flusher.join().unwrap();
        assert!(matches!(registry.get(1), Some(Source::Segment(_))));
        assert!(matches!(registry.get(2), Some(Source::Slab(_))));
    });
    let _ = std::fs::remove_dir_all(&dir);
}
