//! Raw system calls that nix does not wrap or that need `unsafe`: anonymous memory mappings,
//! directory reading with offsets, extended attributes, file handles and early writeback; and
//! `librbd`, Ceph's client libraries loaded at run time; and what /proc says of other mount
//! namespaces. Every `unsafe` block in the crate lives in this module, each with its reason.
pub mod anon;
pub mod caps;
pub mod dio;
pub mod dirent;
pub mod fdpass;
pub mod fusedev;
pub mod handle;
pub mod heap;
pub mod librbd;
pub mod mountns;
pub mod pin;
pub mod shm;
pub mod writeback;
pub mod xattr;

use std::ffi::CString;
use std::os::fd::{AsRawFd, BorrowedFd};

/// `/proc/self/fd/N`: how O_PATH descriptors are reopened or used where a call needs a path.
pub fn proc_fd_path(fd: BorrowedFd<'_>) -> CString {
    CString::new(format!("/proc/self/fd/{}", fd.as_raw_fd())).expect("no NUL in a number")
}

/// `proc_fd_path` as a path, for APIs that open a directory by name: opening it reaches exactly
/// the inode `fd` was opened on.
pub fn proc_fd_path_buf(fd: BorrowedFd<'_>) -> std::path::PathBuf {
    std::path::PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

/// Creates `dir` (and missing parents) with `mode`, whatever the process umask (the daemon
/// runs with umask 0), and gives an existing `dir` that mode.
pub fn create_dir_with_mode(dir: &std::path::Path, mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(mode)
        .create(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode))
}
