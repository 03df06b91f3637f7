//! The namespace of a kept tmpfs volume, as a journal in shared memory (a memfd the keeper
//! holds): names, xattrs, symlink targets and freed nodes, one record per change. Node
//! attributes and file data live elsewhere (`nodes`, `arena`); link counts, parents and what
//! each node is charged are derived from the names at recovery.
//!
//! - Records are appended under one lock, each within the critical section of the change it
//!   records (the tree's lock for names, the node's for xattrs), so the journal's order is the
//!   order of the changes.
//! - A record exists once its first word (length and kind) is stored, last, over zeros: a
//!   record cut short by a crash is absent, and so is everything after it. A change is
//!   recorded before its request is answered, so nothing answered is ever missing.
//! - Compaction: the journal has two regions. Once the active one holds twice what the live
//!   state took at the last compaction (and at least 256 KiB), the state its records describe
//!   is written into the other (zeroed) region as fresh records, and the active region
//!   switches with one store; the old one is then zeroed (punched). A crash during compaction
//!   leaves the old region active and whole. So the journal's memory stays within twice the
//!   live namespace, and the regions (virtual, backed only where written) are sized for four times
//!   the most the quota lets the namespace hold (it charges every name, xattr and target).
use std::collections::{BTreeMap, HashMap};
use std::io;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;

use crate::fs::Ino;
use crate::sys::shm::SharedWords;

/// "fvoljnl1": this layout, version 1.
const MAGIC: u64 = u64::from_le_bytes(*b"fvoljnl1");
/// Header words (one page, so that the regions are page aligned).
const HEADER: usize = 512;
const H_ACTIVE: usize = 1;
const H_REGION: usize = 2;
const H_NEXT_INO: usize = 3;
const H_BROKEN: usize = 4;
const WORD: usize = 8;

const LINK: u64 = 1;
const UNLINK: u64 = 2;
const RENAME: u64 = 3;
const XATTR_SET: u64 = 4;
const XATTR_REMOVE: u64 = 5;
const TARGET: u64 = 6;
const FREE: u64 = 7;

/// One change of the namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record<'a> {
    Link {
        dir: Ino,
        ino: Ino,
        name: &'a [u8],
    },
    Unlink {
        dir: Ino,
        name: &'a [u8],
    },
    /// A rename as `rename_entry` does it: an exchange swaps the two entries; otherwise the
    /// entry moves (replacing the target's), and a whiteout node, if any, takes the old name.
    Rename {
        from: Ino,
        to: Ino,
        exchange: bool,
        whiteout: Option<Ino>,
        name: &'a [u8],
        new_name: &'a [u8],
    },
    XattrSet {
        ino: Ino,
        name: &'a [u8],
        value: &'a [u8],
    },
    XattrRemove {
        ino: Ino,
        name: &'a [u8],
    },
    Target {
        ino: Ino,
        target: &'a [u8],
    },
    /// The node is gone: its xattrs, target and entries with it.
    Free {
        ino: Ino,
    },
}

fn push_bytes(out: &mut Vec<u64>, bytes: &[u8]) {
    out.push(bytes.len() as u64);
    for chunk in bytes.chunks(WORD) {
        let mut w = [0u8; WORD];
        w[..chunk.len()].copy_from_slice(chunk);
        out.push(u64::from_le_bytes(w));
    }
}

impl Record<'_> {
    /// The record as words, its first (length and kind) included.
    fn encode(&self) -> Vec<u64> {
        let mut out = vec![0];
        let kind = match *self {
            Record::Link { dir, ino, name } => {
                out.extend([dir, ino]);
                push_bytes(&mut out, name);
                LINK
            }
            Record::Unlink { dir, name } => {
                out.push(dir);
                push_bytes(&mut out, name);
                UNLINK
            }
            Record::Rename {
                from,
                to,
                exchange,
                whiteout,
                name,
                new_name,
            } => {
                out.extend([from, to, u64::from(exchange), whiteout.unwrap_or(0)]);
                push_bytes(&mut out, name);
                push_bytes(&mut out, new_name);
                RENAME
            }
            Record::XattrSet { ino, name, value } => {
                out.push(ino);
                push_bytes(&mut out, name);
                push_bytes(&mut out, value);
                XATTR_SET
            }
            Record::XattrRemove { ino, name } => {
                out.push(ino);
                push_bytes(&mut out, name);
                XATTR_REMOVE
            }
            Record::Target { ino, target } => {
                out.push(ino);
                push_bytes(&mut out, target);
                TARGET
            }
            Record::Free { ino } => {
                out.push(ino);
                FREE
            }
        };
        out[0] = (out.len() as u64) << 8 | kind;
        out
    }
}

/// Reads a record's fields back.
struct Fields<'a> {
    words: &'a [AtomicU64],
    at: usize,
}

impl Fields<'_> {
    fn word(&mut self) -> Option<u64> {
        let w = self.words.get(self.at)?.load(Ordering::Relaxed);
        self.at += 1;
        Some(w)
    }

    fn bytes(&mut self) -> Option<Vec<u8>> {
        let len = usize::try_from(self.word()?).ok()?;
        let words = len.div_ceil(WORD);
        if self.at + words > self.words.len() {
            return None;
        }
        let mut out = Vec::with_capacity(words * WORD);
        for _ in 0..words {
            out.extend_from_slice(&self.word()?.to_le_bytes());
        }
        out.truncate(len);
        Some(out)
    }
}

/// What the records of a region describe.
#[derive(Default, Debug, PartialEq, Eq)]
pub struct State {
    pub dirs: HashMap<Ino, BTreeMap<Vec<u8>, Ino>>,
    pub xattrs: HashMap<Ino, BTreeMap<Vec<u8>, Vec<u8>>>,
    pub targets: HashMap<Ino, Vec<u8>>,
}

impl State {
    /// Applies the record in `words` (its first word `head`); false if it does not parse.
    fn apply(&mut self, kind: u64, f: &mut Fields<'_>) -> Option<()> {
        match kind {
            LINK => {
                let (dir, ino, name) = (f.word()?, f.word()?, f.bytes()?);
                self.dirs.entry(dir).or_default().insert(name, ino);
            }
            UNLINK => {
                let (dir, name) = (f.word()?, f.bytes()?);
                self.dirs.entry(dir).or_default().remove(&name);
            }
            RENAME => {
                let (from, to, exchange, whiteout) = (f.word()?, f.word()?, f.word()?, f.word()?);
                let (name, new_name) = (f.bytes()?, f.bytes()?);
                if exchange != 0 {
                    let a = self.dirs.entry(from).or_default().get(&name).copied();
                    let b = self.dirs.entry(to).or_default().get(&new_name).copied();
                    if let (Some(a), Some(b)) = (a, b) {
                        self.dirs.entry(from).or_default().insert(name, b);
                        self.dirs.entry(to).or_default().insert(new_name, a);
                    }
                } else if let Some(moved) = self.dirs.entry(from).or_default().remove(&name) {
                    self.dirs.entry(to).or_default().insert(new_name, moved);
                    if whiteout != 0 {
                        self.dirs.entry(from).or_default().insert(name, whiteout);
                    }
                }
            }
            XATTR_SET => {
                let (ino, name, value) = (f.word()?, f.bytes()?, f.bytes()?);
                self.xattrs.entry(ino).or_default().insert(name, value);
            }
            XATTR_REMOVE => {
                let (ino, name) = (f.word()?, f.bytes()?);
                if let Some(x) = self.xattrs.get_mut(&ino) {
                    x.remove(&name);
                }
            }
            TARGET => {
                let (ino, target) = (f.word()?, f.bytes()?);
                self.targets.insert(ino, target);
            }
            FREE => {
                let ino = f.word()?;
                self.xattrs.remove(&ino);
                self.targets.remove(&ino);
                self.dirs.remove(&ino);
            }
            _ => return None,
        }
        Some(())
    }

    /// The state as records.
    fn records(&self) -> Vec<Vec<u64>> {
        let mut out = Vec::new();
        for (&ino, target) in &self.targets {
            out.push(Record::Target { ino, target }.encode());
        }
        for (&dir, entries) in &self.dirs {
            for (name, &ino) in entries {
                out.push(Record::Link { dir, ino, name }.encode());
            }
        }
        for (&ino, xattrs) in &self.xattrs {
            for (name, value) in xattrs {
                out.push(Record::XattrSet { ino, name, value }.encode());
            }
        }
        out
    }
}

struct Tail {
    active: usize,
    /// Words used in the active region.
    used: usize,
    /// Words the live state took at the last compaction.
    live: usize,
}

/// The journal is compacted past twice its live state, and never below this many words.
const MIN_COMPACT: usize = 32 * 1024;

pub struct Journal {
    mem: SharedWords,
    region: usize,
    tail: Mutex<Tail>,
}

impl Journal {
    /// A new, empty journal whose regions hold `bytes` each (rounded up to pages).
    pub fn create(name: &str, bytes: usize) -> io::Result<Journal> {
        let region = bytes.div_ceil(WORD).div_ceil(HEADER) * HEADER;
        let mem = SharedWords::create(&format!("fvol-journal-{name}"), HEADER + 2 * region)?;
        let w = mem.words();
        w[H_REGION].store(region as u64, Ordering::Relaxed);
        w[0].store(MAGIC, Ordering::Release);
        Ok(Journal {
            mem,
            region,
            tail: Mutex::new(Tail {
                active: 0,
                used: 0,
                live: 0,
            }),
        })
    }

    /// The journal a predecessor left, and the state it describes. It is compacted at once
    /// (so that nothing a crash cut short lies beyond its end).
    pub fn open(fd: OwnedFd) -> io::Result<(Journal, State)> {
        let mem = SharedWords::open(fd)?;
        let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidData, what.to_string());
        let w = mem.words();
        if w.len() < HEADER || w[0].load(Ordering::Acquire) != MAGIC {
            return Err(bad("not an fvol journal"));
        }
        if w[H_BROKEN].load(Ordering::Acquire) != 0 {
            return Err(bad("the journal overflowed: it is incomplete"));
        }
        let region = w[H_REGION].load(Ordering::Relaxed) as usize;
        let active = w[H_ACTIVE].load(Ordering::Acquire) as usize;
        if active > 1 || w.len() < HEADER + 2 * region {
            return Err(bad("a journal of another layout"));
        }
        let journal = Journal {
            mem,
            region,
            tail: Mutex::new(Tail {
                active,
                used: 0,
                live: 0,
            }),
        };
        let (state, _) = journal.replay(active);
        {
            let mut tail = journal.tail.lock();
            journal.rewrite(&mut tail, &state)?;
        }
        Ok((journal, state))
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.mem.fd()
    }

    fn region_words(&self, r: usize) -> &[AtomicU64] {
        let start = HEADER + r * self.region;
        &self.mem.words()[start..start + self.region]
    }

    /// The state region `r` describes, and how many words its records take.
    fn replay(&self, r: usize) -> (State, usize) {
        let words = self.region_words(r);
        let mut state = State::default();
        let mut at = 0;
        while at < words.len() {
            let head = words[at].load(Ordering::Acquire);
            let len = (head >> 8) as usize;
            if head == 0 || len == 0 || at + len > words.len() {
                break;
            }
            let mut f = Fields {
                words: &words[..at + len],
                at: at + 1,
            };
            if state.apply(head & 0xff, &mut f).is_none() {
                log::error!("tmpfs journal: a record that does not parse at word {at}");
                break;
            }
            at += len;
        }
        (state, at)
    }

    /// Appends a record (the caller holds the lock of the change it records).
    pub fn append(&self, record: Record<'_>) {
        let words = record.encode();
        let mut tail = self.tail.lock();
        let threshold = (2 * tail.live).max(MIN_COMPACT).min(self.region / 2);
        if tail.used + words.len() > threshold {
            let (state, _) = self.replay(tail.active);
            if let Err(e) = self.rewrite(&mut tail, &state) {
                log::error!("tmpfs journal: compaction failed: {e}");
            }
        }
        if tail.used + words.len() > self.region {
            // Cannot happen with regions sized for the quota; a successor then starts empty.
            self.mem.words()[H_BROKEN].store(1, Ordering::Release);
            log::error!("tmpfs journal full: the volume will not survive a restart intact");
            return;
        }
        let region = self.region_words(tail.active);
        let at = tail.used;
        for (i, &w) in words.iter().enumerate().skip(1) {
            region[at + i].store(w, Ordering::Relaxed);
        }
        region[at].store(words[0], Ordering::Release);
        tail.used += words.len();
    }

    /// Writes `state` into the other region, makes it the active one, and zeroes the old.
    fn rewrite(&self, tail: &mut Tail, state: &State) -> io::Result<()> {
        let other = 1 - tail.active;
        self.zero_region(other)?;
        let region = self.region_words(other);
        let mut at = 0;
        for words in state.records() {
            if at + words.len() > self.region {
                return Err(io::Error::other(
                    "the live namespace exceeds a journal region",
                ));
            }
            for (i, &w) in words.iter().enumerate().skip(1) {
                region[at + i].store(w, Ordering::Relaxed);
            }
            region[at].store(words[0], Ordering::Release);
            at += words.len();
        }
        self.mem.words()[H_ACTIVE].store(other as u64, Ordering::Release);
        let old = tail.active;
        tail.active = other;
        tail.used = at;
        tail.live = at;
        self.zero_region(old)
    }

    fn zero_region(&self, r: usize) -> io::Result<()> {
        let start = ((HEADER + r * self.region) * WORD) as i64;
        let len = (self.region * WORD) as i64;
        let mode = nix::fcntl::FallocateFlags::FALLOC_FL_PUNCH_HOLE
            | nix::fcntl::FallocateFlags::FALLOC_FL_KEEP_SIZE;
        nix::fcntl::fallocate(self.mem.fd(), mode, start, len)?;
        Ok(())
    }

    /// Records that node ids up to `ino` were handed out (never to be reused).
    pub fn note_ino(&self, ino: Ino) {
        self.mem.words()[H_NEXT_INO].fetch_max(ino, Ordering::AcqRel);
    }

    /// The highest node id ever handed out.
    pub fn highest_ino(&self) -> Ino {
        self.mem.words()[H_NEXT_INO].load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reopen(j: &Journal) -> (Journal, State) {
        Journal::open(j.fd().try_clone_to_owned().unwrap()).unwrap()
    }

    #[test]
    fn records_replay_into_the_state_and_survive_compaction() {
        let j = Journal::create("test", 8192).unwrap();
        j.append(Record::Link {
            dir: 1,
            ino: 2,
            name: b"a",
        });
        j.append(Record::Link {
            dir: 1,
            ino: 3,
            name: b"dir",
        });
        j.append(Record::Target {
            ino: 2,
            target: b"somewhere/far/away",
        });
        j.append(Record::XattrSet {
            ino: 3,
            name: b"user.x",
            value: b"1",
        });
        j.append(Record::Rename {
            from: 1,
            to: 3,
            exchange: false,
            whiteout: Some(4),
            name: b"a",
            new_name: b"b",
        });
        j.note_ino(4);
        // The successor goes on in the same memory (the first handler is gone).
        let (j, state) = reopen(&j);
        assert_eq!(state.dirs[&1].get(b"a".as_slice()), Some(&4));
        assert_eq!(state.dirs[&3].get(b"b".as_slice()), Some(&2));
        assert_eq!(state.targets[&2], b"somewhere/far/away");
        assert_eq!(state.xattrs[&3][b"user.x".as_slice()], b"1");
        // Many more records than a region holds: compaction keeps only the live state.
        for i in 0..2000u64 {
            let name = format!("f{i}");
            j.append(Record::Link {
                dir: 3,
                ino: 100 + i,
                name: name.as_bytes(),
            });
            j.append(Record::Unlink {
                dir: 3,
                name: name.as_bytes(),
            });
            j.append(Record::Free { ino: 100 + i });
        }
        j.append(Record::Free { ino: 2 });
        let (again, state2) = reopen(&j);
        assert_eq!(state2.dirs[&3].len(), 1);
        assert!(state2.targets.is_empty());
        assert_eq!(again.highest_ino(), 4);
    }

    #[test]
    fn a_record_cut_short_is_absent() {
        let j = Journal::create("test", 8192).unwrap();
        j.append(Record::Link {
            dir: 1,
            ino: 2,
            name: b"kept",
        });
        // A record whose words were written but not its first one.
        let words = Record::Link {
            dir: 1,
            ino: 3,
            name: b"torn",
        }
        .encode();
        let tail = j.tail.lock().used;
        let region = j.region_words(j.tail.lock().active);
        for (i, &w) in words.iter().enumerate().skip(1) {
            region[tail + i].store(w, Ordering::Relaxed);
        }
        let (again, state) = reopen(&j);
        assert_eq!(state.dirs[&1].len(), 1);
        // Appending after recovery lands on zeros, not on the torn words.
        again.append(Record::Link {
            dir: 1,
            ino: 5,
            name: b"x",
        });
        again.append(Record::Link {
            dir: 1,
            ino: 6,
            name: b"y",
        });
        let (_, state) = reopen(&again);
        assert_eq!(state.dirs[&1].len(), 3);
    }
}
