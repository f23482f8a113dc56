//! Model 1: slab append/publish vs a concurrent reader. The reader loads the
//! watermark and reads every record below it; it must never see bytes above
//! the watermark nor a torn record. Under loom every slab byte is a tracked
//! cell, so a read not ordered after its write (e.g. a Relaxed publish) is
//! reported as a data race.
#![cfg(loom)]

use loom::sync::Arc;
use loom::thread;
use silt::slab::{SlabWriter, FILE_HEADER_LEN};

/// Minimal record walk over a copied prefix: key_len at [5..7], val_len at
/// [7..11], header 11 bytes; CRC over everything after the first 4 bytes.
fn records_in(bytes: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos + 11 <= bytes.len() {
        let h = &bytes[pos..];
        let klen = u16::from_le_bytes([h[5], h[6]]) as usize;
        let vlen = u32::from_le_bytes([h[7], h[8], h[9], h[10]]) as usize;
        let end = 11 + klen + vlen;
        assert!(end <= h.len(), "a record crosses the watermark");
        let crc = u32::from_le_bytes([h[0], h[1], h[2], h[3]]);
        assert_eq!(
            crc32fast::hash(&h[4..end]),
            crc,
            "torn record below the watermark"
        );
        out.push((h[11..11 + klen].to_vec(), h[11 + klen..end].to_vec()));
        pos += end;
    }
    out
}

#[test]
fn reader_sees_whole_records_below_the_watermark() {
    loom::model(|| {
        // The smallest slab: header page plus room for a few records.
        let mut w = SlabWriter::new(1, FILE_HEADER_LEN + 128);
        let slab = Arc::clone(w.slab());
        let reader = thread::spawn(move || {
            let mut seen = 0;
            for _ in 0..2 {
                let published = slab.published();
                let body = slab
                    .copy_out(FILE_HEADER_LEN, published - FILE_HEADER_LEN)
                    .expect("bytes below the watermark are readable");
                let recs = records_in(&body);
                assert!(recs.len() >= seen, "records disappeared");
                for (i, (k, v)) in recs.iter().enumerate() {
                    assert_eq!(k, &[b'a' + i as u8]);
                    assert_eq!(v, &[i as u8; 3]);
                }
                seen = recs.len();
                // Nothing above the watermark is readable.
                assert!(slab.copy_out(published, 1).is_none() || slab.published() > published);
            }
        });
        for i in 0..2u8 {
            w.append(1 | 4 | 8, &[b'a' + i], &[i; 3]).unwrap();
            w.publish();
        }
        reader.join().unwrap();
    });
}
