//! A whole filesystem kept in a block image (the `rbd` backend; plain image files in tests).
//!
//! Metadata (inodes, directory entries, xattrs, extent maps, the free-space map, usage
//! counters) is one redb database in the image's metadata region; file data lives in extents of
//! the data region (see `super::format`). Each operation is one write transaction committed
//! without a flush; durable commits are made by the committer thread (`commit`): for fsync,
//! fsyncdir and unmount, and at most 5 s after the last durable one (`room::COMMIT_INTERVAL`).
//!
//! A device that stalls (a cluster that does not answer) makes operations wait. On a device
//! with a wait limit, no operation waits longer than that for the device, for the transaction
//! lock (`gate`) or for a durable commit: it fails with ETIMEDOUT, and what was under way goes
//! on (a durable commit, a data write) and lands once the device answers. Metadata I/O itself
//! is never abandoned, so redb never sees an outage as an error. Once the device is fenced
//! (its cluster refuses this host), every change fails with EROFS and fsync with EIO.
//!
//! Crash consistency (ordered mode): a write sends its data to the device before the
//! transaction that maps it commits, and a durable commit flushes the device (every data write
//! before it) before redb makes its metadata durable. Blocks freed by a commit that is not
//! durable are reused only after a durable one (`alloc`). redb's copy-on-write commits then
//! leave the image, after any crash, at its last durable commit: whole, with every fsynced byte
//! and no block mapped by two files or mapping another file's data; counters match the metadata.
//!
//! Kernel references and open handles are memory-only; an inode with no name is deleted once
//! the kernel has forgotten it and its last handle is closed (until then it is reachable, e.g.
//! reopened through /proc from an O_PATH descriptor, and its blocks stay counted), and one a
//! crash or an unmount left unnamed is deleted at the next open (see `open`).
mod alloc;
mod commit;
mod data;
mod extents;
mod fsck;
mod grow;
mod idle;
pub mod journal;
mod ops;
mod redo;
mod room;
mod space;
mod store;

use std::collections::HashMap;
use std::ops::Deref;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use nix::errno::Errno;
use parking_lot::{Mutex, MutexGuard, RwLock};
use redb::{Database, Durability, ReadableDatabase, ReadableTable};
use thiserror::Error;

use super::backend::RegionBackend;
use super::device::BlockDevice;
use super::format::{self, FormatError, Layout, META_START};
use crate::fs::handles::HandleTable;
use crate::fs::memory::RootOwner;
use crate::fs::quota::{Limits, Quota};
use crate::fs::resume::{Carry, Slot, Table};
use crate::fs::{FileKind, FsError, FsResult, Ino, ROOT_INO, UsageSnapshot};
use store::{
    COUNTERS, Ctx, DIRENTS, EXTENTS, INODES, InodeRec, JOURNAL_SEQ, NEXT_INO, Tx, USED_BYTES,
    USED_INODES, XATTRS,
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

/// The redo journal's shared file, in the keeper.
const JOURNAL: &str = "image-journal";

/// A bound of a redo record without names, values or data.
const REDO_SMALL: usize = 256;

/// Bytes of the redb cache: the metadata stays in memory.
const CACHE: usize = 64 << 20;

/// What reaches an inode besides its names: kernel lookups and open handles (files and
/// directories). An inode whose last name is gone is deleted once both are 0.
#[derive(Default)]
struct Live {
    lookups: u64,
    open: u32,
    /// Its last name is gone: deleted when nothing reaches it any more.
    nameless: bool,
}

/// The filesystem, shared with its committer thread (see `ImageFs`).
pub struct Inner {
    db: Database,
    device: Arc<dyn BlockDevice>,
    layout: Layout,
    /// The metadata region: whether redb may grow, when commits must be durable.
    room: room::Room,
    quota: Quota,
    /// Where the next-fit allocation goes on.
    cursor: AtomicU64,
    /// Blocks in the data region (`layout.data_blocks()` until the image grows; see `grow`).
    data_blocks: AtomicU64,
    /// Operations so far (transactions and reads), for `idle`.
    operations: AtomicU64,
    /// Held shared by a read from its extent lookup until its data is in memory; held
    /// exclusively by a durable commit that makes freed blocks reusable. So no read can get
    /// another file's data from a block that was freed and reused under it.
    reuse: RwLock<()>,
    live: Mutex<HashMap<Ino, Live>>,
    files: HandleTable<Ino>,
    dirs: HandleTable<Mutex<crate::fs::handles::DirCursor>>,
    /// The highest inode number handed out, kept where a successor finds it (see
    /// `open_carried`); None when the volume does not outlive its handler.
    ino_floor: Option<(Table, Slot)>,
    /// Orphans (inodes without a name) are deleted only once a successor has restored the
    /// handles the kernel holds (`handles_restored`).
    orphans_pending: std::sync::atomic::AtomicBool,
    /// Durable commits: requests, and the committer's answers.
    commits: commit::Commits,
    /// On a device with a wait limit: write transactions take this first, for the limit at
    /// most, so that none waits longer behind a commit stalled on the device.
    gate: Option<Gate>,
    /// The redo journal, when the volume outlives its handler (see `journal`).
    journal: Option<journal::Journal>,
    /// The journal record being replayed (0: none; see `redo`).
    replaying: AtomicU64,
}

struct Gate {
    limit: Duration,
    lock: Mutex<()>,
}

/// Bytes files may hold on a new image of `image_size` bytes with the inode limit `inodes`:
/// its data region. `None` when the image is too small.
pub fn usable_capacity(image_size: u64, inodes: Option<u64>) -> Option<u64> {
    Layout::for_image(image_size, inodes)
        .ok()
        .map(|l| l.capacity())
}

/// An image filesystem: `Inner`, plus the committer thread, which makes every durable commit:
/// those asked for, and one once the last is `COMMIT_INTERVAL` old and something changed since
/// (so an idle volume does not keep unsynced changes for long). Dropping it stops the thread
/// after the commits asked for; the filesystem goes with it.
pub struct ImageFs {
    inner: Arc<Inner>,
    committer: Option<JoinHandle<()>>,
}

impl Deref for ImageFs {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.inner
    }
}

impl Drop for ImageFs {
    fn drop(&mut self) {
        self.stop_committer(true);
    }
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
            c.insert(store::DATA_BLOCKS, layout.data_blocks())
                .map_err(meta)?;
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
        Self::open_with(device, limits, None, false, None)
    }

    /// `open` for a volume that outlives its handler: keeps in `carry` the highest inode number
    /// handed out (the kernel keeps the node ids it learnt; a successor after a crash, whose
    /// image is back at its last durable commit, must not give those numbers to new inodes),
    /// and, when `carry` is a predecessor's, takes over from it: orphans wait until its open
    /// handles are restored (`VolumeFs::handles_restored`).
    pub fn open_carried(
        device: Arc<dyn BlockDevice>,
        limits: Limits,
        carry: &mut Carry,
    ) -> Result<ImageFs, ImageError> {
        let Some(table) = carry.table("image", 1, 1).map_err(meta)? else {
            return Self::open(device, limits);
        };
        let slot = match table.records().first() {
            Some((slot, _)) => *slot,
            None => table
                .insert(&[0])
                .ok_or_else(|| meta("the table of inode numbers is full"))?,
        };
        // The redo journal: the predecessor's (a handler of a version without one left none:
        // it committed durably before it let go, or lost what a crash loses), else a new one.
        let (journal, found) = match carry.take_file_if_left(JOURNAL).map_err(meta)? {
            Some(fd) => journal::Journal::open(fd).map_err(meta)?,
            None => {
                let j = journal::Journal::create("image", journal::DEFAULT_RING).map_err(meta)?;
                carry.keep_file(JOURNAL, j.fd()).map_err(meta)?;
                (j, Vec::new())
            }
        };
        Self::open_with(
            device,
            limits,
            Some((table, slot)),
            carry.resumed,
            Some((journal, found)),
        )
    }

    fn open_with(
        device: Arc<dyn BlockDevice>,
        limits: Limits,
        ino_floor: Option<(Table, Slot)>,
        resuming: bool,
        journal: Option<(journal::Journal, Vec<journal::Found>)>,
    ) -> Result<ImageFs, ImageError> {
        let (journal, found) = match journal {
            Some((j, found)) => (Some(j), found),
            None => (None, Vec::new()),
        };
        let layout = format::check_superblock(device.as_ref())?;
        let region =
            RegionBackend::open(device.clone(), META_START, layout.meta_size).map_err(meta)?;
        let watch = region.watch();
        let gate = device.wait_limit().map(|limit| Gate {
            limit,
            lock: Mutex::new(()),
        });
        let db = Database::builder()
            .set_cache_size(CACHE)
            .create_with_backend(region)
            .map_err(meta)?;
        let fs = Inner {
            db,
            device,
            layout,
            room: room::Room::new(watch),
            quota: Quota::new(Limits::default(), UsageSnapshot::default()),
            cursor: AtomicU64::new(0),
            data_blocks: AtomicU64::new(layout.data_blocks()),
            operations: AtomicU64::new(0),
            reuse: RwLock::new(()),
            live: Mutex::new(HashMap::new()),
            files: HandleTable::default(),
            dirs: HandleTable::default(),
            ino_floor,
            orphans_pending: std::sync::atomic::AtomicBool::new(resuming),
            commits: commit::Commits::default(),
            gate,
            journal,
            replaying: AtomicU64::new(0),
        };
        let blocks = fs.finish_grow()?;
        fs.data_blocks.store(blocks, Ordering::Release);
        if resuming {
            fs.raise_next_ino().map_err(|e| meta(format!("{e:?}")))?;
        } else {
            fs.delete_orphans().map_err(|e| meta(format!("{e:?}")))?;
        }
        let usage = fs.stored_usage().map_err(|e| meta(format!("{e:?}")))?;
        let limits = fs.effective_limits(limits, blocks * format::BLOCK);
        let inner = Arc::new(Inner {
            quota: Quota::new(limits, usage),
            ..fs
        });
        inner.commits.start();
        let committer = {
            let theirs = inner.clone();
            std::thread::Builder::new()
                .name("image-commit".into())
                .spawn(move || run_committer(&theirs))
                .map_err(|e| {
                    inner.commits.stop(false);
                    meta(e)
                })?
        };
        let fs = ImageFs {
            inner,
            committer: Some(committer),
        };
        if let Some(j) = &fs.journal {
            let committed = fs
                .transact(|t| t.counter(JOURNAL_SEQ))
                .map_err(|e| meta(format!("{e:?}")))?;
            j.continue_after(committed);
            let replayed = fs.replay(found, committed).map_err(ImageError::Metadata)?;
            if replayed > 0 {
                log::info!(
                    "image: replayed {replayed} changes acknowledged after the last durable \
                     commit from the redo journal"
                );
            }
        }
        Ok(fs)
    }

    fn stop_committer(&mut self, final_commit: bool) {
        self.inner.commits.stop(final_commit);
        if let Some(t) = self.committer.take() {
            let _ = t.join();
        }
    }

    /// Records in the redo journal not yet covered by a durable commit (0 without a journal).
    pub fn redo_records(&self) -> usize {
        self.journal.as_ref().map_or(0, |j| j.live())
    }

    /// Leaves the filesystem without closing it, as a crash would: no further commit, nothing
    /// released. For crash tests.
    pub fn abandon(mut self) {
        self.stop_committer(false);
        std::mem::forget(self.inner.clone());
    }
}

/// The committer's tick: how often it looks whether a durable commit is due by the interval.
const TICK: Duration = Duration::from_secs(1);

/// The committer thread: makes the durable commits asked for, one when the interval is due
/// (`Room`), and gives back memory kept for I/O once the volume is quiet (`idle`). A failure is
/// logged when it first happens and when commits work again, not at every try.
fn run_committer(inner: &Inner) {
    let mut quiet = idle::Quiet::default();
    let mut failing: Option<FsError> = None;
    while let Some(work) = inner.commits.next_work(TICK) {
        let due = work.requested || (inner.room.idle_commit_due() && !inner.device.fenced());
        if due {
            let result = inner.durable_commit_now();
            match (result, failing) {
                (Err(_), None) if inner.device.fenced() => log::error!(
                    "image: durable commit failed: the device is fenced; fsync fails (EIO) \
                     until the volume is mounted again"
                ),
                (Err(e), None) => log::error!(
                    "image: durable commit failed: {e}; fsync fails and commits are tried again"
                ),
                (Ok(()), Some(_)) => log::info!("image: durable commits work again"),
                _ => {}
            }
            failing = result.err();
            inner.commits.finish(work, result);
        }
        if quiet.settled(inner.operations.load(Ordering::Relaxed)) {
            if let Some(j) = &inner.journal {
                j.release_free();
            }
            crate::sys::heap::release_free_memory();
        }
    }
}

impl Inner {
    /// `NoSpace` when metadata may not grow (see `room`). Never inside a write transaction.
    fn metadata_room(&self) -> FsResult<()> {
        self.room
            .check(|| self.commit_durably(), || self.metadata_in_use())
    }

    /// Bytes of the metadata region redb uses now (its allocated pages).
    fn metadata_in_use(&self) -> FsResult<u64> {
        let _gate = self.enter_gate()?;
        let tx = self.db.begin_write().io()?;
        let stats = tx.stats().io()?;
        Ok(stats.allocated_pages() * stats.page_size() as u64)
    }

    /// The gate, on a device with a wait limit: ETIMEDOUT once it is held (by a commit stalled
    /// on the device) for longer than that.
    fn enter_gate(&self) -> FsResult<Option<MutexGuard<'_, ()>>> {
        match &self.gate {
            None => Ok(None),
            Some(g) => match g.lock.try_lock_for(g.limit) {
                Some(held) => Ok(Some(held)),
                None => Err(FsError::Os(Errno::ETIMEDOUT)),
            },
        }
    }

    /// Runs `f` in one write transaction, committed (without a flush) only when it succeeds.
    /// EROFS once the device is fenced. A durable commit due by the interval is asked of the
    /// committer; one due for room in the metadata region (see `room`) is made first.
    fn transact<T>(&self, f: impl FnOnce(&Tx<'_>) -> FsResult<T>) -> FsResult<T> {
        self.transact_logged(0, &[], f, |_| None)
    }

    /// `transact` for a change acknowledged before it is durable: `redo` says, from `f`'s
    /// result, what the redo journal records of it (an operation, and how many bytes of `data`
    /// go with it; None: nothing to record), in `bound` bytes at most besides the data. The
    /// record is appended inside the transaction, which stores its number (see `journal`).
    /// When the journal has no room, a durable commit empties it first.
    fn transact_logged<T>(
        &self,
        bound: usize,
        data: &[u8],
        f: impl FnOnce(&Tx<'_>) -> FsResult<T>,
        redo: impl FnOnce(&T) -> Option<(redo::Op, usize)>,
    ) -> FsResult<T> {
        self.operations.fetch_add(1, Ordering::Relaxed);
        if self.device.fenced() {
            return Err(FsError::Os(Errno::EROFS));
        }
        match self.room.due() {
            room::Due::Space => self.commit_durably()?,
            room::Due::Interval => self.commits.nudge(),
            room::Due::No => {}
        }
        let replaying = self.replaying.load(Ordering::SeqCst);
        let mut reservation = match &self.journal {
            Some(j) if bound > 0 && replaying == 0 => {
                Some(self.journal_room(j, bound + data.len())?)
            }
            _ => None,
        };
        let _gate = self.enter_gate()?;
        let mut tx = self.db.begin_write().io()?;
        tx.set_durability(Durability::None).io()?;
        // A logged change takes one time throughout, which its record keeps for the replay.
        let clock = reservation.is_some().then(store::now);
        store::CLOCK.with(|c| c.set(clock.or(c.get())));
        let out = f(&Tx { tx: &tx });
        if clock.is_some() {
            store::CLOCK.with(|c| c.set(None));
        }
        let out = out?;
        let mut appended = None;
        if let Some(j) = &self.journal {
            let seq = match (replaying, reservation.as_mut()) {
                (0, Some(r)) => redo(&out).map(|(op, n)| {
                    let head = redo::encode(op, clock.unwrap_or_else(store::now));
                    let seq = j.append(r, &[&head, &data[..n]]);
                    appended = Some(seq);
                    seq
                }),
                (0, None) => None,
                (seq, _) => Some(seq),
            };
            if let Some(seq) = seq {
                let stored = (|| -> FsResult<()> {
                    let mut c = tx.open_table(COUNTERS).io()?;
                    let was = c.get(JOURNAL_SEQ).io()?.map_or(0, |v| v.value());
                    c.insert(JOURNAL_SEQ, was.max(seq)).io()?;
                    Ok(())
                })();
                if let Err(e) = stored {
                    // The transaction goes: so does its record.
                    if let Some(seq) = appended {
                        j.retract(seq);
                    }
                    return Err(e);
                }
            }
        }
        if let Err(e) = tx.commit() {
            if let (Some(j), Some(seq)) = (&self.journal, appended) {
                j.retract(seq);
            }
            return Err(e).io();
        }
        // Counted once committed: a durable commit that began before covers it (see
        // `durable_commit_now`), and one that begins later sees it counted.
        self.room.committed();
        Ok(out)
    }

    /// Room in the journal for a record of `bytes`: when it is full, a durable commit (which
    /// empties it) first.
    fn journal_room<'j>(
        &self,
        j: &'j journal::Journal,
        bytes: usize,
    ) -> FsResult<journal::Reservation<'j>> {
        if bytes > j.max_payload() {
            log::error!("image: a change of {bytes} bytes is larger than the redo journal holds");
            return Err(FsError::Os(Errno::EFBIG));
        }
        loop {
            if let Some(r) = j.reserve(bytes) {
                return Ok(r);
            }
            self.commit_durably()?;
        }
    }

    /// Makes every earlier commit and data write durable, and the blocks freed since the last
    /// durable commit reusable: asks the committer and waits, for the device's wait limit at
    /// most (ETIMEDOUT; the commit goes on). EIO once the device is fenced.
    fn commit_durably(&self) -> FsResult<()> {
        match self.commits.request_and_wait(self.device.wait_limit()) {
            Ok(()) => Ok(()),
            Err(commit::Waited::NotRunning) => self.durable_commit_now(),
            Err(commit::Waited::TimedOut) => Err(FsError::Os(Errno::ETIMEDOUT)),
            Err(commit::Waited::Failed(e)) => Err(e),
        }
    }

    /// One durable commit, in this thread (the committer's, or before it runs). redb's commit
    /// flushes the device first, data writes included. The blocks freed since the last durable
    /// commit move to the free map as its last change, under the `reuse` lock, and are durable
    /// before any later transaction can take them.
    ///
    /// It holds the transaction lock (and the gate) throughout, also while the device stalls:
    /// other transactions wait behind it, or give up at the gate. (Flushing the device before
    /// taking the lock would spare them the wait for the data in flight, but costs a round trip
    /// to the cluster per commit: measured, half the rate of a write + fsync loop.)
    fn durable_commit_now(&self) -> FsResult<()> {
        if self.device.fenced() {
            return Err(FsError::Os(Errno::EIO));
        }
        let _gate = self.gate.as_ref().map(|g| g.lock.lock());
        let tx = self.db.begin_write().io()?;
        // Every transaction counted so far has committed: this commit covers it.
        let covered = self.room.since_durable();
        let logged = Tx { tx: &tx }.counter(JOURNAL_SEQ)?;
        let drained = alloc::drain_pending(&Tx { tx: &tx })?;
        let _exclusive = (drained > 0).then(|| self.reuse.write());
        tx.commit().io()?;
        self.room.durable_done(covered);
        if let Some(j) = &self.journal {
            j.recycle(logged);
        }
        Ok(())
    }

    fn read_inode(&self, ino: Ino) -> FsResult<InodeRec> {
        let tx = self.db.begin_read().io()?;
        let t = tx.open_table(INODES).io()?;
        let v = t.get(ino).io()?.ok_or(crate::fs::FsError::Stale)?;
        postcard::from_bytes(v.value()).io()
    }

    fn stored_usage(&self) -> FsResult<UsageSnapshot> {
        self.transact(|t| {
            Ok(UsageSnapshot {
                bytes: t.counter(USED_BYTES)?,
                inodes: t.counter(USED_INODES)?,
            })
        })
    }

    /// Records that `ino` was handed out, for a successor (see `open_carried`).
    fn note_ino(&self, ino: Ino) {
        if let Some((table, slot)) = &self.ino_floor {
            table.raise(*slot, 0, ino);
        }
    }

    /// Makes the next inode number pass every number a predecessor handed out (a crash takes
    /// the image back to its last durable commit; the kernel may know later inodes).
    fn raise_next_ino(&self) -> FsResult<()> {
        let Some((table, slot)) = &self.ino_floor else {
            return Ok(());
        };
        let floor = table.get(*slot, 0).saturating_add(1);
        self.transact(|t| {
            if t.counter(NEXT_INO)? < floor {
                t.tx.open_table(COUNTERS)
                    .io()?
                    .insert(NEXT_INO, floor)
                    .io()?;
            }
            Ok(())
        })?;
        // Before serving (the committer does not run yet).
        self.durable_commit_now()
    }

    /// The open handles a predecessor left are restored: orphans nothing holds now go.
    pub(super) fn delete_unheld_orphans(&self) -> FsResult<()> {
        if !self
            .orphans_pending
            .swap(false, std::sync::atomic::Ordering::SeqCst)
        {
            return Ok(());
        }
        self.delete_orphans()
    }

    /// Inodes a crash left without a name (they were open when it happened), but those open
    /// now (their handles restored from a predecessor).
    fn delete_orphans(&self) -> FsResult<()> {
        let orphans: Vec<Ino> = {
            let tx = self.db.begin_read().io()?;
            let table = tx.open_table(INODES).io()?;
            let mut found = Vec::new();
            for entry in table.iter().io()? {
                let (k, v) = entry.io()?;
                let rec: InodeRec = postcard::from_bytes(v.value()).io()?;
                if rec.nlink == 0 {
                    found.push(k.value());
                }
            }
            found
        };
        for ino in orphans {
            // Held open: deleted at its last close, as any inode that lost its last name.
            if let Some(l) = self.live.lock().get_mut(&ino) {
                l.nameless = true;
                continue;
            }
            self.delete_unlinked(ino)?;
        }
        self.commit_durably()
    }

    /// The last name of `ino` is gone: deleted now if nothing reaches it, else once nothing
    /// does (see `unreach`).
    fn lost_last_name(&self, ino: Ino) -> FsResult<()> {
        if self.replaying.load(Ordering::SeqCst) != 0 {
            // Replaying: whether the kernel holds it is known once handles are restored.
            return Ok(());
        }
        {
            let mut live = self.live.lock();
            if let Some(l) = live.get_mut(&ino) {
                // Deleted at the last close or FORGET, which may be on its way (see `quota`).
                l.nameless = true;
                self.quota.expect_release();
                return Ok(());
            }
        }
        self.delete_unlinked(ino)
    }

    /// Takes kernel lookups (`lookups`) or one open handle (`close`) away from `ino`; an inode
    /// without a name that nothing reaches any more is deleted.
    fn unreach(&self, ino: Ino, lookups: u64, close: bool) -> FsResult<()> {
        let delete = {
            let mut live = self.live.lock();
            let Some(l) = live.get_mut(&ino) else {
                return Ok(());
            };
            l.lookups = l.lookups.saturating_sub(lookups);
            if close {
                l.open = l.open.saturating_sub(1);
            }
            if l.lookups > 0 || l.open > 0 {
                if l.nameless && l.open == 0 {
                    // Only the kernel's FORGET is awaited (right after an `rm`, on its way).
                    self.quota.expect_release();
                }
                return Ok(());
            }
            live.remove(&ino).is_some_and(|l| l.nameless) && ino != ROOT_INO
        };
        match delete {
            true => self.delete_unlinked(ino),
            false => Ok(()),
        }
    }

    /// Deletes an inode that has no name (and no open handle), in bounded transactions: its
    /// extents from the last, then its xattrs and record. A crash in between leaves an orphan
    /// that the next open deletes.
    fn delete_unlinked(&self, ino: Ino) -> FsResult<()> {
        loop {
            let step = self.transact_logged(
                REDO_SMALL,
                &[],
                |t| {
                    let Some(mut rec) = t.try_inode(ino)?.filter(|r| r.nlink == 0) else {
                        return Ok(None);
                    };
                    let removed = extents::remove_range(t, ino, 0, u64::MAX, extents::BATCH)?;
                    let freed = removed.blocks * BLOCK;
                    t.add_counter(USED_BYTES, -(freed as i64))?;
                    rec.allocated -= freed;
                    if removed.done {
                        t.delete_inode(ino)?;
                    } else {
                        t.put_inode(ino, &rec)?;
                    }
                    Ok(Some((freed, removed.done)))
                },
                |step| step.map(|_| (redo::Op::Reap { ino }, 0)),
            )?;
            let Some((freed, done)) = step else {
                return Ok(());
            };
            self.quota.adjust(-(freed as i64), -(done as i64));
            if done {
                return Ok(());
            }
        }
    }

    fn add_lookup(&self, ino: Ino) {
        self.live.lock().entry(ino).or_default().lookups += 1;
    }

    fn add_open(&self, ino: Ino) {
        self.live.lock().entry(ino).or_default().open += 1;
    }
}
