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

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
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
}
