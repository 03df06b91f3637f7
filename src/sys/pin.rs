//! Paths resolved once and pinned by descriptor: directories opened without following any
//! symlink, bind mounts made and detached through `/proc/self/fd`, and mount identity.
//!
//! A path that names a host directory for the daemon (a bind target, a `mount=` directory)
//! can lie under directories that unprivileged users own. Between a check and a use they can
//! swap a component for a symlink, so every use goes through a descriptor opened once with
//! `RESOLVE_NO_SYMLINKS`, and mounts are made on and detached from exactly that descriptor.
use std::ffi::CString;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::path::Path;

use nix::fcntl::{OFlag, OpenHow, ResolveFlag, openat2};
use nix::mount::{MntFlags, umount2};

use super::proc_fd_path;

/// Opens directory `path` (absolute) as O_PATH, refusing a symlink in any component
/// (`ELOOP`), magic links included.
pub fn open_dir_nofollow(path: &Path) -> io::Result<OwnedFd> {
    let how = OpenHow::new()
        .flags(OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC)
        .resolve(ResolveFlag::RESOLVE_NO_SYMLINKS);
    Ok(openat2(nix::fcntl::AT_FDCWD, path, how)?)
}

/// Why a path through a symlink is refused, naming the path to give instead.
pub fn symlink_refusal(path: &Path) -> String {
    let resolved = match path.canonicalize() {
        Ok(p) => format!("; give the resolved path {}", p.display()),
        Err(_) => String::new(),
    };
    format!(
        "the path goes through a symlink, which a user owning a directory on it could \
         redirect later; fvol resolves no symlinks in it{resolved}"
    )
}

/// Opens directory `path` for reading (a real descriptor: fchown, fchmod, syncfs, getdents),
/// refusing a symlink in any component.
pub fn open_dir_for_reading_nofollow(path: &Path) -> io::Result<OwnedFd> {
    let how = OpenHow::new()
        .flags(OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC)
        .resolve(ResolveFlag::RESOLVE_NO_SYMLINKS);
    Ok(openat2(nix::fcntl::AT_FDCWD, path, how)?)
}

/// Bind-mounts the directory `source` onto the directory `target`, both pinned: the mount
/// lands on the very inode `target` was opened on, whatever its path names by now. Returns the
/// new mount's identity, known before it is attached (`open_tree` makes it detached first).
pub fn bind(source: BorrowedFd<'_>, target: BorrowedFd<'_>) -> io::Result<MountOf> {
    const OPEN_TREE_CLONE: libc::c_uint = 1;
    const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x04;
    const MOVE_MOUNT_T_EMPTY_PATH: libc::c_uint = 0x40;
    let empty = CString::default();
    let flags =
        OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint | libc::AT_EMPTY_PATH as libc::c_uint;
    // SAFETY: open_tree(2) with an empty NUL-terminated path and AT_EMPTY_PATH clones the
    // mount at `source`; it returns a new descriptor that we own from here on.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_open_tree,
            source.as_raw_fd(),
            empty.as_ptr(),
            flags,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: rc is a descriptor open_tree just returned, owned by nobody else.
    let tree = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(rc as RawFd) };
    let mount = mount_of(tree.as_fd())?;
    // SAFETY: move_mount(2) with empty NUL-terminated paths and the EMPTY_PATH flags reads
    // only the two descriptors, both valid for the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            tree.as_raw_fd(),
            empty.as_ptr(),
            target.as_raw_fd(),
            empty.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(mount)
}

/// Lazily detaches the mount whose root `mount_root` was opened on (and nothing else).
pub fn detach(mount_root: BorrowedFd<'_>) -> io::Result<()> {
    let path = proc_fd_path(mount_root);
    umount2(path.as_c_str(), MntFlags::MNT_DETACH)?;
    Ok(())
}

/// What `statx` says about the mount a descriptor is on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MountOf {
    /// The mount's id, never reused while the system runs (`STATX_MNT_ID_UNIQUE`, Linux 6.8),
    /// or the reusable one on older kernels.
    pub id: u64,
    /// The descriptor is the root of that mount (something is mounted exactly there).
    pub is_root: bool,
}

/// The mount `fd` is on.
pub fn mount_of(fd: BorrowedFd<'_>) -> io::Result<MountOf> {
    let empty = CString::default();
    let mut unique = true;
    loop {
        let mask = if unique {
            libc::STATX_MNT_ID_UNIQUE
        } else {
            libc::STATX_MNT_ID
        };
        let mut buf = std::mem::MaybeUninit::<libc::statx>::zeroed();
        // SAFETY: `empty` is NUL-terminated and AT_EMPTY_PATH makes statx describe `fd`
        // itself; `buf` is a zeroed statx the kernel fills and that outlives the call.
        let rc = unsafe {
            libc::statx(
                fd.as_raw_fd(),
                empty.as_ptr(),
                libc::AT_EMPTY_PATH | libc::AT_SYMLINK_NOFOLLOW,
                mask,
                buf.as_mut_ptr(),
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: statx succeeded, so the buffer is initialised (it was zeroed anyway).
        let st = unsafe { buf.assume_init() };
        if st.stx_mask & mask == 0 && unique {
            unique = false;
            continue;
        }
        let is_root = st.stx_attributes_mask & libc::STATX_ATTR_MOUNT_ROOT as u64 != 0
            && st.stx_attributes & libc::STATX_ATTR_MOUNT_ROOT as u64 != 0;
        return Ok(MountOf {
            id: st.stx_mnt_id,
            is_root,
        });
    }
}

/// `(st_dev, st_ino)` of a descriptor.
pub fn identity(fd: impl AsFd) -> io::Result<(u64, u64)> {
    let st = nix::sys::stat::fstat(fd.as_fd())?;
    Ok((st.st_dev, st.st_ino))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symlinks_are_refused_in_any_component() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real");
        std::fs::create_dir_all(real.join("sub")).unwrap();
        std::os::unix::fs::symlink(&real, dir.path().join("link")).unwrap();
        assert!(open_dir_nofollow(&real.join("sub")).is_ok());
        for path in [dir.path().join("link"), dir.path().join("link/sub")] {
            let err = open_dir_nofollow(&path).unwrap_err();
            assert_eq!(err.raw_os_error(), Some(libc::ELOOP), "{}", path.display());
        }
    }

    #[test]
    fn a_plain_directory_is_no_mount_root_and_slash_is() {
        let dir = tempfile::tempdir().unwrap();
        let fd = open_dir_nofollow(dir.path()).unwrap();
        assert!(!mount_of(fd.as_fd()).unwrap().is_root);
        let root = open_dir_nofollow(Path::new("/")).unwrap();
        assert!(mount_of(root.as_fd()).unwrap().is_root);
    }
}
