//! A fault-injecting, power-loss-simulating [`Vfs`] (feature
//! `fault-injection`), in the spirit of RocksDB's `FaultInjectionTestFS` and
//! redb's crash backend.
//!
//! Every operation through it is counted. A [`FaultPlan`] fails the n-th
//! operation of a kind, once or from then on. [`FaultInjector::power_cut`]
//! rewrites the data directory to what a power cut would leave: each file
//! holds what its syncs made durable (some of its unsynced pages may
//! survive too, see [`PowerCut`]), and only the directory entries covered
//! by the last directory fsync exist.
//!
//! What is durable is tracked from the writes themselves, not read back
//! from the file: an fdatasync makes durable what had been written when it
//! *began* (a write that completes while it runs may or may not be
//! covered, so the model says not), and a durable write (io_uring's
//! `RWF_DSYNC`, driven as production drives it) makes its own range
//! durable and nothing else.

mod gate;

use super::{DurableWriteError, FileIo, Vfs};
use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

/// What an injected fault looks like to the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// EIO, nothing written.
    Eio,
    /// ENOSPC, nothing written.
    Enospc,
    /// Half of the buffer written, then EIO.
    ShortWrite,
}

/// Which unsynced bytes survive a power cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PowerCut {
    /// None: every file holds exactly what its syncs made durable.
    Clean,
    /// Each file keeps a prefix of its unsynced bytes, then garbage, as a
    /// disk that persisted part of its in-flight writes in order would.
    TornTail,
    /// Each unsynced page survives or not on its own, the first page of a
    /// file included (pages that did not survive read as zeros, or as
    /// their durable bytes), and the file's length is its durable or its
    /// written one: a disk and a file system that write back out of order.
    AnyPages,
}

/// Which operations a plan counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpKind {
    /// Every operation.
    Any,
    /// `pwrite` (a plan for `Write` fails durable writes too).
    Write,
    /// A write made durable in the same operation (io_uring's `RWF_DSYNC`
    /// WAL writes): a write and an fdatasync at once.
    DurableWrite,
    /// `fdatasync` of a file.
    Sync,
    /// `fsync` of a directory.
    SyncDir,
    /// Opening or creating a file for writing.
    Open,
    /// `rename`.
    Rename,
    /// `unlink`.
    Remove,
    /// A cold read of record bytes by the I/O threads (reads served from
    /// memory are not I/O). Not counted by `Any`, so read timing never
    /// moves the write operations a plan or a power cut counts.
    Read,
}

/// Fail the `nth` (1-based) operation of `kind` with `fault`; with
/// `persistent`, every later operation of that kind fails too.
#[derive(Debug, Clone, Copy)]
pub struct FaultPlan {
    /// Operations counted.
    pub kind: OpKind,
    /// Which one fails first.
    pub nth: u64,
    /// How it fails.
    pub fault: Fault,
    /// Whether later ones fail too.
    pub persistent: bool,
}

#[derive(Debug, Default)]
struct State {
    ops: u64,
    kind_ops: HashMap<String, u64>,
    plan: Option<FaultPlan>,
    faults_injected: u64,
    /// After a power cut point: every operation fails.
    frozen: bool,
    freeze_at: Option<u64>,
    next_inode: u64,
    /// Current name → inode, for files created or opened through the Vfs.
    live: HashMap<PathBuf, u64>,
    /// Inode → what its syncs and durable writes made durable.
    durable: HashMap<u64, Vec<u8>>,
    /// Inode → what completed writes put in it (what a read would see).
    written: HashMap<u64, Vec<u8>>,
    /// fdatasyncs under way: (inode, what was written when it began).
    /// Durable writes that complete meanwhile are laid over these too.
    syncing: HashMap<u64, (u64, Vec<u8>)>,
    next_sync: u64,
    /// Directory → (name → inode) as of its last successful fsync.
    durable_dirs: HashMap<PathBuf, HashMap<PathBuf, u64>>,
}

/// Shared control of the fault-injecting I/O layer: plans, counters, power
/// loss.
///
/// ```
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// # let dir = tempfile::tempdir().unwrap();
/// use silt::{Fault, FaultInjector, FaultPlan, OpKind};
/// let inj = FaultInjector::new();
/// // The blocking backend: a WAL write, then its fdatasync (on io_uring the
/// // two are one `OpKind::DurableWrite`).
/// let db = silt::Db::builder(dir.path())
///     .io_backend(silt::IoBackend::Std)
///     .fault_injector(inj.clone())
///     .open()
///     .await?;
/// inj.set_plan(Some(FaultPlan { kind: OpKind::Sync, nth: 1, fault: Fault::Eio, persistent: false }));
/// assert!(db.put("k", "v").await.is_err()); // its fdatasync failed
/// assert!(matches!(db.put("k", "v").await, Err(silt::Error::Poisoned { .. })));
/// # let _ = db.close().await;
/// # Ok::<(), silt::Error>(()) }).unwrap();
/// ```
#[derive(Debug, Default)]
pub struct FaultInjector {
    state: Mutex<State>,
    refuse_uring: std::sync::atomic::AtomicBool,
    renames: gate::RenameGate,
}

fn lock(m: &Mutex<State>) -> MutexGuard<'_, State> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl FaultInjector {
    /// A new injector that starts with nothing to inject. Call
    /// [`FaultInjector::adopt`] on an existing directory first so that its
    /// files count as durable.
    pub fn new() -> Arc<FaultInjector> {
        Arc::new(FaultInjector::default())
    }

    /// Records every file under `data_dir` as durable as it is now.
    pub fn adopt(&self, data_dir: &Path) -> io::Result<()> {
        let mut st = lock(&self.state);
        let mut names = HashMap::new();
        if data_dir.exists() {
            for e in std::fs::read_dir(data_dir)? {
                let p = e?.path();
                if p.is_file() {
                    st.next_inode += 1;
                    let ino = st.next_inode;
                    let bytes = std::fs::read(&p)?;
                    st.written.insert(ino, bytes.clone());
                    st.durable.insert(ino, bytes);
                    st.live.insert(p.clone(), ino);
                    names.insert(p, ino);
                }
            }
        }
        st.durable_dirs.insert(data_dir.to_path_buf(), names);
        Ok(())
    }

    /// Makes the io_uring probe fail, as a kernel or seccomp policy that
    /// forbids io_uring would.
    pub fn refuse_io_uring(&self, on: bool) {
        self.refuse_uring
            .store(on, std::sync::atomic::Ordering::Relaxed);
    }

    /// From now until [`FaultInjector::release_renames`], a rename of a
    /// file whose name ends with `suffix` waits (its thread blocks) before
    /// it happens: to look at the store while a write is part-way (an XL
    /// value's file is renamed from `<id>.tmp` once written and synced).
    pub fn hold_renames(&self, suffix: &str) {
        self.renames.hold(suffix);
    }

    /// Lets held renames go on.
    pub fn release_renames(&self) {
        self.renames.release();
    }

    /// Renames waiting now because of [`FaultInjector::hold_renames`].
    pub fn renames_held(&self) -> usize {
        self.renames.waiting()
    }

    pub(crate) fn refuses_io_uring(&self) -> bool {
        self.refuse_uring.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Sets (or clears) the fault plan and resets the per-kind counters.
    pub fn set_plan(&self, plan: Option<FaultPlan>) {
        let mut st = lock(&self.state);
        st.plan = plan;
        st.kind_ops.clear();
    }

    /// From operation number `n` (1-based, counting every kind) on, every
    /// operation fails: the machine lost power there. Follow with
    /// [`FaultInjector::power_loss`].
    pub fn freeze_at(&self, n: u64) {
        lock(&self.state).freeze_at = Some(n);
    }

    /// Operations of the plan's kind counted since it was set (a plan
    /// whose `nth` is never reached only counts).
    pub fn plan_ops(&self) -> u64 {
        let st = lock(&self.state);
        st.plan.map_or(0, |p| {
            st.kind_ops
                .get(&format!("{:?}", p.kind))
                .copied()
                .unwrap_or(0)
        })
    }

    /// Operations seen so far.
    pub fn ops(&self) -> u64 {
        lock(&self.state).ops
    }

    /// Faults injected so far (not counting frozen operations).
    pub fn faults_injected(&self) -> u64 {
        lock(&self.state).faults_injected
    }

    /// Rewrites `data_dir` to what a power cut leaves: only durable entries,
    /// each with its durable bytes. With `torn_tail`, as
    /// [`PowerCut::TornTail`], else [`PowerCut::Clean`]. The store must be
    /// closed or dead.
    pub fn power_loss(&self, data_dir: &Path, torn_tail: bool) -> io::Result<()> {
        let cut = if torn_tail {
            PowerCut::TornTail
        } else {
            PowerCut::Clean
        };
        self.power_cut(data_dir, cut)
    }

    /// Rewrites `data_dir` to what a power cut of kind `cut` leaves. The
    /// store must be closed or dead. Which unsynced bytes survive is
    /// pseudo-random, seeded by the operation count, so a run repeats.
    pub fn power_cut(&self, data_dir: &Path, cut: PowerCut) -> io::Result<()> {
        let mut st = lock(&self.state);
        let entries = st.durable_dirs.get(data_dir).cloned().unwrap_or_default();
        for e in std::fs::read_dir(data_dir)? {
            let p = e?.path();
            if p.is_file() {
                std::fs::remove_file(&p)?;
            }
        }
        let mut rng = Lcg(st.ops);
        let mut after = HashMap::new();
        // In name order, so that a seed gives the same cut on every run.
        let mut names: Vec<(&PathBuf, &u64)> = entries.iter().collect();
        names.sort();
        for (path, ino) in names {
            let durable = st.durable.get(ino).cloned().unwrap_or_default();
            let bytes = match st.written.get(ino) {
                Some(written) => survivors(&durable, written, cut, &mut rng),
                None => durable,
            };
            std::fs::write(path, &bytes)?;
            after.insert(*ino, bytes);
        }
        st.written = after.clone();
        st.durable = after;
        st.syncing.clear();
        st.live = entries;
        st.frozen = false;
        st.freeze_at = None;
        Ok(())
    }

    /// Counts a cold read and decides whether it fails (only a plan for
    /// `OpKind::Read` fails reads).
    fn check_read(&self) -> Result<(), Fault> {
        let mut st = lock(&self.state);
        match st.plan {
            Some(plan) if plan.kind == OpKind::Read => {
                let n = st.kind_ops.entry("Read".into()).or_default();
                *n += 1;
                let n = *n;
                if n == plan.nth || (plan.persistent && n > plan.nth) {
                    st.faults_injected += 1;
                    return Err(plan.fault);
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// Counts an operation and decides whether it fails.
    fn check(&self, kind: OpKind) -> Result<(), Fault> {
        let mut st = lock(&self.state);
        st.ops += 1;
        if std::env::var_os("SILT_FAULT_TRACE").is_some() {
            eprintln!("silt fault layer: op {} {kind:?}", st.ops);
        }
        if st.freeze_at.is_some_and(|n| st.ops >= n) {
            st.frozen = true;
        }
        if st.frozen {
            return Err(Fault::Eio);
        }
        let Some(plan) = st.plan else { return Ok(()) };
        let counts = plan.kind == OpKind::Any
            || plan.kind == kind
            || (plan.kind == OpKind::Write && kind == OpKind::DurableWrite);
        if !counts {
            return Ok(());
        }
        let n = st.kind_ops.entry(format!("{:?}", plan.kind)).or_default();
        *n += 1;
        let n = *n;
        if n == plan.nth || (plan.persistent && n > plan.nth) {
            st.faults_injected += 1;
            if std::env::var_os("SILT_FAULT_TRACE").is_some() {
                eprintln!(
                    "silt fault layer: op {} {kind:?} fails with {:?}",
                    st.ops, plan.fault
                );
            }
            return Err(plan.fault);
        }
        Ok(())
    }
}

fn as_io(f: Fault) -> io::Error {
    match f {
        Fault::Enospc => io::Error::from_raw_os_error(libc::ENOSPC),
        Fault::Eio | Fault::ShortWrite => io::Error::from_raw_os_error(libc::EIO),
    }
}

/// A small deterministic generator (Knuth's MMIX constants).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 20
    }
}

/// What a file holds after a power cut of kind `cut`, from its durable and
/// its written bytes.
fn survivors(durable: &[u8], written: &[u8], cut: PowerCut, rng: &mut Lcg) -> Vec<u8> {
    const PAGE: usize = 4096;
    let mut bytes = durable.to_vec();
    match cut {
        PowerCut::Clean => {}
        PowerCut::TornTail => {
            if written.len() > bytes.len() && written[..bytes.len()] == bytes[..] {
                let extra = written.len() - bytes.len();
                let keep = rng.next() as usize % (extra + 1);
                let end = bytes.len() + keep;
                bytes.extend_from_slice(&written[bytes.len()..end]);
                let salt = rng.next();
                let garbage = (salt as usize % 512).min(written.len() - end);
                bytes.extend((0..garbage).map(|i| (salt >> (i % 40)) as u8 | 1));
            }
        }
        PowerCut::AnyPages => {
            if rng.next().is_multiple_of(2) {
                bytes.resize(written.len(), 0);
            }
            for start in (0..bytes.len().min(written.len())).step_by(PAGE) {
                let end = (start + PAGE).min(bytes.len()).min(written.len());
                if bytes[start..end] != written[start..end] && rng.next().is_multiple_of(2) {
                    bytes[start..end].copy_from_slice(&written[start..end]);
                }
            }
        }
    }
    bytes
}

/// Lays `data` over `file` at `offset`, growing it with zeros as needed.
fn overlay(file: &mut Vec<u8>, data: &[u8], offset: usize) {
    let end = offset + data.len();
    if file.len() < end {
        file.resize(end, 0);
    }
    file[offset..end].copy_from_slice(data);
}

/// The [`Vfs`] that consults a [`FaultInjector`] before every operation.
#[derive(Debug)]
pub(crate) struct FaultVfs {
    inner: Arc<dyn Vfs>,
    inj: Arc<FaultInjector>,
}

impl FaultVfs {
    /// Wraps the backend's own file system.
    pub fn new(inner: Arc<dyn Vfs>, inj: Arc<FaultInjector>) -> FaultVfs {
        FaultVfs { inner, inj }
    }
}

#[derive(Debug)]
struct FaultFile {
    inner: Box<dyn FileIo>,
    ino: u64,
    inj: Arc<FaultInjector>,
}

impl FaultFile {
    /// Records a completed write of `bufs` at `offset`; with `durable`, as
    /// made durable too (and covered by fdatasyncs under way).
    fn wrote(&self, bufs: &[&[u8]], offset: u64, durable: bool) {
        let mut st = lock(&self.inj.state);
        let st = &mut *st;
        let mut at = offset as usize;
        for buf in bufs {
            overlay(st.written.entry(self.ino).or_default(), buf, at);
            if durable {
                overlay(st.durable.entry(self.ino).or_default(), buf, at);
                for (ino, snapshot) in st.syncing.values_mut() {
                    if *ino == self.ino {
                        overlay(snapshot, buf, at);
                    }
                }
            }
            at += buf.len();
        }
    }

    /// The first half of the range (whole pages), as a short write leaves.
    fn write_half(&self, bufs: &[&[u8]], offset: u64) -> io::Result<()> {
        let total: usize = bufs.iter().map(|b| b.len()).sum();
        let mut left = total / 2 / 4096 * 4096;
        let mut at = offset;
        for buf in bufs {
            let n = left.min(buf.len());
            if n == 0 {
                break;
            }
            self.inner.write_at(&buf[..n], at)?;
            self.wrote(&[&buf[..n]], at, false);
            at += n as u64;
            left -= n;
        }
        Ok(())
    }
}

impl FileIo for FaultFile {
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.write_gather(&[buf], offset)
    }

    /// One operation, like the one system call it stands for; a short write
    /// puts down the first half of the range (whole pages).
    fn write_gather(&self, bufs: &[&[u8]], offset: u64) -> io::Result<()> {
        match self.inj.check(OpKind::Write) {
            Ok(()) => {
                self.inner.write_gather(bufs, offset)?;
                self.wrote(bufs, offset, false);
                Ok(())
            }
            Err(Fault::ShortWrite) => {
                self.write_half(bufs, offset)?;
                Err(as_io(Fault::ShortWrite))
            }
            Err(f) => Err(as_io(f)),
        }
    }

    /// As the backend underneath, so the log takes the same path.
    fn durable_writes(&self) -> bool {
        self.inner.durable_writes()
    }

    /// Where the backend makes a write durable in one operation (io_uring's
    /// `RWF_DSYNC`), one operation here too, through the backend's own
    /// call, and an injected error is classified as production classifies
    /// a real one (EIO may be the flush failing). Elsewhere the write and
    /// the fdatasync are two operations, so a fault or a power cut can fall
    /// between them.
    fn write_gather_durable(&self, bufs: &[&[u8]], offset: u64) -> Result<(), DurableWriteError> {
        if !self.inner.durable_writes() {
            self.write_gather(bufs, offset)
                .map_err(DurableWriteError::Write)?;
            return self.sync_data().map_err(DurableWriteError::Sync);
        }
        match self.inj.check(OpKind::DurableWrite) {
            Ok(()) => {
                self.inner.write_gather_durable(bufs, offset)?;
                self.wrote(bufs, offset, true);
                Ok(())
            }
            Err(f) => {
                if f == Fault::ShortWrite {
                    self.write_half(bufs, offset)
                        .map_err(super::uring::durable_write_error)?;
                }
                Err(super::uring::durable_write_error(as_io(f)))
            }
        }
    }

    /// Passed through, not counted: it makes nothing durable, so the model
    /// has nothing to record, and plans count the same operations with
    /// and without it.
    fn write_behind(&self, offset: u64, len: u64, wait: bool) -> io::Result<()> {
        self.inner.write_behind(offset, len, wait)
    }

    fn sync_data(&self) -> io::Result<()> {
        self.inj.check(OpKind::Sync).map_err(as_io)?;
        let token = {
            let mut st = lock(&self.inj.state);
            let snapshot = st.written.get(&self.ino).cloned().unwrap_or_default();
            st.next_sync += 1;
            let token = st.next_sync;
            st.syncing.insert(token, (self.ino, snapshot));
            token
        };
        let res = self.inner.sync_data();
        let mut st = lock(&self.inj.state);
        // Invariant: only this call inserted `token` and only it removes it
        // (`power_cut` clears the map only with the store closed).
        let (_, snapshot) = st.syncing.remove(&token).expect("own sync");
        res?;
        st.durable.insert(self.ino, snapshot);
        Ok(())
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.inj.check(OpKind::Write).map_err(as_io)?;
        self.inner.set_len(len)?;
        lock(&self.inj.state)
            .written
            .entry(self.ino)
            .or_default()
            .resize(len as usize, 0);
        Ok(())
    }
}

impl Vfs for FaultVfs {
    fn open_write(
        &self,
        path: &Path,
        create: bool,
        direct: bool,
    ) -> io::Result<(Box<dyn FileIo>, bool)> {
        self.inj.check(OpKind::Open).map_err(as_io)?;
        let (inner, direct) = self.inner.open_write(path, create, direct)?;
        let mut st = lock(&self.inj.state);
        let ino = match st.live.get(path) {
            Some(&ino) if !create => ino,
            _ => {
                st.next_inode += 1;
                let ino = st.next_inode;
                st.live.insert(path.to_path_buf(), ino);
                ino
            }
        };
        if create {
            st.written.insert(ino, Vec::new());
        } else {
            // A file the layer has not seen written: what it holds now.
            st.written
                .entry(ino)
                .or_insert_with(|| std::fs::read(path).unwrap_or_default());
        }
        drop(st);
        Ok((
            Box::new(FaultFile {
                inner,
                ino,
                inj: self.inj.clone(),
            }),
            direct,
        ))
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.inj.renames.pass(from);
        self.inj.check(OpKind::Rename).map_err(as_io)?;
        self.inner.rename(from, to)?;
        let mut st = lock(&self.inj.state);
        if let Some(ino) = st.live.remove(from) {
            st.live.insert(to.to_path_buf(), ino);
        }
        Ok(())
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        self.inj.check(OpKind::SyncDir).map_err(as_io)?;
        self.inner.sync_dir(dir)?;
        let mut st = lock(&self.inj.state);
        let names: HashMap<PathBuf, u64> = st
            .live
            .iter()
            .filter(|(p, _)| p.parent() == Some(dir))
            .map(|(p, i)| (p.clone(), *i))
            .collect();
        st.durable_dirs.insert(dir.to_path_buf(), names);
        Ok(())
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        self.inj.check(OpKind::Remove).map_err(as_io)?;
        self.inner.remove_file(path)?;
        lock(&self.inj.state).live.remove(path);
        Ok(())
    }

    fn read_fault(&self) -> Option<io::Error> {
        self.inj.check_read().err().map(as_io)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Unsynced pages survive on their own: over a few seeds, a file keeps
    /// later pages while losing its first (the case a torn tail cannot
    /// model), and every page is either durable or written, never other.
    #[test]
    fn any_pages_can_lose_the_first_page_and_keep_later_ones() {
        let durable = vec![1u8; 4096];
        let written: Vec<u8> = (0..4 * 4096).map(|i| 2 + (i / 4096) as u8).collect();
        let mut first_lost_later_kept = false;
        for seed in 0..64 {
            let got = survivors(&durable, &written, PowerCut::AnyPages, &mut Lcg(seed));
            assert!(got.len() == durable.len() || got.len() == written.len());
            for (p, page) in got.chunks(4096).enumerate() {
                let ok = page == &written[p * 4096..(p + 1) * 4096]
                    || page
                        .iter()
                        .all(|&b| b == durable.get(p * 4096).copied().unwrap_or(0));
                assert!(ok, "seed {seed}: page {p} is neither durable nor written");
            }
            if got.len() > 4096 && got[0] == 1 && got[4096..].iter().any(|&b| b != 0) {
                first_lost_later_kept = true;
            }
        }
        assert!(first_lost_later_kept);
    }
}
