//! The bounded set of O_PATH descriptors that nodes hold while they are in use ("hot"), one
//! set for every local volume of the process, since they share its open-file limit.
//!
//! Replacement is second chance (a clock): every hot node has one entry in a queue, and a use
//! of its descriptor sets its referenced bit. While the queue is over capacity the front
//! entry's node loses its descriptor, unless its bit is set: then the bit is cleared and the
//! entry goes to the back. A cache hit costs no system call and takes no lock of this module.
//!
//! Invariant: a node that has a file handle holds a descriptor exactly when it has an entry
//! in the queue. Entries of nodes dropped meanwhile (whose descriptors closed with them) stay
//! until the front reaches them and count against the capacity, so the queue, and the memory
//! it keeps, stays at the capacity (an admission stops after two passes, so uses racing it can
//! leave a few entries over until the next one).
use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock, Weak};

use nix::errno::Errno;
use nix::sys::resource::{Resource, getrlimit};
use parking_lot::Mutex;

use super::inodes::Inode;

/// The share of the open-file limit cached descriptors may take; the rest is for open files,
/// directory handles, the FUSE connections and the daemon's own files.
const SHARE_OF_LIMIT: u64 = 2;
const MIN_CAPACITY: usize = 16;
const MAX_CAPACITY: usize = 1 << 20;

pub struct FdCache {
    capacity: usize,
    queue: Mutex<VecDeque<Weak<Inode>>>,
}

impl FdCache {
    pub fn new(capacity: usize) -> FdCache {
        FdCache {
            capacity: capacity.max(1),
            queue: Mutex::new(VecDeque::new()),
        }
    }

    /// The process's cache, sized from its open-file limit when first used (the daemon raises
    /// its soft limit to the hard limit before it serves any volume).
    pub fn global() -> Arc<FdCache> {
        static GLOBAL: OnceLock<Arc<FdCache>> = OnceLock::new();
        GLOBAL
            .get_or_init(|| {
                let limit = getrlimit(Resource::RLIMIT_NOFILE).map_or(1024, |(soft, _)| soft);
                let capacity = capacity_for_limit(limit);
                log::info!("node descriptor cache: {capacity} (open-file limit {limit})");
                Arc::new(FdCache::new(capacity))
            })
            .clone()
    }

    /// Descriptors held now (and entries of dropped nodes not yet passed).
    pub fn held(&self) -> usize {
        self.queue.lock().len()
    }

    /// Registers a node that just got its descriptor, then takes descriptors from the least
    /// recently used nodes while over capacity.
    pub fn admit(&self, inode: &Arc<Inode>) {
        // Closed after the lock is released.
        let mut evicted = Vec::new();
        let mut queue = self.queue.lock();
        queue.push_back(Arc::downgrade(inode));
        // Two passes at most: the first may only clear referenced bits.
        let mut steps = 2 * queue.len();
        while queue.len() > self.capacity && steps > 0 {
            steps -= 1;
            let Some(entry) = queue.pop_front() else {
                break;
            };
            let Some(node) = entry.upgrade() else {
                continue;
            };
            if node.referenced.swap(false, Ordering::Relaxed) {
                queue.push_back(entry);
            } else {
                evicted.extend(node.release_fd());
            }
        }
        drop(queue);
        drop(evicted);
    }

    /// Takes the descriptors of the `n` least recently admitted nodes, used or not; returns
    /// how many it took.
    fn shrink(&self, n: usize) -> usize {
        let mut evicted = Vec::new();
        let mut queue = self.queue.lock();
        while evicted.len() < n {
            let Some(entry) = queue.pop_front() else {
                break;
            };
            if let Some(node) = entry.upgrade() {
                evicted.extend(node.release_fd());
            }
        }
        drop(queue);
        evicted.len()
    }

    /// Runs `open` (something that allocates a descriptor); when the process is out of
    /// descriptors (`EMFILE`), gives back cached ones and tries again, until none are left.
    /// Cached descriptors thus yield to open files, which need real ones.
    pub fn retry_emfile<T>(&self, mut open: impl FnMut() -> Result<T, Errno>) -> Result<T, Errno> {
        loop {
            match open() {
                Err(Errno::EMFILE) => {
                    let batch = (self.held() / 4).max(MIN_CAPACITY);
                    if self.shrink(batch) == 0 {
                        return Err(Errno::EMFILE);
                    }
                    log::debug!("out of descriptors: closed up to {batch} cached ones");
                }
                other => return other,
            }
        }
    }
}

/// How many descriptors the cache may hold under an open-file limit of `limit`.
pub fn capacity_for_limit(limit: u64) -> usize {
    let share = (limit / SHARE_OF_LIMIT).min(MAX_CAPACITY as u64) as usize;
    share.max(MIN_CAPACITY)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capacity_is_a_share_of_the_limit() {
        assert_eq!(capacity_for_limit(20_000), 10_000);
        assert_eq!(capacity_for_limit(256), 128);
        assert_eq!(capacity_for_limit(10), MIN_CAPACITY);
        assert_eq!(capacity_for_limit(u64::MAX), MAX_CAPACITY);
    }
}
