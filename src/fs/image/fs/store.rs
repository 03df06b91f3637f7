//! The records and tables of an image filesystem, and the transaction helpers every operation
//! goes through. One redb write transaction per operation keeps the image consistent at every
//! commit; usage counters live in the same transactions, so they are never out of step.
//!
//! Data blocks (of `BLOCK` bytes, numbered from the start of the data region) are in exactly
//! one place at every commit: an extent of a file (`EXTENTS`), the free map (`FREE`), or the
//! blocks freed since the last durable commit (`PENDING`, see `super::alloc`).
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use redb::{ReadableTable, TableDefinition, WriteTransaction};
use serde::{Deserialize, Serialize};

use crate::fs::{Attr, FileKind, FsError, FsResult, Ino};

pub const INODES: TableDefinition<u64, &[u8]> = TableDefinition::new("inodes");
pub const DIRENTS: TableDefinition<(u64, &[u8]), u64> = TableDefinition::new("dirents");
pub const XATTRS: TableDefinition<(u64, &[u8]), &[u8]> = TableDefinition::new("xattrs");
/// File data: (ino, first file block) → (first data block, blocks, unwritten). An unwritten
/// extent is allocated but reads as zeros (fallocate); file blocks no extent covers are holes.
pub const EXTENTS: TableDefinition<(u64, u64), (u64, u64, bool)> = TableDefinition::new("extents");
/// Free runs of data blocks: first block → length. Adjacent runs are merged.
pub const FREE: TableDefinition<u64, u64> = TableDefinition::new("free");
/// Runs freed since the last durable commit (first block → length): not reusable until a
/// durable commit has made the free permanent.
pub const PENDING: TableDefinition<u64, u64> = TableDefinition::new("pending");
pub const COUNTERS: TableDefinition<&str, u64> = TableDefinition::new("counters");

pub const NEXT_INO: &str = "next_ino";
/// Bytes in files' extents (`BLOCK` per block).
pub const USED_BYTES: &str = "used_bytes";
pub const USED_INODES: &str = "used_inodes";
/// Blocks in `FREE` and in `PENDING`.
pub const FREE_BLOCKS: &str = "free_blocks";
pub const PENDING_BLOCKS: &str = "pending_blocks";
/// Blocks in the data region: the superblock's count, or more once a grow committed (see
/// `super::grow`). 0 (absent) on images formatted before grows existed.
pub const DATA_BLOCKS: &str = "data_blocks";
/// The last redo journal record whose change this state holds (see `super::journal`).
pub const JOURNAL_SEQ: &str = "journal_seq";

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct InodeRec {
    pub kind: u8,
    pub perm: u32,
    pub uid: u32,
    pub gid: u32,
    pub nlink: u32,
    pub rdev: u32,
    pub size: u64,
    /// Bytes of this file's extents (`BLOCK` per block, written or not).
    pub allocated: u64,
    pub atime: (i64, u32),
    pub mtime: (i64, u32),
    pub ctime: (i64, u32),
    /// A directory's parent (".."); itself for the root.
    pub parent: u64,
    /// A symlink's target.
    pub target: Vec<u8>,
}

const KINDS: [FileKind; 7] = [
    FileKind::File,
    FileKind::Dir,
    FileKind::Symlink,
    FileKind::Fifo,
    FileKind::Socket,
    FileKind::CharDevice,
    FileKind::BlockDevice,
];

thread_local! {
    /// While a journal record is replayed: the time of its first run (see `redo`).
    pub static CLOCK: std::cell::Cell<Option<(i64, u32)>> = const { std::cell::Cell::new(None) };
    /// While a journal record is replayed: the inode number its first run handed out.
    pub static FORCED_INO: std::cell::Cell<Option<Ino>> = const { std::cell::Cell::new(None) };
}

pub fn now() -> (i64, u32) {
    CLOCK
        .with(|c| c.get())
        .unwrap_or_else(|| stamp(SystemTime::now()))
}

pub fn stamp(t: SystemTime) -> (i64, u32) {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => (d.as_secs() as i64, d.subsec_nanos()),
        Err(e) => {
            let d = e.duration();
            match d.subsec_nanos() {
                0 => (-(d.as_secs() as i64), 0),
                n => (-(d.as_secs() as i64) - 1, 1_000_000_000 - n),
            }
        }
    }
}

pub fn time((secs, nanos): (i64, u32)) -> SystemTime {
    let base = if secs >= 0 {
        UNIX_EPOCH + Duration::from_secs(secs as u64)
    } else {
        UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs())
    };
    base + Duration::from_nanos(nanos as u64)
}

impl InodeRec {
    pub fn new(kind: FileKind, perm: u32, uid: u32, gid: u32, rdev: u32) -> InodeRec {
        let t = now();
        InodeRec {
            kind: KINDS.iter().position(|k| *k == kind).expect("listed") as u8,
            perm: perm & 0o7777,
            uid,
            gid,
            nlink: if kind == FileKind::Dir { 2 } else { 1 },
            rdev,
            size: 0,
            allocated: 0,
            atime: t,
            mtime: t,
            ctime: t,
            parent: 0,
            target: Vec::new(),
        }
    }

    pub fn kind(&self) -> FileKind {
        KINDS
            .get(self.kind as usize)
            .copied()
            .unwrap_or(FileKind::File)
    }

    pub fn attr(&self, ino: Ino) -> Attr {
        let size = match self.kind() {
            FileKind::Dir => 4096,
            FileKind::Symlink => self.target.len() as u64,
            _ => self.size,
        };
        Attr {
            ino,
            size,
            blocks: self.allocated / 512,
            atime: time(self.atime),
            mtime: time(self.mtime),
            ctime: time(self.ctime),
            kind: self.kind(),
            perm: self.perm as u16,
            nlink: self.nlink,
            uid: self.uid,
            gid: self.gid,
            rdev: self.rdev,
            blksize: 4096,
        }
    }

    pub fn touch_dir(&mut self) {
        let t = now();
        self.mtime = t;
        self.ctime = t;
    }
}

fn db_err(e: impl std::fmt::Display) -> FsError {
    log::error!("image metadata: {e}");
    FsError::Os(nix::errno::Errno::EIO)
}

pub trait Ctx<T> {
    fn io(self) -> FsResult<T>;
}

impl<T, E: std::fmt::Display> Ctx<T> for Result<T, E> {
    fn io(self) -> FsResult<T> {
        self.map_err(db_err)
    }
}

/// Typed access to the tables inside one write transaction.
pub struct Tx<'a> {
    pub tx: &'a WriteTransaction,
}

impl Tx<'_> {
    pub fn inode(&self, ino: Ino) -> FsResult<InodeRec> {
        self.try_inode(ino)?.ok_or(FsError::Stale)
    }

    pub fn try_inode(&self, ino: Ino) -> FsResult<Option<InodeRec>> {
        let t = self.tx.open_table(INODES).io()?;
        let Some(v) = t.get(ino).io()? else {
            return Ok(None);
        };
        postcard::from_bytes(v.value()).map(Some).io()
    }

    pub fn put_inode(&self, ino: Ino, rec: &InodeRec) -> FsResult<()> {
        let bytes = postcard::to_allocvec(rec).io()?;
        self.tx
            .open_table(INODES)
            .io()?
            .insert(ino, bytes.as_slice())
            .io()?;
        Ok(())
    }

    pub fn child(&self, parent: Ino, name: &[u8]) -> FsResult<Option<Ino>> {
        let t = self.tx.open_table(DIRENTS).io()?;
        Ok(t.get((parent, name)).io()?.map(|v| v.value()))
    }

    pub fn set_child(&self, parent: Ino, name: &[u8], ino: Option<Ino>) -> FsResult<()> {
        let mut t = self.tx.open_table(DIRENTS).io()?;
        match ino {
            Some(ino) => t.insert((parent, name), ino).io()?,
            None => t.remove((parent, name)).io()?,
        };
        Ok(())
    }

    pub fn is_empty_dir(&self, dir: Ino) -> FsResult<bool> {
        let t = self.tx.open_table(DIRENTS).io()?;
        let mut range = t.range((dir, &[][..])..(dir + 1, &[][..])).io()?;
        Ok(range.next().is_none())
    }

    pub fn counter(&self, key: &str) -> FsResult<u64> {
        let t = self.tx.open_table(COUNTERS).io()?;
        Ok(t.get(key).io()?.map(|v| v.value()).unwrap_or(0))
    }

    pub fn add_counter(&self, key: &str, delta: i64) -> FsResult<()> {
        let value = self.counter(key)?.saturating_add_signed(delta);
        self.tx.open_table(COUNTERS).io()?.insert(key, value).io()?;
        Ok(())
    }

    pub fn next_ino(&self) -> FsResult<Ino> {
        let next = self.counter(NEXT_INO)?;
        // A replayed record gets the number its first run got (numbers are never reused, so
        // it is free, and below the next one: `ImageFs::open_carried`).
        let ino = FORCED_INO.with(|f| f.take()).unwrap_or(next);
        self.tx
            .open_table(COUNTERS)
            .io()?
            .insert(NEXT_INO, next.max(ino + 1))
            .io()?;
        Ok(ino)
    }

    /// Removes the xattrs and record of an inode with no name, no open handle and no extents
    /// left (`ImageFs::delete_unlinked` unmaps them first).
    pub fn delete_inode(&self, ino: Ino) -> FsResult<()> {
        {
            let mut x = self.tx.open_table(XATTRS).io()?;
            x.retain_in((ino, &[][..])..(ino + 1, &[][..]), |_, _| false)
                .io()?;
            self.tx.open_table(INODES).io()?.remove(ino).io()?;
        }
        self.add_counter(USED_INODES, -1)
    }
}
