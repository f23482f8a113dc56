//! Model test: random put (some larger than a slab) / delete / batch / get /
//! flush / compact / close-and-reopen / crash-and-reopen against a BTreeMap,
//! with a 64 KiB slab so rotation, flushing and background GC happen
//! constantly. The store and the model must agree after every step.

mod common;

use bytes::Bytes;
use futures::StreamExt;
use proptest::prelude::*;
use silt::{Db, Durability, WriteBatch};
use std::collections::BTreeMap;
use std::path::Path;

#[derive(Debug, Clone)]
enum Op {
    Put(u8, usize),
    Delete(u8),
    Batch(Vec<(u8, Option<usize>)>),
    Get(u8),
    Flush,
    /// `Db::compact` (background GC also runs, at its default threshold).
    Compact,
    Reopen,
    /// Stop the store where it is (a process crash).
    Crash,
}

fn op() -> impl Strategy<Value = Op> {
    // Few keys, so overwrites and deletes of existing keys are common;
    // values up to 6 KiB, so a 64 KiB slab fills every few dozen ops.
    let key = 0u8..24;
    let len = prop_oneof![0usize..64, 64usize..6000];
    prop_oneof![
        8 => (key.clone(), len.clone()).prop_map(|(k, l)| Op::Put(k, l)),
        // Larger than the 64 KiB slab: an XL value file.
        1 => (key.clone(), 65_000usize..150_000).prop_map(|(k, l)| Op::Put(k, l)),
        3 => key.clone().prop_map(Op::Delete),
        2 => prop::collection::vec((key.clone(), prop::option::weighted(0.7, len)), 1..6).prop_map(Op::Batch),
        4 => key.prop_map(Op::Get),
        1 => Just(Op::Flush),
        2 => Just(Op::Compact),
        1 => Just(Op::Reopen),
        1 => Just(Op::Crash),
    ]
}

fn k(i: u8) -> Bytes {
    Bytes::from(format!("key-{i}"))
}

/// A value that says which step wrote it, so a stale value is caught.
fn v(step: usize, len: usize) -> Bytes {
    let stamp = format!("<{step}>");
    Bytes::from(
        stamp
            .bytes()
            .cycle()
            .take(len.max(stamp.len()))
            .collect::<Vec<u8>>(),
    )
}

/// Cache mode: a capacity of three 64 KiB slabs, so eviction runs.
const CACHE_CAPACITY: u64 = 192 << 10;

fn builder(path: &Path, d: Durability, cache: bool) -> silt::Builder {
    let b = common::small(path).durability(d);
    if cache {
        b.capacity(CACHE_CAPACITY)
    } else {
        b
    }
}

async fn open(path: &Path, d: Durability, cache: bool) -> Db {
    builder(path, d, cache).open().await.unwrap()
}

/// The store holds exactly the model; in cache mode, a subset of it
/// (eviction drops the oldest files' pairs, never changes a value or
/// brings back an older one).
async fn assert_same(db: &Db, model: &BTreeMap<Bytes, Bytes>, when: &str, cache: bool) {
    let mut got = BTreeMap::new();
    let mut s = Box::pin(db.scan());
    while let Some(item) = s.next().await {
        let (k, v) = item.unwrap();
        got.insert(k, v);
    }
    drop(s);
    if cache {
        for (k, v) in &got {
            assert_eq!(Some(v), model.get(k), "{when}: {k:?}");
        }
        db.flush().await.unwrap();
        assert!(db.stats().keys as usize <= model.len(), "{when}");
        return;
    }
    assert_eq!(&got, model, "{when}");
    assert_eq!(db.stats().keys as usize, model.len(), "{when}");
}

fn run(ops: Vec<Op>, durability: Durability, cache: bool) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    let mut model: BTreeMap<Bytes, Bytes> = BTreeMap::new();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut db = rt.block_on(open(&path, durability, cache));
    for (step, op) in ops.into_iter().enumerate() {
        let when = format!("after step {step}: {op:?}");
        match op {
            Op::Put(key, len) => {
                rt.block_on(db.put(k(key), v(step, len))).unwrap();
                model.insert(k(key), v(step, len));
            }
            Op::Delete(key) => {
                rt.block_on(db.delete(k(key))).unwrap();
                model.remove(&k(key));
            }
            Op::Batch(items) => {
                let mut b = WriteBatch::new();
                for (key, val) in items {
                    match val {
                        Some(len) => {
                            b.put(k(key), v(step, len));
                            model.insert(k(key), v(step, len));
                        }
                        None => {
                            b.delete(k(key));
                            model.remove(&k(key));
                        }
                    }
                }
                rt.block_on(db.write(b)).unwrap();
            }
            Op::Get(key) => {
                let got = rt.block_on(db.get(&k(key))).unwrap();
                if !(cache && got.is_none()) {
                    assert_eq!(got.as_ref(), model.get(&k(key)), "{when}");
                }
            }
            Op::Flush => {
                rt.block_on(db.flush()).unwrap();
                rt.block_on(assert_same(&db, &model, &when, cache));
            }
            Op::Compact => {
                rt.block_on(db.compact()).unwrap();
                rt.block_on(assert_same(&db, &model, &when, cache));
            }
            Op::Reopen => {
                rt.block_on(db.clone().close()).unwrap();
                db = rt.block_on(open(&path, durability, cache));
                rt.block_on(assert_same(&db, &model, &when, cache));
            }
            Op::Crash => {
                if durability == Durability::None {
                    // Without a WAL a crash loses unflushed writes by design.
                    continue;
                }
                rt.block_on(db.simulate_crash());
                db = rt.block_on(common::open_after_crash(builder(&path, durability, cache)));
                rt.block_on(assert_same(&db, &model, &when, cache));
            }
        }
    }
    rt.block_on(assert_same(&db, &model, "at the end", cache));
    rt.block_on(db.close()).unwrap();
    let db = rt.block_on(open(&path, durability, cache));
    rt.block_on(assert_same(&db, &model, "after the final reopen", cache));
    rt.block_on(db.close()).unwrap();
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn buffered_store_matches_model(ops in prop::collection::vec(op(), 1..120)) {
        run(ops, Durability::Buffered, false);
    }

    #[test]
    fn sync_store_matches_model(ops in prop::collection::vec(op(), 1..60)) {
        run(ops, Durability::Sync, false);
    }

    /// No WAL: a crash is skipped (unflushed writes are lost by design).
    #[test]
    fn unlogged_store_matches_model(ops in prop::collection::vec(op(), 1..60)) {
        run(ops, Durability::None, false);
    }

    /// Cache mode with a capacity that evicts, logged (`Sync`) so that a
    /// crash is checked too: what is read back is always the model's value
    /// or nothing.
    #[test]
    fn cache_mode_store_matches_model(ops in prop::collection::vec(op(), 1..120)) {
        run(ops, Durability::Sync, true);
    }
}
