//! Starting a file's writeback early (`sync_file_range`, which nix does not wrap).
use std::os::fd::{AsRawFd, BorrowedFd};

use nix::errno::Errno;

/// Starts writeback of the dirty pages in `[offset, offset + len)` and returns without waiting
/// for it (`SYNC_FILE_RANGE_WRITE`). A hint for earlier disk I/O: it makes nothing durable.
pub fn start_writeback(fd: BorrowedFd<'_>, offset: u64, len: u64) -> Result<(), Errno> {
    let (Ok(offset), Ok(len)) = (i64::try_from(offset), i64::try_from(len)) else {
        return Err(Errno::EINVAL);
    };
    // SAFETY: sync_file_range takes no pointers; `fd` is a live descriptor for the whole call.
    let ret =
        unsafe { libc::sync_file_range(fd.as_raw_fd(), offset, len, libc::SYNC_FILE_RANGE_WRITE) };
    Errno::result(ret).map(drop)
}

/// Writes back every dirty page of the file and waits until all its pages are written,
/// including those whose writeback started earlier (`SYNC_FILE_RANGE_WAIT_BEFORE | WRITE |
/// WAIT_AFTER` over the whole file). The host has then allocated what the data needs; like
/// `start_writeback` it makes nothing durable (no metadata, no device cache flush).
pub fn write_back_and_wait(fd: BorrowedFd<'_>) -> Result<(), Errno> {
    let flags = libc::SYNC_FILE_RANGE_WAIT_BEFORE
        | libc::SYNC_FILE_RANGE_WRITE
        | libc::SYNC_FILE_RANGE_WAIT_AFTER;
    // SAFETY: sync_file_range takes no pointers; `fd` is a live descriptor for the whole call.
    let ret = unsafe { libc::sync_file_range(fd.as_raw_fd(), 0, 0, flags) };
    Errno::result(ret).map(drop)
}
