//! A fault-injecting, power-loss-simulating [`Vfs`] (feature
//! `fault-injection`), in the spirit of RocksDB's `FaultInjectionTestFS` and
//! redb's crash backend.
//!
//! Every operation through it is counted. A [`FaultPlan`] fails the n-th
//! operation of a kind, once or from then on. [`FaultInjector::power_loss`]
//! rewrites the data directory to what a power cut would leave: each file
//! holds what its last successful fdatasync covered (optionally followed by
//! some of its unsynced bytes and garbage), and only the directory entries
//! covered by the last directory fsync exist.

use super::{FileIo, Vfs};
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

/// Which operations a plan counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpKind {
    /// Every operation.
    Any,
    /// `pwrite`.
    Write,
    /// `fdatasync` of a file.
    Sync,
    /// `fsync` of a directory.
    SyncDir,
    /// Opening or creating a file for writing.
    Open,
    /// `rename`.
    Rename,
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
    /// Inode → bytes covered by its last successful fdatasync.
    durable: HashMap<u64, Vec<u8>>,
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
/// let db = silt::Db::builder(dir.path()).fault_injector(inj.clone()).open().await?;
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
                    st.durable.insert(ino, std::fs::read(&p)?);
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

    /// Operations seen so far.
    pub fn ops(&self) -> u64 {
        lock(&self.state).ops
    }

    /// Faults injected so far (not counting frozen operations).
    pub fn faults_injected(&self) -> u64 {
        lock(&self.state).faults_injected
    }

    /// Rewrites `data_dir` to what a power cut leaves: only durable entries,
    /// each with its durable bytes. With `torn_tail`, each file that had
    /// unsynced bytes keeps a prefix of them followed by garbage, as a disk
    /// that persisted part of its in-flight writes would. The store must be
    /// closed or dead.
    pub fn power_loss(&self, data_dir: &Path, torn_tail: bool) -> io::Result<()> {
        let mut st = lock(&self.state);
        let entries = st.durable_dirs.get(data_dir).cloned().unwrap_or_default();
        let mut live_bytes = HashMap::new();
        for (path, ino) in &st.live {
            if let Ok(b) = std::fs::read(path) {
                live_bytes.insert(*ino, b);
            }
        }
        for e in std::fs::read_dir(data_dir)? {
            let p = e?.path();
            if p.is_file() {
                std::fs::remove_file(&p)?;
            }
        }
        let mut salt = st.ops;
        for (path, ino) in &entries {
            let mut bytes = st.durable.get(ino).cloned().unwrap_or_default();
            if let (true, Some(live)) = (torn_tail, live_bytes.get(ino)) {
                if live.len() > bytes.len() && live[..bytes.len()] == bytes[..] {
                    salt = salt
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    let extra = live.len() - bytes.len();
                    let keep = (salt >> 33) as usize % (extra + 1);
                    let end = bytes.len() + keep;
                    bytes.extend_from_slice(&live[bytes.len()..end]);
                    let garbage = ((salt >> 20) as usize % 512).min(live.len() - end);
                    bytes.extend((0..garbage).map(|i| (salt >> (i % 56)) as u8 | 1));
                }
            }
            std::fs::write(path, &bytes)?;
        }
        st.live = entries.clone();
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
        if plan.kind != OpKind::Any && plan.kind != kind {
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

impl FileIo for FaultFile {
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.write_gather(&[buf], offset)
    }

    /// One operation, like the one system call it stands for; a short write
    /// puts down the first half of the range (whole pages).
    fn write_gather(&self, bufs: &[&[u8]], offset: u64) -> io::Result<()> {
        match self.inj.check(OpKind::Write) {
            Ok(()) => self.inner.write_gather(bufs, offset),
            Err(Fault::ShortWrite) => {
                let total: usize = bufs.iter().map(|b| b.len()).sum();
                let mut left = total / 2 / 4096 * 4096;
                let mut at = offset;
                for buf in bufs {
                    let n = left.min(buf.len());
                    if n == 0 {
                        break;
                    }
                    self.inner.write_at(&buf[..n], at)?;
                    at += n as u64;
                    left -= n;
                }
                Err(as_io(Fault::ShortWrite))
            }
            Err(f) => Err(as_io(f)),
        }
    }

    /// As the backend underneath, so the log takes the same path; the
    /// durable write itself is the trait's default, a write then an
    /// fdatasync, each its own operation here, so that a fault or a power
    /// cut can fall between them.
    fn durable_writes(&self) -> bool {
        self.inner.durable_writes()
    }

    fn sync_data(&self) -> io::Result<()> {
        self.inj.check(OpKind::Sync).map_err(as_io)?;
        self.inner.sync_data()?;
        let mut st = lock(&self.inj.state);
        let path = st
            .live
            .iter()
            .find(|(_, &i)| i == self.ino)
            .map(|(p, _)| p.clone());
        if let Some(bytes) = path.and_then(|p| std::fs::read(p).ok()) {
            st.durable.insert(self.ino, bytes);
        }
        Ok(())
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.inj.check(OpKind::Write).map_err(as_io)?;
        self.inner.set_len(len)
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
        self.inj.check(OpKind::Open).map_err(as_io)?;
        self.inner.remove_file(path)?;
        lock(&self.inj.state).live.remove(path);
        Ok(())
    }

    fn read_fault(&self) -> Option<io::Error> {
        self.inj.check_read().err().map(as_io)
    }
}
