//! File handles (`name_to_handle_at`, `open_by_handle_at`): a filesystem's persistent name of an
//! inode, which includes its generation, so a handle of a freed inode never reaches the inode
//! that later reuses its number (it gets `ESTALE`). Opening by handle needs
//! `CAP_DAC_READ_SEARCH`.
use std::ffi::CStr;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use nix::errno::Errno;
use nix::fcntl::OFlag;

const MAX_HANDLE_BYTES: usize = libc::MAX_HANDLE_SZ as usize;

/// `struct file_handle` followed by room for the largest handle the kernel makes.
#[repr(C)]
struct RawHandle {
    header: libc::file_handle,
    bytes: [u8; MAX_HANDLE_BYTES],
}

impl RawHandle {
    fn empty() -> RawHandle {
        RawHandle {
            header: libc::file_handle {
                handle_bytes: MAX_HANDLE_BYTES as libc::c_uint,
                handle_type: 0,
                f_handle: [],
            },
            bytes: [0; MAX_HANDLE_BYTES],
        }
    }
}

/// An inode's file handle, valid on the filesystem (mount) it came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostHandle {
    kind: i32,
    bytes: Box<[u8]>,
}

impl HostHandle {
    /// The handle type then its bytes: stable across remounts and reboots for one inode.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = self.kind.to_le_bytes().to_vec();
        out.extend_from_slice(&self.bytes);
        out
    }

    /// The handle's type and bytes, to record it.
    pub fn parts(&self) -> (i32, &[u8]) {
        (self.kind, &self.bytes)
    }

    /// A handle recorded with `parts`; None if the bytes cannot be a handle.
    pub fn from_parts(kind: i32, bytes: &[u8]) -> Option<HostHandle> {
        (bytes.len() <= MAX_HANDLE_BYTES).then(|| HostHandle {
            kind,
            bytes: bytes.into(),
        })
    }
}

/// The handle of `path` relative to `dir` (with an empty path: of `dir` itself; symlinks are
/// not followed), and the id of the mount it was reached through.
pub fn name_to_handle_at(dir: BorrowedFd<'_>, path: &CStr) -> Result<(HostHandle, i32), Errno> {
    let mut raw = RawHandle::empty();
    let mut mount_id: libc::c_int = 0;
    let flags = if path.is_empty() {
        libc::AT_EMPTY_PATH
    } else {
        0
    };
    // SAFETY: `path` is NUL-terminated; `raw` is a `file_handle` header immediately followed
    // by `handle_bytes` bytes it owns (repr(C), the flexible array starts at the header's
    // end), which is all the kernel writes; `mount_id` is a valid c_int to write to.
    let ret = unsafe {
        libc::name_to_handle_at(
            dir.as_raw_fd(),
            path.as_ptr(),
            &mut raw.header,
            &mut mount_id,
            flags,
        )
    };
    if ret < 0 {
        return Err(Errno::last());
    }
    let len = (raw.header.handle_bytes as usize).min(MAX_HANDLE_BYTES);
    let handle = HostHandle {
        kind: raw.header.handle_type,
        bytes: raw.bytes[..len].into(),
    };
    Ok((handle, mount_id))
}

/// Opens the inode `handle` names, on the filesystem of `mount` (which must not be an O_PATH
/// descriptor). `ESTALE` when that inode no longer exists.
pub fn open_by_handle_at(
    mount: BorrowedFd<'_>,
    handle: &HostHandle,
    flags: OFlag,
) -> Result<OwnedFd, Errno> {
    let mut raw = RawHandle::empty();
    raw.header.handle_bytes = handle.bytes.len() as libc::c_uint;
    raw.header.handle_type = handle.kind;
    raw.bytes[..handle.bytes.len()].copy_from_slice(&handle.bytes);
    // SAFETY: `raw` is a `file_handle` header followed by its `handle_bytes` bytes, which the
    // kernel only reads; `mount` is a descriptor that stays open for the call.
    let fd = unsafe { libc::open_by_handle_at(mount.as_raw_fd(), &mut raw.header, flags.bits()) };
    if fd < 0 {
        return Err(Errno::last());
    }
    // SAFETY: the kernel just returned this new descriptor, and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::fcntl::{OFlag, open};
    use nix::sys::stat::{Mode, fstat};
    use std::os::fd::AsFd;

    #[test]
    fn handle_round_trip_and_stale_after_unlink() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        std::fs::write(&file, b"x").unwrap();
        let root = open(
            dir.path(),
            OFlag::O_RDONLY | OFlag::O_DIRECTORY,
            Mode::empty(),
        )
        .unwrap();
        let name = c"f";
        let (handle, _mount) = match name_to_handle_at(root.as_fd(), name) {
            Ok(h) => h,
            // A host filesystem without handles: nothing to check here.
            Err(Errno::EOPNOTSUPP) => return,
            Err(e) => panic!("name_to_handle_at: {e}"),
        };
        let (same, _) = name_to_handle_at(
            open(&file, OFlag::O_PATH, Mode::empty()).unwrap().as_fd(),
            c"",
        )
        .unwrap();
        assert_eq!(handle, same, "by name and by descriptor");
        let fd = open_by_handle_at(root.as_fd(), &handle, OFlag::O_PATH).unwrap();
        let by_path = nix::sys::stat::stat(&file).unwrap();
        assert_eq!(fstat(&fd).unwrap().st_ino, by_path.st_ino);
        drop(fd);
        std::fs::remove_file(&file).unwrap();
        assert_eq!(
            open_by_handle_at(root.as_fd(), &handle, OFlag::O_PATH).err(),
            Some(Errno::ESTALE)
        );
    }
}
