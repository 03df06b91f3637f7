//! Quota accounting shared by every backend.
//!
//! Invariant: `used + reserved <= limit` whenever a reservation is granted. Callers reserve
//! the most an operation can allocate before doing it, apply the real change with `adjust`
//! after, then drop the reservation. As long as an operation allocates no more than it
//! reserved, usage never exceeds the limit, whatever the concurrency.
//!
//! An inode whose last name is gone stays counted while it can be reached: while a handle of
//! it is open, and on tmpfs and image until the kernel forgets it. After a plain `rm` the
//! RELEASE of a file just closed and the kernel's FORGET come right away, but they reach the
//! handler a moment after the unlink's reply, so a write right after the `rm` could find the
//! space not yet back. Backends therefore say when a node's space is about to come back
//! (`expect_release`: its last name went while it was open, or it waits only for FORGET), and
//! an operation refused for space within a second of that may wait for the release and try
//! again (`wait_for_release`), as ext4 retries an allocation after a journal commit frees
//! blocks. Only within that second: a nameless inode someone keeps holding must not slow every
//! refused operation.
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use super::{FsError, FsResult, UsageSnapshot};

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Limits {
    pub bytes: Option<u64>,
    pub inodes: Option<u64>,
}

/// An online resize (`VolumeFs::resize`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Resize {
    pub limits: Limits,
    /// The size the backing image must have at least (rbd): grown, with the filesystem in
    /// it, when smaller. Never shrunk.
    pub image_size: Option<u64>,
}

/// Why a resize changed nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResizeError {
    /// A new limit is below what is used (and reserved) now, which this is.
    BelowUsage(UsageSnapshot),
    /// A byte limit on a volume served with kernel passthrough (no byte limit until now),
    /// whose writes never reach the quota: it takes an unmount.
    PassthroughServed,
    /// More than a mounted volume's fixed-size structures hold (tmpfs's shared memory): at
    /// most these limits until it is mounted again.
    BeyondCapacity(Limits),
    Fs(FsError),
}

impl From<FsError> for ResizeError {
    fn from(e: FsError) -> Self {
        ResizeError::Fs(e)
    }
}

#[derive(Debug, Default)]
struct Counters {
    used_bytes: u64,
    used_inodes: u64,
    reserved_bytes: u64,
    reserved_inodes: u64,
    /// When a node's space was last said to be about to come back.
    release_expected_at: Option<Instant>,
}

/// How long after `expect_release` a refused operation waits for a release: the RELEASE of a
/// file closed just before its `rm`, or the FORGET after it, is on its way by then (about 3 ms
/// here), but a nameless file that stays open (a deleted log file) must not slow every refused
/// write.
const RECENT: Duration = Duration::from_secs(1);

#[derive(Debug)]
pub struct Quota {
    /// The limits (`NO_LIMIT` for none): changed only under `counters` (`set_limits`, an
    /// online resize), read there by every check, and without a lock by `limits`.
    bytes_limit: AtomicU64,
    inodes_limit: AtomicU64,
    counters: Mutex<Counters>,
    /// Releases of space so far (any decrease of usage), so waiters see that one happened.
    /// Changed only under `counters` (waiters check it there); read without the lock by
    /// every operation that may be refused, which must not pay a lock for it.
    releases: AtomicU64,
    released: Condvar,
}

/// Space held for an operation in flight; released on drop.
#[must_use]
pub struct Reservation<'a> {
    quota: &'a Quota,
    bytes: u64,
    inodes: u64,
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        let mut c = self.quota.counters.lock();
        c.reserved_bytes -= self.bytes;
        c.reserved_inodes -= self.inodes;
    }
}

impl Quota {
    pub fn new(limits: Limits, start: UsageSnapshot) -> Quota {
        Quota {
            bytes_limit: AtomicU64::new(encode(limits.bytes)),
            inodes_limit: AtomicU64::new(encode(limits.inodes)),
            counters: Mutex::new(Counters {
                used_bytes: start.bytes,
                used_inodes: start.inodes,
                ..Counters::default()
            }),
            releases: AtomicU64::new(0),
            released: Condvar::new(),
        }
    }

    pub fn limits(&self) -> Limits {
        Limits {
            bytes: decode(self.bytes_limit.load(Ordering::Relaxed)),
            inodes: decode(self.inodes_limit.load(Ordering::Relaxed)),
        }
    }

    /// Changes the limits at once (an online resize): the next reservation sees them. Refused,
    /// changing nothing, when what is used and reserved now exceeds a new limit; the error
    /// holds that (the smallest limits allowed now).
    pub fn set_limits(&self, new: Limits) -> Result<(), UsageSnapshot> {
        let c = self.counters.lock();
        let held = UsageSnapshot {
            bytes: c.used_bytes + c.reserved_bytes,
            inodes: c.used_inodes + c.reserved_inodes,
        };
        if new.bytes.is_some_and(|b| b < held.bytes) || new.inodes.is_some_and(|i| i < held.inodes)
        {
            return Err(held);
        }
        self.bytes_limit.store(encode(new.bytes), Ordering::Relaxed);
        self.inodes_limit
            .store(encode(new.inodes), Ordering::Relaxed);
        drop(c);
        // Writers refused for space may wait for space to come back: this is some.
        self.releases.fetch_add(1, Ordering::Release);
        self.released.notify_all();
        Ok(())
    }

    pub fn usage(&self) -> UsageSnapshot {
        let c = self.counters.lock();
        UsageSnapshot {
            bytes: c.used_bytes,
            inodes: c.used_inodes,
        }
    }

    /// Bytes that may still be reserved now (`u64::MAX` without a byte limit).
    pub fn available_bytes(&self) -> u64 {
        let c = self.counters.lock();
        headroom(self.limits().bytes, c.used_bytes, c.reserved_bytes)
    }

    /// Reserves exactly `bytes` and `inodes`, or fails with `NoSpace` and reserves nothing.
    pub fn reserve(&self, bytes: u64, inodes: u64) -> FsResult<Reservation<'_>> {
        let mut c = self.counters.lock();
        if bytes > headroom(self.limits().bytes, c.used_bytes, c.reserved_bytes)
            || inodes > headroom(self.limits().inodes, c.used_inodes, c.reserved_inodes)
        {
            return Err(FsError::NoSpace);
        }
        c.reserved_bytes += bytes;
        c.reserved_inodes += inodes;
        Ok(Reservation {
            quota: self,
            bytes,
            inodes,
        })
    }

    /// Counts `bytes` and `inodes` as used at once if they fit, or fails with `NoSpace` and
    /// counts nothing (for metadata, whose size is known before the change).
    pub fn charge(&self, bytes: u64, inodes: u64) -> FsResult<()> {
        let mut c = self.counters.lock();
        if bytes > headroom(self.limits().bytes, c.used_bytes, c.reserved_bytes)
            || inodes > headroom(self.limits().inodes, c.used_inodes, c.reserved_inodes)
        {
            return Err(FsError::NoSpace);
        }
        c.used_bytes += bytes;
        c.used_inodes += inodes;
        Ok(())
    }

    /// Reserves for a write planned by `plan`, which is given the bytes available now.
    /// Planning under the lock makes concurrent writers see each other's reservations.
    pub fn reserve_write(
        &self,
        plan: impl FnOnce(u64) -> WritePlan,
    ) -> FsResult<(WritePlan, Reservation<'_>)> {
        let mut c = self.counters.lock();
        let planned = plan(headroom(
            self.limits().bytes,
            c.used_bytes,
            c.reserved_bytes,
        ));
        if planned.len == 0 {
            return Err(FsError::NoSpace);
        }
        c.reserved_bytes += planned.reserve;
        Ok((
            planned,
            Reservation {
                quota: self,
                bytes: planned.reserve,
                inodes: 0,
            },
        ))
    }

    /// Applies a real change in allocation (positive or negative).
    pub fn adjust(&self, bytes: i64, inodes: i64) {
        let mut c = self.counters.lock();
        c.used_bytes = c.used_bytes.saturating_add_signed(bytes);
        c.used_inodes = c.used_inodes.saturating_add_signed(inodes);
        if bytes < 0 || inodes < 0 {
            self.releases.fetch_add(1, Ordering::Release);
            self.released.notify_all();
        }
    }

    /// Takes back a `charge` of this operation that it could not use (it failed after,
    /// changing nothing). Not a release: nothing others waited for came back, so an
    /// operation refused for space is not tried again for it (it would be refused again, and
    /// again, without end).
    pub fn refund(&self, bytes: u64, inodes: u64) {
        let mut c = self.counters.lock();
        c.used_bytes = c.used_bytes.saturating_sub(bytes);
        c.used_inodes = c.used_inodes.saturating_sub(inodes);
    }

    /// A node's space is about to come back: its last name went while it was open (the file
    /// may have been closed right before), or it waits only for the kernel's FORGET.
    pub fn expect_release(&self) {
        self.counters.lock().release_expected_at = Some(Instant::now());
    }

    /// Releases of space so far; pass it to `wait_for_release` (taken before the operation).
    pub fn releases(&self) -> u64 {
        self.releases.load(Ordering::Acquire)
    }

    /// For an operation refused for space, begun when `releases` was `seen`: true at once if
    /// space was released since; else, if a release was expected less than a second ago,
    /// waits (at most until `deadline`) until space is released, and true if it was: the
    /// operation is worth trying again. Always false once `deadline` has passed, so that
    /// operations that keep failing while others keep releasing space (churn near the limit)
    /// give up in time instead of retrying forever. Never call it with a lock of the
    /// filesystem held: the release it waits for takes them.
    pub fn wait_for_release(&self, seen: u64, deadline: Instant) -> bool {
        let mut c = self.counters.lock();
        if self.releases() != seen {
            return Instant::now() < deadline;
        }
        if c.release_expected_at.is_none_or(|t| t.elapsed() >= RECENT) {
            return false;
        }
        while self.releases() == seen {
            if self.released.wait_until(&mut c, deadline).timed_out() {
                return false;
            }
        }
        true
    }
}

/// The stored form of "no limit".
const NO_LIMIT: u64 = u64::MAX;

fn encode(limit: Option<u64>) -> u64 {
    limit.unwrap_or(NO_LIMIT)
}

fn decode(stored: u64) -> Option<u64> {
    (stored != NO_LIMIT).then_some(stored)
}

fn headroom(limit: Option<u64>, used: u64, reserved: u64) -> u64 {
    match limit {
        None => u64::MAX,
        Some(limit) => limit.saturating_sub(used + reserved),
    }
}

/// What part of a write goes ahead, and the bytes to reserve for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WritePlan {
    pub len: u64,
    pub reserve: u64,
}

/// Plans a write of `len` bytes at `offset`. `allocated_end` is where the allocated run that
/// covers the block holding `offset` ends (0 when that block is a hole); a run that ends at
/// end of file covers its last block whole. Every block the write touches past that run may
/// need a new block of `block` bytes. When not all of it fits in `available`, the write is cut
/// at a block boundary: a short write (`len` 0 means no room at all).
pub fn plan_write(
    offset: u64,
    len: u64,
    allocated_end: u64,
    block: u64,
    available: u64,
) -> WritePlan {
    let end = offset.saturating_add(len);
    let first_new = if allocated_end > round_down(offset, block) {
        round_up(allocated_end, block)
    } else {
        round_down(offset, block)
    };
    let need = |end: u64| round_up(end, block).saturating_sub(first_new);
    if need(end) <= available {
        return WritePlan {
            len,
            reserve: need(end),
        };
    }
    let reachable_end = first_new.saturating_add(round_down(available, block));
    let fit = reachable_end.saturating_sub(offset).min(len);
    WritePlan {
        len: fit,
        reserve: need(offset + fit).min(available),
    }
}

pub fn round_up(x: u64, block: u64) -> u64 {
    x.div_ceil(block).saturating_mul(block)
}

pub fn round_down(x: u64, block: u64) -> u64 {
    x / block * block
}

#[cfg(test)]
mod tests {
    use super::*;

    const B: u64 = 4096;

    #[test]
    fn append_that_fits_reserves_the_blocks_it_touches() {
        assert_eq!(
            plan_write(0, 10, 0, B, 1 << 20),
            WritePlan {
                len: 10,
                reserve: B
            }
        );
        assert_eq!(
            plan_write(B, 2 * B, 0, B, 1 << 20),
            WritePlan {
                len: 2 * B,
                reserve: 2 * B
            }
        );
    }

    #[test]
    fn overwrite_inside_allocation_needs_nothing() {
        assert_eq!(
            plan_write(100, 1000, 5000, B, 0),
            WritePlan {
                len: 1000,
                reserve: 0
            }
        );
    }

    #[test]
    fn partial_tail_block_already_allocated() {
        // File of 100 bytes: block 0 allocated. Writing 100..5000 needs only block 1.
        assert_eq!(
            plan_write(100, 4900, 100, B, B),
            WritePlan {
                len: 4900,
                reserve: B
            }
        );
        // Appending at an unaligned end of file fills its last block for free.
        assert_eq!(
            plan_write(100, 100, 100, B, 0),
            WritePlan {
                len: 100,
                reserve: 0
            }
        );
    }

    #[test]
    fn short_write_cuts_at_a_block_boundary() {
        let p = plan_write(0, 10 * B, 0, B, 3 * B + 100);
        assert_eq!(
            p,
            WritePlan {
                len: 3 * B,
                reserve: 3 * B
            }
        );
        let p = plan_write(10, 10 * B, 0, B, 2 * B);
        assert_eq!(
            p,
            WritePlan {
                len: 2 * B - 10,
                reserve: 2 * B
            }
        );
    }

    #[test]
    fn no_room_gives_zero() {
        assert_eq!(plan_write(0, 10, 0, B, B - 1).len, 0);
        assert_eq!(plan_write(5 * B + 1, 10, 0, B, 0).len, 0);
    }

    #[test]
    fn exact_fill_fits() {
        assert_eq!(
            plan_write(0, 8 * B, 0, B, 8 * B),
            WritePlan {
                len: 8 * B,
                reserve: 8 * B
            }
        );
    }

    #[test]
    fn waiting_for_a_release_ends_when_space_comes_back() {
        let q = std::sync::Arc::new(Quota::new(
            Limits {
                bytes: Some(2 * B),
                inodes: None,
            },
            UsageSnapshot {
                bytes: 2 * B,
                inodes: 2,
            },
        ));
        let later = || Instant::now() + std::time::Duration::from_secs(600);
        // No release expected: no wait at all.
        assert!(!q.wait_for_release(q.releases(), later()));
        // A release since the operation began: try again at once.
        let seen = q.releases();
        q.adjust(-(B as i64), -1);
        q.adjust(B as i64, 1);
        assert!(q.wait_for_release(seen, later()));
        // Past the deadline, not even a release since makes it worth trying again.
        assert!(!q.wait_for_release(seen, Instant::now()));
        // A release expected: the wait ends with it (released again until it has).
        q.expect_release();
        let seen = q.releases();
        let waiter = {
            let q = q.clone();
            std::thread::spawn(move || q.wait_for_release(seen, later()))
        };
        while !waiter.is_finished() {
            q.adjust(-(B as i64), -1);
            q.adjust(B as i64, 1);
            std::thread::yield_now();
        }
        assert!(waiter.join().unwrap());
        // None comes: the wait ends at the deadline.
        assert!(!q.wait_for_release(q.releases(), Instant::now()));
    }

    #[test]
    fn limits_change_at_once_but_never_below_what_is_held() {
        let q = Quota::new(
            Limits {
                bytes: Some(4 * B),
                inodes: Some(3),
            },
            UsageSnapshot {
                bytes: 2 * B,
                inodes: 2,
            },
        );
        let r = q.reserve(B, 0).unwrap();
        let held = UsageSnapshot {
            bytes: 3 * B,
            inodes: 2,
        };
        let lower = |bytes, inodes| Limits {
            bytes: Some(bytes),
            inodes: Some(inodes),
        };
        assert_eq!(q.set_limits(lower(2 * B, 3)), Err(held));
        assert_eq!(q.set_limits(lower(4 * B, 1)), Err(held));
        assert_eq!(q.limits(), lower(4 * B, 3));
        q.set_limits(lower(3 * B, 2)).unwrap();
        assert_eq!(q.reserve(1, 0).err(), Some(FsError::NoSpace));
        assert_eq!(q.charge(0, 1).err(), Some(FsError::NoSpace));
        drop(r);
        q.set_limits(Limits::default()).unwrap();
        assert_eq!(q.limits(), Limits::default());
        assert!(q.reserve(1 << 40, 1 << 40).is_ok());
    }

    #[test]
    fn reservations_never_exceed_the_limit() {
        let q = Quota::new(
            Limits {
                bytes: Some(10 * B),
                inodes: Some(2),
            },
            UsageSnapshot {
                bytes: B,
                inodes: 1,
            },
        );
        let a = q.reserve(5 * B, 1).unwrap();
        assert_eq!(q.reserve(5 * B, 0).err(), Some(FsError::NoSpace));
        assert_eq!(q.reserve(0, 1).err(), Some(FsError::NoSpace));
        let (plan, b) = q
            .reserve_write(|avail| plan_write(0, 10 * B, 0, B, avail))
            .unwrap();
        assert_eq!(plan.len, 4 * B);
        drop((a, b));
        assert_eq!(q.available_bytes(), 9 * B);
        q.adjust(9 * B as i64, 0);
        assert!(
            q.reserve_write(|avail| plan_write(0, 1, 0, B, avail))
                .is_err()
        );
    }
}
