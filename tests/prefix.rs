//! DESIGN §3.3 across files: after a power cut, the recovered store is the
//! state after some prefix of the acknowledged writes, even when the writes
//! were acknowledged before they were durable (`Buffered`, `None`) and
//! their slabs span many files, some of them still being flushed.
//!
//! One task writes in order, so the history is one sequence. A power cut at
//! every I/O operation of the workload keeps a random part of each file's
//! unsynced bytes (`torn_tail`), independently per file: a later file can
//! keep bytes its predecessor lost, which is what recovery must not turn
//! into a state no prefix of the history had.

use silt::{Db, Durability, FaultInjector};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

mod common;

const KEYS: u32 = 12;
const STEPS: usize = 120;

fn builder(path: &Path, inj: &Arc<FaultInjector>, d: Durability) -> silt::Builder {
    Db::builder(path)
        .slab_size(64 * 1024)
        .max_sealed_slabs(4)
        .flush_workers(2)
        .durability(d)
        .gc_threshold(0.0)
        .fault_injector(inj.clone())
}

fn key(k: u32) -> Vec<u8> {
    format!("key{k}").into_bytes()
}

/// Step `i` writes key `i % KEYS`; the value names the step, ~2–6 KiB so
/// the slabs (64 KiB) rotate every dozen steps.
fn value(i: usize) -> Vec<u8> {
    let mut v = format!("step{i};").into_bytes();
    v.resize(2048 + (i * 331) % 4096, b'a' + (i % 26) as u8);
    v
}

/// What the store holds after the first `p` steps.
fn state_after(p: usize) -> BTreeMap<u32, Vec<u8>> {
    let mut m = BTreeMap::new();
    for i in 0..p {
        m.insert(i as u32 % KEYS, value(i));
    }
    m
}

/// Runs the steps; returns how many were acknowledged (all before the first
/// failure) and how many a completed `sync()` covered.
async fn run(db: &Db) -> (usize, usize) {
    let mut synced = 0;
    for i in 0..STEPS {
        if db.put(key(i as u32 % KEYS), value(i)).await.is_err() {
            return (i, synced);
        }
        if i % 40 == 39 && db.sync().await.is_ok() {
            synced = i + 1;
        }
    }
    (STEPS, synced)
}

async fn recovered(db: &Db) -> BTreeMap<u32, Vec<u8>> {
    let mut m = BTreeMap::new();
    for k in 0..KEYS {
        if let Some(v) = db.get(&key(k)).await.unwrap() {
            m.insert(k, v.to_vec());
        }
    }
    m
}

async fn count_ops(d: Durability) -> u64 {
    let dir = tempfile::tempdir().unwrap();
    let inj = FaultInjector::new();
    let db = builder(dir.path(), &inj, d).open().await.unwrap();
    assert_eq!(run(&db).await.0, STEPS);
    db.close().await.unwrap();
    inj.ops()
}

async fn power_loss_sweep(d: Durability) {
    let n = count_ops(d).await;
    assert!(n > 20, "the workload does real I/O: {n} ops");
    let states: Vec<_> = (0..=STEPS).map(state_after).collect();
    let mut cut_files = 0u64;
    for k in 1..=n + 1 {
        let dir = tempfile::tempdir().unwrap();
        let inj = FaultInjector::new();
        let db = builder(dir.path(), &inj, d).open().await.unwrap();
        inj.freeze_at(k);
        let (acked, synced) = run(&db).await;
        let _ = db.close().await;
        common::wait_unlocked(dir.path());
        inj.power_loss(&dir.path().join("data"), true).unwrap();
        let db = Db::builder(dir.path())
            .slab_size(64 * 1024)
            .durability(d)
            .open()
            .await
            .unwrap();
        let got = recovered(&db).await;
        let prefix = (synced..=acked).find(|&p| states[p] == got);
        assert!(
            prefix.is_some(),
            "{d:?}, power cut at op {k} of {n}: the recovered state is no prefix of \
             the {acked} acknowledged steps ({synced} synced): {:?}",
            got.iter()
                .map(|(k, v)| (
                    *k,
                    String::from_utf8_lossy(&v[..v.len().min(10)]).into_owned()
                ))
                .collect::<Vec<_>>()
        );
        cut_files += db.stats().recovered_dropped_files;
        db.close().await.unwrap();
    }
    eprintln!("{d:?}: {} power cuts checked; recovery set aside {cut_files} files after a cut predecessor", n + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buffered_power_loss_recovers_a_prefix() {
    power_loss_sweep(Durability::Buffered).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unlogged_power_loss_recovers_a_prefix() {
    power_loss_sweep(Durability::None).await;
}

/// A file cut short by hand: `verify` names the files after it, `open` sets
/// them aside into `dropped/` and keeps exactly the writes before the cut.
#[tokio::test]
async fn files_after_a_short_unsealed_file_are_set_aside() {
    let dir = tempfile::tempdir().unwrap();
    let db = common::small(dir.path()).open().await.unwrap();
    for i in 0..100u32 {
        db.put(key(i), vec![b'v'; 3000]).await.unwrap();
    }
    db.close().await.unwrap();
    let files = common::data_files(dir.path(), "silt");
    assert!(files.len() >= 4, "{files:?}");
    // The second file, unsealed again and cut inside its first record.
    let short = files[1].with_extension("log");
    std::fs::rename(&files[1], &short).unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&short)
        .unwrap()
        .set_len(4096 + 100)
        .unwrap();

    let report = silt::verify(dir.path(), |_, _| {}).unwrap();
    assert_eq!(report.to_set_aside, files[2..].to_vec());
    assert!(report.is_ok(), "{:?}", report.problems);

    let db = common::small(dir.path()).open().await.unwrap();
    let st = db.stats();
    assert_eq!(st.recovered_dropped_files, (files.len() - 2) as u64);
    assert!(st.recovered_torn_bytes > 0);
    let mut present = Vec::new();
    for i in 0..100u32 {
        present.push(db.get(&key(i)).await.unwrap().is_some());
    }
    // Exactly the first file's writes: a prefix, and not all of it.
    let kept = present.iter().take_while(|p| **p).count();
    assert!(kept > 0 && kept < 100, "{kept}");
    assert!(present[kept..].iter().all(|p| !p), "{present:?}");
    db.close().await.unwrap();
    for f in &files[2..] {
        assert!(!f.exists());
        let aside = dir.path().join("dropped").join(f.file_name().unwrap());
        assert!(aside.exists(), "{}", aside.display());
    }
    // Reopening again changes nothing more, and new files take ids past
    // the set-aside ones.
    let db = common::small(dir.path()).open().await.unwrap();
    assert_eq!(db.stats().recovered_dropped_files, 0);
    assert_eq!(db.stats().keys, kept as u64);
    db.put("after", "reopen").await.unwrap();
    db.close().await.unwrap();
    let newest = common::data_files(dir.path(), "silt").pop().unwrap();
    assert!(newest > *files.last().unwrap(), "{}", newest.display());
}
