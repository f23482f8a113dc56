//! The I/O layer: one small, offset-based trait that the log thread and the
//! flush workers write through. `std.rs` is the blocking POSIX backend; the
//! io_uring backend and a fault-injecting test backend implement the same
//! trait.

pub(crate) mod aligned;
#[cfg(feature = "fault-injection")]
pub mod fault;
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
    /// fdatasync.
    fn sync_data(&self) -> io::Result<()>;
    /// Truncates or extends the file.
    fn set_len(&self, len: u64) -> io::Result<()>;
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
    if !direct {
        if to > from {
            let bytes = slab
                .bytes(from, to - from)
                .ok_or_else(|| io::Error::other("slab range above the watermark"))?;
            file.write_at(bytes, from as u64)?;
        }
        return Ok(());
    }
    let start = page_floor(from);
    let full_end = page_floor(to).max(start);
    let full = slab
        .bytes(start, full_end - start)
        .ok_or_else(|| io::Error::other("slab range above the watermark"))?;
    let mut writes: Vec<(&[u8], u64)> = full
        .chunks(WRITE_CHUNK)
        .enumerate()
        .map(|(i, c)| (c, (start + i * WRITE_CHUNK) as u64))
        .collect();
    if to > full_end {
        let tail = slab
            .bytes(full_end, to - full_end)
            .ok_or_else(|| io::Error::other("slab range above the watermark"))?;
        let page = &mut bounce.as_mut_slice()[..PAGE];
        page[..tail.len()].copy_from_slice(tail);
        page[tail.len()..].fill(0);
        // With the full pages, so a backend submits them all at once.
        writes.push((&*page, full_end as u64));
    }
    file.write_many(&writes)?;
    debug_assert!(page_ceil(to) >= full_end);
    Ok(())
}
