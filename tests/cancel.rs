//! Issue 17: every `# Cancel safety` statement of the public async API,
//! checked. A future is "polled once" with `futures::poll!`, which is what
//! `select!` or `timeout` do before they drop it.

mod common;

use silt::{Db, Durability, WriteBatch};
use std::time::Duration;

async fn open(dir: &std::path::Path, d: Durability) -> Db {
    Db::builder(dir)
        .slab_size(64 * 1024)
        .durability(d)
        .open()
        .await
        .unwrap()
}

/// put, delete, write: dropped unpolled, nothing; polled once and dropped,
/// applied as if awaited, which a later flush makes certain. Also under
/// `timeout(0)`, which polls once before it can elapse.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_polled_once_is_applied_and_one_never_polled_is_not() {
    for d in [Durability::Sync, Durability::Buffered, Durability::None] {
        let dir = tempfile::tempdir().unwrap();
        let db = open(dir.path(), d).await;
        db.put("gone", "old").await.unwrap();
        drop(db.put("never", "polled"));
        let mut put = Box::pin(db.put("once", "1"));
        let _ = futures::poll!(&mut put);
        drop(put);
        let mut delete = Box::pin(db.delete("gone"));
        let _ = futures::poll!(&mut delete);
        drop(delete);
        let mut batch = WriteBatch::new();
        batch.put("b1", "x");
        batch.put("b2", "y");
        let mut write = Box::pin(db.write(batch));
        let _ = futures::poll!(&mut write);
        drop(write);
        // Elapsed or not (the timer's tick is a millisecond), it was
        // polled once, so the write is queued.
        let _ = tokio::time::timeout(Duration::ZERO, db.put("timed", "t")).await;
        db.flush().await.unwrap();
        let check = |db: Db| async move {
            assert_eq!(db.get("never").await.unwrap(), None, "{d:?}");
            assert_eq!(db.get("once").await.unwrap().unwrap(), "1", "{d:?}");
            assert_eq!(db.get("gone").await.unwrap(), None, "{d:?}");
            assert_eq!(db.get("b1").await.unwrap().unwrap(), "x", "{d:?}");
            assert_eq!(db.get("b2").await.unwrap().unwrap(), "y", "{d:?}");
            assert_eq!(db.get("timed").await.unwrap().unwrap(), "t", "{d:?}");
            db
        };
        let db = check(db).await;
        db.close().await.unwrap();
        check(open(dir.path(), d).await)
            .await
            .close()
            .await
            .unwrap();
    }
}

/// flush and sync polled once and dropped: the slab is still sealed and
/// flushed (seen after a later flush of nothing new), and a `None` store's
/// sync still flushes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_flush_or_sync_still_runs() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path(), Durability::Sync).await;
    db.put("k", "v").await.unwrap();
    let mut flush = Box::pin(db.flush());
    let _ = futures::poll!(&mut flush);
    drop(flush);
    // A sync under Sync answers at once; queued after the flush, its
    // answer means the writer sealed the slab.
    db.sync().await.unwrap();
    db.flush().await.unwrap();
    assert_eq!(db.stats().segments, 1);
    db.close().await.unwrap();

    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path(), Durability::None).await;
    db.put("k", "v").await.unwrap();
    let mut sync = Box::pin(db.sync());
    let _ = futures::poll!(&mut sync);
    drop(sync);
    // The writer handles requests in order: this one waits behind the
    // dropped sync's flush.
    db.flush().await.unwrap();
    assert_eq!(db.stats().slabs_in_memory, 0);
    drop(db);
    common::wait_unlocked(dir.path());
    let db = open(dir.path(), Durability::None).await;
    assert_eq!(db.get("k").await.unwrap().unwrap(), "v");
    db.close().await.unwrap();
}

/// close polled once and dropped: the store shuts down, every clone gets
/// `Closed`, and the lock is released while a clone still lives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_close_still_releases_the_lock() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path(), Durability::Sync).await;
    let clone = db.clone();
    db.put("k", "v").await.unwrap();
    let mut close = Box::pin(db.close());
    let _ = futures::poll!(&mut close);
    drop(close);
    common::wait_unlocked(dir.path());
    assert!(matches!(
        clone.put("k", "w").await,
        Err(silt::Error::Closed)
    ));
    let db = open(dir.path(), Durability::Sync).await;
    assert_eq!(db.get("k").await.unwrap().unwrap(), "v");
    db.close().await.unwrap();
    drop(clone);
}

/// open polled once and dropped: the store it was opening goes away with
/// its lock, and the next open finds every write of before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_open_leaves_the_store_to_the_next_open() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path(), Durability::Sync).await;
    db.put("k", "v").await.unwrap();
    db.close().await.unwrap();
    let mut opening = Box::pin(Db::open(dir.path()));
    let _ = futures::poll!(&mut opening);
    drop(opening);
    let db = common::open_after_crash(Db::builder(dir.path())).await;
    assert_eq!(db.get("k").await.unwrap().unwrap(), "v");
    db.close().await.unwrap();
}

/// compact dropped part-way: nothing lost, and the next compaction
/// finishes the job.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_compaction_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::builder(dir.path())
        .slab_size(64 * 1024)
        .gc_threshold(0.0)
        .open()
        .await
        .unwrap();
    for i in 0..3000u32 {
        db.put(i.to_be_bytes(), vec![1u8; 100]).await.unwrap();
    }
    for i in (0..3000u32).step_by(2) {
        db.delete(i.to_be_bytes()).await.unwrap();
    }
    db.flush().await.unwrap();
    for polls in 1..4 {
        let mut compact = Box::pin(db.compact());
        for _ in 0..polls {
            let _ = futures::poll!(&mut compact);
            tokio::task::yield_now().await;
        }
        drop(compact);
    }
    let report = db.compact().await.unwrap();
    let files = db.file_space();
    assert!(
        files.iter().all(|f| f.live_ratio() > 0.99),
        "{report:?} {files:?}"
    );
    let check = |db: Db| async move {
        for i in 0..3000u32 {
            let got = db.get(i.to_be_bytes()).await.unwrap();
            assert_eq!(got.is_some(), i % 2 == 1, "key {i}");
        }
        db
    };
    let db = check(db).await;
    db.close().await.unwrap();
    check(Db::open(dir.path()).await.unwrap())
        .await
        .close()
        .await
        .unwrap();
}
