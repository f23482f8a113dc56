//! Runs a case against the real engine (real files, real threads, the
//! fault-injecting I/O layer underneath) and checks it against the
//! history after every step.

use crate::case::{Case, Config, SimOp, KEYS};
use crate::history::{short, Down, History, State};
use crate::keys::key;
use bytes::Bytes;
use futures::StreamExt;
use silt::{Db, Durability, Error, Fault, FaultInjector, FaultPlan, OpKind};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// A value that names the step and key that wrote it, so a stale one is
/// caught.
fn value(step: usize, k: u8, len: u32) -> Bytes {
    let stamp = format!("<{step}:{k}>");
    Bytes::from(
        stamp
            .bytes()
            .cycle()
            .take((len as usize).max(stamp.len()))
            .collect::<Vec<u8>>(),
    )
}

/// Record bytes of a put (an 11-byte header, the key, the value).
fn record_len(k: &[u8], v: &[u8]) -> u64 {
    (11 + k.len() + v.len()) as u64
}

fn builder(dir: &Path, c: &Config, inj: &Arc<FaultInjector>) -> silt::Builder {
    let b = Db::builder(dir)
        .slab_size(64 << 10)
        .max_sealed_slabs(2)
        .durability(c.durability)
        .gc_threshold(c.gc)
        .fault_injector(inj.clone());
    if c.cache {
        b.capacity(256 << 10)
    } else {
        b
    }
}

macro_rules! ensure {
    ($cond:expr, $($arg:tt)*) => {
        if !$cond {
            return Err(format!($($arg)*));
        }
    };
}

/// Which fault is armed.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Armed {
    Read,
    Write,
}

struct Sim {
    config: Config,
    dir: tempfile::TempDir,
    inj: Arc<FaultInjector>,
    db: Option<Db>,
    follower: Option<Db>,
    history: History,
    step: usize,
    armed: Option<Armed>,
    /// Faults injected when the store was last opened: a write, flush or
    /// compaction may fail only once one has been injected since.
    faults_at_open: u64,
    /// Faults injected when the follower was opened: a refresh may fail
    /// only once one has been injected since.
    faults_at_refresh: u64,
    /// A read fault to arm for the next step.
    read_fault_next: Option<u8>,
}

fn is_io(e: &Error) -> bool {
    matches!(e, Error::Io { .. })
}

impl Sim {
    fn db(&self) -> &Db {
        self.db.as_ref().expect("the store is open between steps")
    }

    fn faulted(&self) -> bool {
        self.inj.faults_injected() > self.faults_at_open
    }

    fn arm(&mut self, kind: OpKind, nth: u8, armed: Armed) {
        self.inj.set_plan(Some(FaultPlan {
            kind,
            nth: u64::from(nth),
            fault: Fault::Eio,
            persistent: false,
        }));
        self.armed = Some(armed);
    }

    fn disarm(&mut self) {
        self.inj.set_plan(None);
        self.armed = None;
    }

    async fn open(&mut self) -> Result<(), String> {
        self.disarm();
        let b = builder(self.dir.path(), &self.config, &self.inj);
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        let db = loop {
            match b.clone().open().await {
                // A dead store's threads release the lock a moment later.
                Err(Error::Locked { .. }) if std::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(2)).await
                }
                other => break other.map_err(|e| format!("open: {e}"))?,
            }
        };
        self.faults_at_open = self.inj.faults_injected();
        self.db = Some(db);
        Ok(())
    }

    /// Everything the store yields, with keys seen twice refused.
    async fn scan_all(db: &Db) -> Result<(State, usize), String> {
        let mut got = State::new();
        let mut errs = 0;
        let mut s = Box::pin(db.scan());
        while let Some(item) = s.next().await {
            match item {
                Ok((k, v)) => ensure!(
                    got.insert(k.clone(), v).is_none(),
                    "scan yielded {} twice",
                    String::from_utf8_lossy(&k)
                ),
                Err(e) if is_io(&e) => errs += 1,
                Err(e) => return Err(format!("scan: {e}")),
            }
        }
        Ok((got, errs))
    }

    /// After a reopen: the store holds a state a recovery may give.
    async fn settle(&mut self, down: Down) -> Result<(), String> {
        let (found, errs) = Self::scan_all(self.db()).await?;
        ensure!(
            errs == 0,
            "scan after a reopen failed {errs} reads with no fault armed"
        );
        self.history.settle(found, down, self.config.cache)
    }

    fn process_crash(&self) -> Down {
        Down::Process {
            wal: self.config.durability != Durability::None,
        }
    }

    /// The live checks: every read path against the history.
    async fn check(&mut self) -> Result<(), String> {
        let db = self.db().clone();
        let live = self.history.live();
        let cache = self.config.cache;
        let mut read_errs = 0usize;
        let (found, scan_errs) = Self::scan_all(&db).await?;
        read_errs += scan_errs;
        for (k, v) in &found {
            ensure!(
                live.get(k) == Some(v),
                "scan: {} = {}, expected {:?}",
                String::from_utf8_lossy(k),
                short(v),
                live.get(k).map(short)
            );
        }
        if !cache {
            let missing = live.len() - found.len();
            ensure!(
                missing <= scan_errs,
                "scan missed {missing} keys with {scan_errs} failed reads"
            );
        }
        let range = {
            let start = (self.step * 37 % 200) as u64;
            start..start + 1 + (self.step * 13 % 3000) as u64
        };
        for i in 0..KEYS {
            let k = key(i);
            let want = live.get(&k);
            match db.get(&k).await {
                Ok(got) => ensure!(
                    got.as_ref() == want || (cache && got.is_none()),
                    "get {}: {:?}, expected {:?}",
                    String::from_utf8_lossy(&k),
                    got.as_ref().map(short),
                    want.map(short)
                ),
                Err(e) if is_io(&e) => read_errs += 1,
                Err(e) => return Err(format!("get {}: {e}", String::from_utf8_lossy(&k))),
            }
            match db.contains_key(&k).await {
                Ok(got) => ensure!(
                    got == want.is_some() || (cache && !got),
                    "contains_key {}: {got}",
                    String::from_utf8_lossy(&k)
                ),
                Err(e) if is_io(&e) => read_errs += 1,
                Err(e) => return Err(format!("contains_key: {e}")),
            }
            match db.get_range(&k, range.clone()).await {
                Ok(got) => {
                    let expect = want.map(|v| {
                        let end = (range.end as usize).min(v.len());
                        let start = (range.start as usize).min(end);
                        v.slice(start..end)
                    });
                    ensure!(
                        got == expect || (cache && got.is_none()),
                        "get_range {} {range:?}: {:?} bytes, expected {:?}",
                        String::from_utf8_lossy(&k),
                        got.map(|b| b.len()),
                        expect.map(|b| b.len())
                    );
                }
                Err(e) if is_io(&e) => read_errs += 1,
                Err(e) => return Err(format!("get_range: {e}")),
            }
        }
        let all: Vec<Bytes> = (0..KEYS).map(key).collect();
        match db.get_many(&all).await {
            Ok(got) => {
                for (k, v) in all.iter().zip(got) {
                    ensure!(
                        v.as_ref() == live.get(k) || (cache && v.is_none()),
                        "get_many {}: {:?}",
                        String::from_utf8_lossy(k),
                        v.as_ref().map(short)
                    );
                }
            }
            Err(e) if is_io(&e) => read_errs += 1,
            Err(e) => return Err(format!("get_many: {e}")),
        }
        let keys = db.stats().keys as usize;
        if cache {
            ensure!(keys <= live.len(), "stats().keys {keys} > {}", live.len());
        } else {
            ensure!(
                keys == live.len(),
                "stats().keys {keys}, expected {}",
                live.len()
            );
            let accounted: u64 = db.file_space().iter().map(|f| f.live_bytes).sum();
            let want: u64 = live.iter().map(|(k, v)| record_len(k, v)).sum();
            ensure!(
                accounted == want,
                "live bytes accounted {accounted}, expected {want}"
            );
            // Records of a WAL write that failed stay in their slab until
            // overwritten; a fault that fires while the recount waits for
            // a compaction makes its answer moot.
            if let Err(e) = db.check_space().await {
                ensure!(self.faulted(), "space: {e}");
            }
        }
        if read_errs > 0 {
            ensure!(
                self.armed == Some(Armed::Read) && read_errs <= 1,
                "{read_errs} reads failed (armed: {:?})",
                self.armed
            );
        }
        Ok(())
    }

    async fn write(&mut self, op: &SimOp) -> Result<(), String> {
        let step = self.step;
        let changes: Vec<(Bytes, Option<Bytes>)> = match op {
            SimOp::Put(k, l) => vec![(key(*k), Some(value(step, *k, *l)))],
            SimOp::Delete(k) => vec![(key(*k), None)],
            SimOp::Batch(items) => items
                .iter()
                .map(|(k, l)| (key(*k), l.map(|l| value(step, *k, l))))
                .collect(),
            SimOp::Clear => (0..KEYS).map(|k| (key(k), None)).collect(),
            _ => unreachable!(),
        };
        let db = self.db().clone();
        let res = match op {
            SimOp::Put(..) => db.put(&changes[0].0, changes[0].1.clone().unwrap()).await,
            SimOp::Delete(_) => db.delete(&changes[0].0).await,
            _ => {
                let mut b = silt::WriteBatch::new();
                for (k, v) in &changes {
                    match v {
                        Some(v) => b.put(k, v.clone()),
                        None => b.delete(k),
                    }
                }
                db.write(b).await
            }
        };
        let sync = self.config.durability == Durability::Sync;
        match res {
            Ok(()) => self.history.record(changes, true, sync),
            Err(e) => {
                ensure!(self.faulted(), "{op} failed with no fault injected: {e}");
                self.history.record(changes, false, false);
                if matches!(e, Error::Poisoned { .. }) {
                    // Nothing more can be written: reopen.
                    self.crash(false).await?;
                }
            }
        }
        Ok(())
    }

    /// A store-wide call that fails only after an injected fault.
    fn allowed(&self, what: &str, res: silt::Result<()>) -> Result<bool, String> {
        match res {
            Ok(()) => Ok(true),
            Err(e) if self.faulted() => {
                let _ = e;
                Ok(false)
            }
            Err(e) => Err(format!("{what} failed with no fault injected: {e}")),
        }
    }

    /// The process dies (`power`: and the machine loses power, as `cut`
    /// says), and the store is opened again.
    async fn crash(&mut self, power: bool) -> Result<(), String> {
        let db = self.db.take().expect("open");
        if power {
            // Every operation from here on fails: the power is gone.
            self.inj.freeze_at(self.inj.ops() + 1);
        }
        db.simulate_crash().await;
        Ok(())
    }

    async fn run_op(&mut self, op: &SimOp) -> Result<(), String> {
        match op {
            SimOp::Put(..) | SimOp::Delete(_) | SimOp::Batch(_) | SimOp::Clear => {
                self.write(op).await?
            }
            SimOp::DropCache => self.db().drop_page_cache(),
            SimOp::Flush | SimOp::Sync => {
                let db = self.db().clone();
                let res = if *op == SimOp::Flush {
                    db.flush().await
                } else {
                    db.sync().await
                };
                if self.allowed(&op.to_string(), res)? {
                    self.history.all_durable();
                }
            }
            SimOp::Compact => {
                let res = self.db().compact().await.map(|_| ());
                self.allowed("compact", res)?;
            }
            SimOp::Reopen => {
                let db = self.db.take().expect("open");
                let closed = db.close().await;
                let down = if self.allowed("close", closed)? {
                    Down::Closed
                } else {
                    self.process_crash()
                };
                self.open().await?;
                self.settle(down).await?;
            }
            SimOp::Crash => {
                self.crash(false).await?;
                self.open().await?;
                // A killed process leaves its page cache: a WAL keeps
                // every acknowledged write.
                self.settle(self.process_crash()).await?;
            }
            SimOp::PowerCut(cut) => {
                self.crash(true).await?;
                if let Some(f) = self.follower.take() {
                    // It lived on the same machine.
                    let _ = f.close().await;
                }
                wait_unlocked(self.dir.path()).await;
                self.inj
                    .power_cut(&self.dir.path().join("data"), *cut)
                    .map_err(|e| format!("power cut: {e}"))?;
                self.open().await?;
                // Without a WAL a power cut is a crash: unflushed writes
                // are gone either way.
                let down = match self.config.durability {
                    Durability::None => self.process_crash(),
                    _ => Down::Power,
                };
                self.settle(down).await?;
            }
            SimOp::Refresh => self.refresh().await?,
            SimOp::FaultRead(n) => self.read_fault_next = Some(*n),
            SimOp::FaultWrite(n) => self.arm(OpKind::Write, *n, Armed::Write),
            SimOp::FaultSync(n) => self.arm(OpKind::Sync, *n, Armed::Write),
        }
        if self.db.is_none() {
            self.open().await?;
            self.settle(self.process_crash()).await?;
        }
        Ok(())
    }

    /// The follower catches up and holds what the writer holds (a store
    /// without a WAL: values it had when flushed).
    async fn refresh(&mut self) -> Result<(), String> {
        if self.follower.is_none() {
            let f = Db::open_read_only(self.dir.path())
                .await
                .map_err(|e| format!("open_read_only: {e}"))?;
            self.follower = Some(f);
            self.faults_at_refresh = self.inj.faults_injected();
        }
        let f = self.follower.clone().expect("just opened");
        if let Err(e) = f.refresh().await {
            // A rolled-back WAL write this follower had read: it says so
            // and is opened again.
            ensure!(
                self.inj.faults_injected() > self.faults_at_refresh,
                "refresh failed with no fault injected: {e}"
            );
            let _ = self.follower.take().expect("open").close().await;
            return Box::pin(self.refresh()).await;
        }
        let (found, errs) = Self::scan_all(&f).await?;
        ensure!(errs == 0, "follower scan: {errs} failed reads");
        let live = self.history.live();
        for (k, v) in &found {
            // A follower may have read a failed WAL write before the
            // writer wrote over it (its next refresh then says so).
            let fine = match self.config.durability {
                Durability::None => self.history.ever_had(k, v),
                _ => live.get(k) == Some(v) || self.history.failed_write(k, Some(v)),
            };
            ensure!(
                fine,
                "follower: {} = {}, the writer holds {:?}",
                String::from_utf8_lossy(k),
                short(v),
                live.get(k).map(short)
            );
        }
        if self.config.durability != Durability::None && !self.config.cache {
            for k in live.keys() {
                ensure!(
                    found.contains_key(k) || self.history.failed_write(k, None),
                    "follower: {} missing",
                    String::from_utf8_lossy(k)
                );
            }
        }
        for (k, v) in &found {
            let got = f.get(k).await.map_err(|e| format!("follower get: {e}"))?;
            ensure!(
                got.as_ref() == Some(v),
                "follower get disagrees with its scan"
            );
        }
        Ok(())
    }

    async fn finish(mut self) -> Result<(), String> {
        if let Some(f) = self.follower.take() {
            let _ = f.close().await;
        }
        self.disarm();
        let db = self.db.take().expect("open");
        let closed = db.close().await;
        let down = if self.allowed("final close", closed)? {
            Down::Closed
        } else {
            self.process_crash()
        };
        self.open().await?;
        self.settle(down).await?;
        self.check().await?;
        self.db
            .take()
            .expect("open")
            .close()
            .await
            .map_err(|e| e.to_string())
    }
}

async fn wait_unlocked(dir: &Path) {
    let dir = dir.to_path_buf();
    tokio::task::spawn_blocking(move || crate::common::wait_unlocked(&dir))
        .await
        .unwrap();
}

/// Runs `case`; `Err` names the first step whose check failed.
pub async fn run_case(case: &Case) -> Result<(), String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let inj = FaultInjector::new();
    let mut sim = Sim {
        config: case.config,
        dir,
        inj,
        db: None,
        follower: None,
        history: History::default(),
        step: 0,
        armed: None,
        faults_at_open: 0,
        faults_at_refresh: 0,
        read_fault_next: None,
    };
    sim.open().await?;
    for (i, op) in case.ops.iter().enumerate() {
        sim.step = i;
        if std::env::var_os("SILT_SIM_TRACE").is_some() {
            eprintln!("sim step {i}: {op}");
        }
        if let Some(n) = sim.read_fault_next.take() {
            sim.arm(OpKind::Read, n, Armed::Read);
        }
        let res = async {
            sim.run_op(op).await?;
            sim.check().await
        }
        .await;
        res.map_err(|e| format!("step {i} ({op}): {e}"))?;
        if sim.armed == Some(Armed::Read) {
            // A read fault lives for one step and its checks.
            sim.disarm();
        }
    }
    sim.finish().await.map_err(|e| format!("at the end: {e}"))
}

/// Runs `case` on a runtime of its own in a thread of its own, so that a
/// panic or a hang is a failure, not the end of the run.
pub fn run_isolated(case: &Case, limit: Duration) -> Result<(), String> {
    let (tx, rx) = std::sync::mpsc::channel();
    let case = case.clone();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let res = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            rt.block_on(run_case(&case))
        }));
        let _ = tx.send(match res {
            Ok(r) => r,
            Err(p) => Err(format!(
                "panicked: {}",
                p.downcast_ref::<String>()
                    .cloned()
                    .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default()
            )),
        });
    });
    rx.recv_timeout(limit)
        .unwrap_or_else(|_| Err(format!("hung for more than {limit:?}")))
}
