//! Checking an image filesystem: redb's own integrity check, then the filesystem's invariants.
use std::collections::HashMap;
use std::sync::Arc;

use redb::{Database, ReadableDatabase, ReadableTable};
use serde::Serialize;

use super::store::{
    CHUNKS, COUNTERS, DIRENTS, INODES, InodeRec, NEXT_INO, USED_BYTES, USED_INODES,
};
use super::{ImageError, data::Piece, meta};
use crate::fs::image::backend::RegionBackend;
use crate::fs::image::device::BlockDevice;
use crate::fs::image::format::{self, REGION_START};
use crate::fs::{FileKind, ROOT_INO};

/// What `fvol fsck` reports. An image is clean when `problems` is empty.
#[derive(Debug, Default, Serialize)]
pub struct FsckReport {
    pub inodes: u64,
    pub entries: u64,
    pub data_bytes: u64,
    /// Inodes with no name left by a crash while they were open; the next mount deletes them.
    pub orphans: u64,
    pub problems: Vec<String>,
}

/// Checks the filesystem on `device` without changing it.
pub fn fsck(device: Arc<dyn BlockDevice>) -> Result<FsckReport, ImageError> {
    format::check_superblock(device.as_ref())?;
    let size = device.size();
    let region = RegionBackend::open(device, REGION_START, size - REGION_START).map_err(meta)?;
    let mut db = Database::builder()
        .create_with_backend(region)
        .map_err(meta)?;
    let mut report = FsckReport::default();
    if !db.check_integrity().map_err(meta)? {
        report
            .problems
            .push("redb integrity check failed (repaired in memory, not on the image)".into());
    }
    check_tree(&db, &mut report).map_err(meta)?;
    Ok(report)
}

fn check_tree(db: &Database, r: &mut FsckReport) -> Result<(), redb::Error> {
    let tx = db.begin_read()?;
    let mut inodes: HashMap<u64, InodeRec> = HashMap::new();
    for e in tx.open_table(INODES)?.iter()? {
        let (k, v) = e?;
        match postcard::from_bytes::<InodeRec>(v.value()) {
            Ok(rec) => {
                inodes.insert(k.value(), rec);
            }
            Err(e) => r
                .problems
                .push(format!("inode {}: unreadable record ({e})", k.value())),
        }
    }
    r.inodes = inodes.len() as u64;
    let mut names: HashMap<u64, u32> = HashMap::new();
    let mut subdirs: HashMap<u64, u32> = HashMap::new();
    for e in tx.open_table(DIRENTS)?.iter()? {
        let (k, v) = e?;
        let ((parent, name), child) = (k.value(), v.value());
        let name = String::from_utf8_lossy(name);
        r.entries += 1;
        match (inodes.get(&parent), inodes.get(&child)) {
            (None, _) => r
                .problems
                .push(format!("entry {name:?} in missing directory {parent}")),
            (_, None) => r.problems.push(format!(
                "entry {name:?} in {parent} names missing inode {child}"
            )),
            (Some(p), Some(c)) => {
                if p.kind() != FileKind::Dir {
                    r.problems.push(format!(
                        "entry {name:?} in {parent}, which is not a directory"
                    ));
                }
                *names.entry(child).or_default() += 1;
                if c.kind() == FileKind::Dir {
                    *subdirs.entry(parent).or_default() += 1;
                    if c.parent != parent {
                        r.problems.push(format!(
                            "directory {child}: '..' is {} but it is in {parent}",
                            c.parent
                        ));
                    }
                }
            }
        }
    }
    let mut charged: HashMap<u64, u64> = HashMap::new();
    for e in tx.open_table(CHUNKS)?.iter()? {
        let (k, v) = e?;
        let (ino, index) = k.value();
        let piece = Piece::decode(v.value());
        if !inodes.contains_key(&ino) {
            r.problems
                .push(format!("chunk {index} of missing inode {ino}"));
        }
        *charged.entry(ino).or_default() += super::store::charged(piece.bytes.len() as u64);
    }
    let (mut used_bytes, mut max_ino) = (0u64, 0u64);
    for (&ino, rec) in &inodes {
        max_ino = max_ino.max(ino);
        used_bytes += rec.allocated;
        let have = charged.get(&ino).copied().unwrap_or(0);
        if have != rec.allocated {
            r.problems.push(format!(
                "inode {ino}: charged {} bytes, its chunks hold {have}",
                rec.allocated
            ));
        }
        let named = names.get(&ino).copied().unwrap_or(0);
        let expected = match rec.kind() {
            FileKind::Dir if rec.nlink == 0 => 0,
            FileKind::Dir => 2 + subdirs.get(&ino).copied().unwrap_or(0),
            _ => named,
        };
        if rec.nlink == 0 && named == 0 {
            r.orphans += 1;
        } else if rec.nlink != expected {
            r.problems.push(format!(
                "inode {ino}: link count {} but {expected} expected",
                rec.nlink
            ));
        }
        if ino != ROOT_INO && rec.nlink > 0 && named == 0 {
            r.problems
                .push(format!("inode {ino}: linked but unreachable"));
        }
    }
    r.data_bytes = used_bytes;
    let counters = tx.open_table(COUNTERS)?;
    let counter = |k: &str| -> Result<u64, redb::Error> {
        Ok(counters.get(k)?.map(|v| v.value()).unwrap_or(0))
    };
    if counter(USED_BYTES)? != used_bytes {
        r.problems.push(format!(
            "usage counter {} bytes, inodes hold {used_bytes}",
            counter(USED_BYTES)?
        ));
    }
    if counter(USED_INODES)? != inodes.len() as u64 {
        r.problems.push(format!(
            "inode counter {}, {} inodes exist",
            counter(USED_INODES)?,
            inodes.len()
        ));
    }
    if counter(NEXT_INO)? <= max_ino {
        r.problems.push(format!(
            "next inode number {} is already in use",
            counter(NEXT_INO)?
        ));
    }
    if !inodes.contains_key(&ROOT_INO) {
        r.problems.push("the root directory is missing".into());
    }
    Ok(())
}
