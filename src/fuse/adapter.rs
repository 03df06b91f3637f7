//! `fuser::Filesystem` for any `VolumeFs`. Each operation converts arguments, calls the core
//! and replies; errors go through `reply!` and `errno_of`. Kernel passthrough backing ids are
//! a FUSE-protocol matter, kept in `fuse::backing`.
use std::ffi::OsStr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use fuser::{
    AccessFlags, BackingId, BsdFileFlags, CopyFileRangeFlags, Errno, FileAttr, FileHandle,
    FileType, Filesystem, FopenFlags, Generation, INodeNo, InitFlags, IoctlFlags, KernelConfig,
    LockOwner, OpenFlags, PollEvents, PollFlags, PollNotifier, RenameFlags, ReplyAttr, ReplyBmap,
    ReplyCreate, ReplyData, ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyIoctl,
    ReplyLock, ReplyLseek, ReplyOpen, ReplyPoll, ReplyStatfs, ReplyWrite, ReplyXattr, Request,
    TimeOrNow, WriteFlags,
};

use super::backing::Backings;
use super::errno_of;
use super::refused::Refusals;
use super::stats::{Op, VolumeStats};
use crate::fs::FsError;
use crate::fs::{
    self, Attr, Caller, CopyRange, FileKind, Ino, Opened, Rename, SetAttr, TimeSet, VolumeFs,
    XattrReply,
};
use crate::sys::caps;

/// Replies with the error of a failed core call, or runs the success arm.
/// The request is counted (operation, latency, errno) before the reply goes out, so whoever
/// sees the answer also sees it in the volume's stats.
macro_rules! reply {
    ($self:ident, $op:expr, $started:expr, $reply:expr, $result:expr, |$ok:pat_param| $on_ok:expr) => {
        match $result {
            Ok($ok) => {
                $self.stats.done($op, $started, 0);
                $on_ok
            }
            Err(e) => {
                let errno = errno_of(e);
                $self.stats.done($op, $started, errno.code());
                $reply.error(errno)
            }
        }
    };
}

/// How long an operation refused for space waits for space the kernel is about to give back
/// by forgetting nodes without a name (see `quota::Quota::wait_for_release`).
const RELEASE_WAIT: Duration = Duration::from_secs(1);

pub struct FuseAdapter {
    fs: Arc<dyn VolumeFs>,
    /// How long the kernel may cache entries and attributes. The handler is the only writer
    /// to the backing store, and the kernel invalidates what its own requests change.
    ttl: Duration,
    passthrough: AtomicBool,
    /// The kernel allows shared mmap of direct-I/O opens (FUSE_DIRECT_IO_ALLOW_MMAP, Linux
    /// 6.6): without it, a direct-I/O open could not be mapped shared, so opens the core
    /// marks for direct I/O go through the page cache instead.
    direct_io: AtomicBool,
    backing: Backings,
    /// Unsupported requests, each kind logged once for this volume.
    refusals: Refusals,
    /// The flags the connection was initialized with, when resuming one (see `resuming`).
    connection_flags: Option<u64>,
    /// What the requests did (see `stats`), shared with whoever reads the volume's metrics.
    stats: Arc<VolumeStats>,
}

impl FuseAdapter {
    /// `passthrough`: ask the kernel for passthrough of the opens the core marks for it.
    /// `volume` names the volume in the log.
    pub fn new(
        fs: Arc<dyn VolumeFs>,
        volume: &str,
        ttl: Duration,
        passthrough: bool,
        stats: Arc<VolumeStats>,
    ) -> Self {
        FuseAdapter {
            fs,
            ttl,
            passthrough: AtomicBool::new(passthrough),
            direct_io: AtomicBool::new(false),
            backing: Backings::new(None, None),
            refusals: Refusals::new(volume),
            connection_flags: None,
            stats,
        }
    }

    /// Registers passthrough backing ids on `backing`'s connection (see `fuse::backing`).
    pub fn with_backings(mut self, backing: Backings) -> Self {
        self.backing = backing;
        self
    }

    /// Serves a connection initialized before with `flags` (the init reply's flags, flags2
    /// << 32), by a predecessor: the kernel knows only those features, whatever this build
    /// would ask for at init.
    pub fn resuming(mut self, flags: u64) -> Self {
        self.connection_flags = Some(flags);
        self
    }

    fn negotiated(&self, flags: u64) {
        let has = |f: InitFlags| flags & f.bits() != 0;
        let passthrough =
            self.passthrough.load(Ordering::Relaxed) && has(InitFlags::FUSE_PASSTHROUGH);
        self.passthrough.store(passthrough, Ordering::Relaxed);
        let direct_io = has(InitFlags::FUSE_DIRECT_IO_ALLOW_MMAP);
        self.direct_io.store(direct_io, Ordering::Relaxed);
    }

    /// Runs an operation that may be refused for space (and then changes nothing) again when
    /// space comes back from a node the kernel forgets meanwhile (right after an `rm`).
    /// The deadline is read only once an operation is refused: the common path costs one
    /// atomic load.
    fn admit<T>(&self, mut op: impl FnMut() -> fs::FsResult<T>) -> fs::FsResult<T> {
        let mut deadline = None;
        loop {
            let seen = self.fs.releases();
            match op() {
                Err(FsError::NoSpace) => {
                    let until =
                        *deadline.get_or_insert_with(|| std::time::Instant::now() + RELEASE_WAIT);
                    if !self.fs.wait_for_release(seen, until) {
                        return Err(FsError::NoSpace);
                    }
                }
                other => return other,
            }
        }
    }

    fn attr(&self, a: &Attr) -> FileAttr {
        FileAttr {
            ino: INodeNo(a.ino),
            size: a.size,
            blocks: a.blocks,
            atime: a.atime,
            mtime: a.mtime,
            ctime: a.ctime,
            crtime: SystemTime::UNIX_EPOCH,
            kind: file_type(a.kind),
            perm: a.perm,
            nlink: a.nlink,
            uid: a.uid,
            gid: a.gid,
            rdev: a.rdev,
            blksize: a.blksize,
            flags: 0,
        }
    }

    fn entry(&self, reply: ReplyEntry, e: &fs::Entry) {
        reply.entry(&self.ttl, &self.attr(&e.attr), Generation(e.generation));
    }

    fn open_flags(&self, o: &Opened) -> FopenFlags {
        let mut flags = FopenFlags::empty();
        flags.set(FopenFlags::FOPEN_KEEP_CACHE, o.keep_cache);
        let direct_io = o.direct_io && self.direct_io.load(Ordering::Relaxed);
        flags.set(FopenFlags::FOPEN_DIRECT_IO, direct_io);
        flags
    }

    /// Replies to an open, with a passthrough backing id when the core offers the host file.
    /// The kernel fails (EIO) any open that mixes passthrough and other handles on one inode,
    /// so a core offers passthrough for all opens of a volume or for none. One backing id per
    /// inode is shared by its handles until the last one is released.
    fn reply_open<R>(
        &self,
        ino: Ino,
        opened: &Opened,
        reply: R,
        adopt: impl FnOnce(&R, u32) -> BackingId,
        respond: impl FnOnce(R, FopenFlags, Option<&BackingId>),
    ) {
        let flags = self.open_flags(opened);
        let file = opened.passthrough.as_ref();
        let Some(file) = file.filter(|_| self.passthrough.load(Ordering::Relaxed)) else {
            return respond(reply, flags, None);
        };
        // Registered without CAP_FSETID, so the host clears setuid and setgid on every
        // passthrough write, which the handler never sees (see sys::caps).
        match caps::without_fsetid(|| self.backing.acquire(ino, opened.fh, file)).and_then(|r| r) {
            Ok(id) => {
                let backing = adopt(&reply, id);
                respond(reply, flags, Some(&backing));
                // `backing` closes the id only at the inode's last release.
                let _ = backing.into_raw();
            }
            Err(e) => {
                let errno = e.raw_os_error().unwrap_or(0) as u64;
                self.refusals.note("passthrough", errno, || {
                    format!(
                        "kernel passthrough for inode {ino} ({e}); served by the handler instead"
                    )
                });
                respond(reply, flags, None)
            }
        }
    }

    /// Clears setuid, and setgid with group-exec, before a change of data the kernel leaves to
    /// the handler without a kill flag (fallocate, copy_file_range), unless the caller is root
    /// with CAP_FSETID, as the kernel does for local filesystems.
    fn drop_privileges_for(&self, req: &Request, ino: Ino) -> Result<(), FsError> {
        if caps::caller_has(req.uid(), req.pid(), caps::CAP_FSETID) {
            return Ok(());
        }
        let perm = self.fs.getattr(ino, None)?.perm;
        let wanted = fs::mode_without_privileges(u32::from(perm));
        if wanted == u32::from(perm) {
            return Ok(());
        }
        let change = SetAttr {
            mode: Some(wanted),
            ..SetAttr::default()
        };
        let handler = Caller {
            uid: 0,
            gid: 0,
            pid: 0,
            umask: 0,
        };
        self.fs.setattr(&handler, ino, &change).map(|_| ())
    }

    /// Whether setting xattr `name` is an access ACL change that clears setgid: the caller is
    /// not in the node's group and lacks CAP_FSETID (`posix_acl_update_mode`). The kernel
    /// would say so with FUSE_SETXATTR_ACL_KILL_SGID, but only in the extended setxattr
    /// request (FUSE_SETXATTR_EXT), which fuser does not parse.
    fn acl_kills_sgid(&self, req: &Request, ino: Ino, name: &OsStr) -> Result<bool, FsError> {
        if fs::acl::kind_of(name) != Some(fs::acl::Kind::Access) {
            return Ok(false);
        }
        let gid = self.fs.getattr(ino, None)?.gid;
        Ok(!caps::caller_in_group(req.gid(), req.pid(), gid)
            && !caps::caller_has(req.uid(), req.pid(), caps::CAP_FSETID))
    }

    /// Whether a request the caller made with O_DIRECT (the flag as the file has it now, also
    /// when set later with fcntl) meets the alignment the volume demands. The kernel checks
    /// none for FUSE, so a misaligned request would otherwise succeed where the host's
    /// filesystem or block device refuses it with EINVAL.
    fn direct_io_fits(&self, fh: u64, offset: u64, len: u64) -> Result<bool, FsError> {
        let align = self.fs.direct_io_alignment(fh)?;
        Ok(fs::rules::direct_io_fits(offset, len, align))
    }

    /// Counts a request refused as unsupported.
    fn unsupported(&self, errno: Errno) {
        self.stats
            .done(Op::Unsupported, self.stats.start(), errno.code());
    }

    fn release_backing(&self, fh: u64) {
        self.backing.release(fh);
    }
}

fn file_type(kind: FileKind) -> FileType {
    match kind {
        FileKind::File => FileType::RegularFile,
        FileKind::Dir => FileType::Directory,
        FileKind::Symlink => FileType::Symlink,
        FileKind::Fifo => FileType::NamedPipe,
        FileKind::Socket => FileType::Socket,
        FileKind::CharDevice => FileType::CharDevice,
        FileKind::BlockDevice => FileType::BlockDevice,
    }
}

fn caller(req: &Request) -> Caller {
    Caller {
        uid: req.uid(),
        gid: req.gid(),
        pid: req.pid(),
        umask: 0,
    }
}

/// The caller of a request that creates a node, with the umask it carries (FUSE_DONT_MASK:
/// the core applies it unless the parent has a default ACL).
fn creator(req: &Request, umask: u32) -> Caller {
    Caller {
        umask,
        ..caller(req)
    }
}

fn time_set(t: Option<TimeOrNow>) -> Option<TimeSet> {
    t.map(|t| match t {
        TimeOrNow::Now => TimeSet::Now,
        TimeOrNow::SpecificTime(t) => TimeSet::At(t),
    })
}

impl Filesystem for FuseAdapter {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        let _ = config.set_max_write(1 << 20);
        let _ = config.set_max_background(64);
        let _ = config.set_max_readahead(1 << 20);
        for cap in [
            InitFlags::FUSE_DO_READDIRPLUS | InitFlags::FUSE_READDIRPLUS_AUTO,
            InitFlags::FUSE_PARALLEL_DIROPS,
            InitFlags::FUSE_CACHE_SYMLINKS,
            // The handler clears setuid, setgid and capabilities on writes the kernel flags,
            // so the kernel does not ask for security.capability before every write.
            InitFlags::FUSE_HANDLE_KILLPRIV_V2,
            // ACLs as on ext4: the kernel checks permissions against them (it reads them with
            // getxattr and caches them) and drops its cached attributes and ACLs after it sets
            // one; the cores do what ext4 does on its side (see fs::acl). DONT_MASK hands the
            // umask to the handler, which ignores it under a default ACL.
            InitFlags::FUSE_POSIX_ACL,
            InitFlags::FUSE_DONT_MASK,
        ] {
            let _ = config.add_capabilities(cap);
        }
        // Shared mmap of direct-I/O opens: the kernel keeps a mapping's pages coherent with
        // direct reads and writes.
        let direct_io = config
            .add_capabilities(InitFlags::FUSE_DIRECT_IO_ALLOW_MMAP)
            .is_ok();
        self.direct_io.store(direct_io, Ordering::Relaxed);
        let wants_passthrough = self.passthrough.load(Ordering::Relaxed);
        let passthrough = wants_passthrough
            && config.add_capabilities(InitFlags::FUSE_PASSTHROUGH).is_ok()
            && config.set_max_stack_depth(1).is_ok();
        self.passthrough.store(passthrough, Ordering::Relaxed);
        if let Some(flags) = self.connection_flags {
            self.negotiated(flags);
        }
        Ok(())
    }

    fn lookup(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let started = self.stats.start();
        match self.fs.lookup(&caller(req), parent.0, name) {
            Ok(e) => {
                self.stats.done(Op::Lookup, started, 0);
                self.entry(reply, &e)
            }
            // Node id 0 is a negative entry the kernel may cache for the TTL; it drops it
            // itself when it creates the name. Counted as the ENOENT it stands for.
            Err(FsError::NotFound) | Err(FsError::Os(nix::errno::Errno::ENOENT)) => {
                self.stats.done(Op::Lookup, started, libc::ENOENT);
                reply.entry(&self.ttl, &dot_attr(0, FileKind::File), Generation(0))
            }
            Err(e) => {
                let errno = errno_of(e);
                self.stats.done(Op::Lookup, started, errno.code());
                reply.error(errno)
            }
        }
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        self.fs.forget(ino.0, nlookup);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, fh: Option<FileHandle>, reply: ReplyAttr) {
        let started = self.stats.start();
        let result = self.fs.getattr(ino.0, fh.map(|f| f.0));
        reply!(self, Op::Getattr, started, reply, result, |a| reply
            .attr(&self.ttl, &self.attr(&a)))
    }

    fn setattr(
        &self,
        req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        ctime: Option<SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let started = self.stats.start();
        let change = SetAttr {
            mode,
            uid,
            gid,
            size,
            atime: time_set(atime),
            mtime: time_set(mtime),
            ctime,
            fh: fh.map(|f| f.0),
        };
        let result = self.fs.setattr(&caller(req), ino.0, &change);
        reply!(self, Op::Setattr, started, reply, result, |a| reply
            .attr(&self.ttl, &self.attr(&a)))
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        let started = self.stats.start();
        reply!(
            self,
            Op::Readlink,
            started,
            reply,
            self.fs.readlink(ino.0),
            |t| reply.data(&t)
        )
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        rdev: u32,
        reply: ReplyEntry,
    ) {
        let started = self.stats.start();
        let caller = creator(req, umask);
        let result = self.admit(|| self.fs.mknod(&caller, parent.0, name, mode, rdev));
        reply!(self, Op::Mknod, started, reply, result, |e| self
            .entry(reply, &e))
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        let started = self.stats.start();
        let caller = creator(req, umask);
        let result = self.admit(|| self.fs.mkdir(&caller, parent.0, name, mode));
        reply!(self, Op::Mkdir, started, reply, result, |e| self
            .entry(reply, &e))
    }

    fn unlink(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let started = self.stats.start();
        reply!(
            self,
            Op::Unlink,
            started,
            reply,
            self.fs.unlink(&caller(req), parent.0, name),
            |()| reply.ok()
        )
    }

    fn rmdir(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let started = self.stats.start();
        reply!(
            self,
            Op::Rmdir,
            started,
            reply,
            self.fs.rmdir(&caller(req), parent.0, name),
            |()| reply.ok()
        )
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        let started = self.stats.start();
        let result = self.admit(|| self.fs.symlink(&caller(req), parent.0, link_name, target));
        reply!(self, Op::Symlink, started, reply, result, |e| self
            .entry(reply, &e))
    }

    fn rename(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let started = self.stats.start();
        let rename = Rename {
            caller: caller(req),
            parent: parent.0,
            name,
            new_parent: newparent.0,
            new_name: newname,
            flags: flags.bits(),
        };
        reply!(
            self,
            Op::Rename,
            started,
            reply,
            self.admit(|| self.fs.rename(&rename)),
            |()| reply.ok()
        )
    }

    fn link(
        &self,
        req: &Request,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        let started = self.stats.start();
        let result = self.admit(|| self.fs.link(&caller(req), ino.0, newparent.0, newname));
        reply!(self, Op::Link, started, reply, result, |e| self
            .entry(reply, &e))
    }

    fn open(&self, req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let started = self.stats.start();
        reply!(
            self,
            Op::Open,
            started,
            reply,
            self.fs.open(&caller(req), ino.0, flags.0),
            |o| {
                self.reply_open(
                    ino.0,
                    &o,
                    reply,
                    crate::sys::fusedev::adopt_backing_for_open,
                    |reply, flags, id| match id {
                        Some(id) => reply.opened_passthrough(FileHandle(o.fh), flags, id),
                        None => reply.opened(FileHandle(o.fh), flags),
                    },
                )
            }
        )
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let started = self.stats.start();
        if flags.0 & libc::O_DIRECT != 0 {
            let refused = match self.direct_io_fits(fh.0, offset, size.into()) {
                Ok(true) => None,
                // As on a disk filesystem, a read from the end of the file on reads nothing,
                // aligned or not.
                Ok(false) => match self.fs.getattr(ino.0, Some(fh.0)) {
                    Ok(a) if offset >= a.size => Some(Ok(())),
                    Ok(_) => Some(Err(FsError::Invalid)),
                    Err(e) => Some(Err(e)),
                },
                Err(e) => Some(Err(e)),
            };
            if let Some(answer) = refused {
                return reply!(self, Op::Read, started, reply, answer, |()| reply.data(&[]));
            }
        }
        // The core lends its bytes for the reply (sent with writev straight from them).
        let mut pending = Some((reply, started));
        let result = self.fs.read_to(ino.0, fh.0, offset, size, &mut |data| {
            if let Some((reply, started)) = pending.take() {
                self.stats.read(data.len());
                self.stats.done(Op::Read, started, 0);
                reply.data(data);
            }
        });
        match (result, pending.take()) {
            (Err(e), Some((reply, started))) => {
                let errno = errno_of(e);
                self.stats.done(Op::Read, started, errno.code());
                reply.error(errno);
            }
            (Ok(()), Some((_, started))) => self.stats.done(Op::Read, started, 0),
            (_, None) => {}
        }
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        write_flags: WriteFlags,
        flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let started = self.stats.start();
        // Writeback of mapped pages (FUSE_WRITE_CACHE) is not the caller's direct I/O.
        let direct =
            flags.0 & libc::O_DIRECT != 0 && !write_flags.contains(WriteFlags::FUSE_WRITE_CACHE);
        let kill = write_flags.contains(WriteFlags::FUSE_WRITE_KILL_SUIDGID);
        let result = match direct {
            true => self.direct_io_fits(fh.0, offset, data.len() as u64),
            false => Ok(true),
        }
        .and_then(|fits| match fits {
            true => self.admit(|| self.fs.write(ino.0, fh.0, offset, data, kill)),
            false => Err(FsError::Invalid),
        });
        reply!(self, Op::Write, started, reply, result, |n| {
            self.stats.written(n.into());
            reply.written(n)
        })
    }

    /// The cores keep no per-handle buffers, so there is nothing to flush: ENOSYS tells the
    /// kernel never to send FLUSH again, saving a round trip on every close.
    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lo: LockOwner,
        reply: ReplyEmpty,
    ) {
        self.unsupported(fuser::Errno::ENOSYS);
        reply.error(fuser::Errno::ENOSYS);
    }

    fn release(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        let started = self.stats.start();
        self.release_backing(fh.0);
        reply!(
            self,
            Op::Release,
            started,
            reply,
            self.fs.release(ino.0, fh.0),
            |()| reply.ok()
        )
    }

    fn fsync(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        datasync: bool,
        reply: ReplyEmpty,
    ) {
        let started = self.stats.start();
        reply!(
            self,
            Op::Fsync,
            started,
            reply,
            self.fs.fsync(ino.0, fh.0, datasync),
            |()| reply.ok()
        )
    }

    fn opendir(&self, req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let started = self.stats.start();
        let result = self.fs.opendir(&caller(req), ino.0);
        reply!(self, Op::Opendir, started, reply, result, |fh| reply
            .opened(FileHandle(fh), FopenFlags::empty()))
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let started = self.stats.start();
        let result = self.fs.readdir(ino.0, fh.0, offset, false, &mut |e| {
            !reply.add(INodeNo(e.ino), e.next_offset, file_type(e.kind), &e.name)
        });
        reply!(self, Op::Readdir, started, reply, result, |()| reply.ok())
    }

    fn readdirplus(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        let started = self.stats.start();
        let result = self.fs.readdir(ino.0, fh.0, offset, true, &mut |e| {
            // "." and ".." carry no entry: the kernel takes no reference for them.
            let (attr, generation) = match &e.entry {
                Some(entry) => (self.attr(&entry.attr), entry.generation),
                None => (dot_attr(e.ino, e.kind), 0),
            };
            !reply.add(
                INodeNo(e.ino),
                e.next_offset,
                &e.name,
                &self.ttl,
                &attr,
                Generation(generation),
            )
        });
        reply!(self, Op::Readdir, started, reply, result, |()| reply.ok())
    }

    fn releasedir(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _f: OpenFlags,
        reply: ReplyEmpty,
    ) {
        let started = self.stats.start();
        reply!(
            self,
            Op::Releasedir,
            started,
            reply,
            self.fs.releasedir(ino.0, fh.0),
            |()| reply.ok()
        )
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        datasync: bool,
        reply: ReplyEmpty,
    ) {
        let started = self.stats.start();
        reply!(
            self,
            Op::Fsyncdir,
            started,
            reply,
            self.fs.fsyncdir(ino.0, fh.0, datasync),
            |()| reply.ok()
        )
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let started = self.stats.start();
        reply!(self, Op::Statfs, started, reply, self.fs.statfs(), |s| {
            reply.statfs(
                s.blocks, s.bfree, s.bavail, s.files, s.ffree, s.bsize, s.namelen, s.frsize,
            )
        })
    }

    fn setxattr(
        &self,
        req: &Request,
        ino: INodeNo,
        name: &OsStr,
        value: &[u8],
        flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        let started = self.stats.start();
        let result = self.acl_kills_sgid(req, ino.0, name).and_then(|kill_sgid| {
            self.admit(|| self.fs.setxattr(ino.0, name, value, flags, kill_sgid))
        });
        reply!(self, Op::Setxattr, started, reply, result, |()| reply.ok())
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        let started = self.stats.start();
        reply!(
            self,
            Op::Getxattr,
            started,
            reply,
            self.fs.getxattr(ino.0, name, size),
            |x| xattr_reply(reply, x)
        )
    }

    /// The handler lists as root; `trusted.*` names are hidden from callers without
    /// CAP_SYS_ADMIN, as ext4 does (the kernel already refuses them their values).
    fn listxattr(&self, req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        let started = self.stats.start();
        let result = if caps::caller_has(req.uid(), req.pid(), caps::CAP_SYS_ADMIN) {
            self.fs.listxattr(ino.0, size)
        } else {
            self.fs
                .listxattr(ino.0, u32::MAX)
                .and_then(|names| match names {
                    XattrReply::Data(list) => fit_xattr_list(without_trusted(&list), size),
                    size_only => Ok(size_only),
                })
        };
        reply!(
            self,
            Op::Listxattr,
            started,
            reply,
            result,
            |x| xattr_reply(reply, x)
        )
    }

    fn removexattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let started = self.stats.start();
        reply!(
            self,
            Op::Removexattr,
            started,
            reply,
            self.fs.removexattr(ino.0, name),
            |()| reply.ok()
        )
    }

    fn access(&self, req: &Request, ino: INodeNo, mask: AccessFlags, reply: ReplyEmpty) {
        let started = self.stats.start();
        reply!(
            self,
            Op::Access,
            started,
            reply,
            self.fs.access(&caller(req), ino.0, mask.bits()),
            |()| reply.ok()
        )
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let started = self.stats.start();
        let caller = creator(req, umask);
        let result = self.admit(|| self.fs.create(&caller, parent.0, name, mode, flags));
        reply!(self, Op::Create, started, reply, result, |(e, o)| {
            let (attr, generation, fh) = (
                self.attr(&e.attr),
                Generation(e.generation),
                FileHandle(o.fh),
            );
            self.reply_open(
                e.attr.ino,
                &o,
                reply,
                crate::sys::fusedev::adopt_backing_for_create,
                |reply, flags, id| match id {
                    Some(id) => {
                        reply.created_passthrough(&self.ttl, &attr, generation, fh, flags, id)
                    }
                    None => reply.created(&self.ttl, &attr, generation, fh, flags),
                },
            )
        })
    }

    fn fallocate(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        let started = self.stats.start();
        let result = self
            .drop_privileges_for(req, ino.0)
            .and_then(|()| self.admit(|| self.fs.fallocate(ino.0, fh.0, offset, length, mode)));
        reply!(self, Op::Fallocate, started, reply, result, |()| reply.ok())
    }

    fn lseek(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: i64,
        whence: i32,
        reply: ReplyLseek,
    ) {
        let started = self.stats.start();
        reply!(
            self,
            Op::Lseek,
            started,
            reply,
            self.fs.lseek(ino.0, fh.0, offset, whence),
            |o| reply.offset(o)
        )
    }

    /// No ioctl is supported: answered as the host answers an ioctl a file does not know.
    fn ioctl(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _flags: IoctlFlags,
        cmd: u32,
        _in_data: &[u8],
        _out_size: u32,
        reply: ReplyIoctl,
    ) {
        self.refusals.note("ioctl", u64::from(cmd), || {
            format!("ioctl command {cmd:#x} (on inode {}) with ENOTTY", ino.0)
        });
        self.unsupported(Errno::ENOTTY);
        reply.error(Errno::ENOTTY);
    }

    /// ENOSYS tells the kernel to stop asking: files are then always ready.
    fn poll(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _ph: PollNotifier,
        _events: PollEvents,
        _flags: PollFlags,
        reply: ReplyPoll,
    ) {
        self.refusals
            .note("poll", 0, || "poll with ENOSYS".to_string());
        self.unsupported(Errno::ENOSYS);
        reply.error(Errno::ENOSYS);
    }

    /// Locks stay local to the kernel (no lock capability is negotiated at init).
    fn getlk(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        _start: u64,
        _end: u64,
        _typ: i32,
        _pid: u32,
        reply: ReplyLock,
    ) {
        self.refusals
            .note("getlk", 0, || "getlk with ENOSYS".to_string());
        self.unsupported(Errno::ENOSYS);
        reply.error(Errno::ENOSYS);
    }

    fn setlk(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        _start: u64,
        _end: u64,
        _typ: i32,
        _pid: u32,
        _sleep: bool,
        reply: ReplyEmpty,
    ) {
        self.refusals
            .note("setlk", 0, || "setlk with ENOSYS".to_string());
        self.unsupported(Errno::ENOSYS);
        reply.error(Errno::ENOSYS);
    }

    fn bmap(&self, _req: &Request, _ino: INodeNo, _blocksize: u32, _idx: u64, reply: ReplyBmap) {
        self.refusals
            .note("bmap", 0, || "bmap with ENOSYS".to_string());
        self.unsupported(Errno::ENOSYS);
        reply.error(Errno::ENOSYS);
    }

    fn copy_file_range(
        &self,
        req: &Request,
        ino_in: INodeNo,
        fh_in: FileHandle,
        offset_in: u64,
        ino_out: INodeNo,
        fh_out: FileHandle,
        offset_out: u64,
        len: u64,
        flags: CopyFileRangeFlags,
        reply: ReplyWrite,
    ) {
        let started = self.stats.start();
        let range = CopyRange {
            ino_in: ino_in.0,
            fh_in: fh_in.0,
            offset_in,
            ino_out: ino_out.0,
            fh_out: fh_out.0,
            offset_out,
            len,
            flags: flags.bits(),
        };
        let result = self
            .drop_privileges_for(req, ino_out.0)
            .and_then(|()| self.admit(|| self.fs.copy_file_range(&range)));
        reply!(self, Op::CopyFileRange, started, reply, result, |n| {
            self.stats.written(n.into());
            reply.written(n)
        })
    }
}

/// A NUL-separated list of xattr names without the `trusted.` ones.
fn without_trusted(list: &[u8]) -> Vec<u8> {
    let mut kept = Vec::with_capacity(list.len());
    for name in list.split_inclusive(|&b| b == 0) {
        if !name.starts_with(b"trusted.") {
            kept.extend_from_slice(name);
        }
    }
    kept
}

/// The answer to a listxattr of `size` bytes: the size needed when asked with 0, `ERANGE`
/// when the list does not fit.
fn fit_xattr_list(list: Vec<u8>, size: u32) -> Result<XattrReply, FsError> {
    let len = u32::try_from(list.len()).map_err(|_| FsError::Os(nix::errno::Errno::E2BIG))?;
    match size {
        0 => Ok(XattrReply::Size(len)),
        s if len > s => Err(FsError::Os(nix::errno::Errno::ERANGE)),
        _ => Ok(XattrReply::Data(list)),
    }
}

fn xattr_reply(reply: ReplyXattr, x: XattrReply) {
    match x {
        XattrReply::Size(n) => reply.size(n),
        XattrReply::Data(d) => reply.data(&d),
    }
}

fn dot_attr(ino: Ino, kind: FileKind) -> FileAttr {
    FileAttr {
        ino: INodeNo(ino),
        size: 0,
        blocks: 0,
        atime: SystemTime::UNIX_EPOCH,
        mtime: SystemTime::UNIX_EPOCH,
        ctime: SystemTime::UNIX_EPOCH,
        crtime: SystemTime::UNIX_EPOCH,
        kind: file_type(kind),
        perm: 0,
        nlink: 0,
        uid: 0,
        gid: 0,
        rdev: 0,
        blksize: 0,
        flags: 0,
    }
}
