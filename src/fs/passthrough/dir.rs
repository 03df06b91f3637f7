//! Directory listing, resumable at the host's own offsets.
use std::os::fd::AsFd;

use nix::fcntl::OFlag;
use nix::unistd::{Whence, lseek};
use parking_lot::Mutex;

use super::PassthroughFs;
use super::handles::DirHandle;
use crate::fs::{DirEntry, Fh, FileKind, FsResult, Ino};
use crate::sys::dirent;

/// Big enough for a reply buffer's worth of entries in one system call.
const DIRENT_BUF: usize = 32 * 1024;

impl PassthroughFs {
    pub(super) fn open_dir(&self, ino: Ino) -> FsResult<Fh> {
        let inode = self.inodes.get(ino)?;
        let dir = self.reopen(&inode, OFlag::O_RDONLY | OFlag::O_DIRECTORY)?;
        self.count_open(&inode)?;
        Ok(self.dirs.insert(DirHandle {
            inode,
            dir: Mutex::new(dir.into()),
        }))
    }

    /// Opens directory handle `fh` of node `ino` again, for a predecessor's open directory
    /// (its offsets are the host's, so reading goes on where it was).
    pub(super) fn restore_dir(&self, fh: Fh, ino: Ino) -> FsResult<()> {
        let inode = self.inodes.get(ino)?;
        let dir = self.reopen(&inode, OFlag::O_RDONLY | OFlag::O_DIRECTORY)?;
        self.count_open(&inode)?;
        self.dirs.insert_at(
            fh,
            DirHandle {
                inode,
                dir: Mutex::new(dir.into()),
            },
        );
        Ok(())
    }

    pub(super) fn read_dir(
        &self,
        fh: Fh,
        offset: u64,
        plus: bool,
        add: &mut dyn FnMut(DirEntry) -> bool,
    ) -> FsResult<()> {
        let handle = self.dirs.get(fh)?;
        let dir = handle.dir.lock();
        lseek(dir.as_fd(), offset as i64, Whence::SeekSet)?;
        let mut buf = vec![0u8; DIRENT_BUF];
        loop {
            let n = dirent::getdents64(dir.as_fd(), &mut buf)?;
            if n == 0 {
                return Ok(());
            }
            for raw in dirent::parse(&buf[..n]) {
                let dot = raw.name == "." || raw.name == "..";
                let mut entry = DirEntry {
                    ino: self.inodes.ino_hint((handle.inode.key.0, raw.ino)),
                    next_offset: raw.next_offset,
                    kind: kind_of(raw.kind),
                    name: raw.name.to_os_string(),
                    entry: None,
                };
                let mut looked_up = None;
                if plus && !dot {
                    // A name that vanished since getdents is skipped, as a later readdir would.
                    let Ok((inode, found)) = self.lookup_entry(&*dir, raw.name) else {
                        continue;
                    };
                    entry.ino = inode.ino;
                    entry.entry = Some(found);
                    looked_up = Some(inode.ino);
                }
                if !add(entry) {
                    // The kernel never saw this entry, so it holds no reference to forget.
                    if let Some(ino) = looked_up {
                        self.inodes.forget(ino, 1);
                    }
                    return Ok(());
                }
            }
        }
    }

    pub(super) fn close_dir(&self, fh: Fh) -> FsResult<()> {
        let handle = self.dirs.remove(fh)?;
        let freed = self.count_close(&handle.inode, handle.dir.lock().as_fd());
        drop(handle);
        if let Some(freed) = freed {
            self.give_back(freed);
        }
        Ok(())
    }
}

fn kind_of(d_type: u8) -> FileKind {
    match d_type {
        libc::DT_DIR => FileKind::Dir,
        libc::DT_LNK => FileKind::Symlink,
        libc::DT_FIFO => FileKind::Fifo,
        libc::DT_SOCK => FileKind::Socket,
        libc::DT_CHR => FileKind::CharDevice,
        libc::DT_BLK => FileKind::BlockDevice,
        _ => FileKind::File,
    }
}
