//! What a node's storage does with bad input and bad days: a reopen, a
//! hole or a damaged byte in the log, a snapshot that fails its check or
//! fails on disk, and a process killed in the middle of appends. Each is
//! an `Err` openraft can act on, never a panic or a silently shorter log.

#[path = "../../tests/common/mod.rs"]
mod common;

use std::io::{BufRead, BufReader, Cursor};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::Duration;

use openraft::storage::{RaftLogReader, RaftLogStorage, RaftLogStorageExt, RaftStateMachine};
use openraft::testing::log_id;
use openraft::{Entry, EntryPayload, RaftSnapshotBuilder, StorageError, Vote};
use silt::{Db, Durability, Fault, FaultInjector, FaultPlan, IoBackend, OpKind, PowerCut};
use silt_raft::{LogStore, Request, Response, StateMachine, TypeConfig};

fn value(index: u64) -> Vec<u8> {
    format!("value-{index:06}").into_bytes()
}

/// The entry at `index`: a `Set` of `k<index>` whose value names the index.
fn entry(index: u64) -> Entry<TypeConfig> {
    Entry {
        log_id: log_id(1, 1, index),
        payload: EntryPayload::Normal(Request::Set {
            key: format!("k{index}").into_bytes(),
            value: value(index),
        }),
    }
}

fn describe(e: StorageError<u64>) -> String {
    e.to_string()
}

async fn open(dir: &Path) -> (LogStore<TypeConfig>, StateMachine) {
    silt_raft::open(dir)
        .await
        .map_err(describe)
        .expect("open the node's storage")
}

/// Why opening the storage under `dir` fails (it must).
async fn open_error(dir: &Path) -> String {
    match silt_raft::open(dir).await {
        Ok(_) => panic!("the damaged storage opened"),
        Err(e) => describe(e),
    }
}

async fn append(log: &mut LogStore<TypeConfig>, indexes: std::ops::RangeInclusive<u64>) {
    log.blocking_append(indexes.map(entry))
        .await
        .map_err(describe)
        .expect("append");
}

/// Closes both stores so the directory can be reopened at once.
async fn close(log: LogStore<TypeConfig>, sm: StateMachine) {
    log.db().clone().close().await.expect("close the log");
    sm.db()
        .clone()
        .close()
        .await
        .expect("close the state machine");
}

async fn entries(
    log: &mut LogStore<TypeConfig>,
    range: std::ops::RangeInclusive<u64>,
) -> Result<Vec<Entry<TypeConfig>>, String> {
    log.try_get_log_entries(range).await.map_err(describe)
}

fn check_entries(got: &[Entry<TypeConfig>], want: std::ops::RangeInclusive<u64>) {
    let want: Vec<Entry<TypeConfig>> = want.map(entry).collect();
    assert!(
        got == want.as_slice(),
        "read {} entries, wanted {}",
        got.len(),
        want.len()
    );
}

#[tokio::test]
async fn the_log_vote_and_committed_id_survive_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, sm) = open(dir.path()).await;
    log.save_vote(&Vote::new(3, 1))
        .await
        .map_err(describe)
        .unwrap();
    for start in (1..=100).step_by(10) {
        append(&mut log, start..=start + 9).await;
    }
    log.save_committed(Some(log_id(1, 1, 80)))
        .await
        .map_err(describe)
        .unwrap();
    log.truncate(log_id(1, 1, 91))
        .await
        .map_err(describe)
        .unwrap();
    log.purge(log_id(1, 1, 10)).await.map_err(describe).unwrap();
    close(log, sm).await;

    let (mut log, sm) = open(dir.path()).await;
    let state = log.get_log_state().await.map_err(describe).unwrap();
    assert_eq!(state.last_purged_log_id, Some(log_id(1, 1, 10)));
    assert_eq!(state.last_log_id, Some(log_id(1, 1, 90)));
    assert_eq!(
        log.read_vote().await.map_err(describe).unwrap(),
        Some(Vote::new(3, 1))
    );
    assert_eq!(
        log.read_committed().await.map_err(describe).unwrap(),
        Some(log_id(1, 1, 80))
    );
    check_entries(&entries(&mut log, 0..=200).await.unwrap(), 11..=90);
    // The log goes on where it ended.
    append(&mut log, 91..=95).await;
    check_entries(&entries(&mut log, 0..=200).await.unwrap(), 11..=95);
    close(log, sm).await;
}

#[tokio::test]
async fn an_append_that_would_overwrite_without_a_truncate_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, sm) = open(dir.path()).await;
    append(&mut log, 1..=5).await;
    let err = log
        .blocking_append([entry(3)])
        .await
        .map_err(describe)
        .unwrap_err();
    assert!(err.contains("without a truncate"), "{err}");
    check_entries(&entries(&mut log, 0..=10).await.unwrap(), 1..=5);
    close(log, sm).await;
}

/// Writes straight into the node's log store, as damage would.
async fn damage_log(dir: &Path, damage: impl AsyncFnOnce(&Db)) {
    let db = Db::builder(dir.join("log"))
        .durability(Durability::Buffered)
        .open()
        .await
        .unwrap();
    damage(&db).await;
    db.close().await.unwrap();
}

#[tokio::test]
async fn a_missing_entry_is_an_error_at_open_not_a_shorter_log() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, sm) = open(dir.path()).await;
    append(&mut log, 1..=20).await;
    close(log, sm).await;
    damage_log(dir.path(), async |db| {
        db.delete(10u64.to_be_bytes()).await.unwrap()
    })
    .await;
    let err = open_error(dir.path()).await;
    assert!(
        err.contains("log entry 10 is missing") && err.contains("hole"),
        "{err}"
    );
}

#[tokio::test]
async fn an_entry_that_does_not_decode_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, sm) = open(dir.path()).await;
    append(&mut log, 1..=20).await;
    close(log, sm).await;

    // In the middle: open checks presence only; the read says what is wrong.
    damage_log(dir.path(), async |db| {
        db.put(5u64.to_be_bytes(), vec![0xff; 3]).await.unwrap()
    })
    .await;
    let (mut log, sm) = open(dir.path()).await;
    let err = entries(&mut log, 1..=20).await.unwrap_err();
    assert!(
        err.contains("log entry") && err.contains("do not decode"),
        "{err}"
    );
    close(log, sm).await;

    // The last entry is read at open.
    damage_log(dir.path(), async |db| {
        db.put(20u64.to_be_bytes(), vec![0xff; 3]).await.unwrap()
    })
    .await;
    let err = open_error(dir.path()).await;
    assert!(
        err.contains("last log entry") && err.contains("do not decode"),
        "{err}"
    );
}

#[tokio::test]
async fn a_damaged_log_file_is_an_error_not_a_shorter_log() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, sm) = open(dir.path()).await;
    append(&mut log, 1..=200).await;
    log.db().flush().await.unwrap();
    close(log, sm).await;
    let segments = common::data_files(&dir.path().join("log"), "silt");
    let mut damaged = 0;
    for seg in &segments {
        let bytes = std::fs::read(seg).unwrap();
        if let Some(at) = bytes.windows(12).position(|w| w == value(150).as_slice()) {
            std::fs::OpenOptions::new()
                .write(true)
                .open(seg)
                .unwrap()
                .write_at(b"X", at as u64 + 3)
                .unwrap();
            damaged += 1;
        }
    }
    assert_eq!(damaged, 1, "entry 150 is in one of {segments:?}");
    match silt_raft::open(dir.path()).await {
        Err(e) => assert!(
            describe(e).contains("corrupt"),
            "open failed, but not on the damage"
        ),
        Ok((mut log, sm)) => {
            let err = entries(&mut log, 1..=200).await.unwrap_err();
            assert!(err.contains("corrupt") && err.contains("CRC"), "{err}");
            close(log, sm).await;
        }
    }
}

/// A state machine holding `keys`, applied up to entry `keys.len()`.
async fn state_machine_with(dir: &Path, keys: &[&str]) -> (LogStore<TypeConfig>, StateMachine) {
    let (log, mut sm) = open(dir).await;
    let entries = keys.iter().enumerate().map(|(i, k)| Entry::<TypeConfig> {
        log_id: log_id(1, 1, i as u64 + 1),
        payload: EntryPayload::Normal(Request::Set {
            key: k.as_bytes().to_vec(),
            value: k.as_bytes().to_vec(),
        }),
    });
    let replies = sm.apply(entries).await.map_err(describe).unwrap();
    assert!(replies.iter().all(|r| *r == Response::Done));
    (log, sm)
}

#[tokio::test]
async fn a_snapshot_payload_that_fails_its_check_changes_nothing() {
    let leader_dir = tempfile::tempdir().unwrap();
    let (leader_log, mut leader) = state_machine_with(leader_dir.path(), &["a", "b", "c"]).await;
    let snapshot = leader
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .map_err(describe)
        .unwrap();
    let payload = snapshot.snapshot.into_inner();

    let dir = tempfile::tempdir().unwrap();
    let (log, mut sm) = state_machine_with(dir.path(), &["old"]).await;
    let before = sm.applied_state().await.map_err(describe).unwrap();
    let mut flipped = payload.clone();
    *flipped.last_mut().unwrap() ^= 1;
    for bad in [payload[..payload.len() / 2].to_vec(), flipped, Vec::new()] {
        let err = sm
            .install_snapshot(&snapshot.meta, Box::new(Cursor::new(bad)))
            .await
            .map_err(describe)
            .unwrap_err();
        assert!(err.contains("snapshot"), "{err}");
        assert_eq!(sm.applied_state().await.map_err(describe).unwrap(), before);
        assert_eq!(
            sm.reader().get("old").await.unwrap().as_deref(),
            Some(&b"old"[..])
        );
        assert_eq!(sm.reader().get("a").await.unwrap(), None);
    }
    sm.install_snapshot(&snapshot.meta, Box::new(Cursor::new(payload)))
        .await
        .map_err(describe)
        .unwrap();
    assert_eq!(
        sm.reader().get("old").await.unwrap(),
        None,
        "the snapshot replaces the state"
    );
    assert_eq!(
        sm.reader().get("c").await.unwrap().as_deref(),
        Some(&b"c"[..])
    );
    assert_eq!(
        sm.applied_state().await.map_err(describe).unwrap().0,
        Some(log_id(1, 1, 3))
    );
    close(log, sm).await;
    close(leader_log, leader).await;
}

#[tokio::test]
async fn a_snapshot_install_that_fails_on_disk_leaves_the_old_state() {
    let leader_dir = tempfile::tempdir().unwrap();
    let (leader_log, mut leader) = state_machine_with(leader_dir.path(), &["a", "b", "c"]).await;
    let snapshot = leader
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .map_err(describe)
        .unwrap();
    close(leader_log, leader).await;

    let dir = tempfile::tempdir().unwrap();
    let (log, sm) = state_machine_with(dir.path(), &["old"]).await;
    close(log, sm).await;
    let injector = FaultInjector::new();
    let db = Db::builder(dir.path().join("sm"))
        .durability(Durability::Buffered)
        .io_backend(IoBackend::Std)
        .fault_injector(injector.clone())
        .open()
        .await
        .unwrap();
    let mut sm = StateMachine::open(db).await.map_err(describe).unwrap();
    injector.set_plan(Some(FaultPlan {
        kind: OpKind::Write,
        nth: 1,
        fault: Fault::Eio,
        persistent: true,
    }));
    let err = sm
        .install_snapshot(
            &snapshot.meta,
            Box::new(Cursor::new(snapshot.snapshot.into_inner())),
        )
        .await
        .map_err(describe)
        .unwrap_err();
    assert!(err.contains("snapshot"), "{err}");
    assert!(injector.faults_injected() > 0);
    drop(sm);
    common::wait_unlocked(&dir.path().join("sm"));

    let (log, mut sm) = open(dir.path()).await;
    assert_eq!(
        sm.applied_state().await.map_err(describe).unwrap().0,
        Some(log_id(1, 1, 1))
    );
    assert_eq!(
        sm.reader().get("old").await.unwrap().as_deref(),
        Some(&b"old"[..])
    );
    assert_eq!(sm.reader().get("a").await.unwrap(), None);
    close(log, sm).await;
}

#[tokio::test]
async fn an_oversize_key_is_rejected_on_every_node_not_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let (log, mut sm) = open(dir.path()).await;
    let big = Entry::<TypeConfig> {
        log_id: log_id(1, 1, 1),
        payload: EntryPayload::Normal(Request::Set {
            key: vec![b'k'; silt_raft::MAX_KEY_LEN + 1],
            value: b"v".to_vec(),
        }),
    };
    let replies = sm.apply([big, entry(2)]).await.map_err(describe).unwrap();
    assert!(matches!(&replies[0], Response::Rejected(why) if why.contains("limit")));
    assert_eq!(replies[1], Response::Done);
    assert_eq!(
        sm.applied_state().await.map_err(describe).unwrap().0,
        Some(log_id(1, 1, 2))
    );
    close(log, sm).await;
}

const APPENDS: u64 = 12;

/// Appends entries one at a time on a log whose disk loses power at I/O
/// operation `k`; returns the last index whose flush callback said `Ok`.
async fn append_until_power_loss(
    dir: &Path,
    injector: &std::sync::Arc<FaultInjector>,
    k: Option<u64>,
) -> u64 {
    let db = Db::builder(dir.join("log"))
        .durability(Durability::Buffered)
        .io_backend(IoBackend::Std)
        .fault_injector(injector.clone())
        .open()
        .await
        .unwrap();
    let mut log = LogStore::<TypeConfig>::open(db)
        .await
        .map_err(describe)
        .unwrap();
    if let Some(k) = k {
        injector.freeze_at(k);
    }
    let mut flushed = 0;
    for index in 1..=APPENDS {
        if log.blocking_append([entry(index)]).await.is_err() {
            break;
        }
        flushed = index;
    }
    // A failed store's close retries its flush with backoff (~0.3 s).
    let _ = log.db().clone().close().await;
    drop(log);
    common::wait_unlocked(&dir.join("log"));
    flushed
}

#[tokio::test]
async fn a_power_cut_at_any_operation_keeps_every_flushed_entry() {
    let injector = FaultInjector::new();
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(
        append_until_power_loss(dir.path(), &injector, None).await,
        APPENDS
    );
    let ops = injector.ops();
    // Every operation, each cut kind in turn (all three at every point
    // would triple the ~0.3 s each point after the first failure costs).
    for k in 1..=ops {
        {
            let cut = [PowerCut::Clean, PowerCut::TornTail, PowerCut::AnyPages][k as usize % 3];
            let injector = FaultInjector::new();
            let dir = tempfile::tempdir().unwrap();
            let flushed = append_until_power_loss(dir.path(), &injector, Some(k)).await;
            injector
                .power_cut(&dir.path().join("log").join("data"), cut)
                .unwrap();
            let (mut log, sm) = open(dir.path()).await;
            let last = log
                .get_log_state()
                .await
                .map_err(describe)
                .unwrap()
                .last_log_id
                .map_or(0, |l| l.index);
            assert!(last >= flushed, "power cut at op {k} ({cut:?}): entry {flushed} was flushed but the log ends at {last}");
            check_entries(&entries(&mut log, 0..=50).await.unwrap(), 1..=last);
            close(log, sm).await;
        }
    }
}

const CHILD_DIR: &str = "SILT_RAFT_CRASH_DIR";

/// Child mode (under `a_node_killed_mid_append_keeps_every_flushed_entry`):
/// appends from where the log ends, a few entries at a time, printing
/// `F <index>` once the flush callback covered entry `index`, until killed.
#[test]
fn crash_child_appends() {
    let Ok(dir) = std::env::var(CHILD_DIR) else {
        return;
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let (mut log, _sm) = open(Path::new(&dir)).await;
        let last = log
            .get_log_state()
            .await
            .map_err(describe)
            .unwrap()
            .last_log_id;
        let mut next = last.map_or(1, |l| l.index + 1);
        println!("READY");
        loop {
            let n = next % 4 + 1;
            append(&mut log, next..=next + n - 1).await;
            next += n;
            println!("F {}", next - 1);
        }
    });
}

#[test]
fn a_node_killed_mid_append_keeps_every_flushed_entry() {
    use rand::Rng;
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut rng = rand::thread_rng();
    let mut flushed_total = 0;
    for kill in 0..6 {
        let (child, stdout) = common::ChildTest::spawn(
            "crash_child_appends",
            false,
            &[(CHILD_DIR, dir.path().display().to_string())],
        );
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let reader = std::thread::spawn(move || {
            let mut flushed = 0;
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if line.ends_with("READY") {
                    let _ = ready_tx.send(());
                }
                if let Some(i) = line.strip_prefix("F ").and_then(|i| i.parse::<u64>().ok()) {
                    flushed = i;
                }
            }
            flushed
        });
        ready_rx
            .recv_timeout(Duration::from_secs(60))
            .expect("the child started");
        std::thread::sleep(Duration::from_millis(rng.gen_range(50..300)));
        child.kill();
        let flushed = reader.join().unwrap();
        rt.block_on(async {
            let (mut log, sm) = open(dir.path()).await;
            let last = log
                .get_log_state()
                .await
                .map_err(describe)
                .unwrap()
                .last_log_id
                .map_or(0, |l| l.index);
            assert!(
                last >= flushed,
                "kill {kill}: entry {flushed} was flushed but the log ends at {last}"
            );
            check_entries(&entries(&mut log, 0..=last + 10).await.unwrap(), 1..=last);
            flushed_total = last;
            close(log, sm).await;
        });
    }
    assert!(
        flushed_total > 50,
        "the children appended: {flushed_total} entries"
    );
}
