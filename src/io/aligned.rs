//! A page-aligned, zero-initialised heap buffer for O_DIRECT I/O.

use std::alloc::{self, Layout};
use std::ptr::NonNull;

/// The page size silt aligns every file write to.
pub(crate) const PAGE: usize = 4096;

/// Rounds `n` up to a multiple of [`PAGE`].
pub(crate) const fn page_ceil(n: usize) -> usize {
    n.div_ceil(PAGE) * PAGE
}

/// Rounds `n` down to a multiple of [`PAGE`].
pub(crate) const fn page_floor(n: usize) -> usize {
    n / PAGE * PAGE
}

/// A heap buffer whose start and length are multiples of [`PAGE`], as
/// O_DIRECT requires. Zeroed on allocation; for large sizes the allocator
/// maps fresh pages, so untouched pages cost no RAM.
pub(crate) struct AlignedBuf {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: AlignedBuf owns its allocation like a Box<[u8]>; sharing rules are
// those of the owner (`&` gives reads, `&mut` gives writes), except where a
// wrapper (the slab) documents its own protocol.
unsafe impl Send for AlignedBuf {}
// SAFETY: as above; `&AlignedBuf` only hands out shared reads.
unsafe impl Sync for AlignedBuf {}

impl AlignedBuf {
    /// A zeroed buffer of `len` bytes, rounded up to a whole number of pages
    /// (at least one).
    pub fn zeroed(len: usize) -> AlignedBuf {
        let len = page_ceil(len.max(1));
        // A page-multiple length with page alignment is always a valid layout
        // on 64-bit targets for the sizes silt allows (<= 4 GiB).
        let layout = match Layout::from_size_align(len, PAGE) {
            Ok(l) => l,
            Err(_) => alloc::handle_alloc_error(Layout::new::<u8>()),
        };
        // SAFETY: the layout has a non-zero size.
        let raw = unsafe { alloc::alloc_zeroed(layout) };
        let ptr = NonNull::new(raw).unwrap_or_else(|| alloc::handle_alloc_error(layout));
        AlignedBuf { ptr, len }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: ptr is valid for len initialised (zeroed) bytes for the life of self.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }

    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: as above, and `&mut self` makes the access exclusive.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        // SAFETY: allocated in `zeroed` with exactly this layout.
        unsafe {
            alloc::dealloc(
                self.ptr.as_ptr(),
                Layout::from_size_align_unchecked(self.len, PAGE),
            )
        }
    }
}

impl std::fmt::Debug for AlignedBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AlignedBuf")
            .field("len", &self.len)
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
