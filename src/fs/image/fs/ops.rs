//! `VolumeFs` for `ImageFs`: every change is one transaction over the tables in `store`.
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use nix::errno::Errno;
use redb::{ReadableDatabase, ReadableTable};

use super::redo::{self, Op};
use super::store::{Ctx, DIRENTS, InodeRec, Tx, USED_INODES, XATTRS, now, stamp};
use super::{ImageFs, Inner, REDO_SMALL};
use crate::fs::acl;
use crate::fs::handles::{DirCursor, DirStart};
use crate::fs::rules::{self, RenameMode};
use crate::fs::*;
use parking_lot::Mutex;
use std::ops::Bound::{Excluded, Included};

/// The largest xattr value (as ext4 without `ea_inode`: one block): bigger values would need
/// database pages of more than 4 KiB, which a nearly full metadata region may not have.
const XATTR_VALUE_MAX: usize = 4000;

/// The alignment of O_DIRECT offsets and lengths: a block device's logical sector.
const DIRECT_IO_ALIGN: u64 = 512;

fn os(e: Errno) -> FsError {
    FsError::Os(e)
}

fn name_ok(name: &OsStr) -> FsResult<&[u8]> {
    rules::check_name(name).map(|()| name.as_bytes())
}

fn dir(rec: &InodeRec) -> FsResult<()> {
    match rec.kind() {
        FileKind::Dir => Ok(()),
        _ => Err(os(Errno::ENOTDIR)),
    }
}

impl Inner {
    fn entry_for(&self, ino: Ino, rec: &InodeRec) -> Entry {
        self.add_lookup(ino);
        Entry {
            attr: rec.attr(ino),
            generation: 0,
        }
    }

    /// Creates a node in `parent` for `caller` (gid and setgid inherited from a setgid parent;
    /// mode and ACLs from the parent's default ACL, or the caller's umask without one).
    pub(super) fn make(
        &self,
        caller: &Caller,
        parent: Ino,
        name: &OsStr,
        mut rec: InodeRec,
    ) -> FsResult<Entry> {
        let name = name_ok(name)?;
        self.metadata_room()?;
        let _reservation = self.quota.reserve(0, 1)?;
        let template = rec.clone();
        let bound = REDO_SMALL + name.len() + rec.target.len();
        let redo = |out: &(Ino, InodeRec)| {
            Some((
                Op::Make {
                    uid: caller.uid,
                    gid: caller.gid,
                    umask: caller.umask,
                    parent,
                    name: name.to_vec(),
                    rec: template,
                    ino: out.0,
                },
                0,
            ))
        };
        let (ino, rec) = self.transact_logged(
            bound,
            &[],
            |t| {
                let mut p = t.inode(parent)?;
                dir(&p)?;
                if t.child(parent, name)?.is_some() {
                    return Err(os(Errno::EEXIST));
                }
                let mut xattrs = t.tx.open_table(XATTRS).io()?;
                let default = xattrs
                    .get((parent, acl::DEFAULT.as_bytes()))
                    .io()?
                    .map(|v| v.value().to_vec());
                let inherited =
                    acl::inherit(default.as_deref(), rec.kind(), rec.perm, caller.umask)?;
                let (gid, setgid) = rules::new_node_group(p.perm, p.gid, caller.gid, rec.kind());
                rec.perm = inherited.mode & 0o7777 | setgid;
                rec.gid = gid;
                rec.uid = caller.uid;
                let ino = t.next_ino()?;
                self.note_ino(ino);
                if rec.kind() == FileKind::Dir {
                    rec.parent = parent;
                    p.nlink += 1;
                }
                p.touch_dir();
                t.put_inode(parent, &p)?;
                t.put_inode(ino, &rec)?;
                for (acl_name, value) in [
                    (acl::ACCESS, inherited.access),
                    (acl::DEFAULT, inherited.default),
                ] {
                    if let Some(value) = value {
                        xattrs
                            .insert((ino, acl_name.as_bytes()), value.as_slice())
                            .io()?;
                    }
                }
                drop(xattrs);
                t.set_child(parent, name, Some(ino))?;
                t.add_counter(USED_INODES, 1)?;
                Ok((ino, rec))
            },
            redo,
        )?;
        self.quota.adjust(0, 1);
        Ok(self.entry_for(ino, &rec))
    }

    pub(super) fn remove(&self, parent: Ino, name: &OsStr, want_dir: bool) -> FsResult<()> {
        let name = name_ok(name)?;
        let redo = |_: &(Ino, bool)| {
            Some((
                Op::Remove {
                    parent,
                    name: name.to_vec(),
                    dir: want_dir,
                },
                0,
            ))
        };
        let (ino, last) = self.transact_logged(
            REDO_SMALL + name.len(),
            &[],
            |t| {
                let mut p = t.inode(parent)?;
                let ino = t.child(parent, name)?.ok_or(FsError::NotFound)?;
                let mut rec = t.inode(ino)?;
                let is_dir = rec.kind() == FileKind::Dir;
                match (want_dir, is_dir) {
                    (true, false) => return Err(os(Errno::ENOTDIR)),
                    (false, true) => return Err(os(Errno::EISDIR)),
                    (true, true) if !t.is_empty_dir(ino)? => return Err(os(Errno::ENOTEMPTY)),
                    _ => {}
                }
                t.set_child(parent, name, None)?;
                if is_dir {
                    p.nlink -= 1;
                }
                p.touch_dir();
                t.put_inode(parent, &p)?;
                rec.nlink = if is_dir {
                    0
                } else {
                    rec.nlink.saturating_sub(1)
                };
                rec.ctime = now();
                t.put_inode(ino, &rec)?;
                Ok((ino, rec.nlink == 0))
            },
            redo,
        )?;
        match last {
            true => self.lost_last_name(ino),
            false => Ok(()),
        }
    }

    fn is_ancestor(t: &Tx<'_>, ancestor: Ino, mut dir: Ino) -> FsResult<bool> {
        loop {
            if dir == ancestor {
                return Ok(true);
            }
            let rec = t.inode(dir)?;
            if rec.parent == dir || rec.kind() != FileKind::Dir {
                return Ok(false);
            }
            dir = rec.parent;
        }
    }

    fn rename_in(&self, r: &Rename<'_>) -> FsResult<Option<Ino>> {
        let (name, new_name) = (name_ok(r.name)?, name_ok(r.new_name)?);
        let RenameMode {
            exchange,
            noreplace,
            whiteout,
        } = rules::rename_mode(r.flags)?;
        // A whiteout is a new inode: admitted against the inode quota before anything changes.
        let _reservation = match whiteout {
            true => {
                self.metadata_room()?;
                Some(self.quota.reserve(0, 1)?)
            }
            false => None,
        };
        let redo = |out: &(Option<Ino>, Option<Ino>)| {
            Some((
                Op::Rename {
                    uid: r.caller.uid,
                    gid: r.caller.gid,
                    parent: r.parent,
                    name: name.to_vec(),
                    new_parent: r.new_parent,
                    new_name: new_name.to_vec(),
                    flags: r.flags,
                    whiteout: out.1,
                },
                0,
            ))
        };
        let bound = REDO_SMALL + name.len() + new_name.len();
        let (reap, whiteout_made) = self.transact_logged(
            bound,
            &[],
            |t| {
                let moved = t.child(r.parent, name)?.ok_or(FsError::NotFound)?;
                let target = t.child(r.new_parent, new_name)?;
                if Self::is_ancestor(t, moved, r.new_parent)? {
                    return Err(FsError::Invalid);
                }
                // An exchange moves the target to the source's place: not into its own subtree.
                if exchange
                    && let Some(v) = target
                    && Self::is_ancestor(t, v, r.parent)?
                {
                    return Err(FsError::Invalid);
                }
                let mut m = t.inode(moved)?;
                let mut victim = match target {
                    Some(ino) if ino == moved => return Ok((None, None)),
                    Some(ino) => Some((ino, t.inode(ino)?)),
                    None => None,
                };
                match &victim {
                    Some(_) if noreplace => return Err(os(Errno::EEXIST)),
                    None if exchange => return Err(FsError::NotFound),
                    Some((ino, v)) if !exchange => {
                        rules::check_replace(m.kind(), v.kind(), || t.is_empty_dir(*ino))?
                    }
                    _ => {}
                }
                let mut whiteout_made = None;
                let left_behind = match &victim {
                    Some((ino, _)) if exchange => Some(*ino),
                    _ if whiteout => {
                        let ino = Self::add_whiteout(t, &r.caller, r.parent)?;
                        self.note_ino(ino);
                        whiteout_made = Some(ino);
                        Some(ino)
                    }
                    _ => None,
                };
                t.set_child(r.parent, name, left_behind)?;
                t.set_child(r.new_parent, new_name, Some(moved))?;
                // Link counts of the two parents ("..") and of the replaced node.
                let nlink_delta = |ino: Ino, d: i32, t: &Tx<'_>| -> FsResult<()> {
                    let mut p = t.inode(ino)?;
                    p.nlink = p.nlink.saturating_add_signed(d);
                    p.touch_dir();
                    t.put_inode(ino, &p)
                };
                let moves_dir = |k: FileKind| k == FileKind::Dir && r.parent != r.new_parent;
                if moves_dir(m.kind()) {
                    m.parent = r.new_parent;
                    nlink_delta(r.parent, -1, t)?;
                    nlink_delta(r.new_parent, 1, t)?;
                }
                let mut reap = None;
                if let Some((ino, v)) = victim.as_mut() {
                    v.ctime = now();
                    if exchange {
                        if moves_dir(v.kind()) {
                            v.parent = r.parent;
                            nlink_delta(r.new_parent, -1, t)?;
                            nlink_delta(r.parent, 1, t)?;
                        }
                    } else {
                        if v.kind() == FileKind::Dir {
                            nlink_delta(r.new_parent, -1, t)?;
                            v.nlink = 0;
                        } else {
                            v.nlink = v.nlink.saturating_sub(1);
                        }
                        reap = (v.nlink == 0).then_some(*ino);
                    }
                    t.put_inode(*ino, v)?;
                }
                nlink_delta(r.parent, 0, t)?;
                nlink_delta(r.new_parent, 0, t)?;
                m.ctime = now();
                t.put_inode(moved, &m)?;
                Ok((reap, whiteout_made))
            },
            redo,
        )?;
        if whiteout_made.is_some() {
            self.quota.adjust(0, 1);
        }
        Ok(reap)
    }

    /// Makes the whiteout a RENAME_WHITEOUT leaves at the source name in `parent`: a 0:0
    /// character device owned by the caller, as the kernel makes one. The caller reserved
    /// its inode and names it.
    fn add_whiteout(t: &Tx<'_>, caller: &Caller, parent: Ino) -> FsResult<Ino> {
        let p = t.inode(parent)?;
        let (gid, _) = rules::new_node_group(p.perm, p.gid, caller.gid, FileKind::CharDevice);
        let rec = InodeRec::new(FileKind::CharDevice, 0, caller.uid, gid, 0);
        let ino = t.next_ino()?;
        t.put_inode(ino, &rec)?;
        t.add_counter(USED_INODES, 1)?;
        Ok(ino)
    }

    /// Reads directory `dir_ino` from `offset` (see `DirCursor`), handing entries to `add`
    /// until it has no room, and records them in `cursor`; returns a node looked up for an
    /// entry `add` refused (the kernel never saw it).
    fn read_dir(
        &self,
        dir_ino: Ino,
        cursor: &mut DirCursor,
        offset: u64,
        plus: bool,
        add: &mut dyn FnMut(DirEntry) -> bool,
    ) -> FsResult<Option<Ino>> {
        let rec = self.read_inode(dir_ino)?;
        dir(&rec)?;
        let tx = self.db.begin_read().io()?;
        let dirents = tx.open_table(DIRENTS).io()?;
        let inodes = tx.open_table(super::store::INODES).io()?;
        let list = |start: &DirStart<'_>| {
            let (after, skip) = match *start {
                DirStart::After { name, .. } => (Some(name.as_bytes()), 0),
                DirStart::Skip(n) => (None, n as usize),
            };
            let from = match after {
                Some(name) => Excluded((dir_ino, name)),
                None => Included((dir_ino, &[][..])),
            };
            let end = Excluded((dir_ino + 1, &[][..]));
            let range = dirents.range::<(u64, &[u8])>((from, end)).io()?;
            let inodes = &inodes;
            Ok(range.skip(skip).filter_map(move |entry| {
                let listed = (|| {
                    let (k, v) = entry.io()?;
                    let ino = v.value();
                    let Some(child) = inodes
                        .get(ino)
                        .io()?
                        .and_then(|r| postcard::from_bytes::<InodeRec>(r.value()).ok())
                    else {
                        return Ok(None);
                    };
                    Ok(Some(rules::Listed {
                        ino,
                        name: OsStr::from_bytes(k.value().1).to_os_string(),
                        kind: child.kind(),
                        entry: plus.then(|| self.entry_for(ino, &child)),
                    }))
                })();
                listed.transpose()
            }))
        };
        rules::read_dir(dir_ino, rec.parent, offset, cursor, list, add)
    }

    fn handle_ino(&self, fh: Fh) -> FsResult<Ino> {
        Ok(*self.files.get(fh)?)
    }

    /// Sets (or, with a value of no entries, removes) an ACL as ext4 does: an access ACL sets
    /// the mode and is kept only when the mode cannot say it all (see `acl::set_access`).
    fn set_acl(&self, ino: Ino, kind: acl::Kind, value: &[u8], kill_sgid: bool) -> FsResult<()> {
        self.metadata_room()?;
        let acl_name = match kind {
            acl::Kind::Access => acl::ACCESS,
            acl::Kind::Default => acl::DEFAULT,
        };
        let redo = |_: &()| {
            Some((
                Op::SetXattr {
                    ino,
                    name: acl_name.as_bytes().to_vec(),
                    value: value.to_vec(),
                    flags: 0,
                    kill_sgid,
                },
                0,
            ))
        };
        self.transact_logged(
            REDO_SMALL + value.len(),
            &[],
            |t| {
                let mut rec = t.inode(ino)?;
                if rec.kind() == FileKind::Symlink {
                    return Err(FsError::Unsupported);
                }
                let (name, stored) = match kind {
                    acl::Kind::Access => {
                        let (perm, stored) = acl::set_access(value, rec.perm, kill_sgid)?;
                        rec.perm = perm;
                        (acl::ACCESS, stored)
                    }
                    acl::Kind::Default => (acl::DEFAULT, acl::check_default(value, rec.kind())?),
                };
                let mut x = t.tx.open_table(XATTRS).io()?;
                match stored {
                    Some(v) => x.insert((ino, name.as_bytes()), v.as_slice()).io()?,
                    None => x.remove((ino, name.as_bytes())).io()?,
                };
                drop(x);
                rec.ctime = now();
                t.put_inode(ino, &rec)
            },
            redo,
        )
    }

    /// What a write by an unprivileged caller does first (see `drop_privileges`).
    pub(super) fn kill_privileges(&self, ino: Ino) -> FsResult<()> {
        let redo = |_: &()| Some((Op::KillPrivileges { ino }, 0));
        self.transact_logged(
            REDO_SMALL,
            &[],
            |t| {
                let mut rec = t.inode(ino)?;
                drop_privileges(t, ino, &mut rec)?;
                t.put_inode(ino, &rec)
            },
            redo,
        )
    }
}

/// A chmod changes the access ACL too, as on ext4.
fn chmod_acl(t: &Tx<'_>, ino: Ino, mode: u32) -> FsResult<()> {
    let mut x = t.tx.open_table(XATTRS).io()?;
    let key = (ino, acl::ACCESS.as_bytes());
    let changed = match x.get(key).io()? {
        Some(v) => acl::chmod(v.value(), mode),
        None => None,
    };
    if let Some(value) = changed {
        x.insert(key, value.as_slice()).io()?;
    }
    Ok(())
}

/// What a write, truncate or chown by an unprivileged caller does to a file's privileges.
fn drop_privileges(t: &Tx<'_>, ino: Ino, rec: &mut InodeRec) -> FsResult<()> {
    rec.perm = mode_without_privileges(rec.perm);
    t.tx.open_table(XATTRS)
        .io()?
        .remove((ino, rules::CAPABILITY.as_bytes()))
        .io()?;
    Ok(())
}

fn set_time(t: TimeSet) -> (i64, u32) {
    match t {
        TimeSet::Now => now(),
        TimeSet::At(t) => stamp(t),
    }
}

impl VolumeFs for ImageFs {
    fn lookup(&self, _caller: &Caller, parent: Ino, name: &OsStr) -> FsResult<Entry> {
        let name = name_ok(name)?;
        let tx = self.db.begin_read().io()?;
        let dirents = tx.open_table(DIRENTS).io()?;
        let ino = dirents
            .get((parent, name))
            .io()?
            .ok_or(FsError::NotFound)?
            .value();
        drop((dirents, tx));
        let rec = self.read_inode(ino)?;
        Ok(self.entry_for(ino, &rec))
    }

    fn forget(&self, ino: Ino, nlookup: u64) {
        if let Err(e) = self.unreach(ino, nlookup, false) {
            log::error!("image: deleting inode {ino} without a name: {e:?}");
        }
    }

    fn getattr(&self, ino: Ino, _fh: Option<Fh>) -> FsResult<Attr> {
        Ok(self.read_inode(ino)?.attr(ino))
    }

    fn setattr(&self, caller: &Caller, ino: Ino, c: &SetAttr) -> FsResult<Attr> {
        if let Some(size) = c.size {
            self.shrink_steps(ino, size)?;
        }
        let redo = |_: &(InodeRec, i64)| {
            Some((
                Op::SetAttr {
                    uid: caller.uid,
                    ino,
                    mode: c.mode,
                    owner: c.uid,
                    group: c.gid,
                    size: c.size,
                    atime: c.atime.map(redo::time_of),
                    mtime: c.mtime.map(redo::time_of),
                    ctime: c.ctime.map(stamp),
                },
                0,
            ))
        };
        let (rec, delta) = self.transact_logged(
            REDO_SMALL,
            &[],
            |t| {
                let mut rec = t.inode(ino)?;
                let chown = c.uid.is_some() || c.gid.is_some();
                let kill = c.mode.is_none()
                    && ((chown && rec.kind() != FileKind::Dir)
                        || (c.size.is_some() && caller.uid != 0));
                if kill {
                    drop_privileges(t, ino, &mut rec)?;
                }
                let mut delta = 0;
                if let Some(size) = c.size {
                    if rec.kind() != FileKind::File {
                        return Err(if rec.kind() == FileKind::Dir {
                            os(Errno::EISDIR)
                        } else {
                            FsError::Invalid
                        });
                    }
                    if size != rec.size {
                        rec.mtime = now();
                    }
                    delta = self.truncate_in(t, ino, &mut rec, size)?;
                }
                if let Some(mode) = c.mode {
                    rec.perm = mode & 0o7777;
                    chmod_acl(t, ino, mode)?;
                }
                rec.uid = c.uid.unwrap_or(rec.uid);
                rec.gid = c.gid.unwrap_or(rec.gid);
                if let Some(a) = c.atime {
                    rec.atime = set_time(a);
                }
                if let Some(m) = c.mtime {
                    rec.mtime = set_time(m);
                }
                rec.ctime = c.ctime.map(stamp).unwrap_or_else(now);
                t.put_inode(ino, &rec)?;
                Ok((rec, delta))
            },
            redo,
        )?;
        self.quota.adjust(delta, 0);
        Ok(rec.attr(ino))
    }

    fn readlink(&self, ino: Ino) -> FsResult<Vec<u8>> {
        let rec = self.read_inode(ino)?;
        match rec.kind() {
            FileKind::Symlink => Ok(rec.target),
            _ => Err(FsError::Invalid),
        }
    }

    fn mknod(
        &self,
        c: &Caller,
        parent: Ino,
        name: &OsStr,
        mode: u32,
        rdev: u32,
    ) -> FsResult<Entry> {
        let kind = FileKind::from_mode(mode).ok_or(FsError::Invalid)?;
        if matches!(kind, FileKind::Dir | FileKind::Symlink) {
            return Err(FsError::Invalid);
        }
        self.make(c, parent, name, InodeRec::new(kind, mode, 0, 0, rdev))
    }

    fn mkdir(&self, c: &Caller, parent: Ino, name: &OsStr, mode: u32) -> FsResult<Entry> {
        self.make(c, parent, name, InodeRec::new(FileKind::Dir, mode, 0, 0, 0))
    }

    fn unlink(&self, _caller: &Caller, parent: Ino, name: &OsStr) -> FsResult<()> {
        self.remove(parent, name, false)
    }

    fn rmdir(&self, _caller: &Caller, parent: Ino, name: &OsStr) -> FsResult<()> {
        self.remove(parent, name, true)
    }

    fn symlink(&self, c: &Caller, parent: Ino, name: &OsStr, target: &Path) -> FsResult<Entry> {
        let target = target.as_os_str().as_bytes();
        if target.len() > 4096 {
            return Err(os(Errno::ENAMETOOLONG));
        }
        let mut rec = InodeRec::new(FileKind::Symlink, 0o777, 0, 0, 0);
        rec.target = target.to_vec();
        self.make(c, parent, name, rec)
    }

    fn rename(&self, r: &Rename<'_>) -> FsResult<()> {
        match self.rename_in(r)? {
            Some(ino) => self.lost_last_name(ino),
            None => Ok(()),
        }
    }

    fn link(
        &self,
        _caller: &Caller,
        ino: Ino,
        new_parent: Ino,
        new_name: &OsStr,
    ) -> FsResult<Entry> {
        let name = name_ok(new_name)?;
        self.metadata_room()?;
        let redo = |_: &InodeRec| {
            Some((
                Op::Link {
                    ino,
                    new_parent,
                    name: name.to_vec(),
                },
                0,
            ))
        };
        let rec = self.transact_logged(
            REDO_SMALL + name.len(),
            &[],
            |t| {
                let mut rec = t.inode(ino)?;
                let mut p = t.inode(new_parent)?;
                dir(&p)?;
                if rec.kind() == FileKind::Dir {
                    return Err(os(Errno::EPERM));
                }
                if rec.nlink == 0 {
                    return Err(FsError::NotFound);
                }
                if t.child(new_parent, name)?.is_some() {
                    return Err(os(Errno::EEXIST));
                }
                t.set_child(new_parent, name, Some(ino))?;
                rec.nlink += 1;
                rec.ctime = now();
                p.touch_dir();
                t.put_inode(ino, &rec)?;
                t.put_inode(new_parent, &p)?;
                Ok(rec)
            },
            redo,
        )?;
        Ok(self.entry_for(ino, &rec))
    }

    fn open(&self, c: &Caller, ino: Ino, flags: i32) -> FsResult<Opened> {
        if flags & libc::O_TRUNC != 0 && flags & libc::O_ACCMODE != libc::O_RDONLY {
            self.setattr(
                c,
                ino,
                &SetAttr {
                    size: Some(0),
                    ..SetAttr::default()
                },
            )?;
        } else {
            self.read_inode(ino)?;
        }
        self.add_open(ino);
        Ok(Opened {
            fh: self.files.insert(ino),
            passthrough: None,
            keep_cache: true,
            direct_io: false,
        })
    }

    fn create(
        &self,
        c: &Caller,
        parent: Ino,
        name: &OsStr,
        mode: u32,
        flags: i32,
    ) -> FsResult<(Entry, Opened)> {
        let entry = match self.make(
            c,
            parent,
            name,
            InodeRec::new(FileKind::File, mode, 0, 0, 0),
        ) {
            Err(FsError::Os(Errno::EEXIST)) => {
                rules::create_over_existing(flags)?;
                self.lookup(c, parent, name)?
            }
            other => other?,
        };
        let opened = self.open(c, entry.attr.ino, flags & !libc::O_TRUNC)?;
        Ok((entry, opened))
    }

    fn read(&self, _ino: Ino, fh: Fh, offset: u64, size: u32) -> FsResult<Vec<u8>> {
        self.read_data(self.handle_ino(fh)?, offset, size)
    }

    fn write(&self, _ino: Ino, fh: Fh, offset: u64, data: &[u8], kill: bool) -> FsResult<u32> {
        let ino = self.handle_ino(fh)?;
        if kill {
            self.kill_privileges(ino)?;
        }
        self.write_data(ino, offset, data)
    }

    /// A block device's: its logical sector (an RBD image's block device has 512 bytes), as
    /// a disk filesystem on it would demand.
    fn direct_io_alignment(&self, _fh: Fh) -> FsResult<u64> {
        Ok(DIRECT_IO_ALIGN)
    }

    fn release(&self, _ino: Ino, fh: Fh) -> FsResult<()> {
        let ino = *self.files.remove(fh)?;
        self.unreach(ino, 0, true)
    }

    fn fsync(&self, _ino: Ino, fh: Fh, _datasync: bool) -> FsResult<()> {
        self.handle_ino(fh)?;
        self.sync_all()
    }

    fn opendir(&self, _caller: &Caller, ino: Ino) -> FsResult<Fh> {
        dir(&self.read_inode(ino)?)?;
        self.add_open(ino);
        Ok(self.dirs.insert(Mutex::new(DirCursor::default())))
    }

    fn readdir(
        &self,
        ino: Ino,
        fh: Fh,
        offset: u64,
        plus: bool,
        add: &mut dyn FnMut(DirEntry) -> bool,
    ) -> FsResult<()> {
        let handle = self.dirs.get(fh)?;
        let unseen = self.read_dir(ino, &mut handle.lock(), offset, plus, add)?;
        if let Some(child) = unseen {
            self.forget(child, 1);
        }
        Ok(())
    }

    fn releasedir(&self, ino: Ino, fh: Fh) -> FsResult<()> {
        self.dirs.remove(fh)?;
        self.unreach(ino, 0, true)
    }

    fn fsyncdir(&self, _ino: Ino, fh: Fh, _datasync: bool) -> FsResult<()> {
        self.dirs.get(fh)?;
        self.sync_all()
    }

    fn statfs(&self) -> FsResult<StatFs> {
        // The quota's byte limit is the image's usable capacity.
        Ok(rules::statfs(self.quota.usage(), self.quota.limits(), 0))
    }

    fn setxattr(
        &self,
        ino: Ino,
        name: &OsStr,
        value: &[u8],
        flags: i32,
        kill_sgid: bool,
    ) -> FsResult<()> {
        if value.len() > XATTR_VALUE_MAX {
            return Err(os(Errno::E2BIG));
        }
        if let Some(kind) = acl::kind_of(name) {
            return self.set_acl(ino, kind, value, kill_sgid);
        }
        self.metadata_room()?;
        let redo = |_: &()| {
            Some((
                Op::SetXattr {
                    ino,
                    name: name.as_bytes().to_vec(),
                    value: value.to_vec(),
                    flags,
                    kill_sgid,
                },
                0,
            ))
        };
        let bound = REDO_SMALL + name.len() + value.len();
        self.transact_logged(
            bound,
            &[],
            |t| {
                let mut rec = t.inode(ino)?;
                rules::check_xattr_kind(rec.kind(), name)?;
                let mut x = t.tx.open_table(XATTRS).io()?;
                let exists = x.get((ino, name.as_bytes())).io()?.is_some();
                rules::check_xattr_flags(flags, exists)?;
                x.insert((ino, name.as_bytes()), value).io()?;
                drop(x);
                rec.ctime = now();
                t.put_inode(ino, &rec)
            },
            redo,
        )
    }

    fn getxattr(&self, ino: Ino, name: &OsStr, size: u32) -> FsResult<XattrReply> {
        let tx = self.db.begin_read().io()?;
        let x = tx.open_table(XATTRS).io()?;
        let v = x
            .get((ino, name.as_bytes()))
            .io()?
            .ok_or(os(Errno::ENODATA))?;
        rules::xattr_reply(v.value(), size)
    }

    fn listxattr(&self, ino: Ino, size: u32) -> FsResult<XattrReply> {
        let tx = self.db.begin_read().io()?;
        let x = tx.open_table(XATTRS).io()?;
        let mut list = Vec::new();
        for entry in x.range((ino, &[][..])..(ino + 1, &[][..])).io()? {
            let (k, _) = entry.io()?;
            list.extend_from_slice(k.value().1);
            list.push(0);
        }
        rules::xattr_reply(&list, size)
    }

    fn removexattr(&self, ino: Ino, name: &OsStr) -> FsResult<()> {
        let redo = |_: &()| {
            Some((
                Op::RemoveXattr {
                    ino,
                    name: name.as_bytes().to_vec(),
                },
                0,
            ))
        };
        self.transact_logged(
            REDO_SMALL + name.len(),
            &[],
            |t| {
                let mut rec = t.inode(ino)?;
                let removed =
                    t.tx.open_table(XATTRS)
                        .io()?
                        .remove((ino, name.as_bytes()))
                        .io()?
                        .is_some();
                match removed {
                    true => {
                        rec.ctime = now();
                        t.put_inode(ino, &rec)
                    }
                    // Removing an ACL a node does not have succeeds, as on ext4.
                    false if acl::kind_of(name).is_some() => Ok(()),
                    false => Err(os(Errno::ENODATA)),
                }
            },
            redo,
        )
    }

    fn access(&self, _caller: &Caller, ino: Ino, _mask: i32) -> FsResult<()> {
        self.read_inode(ino).map(drop)
    }

    fn fallocate(&self, _ino: Ino, fh: Fh, offset: u64, length: u64, mode: i32) -> FsResult<()> {
        self.fallocate_data(self.handle_ino(fh)?, offset, length, mode)
    }

    fn lseek(&self, _ino: Ino, fh: Fh, offset: i64, whence: i32) -> FsResult<i64> {
        self.seek(self.handle_ino(fh)?, offset, whence)
    }

    fn copy_file_range(&self, req: &CopyRange) -> FsResult<u32> {
        let data = self.read_data(
            self.handle_ino(req.fh_in)?,
            req.offset_in,
            req.len.min(1 << 24) as u32,
        )?;
        self.write_data(self.handle_ino(req.fh_out)?, req.offset_out, &data)
    }

    fn usage(&self) -> UsageSnapshot {
        self.quota.usage()
    }

    fn limits(&self) -> crate::fs::quota::Limits {
        self.quota.limits()
    }

    fn resize(&self, to: &crate::fs::quota::Resize) -> Result<(), crate::fs::quota::ResizeError> {
        self.resize_online(to)
    }

    fn releases(&self) -> u64 {
        self.quota.releases()
    }

    fn wait_for_release(&self, seen: u64, deadline: std::time::Instant) -> bool {
        self.quota.wait_for_release(seen, deadline)
    }

    /// One durable commit makes every earlier commit and data write durable too.
    fn sync_all(&self) -> FsResult<()> {
        self.commit_durably()
    }

    fn usage_at_rest(&self) -> UsageSnapshot {
        self.usage()
    }

    /// Its usage changes only with its own operations.
    fn settle(&self) {}

    fn restore_handle(&self, fh: Fh, ino: Ino, _flags: i32, is_dir: bool) -> FsResult<()> {
        let rec = self.read_inode(ino)?;
        if is_dir {
            dir(&rec)?;
            self.add_open(ino);
            self.dirs
                .insert_at(fh, Mutex::new(crate::fs::handles::DirCursor::default()));
        } else {
            self.add_open(ino);
            self.files.insert_at(fh, ino);
        }
        Ok(())
    }

    /// Its data is in the image, not in a host directory.
    fn host_copied(&self) {}

    fn handles_restored(&self) {
        if let Err(e) = self.delete_unheld_orphans() {
            log::warn!("deleting inodes without a name after a restart: {e:?}");
        }
    }

    /// What only this process holds goes to the image: a durable commit.
    fn persist_for_successor(&self) -> FsResult<()> {
        self.commit_durably()
    }

    /// Copied while the gate holds (rbd snapshots are librbd's own).
    fn capture(&self) -> FsResult<Option<Box<dyn crate::fs::tree_copy::Capture>>> {
        Ok(None)
    }

    fn health(&self) -> Health {
        self.device.health()
    }
}
