//! Values larger than a slab ("XL"): their own file, read back zero-copy,
//! ordered with the writes around them, reclaimed by GC, recovered after a
//! crash, and never half-published.

mod common;

use bytes::Bytes;
use common::{crash_after, data_files, open_after_crash, small};
use silt::{Db, Fault, FaultInjector, FaultPlan, OpKind, WriteBatch};
use std::time::Duration;

/// A value whose every 4 KiB page names its own position, so a misplaced
/// or shifted chunk is caught.
fn big_value(len: usize, salt: u8) -> Bytes {
    let mut v = vec![salt; len];
    for (i, page) in v.chunks_mut(4096).enumerate() {
        let tag = (i as u64).to_le_bytes();
        let n = tag.len().min(page.len());
        page[..n].copy_from_slice(&tag[..n]);
    }
    Bytes::from(v)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn xl_values_keep_write_order_and_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let builder = small(dir.path()).gc_threshold(0.0);
    let db = builder.clone().open().await.unwrap();
    let xl = big_value(200 * 1024 + 123, 1); // three 64 KiB slabs and a bit
    db.put("a", "small-before").await.unwrap();
    db.put("a", xl.clone()).await.unwrap();
    assert_eq!(db.get(b"a").await.unwrap().unwrap(), xl);
    db.put("b", xl.clone()).await.unwrap();
    db.put("b", "small-after").await.unwrap();
    db.put("c", big_value(1 << 20, 2)).await.unwrap();
    db.delete("c").await.unwrap();
    db.put("d", big_value(300_000, 3)).await.unwrap();
    assert_eq!(db.get(b"b").await.unwrap().unwrap(), "small-after");
    assert_eq!(db.get(b"c").await.unwrap(), None);
    let st = db.stats();
    assert_eq!(st.keys, 3);
    db.close().await.unwrap();

    let db = builder.open().await.unwrap();
    assert_eq!(db.get(b"a").await.unwrap().unwrap(), xl);
    assert_eq!(db.get(b"b").await.unwrap().unwrap(), "small-after");
    assert_eq!(db.get(b"c").await.unwrap(), None);
    assert_eq!(db.get(b"d").await.unwrap().unwrap(), big_value(300_000, 3));
    assert_eq!(db.stats().keys, 3);
    db.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gc_reclaims_dead_xl_files_and_keeps_live_ones() {
    let dir = tempfile::tempdir().unwrap();
    let db = small(dir.path()).gc_threshold(0.0).open().await.unwrap();
    let keep = big_value(500_000, 4);
    db.put("keep", keep.clone()).await.unwrap();
    for i in 0..4u8 {
        db.put("churn", big_value(400_000, i)).await.unwrap();
    }
    db.flush().await.unwrap();
    let before: u64 = data_files(dir.path(), "silt")
        .iter()
        .map(|p| p.metadata().unwrap().len())
        .sum();
    let report = db.compact().await.unwrap();
    assert!(report.files_rewritten >= 3, "{report:?}");
    assert!(report.bytes_reclaimed >= 3 * 400_000, "{report:?}");
    let after: u64 = data_files(dir.path(), "silt")
        .iter()
        .map(|p| p.metadata().unwrap().len())
        .sum();
    assert!(after + 3 * 400_000 <= before, "{before} -> {after}");
    assert_eq!(db.get(b"keep").await.unwrap().unwrap(), keep);
    assert_eq!(
        db.get(b"churn").await.unwrap().unwrap(),
        big_value(400_000, 3)
    );
    db.close().await.unwrap();
}

/// Issue 16.8: a batch larger than a slab (several blobs written
/// atomically) was refused. It gets a file of its own, all or nothing:
/// puts and deletes, large and small, in memory and after a reopen.
#[tokio::test]
async fn a_batch_larger_than_a_slab_is_written_whole() {
    let dir = tempfile::tempdir().unwrap();
    let db = small(dir.path()).gc_threshold(0.0).open().await.unwrap();
    db.put("gone", "before").await.unwrap();
    db.put("y", "old").await.unwrap();
    let mut batch = WriteBatch::new();
    for i in 0..3u8 {
        batch.put(vec![b'b', i], big_value(30_000, i)); // 90 KB > a 64 KiB slab
    }
    batch.put("x", big_value(100_000, 9));
    batch.put("y", "1");
    batch.delete("gone");
    db.write(batch).await.unwrap();
    db.put("y", "after").await.unwrap();
    let check = |db: Db| async move {
        for i in 0..3u8 {
            assert_eq!(
                db.get([b'b', i]).await.unwrap().unwrap(),
                big_value(30_000, i)
            );
        }
        assert_eq!(db.get("x").await.unwrap().unwrap(), big_value(100_000, 9));
        assert_eq!(db.get("y").await.unwrap().unwrap(), "after");
        assert_eq!(db.get("gone").await.unwrap(), None);
        db
    };
    let db = check(db).await;
    db.close().await.unwrap();
    let db = check(small(dir.path()).open().await.unwrap()).await;
    // Compaction moves what fits in a slab and keeps the rest; the deleted
    // key stays deleted.
    db.compact().await.unwrap();
    let db = check(db).await;
    db.close().await.unwrap();
    let db = check(small(dir.path()).open().await.unwrap()).await;
    db.close().await.unwrap();
}

/// Holds renames of `.tmp` files (an XL write's last step) until dropped,
/// so a failing test releases them and its runtime can shut down.
struct HeldRenames(std::sync::Arc<FaultInjector>);

impl HeldRenames {
    fn hold(inj: &std::sync::Arc<FaultInjector>) -> HeldRenames {
        inj.hold_renames(".tmp");
        HeldRenames(inj.clone())
    }
}

impl Drop for HeldRenames {
    fn drop(&mut self) {
        self.0.release_renames();
    }
}

/// Waits (bounded) until the store's own-file write is at its held rename.
async fn until_rename_held(inj: &FaultInjector) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while inj.renames_held() == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the XL write never reached its rename"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// Issue 16.8: while an XL value's file is being written, writes of other
/// keys go on (they used to wait for it, about a second per GiB); a write
/// of one of its keys waits behind it, so the key's last write wins in
/// memory and after a reopen. The XL file is held at its rename, so
/// nothing here depends on timing; without the change the other puts time
/// out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_writes_go_on_while_an_xl_value_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let inj = FaultInjector::new();
    let builder = small(dir.path()).fault_injector(inj.clone());
    let db = builder.clone().open().await.unwrap();
    db.put("x", "old").await.unwrap();
    let held = HeldRenames::hold(&inj);
    let mut batch = WriteBatch::new();
    batch.put("x", big_value(100_000, 1));
    batch.put("y", big_value(100_000, 2));
    let big = tokio::spawn({
        let db = db.clone();
        async move { db.write(batch).await }
    });
    until_rename_held(&inj).await;
    // Other keys: 300 puts (several slabs' worth) and a delete, each
    // acknowledged and readable while the XL file waits.
    let others = async {
        for i in 0..300u32 {
            db.put(format!("k{i}"), vec![7u8; 500]).await.unwrap();
        }
        db.delete("k0").await.unwrap();
    };
    tokio::time::timeout(Duration::from_secs(30), others)
        .await
        .expect("writes of other keys waited for the XL write");
    assert_eq!(db.get("k299").await.unwrap().unwrap(), vec![7u8; 500]);
    assert_eq!(db.get("x").await.unwrap().unwrap(), "old");
    // A write touching one of its keys waits behind it, and so does a
    // later write of a key that waiting write touches.
    let mut mixed = WriteBatch::new();
    mixed.put("k1", "mixed");
    mixed.put("y", "newer");
    // Each is polled once, which queues its request, so they reach the
    // writer in this order.
    let mut newer = Box::pin(db.write(mixed));
    assert!(futures::poll!(&mut newer).is_pending());
    let mut after = Box::pin(db.put("k1", "last"));
    assert!(futures::poll!(&mut after).is_pending());
    // A flush covers every write queued before it: it waits too.
    let mut flushed = Box::pin(db.flush());
    assert!(futures::poll!(&mut flushed).is_pending());
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(futures::poll!(&mut newer).is_pending());
    assert!(futures::poll!(&mut after).is_pending());
    assert!(futures::poll!(&mut flushed).is_pending());
    assert!(!big.is_finished());
    assert_eq!(db.get("k1").await.unwrap().unwrap(), vec![7u8; 500]);
    drop(held);
    big.await.unwrap().unwrap();
    newer.await.unwrap();
    after.await.unwrap();
    flushed.await.unwrap();
    assert_eq!(db.stats().slabs_in_memory, 0);
    let check = |db: Db| async move {
        assert!(
            db.get("x").await.unwrap().unwrap() == big_value(100_000, 1),
            "x is not its XL value"
        );
        assert_eq!(db.get("y").await.unwrap().unwrap(), "newer");
        assert_eq!(db.get("k1").await.unwrap().unwrap(), "last");
        assert_eq!(db.get("k0").await.unwrap(), None);
        assert_eq!(db.get("k2").await.unwrap().unwrap(), vec![7u8; 500]);
        assert_eq!(db.stats().keys, 301);
        db
    };
    let db = check(db).await;
    db.close().await.unwrap();
    let db = check(builder.open().await.unwrap()).await;
    db.close().await.unwrap();
}

/// `close()` while an XL write is part-way and a write waits behind it:
/// close waits for both, and both are there after a reopen.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_finishes_an_xl_write_and_the_writes_behind_it() {
    let dir = tempfile::tempdir().unwrap();
    let inj = FaultInjector::new();
    let builder = small(dir.path()).fault_injector(inj.clone());
    let db = builder.clone().open().await.unwrap();
    let held = HeldRenames::hold(&inj);
    let big = tokio::spawn({
        let db = db.clone();
        async move { db.put("x", big_value(100_000, 3)).await }
    });
    until_rename_held(&inj).await;
    // Polled once: its request is queued before the close below.
    let mut behind = Box::pin(db.put("x", "behind"));
    assert!(futures::poll!(&mut behind).is_pending());
    db.put("other", "1").await.unwrap();
    let close = tokio::spawn({
        let db = db.clone();
        async move { db.close().await }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!close.is_finished());
    drop(held);
    big.await.unwrap().unwrap();
    behind.await.unwrap();
    close.await.unwrap().unwrap();
    drop(db);
    let db = builder.open().await.unwrap();
    assert_eq!(db.get("x").await.unwrap().unwrap(), "behind");
    assert_eq!(db.get("other").await.unwrap().unwrap(), "1");
    db.close().await.unwrap();
}

/// A compaction while an XL write of a key is part-way must not copy that
/// key's older record forward: the copy would land in a newer file than
/// the XL value and win over it at the next open. It is deferred (the
/// segment is kept this time); the XL value wins, now and after a reopen.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_during_an_xl_write_does_not_copy_its_key_forward() {
    let dir = tempfile::tempdir().unwrap();
    let inj = FaultInjector::new();
    let builder = small(dir.path())
        .gc_threshold(0.0)
        .fault_injector(inj.clone());
    let db = builder.clone().open().await.unwrap();
    db.put("x", "old").await.unwrap();
    for i in 0..40u32 {
        db.put(format!("f{i}"), vec![1u8; 1000]).await.unwrap();
    }
    db.flush().await.unwrap();
    for i in 0..40u32 {
        db.delete(format!("f{i}")).await.unwrap();
    }
    db.flush().await.unwrap();
    let held = HeldRenames::hold(&inj);
    let big = tokio::spawn({
        let db = db.clone();
        async move { db.put("x", big_value(100_000, 4)).await }
    });
    until_rename_held(&inj).await;
    let report = tokio::time::timeout(Duration::from_secs(30), db.compact())
        .await
        .expect("compaction waited for the XL write")
        .unwrap();
    assert!(report.files_kept >= 1, "{report:?}");
    assert_eq!(db.get("x").await.unwrap().unwrap(), "old");
    drop(held);
    big.await.unwrap().unwrap();
    assert!(
        db.get("x").await.unwrap().unwrap() == big_value(100_000, 4),
        "x is not its XL value"
    );
    db.compact().await.unwrap();
    assert!(
        db.get("x").await.unwrap().unwrap() == big_value(100_000, 4),
        "x is not its XL value"
    );
    db.close().await.unwrap();
    let db = builder.open().await.unwrap();
    assert!(
        db.get("x").await.unwrap().unwrap() == big_value(100_000, 4),
        "x is not its XL value"
    );
    assert_eq!(db.get("f3").await.unwrap(), None);
    db.close().await.unwrap();
}

/// A batch file whose fdatasync fails: none of the batch is visible, now or
/// after a reopen, and the store goes on.
#[tokio::test]
async fn a_failed_large_batch_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let inj = FaultInjector::new();
    let db = small(dir.path())
        .durability(silt::Durability::None)
        .fault_injector(inj.clone())
        .open()
        .await
        .unwrap();
    inj.set_plan(Some(FaultPlan {
        kind: OpKind::Sync,
        nth: 1,
        fault: Fault::Eio,
        persistent: false,
    }));
    let mut batch = WriteBatch::new();
    batch.put("a", big_value(40_000, 1));
    batch.put("b", big_value(40_000, 2));
    assert!(db.write(batch).await.is_err());
    inj.set_plan(None);
    assert_eq!(db.get("a").await.unwrap(), None);
    assert_eq!(db.get("b").await.unwrap(), None);
    assert!(data_files(dir.path(), "tmp").is_empty());
    db.put("c", "1").await.unwrap();
    db.close().await.unwrap();
    let db = small(dir.path()).open().await.unwrap();
    assert_eq!(db.get("a").await.unwrap(), None);
    assert_eq!(db.get("b").await.unwrap(), None);
    assert_eq!(db.get("c").await.unwrap().unwrap(), "1");
    db.close().await.unwrap();
}

/// A failed fdatasync of the XL file: the caller gets the error, no file
/// (published or temporary) is left, the store keeps working.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_xl_write_leaves_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let inj = FaultInjector::new();
    let db = small(dir.path())
        .durability(silt::Durability::None)
        .fault_injector(inj.clone())
        .open()
        .await
        .unwrap();
    // The XL file's fdatasync is the first of the store (no WAL, no slab).
    inj.set_plan(Some(FaultPlan {
        kind: OpKind::Sync,
        nth: 1,
        fault: Fault::Eio,
        persistent: false,
    }));
    let err = db.put("big", big_value(150_000, 5)).await.unwrap_err();
    assert!(matches!(err, silt::Error::Io { .. }), "{err}");
    assert_eq!(db.get(b"big").await.unwrap(), None);
    assert!(data_files(dir.path(), "tmp").is_empty());
    inj.set_plan(None);
    db.put("small", "1").await.unwrap();
    db.put("big", big_value(150_000, 6)).await.unwrap();
    assert_eq!(
        db.get(b"big").await.unwrap().unwrap(),
        big_value(150_000, 6)
    );
    db.close().await.unwrap();
    let db = small(dir.path()).open().await.unwrap();
    assert_eq!(db.get(b"small").await.unwrap().unwrap(), "1");
    assert_eq!(
        db.get(b"big").await.unwrap().unwrap(),
        big_value(150_000, 6)
    );
    db.close().await.unwrap();
}

/// A crash while XL puts are being written: each acknowledged one is back,
/// leftover temporary files are removed at open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_during_xl_writes_recovers_acknowledged_ones() {
    let dir = tempfile::tempdir().unwrap();
    let builder = small(dir.path());
    let acked = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = acked.clone();
    crash_after(builder.clone(), move |db| async move {
        let writer = {
            let (db, log) = (db.clone(), log.clone());
            tokio::spawn(async move {
                for i in 0..50u8 {
                    db.put(vec![b'x', i], big_value(300_000, i)).await.unwrap();
                    log.lock().unwrap().push(i);
                }
            })
        };
        while log.lock().unwrap().len() < 5 {
            tokio::task::yield_now().await;
        }
        drop(writer);
    });
    // A leftover of an XL write that never finished.
    std::fs::write(dir.path().join("data/99999999.tmp"), b"partial").unwrap();
    let db = open_after_crash(builder).await;
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() >= 5);
    for &i in &acked {
        assert_eq!(
            db.get(&[b'x', i]).await.unwrap().unwrap(),
            big_value(300_000, i)
        );
    }
    assert!(data_files(dir.path(), "tmp").is_empty());
    db.close().await.unwrap();
}

/// DESIGN: values up to at least 1 GiB.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_gibibyte_value() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::builder(dir.path())
        .slab_size(4 << 20)
        .open()
        .await
        .unwrap();
    let v = big_value(1 << 30, 7);
    db.put("huge", v.clone()).await.unwrap();
    db.put("after", "small").await.unwrap();
    let got = db.get(b"huge").await.unwrap().unwrap();
    assert!(got == v);
    drop(got);
    db.close().await.unwrap();
    let db = Db::open(dir.path()).await.unwrap();
    let got = db.get(b"huge").await.unwrap().unwrap();
    assert_eq!(got.len(), 1 << 30);
    assert!(got == v);
    assert_eq!(db.get(b"after").await.unwrap().unwrap(), "small");
    db.close().await.unwrap();
}
