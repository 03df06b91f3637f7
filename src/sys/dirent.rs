//! `getdents64`, so readdir can hand the kernel the host's own resumable offsets.
use std::ffi::OsStr;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;

use nix::errno::Errno;

pub struct RawDirEntry<'a> {
    pub ino: u64,
    /// Offset of the next entry (`d_off`), to pass to lseek to resume after this one.
    pub next_offset: u64,
    /// `DT_*` type.
    pub kind: u8,
    pub name: &'a OsStr,
}

/// Reads entries from the directory's current position into `buf`; returns the bytes filled,
/// 0 at the end.
pub fn getdents64(dir: BorrowedFd<'_>, buf: &mut [u8]) -> Result<usize, Errno> {
    // SAFETY: the kernel writes at most `buf.len()` bytes into `buf`, which we borrow mutably
    // for the call; `dir` is a valid open descriptor for its lifetime.
    let n = unsafe {
        libc::syscall(
            libc::SYS_getdents64,
            dir.as_raw_fd(),
            buf.as_mut_ptr(),
            buf.len(),
        )
    };
    if n < 0 {
        Err(Errno::last())
    } else {
        Ok(n as usize)
    }
}

/// Parses the `linux_dirent64` records the kernel filled in, with plain slicing.
pub fn parse(buf: &[u8]) -> impl Iterator<Item = RawDirEntry<'_>> {
    let mut pos = 0usize;
    std::iter::from_fn(move || {
        // d_ino: u64, d_off: i64, d_reclen: u16, d_type: u8, d_name: [u8]
        let header = buf.get(pos..pos + 19)?;
        let ino = u64::from_ne_bytes(header[0..8].try_into().ok()?);
        let next_offset = i64::from_ne_bytes(header[8..16].try_into().ok()?) as u64;
        let reclen = u16::from_ne_bytes(header[16..18].try_into().ok()?) as usize;
        let kind = header[18];
        let name_bytes = buf.get(pos + 19..pos + reclen)?;
        let len = name_bytes.iter().position(|&b| b == 0)?;
        pos += reclen;
        Some(RawDirEntry {
            ino,
            next_offset,
            kind,
            name: OsStr::from_bytes(&name_bytes[..len]),
        })
    })
}
