//! Compaction and background GC: space comes back, data never changes, a
//! deleted key never returns, writes racing GC always win, and the live-byte
//! accounting agrees with what recovery recomputes from the files.

mod common;

use common::{crash_after, data_files, open_after_crash, small};
use silt::Db;
use std::collections::BTreeMap;
use std::path::Path;

fn key(i: u32) -> Vec<u8> {
    format!("key-{i:06}").into_bytes()
}

fn value(i: u32, round: u32) -> Vec<u8> {
    let mut v = format!("value-{i}-{round}-").into_bytes();
    v.resize(100 + (i % 50) as usize, b'a' + (round % 26) as u8);
    v
}

fn disk_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir.join("data"))
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum()
}

async fn check(db: &Db, model: &BTreeMap<Vec<u8>, Vec<u8>>, keys: u32) {
    for i in 0..keys {
        let got = db.get(&key(i)).await.unwrap();
        assert_eq!(
            got.as_deref(),
            model.get(&key(i)).map(|v| &v[..]),
            "key {i}"
        );
    }
    assert_eq!(db.stats().keys, model.len() as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compact_reclaims_dead_space_and_keeps_every_value() {
    let dir = tempfile::tempdir().unwrap();
    let builder = small(dir.path()).gc_threshold(0.0);
    let db = builder.clone().open().await.unwrap();
    let mut model = BTreeMap::new();
    const N: u32 = 3000;
    for round in 0..3 {
        for i in (0..N).filter(|i| round == 0 || i % 3 != 0) {
            db.put(key(i), value(i, round)).await.unwrap();
            model.insert(key(i), value(i, round));
        }
    }
    for i in (0..N).filter(|i| i % 7 == 0) {
        db.delete(key(i)).await.unwrap();
        model.remove(&key(i));
    }
    db.flush().await.unwrap();
    let before = db.stats();
    let disk_before = disk_bytes(dir.path());
    assert!(before.live_bytes * 2 < before.record_bytes, "{before:?}");

    let report = db.compact().await.unwrap();
    assert!(report.files_rewritten > 0, "{report:?}");
    assert!(report.records_moved > 0, "{report:?}");
    assert_eq!(report.files_kept, 0, "{report:?}");
    check(&db, &model, N).await;
    db.flush().await.unwrap();
    let after = db.stats();
    let disk_after = disk_bytes(dir.path());
    assert!(
        disk_after * 2 < disk_before,
        "{disk_before} -> {disk_after}, {report:?}"
    );
    assert!(report.bytes_reclaimed > 0);
    // Only tombstones that still hide an older record (none: every older
    // file was compacted too) and nothing else is dead.
    assert_eq!(after.live_bytes, after.record_bytes, "{after:?}");
    assert_eq!(after.gc_files, report.files_rewritten as u64);
    db.close().await.unwrap();

    let db = builder.open().await.unwrap();
    check(&db, &model, N).await;
    let reopened = db.stats();
    assert_eq!(
        (reopened.record_bytes, reopened.live_bytes),
        (after.record_bytes, after.live_bytes)
    );
    db.close().await.unwrap();
}

/// The writer's running accounting equals what recovery recomputes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_bytes_survive_reopen_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let builder = small(dir.path()).gc_threshold(0.0);
    let db = builder.clone().open().await.unwrap();
    for round in 0..3u32 {
        for i in 0..1500u32 {
            if (i + round) % 5 == 0 {
                db.delete(key(i)).await.unwrap();
            } else {
                db.put(key(i), value(i, round)).await.unwrap();
            }
        }
    }
    db.flush().await.unwrap();
    let st = db.stats();
    let files = db.file_space();
    assert!(st.live_bytes < st.record_bytes);
    assert!(files.iter().any(|f| f.live_ratio() < 1.0));
    db.close().await.unwrap();
    let db = builder.open().await.unwrap();
    let again = db.stats();
    assert_eq!(
        (again.record_bytes, again.live_bytes),
        (st.record_bytes, st.live_bytes)
    );
    assert_eq!(db.file_space(), files);
    db.close().await.unwrap();
}

/// A tombstone whose key an older, uncompacted file still holds is carried
/// forward: the key stays deleted after background GC, a reopen, and a
/// later full compaction.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_key_never_returns_after_gc_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let builder = small(dir.path()).gc_threshold(0.6);
    let db = builder.clone().open().await.unwrap();
    // An old file, fully live except for the key deleted below.
    for i in 0..400u32 {
        db.put(key(i), value(i, 0)).await.unwrap();
    }
    db.flush().await.unwrap();
    // A file holding the tombstone and lots of garbage.
    db.delete(key(7)).await.unwrap();
    for round in 1..20u32 {
        for i in 1000..1020u32 {
            db.put(key(i), value(i, round)).await.unwrap();
        }
    }
    db.flush().await.unwrap();
    // Background GC compacts the garbage file, not the old one.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while db.stats().gc_files == 0 {
        assert!(std::time::Instant::now() < deadline, "{:?}", db.stats());
        // A new segment wakes background GC.
        db.put("poke", "x").await.unwrap();
        db.flush().await.unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(db.get(&key(7)).await.unwrap(), None);
    assert_eq!(db.get(&key(8)).await.unwrap().unwrap(), value(8, 0));
    db.close().await.unwrap();

    let db = builder.clone().gc_threshold(0.0).open().await.unwrap();
    assert_eq!(db.get(&key(7)).await.unwrap(), None);
    assert_eq!(db.get(&key(1005)).await.unwrap().unwrap(), value(1005, 19));
    let report = db.compact().await.unwrap();
    assert!(report.files_rewritten > 0);
    db.close().await.unwrap();
    let db = builder.gc_threshold(0.0).open().await.unwrap();
    assert_eq!(db.get(&key(7)).await.unwrap(), None);
    assert_eq!(db.stats().keys, 400 - 1 + 20 + 1);
    db.close().await.unwrap();
}

/// Writers overwrite and delete the keys GC is moving: the last write of
/// every key wins, before and after a reopen.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_racing_compaction_always_win() {
    let dir = tempfile::tempdir().unwrap();
    let builder = small(dir.path()).gc_threshold(0.0);
    let db = builder.clone().open().await.unwrap();
    const N: u32 = 2000;
    for i in 0..N {
        db.put(key(i), value(i, 0)).await.unwrap();
    }
    db.flush().await.unwrap();
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let compactor = {
        let (db, done) = (db.clone(), done.clone());
        tokio::spawn(async move {
            let mut files = 0;
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                files += db.compact().await.unwrap().files_rewritten;
                tokio::time::sleep(std::time::Duration::from_millis(1)).await;
            }
            files
        })
    };
    let mut writers = Vec::new();
    for t in 0..4u32 {
        let db = db.clone();
        writers.push(tokio::spawn(async move {
            let mut last = BTreeMap::new();
            for round in 1..6u32 {
                for i in (0..N).filter(|i| i % 4 == t) {
                    if (i + round) % 9 == 0 {
                        db.delete(key(i)).await.unwrap();
                        last.insert(key(i), None);
                    } else {
                        db.put(key(i), value(i, round)).await.unwrap();
                        last.insert(key(i), Some(value(i, round)));
                    }
                }
            }
            last
        }));
    }
    let mut model = BTreeMap::new();
    for w in writers {
        for (k, v) in w.await.unwrap() {
            if let Some(v) = v {
                model.insert(k, v);
            }
        }
    }
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let files = compactor.await.unwrap();
    assert!(files > 0);
    db.compact().await.unwrap();
    check(&db, &model, N).await;
    db.close().await.unwrap();
    let db = builder.open().await.unwrap();
    check(&db, &model, N).await;
    db.close().await.unwrap();
}

/// A crash at any moment of a compaction recovers the same data.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_during_compaction_loses_nothing() {
    for cut in [0u64, 1, 2, 5, 10, 30] {
        let dir = tempfile::tempdir().unwrap();
        let builder = small(dir.path()).gc_threshold(0.0);
        let mut model = BTreeMap::new();
        for round in 0..4u32 {
            for i in 0..1200u32 {
                if round == 3 && i % 5 == 0 {
                    model.remove(&key(i));
                } else {
                    model.insert(key(i), value(i, round));
                }
            }
        }
        crash_after(builder.clone(), move |db| async move {
            for round in 0..4u32 {
                for i in 0..1200u32 {
                    if round == 3 && i % 5 == 0 {
                        db.delete(key(i)).await.unwrap();
                    } else {
                        db.put(key(i), value(i, round)).await.unwrap();
                    }
                }
            }
            db.flush().await.unwrap();
            let compacting = {
                let db = db.clone();
                tokio::spawn(async move { db.compact().await })
            };
            // Let the compaction run for a while, then crash mid-way.
            for _ in 0..cut {
                tokio::task::yield_now().await;
                tokio::time::sleep(std::time::Duration::from_micros(300)).await;
            }
            if cut == 30 {
                compacting.await.unwrap().unwrap();
            }
        });
        let db = open_after_crash(builder.clone()).await;
        check(&db, &model, 1200).await;
        db.compact().await.unwrap();
        check(&db, &model, 1200).await;
        db.close().await.unwrap();
        let db = builder.open().await.unwrap();
        check(&db, &model, 1200).await;
        assert!(data_files(dir.path(), "log").is_empty());
        db.close().await.unwrap();
    }
}

#[tokio::test]
async fn gc_threshold_is_validated() {
    let dir = tempfile::tempdir().unwrap();
    for bad in [-0.1, 1.0, 2.0, f64::NAN] {
        let res = Db::builder(dir.path()).gc_threshold(bad).open().await;
        match res {
            Err(silt::Error::Config(msg)) => assert!(msg.contains("gc_threshold"), "{msg}"),
            other => panic!("{bad}: {other:?}"),
        }
    }
}

/// Close right behind a publish that woke background GC, reopen at once,
/// compact: every value intact, no error. `close` waits for a running
/// compaction, so no file is deleted after it returns; before that fix the
/// model test found a reopen meeting a listed segment already gone (its
/// seed is in model.proptest-regressions). The race is timing-dependent:
/// this loop exercises it, it cannot force it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_then_reopen_with_background_gc_keeps_every_value() {
    let dir = tempfile::tempdir().unwrap();
    let builder = small(dir.path()).gc_threshold(0.9);
    for round in 0..15u32 {
        let db = builder.clone().open().await.unwrap();
        for i in 0..300u32 {
            db.put(key(i % 40), value(i, round)).await.unwrap();
        }
        // Publishing wakes background GC; close right behind it.
        db.flush().await.unwrap();
        db.close().await.unwrap();
        let db = builder.clone().gc_threshold(0.0).open().await.unwrap();
        db.compact().await.unwrap();
        for i in 260..300u32 {
            assert_eq!(
                db.get(&key(i % 40)).await.unwrap().unwrap(),
                value(i, round)
            );
        }
        db.close().await.unwrap();
    }
}

/// Review of issue 16: `drop_segment` forgot a compacted file before
/// unlinking it, so when the unlink failed the file stayed on disk unseen;
/// a later compaction then dropped the tombstone that hid its value, and
/// after a reopen the deleted value was back.
#[tokio::test]
async fn a_failed_unlink_never_brings_back_a_deleted_value() {
    use silt::{Fault, FaultInjector, FaultPlan, OpKind};
    let dir = tempfile::tempdir().unwrap();
    let inj = FaultInjector::new();
    let db = Db::builder(dir.path())
        .slab_size(64 << 10)
        .gc_threshold(0.0)
        .fault_injector(inj.clone())
        .open()
        .await
        .unwrap();
    // File A: the victim's value and fillers; B: its tombstone and more
    // fillers; C: A's fillers again, so nothing in A is live.
    db.put("victim", "old value").await.unwrap();
    for i in 0..100 {
        db.put(key(i), value(i, 0)).await.unwrap();
    }
    db.flush().await.unwrap();
    db.delete("victim").await.unwrap();
    for i in 100..200 {
        db.put(key(i), value(i, 0)).await.unwrap();
    }
    db.flush().await.unwrap();
    for i in 0..100 {
        db.put(key(i), value(i, 1)).await.unwrap();
    }
    db.flush().await.unwrap();
    inj.set_plan(Some(FaultPlan {
        kind: OpKind::Remove,
        nth: 1,
        fault: Fault::Eio,
        persistent: false,
    }));
    assert!(db.compact().await.is_err(), "the unlink failed");
    inj.set_plan(None);
    db.compact().await.unwrap();
    assert_eq!(db.get("victim").await.unwrap(), None);
    db.close().await.unwrap();
    let db = Db::open(dir.path()).await.unwrap();
    assert_eq!(
        db.get("victim").await.unwrap(),
        None,
        "the deleted value came back"
    );
    for i in 0..200 {
        let round = if i < 100 { 1 } else { 0 };
        assert_eq!(db.get(key(i)).await.unwrap(), Some(value(i, round).into()));
    }
    db.close().await.unwrap();
}

/// Issue 16.11: each open → put → close left a 12 KiB segment for a few
/// bytes, and `compact()` kept them all (their records were all live).
/// Small files are merged, so space after `compact()` stays near the live
/// bytes whatever the history, and nothing is lost.
#[tokio::test]
async fn compact_merges_small_files() {
    let dir = tempfile::tempdir().unwrap();
    for i in 0..50u32 {
        let db = Db::builder(dir.path())
            .gc_threshold(0.0)
            .open()
            .await
            .unwrap();
        db.put(key(i), value(i, 0)).await.unwrap();
        db.close().await.unwrap();
    }
    let before = disk_bytes(dir.path());
    assert_eq!(data_files(dir.path(), "silt").len(), 50);
    let db = Db::builder(dir.path())
        .gc_threshold(0.0)
        .open()
        .await
        .unwrap();
    let report = db.compact().await.unwrap();
    assert_eq!(report.files_rewritten, 50, "{report:?}");
    db.close().await.unwrap();
    let after = disk_bytes(dir.path());
    let files = data_files(dir.path(), "silt");
    assert_eq!(files.len(), 1, "{files:?}");
    // Header page, records, footer: a few pages, not 50 files' worth (and
    // the 8-byte file-id floor).
    assert!(
        after <= 4 * 4096 + 8,
        "{before} bytes before, {after} after"
    );
    let db = Db::open(dir.path()).await.unwrap();
    for i in 0..50 {
        assert_eq!(db.get(key(i)).await.unwrap(), Some(value(i, 0).into()));
    }
    // Compacting again leaves the one merged file alone.
    assert_eq!(db.compact().await.unwrap().files_rewritten, 0);
    db.close().await.unwrap();
}

/// Background GC compacts a file of tombstones while an older file still
/// holds a put of one of their keys (so the tombstone is needed) and a
/// newer file holds a newer value of that key: the tombstone must not be
/// copied forward (past the newer value, it would delete it at the next
/// open). It fails if GC copies every needed tombstone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gc_drops_a_tombstone_whose_key_has_a_newer_value() {
    let dir = tempfile::tempdir().unwrap();
    let open = || Db::builder(dir.path()).slab_size(64 << 10).open();
    let db = open().await.unwrap();
    // The old file stays: mostly live.
    db.put("k", "old").await.unwrap();
    for i in 0..20 {
        db.put(key(i), vec![7u8; 2000]).await.unwrap();
    }
    db.flush().await.unwrap();
    db.delete("k").await.unwrap();
    db.flush().await.unwrap();
    let tombstones = data_files(dir.path(), "silt");
    db.put("k", "new").await.unwrap();
    db.flush().await.unwrap();
    // Background GC (threshold 0.5) takes the file of the tombstone.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while data_files(dir.path(), "silt").contains(&tombstones[1]) {
        assert!(
            std::time::Instant::now() < deadline,
            "background GC never compacted the tombstone's file"
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    assert_eq!(db.get("k").await.unwrap().unwrap(), "new");
    db.close().await.unwrap();
    let db = open().await.unwrap();
    assert_eq!(db.get("k").await.unwrap().unwrap(), "new", "after a reopen");
    db.close().await.unwrap();
}
