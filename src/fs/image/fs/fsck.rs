//! Checking an image filesystem: redb's own integrity check, then the filesystem's invariants.
use std::collections::HashMap;
use std::sync::Arc;

use redb::{Database, ReadableDatabase, ReadableTable};
use serde::Serialize;

use super::store::{
    COUNTERS, DATA_BLOCKS, DIRENTS, EXTENTS, FREE, FREE_BLOCKS, INODES, InodeRec, NEXT_INO,
    PENDING, PENDING_BLOCKS, USED_BYTES, USED_INODES,
};
use super::{ImageError, meta};
use crate::fs::image::backend::RegionBackend;
use crate::fs::image::device::BlockDevice;
use crate::fs::image::format::{self, BLOCK, Layout, META_START};
use crate::fs::{FileKind, ROOT_INO};

/// What `fvol fsck` reports. An image is clean when `problems` is empty.
#[derive(Debug, Default, Serialize)]
pub struct FsckReport {
    pub inodes: u64,
    pub entries: u64,
    pub data_bytes: u64,
    /// Data blocks in the free map, and freed but waiting for a durable commit (always 0 on
    /// an image at rest: every durable commit moves them to the free map).
    pub free_blocks: u64,
    pub pending_blocks: u64,
    /// Bytes of the metadata region redb uses, of its capacity (redb may use half of it).
    pub metadata_bytes: u64,
    pub metadata_capacity: u64,
    /// Inodes with no name left by a crash while they were open; the next mount deletes them.
    pub orphans: u64,
    pub problems: Vec<String>,
}

/// Checks the filesystem on `device` without changing it.
pub fn fsck(device: Arc<dyn BlockDevice>) -> Result<FsckReport, ImageError> {
    let layout = format::check_superblock(device.as_ref())?;
    let region = RegionBackend::open(device, META_START, layout.meta_size).map_err(meta)?;
    let watch = region.watch();
    let mut db = Database::builder()
        .create_with_backend(region)
        .map_err(meta)?;
    let mut report = FsckReport {
        metadata_bytes: watch.len(),
        metadata_capacity: watch.capacity(),
        ..FsckReport::default()
    };
    if !db.check_integrity().map_err(meta)? {
        report
            .problems
            .push("redb integrity check failed (repaired in memory, not on the image)".into());
    }
    check_tree(&db, &layout, &mut report).map_err(meta)?;
    Ok(report)
}

/// A run of data blocks and what holds it, for the overlap check.
struct Owned {
    start: u64,
    len: u64,
    owner: String,
}

/// Every data block must be in exactly one place: an extent, the free map or the pending map.
fn check_blocks(mut runs: Vec<Owned>, layout: &Layout, r: &mut FsckReport) {
    runs.sort_by_key(|o| o.start);
    let mut covered = 0u64;
    let mut end = 0u64;
    let mut last_owner = String::new();
    for o in &runs {
        if o.len == 0 {
            r.problems
                .push(format!("{}: an empty run at block {}", o.owner, o.start));
            continue;
        }
        if o.start + o.len > layout.data_blocks() {
            r.problems.push(format!(
                "{}: blocks {}+{} past the end of the data region ({} blocks)",
                o.owner,
                o.start,
                o.len,
                layout.data_blocks()
            ));
        }
        if o.start < end {
            r.problems.push(format!(
                "{} and {} both hold block {}",
                last_owner, o.owner, o.start
            ));
        }
        covered += o.len;
        if o.start + o.len > end {
            end = o.start + o.len;
            last_owner = o.owner.clone();
        }
    }
    if covered < layout.data_blocks() {
        r.problems.push(format!(
            "{} data blocks are neither in a file nor free (leaked)",
            layout.data_blocks() - covered
        ));
    }
}

fn runs_of(
    tx: &redb::ReadTransaction,
    table: redb::TableDefinition<u64, u64>,
    owner: &str,
) -> Result<Vec<Owned>, redb::Error> {
    let mut out = Vec::new();
    for e in tx.open_table(table)?.iter()? {
        let (k, v) = e?;
        out.push(Owned {
            start: k.value(),
            len: v.value(),
            owner: owner.to_string(),
        });
    }
    Ok(out)
}

fn check_tree(db: &Database, layout: &Layout, r: &mut FsckReport) -> Result<(), redb::Error> {
    let tx = db.begin_read()?;
    // A grow whose superblock a crash left behind (the next open rewrites it; see `grow`).
    let recorded = tx
        .open_table(COUNTERS)?
        .get(DATA_BLOCKS)?
        .map_or(0, |v| v.value());
    let grown;
    let layout = if recorded > layout.data_blocks() {
        grown = Layout {
            image_size: layout.data_start + recorded * BLOCK,
            ..*layout
        };
        &grown
    } else {
        layout
    };
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
    let mut owned: Vec<Owned> = Vec::new();
    let mut prev: Option<(u64, u64)> = None; // (ino, end of its last extent)
    for e in tx.open_table(EXTENTS)?.iter()? {
        let (k, v) = e?;
        let ((ino, lblk), (pblk, len, _)) = (k.value(), v.value());
        if !inodes.contains_key(&ino) {
            r.problems.push(format!(
                "extent at file block {lblk} of missing inode {ino}"
            ));
        } else if inodes[&ino].kind() != FileKind::File {
            r.problems
                .push(format!("inode {ino} is not a regular file but has extents"));
        }
        if let Some((p_ino, p_end)) = prev
            && p_ino == ino
            && lblk < p_end
        {
            r.problems
                .push(format!("inode {ino}: extents overlap at file block {lblk}"));
        }
        prev = Some((ino, lblk.saturating_add(len)));
        *charged.entry(ino).or_default() += len * BLOCK;
        owned.push(Owned {
            start: pblk,
            len,
            owner: format!("inode {ino} (file block {lblk})"),
        });
    }
    let free = runs_of(&tx, FREE, "the free map")?;
    let pending = runs_of(&tx, PENDING, "the pending map")?;
    r.free_blocks = free.iter().map(|o| o.len).sum();
    r.pending_blocks = pending.iter().map(|o| o.len).sum();
    owned.extend(free);
    owned.extend(pending);
    check_blocks(owned, layout, r);
    let (mut used_bytes, mut max_ino) = (0u64, 0u64);
    for (&ino, rec) in &inodes {
        max_ino = max_ino.max(ino);
        used_bytes += rec.allocated;
        let have = charged.get(&ino).copied().unwrap_or(0);
        if have != rec.allocated {
            r.problems.push(format!(
                "inode {ino}: charged {} bytes, its extents hold {have}",
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
    for (key, have) in [
        (FREE_BLOCKS, r.free_blocks),
        (PENDING_BLOCKS, r.pending_blocks),
    ] {
        if counter(key)? != have {
            r.problems.push(format!(
                "counter {key} is {}, the map holds {have} blocks",
                counter(key)?
            ));
        }
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
