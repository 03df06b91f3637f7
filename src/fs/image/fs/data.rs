//! File data in extents of the data region: reads, writes that fit the quota, truncate,
//! fallocate and seeking.
//!
//! Ordered writes: a write hands its data to the device (which may complete it later) inside
//! the transaction that maps it, before the commit; a durable commit flushes the device first.
//! So the metadata of a durable commit never maps a block whose data is not on the image, and a
//! read that finds the new mapping waits for the data (the device orders reads after
//! overlapping writes).
//!
//! Blocks a write allocates, or finds unwritten, are written whole, zero-filled around the
//! data: a block never exposes what it held before. Blocks already written are overwritten in
//! place, only the bytes the write covers. The bytes of the end-of-file block past the end may
//! be stale (a truncate leaves them, so may a crash after an unsynced write); every size
//! increase zeroes them first (`tail_zeros`).
use redb::ReadableDatabase;

use super::Inner;
use super::alloc;
use super::extents::{self, Extent};
use super::store::{Ctx, EXTENTS, INODES, InodeRec, PENDING_BLOCKS, Tx, USED_BYTES, now};
use crate::fs::image::format::BLOCK;
use crate::fs::quota::WritePlan;
use crate::fs::{FileKind, FsError, FsResult, Ino};

/// File blocks `[from, to)` not covered by `map` (extents in order), as (first block, count).
fn holes(map: &[Extent], from: u64, to: u64) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    let mut at = from;
    for e in map {
        if e.lblk > at {
            out.push((at, e.lblk.min(to) - at));
        }
        at = at.max(e.lend());
    }
    if at < to {
        out.push((at, to - at));
    }
    out
}

/// How much of a write of `len` bytes at `offset` fits in `available` bytes, given the holes
/// (in order) of the blocks it touches: each hole block it fills costs a `BLOCK`. A write that
/// does not fit whole stops at the end of the last block there is room for (a short write).
pub fn plan(offset: u64, len: u64, holes: &[(u64, u64)], available: u64) -> WritePlan {
    let mut cost = 0u64;
    for &(first, count) in holes {
        let need = count * BLOCK;
        if cost + need <= available {
            cost += need;
            continue;
        }
        let fit = (available - cost) / BLOCK;
        let cut = (first + fit) * BLOCK;
        return WritePlan {
            len: len.min(cut.saturating_sub(offset)),
            reserve: cost + fit * BLOCK,
        };
    }
    WritePlan { len, reserve: cost }
}

/// A device write the transaction submits: offset on the device and bytes.
type Io = (u64, Vec<u8>);

/// Appends a write, merged into the previous one when it continues it on the device.
fn push_io(ios: &mut Vec<Io>, at: u64, bytes: Vec<u8>) {
    if let Some((prev_at, prev)) = ios.last_mut()
        && *prev_at + prev.len() as u64 == at
    {
        prev.extend_from_slice(&bytes);
        return;
    }
    ios.push((at, bytes));
}

fn file(rec: InodeRec) -> FsResult<InodeRec> {
    match rec.kind() {
        FileKind::File => Ok(rec),
        FileKind::Dir => Err(FsError::Os(nix::errno::Errno::EISDIR)),
        _ => Err(FsError::Invalid),
    }
}

impl Inner {
    fn submit(&self, ios: Vec<Io>) -> FsResult<()> {
        for (at, bytes) in ios {
            self.device.submit_write(at, bytes).map_err(|e| {
                log::error!("image data write at {at}: {e}");
                FsError::Os(nix::errno::Errno::EIO)
            })?;
        }
        Ok(())
    }

    /// The zeros that clear the stale bytes of the end-of-file block from `size` to `upto`
    /// (at most to the block's end), when that block holds written data.
    fn tail_zeros(&self, t: &Tx<'_>, ino: Ino, size: u64, upto: u64) -> FsResult<Option<Io>> {
        let block = size / BLOCK;
        let end = upto.min((block + 1) * BLOCK);
        if size % BLOCK == 0 || end <= size {
            return Ok(None);
        }
        let table = t.tx.open_table(EXTENTS).io()?;
        let hit = extents::overlapping(&table, ino, block, block + 1)?;
        Ok(hit.first().filter(|e| !e.unwritten).map(|e| {
            let at = self.layout.block_offset(e.pblk + (block - e.lblk)) + size % BLOCK;
            (at, vec![0u8; (end - size) as usize])
        }))
    }

    pub(super) fn read_data(&self, ino: Ino, offset: u64, size: u32) -> FsResult<Vec<u8>> {
        let _reuse = self.reuse.read();
        let tx = self.db.begin_read().io()?;
        let rec: InodeRec = {
            let inodes = tx.open_table(INODES).io()?;
            let v = inodes.get(ino).io()?.ok_or(FsError::Stale)?;
            postcard::from_bytes(v.value()).io()?
        };
        let end = rec.size.min(offset.saturating_add(size as u64));
        if offset >= end {
            return Ok(Vec::new());
        }
        let (first, last) = (offset / BLOCK, end.div_ceil(BLOCK));
        let map = extents::overlapping(&tx.open_table(EXTENTS).io()?, ino, first, last)?;
        drop(tx);
        let mut out = vec![0u8; (end - offset) as usize];
        for e in map.iter().filter(|e| !e.unwritten) {
            let e = e.clip(first, last);
            let from = offset.max(e.lblk * BLOCK);
            let to = end.min(e.lend() * BLOCK);
            let at = self.layout.block_offset(e.pblk) + (from - e.lblk * BLOCK);
            let buf = &mut out[(from - offset) as usize..(to - offset) as usize];
            self.device.read_at(at, buf).map_err(|err| {
                log::error!("image data read at {at}: {err}");
                FsError::Os(nix::errno::Errno::EIO)
            })?;
        }
        Ok(out)
    }

    /// Writes what fits: all of `data`, a prefix cut at a block boundary, or nothing (NoSpace).
    /// When the free map is short only because freed blocks wait for a durable commit, it
    /// commits durably and tries again.
    pub(super) fn write_data(&self, ino: Ino, offset: u64, data: &[u8]) -> FsResult<u32> {
        if data.is_empty() {
            return Ok(0);
        }
        let room = self.metadata_room().is_ok();
        let mut waiting_blocks = false;
        let r = self.write_once(ino, offset, data, room, &mut waiting_blocks);
        if matches!(r, Err(FsError::NoSpace)) && waiting_blocks {
            self.commit_durably()?;
            return self.write_once(ino, offset, data, room, &mut false);
        }
        r
    }

    /// One attempt of `write_data`; `room`: whether metadata may grow (new extents).
    fn write_once(
        &self,
        ino: Ino,
        offset: u64,
        data: &[u8],
        room: bool,
        waiting_blocks: &mut bool,
    ) -> FsResult<u32> {
        // The reservation outlives the commit, until the usage it covers is applied.
        let (written, grown, _reservation) = self.transact(false, |t| {
            let mut rec = file(t.inode(ino)?)?;
            let len = data.len() as u64;
            let (first, last) = (offset / BLOCK, (offset + len).div_ceil(BLOCK));
            let mut table = t.tx.open_table(EXTENTS).io()?;
            let map = extents::overlapping(&table, ino, first, last)?;
            let holes = holes(&map, first, last);
            let room_for_new = holes.is_empty() || room;
            let (plan, reservation) = self.quota.reserve_write(|available| {
                plan(
                    offset,
                    len,
                    &holes,
                    if room_for_new { available } else { 0 },
                )
            })?;
            let end = offset + plan.len;
            let stop = end.div_ceil(BLOCK);
            drop(table);
            let tail = if offset > rec.size {
                self.tail_zeros(t, ino, rec.size, offset)?
            } else {
                None
            };
            table = t.tx.open_table(EXTENTS).io()?;

            // Allocate the holes, each after the block before it where possible.
            let mut fresh: Vec<Extent> = Vec::new();
            for &(hole, count) in &holes {
                if hole >= stop {
                    break;
                }
                let count = count.min(stop - hole);
                let goal = match hole.checked_sub(1) {
                    Some(prev) => extents::overlapping(&table, ino, prev, hole)?
                        .first()
                        .map(|e| e.pblk + (hole - e.lblk)),
                    None => None,
                };
                let runs = alloc::allocate(t, count, goal, &self.cursor)?;
                if runs.iter().map(|r| r.len).sum::<u64>() < count {
                    *waiting_blocks = t.counter(PENDING_BLOCKS)? > 0;
                    return Err(FsError::NoSpace);
                }
                let mut at = hole;
                for r in runs {
                    let e = Extent {
                        lblk: at,
                        pblk: r.start,
                        len: r.len,
                        unwritten: false,
                    };
                    extents::insert(&mut table, ino, e)?;
                    fresh.push(e);
                    at += r.len;
                }
            }
            extents::mark_written(&mut table, ino, first, stop)?;
            drop(table);

            // The I/O: whole blocks where they are new or were unwritten, else the bytes.
            let mut pieces: Vec<(Extent, bool)> = (map.iter())
                .filter(|e| e.lblk < stop)
                .map(|e| (e.clip(first, stop), e.unwritten))
                .chain(fresh.iter().map(|e| (*e, true)))
                .collect();
            pieces.sort_by_key(|(e, _)| e.lblk);
            let mut ios: Vec<Io> = tail.into_iter().collect();
            for (e, whole) in &pieces {
                let from = offset.max(e.lblk * BLOCK);
                let to = end.min(e.lend() * BLOCK);
                let src = &data[(from - offset) as usize..(to - offset) as usize];
                if *whole {
                    // One pass over the data: zeros only where it does not cover the blocks.
                    let len = (e.len * BLOCK) as usize;
                    let mut blocks = self.device.buffer(len);
                    blocks.resize((from - e.lblk * BLOCK) as usize, 0);
                    blocks.extend_from_slice(src);
                    blocks.resize(len, 0);
                    push_io(&mut ios, self.layout.block_offset(e.pblk), blocks);
                } else {
                    let at = self.layout.block_offset(e.pblk) + (from - e.lblk * BLOCK);
                    let mut bytes = self.device.buffer(src.len());
                    bytes.extend_from_slice(src);
                    push_io(&mut ios, at, bytes);
                }
            }
            self.submit(ios)?;

            let grown = fresh.iter().map(|e| e.len).sum::<u64>() * BLOCK;
            rec.size = rec.size.max(end);
            rec.allocated += grown;
            (rec.mtime, rec.ctime) = (now(), now());
            t.put_inode(ino, &rec)?;
            t.add_counter(USED_BYTES, grown as i64)?;
            Ok((plan.len, grown, reservation))
        })?;
        self.quota.adjust(grown as i64, 0);
        Ok(written as u32)
    }

    /// Shrinks a file towards `size` in bounded transactions, from its end, while more extents
    /// than one batch lie past `size`; the file is always as long as what is still mapped.
    /// `truncate_in` then does the rest (at most a batch) in the caller's transaction.
    pub(super) fn shrink_steps(&self, ino: Ino, size: u64) -> FsResult<()> {
        loop {
            let step = self.transact(false, |t| {
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

    /// Unmaps file blocks `[from, to)` in bounded transactions while more than a batch of
    /// extents lies there (`punch` does the rest).
    fn punch_steps(&self, ino: Ino, from: u64, to: u64) -> FsResult<()> {
        loop {
            let step = self.transact(false, |t| {
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
            push_io(&mut ios, at, vec![0u8; (b - a) as usize]);
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
        match mode & !libc::FALLOC_FL_KEEP_SIZE {
            0 => self.metadata_room()?,
            libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_ZERO_RANGE => {
                let end = offset.checked_add(len).ok_or(FsError::Invalid)?;
                let (first, last) = (offset.div_ceil(BLOCK), end / BLOCK);
                if first < last {
                    self.punch_steps(ino, first, last)?;
                }
            }
            _ => {}
        }
        let mut waiting_blocks = false;
        let r = self.fallocate_once(ino, offset, len, mode, &mut waiting_blocks);
        if matches!(r, Err(FsError::NoSpace)) && waiting_blocks {
            self.commit_durably()?;
            return self.fallocate_once(ino, offset, len, mode, &mut false);
        }
        r
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
        let delta = self.transact(false, |t| {
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
                        let runs = alloc::allocate(t, count, None, &self.cursor)?;
                        if runs.iter().map(|r| r.len).sum::<u64>() < count {
                            *waiting_blocks = t.counter(PENDING_BLOCKS)? > 0;
                            return Err(FsError::NoSpace);
                        }
                        let mut at = hole;
                        for r in runs {
                            let e = Extent {
                                lblk: at,
                                pblk: r.start,
                                len: r.len,
                                unwritten: true,
                            };
                            extents::insert(&mut table, ino, e)?;
                            at += r.len;
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
        })?;
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
        let offset = u64::try_from(offset).map_err(|_| FsError::Invalid)?;
        let past_end = || FsError::Os(nix::errno::Errno::ENXIO);
        match whence {
            libc::SEEK_SET => return Ok(offset as i64),
            libc::SEEK_END => return Ok(rec.size.saturating_add(offset) as i64),
            libc::SEEK_DATA | libc::SEEK_HOLE if offset >= rec.size => return Err(past_end()),
            libc::SEEK_DATA | libc::SEEK_HOLE => {}
            _ => return Err(FsError::Invalid),
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn ext(lblk: u64, len: u64) -> Extent {
        Extent {
            lblk,
            pblk: 100 + lblk,
            len,
            unwritten: false,
        }
    }

    #[test]
    fn holes_between_extents() {
        assert_eq!(holes(&[], 0, 4), vec![(0, 4)]);
        assert_eq!(holes(&[ext(0, 2), ext(5, 1)], 0, 8), vec![(2, 3), (6, 2)]);
        // An extent that starts before the range and one past its end.
        assert_eq!(holes(&[ext(0, 3), ext(9, 4)], 2, 10), vec![(3, 6)]);
    }

    #[test]
    fn plan_charges_blocks_and_cuts_short() {
        // A new file: 10 bytes cost one block.
        assert_eq!(
            plan(0, 10, &[(0, 1)], BLOCK),
            WritePlan {
                len: 10,
                reserve: BLOCK
            }
        );
        // Overwriting mapped blocks costs nothing, whatever the room.
        assert_eq!(
            plan(0, 100, &[], 0),
            WritePlan {
                len: 100,
                reserve: 0
            }
        );
        // Room for two blocks of a five-block write: cut after the second.
        assert_eq!(
            plan(0, 5 * BLOCK, &[(0, 5)], 2 * BLOCK + 7),
            WritePlan {
                len: 2 * BLOCK,
                reserve: 2 * BLOCK
            }
        );
        // Mapped blocks first, then a hole there is no room for: the mapped part goes ahead.
        assert_eq!(
            plan(100, 3 * BLOCK, &[(2, 2)], 0),
            WritePlan {
                len: 2 * BLOCK - 100,
                reserve: 0
            }
        );
        // No room at all for the first block.
        assert_eq!(plan(0, 10, &[(0, 1)], 0).len, 0);
    }
}
