//! A kept file's bytes: its pages in the volume's arena (`arena`), by page index. The same
//! operations as `pages::Pages`, which holds a volume's data in the handler's own memory.
//!
//! Holes cost nothing; a file's allocated bytes are its pages times 4 KiB. Pages freed by a
//! truncate or punch go back to the system at once. The size lives here and in the node's
//! shared record (the caller stores it after every change).
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::sync::Arc;

use super::arena::{Arena, Cow, PAGE};
use crate::fs::{FsError, FsResult, Ino};

const P: u64 = PAGE as u64;

/// A write that takes at least this many consecutive new pages backs them in one call.
const POPULATE_AT: usize = 16;

/// The largest read assembled in a thread's reusable buffer; bigger ones get their own.
const SCRATCH_MAX: usize = 1 << 20;

thread_local! {
    /// Reads that are not one run of the arena are assembled here (reused: no allocation).
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

pub struct SharedPages {
    pub size: u64,
    /// Page index in the file -> page in the arena.
    map: BTreeMap<u64, u32>,
    arena: Arc<Arena>,
    ino: Ino,
}

impl SharedPages {
    pub fn new(arena: Arc<Arena>, ino: Ino) -> SharedPages {
        SharedPages {
            size: 0,
            map: BTreeMap::new(),
            arena,
            ino,
        }
    }

    /// A file a predecessor left: its size and pages.
    pub fn recovered(
        arena: Arc<Arena>,
        ino: Ino,
        size: u64,
        map: BTreeMap<u64, u32>,
    ) -> SharedPages {
        SharedPages {
            size,
            map,
            arena,
            ino,
        }
    }

    pub fn allocated(&self) -> u64 {
        self.map.len() as u64 * P
    }

    /// Where the run of allocated pages covering `offset` ends (0 if its page is a hole),
    /// looking no further than `limit`.
    pub fn allocated_end(&self, offset: u64, limit: u64) -> u64 {
        let start = offset / P;
        let stop = limit.div_ceil(P).max(start + 1);
        let mut next = start;
        for (&i, _) in self.map.range(start..stop) {
            if i != next {
                break;
            }
            next += 1;
        }
        match next {
            n if n == start => 0,
            n => n * P,
        }
    }

    /// Hands the bytes at `offset` (up to `len`, not past the end of file) to `f` as one
    /// slice: the arena's own memory when they lie in one run of its pages, else a copy.
    pub fn read_with<R>(&self, offset: u64, len: u64, f: impl FnOnce(&[u8]) -> R) -> R {
        let end = self.size.min(offset.saturating_add(len));
        if offset >= end {
            return f(&[]);
        }
        let n = (end - offset) as usize;
        if let Some(p0) = self.run_of(offset / P, (end - 1) / P) {
            return f(self.arena.bytes(p0, (offset % P) as usize, n));
        }
        if n > SCRATCH_MAX {
            let mut out = vec![0u8; n];
            self.copy_out(offset, end, &mut out);
            return f(&out);
        }
        SCRATCH.with(|scratch| {
            let mut buf = scratch.borrow_mut();
            if buf.len() < n {
                buf.resize(n, 0);
            }
            let out = &mut buf[..n];
            self.copy_out(offset, end, out);
            f(out)
        })
    }

    /// The arena page of file page `first`, when pages `first..=last` all exist and follow
    /// each other in the arena.
    fn run_of(&self, first: u64, last: u64) -> Option<u32> {
        let mut start = None;
        let mut next = first;
        for (&i, &p) in self.map.range(first..=last) {
            let p0 = *start.get_or_insert(p);
            if i != next || u64::from(p) != u64::from(p0) + (i - first) {
                return None;
            }
            next = i + 1;
        }
        (next == last + 1).then_some(start).flatten()
    }

    /// Copies bytes `offset..end` (inside the file) into `out`, zeros for holes.
    fn copy_out(&self, offset: u64, end: u64, out: &mut [u8]) {
        let mut pos = offset;
        while pos < end {
            let i = pos / P;
            let in_page = (pos % P) as usize;
            let n = ((P - pos % P).min(end - pos)) as usize;
            let dst = &mut out[(pos - offset) as usize..][..n];
            match self.map.get(&i) {
                Some(&p) => dst.copy_from_slice(self.arena.bytes(p, in_page, n)),
                None => dst.fill(0),
            }
            pos += n as u64;
        }
    }

    /// Allocates (zeros) the holes among pages `first..past`; returns the arena pages it took,
    /// in file order. All or none:
    /// should the arena have no page left (it is sized for the quota, which admitted them),
    /// those just allocated go back and the file is as it was.
    fn fill(&mut self, first: u64, past: u64, back: bool) -> FsResult<Vec<u32>> {
        let mut new = Vec::new();
        for i in first..past {
            if self.map.contains_key(&i) {
                continue;
            }
            let near = i
                .checked_sub(1)
                .and_then(|before| self.map.get(&before))
                .map(|&p| p + 1);
            let mut page = self.arena.allocate(self.ino, i, near);
            if page.is_none() && self.arena.abandon_snapshot() {
                page = self.arena.allocate(self.ino, i, near);
            }
            match page {
                Some(p) => {
                    self.map.insert(i, p);
                    new.push(i);
                }
                None => {
                    let mut pages: Vec<u32> =
                        new.iter().filter_map(|i| self.map.remove(i)).collect();
                    self.arena.release(&mut pages);
                    return Err(FsError::NoSpace);
                }
            }
        }
        let pages: Vec<u32> = new.iter().map(|i| self.map[i]).collect();
        if back {
            for &p in &pages {
                self.arena.back(p, 1);
            }
        }
        Ok(pages)
    }

    /// Writes `data` at `offset`, allocating pages; returns the bytes newly allocated. The
    /// quota admitted them, so the arena (sized for the quota) has them.
    pub fn write(&mut self, offset: u64, data: &[u8]) -> FsResult<u64> {
        let end = offset + data.len() as u64;
        if end == offset {
            return Ok(0);
        }
        let new = self.fill(offset / P, end.div_ceil(P), false)?;
        // Runs of new pages are backed and mapped in one call, not a fault per page.
        let mut i = 0;
        while i < new.len() {
            let run = 1 + new[i + 1..]
                .iter()
                .zip(&new[i..])
                .take_while(|(b, a)| **b == **a + 1)
                .count();
            if run >= POPULATE_AT {
                self.arena.populate(new[i], run);
            }
            i += run;
        }
        let grown = new.len() as u64;
        for i in offset / P..end.div_ceil(P) {
            self.own(i);
        }
        let mut pos = offset;
        while pos < end {
            let in_page = (pos % P) as usize;
            let n = ((P - pos % P).min(end - pos)) as usize;
            self.arena.write(
                self.map[&(pos / P)],
                in_page,
                &data[(pos - offset) as usize..][..n],
            );
            pos += n as u64;
        }
        self.size = self.size.max(end);
        Ok(grown * P)
    }

    /// Allocates zeroed pages over the range (fallocate), backed by memory now; returns the
    /// bytes newly allocated.
    pub fn allocate(&mut self, offset: u64, len: u64, keep_size: bool) -> FsResult<u64> {
        let end = offset + len;
        let grown = self.fill(offset / P, end.div_ceil(P), true)?.len() as u64;
        if !keep_size {
            self.size = self.size.max(end);
        }
        Ok(grown * P)
    }

    /// Makes page `index` the file's alone before it changes in place: a page a snapshot
    /// holds frozen is swapped for a copy (see `Arena::cow`).
    fn own(&mut self, index: u64) {
        if let Some(&p) = self.map.get(&index)
            && let Cow::Moved(new) = self.arena.cow(p, self.ino, index)
        {
            self.map.insert(index, new);
        }
    }

    /// The file's pages (index, arena page), for a snapshot to freeze.
    pub fn pages(&self) -> Vec<(u64, u32)> {
        self.map.iter().map(|(&i, &p)| (i, p)).collect()
    }

    /// Zeroes `len` bytes at `pos` inside one page, if that page exists.
    fn zero_in_page(&mut self, pos: u64, len: u64) {
        self.own(pos / P);
        if let Some(&p) = self.map.get(&(pos / P)) {
            self.arena.zero(p, (pos % P) as usize, len as usize);
        }
    }

    /// Drops the pages with index in `range`; returns how many.
    fn drop_pages(&mut self, range: std::ops::Range<u64>) -> u64 {
        if range.start >= range.end {
            return 0;
        }
        let gone: Vec<u64> = self.map.range(range).map(|(&i, _)| i).collect();
        let pages: Vec<u32> = gone.iter().filter_map(|i| self.map.remove(i)).collect();
        let n = pages.len() as u64;
        // Pages a snapshot holds frozen pass to it; the file is rid of them all the same.
        let mut free: Vec<u32> = pages
            .into_iter()
            .filter(|&p| !self.arena.hand_over(p))
            .collect();
        self.arena.release(&mut free);
        n
    }

    /// Zeroes the range, dropping the pages it covers whole; returns the bytes freed.
    pub fn punch(&mut self, offset: u64, len: u64) -> u64 {
        let end = offset.saturating_add(len);
        if end <= offset {
            return 0;
        }
        let (whole_first, whole_past) = (offset.div_ceil(P), end / P);
        if whole_first >= whole_past {
            // Inside one page, or across the edge of two: zero in place.
            let mut pos = offset;
            while pos < end {
                let n = (P - pos % P).min(end - pos);
                self.zero_in_page(pos, n);
                pos += n;
            }
            return 0;
        }
        if offset % P != 0 {
            self.zero_in_page(offset, P - offset % P);
        }
        if end % P != 0 && end < u64::MAX {
            self.zero_in_page(whole_past * P, end % P);
        }
        self.drop_pages(whole_first..whole_past) * P
    }

    /// Sets the size: shrinking drops pages past the end and zeroes the tail of the last one;
    /// growing makes a hole. Returns the bytes freed.
    pub fn truncate(&mut self, size: u64) -> u64 {
        let mut freed = 0;
        if size < self.size {
            freed = self.drop_pages(size.div_ceil(P)..u64::MAX);
            if size % P != 0 {
                self.zero_in_page(size, P - size % P);
            }
        }
        self.size = size;
        freed * P
    }

    /// SEEK_DATA: the first data offset at or after `offset`, None past the end (ENXIO).
    pub fn seek_data(&self, offset: u64) -> Option<u64> {
        if offset >= self.size {
            return None;
        }
        let (&i, _) = self.map.range(offset / P..).next()?;
        let at = offset.max(i * P);
        (at < self.size).then_some(at)
    }

    /// SEEK_HOLE: the first hole at or after `offset` (the end of file counts as one).
    pub fn seek_hole(&self, offset: u64) -> Option<u64> {
        if offset >= self.size {
            return None;
        }
        let end = self.allocated_end(offset, self.size);
        Some(end.max(offset).min(self.size))
    }

    /// Drops all pages; returns the bytes freed.
    pub fn clear(&mut self) -> u64 {
        self.drop_pages(0..u64::MAX) * P
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file() -> SharedPages {
        SharedPages::new(Arc::new(Arena::create("test", 4096).unwrap()), 2)
    }

    fn read(p: &SharedPages, at: u64, len: u64) -> Vec<u8> {
        p.read_with(at, len, <[u8]>::to_vec)
    }

    #[test]
    fn write_read_holes_and_seek() {
        let mut p = file();
        assert_eq!(p.write(10, b"abc").unwrap(), P);
        assert_eq!(read(&p, 0, 100)[..13], *b"\0\0\0\0\0\0\0\0\0\0abc");
        assert_eq!(p.write(3 * P, b"z").unwrap(), P);
        assert_eq!(p.size, 3 * P + 1);
        assert_eq!(p.allocated(), 2 * P);
        assert_eq!(read(&p, P, 4), vec![0; 4]);
        assert_eq!(p.seek_data(P), Some(3 * P));
        assert_eq!(p.seek_hole(0), Some(P));
        assert_eq!(p.seek_hole(3 * P), Some(3 * P + 1));
        assert_eq!(p.seek_data(3 * P + 1), None);
        let data: Vec<u8> = (0..100_000u32).map(|i| i as u8).collect();
        p.write(5000, &data).unwrap();
        assert_eq!(read(&p, 5000, 100_000), data);
        // A file written in order lies in consecutive pages, lent from the arena itself.
        let mut q = file();
        q.write(0, &data).unwrap();
        let a = q.read_with(P, 8 * P, |s| s.as_ptr() as usize);
        let b = q.read_with(2 * P, 7 * P, |s| s.as_ptr() as usize);
        assert_eq!(b - a, PAGE);
        assert_eq!(read(&q, 0, 100_000), data);
    }

    #[test]
    fn truncate_punch_and_allocate() {
        let mut p = file();
        p.write(0, &[7u8; 3 * PAGE]).unwrap();
        assert_eq!(p.truncate(P + 1), P);
        assert_eq!(p.allocated(), 2 * P);
        p.truncate(3 * P);
        assert_eq!(read(&p, P, 3), vec![7, 0, 0]);
        p.write(0, &[1u8; 4 * PAGE]).unwrap();
        assert_eq!(p.punch(100, 2 * P), P);
        assert_eq!(read(&p, 99, 2), vec![1, 0]);
        assert_eq!(read(&p, 2 * P + 99, 2), vec![0, 1]);
        assert_eq!(p.punch(100, 100), 0);
        assert_eq!(read(&p, 99, 102)[..3], [1, 0, 0]);
        let mut q = file();
        assert_eq!(q.allocate(0, P + 1, true).unwrap(), 2 * P);
        assert_eq!(q.size, 0);
        assert_eq!(q.allocate(0, P + 1, false).unwrap(), 0);
        assert_eq!(q.size, P + 1);
        assert_eq!(q.allocated_end(0, 10 * P), 2 * P);
        assert_eq!(q.clear(), 2 * P);
        assert_eq!(q.allocated(), 0);
    }

    /// A snapshot freezes a file's pages: overwrites, punches, truncates and a drop leave
    /// the frozen pages as they were (the file moves to copies or lets them go to the
    /// snapshot); the thaw releases what the snapshot held, and nothing else.
    #[test]
    fn frozen_pages_are_copied_on_write_and_held_until_thawed() {
        let arena = Arc::new(Arena::create("test", 64).unwrap());
        let mut p = SharedPages::new(arena.clone(), 2);
        p.write(0, &[1u8; 6 * PAGE]).unwrap();
        let mut q = SharedPages::new(arena.clone(), 3);
        q.write(0, &[9u8; 2 * PAGE]).unwrap();
        let taken = p.pages();
        let frozen: Vec<u32> = taken.iter().chain(&q.pages()).map(|&(_, pg)| pg).collect();
        assert!(arena.freeze(&frozen));
        assert!(!arena.freeze(&[]), "one snapshot at a time");
        p.write(10, b"new").unwrap();
        p.punch(2 * P, P);
        p.punch(3 * P + 5, 2);
        p.truncate(4 * P + 1);
        assert_eq!(q.clear(), 2 * P);
        assert_eq!(p.allocated(), 4 * P, "the file counts its own pages only");
        // The file sees its changes.
        assert_eq!(read(&p, 8, 6), b"\x01\x01new\x01");
        assert_eq!(read(&p, 2 * P, 2), vec![0, 0]);
        assert_eq!(read(&p, 3 * P + 4, 4), vec![1, 0, 0, 1]);
        assert_eq!(read(&p, 4 * P, 2), vec![1]);
        // The snapshot's pages are as frozen.
        for &(_, page) in &taken {
            assert_eq!(arena.bytes(page, 0, PAGE), &[1u8; PAGE][..]);
        }
        let moved: Vec<u64> = (p.pages().iter())
            .filter(|&&(i, pg)| taken[i as usize].1 != pg)
            .map(|&(i, _)| i)
            .collect();
        assert_eq!(
            moved,
            vec![0, 3, 4],
            "pages changed in place moved to copies"
        );
        // Owned: the file's 4 pages, and the snapshot's 3 moved away from, 1 punched, 1
        // truncated and q's 2.
        let owners = || {
            Arena::open(
                arena.data_fd().try_clone_to_owned().unwrap(),
                arena.owners_fd().try_clone_to_owned().unwrap(),
            )
            .unwrap()
            .1
        };
        assert_eq!(owners().len(), 11);
        assert!(arena.thaw(&frozen).is_ok());
        // After the thaw only the file's own pages are used; writes go in place again.
        let (_, owned) = Arena::open(
            arena.data_fd().try_clone_to_owned().unwrap(),
            arena.owners_fd().try_clone_to_owned().unwrap(),
        )
        .unwrap();
        assert_eq!(owned.len(), 4);
        assert!(owned.iter().all(|o| o.ino == 2));
        let before = p.pages();
        p.write(0, b"again").unwrap();
        assert_eq!(p.pages(), before);
    }

    /// A successor after a crash mid-snapshot: pages the snapshot held are released, the
    /// file's pages are found again.
    #[test]
    fn a_successor_releases_what_a_snapshot_held() {
        let arena = Arc::new(Arena::create("test", 16).unwrap());
        let mut p = SharedPages::new(arena.clone(), 2);
        p.write(0, &[1u8; 3 * PAGE]).unwrap();
        let frozen: Vec<u32> = p.pages().iter().map(|&(_, pg)| pg).collect();
        assert!(arena.freeze(&frozen));
        p.write(0, b"x").unwrap();
        p.truncate(P);
        let (_, mut owned) = Arena::open(
            arena.data_fd().try_clone_to_owned().unwrap(),
            arena.owners_fd().try_clone_to_owned().unwrap(),
        )
        .unwrap();
        owned.sort_by_key(|o| o.ino);
        let files: Vec<_> = owned.iter().filter(|o| o.ino == 2).collect();
        assert_eq!(files.len(), 1);
        assert_eq!(files[0].page, p.pages()[0].1);
        assert_eq!(owned.len(), 4, "the snapshot's three pages are owned by it");
        assert!(
            owned
                .iter()
                .filter(|o| o.ino != 2)
                .all(|o| o.ino == super::super::arena::SNAPSHOT)
        );
    }

    /// The arena runs out while a snapshot holds pages: the volume's write wins (the
    /// snapshot's pages go back, it is abandoned, the thaw says why) and no data is lost.
    #[test]
    fn a_full_arena_abandons_the_snapshot_not_the_write() {
        let arena = Arc::new(Arena::create("test", 8).unwrap());
        let mut p = SharedPages::new(arena.clone(), 2);
        p.write(0, &[1u8; 6 * PAGE]).unwrap();
        let frozen: Vec<u32> = p.pages().iter().map(|&(_, pg)| pg).collect();
        assert!(arena.freeze(&frozen));
        p.truncate(P);
        // Two pages free, five held by the snapshot: the third new page takes them back.
        assert_eq!(p.write(P, &[2u8; 4 * PAGE]).unwrap(), 4 * P);
        p.write(0, b"in place").unwrap();
        assert_eq!(read(&p, 0, 9), b"in place\x01");
        assert_eq!(read(&p, P, 2), vec![2, 2]);
        let why = arena.thaw(&frozen).unwrap_err();
        assert!(why.contains("no room left"), "{why}");
        // Nothing is frozen any more, and the next snapshot may start.
        assert!(arena.freeze(&[]));
        assert!(arena.thaw(&[]).is_ok());
    }
}
