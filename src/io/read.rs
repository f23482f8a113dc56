//! Cold reads: record bytes that are not in memory are read by I/O threads
//! while the caller's future is pending, so no runtime worker waits for the
//! disk. `IoBackend::Uring`: one thread per store owns a ring with up to
//! [`MAX_INFLIGHT`] reads in flight; callers hand it reads over a channel
//! and poke an eventfd the ring also waits on, so a read never queues
//! behind a slow one. `IoBackend::Std`: a pool of up to [`STD_THREADS`]
//! threads doing `pread`, started as reads need them.
//!
//! A read is either through the page cache (the pages stay cached for the
//! next get) or `O_DIRECT` (only the sectors asked for, nothing cached);
//! `crate::read` picks one per read (docs/decisions.md).

use std::alloc::Layout;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::ptr::NonNull;
use std::sync::atomic::{fence, AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use tokio::sync::oneshot;

/// Reads one io_uring reader keeps in flight; more wait in its channel.
/// The virtio disk here queues 256 requests.
const MAX_INFLIGHT: usize = 128;
/// io_uring read threads, each with its own ring: one thread handling
/// every completion was the limit at ~58 k 4 KiB reads/s here
/// (docs/decisions.md).
const URING_THREADS: usize = 2;
/// Most `pread` threads of the std reader: fio's QD32 reference needs 32
/// reads in flight.
pub(crate) const STD_THREADS: usize = 32;
/// Alignment of every read buffer (O_DIRECT needs at most a page).
const BUF_ALIGN: usize = 4096;
/// `statx` mask bit for the O_DIRECT alignment fields (Linux 6.1).
const STATX_DIOALIGN: u32 = 0x2000;

/// Locks a mutex, ignoring poisoning (nothing here panics while holding one).
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// How a read reaches the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ReadMode {
    /// Through the page cache, which keeps the pages.
    Cached,
    /// `O_DIRECT`: the aligned sectors around the range, nothing cached.
    Direct,
}

/// A page-aligned heap buffer holding what a read returned; as bytes, the
/// part that was asked for.
pub(crate) struct ReadBuf {
    ptr: NonNull<u8>,
    layout: Layout,
    /// Bytes the read filled, from the start.
    filled: usize,
    /// The asked-for part: `[start, start + len)`, within `filled`.
    start: usize,
    len: usize,
}

// SAFETY: ReadBuf owns its allocation like a Box<[u8]>.
unsafe impl Send for ReadBuf {}
// SAFETY: as above; `&ReadBuf` only reads initialised bytes.
unsafe impl Sync for ReadBuf {}

impl ReadBuf {
    fn new(cap: usize) -> io::Result<ReadBuf> {
        let layout = Layout::from_size_align(cap.max(1), BUF_ALIGN)
            .map_err(|_| io::Error::other("read buffer too large"))?;
        // SAFETY: the layout has a non-zero size.
        let raw = unsafe { std::alloc::alloc(layout) };
        let ptr = NonNull::new(raw).ok_or_else(|| io::Error::other("out of memory"))?;
        Ok(ReadBuf {
            ptr,
            layout,
            filled: 0,
            start: 0,
            len: 0,
        })
    }

    /// The unfilled tail, for the kernel to write into.
    fn spare(&mut self) -> (*mut u8, usize) {
        // SAFETY: `filled` is at most the allocation's size.
        let at = unsafe { self.ptr.as_ptr().add(self.filled) };
        (at, self.layout.size() - self.filled)
    }
}

impl AsRef<[u8]> for ReadBuf {
    fn as_ref(&self) -> &[u8] {
        // SAFETY: `[start, start + len)` lies within the first `filled`
        // bytes, which a read wrote (checked in `Planned::advance`).
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr().add(self.start), self.len) }
    }
}

impl Drop for ReadBuf {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout.
        unsafe { std::alloc::dealloc(self.ptr.as_ptr(), self.layout) }
    }
}

impl std::fmt::Debug for ReadBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadBuf").field("len", &self.len).finish()
    }
}

/// A data file opened for reading: a page-cache descriptor (told reads are
/// random, so the kernel reads no more than asked) and, opened on first
/// use, an `O_DIRECT` one with its alignment.
pub(crate) struct ReadFile {
    path: PathBuf,
    file: File,
    direct: OnceLock<Option<(File, usize)>>,
}

impl std::fmt::Debug for ReadFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadFile")
            .field("path", &self.path)
            .finish()
    }
}

impl ReadFile {
    /// Wraps `file` (open for reading) at `path`.
    pub fn new(path: &Path, file: File) -> ReadFile {
        // SAFETY: posix_fadvise only reads its arguments; a failure only
        // loses the hint.
        unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_RANDOM) };
        ReadFile {
            path: path.to_path_buf(),
            file,
            direct: OnceLock::new(),
        }
    }

    #[cfg(any(test, feature = "fault-injection"))]
    pub fn file(&self) -> &File {
        &self.file
    }

    /// The O_DIRECT descriptor and its offset alignment, if the file
    /// system allows O_DIRECT.
    fn direct(&self) -> Option<(i32, usize)> {
        let opened = self.direct.get_or_init(|| {
            let file = std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_DIRECT)
                .open(&self.path)
                .ok()?;
            let align = dio_align(&file);
            Some((file, align))
        });
        opened.as_ref().map(|(f, a)| (f.as_raw_fd(), *a))
    }
}

/// The offset alignment O_DIRECT reads of `file` need: what `statx`
/// reports (512 on this VM's virtio disk), else a page.
fn dio_align(file: &File) -> usize {
    // SAFETY: statx is plain old data; all zeroes is a valid value.
    let mut st: libc::statx = unsafe { std::mem::zeroed() };
    // SAFETY: `st` is a valid out-pointer; the path is empty with
    // AT_EMPTY_PATH, so the descriptor itself is queried.
    let rc = unsafe {
        libc::statx(
            file.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH,
            STATX_DIOALIGN,
            &mut st,
        )
    };
    let align = st.stx_dio_offset_align as usize;
    if rc == 0 && st.stx_mask & STATX_DIOALIGN != 0 && align.is_power_of_two() && align <= 4096 {
        align
    } else {
        4096
    }
}

/// A read on its way through a backend.
struct Planned {
    /// Keeps the descriptor open until the read is over.
    _file: Arc<ReadFile>,
    fd: i32,
    /// File offset of the buffer's first byte.
    at: u64,
    /// Bytes the buffer must hold from its start for the ask to be met.
    need: usize,
    buf: ReadBuf,
    reply: oneshot::Sender<io::Result<ReadBuf>>,
}

impl Planned {
    fn new(
        file: Arc<ReadFile>,
        offset: u64,
        len: usize,
        mode: ReadMode,
        reply: oneshot::Sender<io::Result<ReadBuf>>,
    ) -> Result<Planned, (io::Error, oneshot::Sender<io::Result<ReadBuf>>)> {
        let direct = match mode {
            ReadMode::Direct => file.direct(),
            ReadMode::Cached => None,
        };
        let (fd, at, cap) = match direct {
            Some((fd, align)) => {
                let a = align as u64;
                let at = offset / a * a;
                let end = (offset + len as u64).div_ceil(a) * a;
                (fd, at, (end - at) as usize)
            }
            None => (file.file.as_raw_fd(), offset, len),
        };
        let mut buf = match ReadBuf::new(cap) {
            Ok(b) => b,
            Err(e) => return Err((e, reply)),
        };
        buf.start = (offset - at) as usize;
        buf.len = len;
        Ok(Planned {
            need: buf.start + len,
            _file: file,
            fd,
            at,
            buf,
            reply,
        })
    }

    /// Counts `n` more bytes read; `Some` once the read is over (done, or
    /// failed: the file ended first).
    fn advance(&mut self, n: usize) -> Option<io::Result<()>> {
        if n == 0 {
            return Some(Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the file ends before the record",
            )));
        }
        self.buf.filled += n;
        (self.buf.filled >= self.need).then_some(Ok(()))
    }

    fn finish(self, res: io::Result<()>) {
        let out = res.map(|()| self.buf);
        let _ = self.reply.send(out);
    }

    /// Fails a read the kernel may still be doing (its ring failed): the
    /// caller gets an error, and the buffer and the file go to
    /// [`ABANDONED`], never freed or closed, since the kernel may still
    /// write into the one and read the other. Returns the bytes kept.
    fn abandon(self) -> usize {
        let Planned {
            _file, buf, reply, ..
        } = self;
        let _ = reply.send(Err(io::Error::other("io_uring read ring failed")));
        let bytes = buf.layout.size();
        ABANDONED
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push((buf, _file));
        bytes
    }

    /// Blocking `pread`s until done (the std backend).
    fn run_blocking(mut self) {
        loop {
            let (ptr, room) = self.buf.spare();
            let at = self.at + self.buf.filled as u64;
            // SAFETY: `ptr` points at `room` writable bytes of our buffer.
            let n = unsafe { libc::pread(self.fd, ptr.cast(), room, at as libc::off_t) };
            let res = if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                Some(Err(e))
            } else {
                self.advance(n as usize)
            };
            if let Some(res) = res {
                return self.finish(res);
            }
        }
    }
}

/// The cold-read I/O threads of one store.
#[derive(Debug)]
pub(crate) struct Reader {
    backend: ReaderBackend,
}

#[derive(Debug)]
enum ReaderBackend {
    /// Reads are spread over the rings in turn.
    Uring { rings: Vec<Ring>, next: AtomicUsize },
    Std {
        tx: Mutex<Option<crossbeam_channel::Sender<Planned>>>,
        rx: crossbeam_channel::Receiver<Planned>,
        idle: Arc<AtomicUsize>,
        threads: Mutex<Vec<std::thread::JoinHandle<()>>>,
    },
}

/// One io_uring read thread and how to reach it.
#[derive(Debug)]
struct Ring {
    tx: Mutex<Option<crossbeam_channel::Sender<Planned>>>,
    wake: Arc<Wake>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

/// How callers wake a ring thread that waits for completions.
#[derive(Debug)]
struct Wake {
    /// The thread is about to wait, or waits, in the ring.
    parked: AtomicBool,
    efd: OwnedFd,
}

impl Wake {
    fn poke(&self) {
        fence(Ordering::SeqCst);
        if self.parked.load(Ordering::SeqCst) && self.parked.swap(false, Ordering::SeqCst) {
            let one = 1u64;
            // SAFETY: writes 8 bytes from a live u64 to our eventfd.
            unsafe { libc::write(self.efd.as_raw_fd(), (&one as *const u64).cast(), 8) };
        }
    }
}

impl Ring {
    /// A read thread with its own ring, made on that thread: with
    /// SINGLE_ISSUER and DEFER_TASKRUN a ring belongs to the thread that
    /// made it, and completions are processed only when it waits for them.
    fn start() -> io::Result<Ring> {
        let (tx, rx) = crossbeam_channel::unbounded::<Planned>();
        // SAFETY: eventfd takes no pointers.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a new descriptor we own.
        let efd = unsafe { OwnedFd::from_raw_fd(fd) };
        let wake = Arc::new(Wake {
            parked: AtomicBool::new(false),
            efd,
        });
        let thread_wake = wake.clone();
        let (ready_tx, ready_rx) = std::sync::mpsc::sync_channel(1);
        let thread = std::thread::Builder::new()
            .name("silt-read".into())
            .spawn(move || {
                let ring = io_uring::IoUring::builder()
                    .setup_single_issuer()
                    .setup_defer_taskrun()
                    .build(2 * MAX_INFLIGHT as u32)
                    .or_else(|_| io_uring::IoUring::new(2 * MAX_INFLIGHT as u32));
                match ring {
                    Ok(ring) => {
                        let _ = ready_tx.send(Ok(()));
                        uring_loop(ring, rx, &thread_wake);
                    }
                    Err(e) => drop(ready_tx.send(Err(e))),
                }
            })?;
        ready_rx
            .recv()
            .unwrap_or_else(|_| Err(io::Error::other("the read thread died")))?;
        Ok(Ring {
            tx: Mutex::new(Some(tx)),
            wake,
            thread: Mutex::new(Some(thread)),
        })
    }
}

impl Reader {
    /// An io_uring reader if `uring` (falling back to the std pool if the
    /// rings cannot be set up), else the std pool.
    pub fn new(uring: bool) -> Reader {
        if uring {
            match Reader::start(true) {
                Ok(r) => return r,
                Err(e) => {
                    tracing::warn!(error = %e, "io_uring reader unavailable; reading with threads")
                }
            }
        }
        Reader::std_pool()
    }

    fn std_pool() -> Reader {
        let (tx, rx) = crossbeam_channel::unbounded::<Planned>();
        Reader {
            backend: ReaderBackend::Std {
                tx: Mutex::new(Some(tx)),
                rx,
                idle: Arc::new(AtomicUsize::new(0)),
                threads: Mutex::new(Vec::new()),
            },
        }
    }

    fn start(uring: bool) -> io::Result<Reader> {
        if !uring {
            return Ok(Reader::std_pool());
        }
        let rings = (0..URING_THREADS)
            .map(|_| Ring::start())
            .collect::<io::Result<Vec<Ring>>>()?;
        Ok(Reader {
            backend: ReaderBackend::Uring {
                rings,
                next: AtomicUsize::new(0),
            },
        })
    }

    /// Reads `len` bytes at `offset` of `file`. The read runs on an I/O
    /// thread from the first poll on.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future lets the read finish on its thread and drops the
    /// bytes; nothing else changes.
    pub async fn read(
        &self,
        file: &Arc<ReadFile>,
        offset: u64,
        len: usize,
        mode: ReadMode,
    ) -> io::Result<ReadBuf> {
        let (reply, rx) = oneshot::channel();
        let planned = match Planned::new(file.clone(), offset, len, mode, reply) {
            Ok(p) => p,
            Err((e, _)) => return Err(e),
        };
        self.submit(planned)?;
        match rx.await {
            Ok(res) => res,
            Err(_) => Err(io::Error::other("the read thread stopped")),
        }
    }

    fn submit(&self, planned: Planned) -> io::Result<()> {
        let stopped = || io::Error::other("the store's read threads are stopped");
        match &self.backend {
            ReaderBackend::Uring { rings, next } => {
                let ring = &rings[next.fetch_add(1, Ordering::Relaxed) % rings.len()];
                match &*lock(&ring.tx) {
                    Some(tx) if tx.send(planned).is_ok() => {}
                    _ => return Err(stopped()),
                }
                ring.wake.poke();
            }
            ReaderBackend::Std {
                tx,
                rx,
                idle,
                threads,
            } => {
                match &*lock(tx) {
                    Some(tx) if tx.send(planned).is_ok() => {}
                    _ => return Err(stopped()),
                }
                let mut threads = lock(threads);
                if idle.load(Ordering::SeqCst) < rx.len() && threads.len() < STD_THREADS {
                    let (rx, idle) = (rx.clone(), idle.clone());
                    let spawned = std::thread::Builder::new()
                        .name("silt-read".into())
                        .spawn(move || std_loop(&rx, &idle));
                    // Without a new thread the read waits for a busy one.
                    if let Ok(t) = spawned {
                        threads.push(t);
                    }
                }
            }
        }
        Ok(())
    }

    /// Stops taking reads; the threads finish the ones they have and exit.
    /// Returns them, to be joined off the runtime.
    pub fn shutdown(&self) -> Vec<std::thread::JoinHandle<()>> {
        match &self.backend {
            ReaderBackend::Uring { rings, .. } => rings
                .iter()
                .filter_map(|ring| {
                    drop(lock(&ring.tx).take());
                    ring.wake.parked.store(true, Ordering::SeqCst);
                    ring.wake.poke();
                    lock(&ring.thread).take()
                })
                .collect(),
            ReaderBackend::Std { tx, threads, .. } => {
                drop(lock(tx).take());
                std::mem::take(&mut *lock(threads))
            }
        }
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        // Detached: the threads exit once their reads are done.
        drop(self.shutdown());
    }
}

fn std_loop(rx: &crossbeam_channel::Receiver<Planned>, idle: &AtomicUsize) {
    loop {
        idle.fetch_add(1, Ordering::SeqCst);
        let job = rx.recv();
        idle.fetch_sub(1, Ordering::SeqCst);
        let Ok(job) = job else { return };
        job.run_blocking();
    }
}

/// user_data of the eventfd read.
const WAKE_TOKEN: u64 = u64::MAX;

fn read_entry(p: &mut Planned, token: u64) -> io_uring::squeue::Entry {
    let (ptr, room) = p.buf.spare();
    let len = room.min(u32::MAX as usize) as u32;
    io_uring::opcode::Read::new(io_uring::types::Fd(p.fd), ptr, len)
        .offset(p.at + p.buf.filled as u64)
        .build()
        .user_data(token)
}

/// Buffers (and files) of reads whose ring failed while they were in
/// flight: kept for the life of the process (see `Planned::abandon`). A
/// ring fails only if the kernel refuses `io_uring_enter` itself, which
/// no test here has seen.
static ABANDONED: std::sync::Mutex<Vec<(ReadBuf, Arc<ReadFile>)>> =
    std::sync::Mutex::new(Vec::new());

/// Fails every read in `slots` as `Planned::abandon` does; the bytes kept.
fn abandon_in_flight(slots: &mut [Option<Planned>]) -> usize {
    slots
        .iter_mut()
        .filter_map(Option::take)
        .map(Planned::abandon)
        .sum()
}

/// The io_uring reader thread: takes reads from the channel while it has
/// room, waits in the ring for completions or a poke on the eventfd, and
/// answers each read when it is whole. Exits when the channel is closed
/// and nothing is in flight.
fn uring_loop(mut ring: io_uring::IoUring, rx: crossbeam_channel::Receiver<Planned>, wake: &Wake) {
    let mut slots: Vec<Option<Planned>> = Vec::new();
    let mut free: Vec<usize> = Vec::new();
    let mut live = 0usize;
    // On the heap: leaked, not freed, if the ring fails with its read in
    // flight (see `abandon`).
    let mut counter = Box::new(0u64);
    let efd = wake.efd.as_raw_fd();
    let wake_entry = |counter: &mut u64| {
        io_uring::opcode::Read::new(io_uring::types::Fd(efd), (counter as *mut u64).cast(), 8)
            .build()
            .user_data(WAKE_TOKEN)
    };
    let mut armed = false;
    let mut closed = false;
    // Entries that did not fit in the submission queue yet.
    let mut backlog: Vec<io_uring::squeue::Entry> = Vec::new();
    loop {
        while live < MAX_INFLIGHT && !closed {
            match rx.try_recv() {
                Ok(mut p) => {
                    let slot = free.pop().unwrap_or_else(|| {
                        slots.push(None);
                        slots.len() - 1
                    });
                    backlog.push(read_entry(&mut p, slot as u64));
                    slots[slot] = Some(p);
                    live += 1;
                }
                Err(crossbeam_channel::TryRecvError::Empty) => break,
                Err(crossbeam_channel::TryRecvError::Disconnected) => closed = true,
            }
        }
        // Armed after the channel was looked at, so a close seen there
        // is never followed by a wait on a new eventfd read.
        if !armed && !closed {
            backlog.push(wake_entry(&mut counter));
            armed = true;
        }
        if closed && live == 0 && !armed {
            return;
        }
        {
            let mut sq = ring.submission();
            let mut pushed = 0;
            for e in &backlog {
                // SAFETY: every buffer a read points at is owned by its
                // `Planned` in `slots` (or the `counter` of this frame),
                // kept until its completion is reaped below.
                if unsafe { sq.push(e) }.is_err() {
                    break;
                }
                pushed += 1;
            }
            backlog.drain(..pushed);
        }
        // Sleep only if nothing arrived since the channel was last looked
        // at (a caller that sends after this sees `parked` and pokes).
        wake.parked.store(true, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        let wait = if (rx.is_empty() || live >= MAX_INFLIGHT) && backlog.is_empty() {
            1
        } else {
            0
        };
        let res = ring.submit_and_wait(wait);
        wake.parked.store(false, Ordering::SeqCst);
        if let Err(e) = res {
            if !matches!(
                e.raw_os_error(),
                Some(libc::EINTR | libc::EAGAIN | libc::EBUSY)
            ) {
                // The ring is unusable: fail what is in flight and stop,
                // without freeing what the kernel may still write into.
                let leaked = abandon_in_flight(&mut slots) + std::mem::size_of::<u64>();
                std::mem::forget(counter);
                std::mem::forget(ring);
                tracing::error!(error = %e, leaked, "io_uring read thread failed; buffers of its reads in flight are leaked");
                return;
            }
        }
        let done: Vec<(u64, i32)> = ring
            .completion()
            .map(|c| (c.user_data(), c.result()))
            .collect();
        for (token, result) in done {
            if token == WAKE_TOKEN {
                armed = false;
                continue;
            }
            let slot = token as usize;
            let Some(mut p) = slots.get_mut(slot).and_then(Option::take) else {
                continue;
            };
            let outcome = if result < 0 {
                let e = io::Error::from_raw_os_error(-result);
                if e.kind() == io::ErrorKind::Interrupted {
                    None
                } else {
                    Some(Err(e))
                }
            } else {
                p.advance(result as usize)
            };
            match outcome {
                Some(res) => {
                    p.finish(res);
                    free.push(slot);
                    live -= 1;
                }
                None => {
                    // Short read: ask for the rest.
                    backlog.push(read_entry(&mut p, token));
                    slots[slot] = Some(p);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file_with(len: usize) -> (tempfile::TempDir, Arc<ReadFile>, Vec<u8>) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let data: Vec<u8> = (0..len).map(|i| (i * 7 + i / 4096) as u8).collect();
        std::fs::write(&path, &data).unwrap();
        let f = ReadFile::new(&path, File::open(&path).unwrap());
        (dir, Arc::new(f), data)
    }

    /// Every backend and mode returns exactly the bytes asked for, at
    /// unaligned offsets, many at once; a read past the end is an error.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn reads_return_exactly_the_range_on_every_backend() {
        let (_dir, file, data) = file_with(1 << 20);
        for uring in [false, true] {
            if uring && super::super::uring::probe().is_err() {
                continue;
            }
            let reader = Arc::new(Reader::start(uring).unwrap());
            for mode in [ReadMode::Cached, ReadMode::Direct] {
                let mut tasks = Vec::new();
                for i in 0..300u64 {
                    let (reader, file) = (reader.clone(), file.clone());
                    let off = (i * 3_331) % (1 << 20) / 2;
                    let len = 1 + (i as usize * 977) % 70_000;
                    tasks.push(tokio::spawn(async move {
                        let buf = reader.read(&file, off, len, mode).await.unwrap();
                        (off as usize, len, buf)
                    }));
                }
                for t in tasks {
                    let (off, len, buf) = t.await.unwrap();
                    assert_eq!(
                        buf.as_ref(),
                        &data[off..off + len],
                        "uring={uring} {mode:?}"
                    );
                }
                let past = reader.read(&file, (1 << 20) - 10, 100, mode).await;
                assert_eq!(past.unwrap_err().kind(), io::ErrorKind::UnexpectedEof);
            }
            for t in reader.shutdown() {
                t.join().unwrap();
            }
            let after = reader.read(&file, 0, 10, ReadMode::Cached).await;
            assert!(after.is_err(), "a stopped reader refuses reads");
        }
    }

    /// When a ring fails with reads in flight, their callers get an error
    /// and their buffers are leaked, not freed: the kernel may still write
    /// into them (a freed one would be written after reuse).
    #[test]
    fn reads_of_a_failed_ring_fail_and_leak_their_buffers() {
        let (_dir, file, _) = file_with(1 << 16);
        let mut slots = Vec::new();
        let mut replies = Vec::new();
        for len in [100, 5000, 40_000] {
            let (tx, rx) = oneshot::channel();
            let p = Planned::new(file.clone(), 0, len, ReadMode::Cached, tx)
                .map_err(|(e, _)| e)
                .unwrap();
            slots.push(Some(p));
            replies.push(rx);
        }
        let ours = |abandoned: &Vec<(ReadBuf, Arc<ReadFile>)>| {
            abandoned
                .iter()
                .filter(|(_, f)| Arc::ptr_eq(f, &file))
                .map(|(b, _)| b.layout.size())
                .collect::<Vec<_>>()
        };
        let leaked = abandon_in_flight(&mut slots);
        assert!(leaked >= 100 + 5000 + 40_000, "{leaked}");
        let kept = ours(&ABANDONED.lock().unwrap());
        assert_eq!(kept.iter().sum::<usize>(), leaked, "{kept:?}");
        assert!(slots.iter().all(Option::is_none));
        for mut rx in replies {
            let err = rx.try_recv().unwrap().unwrap_err();
            assert!(err.to_string().contains("ring failed"), "{err}");
        }
        // The file stays open: the leaked reads still hold it.
        assert_eq!(Arc::strong_count(&file), 4);
    }
}
