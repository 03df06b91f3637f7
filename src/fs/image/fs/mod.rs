//! A whole filesystem kept in a block image (the `rbd` backend; plain image files in tests).
//!
//! Metadata (inodes, directory entries, xattrs, extent maps, the free-space map, usage
//! counters) is one redb database in the image's metadata region; file data lives in extents of
//! the data region (see `super::format`). Each operation is one write transaction: committed
//! without a flush normally, durably for fsync, fsyncdir, syncfs and unmount.
//!
//! Crash consistency (ordered mode): a write sends its data to the device before the
//! transaction that maps it commits, and a durable commit flushes the device (every data write
//! before it) before redb makes its metadata durable. Blocks freed by a commit that is not
//! durable are reused only after a durable one (`alloc`). redb's copy-on-write commits then
//! leave the image, after any crash, at its last durable commit: whole, with every fsynced byte
//! and no block mapped by two files or mapping another file's data; counters match the metadata.
//!
//! Kernel references and open handles are memory-only; an inode with no name is deleted at its
//! last close, and one a crash left unnamed is deleted at the next open (see `open`).
mod alloc;
mod data;
mod extents;
mod fsck;
mod ops;
mod store;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::{Mutex, RwLock};
use redb::{Database, Durability, ReadableDatabase, ReadableTable};
use thiserror::Error;

use super::backend::{RegionBackend, RegionWatch};
use super::device::BlockDevice;
use super::format::{self, FormatError, Layout, META_START};
use crate::fs::handles::HandleTable;
use crate::fs::memory::RootOwner;
use crate::fs::quota::{Limits, Quota};
use crate::fs::{FileKind, FsError, FsResult, Ino, ROOT_INO, UsageSnapshot};
use store::{
    COUNTERS, Ctx, DIRENTS, EXTENTS, INODES, InodeRec, NEXT_INO, Tx, USED_BYTES, USED_INODES,
    XATTRS,
};

pub use format::BLOCK;
pub use fsck::{FsckReport, fsck};

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

/// Bytes of the redb cache: the metadata stays in memory.
const CACHE: usize = 64 << 20;

#[derive(Default)]
struct Live {
    lookups: u64,
    open: u32,
}

pub struct ImageFs {
    db: Database,
    device: Arc<dyn BlockDevice>,
    layout: Layout,
    /// The database's length in its region: past half of it, metadata is full.
    meta: RegionWatch,
    quota: Quota,
    /// Bytes rewritten (copy-on-write) since the last durable commit. Pages a non-durable
    /// commit frees stay reserved until a durable one (a crash must find the last durable state
    /// whole), so the database gets a durable commit after every `durable_every` bytes of them.
    undurable: AtomicU64,
    durable_every: u64,
    /// Where the next-fit allocation goes on.
    cursor: AtomicU64,
    /// Held shared by a read from its extent lookup until its data is in memory; held
    /// exclusively by a durable commit that makes freed blocks reusable. So no read can get
    /// another file's data from a block that was freed and reused under it.
    reuse: RwLock<()>,
    live: Mutex<HashMap<Ino, Live>>,
    files: HandleTable<Ino>,
    dirs: HandleTable<Mutex<Vec<(std::ffi::OsString, Ino, FileKind)>>>,
}

/// Bytes files may hold on a new image of `image_size` bytes with the inode limit `inodes`:
/// its data region. `None` when the image is too small.
pub fn usable_capacity(image_size: u64, inodes: Option<u64>) -> Option<u64> {
    Layout::for_image(image_size, inodes)
        .ok()
        .map(|l| l.capacity())
}

impl ImageFs {
    /// Makes a new, empty filesystem on a device whose first block is all zeros, with a
    /// metadata region sized for `inodes` (default: one per 32 KiB of image).
    pub fn format(
        device: Arc<dyn BlockDevice>,
        root: RootOwner,
        inodes: Option<u64>,
    ) -> Result<(), ImageError> {
        let layout = Layout::for_image(device.size(), inodes)?;
        format::write_superblock(device.as_ref(), &layout)?;
        let region =
            RegionBackend::format(device.clone(), META_START, layout.meta_size).map_err(meta)?;
        let db = Database::builder()
            .create_with_backend(region)
            .map_err(meta)?;
        let tx = db.begin_write().map_err(meta)?;
        {
            let t = Tx { tx: &tx };
            let mut rec = InodeRec::new(FileKind::Dir, root.mode, root.uid, root.gid, 0);
            rec.parent = ROOT_INO;
            let fs_err = |e: FsError| meta(format!("{e:?}"));
            t.put_inode(ROOT_INO, &rec).map_err(fs_err)?;
            let mut c = tx.open_table(COUNTERS).map_err(meta)?;
            c.insert(NEXT_INO, ROOT_INO + 1).map_err(meta)?;
            c.insert(USED_BYTES, 0).map_err(meta)?;
            c.insert(USED_INODES, 1).map_err(meta)?;
            drop(c);
            tx.open_table(DIRENTS).map_err(meta)?;
            tx.open_table(XATTRS).map_err(meta)?;
            tx.open_table(EXTENTS).map_err(meta)?;
            alloc::format(&t, layout.data_blocks()).map_err(fs_err)?;
        }
        tx.commit().map_err(meta)?;
        drop(db);
        device.flush().map_err(meta)?;
        Ok(())
    }

    /// Opens the filesystem on `device`, refusing an image that is not one. `limits.bytes` is
    /// capped at the data region; the inode limit defaults to what the metadata region was
    /// sized for.
    pub fn open(device: Arc<dyn BlockDevice>, limits: Limits) -> Result<ImageFs, ImageError> {
        let layout = format::check_superblock(device.as_ref())?;
        let region =
            RegionBackend::open(device.clone(), META_START, layout.meta_size).map_err(meta)?;
        let watch = region.watch();
        let db = Database::builder()
            .set_cache_size(CACHE)
            .create_with_backend(region)
            .map_err(meta)?;
        let fs = ImageFs {
            db,
            device,
            layout,
            meta: watch,
            quota: Quota::new(Limits::default(), UsageSnapshot::default()),
            undurable: AtomicU64::new(0),
            durable_every: (layout.meta_size / 16).max(1 << 20),
            cursor: AtomicU64::new(0),
            reuse: RwLock::new(()),
            live: Mutex::new(HashMap::new()),
            files: HandleTable::default(),
            dirs: HandleTable::default(),
        };
        fs.delete_orphans().map_err(|e| meta(format!("{e:?}")))?;
        let usage = fs.stored_usage().map_err(|e| meta(format!("{e:?}")))?;
        let capacity = layout.capacity();
        let limits = Limits {
            bytes: Some(limits.bytes.map_or(capacity, |b| b.min(capacity))),
            inodes: Some(limits.inodes.unwrap_or(layout.inodes())),
        };
        Ok(ImageFs {
            quota: Quota::new(limits, usage),
            ..fs
        })
    }

    /// Whether the metadata may not grow: redb grows its storage by doubling, and a growth
    /// step past the end of the metadata region would stop the database. Once redb's length
    /// passes half the region, its next growth could not fit, so operations that add metadata
    /// (new inodes, names, xattrs, extents) are refused with ENOSPC; the rest of the region is
    /// room for what still runs (overwrites, deletes) and for pages of non-durable commits.
    fn metadata_full(&self) -> bool {
        self.meta.len() > self.meta.capacity() / 2
    }

    /// `NoSpace` when the metadata is full (see `metadata_full`).
    fn metadata_room(&self) -> FsResult<()> {
        if self.metadata_full() {
            log::warn!(
                "image metadata full ({} of {} bytes): refusing to add more",
                self.meta.len(),
                self.meta.capacity()
            );
            return Err(FsError::NoSpace);
        }
        Ok(())
    }

    /// Runs `f` in one write transaction, committed (durably if asked) only when it succeeds.
    /// Every transaction rewrites at least a path of B-tree pages; the commit is made durable
    /// once enough was rewritten since the last durable one.
    fn write<T>(&self, durable: bool, f: impl FnOnce(&Tx<'_>) -> FsResult<T>) -> FsResult<T> {
        self.write_costing(TX_REWRITE, durable, f)
    }

    /// `write`, for a transaction that rewrites about `rewrite` bytes. A durable commit also
    /// makes the blocks freed since the last one reusable: moved to the free map as its last
    /// change, under the `reuse` lock, and durable before any later transaction can take them.
    /// redb's durable commit flushes the device first, data writes included.
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
        if durable {
            let drained = alloc::drain_pending(&Tx { tx: &tx })?;
            let _exclusive = (drained > 0).then(|| self.reuse.write());
            tx.commit().io()?;
        } else {
            tx.commit().io()?;
        }
        Ok(out)
    }

    /// One durable commit: makes every earlier commit and data write durable, and the blocks
    /// freed since the last durable commit reusable.
    fn commit_durably(&self) -> FsResult<()> {
        self.write(true, |_| Ok(()))
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
