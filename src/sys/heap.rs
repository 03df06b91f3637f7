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
