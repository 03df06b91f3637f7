//! POSIX rules shared by the cores that keep their own namespace (memory and image); the
//! passthrough core gets them from the host. And the alignment rule of direct I/O, which the
//! FUSE adapter applies for every core (the kernel checks none for FUSE).
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;

use nix::errno::Errno;

use super::{DirEntry, FileKind, FsError, FsResult, Ino, XattrReply};

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
