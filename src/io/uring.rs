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

/// Submits `entries` (up to the ring's depth at a time) and waits for every
/// completion; returns each one's result, in order.
///
/// # Safety
/// Every buffer an entry points to must stay valid and unchanged until this
/// returns. It returns only once every pushed entry has completed, or with
/// an error from `io_uring_enter` itself before anything was submitted.
unsafe fn run(entries: &[squeue::Entry]) -> io::Result<Vec<i32>> {
    with_ring(|ring| {
        let mut results = vec![0i32; entries.len()];
        for (c, chunk) in entries.chunks(RING_ENTRIES as usize).enumerate() {
            let base = c * RING_ENTRIES as usize;
            for (i, e) in chunk.iter().enumerate() {
                let e = e.clone().user_data((base + i) as u64);
                // SAFETY: the caller keeps the buffers alive until we return,
                // and we return only after every completion.
                unsafe { ring.submission().push(&e) }
                    .map_err(|_| io::Error::other("io_uring submission queue full"))?;
            }
            let mut done = 0;
            while done < chunk.len() {
                match ring.submit_and_wait(chunk.len() - done) {
                    Ok(_) => {}
                    Err(e)
                        if matches!(
                            e.kind(),
                            io::ErrorKind::Interrupted | io::ErrorKind::WouldBlock
                        ) => {}
                    Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {}
                    Err(e) => return Err(e),
                }
                for cqe in ring.completion() {
                    if let Some(r) = results.get_mut(cqe.user_data() as usize) {
                        *r = cqe.result();
                        done += 1;
                    }
                }
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
/// error can tell.
fn durable_write_error(e: io::Error) -> DurableWriteError {
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
