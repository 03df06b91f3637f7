//! The `tmpfs` backend: a whole filesystem held in the handler's memory.
//!
//! File data lives in sparse 4 KiB pages (`pages`), grouped in 2 MiB chunks that hold few
//! pages on the heap and many in an anonymous mapping of their own (`chunk`). Holes cost
//! nothing and a file's allocated bytes are its page count times 4 KiB; that is what the quota
//! counts, and the memory it holds. Memory goes back to the system when data is deleted (at
//! once for mapped pages, after `Trim` for heap pages). Nothing touches disk.
//!
//! Names, inodes, xattrs and long symlink targets are the handler's memory too: they take
//! 4 KiB pages of the quota (`cost`), and the inode limit defaults to one per page of it.
//!
//! Opens use direct I/O: reads and writes go straight between the caller and this store, with
//! no second copy in the kernel's page cache (see docs/tmpfs.md).
//!
//! Locking: the tree (node table and directory entries) changes only under `tree.write()`;
//! a node's data has its own lock, so I/O on different files runs in parallel.
mod capture;
mod chunk;
mod chunks;
mod cost;
mod data;
mod filedata;
mod namespace;
mod node;
mod ops;
pub mod pages;
mod shared;

use std::collections::HashMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use nix::errno::Errno;
use parking_lot::RwLock;

pub use cost::default_inode_limit;
use node::{Body, Meta, Node};

use super::handles::{DirCursor, HandleTable};
use super::quota::{Limits, Quota};
use super::*;

pub(crate) struct Tree {
    nodes: HashMap<Ino, Arc<Node>>,
    next_ino: Ino,
}

impl Tree {
    fn get(&self, ino: Ino) -> FsResult<Arc<Node>> {
        self.nodes.get(&ino).cloned().ok_or(FsError::Stale)
    }

    /// The node `name` names in directory `parent`. Takes the tree as the caller holds it
    /// (read or write): the tree lock is never taken twice.
    fn child(&self, parent: &Node, name: &OsStr) -> FsResult<Arc<Node>> {
        super::rules::check_name(name)?;
        let Body::Dir { entries, .. } = &*parent.body.read() else {
            return Err(FsError::Os(Errno::ENOTDIR));
        };
        let ino = *entries.get(name).ok_or(FsError::NotFound)?;
        self.get(ino)
    }

    fn allocate_ino(&mut self) -> Ino {
        self.next_ino += 1;
        self.next_ino
    }
}

/// Trims the heap after enough heap pages were freed, so RSS follows the data held.
struct Trim {
    pending: AtomicU64,
}

const TRIM_AFTER: u64 = 8 << 20;

impl Trim {
    fn freed(&self, bytes: u64) {
        if self.pending.fetch_add(bytes, Ordering::Relaxed) + bytes >= TRIM_AFTER {
            self.pending.store(0, Ordering::Relaxed);
            crate::sys::heap::release_free_memory();
        }
    }
}

pub struct MemFs {
    tree: RwLock<Tree>,
    quota: Quota,
    files: HandleTable<Arc<Node>>,
    dirs: HandleTable<(Arc<Node>, parking_lot::Mutex<DirCursor>)>,
    trim: Trim,
    /// Where the volume is kept for the next handler, if it outlives this one (`shared`).
    shared: Option<Arc<shared::Shared>>,
}

/// Owner and mode of the root directory.
#[derive(Clone, Copy, Debug)]
pub struct RootOwner {
    pub uid: u32,
    pub gid: u32,
    pub mode: u32,
}

impl MemFs {
    /// A new, empty volume. Without an inode limit, one with a byte limit gets the default
    /// (`default_inode_limit`).
    pub fn new(limits: Limits, root: RootOwner) -> MemFs {
        Self::with_shared(limits, root, None)
    }

    /// A volume that outlives its handler when `carry` keeps it (see `shared`): a new one, or
    /// the one a predecessor left in `carry`, with its data. `name` names its memfds.
    pub fn kept(
        limits: Limits,
        root: RootOwner,
        carry: &mut crate::fs::resume::Carry,
        name: &str,
    ) -> std::io::Result<MemFs> {
        let limits = Self::full_limits(limits);
        let bytes = limits.bytes.unwrap_or(u64::MAX);
        let inodes = limits.inodes.unwrap_or(bytes / pages::PAGE);
        match shared::Shared::open(carry, name, bytes, inodes)? {
            None => Ok(Self::new(limits, root)),
            Some((shared, None)) => Ok(Self::with_shared(limits, root, Some(shared))),
            Some((shared, Some(found))) => Self::recover(limits, shared, found),
        }
    }

    /// The inode limit a volume gets without one: the default for its byte limit.
    fn full_limits(limits: Limits) -> Limits {
        Limits {
            inodes: limits.inodes.or(limits.bytes.map(default_inode_limit)),
            ..limits
        }
    }

    fn with_shared(limits: Limits, root: RootOwner, shared: Option<Arc<shared::Shared>>) -> MemFs {
        let limits = Self::full_limits(limits);
        let body = Body::Dir {
            entries: Default::default(),
            parent: ROOT_INO,
        };
        let mut meta = Meta::new(root.mode, root.uid, root.gid, 2, 0);
        meta.charged = cost::pages(FileKind::Dir, 0);
        let charged = meta.charged;
        let rec = shared.as_ref().map(|s| {
            s.note_ino(ROOT_INO);
            s.add_node(ROOT_INO, FileKind::Dir, &meta)
        });
        let root = Arc::new(Node::new(ROOT_INO, FileKind::Dir, meta, body).with_rec(rec));
        root.lookups.store(1, Ordering::Relaxed);
        MemFs {
            tree: RwLock::new(Tree {
                nodes: HashMap::from([(ROOT_INO, root)]),
                next_ino: ROOT_INO,
            }),
            quota: Quota::new(
                limits,
                UsageSnapshot {
                    bytes: charged,
                    inodes: 1,
                },
            ),
            files: HandleTable::default(),
            dirs: HandleTable::default(),
            trim: Trim {
                pending: AtomicU64::new(0),
            },
            shared,
        }
    }

    /// Records a namespace change for the next handler (see `shared::journal`).
    fn log(&self, record: shared::journal::Record<'_>) {
        if let Some(s) = &self.shared {
            s.log(record);
        }
    }

    fn node(&self, ino: Ino) -> FsResult<Arc<Node>> {
        self.tree.read().get(ino)
    }

    /// Sets the metadata a node of `kind` holds (entries, xattrs) and charges its pages for
    /// it: more pages only if they fit (else `NoSpace`, changing nothing), fewer given back.
    fn recharge(
        &self,
        kind: FileKind,
        m: &mut Meta,
        entry_bytes: u64,
        xattr_bytes: u64,
    ) -> FsResult<()> {
        let charged = cost::pages(kind, entry_bytes + xattr_bytes + m.target_bytes);
        if charged > m.charged {
            self.quota.charge(charged - m.charged, 0)?;
        } else if charged < m.charged {
            self.quota.adjust(-((m.charged - charged) as i64), 0);
        }
        m.charged = charged;
        m.entry_bytes = entry_bytes;
        m.xattr_bytes = xattr_bytes;
        Ok(())
    }

    /// Removes an xattr of `node` (whose `meta` is `m`), giving back what it was charged.
    fn drop_xattr(&self, node: &Node, m: &mut Meta, name: &OsStr) -> Option<Vec<u8>> {
        let value = m.xattrs.remove(name)?;
        self.log(shared::journal::Record::XattrRemove {
            ino: node.ino,
            name: name.as_bytes(),
        });
        let xattr_bytes = m.xattr_bytes - cost::xattr(name, value.len());
        self.recharge(node.kind, m, m.entry_bytes, xattr_bytes)
            .expect("giving back never fails");
        Some(value)
    }

    /// Sets (or, with a value of no entries, removes) an ACL as ext4 does: an access ACL sets
    /// the mode and is kept only when the mode cannot say it all (see `acl::set_access`).
    fn set_acl(&self, node: &Node, kind: acl::Kind, value: &[u8], kill_sgid: bool) -> FsResult<()> {
        if node.kind == FileKind::Symlink {
            return Err(FsError::Unsupported);
        }
        let mut m = node.meta.lock();
        let (name, perm, stored) = match kind {
            acl::Kind::Access => {
                let (perm, stored) = acl::set_access(value, m.perm, kill_sgid)?;
                (acl::ACCESS, perm, stored)
            }
            acl::Kind::Default => (acl::DEFAULT, m.perm, acl::check_default(value, node.kind)?),
        };
        let name = OsStr::new(name);
        // Its pages first: a value that does not fit changes nothing.
        let old = m.xattrs.get(name).map_or(0, |v| cost::xattr(name, v.len()));
        let new = stored.as_ref().map_or(0, |v| cost::xattr(name, v.len()));
        let (entries, xattrs) = (m.entry_bytes, m.xattr_bytes - old + new);
        self.recharge(node.kind, &mut m, entries, xattrs)?;
        match stored {
            Some(v) => m.xattrs.insert(name.to_os_string(), v),
            None => m.xattrs.remove(name),
        };
        m.perm = perm;
        m.ctime = SystemTime::now();
        Ok(())
    }

    /// Frees a node's data, metadata and inode, exactly once, when nothing can reach it any
    /// more: no name, no open handle and no kernel lookup. Until then a node without a name
    /// stays counted and usable (an O_PATH descriptor reopened through /proc reaches it, as on
    /// kernel tmpfs). Every path that takes a name, a handle or a lookup away calls this after
    /// its change; the decision is made under the node's `meta` lock, so the last of
    /// concurrent callers sees all the changes.
    fn release_if_unused(&self, node: &Arc<Node>) {
        if node.ino == ROOT_INO {
            return;
        }
        let metadata = {
            let mut m = node.meta.lock();
            if m.nlink > 0 || m.freed || node.open.load(Ordering::SeqCst) > 0 {
                return;
            }
            if node.lookups.load(Ordering::SeqCst) > 0 {
                // Only the kernel's FORGET is awaited (right after an `rm`, it is on its way).
                self.quota.expect_release();
                return;
            }
            m.freed = true;
            m.xattrs.clear();
            std::mem::take(&mut m.charged)
        };
        let (freed, heap) = match &mut *node.body.write() {
            Body::File(p) => (p.clear(), p.take_heap_freed()),
            _ => (0, 0),
        };
        self.quota.adjust(-(metadata as i64), -1);
        self.give_back(freed, heap);
        if let Some(rec) = &node.rec {
            rec.free(node.ino);
        }
        self.tree.write().nodes.remove(&node.ino);
    }

    fn open_node(&self, node: Arc<Node>, flags: i32) -> FsResult<Opened> {
        if flags & libc::O_TRUNC != 0 && flags & libc::O_ACCMODE != libc::O_RDONLY {
            self.truncate_node(&node, 0)?;
        }
        node.open.fetch_add(1, Ordering::SeqCst);
        let fh = self.files.insert(node);
        // Direct I/O: the data already is memory, so the kernel's page cache would hold a
        // second copy of it and add a copy to every read and write (see docs/tmpfs.md).
        Ok(Opened {
            fh,
            passthrough: None,
            keep_cache: true,
            direct_io: true,
        })
    }
}

impl Drop for MemFs {
    /// A dropped volume gives its memory back to the system at once (at its last unmount).
    fn drop(&mut self) {
        self.tree.get_mut().nodes.clear();
        crate::sys::heap::release_free_memory();
    }
}

fn time(t: TimeSet) -> SystemTime {
    match t {
        TimeSet::Now => SystemTime::now(),
        TimeSet::At(t) => t,
    }
}

#[cfg(test)]
mod tests;
