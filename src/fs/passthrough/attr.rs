//! Host stat to `Attr`, and setattr.
use std::fs::File;
use std::os::fd::AsFd;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use nix::fcntl::AtFlags;
use nix::fcntl::{AT_FDCWD, OFlag};
use nix::sys::stat::{FchmodatFlags, FileStat, Mode, UtimensatFlags, fchmod, fchmodat, utimensat};
use nix::sys::time::TimeSpec;
use nix::unistd::{Gid, Uid, fchownat};

use super::PassthroughFs;
use super::inodes::Inode;
use crate::fs::{
    Attr, Caller, Fh, FileKind, FsError, FsResult, Ino, SetAttr, TimeSet, mode_without_privileges,
};
use crate::sys::proc_fd_path;

pub fn attr_of(ino: Ino, st: &FileStat) -> Attr {
    Attr {
        ino,
        size: st.st_size as u64,
        blocks: st.st_blocks as u64,
        atime: system_time(st.st_atime, st.st_atime_nsec),
        mtime: system_time(st.st_mtime, st.st_mtime_nsec),
        ctime: system_time(st.st_ctime, st.st_ctime_nsec),
        kind: FileKind::from_mode(st.st_mode).unwrap_or(FileKind::File),
        perm: (st.st_mode & 0o7777) as u16,
        nlink: st.st_nlink as u32,
        uid: st.st_uid,
        gid: st.st_gid,
        rdev: st.st_rdev as u32,
        blksize: st.st_blksize as u32,
    }
}

fn system_time(secs: i64, nsecs: i64) -> SystemTime {
    let nanos = Duration::from_nanos(nsecs as u64);
    if secs >= 0 {
        UNIX_EPOCH + Duration::from_secs(secs as u64) + nanos
    } else {
        UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs()) + nanos
    }
}

fn timespec(t: Option<TimeSet>) -> TimeSpec {
    match t {
        None => TimeSpec::UTIME_OMIT,
        Some(TimeSet::Now) => TimeSpec::UTIME_NOW,
        Some(TimeSet::At(t)) => match t.duration_since(UNIX_EPOCH) {
            Ok(d) => TimeSpec::new(d.as_secs() as i64, d.subsec_nanos() as i64),
            Err(e) => {
                let d = e.duration();
                let (s, n) = (d.as_secs() as i64, d.subsec_nanos() as i64);
                if n == 0 {
                    TimeSpec::new(-s, 0)
                } else {
                    TimeSpec::new(-s - 1, 1_000_000_000 - n)
                }
            }
        },
    }
}

impl PassthroughFs {
    pub(super) fn do_setattr(&self, caller: &Caller, ino: Ino, change: &SetAttr) -> FsResult<Attr> {
        let inode = self.inodes.get(ino)?;
        let fd = self.inodes.fd(&inode)?;
        let handle = change.fh.and_then(|fh| self.files.get(fh).ok());
        let path = proc_fd_path(fd.as_fd());
        if let Some(mode) = change.mode {
            let mode = Mode::from_bits_truncate(mode & 0o7777);
            match &handle {
                Some(h) => fchmod(h.file.as_fd(), mode)?,
                None => fchmodat(
                    AT_FDCWD,
                    path.as_c_str(),
                    mode,
                    FchmodatFlags::FollowSymlink,
                )?,
            }
        }
        if change.uid.is_some() || change.gid.is_some() {
            fchownat(
                &fd,
                "",
                change.uid.map(Uid::from_raw),
                change.gid.map(Gid::from_raw),
                AtFlags::AT_EMPTY_PATH | AtFlags::AT_SYMLINK_NOFOLLOW,
            )?;
        }
        if let Some(size) = change.size {
            self.truncate(&inode, handle.as_ref().map(|h| &h.file), size)?;
            // The host does not drop privileges for the handler (root); the caller may not be.
            if caller.uid != 0 && change.mode.is_none() {
                self.drop_privileges_of(&fd)?;
            }
        }
        if change.atime.is_some() || change.mtime.is_some() {
            let (atime, mtime) = (timespec(change.atime), timespec(change.mtime));
            utimensat(
                AT_FDCWD,
                path.as_c_str(),
                &atime,
                &mtime,
                UtimensatFlags::FollowSymlink,
            )?;
        }
        let st = nix::sys::stat::fstat(&fd)?;
        Ok(attr_of(ino, &st))
    }

    /// Clears setuid and setgid as a write by an unprivileged caller must.
    pub(super) fn drop_privileges(&self, fh: Fh) -> FsResult<()> {
        let handle = self.files.get(fh)?;
        self.drop_privileges_of(handle.file.as_ref())
    }

    /// Through `fd`, any descriptor of the inode (/proc/self/fd reaches the inode itself).
    fn drop_privileges_of(&self, fd: &impl AsFd) -> FsResult<()> {
        let perm = nix::sys::stat::fstat(fd)?.st_mode & 0o7777;
        let wanted = mode_without_privileges(perm);
        if wanted != perm {
            let path = proc_fd_path(fd.as_fd());
            let mode = Mode::from_bits_truncate(wanted);
            fchmodat(
                AT_FDCWD,
                path.as_c_str(),
                mode,
                FchmodatFlags::FollowSymlink,
            )?;
        }
        Ok(())
    }

    /// Shrinking gives space back. Extending makes a hole, which allocates nothing on the
    /// host (as on ext4 and tmpfs), so it needs no reservation.
    fn truncate(&self, inode: &Arc<Inode>, file: Option<&Arc<File>>, size: u64) -> FsResult<()> {
        let result = match file {
            Some(f) => f.set_len(size).map_err(FsError::from),
            None => self
                .reopen(inode, OFlag::O_WRONLY)
                .and_then(|f| Ok(f.set_len(size)?)),
        };
        self.allocation_taken(inode);
        result?;
        self.reaccount(inode)?;
        Ok(())
    }
}
