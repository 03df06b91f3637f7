//! Filesystem cores. Each backend implements `VolumeFs`; the `fuse` module adapts any of them
//! to the kernel. Nothing here knows fuser's types.
pub mod acl;
pub mod error;
pub mod gate;
pub mod handles;
pub mod image;
pub mod memory;
pub mod passthrough;
pub mod quota;
pub mod resume;
pub mod rules;
pub mod tar_out;
pub mod tree_copy;
pub mod types;

pub use error::{FsError, FsResult};
pub use types::*;

use std::ffi::OsStr;
use std::path::Path;

/// One mounted volume's filesystem. Node ids are stable for the life of the instance; id 1 is
/// the root. Every method is called concurrently from several FUSE threads. No method has a
/// default: a wrapper (`gate`, `resume`) must pass each one on, and a default would let it drop
/// one silently (a planned stop once skipped its durable commit so).
pub trait VolumeFs: Send + Sync + 'static {
    fn lookup(&self, caller: &Caller, parent: Ino, name: &OsStr) -> FsResult<Entry>;
    fn forget(&self, ino: Ino, nlookup: u64);
    fn getattr(&self, ino: Ino, fh: Option<Fh>) -> FsResult<Attr>;
    fn setattr(&self, caller: &Caller, ino: Ino, change: &SetAttr) -> FsResult<Attr>;
    fn readlink(&self, ino: Ino) -> FsResult<Vec<u8>>;
    /// mknod, mkdir and create take `mode` as the caller asked for it: the core applies the
    /// parent's default ACL, or `caller.umask` where it has none (`acl::inherit`).
    fn mknod(
        &self,
        caller: &Caller,
        parent: Ino,
        name: &OsStr,
        mode: u32,
        rdev: u32,
    ) -> FsResult<Entry>;
    fn mkdir(&self, caller: &Caller, parent: Ino, name: &OsStr, mode: u32) -> FsResult<Entry>;
    fn unlink(&self, caller: &Caller, parent: Ino, name: &OsStr) -> FsResult<()>;
    fn rmdir(&self, caller: &Caller, parent: Ino, name: &OsStr) -> FsResult<()>;
    fn symlink(&self, caller: &Caller, parent: Ino, name: &OsStr, target: &Path)
    -> FsResult<Entry>;
    fn rename(&self, req: &Rename<'_>) -> FsResult<()>;
    fn link(&self, caller: &Caller, ino: Ino, new_parent: Ino, new_name: &OsStr)
    -> FsResult<Entry>;
    fn open(&self, caller: &Caller, ino: Ino, flags: i32) -> FsResult<Opened>;
    fn create(
        &self,
        caller: &Caller,
        parent: Ino,
        name: &OsStr,
        mode: u32,
        flags: i32,
    ) -> FsResult<(Entry, Opened)>;
    fn read(&self, ino: Ino, fh: Fh, offset: u64, size: u32) -> FsResult<Vec<u8>>;
    /// Reads like `read` and hands the bytes to `send`, called exactly once on success. A core
    /// that holds the data in memory lends its own bytes for the call instead of copying them.
    fn read_to(
        &self,
        ino: Ino,
        fh: Fh,
        offset: u64,
        size: u32,
        send: &mut dyn FnMut(&[u8]),
    ) -> FsResult<()> {
        send(&self.read(ino, fh, offset, size)?);
        Ok(())
    }
    /// Writes what fits in the quota: a short count when only part fits, `NoSpace` when
    /// nothing does.
    fn write(
        &self,
        ino: Ino,
        fh: Fh,
        offset: u64,
        data: &[u8],
        kill_suidgid: bool,
    ) -> FsResult<u32>;
    /// The alignment of file offsets and lengths (bytes, a power of two; 1 for none) that
    /// direct I/O (O_DIRECT) through handle `fh` needs, as the volume's host filesystem or
    /// block device would demand it. Asked only for requests made with O_DIRECT.
    fn direct_io_alignment(&self, fh: Fh) -> FsResult<u64>;
    fn release(&self, ino: Ino, fh: Fh) -> FsResult<()>;
    fn fsync(&self, ino: Ino, fh: Fh, datasync: bool) -> FsResult<()>;
    fn opendir(&self, caller: &Caller, ino: Ino) -> FsResult<Fh>;
    /// Calls `add` for entries after `offset` until it returns false (reply buffer full).
    fn readdir(
        &self,
        ino: Ino,
        fh: Fh,
        offset: u64,
        plus: bool,
        add: &mut dyn FnMut(DirEntry) -> bool,
    ) -> FsResult<()>;
    fn releasedir(&self, ino: Ino, fh: Fh) -> FsResult<()>;
    fn fsyncdir(&self, ino: Ino, fh: Fh, datasync: bool) -> FsResult<()>;
    fn statfs(&self) -> FsResult<StatFs>;
    /// `kill_sgid`: the value is an access ACL set by a caller outside the node's group and
    /// without CAP_FSETID, so setgid goes with the mode change (see `acl::set_access`).
    fn setxattr(
        &self,
        ino: Ino,
        name: &OsStr,
        value: &[u8],
        flags: i32,
        kill_sgid: bool,
    ) -> FsResult<()>;
    fn getxattr(&self, ino: Ino, name: &OsStr, size: u32) -> FsResult<XattrReply>;
    fn listxattr(&self, ino: Ino, size: u32) -> FsResult<XattrReply>;
    fn removexattr(&self, ino: Ino, name: &OsStr) -> FsResult<()>;
    fn access(&self, caller: &Caller, ino: Ino, mask: i32) -> FsResult<()>;
    fn fallocate(&self, ino: Ino, fh: Fh, offset: u64, length: u64, mode: i32) -> FsResult<()>;
    fn lseek(&self, ino: Ino, fh: Fh, offset: i64, whence: i32) -> FsResult<i64>;
    fn copy_file_range(&self, req: &CopyRange) -> FsResult<u32>;
    /// Current usage, for inspect and for persisting.
    fn usage(&self) -> UsageSnapshot;
    /// The limits the quota enforces now.
    fn limits(&self) -> quota::Limits;
    /// Online resize: new limits, in force for the next operation (and `statfs`), and for an
    /// image a bigger image. Changes nothing when refused.
    fn resize(&self, to: &quota::Resize) -> Result<(), quota::ResizeError>;
    /// The usage to record when the volume stops: without inodes that have no name left but
    /// are still counted (open, or still known to the kernel), which go with the session.
    fn usage_at_rest(&self) -> UsageSnapshot;
    /// Makes everything written so far durable (volume deactivation, daemon stop), and the
    /// usage exact (see `settle`).
    fn sync_all(&self) -> FsResult<()>;
    /// Brings the usage up to date with allocation the backing store made after the
    /// operation that caused it (local: blocks a delayed-allocation host filesystem allocates
    /// at writeback). The daemon calls it every few seconds, with no lock held.
    fn settle(&self);
    /// What the volume waits for, and whether it was fenced (for `inspect`). Never blocks.
    fn health(&self) -> Health;
    /// Releases of space so far, taken before an operation that may be refused for space.
    fn releases(&self) -> u64;
    /// For an operation refused for space, begun at `releases` `seen`: whether space came back
    /// since, waiting (until `deadline` at most) for space a node without a name is about to
    /// give back, at its RELEASE or FORGET (see `quota::Quota::wait_for_release`).
    fn wait_for_release(&self, seen: u64, deadline: std::time::Instant) -> bool;
    /// Re-creates open handle `fh` of node `ino` (a file opened with `flags`, or with `dir` a
    /// directory), which the kernel still holds after a restart of the handler, under the
    /// same number (see `resume`). Cores whose volumes do not outlive their handler refuse.
    fn restore_handle(&self, fh: Fh, ino: Ino, flags: i32, dir: bool) -> FsResult<()>;
    /// Every handle a predecessor left was restored (`restore_handle`) or found gone.
    fn handles_restored(&self);
    /// The backing host directory was just copied (a snapshot, with reflinks where the host
    /// has them) while changes were held: its blocks may be shared now, so what the core knows
    /// of its files' allocation is stale. Called before the changes go on.
    fn host_copied(&self);
    /// Makes durable what only this process holds, before a successor takes over the volume
    /// (a planned restart; requests are drained by then).
    fn persist_for_successor(&self) -> FsResult<()>;
    /// The tree at this instant, for a snapshot to copy out after the gate opens again
    /// (`tree_copy::Capture`); None when this core cannot capture, and the copy is made
    /// while the gate holds every change. Called with the gate closed.
    fn capture(&self) -> FsResult<Option<Box<dyn tree_copy::Capture>>>;
}
