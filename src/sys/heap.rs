//! Giving freed heap memory back to the system.

/// Returns free heap pages to the kernel (glibc keeps freed memory inside its arenas
/// otherwise, so RSS would not shrink after data is deleted).
pub fn release_free_memory() {
    // SAFETY: malloc_trim only walks glibc's own arenas under their locks; it takes no pointers
    // from us and is safe to call from any thread at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Pins glibc's mmap threshold. Left dynamic, it rises to the largest block ever freed, so
/// after the first unmount fuser's 16 MiB request buffers (4 per mount) come from the heap,
/// zeroed and resident; pinned, blocks of this size or more are mapped on demand and returned
/// whole on free. Smaller blocks (1 MiB read buffers) stay on the heap, where reuse is cheap.
pub fn pin_mmap_threshold(bytes: i32) {
    // SAFETY: mallopt only sets a tuning parameter of glibc's allocator; it takes no pointers,
    // and changing M_MMAP_THRESHOLD at any time affects only later allocations.
    let ok = unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, bytes) };
    if ok != 1 {
        log::warn!("could not set the allocator's mmap threshold");
    }
}
