//! IoBackend::Uring: the same `Vfs`/`FileIo` operations submitted through
//! io_uring, one ring per I/O thread (the log thread, each flush worker), as
//! foyer does. Every line that touches io_uring is in this file.
//!
//! silt's I/O threads own their work and wait for it, so the ring is driven
//! synchronously (submit, then wait for the completions) with the
//! `io-uring` crate; tokio-uring would add a runtime per thread and nothing
//! else (docs/decisions.md). What io_uring buys: a flush submits all of a
//! slab's 1 MiB writes at once, so the device sees them in flight together.

use super::std_backend::{open_file, StdVfs};
use super::{gather_len, iovecs_after, DurableWriteError, FileIo, Vfs};
use io_uring::{opcode, squeue, types, IoUring};
use std::cell::RefCell;
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;

/// Submission queue depth of each thread's ring.
const RING_ENTRIES: u32 = 64;

thread_local! {
    static RING: RefCell<Option<IoUring>> = const { RefCell::new(None) };
}

/// Whether this kernel (and its seccomp policy) lets us create a ring.
pub(crate) fn probe() -> io::Result<()> {
    IoUring::new(4).map(drop)
}

fn with_ring<T>(f: impl FnOnce(&mut IoUring) -> io::Result<T>) -> io::Result<T> {
    RING.with(|cell| {
        let mut slot = cell.borrow_mut();
        match &mut *slot {
            Some(ring) => f(ring),
            None => f(slot.insert(IoUring::new(RING_ENTRIES)?)),
        }
    })
}

thread_local! {
    /// Tags this thread's `run` calls in user_data, so a stray completion
    /// of an earlier call is never taken for one of this call.
    static CALL: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
}

/// `io_uring_enter` failures in a row, while entries are in flight, after
/// which the process aborts rather than return and let the kernel write
/// into (or read from) buffers the caller frees.
const ENTER_FAILURES_BEFORE_ABORT: u32 = 1000;

/// Submits `entries` (up to the ring's depth at a time) and waits for every
/// completion; returns each one's result, in order.
///
/// # Safety
/// Every buffer an entry points to must stay valid and unchanged until this
/// returns. It returns only once every entry it pushed has completed: an
/// `Err` from a push (the queue full) or from `io_uring_enter` is returned
/// after the entries already pushed are done. If the ring keeps failing
/// while entries are in flight, it aborts the process instead of
/// returning.
unsafe fn run(entries: &[squeue::Entry]) -> io::Result<Vec<i32>> {
    with_ring(|ring| {
        let call = CALL.with(|c| {
            let n = c.get().wrapping_add(1);
            c.set(n);
            u64::from(n) << 32
        });
        let mut results = vec![0i32; entries.len()];
        for (c, chunk) in entries.chunks(RING_ENTRIES as usize).enumerate() {
            let base = c * RING_ENTRIES as usize;
            let mut pushed = 0;
            let mut err = None;
            for (i, e) in chunk.iter().enumerate() {
                let e = e.clone().user_data(call | (base + i) as u64);
                // SAFETY: the caller keeps the buffers alive until we return,
                // and we return only after every pushed entry completed.
                if unsafe { ring.submission().push(&e) }.is_err() {
                    err = Some(io::Error::other("io_uring submission queue full"));
                    break;
                }
                pushed += 1;
            }
            let mut done = 0;
            let mut failures = 0;
            while done < pushed {
                match ring.submit_and_wait(pushed - done) {
                    Ok(_) => failures = 0,
                    Err(e)
                        if matches!(
                            e.kind(),
                            io::ErrorKind::Interrupted | io::ErrorKind::WouldBlock
                        ) => {}
                    Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {}
                    Err(e) => {
                        // Entries may be in flight: keep waiting for them,
                        // and report the error once they are done.
                        failures += 1;
                        if failures >= ENTER_FAILURES_BEFORE_ABORT {
                            tracing::error!(error = %e, "io_uring keeps failing with writes in flight; aborting");
                            std::process::abort();
                        }
                        err.get_or_insert(e);
                        std::thread::sleep(std::time::Duration::from_millis(1));
                    }
                }
                for cqe in ring.completion() {
                    let data = cqe.user_data();
                    if data & !0xffff_ffff != call {
                        continue;
                    }
                    if let Some(r) = results.get_mut((data & 0xffff_ffff) as usize) {
                        *r = cqe.result();
                        done += 1;
                    }
                }
            }
            if let Some(e) = err {
                return Err(e);
            }
        }
        Ok(results)
    })
}

/// The io_uring backend's file system: opens, renames and directory fsyncs
/// are the std ones; writes and fdatasync go through the ring.
#[derive(Debug, Default)]
pub(crate) struct UringVfs;

#[derive(Debug)]
struct UringFile(File);

fn check(res: i32) -> io::Result<usize> {
    if res < 0 {
        Err(io::Error::from_raw_os_error(-res))
    } else {
        Ok(res as usize)
    }
}

/// Which half of an `RWF_DSYNC` write an error belongs to, as far as the
/// error can tell (the fault layer classifies its injected errors the same
/// way).
pub(crate) fn durable_write_error(e: io::Error) -> DurableWriteError {
    match e.raw_os_error() {
        // The data could not be written: nothing was lost.
        Some(libc::ENOSPC | libc::EDQUOT | libc::EFBIG | libc::EINVAL) => {
            DurableWriteError::Write(e)
        }
        None if e.kind() == io::ErrorKind::WriteZero => DurableWriteError::Write(e),
        // Any other error may have come from the flush: it counts as a
        // failed fdatasync.
        _ => DurableWriteError::Sync(e),
    }
}

fn write_entry(fd: i32, buf: &[u8], offset: u64) -> squeue::Entry {
    opcode::Write::new(types::Fd(fd), buf.as_ptr(), buf.len() as u32)
        .offset(offset)
        .build()
}

impl UringFile {
    /// One vectored write (more if it comes back short) with `rw_flags`.
    fn writev(&self, bufs: &[&[u8]], offset: u64, rw_flags: i32) -> io::Result<()> {
        let fd = self.0.as_raw_fd();
        let total = gather_len(bufs)?;
        let mut done = 0;
        while done < total {
            let iov = iovecs_after(bufs, done);
            let e = opcode::Writev::new(types::Fd(fd), iov.as_ptr(), iov.len() as u32)
                .offset(offset + done as u64)
                .rw_flags(rw_flags)
                .build();
            // SAFETY: `iov` and the buffers it points into live until `run`
            // returns, which is after the completion.
            let r = unsafe { run(&[e]) }?;
            match check(r[0])? {
                0 => return Err(io::ErrorKind::WriteZero.into()),
                n => done += n,
            }
        }
        Ok(())
    }
}

impl FileIo for UringFile {
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.write_many(&[(buf, offset)])
    }

    fn write_many(&self, writes: &[(&[u8], u64)]) -> io::Result<()> {
        let fd = self.0.as_raw_fd();
        if writes.iter().any(|(b, _)| b.len() > u32::MAX as usize) {
            return Err(io::Error::other(
                "a single io_uring write is limited to 4 GiB",
            ));
        }
        let entries: Vec<squeue::Entry> = writes
            .iter()
            .map(|(b, off)| write_entry(fd, b, *off))
            .collect();
        // SAFETY: `writes` borrows every buffer for the whole call.
        let results = unsafe { run(&entries) }?;
        for ((buf, off), res) in writes.iter().zip(results) {
            let mut done = check(res)?;
            // Short writes are rare; finish them one at a time.
            while done < buf.len() {
                let rest = &buf[done..];
                // SAFETY: `rest` is borrowed for the call.
                let r = unsafe { run(&[write_entry(fd, rest, off + done as u64)]) }?;
                match check(r[0])? {
                    0 => return Err(io::ErrorKind::WriteZero.into()),
                    n => done += n,
                }
            }
        }
        Ok(())
    }

    fn write_gather(&self, bufs: &[&[u8]], offset: u64) -> io::Result<()> {
        self.writev(bufs, offset, 0)
    }

    fn durable_writes(&self) -> bool {
        true
    }

    /// `RWF_DSYNC`: the write and its fdatasync are one ring entry, so one
    /// trip through an io-wq thread instead of two (a write that allocates
    /// blocks and an fsync each take one). Measured: +9–11 % for 64 KiB
    /// `Sync` values, up to +28 % for 100 B ones (docs/decisions.md).
    fn write_gather_durable(&self, bufs: &[&[u8]], offset: u64) -> Result<(), DurableWriteError> {
        self.writev(bufs, offset, libc::RWF_DSYNC)
            .map_err(durable_write_error)
    }

    fn sync_data(&self) -> io::Result<()> {
        let e = opcode::Fsync::new(types::Fd(self.0.as_raw_fd()))
            .flags(types::FsyncFlags::DATASYNC)
            .build();
        // SAFETY: an fsync points at no buffer.
        let r = unsafe { run(&[e]) }?;
        check(r[0]).map(drop)
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.0.set_len(len)
    }
    fn write_behind(&self, offset: u64, len: u64, wait: bool) -> io::Result<()> {
        super::sync_file_range(self.0.as_raw_fd(), offset, len, wait)
    }
}

impl Vfs for UringVfs {
    fn open_write(
        &self,
        path: &Path,
        create: bool,
        direct: bool,
    ) -> io::Result<(Box<dyn FileIo>, bool)> {
        let (file, direct) = open_file(path, create, direct)?;
        Ok((Box::new(UringFile(file)), direct))
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        StdVfs.rename(from, to)
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        StdVfs.sync_dir(dir)
    }
    fn remove_file(&self, path: &Path) -> io::Result<()> {
        StdVfs.remove_file(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A completion left in the ring by an earlier call (here a no-op
    /// pushed by hand, with the user_data an untagged call would use) is
    /// not taken for this call's: `run` returns the write's own result,
    /// after the write completed.
    #[test]
    fn a_stray_completion_is_not_taken_for_this_calls() {
        if probe().is_err() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let file = std::fs::File::create(dir.path().join("f")).unwrap();
        with_ring(|ring| {
            let nop = opcode::Nop::new().build().user_data(0);
            // SAFETY: a no-op points at no buffer.
            unsafe { ring.submission().push(&nop) }.map_err(|_| io::Error::other("full"))?;
            ring.submit().map(drop)
        })
        .unwrap();
        let data = b"hello";
        // SAFETY: `data` outlives the call.
        let r = unsafe { run(&[write_entry(file.as_raw_fd(), data, 0)]) }.unwrap();
        assert_eq!(r, vec![5]);
        assert_eq!(std::fs::read(dir.path().join("f")).unwrap(), data);
    }

    #[test]
    fn only_errors_before_the_data_is_written_are_write_failures() {
        let is_write = |e: io::Error| matches!(durable_write_error(e), DurableWriteError::Write(_));
        for errno in [libc::ENOSPC, libc::EDQUOT, libc::EFBIG, libc::EINVAL] {
            assert!(is_write(io::Error::from_raw_os_error(errno)), "{errno}");
        }
        assert!(is_write(io::ErrorKind::WriteZero.into()));
        // EIO may be the flush failing: the store must treat it as a lost
        // fdatasync, not roll back and go on.
        for errno in [libc::EIO, libc::ENODEV, libc::EROFS] {
            assert!(!is_write(io::Error::from_raw_os_error(errno)), "{errno}");
        }
    }
}
