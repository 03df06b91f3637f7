//! Names: lookup, creation, unlink, rmdir, rename and link. Every change to the tree happens
//! under the tree's write lock, so multi-directory operations see one consistent tree.
use std::ffi::OsStr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use nix::errno::Errno;

use super::MemFs;
use super::cost;
use super::filedata::FileData;
use super::node::{Body, Meta, Node};
use super::shared::file::SharedPages;
use super::shared::journal::Record;
use crate::fs::acl;
use crate::fs::rules::{self, RenameMode};
use crate::fs::{Caller, Entry, FileKind, FsError, FsResult, Ino, Rename};
use std::os::unix::ffi::OsStrExt;

fn os(e: Errno) -> FsError {
    FsError::Os(e)
}

/// What a new node is made of.
pub enum NewNode<'a> {
    File,
    Dir,
    Symlink(&'a [u8]),
    Special(FileKind, u32),
}

impl MemFs {
    /// Adds one kernel lookup reference to `node` and describes it.
    pub(super) fn entry(&self, node: &Node) -> Entry {
        node.lookups.fetch_add(1, Ordering::AcqRel);
        Entry {
            attr: node.attr(),
            generation: 0,
        }
    }

    pub(super) fn make(
        &self,
        caller: &Caller,
        parent: Ino,
        name: &OsStr,
        mode: u32,
        new: NewNode<'_>,
    ) -> FsResult<Arc<Node>> {
        rules::check_name(name)?;
        let mut tree = self.tree.write();
        let parent = tree.get(parent)?;
        let (parent_gid, parent_perm, parent_default) = {
            let m = parent.meta.lock();
            let default = m.xattrs.get(OsStr::new(acl::DEFAULT)).cloned();
            (m.gid, m.perm, default)
        };
        if tree.child(&parent, name).is_ok() {
            return Err(os(Errno::EEXIST));
        }
        let (kind, mut body, nlink, rdev) = match new {
            NewNode::File => (FileKind::File, Body::File(FileData::default()), 1, 0),
            NewNode::Dir => {
                let body = Body::Dir {
                    entries: Default::default(),
                    parent: parent.ino,
                };
                (FileKind::Dir, body, 2, 0)
            }
            NewNode::Symlink(target) => (FileKind::Symlink, Body::Symlink(target.to_vec()), 1, 0),
            NewNode::Special(kind, rdev) => (kind, Body::Special, 1, rdev),
        };
        let inherited = acl::inherit(parent_default.as_deref(), kind, mode, caller.umask)?;
        let (gid, setgid) = rules::new_node_group(parent_perm, parent_gid, caller.gid, kind);
        let mut meta = Meta::new(inherited.mode & 0o7777, caller.uid, gid, nlink, rdev);
        meta.perm |= setgid;
        if let Body::Symlink(target) = &body {
            meta.target_bytes = cost::target(target.len());
        }
        for (name, value) in [
            (acl::ACCESS, inherited.access),
            (acl::DEFAULT, inherited.default),
        ] {
            if let Some(value) = value {
                meta.xattr_bytes += cost::xattr(OsStr::new(name), value.len());
                meta.xattrs.insert(name.into(), value);
            }
        }
        // The new node's inode and pages, then its entry in the parent, or nothing. Reserved,
        // not charged, until the entry fits: a refusal gives nothing back, so it wakes no
        // operation waiting for space (`Quota::wait_for_release`).
        meta.charged = cost::pages(kind, meta.target_bytes + meta.xattr_bytes);
        let reservation = self.quota.reserve(meta.charged, 1)?;
        self.add_entry(&parent, name)?;
        self.quota.adjust(meta.charged as i64, 1);
        drop(reservation);
        let ino = tree.allocate_ino();
        // Kept: the node's record, then its target, then the entry naming it (a crash in
        // between leaves a node without a name, which recovery frees).
        let rec = self.shared.as_ref().map(|s| {
            s.note_ino(ino);
            if let Body::File(data) = &mut body {
                *data = FileData::Shared(SharedPages::new(s.arena().clone(), ino));
            }
            s.add_node(ino, kind, &meta)
        });
        // Inherited ACLs.
        for (name, value) in &meta.xattrs {
            self.log(Record::XattrSet {
                ino,
                name: name.as_bytes(),
                value,
            });
        }
        if let Body::Symlink(target) = &body {
            self.log(Record::Target { ino, target });
        }
        self.log(Record::Link {
            dir: parent.ino,
            ino,
            name: name.as_bytes(),
        });
        let node = Arc::new(Node::new(ino, kind, meta, body).with_rec(rec));
        if let Body::Dir { entries, .. } = &mut *parent.body.write() {
            entries.insert(name.to_os_string(), ino);
        }
        if kind == FileKind::Dir {
            parent.meta.lock().nlink += 1;
        }
        parent.touch_dir();
        tree.nodes.insert(ino, node.clone());
        Ok(node)
    }

    /// Charges directory `dir` for an entry `name` more (`NoSpace`, changing nothing, if it
    /// needs a page that does not fit). Under the tree's write lock, with the entry's change.
    fn add_entry(&self, dir: &Node, name: &OsStr) -> FsResult<()> {
        let mut m = dir.meta.lock();
        let (entries, xattrs) = (m.entry_bytes + cost::entry(name), m.xattr_bytes);
        self.recharge(FileKind::Dir, &mut m, entries, xattrs)
    }

    /// Gives back what directory `dir` was charged for its entry `name`.
    fn remove_entry(&self, dir: &Node, name: &OsStr) {
        let mut m = dir.meta.lock();
        let entries = m.entry_bytes.saturating_sub(cost::entry(name));
        let xattrs = m.xattr_bytes;
        self.recharge(FileKind::Dir, &mut m, entries, xattrs)
            .expect("giving back never fails");
    }

    pub(super) fn remove(&self, parent: Ino, name: &OsStr, dir: bool) -> FsResult<()> {
        let tree = self.tree.write();
        let parent = tree.get(parent)?;
        let node = tree.child(&parent, name)?;
        match (dir, node.kind == FileKind::Dir) {
            (true, false) => return Err(os(Errno::ENOTDIR)),
            (false, true) => return Err(os(Errno::EISDIR)),
            (true, true) => self.check_empty(&node)?,
            (false, false) => {}
        }
        if let Body::Dir { entries, .. } = &mut *parent.body.write() {
            entries.remove(name);
        }
        self.log(Record::Unlink {
            dir: parent.ino,
            name: name.as_bytes(),
        });
        self.remove_entry(&parent, name);
        if dir {
            parent.meta.lock().nlink -= 1;
        }
        parent.touch_dir();
        drop(tree);
        self.drop_link(&node);
        Ok(())
    }

    fn check_empty(&self, dir: &Node) -> FsResult<()> {
        match &*dir.body.read() {
            Body::Dir { entries, .. } if !entries.is_empty() => Err(os(Errno::ENOTEMPTY)),
            _ => Ok(()),
        }
    }

    /// One name of `node` is gone.
    fn drop_link(&self, node: &Arc<Node>) {
        let unnamed = {
            let mut m = node.meta.lock();
            m.nlink = if node.kind == FileKind::Dir {
                0
            } else {
                m.nlink.saturating_sub(1)
            };
            m.ctime = std::time::SystemTime::now();
            node.save(&m);
            m.nlink == 0
        };
        if unnamed && node.open.load(Ordering::SeqCst) > 0 {
            self.quota.expect_release();
        }
        self.release_if_unused(node);
    }

    pub(super) fn rename_entry(&self, r: &Rename<'_>) -> FsResult<()> {
        let (name, new_name) = (r.name, r.new_name);
        rules::check_name(new_name)?;
        let RenameMode {
            exchange,
            noreplace,
            whiteout,
        } = rules::rename_mode(r.flags)?;
        // A whiteout is a new inode: admitted against the inode quota before anything changes.
        let _reservation = whiteout.then(|| self.quota.reserve(0, 1)).transpose()?;
        let mut tree = self.tree.write();
        let from = tree.get(r.parent)?;
        let to = tree.get(r.new_parent)?;
        let moved = tree.child(&from, name)?;
        let target = tree.child(&to, new_name).ok();
        if self.is_ancestor(&tree, moved.ino, to.ino)? {
            return Err(FsError::Invalid);
        }
        match &target {
            Some(_) if noreplace => return Err(os(Errno::EEXIST)),
            None if exchange => return Err(FsError::NotFound),
            Some(t) if t.ino == moved.ino => return Ok(()),
            Some(t) if !exchange => {
                rules::check_replace(moved.kind, t.kind, || Ok(self.check_empty(t).is_ok()))?
            }
            _ => {}
        }
        // A plain rename moves the entry `name` to `new_name`, replacing a target's entry in
        // place. The directory that gains must have room first; an exchange keeps the names
        // where they are, and a whiteout keeps an entry at `name`.
        if !exchange {
            let gained = if target.is_none() {
                cost::entry(new_name)
            } else {
                0
            };
            let lost = if whiteout { 0 } else { cost::entry(name) };
            if from.ino == to.ino {
                let mut m = to.meta.lock();
                let entries = (m.entry_bytes + gained).saturating_sub(lost);
                let xattrs = m.xattr_bytes;
                self.recharge(FileKind::Dir, &mut m, entries, xattrs)?;
            } else {
                if gained > 0 {
                    self.add_entry(&to, new_name)?;
                }
                if !whiteout {
                    self.remove_entry(&from, name);
                }
            }
        }
        let left_behind = match &target {
            Some(t) if exchange => Some(t.ino),
            _ if whiteout => Some(self.add_whiteout(&mut tree, &r.caller, &from)),
            _ => None,
        };
        set_entry(&from, name, left_behind);
        set_entry(&to, new_name, Some(moved.ino));
        self.log(Record::Rename {
            from: from.ino,
            to: to.ino,
            exchange,
            whiteout: left_behind.filter(|_| whiteout),
            name: name.as_bytes(),
            new_name: new_name.as_bytes(),
        });
        if exchange {
            let t = target.as_ref().expect("exchange has a target");
            self.reparent(t, &to, &from);
        } else if let Some(t) = &target {
            if t.kind == FileKind::Dir {
                to.meta.lock().nlink -= 1;
            }
        }
        self.reparent(&moved, &from, &to);
        for node in [&from, &to] {
            node.touch_dir();
        }
        moved.touch_ctime();
        drop(tree);
        match target {
            Some(t) if !exchange => self.drop_link(&t),
            Some(t) => t.touch_ctime(),
            None => {}
        }
        Ok(())
    }

    /// Makes the whiteout a RENAME_WHITEOUT leaves at the source name in `parent`: a 0:0
    /// character device owned by the caller, as the kernel makes one. The caller reserved
    /// its inode; the caller names it.
    fn add_whiteout(&self, tree: &mut super::Tree, caller: &Caller, parent: &Node) -> Ino {
        let (gid, _) = {
            let m = parent.meta.lock();
            rules::new_node_group(m.perm, m.gid, caller.gid, FileKind::CharDevice)
        };
        let ino = tree.allocate_ino();
        let mut meta = Meta::new(0, caller.uid, gid, 1, 0);
        // Its inode was reserved by the caller; a device holds no metadata pages.
        meta.charged = cost::pages(FileKind::CharDevice, 0);
        let rec = self.shared.as_ref().map(|s| {
            s.note_ino(ino);
            s.add_node(ino, FileKind::CharDevice, &meta)
        });
        let node = Node::new(ino, FileKind::CharDevice, meta, Body::Special).with_rec(rec);
        tree.nodes.insert(ino, Arc::new(node));
        self.quota.adjust(0, 1);
        ino
    }

    /// A directory moved from `from` to `to`: fix its `..` and both link counts.
    fn reparent(&self, node: &Node, from: &Node, to: &Node) {
        if node.kind != FileKind::Dir || from.ino == to.ino {
            return;
        }
        if let Body::Dir { parent, .. } = &mut *node.body.write() {
            *parent = to.ino;
        }
        from.meta.lock().nlink -= 1;
        to.meta.lock().nlink += 1;
    }

    /// True when `dir` is `ancestor` or lies below it.
    fn is_ancestor(&self, tree: &super::Tree, ancestor: Ino, mut dir: Ino) -> FsResult<bool> {
        loop {
            if dir == ancestor {
                return Ok(true);
            }
            let node = tree.get(dir)?;
            let Body::Dir { parent, .. } = &*node.body.read() else {
                return Ok(false);
            };
            if *parent == dir {
                return Ok(false);
            }
            dir = *parent;
        }
    }

    pub(super) fn link(&self, ino: Ino, new_parent: Ino, new_name: &OsStr) -> FsResult<Arc<Node>> {
        let tree = self.tree.write();
        let node = tree.get(ino)?;
        let parent = tree.get(new_parent)?;
        if node.kind == FileKind::Dir {
            return Err(os(Errno::EPERM));
        }
        if tree.child(&parent, new_name).is_ok() {
            return Err(os(Errno::EEXIST));
        }
        if node.meta.lock().nlink == 0 {
            return Err(FsError::NotFound);
        }
        self.add_entry(&parent, new_name)?;
        set_entry(&parent, new_name, Some(node.ino));
        self.log(Record::Link {
            dir: parent.ino,
            ino: node.ino,
            name: new_name.as_bytes(),
        });
        node.meta.lock().nlink += 1;
        node.touch_ctime();
        parent.touch_dir();
        Ok(node)
    }
}

fn set_entry(dir: &Node, name: &OsStr, ino: Option<Ino>) {
    if let Body::Dir { entries, .. } = &mut *dir.body.write() {
        match ino {
            Some(ino) => entries.insert(name.to_os_string(), ino),
            None => entries.remove(name),
        };
    }
}
