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

    pub fn get(&self, fh: Fh) -> FsResult<Arc<H>> {
        self.map.read().get(&fh).cloned().ok_or(FsError::Stale)
    }

    pub fn remove(&self, fh: Fh) -> FsResult<Arc<H>> {
        self.map.write().remove(&fh).ok_or(FsError::Stale)
    }
}
