//! File data: open, read, write, allocation, seeking and copying, all within the quota.
use std::fs::File;
use std::os::fd::AsFd;
use std::os::unix::fs::FileExt;
use std::sync::{Arc, OnceLock};

use nix::errno::Errno;
use nix::fcntl::{FallocateFlags, OFlag, fallocate};
use nix::unistd::{Whence, lseek};
use parking_lot::Mutex;

use super::PassthroughFs;
use super::allocated::Seen;
use super::handles::FileHandle;
use super::inodes::Inode;
use crate::fs::quota::{WritePlan, plan_write, round_down};
use crate::fs::{CopyRange, Fh, FsError, FsResult, Opened};
use crate::sys::writeback;

/// Open flags the handler must not pass to the host: creation is done separately, the
/// kernel resolves O_NOFOLLOW, and writes carry their own offsets (so no O_APPEND).
const STRIPPED: OFlag = OFlag::O_CREAT
    .union(OFlag::O_EXCL)
    .union(OFlag::O_NOCTTY)
    .union(OFlag::O_NOFOLLOW)
    .union(OFlag::O_APPEND);

impl PassthroughFs {
    /// Opens a node's host inode for I/O.
    pub(super) fn reopen(&self, inode: &Inode, flags: OFlag) -> FsResult<File> {
        Ok(File::from(self.inodes.open(inode, flags - STRIPPED)?))
    }

    pub(super) fn open_handle(&self, inode: Arc<Inode>, flags: i32) -> FsResult<Opened> {
        let file = self.reopen(&inode, self.host_flags(flags));
        if flags & libc::O_TRUNC != 0 {
            self.allocation_taken(&inode);
        }
        let file = file?;
        self.count_open(&inode)?;
        if flags & libc::O_TRUNC != 0
            && let Err(e) = self.reaccount_from(&inode, file.as_fd())
        {
            let freed = self.count_close(&inode, file.as_fd());
            drop(file);
            if let Some(freed) = freed {
                self.give_back(freed);
            }
            return Err(e);
        }
        Ok(self.handle_for(inode, file, flags))
    }

    /// The flags the host file is opened with: never O_DIRECT. Writes the handler serves
    /// arrive in FUSE's own buffers, which O_DIRECT's alignment rules would refuse (EINVAL),
    /// so the handler checks the caller's alignment itself (`direct_io_align`). A passthrough
    /// open needs no O_DIRECT here either: the kernel opens its own backing file with the
    /// caller's flags, O_DIRECT included, on this one's inode.
    pub(super) fn host_flags(&self, flags: i32) -> OFlag {
        OFlag::from_bits_truncate(flags) - OFlag::O_DIRECT
    }

    /// The alignment O_DIRECT I/O through handle `fh` needs on the host: what `statx` reports
    /// for its file, asked once per handle.
    pub(super) fn direct_io_align(&self, fh: Fh) -> FsResult<u64> {
        let handle = self.files.get(fh)?;
        Ok(*handle
            .direct_io_align
            .get_or_init(|| host_direct_io_align(&handle.file)))
    }

    /// Registers an open host file as a handle (`count_open` counted it already).
    pub(super) fn handle_for(&self, inode: Arc<Inode>, file: File, flags: i32) -> Opened {
        let file = Arc::new(file);
        let passthrough = self.passthrough_io.then(|| file.clone());
        let fh = self.files.insert(file_handle(inode, file, flags));
        Opened {
            fh,
            passthrough,
            // The kernel refuses a kept cache on passthrough opens.
            keep_cache: self.exclusive && !self.passthrough_io,
            direct_io: false,
        }
    }

    /// Opens file handle `fh` of node `ino` again, as a predecessor opened it with `flags`.
    pub(super) fn restore_file(&self, fh: Fh, ino: crate::fs::Ino, flags: i32) -> FsResult<()> {
        let inode = self.inodes.get(ino)?;
        // Created and truncated at the first open already.
        let flags = flags & !(libc::O_CREAT | libc::O_EXCL | libc::O_TRUNC);
        let file = self.reopen(&inode, self.host_flags(flags))?;
        self.count_open(&inode)?;
        self.files
            .insert_at(fh, file_handle(inode, Arc::new(file), flags));
        Ok(())
    }

    pub(super) fn close_handle(&self, fh: Fh) -> FsResult<()> {
        let handle = self.files.remove(fh)?;
        if handle.writable && self.passthrough_io {
            // The kernel wrote through this handle without asking: count what it allocated,
            // and what its writeback will.
            self.reaccount_from(&handle.inode, handle.file.as_fd())?;
            self.unsettled.written(&handle.inode);
        }
        let freed = self.count_close(&handle.inode, handle.file.as_fd());
        // The host file first: it may be the inode's last descriptor (see `give_back`).
        drop(handle);
        if let Some(freed) = freed {
            self.give_back(freed);
        }
        Ok(())
    }

    pub(super) fn read_at(&self, fh: Fh, offset: u64, size: u32) -> FsResult<Vec<u8>> {
        let handle = self.files.get(fh)?;
        let mut buf = vec![0u8; size as usize];
        let mut done = 0;
        while done < buf.len() {
            match handle.file.read_at(&mut buf[done..], offset + done as u64) {
                Ok(0) => break,
                Ok(n) => done += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e.into()),
            }
        }
        buf.truncate(done);
        Ok(buf)
    }

    /// Writes what the quota allows: all of `data`, a block-aligned prefix, or nothing
    /// (`NoSpace`).
    pub(super) fn write_at(&self, fh: Fh, offset: u64, data: &[u8]) -> FsResult<u32> {
        let handle = self.files.get(fh)?;
        let inode = &handle.inode;
        let len = data.len() as u64;
        // An overwrite of known-allocated blocks allocates nothing: no look at the host's
        // allocation before it, and no re-read after it.
        let known = self.known_allocated(inode, offset, len);
        let seen = self.allocation_look(inode);
        let allocated = match known {
            Some(end) => end,
            None => self.allocated_end(inode, seen, &handle.file, offset)?,
        };
        let (plan, _reservation) = self
            .quota
            .reserve_write(|available| plan_write(offset, len, allocated, self.block, available))?;
        let result = handle.file.write_all_at(&data[..plan.len as usize], offset);
        if known.is_none() {
            self.reaccount_from(inode, handle.file.as_fd())?;
            if result.is_ok() {
                self.allocation_seen(inode, seen, offset, plan.len);
            }
        }
        self.unsettled.written(inode);
        result?;
        if let Some((from, len)) = handle.write_behind.lock().record(offset, plan.len)
            && let Err(e) = writeback::start_writeback(handle.file.as_fd(), from, len)
        {
            log::debug!("starting writeback of {len} bytes at {from}: {e}");
        }
        Ok(plan.len as u32)
    }

    /// Where the allocated run covering the block of `offset` ends (0 if that block is a
    /// hole; end of file if the run reaches it), for `plan_write`; remembered for `inode`
    /// (see `allocated`) as `seen`.
    fn allocated_end(&self, inode: &Inode, seen: Seen, file: &File, offset: u64) -> FsResult<u64> {
        if self.quota.limits().bytes.is_none() {
            return Ok(0);
        }
        let start = round_down(offset, self.block) as i64;
        match lseek(file.as_fd(), start, Whence::SeekData) {
            Ok(data) if data == start => {
                let end = lseek(file.as_fd(), start, Whence::SeekHole)? as u64;
                self.allocation_seen(inode, seen, start as u64, end - start as u64);
                Ok(end)
            }
            Ok(_) | Err(Errno::ENXIO) => Ok(0),
            Err(e) => Err(e.into()),
        }
    }

    pub(super) fn do_fallocate(&self, fh: Fh, offset: u64, length: u64, mode: i32) -> FsResult<()> {
        let handle = self.files.get(fh)?;
        let inode = &handle.inode;
        let flags = FallocateFlags::from_bits(mode).ok_or(FsError::Invalid)?;
        let frees = flags.contains(FallocateFlags::FALLOC_FL_PUNCH_HOLE)
            || flags.contains(FallocateFlags::FALLOC_FL_COLLAPSE_RANGE);
        // Anything but a plain allocation may leave holes (punch, collapse, insert, zero
        // range: ext4 makes unwritten extents, which SEEK_DATA calls holes).
        let plain = (flags - FallocateFlags::FALLOC_FL_KEEP_SIZE).is_empty();
        let seen = self.allocation_look(inode);
        let need = if frees {
            0
        } else {
            let allocated = self.allocated_end(inode, seen, &handle.file, offset)?;
            plan_write(offset, length, allocated, self.block, u64::MAX).reserve
        };
        let _reservation = self.quota.reserve(need, 0)?;
        let result = fallocate(handle.file.as_fd(), flags, offset as i64, length as i64);
        if !plain {
            self.allocation_taken(inode);
        } else if result.is_ok() {
            self.allocation_seen(inode, seen, offset, length);
        }
        self.reaccount_from(inode, handle.file.as_fd())?;
        self.unsettled.written(inode);
        Ok(result?)
    }

    pub(super) fn do_lseek(&self, fh: Fh, offset: i64, whence: i32) -> FsResult<i64> {
        let handle = self.files.get(fh)?;
        let whence = match whence {
            libc::SEEK_SET => Whence::SeekSet,
            libc::SEEK_CUR => Whence::SeekCur,
            libc::SEEK_END => Whence::SeekEnd,
            libc::SEEK_DATA => Whence::SeekData,
            libc::SEEK_HOLE => Whence::SeekHole,
            _ => return Err(FsError::Invalid),
        };
        Ok(lseek(handle.file.as_fd(), offset, whence)?)
    }

    /// Copies what the quota allows, like a write.
    pub(super) fn do_copy_file_range(&self, req: &CopyRange) -> FsResult<u32> {
        let from = self.files.get(req.fh_in)?;
        let to = self.files.get(req.fh_out)?;
        let seen = self.allocation_look(&to.inode);
        let allocated = self.allocated_end(&to.inode, seen, &to.file, req.offset_out)?;
        let len = req.len.min(u32::MAX as u64 & !(self.block - 1));
        let (plan, _reservation): (WritePlan, _) = self.quota.reserve_write(|available| {
            plan_write(req.offset_out, len, allocated, self.block, available)
        })?;
        let (mut off_in, mut off_out) = (req.offset_in as i64, req.offset_out as i64);
        let result = nix::fcntl::copy_file_range(
            from.file.as_fd(),
            Some(&mut off_in),
            to.file.as_fd(),
            Some(&mut off_out),
            plan.len as usize,
        );
        // The host may share the source's extents (a reflink): overwrites allocate again.
        self.allocation_taken(&to.inode);
        self.reaccount_from(&to.inode, to.file.as_fd())?;
        self.unsettled.written(&to.inode);
        Ok(result? as u32)
    }

    pub(super) fn do_fsync(&self, fh: Fh, datasync: bool) -> FsResult<()> {
        let handle = self.files.get(fh)?;
        if datasync {
            handle.file.sync_data()?;
        } else {
            handle.file.sync_all()?;
        }
        // Writeback may have allocated host metadata (extent blocks) since the last re-read.
        self.reaccount_from(&handle.inode, handle.file.as_fd())?;
        Ok(())
    }
}

fn file_handle(inode: Arc<Inode>, file: Arc<File>, flags: i32) -> FileHandle {
    FileHandle {
        file,
        inode,
        writable: flags & libc::O_ACCMODE != libc::O_RDONLY,
        write_behind: Mutex::default(),
        direct_io_align: OnceLock::new(),
    }
}

/// The alignment of offsets and lengths O_DIRECT I/O on `file` needs: `STATX_DIOALIGN`'s
/// (none for a file the host serves O_DIRECT through its page cache, as ext4 does for some);
/// where the filesystem does not report it, none on tmpfs (which ignores the alignment) and a
/// disk's 512-byte sector elsewhere. At most a page: the kernel reads an O_DIRECT file's
/// mapped pages with requests flagged O_DIRECT too, a page at a time.
fn host_direct_io_align(file: &File) -> u64 {
    let align = match crate::sys::dio::offset_align(file.as_fd()) {
        Ok(Some(align)) => u64::from(align).max(1),
        Ok(None) | Err(_) => {
            let tmpfs = nix::sys::statfs::fstatfs(file.as_fd())
                .is_ok_and(|fs| fs.filesystem_type() == nix::sys::statfs::TMPFS_MAGIC);
            if tmpfs { 1 } else { 512 }
        }
    };
    let page = nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
        .ok()
        .flatten()
        .map_or(4096, |p| p as u64);
    align.min(page)
}
