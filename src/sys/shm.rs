//! Shared memory that can outlive the process: a memfd mapped shared, seen as atomic words.
//! Whoever holds the memfd (the keeper, see `crate::keeper`) keeps its contents after the
//! process that wrote them is gone, and a successor maps the same pages again.
use std::io;
use std::num::NonZeroUsize;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::atomic::AtomicU64;

use nix::errno::Errno;
use nix::sys::memfd::{MFdFlags, memfd_create};
use nix::sys::mman::{self, MapFlags, ProtFlags};

const WORD: usize = std::mem::size_of::<AtomicU64>();

/// A memfd of `len` words, mapped shared for the life of the value. Pages are backed only
/// once written.
pub struct SharedWords {
    ptr: NonNull<AtomicU64>,
    words: usize,
    fd: OwnedFd,
}

// SAFETY: the mapping is only ever reached as `&[AtomicU64]`, whose every access is atomic, so
// sharing it between threads is as safe as sharing a slice of atomics.
unsafe impl Send for SharedWords {}
// SAFETY: as above.
unsafe impl Sync for SharedWords {}

impl SharedWords {
    /// A new memfd named `name` (shown in /proc/PID/fd) of `words` zero words.
    pub fn create(name: &str, words: usize) -> io::Result<SharedWords> {
        // Without MFD_NOEXEC_SEAL newer kernels log a warning; older ones refuse the flag.
        let noexec = MFdFlags::from_bits_retain(libc::MFD_NOEXEC_SEAL);
        let fd = memfd_create(name, MFdFlags::MFD_CLOEXEC | noexec).or_else(|e| match e {
            Errno::EINVAL => memfd_create(name, MFdFlags::MFD_CLOEXEC),
            e => Err(e),
        })?;
        let len = words
            .checked_mul(WORD)
            .ok_or_else(|| io::Error::from(Errno::EOVERFLOW))?;
        nix::unistd::ftruncate(&fd, len as i64)?;
        Self::map(fd, words)
    }

    /// Maps a memfd that `create` made (here or in another process).
    pub fn open(fd: OwnedFd) -> io::Result<SharedWords> {
        let len = nix::sys::stat::fstat(&fd)?.st_size as usize;
        if len % WORD != 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("a shared table of {len} bytes is not made of 8-byte words"),
            ));
        }
        Self::map(fd, len / WORD)
    }

    fn map(fd: OwnedFd, words: usize) -> io::Result<SharedWords> {
        let len = NonZeroUsize::new(words * WORD).ok_or_else(|| io::Error::from(Errno::EINVAL))?;
        // SAFETY: a new shared mapping of our own memfd at an address the kernel picks overlaps
        // no memory Rust knows about. The memfd is never truncated after creation (only `create`
        // sizes it), so every page stays backed for the life of the mapping.
        let ptr = unsafe {
            mman::mmap(
                None,
                len,
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                MapFlags::MAP_SHARED,
                &fd,
                0,
            )?
        };
        Ok(SharedWords {
            ptr: ptr.cast(),
            words,
            fd,
        })
    }

    pub fn words(&self) -> &[AtomicU64] {
        // SAFETY: the mapping is `words` 8-byte aligned (page aligned) words for the life of
        // self, and AtomicU64 has the size and alignment of u64; all access is atomic.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.words) }
    }

    /// The memfd, to hand to whoever keeps the contents across a restart.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl Drop for SharedWords {
    fn drop(&mut self) {
        // SAFETY: ptr and length are what mmap returned; no borrow of the words outlives self.
        if let Err(e) = unsafe { mman::munmap(self.ptr.cast(), self.words * WORD) } {
            log::error!("munmap of a shared table failed: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering;

    #[test]
    fn a_second_mapping_of_the_memfd_sees_the_words() {
        let a = SharedWords::create("test", 1024).unwrap();
        a.words()[7].store(42, Ordering::Relaxed);
        let b = SharedWords::open(a.fd().try_clone_to_owned().unwrap()).unwrap();
        assert_eq!(b.words().len(), 1024);
        assert_eq!(b.words()[7].load(Ordering::Relaxed), 42);
        drop(a);
        b.words()[8].store(1, Ordering::Relaxed);
        assert_eq!(b.words()[7].load(Ordering::Relaxed), 42);
    }
}
