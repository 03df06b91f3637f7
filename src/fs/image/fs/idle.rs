//! When a volume has gone quiet, so that memory kept for the next burst of I/O goes back.
//!
//! A busy rbd volume keeps the redo journal's pages for the next records and leaves freed
//! buffers inside glibc's arenas (about 50 MiB after a long write), which would otherwise stay
//! resident while the volume sits idle. The committer thread asks once per tick; the memory is released once per
//! quiet period, a whole tick after the last operation, never while I/O goes on.

/// Watches a counter of operations from one tick to the next.
#[derive(Debug, Default)]
pub struct Quiet {
    seen: u64,
    /// Whether the memory was released since the last operation seen.
    released: bool,
}

impl Quiet {
    /// Called once per tick with the operation counter; true on the first tick that finds
    /// the counter unchanged after it had moved.
    pub fn settled(&mut self, operations: u64) -> bool {
        if operations != self.seen {
            self.seen = operations;
            self.released = false;
            return false;
        }
        !std::mem::replace(&mut self.released, true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn once_per_quiet_period_a_tick_after_the_last_operation() {
        let mut q = Quiet::default();
        // A fresh volume: one release at its first tick (harmless), then none.
        assert!(q.settled(0));
        assert!(!q.settled(0));
        // Busy: the counter moves at every tick.
        assert!(!q.settled(5));
        assert!(!q.settled(9));
        // Quiet: released on the first unchanged tick, then not again.
        assert!(q.settled(9));
        assert!(!q.settled(9));
        assert!(!q.settled(9));
        // One more operation starts a new period.
        assert!(!q.settled(10));
        assert!(q.settled(10));
    }
}
