//! Node ids by host identity: one node id per (dev, ino), so hard links share a node.
//!
//! Invariant: an entry holds an O_PATH descriptor of its host inode, so the host cannot reuse
//! that inode number while the kernel may still name the node. Entries leave the table only
//! when the kernel forgets its last lookup.
use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use nix::sys::stat::FileStat;
use parking_lot::{Mutex, RwLock};

use crate::fs::{FsError, FsResult, Ino, ROOT_INO};

/// Host identity of an inode.
pub type HostKey = (u64, u64);

/// Node ids of inodes on another device, or colliding with the root's id, start here.
const SYNTHETIC_BASE: u64 = 1 << 63;

pub struct Inode {
    pub ino: Ino,
    /// O_PATH | O_NOFOLLOW descriptor of the host inode.
    pub fd: OwnedFd,
    pub key: HostKey,
    lookups: AtomicU64,
    /// Bytes of this inode counted in the quota; None once its space was given back. The lock
    /// also serializes re-accounting, so successive deltas add up to the real allocation.
    pub accounted: Mutex<Option<u64>>,
    /// Open file handles; an unlinked inode gives its space back when this reaches 0.
    pub open_files: AtomicU32,
}

impl Inode {
    pub fn key_of(st: &FileStat) -> HostKey {
        (st.st_dev, st.st_ino)
    }
}

#[derive(Default)]
struct Tables {
    by_ino: HashMap<Ino, Arc<Inode>>,
    by_key: HashMap<HostKey, Ino>,
}

pub struct InodeTable {
    tables: RwLock<Tables>,
    root_key: HostKey,
    next_synthetic: AtomicU64,
}

impl InodeTable {
    pub fn new(root_fd: OwnedFd, root: &FileStat) -> InodeTable {
        let key = Inode::key_of(root);
        let inode = Arc::new(Inode {
            ino: ROOT_INO,
            fd: root_fd,
            key,
            lookups: AtomicU64::new(1),
            accounted: Mutex::new(Some(allocated_bytes(root))),
            open_files: AtomicU32::new(0),
        });
        let mut tables = Tables::default();
        tables.by_ino.insert(ROOT_INO, inode);
        tables.by_key.insert(key, ROOT_INO);
        InodeTable {
            tables: RwLock::new(tables),
            root_key: key,
            next_synthetic: AtomicU64::new(SYNTHETIC_BASE),
        }
    }

    pub fn get(&self, ino: Ino) -> FsResult<Arc<Inode>> {
        self.tables
            .read()
            .by_ino
            .get(&ino)
            .cloned()
            .ok_or(FsError::Stale)
    }

    /// The node id the host inode has, or would get, without adding a lookup.
    pub fn peek_ino(&self, key: HostKey) -> Option<Ino> {
        self.tables.read().by_key.get(&key).copied()
    }

    /// The node id readdir shows for a host inode that is not in the table.
    pub fn ino_hint(&self, key: HostKey) -> Ino {
        self.peek_ino(key)
            .unwrap_or_else(|| self.direct_ino(key).unwrap_or(0))
    }

    /// Host inode numbers of the root's device serve as node ids directly, so `st_ino` stays
    /// stable across remounts; other devices and collisions get synthetic ids.
    fn direct_ino(&self, key: HostKey) -> Option<Ino> {
        let (dev, ino) = key;
        (dev == self.root_key.0 && ino != ROOT_INO && ino < SYNTHETIC_BASE).then_some(ino)
    }

    /// Adds one lookup of the host inode behind `fd`, inserting it if new. The returned bool is
    /// true when the inode was not in the table.
    pub fn lookup_ref(&self, fd: OwnedFd, st: &FileStat) -> (Arc<Inode>, bool) {
        let key = Inode::key_of(st);
        // Known inode: a read lock suffices, since `forget` decrements and removes only under
        // the write lock, so it cannot drop the entry between the find and the increment.
        {
            let t = self.tables.read();
            if let Some(inode) = t.by_key.get(&key).map(|ino| &t.by_ino[ino]) {
                inode.lookups.fetch_add(1, Ordering::Relaxed);
                return (inode.clone(), false);
            }
        }
        let mut t = self.tables.write();
        if let Some(ino) = t.by_key.get(&key) {
            let inode = t.by_ino[ino].clone();
            inode.lookups.fetch_add(1, Ordering::Relaxed);
            return (inode, false);
        }
        let ino = self
            .direct_ino(key)
            .filter(|ino| !t.by_ino.contains_key(ino))
            .unwrap_or_else(|| self.next_synthetic.fetch_add(1, Ordering::Relaxed));
        let inode = Arc::new(Inode {
            ino,
            fd,
            key,
            lookups: AtomicU64::new(1),
            accounted: Mutex::new(Some(allocated_bytes(st))),
            open_files: AtomicU32::new(0),
        });
        t.by_ino.insert(ino, inode.clone());
        t.by_key.insert(key, ino);
        (inode, true)
    }

    pub fn forget(&self, ino: Ino, n: u64) {
        if ino == ROOT_INO {
            return;
        }
        let mut t = self.tables.write();
        let Some(inode) = t.by_ino.get(&ino) else {
            return;
        };
        let left = inode.lookups.load(Ordering::Relaxed).saturating_sub(n);
        inode.lookups.store(left, Ordering::Relaxed);
        if left == 0 {
            let key = inode.key;
            t.by_ino.remove(&ino);
            t.by_key.remove(&key);
        }
    }
}

/// Bytes allocated to an inode, as `du` counts them.
pub fn allocated_bytes(st: &FileStat) -> u64 {
    (st.st_blocks as u64) * 512
}
