//! Sizes and holes: truncate, fallocate (allocate, punch, zero), and seeking over holes.
//!
//! Long extent lists are unmapped in bounded transactions (`extents::BATCH`) before the final
//! one, so that no single commit allocates much (see `room`).
use redb::ReadableDatabase;

use super::Inner;
use super::data::{file, holes, push_io};
use super::extents;
use super::store::{Ctx, EXTENTS, InodeRec, Tx, USED_BYTES, now};
use crate::fs::image::format::BLOCK;
use crate::fs::rules::{self, Seek};
use crate::fs::{FileKind, FsError, FsResult, Ino};

impl Inner {
    /// Shrinks a file towards `size` in bounded transactions, from its end, while more extents
    /// than one batch lie past `size`; the file is always as long as what is still mapped.
    /// `truncate_in` then does the rest (at most a batch) in the caller's transaction.
    pub(super) fn shrink_steps(&self, ino: Ino, size: u64) -> FsResult<()> {
        loop {
            let step = self.transact(|t| {
                let mut rec = t.inode(ino)?;
                if rec.kind() != FileKind::File || size >= rec.size {
                    return Ok(None);
                }
                let first = size.div_ceil(BLOCK);
                let removed = extents::remove_range(t, ino, first, u64::MAX, extents::BATCH)?;
                if removed.done && removed.blocks == 0 {
                    return Ok(None);
                }
                let freed = removed.blocks * BLOCK;
                rec.size = rec.size.min(size.max(removed.low * BLOCK));
                rec.allocated -= freed;
                t.put_inode(ino, &rec)?;
                t.add_counter(USED_BYTES, -(freed as i64))?;
                Ok(Some((freed, removed.done)))
            })?;
            match step {
                Some((freed, done)) => {
                    self.quota.adjust(-(freed as i64), 0);
                    if done {
                        return Ok(());
                    }
                }
                None => return Ok(()),
            }
        }
    }

    /// `punch_steps` over the whole blocks of `len` bytes at `offset`.
    fn punch_range_steps(&self, ino: Ino, offset: u64, len: u64) -> FsResult<()> {
        let end = offset.checked_add(len).ok_or(FsError::Invalid)?;
        let (first, last) = (offset.div_ceil(BLOCK), end / BLOCK);
        if first < last {
            self.punch_steps(ino, first, last)?;
        }
        Ok(())
    }

    /// Unmaps file blocks `[from, to)` in bounded transactions while more than a batch of
    /// extents lies there (`punch` does the rest).
    fn punch_steps(&self, ino: Ino, from: u64, to: u64) -> FsResult<()> {
        loop {
            let step = self.transact(|t| {
                let mut rec = file(t.inode(ino)?)?;
                let removed = extents::remove_range(t, ino, from, to, extents::BATCH)?;
                let freed = removed.blocks * BLOCK;
                if freed > 0 {
                    rec.allocated -= freed;
                    t.put_inode(ino, &rec)?;
                    t.add_counter(USED_BYTES, -(freed as i64))?;
                }
                Ok((freed, removed.done))
            })?;
            self.quota.adjust(-(step.0 as i64), 0);
            if step.1 {
                return Ok(());
            }
        }
    }

    /// Sets the size: shrinking frees the blocks past the new end, growing zeroes the stale
    /// tail of the old end-of-file block (the rest reads as a hole). Returns the change in
    /// bytes charged.
    pub(super) fn truncate_in(
        &self,
        t: &Tx<'_>,
        ino: Ino,
        rec: &mut InodeRec,
        size: u64,
    ) -> FsResult<i64> {
        let mut freed = 0;
        if size < rec.size {
            let first = size.div_ceil(BLOCK);
            freed = extents::remove_range(t, ino, first, u64::MAX, usize::MAX)?.blocks * BLOCK;
        } else if let Some(io) = self.tail_zeros(t, ino, rec.size, size)? {
            self.submit(vec![io])?;
        }
        rec.size = size;
        rec.allocated -= freed;
        t.add_counter(USED_BYTES, -(freed as i64))?;
        Ok(-(freed as i64))
    }

    /// Zeroes `[from, to)` where it lies in written blocks (bytes of partial blocks).
    fn zero_bytes(&self, t: &Tx<'_>, ino: Ino, from: u64, to: u64) -> FsResult<()> {
        if from >= to {
            return Ok(());
        }
        let (first, last) = (from / BLOCK, to.div_ceil(BLOCK));
        let map = extents::overlapping(&t.tx.open_table(EXTENTS).io()?, ino, first, last)?;
        let mut ios = Vec::new();
        for e in map.iter().filter(|e| !e.unwritten) {
            let e = e.clip(first, last);
            let a = from.max(e.lblk * BLOCK);
            let b = to.min(e.lend() * BLOCK);
            let at = self.layout.block_offset(e.pblk) + (a - e.lblk * BLOCK);
            push_io(&mut ios, at, vec![0u8; (b - a) as usize].into());
        }
        self.submit(ios)
    }

    /// fallocate: mode 0 (with or without `KEEP_SIZE`) allocates the holes as unwritten
    /// extents; `PUNCH_HOLE | KEEP_SIZE` and `ZERO_RANGE` make the range a hole.
    pub(super) fn fallocate_data(
        &self,
        ino: Ino,
        offset: u64,
        len: u64,
        mode: i32,
    ) -> FsResult<()> {
        let keep_size = mode & libc::FALLOC_FL_KEEP_SIZE != 0;
        match mode & !libc::FALLOC_FL_KEEP_SIZE {
            0 => self.metadata_room()?,
            // The modes `fallocate_once` accepts (punching needs KEEP_SIZE).
            libc::FALLOC_FL_PUNCH_HOLE if keep_size => self.punch_range_steps(ino, offset, len)?,
            libc::FALLOC_FL_ZERO_RANGE => self.punch_range_steps(ino, offset, len)?,
            _ => {}
        }
        self.retry_after_commit(|waiting| self.fallocate_once(ino, offset, len, mode, waiting))
    }

    fn fallocate_once(
        &self,
        ino: Ino,
        offset: u64,
        len: u64,
        mode: i32,
        waiting_blocks: &mut bool,
    ) -> FsResult<()> {
        let keep_size = mode & libc::FALLOC_FL_KEEP_SIZE != 0;
        let end = offset.checked_add(len).ok_or(FsError::Invalid)?;
        // Held until the usage is applied, after the commit.
        let mut reservation = None;
        let redo = |_: &i64| {
            Some((
                super::redo::Op::Fallocate {
                    ino,
                    offset,
                    len,
                    mode,
                },
                0,
            ))
        };
        let delta = self.transact_logged(
            super::REDO_SMALL,
            &[],
            |t| {
                let mut rec = file(t.inode(ino)?)?;
                let (first, last) = (offset / BLOCK, end.div_ceil(BLOCK));
                let delta = match mode & !libc::FALLOC_FL_KEEP_SIZE {
                    0 => {
                        let mut table = t.tx.open_table(EXTENTS).io()?;
                        let map = extents::overlapping(&table, ino, first, last)?;
                        let holes = holes(&map, first, last);
                        let need: u64 = holes.iter().map(|h| h.1).sum();
                        reservation = Some(self.quota.reserve(need * BLOCK, 0)?);
                        for (hole, count) in holes {
                            let mapped =
                                self.map_hole(t, &mut table, ino, (hole, count), None, true)?;
                            if let Err(waiting) = mapped {
                                *waiting_blocks = waiting;
                                return Err(FsError::NoSpace);
                            }
                        }
                        (need * BLOCK) as i64
                    }
                    libc::FALLOC_FL_PUNCH_HOLE if keep_size => self.punch(t, ino, offset, end)?,
                    libc::FALLOC_FL_ZERO_RANGE => self.punch(t, ino, offset, end)?,
                    _ => return Err(FsError::Unsupported),
                };
                if !keep_size && end > rec.size {
                    if let Some(io) = self.tail_zeros(t, ino, rec.size, end)? {
                        self.submit(vec![io])?;
                    }
                    rec.size = end;
                }
                rec.allocated = rec.allocated.saturating_add_signed(delta);
                rec.ctime = now();
                t.put_inode(ino, &rec)?;
                t.add_counter(USED_BYTES, delta)?;
                Ok(delta)
            },
            redo,
        )?;
        self.quota.adjust(delta, 0);
        drop(reservation);
        Ok(())
    }

    /// Makes `[from, to)` a hole: whole blocks are unmapped (freed), the bytes of partial
    /// blocks at the ends are zeroed. Returns the change in bytes charged.
    fn punch(&self, t: &Tx<'_>, ino: Ino, from: u64, to: u64) -> FsResult<i64> {
        let (inner_first, inner_last) = (from.div_ceil(BLOCK), to / BLOCK);
        if inner_first >= inner_last {
            self.zero_bytes(t, ino, from, to)?;
            return Ok(0);
        }
        self.zero_bytes(t, ino, from, inner_first * BLOCK)?;
        self.zero_bytes(t, ino, inner_last * BLOCK, to)?;
        let freed = extents::remove_range(t, ino, inner_first, inner_last, usize::MAX)?.blocks;
        Ok(-((freed * BLOCK) as i64))
    }

    pub(super) fn seek(&self, ino: Ino, offset: i64, whence: i32) -> FsResult<i64> {
        let rec = self.read_inode(ino)?;
        let past_end = || FsError::Os(nix::errno::Errno::ENXIO);
        let (offset, whence) = match rules::seek_request(offset, whence, rec.size)? {
            Seek::At(at) => return Ok(at),
            Seek::Data(from) => (from, libc::SEEK_DATA),
            Seek::Hole(from) => (from, libc::SEEK_HOLE),
        };
        let tx = self.db.begin_read().io()?;
        let table = tx.open_table(EXTENTS).io()?;
        // Data is what extents cover (written or not); everything else is a hole.
        let mut hole_from = offset;
        for e in extents::overlapping(&table, ino, offset / BLOCK, u64::MAX)? {
            let (start, end) = (e.lblk * BLOCK, e.lend() * BLOCK);
            if whence == libc::SEEK_DATA {
                let at = offset.max(start);
                return if at < rec.size {
                    Ok(at as i64)
                } else {
                    Err(past_end())
                };
            }
            if start > hole_from {
                break; // a hole before this extent
            }
            hole_from = end;
        }
        match whence {
            libc::SEEK_HOLE => Ok(hole_from.min(rec.size) as i64),
            _ => Err(past_end()),
        }
    }
}
