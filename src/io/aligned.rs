//! A page-aligned, zero-initialised buffer for O_DIRECT I/O.

/// The page size silt aligns every file write to.
pub(crate) const PAGE: usize = 4096;

/// Transparent huge page size on x86-64 and most arm64 kernels.
const HUGE_PAGE: usize = 2 << 20;

/// Rounds `n` up to a multiple of [`PAGE`].
pub(crate) const fn page_ceil(n: usize) -> usize {
    n.div_ceil(PAGE) * PAGE
}

/// Rounds `n` down to a multiple of [`PAGE`].
pub(crate) const fn page_floor(n: usize) -> usize {
    n / PAGE * PAGE
}

/// A buffer whose start and length are multiples of [`PAGE`], as O_DIRECT
/// requires: an anonymous private mapping, so it is zeroed lazily by the
/// kernel (a 64 MiB slab costs nothing until its pages are touched; Rust's
/// `alloc_zeroed` with 4 KiB alignment would memset all of it).
pub(crate) struct AlignedBuf {
    map: memmap2::MmapMut,
    /// Taken once from `&mut map`, so writes through it never come from a
    /// shared borrow.
    ptr: *mut u8,
}

// SAFETY: AlignedBuf owns its mapping like a Box<[u8]>; `ptr` points into
// it. Sharing rules are those of the owner (`&` reads, `&mut` writes),
// except where a wrapper (the slab) documents its own protocol.
unsafe impl Send for AlignedBuf {}
// SAFETY: as above; `&AlignedBuf` only hands out shared reads.
unsafe impl Sync for AlignedBuf {}

impl AlignedBuf {
    /// A zeroed buffer of `len` bytes, rounded up to a whole number of pages
    /// (at least one). Aborts like any allocation if memory is exhausted.
    pub fn zeroed(len: usize) -> AlignedBuf {
        let len = page_ceil(len.max(1));
        match memmap2::MmapMut::map_anon(len) {
            Ok(mut map) => {
                // Ask for transparent huge pages: a slab is filled front to
                // back right after creation, and faulting it in 4 KiB pages
                // cost ~40 % of the writer's time for 64 KiB values
                // (docs/decisions.md). Only a hint; harmless where THP is off.
                if len >= HUGE_PAGE {
                    let _ = map.advise(memmap2::Advice::HugePage);
                }
                let ptr = map.as_mut_ptr();
                AlignedBuf { map, ptr }
            }
            Err(_) => std::alloc::handle_alloc_error(
                std::alloc::Layout::from_size_align(len, PAGE)
                    .unwrap_or(std::alloc::Layout::new::<u8>()),
            ),
        }
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Start of the buffer. Writing through it needs the caller's own
    /// exclusivity argument (the slab's watermark protocol).
    pub fn as_ptr(&self) -> *mut u8 {
        self.ptr
    }

    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: ptr is valid for len() initialised bytes while self lives.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len()) }
    }

    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: as above, and `&mut self` makes the access exclusive.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.len()) }
    }
}

impl std::fmt::Debug for AlignedBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AlignedBuf")
            .field("len", &self.len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligned_and_zeroed() {
        let mut b = AlignedBuf::zeroed(5000);
        assert_eq!(b.len(), 8192);
        assert_eq!(b.as_ptr() as usize % PAGE, 0);
        assert!(b.as_slice().iter().all(|&x| x == 0));
        b.as_mut_slice()[8191] = 7;
        assert_eq!(b.as_slice()[8191], 7);
        assert_eq!(page_ceil(4097), 8192);
        assert_eq!(page_floor(4097), 4096);
    }
}
