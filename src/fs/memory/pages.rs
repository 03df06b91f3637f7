//! A file's bytes: sparse 4 KiB pages, grouped in 2 MiB chunks (see `chunk`). A page exists
//! only where something was written or allocated, so holes cost nothing; allocated bytes are
//! `pages × PAGE`, and that is the memory the file holds.
use std::cell::RefCell;
use std::ops::Range;

pub use super::chunk::PAGE;
use super::chunk::{CHUNK, CHUNK_PAGES, Chunk};
use super::chunks::Chunks;

#[derive(Default)]
pub struct Pages {
    pub size: u64,
    chunks: Chunks,
    /// Pages allocated, over all chunks.
    pages: u64,
    /// Bytes of heap pages freed since `take_heap_freed` last asked: the heap keeps them until
    /// it is trimmed, whereas mapped pages go back to the system at once.
    heap_freed: u64,
}

/// The chunks a byte range touches: (chunk index, byte range inside it, offset of its start
/// from the start of the range).
fn pieces(offset: u64, end: u64) -> impl Iterator<Item = (u64, Range<usize>, usize)> {
    let first = offset / CHUNK;
    let past = match end > offset {
        true => (end - 1) / CHUNK + 1,
        false => first,
    };
    (first..past).map(move |k| {
        let start = (k * CHUNK).max(offset);
        let stop = ((k + 1) * CHUNK).min(end);
        let local = (start - k * CHUNK) as usize..(stop - k * CHUNK) as usize;
        (k, local, (start - offset) as usize)
    })
}

/// The largest read assembled in a thread's reusable buffer; bigger ones get their own.
const SCRATCH_MAX: usize = 1 << 20;

thread_local! {
    /// Reads that are not one slice of the store are assembled here. Reused, so that a reply
    /// costs no allocation, zeroing or page faults; it lives as long as the request thread.
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

impl Pages {
    pub fn allocated(&self) -> u64 {
        self.pages * PAGE
    }

    /// Where the run of allocated pages covering `offset` ends (0 if its page is a hole),
    /// looking no further than `limit`: the cost is the length of the range asked about, not
    /// the size of the file.
    pub fn allocated_end(&self, offset: u64, limit: u64) -> u64 {
        let start = offset / PAGE;
        let stop = limit.div_ceil(PAGE).max(start + 1);
        let per_chunk = CHUNK_PAGES as u64;
        let mut next = start;
        while next < stop {
            let k = next / per_chunk;
            let Some(chunk) = self.chunks.get(k) else {
                break;
            };
            match chunk.next_hole((next % per_chunk) as usize) {
                Some(hole) => {
                    next = k * per_chunk + hole as u64;
                    break;
                }
                None => next = (k + 1) * per_chunk,
            }
        }
        match next.min(stop) {
            end if end == start => 0,
            end => end * PAGE,
        }
    }

    /// Hands the bytes at `offset` (up to `len`, not past the end of file) to `f` as one
    /// slice: the store's own memory when they lie in one chunk's mapping or one heap page,
    /// else a copy assembled in a reusable per-thread buffer.
    pub fn read_with<R>(&self, offset: u64, len: u64, f: impl FnOnce(&[u8]) -> R) -> R {
        let end = self.size.min(offset.saturating_add(len));
        if offset >= end {
            return f(&[]);
        }
        let n = (end - offset) as usize;
        let mut parts = pieces(offset, end);
        if let (Some((k, local, _)), None) = (parts.next(), parts.next())
            && let Some(slice) = self.chunks.get(k).and_then(|c| c.slice(local))
        {
            return f(slice);
        }
        if n > SCRATCH_MAX {
            let mut out = vec![0u8; n];
            self.copy_out(offset, end, &mut out);
            return f(&out);
        }
        SCRATCH.with(|scratch| {
            let mut buf = scratch.borrow_mut();
            // Every byte of out is written below; growing fills only the new part.
            if buf.len() < n {
                buf.resize(n, 0);
            }
            let out = &mut buf[..n];
            self.copy_out(offset, end, out);
            f(out)
        })
    }

    /// Copies bytes `offset..end` (inside the file) into `out`, zeros for holes.
    fn copy_out(&self, offset: u64, end: u64, out: &mut [u8]) {
        for (k, local, from) in pieces(offset, end) {
            let dst = &mut out[from..from + local.len()];
            match self.chunks.get(k) {
                Some(chunk) => chunk.read_into(local.start, dst),
                None => dst.fill(0),
            }
        }
    }

    /// Heap bytes freed since the last call (by punching, truncating, clearing, or moving a
    /// chunk into a mapping).
    pub fn take_heap_freed(&mut self) -> u64 {
        std::mem::take(&mut self.heap_freed)
    }

    fn note_heap(&mut self, before: usize, after: usize) {
        self.heap_freed += before.saturating_sub(after) as u64 * PAGE;
    }

    /// The bytes at `offset`, up to `len` and not past the end of file, as a new vector.
    pub fn read(&self, offset: u64, len: u64) -> Vec<u8> {
        self.read_with(offset, len, <[u8]>::to_vec)
    }

    /// Writes `data` at `offset`, allocating pages; returns the bytes newly allocated.
    pub fn write(&mut self, offset: u64, data: &[u8]) -> u64 {
        let end = offset + data.len() as u64;
        let mut grown = 0;
        for (k, local, from) in pieces(offset, end) {
            let src = &data[from..from + local.len()];
            let pages = local.start / PAGE as usize..local.end.div_ceil(PAGE as usize);
            let chunk = self
                .chunks
                .get_or_insert_with(k, || Chunk::for_pages(pages));
            let before = chunk.heap_pages();
            grown += chunk.write(local.start, src) as u64;
            let after = chunk.heap_pages();
            self.note_heap(before, after);
        }
        self.pages += grown;
        self.size = self.size.max(end);
        grown * PAGE
    }

    /// Allocates zeroed pages over the range (fallocate), backed by memory now; returns the
    /// bytes newly allocated.
    pub fn allocate(&mut self, offset: u64, len: u64, keep_size: bool) -> u64 {
        let end = offset + len;
        // Whole pages: the range widened to page boundaries.
        let (first, past) = (offset / PAGE * PAGE, end.div_ceil(PAGE) * PAGE);
        let mut grown = 0;
        for (k, local, _) in pieces(first, past) {
            let pages = local.start / PAGE as usize..local.end / PAGE as usize;
            let chunk = self
                .chunks
                .get_or_insert_with(k, || Chunk::for_pages(pages.clone()));
            let before = chunk.heap_pages();
            grown += chunk.allocate(pages) as u64;
            let after = chunk.heap_pages();
            self.note_heap(before, after);
        }
        self.pages += grown;
        if !keep_size {
            self.size = self.size.max(end);
        }
        grown * PAGE
    }

    /// Zeroes the range, dropping the pages it covers whole; returns the bytes freed.
    pub fn punch(&mut self, offset: u64, len: u64) -> u64 {
        let end = offset.saturating_add(len);
        let mut freed = 0;
        for (k, local, _) in pieces(offset, end) {
            if let Some(chunk) = self.chunks.get_mut(k) {
                let before = chunk.heap_pages();
                freed += chunk.punch(local) as u64;
                let (after, empty) = (chunk.heap_pages(), chunk.pages() == 0);
                self.note_heap(before, after);
                if empty {
                    self.chunks.remove(k);
                }
            }
        }
        self.pages -= freed;
        freed * PAGE
    }

    /// Sets the size: shrinking drops pages past the end and zeroes the tail of the last one;
    /// growing makes a hole. Returns the bytes freed.
    pub fn truncate(&mut self, size: u64) -> u64 {
        let mut freed = 0;
        if size < self.size {
            let gone = self.chunks.split_off(size.div_ceil(CHUNK));
            freed += gone.values().map(|c| c.pages() as u64).sum::<u64>();
            let heap: usize = gone.values().map(Chunk::heap_pages).sum();
            self.note_heap(heap, 0);
            if size % CHUNK != 0 {
                let last = size / CHUNK;
                if let Some(chunk) = self.chunks.get_mut(last) {
                    let before = chunk.heap_pages();
                    freed += chunk.punch((size % CHUNK) as usize..CHUNK as usize) as u64;
                    let (after, empty) = (chunk.heap_pages(), chunk.pages() == 0);
                    self.note_heap(before, after);
                    if empty {
                        self.chunks.remove(last);
                    }
                }
            }
        }
        self.pages -= freed;
        self.size = size;
        freed * PAGE
    }

    /// SEEK_DATA: the first data offset at or after `offset`, None past the end (ENXIO).
    pub fn seek_data(&self, offset: u64) -> Option<u64> {
        if offset >= self.size {
            return None;
        }
        let first = offset / CHUNK;
        for (k, chunk) in self.chunks.range_from(first) {
            let from = match k == first {
                true => ((offset % CHUNK) / PAGE) as usize,
                false => 0,
            };
            if let Some(page) = chunk.next_data(from) {
                let at = offset.max(k * CHUNK + page as u64 * PAGE);
                return (at < self.size).then_some(at);
            }
        }
        None
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
        let freed = self.allocated();
        let heap: usize = self.chunks.values().map(Chunk::heap_pages).sum();
        self.note_heap(heap, 0);
        self.chunks = Chunks::Empty;
        self.pages = 0;
        freed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_read_and_holes() {
        let mut p = Pages::default();
        assert_eq!(p.write(10, b"abc"), PAGE);
        assert_eq!(p.read(0, 100)[..13], *b"\0\0\0\0\0\0\0\0\0\0abc");
        assert_eq!(p.write(3 * PAGE, b"z"), PAGE);
        assert_eq!(p.size, 3 * PAGE + 1);
        assert_eq!(p.allocated(), 2 * PAGE);
        assert_eq!(p.read(PAGE, 4), vec![0; 4]);
        assert_eq!(p.seek_data(PAGE), Some(3 * PAGE));
        assert_eq!(p.seek_hole(0), Some(PAGE));
        assert_eq!(p.seek_hole(3 * PAGE), Some(3 * PAGE + 1));
        assert_eq!(p.seek_data(3 * PAGE + 1), None);
    }

    #[test]
    fn write_across_pages() {
        let mut p = Pages::default();
        let data: Vec<u8> = (0..10_000u32).map(|i| i as u8).collect();
        assert_eq!(p.write(4000, &data), 4 * PAGE);
        assert_eq!(p.read(4000, 10_000), data);
    }

    #[test]
    fn big_writes_across_chunks_read_back() {
        let mut p = Pages::default();
        let data: Vec<u8> = (0..5_000_000u32).map(|i| (i % 251) as u8).collect();
        let at = CHUNK - 12_345;
        assert_eq!(
            p.write(at, &data),
            (at + 5_000_000).div_ceil(PAGE) * PAGE - at / PAGE * PAGE
        );
        assert_eq!(p.read(at, 5_000_000), data);
        // A request's worth inside one chunk is lent from the store itself, not copied.
        let at_chunk = p.read_with(CHUNK, 1 << 20, |s| s.as_ptr() as usize);
        let a_page_on = p.read_with(CHUNK + PAGE, 1 << 20, |s| s.as_ptr() as usize);
        assert_eq!(a_page_on - at_chunk, PAGE as usize);
        assert_eq!(p.read(CHUNK + 7, 3), data[12_345 + 7..12_345 + 10]);
        // Reads across a chunk boundary and past the end of file.
        assert_eq!(
            p.read(2 * CHUNK - 5, 10),
            data[(2 * CHUNK - 5 - at) as usize..][..10]
        );
        assert_eq!(p.read(at + 4_999_990, 100).len(), 10);
    }

    #[test]
    fn truncate_frees_and_zeroes_the_tail() {
        let mut p = Pages::default();
        p.write(0, &[7u8; 3 * PAGE as usize]);
        assert_eq!(p.truncate(PAGE + 1), PAGE);
        assert_eq!(p.allocated(), 2 * PAGE);
        p.truncate(3 * PAGE);
        assert_eq!(p.read(PAGE, 3), vec![7, 0, 0]);
    }

    #[test]
    fn truncate_across_chunks() {
        let mut p = Pages::default();
        p.write(0, &vec![7u8; (3 * CHUNK) as usize]);
        assert_eq!(p.truncate(CHUNK + 1), (CHUNK - PAGE) + CHUNK);
        assert_eq!(p.allocated(), CHUNK + PAGE);
        p.truncate(CHUNK);
        assert_eq!(p.allocated(), CHUNK);
        p.truncate(3 * CHUNK);
        assert_eq!(p.read(CHUNK - 1, 2), vec![7, 0]);
        assert_eq!(p.seek_hole(0), Some(CHUNK));
        assert_eq!(p.truncate(0), CHUNK);
        assert_eq!(p.allocated(), 0);
    }

    #[test]
    fn punch_frees_whole_pages_and_zeroes_edges() {
        let mut p = Pages::default();
        p.write(0, &[1u8; 4 * PAGE as usize]);
        assert_eq!(p.punch(100, 2 * PAGE), PAGE);
        assert_eq!(p.read(99, 2), vec![1, 0]);
        assert_eq!(p.read(2 * PAGE + 99, 2), vec![0, 1]);
        assert_eq!(p.size, 4 * PAGE);
    }

    #[test]
    fn punch_inside_one_page_only_zeroes() {
        let mut p = Pages::default();
        p.write(0, &[1u8; PAGE as usize]);
        assert_eq!(p.punch(100, 100), 0);
        assert_eq!(p.read(99, 102)[..3], [1, 0, 0]);
        assert_eq!(p.read(200, 1), vec![1]);
    }

    #[test]
    fn punch_a_big_file_across_chunks() {
        let mut p = Pages::default();
        p.write(0, &vec![3u8; (4 * CHUNK) as usize]);
        assert_eq!(p.punch(CHUNK / 2, 2 * CHUNK), 2 * CHUNK);
        assert_eq!(p.allocated(), 2 * CHUNK);
        assert_eq!(p.seek_hole(0), Some(CHUNK / 2));
        assert_eq!(p.seek_data(CHUNK / 2), Some(CHUNK / 2 + 2 * CHUNK));
        assert!(p.read(CHUNK / 2, 2 * CHUNK).iter().all(|&b| b == 0));
        // Punching a whole chunk drops it; the file keeps its size.
        assert_eq!(p.punch(3 * CHUNK, CHUNK), CHUNK);
        assert_eq!(p.size, 4 * CHUNK);
        assert_eq!(p.seek_data(3 * CHUNK), None);
    }

    #[test]
    fn allocate_keeps_or_grows_size() {
        let mut p = Pages::default();
        assert_eq!(p.allocate(0, PAGE + 1, true), 2 * PAGE);
        assert_eq!(p.size, 0);
        assert_eq!(p.allocate(0, PAGE + 1, false), 0);
        assert_eq!(p.size, PAGE + 1);
        assert_eq!(p.allocate(CHUNK - PAGE, 2 * PAGE, false), 2 * PAGE);
        assert_eq!(p.allocated_end(CHUNK - PAGE, CHUNK + PAGE), CHUNK + PAGE);
        assert_eq!(p.allocated_end(CHUNK + PAGE, CHUNK + 3 * PAGE), 0);
        assert!(p.read(0, CHUNK + PAGE).iter().all(|&b| b == 0));
    }

    #[test]
    fn heap_memory_freed_is_reported_for_trimming() {
        let mut p = Pages::default();
        p.write(0, &[1u8; 8 * PAGE as usize]);
        assert_eq!(p.take_heap_freed(), 0);
        assert_eq!(p.punch(0, 2 * PAGE), 2 * PAGE);
        assert_eq!(p.take_heap_freed(), 2 * PAGE);
        // Growing the chunk into a mapping moves its six heap pages out of the heap.
        p.write(8 * PAGE, &vec![1u8; 64 * PAGE as usize]);
        assert_eq!(p.take_heap_freed(), 6 * PAGE);
        // Mapped pages go back to the system at once: nothing for the heap to trim.
        assert_eq!(p.truncate(PAGE), 70 * PAGE);
        assert_eq!(p.take_heap_freed(), 0);
        p.write(4 * CHUNK, b"x");
        assert_eq!(p.clear(), PAGE);
        assert_eq!(p.take_heap_freed(), PAGE);
    }

    #[test]
    fn allocated_end_looks_only_at_the_range() {
        let mut p = Pages::default();
        p.write(0, &vec![1u8; (3 * CHUNK) as usize]);
        assert_eq!(p.allocated_end(10, 20), PAGE);
        assert_eq!(p.allocated_end(CHUNK - 1, CHUNK + 1), CHUNK + PAGE);
        assert_eq!(p.allocated_end(0, 10 * CHUNK), 3 * CHUNK);
        assert_eq!(p.allocated_end(3 * CHUNK, 10 * CHUNK), 0);
    }
}
