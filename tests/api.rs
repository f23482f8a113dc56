//! Every public method of `Db`, `Builder` and `WriteBatch`.

mod common;

use bytes::Bytes;
use futures::StreamExt;
use silt::{Db, Durability, Error, WriteBatch};
use std::collections::BTreeMap;

async fn scan_all(db: &Db) -> BTreeMap<Bytes, Bytes> {
    let mut out = BTreeMap::new();
    let mut s = Box::pin(db.scan());
    while let Some(item) = s.next().await {
        let (k, v) = item.unwrap();
        assert!(out.insert(k, v).is_none(), "scan yielded a key twice");
    }
    out
}

#[tokio::test]
async fn put_get_delete_contains() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path()).await.unwrap();
    assert_eq!(db.get(b"a").await.unwrap(), None);
    assert!(!db.contains_key(b"a").await.unwrap());
    db.put("a", "1").await.unwrap();
    db.put(b"b".to_vec(), Bytes::from_static(b""))
        .await
        .unwrap();
    assert_eq!(db.get(b"a").await.unwrap().unwrap(), "1");
    assert_eq!(db.get(b"b").await.unwrap().unwrap(), ""); // empty values are values
    assert!(db.contains_key(b"b").await.unwrap());
    db.put("a", "2").await.unwrap();
    assert_eq!(db.get(b"a").await.unwrap().unwrap(), "2");
    db.delete("a").await.unwrap();
    db.delete("never-existed").await.unwrap();
    assert_eq!(db.get(b"a").await.unwrap(), None);
    assert!(!db.contains_key(b"a").await.unwrap());
    assert_eq!(db.stats().keys, 1);
    db.close().await.unwrap();
}

#[tokio::test]
async fn batches_are_applied_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path()).await.unwrap();
    db.put("gone", "x").await.unwrap();
    let mut b = WriteBatch::new();
    assert!(b.is_empty());
    b.put("k", "first");
    b.put("k", "second");
    b.delete("gone");
    b.put("other", "o");
    b.delete("other");
    assert_eq!(b.len(), 5);
    db.write(b).await.unwrap();
    db.write(WriteBatch::new()).await.unwrap();
    assert_eq!(db.get(b"k").await.unwrap().unwrap(), "second");
    assert_eq!(db.get(b"gone").await.unwrap(), None);
    assert_eq!(db.get(b"other").await.unwrap(), None);
    db.close().await.unwrap();
    let db = Db::open(dir.path()).await.unwrap();
    assert_eq!(db.get(b"k").await.unwrap().unwrap(), "second");
    assert_eq!(db.get(b"gone").await.unwrap(), None);
    assert_eq!(db.get(b"other").await.unwrap(), None);
    db.close().await.unwrap();
}

#[tokio::test]
async fn get_many_with_duplicates_and_missing_keys() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path()).await.unwrap();
    db.put("a", "1").await.unwrap();
    db.put("b", "2").await.unwrap();
    let got = db.get_many(&["a", "missing", "b", "a"]).await.unwrap();
    let want = vec![
        Some(Bytes::from("1")),
        None,
        Some(Bytes::from("2")),
        Some(Bytes::from("1")),
    ];
    assert_eq!(got, want);
    assert!(db.get_many::<&str>(&[]).await.unwrap().is_empty());
    assert!(matches!(
        db.get_many(&["ok", ""]).await,
        Err(Error::InvalidArgument(_))
    ));
    db.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scan_before_and_after_flush_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    // No background GC: its moves would start a new slab right after the
    // flush this test counts slabs after.
    let db = common::small(dir.path())
        .gc_threshold(0.0)
        .open()
        .await
        .unwrap();
    let mut model = BTreeMap::new();
    for i in 0..3000u32 {
        let (k, v) = (
            Bytes::from(format!("key{i:05}")),
            Bytes::from(format!("v{i}-").repeat(8)),
        );
        db.put(k.clone(), v.clone()).await.unwrap();
        model.insert(k, v);
    }
    for i in (0..3000u32).step_by(7) {
        let k = Bytes::from(format!("key{i:05}"));
        db.delete(k.clone()).await.unwrap();
        model.remove(&k);
    }
    assert_eq!(scan_all(&db).await, model, "scan of slabs and segments");
    db.flush().await.unwrap();
    let st = db.stats();
    assert!(st.segments >= 2, "{st:?}");
    assert_eq!(
        st.slabs_in_memory, 0,
        "after flush every slab is a segment: {st:?}"
    );
    assert_eq!(scan_all(&db).await, model, "scan after flush");
    db.close().await.unwrap();
    let db = common::small(dir.path()).open().await.unwrap();
    assert_eq!(scan_all(&db).await, model, "scan after reopen");
    assert_eq!(db.stats().keys, model.len() as u64);
    db.close().await.unwrap();
}

#[tokio::test]
async fn sync_and_flush_in_every_mode() {
    for d in [Durability::Sync, Durability::Buffered, Durability::None] {
        let dir = tempfile::tempdir().unwrap();
        let db = common::small(dir.path())
            .durability(d)
            .open()
            .await
            .unwrap();
        assert_eq!(db.stats().durability, d);
        db.put("a", "1").await.unwrap();
        db.sync().await.unwrap();
        db.flush().await.unwrap();
        assert_eq!(common::data_files(dir.path(), "silt").len(), 1, "{d:?}");
        assert!(common::data_files(dir.path(), "log").is_empty(), "{d:?}");
        db.flush().await.unwrap(); // nothing new: still fine
        assert_eq!(db.get(b"a").await.unwrap().unwrap(), "1");
        db.close().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_report_groups_and_index_memory() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::builder(dir.path())
        .durability(Durability::Buffered)
        .open()
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for t in 0..32 {
        let db = db.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..200 {
                db.put(format!("{t}-{i}"), "v").await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let st = db.stats();
    assert_eq!(st.keys, 6400);
    assert!(st.index_bytes > 0 && st.index_bytes < 6400 * 64, "{st:?}");
    assert!(st.commit_groups > 0 && st.commit_groups <= 6400, "{st:?}");
    assert!(st.avg_group_size >= 1.0 && st.max_group_size >= 1, "{st:?}");
    assert_ne!(
        st.io_backend,
        silt::IoBackend::Auto,
        "stats name the backend that runs"
    );
    db.close().await.unwrap();
}

#[tokio::test]
async fn close_makes_other_clones_return_closed() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path()).await.unwrap();
    let other = db.clone();
    db.put("k", "v").await.unwrap();
    db.close().await.unwrap();
    assert!(matches!(other.put("k", "w").await, Err(Error::Closed)));
    assert!(matches!(other.get(b"k").await, Err(Error::Closed)));
    assert!(matches!(other.flush().await, Err(Error::Closed)));
    let mut s = Box::pin(other.scan());
    assert!(matches!(s.next().await, Some(Err(Error::Closed))));
    other.clone().close().await.unwrap(); // closing twice is fine
                                          // The lock is released: the directory opens again, data intact.
    let db = Db::open(dir.path()).await.unwrap();
    assert_eq!(db.get(b"k").await.unwrap().unwrap(), "v");
    db.close().await.unwrap();
}

#[tokio::test]
async fn values_up_to_a_slab_and_zero_copy() {
    let dir = tempfile::tempdir().unwrap();
    let db = common::small(dir.path()).open().await.unwrap();
    let big = Bytes::from(vec![0xabu8; 59 * 1024]);
    db.put("big", big.clone()).await.unwrap();
    assert_eq!(db.get(b"big").await.unwrap().unwrap(), big);
    // Larger than a slab, alone or in a batch: a file of its own
    // (tests/xl.rs), the batch whole.
    let huge = Bytes::from(vec![1u8; 64 * 1024]);
    let mut batch = silt::WriteBatch::new();
    batch.put("huge", huge.clone());
    batch.put("other", "x");
    db.write(batch).await.unwrap();
    assert_eq!(db.get(b"huge").await.unwrap().unwrap(), huge);
    assert_eq!(db.get(b"other").await.unwrap().unwrap(), "x");
    db.put("huge", huge.clone()).await.unwrap();
    assert_eq!(db.get(b"huge").await.unwrap().unwrap(), huge);
    db.flush().await.unwrap();
    // A value read from a segment stays valid after the store is closed
    // (it owns a reference to the mapping).
    let v = db.get(b"big").await.unwrap().unwrap();
    db.close().await.unwrap();
    assert_eq!(v, big);
}

#[tokio::test]
async fn builder_rejects_bad_knobs_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (Db::builder(dir.path()).slab_size(1000), "slab_size"),
        (Db::builder(dir.path()).slab_size(32 * 1024), "slab_size"),
        (Db::builder(dir.path()).slab_size(2 << 30), "slab_size"),
        (
            Db::builder(dir.path()).slab_size(64 * 1024 + 512),
            "slab_size",
        ),
        (
            Db::builder(dir.path()).max_sealed_slabs(0),
            "max_sealed_slabs",
        ),
        (Db::builder(dir.path()).flush_workers(0), "flush_workers"),
    ];
    for (b, knob) in cases {
        match b.open().await {
            Err(Error::Config(msg)) => assert!(msg.contains(knob), "{msg}"),
            other => panic!("{knob}: expected Config error, got {other:?}"),
        }
    }
    // Every other knob at a non-default value works.
    let db = Db::builder(dir.path())
        .durability(Durability::Buffered)
        .slab_size(1 << 20)
        .max_sealed_slabs(1)
        .flush_workers(1)
        .direct_io(false)
        .verify_checksums(false)
        .open()
        .await
        .unwrap();
    db.put("k", "v").await.unwrap();
    assert!(!db.stats().wal_direct_io);
    db.close().await.unwrap();
}

/// Outside any Tokio runtime (here the `futures` executor) every call
/// works: the store runs on a runtime of its own (issue 17).
#[test]
fn a_store_works_outside_any_tokio_runtime() {
    let dir = tempfile::tempdir().unwrap();
    futures::executor::block_on(async {
        let db = Db::builder(dir.path())
            .slab_size(64 * 1024)
            .gc_threshold(0.0)
            .open()
            .await
            .unwrap();
        for i in 0..2000u32 {
            db.put(i.to_be_bytes(), vec![1u8; 100]).await.unwrap();
        }
        for i in 0..1000u32 {
            db.delete(i.to_be_bytes()).await.unwrap();
        }
        db.sync().await.unwrap();
        db.flush().await.unwrap();
        assert!(db.compact().await.unwrap().files_rewritten > 0);
        assert_eq!(
            db.get(1500u32.to_be_bytes()).await.unwrap().unwrap().len(),
            100
        );
        let follower = Db::open_read_only(dir.path()).await.unwrap();
        follower.refresh().await.unwrap();
        assert!(follower.contains_key(1999u32.to_be_bytes()).await.unwrap());
        follower.close().await.unwrap();
        db.close().await.unwrap();
        let db = Db::open(dir.path()).await.unwrap();
        assert_eq!(db.stats().keys, 1000);
        db.close().await.unwrap();
    });
}

/// `StoreRuntime::Dedicated`: the runtime that opened the store is
/// dropped, the store goes on, and a caller on another runtime (a
/// `current_thread` one) uses it; `close` from there releases the lock.
#[test]
fn a_dedicated_store_outlives_the_runtime_that_opened_it() {
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let open = Db::builder(dir.path())
        .runtime(silt::StoreRuntime::Dedicated)
        .open();
    let db = rt.block_on(open).unwrap();
    rt.block_on(db.put("k", "v")).unwrap();
    drop(rt);
    let rt2 = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt2.block_on(async {
        db.put("k", "w").await.unwrap();
        assert_eq!(db.get("k").await.unwrap().unwrap(), "w");
        db.close().await.unwrap();
        let db = Db::open(dir.path()).await.unwrap();
        assert_eq!(db.get("k").await.unwrap().unwrap(), "w");
        db.close().await.unwrap();
    });
}

/// The default on a multi-thread runtime runs the writer there: when that
/// runtime shuts down, handles elsewhere get `Stopped` with the runtime
/// as its cause (not a hang, not `Closed`), the
/// lock is released without any handle being dropped or closed, and every
/// acknowledged write is there after a reopen.
#[test]
fn a_store_on_the_callers_runtime_stops_with_it_and_releases_its_lock() {
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let db = rt.block_on(Db::open(dir.path())).unwrap();
    rt.block_on(async {
        for i in 0..1000u32 {
            db.put(i.to_be_bytes(), "v").await.unwrap();
        }
    });
    drop(rt);
    common::wait_unlocked(dir.path());
    let rt2 = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt2.block_on(async {
        // Not `Closed`: nobody closed it; the error says what happened.
        match db.put("k", "w").await {
            Err(e @ Error::Stopped { .. }) => {
                let cause = std::error::Error::source(&e).unwrap();
                assert!(cause.to_string().contains("runtime"), "{e}");
            }
            other => panic!("{other:?}"),
        }
        let other = Db::open(dir.path()).await.unwrap();
        assert_eq!(other.stats().keys, 1000);
        other.close().await.unwrap();
    });
    drop(db);
}

/// Keys as users pass them (issue 17): `&str`, `&String`, `Vec<u8>`, byte
/// arrays and `Bytes` everywhere a key is taken; a value is taken as it is.
#[tokio::test]
async fn keys_are_taken_as_users_pass_them() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path()).await.unwrap();
    let key = String::from("user:1");
    db.put(&key, "ada").await.unwrap();
    db.put("user:2", String::from("grace")).await.unwrap();
    db.put(vec![1u8, 2], bytes::Bytes::from_static(b"v"))
        .await
        .unwrap();
    assert_eq!(db.get("user:1").await.unwrap().unwrap(), "ada");
    assert_eq!(db.get(&key).await.unwrap().unwrap(), "ada");
    assert_eq!(db.get(key.clone()).await.unwrap().unwrap(), "ada");
    assert!(db.contains_key(vec![1u8, 2]).await.unwrap());
    assert!(db.contains_key([1u8, 2]).await.unwrap());
    assert!(db.contains_key(bytes::Bytes::from("user:2")).await.unwrap());
    let mut batch = silt::WriteBatch::new();
    batch.put(&key, "lovelace");
    batch.delete(String::from("user:2"));
    db.write(batch).await.unwrap();
    db.delete("user:1").await.unwrap();
    db.delete(&vec![1u8, 2]).await.unwrap();
    assert_eq!(
        db.get_many(&[key.as_str(), "user:2"]).await.unwrap(),
        vec![None, None]
    );
    assert_eq!(db.get([1u8, 2]).await.unwrap(), None);
    db.close().await.unwrap();
}
