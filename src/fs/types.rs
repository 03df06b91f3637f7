//! Plain data passed between the FUSE adapter and the filesystem cores.
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::sync::Arc;
use std::time::SystemTime;

/// A node id as the kernel sees it. 1 is the root.
pub type Ino = u64;
/// An open file or directory handle.
pub type Fh = u64;

pub const ROOT_INO: Ino = 1;

/// The mode after a write, truncate or chown that must drop privileges (the FUSE server does
/// this under `FUSE_HANDLE_KILLPRIV_V2`): setuid goes, and setgid when group-executable (a
/// setgid bit without group execute marks mandatory locking and stays).
pub fn mode_without_privileges(perm: u32) -> u32 {
    let mut perm = perm & !libc::S_ISUID;
    if perm & libc::S_IXGRP != 0 {
        perm &= !libc::S_ISGID;
    }
    perm
}

#[cfg(test)]
mod tests {
    #[test]
    fn privileges_dropped_as_the_kernel_does() {
        use super::mode_without_privileges as m;
        assert_eq!(m(0o6755), 0o0755);
        assert_eq!(m(0o6745), 0o2745);
        assert_eq!(m(0o0644), 0o0644);
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Caller {
    pub uid: u32,
    pub gid: u32,
    pub pid: u32,
    /// The caller's umask, for the requests that create a node (create, mkdir, mknod; the
    /// kernel leaves it to the handler, see `acl::inherit`); 0 for the others.
    pub umask: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FileKind {
    File,
    Dir,
    Symlink,
    Fifo,
    Socket,
    CharDevice,
    BlockDevice,
}

impl FileKind {
    /// From the `S_IFMT` bits of a mode.
    pub fn from_mode(mode: u32) -> Option<FileKind> {
        Some(match mode & libc::S_IFMT {
            libc::S_IFREG => FileKind::File,
            libc::S_IFDIR => FileKind::Dir,
            libc::S_IFLNK => FileKind::Symlink,
            libc::S_IFIFO => FileKind::Fifo,
            libc::S_IFSOCK => FileKind::Socket,
            libc::S_IFCHR => FileKind::CharDevice,
            libc::S_IFBLK => FileKind::BlockDevice,
            _ => return None,
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Attr {
    pub ino: Ino,
    pub size: u64,
    /// 512-byte blocks allocated.
    pub blocks: u64,
    pub atime: SystemTime,
    pub mtime: SystemTime,
    pub ctime: SystemTime,
    pub kind: FileKind,
    /// Permission bits, including setuid, setgid and sticky.
    pub perm: u16,
    pub nlink: u32,
    pub uid: u32,
    pub gid: u32,
    pub rdev: u32,
    pub blksize: u32,
}

#[derive(Clone, Copy, Debug)]
pub struct Entry {
    pub attr: Attr,
    pub generation: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimeSet {
    Now,
    At(SystemTime),
}

#[derive(Clone, Copy, Debug, Default)]
pub struct SetAttr {
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub size: Option<u64>,
    pub atime: Option<TimeSet>,
    pub mtime: Option<TimeSet>,
    pub ctime: Option<SystemTime>,
    pub fh: Option<Fh>,
}

pub struct Rename<'a> {
    pub caller: Caller,
    pub parent: Ino,
    pub name: &'a OsStr,
    pub new_parent: Ino,
    pub new_name: &'a OsStr,
    /// `RENAME_NOREPLACE`, `RENAME_EXCHANGE`, `RENAME_WHITEOUT` bits.
    pub flags: u32,
}

#[derive(Clone, Copy, Debug)]
pub struct CopyRange {
    pub ino_in: Ino,
    pub fh_in: Fh,
    pub offset_in: u64,
    pub ino_out: Ino,
    pub fh_out: Fh,
    pub offset_out: u64,
    pub len: u64,
    pub flags: u64,
}

/// An opened file. `passthrough` is the host file the kernel may do all I/O on directly (a
/// core offers it for every open of a volume or for none). `keep_cache` lets the kernel keep
/// the file's pages from earlier opens (only the handler changes the data). `direct_io`
/// sends every read and write to the handler, bypassing the kernel's page cache (which then
/// serves only mmap): for a core whose data already is memory, the cache would be a second
/// copy of it.
pub struct Opened {
    pub fh: Fh,
    pub passthrough: Option<Arc<File>>,
    pub keep_cache: bool,
    pub direct_io: bool,
}

pub struct DirEntry {
    pub ino: Ino,
    /// Offset of the next entry: the kernel resumes readdir from it.
    pub next_offset: u64,
    pub kind: FileKind,
    pub name: OsString,
    /// Filled for readdirplus; a `Some` counts as a lookup of the node.
    pub entry: Option<Entry>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StatFs {
    pub blocks: u64,
    pub bfree: u64,
    pub bavail: u64,
    pub files: u64,
    pub ffree: u64,
    pub bsize: u32,
    pub namelen: u32,
    pub frsize: u32,
}

pub enum XattrReply {
    /// The size the value (or list) needs, when asked with size 0.
    Size(u32),
    Data(Vec<u8>),
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UsageSnapshot {
    pub bytes: u64,
    pub inodes: u64,
}

/// What keeps a volume from answering: the backing store it waits for, or a fence. Only a
/// volume on a remote store (rbd) ever reports anything.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Health {
    pub cluster_wait: Option<ClusterWait>,
    pub fenced: Option<Fenced>,
}

/// Operations wait for the cluster, which has answered none of them since `since`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterWait {
    pub since: SystemTime,
    pub operations: u64,
}

/// The cluster refuses this host (another one took the volume over): the volume refuses
/// writes until it is mounted again.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fenced {
    pub since: SystemTime,
    pub reason: String,
}
