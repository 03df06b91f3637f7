//! Copies a volume's tree out of its filesystem core into a host directory: what a snapshot of
//! a tmpfs or rbd volume is made of. It reads the core directly (not the kernel mount), so it
//! works while the volume's gate holds every change (`gate`). It keeps file types, owners,
//! modes, times, xattrs, hard links and holes.
use std::collections::HashMap;
use std::ffi::{CString, OsStr, OsString};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, symlink};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use nix::sys::stat::{Mode, SFlag, UtimensatFlags, mknod, utimensat};
use nix::sys::time::TimeSpec;

use super::{Attr, Caller, FileKind, FsError, Ino, ROOT_INO, VolumeFs, XattrReply};

/// What a copy wrote.
#[derive(Clone, Copy, Debug, Default)]
pub struct CopyStats {
    pub files: u64,
    pub bytes: u64,
}

const ROOT: Caller = Caller {
    uid: 0,
    gid: 0,
    pid: 0,
    umask: 0,
};
const CHUNK: u32 = 1 << 20;

pub fn io_err(e: FsError) -> io::Error {
    match e {
        FsError::Os(errno) => io::Error::from_raw_os_error(errno as i32),
        FsError::NotFound | FsError::Stale => io::Error::from_raw_os_error(libc::ENOENT),
        FsError::NoSpace => io::Error::from_raw_os_error(libc::ENOSPC),
        FsError::Invalid => io::Error::from_raw_os_error(libc::EINVAL),
        FsError::Unsupported => io::Error::from_raw_os_error(libc::EOPNOTSUPP),
    }
}

/// A tree to copy out: a filesystem core as it is (held still by its gate), or a capture
/// of one at an instant (`Capture`).
pub trait TreeSource {
    fn attr(&self, ino: Ino) -> io::Result<Attr>;
    /// A directory's entries (without `.` and `..`) with the attributes of what they name.
    fn entries(&self, dir: Ino) -> io::Result<Vec<(OsString, Attr)>>;
    fn readlink(&self, ino: Ino) -> io::Result<Vec<u8>>;
    fn xattrs(&self, ino: Ino) -> io::Result<Vec<(OsString, Vec<u8>)>>;
    /// Hands a file's data to `put` (offset, bytes) in order, holes left out.
    fn data(
        &self,
        attr: &Attr,
        put: &mut dyn FnMut(u64, &[u8]) -> io::Result<()>,
    ) -> io::Result<()>;
}

/// A volume's tree captured at an instant while its gate held every change, to copy out
/// after the gate opened again (`VolumeFs::capture`). What it holds stays as it was while
/// the volume changes; dropping it lets go of that.
pub trait Capture: TreeSource {
    /// Lets go of what it holds; an error if what was copied out is not the instant it was
    /// captured at (then the copy must be thrown away).
    fn finish(self: Box<Self>) -> io::Result<()>;
}

/// Copies the whole tree of `source` (a core: `CoreSource`) into `dest`, an empty directory
/// that becomes its root; `done` counts the bytes of file data copied so far (for progress).
pub fn copy_tree(source: &dyn TreeSource, dest: &Path, done: &AtomicU64) -> io::Result<CopyStats> {
    let mut copier = Copier {
        source,
        links: HashMap::new(),
        stats: CopyStats::default(),
        done,
    };
    let root = source.attr(ROOT_INO)?;
    copier.dir(ROOT_INO, dest)?;
    copier.finish(ROOT_INO, &root, dest)?;
    Ok(copier.stats)
}

/// A filesystem core read through its operations.
pub struct CoreSource<'a>(pub &'a dyn VolumeFs);

impl TreeSource for CoreSource<'_> {
    fn attr(&self, ino: Ino) -> io::Result<Attr> {
        self.0.getattr(ino, None).map_err(io_err)
    }

    fn entries(&self, dir: Ino) -> io::Result<Vec<(OsString, Attr)>> {
        let fs = self.0;
        let fh = fs.opendir(&ROOT, dir).map_err(io_err)?;
        let mut names = Vec::new();
        let mut offset = 0;
        loop {
            let mut got = 0;
            let listed = fs.readdir(dir, fh, offset, false, &mut |e| {
                offset = e.next_offset;
                got += 1;
                if e.name != "." && e.name != ".." {
                    names.push(e.name);
                }
                true
            });
            if let Err(e) = listed {
                let _ = fs.releasedir(dir, fh);
                return Err(io_err(e));
            }
            if got == 0 {
                break;
            }
        }
        let _ = fs.releasedir(dir, fh);
        let mut entries = Vec::new();
        for name in names {
            let entry = match fs.lookup(&ROOT, dir, &name) {
                Ok(e) => e,
                Err(FsError::NotFound) => continue,
                Err(e) => return Err(io_err(e)),
            };
            // Named, so it stays while the gate holds every change.
            fs.forget(entry.attr.ino, 1);
            entries.push((name, entry.attr));
        }
        Ok(entries)
    }

    fn readlink(&self, ino: Ino) -> io::Result<Vec<u8>> {
        self.0.readlink(ino).map_err(io_err)
    }

    fn xattrs(&self, ino: Ino) -> io::Result<Vec<(OsString, Vec<u8>)>> {
        let mut all = Vec::new();
        for name in self.xattr_names(ino)? {
            let value = match self.0.getxattr(ino, &name, 0).map_err(io_err)? {
                XattrReply::Size(0) | XattrReply::Data(_) => Vec::new(),
                XattrReply::Size(n) => match self.0.getxattr(ino, &name, n) {
                    Ok(XattrReply::Data(v)) => v,
                    _ => continue,
                },
            };
            all.push((name, value));
        }
        Ok(all)
    }

    /// Only the ranges `SEEK_DATA` finds.
    fn data(
        &self,
        attr: &Attr,
        put: &mut dyn FnMut(u64, &[u8]) -> io::Result<()>,
    ) -> io::Result<()> {
        let fs = self.0;
        let fh = fs.open(&ROOT, attr.ino, libc::O_RDONLY).map_err(io_err)?.fh;
        let copied = (|| -> io::Result<()> {
            let mut at = 0u64;
            while at < attr.size {
                let data = match fs.lseek(attr.ino, fh, at as i64, libc::SEEK_DATA) {
                    Ok(d) => d as u64,
                    Err(FsError::Os(nix::errno::Errno::ENXIO)) => break,
                    Err(_) => at,
                };
                let hole = match fs.lseek(attr.ino, fh, data as i64, libc::SEEK_HOLE) {
                    Ok(h) => h as u64,
                    Err(_) => attr.size,
                };
                let mut pos = data;
                while pos < hole {
                    let want = (hole - pos).min(CHUNK as u64) as u32;
                    let bytes = fs.read(attr.ino, fh, pos, want).map_err(io_err)?;
                    if bytes.is_empty() {
                        break;
                    }
                    put(pos, &bytes)?;
                    pos += bytes.len() as u64;
                }
                at = hole.max(data + 1);
            }
            Ok(())
        })();
        let _ = fs.release(attr.ino, fh);
        copied
    }
}

impl CoreSource<'_> {
    fn xattr_names(&self, ino: Ino) -> io::Result<Vec<OsString>> {
        let size = match self.0.listxattr(ino, 0) {
            Ok(XattrReply::Size(n)) if n > 0 => n,
            Ok(_) => return Ok(Vec::new()),
            Err(FsError::Unsupported) => return Ok(Vec::new()),
            Err(e) => return Err(io_err(e)),
        };
        let list = match self.0.listxattr(ino, size).map_err(io_err)? {
            XattrReply::Data(d) => d,
            XattrReply::Size(_) => return Ok(Vec::new()),
        };
        Ok(list
            .split(|&b| b == 0)
            .filter(|n| !n.is_empty())
            .map(|n| OsStr::from_bytes(n).to_os_string())
            .collect())
    }
}

struct Copier<'a> {
    source: &'a dyn TreeSource,
    /// Files with more than one link already copied: inode → host path.
    links: HashMap<Ino, PathBuf>,
    stats: CopyStats,
    done: &'a AtomicU64,
}

impl Copier<'_> {
    fn dir(&mut self, dir: Ino, dest: &Path) -> io::Result<()> {
        for (name, attr) in self.source.entries(dir)? {
            self.node(&attr, &dest.join(&name))?;
        }
        Ok(())
    }

    fn node(&mut self, attr: &Attr, path: &Path) -> io::Result<()> {
        if attr.kind != FileKind::Dir && attr.nlink > 1 {
            if let Some(first) = self.links.get(&attr.ino) {
                return std::fs::hard_link(first, path);
            }
            self.links.insert(attr.ino, path.to_path_buf());
        }
        match attr.kind {
            FileKind::Dir => {
                std::fs::create_dir(path)?;
                self.dir(attr.ino, path)?;
            }
            FileKind::File => self.file(attr, path)?,
            FileKind::Symlink => {
                let target = self.source.readlink(attr.ino)?;
                symlink(OsStr::from_bytes(&target), path)?;
            }
            kind => {
                let sflag = match kind {
                    FileKind::Fifo => SFlag::S_IFIFO,
                    FileKind::Socket => SFlag::S_IFSOCK,
                    FileKind::CharDevice => SFlag::S_IFCHR,
                    _ => SFlag::S_IFBLK,
                };
                mknod(
                    path,
                    sflag,
                    Mode::from_bits_truncate(0o600),
                    attr.rdev as u64,
                )
                .map_err(io::Error::from)?;
            }
        }
        self.stats.files += 1;
        self.finish(attr.ino, attr, path)
    }

    /// Data, holes kept: only the ranges the source has are written.
    fn file(&mut self, attr: &Attr, path: &Path) -> io::Result<()> {
        let out = std::fs::File::create(path)?;
        let (stats, done) = (&mut self.stats, self.done);
        self.source.data(attr, &mut |pos, bytes| {
            out.write_all_at(bytes, pos)?;
            stats.bytes += bytes.len() as u64;
            done.fetch_add(bytes.len() as u64, Ordering::Relaxed);
            Ok(())
        })?;
        out.set_len(attr.size)
    }

    /// Xattrs, owner, mode and times (a directory's after its entries).
    fn finish(&self, ino: Ino, attr: &Attr, path: &Path) -> io::Result<()> {
        let symlink = attr.kind == FileKind::Symlink;
        let c_path = CString::new(path.as_os_str().as_bytes())?;
        if !symlink {
            for (name, value) in self.source.xattrs(ino)? {
                let c_name = CString::new(name.as_bytes())?;
                crate::sys::xattr::set(&c_path, &c_name, &value, 0).map_err(io::Error::from)?;
            }
        }
        std::os::unix::fs::lchown(path, Some(attr.uid), Some(attr.gid))?;
        if !symlink {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(attr.perm as u32))?;
        }
        let ts = |t: std::time::SystemTime| {
            let d = t.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
            TimeSpec::new(d.as_secs() as i64, d.subsec_nanos() as i64)
        };
        utimensat(
            nix::fcntl::AT_FDCWD,
            path,
            &ts(attr.atime),
            &ts(attr.mtime),
            UtimensatFlags::NoFollowSymlink,
        )
        .map_err(io::Error::from)
    }
}
