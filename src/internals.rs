//! See the module docs in lib.rs: fuzz and micro-benchmark entry points.

use crate::index::Location;

/// Decodes `data` as a record; checks the parts of an Ok result.
pub fn fuzz_record(data: &[u8]) {
    if let Ok(h) = crate::record::decode(data) {
        assert!(h.record_len() <= data.len());
        assert_eq!(crate::record::key_of(&h, data).len(), h.key_len as usize);
    }
}

/// Parses `data` as a segment file (trailer, footer) and scans its
/// records, with and without CRC checks.
pub fn fuzz_segment_image(data: &[u8]) {
    if let Ok(f) = crate::segment::decode_footer(data) {
        assert!(f.data_end <= data.len());
        for e in &f.entries {
            assert!(e.offset as usize + e.len as usize <= f.data_end);
        }
    }
    for verify in [true, false] {
        let s = crate::segment::scan_records(data, verify);
        assert!(s.valid_end <= data.len().max(crate::slab::FILE_HEADER_LEN));
    }
}

/// Fills `dir/data` with up to four files made from `data`, then opens a
/// store there, scans it and reads every key it found: every input must
/// end in Ok or an `Error`, never a panic. `dir` must be empty. Returns
/// the pairs the scan yielded if the store opened.
///
/// Input: files of `[selector][len lo][len hi][bytes…]`. The selector picks
/// the name (segment, log, junk, the largest id, an id past `u32`, an
/// unpadded id, id 0) and whether the bytes follow an intact file header,
/// one with a byte flipped, or none.
///
/// The harness panics (`expect`) only when the test machine cannot make
/// the directory, write a file or start a runtime: set-up failures, not
/// findings. Not part of the public API.
pub fn fuzz_open_dir(dir: &std::path::Path, data: &[u8]) -> Option<usize> {
    let data_dir = dir.join("data");
    std::fs::create_dir_all(&data_dir).expect("make the data directory");
    let mut rest = data;
    for i in 1..=4u32 {
        let [sel, lo, hi, tail @ ..] = rest else {
            break;
        };
        let len = (u16::from_le_bytes([*lo, *hi]) as usize).min(tail.len());
        let (name, id) = match sel % 8 {
            0 => (format!("{i:08}.silt"), i),
            1 => (format!("{i:08}.log"), i),
            2 => (format!("{i}.junk"), i),
            3 => (
                format!("{}.{}", u32::MAX, ["log", "silt"][i as usize % 2]),
                u32::MAX,
            ),
            4 => ("4294967296.log".to_string(), 0),
            5 => (format!("{i}.silt"), i),
            6 => ("00000000.log".to_string(), 0),
            _ => (format!("{:08}.log", i + 4), i + 4),
        };
        let mut bytes = Vec::new();
        match (sel >> 3) % 3 {
            // An intact header, then the bytes.
            0 => {
                let mut page = vec![0u8; crate::slab::FILE_HEADER_LEN];
                crate::slab::encode_file_header(&mut page, id);
                bytes.extend_from_slice(&page);
            }
            // A header with one byte flipped (where, from the length).
            1 => {
                let mut page = vec![0u8; crate::slab::FILE_HEADER_LEN];
                crate::slab::encode_file_header(&mut page, id);
                page[*lo as usize % 24] ^= 1 << (*hi % 8);
                bytes.extend_from_slice(&page);
            }
            _ => {}
        }
        bytes.extend_from_slice(&tail[..len]);
        std::fs::write(data_dir.join(name), &bytes).expect("write a data file");
        rest = &tail[len..];
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    rt.block_on(async {
        let db = crate::Db::builder(dir)
            .slab_size(64 * 1024)
            .open()
            .await
            .ok()?;
        use futures::StreamExt as _;
        let _ = db.stats();
        let mut pairs = 0;
        let mut s = Box::pin(db.scan());
        while let Some(item) = s.next().await {
            if let Ok((k, _)) = item {
                pairs += 1;
                let _ = db.get(&k).await;
            }
        }
        drop(s);
        let _ = db.close().await;
        Some(pairs)
    })
}

/// Bytes a put record of these sizes takes.
pub fn record_len(key: usize, value: usize) -> usize {
    crate::record::encoded_len(key, value)
}

/// Encodes a put record into `out` (exactly `record_len` bytes).
pub fn encode_record(out: &mut [u8], key: &[u8], value: &[u8]) {
    let flags = crate::record::FLAG_PUT | crate::record::FLAG_BEGIN | crate::record::FLAG_END;
    crate::record::encode_into(out, flags, key, value);
}

/// Decodes and CRC-checks a record; its value length.
pub fn decode_record(buf: &[u8]) -> Option<u32> {
    crate::record::decode(buf).ok().map(|h| h.val_len)
}

/// The stable key hash.
pub fn key_hash(key: &[u8]) -> u64 {
    crate::record::key_hash(key)
}

/// The sharded index, with hash-only key comparison (the benchmark's keys
/// have distinct hashes).
#[derive(Debug, Default)]
pub struct Index(crate::index::Index);

impl Index {
    /// Points `hash` at `(file_id, offset)`.
    pub fn insert(&self, hash: u64, file_id: u32, offset: u32) {
        let entry = crate::index::Entry::put(Location { file_id, offset }, 127);
        self.0.apply(hash, Some(entry), |_| true);
    }
    /// Where the index files `hash`: its shard and the hash bits an entry
    /// keeps. Two keys with equal slots are told apart only by their
    /// records (tests build such collisions).
    pub fn slot(&self, hash: u64) -> (usize, u32) {
        self.0.slot(hash)
    }
    /// The location of `hash`.
    pub fn get(&self, hash: u64) -> Option<(u32, u32)> {
        let mut found = None;
        self.0.candidates(hash, |e| found = Some(e.loc));
        found.map(|l| (l.file_id, l.offset))
    }
}

/// A slab to append to.
#[derive(Debug)]
pub struct Slab(crate::slab::SlabWriter);

impl Slab {
    /// A slab of `capacity` bytes.
    pub fn new(capacity: usize) -> Slab {
        Slab(crate::slab::SlabWriter::new(1, capacity))
    }
    /// Appends and publishes a put; `None` when full.
    pub fn append(&mut self, key: &[u8], value: &[u8]) -> Option<usize> {
        let flags = crate::record::FLAG_PUT | crate::record::FLAG_BEGIN | crate::record::FLAG_END;
        let off = self.0.append(flags, key, value)?;
        self.0.publish();
        Some(off)
    }
}
