//! `VolumeFs` for `MemFs`: each operation maps onto the tree, data and attribute helpers.
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::SystemTime;

use nix::errno::Errno;

use super::namespace::NewNode;
use super::node::Body;
use super::pages::PAGE;
use super::{MemFs, cost, time};
use crate::fs::acl;
use crate::fs::handles::DirStart;
use crate::fs::rules;
use crate::fs::*;
use std::ffi::OsString;
use std::ops::Bound::{Excluded, Unbounded};

impl VolumeFs for MemFs {
    fn lookup(&self, _caller: &Caller, parent: Ino, name: &OsStr) -> FsResult<Entry> {
        let tree = self.tree.read();
        let node = tree.child(&*tree.get(parent)?, name)?;
        Ok(self.entry(&node))
    }

    fn forget(&self, ino: Ino, nlookup: u64) {
        let Ok(node) = self.node(ino) else {
            return;
        };
        let last = node
            .lookups
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                Some(n.saturating_sub(nlookup))
            })
            .is_ok_and(|before| before <= nlookup);
        if last {
            self.release_if_unused(&node);
        }
    }

    fn getattr(&self, ino: Ino, _fh: Option<Fh>) -> FsResult<Attr> {
        Ok(self.node(ino)?.attr())
    }

    fn setattr(&self, caller: &Caller, ino: Ino, change: &SetAttr) -> FsResult<Attr> {
        let node = self.node(ino)?;
        // Under FUSE_HANDLE_KILLPRIV_V2 privileges are the server's to drop: on chown of a
        // non-directory, and on truncate by an unprivileged caller.
        let chown = change.uid.is_some() || change.gid.is_some();
        let kill = change.mode.is_none()
            && ((chown && node.kind != FileKind::Dir)
                || (change.size.is_some() && caller.uid != 0));
        if kill {
            let mut m = node.meta.lock();
            m.perm = mode_without_privileges(m.perm);
            self.drop_xattr(&node, &mut m, OsStr::new(rules::CAPABILITY));
            node.save(&m);
        }
        if let Some(size) = change.size {
            let old = node.attr().size;
            self.truncate_node(&node, size)?;
            if size != old {
                node.meta.lock().mtime = SystemTime::now();
            }
        }
        let mut m = node.meta.lock();
        if let Some(mode) = change.mode {
            m.perm = mode & 0o7777;
            // As ext4: the access ACL follows (same size, so the same charge).
            if let Some(value) = m.xattrs.get_mut(OsStr::new(acl::ACCESS))
                && let Some(changed) = acl::chmod(value, mode)
            {
                *value = changed;
            }
        }
        if let Some(uid) = change.uid {
            m.uid = uid;
        }
        if let Some(gid) = change.gid {
            m.gid = gid;
        }
        if let Some(t) = change.atime {
            m.atime = time(t);
        }
        if let Some(t) = change.mtime {
            m.mtime = time(t);
        }
        m.ctime = change.ctime.unwrap_or_else(SystemTime::now);
        node.save(&m);
        drop(m);
        Ok(node.attr())
    }

    fn readlink(&self, ino: Ino) -> FsResult<Vec<u8>> {
        match &*self.node(ino)?.body.read() {
            Body::Symlink(target) => Ok(target.clone()),
            _ => Err(FsError::Invalid),
        }
    }

    fn mknod(
        &self,
        c: &Caller,
        parent: Ino,
        name: &OsStr,
        mode: u32,
        rdev: u32,
    ) -> FsResult<Entry> {
        let kind = FileKind::from_mode(mode).ok_or(FsError::Invalid)?;
        let new = match kind {
            FileKind::File => NewNode::File,
            FileKind::Dir | FileKind::Symlink => return Err(FsError::Invalid),
            other => NewNode::Special(other, rdev),
        };
        let node = self.make(c, parent, name, mode, new)?;
        Ok(self.entry(&node))
    }

    fn mkdir(&self, c: &Caller, parent: Ino, name: &OsStr, mode: u32) -> FsResult<Entry> {
        let node = self.make(c, parent, name, mode, NewNode::Dir)?;
        Ok(self.entry(&node))
    }

    fn unlink(&self, _caller: &Caller, parent: Ino, name: &OsStr) -> FsResult<()> {
        self.remove(parent, name, false)
    }

    fn rmdir(&self, _caller: &Caller, parent: Ino, name: &OsStr) -> FsResult<()> {
        self.remove(parent, name, true)
    }

    fn symlink(&self, c: &Caller, parent: Ino, name: &OsStr, target: &Path) -> FsResult<Entry> {
        let target = target.as_os_str().as_bytes();
        if target.len() as u64 > PAGE {
            return Err(FsError::Os(Errno::ENAMETOOLONG));
        }
        let node = self.make(c, parent, name, 0o777, NewNode::Symlink(target))?;
        Ok(self.entry(&node))
    }

    fn rename(&self, r: &Rename<'_>) -> FsResult<()> {
        self.rename_entry(r)
    }

    fn link(
        &self,
        _caller: &Caller,
        ino: Ino,
        new_parent: Ino,
        new_name: &OsStr,
    ) -> FsResult<Entry> {
        let node = MemFs::link(self, ino, new_parent, new_name)?;
        Ok(self.entry(&node))
    }

    fn open(&self, _caller: &Caller, ino: Ino, flags: i32) -> FsResult<Opened> {
        self.open_node(self.node(ino)?, flags)
    }

    fn create(
        &self,
        c: &Caller,
        parent: Ino,
        name: &OsStr,
        mode: u32,
        flags: i32,
    ) -> FsResult<(Entry, Opened)> {
        let node = match self.make(c, parent, name, mode, NewNode::File) {
            Err(FsError::Os(Errno::EEXIST)) => {
                rules::create_over_existing(flags)?;
                let tree = self.tree.read();
                tree.child(&*tree.get(parent)?, name)?
            }
            other => other?,
        };
        let entry = self.entry(&node);
        Ok((entry, self.open_node(node, flags & !libc::O_TRUNC)?))
    }

    fn read(&self, ino: Ino, fh: Fh, offset: u64, size: u32) -> FsResult<Vec<u8>> {
        let mut out = Vec::new();
        self.read_to(ino, fh, offset, size, &mut |d| out.extend_from_slice(d))?;
        Ok(out)
    }

    fn read_to(
        &self,
        _ino: Ino,
        fh: Fh,
        offset: u64,
        size: u32,
        send: &mut dyn FnMut(&[u8]),
    ) -> FsResult<()> {
        self.read_node(&**self.files.get(fh)?, offset, size, send)
    }

    fn write(&self, _ino: Ino, fh: Fh, offset: u64, data: &[u8], kill: bool) -> FsResult<u32> {
        let node = self.files.get(fh)?;
        if kill {
            let mut m = node.meta.lock();
            m.perm = mode_without_privileges(m.perm);
            self.drop_xattr(&node, &mut m, OsStr::new(rules::CAPABILITY));
            node.save(&m);
        }
        self.write_node(&node, offset, data)
    }

    /// None, as kernel tmpfs: it serves O_DIRECT through its page cache at any alignment.
    fn direct_io_alignment(&self, _fh: Fh) -> FsResult<u64> {
        Ok(1)
    }

    fn release(&self, _ino: Ino, fh: Fh) -> FsResult<()> {
        let node = self.files.remove(fh)?;
        if node.open.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.release_if_unused(&node);
        }
        Ok(())
    }

    fn fsync(&self, _ino: Ino, fh: Fh, _datasync: bool) -> FsResult<()> {
        // Memory is as durable as this volume gets.
        self.files.get(fh).map(drop)
    }

    fn opendir(&self, _caller: &Caller, ino: Ino) -> FsResult<Fh> {
        let node = self.node(ino)?;
        if node.kind != FileKind::Dir {
            return Err(FsError::Os(Errno::ENOTDIR));
        }
        node.open.fetch_add(1, Ordering::SeqCst);
        Ok(self.dirs.insert((node, Default::default())))
    }

    fn readdir(
        &self,
        _ino: Ino,
        fh: Fh,
        offset: u64,
        plus: bool,
        add: &mut dyn FnMut(DirEntry) -> bool,
    ) -> FsResult<()> {
        let handle = self.dirs.get(fh)?;
        let (dir, cursor) = &*handle;
        let mut cursor = cursor.lock();
        let unseen = {
            let tree = self.tree.read();
            let Body::Dir { entries, parent } = &*dir.body.read() else {
                return Err(FsError::Os(Errno::ENOTDIR));
            };
            let list = |start: &DirStart<'_>| {
                let rest: Box<dyn Iterator<Item = (&OsString, &Ino)>> = match *start {
                    DirStart::After { name, .. } => {
                        Box::new(entries.range::<OsStr, _>((Excluded(name), Unbounded)))
                    }
                    DirStart::Skip(n) => Box::new(entries.iter().skip(n as usize)),
                };
                let tree = &tree;
                Ok(rest.filter_map(move |(name, &ino)| {
                    let node = tree.get(ino).ok()?;
                    Some(Ok(rules::Listed {
                        ino,
                        name: name.clone(),
                        kind: node.kind,
                        entry: plus.then(|| self.entry(&node)),
                    }))
                }))
            };
            rules::read_dir(dir.ino, *parent, offset, &mut cursor, list, add)?
        };
        if let Some(ino) = unseen {
            self.forget(ino, 1);
        }
        Ok(())
    }

    fn releasedir(&self, _ino: Ino, fh: Fh) -> FsResult<()> {
        let (node, _) = &*self.dirs.remove(fh)?;
        if node.open.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.release_if_unused(node);
        }
        Ok(())
    }

    fn fsyncdir(&self, _ino: Ino, fh: Fh, _datasync: bool) -> FsResult<()> {
        self.dirs.get(fh).map(drop)
    }

    fn statfs(&self) -> FsResult<StatFs> {
        // Without a byte limit, the size is what memory could hold at most: the machine's RAM.
        let ram = || {
            nix::sys::sysinfo::sysinfo()
                .map(|i| i.ram_total())
                .unwrap_or(u64::MAX / 2)
        };
        let limits = self.quota.limits();
        let unlimited = if limits.bytes.is_some() { 0 } else { ram() };
        Ok(rules::statfs(self.quota.usage(), limits, unlimited))
    }

    fn setxattr(
        &self,
        ino: Ino,
        name: &OsStr,
        value: &[u8],
        flags: i32,
        kill_sgid: bool,
    ) -> FsResult<()> {
        let node = self.node(ino)?;
        rules::check_xattr_kind(node.kind, name)?;
        if let Some(kind) = acl::kind_of(name) {
            return self.set_acl(&node, kind, value, kill_sgid);
        }
        let mut m = node.meta.lock();
        let old = m.xattrs.get(name).map(|v| cost::xattr(name, v.len()));
        rules::check_xattr_flags(flags, old.is_some())?;
        // Its pages first: a value that does not fit changes nothing.
        let xattrs = m.xattr_bytes - old.unwrap_or(0) + cost::xattr(name, value.len());
        let entries = m.entry_bytes;
        self.recharge(node.kind, &mut m, entries, xattrs)?;
        m.xattrs.insert(name.to_os_string(), value.to_vec());
        self.log(super::shared::journal::Record::XattrSet {
            ino: node.ino,
            name: name.as_bytes(),
            value,
        });
        m.ctime = SystemTime::now();
        node.save(&m);
        Ok(())
    }

    fn getxattr(&self, ino: Ino, name: &OsStr, size: u32) -> FsResult<XattrReply> {
        let node = self.node(ino)?;
        let m = node.meta.lock();
        let value = m.xattrs.get(name).ok_or(FsError::Os(Errno::ENODATA))?;
        rules::xattr_reply(value, size)
    }

    fn listxattr(&self, ino: Ino, size: u32) -> FsResult<XattrReply> {
        let node = self.node(ino)?;
        let m = node.meta.lock();
        let mut list = Vec::new();
        for name in m.xattrs.keys() {
            list.extend_from_slice(name.as_bytes());
            list.push(0);
        }
        rules::xattr_reply(&list, size)
    }

    fn removexattr(&self, ino: Ino, name: &OsStr) -> FsResult<()> {
        let node = self.node(ino)?;
        rules::check_xattr_kind(node.kind, name)?;
        let mut m = node.meta.lock();
        match self.drop_xattr(&node, &mut m, name) {
            Some(_) => {
                m.ctime = SystemTime::now();
                node.save(&m);
            }
            // Removing an ACL a node does not have succeeds, as on ext4.
            None if acl::kind_of(name).is_some() => {}
            None => return Err(FsError::Os(Errno::ENODATA)),
        }
        Ok(())
    }

    fn access(&self, _caller: &Caller, ino: Ino, _mask: i32) -> FsResult<()> {
        // Mounted with default_permissions: the kernel checks modes before asking.
        self.node(ino).map(drop)
    }

    fn fallocate(&self, _ino: Ino, fh: Fh, offset: u64, length: u64, mode: i32) -> FsResult<()> {
        self.fallocate_node(&**self.files.get(fh)?, offset, length, mode)
    }

    fn lseek(&self, _ino: Ino, fh: Fh, offset: i64, whence: i32) -> FsResult<i64> {
        self.seek_node(&**self.files.get(fh)?, offset, whence)
    }

    fn copy_file_range(&self, req: &CopyRange) -> FsResult<u32> {
        let from = self.files.get(req.fh_in)?;
        let to = self.files.get(req.fh_out)?;
        self.copy_range(&from, req.offset_in, &to, req.offset_out, req.len)
    }

    fn usage(&self) -> UsageSnapshot {
        self.quota.usage()
    }

    fn limits(&self) -> crate::fs::quota::Limits {
        self.quota.limits()
    }

    fn resize(&self, to: &crate::fs::quota::Resize) -> Result<(), crate::fs::quota::ResizeError> {
        let limits = Self::full_limits(to.limits);
        if let Some(shared) = &self.shared {
            let most = shared.capacity();
            let over = |want: Option<u64>, max: Option<u64>| match (want, max) {
                (Some(w), Some(m)) => w > m,
                (None, Some(_)) => true,
                _ => false,
            };
            if over(limits.bytes, most.bytes) || over(limits.inodes, most.inodes) {
                return Err(crate::fs::quota::ResizeError::BeyondCapacity(most));
            }
        }
        self.quota
            .set_limits(limits)
            .map_err(crate::fs::quota::ResizeError::BelowUsage)
    }

    fn releases(&self) -> u64 {
        self.quota.releases()
    }

    fn wait_for_release(&self, seen: u64, deadline: std::time::Instant) -> bool {
        self.quota.wait_for_release(seen, deadline)
    }

    fn sync_all(&self) -> FsResult<()> {
        Ok(())
    }

    fn usage_at_rest(&self) -> UsageSnapshot {
        self.usage()
    }

    /// Its usage changes only with its own operations.
    fn settle(&self) {}

    fn health(&self) -> crate::fs::Health {
        crate::fs::Health::default()
    }

    /// Kept volumes write the shared memory as they change.
    fn persist_for_successor(&self) -> FsResult<()> {
        Ok(())
    }

    fn restore_handle(&self, fh: Fh, ino: Ino, _flags: i32, dir: bool) -> FsResult<()> {
        self.restore(fh, ino, dir)
    }

    fn handles_restored(&self) {
        self.free_unreachable();
    }

    fn capture(&self) -> FsResult<Option<Box<dyn tree_copy::Capture>>> {
        self.capture_tree()
    }

    /// Its data is in memory, not in a host directory.
    fn host_copied(&self) {}
}
