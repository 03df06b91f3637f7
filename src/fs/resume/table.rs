//! A table of fixed-size records in shared memory (a memfd the keeper holds): written as the
//! handler goes, read once by its successor. Every word is an atomic, so a record is never
//! seen half-written by this process; a record exists once its first word says so, which is
//! stored last, so one the handler was writing when it died is simply absent.
use std::io;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;

use crate::sys::shm::SharedWords;

/// "fvoltbl1": the layout below, version 1.
const MAGIC: u64 = u64::from_le_bytes(*b"fvoltbl1");
/// Header words: magic, words per record, slots ever used, overflowed.
const HEADER: usize = 8;
const H_RECORD: usize = 1;
const H_HIGH: usize = 2;
const H_OVERFLOW: usize = 3;
/// A record's first word: 1 while it exists.
const USED: u64 = 1;

/// A record's place in the table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Slot(u32);

impl Slot {
    /// No slot: a record that could not be stored (the table was full).
    pub const NONE: Slot = Slot(u32::MAX);
}

#[derive(Default)]
struct FreeSlots {
    /// Freed slots, reused last-freed first (so the pages touched stay few).
    freed: Vec<u32>,
    /// Slots below this were used at some time.
    high: u32,
}

pub struct Table {
    mem: SharedWords,
    /// Words per record, its used word included.
    record: usize,
    capacity: u32,
    free: Mutex<FreeSlots>,
}

impl Table {
    /// A new table of `capacity` records of `fields` words each, in a memfd named `name`.
    /// Memory is taken only by the pages records are written to.
    pub fn create(name: &str, fields: usize, capacity: u32) -> io::Result<Table> {
        let record = fields + 1;
        let mem = SharedWords::create(name, HEADER + record * capacity as usize)?;
        let w = mem.words();
        w[H_RECORD].store(record as u64, Ordering::Relaxed);
        w[0].store(MAGIC, Ordering::Release);
        Ok(Table {
            mem,
            record,
            capacity,
            free: Mutex::new(FreeSlots::default()),
        })
    }

    /// The table a predecessor wrote to `fd` (records of `fields` words each). Writing goes on
    /// in the same memory.
    pub fn open(fd: OwnedFd, fields: usize) -> io::Result<Table> {
        let mem = SharedWords::open(fd)?;
        let w = mem.words();
        let bad = |what: String| io::Error::new(io::ErrorKind::InvalidData, what);
        if w.len() < HEADER || w[0].load(Ordering::Acquire) != MAGIC {
            return Err(bad("not an fvol state table".into()));
        }
        let record = fields + 1;
        let stored = w[H_RECORD].load(Ordering::Relaxed);
        if stored != record as u64 {
            return Err(bad(format!(
                "records of {stored} words in the table, {record} expected"
            )));
        }
        let capacity = ((w.len() - HEADER) / record) as u32;
        let high = (w[H_HIGH].load(Ordering::Relaxed) as u32).min(capacity);
        let table = Table {
            mem,
            record,
            capacity,
            free: Mutex::new(FreeSlots {
                freed: Vec::new(),
                high,
            }),
        };
        let freed = (0..high)
            .rev()
            .filter(|&s| table.word(Slot(s), 0).load(Ordering::Acquire) != USED)
            .collect();
        table.free.lock().freed = freed;
        Ok(table)
    }

    /// The memfd, for the keeper.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.mem.fd()
    }

    fn word(&self, slot: Slot, i: usize) -> &AtomicU64 {
        &self.mem.words()[HEADER + slot.0 as usize * self.record + i]
    }

    /// Stores a record; None (and the table is marked overflowed) when it is full.
    pub fn insert(&self, fields: &[u64]) -> Option<Slot> {
        debug_assert_eq!(fields.len(), self.record - 1);
        let slot = {
            let mut free = self.free.lock();
            match free.freed.pop() {
                Some(s) => Slot(s),
                None if free.high < self.capacity => {
                    free.high += 1;
                    self.mem.words()[H_HIGH].store(u64::from(free.high), Ordering::Release);
                    Slot(free.high - 1)
                }
                None => {
                    self.mem.words()[H_OVERFLOW].store(1, Ordering::Release);
                    return None;
                }
            }
        };
        for (i, &v) in fields.iter().enumerate() {
            self.word(slot, 1 + i).store(v, Ordering::Relaxed);
        }
        self.word(slot, 0).store(USED, Ordering::Release);
        Some(slot)
    }

    pub fn get(&self, slot: Slot, field: usize) -> u64 {
        self.word(slot, 1 + field).load(Ordering::Relaxed)
    }

    pub fn set(&self, slot: Slot, field: usize, value: u64) {
        self.word(slot, 1 + field).store(value, Ordering::Relaxed);
    }

    /// Raises the field to `value` if it is below.
    pub fn raise(&self, slot: Slot, field: usize, value: u64) {
        self.word(slot, 1 + field)
            .fetch_max(value, Ordering::Relaxed);
    }

    pub fn add(&self, slot: Slot, field: usize, delta: u64) {
        self.word(slot, 1 + field)
            .fetch_add(delta, Ordering::Relaxed);
    }

    /// A field's word itself, for updates the other methods do not cover.
    pub fn word_of(&self, slot: Slot, field: usize) -> &AtomicU64 {
        self.word(slot, 1 + field)
    }

    pub fn remove(&self, slot: Slot) {
        self.word(slot, 0).store(0, Ordering::Release);
        self.free.lock().freed.push(slot.0);
    }

    /// Every record, with its slot.
    /// How many records it can hold.
    pub fn capacity(&self) -> u32 {
        self.capacity
    }

    pub fn records(&self) -> Vec<(Slot, Vec<u64>)> {
        let high = self.free.lock().high;
        (0..high)
            .map(Slot)
            .filter(|&s| self.word(s, 0).load(Ordering::Acquire) == USED)
            .map(|s| {
                let fields = (1..self.record)
                    .map(|i| self.word(s, i).load(Ordering::Relaxed))
                    .collect();
                (s, fields)
            })
            .collect()
    }

    /// A record could not be stored at some time: the table is incomplete.
    pub fn overflowed(&self) -> bool {
        self.mem.words()[H_OVERFLOW].load(Ordering::Acquire) != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_survive_into_a_second_mapping_and_slots_are_reused() {
        let t = Table::create("test", 3, 4).unwrap();
        let a = t.insert(&[1, 2, 3]).unwrap();
        let b = t.insert(&[4, 5, 6]).unwrap();
        t.add(a, 0, 10);
        t.set(b, 2, 60);
        t.remove(a);
        let c = t.insert(&[7, 8, 9]).unwrap();
        assert_eq!(c, a, "a freed slot is reused first");
        t.remove(c);
        let again = Table::open(t.fd().try_clone_to_owned().unwrap(), 3).unwrap();
        assert_eq!(again.records(), vec![(b, vec![4, 5, 60])]);
        // The successor goes on writing in the same memory, reusing the freed slot.
        assert_eq!(again.insert(&[0, 0, 1]), Some(a));
        assert!(Table::open(t.fd().try_clone_to_owned().unwrap(), 2).is_err());
        assert!(!again.overflowed());
        for _ in 0..2 {
            again.insert(&[0, 0, 0]).unwrap();
        }
        assert_eq!(again.insert(&[0, 0, 0]), None);
        assert!(t.overflowed(), "seen through the first mapping too");
    }
}
