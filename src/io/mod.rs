//! The I/O layer: one small, offset-based trait that the log thread and the
//! flush workers write through. `std.rs` is the blocking POSIX backend; the
//! io_uring backend and a fault-injecting test backend implement the same
//! trait.

pub(crate) mod aligned;
#[cfg(feature = "fault-injection")]
pub mod fault;
pub(crate) mod read;
#[path = "std.rs"]
pub(crate) mod std_backend;
pub(crate) mod uring;

use crate::slab::Slab;
use aligned::{page_ceil, page_floor, AlignedBuf, PAGE};
use std::io;
use std::path::Path;

/// A file opened for writing.
pub(crate) trait FileIo: Send + Sync + std::fmt::Debug {
    /// Writes all of `buf` at `offset`. Under O_DIRECT, `buf`, its length
    /// and `offset` are page aligned.
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()>;
    /// Writes several buffers; a backend may have them all in flight at
    /// once (io_uring). The default writes them one after another.
    fn write_many(&self, writes: &[(&[u8], u64)]) -> io::Result<()> {
        writes
            .iter()
            .try_for_each(|(buf, off)| self.write_at(buf, *off))
    }
    /// Writes `bufs` back to back as one contiguous range starting at
    /// `offset`, in one system call or ring entry where the backend can
    /// (`pwritev`, `IORING_OP_WRITEV`): the kernel then issues the whole
    /// range to the device at once, where separate writes would each wait
    /// for the one before. The default writes them one after another.
    fn write_gather(&self, bufs: &[&[u8]], offset: u64) -> io::Result<()> {
        let mut at = offset;
        for buf in bufs {
            self.write_at(buf, at)?;
            at += buf.len() as u64;
        }
        Ok(())
    }
    /// Whether [`FileIo::write_gather_durable`] is one operation here
    /// (io_uring with `RWF_DSYNC`), so that a log is better off not
    /// pairing each write with an fdatasync of its own.
    fn durable_writes(&self) -> bool {
        false
    }
    /// As [`FileIo::write_gather`], and durable when it returns, as a write
    /// followed by an fdatasync would be. The error says which half
    /// failed. The default is exactly that pair.
    fn write_gather_durable(&self, bufs: &[&[u8]], offset: u64) -> Result<(), DurableWriteError> {
        self.write_gather(bufs, offset)
            .map_err(DurableWriteError::Write)?;
        self.sync_data().map_err(DurableWriteError::Sync)
    }
    /// fdatasync.
    fn sync_data(&self) -> io::Result<()>;
    /// Truncates or extends the file.
    fn set_len(&self, len: u64) -> io::Result<()>;
    /// Sends `[offset, offset + len)` to the device (`sync_file_range`),
    /// and with `wait` waits until it is there. It makes nothing durable
    /// (no metadata, no cache flush); it keeps a long write from leaving
    /// a gigabyte of dirty pages to its final fdatasync, in front of which
    /// every other file's writes (the WAL's) would queue. The default does
    /// nothing.
    fn write_behind(&self, offset: u64, len: u64, wait: bool) -> io::Result<()> {
        let _ = (offset, len, wait);
        Ok(())
    }
}

/// `sync_file_range` for [`FileIo::write_behind`].
pub(crate) fn sync_file_range(fd: i32, offset: u64, len: u64, wait: bool) -> io::Result<()> {
    let flags = if wait {
        libc::SYNC_FILE_RANGE_WAIT_BEFORE
            | libc::SYNC_FILE_RANGE_WRITE
            | libc::SYNC_FILE_RANGE_WAIT_AFTER
    } else {
        libc::SYNC_FILE_RANGE_WRITE
    };
    let (Ok(offset), Ok(len)) = (
        libc::off64_t::try_from(offset),
        libc::off64_t::try_from(len),
    ) else {
        return Err(io::Error::from(io::ErrorKind::InvalidInput));
    };
    // SAFETY: sync_file_range takes no pointers; a bad fd is an error.
    match unsafe { libc::sync_file_range(fd, offset, len, flags) } {
        0 => Ok(()),
        _ => Err(io::Error::last_os_error()),
    }
}

/// How a durable write failed: in the write (nothing after its offset can
/// be trusted, nothing before it changed) or in making it durable (what
/// the file holds since its last good sync may be lost).
#[derive(Debug)]
pub(crate) enum DurableWriteError {
    Write(io::Error),
    Sync(io::Error),
}

/// The file-system operations silt's writers need.
pub(crate) trait Vfs: Send + Sync + std::fmt::Debug {
    /// Opens `path` for writing, creating (and truncating) it if `create`.
    /// With `direct`, tries O_DIRECT and falls back to buffered I/O where the
    /// file system refuses it; the bool says whether O_DIRECT is in use.
    fn open_write(
        &self,
        path: &Path,
        create: bool,
        direct: bool,
    ) -> io::Result<(Box<dyn FileIo>, bool)>;
    /// rename(2).
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// fsync of a directory, so that entries created or renamed in it last.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
    /// unlink(2).
    fn remove_file(&self, path: &Path) -> io::Result<()>;
    /// An error to fail the next cold read with instead of reading (the
    /// fault layer's read faults; real backends never have one).
    fn read_fault(&self) -> Option<io::Error> {
        None
    }
}

/// Large writes are split into chunks of this size, so that a backend that
/// can (io_uring) has several in flight at once.
pub(crate) const WRITE_CHUNK: usize = 1 << 20;

/// Writes the slab bytes `[from, to)` to `file` at the same offsets.
/// With `direct` (O_DIRECT) as whole pages: full pages straight from the
/// slab buffer, the partial last page through `bounce` (so no byte the
/// writer may still change is read by an I/O in flight). Without it, exactly
/// `[from, to)` from the slab. `to` must be at most the slab's watermark.
pub(crate) fn write_slab_range(
    file: &dyn FileIo,
    slab: &Slab,
    from: usize,
    to: usize,
    direct: bool,
    bounce: &mut AlignedBuf,
) -> io::Result<()> {
    let (bufs, at) = slab_range_bufs(slab, from, to, direct, bounce)?;
    // One gather write: the device gets the whole range at once, where
    // separate 1 MiB writes each waited for the one before (std) or queued
    // behind each other on the inode lock in io-wq (io_uring).
    if !bufs.is_empty() {
        file.write_gather(&bufs, at)?;
    }
    Ok(())
}

/// What [`write_slab_range`] writes: the buffers, back to back, and the
/// file offset of the first (none if the range is empty).
pub(crate) fn slab_range_bufs<'a>(
    slab: &'a Slab,
    from: usize,
    to: usize,
    direct: bool,
    bounce: &'a mut AlignedBuf,
) -> io::Result<(Vec<&'a [u8]>, u64)> {
    if !direct {
        if to <= from {
            return Ok((Vec::new(), from as u64));
        }
        let bytes = slab
            .bytes(from, to - from)
            .ok_or_else(|| io::Error::other("slab range above the watermark"))?;
        return Ok((vec![bytes], from as u64));
    }
    let start = page_floor(from);
    let full_end = page_floor(to).max(start);
    let full = slab
        .bytes(start, full_end - start)
        .ok_or_else(|| io::Error::other("slab range above the watermark"))?;
    let mut bufs: Vec<&[u8]> = vec![full];
    if to > full_end {
        let tail = slab
            .bytes(full_end, to - full_end)
            .ok_or_else(|| io::Error::other("slab range above the watermark"))?;
        let page = &mut bounce.as_mut_slice()[..PAGE];
        page[..tail.len()].copy_from_slice(tail);
        page[tail.len()..].fill(0);
        bufs.push(&*page);
    }
    debug_assert!(page_ceil(to) >= full_end);
    Ok((bufs, start as u64))
}

/// The iovecs of `bufs` without their first `skip` bytes (what is left after
/// a short vectored write), for `pwritev` and `IORING_OP_WRITEV`. The
/// pointers borrow `bufs`.
pub(crate) fn iovecs_after(bufs: &[&[u8]], mut skip: usize) -> Vec<libc::iovec> {
    let mut out = Vec::with_capacity(bufs.len());
    for buf in bufs {
        if skip >= buf.len() {
            skip -= buf.len();
            continue;
        }
        let rest = &buf[skip..];
        skip = 0;
        out.push(libc::iovec {
            iov_base: rest.as_ptr() as *mut libc::c_void,
            iov_len: rest.len(),
        });
    }
    out
}

/// Total length of a gather write, refusing one that a single vectored
/// write cannot carry (Linux caps a write at ~2 GiB; slabs are at most 1 GiB).
pub(crate) fn gather_len(bufs: &[&[u8]]) -> io::Result<usize> {
    let total: usize = bufs.iter().map(|b| b.len()).sum();
    if total > i32::MAX as usize || bufs.len() > 1024 {
        return Err(io::Error::other("gather write above 2 GiB or 1024 buffers"));
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iovecs_after_skips_whole_and_partial_buffers() {
        let (a, b, c) = (vec![1u8; 10], vec![2u8; 5], vec![3u8; 7]);
        let bufs: Vec<&[u8]> = vec![&a, &b, &c];
        let lens = |skip| -> Vec<usize> {
            iovecs_after(&bufs, skip)
                .iter()
                .map(|v| v.iov_len)
                .collect()
        };
        assert_eq!(lens(0), [10, 5, 7]);
        assert_eq!(lens(4), [6, 5, 7]);
        assert_eq!(lens(10), [5, 7]);
        assert_eq!(lens(12), [3, 7]);
        assert_eq!(lens(22), Vec::<usize>::new());
        let second = iovecs_after(&bufs, 12)[0];
        assert_eq!(second.iov_base as *const u8, b[2..].as_ptr());
    }

    /// Both real backends put a gather write's buffers back to back, with
    /// and without O_DIRECT.
    #[test]
    fn gather_write_lands_contiguously_on_every_backend() {
        let dir = tempfile::tempdir().unwrap();
        let vfss: [(&str, Box<dyn Vfs>); 2] = [
            ("std", Box::new(std_backend::StdVfs)),
            ("uring", Box::new(uring::UringVfs)),
        ];
        for (name, vfs) in vfss {
            if name == "uring" && uring::probe().is_err() {
                continue;
            }
            for direct in [false, true] {
                let path = dir.path().join(format!("{name}-{direct}"));
                let (file, _) = vfs.open_write(&path, true, direct).unwrap();
                let mut a = AlignedBuf::zeroed(3 * PAGE);
                a.as_mut_slice().fill(0xa1);
                let mut b = AlignedBuf::zeroed(PAGE);
                b.as_mut_slice().fill(0xb2);
                file.write_gather(&[a.as_slice(), b.as_slice()], PAGE as u64)
                    .unwrap();
                // The durable form (one RWF_DSYNC entry on io_uring, a
                // write and an fdatasync on std) lands the same way.
                assert_eq!(file.durable_writes(), name == "uring");
                file.write_gather_durable(&[b.as_slice(), a.as_slice()], 5 * PAGE as u64)
                    .unwrap();
                let got = std::fs::read(&path).unwrap();
                assert_eq!(got.len(), 9 * PAGE, "{name} direct={direct}");
                assert!(got[..PAGE].iter().all(|&x| x == 0));
                assert!(got[PAGE..4 * PAGE].iter().all(|&x| x == 0xa1));
                assert!(got[4 * PAGE..6 * PAGE].iter().all(|&x| x == 0xb2));
                assert!(got[6 * PAGE..].iter().all(|&x| x == 0xa1));
            }
        }
    }
}
