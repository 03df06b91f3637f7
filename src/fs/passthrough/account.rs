//! Keeping the quota's usage equal to the sum of allocated bytes of the volume's inodes, each
//! counted once (as `du` does), and the inode count equal to the number of inodes.
use std::ffi::{OsStr, OsString};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;

use nix::errno::Errno;
use nix::fcntl::AtFlags;
use nix::fcntl::{OFlag, openat};
use nix::sys::stat::{FileStat, Mode, fstat, fstatat};
use std::collections::HashSet;

use super::PassthroughFs;
use super::inodes::{HostKey, Inode, allocated_bytes};
use crate::fs::{FsResult, UsageSnapshot};
use crate::sys::dirent;

impl PassthroughFs {
    /// Re-reads an inode's allocation and applies the difference to the quota. Returns the
    /// fresh stat so callers need no second one.
    pub(super) fn reaccount(&self, inode: &Arc<Inode>) -> FsResult<FileStat> {
        self.reaccount_from(inode, self.inodes.fd(inode)?.as_fd())
    }

    /// `reaccount` through `fd`, any descriptor of the inode (its node's, or an open file).
    pub(super) fn reaccount_from(&self, inode: &Inode, fd: BorrowedFd<'_>) -> FsResult<FileStat> {
        let mut accounted = inode.accounted.lock();
        let st = fstat(fd)?;
        if let Some(bytes) = accounted.as_mut() {
            let now = allocated_bytes(&st);
            self.quota.adjust(now as i64 - *bytes as i64, 0);
            *bytes = now;
        }
        Ok(st)
    }

    /// Counts a newly created inode (its bytes and one inode).
    pub(super) fn account_new(&self, inode: &Inode) {
        if let Some(bytes) = *inode.accounted.lock() {
            self.quota.adjust(bytes as i64, 1);
        }
    }

    /// Counts the whiteout a rename left at `name` in `parent`: a new inode that no node
    /// stands for yet (its removal is uncounted like any inode without a node). The inode is
    /// counted even if a concurrent unlink already took the name (and uncounted it).
    pub(super) fn account_whiteout(&self, parent: BorrowedFd<'_>, name: &OsStr) {
        let st = fstatat(parent, name, AtFlags::AT_SYMLINK_NOFOLLOW);
        let bytes = st.map_or(0, |st| allocated_bytes(&st));
        self.quota.adjust(bytes as i64, 1);
    }

    /// The last name of a host inode (stat `st`, node `node` if the table has one) is gone.
    /// Its space comes back now, or at the last close if it is still open.
    pub(super) fn account_unlinked(&self, node: Option<Arc<Inode>>, st: &FileStat) {
        let Some(inode) = node else {
            self.quota.adjust(-(allocated_bytes(st) as i64), -1);
            return;
        };
        inode.mark_removed();
        if inode.open_files.load(std::sync::atomic::Ordering::Acquire) == 0 {
            self.uncount(&inode);
        }
    }

    /// Called after the last handle of `inode` is closed; `file` is that handle's descriptor,
    /// still open (a descriptor the node would reopen from its handle may be gone by now).
    pub(super) fn account_last_close(&self, inode: &Inode, file: BorrowedFd<'_>) {
        if fstat(file).is_ok_and(|st| st.st_nlink == 0) {
            self.uncount(inode);
        }
    }

    fn uncount(&self, inode: &Inode) {
        if let Some(bytes) = inode.accounted.lock().take() {
            self.quota.adjust(-(bytes as i64), -1);
        }
    }
}

/// Walks the tree under `root` and adds up allocated bytes and inodes, each host inode once.
/// Directories wait their turn as names in an open parent, so the descriptors held at once
/// are bounded by the depth of the tree, not by its number of directories.
pub fn scan(root: &OwnedFd) -> FsResult<UsageSnapshot> {
    let mut seen: HashSet<HostKey> = HashSet::new();
    let mut total = UsageSnapshot::default();
    let root_st = fstat(root)?;
    seen.insert(Inode::key_of(&root_st));
    total.bytes += allocated_bytes(&root_st);
    total.inodes += 1;
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let mut stack: Vec<(Arc<OwnedFd>, OsString)> = vec![(Arc::new(root.try_clone()?), ".".into())];
    let mut buf = vec![0u8; 64 * 1024];
    while let Some((parent, name)) = stack.pop() {
        let dir = match openat(&parent, name.as_os_str(), flags, Mode::empty()) {
            Ok(dir) => dir,
            Err(Errno::ENOENT) => continue,
            Err(e) => return Err(e.into()),
        };
        drop(parent);
        let dir = Arc::new(dir);
        loop {
            let n = dirent::getdents64(dir.as_fd(), &mut buf)?;
            if n == 0 {
                break;
            }
            for entry in dirent::parse(&buf[..n]) {
                if entry.name == "." || entry.name == ".." {
                    continue;
                }
                let st = match fstatat(&dir, entry.name, AtFlags::AT_SYMLINK_NOFOLLOW) {
                    Ok(st) => st,
                    Err(Errno::ENOENT) => continue,
                    Err(e) => return Err(e.into()),
                };
                if !seen.insert(Inode::key_of(&st)) {
                    continue;
                }
                total.bytes += allocated_bytes(&st);
                total.inodes += 1;
                if st.st_mode & libc::S_IFMT == libc::S_IFDIR {
                    stack.push((dir.clone(), entry.name.to_os_string()));
                }
            }
        }
    }
    Ok(total)
}
