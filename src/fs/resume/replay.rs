//! `ResumableFs`: any core, plus what a successor needs about its open handles, plus answers
//! to requests the kernel sends again after a restart.
//!
//! A request the dead handler read but did not answer comes again (`with_resent`). Reads,
//! writes (at their offsets), attribute changes and opens give the same result run twice. The
//! others may have been carried out already, so their "already done" errors mean success when
//! what is there is what the first run made: mkdir, mknod, symlink and link find their entry
//! (EEXIST), an exclusive create finds an empty file of the caller's (opened instead), unlink,
//! rmdir and a rename find their name gone (ENOENT) with the rename's target there, a release
//! finds its handle gone, setxattr with XATTR_CREATE finds its value set. A rename exchange
//! or a collapsing fallocate run twice cannot be told apart from one run: see
//! docs/architecture.md.
//!
//! Every method of `VolumeFs` is forwarded here, defaulted ones included: a method left out
//! would silently take the default instead of the core's.
use std::collections::HashMap;
use std::ffi::OsStr;
use std::path::Path;
use std::sync::Arc;

use nix::errno::Errno;
use parking_lot::Mutex;

use super::{Slot, Table, resent, stall_point};
use crate::fs::{
    Caller, CopyRange, DirEntry, Entry, Fh, FileKind, FsError, FsResult, Ino, Opened, Rename,
    SetAttr, StatFs, UsageSnapshot, VolumeFs, XattrReply,
};

/// Fields of a handle record.
const KIND: usize = 0;
const FH: usize = 1;
const INO: usize = 2;
const FLAGS: usize = 3;
pub const HANDLE_FIELDS: usize = 4;
/// Handles recorded at most: more open at once than this and a restart cannot restore them
/// all (the table then says so).
pub const HANDLE_CAPACITY: u32 = 1 << 21;

const FILE: u64 = 1;
const DIR: u64 = 2;

pub struct ResumableFs {
    inner: Arc<dyn VolumeFs>,
    /// None when the volume does not outlive its handler.
    handles: Option<Table>,
    slots: Mutex<HashMap<(u64, Fh), Slot>>,
}

fn is_enoent(e: &FsError) -> bool {
    matches!(e, FsError::NotFound | FsError::Os(Errno::ENOENT))
}

fn is_eexist(e: &FsError) -> bool {
    matches!(e, FsError::Os(Errno::EEXIST))
}

impl ResumableFs {
    pub fn new(inner: Arc<dyn VolumeFs>, handles: Option<Table>) -> ResumableFs {
        ResumableFs {
            inner,
            handles,
            slots: Mutex::new(HashMap::new()),
        }
    }

    /// Re-creates in the core the handles a predecessor recorded. Returns how many were
    /// restored and how many could not be (their files are gone; using them fails).
    pub fn restore_handles(&self) -> (usize, usize) {
        let Some(table) = &self.handles else {
            self.inner.handles_restored();
            return (0, 0);
        };
        let (mut restored, mut lost) = (0, 0);
        let mut slots = self.slots.lock();
        for (slot, f) in table.records() {
            let dir = f[KIND] == DIR;
            match self
                .inner
                .restore_handle(f[FH], f[INO], f[FLAGS] as i32, dir)
            {
                Ok(()) => {
                    slots.insert((f[KIND], f[FH]), slot);
                    restored += 1;
                }
                Err(e) => {
                    log::warn!(
                        "cannot restore open {} handle {} of node {}: {e}",
                        if dir { "directory" } else { "file" },
                        f[FH],
                        f[INO]
                    );
                    table.remove(slot);
                    lost += 1;
                }
            }
        }
        drop(slots);
        self.inner.handles_restored();
        (restored, lost)
    }

    /// Whether a handle could not be recorded at some time (so a restart cannot restore all).
    pub fn incomplete(&self) -> bool {
        self.handles.as_ref().is_some_and(Table::overflowed)
    }

    fn record(&self, kind: u64, fh: Fh, ino: Ino, flags: i32) {
        let Some(table) = &self.handles else { return };
        if let Some(slot) = table.insert(&[kind, fh, ino, flags as u32 as u64]) {
            self.slots.lock().insert((kind, fh), slot);
        }
    }

    fn unrecord(&self, kind: u64, fh: Fh) {
        let Some(table) = &self.handles else { return };
        if let Some(slot) = self.slots.lock().remove(&(kind, fh)) {
            table.remove(slot);
        }
    }

    /// Looks `name` up for a replayed request and keeps the entry (with the lookup reference
    /// the request's reply gives the kernel) if `made` says it is what the request makes.
    fn existing(
        &self,
        caller: &Caller,
        parent: Ino,
        name: &OsStr,
        made: impl FnOnce(&Entry) -> bool,
    ) -> Option<Entry> {
        let entry = self.inner.lookup(caller, parent, name).ok()?;
        if made(&entry) {
            return Some(entry);
        }
        self.inner.forget(entry.attr.ino, 1);
        None
    }

    /// `result`, or for a replayed request whose first run made the entry, that entry.
    fn made_or(
        &self,
        result: FsResult<Entry>,
        caller: &Caller,
        parent: Ino,
        name: &OsStr,
        made: impl FnOnce(&Entry) -> bool,
    ) -> FsResult<Entry> {
        match result {
            Err(e) if is_eexist(&e) && resent() => {
                self.existing(caller, parent, name, made).ok_or(e)
            }
            other => other,
        }
    }
}

/// A test's stall point after an operation that was carried out (see `stall_point`).
fn stalled<T>(point: &str, result: &FsResult<T>) {
    if result.is_ok() {
        stall_point(point);
    }
}

fn kind_of_mode(mode: u32) -> FileKind {
    match mode & libc::S_IFMT {
        libc::S_IFDIR => FileKind::Dir,
        libc::S_IFLNK => FileKind::Symlink,
        libc::S_IFIFO => FileKind::Fifo,
        libc::S_IFSOCK => FileKind::Socket,
        libc::S_IFCHR => FileKind::CharDevice,
        libc::S_IFBLK => FileKind::BlockDevice,
        _ => FileKind::File,
    }
}

impl VolumeFs for ResumableFs {
    fn lookup(&self, caller: &Caller, parent: Ino, name: &OsStr) -> FsResult<Entry> {
        self.inner.lookup(caller, parent, name)
    }

    fn forget(&self, ino: Ino, nlookup: u64) {
        self.inner.forget(ino, nlookup)
    }

    fn getattr(&self, ino: Ino, fh: Option<Fh>) -> FsResult<crate::fs::Attr> {
        self.inner.getattr(ino, fh)
    }

    fn setattr(&self, caller: &Caller, ino: Ino, change: &SetAttr) -> FsResult<crate::fs::Attr> {
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
        let result = self.inner.mknod(caller, parent, name, mode, rdev);
        stalled("after-mknod", &result);
        self.made_or(result, caller, parent, name, |e| {
            e.attr.kind == kind_of_mode(mode) && e.attr.uid == caller.uid
        })
    }

    fn mkdir(&self, caller: &Caller, parent: Ino, name: &OsStr, mode: u32) -> FsResult<Entry> {
        let result = self.inner.mkdir(caller, parent, name, mode);
        stalled("after-mkdir", &result);
        self.made_or(result, caller, parent, name, |e| {
            e.attr.kind == FileKind::Dir && e.attr.uid == caller.uid
        })
    }

    fn unlink(&self, caller: &Caller, parent: Ino, name: &OsStr) -> FsResult<()> {
        let result = self.inner.unlink(caller, parent, name);
        stalled("after-unlink", &result);
        match result {
            Err(e) if is_enoent(&e) && resent() => Ok(()),
            other => other,
        }
    }

    fn rmdir(&self, caller: &Caller, parent: Ino, name: &OsStr) -> FsResult<()> {
        let result = self.inner.rmdir(caller, parent, name);
        stalled("after-rmdir", &result);
        match result {
            Err(e) if is_enoent(&e) && resent() => Ok(()),
            other => other,
        }
    }

    fn symlink(
        &self,
        caller: &Caller,
        parent: Ino,
        name: &OsStr,
        target: &Path,
    ) -> FsResult<Entry> {
        use std::os::unix::ffi::OsStrExt;
        let result = self.inner.symlink(caller, parent, name, target);
        stalled("after-symlink", &result);
        self.made_or(result, caller, parent, name, |e| {
            e.attr.kind == FileKind::Symlink
                && self
                    .inner
                    .readlink(e.attr.ino)
                    .is_ok_and(|t| t == target.as_os_str().as_bytes())
        })
    }

    fn rename(&self, req: &Rename<'_>) -> FsResult<()> {
        let result = self.inner.rename(req);
        stalled("after-rename", &result);
        match result {
            // The first run moved the name: the target is there now.
            Err(e) if is_enoent(&e) && resent() => {
                match self.inner.lookup(&req.caller, req.new_parent, req.new_name) {
                    Ok(found) => {
                        self.inner.forget(found.attr.ino, 1);
                        Ok(())
                    }
                    Err(_) => Err(e),
                }
            }
            other => other,
        }
    }

    fn link(
        &self,
        caller: &Caller,
        ino: Ino,
        new_parent: Ino,
        new_name: &OsStr,
    ) -> FsResult<Entry> {
        let result = self.inner.link(caller, ino, new_parent, new_name);
        stalled("after-link", &result);
        self.made_or(result, caller, new_parent, new_name, |e| e.attr.ino == ino)
    }

    fn open(&self, caller: &Caller, ino: Ino, flags: i32) -> FsResult<Opened> {
        let opened = self.inner.open(caller, ino, flags)?;
        self.record(FILE, opened.fh, ino, flags);
        Ok(opened)
    }

    fn create(
        &self,
        caller: &Caller,
        parent: Ino,
        name: &OsStr,
        mode: u32,
        flags: i32,
    ) -> FsResult<(Entry, Opened)> {
        let result = self.inner.create(caller, parent, name, mode, flags);
        stalled("after-create", &result);
        let (entry, opened) = match result {
            Err(e) if is_eexist(&e) && resent() => {
                // The first run made the file and the caller has not seen it: it is empty
                // and the caller's.
                let made = |e: &Entry| {
                    e.attr.kind == FileKind::File && e.attr.uid == caller.uid && e.attr.size == 0
                };
                let entry = self.existing(caller, parent, name, made).ok_or(e)?;
                let reopen = flags & !(libc::O_CREAT | libc::O_EXCL | libc::O_TRUNC);
                match self.inner.open(caller, entry.attr.ino, reopen) {
                    Ok(opened) => (entry, opened),
                    Err(open_failed) => {
                        self.inner.forget(entry.attr.ino, 1);
                        return Err(open_failed);
                    }
                }
            }
            other => other?,
        };
        self.record(FILE, opened.fh, entry.attr.ino, flags & !libc::O_TRUNC);
        Ok((entry, opened))
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
        stall_point("before-read");
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
        self.inner.write(ino, fh, offset, data, kill_suidgid)
    }

    fn direct_io_alignment(&self, fh: Fh) -> FsResult<u64> {
        self.inner.direct_io_alignment(fh)
    }

    fn release(&self, ino: Ino, fh: Fh) -> FsResult<()> {
        self.unrecord(FILE, fh);
        match self.inner.release(ino, fh) {
            Err(FsError::Stale) if resent() => Ok(()),
            other => other,
        }
    }

    fn fsync(&self, ino: Ino, fh: Fh, datasync: bool) -> FsResult<()> {
        self.inner.fsync(ino, fh, datasync)
    }

    fn opendir(&self, caller: &Caller, ino: Ino) -> FsResult<Fh> {
        let fh = self.inner.opendir(caller, ino)?;
        self.record(DIR, fh, ino, 0);
        Ok(fh)
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
        self.unrecord(DIR, fh);
        match self.inner.releasedir(ino, fh) {
            Err(FsError::Stale) if resent() => Ok(()),
            other => other,
        }
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
        match self.inner.setxattr(ino, name, value, flags, kill_sgid) {
            Err(e) if is_eexist(&e) && resent() && flags & libc::XATTR_CREATE != 0 => {
                match self.inner.getxattr(ino, name, u32::MAX) {
                    Ok(XattrReply::Data(v)) if v == value => Ok(()),
                    _ => Err(e),
                }
            }
            other => other,
        }
    }

    fn getxattr(&self, ino: Ino, name: &OsStr, size: u32) -> FsResult<XattrReply> {
        self.inner.getxattr(ino, name, size)
    }

    fn listxattr(&self, ino: Ino, size: u32) -> FsResult<XattrReply> {
        self.inner.listxattr(ino, size)
    }

    fn removexattr(&self, ino: Ino, name: &OsStr) -> FsResult<()> {
        match self.inner.removexattr(ino, name) {
            Err(FsError::Os(Errno::ENODATA)) if resent() => Ok(()),
            other => other,
        }
    }

    fn access(&self, caller: &Caller, ino: Ino, mask: i32) -> FsResult<()> {
        self.inner.access(caller, ino, mask)
    }

    fn fallocate(&self, ino: Ino, fh: Fh, offset: u64, length: u64, mode: i32) -> FsResult<()> {
        self.inner.fallocate(ino, fh, offset, length, mode)
    }

    fn lseek(&self, ino: Ino, fh: Fh, offset: i64, whence: i32) -> FsResult<i64> {
        self.inner.lseek(ino, fh, offset, whence)
    }

    fn copy_file_range(&self, req: &CopyRange) -> FsResult<u32> {
        self.inner.copy_file_range(req)
    }

    fn usage(&self) -> UsageSnapshot {
        self.inner.usage()
    }

    fn limits(&self) -> crate::fs::quota::Limits {
        self.inner.limits()
    }

    fn resize(&self, to: &crate::fs::quota::Resize) -> Result<(), crate::fs::quota::ResizeError> {
        self.inner.resize(to)
    }

    fn usage_at_rest(&self) -> UsageSnapshot {
        self.inner.usage_at_rest()
    }

    fn sync_all(&self) -> FsResult<()> {
        self.inner.sync_all()
    }

    fn settle(&self) {
        self.inner.settle()
    }

    fn health(&self) -> crate::fs::Health {
        self.inner.health()
    }

    fn releases(&self) -> u64 {
        self.inner.releases()
    }

    fn wait_for_release(&self, seen: u64, deadline: std::time::Instant) -> bool {
        self.inner.wait_for_release(seen, deadline)
    }

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

    fn capture(&self) -> FsResult<Option<Box<dyn crate::fs::tree_copy::Capture>>> {
        self.inner.capture()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::{Instant, SystemTime};

    use super::*;
    use crate::fs::{Fenced, Health};

    /// A core whose every method that the trait defaults answers differently from the default,
    /// so that a wrapper taking the default instead of forwarding shows.
    #[derive(Default)]
    struct Probe {
        settled: AtomicU64,
        restored: AtomicU64,
        kill_sgid: AtomicU64,
    }

    const NO: FsError = FsError::Unsupported;

    impl VolumeFs for Probe {
        fn lookup(&self, _: &Caller, _: Ino, _: &OsStr) -> FsResult<Entry> {
            Err(NO)
        }
        fn forget(&self, _: Ino, _: u64) {}
        fn getattr(&self, _: Ino, _: Option<Fh>) -> FsResult<crate::fs::Attr> {
            Err(NO)
        }
        fn setattr(&self, _: &Caller, _: Ino, _: &SetAttr) -> FsResult<crate::fs::Attr> {
            Err(NO)
        }
        fn readlink(&self, _: Ino) -> FsResult<Vec<u8>> {
            Err(NO)
        }
        fn mknod(&self, _: &Caller, _: Ino, _: &OsStr, _: u32, _: u32) -> FsResult<Entry> {
            Err(NO)
        }
        fn mkdir(&self, _: &Caller, _: Ino, _: &OsStr, _: u32) -> FsResult<Entry> {
            Err(NO)
        }
        fn unlink(&self, _: &Caller, _: Ino, _: &OsStr) -> FsResult<()> {
            Err(NO)
        }
        fn rmdir(&self, _: &Caller, _: Ino, _: &OsStr) -> FsResult<()> {
            Err(NO)
        }
        fn symlink(&self, _: &Caller, _: Ino, _: &OsStr, _: &Path) -> FsResult<Entry> {
            Err(NO)
        }
        fn rename(&self, _: &Rename<'_>) -> FsResult<()> {
            Err(NO)
        }
        fn link(&self, _: &Caller, _: Ino, _: Ino, _: &OsStr) -> FsResult<Entry> {
            Err(NO)
        }
        fn open(&self, _: &Caller, _: Ino, _: i32) -> FsResult<Opened> {
            Err(NO)
        }
        fn create(
            &self,
            _: &Caller,
            _: Ino,
            _: &OsStr,
            _: u32,
            _: i32,
        ) -> FsResult<(Entry, Opened)> {
            Err(NO)
        }
        fn read(&self, _: Ino, _: Fh, _: u64, _: u32) -> FsResult<Vec<u8>> {
            Err(NO)
        }
        fn read_to(
            &self,
            _: Ino,
            _: Fh,
            _: u64,
            _: u32,
            send: &mut dyn FnMut(&[u8]),
        ) -> FsResult<()> {
            send(b"lent");
            Ok(())
        }
        fn write(&self, _: Ino, _: Fh, _: u64, _: &[u8], _: bool) -> FsResult<u32> {
            Err(NO)
        }
        fn direct_io_alignment(&self, _: Fh) -> FsResult<u64> {
            Ok(4096)
        }
        fn release(&self, _: Ino, _: Fh) -> FsResult<()> {
            Err(NO)
        }
        fn fsync(&self, _: Ino, _: Fh, _: bool) -> FsResult<()> {
            Err(NO)
        }
        fn opendir(&self, _: &Caller, _: Ino) -> FsResult<Fh> {
            Err(NO)
        }
        fn readdir(
            &self,
            _: Ino,
            _: Fh,
            _: u64,
            _: bool,
            _: &mut dyn FnMut(DirEntry) -> bool,
        ) -> FsResult<()> {
            Err(NO)
        }
        fn releasedir(&self, _: Ino, _: Fh) -> FsResult<()> {
            Err(NO)
        }
        fn fsyncdir(&self, _: Ino, _: Fh, _: bool) -> FsResult<()> {
            Err(NO)
        }
        fn statfs(&self) -> FsResult<StatFs> {
            Err(NO)
        }
        fn setxattr(&self, _: Ino, _: &OsStr, _: &[u8], _: i32, kill_sgid: bool) -> FsResult<()> {
            self.kill_sgid.store(kill_sgid.into(), Ordering::Relaxed);
            Ok(())
        }
        fn getxattr(&self, _: Ino, _: &OsStr, _: u32) -> FsResult<XattrReply> {
            Err(NO)
        }
        fn listxattr(&self, _: Ino, _: u32) -> FsResult<XattrReply> {
            Err(NO)
        }
        fn removexattr(&self, _: Ino, _: &OsStr) -> FsResult<()> {
            Err(NO)
        }
        fn access(&self, _: &Caller, _: Ino, _: i32) -> FsResult<()> {
            Err(NO)
        }
        fn fallocate(&self, _: Ino, _: Fh, _: u64, _: u64, _: i32) -> FsResult<()> {
            Err(NO)
        }
        fn lseek(&self, _: Ino, _: Fh, _: i64, _: i32) -> FsResult<i64> {
            Err(NO)
        }
        fn copy_file_range(&self, _: &CopyRange) -> FsResult<u32> {
            Err(NO)
        }
        fn limits(&self) -> crate::fs::quota::Limits {
            crate::fs::quota::Limits::default()
        }
        fn resize(
            &self,
            _: &crate::fs::quota::Resize,
        ) -> Result<(), crate::fs::quota::ResizeError> {
            Err(crate::fs::quota::ResizeError::Fs(NO))
        }
        fn usage(&self) -> UsageSnapshot {
            UsageSnapshot {
                bytes: 1,
                inodes: 1,
            }
        }
        fn usage_at_rest(&self) -> UsageSnapshot {
            UsageSnapshot {
                bytes: 2,
                inodes: 2,
            }
        }
        fn sync_all(&self) -> FsResult<()> {
            Ok(())
        }
        fn settle(&self) {
            self.settled.fetch_add(1, Ordering::Relaxed);
        }
        fn health(&self) -> Health {
            Health {
                cluster_wait: None,
                fenced: Some(Fenced {
                    since: SystemTime::UNIX_EPOCH,
                    reason: "probe".into(),
                }),
            }
        }
        fn releases(&self) -> u64 {
            7
        }
        fn wait_for_release(&self, seen: u64, _: Instant) -> bool {
            seen == 7
        }
        fn restore_handle(&self, _: Fh, _: Ino, _: i32, _: bool) -> FsResult<()> {
            Ok(())
        }
        fn handles_restored(&self) {
            self.restored.fetch_add(1, Ordering::Relaxed);
        }
        fn host_copied(&self) {}
        fn persist_for_successor(&self) -> FsResult<()> {
            Err(FsError::Os(Errno::EIO))
        }
        fn capture(&self) -> FsResult<Option<Box<dyn crate::fs::tree_copy::Capture>>> {
            Ok(None)
        }
    }

    /// The wrapper forwards every method the trait gives a default to, and the arguments
    /// main's features added (alignment, kill_sgid).
    #[test]
    fn every_defaulted_method_reaches_the_core() {
        let probe = Arc::new(Probe::default());
        let fs = ResumableFs::new(probe.clone(), None);
        let mut lent = Vec::new();
        fs.read_to(1, 1, 0, 4, &mut |b| lent.extend_from_slice(b))
            .unwrap();
        assert_eq!(lent, b"lent");
        assert_eq!(fs.direct_io_alignment(1).unwrap(), 4096);
        fs.setxattr(1, OsStr::new("system.posix_acl_access"), b"", 0, true)
            .unwrap();
        assert_eq!(probe.kill_sgid.load(Ordering::Relaxed), 1);
        assert_eq!(fs.usage_at_rest().bytes, 2);
        fs.settle();
        assert_eq!(probe.settled.load(Ordering::Relaxed), 1);
        assert!(fs.health().fenced.is_some());
        assert_eq!(fs.releases(), 7);
        assert!(fs.wait_for_release(7, Instant::now()));
        assert!(fs.restore_handle(1, 1, 0, false).is_ok());
        fs.handles_restored();
        assert_eq!(probe.restored.load(Ordering::Relaxed), 1);
        assert!(fs.persist_for_successor().is_err());
    }
}
