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

/// The umask a helper program the daemon runs (tar) gets, as a login shell would give it:
/// the daemon itself runs with umask 0, and a file or directory the helper makes without a
/// mode of its own (a directory a tar stream implies but does not list) must not be
/// writable by everyone.
pub const HELPER_UMASK: libc::mode_t = 0o022;

/// Makes `command` start its program with umask `mask`.
pub fn set_child_umask(command: &mut std::process::Command, mask: libc::mode_t) {
    use std::os::unix::process::CommandExt;
    // SAFETY: the closure runs in the forked child before exec and calls only umask(2),
    // which is async-signal-safe, cannot fail and touches no memory of the parent.
    unsafe {
        command.pre_exec(move || {
            libc::umask(mask);
            Ok(())
        });
    }
}
