//! One lock per volume name: operations on one volume run one at a time, operations on
//! different volumes at once. So a volume whose backing store does not answer (a Ceph cluster
//! away) holds back only the operations on it, never `ls`, `inspect` or other volumes.
use std::collections::HashSet;

use parking_lot::{Condvar, Mutex};

#[derive(Default)]
pub struct VolumeLocks {
    busy: Mutex<HashSet<String>>,
    freed: Condvar,
}

/// Holds a volume's lock until dropped.
pub struct VolumeGuard<'a> {
    locks: &'a VolumeLocks,
    name: String,
}

impl VolumeLocks {
    /// Waits until no other operation holds `name`, then holds it.
    pub fn lock(&self, name: &str) -> VolumeGuard<'_> {
        let mut busy = self.busy.lock();
        while busy.contains(name) {
            self.freed.wait(&mut busy);
        }
        busy.insert(name.to_owned());
        VolumeGuard {
            locks: self,
            name: name.to_owned(),
        }
    }
}

impl VolumeLocks {
    /// Holds `name` if no other operation does; None otherwise (for background upkeep, which
    /// must not wait behind a slow operation).
    pub fn try_lock(&self, name: &str) -> Option<VolumeGuard<'_>> {
        let mut busy = self.busy.lock();
        if !busy.insert(name.to_owned()) {
            return None;
        }
        Some(VolumeGuard {
            locks: self,
            name: name.to_owned(),
        })
    }
}

impl Drop for VolumeGuard<'_> {
    fn drop(&mut self) {
        self.locks.busy.lock().remove(&self.name);
        self.locks.freed.notify_all();
    }
}

/// A bound on how many slow operations of one kind run at once (the mounts of start-up):
/// `acquire` waits while `limit` permits are held. Remembers the most ever held at once, so
/// the bound can be checked.
pub struct Permits {
    limit: usize,
    held: Mutex<PermitCount>,
    freed: Condvar,
}

#[derive(Default)]
struct PermitCount {
    now: usize,
    peak: usize,
}

/// One permit, given back when dropped.
pub struct Permit<'a> {
    permits: &'a Permits,
}

impl Permits {
    /// At most `limit` (at least 1) permits held at once.
    pub fn new(limit: usize) -> Permits {
        Permits {
            limit: limit.max(1),
            held: Mutex::new(PermitCount::default()),
            freed: Condvar::new(),
        }
    }

    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Waits until fewer than `limit` permits are held, then holds one.
    pub fn acquire(&self) -> Permit<'_> {
        let mut held = self.held.lock();
        while held.now >= self.limit {
            self.freed.wait(&mut held);
        }
        held.now += 1;
        held.peak = held.peak.max(held.now);
        Permit { permits: self }
    }

    /// The most permits ever held at once.
    pub fn peak(&self) -> usize {
        self.held.lock().peak
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        self.permits.held.lock().now -= 1;
        self.permits.freed.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::time::Duration;

    use super::*;

    #[test]
    fn one_name_waits_others_do_not() {
        let locks = Arc::new(VolumeLocks::default());
        let a = locks.lock("a");
        // Another name is free at once.
        drop(locks.lock("b"));
        let got = Arc::new(AtomicBool::new(false));
        let t = {
            let (locks, got) = (locks.clone(), got.clone());
            std::thread::spawn(move || {
                let _a = locks.lock("a");
                got.store(true, Ordering::SeqCst);
            })
        };
        std::thread::sleep(Duration::from_millis(50));
        assert!(!got.load(Ordering::SeqCst), "took a held name");
        drop(a);
        t.join().unwrap();
        assert!(got.load(Ordering::SeqCst));
    }

    /// However many threads ask at once, no more than the limit hold a permit, and all of them
    /// get one in turn. Each holder waits at a barrier of `limit` threads, so the limit is also
    /// reached (a barrier of one more would never open).
    #[test]
    fn permits_bound_holders_and_all_get_one() {
        let permits = Permits::new(3);
        let barrier = std::sync::Barrier::new(3);
        let done = AtomicUsize::new(0);
        std::thread::scope(|scope| {
            for _ in 0..12 {
                scope.spawn(|| {
                    let _permit = permits.acquire();
                    barrier.wait();
                    done.fetch_add(1, Ordering::SeqCst);
                });
            }
        });
        assert_eq!(done.load(Ordering::SeqCst), 12);
        assert_eq!(permits.peak(), 3);
        assert_eq!(Permits::new(0).limit(), 1);
    }
}
