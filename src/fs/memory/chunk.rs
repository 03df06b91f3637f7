//! One 2 MiB stretch of a file, counted in 4 KiB pages.
//!
//! A chunk holds few pages on the heap, one box per page in a sorted list, so that small files
//! and scattered writes cost little. Once it would hold `MAP_AT` pages it moves into its own anonymous
//! mapping of the whole 2 MiB: data is then contiguous (a 1 MiB read is one slice, sent with
//! no copy of our own), no allocator runs per page, and a page is backed by memory only
//! where it was written or allocated.
//!
//! Invariant (mapped): a page not in `present` reads as zeros and holds no memory: it was
//! never written, or was discarded when it left the set. So the chunk's memory is exactly its
//! present pages, which is what the quota counts.
use std::ops::Range;

use crate::sys::anon::AnonRegion;

pub const PAGE: u64 = 4096;
pub const CHUNK: u64 = 2 << 20;
pub const CHUNK_PAGES: usize = (CHUNK / PAGE) as usize;
const PAGE_BYTES: usize = PAGE as usize;
/// A chunk moves into a mapping once it would hold this many pages (256 KiB). Below, heap
/// pages are cheaper, and files that small do not each cost a mapping (the kernel allows a
/// process about 65,000).
const MAP_AT: usize = 64;
/// A write that backs at least this many new pages of a mapping backs them in one call
/// (MADV_POPULATE_WRITE) rather than taking a fault for each: first writes go ~40% faster.
const POPULATE_AT: usize = 16;

type HeapPage = Box<[u8; PAGE_BYTES]>;

pub enum Chunk {
    /// Pages by index, sorted; fewer than `MAP_AT` unless the kernel refused a mapping.
    Heap(Vec<(u16, HeapPage)>),
    /// Boxed, so that the common small chunk stays small.
    Mapped(Box<Mapped>),
}

pub struct Mapped {
    region: AnonRegion,
    present: PageSet,
}

fn zero_page() -> HeapPage {
    Box::new([0u8; PAGE_BYTES])
}

/// The pages a byte range touches, partly or whole.
fn pages_of(range: &Range<usize>) -> Range<usize> {
    range.start / PAGE_BYTES..range.end.div_ceil(PAGE_BYTES)
}

/// Heap pages: lookups in the sorted list.
fn find(pages: &[(u16, HeapPage)], i: usize) -> Result<usize, usize> {
    pages.binary_search_by_key(&(i as u16), |(k, _)| *k)
}

fn heap_page(pages: &[(u16, HeapPage)], i: usize) -> Option<&HeapPage> {
    find(pages, i).ok().map(|at| &pages[at].1)
}

/// The page, allocated (zeros) if it was not there.
fn heap_page_mut(pages: &mut Vec<(u16, HeapPage)>, i: usize) -> &mut HeapPage {
    let at = match find(pages, i) {
        Ok(at) => at,
        Err(at) => {
            pages.insert(at, (i as u16, zero_page()));
            at
        }
    };
    &mut pages[at].1
}

/// Where the pages at `from` and after start in the sorted list.
fn heap_from(pages: &[(u16, HeapPage)], from: usize) -> usize {
    pages.partition_point(|(k, _)| (*k as usize) < from)
}

impl Chunk {
    /// An empty chunk about to receive the pages `pages`.
    pub fn for_pages(pages: Range<usize>) -> Chunk {
        let mut chunk = Chunk::Heap(Vec::new());
        chunk.make_room(pages);
        chunk
    }

    pub fn pages(&self) -> usize {
        match self {
            Chunk::Heap(pages) => pages.len(),
            Chunk::Mapped(m) => m.present.len(),
        }
    }

    /// Pages held on the heap (which gives memory back to the system only when trimmed).
    pub fn heap_pages(&self) -> usize {
        match self {
            Chunk::Heap(pages) => pages.len(),
            Chunk::Mapped(_) => 0,
        }
    }

    #[cfg(test)]
    pub fn is_mapped(&self) -> bool {
        matches!(self, Chunk::Mapped(_))
    }

    /// The first page at or after `from` that holds data.
    pub fn next_data(&self, from: usize) -> Option<usize> {
        match self {
            Chunk::Heap(pages) => pages.get(heap_from(pages, from)).map(|(i, _)| *i as usize),
            Chunk::Mapped(m) => m.present.next_in(from),
        }
    }

    /// The first page at or after `from` that is a hole (None: none before the chunk's end).
    pub fn next_hole(&self, from: usize) -> Option<usize> {
        match self {
            Chunk::Heap(pages) => {
                let mut next = from;
                for (i, _) in &pages[heap_from(pages, from)..] {
                    if *i as usize != next {
                        break;
                    }
                    next += 1;
                }
                (next < CHUNK_PAGES).then_some(next)
            }
            Chunk::Mapped(m) => m.present.next_out(from),
        }
    }

    /// Moves heap pages into a mapping when the chunk is about to hold `MAP_AT` pages or more
    /// with `pages`. If the kernel refuses a mapping, the chunk stays on the heap.
    fn make_room(&mut self, pages: Range<usize>) {
        let Chunk::Heap(heap) = self else { return };
        let new = pages.filter(|&i| find(heap, i).is_err()).count();
        if heap.len() + new < MAP_AT {
            return;
        }
        let Ok(mut region) = AnonRegion::new(CHUNK as usize) else {
            return;
        };
        let mut present = PageSet::default();
        for (i, page) in heap.iter() {
            let at = *i as usize * PAGE_BYTES;
            region.as_mut_slice()[at..at + PAGE_BYTES].copy_from_slice(&page[..]);
            present.insert(*i as usize..*i as usize + 1);
        }
        *self = Chunk::Mapped(Box::new(Mapped { region, present }));
    }

    /// Writes `data` at byte `at`; returns the pages newly allocated.
    pub fn write(&mut self, at: usize, data: &[u8]) -> usize {
        let range = at..at + data.len();
        self.make_room(pages_of(&range));
        match self {
            Chunk::Heap(heap) => {
                let before = heap.len();
                let mut pos = at;
                while pos < range.end {
                    let in_page = pos % PAGE_BYTES;
                    let n = (PAGE_BYTES - in_page).min(range.end - pos);
                    let page = heap_page_mut(heap, pos / PAGE_BYTES);
                    page[in_page..in_page + n].copy_from_slice(&data[pos - at..pos - at + n]);
                    pos += n;
                }
                heap.len() - before
            }
            Chunk::Mapped(m) => {
                let pages = pages_of(&range);
                let new = m.present.insert(pages.clone());
                if new >= POPULATE_AT {
                    m.region
                        .populate(pages.start * PAGE_BYTES..pages.end * PAGE_BYTES);
                }
                m.region.as_mut_slice()[range].copy_from_slice(data);
                new
            }
        }
    }

    /// Allocates the pages `pages` (zeros where they were holes), backed by memory now;
    /// returns how many were new.
    pub fn allocate(&mut self, pages: Range<usize>) -> usize {
        self.make_room(pages.clone());
        match self {
            Chunk::Heap(heap) => {
                let before = heap.len();
                for i in pages {
                    heap_page_mut(heap, i);
                }
                heap.len() - before
            }
            Chunk::Mapped(m) => {
                let new = m.present.insert(pages.clone());
                m.region
                    .populate(pages.start * PAGE_BYTES..pages.end * PAGE_BYTES);
                new
            }
        }
    }

    /// Zeroes the byte range, dropping the pages it covers whole; returns the pages freed.
    pub fn punch(&mut self, range: Range<usize>) -> usize {
        if range.is_empty() {
            return 0;
        }
        let whole = range.start.div_ceil(PAGE_BYTES)..range.end / PAGE_BYTES;
        // The partial pages at either edge are zeroed in place, if they hold data.
        let mut edges = vec![range.start / PAGE_BYTES];
        if (range.end - 1) / PAGE_BYTES != edges[0] {
            edges.push((range.end - 1) / PAGE_BYTES);
        }
        edges.retain(|i| !whole.contains(i));
        match self {
            Chunk::Heap(heap) => {
                for i in &edges {
                    if let Ok(at) = find(heap, *i) {
                        let start = i * PAGE_BYTES;
                        let from = range.start.max(start) - start;
                        let to = range.end.min(start + PAGE_BYTES) - start;
                        heap[at].1[from..to].fill(0);
                    }
                }
                let before = heap.len();
                heap.retain(|(i, _)| !whole.contains(&(*i as usize)));
                before - heap.len()
            }
            Chunk::Mapped(m) => {
                for i in &edges {
                    if m.present.contains(*i) {
                        let start = i * PAGE_BYTES;
                        let bytes = range.start.max(start)..range.end.min(start + PAGE_BYTES);
                        m.region.as_mut_slice()[bytes].fill(0);
                    }
                }
                if whole.is_empty() {
                    return 0;
                }
                let freed = m.present.remove(whole.clone());
                if freed > 0 {
                    m.region
                        .discard(whole.start * PAGE_BYTES..whole.end * PAGE_BYTES);
                }
                freed
            }
        }
    }

    /// Copies the bytes at `at` into `out`, with zeros for holes.
    pub fn read_into(&self, at: usize, out: &mut [u8]) {
        match self {
            Chunk::Heap(heap) => {
                let end = at + out.len();
                let mut pos = at;
                while pos < end {
                    let in_page = pos % PAGE_BYTES;
                    let n = (PAGE_BYTES - in_page).min(end - pos);
                    let dst = &mut out[pos - at..pos - at + n];
                    match heap_page(heap, pos / PAGE_BYTES) {
                        Some(page) => dst.copy_from_slice(&page[in_page..in_page + n]),
                        None => dst.fill(0),
                    }
                    pos += n;
                }
            }
            Chunk::Mapped(m) => {
                out.copy_from_slice(&m.region.as_slice()[at..at + out.len()]);
            }
        }
    }

    /// The bytes of `range` as one slice of the chunk's own memory, when they are stored
    /// contiguously: always in a mapping (holes read as zeros there), within one page on the
    /// heap.
    pub fn slice(&self, range: Range<usize>) -> Option<&[u8]> {
        match self {
            Chunk::Mapped(m) => Some(&m.region.as_slice()[range]),
            Chunk::Heap(heap) => {
                let page = range.start / PAGE_BYTES;
                if range.is_empty() || (range.end - 1) / PAGE_BYTES != page {
                    return None;
                }
                let start = page * PAGE_BYTES;
                heap_page(heap, page).map(|p| &p[range.start - start..range.end - start])
            }
        }
    }

    /// Pages backed by memory now (mapped chunks; the heap's are all backed): for tests of
    /// the invariant.
    #[cfg(test)]
    pub fn mapped_resident(&self) -> Option<usize> {
        match self {
            Chunk::Mapped(m) => Some(m.region.resident_pages()),
            Chunk::Heap(_) => None,
        }
    }
}

/// A set of a chunk's pages, as a bitmap.
#[derive(Default)]
pub struct PageSet {
    words: [u64; CHUNK_PAGES / 64],
    len: usize,
}

impl PageSet {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn contains(&self, i: usize) -> bool {
        self.words[i / 64] & (1 << (i % 64)) != 0
    }

    /// Adds the pages; returns how many were not in the set.
    pub fn insert(&mut self, pages: Range<usize>) -> usize {
        let mut added = 0;
        for i in pages {
            let bit = 1u64 << (i % 64);
            added += (self.words[i / 64] & bit == 0) as usize;
            self.words[i / 64] |= bit;
        }
        self.len += added;
        added
    }

    /// Removes the pages; returns how many were in the set.
    pub fn remove(&mut self, pages: Range<usize>) -> usize {
        let mut removed = 0;
        for i in pages {
            let bit = 1u64 << (i % 64);
            removed += (self.words[i / 64] & bit != 0) as usize;
            self.words[i / 64] &= !bit;
        }
        self.len -= removed;
        removed
    }

    /// The first page at or after `from` in the set.
    pub fn next_in(&self, from: usize) -> Option<usize> {
        self.next(from, |w| w)
    }

    /// The first page at or after `from` not in the set.
    pub fn next_out(&self, from: usize) -> Option<usize> {
        self.next(from, |w| !w)
    }

    fn next(&self, from: usize, look: impl Fn(u64) -> u64) -> Option<usize> {
        if from >= CHUNK_PAGES {
            return None;
        }
        let mut word = from / 64;
        let mut bits = look(self.words[word]) & (u64::MAX << (from % 64));
        loop {
            if bits != 0 {
                return Some(word * 64 + bits.trailing_zeros() as usize);
            }
            word += 1;
            if word == self.words.len() {
                return None;
            }
            bits = look(self.words[word]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_set_counts_and_searches() {
        let mut s = PageSet::default();
        assert_eq!(s.insert(3..70), 67);
        assert_eq!(s.insert(60..80), 10);
        assert_eq!(s.len(), 77);
        assert_eq!(s.next_in(0), Some(3));
        assert_eq!(s.next_in(80), None);
        assert_eq!(s.next_out(3), Some(80));
        assert_eq!(s.remove(0..10), 7);
        assert_eq!(s.next_in(0), Some(10));
        s.insert(0..CHUNK_PAGES);
        assert_eq!(s.next_out(0), None);
        assert_eq!(s.len(), CHUNK_PAGES);
    }

    #[test]
    fn small_chunks_stay_on_the_heap_and_big_ones_map() {
        let mut c = Chunk::for_pages(0..1);
        assert_eq!(c.write(100, b"abc"), 1);
        assert!(!c.is_mapped());
        // A write that brings the chunk to MAP_AT pages moves it into a mapping, data kept.
        assert_eq!(
            c.write(PAGE_BYTES, &vec![9u8; (MAP_AT - 1) * PAGE_BYTES]),
            MAP_AT - 1
        );
        assert!(c.is_mapped());
        let mut out = [1u8; 6];
        c.read_into(98, &mut out);
        assert_eq!(out, *b"\0\0abc\0");
        assert_eq!(c.slice(PAGE_BYTES..PAGE_BYTES + 2), Some(&[9u8, 9][..]));
    }

    #[test]
    fn mapped_memory_is_the_present_pages() {
        let mut c = Chunk::for_pages(0..CHUNK_PAGES);
        assert_eq!(c.write(0, &vec![5u8; 1 << 20]), 256);
        assert_eq!(c.mapped_resident(), Some(256));
        // Punching frees whole pages at once and zeroes the partial edges in place.
        assert_eq!(c.punch(100..(512 << 10) + 100), 127);
        assert_eq!(c.pages(), 129);
        assert_eq!(c.mapped_resident(), Some(129));
        let mut out = [7u8; 4];
        c.read_into(98, &mut out);
        assert_eq!(out, [5, 5, 0, 0]);
        c.read_into((512 << 10) + 98, &mut out);
        assert_eq!(out, [0, 0, 5, 5]);
        // Allocating backs the pages now.
        assert_eq!(c.allocate(300..310), 10);
        assert_eq!(c.mapped_resident(), Some(139));
        assert_eq!(c.next_hole(0), Some(1));
        assert_eq!(c.next_data(1), Some(128));
        assert_eq!(c.next_hole(128), Some(256));
        assert_eq!(c.next_data(256), Some(300));
    }

    #[test]
    fn heap_punch_and_slices() {
        let mut c = Chunk::for_pages(0..4);
        c.write(0, &[1u8; 4 * PAGE_BYTES]);
        assert_eq!(c.punch(100..2 * PAGE_BYTES + 100), 1);
        assert_eq!(c.pages(), 3);
        assert_eq!(c.slice(99..101), Some(&[1u8, 0][..]));
        assert_eq!(c.slice(PAGE_BYTES..PAGE_BYTES + 1), None);
        assert_eq!(c.slice(PAGE_BYTES - 1..PAGE_BYTES + 1), None);
        assert_eq!(c.next_hole(0), Some(1));
        assert_eq!(c.next_data(1), Some(2));
        assert_eq!(c.punch(10..20), 0);
    }
}
