//! File data in extents of the data region: reads, and writes that fit the quota (sizes and
//! holes are in `space`).
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
use std::borrow::Cow;
use std::sync::atomic::Ordering;

use redb::ReadableDatabase;

use super::Inner;
use super::alloc;
use super::extents::{self, Extent, ExtentTable};
use super::store::{Ctx, EXTENTS, INODES, InodeRec, PENDING_BLOCKS, Tx, USED_BYTES, now};
use crate::fs::image::format::BLOCK;
use crate::fs::quota::WritePlan;
use crate::fs::{FileKind, FsError, FsResult, Ino};

/// File blocks `[from, to)` not covered by `map` (extents in order), as (first block, count).
pub(super) fn holes(map: &[Extent], from: u64, to: u64) -> Vec<(u64, u64)> {
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

/// A device write the transaction submits: offset on the device and bytes (the caller's
/// where they need no padding: the device copies what it keeps).
pub(super) type Io<'a> = (u64, Cow<'a, [u8]>);

/// Appends a write, merged into the previous one when it continues it on the device.
pub(super) fn push_io<'a>(ios: &mut Vec<Io<'a>>, at: u64, bytes: Cow<'a, [u8]>) {
    if let Some((prev_at, prev)) = ios.last_mut()
        && *prev_at + prev.len() as u64 == at
    {
        prev.to_mut().extend_from_slice(&bytes);
        return;
    }
    ios.push((at, bytes));
}

pub(super) fn file(rec: InodeRec) -> FsResult<InodeRec> {
    match rec.kind() {
        FileKind::File => Ok(rec),
        FileKind::Dir => Err(FsError::Os(nix::errno::Errno::EISDIR)),
        _ => Err(FsError::Invalid),
    }
}

impl Inner {
    /// A failed data read or write: ETIMEDOUT when the device gave up waiting for its cluster
    /// (the I/O goes on); on a fenced device EROFS for a write, as for every change, and EIO
    /// for a read; else EIO, as from a failing disk. Timeouts and fences are reported by
    /// `health`, not logged at every call.
    fn data_error(&self, write: bool, at: u64, e: std::io::Error) -> FsError {
        use nix::errno::Errno;
        if e.kind() == std::io::ErrorKind::TimedOut {
            return FsError::Os(Errno::ETIMEDOUT);
        }
        if self.device.fenced() {
            return FsError::Os(if write { Errno::EROFS } else { Errno::EIO });
        }
        let what = if write { "write" } else { "read" };
        log::error!("image data {what} at {at}: {e}");
        FsError::Os(Errno::EIO)
    }

    /// Maps the file blocks `(first, count)` of a hole to newly allocated ones (the run at
    /// `goal` first), as extents that are `unwritten` or not. `Err(waiting)` inside when too
    /// few blocks are free: `waiting` says whether blocks pending a durable commit would help.
    pub(super) fn map_hole(
        &self,
        t: &Tx<'_>,
        table: &mut ExtentTable<'_>,
        ino: Ino,
        (first, count): (u64, u64),
        goal: Option<u64>,
        unwritten: bool,
    ) -> FsResult<Result<Vec<Extent>, bool>> {
        let runs = alloc::allocate(t, count, goal, &self.cursor)?;
        if runs.iter().map(|r| r.len).sum::<u64>() < count {
            return Ok(Err(t.counter(PENDING_BLOCKS)? > 0));
        }
        let mut mapped = Vec::with_capacity(runs.len());
        let mut at = first;
        for r in runs {
            let e = Extent {
                lblk: at,
                pblk: r.start,
                len: r.len,
                unwritten,
            };
            extents::insert(table, ino, e)?;
            mapped.push(e);
            at += r.len;
        }
        Ok(Ok(mapped))
    }

    pub(super) fn submit(&self, ios: Vec<Io<'_>>) -> FsResult<()> {
        for (at, bytes) in ios {
            self.device
                .submit_write(at, &bytes)
                .map_err(|e| self.data_error(true, at, e))?;
        }
        Ok(())
    }

    /// The zeros that clear the stale bytes of the end-of-file block from `size` to `upto`
    /// (at most to the block's end), when that block holds written data.
    pub(super) fn tail_zeros(
        &self,
        t: &Tx<'_>,
        ino: Ino,
        size: u64,
        upto: u64,
    ) -> FsResult<Option<Io<'static>>> {
        let block = size / BLOCK;
        let end = upto.min((block + 1) * BLOCK);
        if size % BLOCK == 0 || end <= size {
            return Ok(None);
        }
        let table = t.tx.open_table(EXTENTS).io()?;
        let hit = extents::overlapping(&table, ino, block, block + 1)?;
        Ok(hit.first().filter(|e| !e.unwritten).map(|e| {
            let at = self.layout.block_offset(e.pblk + (block - e.lblk)) + size % BLOCK;
            (at, Cow::Owned(vec![0u8; (end - size) as usize]))
        }))
    }

    pub(super) fn read_data(&self, ino: Ino, offset: u64, size: u32) -> FsResult<Vec<u8>> {
        let _reuse = self.reuse.read();
        self.operations.fetch_add(1, Ordering::Relaxed);
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
            self.device
                .read_data(at, buf)
                .map_err(|e| self.data_error(false, at, e))?;
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
        self.retry_after_commit(|waiting| self.write_once(ino, offset, data, room, waiting))
    }

    /// Runs `attempt`; when it ran out of blocks only because freed ones wait for a durable
    /// commit (it sets the flag it is given), commits durably and runs it once more.
    pub(super) fn retry_after_commit<T>(
        &self,
        attempt: impl Fn(&mut bool) -> FsResult<T>,
    ) -> FsResult<T> {
        let mut waiting_blocks = false;
        let r = attempt(&mut waiting_blocks);
        if matches!(r, Err(FsError::NoSpace)) && waiting_blocks {
            self.commit_durably()?;
            return attempt(&mut false);
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
        let redo =
            |out: &(u64, u64, _)| Some((super::redo::Op::Write { ino, offset }, out.0 as usize));
        let (written, grown, _reservation) = self.transact_logged(
            super::REDO_SMALL,
            data,
            |t| {
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
                    let mapped = self.map_hole(t, &mut table, ino, (hole, count), goal, false)?;
                    fresh.extend(mapped.map_err(|waiting| {
                        *waiting_blocks = waiting;
                        FsError::NoSpace
                    })?);
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
                    let (start, stop) = (e.lblk * BLOCK, e.lend() * BLOCK);
                    if *whole && (from, to) != (start, stop) {
                        // One pass over the data: zeros only where it does not cover the blocks.
                        let len = (stop - start) as usize;
                        let mut blocks = Vec::with_capacity(len);
                        blocks.resize((from - start) as usize, 0);
                        blocks.extend_from_slice(src);
                        blocks.resize(len, 0);
                        push_io(
                            &mut ios,
                            self.layout.block_offset(e.pblk),
                            Cow::Owned(blocks),
                        );
                    } else {
                        let at = self.layout.block_offset(e.pblk) + (from - start);
                        push_io(&mut ios, at, Cow::Borrowed(src));
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
            },
            redo,
        )?;
        self.quota.adjust(grown as i64, 0);
        Ok(written as u32)
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
