//! SIGKILL crash test. A child process (this test binary, re-executed)
//! writes with `Durability::Sync` from several tasks and prints each
//! acknowledgement; the parent kills it with SIGKILL at a random moment,
//! reopens the store, and checks that every task's keys hold exactly the
//! state after its acknowledged operations, or after those plus the one
//! operation it had in flight. That covers "every acknowledged write
//! survives", "batches are all-or-nothing", "no delete is undone" and "no
//! older value replaces a newer one". Slabs are 64 KiB, so the child rotates
//! and flushes many times per run.
//!
//! `SILT_CRASH_ITERS` raises the number of kills (default 24).

mod common;

use bytes::Bytes;
use silt::{Db, Durability, WriteBatch};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::time::Duration;

const CHILD_DIR: &str = "SILT_CRASH_CHILD_DIR";
const CHILD_EPOCH: &str = "SILT_CRASH_CHILD_EPOCH";
const TASKS: u64 = 6;
const KEYS_PER_TASK: u64 = 13;

/// Operation number `c` of task `t` in run `epoch`: a pure function, so the
/// parent knows what the child's in-flight operation was.
#[derive(Debug)]
enum Op {
    Put(Bytes, Bytes),
    Delete(Bytes),
    Batch(Vec<Bytes>, Bytes),
}

fn op(epoch: u64, t: u64, c: u64) -> Op {
    let stamp = format!("{epoch}:{t}:{c}:");
    let value = |len: usize| -> Bytes {
        let mut v = stamp.clone().into_bytes();
        v.resize(len.max(v.len()), b'x');
        Bytes::from(v)
    };
    if c % 10 == 9 {
        let keys = (0..3).map(|i| Bytes::from(format!("b{t}-{i}"))).collect();
        Op::Batch(keys, value(40))
    } else if c % 7 == 6 {
        Op::Delete(Bytes::from(format!("t{t}-k{}", c % KEYS_PER_TASK)))
    } else {
        let len = (c * 37 % 1500) as usize + 10;
        Op::Put(
            Bytes::from(format!("t{t}-k{}", c % KEYS_PER_TASK)),
            value(len),
        )
    }
}

type State = BTreeMap<Bytes, Bytes>;

fn apply(state: &mut State, op: &Op) {
    match op {
        Op::Put(k, v) => {
            state.insert(k.clone(), v.clone());
        }
        Op::Delete(k) => {
            state.remove(k);
        }
        Op::Batch(keys, v) => {
            for k in keys {
                state.insert(k.clone(), v.clone());
            }
        }
    }
}

fn task_keys(t: u64) -> Vec<Bytes> {
    (0..KEYS_PER_TASK)
        .map(|i| Bytes::from(format!("t{t}-k{i}")))
        .chain((0..3).map(|i| Bytes::from(format!("b{t}-{i}"))))
        .collect()
}

fn builder(path: &Path) -> silt::Builder {
    Db::builder(path)
        .durability(Durability::Sync)
        .slab_size(64 * 1024)
        .max_sealed_slabs(2)
}

/// The child's workload: each task runs its operations in order and prints
/// `A <task> <op>` once an operation is acknowledged. `limit` bounds it.
async fn workload(db: Db, epoch: u64, limit: Option<u64>, print: bool) {
    let mut handles = Vec::new();
    for t in 0..TASKS {
        let db = db.clone();
        handles.push(tokio::spawn(async move {
            let mut c = 0;
            while limit.is_none_or(|l| c < l) {
                match op(epoch, t, c) {
                    Op::Put(k, v) => db.put(k, v).await.unwrap(),
                    Op::Delete(k) => db.delete(k).await.unwrap(),
                    Op::Batch(keys, v) => {
                        let mut b = WriteBatch::new();
                        for k in keys {
                            b.put(k, v.clone());
                        }
                        db.write(b).await.unwrap();
                    }
                }
                if print {
                    println!("A {t} {c}");
                }
                c += 1;
            }
        }));
    }
    for h in handles {
        h.await.unwrap();
    }
}

/// What the store holds for task `t`'s keys.
async fn observe(db: &Db, t: u64) -> State {
    let mut s = State::new();
    for k in task_keys(t) {
        if let Some(v) = db.get(&k).await.unwrap() {
            s.insert(k, v);
        }
    }
    s
}

/// Checks task `t` after a crash in run `epoch`; returns the observed state
/// (the baseline for the next run).
fn check_task(observed: &State, before: &State, epoch: u64, t: u64, acked: Option<u64>) {
    let mut state = before.clone();
    let done = acked.map_or(0, |a| a + 1);
    for c in 0..done {
        apply(&mut state, &op(epoch, t, c));
    }
    if *observed == state {
        return;
    }
    let mut with_inflight = state.clone();
    apply(&mut with_inflight, &op(epoch, t, done));
    assert!(
        *observed == with_inflight,
        "run {epoch}, task {t}: {done} ops acknowledged, but the store holds neither that prefix nor that plus the op in flight.\nstore:    {observed:?}\nexpected: {state:?}"
    );
}

/// Child mode (under the parent): loop until killed. Alone: a bounded run
/// that closes, reopens and checks the same model without a crash.
#[test]
fn crash_child_workload() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    if let Ok(dir) = std::env::var(CHILD_DIR) {
        let epoch: u64 = std::env::var(CHILD_EPOCH).unwrap().parse().unwrap();
        rt.block_on(async {
            let db = builder(Path::new(&dir)).open().await.unwrap();
            println!("READY");
            workload(db, epoch, None, true).await;
        });
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    rt.block_on(async {
        let db = builder(dir.path()).open().await.unwrap();
        workload(db.clone(), 1, Some(300), false).await;
        let st = db.stats();
        // Background GC may have compacted some of the published segments.
        assert!(
            st.segments as u64 + st.gc_files > 3,
            "the run rotated slabs: {st:?}"
        );
        db.close().await.unwrap();
        let db = builder(dir.path()).open().await.unwrap();
        for t in 0..TASKS {
            let observed = observe(&db, t).await;
            check_task(&observed, &State::new(), 1, t, Some(299));
            // Exactly the acknowledged prefix: nothing was in flight.
            let mut want = State::new();
            (0..300).for_each(|c| apply(&mut want, &op(1, t, c)));
            assert_eq!(observed, want);
        }
        db.close().await.unwrap();
    });
}

fn iterations(default: u64) -> u64 {
    std::env::var("SILT_CRASH_ITERS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

#[test]
fn sigkill_loses_no_acknowledged_write() {
    kill_loop(iterations(24));
}

/// The soak target: 500 kills (about 3 minutes here). Not in CI; run with
/// `cargo test --release --test crash -- --ignored` (SILT_CRASH_ITERS
/// changes the count).
#[test]
#[ignore = "soak: 500 SIGKILLs, run on demand"]
fn sigkill_soak() {
    kill_loop(iterations(500));
}

fn kill_loop(iters: u64) {
    use rand::Rng;
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut baseline: Vec<State> = vec![State::new(); TASKS as usize];
    let mut rng = rand::thread_rng();
    let mut total_acks = 0u64;
    for epoch in 1..=iters {
        let (child, stdout) = common::ChildTest::spawn(
            "crash_child_workload",
            false,
            &[
                (CHILD_DIR, dir.path().display().to_string()),
                (CHILD_EPOCH, epoch.to_string()),
            ],
        );
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let reader = std::thread::spawn(move || {
            let mut acked: Vec<Option<u64>> = vec![None; TASKS as usize];
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if line.ends_with("READY") {
                    let _ = ready_tx.send(());
                }
                let parts: Vec<&str> = line.split(' ').collect();
                if let ["A", t, c] = parts[..] {
                    if let (Ok(t), Ok(c)) = (t.parse::<usize>(), c.parse::<u64>()) {
                        acked[t] = Some(c);
                    }
                }
            }
            acked
        });
        ready_rx
            .recv_timeout(Duration::from_secs(60))
            .expect("child did not start");
        std::thread::sleep(Duration::from_millis(rng.gen_range(20..400)));
        // A child that panicked (or exited) fails here with its stderr.
        child.kill();
        let acked = reader.join().unwrap();
        total_acks += acked.iter().map(|a| a.map_or(0, |c| c + 1)).sum::<u64>();

        rt.block_on(async {
            let db = builder(dir.path()).open().await.unwrap();
            for t in 0..TASKS {
                let observed = observe(&db, t).await;
                check_task(
                    &observed,
                    &baseline[t as usize],
                    epoch,
                    t,
                    acked[t as usize],
                );
                baseline[t as usize] = observed;
            }
            db.close().await.unwrap();
        });
    }
    assert!(
        total_acks > iters * 10,
        "the children got work done: {total_acks} acks"
    );
    eprintln!("{iters} kills, {total_acks} acknowledged operations checked");
}
