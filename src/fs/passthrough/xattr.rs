//! Extended attributes, through `/proc/self/fd/N` of the O_PATH descriptor.
use std::ffi::{CString, OsStr};
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;

use super::PassthroughFs;
use crate::fs::{FsError, FsResult, Ino, XattrReply};
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
    pub(super) fn set_xattr(
        &self,
        ino: Ino,
        name: &OsStr,
        value: &[u8],
        flags: i32,
    ) -> FsResult<()> {
        let inode = self.inodes.get(ino)?;
        let fd = self.inodes.fd(&inode)?;
        let _reservation = self.quota.reserve(XATTR_BLOCKS * self.block, 0)?;
        let path = proc_fd_path(fd.as_fd());
        let result = xattr::set(&path, &c_name(name)?, value, flags);
        self.reaccount_from(&inode, fd.as_fd())?;
        Ok(result?)
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
        let result = xattr::remove(&path, &c_name(name)?);
        self.reaccount_from(&inode, fd.as_fd())?;
        Ok(result?)
    }
}
