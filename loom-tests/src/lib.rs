//! Loom models of silt's lock-free parts. Run with
//! `RUSTFLAGS="--cfg loom" cargo test -p loom-tests --release`; without
//! `--cfg loom` this crate is empty.

/// Helpers the models share.
#[cfg(loom)]
pub mod records {
    use silt::index::Location;
    use silt::slab::Slab;

    /// Flags of a put that is a whole atomic group (PUT | BEGIN | END).
    pub const PUT_ONE: u8 = 1 | 4 | 8;

    /// (key, value) of the record at `loc`, read below the watermark, CRC
    /// checked.
    pub fn record_at(slab: &Slab, loc: Location) -> (Vec<u8>, Vec<u8>) {
        let off = loc.offset as usize;
        let head = slab
            .copy_out(off, 11)
            .expect("an indexed record is published");
        let klen = u16::from_le_bytes([head[5], head[6]]) as usize;
        let vlen = u32::from_le_bytes([head[7], head[8], head[9], head[10]]) as usize;
        let rec = slab
            .copy_out(off, 11 + klen + vlen)
            .expect("the whole record is published");
        assert_eq!(
            crc32fast::hash(&rec[4..]),
            u32::from_le_bytes([rec[0], rec[1], rec[2], rec[3]])
        );
        (rec[11..11 + klen].to_vec(), rec[11 + klen..].to_vec())
    }
}
