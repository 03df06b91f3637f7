//! A whole filesystem kept in a block image (the `rbd` backend; plain image files in tests).
//!
//! Everything (inodes, directory entries, xattrs, file data as chunks, usage counters) is one
//! redb database on the image (see `super::format`). Each operation is one write transaction:
//! committed without a flush normally, and with one for fsync, fsyncdir and unmount. redb's
//! copy-on-write commits mean a crash at any moment leaves the image at its last flushed commit,
//! whole: every fsynced byte is there and the counters match the data.
//!
//! Kernel references and open handles are memory-only; an inode with no name is deleted at its
//! last close, and one a crash left unnamed is deleted at the next open (see `open`).
mod data;
mod fsck;
mod ops;
mod store;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;
use redb::{Database, Durability, ReadableDatabase, ReadableTable};
use thiserror::Error;

use super::backend::RegionBackend;
use super::device::BlockDevice;
use super::format::{self, FormatError, REGION_START};
use crate::fs::handles::HandleTable;
use crate::fs::memory::RootOwner;
use crate::fs::quota::{Limits, Quota};
use crate::fs::{FileKind, FsResult, Ino, ROOT_INO, UsageSnapshot};
use store::{
    CHUNKS, COUNTERS, Ctx, DIRENTS, INODES, InodeRec, NEXT_INO, Tx, USED_BYTES, USED_INODES, XATTRS,
};

pub use fsck::{FsckReport, fsck};
pub use store::CHUNK;

#[derive(Debug, Error)]
pub enum ImageError {
    #[error(transparent)]
    Format(#[from] FormatError),
    #[error("image metadata: {0}")]
    Metadata(String),
}

fn meta(e: impl std::fmt::Display) -> ImageError {
    ImageError::Metadata(e.to_string())
}

/// What a transaction rewrites at least (a few B-tree pages of 4 KiB).
const TX_REWRITE: u64 = 16 << 10;

/// Bytes of the redb cache: metadata and recently used chunks stay in memory.
const CACHE: usize = 64 << 20;

#[derive(Default)]
struct Live {
    lookups: u64,
    open: u32,
}

pub struct ImageFs {
    db: Database,
    quota: Quota,
    /// Bytes rewritten (copy-on-write) since the last durable commit. Pages a non-durable
    /// commit frees stay reserved until a durable one (a crash must find the last durable state
    /// whole), so the image gets a durable commit after every `durable_every` bytes of them.
    undurable: AtomicU64,
    durable_every: u64,
    live: Mutex<HashMap<Ino, Live>>,
    files: HandleTable<Ino>,
    dirs: HandleTable<Mutex<Vec<(std::ffi::OsString, Ino, FileKind)>>>,
}

/// Room the filesystem may use for data. redb grows its storage by doubling (until 4 GiB),
/// and a growth step that would pass the end of the image fails and stops the database; so
/// data may fill a little under half the image, and the quota says no before redb has to grow
/// past it. (Growth in smaller steps would give the rest back; see docs/rbd.md.)
pub fn usable_capacity(image_size: u64) -> u64 {
    let region = image_size.saturating_sub(REGION_START);
    (region / 100 * 45) / 4096 * 4096
}

impl ImageFs {
    /// Makes a new, empty filesystem on a device whose first block is all zeros.
    pub fn format(device: Arc<dyn BlockDevice>, root: RootOwner) -> Result<(), ImageError> {
        format::write_superblock(device.as_ref())?;
        let size = device.size() - REGION_START;
        let region = RegionBackend::format(device, REGION_START, size).map_err(meta)?;
        let db = Database::builder()
            .create_with_backend(region)
            .map_err(meta)?;
        let tx = db.begin_write().map_err(meta)?;
        {
            let t = Tx { tx: &tx };
            let mut rec = InodeRec::new(FileKind::Dir, root.mode, root.uid, root.gid, 0);
            rec.parent = ROOT_INO;
            t.put_inode(ROOT_INO, &rec)
                .map_err(|e| meta(format!("{e:?}")))?;
            let mut c = tx.open_table(COUNTERS).map_err(meta)?;
            c.insert(NEXT_INO, ROOT_INO + 1).map_err(meta)?;
            c.insert(USED_BYTES, 0).map_err(meta)?;
            c.insert(USED_INODES, 1).map_err(meta)?;
            drop(c);
            tx.open_table(DIRENTS).map_err(meta)?;
            tx.open_table(XATTRS).map_err(meta)?;
            tx.open_table(CHUNKS).map_err(meta)?;
        }
        tx.commit().map_err(meta)?;
        Ok(())
    }

    /// Opens the filesystem on `device`, refusing an image that is not one. `limits.bytes` is
    /// capped at the image's usable capacity.
    pub fn open(device: Arc<dyn BlockDevice>, limits: Limits) -> Result<ImageFs, ImageError> {
        format::check_superblock(device.as_ref())?;
        let size = device.size();
        let region =
            RegionBackend::open(device, REGION_START, size - REGION_START).map_err(meta)?;
        let db = Database::builder()
            .set_cache_size(CACHE)
            .create_with_backend(region)
            .map_err(meta)?;
        let fs = ImageFs {
            db,
            quota: Quota::new(Limits::default(), UsageSnapshot::default()),
            undurable: AtomicU64::new(0),
            durable_every: (usable_capacity(size) / 8).max(4 << 20),
            live: Mutex::new(HashMap::new()),
            files: HandleTable::default(),
            dirs: HandleTable::default(),
        };
        fs.delete_orphans().map_err(|e| meta(format!("{e:?}")))?;
        let usage = fs.stored_usage().map_err(|e| meta(format!("{e:?}")))?;
        let capacity = usable_capacity(size);
        let limits = Limits {
            bytes: Some(limits.bytes.map_or(capacity, |b| b.min(capacity))),
            inodes: limits.inodes,
        };
        Ok(ImageFs {
            quota: Quota::new(limits, usage),
            ..fs
        })
    }

    /// Runs `f` in one write transaction, committed (durably if asked) only when it succeeds.
    /// Every transaction rewrites at least a path of B-tree pages; the commit is made durable
    /// once enough was rewritten since the last durable one.
    fn write<T>(&self, durable: bool, f: impl FnOnce(&Tx<'_>) -> FsResult<T>) -> FsResult<T> {
        self.write_costing(TX_REWRITE, durable, f)
    }

    /// `write`, for a transaction that rewrites about `rewrite` bytes.
    fn write_costing<T>(
        &self,
        rewrite: u64,
        durable: bool,
        f: impl FnOnce(&Tx<'_>) -> FsResult<T>,
    ) -> FsResult<T> {
        let pending = self.undurable.fetch_add(rewrite, Ordering::Relaxed) + rewrite;
        let durable = durable || pending >= self.durable_every;
        if durable {
            self.undurable.store(0, Ordering::Relaxed);
        }
        let mut tx = self.db.begin_write().io()?;
        if !durable {
            tx.set_durability(Durability::None).io()?;
        }
        let out = f(&Tx { tx: &tx })?;
        tx.commit().io()?;
        Ok(out)
    }

    fn read_inode(&self, ino: Ino) -> FsResult<InodeRec> {
        let tx = self.db.begin_read().io()?;
        let t = tx.open_table(INODES).io()?;
        let v = t.get(ino).io()?.ok_or(crate::fs::FsError::Stale)?;
        postcard::from_bytes(v.value()).io()
    }

    fn stored_usage(&self) -> FsResult<UsageSnapshot> {
        self.write(false, |t| {
            Ok(UsageSnapshot {
                bytes: t.counter(USED_BYTES)?,
                inodes: t.counter(USED_INODES)?,
            })
        })
    }

    /// Inodes a crash left without a name (they were open when it happened).
    fn delete_orphans(&self) -> FsResult<()> {
        self.write(true, |t| {
            let orphans: Vec<(Ino, InodeRec)> = {
                let table = t.tx.open_table(INODES).io()?;
                let mut found = Vec::new();
                for entry in table.iter().io()? {
                    let (k, v) = entry.io()?;
                    let rec: InodeRec = postcard::from_bytes(v.value()).io()?;
                    if rec.nlink == 0 {
                        found.push((k.value(), rec));
                    }
                }
                found
            };
            for (ino, rec) in orphans {
                t.delete_inode(ino, &rec)?;
            }
            Ok(())
        })
    }

    /// Deletes `ino` if it has no name and no open handle left.
    fn reap(&self, ino: Ino) -> FsResult<()> {
        let open = self.live.lock().get(&ino).is_some_and(|l| l.open > 0);
        if open || ino == ROOT_INO {
            return Ok(());
        }
        let freed = self.write(false, |t| match t.try_inode(ino)? {
            Some(rec) if rec.nlink == 0 => Ok(Some(t.delete_inode(ino, &rec)?)),
            _ => Ok(None),
        })?;
        if let Some(bytes) = freed {
            self.quota.adjust(-(bytes as i64), -1);
        }
        Ok(())
    }

    fn add_lookup(&self, ino: Ino) {
        self.live.lock().entry(ino).or_default().lookups += 1;
    }
}
