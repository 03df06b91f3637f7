//! Room in the metadata region: when redb may not grow, and when commits must be durable.
//!
//! redb grows its storage by doubling, and a growth step past the end of the region would fail
//! and stop the database for good. The region is sized so that redb's last doubling step ends
//! just inside it (`Layout::for_image`). So:
//! - while redb's length is at most half the region, its next growth fits: nothing to check;
//! - past half, redb has taken its last step and must find every page it needs within its
//!   length. Operations that add metadata (inodes, names, xattrs, extents) go ahead only while
//!   the pages in use (measured), plus an upper estimate of what commits allocated since the
//!   measurement, plus a margin of an eighth of the region stay within that length; otherwise
//!   they fail with ENOSPC. What remains allowed (overwrites, deletes, truncates, attribute
//!   changes) adds no live metadata, works in bounded transactions (`extents::BATCH`), and the
//!   margin covers its copy-on-write pages.
//!
//! Pages that commits free stay allocated until a durable commit when the last durable state
//! uses them. While redb's length is at most half the region that is harmless (everything it
//! holds, live or waiting, fits in the other half after a growth); past half, the database
//! gets a durable commit after every sixteenth of the region (estimated) was allocated, so
//! such pages stay within the margin. Independently, a commit is made durable when the last
//! durable one is `COMMIT_INTERVAL` old, as ext4 commits its journal every 5 s: a crash loses
//! at most that much of what nobody fsynced. Durable commits wait for every data write in
//! flight, so they are kept that rare.
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::fs::image::backend::RegionWatch;
use crate::fs::{FsError, FsResult};

/// What one transaction allocates at most, estimated: copy-on-write paths in a few tables.
/// Transactions that change more (long extent lists) work in batches.
pub const TX_PAGES: u64 = 64 << 10;

/// What may be allocated between durable commits, and the margin kept free, as fractions of
/// the region.
const DURABLE_EVERY: u64 = 16;
const MARGIN: u64 = 8;
/// The longest time between durable commits.
pub const COMMIT_INTERVAL: Duration = Duration::from_secs(5);

/// Whether a transaction about to run makes a durable commit due.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Due {
    No,
    /// The last durable commit is `COMMIT_INTERVAL` old.
    Interval,
    /// Past half the region, a sixteenth of it was allocated since the last durable commit:
    /// one must be made before more is.
    Space,
}

pub struct Room {
    watch: RegionWatch,
    /// Estimated bytes allocated since the last durable commit, and when it was.
    since_durable: AtomicU64,
    durable_at: Mutex<Instant>,
    /// Estimated bytes allocated since the last measurement, and what it found in use.
    since_measured: AtomicU64,
    measured: AtomicU64,
    /// The verdict of the last measurement: no room.
    full: AtomicBool,
}

impl Room {
    pub fn new(watch: RegionWatch) -> Room {
        Room {
            watch,
            since_durable: AtomicU64::new(0),
            durable_at: Mutex::new(Instant::now()),
            since_measured: AtomicU64::new(0),
            measured: AtomicU64::new(u64::MAX),
            full: AtomicBool::new(false),
        }
    }

    pub fn len(&self) -> u64 {
        self.watch.len()
    }

    pub fn capacity(&self) -> u64 {
        self.watch.capacity()
    }

    /// Whether a durable commit is due before a transaction about to run, and why.
    pub fn due(&self) -> Due {
        let since = self.since_durable.load(Ordering::Relaxed) + TX_PAGES;
        if self.len() > self.capacity() / 2 && since >= self.capacity() / DURABLE_EVERY {
            Due::Space
        } else if self.durable_at.lock().elapsed() >= COMMIT_INTERVAL {
            Due::Interval
        } else {
            Due::No
        }
    }

    /// Counts a transaction that committed (not durably).
    pub fn committed(&self) {
        self.since_measured.fetch_add(TX_PAGES, Ordering::Relaxed);
        self.since_durable.fetch_add(TX_PAGES, Ordering::Relaxed);
    }

    /// Whether something changed since a durable commit that is `COMMIT_INTERVAL` old.
    pub fn idle_commit_due(&self) -> bool {
        self.since_durable.load(Ordering::Relaxed) > 0
            && self.durable_at.lock().elapsed() >= COMMIT_INTERVAL
    }

    /// What was counted since the last durable commit; taken by a durable commit once it holds
    /// the transaction lock, so that it covers every transaction counted so far.
    pub fn since_durable(&self) -> u64 {
        self.since_durable.load(Ordering::Relaxed)
    }

    /// Records that a durable commit just completed; it covered `covered` (`since_durable`
    /// when it began): what transactions counted meanwhile stays counted.
    pub fn durable_done(&self, covered: u64) {
        let _ = (self.since_durable).fetch_update(Ordering::Relaxed, Ordering::Relaxed, |s| {
            Some(s.saturating_sub(covered))
        });
        *self.durable_at.lock() = Instant::now();
    }

    /// Ok when metadata may grow; `NoSpace` when not. `sync` commits durably (so that pages
    /// of earlier commits are free) and runs twice before a measurement, which `in_use` makes
    /// (the bytes of redb's allocated pages); never call this inside a write transaction.
    pub fn check(
        &self,
        sync: impl Fn() -> FsResult<()>,
        in_use: impl FnOnce() -> FsResult<u64>,
    ) -> FsResult<()> {
        let (len, cap) = (self.len(), self.capacity());
        if len <= cap / 2 {
            return Ok(());
        }
        let margin = cap / MARGIN;
        let since = self.since_measured.load(Ordering::Relaxed);
        let measured = self.measured.load(Ordering::Relaxed);
        if measured.saturating_add(since).saturating_add(margin) <= len {
            return Ok(());
        }
        // Full at the last measurement, and too little happened since to change that.
        if self.full.load(Ordering::Relaxed) && since < margin / 4 {
            return Err(FsError::NoSpace);
        }
        sync()?;
        sync()?;
        self.since_measured.store(0, Ordering::Relaxed);
        let in_use = in_use()?;
        let len = self.len();
        let full = in_use + margin > len;
        self.measured.store(in_use, Ordering::Relaxed);
        self.full.store(full, Ordering::Relaxed);
        log::info!(
            "image metadata: {in_use} bytes in use, {len} of {cap} bytes of the region taken{}",
            if full { ": full, refusing more" } else { "" }
        );
        if full { Err(FsError::NoSpace) } else { Ok(()) }
    }
}
