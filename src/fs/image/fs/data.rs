//! File data as chunks: reads, writes that fit the quota, truncate, fallocate and seeking.
//!
//! A chunk value is a `Piece`: the bytes from the first to the last byte written in that chunk,
//! after a 2-byte offset (`lead`) of where they start. Space before `lead` and after the bytes
//! is a hole, so a sparse write costs only the span it covers.
use redb::{ReadableDatabase, ReadableTable};

use super::ImageFs;
use super::store::{CHUNK, CHUNKS, Ctx, InodeRec, Tx, UNIT, USED_BYTES, charged, now};
use crate::fs::quota::WritePlan;
use crate::fs::{FileKind, FsError, FsResult, Ino};

/// The stored part of one chunk: `bytes` start `lead` bytes into the chunk.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Piece {
    pub lead: u64,
    pub bytes: Vec<u8>,
}

impl Piece {
    pub fn decode(value: &[u8]) -> Piece {
        let lead = u16::from_le_bytes([value[0], value[1]]) as u64;
        Piece {
            lead,
            bytes: value[2..].to_vec(),
        }
    }

    fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(self.bytes.len() + 2);
        v.extend_from_slice(&(self.lead as u16).to_le_bytes());
        v.extend_from_slice(&self.bytes);
        v
    }

    fn end(&self) -> u64 {
        self.lead + self.bytes.len() as u64
    }

    fn charged(&self) -> u64 {
        charged(self.bytes.len() as u64)
    }

    /// Makes the piece cover `[a, b)` (chunk offsets), zero-filling new space.
    fn cover(&mut self, a: u64, b: u64) {
        if self.bytes.is_empty() {
            *self = Piece {
                lead: a,
                bytes: vec![0; (b - a) as usize],
            };
            return;
        }
        if a < self.lead {
            let mut bytes = vec![0u8; (self.lead - a) as usize];
            bytes.append(&mut self.bytes);
            (self.lead, self.bytes) = (a, bytes);
        }
        if b > self.end() {
            self.bytes.resize((b - self.lead) as usize, 0);
        }
    }
}

/// The pieces of chunks `first..=last` of `ino` (empty for a hole).
fn pieces(t: &Tx<'_>, ino: Ino, first: u64, last: u64) -> FsResult<Vec<Piece>> {
    let table = t.tx.open_table(CHUNKS).io()?;
    let mut out = vec![Piece::default(); (last - first + 1) as usize];
    for entry in table.range((ino, first)..=(ino, last)).io()? {
        let (k, v) = entry.io()?;
        out[(k.value().1 - first) as usize] = Piece::decode(v.value());
    }
    Ok(out)
}

fn store(
    table: &mut redb::Table<(u64, u64), &[u8]>,
    ino: Ino,
    index: u64,
    p: &Piece,
) -> FsResult<()> {
    if p.bytes.is_empty() {
        table.remove((ino, index)).io()?;
    } else {
        table.insert((ino, index), p.encode().as_slice()).io()?;
    }
    Ok(())
}

/// How much of a write of `len` bytes at `offset` fits in `available` bytes, given the pieces of
/// the chunks it touches, and what it costs: each piece grows to cover the write, charged in
/// `UNIT`s. A write that does not fit whole is cut where the room ends (a short write).
pub fn plan(offset: u64, len: u64, first: u64, pieces: &[Piece], available: u64) -> WritePlan {
    let (mut done, mut cost) = (0u64, 0u64);
    for (i, piece) in pieces.iter().enumerate() {
        let start = (first + i as u64) * CHUNK;
        let a = offset.max(start) - start;
        let b = (offset + len).min(start + CHUNK) - start;
        if a >= b {
            continue;
        }
        let mut grown = piece.clone();
        grown.cover(a, b);
        let grow = grown.charged() - piece.charged();
        if cost + grow <= available {
            cost += grow;
            done += b - a;
            continue;
        }
        // Room for part of it, only when the piece grows forwards from `a`.
        let room = (available - cost) / UNIT * UNIT;
        let lead = if piece.bytes.is_empty() {
            a
        } else {
            piece.lead
        };
        if lead <= a {
            let end = (lead + piece.charged() + room).min(b);
            if end > a {
                let mut part = piece.clone();
                part.cover(a, end);
                cost += part.charged() - piece.charged();
                done += end - a;
            }
        }
        break;
    }
    WritePlan {
        len: done,
        reserve: cost,
    }
}

impl ImageFs {
    pub(super) fn read_data(&self, ino: Ino, offset: u64, size: u32) -> FsResult<Vec<u8>> {
        let rec = self.read_inode(ino)?;
        let end = rec.size.min(offset.saturating_add(size as u64));
        if offset >= end {
            return Ok(Vec::new());
        }
        let mut out = vec![0u8; (end - offset) as usize];
        let tx = self.db.begin_read().io()?;
        let table = tx.open_table(CHUNKS).io()?;
        for entry in table
            .range((ino, offset / CHUNK)..=(ino, (end - 1) / CHUNK))
            .io()?
        {
            let (k, v) = entry.io()?;
            let piece = Piece::decode(v.value());
            let start = k.value().1 * CHUNK + piece.lead;
            let from = offset.max(start);
            let to = end.min(start + piece.bytes.len() as u64);
            if from < to {
                out[(from - offset) as usize..(to - offset) as usize]
                    .copy_from_slice(&piece.bytes[(from - start) as usize..(to - start) as usize]);
            }
        }
        Ok(out)
    }

    /// Writes what fits: all of `data`, a prefix cut at a unit boundary, or nothing (NoSpace).
    pub(super) fn write_data(&self, ino: Ino, offset: u64, data: &[u8]) -> FsResult<u32> {
        if data.is_empty() {
            return Ok(0);
        }
        let len = data.len() as u64;
        let (first, last) = (offset / CHUNK, (offset + len - 1) / CHUNK);
        // The reservation outlives the commit, until the usage it covers is applied.
        // Each chunk touched is rewritten whole (copy-on-write).
        let rewrite = (last - first + 1) * (CHUNK + 4096);
        let (written, grown, _reservation) = self.write_costing(rewrite, false, |t| {
            let mut rec = file(t.inode(ino)?)?;
            let pieces = pieces(t, ino, first, last)?;
            let (plan, reservation) = self
                .quota
                .reserve_write(|available| plan(offset, len, first, &pieces, available))?;
            let grown = put_bytes(t, ino, offset, &data[..plan.len as usize])?;
            rec.size = rec.size.max(offset + plan.len);
            rec.allocated += grown;
            (rec.mtime, rec.ctime) = (now(), now());
            t.put_inode(ino, &rec)?;
            t.add_counter(USED_BYTES, grown as i64)?;
            Ok((plan.len, grown, reservation))
        })?;
        self.quota.adjust(grown as i64, 0);
        Ok(written as u32)
    }

    /// Shrinking frees chunks past the end; growing makes a hole.
    pub(super) fn truncate_in(
        &self,
        t: &Tx<'_>,
        ino: Ino,
        rec: &mut InodeRec,
        size: u64,
    ) -> FsResult<i64> {
        let freed = if size < rec.size {
            cut(t, ino, size, u64::MAX)?
        } else {
            0
        };
        rec.size = size;
        rec.allocated -= freed;
        t.add_counter(USED_BYTES, -(freed as i64))?;
        Ok(-(freed as i64))
    }

    pub(super) fn fallocate_data(
        &self,
        ino: Ino,
        offset: u64,
        len: u64,
        mode: i32,
    ) -> FsResult<()> {
        let keep_size = mode & libc::FALLOC_FL_KEEP_SIZE != 0;
        let mut reservation = None;
        let delta = self.write(false, |t| {
            let mut rec = file(t.inode(ino)?)?;
            let delta = match mode & !libc::FALLOC_FL_KEEP_SIZE {
                0 => {
                    let (first, last) = (offset / CHUNK, (offset + len - 1) / CHUNK);
                    let pieces = pieces(t, ino, first, last)?;
                    let need = plan(offset, len, first, &pieces, u64::MAX).reserve;
                    // Held until the usage is applied, after the commit.
                    reservation = Some(self.quota.reserve(need, 0)?);
                    grow_zeroed(t, ino, offset, len)? as i64
                }
                libc::FALLOC_FL_PUNCH_HOLE if keep_size => -(cut(t, ino, offset, len)? as i64),
                libc::FALLOC_FL_ZERO_RANGE => -(cut(t, ino, offset, len)? as i64),
                _ => return Err(FsError::Unsupported),
            };
            if !keep_size {
                rec.size = rec.size.max(offset + len);
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
        let table = tx.open_table(CHUNKS).io()?;
        // Data runs are pieces; everything between them is a hole.
        let mut hole_from = offset;
        for entry in table.range((ino, offset / CHUNK)..=(ino, u64::MAX)).io()? {
            let (k, v) = entry.io()?;
            let piece = Piece::decode(v.value());
            let (start, end) = (
                k.value().1 * CHUNK + piece.lead,
                k.value().1 * CHUNK + piece.end(),
            );
            if end <= offset {
                continue;
            }
            if whence == libc::SEEK_DATA {
                let at = offset.max(start);
                return if at < rec.size {
                    Ok(at as i64)
                } else {
                    Err(past_end())
                };
            }
            if start > hole_from {
                break; // a hole before this piece
            }
            hole_from = end;
        }
        match whence {
            libc::SEEK_HOLE => Ok(hole_from.min(rec.size) as i64),
            _ => Err(past_end()),
        }
    }
}

fn file(rec: InodeRec) -> FsResult<InodeRec> {
    match rec.kind() {
        FileKind::File => Ok(rec),
        FileKind::Dir => Err(FsError::Os(nix::errno::Errno::EISDIR)),
        _ => Err(FsError::Invalid),
    }
}

/// Writes `data` at `offset` into chunks; returns the bytes newly charged.
fn put_bytes(t: &Tx<'_>, ino: Ino, offset: u64, data: &[u8]) -> FsResult<u64> {
    let end = offset + data.len() as u64;
    each_piece(t, ino, offset, end, |start, a, b, piece| {
        piece.cover(a, b);
        let src = (start + a - offset) as usize..(start + b - offset) as usize;
        let at = (a - piece.lead) as usize;
        piece.bytes[at..at + src.len()].copy_from_slice(&data[src]);
    })
    .map(|delta| delta as u64)
}

/// Extends the pieces over `[offset, offset + len)` with zeros; returns the bytes charged.
fn grow_zeroed(t: &Tx<'_>, ino: Ino, offset: u64, len: u64) -> FsResult<u64> {
    each_piece(t, ino, offset, offset + len, |_, a, b, piece| {
        piece.cover(a, b)
    })
    .map(|d| d as u64)
}

/// Makes `[offset, offset + len)` a hole: pieces shrink from either end, and zeros fill a
/// range inside one. Returns the bytes freed.
fn cut(t: &Tx<'_>, ino: Ino, offset: u64, len: u64) -> FsResult<u64> {
    let end = offset.saturating_add(len);
    let last = {
        let table = t.tx.open_table(CHUNKS).io()?;
        let mut range = table.range((ino, offset / CHUNK)..=(ino, u64::MAX)).io()?;
        match range.next_back() {
            Some(e) => e.io()?.0.value().1,
            None => return Ok(0),
        }
    };
    let stop = end.min((last + 1) * CHUNK);
    if stop <= offset {
        return Ok(0);
    }
    let delta = each_piece(t, ino, offset, stop, |_, a, b, piece| {
        if piece.bytes.is_empty() {
            return;
        }
        let (lo, hi) = (a.max(piece.lead), b.min(piece.end()));
        if lo >= hi {
            return;
        }
        if lo == piece.lead && hi == piece.end() {
            piece.bytes.clear();
        } else if lo == piece.lead {
            piece.bytes.drain(..(hi - piece.lead) as usize);
            piece.lead = hi;
        } else if hi == piece.end() {
            piece.bytes.truncate((lo - piece.lead) as usize);
        } else {
            piece.bytes[(lo - piece.lead) as usize..(hi - piece.lead) as usize].fill(0);
        }
    })?;
    Ok((-delta) as u64)
}

/// Applies `change(chunk start, a, b, piece)` to the piece of every chunk overlapping
/// `[from, to)` (with `[a, b)` the overlap in chunk offsets), stores the results, and returns
/// the change in bytes charged.
fn each_piece(
    t: &Tx<'_>,
    ino: Ino,
    from: u64,
    to: u64,
    mut change: impl FnMut(u64, u64, u64, &mut Piece),
) -> FsResult<i64> {
    let (first, last) = (from / CHUNK, (to - 1) / CHUNK);
    let mut table = t.tx.open_table(CHUNKS).io()?;
    let mut delta = 0i64;
    for index in first..=last {
        let start = index * CHUNK;
        let (a, b) = (from.max(start) - start, to.min(start + CHUNK) - start);
        let mut piece = match table.get((ino, index)).io()? {
            Some(v) => Piece::decode(v.value()),
            None => Piece::default(),
        };
        let before = piece.charged();
        let was_empty = piece.bytes.is_empty();
        change(start, a, b, &mut piece);
        if was_empty && piece.bytes.is_empty() {
            continue;
        }
        delta += piece.charged() as i64 - before as i64;
        store(&mut table, ino, index, &piece)?;
    }
    Ok(delta)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn piece(lead: u64, len: usize) -> Piece {
        Piece {
            lead,
            bytes: vec![1; len],
        }
    }

    #[test]
    fn plan_charges_units_and_cuts_short() {
        // A new file: 10 bytes cost one unit.
        assert_eq!(
            plan(0, 10, 0, &[Piece::default()], UNIT),
            WritePlan {
                len: 10,
                reserve: UNIT
            }
        );
        // Overwriting inside an existing piece costs nothing.
        assert_eq!(
            plan(0, 100, 0, &[piece(0, 8192)], 0),
            WritePlan {
                len: 100,
                reserve: 0
            }
        );
        // Only two units of room: a longer write is cut there.
        let p = plan(0, 5000, 0, &[Piece::default()], 2 * UNIT);
        assert_eq!(
            p,
            WritePlan {
                len: 2 * UNIT,
                reserve: 2 * UNIT
            }
        );
        // No room at all.
        assert_eq!(plan(8192, 10, 0, &[piece(0, 8192)], 0).len, 0);
        // A sparse write costs only its own span.
        assert_eq!(
            plan(CHUNK - 1, 1, 0, &[Piece::default()], UNIT).reserve,
            UNIT
        );
    }

    #[test]
    fn pieces_cover_forwards_and_backwards() {
        let mut p = piece(100, 10);
        p.cover(50, 60);
        assert_eq!((p.lead, p.bytes.len()), (50, 60));
        p.cover(200, 210);
        assert_eq!((p.lead, p.end()), (50, 210));
        assert_eq!(Piece::decode(&p.encode()), p);
    }
}
