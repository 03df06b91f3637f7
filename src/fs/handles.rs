//! Open handles by number, shared by the backends.
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::RwLock;

use super::{Fh, FsError, FsResult};

pub struct HandleTable<H> {
    map: RwLock<HashMap<Fh, Arc<H>>>,
    next: AtomicU64,
}

impl<H> Default for HandleTable<H> {
    fn default() -> Self {
        HandleTable {
            map: RwLock::new(HashMap::new()),
            next: AtomicU64::new(1),
        }
    }
}

impl<H> HandleTable<H> {
    pub fn insert(&self, handle: H) -> Fh {
        let fh = self.next.fetch_add(1, Ordering::Relaxed);
        self.map.write().insert(fh, Arc::new(handle));
        fh
    }

    /// Inserts `handle` under the number `fh` a previous handler gave it (see `fs::resume`);
    /// new handles are numbered past it.
    pub fn insert_at(&self, fh: Fh, handle: H) {
        self.next.fetch_max(fh.saturating_add(1), Ordering::Relaxed);
        self.map.write().insert(fh, Arc::new(handle));
    }

    pub fn get(&self, fh: Fh) -> FsResult<Arc<H>> {
        self.map.read().get(&fh).cloned().ok_or(FsError::Stale)
    }

    pub fn remove(&self, fh: Fh) -> FsResult<Arc<H>> {
        self.map.write().remove(&fh).ok_or(FsError::Stale)
    }
}

/// Where a directory handle's reading stands, for the cores that keep their own directories:
/// the names the last read returned, with their offsets. A read from one of those offsets goes
/// on after that name, however the directory changed meanwhile (so `rm -rf`, which removes
/// what it read before reading on, sees every entry once). A handle costs one reply's worth of
/// names, never a copy of the directory: a flood of open handles on a big directory does not
/// multiply it in memory.
///
/// Offsets: 1 after ".", 2 after "..", then one more per entry, so that in a directory that
/// does not change they are positions. An offset that is not one of the last read's (a
/// `seekdir` back) is taken as a position.
#[derive(Default)]
pub struct DirCursor {
    last: Vec<(u64, std::ffi::OsString)>,
}

/// Where a read starts, after the dots.
#[derive(Debug, PartialEq, Eq)]
pub enum DirStart<'a> {
    /// After the entry `name`, whose offset is `offset`.
    After {
        name: &'a std::ffi::OsStr,
        offset: u64,
    },
    /// After the first `skip` entries (the offset of the last skipped is `skip + 2`).
    Skip(u64),
}

impl DirCursor {
    /// Where a read from `offset` (past the dots, so at least 2) starts.
    pub fn start(&self, offset: u64) -> DirStart<'_> {
        match self.last.iter().find(|(o, _)| *o == offset) {
            Some((offset, name)) => DirStart::After {
                name,
                offset: *offset,
            },
            None => DirStart::Skip(offset.saturating_sub(2)),
        }
    }

    /// Records what a read returned. A read that returned no entry changes nothing (the
    /// kernel asks again from the same offset), except at the end of the directory, where
    /// only the last name is kept: enough to go on if entries are added, and an idle handle
    /// holds one name.
    pub fn returned(&mut self, batch: Vec<(u64, std::ffi::OsString)>, at_end: bool) {
        if !batch.is_empty() {
            self.last = batch;
        } else if at_end && self.last.len() > 1 {
            self.last.drain(..self.last.len() - 1);
            self.last.shrink_to_fit();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::{OsStr, OsString};

    #[test]
    fn a_read_goes_on_after_any_name_the_last_one_returned() {
        let mut c = DirCursor::default();
        assert_eq!(c.start(2), DirStart::Skip(0));
        c.returned(
            vec![(3, OsString::from("a")), (4, OsString::from("b"))],
            false,
        );
        assert_eq!(
            c.start(4),
            DirStart::After {
                name: OsStr::new("b"),
                offset: 4
            }
        );
        assert_eq!(
            c.start(3),
            DirStart::After {
                name: OsStr::new("a"),
                offset: 3
            }
        );
        // An older offset is a position; an empty read keeps the last names, and at the end
        // only the last one.
        assert_eq!(c.start(10), DirStart::Skip(8));
        c.returned(Vec::new(), false);
        assert!(matches!(c.start(3), DirStart::After { .. }));
        c.returned(Vec::new(), true);
        assert_eq!(c.start(3), DirStart::Skip(1));
        assert!(matches!(c.start(4), DirStart::After { .. }));
    }
}
