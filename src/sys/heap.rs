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
/// whole on free. Smaller blocks (1 MiB read buffers, padded write blocks) stay on the heap,
/// where reuse is cheap, because the trim threshold is pinned too, at twice the mmap threshold (what glibc's
/// dynamic rule would set): pinning one parameter freezes the other at its default of 128 KiB,
/// and then every freed 1 MiB buffer at the top of a thread's heap went back to the kernel, and
/// the next one faulted in and cleared fresh pages (measured on the rbd writer when it still
/// kept a buffer per write: page faults went from 24 profile samples to 2).
/// `release_free_memory` still gives free heap pages back when a volume goes quiet.
pub fn pin_mmap_threshold(bytes: i32) {
    // SAFETY: mallopt only sets tuning parameters of glibc's allocator; it takes no pointers,
    // and changing them at any time affects only later allocations and frees.
    let ok = unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, bytes) == 1
            && libc::mallopt(libc::M_TRIM_THRESHOLD, bytes.saturating_mul(2)) == 1
    };
    if !ok {
        log::warn!("could not set the allocator's mmap and trim thresholds");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::resource::{UsageWho, getrusage};

    /// A 1 MiB buffer freed and taken again, as the rbd read path does for every request,
    /// comes back with its pages: no fault per page each time.
    #[test]
    fn a_freed_buffer_below_the_mmap_threshold_comes_back_resident() {
        pin_mmap_threshold(4 << 20);
        std::thread::spawn(|| {
            let faults = || {
                getrusage(UsageWho::RUSAGE_THREAD)
                    .unwrap()
                    .minor_page_faults()
            };
            let use_buffer = || {
                let mut b = Vec::<u8>::with_capacity(1 << 20);
                b.resize(1 << 20, 1);
                std::hint::black_box(&b);
            };
            use_buffer();
            // Uses that faulted in about a whole buffer. A `malloc_trim` of a test running
            // beside this one may take the free buffer away once or twice; without the pinned
            // trim threshold, every use does.
            let refaulted = (0..20)
                .filter(|_| {
                    let before = faults();
                    use_buffer();
                    faults() - before >= 128
                })
                .count();
            assert!(
                refaulted <= 3,
                "{refaulted} of 20 reuses of a 1 MiB buffer faulted its pages in again"
            );
        })
        .join()
        .unwrap();
    }
}
