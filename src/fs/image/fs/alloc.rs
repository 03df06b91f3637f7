//! The free-space map of the data region: allocating runs of blocks, and freeing them.
//!
//! Crash rule: a block freed by a commit that is not durable yet still belongs to its file in
//! the last durable state, which a crash returns to. So a freed run goes to `PENDING`, not to
//! `FREE`, and `drain_pending` moves it over only in a durable commit, after everything else
//! that commit does: no transaction can hand out a block whose free might still be undone.
//!
//! Allocation takes the run at `goal` first (the block after the file's previous extent, so a
//! growing file stays contiguous), then goes next-fit from a cursor, taking whole or partial
//! runs until it has enough or the map is exhausted.
use std::ops::RangeBounds;
use std::sync::atomic::{AtomicU64, Ordering};

use redb::{ReadableTable, Table};

use super::store::{Ctx, FREE, FREE_BLOCKS, PENDING, PENDING_BLOCKS, Tx};
use crate::fs::FsResult;

/// A run of data blocks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Run {
    pub start: u64,
    pub len: u64,
}

impl Run {
    pub fn end(&self) -> u64 {
        self.start + self.len
    }
}

/// The run table's last run that starts in `starts` (a range up to some block).
fn last_run(table: &Table<u64, u64>, starts: impl RangeBounds<u64>) -> FsResult<Option<Run>> {
    let last = table.range(starts).io()?.next_back().transpose().io()?;
    Ok(last.map(|(k, v)| Run {
        start: k.value(),
        len: v.value(),
    }))
}

/// Adds `run` to a run table, merging it with the runs that touch it.
fn insert_merged(table: &mut Table<u64, u64>, run: Run) -> FsResult<()> {
    let mut merged = run;
    if let Some(b) = last_run(table, ..run.start)?.filter(|b| b.end() == run.start) {
        table.remove(b.start).io()?;
        merged = Run {
            start: b.start,
            len: b.len + merged.len,
        };
    }
    if let Some(after) = table.remove(run.end()).io()?.map(|v| v.value()) {
        merged.len += after;
    }
    table.insert(merged.start, merged.len).io()?;
    Ok(())
}

/// Takes up to `want` blocks from the free map, preferring a run that starts at `goal`.
/// Returns the runs taken, in order; fewer blocks than `want` when the map has no more.
pub fn allocate(
    t: &Tx<'_>,
    want: u64,
    goal: Option<u64>,
    cursor: &AtomicU64,
) -> FsResult<Vec<Run>> {
    let mut taken = Vec::new();
    let mut left = want;
    let mut table = t.tx.open_table(FREE).io()?;
    if let Some(goal) = goal {
        if let Some(run) = last_run(&table, ..=goal)?.filter(|r| r.end() > goal) {
            let n = left.min(run.end() - goal);
            take(&mut table, run, goal, n)?;
            taken.push(Run {
                start: goal,
                len: n,
            });
            left -= n;
        }
    }
    // Next fit: from the cursor to the end, then from the start.
    let from = cursor.load(Ordering::Relaxed);
    for pass in 0..2 {
        while left > 0 {
            let range = if pass == 0 { from.. } else { 0.. };
            let next = table
                .range(range)
                .io()?
                .next()
                .transpose()
                .io()?
                .map(|(k, v)| Run {
                    start: k.value(),
                    len: v.value(),
                });
            let Some(run) = next.filter(|r| pass == 0 || r.start < from) else {
                break;
            };
            let n = left.min(run.len);
            take(&mut table, run, run.start, n)?;
            taken.push(Run {
                start: run.start,
                len: n,
            });
            left -= n;
        }
    }
    drop(table);
    let got = want - left;
    if got > 0 {
        t.add_counter(FREE_BLOCKS, -(got as i64))?;
        if let Some(last) = taken.last() {
            cursor.store(last.end(), Ordering::Relaxed);
        }
    }
    Ok(taken)
}

/// Removes `[at, at + n)` from the free `run` that contains it.
fn take(table: &mut Table<u64, u64>, run: Run, at: u64, n: u64) -> FsResult<()> {
    table.remove(run.start).io()?;
    if at > run.start {
        table.insert(run.start, at - run.start).io()?;
    }
    if at + n < run.end() {
        table.insert(at + n, run.end() - at - n).io()?;
    }
    Ok(())
}

/// Frees a run: it waits in `PENDING` for the next durable commit.
pub fn release(t: &Tx<'_>, run: Run) -> FsResult<()> {
    if run.len == 0 {
        return Ok(());
    }
    insert_merged(&mut t.tx.open_table(PENDING).io()?, run)?;
    t.add_counter(PENDING_BLOCKS, run.len as i64)
}

/// Adds the blocks a grown data region gained to the free map.
pub fn add_new_blocks(t: &Tx<'_>, run: Run) -> FsResult<()> {
    if run.len == 0 {
        return Ok(());
    }
    insert_merged(&mut t.tx.open_table(FREE).io()?, run)?;
    t.add_counter(FREE_BLOCKS, run.len as i64)
}

/// Moves every pending run to the free map. Only for a durable commit, as its last change.
/// Returns the blocks moved.
pub fn drain_pending(t: &Tx<'_>) -> FsResult<u64> {
    let runs: Vec<Run> = {
        let mut pending = t.tx.open_table(PENDING).io()?;
        let runs = pending
            .iter()
            .io()?
            .map(|e| {
                e.map(|(k, v)| Run {
                    start: k.value(),
                    len: v.value(),
                })
            })
            .collect::<Result<Vec<_>, _>>()
            .io()?;
        pending.retain(|_, _| false).io()?;
        runs
    };
    if runs.is_empty() {
        return Ok(0);
    }
    let mut free = t.tx.open_table(FREE).io()?;
    let mut moved = 0;
    for run in runs {
        insert_merged(&mut free, run)?;
        moved += run.len;
    }
    drop(free);
    t.add_counter(PENDING_BLOCKS, -(moved as i64))?;
    t.add_counter(FREE_BLOCKS, moved as i64)?;
    Ok(moved)
}

/// The free map of a new filesystem: the whole data region, one run.
pub fn format(t: &Tx<'_>, blocks: u64) -> FsResult<()> {
    t.tx.open_table(FREE).io()?.insert(0, blocks).io()?;
    t.tx.open_table(PENDING).io()?;
    t.add_counter(FREE_BLOCKS, blocks as i64)?;
    t.add_counter(PENDING_BLOCKS, 0)
}

#[cfg(test)]
mod tests {
    use redb::{Database, ReadableDatabase};

    use super::*;

    fn db() -> Database {
        let db = Database::builder()
            .create_with_backend(redb::backends::InMemoryBackend::new())
            .unwrap();
        let tx = db.begin_write().unwrap();
        format(&Tx { tx: &tx }, 100).unwrap();
        tx.commit().unwrap();
        db
    }

    fn runs(db: &Database, table: redb::TableDefinition<u64, u64>) -> Vec<(u64, u64)> {
        let tx = db.begin_read().unwrap();
        let t = tx.open_table(table).unwrap();
        t.iter()
            .unwrap()
            .map(|e| {
                let (k, v) = e.unwrap();
                (k.value(), v.value())
            })
            .collect()
    }

    fn with<T>(db: &Database, f: impl FnOnce(&Tx<'_>) -> T) -> T {
        let tx = db.begin_write().unwrap();
        let out = f(&Tx { tx: &tx });
        tx.commit().unwrap();
        out
    }

    #[test]
    fn allocates_at_the_goal_then_next_fit() {
        let db = db();
        let cursor = AtomicU64::new(0);
        let a = with(&db, |t| allocate(t, 10, None, &cursor).unwrap());
        assert_eq!(a, vec![Run { start: 0, len: 10 }]);
        // The goal is free: taken there even though the cursor is elsewhere.
        let b = with(&db, |t| allocate(t, 5, Some(50), &cursor).unwrap());
        assert_eq!(b, vec![Run { start: 50, len: 5 }]);
        assert_eq!(runs(&db, FREE), vec![(10, 40), (55, 45)]);
        // More than one run holds: next fit from the cursor (55), wrapping to the start.
        let c = with(&db, |t| allocate(t, 60, None, &cursor).unwrap());
        assert_eq!(
            c,
            vec![Run { start: 55, len: 45 }, Run { start: 10, len: 15 }]
        );
        // Asking for more than is free gives what there is.
        let d = with(&db, |t| allocate(t, 1000, Some(0), &cursor).unwrap());
        assert_eq!(d, vec![Run { start: 25, len: 25 }]);
        assert!(runs(&db, FREE).is_empty());
    }

    #[test]
    fn freed_runs_wait_for_a_durable_commit() {
        let db = db();
        let cursor = AtomicU64::new(0);
        with(&db, |t| allocate(t, 100, None, &cursor).unwrap());
        with(&db, |t| {
            release(t, Run { start: 10, len: 5 }).unwrap();
            release(t, Run { start: 15, len: 5 }).unwrap();
            release(t, Run { start: 40, len: 1 }).unwrap();
        });
        assert_eq!(runs(&db, PENDING), vec![(10, 10), (40, 1)]);
        // Nothing to allocate until they are drained.
        assert!(with(&db, |t| allocate(t, 1, None, &cursor).unwrap()).is_empty());
        assert_eq!(with(&db, |t| drain_pending(t).unwrap()), 11);
        assert_eq!(runs(&db, FREE), vec![(10, 10), (40, 1)]);
        assert!(runs(&db, PENDING).is_empty());
        with(&db, |t| release(t, Run { start: 20, len: 20 }).unwrap());
        with(&db, |t| drain_pending(t).unwrap());
        assert_eq!(runs(&db, FREE), vec![(10, 31)], "runs merge both ways");
        let tx = db.begin_write().unwrap();
        let t = Tx { tx: &tx };
        assert_eq!(t.counter(FREE_BLOCKS).unwrap(), 31);
        assert_eq!(t.counter(PENDING_BLOCKS).unwrap(), 0);
    }
}
