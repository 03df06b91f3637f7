//! The `local` backend: passthrough to a host directory by inode identity.
//!
//! Every node knows its host inode by `(dev, ino)` and file handle, holds an O_PATH descriptor
//! of it while in use (a bounded cache, see `inodes` and `fdcache`), and every operation is an
//! `*at()` call on such descriptors, so no absolute host path is ever built and a rename
//! elsewhere cannot redirect an operation. Quota accounting follows the host's own allocation:
//! after each change the touched inodes are re-read and the difference applied (see
//! `account`).
mod account;
mod allocated;
mod attr;
mod dir;
mod fdcache;
mod file;
mod handles;
mod inodes;
mod namespace;
mod settle;
mod writebehind;
mod xattr;

use std::ffi::OsStr;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use nix::fcntl::{OFlag, open, openat};
use nix::sys::stat::{Mode, SFlag, fstat, mkdirat, mknodat};
use nix::sys::statvfs::fstatvfs;
use nix::unistd::{symlinkat, syncfs};

pub use account::scan;
pub use fdcache::FdCache;

/// Usage of the tree at `dir`, each inode once.
pub fn scan_dir(dir: &Path) -> FsResult<UsageSnapshot> {
    scan(&open(
        dir,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?)
}
use account::{Nameless, RemovalLocks};
use attr::attr_of;
use handles::{DirHandle, FileHandle, HandleTable};
use inodes::{InodeTable, NodeFd, journal};
use settle::Unsettled;

use super::quota::{Limits, Quota};
use super::resume::{Carry, Holder, NoHolder};
use super::*;

pub struct PassthroughFs {
    inodes: InodeTable,
    files: HandleTable<FileHandle>,
    dirs: HandleTable<DirHandle>,
    quota: Quota,
    /// Serialize the removals of each inode's names (see `account::RemovalLocks`).
    removals: RemovalLocks,
    nameless: Nameless,
    /// Files whose allocation the host may still change unseen (see `settle`).
    unsettled: Unsettled,
    /// Allocation unit of the host filesystem.
    block: u64,
    /// Let the kernel do all I/O straight on the host files (only without a byte limit, as
    /// the handler then sees no writes).
    passthrough_io: bool,
    /// The handler is the only writer of the tree, so the kernel may keep file pages cached
    /// across opens.
    exclusive: bool,
    /// Keeps descriptors of open inodes without a name for the next handler.
    holder: Arc<dyn Holder>,
    /// Ranges of files known to be allocated count only in the epoch they were seen in
    /// (see `allocated`).
    allocation_epoch: AtomicU64,
}

impl PassthroughFs {
    /// Serves `root`. `usage` is where the quota starts; None rescans the tree.
    pub fn new(root: &Path, limits: Limits, usage: Option<UsageSnapshot>) -> FsResult<Self> {
        Self::with_cache(root, limits, usage, FdCache::global())
    }

    /// `new` with node descriptors held in `cache` instead of the process's.
    pub fn with_cache(
        root: &Path,
        limits: Limits,
        usage: Option<UsageSnapshot>,
        cache: Arc<FdCache>,
    ) -> FsResult<Self> {
        let fd = open(
            root,
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )?;
        let st = fstat(&fd)?;
        let block = fstatvfs(&fd)?.block_size().max(512);
        let usage = match usage {
            Some(u) => u,
            None => scan(&fd)?,
        };
        Ok(PassthroughFs {
            inodes: InodeTable::new(fd, &st, cache)?,
            files: HandleTable::default(),
            dirs: HandleTable::default(),
            quota: Quota::new(limits, usage),
            removals: RemovalLocks::default(),
            nameless: Nameless::default(),
            unsettled: Unsettled::default(),
            block,
            passthrough_io: false,
            exclusive: false,
            holder: Arc::new(NoHolder),
            allocation_epoch: AtomicU64::new(0),
        })
    }

    /// Keeps what a successor needs in `carry` from now on, and first takes over what a
    /// predecessor left there (see `fs::resume`). `rescanned`: the usage this filesystem
    /// started from was measured again, not handed over.
    pub fn with_carry(mut self, carry: &mut Carry, rescanned: bool) -> FsResult<Self> {
        self.holder = carry.holder.clone();
        let Some(journal) = carry.table("nodes", journal::FIELDS, journal::CAPACITY)? else {
            return Ok(self);
        };
        if !carry.resumed {
            self.inodes.record_into(journal);
            return Ok(self);
        }
        let held = std::mem::take(&mut carry.held).into_iter().collect();
        let resumed = self.inodes.resume(journal, rescanned, held);
        self.adopt_nameless(&resumed.nameless, rescanned);
        // What the predecessor wrote may still be written back, allocating more (see
        // `settle`): its passes that would have counted that went with it.
        for node in &resumed.counted {
            self.unsettled.written(node);
        }
        for ino in resumed.unused {
            self.holder.release(ino);
        }
        log::info!(
            "took over {} nodes the kernel knows ({} open without a name)",
            resumed.nodes,
            resumed.nameless.len()
        );
        Ok(self)
    }

    pub fn usage_now(&self) -> UsageSnapshot {
        self.quota.usage()
    }

    /// Enables kernel passthrough for every open when there is no byte limit (the FUSE
    /// adapter still checks that the kernel supports it).
    pub fn with_passthrough(mut self, on: bool) -> Self {
        self.passthrough_io = on && self.quota.limits().bytes.is_none();
        self
    }

    /// Declares the handler the only writer of the tree (not a `mount=` directory others may
    /// change), so cached file pages stay valid across opens.
    pub fn with_exclusive(mut self, exclusive: bool) -> Self {
        self.exclusive = exclusive;
        self
    }

    pub fn passthrough(&self) -> bool {
        self.passthrough_io
    }

    /// The O_PATH descriptor of node `ino`.
    fn node_fd(&self, ino: Ino) -> FsResult<NodeFd> {
        self.inodes.fd(&self.inodes.get(ino)?)
    }
}

impl VolumeFs for PassthroughFs {
    fn lookup(&self, _caller: &Caller, parent: Ino, name: &OsStr) -> FsResult<Entry> {
        Ok(self.lookup_entry(&self.node_fd(parent)?, name)?.1)
    }

    fn forget(&self, ino: Ino, nlookup: u64) {
        self.inodes.forget(ino, nlookup);
    }

    fn getattr(&self, ino: Ino, fh: Option<Fh>) -> FsResult<Attr> {
        // An open file answers for its inode without the node's descriptor.
        let open = fh.and_then(|fh| self.files.get(fh).ok());
        if let Some(handle) = open.filter(|h| h.inode.ino == ino) {
            return Ok(attr_of(ino, &fstat(handle.file.as_fd())?));
        }
        Ok(attr_of(ino, &fstat(self.node_fd(ino)?)?))
    }

    fn setattr(&self, caller: &Caller, ino: Ino, change: &SetAttr) -> FsResult<Attr> {
        self.do_setattr(caller, ino, change)
    }

    fn readlink(&self, ino: Ino) -> FsResult<Vec<u8>> {
        use std::os::unix::ffi::OsStringExt;
        Ok(nix::fcntl::readlinkat(&self.node_fd(ino)?, "")?.into_vec())
    }

    fn mknod(
        &self,
        c: &Caller,
        parent: Ino,
        name: &OsStr,
        mode: u32,
        rdev: u32,
    ) -> FsResult<Entry> {
        let kind = SFlag::from_bits_truncate(mode & libc::S_IFMT);
        let make = |p: &OwnedFd, perm| Ok(mknodat(p, name, kind, perm, rdev.into())?);
        Ok(self.create_node(c, parent, name, mode, 0, make)?.1)
    }

    fn mkdir(&self, c: &Caller, parent: Ino, name: &OsStr, mode: u32) -> FsResult<Entry> {
        let make = |p: &OwnedFd, perm| Ok(mkdirat(p, name, perm)?);
        let mode = libc::S_IFDIR | (mode & 0o7777);
        Ok(self.create_node(c, parent, name, mode, self.block, make)?.1)
    }

    fn unlink(&self, _caller: &Caller, parent: Ino, name: &OsStr) -> FsResult<()> {
        self.remove_name(parent, name, false)
    }

    fn rmdir(&self, _caller: &Caller, parent: Ino, name: &OsStr) -> FsResult<()> {
        self.remove_name(parent, name, true)
    }

    fn symlink(&self, c: &Caller, parent: Ino, name: &OsStr, target: &Path) -> FsResult<Entry> {
        let make = |p: &OwnedFd, _| Ok(symlinkat(target, p, name)?);
        let mode = libc::S_IFLNK | 0o777;
        Ok(self.create_node(c, parent, name, mode, self.block, make)?.1)
    }

    fn rename(&self, r: &Rename<'_>) -> FsResult<()> {
        self.do_rename(r)
    }

    fn link(
        &self,
        _caller: &Caller,
        ino: Ino,
        new_parent: Ino,
        new_name: &OsStr,
    ) -> FsResult<Entry> {
        self.do_link(ino, new_parent, new_name)
    }

    fn open(&self, _caller: &Caller, ino: Ino, flags: i32) -> FsResult<Opened> {
        self.open_handle(self.inodes.get(ino)?, flags)
    }

    fn create(
        &self,
        c: &Caller,
        parent: Ino,
        name: &OsStr,
        mode: u32,
        flags: i32,
    ) -> FsResult<(Entry, Opened)> {
        // Open for I/O as the caller asked (POSIX lets the creator write whatever the mode).
        let io_flags = self.host_flags(flags & !(libc::O_TRUNC | libc::O_APPEND))
            | OFlag::O_CREAT
            | OFlag::O_EXCL
            | OFlag::O_CLOEXEC;
        let make = |p: &OwnedFd, perm| {
            let fd = self
                .inodes
                .retry_emfile(|| openat(p, name, io_flags, perm))?;
            Ok(std::fs::File::from(fd))
        };
        let mode = libc::S_IFREG | (mode & 0o7777);
        let (entry, opened) = match self.create_node(c, parent, name, mode, 0, make) {
            Err(FsError::Os(nix::errno::Errno::EEXIST)) if flags & libc::O_EXCL == 0 => {
                let (inode, entry) = self.lookup_entry(&self.node_fd(parent)?, name)?;
                (entry, self.open_handle(inode, flags & !libc::O_TRUNC)?)
            }
            other => {
                let (inode, entry, file) = other?;
                self.count_open(&inode)?;
                (entry, self.handle_for(inode, file, flags))
            }
        };
        Ok((entry, opened))
    }

    fn read(&self, _ino: Ino, fh: Fh, offset: u64, size: u32) -> FsResult<Vec<u8>> {
        self.read_at(fh, offset, size)
    }

    fn write(&self, _ino: Ino, fh: Fh, offset: u64, data: &[u8], kill: bool) -> FsResult<u32> {
        if kill {
            self.drop_privileges(fh)?;
        }
        self.write_at(fh, offset, data)
    }

    fn direct_io_alignment(&self, fh: Fh) -> FsResult<u64> {
        self.direct_io_align(fh)
    }

    fn release(&self, _ino: Ino, fh: Fh) -> FsResult<()> {
        self.close_handle(fh)
    }

    fn fsync(&self, _ino: Ino, fh: Fh, datasync: bool) -> FsResult<()> {
        self.do_fsync(fh, datasync)
    }

    fn opendir(&self, _caller: &Caller, ino: Ino) -> FsResult<Fh> {
        self.open_dir(ino)
    }

    fn readdir(
        &self,
        _ino: Ino,
        fh: Fh,
        offset: u64,
        plus: bool,
        add: &mut dyn FnMut(DirEntry) -> bool,
    ) -> FsResult<()> {
        self.read_dir(fh, offset, plus, add)
    }

    fn releasedir(&self, _ino: Ino, fh: Fh) -> FsResult<()> {
        self.close_dir(fh)
    }

    fn fsyncdir(&self, _ino: Ino, fh: Fh, _datasync: bool) -> FsResult<()> {
        let handle = self.dirs.get(fh)?;
        Ok(nix::unistd::fsync(handle.dir.lock().as_fd())?)
    }

    fn statfs(&self) -> FsResult<StatFs> {
        let host = fstatvfs(self.node_fd(ROOT_INO)?)?;
        let used = self.quota.usage();
        let limits = self.quota.limits();
        let (blocks, bfree, bavail) = match limits.bytes {
            Some(limit) => {
                let free = limit.saturating_sub(used.bytes) / self.block;
                (limit / self.block, free, free)
            }
            None => {
                let scale = |n: u64| n * host.fragment_size() / self.block;
                (
                    scale(host.blocks()),
                    scale(host.blocks_free()),
                    scale(host.blocks_available()),
                )
            }
        };
        let (files, ffree) = match limits.inodes {
            Some(limit) => (limit, limit.saturating_sub(used.inodes)),
            None => (host.files(), host.files_free()),
        };
        Ok(StatFs {
            blocks,
            bfree,
            bavail,
            files,
            ffree,
            bsize: self.block as u32,
            namelen: host.name_max() as u32,
            frsize: self.block as u32,
        })
    }

    fn setxattr(
        &self,
        ino: Ino,
        name: &OsStr,
        value: &[u8],
        flags: i32,
        kill_sgid: bool,
    ) -> FsResult<()> {
        self.set_xattr(ino, name, value, flags, kill_sgid)
    }

    fn getxattr(&self, ino: Ino, name: &OsStr, size: u32) -> FsResult<XattrReply> {
        self.get_xattr(ino, name, size)
    }

    fn listxattr(&self, ino: Ino, size: u32) -> FsResult<XattrReply> {
        self.list_xattr(ino, size)
    }

    fn removexattr(&self, ino: Ino, name: &OsStr) -> FsResult<()> {
        self.remove_xattr(ino, name)
    }

    fn access(&self, _caller: &Caller, ino: Ino, _mask: i32) -> FsResult<()> {
        // Mounted with default_permissions: the kernel checks modes before asking.
        self.inodes.get(ino).map(drop)
    }

    fn fallocate(&self, _ino: Ino, fh: Fh, offset: u64, length: u64, mode: i32) -> FsResult<()> {
        self.do_fallocate(fh, offset, length, mode)
    }

    fn lseek(&self, _ino: Ino, fh: Fh, offset: i64, whence: i32) -> FsResult<i64> {
        self.do_lseek(fh, offset, whence)
    }

    fn copy_file_range(&self, req: &CopyRange) -> FsResult<u32> {
        self.do_copy_file_range(req)
    }

    fn usage(&self) -> UsageSnapshot {
        self.quota.usage()
    }

    fn limits(&self) -> crate::fs::quota::Limits {
        self.quota.limits()
    }

    fn resize(&self, to: &crate::fs::quota::Resize) -> Result<(), crate::fs::quota::ResizeError> {
        if self.passthrough_io && to.limits.bytes.is_some() {
            return Err(crate::fs::quota::ResizeError::PassthroughServed);
        }
        self.quota
            .set_limits(to.limits)
            .map_err(crate::fs::quota::ResizeError::BelowUsage)
    }

    fn releases(&self) -> u64 {
        self.quota.releases()
    }

    fn wait_for_release(&self, seen: u64, deadline: std::time::Instant) -> bool {
        self.quota.wait_for_release(seen, deadline)
    }

    fn usage_at_rest(&self) -> UsageSnapshot {
        self.usage_without_nameless()
    }

    fn health(&self) -> crate::fs::Health {
        crate::fs::Health::default()
    }

    fn handles_restored(&self) {}

    fn host_copied(&self) {
        self.allocation_taken_from_all();
    }

    /// Everything is on the host already.
    fn persist_for_successor(&self) -> FsResult<()> {
        Ok(())
    }

    /// The data is a host directory, copied (or reflinked) from there.
    fn capture(&self) -> FsResult<Option<Box<dyn crate::fs::tree_copy::Capture>>> {
        Ok(None)
    }

    fn restore_handle(&self, fh: Fh, ino: Ino, flags: i32, dir: bool) -> FsResult<()> {
        match dir {
            true => self.restore_dir(fh, ino),
            false => self.restore_file(fh, ino, flags),
        }
    }

    fn sync_all(&self) -> FsResult<()> {
        // syncfs needs a real descriptor: on the root node's O_PATH one it fails with EBADF.
        let root = self.inodes.get(ROOT_INO)?;
        let root = self.reopen(&root, OFlag::O_RDONLY | OFlag::O_DIRECTORY)?;
        syncfs(root.as_fd())?;
        // Written back: what the host allocated for it can be counted now.
        self.settle_all();
        Ok(())
    }

    fn settle(&self) {
        PassthroughFs::settle(self);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sync_all_syncs() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("f"), b"data").unwrap();
        let limits = Limits {
            bytes: Some(1 << 20),
            inodes: None,
        };
        let fs = PassthroughFs::new(dir.path(), limits, None).unwrap();
        fs.sync_all().unwrap();
    }
}
