//! A tmpfs volume that outlives its handler (docs/tmpfs.md, "Lifetime"): everything it holds
//! lives in shared memory the keeper holds too, written as the handler goes, so that the
//! next handler (after a stop, an upgrade or a crash) finds it whole.
//!
//! - `arena`: file data, 4 KiB pages in one memfd, with each page's owner.
//! - `nodes` (a `resume::Table`): one record per node: id, kind, mode, owner, rdev, size and
//!   times. Fields are single words stored in place, without a lock. The kernel's lookups are
//!   not kept (as on rbd): FORGETs the dead handler had read are lost with it, so a count
//!   carried over could keep a node without a name forever; such nodes are freed at the
//!   takeover unless a handle the kernel still holds needs them.
//! - `journal`: names, xattrs, symlink targets and freed nodes, appended in the order of the
//!   changes.
//!
//! Consistency at any instant (a crash can stop the handler between any two stores): every
//! change is in shared memory before its request is answered. A multi-step change is either
//! one journal record (a rename, with its whiteout) or ordered so that what a crash can leave
//! half done is a node without a name (freed at recovery unless a kernel handle holds it) or
//! a page without a name (punched): a node's record is written before the record naming it,
//! and a node is dropped only after its last name; a page is owned before it is written and
//! disowned before it is punched. A request whose answer was not sent comes again after the
//! restart (FUSE_NOTIFY_RESEND) and finishes what it started; `fs::resume::ResumableFs`
//! answers it as its first run would have. Usage is not stored: it is derived at recovery
//! from what is there (pages owned, names, xattrs, targets, nodes), so it is exact.
pub mod arena;
pub mod file;
pub mod journal;
mod recover;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arena::Arena;
use journal::{Journal, Record};

use crate::fs::quota::Limits;
use crate::fs::resume::{Carry, Slot, Table};
use crate::fs::{FileKind, Ino};

/// Fields of a node's record.
const F_INO: usize = 0;
const F_KIND: usize = 1;
const F_PERM: usize = 2;
const F_UID: usize = 3;
const F_GID: usize = 4;
const F_RDEV: usize = 5;
const F_SIZE: usize = 6;
const F_ATIME: usize = 7;
const F_MTIME: usize = 8;
const F_CTIME: usize = 9;
/// Word 10 is unused (the kernel's lookups, not kept: see above).
const NODE_FIELDS: usize = 11;

/// Names of the shared files in the keeper.
const NODES: &str = "mem-nodes";
const JOURNAL: &str = "mem-journal";
const DATA: &str = "mem-data";
const OWNERS: &str = "mem-owners";

/// What a journal region must hold besides a node's charged metadata: the records of a
/// node's short target and of its entry, at most.
const RECORD_SLACK: u64 = 512;

/// Arena pages beyond the byte limit (pages a write holds before the quota refunds them).
const ARENA_SLACK_PAGES: usize = 64;

/// What the shared files are made for, given a limit: four times it, and at least `floor`
/// more, so that a volume can grow online that far.
fn headroom(limit: u64, floor: u64) -> u64 {
    limit.saturating_mul(4).max(limit.saturating_add(floor))
}

pub struct Shared {
    nodes: Table,
    journal: Journal,
    arena: Arc<Arena>,
}

/// A node's record in the shared table.
pub struct NodeRec {
    shared: Arc<Shared>,
    slot: Slot,
}

fn kind_code(kind: FileKind) -> u64 {
    u64::from(match kind {
        FileKind::File => libc::S_IFREG,
        FileKind::Dir => libc::S_IFDIR,
        FileKind::Symlink => libc::S_IFLNK,
        FileKind::Fifo => libc::S_IFIFO,
        FileKind::Socket => libc::S_IFSOCK,
        FileKind::CharDevice => libc::S_IFCHR,
        FileKind::BlockDevice => libc::S_IFBLK,
    })
}

/// A time as nanoseconds since the epoch (two's complement before it).
fn time_code(t: SystemTime) -> u64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_nanos() as u64,
        Err(e) => (e.duration().as_nanos() as u64).wrapping_neg(),
    }
}

fn time_of(code: u64) -> SystemTime {
    let signed = code as i64;
    if signed >= 0 {
        UNIX_EPOCH + Duration::from_nanos(signed as u64)
    } else {
        UNIX_EPOCH - Duration::from_nanos(signed.unsigned_abs())
    }
}

impl Shared {
    /// A kept volume's shared state: the predecessor's when `carry` resumes one (with what it
    /// holds, see `recover`), else new, sized for `bytes` and `inodes` at most. None when the
    /// volume is not kept.
    pub fn open(
        carry: &mut Carry,
        name: &str,
        bytes: u64,
        inodes: u64,
    ) -> std::io::Result<Option<(Arc<Shared>, Option<recover::Found>)>> {
        if !carry.keeps() {
            return Ok(None);
        }
        // Room for online growth (`fvol update`) without remapping: the shared files take
        // memory only where written, so the headroom costs address space, and a bitmap of
        // one bit a page.
        let (bytes, inodes) = (headroom(bytes, 1 << 30), headroom(inodes, 1 << 18));
        // Nodes without a name still hold an inode, so the inode limit bounds the records; a
        // whiteout is admitted the same way. Some slack for nodes being freed.
        let capacity = u32::try_from(inodes.saturating_add(1024)).unwrap_or(u32::MAX);
        let nodes = carry
            .table(NODES, NODE_FIELDS, capacity)?
            .expect("a kept volume has tables");
        if let (Some(journal), Some(data), Some(owners)) = (
            carry.take_file(JOURNAL)?,
            carry.take_file(DATA)?,
            carry.take_file(OWNERS)?,
        ) {
            let (journal, state) = Journal::open(journal)?;
            let (arena, owned) = Arena::open(data, owners)?;
            let shared = Arc::new(Shared {
                nodes,
                journal,
                arena: Arc::new(arena),
            });
            let found = recover::Found { state, owned };
            return Ok(Some((shared, Some(found))));
        }
        let pages = usize::try_from(bytes.div_ceil(arena::PAGE as u64) + ARENA_SLACK_PAGES as u64)
            .map_err(|_| std::io::Error::other("a tmpfs volume too big to keep"))?;
        let region = bytes.saturating_add(inodes.saturating_mul(RECORD_SLACK));
        let region = usize::try_from(region.saturating_mul(4).saturating_add(1 << 20))
            .map_err(|_| std::io::Error::other("a tmpfs volume too big to keep"))?;
        let journal = Journal::create(name, region)?;
        let arena = Arena::create(name, pages)?;
        carry.keep_file(JOURNAL, journal.fd())?;
        carry.keep_file(DATA, arena.data_fd())?;
        carry.keep_file(OWNERS, arena.owners_fd())?;
        let shared = Arc::new(Shared {
            nodes,
            journal,
            arena: Arc::new(arena),
        });
        Ok(Some((shared, None)))
    }

    /// The largest limits this volume can be grown to while mounted: what its shared files
    /// were made for.
    pub fn capacity(&self) -> Limits {
        let pages = self.arena.capacity().saturating_sub(ARENA_SLACK_PAGES) as u64;
        Limits {
            bytes: Some(pages * arena::PAGE as u64),
            inodes: Some(u64::from(self.nodes.capacity().saturating_sub(1024))),
        }
    }

    pub fn arena(&self) -> &Arc<Arena> {
        &self.arena
    }

    pub fn log(&self, record: Record<'_>) {
        self.journal.append(record)
    }

    pub fn note_ino(&self, ino: Ino) {
        self.journal.note_ino(ino)
    }

    /// Records a new node (before anything names it).
    pub fn add_node(self: &Arc<Self>, ino: Ino, kind: FileKind, m: &super::Meta) -> NodeRec {
        let fields = [
            ino,
            kind_code(kind),
            u64::from(m.perm),
            u64::from(m.uid),
            u64::from(m.gid),
            u64::from(m.rdev),
            0,
            time_code(m.atime),
            time_code(m.mtime),
            time_code(m.ctime),
            0,
        ];
        let slot = self.nodes.insert(&fields).unwrap_or_else(|| {
            // The table is sized past the inode limit; should it fill anyway, the node is
            // still served, and its record is one that a successor would not find.
            log::error!("tmpfs: the node table is full; node {ino} would not survive a restart");
            Slot::NONE
        });
        NodeRec {
            shared: self.clone(),
            slot,
        }
    }
}

impl NodeRec {
    fn set(&self, field: usize, value: u64) {
        if self.slot != Slot::NONE {
            self.shared.nodes.set(self.slot, field, value);
        }
    }

    /// Stores the attributes a `Meta` holds (after each change of them).
    pub fn save(&self, m: &super::Meta) {
        self.set(F_PERM, u64::from(m.perm));
        self.set(F_UID, u64::from(m.uid));
        self.set(F_GID, u64::from(m.gid));
        self.set(F_ATIME, time_code(m.atime));
        self.set(F_MTIME, time_code(m.mtime));
        self.set(F_CTIME, time_code(m.ctime));
    }

    pub fn save_size(&self, size: u64) {
        self.set(F_SIZE, size);
    }

    /// The node is gone (after its last name, data and xattrs): its record goes, after a
    /// journal record that drops what the journal held of it.
    pub fn free(&self, ino: Ino) {
        self.shared.log(Record::Free { ino });
        if self.slot != Slot::NONE {
            self.shared.nodes.remove(self.slot);
        }
    }
}

#[cfg(test)]
mod tests;
