//! Write-behind for sequential writers. A write with a byte quota reaches the handler, which
//! writes it into the host file's page cache; left alone, those pages stay dirty until the
//! writer's fsync (or the kernel's 30 s expiry), and the disk idles while the data streams in.
//! So each handle tracks its current run of back-to-back writes and starts the host file's
//! writeback for every `WRITE_BEHIND` bytes of it. Random and small writes are left to the
//! kernel: starting their writeback would only lose coalescing.

/// Bytes of a sequential run written between two starts of writeback.
pub const WRITE_BEHIND: u64 = 2 << 20;

/// The part of a handle's current sequential run whose writeback has not been started.
#[derive(Debug, Default)]
pub struct WriteBehind {
    start: u64,
    end: u64,
}

impl WriteBehind {
    /// Records a write of `len` bytes at `offset`. Returns the range (offset, length) whose
    /// writeback to start now, once the run not yet started reaches `WRITE_BEHIND`; a write
    /// that does not continue the run starts a new one.
    pub fn record(&mut self, offset: u64, len: u64) -> Option<(u64, u64)> {
        if offset != self.end {
            self.start = offset;
        }
        self.end = offset.saturating_add(len);
        if self.end - self.start < WRITE_BEHIND {
            return None;
        }
        let range = (self.start, self.end - self.start);
        self.start = self.end;
        Some(range)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    #[test]
    fn a_sequential_run_starts_writeback_every_write_behind_bytes() {
        let mut w = WriteBehind::default();
        assert_eq!(w.record(0, MIB), None);
        assert_eq!(w.record(MIB, MIB), Some((0, 2 * MIB)));
        assert_eq!(w.record(2 * MIB, MIB), None);
        assert_eq!(w.record(3 * MIB, MIB), Some((2 * MIB, 2 * MIB)));
    }

    #[test]
    fn small_writes_add_up() {
        let mut w = WriteBehind::default();
        let step = 128 << 10;
        let started: Vec<_> = (0..32).filter_map(|i| w.record(i * step, step)).collect();
        assert_eq!(started, vec![(0, 2 * MIB), (2 * MIB, 2 * MIB)]);
    }

    #[test]
    fn a_jump_starts_a_new_run() {
        let mut w = WriteBehind::default();
        assert_eq!(w.record(0, MIB), None);
        assert_eq!(w.record(10 * MIB, MIB), None);
        assert_eq!(w.record(11 * MIB, MIB), Some((10 * MIB, 2 * MIB)));
        // random 4 KiB writes never start anything
        for i in 0..10_000u64 {
            assert_eq!(w.record((i * 7919 % 4096) * 4096 + 64 * MIB, 4096), None);
        }
    }

    #[test]
    fn one_big_write_starts_at_once() {
        let mut w = WriteBehind::default();
        assert_eq!(w.record(5, 3 * MIB), Some((5, 3 * MIB)));
    }
}
