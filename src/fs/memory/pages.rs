//! A file's bytes as sparse 4 KiB pages. A page exists only where something was written or
//! allocated, so holes cost nothing; allocated bytes are `pages × PAGE`.
use std::collections::BTreeMap;

pub const PAGE: u64 = 4096;

type Page = Box<[u8; PAGE as usize]>;

#[derive(Default)]
pub struct Pages {
    pub size: u64,
    map: BTreeMap<u64, Page>,
}

fn zero_page() -> Page {
    Box::new([0u8; PAGE as usize])
}

impl Pages {
    pub fn allocated(&self) -> u64 {
        self.map.len() as u64 * PAGE
    }

    /// Where the run of allocated pages covering `offset` ends (0 if its page is a hole),
    /// looking no further than `limit`: the cost is the length of the range asked about, not
    /// the size of the file.
    pub fn allocated_end(&self, offset: u64, limit: u64) -> u64 {
        let mut next = offset / PAGE;
        for (&index, _) in self.map.range(next..limit.div_ceil(PAGE).max(next + 1)) {
            if index != next {
                break;
            }
            next += 1;
        }
        match next == offset / PAGE {
            true => 0,
            false => next * PAGE,
        }
    }

    pub fn read(&self, offset: u64, len: u64) -> Vec<u8> {
        let end = self.size.min(offset.saturating_add(len));
        if offset >= end {
            return Vec::new();
        }
        let mut out = vec![0u8; (end - offset) as usize];
        for (&index, page) in self.map.range(offset / PAGE..=(end - 1) / PAGE) {
            let page_start = index * PAGE;
            let from = offset.max(page_start);
            let to = end.min(page_start + PAGE);
            out[(from - offset) as usize..(to - offset) as usize]
                .copy_from_slice(&page[(from - page_start) as usize..(to - page_start) as usize]);
        }
        out
    }

    /// Writes `data` at `offset`, allocating pages; returns the bytes newly allocated.
    pub fn write(&mut self, offset: u64, data: &[u8]) -> u64 {
        let before = self.map.len();
        let end = offset + data.len() as u64;
        let mut pos = offset;
        while pos < end {
            let index = pos / PAGE;
            let in_page = (pos % PAGE) as usize;
            let n = ((PAGE as usize - in_page) as u64).min(end - pos) as usize;
            let page = self.map.entry(index).or_insert_with(zero_page);
            let src = (pos - offset) as usize;
            page[in_page..in_page + n].copy_from_slice(&data[src..src + n]);
            pos += n as u64;
        }
        self.size = self.size.max(end);
        (self.map.len() - before) as u64 * PAGE
    }

    /// Allocates zeroed pages over the range (fallocate); returns the bytes newly allocated.
    pub fn allocate(&mut self, offset: u64, len: u64, keep_size: bool) -> u64 {
        let before = self.map.len();
        let end = offset + len;
        for index in offset / PAGE..end.div_ceil(PAGE) {
            self.map.entry(index).or_insert_with(zero_page);
        }
        if !keep_size {
            self.size = self.size.max(end);
        }
        (self.map.len() - before) as u64 * PAGE
    }

    /// Zeroes the range, dropping the pages it covers whole; returns the bytes freed.
    pub fn punch(&mut self, offset: u64, len: u64) -> u64 {
        let before = self.map.len();
        let end = offset.saturating_add(len);
        let (first_whole, past_whole) = (offset.div_ceil(PAGE), end / PAGE);
        let whole: Vec<u64> = match first_whole < past_whole {
            true => self
                .map
                .range(first_whole..past_whole)
                .map(|(&i, _)| i)
                .collect(),
            false => Vec::new(),
        };
        for index in whole {
            self.map.remove(&index);
        }
        for index in [offset / PAGE, end.saturating_sub(1) / PAGE] {
            if let Some(page) = self.map.get_mut(&index) {
                let start = index * PAGE;
                let from = offset.max(start) - start;
                let to = end.min(start + PAGE).saturating_sub(start);
                if from < to {
                    page[from as usize..to as usize].fill(0);
                }
            }
        }
        (before - self.map.len()) as u64 * PAGE
    }

    /// Sets the size: shrinking drops pages past the end and zeroes the tail of the last one;
    /// growing makes a hole. Returns the bytes freed.
    pub fn truncate(&mut self, size: u64) -> u64 {
        let freed = if size < self.size {
            let before = self.map.len();
            let keep = size.div_ceil(PAGE);
            self.map.split_off(&keep);
            if let Some(page) = self.map.get_mut(&(size / PAGE)) {
                page[(size % PAGE) as usize..].fill(0);
            }
            (before - self.map.len()) as u64 * PAGE
        } else {
            0
        };
        self.size = size;
        freed
    }

    /// SEEK_DATA: the first data offset at or after `offset`, None past the end (ENXIO).
    pub fn seek_data(&self, offset: u64) -> Option<u64> {
        if offset >= self.size {
            return None;
        }
        let (&index, _) = self.map.range(offset / PAGE..).next()?;
        let at = offset.max(index * PAGE);
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
        let freed = self.allocated();
        self.map = BTreeMap::new();
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
    fn truncate_frees_and_zeroes_the_tail() {
        let mut p = Pages::default();
        p.write(0, &[7u8; 3 * PAGE as usize]);
        assert_eq!(p.truncate(PAGE + 1), PAGE);
        assert_eq!(p.allocated(), 2 * PAGE);
        p.truncate(3 * PAGE);
        assert_eq!(p.read(PAGE, 3), vec![7, 0, 0]);
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
    fn allocate_keeps_or_grows_size() {
        let mut p = Pages::default();
        assert_eq!(p.allocate(0, PAGE + 1, true), 2 * PAGE);
        assert_eq!(p.size, 0);
        assert_eq!(p.allocate(0, PAGE + 1, false), 0);
        assert_eq!(p.size, PAGE + 1);
    }
}
