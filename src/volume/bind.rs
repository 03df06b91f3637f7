//! Bind targets (`fvol mount --target DIR`): resolved once, pinned by descriptor, and only the
//! bind mount fvol made there is ever detached.
//!
//! Invariants:
//! - a target path has no symlink in any component, then or later: a user who owns a parent
//!   directory cannot turn it into a symlink to a directory of their choosing;
//! - the bind lands on the inode the path was opened on (`/proc/self/fd`), not on whatever
//!   the path names a moment later;
//! - a detach opens the target the same way and detaches only the mount whose unique id was
//!   recorded when fvol made it, so a mount made by anyone else is never touched.
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

use super::VolumeError;
use crate::sys::pin;

/// A target directory opened without following symlinks.
pub struct Target {
    fd: OwnedFd,
}

/// Opens `path` as a bind target: absolute, an existing directory, no symlink on the way, not
/// inside the fvol root.
pub fn open_target(path: &Path, root: &Path) -> Result<Target, VolumeError> {
    let bad = |why: String| VolumeError::InvalidTarget(format!("{}: {why}", path.display()));
    if !path.is_absolute() {
        return Err(VolumeError::InvalidTarget(format!(
            "{} is not an absolute path",
            path.display()
        )));
    }
    if path.starts_with(root) {
        return Err(bad(format!(
            "inside the fvol root {}, which is private to the daemon",
            root.display()
        )));
    }
    let fd = pin::open_dir_nofollow(path).map_err(|e| match e.raw_os_error() {
        Some(libc::ELOOP) => bad(pin::symlink_refusal(path)),
        Some(libc::ENOTDIR) => bad("not a directory".into()),
        _ => bad(e.to_string()),
    })?;
    Ok(Target { fd })
}

/// Bind-mounts `source` (the volume's mountpoint) at `target`; returns the unique id of the
/// new mount, the only one a later detach of this reference touches.
pub fn bind(source: &Path, target: &Target, target_path: &Path) -> Result<u64, VolumeError> {
    let fail = |what: &str, e: io::Error| {
        VolumeError::io(format!("{what} at {}", target_path.display()), e)
    };
    let source = pin::open_dir_nofollow(source).map_err(|e| fail("opening the mountpoint", e))?;
    let mount =
        pin::bind(source.as_fd(), target.fd.as_fd()).map_err(|e| fail("bind-mounting", e))?;
    Ok(mount.id)
}

/// The unique id of the mount at `target`, if something is mounted on exactly that
/// directory.
pub fn mount_id_of(target: &Target) -> io::Result<u64> {
    let mount = pin::mount_of(target.fd.as_fd())?;
    match mount.is_root {
        true => Ok(mount.id),
        false => Err(io::Error::new(
            io::ErrorKind::NotFound,
            "nothing is mounted there",
        )),
    }
}

/// What a detach found at a target.
#[derive(Debug, PartialEq, Eq)]
pub enum Detached {
    /// fvol's bind mount was there and is detached.
    Ours,
    /// Nothing fvol made is there (already gone, or someone else's mount, or the path now
    /// goes through a symlink); nothing was touched.
    NotOurs(String),
}

/// Detaches the bind mount fvol made at `path` for a reference, if it is still there.
/// `mount_id` is the id recorded at bind time; a reference recorded before fvol kept ids
/// detaches only an fvol FUSE mount (or a dead one) at exactly that path.
pub fn detach(path: &Path, mount_id: Option<u64>) -> Result<Detached, VolumeError> {
    let fd = match pin::open_dir_nofollow(path) {
        Ok(fd) => fd,
        Err(e) => return Ok(Detached::NotOurs(format!("cannot open it: {e}"))),
    };
    let mount = match pin::mount_of(fd.as_fd()) {
        Ok(m) => m,
        // A dead FUSE mount fails statx with ENOTCONN.
        Err(e) if e.raw_os_error() == Some(libc::ENOTCONN) && mount_id.is_none() => {
            return detach_fd(&fd, path);
        }
        Err(e) => return Ok(Detached::NotOurs(format!("cannot inspect it: {e}"))),
    };
    if !mount.is_root {
        return Ok(Detached::NotOurs("nothing is mounted there".into()));
    }
    let ours = match mount_id {
        Some(id) => mount.id == id,
        None => is_fuse(&fd),
    };
    if !ours {
        return Ok(Detached::NotOurs(
            "the mount there is not the one fvol made".into(),
        ));
    }
    detach_fd(&fd, path)
}

fn detach_fd(fd: &OwnedFd, path: &Path) -> Result<Detached, VolumeError> {
    pin::detach(fd.as_fd())
        .map_err(|e| VolumeError::io(format!("unmounting {}", path.display()), e))?;
    Ok(Detached::Ours)
}

/// A FUSE mount, live or dead (legacy references only).
fn is_fuse(fd: &OwnedFd) -> bool {
    const FUSE_SUPER_MAGIC: i64 = 0x6573_5546;
    match nix::sys::statfs::fstatfs(fd) {
        Ok(st) => st.filesystem_type().0 == FUSE_SUPER_MAGIC,
        Err(e) => e == nix::errno::Errno::ENOTCONN,
    }
}
