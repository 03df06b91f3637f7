//! What the node service does on the host itself: the target directories it creates and
//! removes, and the read-only remount of a publish. Every path is opened without following a
//! symlink in any component (`sys::pin`), as the daemon opens bind targets: kubelet's
//! directories lie under pod directories whose contents a container may control.
use std::io;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::mount::MsFlags;
use nix::sys::stat::Mode;
use nix::unistd::UnlinkatFlags;

use crate::sys::pin;

/// Why a path cannot be used.
fn bad(path: &Path, why: impl std::fmt::Display) -> String {
    format!("{}: {why}", path.display())
}

fn split(path: &Path) -> Result<(&Path, &std::ffi::OsStr), String> {
    if !path.is_absolute() {
        return Err(bad(path, "not an absolute path"));
    }
    match (path.parent(), path.file_name()) {
        (Some(parent), Some(name)) => Ok((parent, name)),
        _ => Err(bad(path, "has no parent directory")),
    }
}

fn open_parent(parent: &Path, path: &Path) -> Result<std::os::fd::OwnedFd, String> {
    pin::open_dir_for_reading_nofollow(parent).map_err(|e| match e.raw_os_error() {
        Some(libc::ELOOP) => bad(path, pin::symlink_refusal(parent)),
        _ => bad(path, format!("cannot open its parent directory: {e}")),
    })
}

/// Creates directory `path` (mode 0750) if it is not there; its parent must exist. True when
/// it was created.
pub fn ensure_dir(path: &Path) -> Result<bool, String> {
    let (parent, name) = split(path)?;
    let parent_fd = open_parent(parent, path)?;
    let created =
        match nix::sys::stat::mkdirat(parent_fd.as_fd(), name, Mode::from_bits_truncate(0o750)) {
            Ok(()) => true,
            Err(Errno::EEXIST) => false,
            Err(e) => return Err(bad(path, format!("cannot create it: {e}"))),
        };
    pin::open_dir_nofollow(path).map_err(|e| match e.raw_os_error() {
        Some(libc::ELOOP) => bad(path, pin::symlink_refusal(path)),
        Some(libc::ENOTDIR) => bad(path, "not a directory"),
        _ => bad(path, e),
    })?;
    Ok(created)
}

/// Removes directory `path` if it is there, empty and nothing is mounted on it.
pub fn remove_dir(path: &Path) -> Result<(), String> {
    let (parent, name) = split(path)?;
    let parent_fd = match pin::open_dir_for_reading_nofollow(parent) {
        Ok(fd) => fd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(bad(path, format!("cannot open its parent directory: {e}"))),
    };
    match nix::unistd::unlinkat(parent_fd.as_fd(), name, UnlinkatFlags::RemoveDir) {
        Ok(()) | Err(Errno::ENOENT) => Ok(()),
        Err(Errno::EBUSY) => Err(bad(path, "something is still mounted there")),
        Err(e) => Err(bad(path, format!("cannot remove it: {e}"))),
    }
}

/// Makes the mount on `path` (its root) read-only: MS_REMOUNT|MS_BIND|MS_RDONLY on that mount
/// alone, kept nosuid and nodev like every fvol mount.
pub fn remount_read_only(path: &Path) -> Result<(), String> {
    let fd = pin::open_dir_nofollow(path).map_err(|e| bad(path, e))?;
    let mount = pin::mount_of(fd.as_fd()).map_err(|e| bad(path, e))?;
    if !mount.is_root {
        return Err(bad(path, "nothing is mounted there"));
    }
    let proc_path: PathBuf = crate::sys::proc_fd_path_buf(fd.as_fd());
    let flags = MsFlags::MS_REMOUNT
        | MsFlags::MS_BIND
        | MsFlags::MS_RDONLY
        | MsFlags::MS_NOSUID
        | MsFlags::MS_NODEV;
    nix::mount::mount(None::<&str>, &proc_path, None::<&str>, flags, None::<&str>)
        .map_err(|e| bad(path, format!("remounting it read-only: {e}")))
}

/// Whether the mount on `path` is read-only; None when nothing is mounted exactly there.
pub fn mounted_read_only(path: &Path) -> Option<bool> {
    let fd = pin::open_dir_nofollow(path).ok()?;
    let mount = pin::mount_of(fd.as_fd()).ok()?;
    if !mount.is_root {
        return None;
    }
    let st = nix::sys::statvfs::fstatvfs(&fd).ok()?;
    Some(st.flags().contains(nix::sys::statvfs::FsFlags::ST_RDONLY))
}

/// Bytes free for new data on the filesystem holding `path`, and its inodes free.
pub fn free_space(path: &Path) -> io::Result<(u64, u64)> {
    let st = nix::sys::statvfs::statvfs(path)?;
    Ok((
        st.blocks_available() * st.fragment_size(),
        st.files_available(),
    ))
}

/// The memory the kernel says can be given out without swapping (`MemAvailable`), in bytes.
pub fn memory_available() -> io::Result<u64> {
    let text = std::fs::read_to_string("/proc/meminfo")?;
    text.lines()
        .find_map(|line| {
            let rest = line.strip_prefix("MemAvailable:")?;
            let kib: u64 = rest.trim().trim_end_matches("kB").trim().parse().ok()?;
            Some(kib * 1024)
        })
        .ok_or_else(|| io::Error::other("/proc/meminfo has no MemAvailable line"))
}
