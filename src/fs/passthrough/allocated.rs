//! Ranges of a file known to be allocated on the host, so that an overwrite inside them needs
//! no look at the host's allocation (two `lseek`s) and no re-read of it (an `fstat`): such a
//! write allocates nothing, so the quota has nothing to reserve or count.
//!
//! Invariant: every range held is allocated on the host (or more of the file is: the ranges
//! may know less than the host, never more). Ranges are only added from what the host said
//! (`SEEK_DATA`/`SEEK_HOLE`) or from what the handler itself just wrote or allocated. Whatever
//! can take allocation away from an inode goes through `PassthroughFs::allocation_taken` (a
//! truncate, a fallocate other than a plain allocation, an open with `O_TRUNC`, the loss of a
//! name, a copy of the host directory that may share extents), which forgets them all. The
//! cache is used only when the handler is the only writer of the tree (not for a `mount=`
//! directory, where others may truncate behind its back).
use std::sync::atomic::Ordering;

use parking_lot::Mutex;

use super::PassthroughFs;
use super::inodes::Inode;
use crate::fs::quota::{round_down, round_up};

/// At most this many ranges per inode; a file written in more scattered places starts over.
const MAX_RANGES: usize = 32;

#[derive(Default)]
pub struct Allocated {
    inner: Mutex<Ranges>,
}

#[derive(Default)]
struct Ranges {
    /// Sorted, disjoint and not touching: `[start, end)` in bytes.
    ranges: Vec<(u64, u64)>,
    /// Counts `forget`s: what the host said before one is stale after it.
    generation: u64,
    /// The volume's epoch the ranges were seen in (see `PassthroughFs::host_copied`).
    epoch: u64,
}

/// When a look at the host began: what it saw is taken only if nothing was forgotten since.
#[derive(Clone, Copy)]
pub struct Seen {
    generation: u64,
    epoch: u64,
}

impl Allocated {
    /// The end of the known-allocated range that holds all of `[start, end)`, if one does,
    /// in the volume's `epoch`.
    pub fn covering(&self, epoch: u64, start: u64, end: u64) -> Option<u64> {
        let inner = self.inner.lock();
        if inner.epoch != epoch {
            return None;
        }
        let ranges = &inner.ranges;
        let i = ranges.partition_point(|&(_, e)| e < end);
        ranges
            .get(i)
            .filter(|&&(s, e)| s <= start && end <= e)
            .map(|&(_, e)| e)
    }

    /// Taken before asking the host (or changing it) in the volume's `epoch`, for `insert`.
    pub fn seen(&self, epoch: u64) -> Seen {
        Seen {
            generation: self.inner.lock().generation,
            epoch,
        }
    }

    /// `[start, end)` is allocated on the host, as `seen`: ignored if a `forget` came in
    /// between (the host may have taken it away meanwhile). Ranges of an older epoch go.
    pub fn insert(&self, seen: Seen, start: u64, end: u64) {
        let mut inner = self.inner.lock();
        if start >= end || inner.generation != seen.generation {
            return;
        }
        if inner.epoch != seen.epoch {
            inner.ranges.clear();
            inner.epoch = seen.epoch;
        }
        let ranges = &mut inner.ranges;
        // Ranges touching or overlapping [start, end) merge into it.
        let first = ranges.partition_point(|&(_, e)| e < start);
        let last = ranges.partition_point(|&(s, _)| s <= end);
        let (mut s, mut e) = (start, end);
        if first < last {
            s = s.min(ranges[first].0);
            e = e.max(ranges[last - 1].1);
        }
        ranges.splice(first..last, [(s, e)]);
        if ranges.len() > MAX_RANGES {
            ranges.clear();
            ranges.push((s, e));
        }
    }

    /// Forgets every range (see the module's invariant).
    pub fn forget(&self) {
        let mut inner = self.inner.lock();
        inner.ranges.clear();
        inner.generation += 1;
    }
}

impl PassthroughFs {
    /// Whether allocated ranges are remembered: only with a byte limit (nothing to check
    /// without one) and when nothing but the handler changes the tree.
    fn caches_allocation(&self) -> bool {
        self.exclusive && self.quota.limits().bytes.is_some()
    }

    /// The end of the known-allocated range holding every block `[offset, offset + len)`
    /// touches, if one does: a write there allocates nothing.
    pub(super) fn known_allocated(&self, inode: &Inode, offset: u64, len: u64) -> Option<u64> {
        if !self.caches_allocation() || len == 0 {
            return None;
        }
        let start = round_down(offset, self.block);
        let end = round_up(offset.saturating_add(len), self.block);
        let epoch = self.allocation_epoch.load(Ordering::Acquire);
        inode.allocated.covering(epoch, start, end)
    }

    /// Taken before a look at the host's allocation of `inode`, or a change of it.
    pub(super) fn allocation_look(&self, inode: &Inode) -> Seen {
        inode
            .allocated
            .seen(self.allocation_epoch.load(Ordering::Acquire))
    }

    /// The blocks `[offset, offset + len)` touches are allocated on the host, as `seen`.
    pub(super) fn allocation_seen(&self, inode: &Inode, seen: Seen, offset: u64, len: u64) {
        if self.caches_allocation() {
            let start = round_down(offset, self.block);
            let end = round_up(offset.saturating_add(len), self.block);
            inode.allocated.insert(seen, start, end);
        }
    }

    /// The one way to say the host may have taken allocation away from `inode` (or made its
    /// overwrites allocate again): called after every such change, done or failed. See the
    /// module's invariant for the list.
    pub(super) fn allocation_taken(&self, inode: &Inode) {
        inode.allocated.forget();
    }

    /// The same for every inode at once: the host directory was copied (a snapshot, perhaps
    /// with reflinks, which share blocks: an overwrite of a shared block allocates).
    pub(super) fn allocation_taken_from_all(&self) {
        self.allocation_epoch.fetch_add(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merges_and_covers() {
        let a = Allocated::default();
        assert_eq!(a.covering(0, 0, 1), None);
        a.insert(a.seen(0), 4096, 8192);
        a.insert(a.seen(0), 16384, 20480);
        assert_eq!(a.covering(0, 4096, 8192), Some(8192));
        assert_eq!(a.covering(0, 4096, 8193), None);
        assert_eq!(a.covering(0, 0, 4096), None);
        a.insert(a.seen(0), 8192, 16384); // touches both: one range
        assert_eq!(a.inner.lock().ranges, vec![(4096, 20480)]);
        assert_eq!(a.covering(0, 5000, 20000), Some(20480));
        a.insert(a.seen(0), 0, 100_000);
        assert_eq!(a.inner.lock().ranges, vec![(0, 100_000)]);
        let seen = a.seen(0);
        a.forget();
        assert_eq!(a.covering(0, 0, 1), None);
        // What the host said before the forget is not taken.
        a.insert(seen, 0, 4096);
        assert_eq!(a.covering(0, 0, 4096), None);
        a.insert(a.seen(0), 0, 4096);
        assert_eq!(a.covering(0, 0, 4096), Some(4096));
        // Nothing of an older epoch counts in a newer one, nor what was seen in the older.
        assert_eq!(a.covering(1, 0, 4096), None);
        a.insert(seen, 0, 4096);
        a.insert(a.seen(1), 8192, 12288);
        assert_eq!(a.covering(1, 0, 4096), None);
        assert_eq!(a.covering(1, 8192, 12288), Some(12288));
    }

    #[test]
    fn too_many_ranges_start_over() {
        let a = Allocated::default();
        for i in 0..=MAX_RANGES as u64 {
            a.insert(a.seen(0), i * 8192, i * 8192 + 4096);
        }
        assert_eq!(a.inner.lock().ranges.len(), 1);
        let last = MAX_RANGES as u64 * 8192;
        assert_eq!(a.covering(0, last, last + 4096), Some(last + 4096));
        assert_eq!(a.covering(0, 0, 4096), None);
    }
}
