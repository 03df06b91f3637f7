//! POSIX rules shared by the cores that keep their own namespace (memory and image), as pure
//! functions with tests of their own: names, the group and setgid bit of a new node, `O_EXCL`,
//! rename flags, setxattr's flags, the readdir loop and its offsets, statfs, lseek. The
//! passthrough core gets them from the host. And the alignment rule of direct I/O, which the
//! FUSE adapter applies for every core (the kernel checks none for FUSE).
//!
//! Sticky directories need no rule here: the kernel checks the sticky bit itself (VFS
//! `may_delete`, for unlink, rmdir and rename) before a request reaches any core.
use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;

use nix::errno::Errno;

use super::handles::{DirCursor, DirStart};
use super::quota::Limits;
use super::{DirEntry, Entry, FileKind, FsError, FsResult, Ino, StatFs, UsageSnapshot, XattrReply};

pub const NAME_MAX: usize = 255;

/// File capabilities, which a write, truncate or chown by an unprivileged caller drops like
/// setuid.
pub const CAPABILITY: &str = "security.capability";

/// Offers `.` and `..` of directory `dir` (parent `parent`) at offsets 0 and 1, after
/// `offset`; false when `add` had no room (the reply is full). Entries proper start at 2.
pub fn add_dot_entries(
    dir: Ino,
    parent: Ino,
    offset: u64,
    add: &mut dyn FnMut(DirEntry) -> bool,
) -> bool {
    let dots = [(".", dir), ("..", parent)];
    for (i, (name, ino)) in dots.into_iter().enumerate().skip(offset as usize) {
        let entry = DirEntry {
            ino,
            next_offset: i as u64 + 1,
            kind: FileKind::Dir,
            name: name.into(),
            entry: None,
        };
        if !add(entry) {
            return false;
        }
    }
    true
}

/// One entry of a directory, as a core offers it to `read_dir`.
pub struct Listed {
    pub ino: Ino,
    pub name: OsString,
    pub kind: FileKind,
    /// For readdirplus: the node's entry, which counts as a lookup.
    pub entry: Option<Entry>,
}

/// The readdir loop of the cores that keep their own directories. Offers `.` and `..` of `dir`
/// (parent `parent`) at offsets 0 and 1, then, from where `cursor` says a read from `offset`
/// starts (see `DirCursor`), the entries `list` yields for that start, in name order,
/// numbered on from the start's offset, until `add` has no room; records in `cursor` what was
/// returned. Returns the node of an entry `add` refused that came with a lookup
/// (readdirplus): the kernel never saw it, so the caller forgets it.
///
/// `list` gets the start: after a name (`DirStart::After`), or after a number of entries
/// (`DirStart::Skip`); it yields only entries whose node still exists.
pub fn read_dir<I>(
    dir: Ino,
    parent: Ino,
    offset: u64,
    cursor: &mut DirCursor,
    list: impl FnOnce(&DirStart<'_>) -> FsResult<I>,
    add: &mut dyn FnMut(DirEntry) -> bool,
) -> FsResult<Option<Ino>>
where
    I: Iterator<Item = FsResult<Listed>>,
{
    if !add_dot_entries(dir, parent, offset, add) {
        return Ok(None);
    }
    let mut returned = Vec::new();
    let mut refused = None;
    {
        let start = cursor.start(offset.max(2));
        let mut next = match start {
            DirStart::After { offset, .. } => offset,
            DirStart::Skip(n) => n + 2,
        };
        for listed in list(&start)? {
            let Listed {
                ino,
                name,
                kind,
                entry,
            } = listed?;
            next += 1;
            let looked_up = entry.is_some();
            let offered = DirEntry {
                ino,
                next_offset: next,
                kind,
                name: name.clone(),
                entry,
            };
            if !add(offered) {
                refused = Some(looked_up.then_some(ino));
                break;
            }
            returned.push((next, name));
        }
    }
    cursor.returned(returned, refused.is_none());
    Ok(refused.flatten())
}

/// The group of a node made in a directory of mode `parent_perm` and group `parent_gid` by a
/// caller of group `caller_gid`, and the setgid bit to add to its mode: under a setgid
/// directory, the directory's group, and a new directory is setgid too; elsewhere the
/// caller's group.
pub fn new_node_group(
    parent_perm: u32,
    parent_gid: u32,
    caller_gid: u32,
    kind: FileKind,
) -> (u32, u32) {
    match parent_perm & libc::S_ISGID != 0 {
        true if kind == FileKind::Dir => (parent_gid, libc::S_ISGID),
        true => (parent_gid, 0),
        false => (caller_gid, 0),
    }
}

/// A create (open with `O_CREAT`) found the name taken: with `O_EXCL` that is `EEXIST`,
/// without it the existing node is opened.
pub fn create_over_existing(flags: i32) -> FsResult<()> {
    match flags & libc::O_EXCL {
        0 => Ok(()),
        _ => Err(FsError::Os(Errno::EEXIST)),
    }
}

/// setxattr's flags against whether the attribute `exists`: `XATTR_CREATE` refuses an
/// existing one (`EEXIST`), `XATTR_REPLACE` a missing one (`ENODATA`).
pub fn check_xattr_flags(flags: i32, exists: bool) -> FsResult<()> {
    if flags & libc::XATTR_CREATE != 0 && exists {
        return Err(FsError::Os(Errno::EEXIST));
    }
    if flags & libc::XATTR_REPLACE != 0 && !exists {
        return Err(FsError::Os(Errno::ENODATA));
    }
    Ok(())
}

/// The unit statfs counts in for the cores that keep their own data.
pub const STATFS_BLOCK: u64 = 4096;

/// What statfs shows of a volume with `limits` that uses `used`: the byte limit as the size
/// (`unlimited` bytes without one), what is left of it as free and available, in blocks of
/// `STATFS_BLOCK`; the inode limit (one per block without one) and what is left of it.
pub fn statfs(used: UsageSnapshot, limits: Limits, unlimited: u64) -> StatFs {
    let bytes = limits.bytes.unwrap_or(unlimited);
    let inodes = limits.inodes.unwrap_or(bytes / STATFS_BLOCK);
    let free = bytes.saturating_sub(used.bytes) / STATFS_BLOCK;
    StatFs {
        blocks: bytes / STATFS_BLOCK,
        bfree: free,
        bavail: free,
        files: inodes,
        ffree: inodes.saturating_sub(used.inodes),
        bsize: STATFS_BLOCK as u32,
        namelen: NAME_MAX as u32,
        frsize: STATFS_BLOCK as u32,
    }
}

/// Whether a direct I/O (O_DIRECT) request of `len` bytes at `offset` meets `align`, the
/// alignment of file offsets and lengths the volume demands (1: any). An empty request always
/// does. The caller's buffer address cannot be checked: FUSE does not pass it on.
pub fn direct_io_fits(offset: u64, len: u64, align: u64) -> bool {
    len == 0 || align <= 1 || (offset % align == 0 && len % align == 0)
}

pub fn check_name(name: &OsStr) -> FsResult<()> {
    match name.len() {
        0 => Err(FsError::Invalid),
        n if n > NAME_MAX => Err(FsError::Os(Errno::ENAMETOOLONG)),
        _ => Ok(()),
    }
}

/// The rename flags a filesystem of ours honours.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RenameMode {
    pub exchange: bool,
    pub noreplace: bool,
    /// Leave a whiteout (a 0:0 character device, a new inode) at the source name.
    pub whiteout: bool,
}

pub fn rename_mode(flags: u32) -> FsResult<RenameMode> {
    let exchange = flags & libc::RENAME_EXCHANGE != 0;
    let noreplace = flags & libc::RENAME_NOREPLACE != 0;
    let whiteout = flags & libc::RENAME_WHITEOUT != 0;
    let known = libc::RENAME_EXCHANGE | libc::RENAME_NOREPLACE | libc::RENAME_WHITEOUT;
    if flags & !known != 0 || (exchange && (noreplace || whiteout)) {
        return Err(FsError::Invalid);
    }
    Ok(RenameMode {
        exchange,
        noreplace,
        whiteout,
    })
}

/// Checks that `moved` may replace an existing `target` (a plain rename): a directory only
/// replaces an empty directory, and a non-directory only a non-directory.
pub fn check_replace(
    moved: FileKind,
    target: FileKind,
    target_is_empty: impl FnOnce() -> FsResult<bool>,
) -> FsResult<()> {
    match (moved == FileKind::Dir, target == FileKind::Dir) {
        (true, false) => Err(FsError::Os(Errno::ENOTDIR)),
        (false, true) => Err(FsError::Os(Errno::EISDIR)),
        (true, true) if !target_is_empty()? => Err(FsError::Os(Errno::ENOTEMPTY)),
        _ => Ok(()),
    }
}

/// As on Linux: `user.*` attributes only on regular files and directories.
pub fn check_xattr_kind(kind: FileKind, name: &OsStr) -> FsResult<()> {
    if name.as_bytes().starts_with(b"user.") && !matches!(kind, FileKind::File | FileKind::Dir) {
        return Err(FsError::Os(Errno::EPERM));
    }
    Ok(())
}

/// The reply to getxattr/listxattr: the size when asked with 0, ERANGE when `size` is short.
pub fn xattr_reply(value: &[u8], size: u32) -> FsResult<XattrReply> {
    match size {
        0 => Ok(XattrReply::Size(value.len() as u32)),
        n if (n as usize) < value.len() => Err(FsError::Os(Errno::ERANGE)),
        _ => Ok(XattrReply::Data(value.to_vec())),
    }
}

/// What an lseek asks of a core that keeps its own data (the kernel answers SEEK_SET,
/// SEEK_CUR and SEEK_END itself; they are handled here for completeness).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Seek {
    /// The answer, known without looking at the data.
    At(i64),
    /// SEEK_DATA from this offset, which lies inside the file.
    Data(u64),
    /// SEEK_HOLE from this offset, which lies inside the file.
    Hole(u64),
}

/// Checks an lseek on a file of `size` bytes as ext4 and tmpfs do: SEEK_DATA and SEEK_HOLE
/// fail with ENXIO for any offset outside the file (negative, or at or past its end); a
/// position that would be negative fails with EINVAL.
pub fn seek_request(offset: i64, whence: i32, size: u64) -> FsResult<Seek> {
    let inside = u64::try_from(offset).ok().filter(|&o| o < size);
    let position = |base: i64| match base.checked_add(offset) {
        Some(at) if at >= 0 => Ok(Seek::At(at)),
        _ => Err(FsError::Invalid),
    };
    match whence {
        libc::SEEK_DATA => inside.map(Seek::Data).ok_or(FsError::Os(Errno::ENXIO)),
        libc::SEEK_HOLE => inside.map(Seek::Hole).ok_or(FsError::Os(Errno::ENXIO)),
        libc::SEEK_SET => position(0),
        libc::SEEK_END => position(i64::try_from(size).map_err(|_| FsError::Invalid)?),
        _ => Err(FsError::Invalid),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_entries_resume_at_their_offsets_and_stop_when_full() {
        let names = |offset, room: usize| {
            let mut got = Vec::new();
            let done = add_dot_entries(5, 1, offset, &mut |e| {
                if got.len() == room {
                    return false;
                }
                got.push((e.name.into_string().unwrap(), e.ino, e.next_offset));
                true
            });
            (got, done)
        };
        let all = vec![(".".to_string(), 5, 1), ("..".to_string(), 1, 2)];
        assert_eq!(names(0, 9), (all.clone(), true));
        assert_eq!(names(1, 9), (all[1..].to_vec(), true));
        assert_eq!(names(2, 9), (vec![], true));
        assert_eq!(names(0, 1), (all[..1].to_vec(), false));
    }

    /// A directory of `n` entries `e0`.. as a core would list it for `read_dir`.
    fn listing(
        n: u64,
        plus: bool,
    ) -> impl Fn(&DirStart<'_>) -> FsResult<std::vec::IntoIter<FsResult<Listed>>> {
        move |start| {
            let names: Vec<u64> = (0..n).collect();
            let rest: Vec<u64> = match start {
                DirStart::After { name, .. } => {
                    let after: u64 = name.to_str().unwrap()[1..].parse().unwrap();
                    names.into_iter().filter(|i| *i > after).collect()
                }
                DirStart::Skip(k) => names.into_iter().skip(*k as usize).collect(),
            };
            Ok(rest
                .into_iter()
                .map(|i| {
                    Ok(Listed {
                        ino: 100 + i,
                        name: format!("e{i}").into(),
                        kind: FileKind::File,
                        entry: plus.then(|| Entry {
                            attr: crate::fs::Attr {
                                ino: 100 + i,
                                size: 0,
                                blocks: 0,
                                atime: std::time::UNIX_EPOCH,
                                mtime: std::time::UNIX_EPOCH,
                                ctime: std::time::UNIX_EPOCH,
                                kind: FileKind::File,
                                perm: 0o644,
                                nlink: 1,
                                uid: 0,
                                gid: 0,
                                rdev: 0,
                                blksize: 4096,
                            },
                            generation: 0,
                        }),
                    })
                })
                .collect::<Vec<_>>()
                .into_iter())
        }
    }

    /// Reads with room for `room` entries from `offset`; returns (name, next offset) pairs
    /// and the refused looked-up node.
    fn read(
        cursor: &mut DirCursor,
        n: u64,
        offset: u64,
        room: usize,
        plus: bool,
    ) -> (Vec<(String, u64)>, Option<Ino>) {
        let mut got = Vec::new();
        let refused = read_dir(1, 1, offset, cursor, listing(n, plus), &mut |e| {
            if got.len() == room {
                return false;
            }
            got.push((e.name.into_string().unwrap(), e.next_offset));
            true
        })
        .unwrap();
        (got, refused)
    }

    #[test]
    fn readdir_numbers_entries_after_the_dots_and_goes_on_where_it_stopped() {
        let mut cursor = DirCursor::default();
        let (first, refused) = read(&mut cursor, 5, 0, 4, false);
        let names =
            |v: &[(String, u64)]| v.iter().map(|(n, o)| (n.clone(), *o)).collect::<Vec<_>>();
        assert_eq!(
            names(&first),
            [
                (".".into(), 1),
                ("..".into(), 2),
                ("e0".into(), 3),
                ("e1".into(), 4)
            ]
        );
        assert_eq!(refused, None);
        // On from the last offset the kernel saw.
        let (rest, _) = read(&mut cursor, 5, 4, 9, false);
        assert_eq!(
            names(&rest),
            [("e2".into(), 5), ("e3".into(), 6), ("e4".into(), 7)]
        );
        // At the end: nothing more.
        assert_eq!(read(&mut cursor, 5, 7, 9, false).0, []);
        // readdirplus: the entry that found no room came with a lookup to undo.
        let mut cursor = DirCursor::default();
        let (got, refused) = read(&mut cursor, 5, 2, 1, true);
        assert_eq!(names(&got), [("e0".into(), 3)]);
        assert_eq!(refused, Some(101));
        let (_, refused) = read(&mut cursor, 5, 2, 1, false);
        assert_eq!(refused, None);
    }

    #[test]
    fn readdir_goes_on_after_a_name_even_when_entries_before_it_went() {
        // `rm -rf` removes what it read before reading on: the next read starts after the
        // last name returned, not at a position that would now skip entries.
        let mut cursor = DirCursor::default();
        let (got, _) = read(&mut cursor, 6, 2, 2, false);
        assert_eq!(got.last().unwrap(), &("e1".to_string(), 4));
        let mut got = Vec::new();
        read_dir(
            1,
            1,
            4,
            &mut cursor,
            |start| {
                assert_eq!(
                    *start,
                    DirStart::After {
                        name: OsStr::new("e1"),
                        offset: 4
                    }
                );
                listing(6, false)(start)
            },
            &mut |e| {
                got.push(e.name);
                true
            },
        )
        .unwrap();
        assert_eq!(got, ["e2", "e3", "e4", "e5"]);
    }

    #[test]
    fn setgid_directories_pass_on_their_group() {
        let setgid = 0o2775;
        assert_eq!(new_node_group(setgid, 50, 7, FileKind::File), (50, 0));
        assert_eq!(
            new_node_group(setgid, 50, 7, FileKind::Dir),
            (50, libc::S_ISGID)
        );
        assert_eq!(new_node_group(setgid, 50, 7, FileKind::CharDevice), (50, 0));
        assert_eq!(new_node_group(0o775, 50, 7, FileKind::Dir), (7, 0));
        assert_eq!(new_node_group(0o1777, 50, 7, FileKind::File), (7, 0));
    }

    #[test]
    fn o_excl_and_xattr_flags() {
        assert_eq!(create_over_existing(libc::O_CREAT), Ok(()));
        assert_eq!(
            create_over_existing(libc::O_CREAT | libc::O_EXCL),
            Err(FsError::Os(Errno::EEXIST))
        );
        for exists in [false, true] {
            assert_eq!(check_xattr_flags(0, exists), Ok(()));
        }
        assert_eq!(check_xattr_flags(libc::XATTR_CREATE, false), Ok(()));
        assert_eq!(
            check_xattr_flags(libc::XATTR_CREATE, true),
            Err(FsError::Os(Errno::EEXIST))
        );
        assert_eq!(check_xattr_flags(libc::XATTR_REPLACE, true), Ok(()));
        assert_eq!(
            check_xattr_flags(libc::XATTR_REPLACE, false),
            Err(FsError::Os(Errno::ENODATA))
        );
    }

    #[test]
    fn statfs_shows_the_limits_as_the_filesystem() {
        let used = UsageSnapshot {
            bytes: 3 * 4096,
            inodes: 5,
        };
        let limited = Limits {
            bytes: Some(10 * 4096 + 100),
            inodes: Some(8),
        };
        let s = statfs(used, limited, 1 << 40);
        assert_eq!((s.blocks, s.bfree, s.bavail), (10, 7, 7));
        assert_eq!((s.files, s.ffree), (8, 3));
        assert_eq!((s.bsize, s.frsize, s.namelen), (4096, 4096, 255));
        // No limits: the given size, one inode per block; never below zero.
        let s = statfs(used, Limits::default(), 64 * 4096);
        assert_eq!((s.blocks, s.bfree, s.files, s.ffree), (64, 61, 64, 59));
        let over = UsageSnapshot {
            bytes: 1 << 30,
            inodes: 100,
        };
        let s = statfs(over, limited, 0);
        assert_eq!((s.bfree, s.ffree), (0, 0));
    }

    #[test]
    fn rename_flags() {
        assert_eq!(
            rename_mode(0).unwrap(),
            RenameMode {
                exchange: false,
                noreplace: false,
                whiteout: false,
            }
        );
        assert!(rename_mode(libc::RENAME_EXCHANGE | libc::RENAME_NOREPLACE).is_err());
        assert!(rename_mode(libc::RENAME_EXCHANGE | libc::RENAME_WHITEOUT).is_err());
        assert!(rename_mode(libc::RENAME_WHITEOUT).unwrap().whiteout);
        assert!(rename_mode(1 << 3).is_err());
    }

    #[test]
    fn replace_rules() {
        let empty = || Ok(true);
        assert!(check_replace(FileKind::File, FileKind::File, empty).is_ok());
        assert_eq!(
            check_replace(FileKind::Dir, FileKind::File, empty),
            Err(FsError::Os(Errno::ENOTDIR))
        );
        assert_eq!(
            check_replace(FileKind::File, FileKind::Dir, empty),
            Err(FsError::Os(Errno::EISDIR))
        );
        assert_eq!(
            check_replace(FileKind::Dir, FileKind::Dir, || Ok(false)),
            Err(FsError::Os(Errno::ENOTEMPTY))
        );
    }

    #[test]
    fn seek_outside_the_file() {
        let enxio = Err(FsError::Os(Errno::ENXIO));
        for whence in [libc::SEEK_DATA, libc::SEEK_HOLE] {
            assert_eq!(seek_request(-1, whence, 10), enxio);
            assert_eq!(seek_request(i64::MIN, whence, 10), enxio);
            assert_eq!(seek_request(10, whence, 10), enxio);
            assert_eq!(seek_request(0, whence, 0), enxio);
        }
        assert_eq!(seek_request(9, libc::SEEK_DATA, 10), Ok(Seek::Data(9)));
        assert_eq!(seek_request(0, libc::SEEK_HOLE, 10), Ok(Seek::Hole(0)));
        assert_eq!(seek_request(-1, libc::SEEK_END, 10), Ok(Seek::At(9)));
        assert_eq!(seek_request(-11, libc::SEEK_END, 10), Err(FsError::Invalid));
        assert_eq!(seek_request(-1, libc::SEEK_SET, 10), Err(FsError::Invalid));
    }

    #[test]
    fn direct_io_alignment() {
        assert!(direct_io_fits(4096, 8192, 512));
        assert!(direct_io_fits(512, 512, 512));
        assert!(!direct_io_fits(1, 512, 512));
        assert!(!direct_io_fits(0, 100, 512));
        assert!(!direct_io_fits(512, 4096, 4096));
        // Empty requests, and volumes without a rule, take anything.
        assert!(direct_io_fits(1, 0, 512));
        assert!(direct_io_fits(1, 3, 1));
    }

    #[test]
    fn xattr_sizes() {
        assert!(matches!(xattr_reply(b"abc", 0), Ok(XattrReply::Size(3))));
        assert_eq!(
            xattr_reply(b"abc", 2).err(),
            Some(FsError::Os(Errno::ERANGE))
        );
    }
}
