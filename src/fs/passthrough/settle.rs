//! Allocation the host adds after the handler looked. A delayed-allocation filesystem (ext4,
//! xfs) allocates a written range only when its dirty pages are written back, seconds after the
//! write, and the blocks of its extent tree with it: a file whose data lies in more than four
//! extents gains a block at writeback that the re-read after the write could not see. So every
//! regular file whose data the host may still allocate for (written, copied into, allocated,
//! punched or truncated through the handler, or written by the kernel through a passthrough
//! open) is *unsettled* until a settle pass has seen its writeback done and re-read it.
//!
//! A pass (`PassthroughFs::settle`, every 5 s from the daemon) re-reads the files whose
//! writeback the previous pass started, waiting for what is still in flight, and starts the
//! writeback of the files written since. So a file's usage is exact within two passes of its
//! last write, and at once after `sync_all` (syncfs, then a re-read of every unsettled file).
//!
//! An unsettled node stays in the inode table when the kernel forgets it (until the pass that
//! settles it), so that the inode never has two nodes, each with its own idea of what the
//! quota counts for it.
use std::os::fd::AsFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

use nix::fcntl::OFlag;
use parking_lot::Mutex;

use super::PassthroughFs;
use super::inodes::Inode;
use crate::sys::writeback;

/// An inode's settle state.
const SETTLED: u8 = 0;
/// Written since it was last re-read after writeback; in `Unsettled::written` or `started`.
const WRITTEN: u8 = 1;
/// Being re-read by a pass; a write meanwhile makes it `WRITTEN` again.
const SETTLING: u8 = 2;

/// Per inode: where it is in settling.
#[derive(Default)]
pub struct SettleState {
    state: AtomicU8,
    /// Descriptors of the inode settle passes hold open, and the bytes of its space if it was
    /// freed meanwhile: given back when the last of them closes (see `give_back`).
    held: Mutex<(u32, Option<u64>)>,
}

impl SettleState {
    /// True if the host may still change the inode's allocation unseen.
    pub fn unsettled(&self) -> bool {
        self.state.load(Ordering::Acquire) != SETTLED
    }

    /// For the space of the inode, freed: `None` if a settle pass holds a descriptor of it
    /// (the host has not freed it yet; the pass gives the space back when it closes it).
    pub(super) fn give_back_now(&self, bytes: u64) -> Option<u64> {
        let mut held = self.held.lock();
        if held.0 > 0 {
            held.1 = Some(bytes);
            return None;
        }
        Some(bytes)
    }
}

/// The unsettled inodes of a volume.
#[derive(Default)]
pub(super) struct Unsettled {
    /// Written since the last pass.
    written: Mutex<Vec<Arc<Inode>>>,
    /// Writeback started by the last pass.
    started: Mutex<Vec<Arc<Inode>>>,
}

impl Unsettled {
    /// `inode` was written: unsettled until a pass re-reads it. One atomic load on the hot
    /// path; the list is touched once per inode per pass.
    pub(super) fn written(&self, inode: &Arc<Inode>) {
        let state = &inode.settle.state;
        if state.load(Ordering::Relaxed) != WRITTEN
            && state.swap(WRITTEN, Ordering::AcqRel) != WRITTEN
        {
            self.written.lock().push(inode.clone());
        }
    }
}

impl PassthroughFs {
    /// One settle pass (see the module's doc): re-reads the inodes whose writeback the last
    /// pass started, then starts the writeback of those written since.
    pub fn settle(&self) {
        let started = std::mem::take(&mut *self.unsettled.started.lock());
        for inode in started {
            self.settle_one(&inode);
        }
        let written = std::mem::take(&mut *self.unsettled.written.lock());
        for inode in &written {
            self.with_file(inode, |file| {
                if let Err(e) = writeback::start_writeback(file.as_fd(), 0, 0) {
                    log::debug!("settle: starting writeback of node {}: {e}", inode.ino);
                }
            });
        }
        self.unsettled.started.lock().extend(written);
    }

    /// Runs `f` on a descriptor of `inode` opened for it, unless its space was given back.
    /// While the descriptor is open the host cannot free the inode, so space freed meanwhile
    /// goes back to the quota only once it is closed.
    fn with_file(&self, inode: &Inode, f: impl FnOnce(&std::fs::File)) {
        inode.settle.held.lock().0 += 1;
        if inode.accounted.lock().is_some() {
            match self.reopen(inode, OFlag::O_RDONLY | OFlag::O_NONBLOCK) {
                Ok(file) => f(&file),
                // Gone with its space (a last name removed meanwhile), or behind fvol's back.
                Err(e) => log::debug!("settle: reopening node {}: {e:?}", inode.ino),
            }
        }
        let freed = {
            let mut held = inode.settle.held.lock();
            held.0 -= 1;
            if held.0 == 0 { held.1.take() } else { None }
        };
        if let Some(bytes) = freed {
            self.quota.adjust(-(bytes as i64), -1);
        }
    }

    /// Re-reads every unsettled inode (after `syncfs`, their writeback is done but for
    /// writes since).
    pub(super) fn settle_all(&self) {
        let mut all = std::mem::take(&mut *self.unsettled.started.lock());
        all.append(&mut self.unsettled.written.lock());
        for inode in all {
            self.settle_one(&inode);
        }
    }

    /// Re-reads `inode` once its writeback is done (waiting for it, and writing back what was
    /// written since), then marks it settled unless it was written meanwhile, and lets its
    /// node go if the kernel forgot it.
    fn settle_one(&self, inode: &Arc<Inode>) {
        inode.settle.state.store(SETTLING, Ordering::Release);
        self.with_file(inode, |file| {
            if let Err(e) = writeback::write_back_and_wait(file.as_fd()) {
                log::debug!("settle: writeback of node {}: {e}", inode.ino);
            }
            if let Err(e) = self.reaccount_from(inode, file.as_fd()) {
                log::debug!("settle: re-reading node {}: {e:?}", inode.ino);
            }
        });
        let settled = inode
            .settle
            .state
            .compare_exchange(SETTLING, SETTLED, Ordering::AcqRel, Ordering::Acquire)
            .is_ok();
        if settled {
            self.inodes.drop_if_forgotten(inode);
        }
    }
}
