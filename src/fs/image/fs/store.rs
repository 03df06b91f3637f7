//! The records and tables of an image filesystem, and the transaction helpers every operation
//! goes through. One redb write transaction per operation keeps the image consistent at every
//! commit; usage counters live in the same transactions, so they are never out of step.
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use redb::{ReadableTable, TableDefinition, WriteTransaction};
use serde::{Deserialize, Serialize};

use crate::fs::{Attr, FileKind, FsError, FsResult, Ino};

pub const INODES: TableDefinition<u64, &[u8]> = TableDefinition::new("inodes");
pub const DIRENTS: TableDefinition<(u64, &[u8]), u64> = TableDefinition::new("dirents");
pub const XATTRS: TableDefinition<(u64, &[u8]), &[u8]> = TableDefinition::new("xattrs");
/// File data: (ino, chunk index) → up to `CHUNK` bytes; an absent chunk is a hole.
pub const CHUNKS: TableDefinition<(u64, u64), &[u8]> = TableDefinition::new("chunks");
pub const COUNTERS: TableDefinition<&str, u64> = TableDefinition::new("counters");

/// Just under 64 KiB: redb packs values up to 65,280 bytes into its 64 KiB pages (a full
/// 64 KiB value takes a 128 KiB page), and 127 × 512 keeps a full chunk a whole number of units.
pub const CHUNK: u64 = 127 * UNIT;
/// Allocation unit for usage (and `st_blocks`): a chunk counts as its length rounded up to this,
/// so a full chunk is charged exactly what it holds.
pub const UNIT: u64 = 512;

pub const NEXT_INO: &str = "next_ino";
pub const USED_BYTES: &str = "used_bytes";
pub const USED_INODES: &str = "used_inodes";

pub fn charged(len: u64) -> u64 {
    len.div_ceil(UNIT) * UNIT
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct InodeRec {
    pub kind: u8,
    pub perm: u32,
    pub uid: u32,
    pub gid: u32,
    pub nlink: u32,
    pub rdev: u32,
    pub size: u64,
    /// Bytes charged for this file's chunks.
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

pub fn now() -> (i64, u32) {
    stamp(SystemTime::now())
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

fn time((secs, nanos): (i64, u32)) -> SystemTime {
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
        let ino = self.counter(NEXT_INO)?;
        self.tx
            .open_table(COUNTERS)
            .io()?
            .insert(NEXT_INO, ino + 1)
            .io()?;
        Ok(ino)
    }

    /// Removes an inode with no name and no open handle: its chunks, xattrs and record.
    /// Returns the bytes freed.
    pub fn delete_inode(&self, ino: Ino, rec: &InodeRec) -> FsResult<u64> {
        {
            let mut chunks = self.tx.open_table(CHUNKS).io()?;
            chunks
                .retain_in((ino, 0)..=(ino, u64::MAX), |_, _| false)
                .io()?;
            let mut x = self.tx.open_table(XATTRS).io()?;
            x.retain_in((ino, &[][..])..(ino + 1, &[][..]), |_, _| false)
                .io()?;
            self.tx.open_table(INODES).io()?.remove(ino).io()?;
        }
        self.add_counter(USED_BYTES, -(rec.allocated as i64))?;
        self.add_counter(USED_INODES, -1)?;
        Ok(rec.allocated)
    }
}
