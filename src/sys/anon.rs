//! Anonymous memory mappings owned like a `Box<[u8]>`: the tmpfs store keeps large file
//! stretches in them, so that memory is backed page by page only where it is written, and is
//! returned to the system at once (`discard`, drop) instead of waiting in the heap.
use std::num::NonZeroUsize;
use std::ops::Range;
use std::ptr::NonNull;

use nix::errno::Errno;
use nix::sys::mman::{self, MapFlags, MmapAdvise, ProtFlags};

/// A private anonymous read-write mapping. Untouched and discarded pages read as zeros and
/// take no memory.
pub struct AnonRegion {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: the region owns its mapping exclusively (nothing else holds the pointer), like a
// Box<[u8]>; shared access only reads, and writing needs `&mut self`.
unsafe impl Send for AnonRegion {}
// SAFETY: as above: `&AnonRegion` gives only read access to the bytes.
unsafe impl Sync for AnonRegion {}

impl AnonRegion {
    /// Maps `len` bytes (a multiple of the page size) of zeros, none of them backed yet.
    pub fn new(len: usize) -> Result<AnonRegion, Errno> {
        let size = NonZeroUsize::new(len).ok_or(Errno::EINVAL)?;
        // SAFETY: a fresh anonymous mapping at an address the kernel picks overlaps no memory
        // Rust knows about; MAP_NORESERVE only skips swap accounting (there is none to
        // reserve for: pages are counted when they are backed).
        let ptr = unsafe {
            mman::mmap_anonymous(
                None,
                size,
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                MapFlags::MAP_PRIVATE | MapFlags::MAP_NORESERVE,
            )?
        };
        // 4 KiB pages only: a transparent huge page would back 2 MiB on the first write of a
        // byte (where THP is "always"), and khugepaged could fill holes by collapsing pages,
        // so memory would no longer be the pages written. Kernels without THP refuse the
        // advice, which is then moot.
        // SAFETY: the range is exactly the mapping just made; the advice changes no byte.
        let _ = unsafe { mman::madvise(ptr, len, MmapAdvise::MADV_NOHUGEPAGE) };
        Ok(AnonRegion {
            ptr: ptr.cast(),
            len,
        })
    }

    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: the mapping is `len` readable bytes for the life of self; the shared borrow
        // of self keeps `as_mut_slice` (which needs &mut self) from aliasing it.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }

    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: the mapping is `len` writable bytes for the life of self, and &mut self makes
        // this the only reference to them.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }

    /// Zeroes `range`, giving its memory back to the system where it covers whole pages.
    pub fn discard(&mut self, range: Range<usize>) {
        let Some(start) = self.page_range(&range) else {
            self.as_mut_slice()[range].fill(0);
            return;
        };
        // SAFETY: the range lies inside our own mapping (checked by page_range), and &mut self
        // means no slice of it is borrowed while its pages are replaced by zeros.
        let result =
            unsafe { mman::madvise(start, range.end - range.start, MmapAdvise::MADV_DONTNEED) };
        if let Err(e) = result {
            // Only invalid arguments can fail it, which page_range rules out; zero the bytes
            // so that the contents stay right even then.
            log::error!("madvise(MADV_DONTNEED) failed: {e}");
            self.as_mut_slice()[range].fill(0);
        }
    }

    /// Backs the pages of `range` with memory now, in one call instead of one fault per page.
    /// Only a speed-up: pages not populated are backed on first write anyway.
    pub fn populate(&mut self, range: Range<usize>) {
        if let Some(start) = self.page_range(&range) {
            // SAFETY: the range lies inside our own mapping; populating changes no byte (the
            // pages stay zeros), it only backs them.
            let advice = MmapAdvise::MADV_POPULATE_WRITE;
            let _ = unsafe { mman::madvise(start, range.end - range.start, advice) };
        }
    }

    /// How many of the region's pages are mapped now (mincore). A page only read is mapped to
    /// the kernel's shared zero page, which mincore counts too but which takes no memory.
    pub fn resident_pages(&self) -> usize {
        let mut vec = vec![0u8; self.len.div_ceil(page_size())];
        // SAFETY: the whole mapping is ours and page aligned; the kernel writes one byte per
        // page into vec, which has exactly that many.
        let ret = unsafe { libc::mincore(self.ptr.as_ptr().cast(), self.len, vec.as_mut_ptr()) };
        if ret != 0 {
            log::error!("mincore failed: {}", Errno::last());
            return 0;
        }
        vec.iter().filter(|&&b| b & 1 != 0).count()
    }

    /// The start of `range` as a pointer, if the range is non-empty and aligned to the
    /// system's pages. Panics if it is not inside the region.
    fn page_range(&self, range: &Range<usize>) -> Option<NonNull<std::ffi::c_void>> {
        assert!(
            range.start <= range.end && range.end <= self.len,
            "range outside region"
        );
        let page = page_size();
        let ok = range.start < range.end && range.start % page == 0 && range.end % page == 0;
        // SAFETY: start < len, so the offset stays inside the mapping.
        ok.then(|| unsafe { self.ptr.add(range.start) }.cast())
    }
}

impl Drop for AnonRegion {
    fn drop(&mut self) {
        // SAFETY: ptr and len are exactly what mmap returned and no borrow of the bytes
        // outlives self.
        if let Err(e) = unsafe { mman::munmap(self.ptr.cast(), self.len) } {
            log::error!("munmap failed: {e}");
        }
    }
}

fn page_size() -> usize {
    static SIZE: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *SIZE.get_or_init(|| {
        nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
            .ok()
            .flatten()
            .map_or(4096, |n| n as usize)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zeros_until_written_and_after_discard() {
        let mut r = AnonRegion::new(1 << 20).unwrap();
        assert!(r.as_slice().iter().all(|&b| b == 0));
        r.as_mut_slice()[4096..8192].fill(7);
        r.discard(4096..8192);
        assert!(r.as_slice().iter().all(|&b| b == 0));
        // Part of a page is zeroed in place.
        r.as_mut_slice()[..4096].fill(1);
        r.discard(1..4095);
        assert_eq!(r.as_slice()[..4096].iter().filter(|&&b| b == 1).count(), 2);
    }

    #[test]
    fn memory_follows_writes_populate_and_discard() {
        let mut r = AnonRegion::new(2 << 20).unwrap();
        assert_eq!(r.resident_pages(), 0);
        r.as_mut_slice()[5000] = 1;
        assert_eq!(r.resident_pages(), 1);
        r.populate(0..(1 << 20));
        assert_eq!(r.resident_pages(), 256);
        r.discard(0..(1 << 20));
        assert_eq!(r.resident_pages(), 0);
    }
}
