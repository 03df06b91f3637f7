//! Node ids by host identity: one node id per host inode, so hard links share a node.
//!
//! A node's identity is `(st_dev, st_ino)` plus the inode's file handle, which includes its
//! generation. A node holds an O_PATH descriptor only while it is hot (see `fdcache`); a cold
//! node is reopened from its handle, and a handle whose inode was freed gives `ESTALE`. Nodes
//! whose host gives no usable handle (another device or mount, a filesystem without handles)
//! are pinned: they hold their descriptor for as long as they are in the table.
//!
//! A cold node whose host inode is gone answers `ENOENT` if fvol removed its last name (as a
//! removed directory does on any filesystem), and `ESTALE` if it vanished behind fvol's back;
//! on `ESTALE` the kernel looks the path up again and finds what the name holds now. A node
//! whose inode lost its last name with no handle open gives up its descriptor (pinned or not)
//! when its space is given back, so it is gone from then on (see `account`).
//!
//! Invariants:
//! - Entries leave the table only when the kernel forgets its last lookup.
//! - While a node holds a descriptor, the host cannot reuse its inode number. So a host inode
//!   that is open at the same moment as a hot or pinned node with its `(dev, ino)` is that
//!   node's; against a cold node, the handles decide. A new inode that reuses the number of a
//!   cold node the kernel still names gets a node of its own (and the key), and the old node
//!   answers `ESTALE`.
use std::collections::HashMap;
use std::ffi::{CString, OsStr};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

use nix::errno::Errno;
use nix::fcntl::{AT_FDCWD, OFlag, openat};
use nix::sys::stat::{FileStat, Mode};
use parking_lot::{Mutex, RwLock};

use super::allocated::Allocated;
use super::fdcache::FdCache;
use super::settle::SettleState;
use crate::fs::resume::{Slot, Table};
use crate::fs::{FsError, FsResult, Ino, ROOT_INO};
use crate::sys::handle::{HostHandle, name_to_handle_at, open_by_handle_at};
use crate::sys::proc_fd_path;

/// Host identity of an inode, up to reuse of its number (see the module's invariants).
pub type HostKey = (u64, u64);

/// A node's O_PATH descriptor; a user keeps it open even if the node loses it meanwhile.
pub type NodeFd = Arc<OwnedFd>;

/// Node ids of inodes on another device, or colliding with the root's id or a node the
/// kernel still names, start here.
const SYNTHETIC_BASE: u64 = 1 << 63;

/// The fields of a node's record in the journal a successor restores nodes from: enough to
/// find its host inode again (key and file handle), the kernel's lookups, and its state in the
/// quota.
pub mod journal {
    pub const INO: usize = 0;
    pub const LOOKUPS: usize = 1;
    pub const DEV: usize = 2;
    pub const HOST_INO: usize = 3;
    /// Bytes counted in the quota, `NONE` once given back.
    pub const ACCOUNTED: usize = 4;
    pub const FLAGS: usize = 5;
    /// The handle's type (high 32 bits) and length in bytes.
    pub const HANDLE_META: usize = 6;
    pub const HANDLE: usize = 7;
    const HANDLE_WORDS: usize = 16;
    pub const FIELDS: usize = HANDLE + HANDLE_WORDS;
    pub const NONE: u64 = u64::MAX;
    /// FLAGS: the inode has no name left.
    pub const REMOVED: u64 = 1;
    /// Nodes recorded at most (the kernel's cached inodes of one volume).
    pub const CAPACITY: u32 = 1 << 22;

    /// The handle as record words, if it fits.
    pub fn handle_words(kind: i32, bytes: &[u8]) -> Option<[u64; HANDLE_WORDS + 1]> {
        if bytes.len() > HANDLE_WORDS * 8 {
            return None;
        }
        let mut words = [0u64; HANDLE_WORDS + 1];
        words[0] = (u64::from(kind as u32) << 32) | bytes.len() as u64;
        for (i, chunk) in bytes.chunks(8).enumerate() {
            let mut w = [0u8; 8];
            w[..chunk.len()].copy_from_slice(chunk);
            words[1 + i] = u64::from_le_bytes(w);
        }
        Some(words)
    }

    /// The handle's type and bytes from a record's fields.
    pub fn handle_of(fields: &[u64]) -> (i32, Vec<u8>) {
        let meta = fields[HANDLE_META];
        let len = ((meta & 0xffff_ffff) as usize).min(HANDLE_WORDS * 8);
        let bytes: Vec<u8> = fields[HANDLE..HANDLE + HANDLE_WORDS]
            .iter()
            .flat_map(|w| w.to_le_bytes())
            .take(len)
            .collect();
        ((meta >> 32) as u32 as i32, bytes)
    }
}

pub struct Inode {
    pub ino: Ino,
    pub key: HostKey,
    /// How to reopen the host inode; None pins the descriptor.
    handle: Option<HostHandle>,
    /// The O_PATH | O_NOFOLLOW descriptor while hot (always, when pinned).
    fd: Mutex<Option<NodeFd>>,
    /// Used since the cache last looked (see `fdcache`).
    pub(super) referenced: AtomicBool,
    /// The inode has no name left (fvol removed the last one, or found it gone at a close).
    removed: AtomicBool,
    lookups: AtomicU64,
    /// Bytes of this inode counted in the quota; None once its space was given back. The lock
    /// also serializes re-accounting, so successive deltas add up to the real allocation, and
    /// opens against giving the space back (see `PassthroughFs::count_open`).
    pub accounted: Mutex<Option<u64>>,
    /// Open file and directory handles.
    pub open_handles: AtomicU32,
    /// Its record in the table a successor restores nodes from (see `journal`).
    record: Option<Record>,
    /// A descriptor of it is kept for a successor (it has no name but is open).
    pub kept: AtomicBool,
    /// Whether the host may still change its allocation unseen (see `settle`).
    pub settle: SettleState,
    /// Ranges known to be allocated on the host (see `allocated`).
    pub allocated: Allocated,
}

/// What `InodeTable::resume` rebuilt.
pub struct Resumed {
    /// Nodes of inodes without a name that were kept open for this handler.
    pub nameless: Vec<Arc<Inode>>,
    pub nodes: usize,
    /// The nodes that count space: the host may still allocate for them (a predecessor's
    /// writes whose writeback is not done), so they are settled again (see `settle`).
    pub counted: Vec<Arc<Inode>>,
    /// Kept descriptors no node needed: to be dropped.
    pub unused: Vec<Ino>,
}

/// A node's record in the journal.
struct Record {
    table: Arc<Table>,
    slot: Slot,
}

impl Inode {
    pub fn key_of(st: &FileStat) -> HostKey {
        (st.st_dev, st.st_ino)
    }

    fn new(
        ino: Ino,
        st: &FileStat,
        fd: OwnedFd,
        handle: Option<HostHandle>,
        record: Option<Record>,
    ) -> Inode {
        Inode {
            ino,
            key: Inode::key_of(st),
            handle,
            fd: Mutex::new(Some(Arc::new(fd))),
            referenced: AtomicBool::new(false),
            removed: AtomicBool::new(false),
            lookups: AtomicU64::new(1),
            accounted: Mutex::new(Some(allocated_bytes(st))),
            open_handles: AtomicU32::new(0),
            record,
            kept: AtomicBool::new(false),
            settle: SettleState::default(),
            allocated: Allocated::default(),
        }
    }

    /// One more kernel lookup.
    fn add_lookup(&self) {
        self.lookups.fetch_add(1, Ordering::Relaxed);
        if let Some(r) = &self.record {
            r.table.add(r.slot, journal::LOOKUPS, 1);
        }
    }

    /// Records the bytes the node counts in the quota (None: given back), for a successor.
    /// Called under `accounted`.
    pub fn note_accounted(&self, bytes: Option<u64>) {
        if let Some(r) = &self.record {
            r.table
                .set(r.slot, journal::ACCOUNTED, bytes.unwrap_or(journal::NONE));
        }
    }

    /// The descriptor if the node holds one, marking it used.
    fn cached_fd(&self) -> Option<NodeFd> {
        let fd = self.fd.lock().clone();
        if fd.is_some() && !self.referenced.load(Ordering::Relaxed) {
            self.referenced.store(true, Ordering::Relaxed);
        }
        fd
    }

    /// True while the node's host inode cannot be freed (it holds a descriptor).
    fn holds_fd(&self) -> bool {
        self.fd.lock().is_some()
    }

    /// Gives `fd` to a node that holds none; returns the node's descriptor and whether it
    /// took `fd` (and so needs admitting to the cache).
    fn install(&self, fd: OwnedFd) -> (NodeFd, bool) {
        let mut slot = self.fd.lock();
        match &*slot {
            Some(held) => (held.clone(), false),
            None => {
                let fd = Arc::new(fd);
                *slot = Some(fd.clone());
                (fd, true)
            }
        }
    }

    /// Takes the node's descriptor unless pinned; it closes when its last user drops it.
    pub(super) fn release_fd(&self) -> Option<NodeFd> {
        self.handle.as_ref()?;
        self.fd.lock().take()
    }

    /// Records that the inode has no name left.
    pub fn mark_removed(&self) {
        self.removed.store(true, Ordering::SeqCst);
        if let Some(r) = &self.record {
            r.table.set(r.slot, journal::FLAGS, journal::REMOVED);
        }
    }

    pub fn is_removed(&self) -> bool {
        self.removed.load(Ordering::SeqCst)
    }

    /// Takes the descriptor of a node whose inode lost its last name and its space (even a
    /// pinned one's): closing it lets the host free the inode, and the node no longer opens.
    pub fn take_fd(&self) -> Option<NodeFd> {
        self.fd.lock().take()
    }

    /// The error for a handle that no longer opens (see the module's doc).
    fn gone(&self, e: Errno) -> FsError {
        match e {
            Errno::ESTALE if self.removed.load(Ordering::Relaxed) => FsError::NotFound,
            e => FsError::Os(e),
        }
    }

    /// True if `handle` (of a host inode open now, with this node's key) names this node's
    /// inode.
    fn is(&self, handle: Option<&HostHandle>) -> bool {
        self.holds_fd() || (handle.is_some() && self.handle.as_ref() == handle)
    }
}

#[derive(Default)]
struct Tables {
    by_ino: HashMap<Ino, Arc<Inode>>,
    /// The node of each host key; a node that lost its key to a reuse stays in `by_ino`.
    by_key: HashMap<HostKey, Ino>,
}

pub struct InodeTable {
    tables: RwLock<Tables>,
    root_key: HostKey,
    next_synthetic: AtomicU64,
    /// A readable descriptor of the root, for `open_by_handle_at` (which refuses O_PATH ones).
    mount_fd: OwnedFd,
    /// The mount whose handles `mount_fd` opens; None when the host gives no handles.
    mount_id: Option<i32>,
    cache: Arc<FdCache>,
    /// Where nodes are recorded for a successor; None when the volume does not outlive its
    /// handler.
    journal: Option<Arc<Table>>,
}

impl InodeTable {
    pub fn new(root_fd: OwnedFd, root: &FileStat, cache: Arc<FdCache>) -> FsResult<InodeTable> {
        let key = Inode::key_of(root);
        let mount_fd = openat(
            AT_FDCWD,
            proc_fd_path(root_fd.as_fd()).as_c_str(),
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )?;
        // Handles are used only if the root's own handle opens again (that needs
        // CAP_DAC_READ_SEARCH, which a container may not grant).
        let probe = name_to_handle_at(root_fd.as_fd(), c"").and_then(|(handle, id)| {
            open_by_handle_at(mount_fd.as_fd(), &handle, OFlag::O_PATH | OFlag::O_CLOEXEC)
                .map(|_| id)
        });
        let mount_id = match probe {
            Ok(id) => Some(id),
            Err(e) => {
                log::warn!("file handles unusable here ({e}): every node keeps a descriptor open");
                None
            }
        };
        let root_node = Arc::new(Inode::new(ROOT_INO, root, root_fd, None, None));
        let mut tables = Tables::default();
        tables.by_ino.insert(ROOT_INO, root_node);
        tables.by_key.insert(key, ROOT_INO);
        Ok(InodeTable {
            tables: RwLock::new(tables),
            root_key: key,
            next_synthetic: AtomicU64::new(SYNTHETIC_BASE),
            mount_fd,
            mount_id,
            cache,
            journal: None,
        })
    }

    /// Records new nodes in `journal` from now on, for a successor (see `fs::resume`).
    pub fn record_into(&mut self, journal: Table) {
        self.journal = Some(Arc::new(journal));
    }

    /// A record of a new node, if nodes are recorded and this one can be found again.
    fn record_new(&self, ino: Ino, st: &FileStat, handle: Option<&HostHandle>) -> Option<Record> {
        let table = self.journal.as_ref()?;
        let (kind, bytes) = handle?.parts();
        let Some(words) = journal::handle_words(kind, bytes) else {
            log::debug!(
                "inode {}: a {}-byte handle is not recorded",
                st.st_ino,
                bytes.len()
            );
            return None;
        };
        let mut fields = [0u64; journal::FIELDS];
        fields[journal::INO] = ino;
        fields[journal::LOOKUPS] = 1;
        fields[journal::DEV] = st.st_dev;
        fields[journal::HOST_INO] = st.st_ino;
        fields[journal::ACCOUNTED] = allocated_bytes(st);
        fields[journal::HANDLE_META..].copy_from_slice(&words);
        let slot = table.insert(&fields)?;
        Some(Record {
            table: table.clone(),
            slot,
        })
    }

    /// Rebuilds the nodes a predecessor recorded in `journal` (cold: without descriptors) and
    /// records new ones there from now on. With `fresh` (the usage was rescanned), each node's
    /// allocation is read again; otherwise the recorded counts stand (the usage was handed over
    /// exactly). A node whose inode is gone answers `ENOENT` from now on. `held` are
    /// descriptors kept of inodes without a name but open: their nodes get them.
    pub fn resume(
        &mut self,
        journal: Table,
        fresh: bool,
        mut held: std::collections::HashMap<Ino, OwnedFd>,
    ) -> Resumed {
        let table = Arc::new(journal);
        let mut tables = self.tables.write();
        let mut nameless = Vec::new();
        let mut counted = Vec::new();
        let mut unused = Vec::new();
        let mut count = 0;
        for (slot, f) in table.records() {
            let ino = f[journal::INO];
            let (kind, bytes) = journal::handle_of(&f);
            let handle = HostHandle::from_parts(kind, &bytes);
            if ino == 0 || ino == ROOT_INO || tables.by_ino.contains_key(&ino) || handle.is_none() {
                table.remove(slot);
                continue;
            }
            let mut kept_fd = held.remove(&ino);
            let mut removed = f[journal::FLAGS] & journal::REMOVED != 0;
            let mut accounted = match f[journal::ACCOUNTED] {
                journal::NONE => None,
                bytes => Some(bytes),
            };
            if fresh {
                let flags = OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
                let opened = match &kept_fd {
                    Some(fd) => nix::unistd::dup(fd).map_err(FsError::from),
                    None => {
                        open_by_handle_at(self.mount_fd.as_fd(), handle.as_ref().unwrap(), flags)
                            .map_err(FsError::from)
                    }
                };
                let st = opened.and_then(|fd| Ok(nix::sys::stat::fstat(&fd)?));
                match st {
                    // Without a name and not kept, it goes with the descriptor just closed.
                    Ok(st) if st.st_nlink > 0 || kept_fd.is_some() => {
                        accounted = Some(allocated_bytes(&st));
                        removed = st.st_nlink == 0;
                        // Kept before a removal the crash cut short: it still has a name.
                        if !removed && let Some(fd) = kept_fd.take() {
                            drop(fd);
                            unused.push(ino);
                        }
                    }
                    _ => {
                        accounted = None;
                        removed = true;
                    }
                }
            }
            table.set(slot, journal::ACCOUNTED, accounted.unwrap_or(journal::NONE));
            table.set(
                slot,
                journal::FLAGS,
                if removed { journal::REMOVED } else { 0 },
            );
            let key = (f[journal::DEV], f[journal::HOST_INO]);
            let inode = Arc::new(Inode {
                ino,
                key,
                handle,
                fd: Mutex::new(kept_fd.map(Arc::new)),
                referenced: AtomicBool::new(false),
                removed: AtomicBool::new(removed),
                lookups: AtomicU64::new(f[journal::LOOKUPS]),
                accounted: Mutex::new(accounted),
                open_handles: AtomicU32::new(0),
                record: Some(Record {
                    table: table.clone(),
                    slot,
                }),
                kept: AtomicBool::new(false),
                settle: SettleState::default(),
                allocated: Allocated::default(),
            });
            if inode.holds_fd() {
                inode.kept.store(true, Ordering::Relaxed);
                nameless.push(inode.clone());
            }
            if accounted.is_some() {
                counted.push(inode.clone());
            }
            // Of two nodes of one key (a reused number), the one with a name owns it.
            let owner = tables
                .by_key
                .get(&key)
                .map(|i| tables.by_ino[i].is_removed());
            if owner.is_none_or(|owner_removed| owner_removed && !removed) {
                tables.by_key.insert(key, ino);
            }
            if ino >= SYNTHETIC_BASE {
                self.next_synthetic.fetch_max(ino + 1, Ordering::Relaxed);
            }
            tables.by_ino.insert(ino, inode);
            count += 1;
        }
        drop(tables);
        self.journal = Some(table);
        Resumed {
            nameless,
            nodes: count,
            counted,
            // Kept for nodes the kernel forgot meanwhile: nothing needs them now.
            unused: unused.into_iter().chain(held.into_keys()).collect(),
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

    /// The node's O_PATH descriptor, reopened from its handle if the node is cold (`ESTALE`
    /// if its host inode is gone).
    pub fn fd(&self, inode: &Arc<Inode>) -> FsResult<NodeFd> {
        if let Some(fd) = inode.cached_fd() {
            return Ok(fd);
        }
        let handle = inode.handle.as_ref().ok_or(inode.gone(Errno::ESTALE))?;
        let flags = OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        let fd = self
            .cache
            .retry_emfile(|| open_by_handle_at(self.mount_fd.as_fd(), handle, flags))
            .map_err(|e| inode.gone(e))?;
        let (fd, taken) = inode.install(fd);
        if taken {
            self.cache.admit(inode);
        }
        Ok(fd)
    }

    /// Opens the node's host inode for I/O with `flags` (from its descriptor when hot, from
    /// its handle otherwise, which leaves the cache alone).
    pub fn open(&self, inode: &Inode, flags: OFlag) -> FsResult<OwnedFd> {
        let flags = flags | OFlag::O_CLOEXEC;
        let fd = match (inode.cached_fd(), &inode.handle) {
            (Some(fd), _) => {
                let path = proc_fd_path(fd.as_fd());
                self.cache
                    .retry_emfile(|| openat(AT_FDCWD, path.as_c_str(), flags, Mode::empty()))?
            }
            (None, Some(handle)) => self
                .cache
                .retry_emfile(|| open_by_handle_at(self.mount_fd.as_fd(), handle, flags))
                .map_err(|e| inode.gone(e))?,
            (None, None) => return Err(inode.gone(Errno::ESTALE)),
        };
        Ok(fd)
    }

    /// Runs `open`, giving back cached descriptors if the process has none left.
    pub fn retry_emfile<T>(&self, open: impl FnMut() -> Result<T, Errno>) -> Result<T, Errno> {
        self.cache.retry_emfile(open)
    }

    /// Opens `name` in `dir` as an O_PATH descriptor (not following a symlink).
    pub fn open_path(&self, dir: BorrowedFd<'_>, name: &OsStr) -> FsResult<OwnedFd> {
        let flags = OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        Ok(self.retry_emfile(|| openat(dir, name, flags, Mode::empty()))?)
    }

    /// The node id the host inode has, or would get, without adding a lookup. It may be a
    /// stale node's whose number the host reused: a hint, for readdir.
    fn peek_ino(&self, key: HostKey) -> Option<Ino> {
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

    /// The handle that lets a node of this host inode give up its descriptor; None pins it.
    fn handle_for(&self, dir: BorrowedFd<'_>, name: &OsStr, st: &FileStat) -> Option<HostHandle> {
        let mount_id = self.mount_id?;
        if st.st_dev != self.root_key.0 {
            return None;
        }
        let name = CString::new(name.as_bytes()).ok()?;
        match name_to_handle_at(dir, &name) {
            Ok((handle, id)) if id == mount_id => Some(handle),
            Ok(_) => None, // another mount of the same filesystem
            Err(e) => {
                log::debug!(
                    "no handle for inode {} ({e}): its descriptor stays open",
                    st.st_ino
                );
                None
            }
        }
    }

    /// Adds one lookup of the host inode open as `fd` (with stat `st`), inserting a node if
    /// it has none. The returned bool is true when the node is new.
    pub fn lookup_ref(&self, fd: OwnedFd, st: &FileStat) -> (Arc<Inode>, bool) {
        let key = Inode::key_of(st);
        // A hot node of the key is this inode, as `fd` is open too. A read lock suffices:
        // `forget` decrements and removes only under the write lock.
        {
            let t = self.tables.read();
            if let Some(inode) = t.by_key.get(&key).map(|ino| &t.by_ino[ino]) {
                if inode.cached_fd().is_some() {
                    inode.add_lookup();
                    return (inode.clone(), false);
                }
            }
        }
        let handle = self.handle_for(fd.as_fd(), OsStr::new(""), st);
        let (inode, new) = {
            let mut t = self.tables.write();
            match t.by_key.get(&key).map(|ino| t.by_ino[ino].clone()) {
                Some(inode) if inode.is(handle.as_ref()) => {
                    inode.add_lookup();
                    (inode, false)
                }
                // None, or a cold node of a freed inode whose number the host reused.
                _ => {
                    let ino = self
                        .direct_ino(key)
                        .filter(|ino| !t.by_ino.contains_key(ino))
                        .unwrap_or_else(|| self.next_synthetic.fetch_add(1, Ordering::Relaxed));
                    let record = self.record_new(ino, st, handle.as_ref());
                    let inode = Arc::new(Inode::new(ino, st, fd, handle, record));
                    t.by_ino.insert(ino, inode.clone());
                    t.by_key.insert(key, ino);
                    return self.admitted(inode, true);
                }
            }
        };
        // A cold node found again: `fd` makes it hot.
        if inode.install(fd).1 {
            self.cache.admit(&inode);
        }
        (inode, new)
    }

    fn admitted(&self, inode: Arc<Inode>, new: bool) -> (Arc<Inode>, bool) {
        if inode.handle.is_some() {
            self.cache.admit(&inode);
        }
        (inode, new)
    }

    /// The node of the host inode open as `fd` (stat `st`), if the table has one. The open
    /// `fd` keeps the inode, and so its number, alive: a node holding a descriptor with its
    /// key is the same inode, and against a cold one the handles decide.
    pub fn node_of(&self, fd: BorrowedFd<'_>, st: &FileStat) -> Option<Arc<Inode>> {
        let inode = {
            let t = self.tables.read();
            t.by_ino.get(t.by_key.get(&Inode::key_of(st))?)?.clone()
        };
        if inode.holds_fd() {
            return Some(inode);
        }
        let handle = self.handle_for(fd, OsStr::new(""), st);
        inode.is(handle.as_ref()).then_some(inode)
    }

    /// The node of host key `key` if it has a handle open: its inode is alive then (the handle
    /// holds it), so the key cannot name another inode meanwhile.
    pub fn open_node_of_key(&self, key: HostKey) -> Option<Arc<Inode>> {
        let t = self.tables.read();
        let inode = t.by_ino.get(t.by_key.get(&key)?)?;
        (inode.open_handles.load(Ordering::SeqCst) > 0).then(|| inode.clone())
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
        // An unsettled node stays until it is settled (`drop_if_forgotten`): a second node
        // of its inode would count it from a different re-read. Its record stays with it
        // (a lookup may find the node again).
        let stays = left > 0 || inode.settle.unsettled();
        if let Some(r) = &inode.record {
            match stays {
                false => r.table.remove(r.slot),
                true => r.table.set(r.slot, journal::LOOKUPS, left),
            }
        }
        if !stays {
            let key = inode.key;
            let gone = t.by_ino.remove(&ino);
            // The key may belong to a newer node already (a reused inode number).
            if t.by_key.get(&key) == Some(&ino) {
                t.by_key.remove(&key);
            }
            // Closing the last descriptor of an unlinked inode frees it on the host, which
            // takes a while: not under the lock.
            drop(t);
            drop(gone);
        }
    }
}

impl InodeTable {
    /// Drops the node the kernel forgot while it was unsettled, if it is still forgotten.
    pub fn drop_if_forgotten(&self, inode: &Arc<Inode>) {
        if inode.ino == ROOT_INO || inode.settle.unsettled() {
            return;
        }
        let mut t = self.tables.write();
        let ours = t
            .by_ino
            .get(&inode.ino)
            .is_some_and(|n| Arc::ptr_eq(n, inode));
        if !ours || inode.lookups.load(Ordering::Relaxed) > 0 {
            return;
        }
        t.by_ino.remove(&inode.ino);
        if t.by_key.get(&inode.key) == Some(&inode.ino) {
            t.by_key.remove(&inode.key);
        }
        if let Some(r) = &inode.record {
            r.table.remove(r.slot);
        }
    }
}

/// Bytes allocated to an inode, as `du` counts them.
pub fn allocated_bytes(st: &FileStat) -> u64 {
    (st.st_blocks as u64) * 512
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::fcntl::open;
    use nix::sys::stat::fstat;
    use std::path::Path;

    fn table(dir: &Path, capacity: usize) -> InodeTable {
        let flags = OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
        let root = open(dir, flags, Mode::empty()).unwrap();
        let st = fstat(&root).unwrap();
        InodeTable::new(root, &st, Arc::new(FdCache::new(capacity))).unwrap()
    }

    fn lookup(t: &InodeTable, name: &str) -> Arc<Inode> {
        let root = t.fd(&t.get(ROOT_INO).unwrap()).unwrap();
        let fd = t.open_path(root.as_fd(), OsStr::new(name)).unwrap();
        let st = fstat(&fd).unwrap();
        t.lookup_ref(fd, &st).0
    }

    fn host_ino(t: &InodeTable, inode: &Arc<Inode>) -> u64 {
        fstat(t.fd(inode).unwrap()).unwrap().st_ino
    }

    #[test]
    fn more_nodes_than_descriptors_keep_their_identity() {
        let dir = tempfile::tempdir().unwrap();
        let t = table(dir.path(), 4);
        if t.mount_id.is_none() {
            eprintln!("no file handles here: skipped");
            return; // no handles on this host filesystem: nodes are pinned
        }
        for i in 0..40 {
            std::fs::write(dir.path().join(format!("f{i}")), b"x").unwrap();
        }
        std::fs::hard_link(dir.path().join("f0"), dir.path().join("link")).unwrap();
        let first: Vec<_> = (0..40).map(|i| lookup(&t, &format!("f{i}"))).collect();
        assert!(t.cache.held() <= 4, "{} descriptors held", t.cache.held());
        assert!(first.iter().filter(|n| n.holds_fd()).count() <= 4);
        for (i, node) in first.iter().enumerate() {
            let again = lookup(&t, &format!("f{i}"));
            assert!(Arc::ptr_eq(node, &again), "f{i} got a second node");
            let by_path = nix::sys::stat::stat(&dir.path().join(format!("f{i}"))).unwrap();
            assert_eq!(host_ino(&t, node), by_path.st_ino);
            assert!(t.cache.held() <= 4);
        }
        assert!(Arc::ptr_eq(&lookup(&t, "link"), &first[0]));
    }

    #[test]
    fn a_reused_inode_number_gets_a_node_of_its_own() {
        let dir = tempfile::tempdir().unwrap();
        let t = table(dir.path(), 1);
        if t.mount_id.is_none() {
            return;
        }
        std::fs::write(dir.path().join("old"), b"old").unwrap();
        let old = lookup(&t, "old");
        for i in 0..3 {
            std::fs::write(dir.path().join(format!("other{i}")), b"").unwrap();
            lookup(&t, &format!("other{i}"));
        }
        assert!(!old.holds_fd(), "the old node should be cold");
        std::fs::remove_file(dir.path().join("old")).unwrap();
        let reused = (0..2000).find_map(|i| {
            let name = format!("new{i}");
            std::fs::write(dir.path().join(&name), b"new").unwrap();
            let st = nix::sys::stat::lstat(&dir.path().join(&name)).unwrap();
            (Inode::key_of(&st) == old.key).then_some(name)
        });
        let Some(name) = reused else {
            panic!("the host never reused inode {} in 2000 creates", old.key.1);
        };
        let new = lookup(&t, &name);
        assert!(!Arc::ptr_eq(&new, &old));
        assert_ne!(new.ino, old.ino);
        // Gone behind the table's back: stale; gone by a removal it was told of: not found.
        assert_eq!(t.fd(&old).err(), Some(FsError::Os(Errno::ESTALE)));
        old.mark_removed();
        assert_eq!(t.fd(&old).err(), Some(FsError::NotFound));
        // The key now names the new node, and forgetting the old one leaves it so.
        t.forget(old.ino, 1);
        assert_eq!(t.peek_ino(new.key), Some(new.ino));
        assert!(Arc::ptr_eq(&lookup(&t, &name), &new));
    }
}
