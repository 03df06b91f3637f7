//! Kernel passthrough backing ids: one per inode while any passthrough handle of it is open
//! (the kernel refuses two backing files for one inode), registered on the connection and
//! closed at the inode's last release.
//!
//! The ids belong to the connection, not the handler: after a restart the kernel's open
//! passthrough files keep theirs, and a new open of the same inode must get the same id. So
//! every passthrough handle is recorded (handle, inode, id) in a shared table (see
//! `fs::resume`), from which a successor rebuilds this map.
use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;

use parking_lot::Mutex;

use crate::fs::Ino;
use crate::fs::resume::{Slot, Table};

/// Fields of a record: handle, inode, backing id.
const FH: usize = 0;
const INO: usize = 1;
const ID: usize = 2;
pub const FIELDS: usize = 3;
pub const CAPACITY: u32 = 1 << 21;

#[derive(Default)]
struct State {
    /// The inode's backing id and its passthrough handles.
    by_ino: HashMap<Ino, (u32, usize)>,
    by_fh: HashMap<u64, (Ino, Option<Slot>)>,
}

pub struct Backings {
    /// The connection the ids are registered on; None: no passthrough.
    device: Option<Arc<OwnedFd>>,
    table: Option<Table>,
    state: Mutex<State>,
}

impl Backings {
    pub fn new(device: Option<Arc<OwnedFd>>, table: Option<Table>) -> Backings {
        Backings {
            device,
            table,
            state: Mutex::new(State::default()),
        }
    }

    /// Takes over the ids a predecessor recorded in the table.
    pub fn restore(&self) -> usize {
        let Some(table) = &self.table else { return 0 };
        let mut state = self.state.lock();
        let records = table.records();
        for (slot, f) in &records {
            let (fh, ino, id) = (f[FH], f[INO], f[ID] as u32);
            state.by_ino.entry(ino).or_insert((id, 0)).1 += 1;
            state.by_fh.insert(fh, (ino, Some(*slot)));
        }
        records.len()
    }

    /// The backing id for passthrough handle `fh` of `ino`, whose host file is `file`: the
    /// inode's, or one registered now.
    pub fn acquire(&self, ino: Ino, fh: u64, file: &std::fs::File) -> io::Result<u32> {
        let device = self
            .device
            .as_ref()
            .ok_or_else(|| io::Error::from(io::ErrorKind::Unsupported))?;
        let mut state = self.state.lock();
        let id = match state.by_ino.entry(ino) {
            Entry::Occupied(e) => e.into_mut(),
            Entry::Vacant(v) => {
                let id = fuser::BackingId::create_raw(device.as_fd(), file.as_fd())?;
                v.insert((id, 0))
            }
        };
        id.1 += 1;
        let id = id.0;
        let slot = self
            .table
            .as_ref()
            .and_then(|t| t.insert(&[fh, ino, u64::from(id)]));
        state.by_fh.insert(fh, (ino, slot));
        Ok(id)
    }

    /// Handle `fh` is released: its inode's id is closed with its last handle.
    pub fn release(&self, fh: u64) {
        let mut state = self.state.lock();
        let Some((ino, slot)) = state.by_fh.remove(&fh) else {
            return;
        };
        if let (Some(table), Some(slot)) = (&self.table, slot) {
            table.remove(slot);
        }
        if let Entry::Occupied(mut e) = state.by_ino.entry(ino) {
            e.get_mut().1 -= 1;
            if e.get().1 == 0 {
                let (id, _) = e.remove();
                if let Some(device) = &self.device
                    && let Err(err) = crate::sys::fusedev::close_backing(device.as_fd(), id)
                {
                    log::warn!("closing backing id {id} of inode {ino}: {err}");
                }
            }
        }
    }
}
