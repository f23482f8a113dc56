//! The slab: a page-aligned buffer whose bytes are exactly the bytes of the
//! file `data/<file_id>.silt` (a 4 KiB header, then records).
//!
//! One writer appends above the publish watermark; any number of readers read
//! below it. Bytes below the watermark never change again, which is what lets
//! the log thread write them to disk and readers hand them out as `Bytes`
//! without a copy. Two writer operations break that rule and are `unsafe`
//! for it: [`SlabWriter::rollback`] (after a failed WAL write, it lowers the
//! watermark over records nothing indexed) and
//! [`SlabWriter::set_predecessor`] (it rewrites the header page); each says
//! what its caller must guarantee. The watermark is stored with `Release` after the bytes are
//! written and loaded with `Acquire` before they are read.

use crate::record;
use crate::sync::{AtomicUsize, Ordering};

/// Size of the file header (one page).
pub const FILE_HEADER_LEN: usize = 4096;
/// Magic at the start of every data file.
pub(crate) const FILE_MAGIC: &[u8; 8] = b"SILTDAT1";
/// Format version in the file header. 2: records without a sequence number.
pub(crate) const FORMAT_VERSION: u32 = 2;

/// Writes the file header for `file_id` into `page` (at least 24 bytes).
pub(crate) fn encode_file_header(page: &mut [u8], file_id: u32) {
    page[..8].copy_from_slice(FILE_MAGIC);
    page[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    page[12..16].copy_from_slice(&file_id.to_le_bytes());
    let crc = crc32fast::hash(&page[..16]);
    page[16..20].copy_from_slice(&crc.to_le_bytes());
}

/// The file written just before this one (in write order) and where its
/// records ended when this one was started: header bytes 20..36 (file id,
/// end offset, CRC of both). Recovery keeps a file only if that
/// predecessor, when it is still an unsealed log, holds every byte up to
/// `end`; otherwise a write acknowledged before it was durable could
/// survive while an earlier one did not (DESIGN §3.3). Files written before
/// this field existed have zeroes there, which read as no predecessor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Predecessor {
    pub file_id: u32,
    pub end: u64,
}

const PREDECESSOR_AT: usize = 20;
const PREDECESSOR_LEN: usize = 16;

/// Writes (or with `None`, clears) the predecessor field of a file header
/// page (at least 36 bytes).
pub(crate) fn encode_predecessor(page: &mut [u8], p: Option<Predecessor>) {
    let field = &mut page[PREDECESSOR_AT..PREDECESSOR_AT + PREDECESSOR_LEN];
    field.fill(0);
    if let Some(p) = p {
        field[..4].copy_from_slice(&p.file_id.to_le_bytes());
        field[4..12].copy_from_slice(&p.end.to_le_bytes());
        let crc = crc32fast::hash(&field[..12]);
        field[12..].copy_from_slice(&crc.to_le_bytes());
    }
}

/// The predecessor a file header names; `None` if it names none (zeroes)
/// or the field is damaged (then nothing is dropped on its account).
pub(crate) fn decode_predecessor(page: &[u8]) -> Option<Predecessor> {
    let field = page.get(PREDECESSOR_AT..PREDECESSOR_AT + PREDECESSOR_LEN)?;
    let crc = u32::from_le_bytes(field[12..].try_into().ok()?);
    (crc32fast::hash(&field[..12]) == crc).then(|| Predecessor {
        file_id: u32::from_le_bytes([field[0], field[1], field[2], field[3]]),
        end: u64::from_le_bytes(field[4..12].try_into().unwrap_or_default()),
    })
}

/// The format version of a file whose header is intact (silt's magic and
/// a matching CRC; even a version this build cannot read), else `None`: a
/// damaged header says nothing about the version (a flipped bit there is
/// damage, not another silt).
pub(crate) fn file_format_version(page: &[u8]) -> Option<u32> {
    let head = page.get(..20)?;
    let crc = u32::from_le_bytes(head[16..20].try_into().ok()?);
    (&head[..8] == FILE_MAGIC && crc32fast::hash(&head[..16]) == crc)
        .then(|| u32::from_le_bytes([head[8], head[9], head[10], head[11]]))
}

/// Checks a file header; returns the file id it names.
pub(crate) fn decode_file_header(page: &[u8]) -> Option<u32> {
    let head = page.get(..20)?;
    if &head[..8] != FILE_MAGIC || head[8..12] != FORMAT_VERSION.to_le_bytes() {
        return None;
    }
    let crc = u32::from_le_bytes(head[16..20].try_into().ok()?);
    (crc32fast::hash(&head[..16]) == crc)
        .then(|| u32::from_le_bytes([head[12], head[13], head[14], head[15]]))
}

#[cfg(not(loom))]
mod storage {
    use crate::io::aligned::AlignedBuf;
    use std::mem::ManuallyDrop;

    /// Slab memory: an aligned buffer behind raw-pointer access. The slab's
    /// `Drop` takes the buffer out (to recycle it), so it is never dropped
    /// here.
    pub(crate) struct Storage(ManuallyDrop<AlignedBuf>);

    impl Storage {
        pub fn from_buf(buf: AlignedBuf) -> Self {
            Storage(ManuallyDrop::new(buf))
        }
        /// # Safety
        /// Call once, from the owner's `Drop`; the storage is unusable after.
        pub unsafe fn take(&mut self) -> AlignedBuf {
            // SAFETY: called once, by the caller's contract.
            unsafe { ManuallyDrop::take(&mut self.0) }
        }
        pub fn len(&self) -> usize {
            self.0.len()
        }
        /// # Safety
        /// `off + data.len() <= len`, and no other thread reads or writes
        /// that range during the call (the slab protocol: only the writer
        /// touches bytes at or above the watermark).
        pub unsafe fn write(&self, off: usize, data: &[u8]) {
            debug_assert!(off + data.len() <= self.0.len());
            // SAFETY: in bounds and exclusive by the caller's contract.
            unsafe {
                std::ptr::copy_nonoverlapping(data.as_ptr(), self.0.as_ptr().add(off), data.len())
            }
        }
        /// # Safety
        /// `off + len <= len()`, and nobody writes that range while the
        /// returned slice lives (true below the watermark).
        pub unsafe fn slice(&self, off: usize, len: usize) -> &[u8] {
            debug_assert!(off + len <= self.0.len());
            // SAFETY: in bounds and immutable by the caller's contract.
            unsafe { std::slice::from_raw_parts(self.0.as_ptr().add(off), len) }
        }
        /// # Safety
        /// As [`Storage::write`]: the range belongs to the writer alone.
        #[allow(clippy::mut_from_ref)]
        pub unsafe fn slice_mut(&self, off: usize, len: usize) -> &mut [u8] {
            debug_assert!(off + len <= self.0.len());
            // SAFETY: in bounds and exclusive by the caller's contract.
            unsafe { std::slice::from_raw_parts_mut(self.0.as_ptr().add(off), len) }
        }
    }
}

#[cfg(loom)]
mod storage {
    use loom::cell::UnsafeCell;

    /// Under loom every byte is its own tracked cell, so a read that is not
    /// ordered after the write of that byte is reported as a data race.
    pub(crate) struct Storage(Vec<UnsafeCell<u8>>);

    impl Storage {
        pub fn zeroed(len: usize) -> Self {
            Storage((0..len).map(|_| UnsafeCell::new(0)).collect())
        }
        pub fn len(&self) -> usize {
            self.0.len()
        }
        /// # Safety
        /// See the std version.
        pub unsafe fn write(&self, off: usize, data: &[u8]) {
            for (i, b) in data.iter().enumerate() {
                // SAFETY: loom checks the exclusivity this claims.
                self.0[off + i].with_mut(|p| unsafe { *p = *b });
            }
        }
        /// # Safety
        /// See the std version.
        pub unsafe fn copy_out(&self, off: usize, len: usize) -> Vec<u8> {
            // SAFETY: loom checks the ordering this claims.
            (off..off + len)
                .map(|i| self.0[i].with(|p| unsafe { *p }))
                .collect()
        }
    }
}

use storage::Storage;

/// Buffers of flushed slabs, kept for the next slabs: fresh anonymous memory
/// costs a page fault and a kernel page clear per page on first touch, which
/// dominated the writer's profile for large values (docs/decisions.md). A
/// recycled buffer is not zeroed: nothing past a slab's watermark is ever
/// read or written to disk.
#[cfg(not(loom))]
#[derive(Debug)]
pub(crate) struct SlabPool {
    free: std::sync::Mutex<Vec<crate::io::aligned::AlignedBuf>>,
    cap: usize,
    reused: std::sync::atomic::AtomicU64,
}

#[cfg(not(loom))]
impl SlabPool {
    /// A pool keeping at most `cap` idle buffers.
    pub fn new(cap: usize) -> SlabPool {
        SlabPool {
            free: std::sync::Mutex::new(Vec::new()),
            cap,
            reused: std::sync::atomic::AtomicU64::new(0),
        }
    }

    fn take(&self, len: usize) -> Option<crate::io::aligned::AlignedBuf> {
        let mut free = crate::sync::lock(&self.free);
        let i = free.iter().position(|b| b.len() == len)?;
        self.reused
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Some(free.swap_remove(i))
    }

    fn give(&self, buf: crate::io::aligned::AlignedBuf) {
        let mut free = crate::sync::lock(&self.free);
        if free.len() < self.cap {
            free.push(buf);
        }
    }

    /// Slabs that got a recycled buffer.
    pub fn reused(&self) -> u64 {
        self.reused.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Idle buffers held.
    #[cfg_attr(not(test), allow(dead_code))]
    pub fn idle(&self) -> usize {
        crate::sync::lock(&self.free).len()
    }
}

/// An in-memory slab, shared by the writer, the log thread, flush workers and
/// readers through `Arc<Slab>`.
pub struct Slab {
    file_id: u32,
    mem: Storage,
    /// Bytes `[0, published)` are written and immutable.
    published: AtomicUsize,
    /// Where the buffer goes when the last reference is dropped.
    #[cfg(not(loom))]
    pool: Option<std::sync::Arc<SlabPool>>,
}

#[cfg(not(loom))]
impl Drop for Slab {
    fn drop(&mut self) {
        // SAFETY: the only call, from Drop.
        let buf = unsafe { self.mem.take() };
        if let Some(pool) = &self.pool {
            pool.give(buf);
        }
    }
}

// SAFETY: the raw storage is only written by the unique `SlabWriter` at
// offsets >= `published`, and only read at offsets < `published` (Acquire),
// after the writer stored `published` with Release. No byte is ever both
// readable and writable.
unsafe impl Sync for Slab {}
// SAFETY: Storage owns its memory.
unsafe impl Send for Slab {}

impl std::fmt::Debug for Slab {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Slab")
            .field("file_id", &self.file_id)
            .field("capacity", &self.mem.len())
            .field("published", &self.published())
            .finish()
    }
}

impl Slab {
    pub fn file_id(&self) -> u32 {
        self.file_id
    }

    pub fn capacity(&self) -> usize {
        self.mem.len()
    }

    /// End of the immutable, readable prefix.
    pub fn published(&self) -> usize {
        self.published.load(Ordering::Acquire)
    }

    /// Bytes `[off, off + len)` if they are all below the watermark.
    #[cfg(not(loom))]
    pub fn bytes(&self, off: usize, len: usize) -> Option<&[u8]> {
        let end = off.checked_add(len)?;
        if end > self.published() {
            return None;
        }
        // SAFETY: below the watermark (Acquire above), so written and immutable.
        Some(unsafe { self.mem.slice(off, len) })
    }

    /// A copy of bytes `[off, off + len)` if they are all below the watermark.
    #[cfg(loom)]
    pub fn copy_out(&self, off: usize, len: usize) -> Option<Vec<u8>> {
        let end = off.checked_add(len)?;
        if end > self.published() {
            return None;
        }
        // SAFETY: below the watermark, so written and immutable.
        Some(unsafe { self.mem.copy_out(off, len) })
    }

    /// A slab rebuilt from a file's valid prefix at recovery. Nothing can be
    /// appended to it; it only waits to be flushed.
    #[cfg(not(loom))]
    pub fn recovered(file_id: u32, buf: crate::io::aligned::AlignedBuf, valid_len: usize) -> Slab {
        debug_assert!(valid_len <= buf.len());
        Slab {
            file_id,
            mem: Storage::from_buf(buf),
            published: AtomicUsize::new(valid_len),
            pool: None,
        }
    }
}

/// The writer's side of a slab: the only handle that may append.
#[derive(Debug)]
pub struct SlabWriter {
    slab: crate::sync::Arc<Slab>,
    appended: usize,
    predecessor: Option<Predecessor>,
}

impl SlabWriter {
    /// A new slab of `capacity` bytes (a multiple of the page size) with its
    /// file header written and published.
    pub fn new(file_id: u32, capacity: usize) -> SlabWriter {
        #[cfg(not(loom))]
        return SlabWriter::with_pool(file_id, capacity, None);
        #[cfg(loom)]
        SlabWriter::build(Slab {
            file_id,
            mem: Storage::zeroed(capacity),
            published: AtomicUsize::new(0),
        })
    }

    /// As [`SlabWriter::new`], reusing (and later returning) a buffer from
    /// `pool`.
    #[cfg(not(loom))]
    pub(crate) fn with_pool(
        file_id: u32,
        capacity: usize,
        pool: Option<&std::sync::Arc<SlabPool>>,
    ) -> SlabWriter {
        let buf = pool
            .and_then(|p| p.take(capacity))
            .unwrap_or_else(|| crate::io::aligned::AlignedBuf::zeroed(capacity));
        SlabWriter::build(Slab {
            file_id,
            mem: Storage::from_buf(buf),
            published: AtomicUsize::new(0),
            pool: pool.cloned(),
        })
    }

    fn build(slab: Slab) -> SlabWriter {
        // The whole header page: a recycled buffer holds an old one. (Loom's
        // storage is fresh and tracks every byte, so it gets the 20 that
        // matter.)
        #[cfg(not(loom))]
        let mut head = vec![0u8; FILE_HEADER_LEN];
        #[cfg(loom)]
        let mut head = vec![0u8; 20];
        encode_file_header(&mut head, slab.file_id);
        // SAFETY: nothing else can see the slab yet.
        unsafe { slab.mem.write(0, &head) };
        slab.published.store(FILE_HEADER_LEN, Ordering::Release);
        SlabWriter {
            slab: crate::sync::Arc::new(slab),
            appended: FILE_HEADER_LEN,
            predecessor: None,
        }
    }

    pub fn slab(&self) -> &crate::sync::Arc<Slab> {
        &self.slab
    }

    /// End of the appended bytes (published or not).
    pub fn appended(&self) -> usize {
        self.appended
    }

    pub fn remaining(&self) -> usize {
        self.slab.capacity() - self.appended
    }

    /// True if nothing but the header was ever appended.
    pub fn is_empty(&self) -> bool {
        self.appended == FILE_HEADER_LEN
    }

    /// Appends one record; returns its offset, or `None` if it does not fit.
    /// The record is not readable until [`SlabWriter::publish`].
    pub fn append(&mut self, flags: u8, key: &[u8], value: &[u8]) -> Option<usize> {
        let len = record::encoded_len(key.len(), value.len());
        if len > self.remaining() {
            return None;
        }
        let off = self.appended;
        #[cfg(not(loom))]
        {
            // SAFETY: [off, off + len) is at or above the watermark, in
            // bounds (checked above), and only this writer touches it.
            let out = unsafe { self.slab.mem.slice_mut(off, len) };
            record::encode_into(out, flags, key, value);
        }
        #[cfg(loom)]
        {
            let mut out = vec![0u8; len];
            record::encode_into(&mut out, flags, key, value);
            // SAFETY: as above.
            unsafe { self.slab.mem.write(off, &out) };
        }
        self.appended += len;
        Some(off)
    }

    /// Names the file written before this one in the header (see
    /// [`Predecessor`]).
    ///
    /// # Safety
    ///
    /// The header page is below the watermark, so other threads may read
    /// it: the caller must make sure none does while this runs. That holds
    /// before the slab's first WAL write, or after it was emptied and no
    /// WAL write of it is in flight, provided no one else has taken a slice
    /// of the page (readers reach records through the index only, never the
    /// header; GC walks only sealed slabs older than a published segment,
    /// and this is only called on the active one).
    #[cfg(not(loom))]
    pub unsafe fn set_predecessor(&mut self, p: Option<Predecessor>) {
        // SAFETY: the caller guarantees nothing reads the header page now,
        // and only this writer writes it.
        let head = unsafe { self.slab.mem.slice_mut(0, FILE_HEADER_LEN) };
        encode_predecessor(head, p);
        self.predecessor = p;
    }

    /// What [`SlabWriter::set_predecessor`] last set.
    pub fn predecessor(&self) -> Option<Predecessor> {
        self.predecessor
    }

    /// Forgets everything appended from `off` on (records whose WAL write
    /// failed): zeroes it and lowers the watermark.
    ///
    /// # Safety
    ///
    /// Those bytes may be below the watermark, so other threads could read
    /// them: the caller must make sure none does and none holds a slice of
    /// them. That holds when no index entry points at them (their groups
    /// were never applied, so no reader found them), no WAL write of them
    /// is in flight (the log thread refuses the writes queued behind a
    /// failed one), and the slab is the active or closing one (GC walks
    /// only older, sealed slabs).
    #[cfg(not(loom))]
    pub unsafe fn rollback(&mut self, off: usize) {
        if off >= self.appended || off < FILE_HEADER_LEN {
            return;
        }
        // SAFETY: nothing reads [off, appended) now (the caller's
        // guarantee), and only this writer writes it.
        unsafe { self.slab.mem.slice_mut(off, self.appended - off) }.fill(0);
        self.appended = off;
        self.publish();
    }

    /// A follower's copy of a file the writer is still appending to: copies
    /// the file's bytes `data` in at the append point, unpublished, and
    /// returns the slab image up to their end, for a record scan. `None` if
    /// they do not fit. Safe: it writes only at and above the watermark,
    /// which no one but this (exclusively borrowed) writer touches.
    #[cfg(not(loom))]
    pub fn stage_raw(&mut self, data: &[u8]) -> Option<&[u8]> {
        let end = self.appended.checked_add(data.len())?;
        if end > self.slab.capacity() {
            return None;
        }
        // SAFETY: [appended, end) is at or above the watermark, in bounds
        // (checked above), and only this writer touches it.
        unsafe { self.slab.mem.write(self.appended, data) };
        // SAFETY: below `appended` is published and immutable; the staged
        // bytes are not written again while `&mut self` is borrowed.
        Some(unsafe { self.slab.mem.slice(0, end) })
    }

    /// Keeps the staged bytes up to `valid_end` (the end of the last whole
    /// group a scan found) and publishes them; zeroes the rest of what was
    /// staged up to `staged_end`. Safe for the reason `stage_raw` is: it
    /// never goes below the watermark (`valid_end` is raised to it).
    #[cfg(not(loom))]
    pub fn commit_staged(&mut self, valid_end: usize, staged_end: usize) {
        let valid_end = valid_end.max(self.appended);
        if staged_end > valid_end {
            // SAFETY: above the watermark, staged by this writer alone.
            unsafe { self.slab.mem.slice_mut(valid_end, staged_end - valid_end) }.fill(0);
        }
        self.appended = valid_end;
        self.publish();
    }

    /// Makes everything appended so far readable and immutable.
    pub fn publish(&self) {
        self.slab.published.store(self.appended, Ordering::Release);
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::record::{decode, FLAG_BEGIN, FLAG_END, FLAG_PUT};

    #[test]
    fn append_publish_read() {
        let mut w = SlabWriter::new(3, 64 * 1024);
        assert!(w.is_empty());
        assert_eq!(
            decode_file_header(w.slab().bytes(0, 4096).unwrap()),
            Some(3)
        );
        let off = w
            .append(FLAG_PUT | FLAG_BEGIN | FLAG_END, b"k", b"v")
            .unwrap();
        assert_eq!(off, FILE_HEADER_LEN);
        // Not visible before publish.
        assert!(w.slab().bytes(off, 13).is_none());
        w.publish();
        let rec = w.slab().bytes(off, 13).unwrap();
        assert_eq!(decode(rec).unwrap().val_len, 1);
    }

    #[test]
    fn predecessor_round_trips_and_reads_as_none_when_absent_or_damaged() {
        let mut w = SlabWriter::new(8, 64 * 1024);
        let head = |w: &SlabWriter| w.slab().bytes(0, FILE_HEADER_LEN).unwrap().to_vec();
        assert_eq!(decode_predecessor(&head(&w)), None);
        let p = Predecessor {
            file_id: 7,
            end: 123_456,
        };
        // SAFETY: no other thread has this slab.
        unsafe { w.set_predecessor(Some(p)) };
        assert_eq!(w.predecessor(), Some(p));
        let mut page = head(&w);
        assert_eq!(decode_predecessor(&page), Some(p));
        // The file header proper is untouched.
        assert_eq!(decode_file_header(&page), Some(8));
        page[25] ^= 1;
        assert_eq!(decode_predecessor(&page), None);
        // SAFETY: as above.
        unsafe { w.set_predecessor(None) };
        assert_eq!(decode_predecessor(&head(&w)), None);
    }

    #[test]
    fn full_slab_refuses() {
        let mut w = SlabWriter::new(1, 8192);
        let big = vec![7u8; 4096 - record::HEADER_LEN - 1];
        assert!(w.append(FLAG_PUT, b"k", &big).is_some());
        assert_eq!(w.remaining(), 0);
        assert!(w.append(FLAG_PUT, b"k", b"").is_none());
    }

    #[test]
    fn flushed_slab_buffers_are_recycled() {
        let pool = std::sync::Arc::new(SlabPool::new(1));
        let mut w = SlabWriter::with_pool(1, 64 * 1024, Some(&pool));
        w.append(FLAG_PUT | FLAG_BEGIN | FLAG_END, b"old-key", b"old value")
            .unwrap();
        w.publish();
        let reader = w.slab().clone();
        drop(w);
        assert_eq!(pool.idle(), 0, "a reader still holds the slab");
        drop(reader);
        assert_eq!(pool.idle(), 1);
        // Another size is not served from the pool (and, the pool being
        // full, its own buffer is not kept when it goes).
        let other = SlabWriter::with_pool(2, 128 * 1024, Some(&pool));
        assert_eq!((pool.idle(), pool.reused()), (1, 0));
        drop(other);
        assert_eq!((pool.idle(), pool.reused()), (1, 0));
        let mut w = SlabWriter::with_pool(3, 64 * 1024, Some(&pool));
        assert_eq!(
            (pool.idle(), pool.reused()),
            (0, 1),
            "the buffer was reused"
        );
        assert_eq!(
            decode_file_header(w.slab().bytes(0, 4096).unwrap()),
            Some(3)
        );
        assert!(w.slab().bytes(0, 4096).unwrap()[20..]
            .iter()
            .all(|&b| b == 0));
        let off = w
            .append(FLAG_PUT | FLAG_BEGIN | FLAG_END, b"k", b"v")
            .unwrap();
        w.publish();
        assert_eq!(decode(w.slab().bytes(off, 13).unwrap()).unwrap().key_len, 1);
        // A full pool drops extra buffers.
        let a = SlabWriter::with_pool(4, 64 * 1024, Some(&pool));
        drop(w);
        drop(a);
        assert_eq!(pool.idle(), 1);
    }

    #[test]
    fn file_header_detects_damage() {
        let mut page = [0u8; 20];
        encode_file_header(&mut page, 9);
        assert_eq!(decode_file_header(&page), Some(9));
        page[13] ^= 1;
        assert_eq!(decode_file_header(&page), None);
    }
}
