//! Which pages of a segment are in the page cache, known on the hot path
//! without a system call.
//!
//! `mincore` says exactly, but costs ~0.44 µs per call on the test VM,
//! about half of a whole in-memory get (docs/decisions.md). So each
//! segment keeps one bit per page, in chunks of 64 pages, each chunk
//! stamped with when `mincore` last filled it; a chunk older than
//! [`FRESH_MS`] is asked again before it is trusted, and pages silt itself
//! just read through the page cache are marked at once. A page the kernel
//! evicted since its chunk was stamped still reads as resident until the
//! stamp expires: touching it then faults (one page: segment mappings are
//! `MADV_RANDOM`). That window is the price of not paying a system call per
//! get.

use crate::sync::{AtomicU32, AtomicU64, Ordering};

/// Pages per chunk: one `u64` of bits.
const CHUNK_PAGES: usize = 64;
/// The page size the bits count in.
const PAGE: usize = 4096;
/// How long a chunk's bits are trusted after `mincore` filled them.
pub(crate) const FRESH_MS: u32 = 50;
/// How long pages found not in memory are taken as still not in memory.
const COLD_FRESH_MS: u32 = 1000;

/// Milliseconds of a coarse monotonic clock (a vDSO read, no system call:
/// 8 ns here).
#[inline]
fn now_ms() -> u32 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid out-pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
    (ts.tv_sec as u64 * 1000 + ts.tv_nsec as u64 / 1_000_000) as u32
}

/// Whether this machine's pages are the 4 KiB the bits count.
fn page_size_ok() -> bool {
    // SAFETY: sysconf takes no pointers.
    unsafe { libc::sysconf(libc::_SC_PAGESIZE) == PAGE as libc::c_long }
}

struct Chunk {
    bits: AtomicU64,
    /// `now_ms()` when `mincore` filled `bits`; 0: never.
    stamp: AtomicU32,
}

/// The residency bits of one mapping.
pub(crate) struct Residency {
    /// None where pages are not 4 KiB: then nothing is ever taken as
    /// resident and every read goes to the I/O threads.
    chunks: Box<[Chunk]>,
}

impl std::fmt::Debug for Residency {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Residency")
            .field("chunks", &self.chunks.len())
            .finish()
    }
}

impl Residency {
    /// Bits for a mapping of `len` bytes, all unknown.
    pub fn new(len: usize) -> Residency {
        let chunks = len.div_ceil(PAGE * CHUNK_PAGES);
        let chunks = if page_size_ok() { chunks } else { 0 };
        Residency {
            chunks: (0..chunks)
                .map(|_| Chunk {
                    bits: AtomicU64::new(0),
                    stamp: AtomicU32::new(0),
                })
                .collect(),
        }
    }

    /// Whether every page of `[off, off + len)` of the mapping `map` is in
    /// memory (as of at most [`FRESH_MS`] ago).
    #[inline]
    pub fn all_resident(&self, map: &[u8], off: usize, len: usize) -> bool {
        let Some(end) = off.checked_add(len).filter(|&e| len > 0 && e <= map.len()) else {
            return false;
        };
        let (first, last) = (off / PAGE, (end - 1) / PAGE);
        let c = first / CHUNK_PAGES;
        // The hot path: one chunk, its bits fresh.
        if last / CHUNK_PAGES == c {
            let Some(chunk) = self.chunks.get(c) else {
                return false;
            };
            let stamp = chunk.stamp.load(Ordering::Acquire);
            let age = now_ms().wrapping_sub(stamp);
            let want = page_mask(first % CHUNK_PAGES, last % CHUNK_PAGES);
            if stamp != 0 && age <= FRESH_MS {
                return chunk.bits.load(Ordering::Relaxed) & want == want;
            }
            // "Not in memory" may be trusted longer: wrongly believed, it
            // costs a read of what the page cache had, not a fault on the
            // runtime. Cold random reads then ask `mincore` about a chunk
            // once a second instead of at nearly every read.
            if stamp != 0 && age <= COLD_FRESH_MS && chunk.bits.load(Ordering::Relaxed) & want == 0
            {
                return false;
            }
        }
        self.all_resident_slow(map, first, last)
    }

    /// As `all_resident`, for pages `first..=last`, asking `mincore` for
    /// chunks whose bits are stale.
    #[cold]
    fn all_resident_slow(&self, map: &[u8], first: usize, last: usize) -> bool {
        let now = now_ms();
        for c in first / CHUNK_PAGES..=last / CHUNK_PAGES {
            let Some(chunk) = self.chunks.get(c) else {
                return false;
            };
            let stamp = chunk.stamp.load(Ordering::Acquire);
            let bits = if stamp == 0 || now.wrapping_sub(stamp) > FRESH_MS {
                let bits = mincore_chunk(map, c);
                chunk.bits.store(bits, Ordering::Relaxed);
                chunk.stamp.store(now.max(1), Ordering::Release);
                bits
            } else {
                chunk.bits.load(Ordering::Relaxed)
            };
            let lo = first.max(c * CHUNK_PAGES) - c * CHUNK_PAGES;
            let hi = last.min(c * CHUNK_PAGES + CHUNK_PAGES - 1) - c * CHUNK_PAGES;
            let want = page_mask(lo, hi);
            if bits & want != want {
                return false;
            }
        }
        true
    }

    /// The pages of `[off, off + len)` were just read through the page
    /// cache: resident now.
    pub fn mark(&self, off: usize, len: usize) {
        if len == 0 {
            return;
        }
        let (first, last) = (off / PAGE, (off + len - 1) / PAGE);
        for page in first..=last {
            if let Some(chunk) = self.chunks.get(page / CHUNK_PAGES) {
                chunk
                    .bits
                    .fetch_or(1 << (page % CHUNK_PAGES), Ordering::Relaxed);
            }
        }
    }

    /// Forgets every bit (the pages were dropped from the cache).
    #[cfg(any(test, feature = "fault-injection"))]
    pub fn forget(&self) {
        for chunk in self.chunks.iter() {
            chunk.stamp.store(0, Ordering::Release);
            chunk.bits.store(0, Ordering::Relaxed);
        }
    }
}

/// Bits `lo..=hi` (both below 64).
fn page_mask(lo: usize, hi: usize) -> u64 {
    (u64::MAX >> (63 - hi)) & (u64::MAX << lo)
}

/// `mincore` of chunk `c` of `map`: bit i set if page i is resident.
fn mincore_chunk(map: &[u8], c: usize) -> u64 {
    let start = c * CHUNK_PAGES * PAGE;
    let len = (map.len() - start).min(CHUNK_PAGES * PAGE);
    let mut vec = [0u8; CHUNK_PAGES];
    // SAFETY: `[start, start + len)` lies inside the mapping (page aligned:
    // a mapping starts on a page), and `vec` has a byte for each page.
    let rc = unsafe {
        libc::mincore(
            map.as_ptr().add(start) as *mut libc::c_void,
            len,
            vec.as_mut_ptr(),
        )
    };
    if rc != 0 {
        return 0;
    }
    vec.iter()
        .take(len.div_ceil(PAGE))
        .enumerate()
        .fold(0, |bits, (i, &v)| bits | (u64::from(v & 1) << i))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn anonymous_pages_are_resident_once_touched() {
        let mut map = memmap2::MmapMut::map_anon(200 * PAGE).unwrap();
        let r = Residency::new(map.len());
        assert!(
            !r.all_resident(&map, 10, 100),
            "untouched pages are not in memory"
        );
        map[..70 * PAGE].fill(1);
        // The chunk was just asked: its answer stands until it goes stale.
        assert!(!r.all_resident(&map, 10, 100));
        r.forget();
        assert!(r.all_resident(&map, 10, 100));
        assert!(r.all_resident(&map, 63 * PAGE, 7 * PAGE), "across chunks");
        assert!(!r.all_resident(&map, 69 * PAGE, 2 * PAGE));
        r.mark(69 * PAGE, 2 * PAGE);
        assert!(
            r.all_resident(&map, 69 * PAGE, 2 * PAGE),
            "marked after a read"
        );
        assert!(
            !r.all_resident(&map, 199 * PAGE, 2 * PAGE),
            "beyond the map"
        );
        std::thread::sleep(std::time::Duration::from_millis(u64::from(FRESH_MS) + 20));
        assert!(
            !r.all_resident(&map, 69 * PAGE, 2 * PAGE),
            "stale bits asked again"
        );
    }
}
