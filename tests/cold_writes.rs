//! Overwrites and deletes of keys whose records are not in memory, and the
//! defects an outside review found around them (issue 26). Each test here
//! reproduces one report and failed on the code it was filed against.
//! CI runs this file on both backends.

mod common;

use bytes::Bytes;
use futures::StreamExt;
use silt::{Db, Durability, Error, Fault, FaultInjector, FaultPlan, OpKind, WriteBatch};
use std::collections::BTreeMap;

fn key(i: u64) -> String {
    format!("key{i:07}")
}

fn small_key(i: u64) -> String {
    format!("small{i:07}")
}

fn value(i: u64, round: u64, len: usize) -> Vec<u8> {
    let mut v = format!("{i}:{round}:").into_bytes();
    v.resize(len, (i % 251) as u8);
    v
}

/// Record bytes of a put (format.md: an 11-byte header, the key, the value).
fn record_len(key: &[u8], value: &[u8]) -> u64 {
    (11 + key.len() + value.len()) as u64
}

/// Every pair `scan` yields, failing on an error or a key seen twice.
async fn scanned(db: &Db) -> BTreeMap<Bytes, Bytes> {
    let mut got = BTreeMap::new();
    let mut s = Box::pin(db.scan());
    while let Some(item) = s.next().await {
        let (k, v) = item.unwrap();
        assert!(got.insert(k.clone(), v).is_none(), "{k:?} scanned twice");
    }
    got
}

/// The store holds exactly `model`: get, contains_key, scan, the key
/// count and the live bytes all agree with it.
async fn assert_holds(db: &Db, model: &BTreeMap<Bytes, Bytes>, when: &str) {
    for (k, v) in model {
        assert_eq!(db.get(k).await.unwrap().as_ref(), Some(v), "{when}: {k:?}");
    }
    let got = scanned(db).await;
    let extra: Vec<&Bytes> = got.keys().filter(|k| !model.contains_key(*k)).collect();
    assert!(
        extra.is_empty(),
        "{when}: {} keys scanned that the model does not hold, first {:?}",
        extra.len(),
        extra[0]
    );
    assert_eq!(got.len(), model.len(), "{when}: scan");
    assert_eq!(db.stats().keys, model.len() as u64, "{when}: stats().keys");
    let live: u64 = db.file_space().iter().map(|f| f.live_bytes).sum();
    let want: u64 = model.iter().map(|(k, v)| record_len(k, v)).sum();
    assert_eq!(live, want, "{when}: live bytes");
}

/// Issue 26, defect 1 (scaled down from 100,000 keys of 4 KiB): cold
/// overwrites in key order, then deletes of small keys, with background GC
/// running; after a clean close and reopen no deleted key may read a
/// value. GC used to drop a tombstone while an older entry of its key was
/// still unresolved.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_keys_stay_deleted_after_cold_overwrites_gc_and_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let scale: u64 = std::env::var("SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(12);
    let (big, small) = (scale * 1000, scale * 250);
    let db = Db::builder(dir.path()).open().await.unwrap();
    let mut model: BTreeMap<Bytes, Bytes> = BTreeMap::new();
    for chunk in (0..big).collect::<Vec<_>>().chunks(200) {
        let mut b = WriteBatch::new();
        for &i in chunk {
            b.put(key(i), value(i, 0, 4096));
            model.insert(key(i).into(), value(i, 0, 4096).into());
        }
        db.write(b).await.unwrap();
    }
    let mut b = WriteBatch::new();
    for i in 0..small {
        b.put(small_key(i), value(i, 0, 100));
        model.insert(small_key(i).into(), value(i, 0, 100).into());
    }
    db.write(b).await.unwrap();
    db.close().await.unwrap();
    let open = || {
        Db::builder(dir.path())
            .slab_size(64 << 10)
            .durability(Durability::Buffered)
            .open()
    };
    let db = open().await.unwrap();
    db.drop_page_cache();
    for chunk in (0..big).collect::<Vec<_>>().chunks(200) {
        let mut b = WriteBatch::new();
        for &i in chunk {
            b.put(key(i), value(i, 1, 4096));
            model.insert(key(i).into(), value(i, 1, 4096).into());
        }
        db.write(b).await.unwrap();
    }
    for chunk in (0..small).collect::<Vec<_>>().chunks(200) {
        let mut b = WriteBatch::new();
        for &i in chunk {
            b.delete(small_key(i));
            model.remove(small_key(i).as_bytes());
        }
        db.write(b).await.unwrap();
    }
    for i in 0..small {
        assert_eq!(db.get(small_key(i)).await.unwrap(), None, "before reopen");
    }
    db.flush().await.unwrap();
    db.close().await.unwrap();
    let db = open().await.unwrap();
    let mut back = 0;
    for i in 0..small {
        back += usize::from(db.get(small_key(i)).await.unwrap().is_some());
    }
    assert_eq!(back, 0, "deleted keys that read a value after the reopen");
    assert_holds(&db, &model, "after the reopen").await;
    db.close().await.unwrap();
}

/// Issue 26, defect 1, second half: a transient EIO where the old record
/// of a cold delete is read, then `compact()`. The delete either fails
/// (and the key keeps its value) or succeeds; either way `get`, `scan` and
/// a reopen agree, and nothing reads as "a file that is not loaded".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_eio_reading_an_old_record_then_compact_loses_and_resurrects_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut model: BTreeMap<Bytes, Bytes> = BTreeMap::new();
    let db = common::small(dir.path()).open().await.unwrap();
    for i in 0..400 {
        db.put(key(i), value(i, 0, 1000)).await.unwrap();
        model.insert(key(i).into(), value(i, 0, 1000).into());
    }
    db.close().await.unwrap();
    let inj = FaultInjector::new();
    inj.adopt(&dir.path().join("data")).unwrap();
    let open = || {
        common::small(dir.path())
            .durability(Durability::Buffered)
            .gc_threshold(0.0)
            .fault_injector(inj.clone())
            .open()
    };
    let db = open().await.unwrap();
    db.drop_page_cache();
    inj.set_plan(Some(FaultPlan {
        kind: OpKind::Read,
        nth: 1,
        fault: Fault::Eio,
        persistent: false,
    }));
    let mut failed = 0;
    for i in 0..400 {
        match db.delete(key(i)).await {
            Ok(()) => {
                model.remove(key(i).as_bytes());
            }
            Err(Error::Io { .. }) => failed += 1,
            Err(e) => panic!("delete {i}: {e}"),
        }
    }
    assert!(failed <= 1, "{failed} deletes failed on one injected EIO");
    inj.set_plan(None);
    db.flush().await.unwrap();
    db.compact().await.unwrap();
    assert_holds(&db, &model, "after compact").await;
    db.close().await.unwrap();
    let db = open().await.unwrap();
    assert_holds(&db, &model, "after a reopen").await;
    db.close().await.unwrap();
}

/// Issue 26, defects 5 and 6: cold overwrites and deletes are counted
/// right the moment they are acknowledged (`stats().keys` used to count an
/// unresolved overwrite twice, and a replaced delete's bytes were taken
/// off the live bytes twice).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cold_overwrites_are_counted_right_when_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let mut model: BTreeMap<Bytes, Bytes> = BTreeMap::new();
    let db = common::small(dir.path())
        .gc_threshold(0.0)
        .open()
        .await
        .unwrap();
    for i in 0..2000 {
        db.put(key(i), value(i, 0, 500)).await.unwrap();
        model.insert(key(i).into(), value(i, 0, 500).into());
    }
    db.flush().await.unwrap();
    db.drop_page_cache();
    for round in 1..4 {
        for i in (0..2000).step_by(3 + round as usize) {
            if (i + round) % 2 == 0 {
                db.delete(key(i)).await.unwrap();
                model.remove(key(i).as_bytes());
            } else {
                db.put(key(i), value(i, round, 300)).await.unwrap();
                model.insert(key(i).into(), value(i, round, 300).into());
            }
            assert_eq!(
                db.stats().keys,
                model.len() as u64,
                "round {round}, key {i}"
            );
        }
        db.flush().await.unwrap();
        db.drop_page_cache();
    }
    assert_holds(&db, &model, "after the overwrites").await;
    db.compact().await.unwrap();
    assert_holds(&db, &model, "after compact").await;
    db.close().await.unwrap();
}

/// Issue 26, defect 2: a batch larger than a slab whose second record
/// starts past 1 GiB. The index kept 30 offset bits, so `get("b")` read
/// zeroed bytes at the wrong offset.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_record_past_one_gib_reads_back() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::builder(dir.path())
        .durability(Durability::Buffered)
        .open()
        .await
        .unwrap();
    // calloc'ed: the pages are only read (as zeros) when written out.
    let big = Bytes::from(vec![0u8; (1 << 30) + (64 << 10)]);
    let mut b = WriteBatch::new();
    b.put("a", big);
    b.put("b", "small");
    db.write(b).await.unwrap();
    assert_eq!(db.get("b").await.unwrap().unwrap(), "small");
    assert_eq!(
        db.get("a").await.unwrap().unwrap().len(),
        (1 << 30) + (64 << 10)
    );
    db.close().await.unwrap();
    let db = Db::open(dir.path()).await.unwrap();
    assert_eq!(db.get("b").await.unwrap().unwrap(), "small");
    db.close().await.unwrap();
}

/// The limit defect 2's fix sets: in a write with a file of its own, a
/// record may start up to 2 GiB - 1 (31 offset bits, as footer entries
/// have). One that would start past it is refused, and nothing of the
/// write is visible, now or after a reopen.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_record_past_two_gib_is_refused_whole() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::builder(dir.path())
        .durability(Durability::Buffered)
        .open()
        .await
        .unwrap();
    let mut b = WriteBatch::new();
    b.put("a", Bytes::from(vec![0u8; 2 << 30]));
    b.put("b", "small");
    match db.write(b).await {
        Err(Error::InvalidArgument(msg)) => assert!(msg.contains("2 GiB"), "{msg}"),
        other => panic!("expected InvalidArgument, got {other:?}"),
    }
    assert_eq!(db.get("a").await.unwrap(), None);
    assert_eq!(db.get("b").await.unwrap(), None);
    db.put("c", "after").await.unwrap();
    db.close().await.unwrap();
    let db = Db::open(dir.path()).await.unwrap();
    assert_eq!(db.get("b").await.unwrap(), None);
    assert_eq!(db.get("c").await.unwrap().unwrap(), "after");
    db.close().await.unwrap();
}

/// Issue 26, defect 3: when GC deleted the newest files, a reopened store
/// used their ids again, and a follower that had loaded the old file of
/// that id never read the new one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_sees_writes_after_gc_emptied_the_directory() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path()).await.unwrap();
    db.put("k", "v").await.unwrap();
    db.flush().await.unwrap();
    let follower = Db::open_read_only(dir.path()).await.unwrap();
    assert_eq!(follower.get("k").await.unwrap().unwrap(), "v");
    db.delete("k").await.unwrap();
    db.flush().await.unwrap();
    db.compact().await.unwrap();
    db.close().await.unwrap();
    assert_eq!(
        common::data_files(dir.path(), "silt").len(),
        0,
        "GC should have emptied the directory"
    );
    let db = Db::open(dir.path()).await.unwrap();
    db.put("z", "new").await.unwrap();
    follower.refresh().await.unwrap();
    follower.refresh().await.unwrap();
    assert_eq!(follower.get("z").await.unwrap().unwrap(), "new");
    assert_eq!(follower.get("k").await.unwrap(), None);
    db.flush().await.unwrap();
    follower.refresh().await.unwrap();
    assert_eq!(follower.get("z").await.unwrap().unwrap(), "new");
    db.close().await.unwrap();
    follower.close().await.unwrap();
}

/// Issue 26, defect 4: a read that fails during a scan fails only its own
/// record: every other pair is still yielded. A failed read used to end
/// the whole pass (up to 2M entries) after one `Err`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_read_in_a_scan_fails_only_its_record() {
    let dir = tempfile::tempdir().unwrap();
    let n = 3000u64;
    let db = common::small(dir.path())
        .durability(Durability::Buffered)
        .open()
        .await
        .unwrap();
    for i in 0..n {
        db.put(key(i), value(i, 0, 700)).await.unwrap();
    }
    db.close().await.unwrap();
    let inj = FaultInjector::new();
    inj.adopt(&dir.path().join("data")).unwrap();
    let db = common::small(dir.path())
        .gc_threshold(0.0)
        .fault_injector(inj.clone())
        .open()
        .await
        .unwrap();
    // Overwrite some of them while cold, then scan cold with every 5th
    // read failing: each failure may cost its own record(s), no more.
    db.drop_page_cache();
    for i in (0..n).step_by(7) {
        db.put(key(i), value(i, 1, 700)).await.unwrap();
    }
    db.flush().await.unwrap();
    db.drop_page_cache();
    inj.set_plan(Some(FaultPlan {
        kind: OpKind::Read,
        nth: 5,
        fault: Fault::Eio,
        persistent: false,
    }));
    let (mut ok, mut errs) = (0u64, 0u64);
    let mut s = Box::pin(db.scan());
    while let Some(item) = s.next().await {
        match item {
            Ok(_) => ok += 1,
            Err(Error::Io { .. }) => errs += 1,
            Err(e) => panic!("{e}"),
        }
    }
    drop(s);
    assert_eq!(inj.faults_injected(), 1);
    // A failed window read is retried record by record, so the one fault
    // costs at most one record.
    assert!(errs <= 1, "{errs} errors from one failed read");
    assert_eq!(ok + errs, n, "every other pair is yielded");
    db.close().await.unwrap();
}
