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
pub struct SettleState(AtomicU8);

impl SettleState {
    /// True if the host may still change the inode's allocation unseen.
    pub fn unsettled(&self) -> bool {
        self.0.load(Ordering::Acquire) != SETTLED
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
        let state = &inode.settle.0;
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
            if inode.accounted.lock().is_none() {
                continue; // gone: the pass below drops it
            }
            if let Ok(file) = self.reopen(inode, OFlag::O_RDONLY | OFlag::O_NONBLOCK)
                && let Err(e) = writeback::start_writeback(file.as_fd(), 0, 0)
            {
                log::debug!("settle: starting writeback of node {}: {e}", inode.ino);
            }
        }
        self.unsettled.started.lock().extend(written);
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
        inode.settle.0.store(SETTLING, Ordering::Release);
        if inode.accounted.lock().is_some() {
            match self.reopen(inode, OFlag::O_RDONLY | OFlag::O_NONBLOCK) {
                Ok(file) => {
                    if let Err(e) = writeback::write_back_and_wait(file.as_fd()) {
                        log::debug!("settle: writeback of node {}: {e}", inode.ino);
                    }
                    if let Err(e) = self.reaccount_from(inode, file.as_fd()) {
                        log::debug!("settle: re-reading node {}: {e:?}", inode.ino);
                    }
                }
                // Gone with its space (a last name removed meanwhile), or behind fvol's back.
                Err(e) => log::debug!("settle: reopening node {}: {e:?}", inode.ino),
            }
        }
        let settled = inode
            .settle
            .0
            .compare_exchange(SETTLING, SETTLED, Ordering::AcqRel, Ordering::Acquire)
            .is_ok();
        if settled {
            self.inodes.drop_if_forgotten(inode);
        }
    }
}
