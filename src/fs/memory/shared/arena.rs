//! The data pages of a kept tmpfs volume: one memfd of 4 KiB pages, and beside it, in shared
//! words, each page's owner (node id and page index in its file). Both are held by the keeper
//! too, so the data outlives the handler; a successor finds every file's pages in the owner
//! words.
//!
//! An owner is two words, the page index and then the node id, stored last: a page is in use
//! once its node id is there, so an allocation cut short by a crash leaves none half-owned.
//! A page is disowned before its memory is punched and before it can be allocated again, so
//! a page handed out is always zeros (a successor punches whatever memory no page owns).
//! Allocation takes no lock: a bitmap of used pages (in process memory, rebuilt from the
//! owners) claimed with compare-and-swap.
//!
//! Snapshots (`freeze`, `cow`, `hand_over`, `thaw`): a snapshot marks the pages it captured
//! frozen, in a second bitmap. A frozen page is never written in place nor released: a write
//! moves the file to a copy of it (`cow`), and a page the file drops goes to the snapshot
//! (`hand_over`). Pages the snapshot holds are owned by `SNAPSHOT`, which names no node, so
//! a successor after a crash releases them. `thaw` ends it: bits cleared, held pages released.
use std::io;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use parking_lot::Mutex;

use crate::fs::Ino;
use crate::sys::shm::{SharedBytes, SharedWords};

pub const PAGE: usize = 4096;

/// "fvolpgs1": the owner words' layout, version 1.
const MAGIC: u64 = u64::from_le_bytes(*b"fvolpgs1");
/// Header words: magic, pages, pages below this were used at some time.
const HEADER: usize = 4;
const H_PAGES: usize = 1;
const H_HIGH: usize = 2;

/// A page in use: whose it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Owned {
    pub page: u32,
    pub ino: Ino,
    pub index: u64,
}

/// The owner of pages a snapshot holds: no node has this id (ids count up from the root).
pub const SNAPSHOT: Ino = u64::MAX;

/// What a snapshot holds in the arena besides the frozen bits.
#[derive(Default)]
struct Held {
    /// A snapshot is under way (one at a time).
    active: bool,
    /// Pages the volume's files no longer use, kept for the snapshot until it thaws.
    pages: Vec<u32>,
    /// Why the snapshot was abandoned (the arena had no page for a copy), if it was.
    failed: Option<String>,
}

/// What a write to a page must do (`cow`).
#[derive(Debug, PartialEq, Eq)]
pub enum Cow {
    /// The page is the file's alone: write it in place.
    InPlace,
    /// The file's page index now lives in this new page, a copy of the frozen one.
    Moved(u32),
}

pub struct Arena {
    data: SharedBytes,
    owners: SharedWords,
    used: Box<[AtomicU64]>,
    /// Pages a snapshot captured (in process memory only: a successor has no snapshot).
    frozen: Box<[AtomicU64]>,
    held: Mutex<Held>,
    /// Where the search for a free page starts (the word of the last one found).
    hint: AtomicUsize,
    pages: usize,
}

impl Arena {
    /// How many pages it can hold.
    pub fn capacity(&self) -> usize {
        self.pages
    }

    /// A new arena of `pages` pages, none backed; memfds named after `name`.
    pub fn create(name: &str, pages: usize) -> io::Result<Arena> {
        let data = SharedBytes::create(&format!("fvol-data-{name}"), pages * PAGE)?;
        let owners = SharedWords::create(&format!("fvol-owners-{name}"), HEADER + 2 * pages)?;
        let w = owners.words();
        w[H_PAGES].store(pages as u64, Ordering::Relaxed);
        w[0].store(MAGIC, Ordering::Release);
        Ok(Arena {
            data,
            owners,
            used: bitmap(pages),
            frozen: bitmap(pages),
            held: Mutex::default(),
            hint: AtomicUsize::new(0),
            pages,
        })
    }

    /// The arena a predecessor left, and every page in use. Memory no page owns (a page
    /// disowned just before a crash) is given back, below the highest page ever used.
    pub fn open(data: OwnedFd, owners: OwnedFd) -> io::Result<(Arena, Vec<Owned>)> {
        let data = SharedBytes::open(data)?;
        let owners = SharedWords::open(owners)?;
        let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidData, what.to_string());
        let w = owners.words();
        if w.len() < HEADER || w[0].load(Ordering::Acquire) != MAGIC {
            return Err(bad("not an fvol page table"));
        }
        let pages = w[H_PAGES].load(Ordering::Relaxed) as usize;
        if w.len() < HEADER + 2 * pages || data.len() < pages * PAGE {
            return Err(bad("a page table longer than its pages"));
        }
        let arena = Arena {
            data,
            owners,
            used: bitmap(pages),
            frozen: bitmap(pages),
            held: Mutex::default(),
            hint: AtomicUsize::new(0),
            pages,
        };
        let high = (arena.word(H_HIGH).load(Ordering::Acquire) as usize).min(pages);
        let mut owned = Vec::new();
        for page in 0..high {
            let ino = arena.owner_word(page, 1).load(Ordering::Acquire);
            if ino != 0 {
                let index = arena.owner_word(page, 0).load(Ordering::Relaxed);
                arena.used[page / 64].fetch_or(1 << (page % 64), Ordering::Relaxed);
                owned.push(Owned {
                    page: page as u32,
                    ino,
                    index,
                });
            }
        }
        // Memory of pages nobody owns (disowned just before a crash) goes back.
        let mut page = 0;
        while page < high {
            let run = (page..high).take_while(|&p| !arena.is_used(p)).count();
            if run > 0 {
                arena.data.punch(page * PAGE, run * PAGE)?;
            }
            page += run.max(1);
        }
        Ok((arena, owned))
    }

    pub fn data_fd(&self) -> BorrowedFd<'_> {
        self.data.fd()
    }

    pub fn owners_fd(&self) -> BorrowedFd<'_> {
        self.owners.fd()
    }

    fn word(&self, i: usize) -> &AtomicU64 {
        &self.owners.words()[i]
    }

    fn owner_word(&self, page: usize, i: usize) -> &AtomicU64 {
        self.word(HEADER + 2 * page + i)
    }

    fn is_used(&self, page: usize) -> bool {
        self.used[page / 64].load(Ordering::Relaxed) & (1 << (page % 64)) != 0
    }

    /// Claims `page` if it is free.
    fn try_claim(&self, page: usize) -> bool {
        if page >= self.pages {
            return false;
        }
        let bit = 1 << (page % 64);
        self.used[page / 64].fetch_or(bit, Ordering::AcqRel) & bit == 0
    }

    /// A free page for page `index` of node `ino`, recorded as theirs: `near` if it is free
    /// (so that a file's pages follow each other and a read is one slice), else any.
    pub fn allocate(&self, ino: Ino, index: u64, near: Option<u32>) -> Option<u32> {
        let page = match near {
            Some(p) if self.try_claim(p as usize) => p as usize,
            _ => self.claim_any()?,
        };
        self.owner_word(page, 0).store(index, Ordering::Relaxed);
        self.owner_word(page, 1).store(ino, Ordering::Release);
        let high = self.word(H_HIGH);
        if high.load(Ordering::Relaxed) <= page as u64 {
            high.fetch_max(page as u64 + 1, Ordering::AcqRel);
        }
        Some(page as u32)
    }

    fn claim_any(&self) -> Option<usize> {
        let words = self.used.len();
        let start = self.hint.load(Ordering::Relaxed);
        for k in 0..words {
            let w = (start + k) % words;
            let mut cur = self.used[w].load(Ordering::Relaxed);
            while cur != u64::MAX {
                let bit = (!cur).trailing_zeros() as usize;
                let page = w * 64 + bit;
                if page >= self.pages {
                    break;
                }
                match self.used[w].compare_exchange_weak(
                    cur,
                    cur | 1 << bit,
                    Ordering::AcqRel,
                    Ordering::Relaxed,
                ) {
                    Ok(_) => {
                        self.hint.store(w, Ordering::Relaxed);
                        return Some(page);
                    }
                    Err(now) => cur = now,
                }
            }
        }
        None
    }

    /// Gives pages back: disowned, their memory punched, then free for others.
    pub fn release(&self, pages: &mut [u32]) {
        if pages.is_empty() {
            return;
        }
        for &p in pages.iter() {
            self.owner_word(p as usize, 1).store(0, Ordering::Release);
        }
        pages.sort_unstable();
        let mut i = 0;
        while i < pages.len() {
            let start = pages[i] as usize;
            let mut n = 1;
            while i + n < pages.len() && pages[i + n] as usize == start + n {
                n += 1;
            }
            if let Err(e) = self.data.punch(start * PAGE, n * PAGE) {
                // Only bad arguments fail it; zero them so the page is still zeros.
                log::error!("punching tmpfs pages: {e}");
                self.data.zero(start * PAGE, n * PAGE);
            }
            i += n;
        }
        for &p in pages.iter() {
            let p = p as usize;
            self.used[p / 64].fetch_and(!(1 << (p % 64)), Ordering::AcqRel);
        }
    }

    /// Marks `pages` frozen for a snapshot. The caller holds every change of the volume
    /// (its gate), so no write is between its check of a page and its write. False if another
    /// snapshot is under way.
    pub fn freeze(&self, pages: &[u32]) -> bool {
        let mut held = self.held.lock();
        if held.active {
            return false;
        }
        *held = Held {
            active: true,
            ..Held::default()
        };
        for &p in pages {
            let p = p as usize;
            self.frozen[p / 64].fetch_or(1 << (p % 64), Ordering::AcqRel);
        }
        true
    }

    pub fn is_frozen(&self, page: u32) -> bool {
        let p = page as usize;
        self.frozen[p / 64].load(Ordering::Acquire) & (1 << (p % 64)) != 0
    }

    /// Clears the frozen bit of `page`; whether it was set.
    fn unfreeze(&self, page: u32) -> bool {
        let (p, bit) = (page as usize, 1u64 << (page % 64));
        self.frozen[p / 64].fetch_and(!bit, Ordering::AcqRel) & bit != 0
    }

    /// Before a write to `page`, page `index` of `ino`: if a snapshot holds it frozen, a new
    /// page takes its content and its owner, and the old one passes to the snapshot. With no
    /// page left for the copy the snapshot is abandoned (`thaw` says why) and the write goes
    /// in place: the volume's data always wins.
    pub fn cow(&self, page: u32, ino: Ino, index: u64) -> Cow {
        if !self.is_frozen(page) {
            return Cow::InPlace;
        }
        let mut held = self.held.lock();
        if !self.is_frozen(page) {
            return Cow::InPlace;
        }
        if held.failed.is_none() {
            // Owned by the snapshot until it is a whole copy, so a crash releases it.
            if let Some(new) = self.allocate(SNAPSHOT, index, None) {
                self.data.write(
                    new as usize * PAGE,
                    self.data.slice(page as usize * PAGE, PAGE),
                );
                // For an instant both own (ino, index), with equal content: a successor
                // keeps one of them.
                self.owner_word(new as usize, 1)
                    .store(ino, Ordering::Release);
                self.owner_word(page as usize, 1)
                    .store(SNAPSHOT, Ordering::Release);
                self.unfreeze(page);
                held.pages.push(page);
                return Cow::Moved(new);
            }
            held.failed = Some(format!(
                "the volume's memory ({} pages) had no room left for the pages written while \
                 the snapshot was being copied out",
                self.pages
            ));
        }
        self.unfreeze(page);
        Cow::InPlace
    }

    /// The arena is full and a file needs a page its quota admits: a snapshot under way is
    /// abandoned and the pages it held go back (the volume's writes win). Whether any did.
    pub fn abandon_snapshot(&self) -> bool {
        let mut held = self.held.lock();
        if !held.active || held.pages.is_empty() {
            return false;
        }
        held.failed.get_or_insert_with(|| {
            format!(
                "the volume's memory ({} pages) had no room left for the pages written while \
                 the snapshot was being copied out",
                self.pages
            )
        });
        let mut gone = std::mem::take(&mut held.pages);
        self.release(&mut gone);
        true
    }

    /// A file drops `page`: if a snapshot holds it frozen, it passes to the snapshot (true)
    /// instead of being released.
    pub fn hand_over(&self, page: u32) -> bool {
        if !self.is_frozen(page) {
            return false;
        }
        let mut held = self.held.lock();
        if !self.unfreeze(page) {
            return false;
        }
        if held.failed.is_some() {
            return false;
        }
        self.owner_word(page as usize, 1)
            .store(SNAPSHOT, Ordering::Release);
        held.pages.push(page);
        true
    }

    /// Ends a snapshot that froze `pages`: the files' own pages are free to change again and
    /// the pages it held are released. Returns why it was abandoned, if it was.
    pub fn thaw(&self, pages: &[u32]) -> Result<(), String> {
        let mut held = self.held.lock();
        for &p in pages {
            self.unfreeze(p);
        }
        let mut gone = std::mem::take(&mut held.pages);
        self.release(&mut gone);
        held.active = false;
        held.failed.take().map_or(Ok(()), Err)
    }

    /// The bytes of `page` from `at`, `len` long (inside the page's run).
    pub fn bytes(&self, page: u32, at: usize, len: usize) -> &[u8] {
        self.data.slice(page as usize * PAGE + at, len)
    }

    pub fn write(&self, page: u32, at: usize, data: &[u8]) {
        self.data.write(page as usize * PAGE + at, data)
    }

    pub fn zero(&self, page: u32, at: usize, len: usize) {
        self.data.zero(page as usize * PAGE + at, len)
    }

    /// Backs and maps `n` pages from `page` for a write about to fill them.
    pub fn populate(&self, page: u32, n: usize) {
        self.data.populate(page as usize * PAGE, n * PAGE)
    }

    /// Backs `n` pages from `page` with memory now (fallocate).
    pub fn back(&self, page: u32, n: usize) {
        if let Err(e) = self.data.back(page as usize * PAGE, n * PAGE) {
            // Only a speed-up and a promise of memory: the pages are backed when written.
            log::warn!("backing tmpfs pages: {e}");
        }
    }
}

fn bitmap(pages: usize) -> Box<[AtomicU64]> {
    (0..pages.div_ceil(64)).map(|_| AtomicU64::new(0)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_are_owned_found_again_and_released() {
        let a = Arena::create("test", 100).unwrap();
        let p = a.allocate(7, 3, None).unwrap();
        let q = a.allocate(7, 4, Some(p + 1)).unwrap();
        assert_eq!(q, p + 1);
        a.write(p, 10, b"abc");
        let r = a.allocate(9, 0, Some(p)).unwrap();
        assert_ne!(r, p, "a used page is never handed out twice");
        let (b, mut owned) = Arena::open(
            a.data_fd().try_clone_to_owned().unwrap(),
            a.owners_fd().try_clone_to_owned().unwrap(),
        )
        .unwrap();
        owned.sort_by_key(|o| o.page);
        assert_eq!(owned.len(), 3);
        assert!(owned.contains(&Owned {
            page: q,
            ino: 7,
            index: 4
        }));
        assert_eq!(b.bytes(p, 10, 3), b"abc");
        b.release(&mut [p]);
        assert_eq!(a.bytes(p, 10, 3), &[0, 0, 0]);
        // Full: every page handed out once.
        let mut n = 0;
        while b.allocate(1, n, None).is_some() {
            n += 1;
        }
        assert_eq!(n, 98);
    }
}
