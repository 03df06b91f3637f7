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
        let fd = memfd(name)?;
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

/// A memfd of `len` bytes mapped shared, read and written as bytes: the tmpfs driver keeps
/// file data in one, so that it outlives the handler (the keeper holds the memfd). Pages are
/// backed only once written or allocated; `punch` gives them back.
///
/// Callers serialize access to a byte range themselves (the tmpfs store: a file's pages under
/// its own lock): a writer of a range never runs beside a reader of it.
pub struct SharedBytes {
    ptr: NonNull<u8>,
    len: usize,
    fd: OwnedFd,
}

// SAFETY: the mapping is reached only through the methods below, whose callers serialize
// writers of a range against its readers (see the type's doc), as for a slice behind a lock.
unsafe impl Send for SharedBytes {}
// SAFETY: as above.
unsafe impl Sync for SharedBytes {}

fn memfd(name: &str) -> io::Result<OwnedFd> {
    // Without MFD_NOEXEC_SEAL newer kernels log a warning; older ones refuse the flag.
    let noexec = MFdFlags::from_bits_retain(libc::MFD_NOEXEC_SEAL);
    Ok(
        memfd_create(name, MFdFlags::MFD_CLOEXEC | noexec).or_else(|e| match e {
            Errno::EINVAL => memfd_create(name, MFdFlags::MFD_CLOEXEC),
            e => Err(e),
        })?,
    )
}

impl SharedBytes {
    /// A new memfd named `name` of `len` zero bytes (a multiple of the page size).
    pub fn create(name: &str, len: usize) -> io::Result<SharedBytes> {
        let fd = memfd(name)?;
        nix::unistd::ftruncate(&fd, len as i64)?;
        Self::map(fd, len)
    }

    /// Maps a memfd that `create` made (here or in another process).
    pub fn open(fd: OwnedFd) -> io::Result<SharedBytes> {
        let len = nix::sys::stat::fstat(&fd)?.st_size as usize;
        Self::map(fd, len)
    }

    fn map(fd: OwnedFd, len: usize) -> io::Result<SharedBytes> {
        let size = NonZeroUsize::new(len).ok_or_else(|| io::Error::from(Errno::EINVAL))?;
        // SAFETY: a new shared mapping of our own memfd at an address the kernel picks overlaps
        // no memory Rust knows about. The memfd is never truncated after creation, so every
        // page stays valid for the life of the mapping (holes read as zeros).
        let ptr = unsafe {
            mman::mmap(
                None,
                size,
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                MapFlags::MAP_SHARED,
                &fd,
                0,
            )?
        };
        Ok(SharedBytes {
            ptr: ptr.cast(),
            len,
            fd,
        })
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The memfd, to hand to whoever keeps the contents across a restart.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    fn check(&self, at: usize, len: usize) {
        assert!(
            at.checked_add(len).is_some_and(|end| end <= self.len),
            "a range outside the shared region"
        );
    }

    /// The bytes `at..at + len`. No writer of them may run while the slice lives (the
    /// caller's lock, see the type).
    pub fn slice(&self, at: usize, len: usize) -> &[u8] {
        self.check(at, len);
        // SAFETY: inside the mapping (checked), which lives as long as self; writers of the
        // range are excluded by the caller for the life of the borrow.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr().add(at), len) }
    }

    /// Copies `data` to `at`. No reader or other writer of the range may run meanwhile.
    pub fn write(&self, at: usize, data: &[u8]) {
        self.check(at, data.len());
        // SAFETY: inside the mapping (checked); the caller excludes every other access to
        // the range, and `data` is our own memory, never the mapping's same bytes.
        unsafe {
            std::ptr::copy_nonoverlapping(data.as_ptr(), self.ptr.as_ptr().add(at), data.len())
        }
    }

    /// The 8-byte word at `at` (8-aligned), for fields that are only ever read and written
    /// through this (never through `write` or `slice`).
    pub fn word(&self, at: usize) -> &AtomicU64 {
        assert!(at % WORD == 0, "an unaligned shared word");
        self.check(at, WORD);
        // SAFETY: inside the mapping (checked) and 8-aligned (the mapping is page aligned);
        // AtomicU64 has the size and alignment of u64, and the caller reaches these bytes
        // only atomically, so no plain access races with it.
        unsafe { AtomicU64::from_ptr(self.ptr.as_ptr().add(at).cast()) }
    }

    /// Zeroes `at..at + len` in place (pages stay backed).
    pub fn zero(&self, at: usize, len: usize) {
        self.check(at, len);
        // SAFETY: inside the mapping (checked); the caller excludes other access to the range.
        unsafe { std::ptr::write_bytes(self.ptr.as_ptr().add(at), 0, len) }
    }

    /// Gives the pages of `at..at + len` (page aligned) back to the system: they read as
    /// zeros again.
    pub fn punch(&self, at: usize, len: usize) -> io::Result<()> {
        self.check(at, len);
        let mode = nix::fcntl::FallocateFlags::FALLOC_FL_PUNCH_HOLE
            | nix::fcntl::FallocateFlags::FALLOC_FL_KEEP_SIZE;
        nix::fcntl::fallocate(&self.fd, mode, at as i64, len as i64)?;
        Ok(())
    }

    /// Backs and maps the pages of `at..at + len` (page aligned) for writing now, in one call
    /// instead of a fault per page. Only a speed-up: a page not populated is on first touch.
    pub fn populate(&self, at: usize, len: usize) {
        self.check(at, len);
        // SAFETY: the range lies inside our own mapping (checked), so the pointer is the
        // mapping's, never null; populating changes no byte, it only backs and maps pages.
        let _ = unsafe {
            mman::madvise(
                NonNull::new_unchecked(self.ptr.as_ptr().add(at)).cast(),
                len,
                mman::MmapAdvise::MADV_POPULATE_WRITE,
            )
        };
    }

    /// Backs the pages of `at..at + len` with memory now (they keep their bytes).
    pub fn back(&self, at: usize, len: usize) -> io::Result<()> {
        self.check(at, len);
        let mode = nix::fcntl::FallocateFlags::FALLOC_FL_KEEP_SIZE;
        nix::fcntl::fallocate(&self.fd, mode, at as i64, len as i64)?;
        Ok(())
    }
}

impl Drop for SharedBytes {
    fn drop(&mut self) {
        // SAFETY: ptr and length are what mmap returned; no borrow of the bytes outlives self.
        if let Err(e) = unsafe { mman::munmap(self.ptr.cast(), self.len) } {
            log::error!("munmap of a shared region failed: {e}");
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

    #[test]
    fn shared_bytes_survive_into_a_second_mapping_and_punch_frees() {
        let a = SharedBytes::create("test", 16 * 4096).unwrap();
        a.write(4096 + 10, b"hello");
        a.write(3 * 4096, &[1u8; 4096]);
        let b = SharedBytes::open(a.fd().try_clone_to_owned().unwrap()).unwrap();
        assert_eq!(b.slice(4096 + 10, 5), b"hello");
        let backed = |s: &SharedBytes| nix::sys::stat::fstat(s.fd()).unwrap().st_blocks * 512;
        assert_eq!(backed(&a), 2 * 4096);
        b.punch(4096, 4096).unwrap();
        assert_eq!(backed(&a), 4096);
        a.back(8 * 4096, 2 * 4096).unwrap();
        assert_eq!(backed(&a), 3 * 4096);
        a.zero(3 * 4096, 10);
        assert_eq!(b.slice(3 * 4096, 11), &[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
        // A punched page reads as zeros again.
        assert_eq!(a.slice(4096 + 10, 5), &[0u8; 5]);
    }
}
