//! `Durability::Sync` keeps several WAL groups in flight: one written while
//! the one before it is fdatasync'ed. These tests fail the pipeline in the
//! middle, with many writers at once, and check the promises:
//! - a write is acknowledged only after an fdatasync that started after its
//!   bytes were written (power loss at many points keeps every ack);
//! - a failed write fails the groups queued behind it, none of them is
//!   visible, and the store goes on;
//! - after a failed fdatasync nothing more is acknowledged.

mod common;

use bytes::Bytes;
use silt::{Db, Durability, Error, Fault, FaultInjector, FaultPlan, IoBackend, OpKind};
use std::path::Path;
use std::sync::Arc;

const TASKS: usize = 16;
const PER_TASK: usize = 30;

fn builder(path: &Path, inj: &Arc<FaultInjector>) -> silt::Builder {
    Db::builder(path)
        .slab_size(1 << 20)
        .durability(Durability::Sync)
        .gc_threshold(0.0)
        .fault_injector(inj.clone())
}

fn value(tag: &str, t: usize, i: usize) -> Bytes {
    // 8 KiB: each group's write takes long enough for the next to queue.
    let mut v = format!("{tag}/{t}/{i}/").into_bytes();
    v.resize(8 << 10, b'v');
    Bytes::from(v)
}

/// `TASKS` tasks each put `PER_TASK` keys at once; every key with its
/// value and the put's result.
async fn concurrent_puts(db: &Db, tag: &str) -> Vec<(String, Bytes, Result<(), Error>)> {
    let mut handles = Vec::new();
    for t in 0..TASKS {
        let db = db.clone();
        let tag = tag.to_string();
        handles.push(tokio::spawn(async move {
            let mut out = Vec::new();
            for i in 0..PER_TASK {
                let key = format!("{tag}-{t:02}-{i:03}");
                let v = value(&tag, t, i);
                let res = db.put(key.clone(), v.clone()).await;
                out.push((key, v, res));
            }
            out
        }));
    }
    let mut all = Vec::new();
    for h in handles {
        all.extend(h.await.unwrap());
    }
    all
}

async fn assert_acked_present(db: &Db, results: &[(String, Bytes, Result<(), Error>)], what: &str) {
    for (key, v, res) in results {
        if res.is_ok() {
            let got = db.get(key.as_bytes()).await.unwrap();
            assert_eq!(got.as_ref(), Some(v), "{what}: acknowledged {key} lost");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_write_fails_the_groups_behind_it_and_the_store_goes_on() {
    // One slab holds all of the first round (16 × 30 × 8 KiB), so no flush
    // worker writes during it and the 12th write is certainly a WAL write
    // (a flush write that fails is retried, failing no put).
    let (failed, _) = fail_one_write(8 << 20, 12).await;
    assert!(failed > 0, "the injected ENOSPC failed no put");
}

/// With 256 KiB slabs the first round (3.75 MiB) rotates fifteen times,
/// and a slab whose last writes are still in flight closes while the next
/// one takes appends: a failed write in the closing slab must also fail
/// (and drop) every group already appended to the new one. Each of the
/// first 60 writes in turn fails once; some land in a closing slab with
/// groups behind it in the next (`Stats::wal_closing_rollbacks` counts
/// them).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_write_in_a_closing_slab_fails_the_groups_in_the_next() {
    let (mut failing, mut closing) = (0, 0);
    for nth in 1..=60 {
        let (failed, closing_rollbacks) = fail_one_write(256 << 10, nth).await;
        failing += (failed > 0) as u32;
        closing += closing_rollbacks;
    }
    // Flush workers' writes are retried and fail no put; the rest are WAL
    // writes.
    assert!(
        failing >= 20,
        "only {failing} of 60 injected write failures failed a put"
    );
    eprintln!("{failing} of 60 failures failed puts, {closing} in a closing slab");
    assert!(closing >= 3, "only {closing} failures hit a closing slab");
}

/// Runs a round of concurrent puts with the `nth` write failing with ENOSPC
/// once, then a round with room again, then reopens: no failed put is ever
/// visible, every acknowledged one is. Returns how many puts failed, and
/// how many rollbacks reached into a next slab.
async fn fail_one_write(slab_size: usize, nth: u64) -> (usize, u64) {
    let dir = tempfile::tempdir().unwrap();
    let inj = FaultInjector::new();
    let db = builder(dir.path(), &inj)
        .slab_size(slab_size)
        .open()
        .await
        .unwrap();
    inj.set_plan(Some(FaultPlan {
        kind: OpKind::Write,
        nth,
        fault: Fault::Enospc,
        persistent: false,
    }));
    let results = concurrent_puts(&db, "a").await;
    let failed: Vec<_> = results.iter().filter(|r| r.2.is_err()).collect();
    assert!(
        failed.len() < results.len(),
        "write {nth}: every put failed"
    );
    for (key, _, res) in &failed {
        match res {
            Err(Error::Io { source, .. }) if source.raw_os_error() == Some(28) => {}
            other => panic!("write {nth}, {key}: expected ENOSPC, got {other:?}"),
        }
    }
    // Not acknowledged, so not visible; acknowledged, so visible.
    for (key, _, res) in &results {
        if res.is_err() {
            assert_eq!(
                db.get(key.as_bytes()).await.unwrap(),
                None,
                "write {nth}: {key}"
            );
        }
    }
    let what = format!("write {nth} failed, before reopen");
    assert_acked_present(&db, &results, &what).await;
    // The disk has room again: every later write succeeds.
    let later = concurrent_puts(&db, "b").await;
    assert!(
        later.iter().all(|r| r.2.is_ok()),
        "write {nth}: writes after the fault failed"
    );
    let closing = db.stats().wal_closing_rollbacks;
    db.close().await.unwrap();
    // Each file's header names where the file before it ends, and recovery
    // sets aside a file whose predecessor, still unsealed, ends short of
    // that. A rollback in a closing slab moves its end: read back as if
    // no flush had happened (every segment an unsealed log again), no file
    // may be set aside. (Only after a failed put: without one nothing was
    // rolled back, and reading every file back as a log costs seconds.)
    if !failed.is_empty() {
        for seg in common::data_files(dir.path(), "silt") {
            std::fs::rename(&seg, seg.with_extension("log")).unwrap();
        }
    }

    let db = Db::builder(dir.path())
        .slab_size(slab_size)
        .open()
        .await
        .unwrap();
    assert_eq!(db.stats().recovered_dropped_files, 0, "write {nth}");
    let what = format!("write {nth} failed, after reopen");
    assert_acked_present(&db, &results, &what).await;
    assert_acked_present(&db, &later, &what).await;
    for (key, _, res) in &results {
        if res.is_err() {
            assert_eq!(
                db.get(key.as_bytes()).await.unwrap(),
                None,
                "write {nth}: {key} came back"
            );
        }
    }
    db.close().await.unwrap();
    (failed.len(), closing)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_is_acknowledged_after_a_failed_fdatasync() {
    // io_uring makes each group durable with one RWF_DSYNC write, where an
    // EIO may be the flush failing; std writes, then fdatasyncs.
    let cases = [
        (IoBackend::Std, OpKind::Sync),
        (IoBackend::Uring, OpKind::DurableWrite),
    ];
    for (nth, (backend, kind)) in [2, 5, 9].into_iter().flat_map(|n| cases.map(|c| (n, c))) {
        let dir = tempfile::tempdir().unwrap();
        let inj = FaultInjector::new();
        // A slab larger than the round: no rotation, so every fdatasync or
        // durable write counted is a WAL group's, never a flush worker's.
        let db = builder(dir.path(), &inj)
            .io_backend(backend)
            .slab_size(8 << 20)
            .open()
            .await
            .unwrap();
        inj.set_plan(Some(FaultPlan {
            kind,
            nth,
            fault: Fault::Eio,
            persistent: false,
        }));
        let results = concurrent_puts(&db, "s").await;
        let synced_failure = results
            .iter()
            .any(|r| matches!(&r.2, Err(Error::Io { op, .. }) if *op == "fdatasync WAL"));
        assert!(
            synced_failure,
            "{backend:?} fdatasync {nth}: no put saw the failure"
        );
        let acked = results.iter().filter(|r| r.2.is_ok()).count();
        assert!(
            acked < results.len(),
            "fdatasync {nth}: every put acknowledged"
        );
        let _ = db.close().await;
        common::wait_unlocked(dir.path());
        // The failed fdatasync made nothing durable: a power cut now keeps
        // only what earlier ones covered, which must hold every ack.
        inj.power_loss(&dir.path().join("data"), true).unwrap();
        let db = Db::builder(dir.path()).open().await.unwrap();
        assert_acked_present(&db, &results, &format!("fdatasync {nth} failed")).await;
        db.close().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn power_loss_during_concurrent_sync_writes_keeps_every_ack() {
    let mut points = 0;
    for k in (4..=160).step_by(6) {
        for torn in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            let inj = FaultInjector::new();
            let db = builder(dir.path(), &inj).open().await.unwrap();
            inj.freeze_at(k);
            let results = concurrent_puts(&db, "p").await;
            let _ = db.close().await;
            common::wait_unlocked(dir.path());
            inj.power_loss(&dir.path().join("data"), torn).unwrap();
            let db = Db::builder(dir.path()).open().await.unwrap();
            let what = format!("power loss at op {k} (torn tail: {torn})");
            assert_acked_present(&db, &results, &what).await;
            db.close().await.unwrap();
            points += 1;
        }
    }
    eprintln!("{points} power-loss points under {TASKS} concurrent writers checked");
}
