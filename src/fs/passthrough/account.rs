//! Keeping the quota's usage equal to the sum of allocated bytes of the volume's inodes, each
//! counted once (as `du` does), and the inode count equal to the number of inodes.
use std::ffi::{OsStr, OsString};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};

use nix::errno::Errno;
use nix::fcntl::AtFlags;
use nix::fcntl::{OFlag, openat};
use nix::sys::stat::{FileStat, Mode, fstat, fstatat};
use parking_lot::{Mutex, MutexGuard};
use std::collections::HashSet;

use super::PassthroughFs;
use super::inodes::{HostKey, Inode, NodeFd, allocated_bytes};
use crate::fs::{FsError, FsResult, UsageSnapshot};
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
            if now != *bytes {
                inode.note_accounted(Some(now));
            }
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

    /// A name of the host inode open as `victim` was just removed (under its removal lock,
    /// see `RemovalLocks`). If that was its last name, its space comes back now, unless a
    /// handle of it is open (then at the last close). Its node, if the kernel still names one,
    /// answers `ENOENT` once the space is back: nothing can reopen it and write uncounted.
    /// `kept`: the node `keep_before_removal` kept for a successor, to let go of if the inode
    /// still has a name.
    pub(super) fn lost_name(&self, victim: OwnedFd, kept: Option<Arc<Inode>>) -> FsResult<()> {
        let st = fstat(&victim)?;
        if st.st_nlink > 0 {
            if let Some(node) = kept {
                self.unkeep(&node);
            }
            return Ok(());
        }
        let freed = match self.inodes.node_of(victim.as_fd(), &st) {
            Some(node) => {
                self.allocation_taken(&node);
                node.mark_removed();
                if node.open_handles.load(Ordering::SeqCst) > 0 {
                    self.nameless.add(&node);
                    self.quota.expect_release();
                    self.keep_for_successor(&node, victim.as_fd());
                }
                self.take_if_unopened(&node)
            }
            None => Some(Freed {
                bytes: allocated_bytes(&st),
                node: None,
            }),
        };
        // Closing `victim` (and the node's descriptor, if taken) frees the inode on the host.
        drop(victim);
        if let Some(freed) = freed {
            self.give_back(freed);
        }
        Ok(())
    }

    /// Counts one more open handle of `inode`, whose host file the caller just opened; refused
    /// (`NotFound`) if the inode lost its last name and its space was given back, so no open
    /// slips in between that and `take_if_unopened`.
    pub(super) fn count_open(&self, inode: &Inode) -> FsResult<()> {
        let accounted = inode.accounted.lock();
        if inode.is_removed() && accounted.is_none() {
            return Err(FsError::NotFound);
        }
        inode.open_handles.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    /// One open handle of `inode` less; `file` is its descriptor, still open. At the last
    /// close a name removed behind fvol's back (a `mount=` directory) is noticed too. Returns
    /// the space of an inode that has no name left, for `give_back` once `file` is closed.
    #[must_use]
    pub(super) fn count_close(&self, inode: &Arc<Inode>, file: BorrowedFd<'_>) -> Option<Freed> {
        if inode.open_handles.fetch_sub(1, Ordering::SeqCst) != 1 {
            return None;
        }
        if !inode.is_removed() && fstat(file).is_ok_and(|st| st.st_nlink == 0) {
            inode.mark_removed();
        }
        self.take_if_unopened(inode)
    }

    /// Takes the space of an inode that has no name and no open handle, exactly once, and its
    /// node's descriptor (the host frees the inode when its last descriptor closes). Runs
    /// under `accounted`, as `count_open` does.
    fn take_if_unopened(&self, inode: &Arc<Inode>) -> Option<Freed> {
        let mut accounted = inode.accounted.lock();
        if !inode.is_removed() || inode.open_handles.load(Ordering::SeqCst) > 0 {
            return None;
        }
        let bytes = accounted.take()?;
        inode.note_accounted(None);
        Some(Freed {
            bytes,
            node: Some((inode.clone(), inode.take_fd())),
        })
    }

    /// Gives the space of a freed inode back to the quota, after closing the node's
    /// descriptor. The caller closed its own descriptors of the inode first: the host frees
    /// the inode when the last one closes, which waits for its writeback in flight, so space
    /// given back any earlier could be written again while the host still holds it. A settle
    /// pass holding a descriptor of it gives the space back when it closes that.
    pub(super) fn give_back(&self, freed: Freed) {
        let bytes = match freed.node {
            Some((inode, node_fd)) => {
                drop(node_fd);
                // The keeper's descriptor of it too (kept for a successor while it was open).
                self.unkeep(&inode);
                inode.settle.give_back_now(freed.bytes)
            }
            None => Some(freed.bytes),
        };
        if let Some(bytes) = bytes {
            self.quota.adjust(-(bytes as i64), -1);
        }
    }

    /// Before a removal of a name of the host inode open as `victim` (stat `st`, under its
    /// removal lock): if that is its last name and the inode is open, a descriptor of it goes
    /// to the keeper first, so that it outlives this handler even if it dies right after the
    /// removal. Returns the node kept (`lost_name` lets go of it if a name is left).
    pub(super) fn keep_before_removal(
        &self,
        victim: BorrowedFd<'_>,
        st: &FileStat,
    ) -> Option<Arc<Inode>> {
        if st.st_nlink != 1 || st.st_mode & libc::S_IFMT == libc::S_IFDIR {
            return None;
        }
        let node = self.inodes.open_node_of_key(Inode::key_of(st))?;
        self.keep_for_successor(&node, victim);
        Some(node)
    }

    /// Lets go of what `keep_for_successor` kept of `node`.
    pub(super) fn unkeep(&self, node: &Inode) {
        if node.kept.swap(false, Ordering::SeqCst) {
            self.holder.release(node.ino);
        }
    }

    /// An open inode loses its last name: it lives only as long as a descriptor of it, so one
    /// is kept for the next handler too (the keeper's), until its last close.
    fn keep_for_successor(&self, node: &Inode, fd: BorrowedFd<'_>) {
        if node.kept.swap(true, Ordering::SeqCst) {
            return;
        }
        if let Err(e) = self.holder.hold(node.ino, fd) {
            node.kept.store(false, Ordering::SeqCst);
            log::warn!(
                "keeping open inode {} without a name for the next handler: {e}; it will not \
                 survive a restart of the daemon",
                node.ino
            );
        }
    }

    /// Counts nodes of inodes without a name that a predecessor kept open (see
    /// `InodeTable::resume`): `fresh` when the usage was rescanned, which cannot see them.
    pub(super) fn adopt_nameless(&self, nodes: &[Arc<Inode>], fresh: bool) {
        for node in nodes {
            if fresh && let Some(bytes) = *node.accounted.lock() {
                self.quota.adjust(bytes as i64, 1);
            }
            self.nameless.add(node);
        }
    }

    /// Usage once this session is over: without the nameless inodes, which go with it.
    pub(super) fn usage_without_nameless(&self) -> UsageSnapshot {
        let (bytes, inodes) = self.nameless.counted();
        let used = self.quota.usage();
        UsageSnapshot {
            bytes: used.bytes.saturating_sub(bytes),
            inodes: used.inodes.saturating_sub(inodes),
        }
    }
}

/// The space of an inode that has no name and no open handle left, taken from its node: given
/// back to the quota (`PassthroughFs::give_back`) once every descriptor of it is closed.
#[must_use]
pub(super) struct Freed {
    bytes: u64,
    /// Its node, and the node's descriptor.
    node: Option<(Arc<Inode>, Option<NodeFd>)>,
}

/// Locks by host inode, held around the removal of a name and the look at the link count
/// after it: of concurrent removals of an inode's names, exactly one sees the last one go.
pub(super) struct RemovalLocks {
    shards: Vec<Mutex<()>>,
}

impl Default for RemovalLocks {
    fn default() -> Self {
        RemovalLocks {
            shards: (0..64).map(|_| Mutex::new(())).collect(),
        }
    }
}

impl RemovalLocks {
    /// The lock of the inode `key` (stable while a descriptor of the inode is open).
    pub(super) fn lock(&self, key: HostKey) -> MutexGuard<'_, ()> {
        let mix = (key.0 ^ key.1.rotate_left(17)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        self.shards[(mix >> 58) as usize % self.shards.len()].lock()
    }
}

/// The nodes whose inode has no name but is still counted (a handle is open), to leave them
/// out of the usage recorded when the volume stops.
#[derive(Default)]
pub(super) struct Nameless {
    nodes: Mutex<Vec<Weak<Inode>>>,
}

impl Nameless {
    fn add(&self, inode: &Arc<Inode>) {
        let mut nodes = self.nodes.lock();
        if nodes.len() >= 64 && nodes.len().is_power_of_two() {
            nodes.retain(|n| n.upgrade().is_some_and(|n| n.accounted.lock().is_some()));
        }
        nodes.push(Arc::downgrade(inode));
    }

    /// Bytes and inodes the nameless nodes hold in the quota now.
    fn counted(&self) -> (u64, u64) {
        let nodes = self.nodes.lock();
        let mut seen = HashSet::new();
        let (mut bytes, mut inodes) = (0, 0);
        for node in nodes.iter().filter_map(Weak::upgrade) {
            if let Some(b) = *node.accounted.lock()
                && seen.insert(Arc::as_ptr(&node))
            {
                bytes += b;
                inodes += 1;
            }
        }
        (bytes, inodes)
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
