//! Damaged files: a flipped byte in a sealed segment, a WAL cut mid-record,
//! a truncated footer, garbage, unknown files. Open succeeds, the damage is
//! reported where it is met, nothing else breaks, nothing panics.

mod common;

use common::{crash_after, data_files, small};
use futures::StreamExt;
use silt::{Db, Durability, Error};
use std::os::unix::fs::FileExt;

fn key(i: u32) -> String {
    format!("key{i:05}")
}
fn val(i: u32) -> String {
    format!("value-{i}-").repeat(5)
}

/// Writes `n` keys, flushes them into segments, closes.
async fn make_segments(path: &std::path::Path, n: u32) {
    let db = small(path).open().await.unwrap();
    for i in 0..n {
        db.put(key(i), val(i)).await.unwrap();
    }
    db.close().await.unwrap();
}

/// Offset of `needle` in the file.
fn find(path: &std::path::Path, needle: &[u8]) -> usize {
    let bytes = std::fs::read(path).unwrap();
    bytes
        .windows(needle.len())
        .position(|w| w == needle)
        .unwrap()
}

#[tokio::test]
async fn flipped_byte_in_a_segment_fails_only_that_record() {
    let dir = tempfile::tempdir().unwrap();
    make_segments(dir.path(), 2000).await;
    let segs = data_files(dir.path(), "silt");
    assert!(segs.len() >= 2);
    // Damage the value of key 10 (in the first segment).
    let off = find(&segs[0], val(10).as_bytes());
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&segs[0])
        .unwrap();
    f.write_at(b"X", off as u64 + 3).unwrap();
    drop(f);

    let db = small(dir.path()).open().await.unwrap();
    match db.get(key(10).as_bytes()).await {
        Err(Error::Corruption { path, offset, what }) => {
            assert_eq!(path, segs[0]);
            assert!(offset > 0 && what.contains("CRC"), "{offset} {what}");
        }
        other => panic!("expected Corruption, got {other:?}"),
    }
    for i in (0..2000).filter(|&i| i != 10) {
        assert_eq!(
            db.get(key(i).as_bytes()).await.unwrap().unwrap(),
            val(i),
            "key {i}"
        );
    }
    // A scan reports the one damaged record and yields every other pair.
    let items: Vec<_> = db.scan().collect().await;
    assert_eq!(items.iter().filter(|r| r.is_err()).count(), 1);
    assert_eq!(items.iter().filter(|r| r.is_ok()).count(), 1999);
    // Writes still work; the damaged key can be overwritten.
    db.put(key(10), "fresh").await.unwrap();
    assert_eq!(db.get(key(10).as_bytes()).await.unwrap().unwrap(), "fresh");
    db.close().await.unwrap();

    // With checksums off the damaged bytes are returned as they are: damage
    // key 11's value too (key 10 was overwritten above).
    let off = find(&segs[0], val(11).as_bytes());
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&segs[0])
        .unwrap();
    f.write_at(b"X", off as u64 + 3).unwrap();
    drop(f);
    let db = small(dir.path())
        .verify_checksums(false)
        .open()
        .await
        .unwrap();
    let mut damaged = val(11).into_bytes();
    damaged[3] = b'X';
    assert_ne!(damaged, val(11).into_bytes());
    assert_eq!(db.get(key(11)).await.unwrap().unwrap(), damaged);
    assert_eq!(db.get(key(10)).await.unwrap().unwrap(), "fresh");
    db.close().await.unwrap();
}

/// Leaves a WAL behind with `n` acknowledged records.
fn crashed_wal(path: &std::path::Path, n: u32) -> std::path::PathBuf {
    crash_after(
        small(path).durability(Durability::Sync),
        move |db| async move {
            for i in 0..n {
                db.put(key(i), val(i)).await.unwrap();
            }
        },
    );
    // The dead store's threads are gone before a test touches its files.
    common::wait_unlocked(path);
    let logs = data_files(path, "log");
    assert_eq!(logs.len(), 1, "one unsealed WAL is left behind");
    logs[0].clone()
}

#[tokio::test]
async fn wal_truncated_mid_record_opens_with_the_tail_cut() {
    let dir = tempfile::tempdir().unwrap();
    let log = crashed_wal(dir.path(), 100);
    // Cut inside the record of key 60.
    let cut = find(&log, key(60).as_bytes()) + 5;
    std::fs::OpenOptions::new()
        .write(true)
        .open(&log)
        .unwrap()
        .set_len(cut as u64)
        .unwrap();

    let db = common::open_after_crash(small(dir.path())).await;
    let st = db.stats();
    assert!(st.recovered_torn_bytes > 0, "{st:?}");
    for i in 0..60 {
        assert_eq!(
            db.get(key(i).as_bytes()).await.unwrap().unwrap(),
            val(i),
            "key {i}"
        );
    }
    for i in 60..100 {
        assert_eq!(
            db.get(key(i).as_bytes()).await.unwrap(),
            None,
            "key {i} is past the cut"
        );
    }
    assert_eq!(st.keys, 60);
    // The store goes on: new writes, flush, reopen.
    db.put("after", "crash").await.unwrap();
    db.close().await.unwrap();
    let db = small(dir.path()).open().await.unwrap();
    assert_eq!(db.stats().keys, 61);
    assert_eq!(
        db.stats().recovered_torn_bytes,
        0,
        "the cut tail is gone for good"
    );
    db.close().await.unwrap();
}

#[tokio::test]
async fn wal_cut_at_every_offset_of_its_last_records_never_panics() {
    let dir = tempfile::tempdir().unwrap();
    let log = crashed_wal(dir.path(), 30);
    let full = std::fs::read(&log).unwrap();
    let start = find(&log, key(27).as_bytes()) - 11; // the record header
    let end = find(&log, key(29).as_bytes()) + 80;
    for cut in start..end {
        let case = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(case.path().join("data")).unwrap();
        std::fs::write(
            case.path().join("data").join(log.file_name().unwrap()),
            &full[..cut],
        )
        .unwrap();
        let db = small(case.path()).open().await.unwrap();
        let keys = db.stats().keys;
        assert!((27..=30).contains(&keys), "cut {cut}: {keys} keys");
        // The longest valid prefix: keys 0..keys, nothing after.
        for i in 0..keys as u32 {
            assert_eq!(db.get(key(i).as_bytes()).await.unwrap().unwrap(), val(i));
        }
        db.close().await.unwrap();
    }
}

#[tokio::test]
async fn garbage_and_flipped_bits_in_the_wal_tail_are_cut() {
    let dir = tempfile::tempdir().unwrap();
    let log = crashed_wal(dir.path(), 50);
    let mut bytes = std::fs::read(&log).unwrap();
    let at = find(&log, key(40).as_bytes());
    bytes[at + 2] ^= 0x10; // bit flip inside record 40
    let end = bytes.iter().rposition(|&b| b != 0).unwrap() + 1;
    bytes[end..end + 100].fill(0xee); // garbage after the last record
    std::fs::write(&log, &bytes).unwrap();
    let db = common::open_after_crash(small(dir.path())).await;
    assert_eq!(db.stats().keys, 40);
    assert!(db.stats().recovered_torn_bytes >= 100);
    db.close().await.unwrap();
}

#[tokio::test]
async fn truncated_footer_recovers_the_segment_by_scanning() {
    let dir = tempfile::tempdir().unwrap();
    make_segments(dir.path(), 1500).await;
    let segs = data_files(dir.path(), "silt");
    let len = std::fs::metadata(&segs[0]).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&segs[0])
        .unwrap()
        .set_len(len - 100)
        .unwrap();
    let db = small(dir.path()).open().await.unwrap();
    assert_eq!(db.stats().keys, 1500);
    for i in 0..1500 {
        assert_eq!(
            db.get(key(i).as_bytes()).await.unwrap().unwrap(),
            val(i),
            "key {i}"
        );
    }
    db.close().await.unwrap();
}

#[tokio::test]
async fn unknown_files_are_ignored() {
    let dir = tempfile::tempdir().unwrap();
    make_segments(dir.path(), 100).await;
    std::fs::write(dir.path().join("data").join("notes.txt"), b"hello").unwrap();
    std::fs::write(dir.path().join("data").join("12x.silt"), b"junk").unwrap();
    std::fs::create_dir(dir.path().join("data").join("subdir")).unwrap();
    let db = small(dir.path()).open().await.unwrap();
    assert_eq!(db.stats().keys, 100);
    assert_eq!(db.get(key(5).as_bytes()).await.unwrap().unwrap(), val(5));
    db.close().await.unwrap();
    assert!(
        dir.path().join("data").join("notes.txt").exists(),
        "unknown files are left alone"
    );
}

#[tokio::test]
async fn segments_of_pure_garbage_open_without_panic() {
    let dir = tempfile::tempdir().unwrap();
    make_segments(dir.path(), 100).await;
    let data = dir.path().join("data");
    std::fs::write(data.join("00000900.silt"), vec![0x5a; 10_000]).unwrap();
    std::fs::write(data.join("00000901.silt"), b"").unwrap();
    std::fs::write(data.join("00000902.log"), vec![0xff; 5000]).unwrap();
    let db = small(dir.path()).open().await.unwrap();
    assert_eq!(db.stats().keys, 100);
    // New files get ids above every existing one.
    db.put("new", "v").await.unwrap();
    db.close().await.unwrap();
    let db = small(dir.path()).open().await.unwrap();
    assert_eq!(db.get(b"new").await.unwrap().unwrap(), "v");
    db.close().await.unwrap();
}

#[tokio::test]
async fn unsealed_wal_of_a_crash_becomes_a_segment_on_reopen() {
    let dir = tempfile::tempdir().unwrap();
    crashed_wal(dir.path(), 100);
    let db = common::open_after_crash(Db::builder(dir.path()).slab_size(64 * 1024)).await;
    assert_eq!(db.stats().keys, 100);
    db.flush().await.unwrap();
    assert!(data_files(dir.path(), "log").is_empty());
    db.close().await.unwrap();
}

/// A data file written by another format version is refused by name, not
/// skipped as damage (its records would be misread or silently dropped).
#[tokio::test]
async fn a_file_of_another_format_version_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    make_segments(dir.path(), 50).await;
    let seg = data_files(dir.path(), "silt")[0].clone();
    // Rewrite the header as version 1, with a valid header CRC.
    let mut head = std::fs::read(&seg).unwrap()[..20].to_vec();
    head[8..12].copy_from_slice(&1u32.to_le_bytes());
    let crc = crc32fast::hash(&head[..16]);
    head[16..20].copy_from_slice(&crc.to_le_bytes());
    std::fs::OpenOptions::new()
        .write(true)
        .open(&seg)
        .unwrap()
        .write_all_at(&head, 0)
        .unwrap();
    match Db::open(dir.path()).await {
        Err(Error::Corruption { what, .. }) => {
            assert!(what.contains("format version 1"), "{what}")
        }
        other => panic!("expected Corruption, got {other:?}"),
    }
}

/// Flips one byte of a file at `offset`.
fn flip(path: &std::path::Path, offset: u64) {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut b = [0u8];
    f.read_exact_at(&mut b, offset).unwrap();
    f.write_all_at(&[b[0] ^ 0x40], offset).unwrap();
}

/// Issue 16.1: a damaged file header (one byte at offset 0) made `open`
/// drop every record of a sealed segment, and of an unsealed WAL. The
/// records and the footer carry their own checks: nothing may be lost.
#[tokio::test]
async fn a_damaged_file_header_loses_no_record() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::builder(dir.path()).open().await.unwrap();
    for i in 0..10_000 {
        db.put(key(i), val(i)).await.unwrap();
    }
    db.close().await.unwrap();
    let segs = data_files(dir.path(), "silt");
    assert_eq!(segs.len(), 1);
    flip(&segs[0], 0);
    let db = Db::open(dir.path()).await.unwrap();
    assert_eq!(db.stats().keys, 10_000);
    for i in (0..10_000).step_by(97) {
        assert_eq!(db.get(key(i)).await.unwrap().unwrap(), val(i), "key {i}");
    }
    db.close().await.unwrap();

    // The same for a WAL left by a crash.
    let dir = tempfile::tempdir().unwrap();
    let log = crashed_wal(dir.path(), 100);
    flip(&log, 0);
    let db = common::open_after_crash(small(dir.path())).await;
    assert_eq!(db.stats().keys, 100);
    assert_eq!(db.get(key(42)).await.unwrap().unwrap(), val(42));
    db.close().await.unwrap();
}

/// Issue 16.2: a flipped bit in the header's version field read as "format
/// version 6; this build reads 2" and refused the whole store. Only an
/// intact header (its CRC matches) speaks for another version.
#[tokio::test]
async fn a_flipped_bit_in_the_version_field_is_damage_not_another_version() {
    let dir = tempfile::tempdir().unwrap();
    make_segments(dir.path(), 50).await;
    let seg = data_files(dir.path(), "silt")[0].clone();
    flip(&seg, 10);
    let db = Db::open(dir.path()).await.unwrap();
    assert_eq!(db.stats().keys, 50);
    assert_eq!(db.get(key(7)).await.unwrap().unwrap(), val(7));
    db.close().await.unwrap();
}

/// Issue 16.9: a data file named with id `u32::MAX` overflowed `max_id + 1`
/// (a panic in debug builds; in release, ids wrapped to 0 and new slabs
/// took the ids of live files). It is now a clear error naming it.
#[tokio::test]
async fn a_file_with_the_largest_id_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    make_segments(dir.path(), 20).await;
    let seg = data_files(dir.path(), "silt")[0].clone();
    let data = dir.path().join("data");
    std::fs::copy(&seg, data.join(format!("{}.silt", u32::MAX))).unwrap();
    match Db::open(dir.path()).await {
        Err(Error::Corruption { path, what, .. }) => {
            assert!(what.contains("largest"), "{what}");
            assert!(path.to_string_lossy().contains("4294967295"), "{path:?}");
        }
        other => panic!("expected Corruption, got {other:?}"),
    }
    std::fs::remove_file(data.join(format!("{}.silt", u32::MAX))).unwrap();
    let db = Db::open(dir.path()).await.unwrap();
    assert_eq!(db.stats().keys, 20);
    db.close().await.unwrap();
}
