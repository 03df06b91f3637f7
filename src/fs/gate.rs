//! A gate in front of a volume's filesystem that can hold every change for an instant: a
//! snapshot closes it (`freeze`), waits for the changes in flight to finish, copies, and opens
//! it again. Reads pass; each change takes the gate shared (one uncontended atomic pair).
//! Changes waiting at a closed gate hold no lock of the core, so a copy made from the core
//! itself (never through the kernel mount, whose request threads the waiting changes occupy)
//! cannot deadlock.
use std::ffi::OsStr;
use std::path::Path;
use std::sync::Arc;

use parking_lot::{RwLock, RwLockWriteGuard};

use super::quota::{Limits, Resize, ResizeError};
use super::{
    Attr, Caller, CopyRange, DirEntry, Entry, Fh, FsResult, Health, Ino, Opened, Rename, SetAttr,
    StatFs, UsageSnapshot, VolumeFs, XattrReply,
};

pub struct GatedFs {
    inner: Arc<dyn VolumeFs>,
    gate: RwLock<()>,
    /// Files are handed to the kernel (FUSE passthrough): their writes never pass the gate.
    passthrough: bool,
}

/// While held, no change reaches the filesystem (and none is half done).
pub struct Frozen<'a> {
    _closed: RwLockWriteGuard<'a, ()>,
}

impl GatedFs {
    pub fn new(inner: Arc<dyn VolumeFs>, passthrough: bool) -> GatedFs {
        GatedFs {
            inner,
            gate: RwLock::new(()),
            passthrough,
        }
    }

    /// Whether the gate holds every change (not so under FUSE passthrough).
    pub fn holds_every_write(&self) -> bool {
        !self.passthrough
    }

    /// The filesystem behind the gate, for a copy made while frozen.
    pub fn inner(&self) -> &Arc<dyn VolumeFs> {
        &self.inner
    }

    /// Closes the gate once the changes in flight are done; new ones wait until it opens.
    pub fn freeze(&self) -> Frozen<'_> {
        Frozen {
            _closed: self.gate.write(),
        }
    }
}

/// `open` changes the file only with O_TRUNC (the kernel may pass it with atomic_o_trunc).
fn open_changes(flags: i32) -> bool {
    flags & libc::O_TRUNC != 0
}

impl VolumeFs for GatedFs {
    fn lookup(&self, caller: &Caller, parent: Ino, name: &OsStr) -> FsResult<Entry> {
        self.inner.lookup(caller, parent, name)
    }
    fn forget(&self, ino: Ino, nlookup: u64) {
        self.inner.forget(ino, nlookup)
    }
    fn getattr(&self, ino: Ino, fh: Option<Fh>) -> FsResult<Attr> {
        self.inner.getattr(ino, fh)
    }
    fn setattr(&self, caller: &Caller, ino: Ino, change: &SetAttr) -> FsResult<Attr> {
        let _open = self.gate.read();
        self.inner.setattr(caller, ino, change)
    }
    fn readlink(&self, ino: Ino) -> FsResult<Vec<u8>> {
        self.inner.readlink(ino)
    }
    fn mknod(
        &self,
        caller: &Caller,
        parent: Ino,
        name: &OsStr,
        mode: u32,
        rdev: u32,
    ) -> FsResult<Entry> {
        let _open = self.gate.read();
        self.inner.mknod(caller, parent, name, mode, rdev)
    }
    fn mkdir(&self, caller: &Caller, parent: Ino, name: &OsStr, mode: u32) -> FsResult<Entry> {
        let _open = self.gate.read();
        self.inner.mkdir(caller, parent, name, mode)
    }
    fn unlink(&self, caller: &Caller, parent: Ino, name: &OsStr) -> FsResult<()> {
        let _open = self.gate.read();
        self.inner.unlink(caller, parent, name)
    }
    fn rmdir(&self, caller: &Caller, parent: Ino, name: &OsStr) -> FsResult<()> {
        let _open = self.gate.read();
        self.inner.rmdir(caller, parent, name)
    }
    fn symlink(
        &self,
        caller: &Caller,
        parent: Ino,
        name: &OsStr,
        target: &Path,
    ) -> FsResult<Entry> {
        let _open = self.gate.read();
        self.inner.symlink(caller, parent, name, target)
    }
    fn rename(&self, req: &Rename<'_>) -> FsResult<()> {
        let _open = self.gate.read();
        self.inner.rename(req)
    }
    fn link(
        &self,
        caller: &Caller,
        ino: Ino,
        new_parent: Ino,
        new_name: &OsStr,
    ) -> FsResult<Entry> {
        let _open = self.gate.read();
        self.inner.link(caller, ino, new_parent, new_name)
    }
    fn open(&self, caller: &Caller, ino: Ino, flags: i32) -> FsResult<Opened> {
        let _open = open_changes(flags).then(|| self.gate.read());
        self.inner.open(caller, ino, flags)
    }
    fn create(
        &self,
        caller: &Caller,
        parent: Ino,
        name: &OsStr,
        mode: u32,
        flags: i32,
    ) -> FsResult<(Entry, Opened)> {
        let _open = self.gate.read();
        self.inner.create(caller, parent, name, mode, flags)
    }
    fn read(&self, ino: Ino, fh: Fh, offset: u64, size: u32) -> FsResult<Vec<u8>> {
        self.inner.read(ino, fh, offset, size)
    }
    fn read_to(
        &self,
        ino: Ino,
        fh: Fh,
        offset: u64,
        size: u32,
        send: &mut dyn FnMut(&[u8]),
    ) -> FsResult<()> {
        self.inner.read_to(ino, fh, offset, size, send)
    }
    fn write(
        &self,
        ino: Ino,
        fh: Fh,
        offset: u64,
        data: &[u8],
        kill_suidgid: bool,
    ) -> FsResult<u32> {
        let _open = self.gate.read();
        self.inner.write(ino, fh, offset, data, kill_suidgid)
    }
    fn direct_io_alignment(&self, fh: Fh) -> FsResult<u64> {
        self.inner.direct_io_alignment(fh)
    }
    fn release(&self, ino: Ino, fh: Fh) -> FsResult<()> {
        self.inner.release(ino, fh)
    }
    fn fsync(&self, ino: Ino, fh: Fh, datasync: bool) -> FsResult<()> {
        self.inner.fsync(ino, fh, datasync)
    }
    fn opendir(&self, caller: &Caller, ino: Ino) -> FsResult<Fh> {
        self.inner.opendir(caller, ino)
    }
    fn readdir(
        &self,
        ino: Ino,
        fh: Fh,
        offset: u64,
        plus: bool,
        add: &mut dyn FnMut(DirEntry) -> bool,
    ) -> FsResult<()> {
        self.inner.readdir(ino, fh, offset, plus, add)
    }
    fn releasedir(&self, ino: Ino, fh: Fh) -> FsResult<()> {
        self.inner.releasedir(ino, fh)
    }
    fn fsyncdir(&self, ino: Ino, fh: Fh, datasync: bool) -> FsResult<()> {
        self.inner.fsyncdir(ino, fh, datasync)
    }
    fn statfs(&self) -> FsResult<StatFs> {
        self.inner.statfs()
    }
    fn setxattr(
        &self,
        ino: Ino,
        name: &OsStr,
        value: &[u8],
        flags: i32,
        kill_sgid: bool,
    ) -> FsResult<()> {
        let _open = self.gate.read();
        self.inner.setxattr(ino, name, value, flags, kill_sgid)
    }
    fn getxattr(&self, ino: Ino, name: &OsStr, size: u32) -> FsResult<XattrReply> {
        self.inner.getxattr(ino, name, size)
    }
    fn listxattr(&self, ino: Ino, size: u32) -> FsResult<XattrReply> {
        self.inner.listxattr(ino, size)
    }
    fn removexattr(&self, ino: Ino, name: &OsStr) -> FsResult<()> {
        let _open = self.gate.read();
        self.inner.removexattr(ino, name)
    }
    fn access(&self, caller: &Caller, ino: Ino, mask: i32) -> FsResult<()> {
        self.inner.access(caller, ino, mask)
    }
    fn fallocate(&self, ino: Ino, fh: Fh, offset: u64, length: u64, mode: i32) -> FsResult<()> {
        let _open = self.gate.read();
        self.inner.fallocate(ino, fh, offset, length, mode)
    }
    fn lseek(&self, ino: Ino, fh: Fh, offset: i64, whence: i32) -> FsResult<i64> {
        self.inner.lseek(ino, fh, offset, whence)
    }
    fn copy_file_range(&self, req: &CopyRange) -> FsResult<u32> {
        let _open = self.gate.read();
        self.inner.copy_file_range(req)
    }
    fn usage(&self) -> UsageSnapshot {
        self.inner.usage()
    }
    fn limits(&self) -> Limits {
        self.inner.limits()
    }
    fn resize(&self, to: &Resize) -> Result<(), ResizeError> {
        self.inner.resize(to)
    }
    fn usage_at_rest(&self) -> UsageSnapshot {
        self.inner.usage_at_rest()
    }
    fn sync_all(&self) -> FsResult<()> {
        self.inner.sync_all()
    }
    /// Accounting only (no change to the tree): not held by a closed gate.
    fn settle(&self) {
        self.inner.settle()
    }
    fn health(&self) -> Health {
        self.inner.health()
    }
    fn releases(&self) -> u64 {
        self.inner.releases()
    }
    fn wait_for_release(&self, seen: u64, deadline: std::time::Instant) -> bool {
        self.inner.wait_for_release(seen, deadline)
    }
    /// Before the session serves (a resume): nothing to hold.
    fn restore_handle(&self, fh: Fh, ino: Ino, flags: i32, dir: bool) -> FsResult<()> {
        self.inner.restore_handle(fh, ino, flags, dir)
    }
    fn handles_restored(&self) {
        self.inner.handles_restored()
    }
    fn host_copied(&self) {
        self.inner.host_copied()
    }
    fn persist_for_successor(&self) -> FsResult<()> {
        self.inner.persist_for_successor()
    }
    /// Made while the gate is closed (`freeze`).
    fn capture(&self) -> FsResult<Option<Box<dyn super::tree_copy::Capture>>> {
        self.inner.capture()
    }
}
