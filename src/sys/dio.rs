//! What a host filesystem demands of direct I/O (O_DIRECT) on a file.
use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

/// The alignment of file offsets and lengths that O_DIRECT I/O on `fd` needs, as `statx`
/// reports it (`STATX_DIOALIGN`, Linux 6.1): `Some(0)` when the file supports no direct I/O
/// (ext4 then serves O_DIRECT through its page cache), None when the filesystem does not say.
pub fn offset_align(fd: BorrowedFd<'_>) -> io::Result<Option<u32>> {
    let empty = CString::default();
    let mut buf = std::mem::MaybeUninit::<libc::statx>::zeroed();
    // SAFETY: `empty` is NUL-terminated and AT_EMPTY_PATH makes statx describe `fd` itself;
    // `buf` is a zeroed statx the kernel fills and that outlives the call.
    let rc = unsafe {
        libc::statx(
            fd.as_raw_fd(),
            empty.as_ptr(),
            libc::AT_EMPTY_PATH,
            libc::STATX_DIOALIGN,
            buf.as_mut_ptr(),
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: statx succeeded, so the buffer is initialised (it was zeroed anyway).
    let st = unsafe { buf.assume_init() };
    Ok((st.stx_mask & libc::STATX_DIOALIGN != 0).then_some(st.stx_dio_offset_align))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn answers_for_a_regular_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = std::fs::File::create(dir.path().join("f")).unwrap();
        // Whatever the host filesystem is, the answer is a power of two, 0 or unknown.
        if let Some(a) = offset_align(file.as_fd()).unwrap() {
            assert!(a == 0 || a.is_power_of_two(), "{a}");
        }
    }
}
