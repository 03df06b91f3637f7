//! `Handover`: the FUSE adapter behind a gate, so that a planned stop can let go of a
//! connection without a request half done, and with requests the kernel sends again after a
//! restart (bit 63 of `unique`, `FUSE_NOTIFY_RESEND`) marked as such for the cores (see
//! `fs::resume`).
//!
//! `Gate::close` lets the requests being served finish; a request that arrives after it is
//! never answered: its thread keeps the reply and parks until the process exits, and the
//! kernel queues the request again for the next handler. FORGETs have no answer and pass.
//!
//! Every method of fuser's `Filesystem` is forwarded, defaulted ones included, so that any
//! method the adapter implements reaches it; but `batch_forget`, whose argument type fuser
//! does not export: its default calls `forget` for each node, which is forwarded.
use std::ffi::OsStr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use fuser::{
    AccessFlags, BsdFileFlags, CopyFileRangeFlags, FileHandle, Filesystem, INodeNo, IoctlFlags,
    KernelConfig, LockOwner, OpenFlags, PollEvents, PollFlags, PollNotifier, RenameFlags,
    ReplyAttr, ReplyBmap, ReplyCreate, ReplyData, ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty,
    ReplyEntry, ReplyIoctl, ReplyLock, ReplyLseek, ReplyOpen, ReplyPoll, ReplyStatfs, ReplyWrite,
    ReplyXattr, Request, TimeOrNow, WriteFlags,
};
use parking_lot::{Condvar, Mutex};

use crate::fs::resume::with_resent;

/// Set in `unique` on a request the kernel queued again after `FUSE_NOTIFY_RESEND`.
const RESENT: u64 = 1 << 63;
/// In `Gate::state`: closed; below it, the requests being served.
const CLOSED: u64 = 1 << 63;

/// Counts requests being served and stops new ones once closed.
#[derive(Default)]
pub struct Gate {
    state: AtomicU64,
    idle: Mutex<()>,
    drained: Condvar,
}

/// A request being served; leaving it wakes a `close` waiting for the last one.
pub struct Pass<'a>(&'a Gate);

impl Gate {
    /// Lets a request in, unless the gate is closed. One atomic operation each way.
    fn enter(&self) -> Option<Pass<'_>> {
        if self.state.fetch_add(1, Ordering::Acquire) & CLOSED != 0 {
            self.leave();
            return None;
        }
        Some(Pass(self))
    }

    fn leave(&self) {
        let before = self.state.fetch_sub(1, Ordering::Release);
        if before & CLOSED != 0 && before & !CLOSED == 1 {
            let _idle = self.idle.lock();
            self.drained.notify_all();
        }
    }

    /// Closes the gate and waits (at most `timeout`) until no request is being served.
    /// Returns whether none is.
    pub fn close(&self, timeout: Duration) -> bool {
        self.state.fetch_or(CLOSED, Ordering::AcqRel);
        let deadline = Instant::now() + timeout;
        let mut idle = self.idle.lock();
        loop {
            if self.state.load(Ordering::Acquire) & !CLOSED == 0 {
                return true;
            }
            if self.drained.wait_until(&mut idle, deadline).timed_out() {
                return self.state.load(Ordering::Acquire) & !CLOSED == 0;
            }
        }
    }
}

impl Drop for Pass<'_> {
    fn drop(&mut self) {
        self.0.leave();
    }
}

/// A request that came after the gate closed: left unanswered (the reply is kept, since
/// dropping it would answer EIO), for the next handler to get again.
fn park<R>(reply: R) {
    std::mem::forget(reply);
    loop {
        std::thread::park();
    }
}

/// Serves `call` for `req` unless the gate is closed, marking a resent request.
macro_rules! gated {
    ($self:ident, $req:ident, $reply:ident, $call:expr) => {{
        let Some(_pass) = $self.gate.enter() else {
            return park($reply);
        };
        if $req.unique().0 & RESENT != 0 {
            with_resent(|| $call)
        } else {
            $call
        }
    }};
}

pub struct Handover<F> {
    inner: F,
    gate: std::sync::Arc<Gate>,
}

impl<F: Filesystem> Handover<F> {
    pub fn new(inner: F, gate: std::sync::Arc<Gate>) -> Handover<F> {
        Handover { inner, gate }
    }
}

impl<F: Filesystem> Filesystem for Handover<F> {
    fn init(&mut self, req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        self.inner.init(req, config)
    }

    fn destroy(&mut self) {
        self.inner.destroy()
    }

    fn lookup(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        gated!(
            self,
            req,
            reply,
            self.inner.lookup(req, parent, name, reply)
        )
    }

    fn forget(&self, req: &Request, ino: INodeNo, nlookup: u64) {
        self.inner.forget(req, ino, nlookup)
    }

    fn getattr(&self, req: &Request, ino: INodeNo, fh: Option<FileHandle>, reply: ReplyAttr) {
        gated!(self, req, reply, self.inner.getattr(req, ino, fh, reply))
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
        crtime: Option<SystemTime>,
        chgtime: Option<SystemTime>,
        bkuptime: Option<SystemTime>,
        flags: Option<BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        gated!(
            self,
            req,
            reply,
            self.inner.setattr(
                req, ino, mode, uid, gid, size, atime, mtime, ctime, fh, crtime, chgtime, bkuptime,
                flags, reply
            )
        )
    }

    fn readlink(&self, req: &Request, ino: INodeNo, reply: ReplyData) {
        gated!(self, req, reply, self.inner.readlink(req, ino, reply))
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
        gated!(
            self,
            req,
            reply,
            self.inner
                .mknod(req, parent, name, mode, umask, rdev, reply)
        )
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
        gated!(
            self,
            req,
            reply,
            self.inner.mkdir(req, parent, name, mode, umask, reply)
        )
    }

    fn unlink(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        gated!(
            self,
            req,
            reply,
            self.inner.unlink(req, parent, name, reply)
        )
    }

    fn rmdir(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        gated!(self, req, reply, self.inner.rmdir(req, parent, name, reply))
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        gated!(
            self,
            req,
            reply,
            self.inner.symlink(req, parent, link_name, target, reply)
        )
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
        gated!(
            self,
            req,
            reply,
            self.inner
                .rename(req, parent, name, newparent, newname, flags, reply)
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
        gated!(
            self,
            req,
            reply,
            self.inner.link(req, ino, newparent, newname, reply)
        )
    }

    fn open(&self, req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        gated!(self, req, reply, self.inner.open(req, ino, flags, reply))
    }

    fn read(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        flags: OpenFlags,
        lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        gated!(
            self,
            req,
            reply,
            self.inner
                .read(req, ino, fh, offset, size, flags, lock_owner, reply)
        )
    }

    fn write(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        write_flags: WriteFlags,
        flags: OpenFlags,
        lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        gated!(
            self,
            req,
            reply,
            self.inner.write(
                req,
                ino,
                fh,
                offset,
                data,
                write_flags,
                flags,
                lock_owner,
                reply
            )
        )
    }

    fn flush(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        gated!(
            self,
            req,
            reply,
            self.inner.flush(req, ino, fh, lock_owner, reply)
        )
    }

    fn release(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        flags: OpenFlags,
        lock_owner: Option<LockOwner>,
        flush: bool,
        reply: ReplyEmpty,
    ) {
        gated!(
            self,
            req,
            reply,
            self.inner
                .release(req, ino, fh, flags, lock_owner, flush, reply)
        )
    }

    fn fsync(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        datasync: bool,
        reply: ReplyEmpty,
    ) {
        gated!(
            self,
            req,
            reply,
            self.inner.fsync(req, ino, fh, datasync, reply)
        )
    }

    fn opendir(&self, req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        gated!(self, req, reply, self.inner.opendir(req, ino, flags, reply))
    }

    fn readdir(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        reply: ReplyDirectory,
    ) {
        gated!(
            self,
            req,
            reply,
            self.inner.readdir(req, ino, fh, offset, reply)
        )
    }

    fn readdirplus(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        reply: ReplyDirectoryPlus,
    ) {
        gated!(
            self,
            req,
            reply,
            self.inner.readdirplus(req, ino, fh, offset, reply)
        )
    }

    fn releasedir(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        gated!(
            self,
            req,
            reply,
            self.inner.releasedir(req, ino, fh, flags, reply)
        )
    }

    fn fsyncdir(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        datasync: bool,
        reply: ReplyEmpty,
    ) {
        gated!(
            self,
            req,
            reply,
            self.inner.fsyncdir(req, ino, fh, datasync, reply)
        )
    }

    fn statfs(&self, req: &Request, ino: INodeNo, reply: ReplyStatfs) {
        gated!(self, req, reply, self.inner.statfs(req, ino, reply))
    }

    fn setxattr(
        &self,
        req: &Request,
        ino: INodeNo,
        name: &OsStr,
        value: &[u8],
        flags: i32,
        position: u32,
        reply: ReplyEmpty,
    ) {
        gated!(
            self,
            req,
            reply,
            self.inner
                .setxattr(req, ino, name, value, flags, position, reply)
        )
    }

    fn getxattr(&self, req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        gated!(
            self,
            req,
            reply,
            self.inner.getxattr(req, ino, name, size, reply)
        )
    }

    fn listxattr(&self, req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        gated!(
            self,
            req,
            reply,
            self.inner.listxattr(req, ino, size, reply)
        )
    }

    fn removexattr(&self, req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        gated!(
            self,
            req,
            reply,
            self.inner.removexattr(req, ino, name, reply)
        )
    }

    fn access(&self, req: &Request, ino: INodeNo, mask: AccessFlags, reply: ReplyEmpty) {
        gated!(self, req, reply, self.inner.access(req, ino, mask, reply))
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
        gated!(
            self,
            req,
            reply,
            self.inner
                .create(req, parent, name, mode, umask, flags, reply)
        )
    }

    fn getlk(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        lock_owner: LockOwner,
        start: u64,
        end: u64,
        typ: i32,
        pid: u32,
        reply: ReplyLock,
    ) {
        gated!(
            self,
            req,
            reply,
            self.inner
                .getlk(req, ino, fh, lock_owner, start, end, typ, pid, reply)
        )
    }

    fn setlk(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        lock_owner: LockOwner,
        start: u64,
        end: u64,
        typ: i32,
        pid: u32,
        sleep: bool,
        reply: ReplyEmpty,
    ) {
        gated!(
            self,
            req,
            reply,
            self.inner
                .setlk(req, ino, fh, lock_owner, start, end, typ, pid, sleep, reply)
        )
    }

    fn bmap(&self, req: &Request, ino: INodeNo, blocksize: u32, idx: u64, reply: ReplyBmap) {
        gated!(
            self,
            req,
            reply,
            self.inner.bmap(req, ino, blocksize, idx, reply)
        )
    }

    fn ioctl(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        flags: IoctlFlags,
        cmd: u32,
        in_data: &[u8],
        out_size: u32,
        reply: ReplyIoctl,
    ) {
        gated!(
            self,
            req,
            reply,
            self.inner
                .ioctl(req, ino, fh, flags, cmd, in_data, out_size, reply)
        )
    }

    fn poll(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        ph: PollNotifier,
        events: PollEvents,
        flags: PollFlags,
        reply: ReplyPoll,
    ) {
        gated!(
            self,
            req,
            reply,
            self.inner.poll(req, ino, fh, ph, events, flags, reply)
        )
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
        gated!(
            self,
            req,
            reply,
            self.inner
                .fallocate(req, ino, fh, offset, length, mode, reply)
        )
    }

    fn lseek(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: i64,
        whence: i32,
        reply: ReplyLseek,
    ) {
        gated!(
            self,
            req,
            reply,
            self.inner.lseek(req, ino, fh, offset, whence, reply)
        )
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
        gated!(
            self,
            req,
            reply,
            self.inner.copy_file_range(
                req, ino_in, fh_in, offset_in, ino_out, fh_out, offset_out, len, flags, reply
            )
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn close_waits_for_requests_being_served_and_stops_new_ones() {
        let gate = Arc::new(Gate::default());
        let pass = gate.enter().unwrap();
        let closer = {
            let gate = gate.clone();
            std::thread::spawn(move || gate.close(Duration::from_secs(30)))
        };
        while gate.state.load(Ordering::Acquire) & CLOSED == 0 {
            std::thread::yield_now();
        }
        assert!(gate.enter().is_none(), "a closed gate lets nothing in");
        drop(pass);
        assert!(closer.join().unwrap());
        assert!(
            Gate::default().close(Duration::ZERO),
            "an idle gate closes at once"
        );
        let busy = Gate::default();
        let _pass = busy.enter().unwrap();
        assert!(!busy.close(Duration::from_millis(10)));
    }
}
