//! Extended attributes, through `/proc/self/fd/N` of the O_PATH descriptor.
use std::ffi::{CString, OsStr};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;

use nix::errno::Errno;
use nix::fcntl::AT_FDCWD;
use nix::sys::stat::{FchmodatFlags, Mode, fchmodat, fstat};

use super::PassthroughFs;
use crate::fs::{FsError, FsResult, Ino, XattrReply, acl};
use crate::sys::{proc_fd_path, xattr};

/// Room an xattr may take on the host (ext4 may give it a block of its own).
const XATTR_BLOCKS: u64 = 1;

fn c_name(name: &OsStr) -> FsResult<CString> {
    CString::new(name.as_bytes()).map_err(|_| FsError::Invalid)
}

fn sized(size: u32, fill: impl Fn(&mut [u8]) -> FsResult<usize>) -> FsResult<XattrReply> {
    if size == 0 {
        return Ok(XattrReply::Size(fill(&mut [])? as u32));
    }
    let mut buf = vec![0u8; size as usize];
    let n = fill(&mut buf)?;
    buf.truncate(n);
    Ok(XattrReply::Data(buf))
}

impl PassthroughFs {
    /// The host does what ext4 does with an ACL (the mode follows an access ACL), as root:
    /// setgid, which an ACL change by a caller outside the group clears (`kill_sgid`), is
    /// cleared here.
    pub(super) fn set_xattr(
        &self,
        ino: Ino,
        name: &OsStr,
        value: &[u8],
        flags: i32,
        kill_sgid: bool,
    ) -> FsResult<()> {
        let inode = self.inodes.get(ino)?;
        let fd = self.inodes.fd(&inode)?;
        let _reservation = self.quota.reserve(XATTR_BLOCKS * self.block, 0)?;
        let path = proc_fd_path(fd.as_fd());
        let result = xattr::set(&path, &c_name(name)?, value, flags);
        if result.is_ok() && kill_sgid {
            let mode = fstat(&fd)?.st_mode;
            if mode & libc::S_ISGID != 0 {
                let mode = Mode::from_bits_truncate(mode & 0o7777 & !libc::S_ISGID);
                fchmodat(
                    AT_FDCWD,
                    path.as_c_str(),
                    mode,
                    FchmodatFlags::FollowSymlink,
                )?;
            }
        }
        self.reaccount_from(&inode, fd.as_fd())?;
        Ok(result?)
    }

    /// The default ACL of host directory `dir`, if it has one (none where the host has no
    /// ACLs).
    pub(super) fn host_default_acl(&self, dir: BorrowedFd<'_>) -> FsResult<Option<Vec<u8>>> {
        let (path, name) = (proc_fd_path(dir), c_name(OsStr::new(acl::DEFAULT))?);
        // Most ACLs fit; a longer one is read again at its size.
        let mut buf = vec![0u8; 512];
        loop {
            match xattr::get(&path, &name, &mut buf) {
                Ok(n) => {
                    buf.truncate(n);
                    return Ok(Some(buf));
                }
                Err(Errno::ENODATA | Errno::EOPNOTSUPP) => return Ok(None),
                Err(Errno::ERANGE) => buf = vec![0u8; xattr::get(&path, &name, &mut [])?],
                Err(e) => return Err(e.into()),
            }
        }
    }

    pub(super) fn get_xattr(&self, ino: Ino, name: &OsStr, size: u32) -> FsResult<XattrReply> {
        let fd = self.node_fd(ino)?;
        let (path, name) = (proc_fd_path(fd.as_fd()), c_name(name)?);
        sized(size, |buf| Ok(xattr::get(&path, &name, buf)?))
    }

    pub(super) fn list_xattr(&self, ino: Ino, size: u32) -> FsResult<XattrReply> {
        let fd = self.node_fd(ino)?;
        let path = proc_fd_path(fd.as_fd());
        sized(size, |buf| Ok(xattr::list(&path, buf)?))
    }

    pub(super) fn remove_xattr(&self, ino: Ino, name: &OsStr) -> FsResult<()> {
        let inode = self.inodes.get(ino)?;
        let fd = self.inodes.fd(&inode)?;
        let path = proc_fd_path(fd.as_fd());
        let result = match xattr::remove(&path, &c_name(name)?) {
            // Removing an ACL a node does not have succeeds, as on ext4.
            Err(Errno::ENODATA) if acl::kind_of(name).is_some() => Ok(()),
            other => other,
        };
        self.reaccount_from(&inode, fd.as_fd())?;
        Ok(result?)
    }
}
