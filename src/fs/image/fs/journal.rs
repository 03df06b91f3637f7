//! The redo journal of a kept image volume (docs/rbd.md, "A crash of the daemon"): a ring of
//! records in a memfd the keeper holds, so that what the image filesystem acknowledged since
//! its last durable commit survives a crash of the handler (not of the host: it is RAM).
//!
//! - Every logged transaction appends one record (its operation, see `redo`) with the next
//!   sequence number, inside the transaction, which also stores that number in the image
//!   (`store::JOURNAL_SEQ`). Write transactions are serialized, so the journal's order is
//!   the order of the commits, and a durable commit covers exactly the records up to the
//!   number it stores; `recycle` then drops them.
//! - The header's tail moves (one atomic store) once a record is whole: everything between
//!   head and tail must check out at recovery, or recovery fails and names the damage; what
//!   lies past the tail (a record cut short by a crash, never acknowledged) is ignored.
//! - Room is reserved before a transaction begins (`reserve`): when the ring is full the
//!   caller commits durably (which empties it) instead of failing.
use std::collections::VecDeque;
use std::io;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::sync::atomic::Ordering;

use parking_lot::Mutex;

use crate::sys::shm::SharedBytes;

/// The layouts, which differ only in their records' checksum: "fvolrdo1" mixes one word
/// after the other (a chain of multiplies: 182 µs per MiB here, a twelfth of a 1 MiB
/// write's time on rbd); "fvolrdo2", what new journals use, mixes four independent lanes
/// (56-69 µs per MiB). A journal a predecessor left keeps its layout to its end.
const MAGIC_V1: u64 = u64::from_le_bytes(*b"fvolrdo1");
const MAGIC_V2: u64 = u64::from_le_bytes(*b"fvolrdo2");
/// Header bytes (one page): words below, then nothing.
const HEADER: usize = 4096;
const H_MAGIC: usize = 0;
const H_CAP: usize = 8;
/// Ring positions (bytes since the ring began, never wrapping; the offset in the ring is
/// modulo `cap`) of the oldest live record and of the end of the last whole one.
const H_HEAD: usize = 16;
const H_TAIL: usize = 24;
/// A record: payload length (u32), 4 spare bytes, sequence number, checksum, payload padded
/// to 8 bytes.
const REC_HEAD: usize = 24;
/// A length that says "the ring goes on at its start".
const WRAP: u32 = u32::MAX;

/// The ring's size for a new journal: it holds at least a few of the largest records (a
/// copy_file_range of 16 MiB), and a fast writer fills it only every ~120 MiB (each time a
/// durable commit empties it; docs/rbd.md).
pub const DEFAULT_RING: usize = 128 << 20;
/// Records go back to the ring's start once the tail is this far in and the start is free,
/// so a busy journal keeps reusing the same warm pages (at most this much plus what is
/// live stays resident between quiet moments) instead of touching the whole ring.
const WARM: u64 = 8 << 20;

fn padded(len: usize) -> usize {
    REC_HEAD + len.div_ceil(8) * 8
}

/// How a journal's records are checked (see the magics).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Layout {
    OneLane,
    FourLanes,
}

impl Layout {
    fn of(magic: u64) -> Option<Layout> {
        match magic {
            MAGIC_V1 => Some(Layout::OneLane),
            MAGIC_V2 => Some(Layout::FourLanes),
            _ => None,
        }
    }

    fn magic(self) -> u64 {
        match self {
            Layout::OneLane => MAGIC_V1,
            Layout::FourLanes => MAGIC_V2,
        }
    }

    fn checksum(self, seq: u64, parts: &[&[u8]]) -> u64 {
        match self {
            Layout::OneLane => checksum_one_lane(seq, parts),
            Layout::FourLanes => checksum_four_lanes(seq, parts),
        }
    }
}

fn mix(h: u64, w: u64) -> u64 {
    (h ^ w).wrapping_mul(0x9e37_79b9_7f4a_7c15).rotate_left(29)
}

/// A 64-bit checksum of a record's sequence number and payload (not cryptographic: it finds
/// damage, a torn or a stray record). Layout 1.
fn checksum_one_lane(seq: u64, parts: &[&[u8]]) -> u64 {
    let mut h = seq ^ 0x6a09_e667_f3bc_c908;
    let mut len = 0u64;
    let mut mix = |w: u64| {
        h = mix(h, w);
    };
    let mut carry = [0u8; 8];
    let mut have = 0;
    for part in parts {
        len += part.len() as u64;
        let mut rest: &[u8] = part;
        if have > 0 {
            let take = (8 - have).min(rest.len());
            carry[have..have + take].copy_from_slice(&rest[..take]);
            have += take;
            rest = &rest[take..];
            if have < 8 {
                // The part ended inside the word.
                continue;
            }
            mix(u64::from_le_bytes(carry));
        }
        let mut chunks = rest.chunks_exact(8);
        for c in &mut chunks {
            mix(u64::from_le_bytes(c.try_into().expect("8 bytes")));
        }
        let tail = chunks.remainder();
        carry[..tail.len()].copy_from_slice(tail);
        have = tail.len();
    }
    if have > 0 {
        carry[have..].fill(0);
        mix(u64::from_le_bytes(carry));
    }
    mix(len);
    h
}

/// Layout 2: the same step on four lanes of 8 bytes each (independent, so the processor
/// overlaps their multiplies), a zero-padded last block, then the lanes and the length
/// folded into one.
fn checksum_four_lanes(seq: u64, parts: &[&[u8]]) -> u64 {
    const BLOCK: usize = 32;
    let mut h = [
        seq ^ 0x6a09_e667_f3bc_c908,
        seq ^ 0xbb67_ae85_84ca_a73b,
        seq ^ 0x3c6e_f372_fe94_f82b,
        seq ^ 0xa54f_f53a_5f1d_36f1,
    ];
    let block = |h: &mut [u64; 4], b: &[u8]| {
        for (lane, w) in h.iter_mut().zip(b.chunks_exact(8)) {
            *lane = mix(*lane, u64::from_le_bytes(w.try_into().expect("8 bytes")));
        }
    };
    let mut carry = [0u8; BLOCK];
    let mut have = 0;
    let mut len = 0u64;
    for part in parts {
        len += part.len() as u64;
        let mut rest: &[u8] = part;
        if have > 0 {
            let take = (BLOCK - have).min(rest.len());
            carry[have..have + take].copy_from_slice(&rest[..take]);
            have += take;
            rest = &rest[take..];
            if have < BLOCK {
                continue;
            }
            block(&mut h, &carry);
        }
        let mut chunks = rest.chunks_exact(BLOCK);
        for c in &mut chunks {
            block(&mut h, c);
        }
        let tail = chunks.remainder();
        carry[..tail.len()].copy_from_slice(tail);
        have = tail.len();
    }
    if have > 0 {
        carry[have..].fill(0);
        block(&mut h, &carry);
    }
    let folded = h[1..].iter().fold(h[0], |acc, lane| mix(acc, *lane));
    mix(folded, len)
}

struct Ring {
    head: u64,
    tail: u64,
    /// Bytes reserved by transactions about to append.
    reserved: u64,
    next_seq: u64,
    /// Live records: sequence number and the position past their end.
    ends: VecDeque<(u64, u64)>,
}

pub struct Journal {
    mem: SharedBytes,
    layout: Layout,
    cap: u64,
    /// Ring offset past which an append starts again at offset 0 when it can (`WARM`, or a
    /// quarter of a small ring).
    warm: u64,
    ring: Mutex<Ring>,
}

/// Room for one record, taken before its transaction began; given back unless appended.
pub struct Reservation<'a> {
    journal: &'a Journal,
    bytes: u64,
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        if self.bytes > 0 {
            self.journal.ring.lock().reserved -= self.bytes;
        }
    }
}

/// A record found at recovery.
pub struct Found {
    pub seq: u64,
    pub payload: Vec<u8>,
}

fn warm_for(cap: u64) -> u64 {
    WARM.min(cap / 4)
}

fn damaged(what: String) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("the redo journal of this rbd volume is damaged: {what}"),
    )
}

impl Journal {
    /// A new, empty journal whose ring holds `ring` bytes (rounded to pages).
    pub fn create(name: &str, ring: usize) -> io::Result<Journal> {
        Self::create_in(name, ring, Layout::FourLanes)
    }

    fn create_in(name: &str, ring: usize, layout: Layout) -> io::Result<Journal> {
        let cap = ring.div_ceil(HEADER) * HEADER;
        let mem = SharedBytes::create(&format!("fvol-redo-{name}"), HEADER + cap)?;
        mem.word(H_CAP).store(cap as u64, Ordering::Relaxed);
        mem.word(H_MAGIC).store(layout.magic(), Ordering::Release);
        Ok(Journal {
            mem,
            layout,
            cap: cap as u64,
            warm: warm_for(cap as u64),
            ring: Mutex::new(Ring {
                head: 0,
                tail: 0,
                reserved: 0,
                next_seq: 1,
                ends: VecDeque::new(),
            }),
        })
    }

    /// The journal a predecessor left, and its records in order. Fails, naming the damage,
    /// when it is not a journal of this layout or a record between head and tail does not
    /// check out.
    pub fn open(fd: OwnedFd) -> io::Result<(Journal, Vec<Found>)> {
        let mem = SharedBytes::open(fd)?;
        if mem.len() < HEADER {
            return Err(damaged(format!(
                "{} bytes, shorter than its header",
                mem.len()
            )));
        }
        let magic = mem.word(H_MAGIC).load(Ordering::Acquire);
        let Some(layout) = Layout::of(magic) else {
            return Err(damaged(format!(
                "its magic is {:?}, expected \"fvolrdo1\" or \"fvolrdo2\" (a journal of \
                 another fvol version?)",
                String::from_utf8_lossy(&magic.to_le_bytes())
            )));
        };
        let cap = mem.word(H_CAP).load(Ordering::Relaxed);
        if cap == 0 || cap % 8 != 0 || HEADER as u64 + cap != mem.len() as u64 {
            return Err(damaged(format!(
                "a ring of {cap} bytes in {} bytes",
                mem.len()
            )));
        }
        let head = mem.word(H_HEAD).load(Ordering::Acquire);
        let tail = mem.word(H_TAIL).load(Ordering::Acquire);
        if head > tail || tail - head > cap {
            return Err(damaged(format!(
                "head {head} and tail {tail} of a ring of {cap}"
            )));
        }
        let journal = Journal {
            mem,
            layout,
            cap,
            warm: warm_for(cap),
            ring: Mutex::new(Ring {
                head,
                tail,
                reserved: 0,
                next_seq: 1,
                ends: VecDeque::new(),
            }),
        };
        let found = journal.walk()?;
        Ok((journal, found))
    }

    /// Reads every record from head to tail.
    fn walk(&self) -> io::Result<Vec<Found>> {
        let mut ring = self.ring.lock();
        let (mut at, tail) = (ring.head, ring.tail);
        let mut found = Vec::new();
        let mut last: Option<u64> = None;
        while at < tail {
            let off = (at % self.cap) as usize;
            let room = self.cap as usize - off;
            if room < REC_HEAD || self.u32_at(off) == WRAP {
                at += room as u64;
                continue;
            }
            let len = self.u32_at(off) as usize;
            let size = padded(len);
            if size > room || at + size as u64 > tail {
                return Err(damaged(format!(
                    "the record at {at} ({len} bytes) runs past the end"
                )));
            }
            let base = HEADER + off;
            let seq = u64::from_le_bytes(self.mem.slice(base + 8, 8).try_into().expect("8"));
            let sum = u64::from_le_bytes(self.mem.slice(base + 16, 8).try_into().expect("8"));
            let payload = self.mem.slice(base + REC_HEAD, len);
            if self.layout.checksum(seq, &[payload]) != sum {
                return Err(damaged(format!(
                    "record {seq} at {at}: its checksum does not match"
                )));
            }
            if let Some(prev) = last
                && seq != prev + 1
            {
                return Err(damaged(format!("record {seq} follows record {prev}")));
            }
            last = Some(seq);
            found.push(Found {
                seq,
                payload: payload.to_vec(),
            });
            at += size as u64;
            ring.ends.push_back((seq, at));
        }
        ring.next_seq = last.map_or(1, |s| s + 1);
        Ok(found)
    }

    fn u32_at(&self, off: usize) -> u32 {
        u32::from_le_bytes(self.mem.slice(HEADER + off, 4).try_into().expect("4 bytes"))
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.mem.fd()
    }

    /// The largest record payload a reservation can ever get room for.
    pub fn max_payload(&self) -> usize {
        (self.cap as usize / 2).saturating_sub(REC_HEAD + 8)
    }

    /// Numbers the next record after `seq` at least (the image's last durable commit covers
    /// records up to `seq`).
    pub fn continue_after(&self, seq: u64) {
        let mut ring = self.ring.lock();
        ring.next_seq = ring.next_seq.max(seq + 1);
    }

    /// Room for a record of `payload` bytes at most, or None while the ring is too full
    /// (the caller commits durably, which empties it, and tries again).
    pub fn reserve(&self, payload: usize) -> Option<Reservation<'_>> {
        // Twice the record: its place may come only after the rest of the ring is skipped.
        let need = 2 * padded(payload) as u64;
        let mut ring = self.ring.lock();
        if ring.tail - ring.head + ring.reserved + need > self.cap {
            return None;
        }
        ring.reserved += need;
        Some(Reservation {
            journal: self,
            bytes: need,
        })
    }

    /// Appends a record of `parts` (within room `r` reserved), numbered with the next
    /// sequence number, which it returns. The caller holds the write transaction the record
    /// belongs to.
    pub fn append(&self, r: &mut Reservation<'_>, parts: &[&[u8]]) -> u64 {
        let len: usize = parts.iter().map(|p| p.len()).sum();
        let size = padded(len);
        let mut ring = self.ring.lock();
        debug_assert!(
            2 * size as u64 <= r.bytes,
            "a record larger than its reservation"
        );
        ring.reserved -= r.bytes;
        r.bytes = 0;
        let mut at = ring.tail;
        let off = (at % self.cap) as usize;
        let room = self.cap as usize - off;
        // Early back to the start: only when everything live lies past the warm pages (so
        // at least those are free ahead of the new tail), and what others reserved still
        // fits (their room assumed the tail here).
        let head_off = ring.head % self.cap;
        let back_early = head_off >= self.warm
            && at - ring.head <= off as u64 - head_off
            && at + (room + size) as u64 - ring.head + ring.reserved <= self.cap;
        if room < size || back_early {
            if room >= REC_HEAD {
                self.mem.write(HEADER + off, &WRAP.to_le_bytes());
            }
            at += room as u64;
        }
        let seq = ring.next_seq;
        let base = HEADER + (at % self.cap) as usize;
        let mut head = [0u8; REC_HEAD];
        head[..4].copy_from_slice(&(len as u32).to_le_bytes());
        head[8..16].copy_from_slice(&seq.to_le_bytes());
        head[16..24].copy_from_slice(&self.layout.checksum(seq, parts).to_le_bytes());
        self.mem.write(base, &head);
        let mut p = base + REC_HEAD;
        for part in parts {
            self.mem.write(p, part);
            p += part.len();
        }
        let end = at + size as u64;
        // The record is whole before the tail passes it.
        self.mem.word(H_TAIL).store(end, Ordering::Release);
        ring.tail = end;
        ring.next_seq = seq + 1;
        ring.ends.push_back((seq, end));
        seq
    }

    /// Takes back the last record appended (its transaction did not commit).
    pub fn retract(&self, seq: u64) {
        let mut ring = self.ring.lock();
        if ring.ends.back().map(|e| e.0) != Some(seq) {
            return;
        }
        ring.ends.pop_back();
        let end = ring.ends.back().map_or(ring.head, |e| e.1);
        self.mem.word(H_TAIL).store(end, Ordering::Release);
        ring.tail = end;
        ring.next_seq = seq;
    }

    /// Drops the records up to `seq` (a durable commit covers them). Their pages stay, for the
    /// records that follow (a fresh page costs a fault and a clear per 4 KiB written: about a
    /// sixth of a busy writer's time, measured); `release_free` gives them back.
    pub fn recycle(&self, seq: u64) {
        let mut ring = self.ring.lock();
        while let Some(&(s, end)) = ring.ends.front() {
            if s > seq {
                break;
            }
            ring.ends.pop_front();
            ring.head = end;
        }
        if ring.ends.is_empty() {
            // Past the tail too: a record cut short there is gone for good.
            ring.head = ring.tail;
        }
        let head = ring.head;
        self.mem.word(H_HEAD).store(head, Ordering::Release);
    }

    /// Gives back the pages of the ring that hold no live record (when the volume has gone
    /// quiet). Under the ring's lock, so no record is appended meanwhile.
    pub fn release_free(&self) {
        let ring = self.ring.lock();
        if ring.head == ring.tail {
            self.punch_ring(0, self.cap);
        } else {
            self.punch(ring.tail, ring.head + self.cap);
        }
    }

    /// Gives back the whole pages of ring positions `[from, to)`.
    fn punch(&self, from: u64, to: u64) {
        if to - from >= self.cap {
            // The whole ring is free only if nothing is live: never punch what may be.
            return;
        }
        let (a, b) = (from % self.cap, to % self.cap);
        let ranges = if a <= b && to - from < self.cap {
            vec![(a, b)]
        } else {
            vec![(a, self.cap), (0, b)]
        };
        for (start, end) in ranges {
            self.punch_ring(start, end);
        }
    }

    /// Gives back the whole pages of ring offsets `[start, end)`.
    fn punch_ring(&self, start: u64, end: u64) {
        const PAGE: u64 = 4096;
        let (start, end) = (start.div_ceil(PAGE) * PAGE, end / PAGE * PAGE);
        if start < end {
            let at = HEADER + start as usize;
            if let Err(e) = self.mem.punch(at, (end - start) as usize) {
                log::warn!("image journal: giving pages back: {e}");
            }
        }
    }

    /// Records live (for tests and logs).
    pub fn live(&self) -> usize {
        self.ring.lock().ends.len()
    }

    /// Overwrites byte `at` of the ring (tests: damage).
    #[doc(hidden)]
    pub fn damage(&self, at: usize) {
        let b = self.mem.slice(HEADER + at, 1)[0];
        self.mem.write(HEADER + at, &[!b]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reopen(j: &Journal) -> io::Result<(Journal, Vec<Found>)> {
        Journal::open(j.fd().try_clone_to_owned().unwrap())
    }

    fn add(j: &Journal, bytes: &[u8]) -> u64 {
        let mut r = j.reserve(bytes.len()).unwrap();
        j.append(&mut r, &[bytes])
    }

    #[test]
    fn records_come_back_in_order_across_wraps_and_recycling() {
        let j = Journal::create("test", 16 * 4096).unwrap();
        let mut kept = Vec::new();
        for i in 0..2000u64 {
            let data = vec![i as u8; (i % 3000) as usize];
            let seq = add(&j, &data);
            kept.push((seq, data));
            if i % 7 == 6 {
                j.recycle(seq - 2);
                kept.retain(|(s, _)| *s > seq - 2);
            }
            if i % 13 == 12 {
                // Giving free pages back never touches a live record.
                j.release_free();
            }
        }
        let (again, found) = reopen(&j).unwrap();
        let got: Vec<_> = found.into_iter().map(|f| (f.seq, f.payload)).collect();
        assert_eq!(got, kept);
        assert_eq!(add(&again, b"next"), kept.last().unwrap().0 + 1);
    }

    /// A busy journal whose records are recycled as it goes keeps writing into the pages at
    /// the ring's start, not into fresh pages all around the ring.
    #[test]
    fn a_recycled_ring_reuses_its_warm_pages() {
        let j = Journal::create("test", 256 * 4096).unwrap();
        let resident = |j: &Journal| nix::sys::stat::fstat(j.fd()).unwrap().st_blocks * 512;
        let mut kept = Vec::new();
        for i in 0..2000u64 {
            let data = vec![i as u8; 3000];
            let seq = add(&j, &data);
            kept.push((seq, data));
            if i % 4 == 3 {
                j.recycle(seq - 1);
                kept.retain(|(s, _)| *s > seq - 1);
            }
        }
        // The warm quarter, the record that crossed into it and the header.
        assert!(
            resident(&j) <= (64 + 2 + 1) * 4096,
            "{} KiB resident of a 1 MiB ring",
            resident(&j) / 1024
        );
        let (_, found) = reopen(&j).unwrap();
        let got: Vec<_> = found.into_iter().map(|f| (f.seq, f.payload)).collect();
        assert_eq!(got, kept);
    }

    /// Recycled pages stay for the next records until `release_free` gives them back.
    #[test]
    fn free_pages_go_back_when_released_not_when_recycled() {
        let j = Journal::create("test", 64 * 4096).unwrap();
        let resident = |j: &Journal| nix::sys::stat::fstat(j.fd()).unwrap().st_blocks * 512;
        let mut last = 0;
        for _ in 0..60 {
            last = add(&j, &[5u8; 4000]);
        }
        let full = resident(&j);
        assert!(full >= 60 * 4096, "{full}");
        j.recycle(last);
        assert_eq!(resident(&j), full, "recycling gave pages back");
        j.release_free();
        assert!(resident(&j) <= 2 * 4096, "{} still resident", resident(&j));
        let kept = add(&j, b"after");
        j.release_free();
        let (_, found) = reopen(&j).unwrap();
        assert_eq!(found.into_iter().map(|f| f.seq).collect::<Vec<_>>(), [kept]);
    }

    #[test]
    fn a_full_ring_refuses_a_reservation_until_recycled() {
        let j = Journal::create("test", 4096).unwrap();
        let mut last = 0;
        while let Some(mut r) = j.reserve(100) {
            last = j.append(&mut r, &[&[7u8; 100]]);
        }
        j.recycle(last);
        assert!(j.reserve(100).is_some());
    }

    #[test]
    fn damage_is_named_and_a_torn_tail_is_ignored() {
        let j = Journal::create("test", 8 * 4096).unwrap();
        add(&j, b"first record");
        add(&j, b"second record");
        // Bytes past the tail (a record never finished) do not count.
        j.mem.write(HEADER + 200, b"garbage");
        assert_eq!(reopen(&j).unwrap().1.len(), 2);
        j.damage(REC_HEAD + 3);
        let e = reopen(&j).err().expect("damage is found");
        assert!(e.to_string().contains("checksum"), "{e}");
        j.mem
            .word(H_MAGIC)
            .store(u64::from_le_bytes(*b"fvolrdo9"), Ordering::Release);
        let e = reopen(&j).err().expect("another layout is refused");
        assert!(e.to_string().contains("fvolrdo9"), "{e}");
    }

    /// A journal of layout 1 (left by the version before) is read and continued in its own
    /// layout; each layout's checksum finds a changed byte wherever the parts split.
    #[test]
    fn both_layouts_replay_and_find_damage() {
        for layout in [Layout::OneLane, Layout::FourLanes] {
            let j = Journal::create_in("test", 16 * 4096, layout).unwrap();
            let payloads: Vec<Vec<u8>> = (0..40u32)
                .map(|i| (0..i * 37).map(|b| (b * 7 + i) as u8).collect())
                .collect();
            for p in &payloads {
                add(&j, p);
            }
            let (again, found) = reopen(&j).unwrap();
            assert_eq!(again.layout, layout);
            let got: Vec<_> = found.into_iter().map(|f| f.payload).collect();
            assert_eq!(got, payloads);
            add(&again, b"continued");
            assert_eq!(reopen(&again).unwrap().1.len(), 41);

            let data: Vec<u8> = (0..300u32).map(|b| (b * 13) as u8).collect();
            let whole = layout.checksum(9, &[&data]);
            for split in [0, 1, 7, 8, 31, 32, 33, 299, 300] {
                let (a, b) = data.split_at(split);
                assert_eq!(layout.checksum(9, &[a, b]), whole, "split at {split}");
            }
            for at in [0, 8, 31, 32, 299] {
                let mut changed = data.clone();
                changed[at] ^= 1;
                assert_ne!(layout.checksum(9, &[&changed]), whole, "byte {at}");
            }
            assert_ne!(layout.checksum(10, &[&data]), whole);
            assert_ne!(layout.checksum(9, &[&data, &[0]]), whole, "a zero appended");
        }
        assert_ne!(
            checksum_one_lane(1, &[b"same bytes"]),
            checksum_four_lanes(1, &[b"same bytes"])
        );
    }

    #[test]
    fn a_retracted_record_is_not_replayed() {
        let j = Journal::create("test", 8 * 4096).unwrap();
        add(&j, b"kept");
        let seq = add(&j, b"retracted");
        j.retract(seq);
        let (again, found) = reopen(&j).unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!(add(&again, b"x"), seq);
    }
}
