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
    /// Drop the runtime under the open store (a process crash).
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

async fn open(path: &Path, d: Durability) -> Db {
    common::small(path).durability(d).open().await.unwrap()
}

async fn assert_same(db: &Db, model: &BTreeMap<Bytes, Bytes>, when: &str) {
    let mut got = BTreeMap::new();
    let mut s = Box::pin(db.scan());
    while let Some(item) = s.next().await {
        let (k, v) = item.unwrap();
        got.insert(k, v);
    }
    assert_eq!(&got, model, "{when}");
    // An overwrite of a record that was not in memory counts twice in
    // `keys` until its old entry is resolved in the background; `flush`
    // waits for that.
    db.flush().await.unwrap();
    assert_eq!(db.stats().keys as usize, model.len(), "{when}");
}

fn run(ops: Vec<Op>, durability: Durability) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    let mut model: BTreeMap<Bytes, Bytes> = BTreeMap::new();
    let mut rt = tokio::runtime::Runtime::new().unwrap();
    let mut db = rt.block_on(open(&path, durability));
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
                assert_eq!(got.as_ref(), model.get(&k(key)), "{when}");
            }
            Op::Flush => {
                rt.block_on(db.flush()).unwrap();
                rt.block_on(assert_same(&db, &model, &when));
            }
            Op::Compact => {
                rt.block_on(db.compact()).unwrap();
                rt.block_on(assert_same(&db, &model, &when));
            }
            Op::Reopen => {
                rt.block_on(db.clone().close()).unwrap();
                db = rt.block_on(open(&path, durability));
                rt.block_on(assert_same(&db, &model, &when));
            }
            Op::Crash => {
                if durability == Durability::None {
                    // Without a WAL a crash loses unflushed writes by design.
                    continue;
                }
                drop(rt);
                drop(db);
                rt = tokio::runtime::Runtime::new().unwrap();
                db = rt.block_on(common::open_after_crash(
                    common::small(&path).durability(durability),
                ));
                rt.block_on(assert_same(&db, &model, &when));
            }
        }
    }
    rt.block_on(assert_same(&db, &model, "at the end"));
    rt.block_on(db.close()).unwrap();
    let db = rt.block_on(open(&path, durability));
    rt.block_on(assert_same(&db, &model, "after the final reopen"));
    rt.block_on(db.close()).unwrap();
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn buffered_store_matches_model(ops in prop::collection::vec(op(), 1..120)) {
        run(ops, Durability::Buffered);
    }

    #[test]
    fn sync_store_matches_model(ops in prop::collection::vec(op(), 1..60)) {
        run(ops, Durability::Sync);
    }

    #[test]
    fn cache_mode_store_matches_model(ops in prop::collection::vec(op(), 1..60)) {
        run(ops, Durability::None);
    }
}
