//! Injected I/O faults and simulated power loss (feature `fault-injection`,
//! enabled for the tests by the crate's own dev-dependency).
//!
//! - fsync failure: nothing it covered is acknowledged, the store refuses
//!   writes until reopened, reads keep working.
//! - ENOSPC: writes fail with the error, nothing acknowledged is lost, and
//!   writes succeed again once space is freed.
//! - I/O-error sweep: fail the k-th operation for every k of a scripted
//!   workload (once, and from then on); reopen; every acknowledged write is
//!   there.
//! - Crash matrix: power loss at every operation number of the workload
//!   (with and without torn unsynced tails); the recovered store holds every
//!   acknowledged write and nothing that contradicts the history.

mod common;

use bytes::Bytes;
use silt::{
    Db, Durability, Error, Fault, FaultInjector, FaultPlan, IoBackend, OpKind, PowerCut, WriteBatch,
};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

fn builder(path: &Path, inj: &Arc<FaultInjector>, d: Durability) -> silt::Builder {
    Db::builder(path)
        .slab_size(64 * 1024)
        .max_sealed_slabs(2)
        .durability(d)
        // Compaction runs where the script says, so the I/O sequence is the
        // same on every run.
        .gc_threshold(0.0)
        .fault_injector(inj.clone())
}

fn is_enospc(e: &Error) -> bool {
    matches!(e, Error::Io { source, .. } if source.raw_os_error() == Some(libc_enospc()))
}

fn libc_enospc() -> i32 {
    28 // ENOSPC on Linux
}

#[tokio::test]
async fn fsync_failure_refuses_writes_until_reopen() {
    // The blocking backend writes then fdatasyncs; io_uring writes with
    // RWF_DSYNC, where an EIO may be the flush failing and must count as
    // one.
    for (backend, kind) in [
        (IoBackend::Std, OpKind::Sync),
        (IoBackend::Uring, OpKind::DurableWrite),
    ] {
        fsync_failure_round(backend, kind).await;
    }
}

async fn fsync_failure_round(backend: IoBackend, kind: OpKind) {
    let dir = tempfile::tempdir().unwrap();
    let inj = FaultInjector::new();
    let db = builder(dir.path(), &inj, Durability::Sync)
        .io_backend(backend)
        .open()
        .await
        .unwrap();
    db.put("k1", "v1").await.unwrap();
    db.put("k2", "v2").await.unwrap();
    inj.set_plan(Some(FaultPlan {
        kind,
        nth: 1,
        fault: Fault::Eio,
        persistent: false,
    }));
    match db.put("k3", "v3").await {
        Err(Error::Io { op, .. }) => assert_eq!(op, "fdatasync WAL", "{backend:?}"),
        other => panic!("{backend:?}: expected the fsync error, got {other:?}"),
    }
    // Not acknowledged, so not visible.
    assert_eq!(db.get(b"k3").await.unwrap(), None);
    // Later writes are refused even though the disk "works" again: after a
    // failed fsync the kernel may have dropped the dirty pages.
    assert!(matches!(
        db.put("k4", "v4").await,
        Err(Error::Poisoned { .. })
    ));
    assert!(matches!(db.flush().await, Err(Error::Poisoned { .. })));
    // Reads still work.
    assert_eq!(db.get(b"k1").await.unwrap().unwrap(), "v1");
    assert!(db.close().await.is_err());
    let db = Db::open(dir.path()).await.unwrap();
    assert_eq!(db.get(b"k1").await.unwrap().unwrap(), "v1");
    assert_eq!(db.get(b"k2").await.unwrap().unwrap(), "v2");
    assert_eq!(db.get(b"k4").await.unwrap(), None);
    db.put("k5", "v5").await.unwrap();
    db.close().await.unwrap();
}

#[tokio::test]
async fn enospc_fails_writes_then_space_is_freed() {
    // Each durability runs its own whole round: writes refused while the
    // disk is full, accepted once space is back, and the same answers in
    // memory and after a reopen.
    for d in [Durability::Sync, Durability::Buffered] {
        enospc_round(d).await;
    }
}

async fn enospc_round(d: Durability) {
    let dir = tempfile::tempdir().unwrap();
    let inj = FaultInjector::new();
    let db = builder(dir.path(), &inj, d).open().await.unwrap();
    for i in 0..10 {
        db.put(format!("a{i}"), format!("va{i}")).await.unwrap();
    }
    inj.set_plan(Some(FaultPlan {
        kind: OpKind::Write,
        nth: 1,
        fault: Fault::Enospc,
        persistent: true,
    }));
    for i in 0..5 {
        let e = db.put(format!("b{i}"), format!("vb{i}")).await.unwrap_err();
        assert!(is_enospc(&e), "{d:?}: {e:?}");
    }
    let mut b = WriteBatch::new();
    b.put("b-batch", "x");
    assert!(is_enospc(&db.write(b).await.unwrap_err()), "{d:?}");
    // Space is freed.
    inj.set_plan(None);
    for i in 0..10 {
        db.put(format!("c{i}"), format!("vc{i}")).await.unwrap();
    }
    check_after_enospc(&db, d, "before reopen").await;
    db.close().await.unwrap();
    let fresh = Db::builder(dir.path())
        .slab_size(64 * 1024)
        .open()
        .await
        .unwrap();
    check_after_enospc(&fresh, d, "after reopen").await;
    fresh.close().await.unwrap();
}

async fn check_after_enospc(db: &Db, d: Durability, when: &str) {
    for i in 0..10 {
        let (a, c) = (format!("a{i}"), format!("c{i}"));
        assert_eq!(db_get(db, &a).await, Some(format!("va{i}")), "{d:?} {when}");
        assert_eq!(db_get(db, &c).await, Some(format!("vc{i}")), "{d:?} {when}");
    }
    for i in 0..5 {
        assert_eq!(db_get(db, &format!("b{i}")).await, None, "{d:?} {when}");
    }
    assert_eq!(db_get(db, "b-batch").await, None, "{d:?} {when}");
}

async fn db_get(db: &Db, k: &str) -> Option<String> {
    db.get(k.as_bytes())
        .await
        .unwrap()
        .map(|v| String::from_utf8(v.to_vec()).unwrap())
}

#[tokio::test]
async fn a_transient_flush_failure_is_retried() {
    let dir = tempfile::tempdir().unwrap();
    let inj = FaultInjector::new();
    let db = builder(dir.path(), &inj, Durability::Sync)
        .open()
        .await
        .unwrap();
    inj.set_plan(Some(FaultPlan {
        kind: OpKind::Rename,
        nth: 1,
        fault: Fault::Eio,
        persistent: false,
    }));
    db.put("k", "v").await.unwrap();
    db.flush().await.unwrap();
    assert!(db.stats().flush_retries >= 1);
    assert_eq!(db.stats().segments, 1);
    db.put("k2", "v2").await.unwrap();
    db.close().await.unwrap();
    let db = Db::open(dir.path()).await.unwrap();
    assert_eq!(db.stats().keys, 2);
    db.close().await.unwrap();
}

/// Under `Buffered`, `sync` fsyncs the directory only when a WAL file was
/// created since the last one (each is a device cache flush, as costly as
/// the fdatasync before it), and the one it does keeps the new file
/// through a power cut.
#[tokio::test]
async fn buffered_sync_fsyncs_the_directory_only_after_a_new_file() {
    let dir = tempfile::tempdir().unwrap();
    let inj = FaultInjector::new();
    let db = builder(dir.path(), &inj, Durability::Buffered)
        .open()
        .await
        .unwrap();
    let count_dir_syncs = || {
        inj.set_plan(Some(FaultPlan {
            kind: OpKind::SyncDir,
            nth: u64::MAX,
            fault: Fault::Eio,
            persistent: false,
        }))
    };
    db.put("k0", "v").await.unwrap();
    count_dir_syncs();
    db.sync().await.unwrap();
    assert_eq!(inj.plan_ops(), 1, "the first sync covers what open created");
    count_dir_syncs();
    for i in 1..20 {
        db.put(format!("k{i}"), "v").await.unwrap();
        db.sync().await.unwrap();
    }
    assert_eq!(inj.plan_ops(), 0, "no file created, no directory fsync");
    // A new slab, so a new WAL file for the next write.
    db.flush().await.unwrap();
    count_dir_syncs();
    db.put("after-flush", "v").await.unwrap();
    db.sync().await.unwrap();
    db.put("after-flush-2", "v").await.unwrap();
    db.sync().await.unwrap();
    assert_eq!(inj.plan_ops(), 1, "one fsync for the new file, then none");
    // Power is cut right after: the new file and both keys are there.
    inj.freeze_at(inj.ops() + 1);
    let _ = db.close().await;
    common::wait_unlocked(dir.path());
    inj.power_cut(&dir.path().join("data"), PowerCut::Clean)
        .unwrap();
    let db = Db::builder(dir.path()).open().await.unwrap();
    for key in ["k0", "k19", "after-flush", "after-flush-2"] {
        assert_eq!(db.get(key).await.unwrap().unwrap(), "v", "{key}");
    }
    db.close().await.unwrap();
}

/// Issue 16.6: a flush that failed after its rename (here the directory
/// fsync) retried by reopening `<id>.log`, which the rename had moved, and
/// poisoned the store though the segment was whole. The retry now picks up
/// after the rename.
#[tokio::test]
async fn a_flush_failing_after_its_rename_is_retried_from_there() {
    let dir = tempfile::tempdir().unwrap();
    let inj = FaultInjector::new();
    let db = builder(dir.path(), &inj, Durability::Sync)
        .open()
        .await
        .unwrap();
    db.put("k", "v").await.unwrap();
    inj.set_plan(Some(FaultPlan {
        kind: OpKind::SyncDir,
        nth: 1,
        fault: Fault::Eio,
        persistent: false,
    }));
    db.flush().await.unwrap();
    assert_eq!(inj.faults_injected(), 1);
    assert!(db.stats().flush_retries >= 1);
    assert_eq!(db.stats().segments, 1);
    db.put("k2", "v2").await.unwrap();
    db.close().await.unwrap();
    let db = Db::open(dir.path()).await.unwrap();
    assert_eq!(db.get("k").await.unwrap().unwrap(), "v");
    assert_eq!(db.stats().keys, 2);
    db.close().await.unwrap();
}

#[tokio::test]
async fn a_lasting_flush_failure_poisons_but_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let inj = FaultInjector::new();
    let db = builder(dir.path(), &inj, Durability::Sync)
        .open()
        .await
        .unwrap();
    db.put("k", "v").await.unwrap();
    inj.set_plan(Some(FaultPlan {
        kind: OpKind::Rename,
        nth: 1,
        fault: Fault::Eio,
        persistent: true,
    }));
    match db.flush().await {
        Err(e @ Error::Poisoned { .. }) => {
            let Error::Poisoned { cause, source } = &e else {
                unreachable!()
            };
            assert!(cause.contains("publish segment"), "{cause}");
            // The failure itself, not only its text (issue 17).
            assert!(matches!(**source, Error::Io { .. }), "{source:?}");
            assert!(std::error::Error::source(&e).is_some());
        }
        other => panic!("expected Poisoned, got {other:?}"),
    }
    assert!(matches!(
        db.put("k2", "v2").await,
        Err(Error::Poisoned { .. })
    ));
    assert_eq!(db.get(b"k").await.unwrap().unwrap(), "v");
    let _ = db.close().await;
    let db = Db::open(dir.path()).await.unwrap();
    assert_eq!(db.get(b"k").await.unwrap().unwrap(), "v");
    db.close().await.unwrap();
}

// ---- the scripted workload shared by the sweep and the crash matrix ----

#[derive(Debug, Clone)]
enum Step {
    Put(u32, usize),
    Delete(u32),
    Batch(Vec<(u32, Option<usize>)>),
    Flush,
    Compact,
    /// `Db::sync`: what `Buffered` acknowledged so far becomes durable.
    Sync,
}

const STEPS: usize = 48;

/// Puts of 0.6–3 KiB into 64 KiB slabs (a rotation every ~30 steps),
/// deletes, batches (two of them larger than a slab), syncs, flushes, and compactions right after a flush (moves,
/// their sync, deleting the old segment).
fn script() -> Vec<Step> {
    (0..STEPS)
        .map(|i| {
            let k = (i % 9) as u32;
            if i == 20 || i == 38 {
                // 90 KB: larger than a slab, so a file of its own.
                Step::Batch(vec![
                    (k, Some(30_000)),
                    ((k + 1) % 9, Some(30_000)),
                    ((k + 3) % 9, Some(30_000)),
                ])
            } else if i % 16 == 15 {
                Step::Flush
            } else if i > 0 && i % 16 == 0 {
                Step::Compact
            } else if i % 16 == 9 {
                Step::Sync
            } else if i % 7 == 3 {
                Step::Batch(vec![
                    (k, Some(300)),
                    ((k + 4) % 9, None),
                    ((k + 2) % 9, Some(1200)),
                ])
            } else if i % 5 == 2 {
                Step::Delete(k)
            } else {
                Step::Put(k, 600 + (i * 97) % 2500)
            }
        })
        .collect()
}

fn key(k: u32) -> Bytes {
    Bytes::from(format!("key{k}"))
}

fn value(step: usize, k: u32, len: usize) -> Bytes {
    let mut v = format!("{step}:{k}:").into_bytes();
    v.resize(len.max(v.len()), b'.');
    Bytes::from(v)
}

/// (key, value-or-delete) effects of a step, in order.
fn effects(step: usize, s: &Step) -> Vec<(u32, Option<Bytes>)> {
    match s {
        Step::Put(k, len) => vec![(*k, Some(value(step, *k, *len)))],
        Step::Delete(k) => vec![(*k, None)],
        Step::Batch(items) => items
            .iter()
            .map(|(k, l)| (*k, l.map(|len| value(step, *k, len))))
            .collect(),
        Step::Flush | Step::Compact | Step::Sync => vec![],
    }
}

/// Runs the script; returns which steps were acknowledged. Every error must
/// be an I/O error or the poisoned state, never anything else.
async fn run_script(db: &Db, steps: &[Step]) -> Vec<bool> {
    let mut acked = Vec::new();
    for (i, s) in steps.iter().enumerate() {
        let res = match s {
            Step::Put(k, len) => db.put(key(*k), value(i, *k, *len)).await,
            Step::Delete(k) => db.delete(key(*k)).await,
            Step::Batch(items) => {
                let mut b = WriteBatch::new();
                for (k, l) in items {
                    match l {
                        Some(len) => b.put(key(*k), value(i, *k, *len)),
                        None => b.delete(key(*k)),
                    }
                }
                db.write(b).await
            }
            Step::Flush => db.flush().await,
            Step::Compact => db.compact().await.map(|_| ()),
            Step::Sync => db.sync().await,
        };
        if let Err(e) = &res {
            assert!(
                matches!(e, Error::Io { .. } | Error::Poisoned { .. }),
                "step {i}: {e:?}"
            );
        }
        acked.push(res.is_ok());
    }
    acked
}

/// Fails (instead of hanging CI) if one phase of an iteration takes
/// a minute; each normally takes milliseconds.
async fn hang_guard<T>(what: &str, phase: &str, fut: impl std::future::Future<Output = T>) -> T {
    match tokio::time::timeout(std::time::Duration::from_secs(60), fut).await {
        Ok(v) => v,
        Err(_) => panic!("{what}: {phase} did not finish in 60 s"),
    }
}

/// Every key holds the value of its last acknowledged write, or of a write
/// that failed after it (a failed write may or may not have landed); a
/// batch is all or nothing.
async fn check(db: &Db, steps: &[Step], acked: &[bool], what: &str) {
    let mut want: BTreeMap<u32, Vec<Option<Bytes>>> = BTreeMap::new();
    for (i, s) in steps.iter().enumerate() {
        for (k, v) in effects(i, s) {
            let c = want.entry(k).or_insert_with(|| vec![None]);
            if acked[i] {
                *c = vec![v];
            } else {
                c.push(v);
            }
        }
    }
    for (k, candidates) in &want {
        let got = db.get(&key(*k)).await.unwrap();
        assert!(
            candidates.contains(&got),
            "{what}: key{k} = {got:?}, expected one of {candidates:?}"
        );
    }
    for (i, s) in steps.iter().enumerate() {
        if let (Step::Batch(items), false) = (s, acked[i]) {
            // A failed batch: if its first put landed, all of it did.
            let (k0, v0) = (items[0].0, value(i, items[0].0, items[0].1.unwrap_or(0)));
            if db.get(&key(k0)).await.unwrap() == Some(v0) {
                for (k, v) in effects(i, s) {
                    let later_write = steps[i + 1..]
                        .iter()
                        .enumerate()
                        .any(|(j, t)| effects(i + 1 + j, t).iter().any(|(kk, _)| *kk == k));
                    if !later_write {
                        assert_eq!(
                            db.get(&key(k)).await.unwrap(),
                            v,
                            "{what}: batch {i} half applied"
                        );
                    }
                }
            }
        }
    }
}

/// Operations the scripted workload performs (the dry run).
async fn count_ops(d: Durability) -> u64 {
    let dir = tempfile::tempdir().unwrap();
    let inj = FaultInjector::new();
    let db = builder(dir.path(), &inj, d).open().await.unwrap();
    let acked = run_script(&db, &script()).await;
    assert!(acked.iter().all(|&a| a));
    let st = db.stats();
    // The script's compactions rewrite and delete segments, so their I/O is
    // part of what the sweep and the crash matrix cover.
    assert!(st.gc_files >= 2, "{st:?}");
    db.close().await.unwrap();
    inj.ops()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn io_error_sweep_every_operation() {
    let steps = script();
    let n = count_ops(Durability::Sync).await;
    // About 75 on io_uring (a durable write is one operation), 118 on std.
    assert!(n > 60, "the workload does real I/O: {n} ops");
    let mut injected = 0;
    for k in 1..=n {
        for persistent in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            let inj = FaultInjector::new();
            let db = builder(dir.path(), &inj, Durability::Sync)
                .open()
                .await
                .unwrap();
            inj.set_plan(Some(FaultPlan {
                kind: OpKind::Any,
                nth: k,
                fault: if k % 2 == 0 {
                    Fault::Eio
                } else {
                    Fault::ShortWrite
                },
                persistent,
            }));
            let what = format!("fault at op {k} (persistent: {persistent})");
            let acked = hang_guard(&what, "script", run_script(&db, &steps)).await;
            injected += inj.faults_injected();
            let _ = hang_guard(&what, "close", db.close()).await;
            let db = hang_guard(
                &what,
                "reopen",
                common::open_after_crash(Db::builder(dir.path()).slab_size(64 * 1024)),
            )
            .await;
            hang_guard(&what, "check", check(&db, &steps, &acked, &what)).await;
            hang_guard(&what, "close after check", db.close())
                .await
                .unwrap();
        }
    }
    assert!(
        injected >= n,
        "{injected} faults injected over {n} operations"
    );
    eprintln!("I/O-error sweep: {n} operations x 2 modes, {injected} faults injected");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn power_loss_at_every_operation() {
    power_loss_matrix(Durability::Sync).await;
}

/// Under `Buffered` a write is durable once a later `sync` or `flush`
/// succeeded; until then a power cut may keep it or not, and any of its
/// unsynced pages (a log's header page included) may survive on its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn power_loss_at_every_operation_buffered() {
    power_loss_matrix(Durability::Buffered).await;
}

/// Which steps a power cut must keep: under `Sync` every acknowledged one;
/// under `Buffered` those a later successful `sync` or `flush` covered.
fn durable_steps(d: Durability, steps: &[Step], acked: &[bool]) -> Vec<bool> {
    if d == Durability::Sync {
        return acked.to_vec();
    }
    let mut covered = false;
    let mut durable = vec![false; steps.len()];
    for i in (0..steps.len()).rev() {
        if acked[i] && matches!(steps[i], Step::Sync | Step::Flush) {
            covered = true;
        }
        durable[i] = acked[i] && covered;
    }
    durable
}

async fn power_loss_matrix(d: Durability) {
    let steps = script();
    let n = count_ops(d).await;
    let mut points = 0;
    for k in 1..=n + 1 {
        for cut in [PowerCut::Clean, PowerCut::TornTail, PowerCut::AnyPages] {
            let dir = tempfile::tempdir().unwrap();
            let inj = FaultInjector::new();
            let db = builder(dir.path(), &inj, d).open().await.unwrap();
            inj.freeze_at(k);
            let what = format!("{d:?}: power loss at op {k} ({cut:?})");
            let acked = hang_guard(&what, "script", run_script(&db, &steps)).await;
            let _ = hang_guard(&what, "close", db.close()).await;
            // Wait for the dead store's threads before rewriting its files.
            common::wait_unlocked(dir.path());
            inj.power_cut(&dir.path().join("data"), cut).unwrap();
            let db = hang_guard(
                &what,
                "reopen",
                Db::builder(dir.path()).slab_size(64 * 1024).open(),
            )
            .await
            .unwrap();
            let durable = durable_steps(d, &steps, &acked);
            hang_guard(&what, "check", check(&db, &steps, &durable, &what)).await;
            hang_guard(&what, "close after check", db.close())
                .await
                .unwrap();
            points += 1;
        }
    }
    eprintln!("crash matrix ({d:?}): {points} power-loss points over {n} operations checked");
}
