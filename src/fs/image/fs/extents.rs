//! Extent maps: which data blocks hold which blocks of a file.
//!
//! Invariants (checked by fsck): a file's extents never overlap; every extent has at least one
//! block and lies inside the data region; extents that touch and continue each other (same
//! state, contiguous on the device) are merged, so a file written in order is one extent.
use redb::{ReadableTable, Table};

use super::alloc::{self, Run};
use super::store::{Ctx, EXTENTS, Tx};
use crate::fs::{FsResult, Ino};

pub(super) type ExtentTable<'a> = Table<'a, (u64, u64), (u64, u64, bool)>;

/// `len` file blocks from `lblk`, held by data blocks from `pblk`. An unwritten extent is
/// allocated but reads as zeros: its blocks were never written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Extent {
    pub lblk: u64,
    pub pblk: u64,
    pub len: u64,
    pub unwritten: bool,
}

impl Extent {
    /// The file block after the last.
    pub fn lend(&self) -> u64 {
        self.lblk + self.len
    }

    /// The part of the extent within file blocks `[from, to)` (which must overlap it).
    pub fn clip(&self, from: u64, to: u64) -> Extent {
        let a = from.max(self.lblk);
        let b = to.min(self.lend());
        Extent {
            lblk: a,
            pblk: self.pblk + (a - self.lblk),
            len: b - a,
            unwritten: self.unwritten,
        }
    }

    pub fn run(&self) -> Run {
        Run {
            start: self.pblk,
            len: self.len,
        }
    }

    fn from_entry(key: (u64, u64), value: (u64, u64, bool)) -> Extent {
        Extent {
            lblk: key.1,
            pblk: value.0,
            len: value.1,
            unwritten: value.2,
        }
    }

    /// Whether `next` continues this extent exactly (same state, contiguous both ways).
    fn continued_by(&self, next: &Extent) -> bool {
        self.lend() == next.lblk
            && self.pblk + self.len == next.pblk
            && self.unwritten == next.unwritten
    }
}

/// The extents of `ino` that overlap file blocks `[from, to)`, in order, unclipped.
pub fn overlapping(
    table: &impl ReadableTable<(u64, u64), (u64, u64, bool)>,
    ino: Ino,
    from: u64,
    to: u64,
) -> FsResult<Vec<Extent>> {
    let mut out = Vec::new();
    if from >= to {
        return Ok(out);
    }
    if let Some(entry) = table.range((ino, 0)..=(ino, from)).io()?.next_back() {
        let (k, v) = entry.io()?;
        let e = Extent::from_entry(k.value(), v.value());
        if e.lend() > from {
            out.push(e);
        }
    }
    for entry in table.range((ino, from + 1)..(ino, to)).io()? {
        let (k, v) = entry.io()?;
        out.push(Extent::from_entry(k.value(), v.value()));
    }
    Ok(out)
}

fn put(table: &mut ExtentTable<'_>, ino: Ino, e: &Extent) -> FsResult<()> {
    table
        .insert((ino, e.lblk), (e.pblk, e.len, e.unwritten))
        .io()?;
    Ok(())
}

/// Adds `e` (which overlaps no extent of `ino`), merged with the extents it continues.
pub fn insert(table: &mut ExtentTable<'_>, ino: Ino, e: Extent) -> FsResult<()> {
    let mut e = e;
    let before = match table.range((ino, 0)..(ino, e.lblk)).io()?.next_back() {
        Some(entry) => {
            let (k, v) = entry.io()?;
            Some(Extent::from_entry(k.value(), v.value()))
        }
        None => None,
    };
    if let Some(b) = before.filter(|b| b.continued_by(&e)) {
        table.remove((ino, b.lblk)).io()?;
        e = Extent {
            len: b.len + e.len,
            ..b
        };
    }
    let after = table
        .get((ino, e.lend()))
        .io()?
        .map(|v| Extent::from_entry((ino, e.lend()), v.value()));
    if let Some(a) = after.filter(|a| e.continued_by(a)) {
        table.remove((ino, a.lblk)).io()?;
        e.len += a.len;
    }
    put(table, ino, &e)
}

/// Extents a bounded transaction unmaps at most: keeps what one commit allocates small (see
/// `room`) whatever the size of the file.
pub const BATCH: usize = 4096;

/// What `remove_range` did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Removed {
    /// Data blocks freed (to `PENDING`).
    pub blocks: u64,
    /// No extent of the range is left.
    pub done: bool,
    /// The lowest file block unmapped (the range's end when nothing was).
    pub low: u64,
}

/// Unmaps file blocks `[from, to)` of `ino`, last extents first, at most `max` extents (or all
/// of them with `usize::MAX`); their data blocks go to `PENDING`. Removing from the end keeps a
/// partly done truncate consistent: nothing stays mapped past what was removed.
pub fn remove_range(t: &Tx<'_>, ino: Ino, from: u64, to: u64, max: usize) -> FsResult<Removed> {
    let mut table = t.tx.open_table(EXTENTS).io()?;
    let mut hit = Vec::new();
    let mut done = true;
    for entry in table.range((ino, 0)..(ino, to)).io()?.rev() {
        let (k, v) = entry.io()?;
        let e = Extent::from_entry(k.value(), v.value());
        if e.lend() <= from {
            break;
        }
        if hit.len() == max {
            done = false;
            break;
        }
        hit.push(e);
    }
    let mut freed = Vec::new();
    let mut low = to;
    for e in &hit {
        table.remove((ino, e.lblk)).io()?;
        if e.lblk < from {
            put(&mut table, ino, &e.clip(e.lblk, from))?;
        }
        if e.lend() > to {
            put(&mut table, ino, &e.clip(to, e.lend()))?;
        }
        let gone = e.clip(from, to);
        low = low.min(gone.lblk);
        freed.push(gone.run());
    }
    drop(table);
    let mut blocks = 0;
    for run in freed {
        blocks += run.len;
        alloc::release(t, run)?;
    }
    Ok(Removed { blocks, done, low })
}

/// Marks the unwritten extents of `ino` within file blocks `[from, to)` written.
pub fn mark_written(table: &mut ExtentTable<'_>, ino: Ino, from: u64, to: u64) -> FsResult<()> {
    for e in overlapping(table, ino, from, to)? {
        if !e.unwritten {
            continue;
        }
        table.remove((ino, e.lblk)).io()?;
        if e.lblk < from {
            put(table, ino, &e.clip(e.lblk, from))?;
        }
        if e.lend() > to {
            put(table, ino, &e.clip(to, e.lend()))?;
        }
        let written = Extent {
            unwritten: false,
            ..e.clip(from, to)
        };
        insert(table, ino, written)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use redb::{Database, ReadableDatabase, ReadableTableMetadata};

    use super::*;
    use crate::fs::image::fs::alloc;
    use crate::fs::image::fs::store::{FREE, PENDING};

    fn ext(lblk: u64, pblk: u64, len: u64, unwritten: bool) -> Extent {
        Extent {
            lblk,
            pblk,
            len,
            unwritten,
        }
    }

    fn all(db: &Database, ino: Ino) -> Vec<Extent> {
        let tx = db.begin_read().unwrap();
        let t = tx.open_table(EXTENTS).unwrap();
        overlapping(&t, ino, 0, u64::MAX).unwrap()
    }

    fn with<T>(db: &Database, f: impl FnOnce(&Tx<'_>) -> T) -> T {
        let tx = db.begin_write().unwrap();
        let out = f(&Tx { tx: &tx });
        tx.commit().unwrap();
        out
    }

    fn db() -> Database {
        let db = Database::builder()
            .create_with_backend(redb::backends::InMemoryBackend::new())
            .unwrap();
        with(&db, |t| {
            alloc::format(t, 1000).unwrap();
            t.tx.open_table(EXTENTS).unwrap();
            // Take the blocks the extents below use out of the free map.
            alloc::allocate(t, 1000, None, &Default::default()).unwrap();
        });
        db
    }

    #[test]
    fn inserts_merge_and_lookups_clip() {
        let db = db();
        with(&db, |t| {
            let mut table = t.tx.open_table(EXTENTS).unwrap();
            insert(&mut table, 7, ext(0, 100, 10, false)).unwrap();
            insert(&mut table, 7, ext(10, 110, 5, false)).unwrap(); // continues: merged
            insert(&mut table, 7, ext(20, 115, 5, false)).unwrap(); // a gap in the file
            insert(&mut table, 7, ext(15, 300, 5, false)).unwrap(); // not contiguous on disk
            insert(&mut table, 8, ext(0, 120, 1, false)).unwrap();
        });
        assert_eq!(
            all(&db, 7),
            vec![
                ext(0, 100, 15, false),
                ext(15, 300, 5, false),
                ext(20, 115, 5, false)
            ]
        );
        let tx = db.begin_read().unwrap();
        let t = tx.open_table(EXTENTS).unwrap();
        assert_eq!(
            overlapping(&t, 7, 14, 16).unwrap(),
            vec![ext(0, 100, 15, false), ext(15, 300, 5, false)]
        );
        assert!(overlapping(&t, 7, 25, 30).unwrap().is_empty());
        assert_eq!(ext(0, 100, 15, false).clip(3, 20), ext(3, 103, 12, false));
    }

    #[test]
    fn removing_splits_and_frees_to_pending() {
        let db = db();
        with(&db, |t| {
            let mut table = t.tx.open_table(EXTENTS).unwrap();
            insert(&mut table, 7, ext(0, 100, 10, false)).unwrap();
        });
        let r = with(&db, |t| remove_range(t, 7, 3, 5, usize::MAX).unwrap());
        assert_eq!(
            r,
            Removed {
                blocks: 2,
                done: true,
                low: 3
            }
        );
        assert_eq!(
            all(&db, 7),
            vec![ext(0, 100, 3, false), ext(5, 105, 5, false)]
        );
        // One extent at a time, from the end.
        let r = with(&db, |t| remove_range(t, 7, 1, u64::MAX, 1).unwrap());
        assert_eq!(
            r,
            Removed {
                blocks: 5,
                done: false,
                low: 5
            }
        );
        let r = with(&db, |t| remove_range(t, 7, 1, u64::MAX, 1).unwrap());
        assert_eq!((r.blocks, r.low), (2, 1));
        let r = with(&db, |t| remove_range(t, 7, 0, u64::MAX, 1).unwrap());
        assert_eq!((r.blocks, r.done), (1, true));
        assert!(all(&db, 7).is_empty());
        let tx = db.begin_read().unwrap();
        let pending: Vec<(u64, u64)> = (tx.open_table(PENDING).unwrap().iter().unwrap())
            .map(|e| {
                let (k, v) = e.unwrap();
                (k.value(), v.value())
            })
            .collect();
        assert_eq!(pending, vec![(100, 10)]);
        assert!(tx.open_table(FREE).unwrap().is_empty().unwrap());
    }

    #[test]
    fn writing_into_unwritten_splits_and_merges() {
        let db = db();
        with(&db, |t| {
            let mut table = t.tx.open_table(EXTENTS).unwrap();
            insert(&mut table, 7, ext(0, 100, 4, false)).unwrap();
            insert(&mut table, 7, ext(4, 104, 16, true)).unwrap();
            mark_written(&mut table, 7, 4, 8).unwrap();
            mark_written(&mut table, 7, 10, 12).unwrap();
        });
        assert_eq!(
            all(&db, 7),
            vec![
                ext(0, 100, 8, false),
                ext(8, 108, 2, true),
                ext(10, 110, 2, false),
                ext(12, 112, 8, true),
            ]
        );
    }
}
