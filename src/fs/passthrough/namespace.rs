//! Names: lookup, creation of every node type, unlink, rmdir, rename and link.
use std::ffi::OsStr;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;

use nix::errno::Errno;
use nix::fcntl::AtFlags;
use nix::fcntl::{AT_FDCWD, RenameFlags, renameat2};
use nix::sys::stat::{FchmodatFlags, Mode, fchmodat, fstat, fstatat};
use nix::unistd::{Gid, Uid, UnlinkatFlags, fchownat, linkat, unlinkat};

use super::PassthroughFs;
use super::attr::attr_of;
use super::inodes::Inode;
use crate::fs::{Caller, Entry, FileKind, FsError, FsResult, Ino, Rename, acl};

/// Bytes a directory may grow by when it gains an entry.
const DIR_GROWTH_BLOCKS: u64 = 1;

impl PassthroughFs {
    /// Looks up `name` in the directory `parent` and adds one kernel lookup reference.
    pub(super) fn lookup_entry(
        &self,
        parent: &impl AsFd,
        name: &OsStr,
    ) -> FsResult<(Arc<Inode>, Entry)> {
        let fd = self.inodes.open_path(parent.as_fd(), name)?;
        let st = fstat(&fd)?;
        let (inode, _) = self.inodes.lookup_ref(fd, &st);
        let entry = Entry {
            attr: attr_of(inode.ino, &st),
            generation: 0,
        };
        Ok((inode, entry))
    }

    /// Creates a node with `make` (run as root in `parent`, given the permissions to create it
    /// with; `mode` includes the type bits), then gives it to the caller, as if the caller had
    /// made it: owner uid, and gid unless the parent is setgid (the host already applied the
    /// setgid rule). The mode is the caller's, masked by the caller's umask unless the parent
    /// has a default ACL, whose inheritance the host does. Reserves the inode and the bytes it
    /// may use first.
    pub(super) fn create_node<T>(
        &self,
        caller: &Caller,
        parent: Ino,
        name: &OsStr,
        mode: u32,
        reserve_bytes: u64,
        make: impl FnOnce(&OwnedFd, Mode) -> FsResult<T>,
    ) -> FsResult<(Arc<Inode>, Entry, T)> {
        let parent = self.inodes.get(parent)?;
        let parent_fd = self.inodes.fd(&parent)?;
        let kind = FileKind::from_mode(mode).ok_or(FsError::Invalid)?;
        let default = match kind {
            FileKind::Symlink => None,
            _ => self.host_default_acl(parent_fd.as_fd())?,
        };
        // What ext4 makes of it. The host makes the same: under a default ACL it ignores the
        // handler's umask, and without one `mode_to_restore` undoes it.
        let mode = acl::inherit(default.as_deref(), kind, mode, caller.umask)?.mode;
        let _reservation = self
            .quota
            .reserve(reserve_bytes + DIR_GROWTH_BLOCKS * self.block, 1)?;
        let made = make(&parent_fd, Mode::from_bits_truncate(mode & 0o7777))?;
        let parent_st = self.reaccount_from(&parent, parent_fd.as_fd())?;
        let inherit_gid = parent_st.st_mode & libc::S_ISGID != 0;
        let gid = (!inherit_gid && caller.gid != 0).then_some(Gid::from_raw(caller.gid));
        let owner = (caller.uid != 0).then_some(Uid::from_raw(caller.uid));
        // The handler is root: a root caller's node already has the right owner.
        let chown = match (owner, gid) {
            (None, None) => Ok(()),
            _ => fchownat(&parent_fd, name, owner, gid, AtFlags::AT_SYMLINK_NOFOLLOW),
        };
        let (inode, mut entry) = self.lookup_entry(&parent_fd, name)?;
        self.account_new(&inode);
        if let Err(e) = chown {
            return Err(e.into());
        }
        let perm = entry.attr.perm as u32;
        if let Some(want) = mode_to_restore(mode, perm, entry.attr.kind) {
            let fd = self.inodes.fd(&inode)?;
            let path = crate::sys::proc_fd_path(fd.as_fd());
            let want = Mode::from_bits_truncate(want);
            fchmodat(
                AT_FDCWD,
                path.as_c_str(),
                want,
                FchmodatFlags::FollowSymlink,
            )?;
        }
        let st = self.reaccount(&inode)?;
        entry.attr = attr_of(inode.ino, &st);
        Ok((inode, entry, made))
    }

    /// Removes a name. The inode it names is held open across the removal, so it stays alive
    /// (with its number) until `lost_name` has looked at its link count.
    pub(super) fn remove_name(&self, parent: Ino, name: &OsStr, dir: bool) -> FsResult<()> {
        let parent = self.inodes.get(parent)?;
        let parent_fd = self.inodes.fd(&parent)?;
        let victim = self.inodes.open_path(parent_fd.as_fd(), name)?;
        let st = fstat(&victim)?;
        let flag = if dir {
            UnlinkatFlags::RemoveDir
        } else {
            UnlinkatFlags::NoRemoveDir
        };
        let _removing = self.removals.lock(Inode::key_of(&st));
        let kept = self.keep_before_removal(victim.as_fd(), &st);
        if let Err(e) = unlinkat(&parent_fd, name, flag) {
            if let Some(node) = kept {
                self.unkeep(&node);
            }
            return Err(e.into());
        }
        self.reaccount_from(&parent, parent_fd.as_fd())?;
        self.lost_name(victim, kept)
    }

    pub(super) fn do_rename(&self, r: &Rename<'_>) -> FsResult<()> {
        let (name, new_name) = (r.name, r.new_name);
        let flags = RenameFlags::from_bits(r.flags).ok_or(FsError::Invalid)?;
        let from = self.inodes.get(r.parent)?;
        let to = self.inodes.get(r.new_parent)?;
        let (from_fd, to_fd) = (self.inodes.fd(&from)?, self.inodes.fd(&to)?);
        // The inode a plain rename replaces loses a name: held open across the rename.
        let replaced = if flags.contains(RenameFlags::RENAME_EXCHANGE) {
            None
        } else {
            match self.inodes.open_path(to_fd.as_fd(), new_name) {
                Ok(fd) => Some(fd),
                Err(FsError::Os(Errno::ENOENT)) => None,
                Err(e) => return Err(e),
            }
        };
        let moved = fstatat(&from_fd, name, AtFlags::AT_SYMLINK_NOFOLLOW)?;
        let victim = match replaced {
            Some(fd) => {
                let st = fstat(&fd)?;
                // Two names of one inode: the rename changes nothing.
                (Inode::key_of(&st) != Inode::key_of(&moved)).then_some((fd, st))
            }
            None => None,
        };
        let _removing = victim
            .as_ref()
            .map(|(_, st)| self.removals.lock(Inode::key_of(st)));
        let kept = victim
            .as_ref()
            .and_then(|(fd, st)| self.keep_before_removal(fd.as_fd(), st));
        // A whiteout is a new inode (a 0:0 character device left at the source name): it is
        // admitted against the inode quota first and counted once it exists.
        let whiteout = flags.contains(RenameFlags::RENAME_WHITEOUT);
        let _reservation = whiteout
            .then(|| self.quota.reserve(DIR_GROWTH_BLOCKS * self.block, 1))
            .transpose()?;
        if let Err(e) = renameat2(&from_fd, name, &to_fd, new_name, flags) {
            if let Some(node) = kept {
                self.unkeep(&node);
            }
            return Err(e.into());
        }
        if whiteout {
            self.account_whiteout(from_fd.as_fd(), name);
        }
        self.reaccount_from(&from, from_fd.as_fd())?;
        if to.ino != from.ino {
            self.reaccount_from(&to, to_fd.as_fd())?;
        }
        match victim {
            Some((fd, _)) => self.lost_name(fd, kept),
            None => Ok(()),
        }
    }

    pub(super) fn do_link(&self, ino: Ino, new_parent: Ino, new_name: &OsStr) -> FsResult<Entry> {
        let inode_fd = self.node_fd(ino)?;
        let parent = self.inodes.get(new_parent)?;
        let parent_fd = self.inodes.fd(&parent)?;
        let _reservation = self.quota.reserve(DIR_GROWTH_BLOCKS * self.block, 0)?;
        let path = crate::sys::proc_fd_path(inode_fd.as_fd());
        linkat(
            AT_FDCWD,
            path.as_c_str(),
            &parent_fd,
            new_name,
            AtFlags::AT_SYMLINK_FOLLOW,
        )?;
        self.reaccount_from(&parent, parent_fd.as_fd())?;
        let (_, entry) = self.lookup_entry(&parent_fd, new_name)?;
        Ok(entry)
    }
}

/// The mode a new node must be given when the host's differs from the one it was created
/// with (`requested`, after the umask or default ACL): the handler's umask may have masked
/// bits, and chown clears setuid and setgid. A setgid bit a directory inherited from its
/// parent is kept.
fn mode_to_restore(requested: u32, actual: u32, kind: FileKind) -> Option<u32> {
    if kind == FileKind::Symlink {
        return None;
    }
    let inherited = if kind == FileKind::Dir {
        actual & libc::S_ISGID
    } else {
        0
    };
    let want = (requested & 0o7777) | inherited;
    (actual & 0o7777 != want).then_some(want)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restores_masked_and_cleared_bits() {
        assert_eq!(mode_to_restore(0o777, 0o755, FileKind::Dir), Some(0o777));
        assert_eq!(mode_to_restore(0o4755, 0o755, FileKind::File), Some(0o4755));
        assert_eq!(mode_to_restore(0o644, 0o644, FileKind::File), None);
        assert_eq!(mode_to_restore(0o755, 0o2755, FileKind::Dir), None);
        assert_eq!(mode_to_restore(0o777, 0o777, FileKind::Symlink), None);
    }
}
