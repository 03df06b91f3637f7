//! What a tmpfs volume charges against its byte quota besides file data, and its default inode
//! limit (see docs/tmpfs.md, "What counts").
//!
//! All of it is the handler's memory, so all of it counts: a node's metadata (a directory's
//! entries, xattrs, a long symlink target) takes 4 KiB pages, like data, shown in the node's
//! `st_blocks`, so `du` adds it up as the quota does. The per-item costs are above what the
//! handler really spends (measured: about 100 bytes per entry beside its name, 250 per inode,
//! 120 per xattr beside its name and value), so the memory a volume holds stays within its
//! quota. Inodes are also bounded by the inode limit.
use std::ffi::OsStr;

use super::pages::PAGE;
use crate::fs::FileKind;

/// A directory entry beside its name: the entry, and the inode it names.
pub const ENTRY_BYTES: u64 = 512;
/// An xattr beside its name and value.
pub const XATTR_BYTES: u64 = 128;
/// Symlink targets up to this long live in the inode (as on kernel tmpfs); longer ones count.
pub const SHORT_SYMLINK: u64 = 128;

/// What an entry named `name` costs its directory.
pub fn entry(name: &OsStr) -> u64 {
    name.len() as u64 + ENTRY_BYTES
}

/// What an xattr costs its node.
pub fn xattr(name: &OsStr, value_len: usize) -> u64 {
    (name.len() + value_len) as u64 + XATTR_BYTES
}

/// What a symlink's target costs it (nothing when short).
pub fn target(len: usize) -> u64 {
    match len as u64 {
        n if n > SHORT_SYMLINK => n,
        _ => 0,
    }
}

/// The bytes of metadata pages a node of `kind` holding `bytes` of metadata (entries, xattrs,
/// target) is charged: whole pages, and at least one for a directory (as on ext4).
pub fn pages(kind: FileKind, bytes: u64) -> u64 {
    let pages = bytes.div_ceil(PAGE);
    let least = u64::from(kind == FileKind::Dir);
    pages.max(least) * PAGE
}

/// The inode limit of a volume of `bytes` without `inodes=`: one per 4 KiB page of its quota,
/// as kernel tmpfs's defaults give (half the RAM for the size, half the RAM's pages for the
/// inodes), so any file that holds data fits; at least 2 (the root and one more).
pub fn default_inode_limit(bytes: u64) -> u64 {
    (bytes / PAGE).max(2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_and_xattrs_cost_their_bytes_and_an_overhead() {
        assert_eq!(entry(OsStr::new("abc")), 3 + ENTRY_BYTES);
        assert_eq!(xattr(OsStr::new("user.a"), 100), 106 + XATTR_BYTES);
        assert_eq!(target(SHORT_SYMLINK as usize), 0);
        assert_eq!(target(4096), 4096);
    }

    #[test]
    fn metadata_takes_whole_pages_and_a_directory_at_least_one() {
        assert_eq!(pages(FileKind::File, 0), 0);
        assert_eq!(pages(FileKind::Symlink, 0), 0);
        assert_eq!(pages(FileKind::File, 1), PAGE);
        assert_eq!(pages(FileKind::Dir, 0), PAGE);
        assert_eq!(pages(FileKind::Dir, PAGE), PAGE);
        assert_eq!(pages(FileKind::Dir, PAGE + 1), 2 * PAGE);
        // Eight short names fill a directory's first page.
        assert_eq!(pages(FileKind::Dir, 7 * entry(OsStr::new("f1"))), PAGE);
        assert_eq!(pages(FileKind::Dir, 8 * entry(OsStr::new("f1"))), 2 * PAGE);
    }

    #[test]
    fn the_default_inode_limit_is_one_per_page_of_the_quota() {
        assert_eq!(default_inode_limit(64 << 20), 16_384);
        assert_eq!(default_inode_limit(4 << 20), 1024);
        assert_eq!(default_inode_limit(4096), 2);
    }
}
