//! POSIX ACLs as Linux keeps them (`fs/posix_acl.c`), for the cores that store their own
//! xattrs (memory, image) and for the passthrough core's create mode. An ACL is the value of
//! `system.posix_acl_access` or `system.posix_acl_default`: a version word (2) and 8-byte
//! entries (tag, permissions, id), little-endian, in the order the kernel checks (owner,
//! named users, owning group, named groups, mask, other).
//!
//! With FUSE_POSIX_ACL the kernel checks permissions against these ACLs itself and leaves to
//! the handler what ext4 does on its side: inheritance at create (`inherit`), the mode an access
//! ACL implies (`set_access`), and the ACL a chmod changes (`chmod`).
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;

use nix::errno::Errno;

use super::{FileKind, FsError, FsResult};

pub const ACCESS: &str = "system.posix_acl_access";
pub const DEFAULT: &str = "system.posix_acl_default";

const VERSION: u32 = 2;
const HEADER: usize = 4;
const ENTRY: usize = 8;
/// The id of an entry that names nobody (owner, owning group, mask, other).
const UNDEFINED_ID: u32 = u32::MAX;

const USER_OBJ: u16 = 0x01;
const USER: u16 = 0x02;
const GROUP_OBJ: u16 = 0x04;
const GROUP: u16 = 0x08;
const MASK: u16 = 0x10;
const OTHER: u16 = 0x20;

const RWX: u32 = 0o7;
const PERMS: u32 = 0o777;

/// Which ACL an xattr name is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Access,
    Default,
}

pub fn kind_of(name: &OsStr) -> Option<Kind> {
    match name.as_bytes() {
        n if n == ACCESS.as_bytes() => Some(Kind::Access),
        n if n == DEFAULT.as_bytes() => Some(Kind::Default),
        _ => None,
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct AclEntry {
    tag: u16,
    perm: u16,
    id: u32,
}

/// A valid ACL with at least one entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Acl {
    entries: Vec<AclEntry>,
}

impl Acl {
    /// Parses an xattr value as the kernel does (`posix_acl_from_xattr`, then
    /// `posix_acl_valid`): `None` for an empty value or an ACL of no entries (either removes
    /// one), EOPNOTSUPP for another version, EINVAL for anything malformed.
    pub fn parse(value: &[u8]) -> FsResult<Option<Acl>> {
        if value.is_empty() {
            return Ok(None);
        }
        if value.len() < HEADER || (value.len() - HEADER) % ENTRY != 0 {
            return Err(FsError::Invalid);
        }
        if u32::from_le_bytes(value[..HEADER].try_into().expect("4 bytes")) != VERSION {
            return Err(FsError::Os(Errno::EOPNOTSUPP));
        }
        let entries: Vec<AclEntry> = value[HEADER..]
            .chunks_exact(ENTRY)
            .map(|e| {
                let tag = u16::from_le_bytes([e[0], e[1]]);
                let named = matches!(tag, USER | GROUP);
                AclEntry {
                    tag,
                    perm: u16::from_le_bytes([e[2], e[3]]),
                    id: if named {
                        u32::from_le_bytes([e[4], e[5], e[6], e[7]])
                    } else {
                        UNDEFINED_ID
                    },
                }
            })
            .collect();
        if entries.is_empty() {
            return Ok(None);
        }
        let acl = Acl { entries };
        acl.check()?;
        Ok(Some(acl))
    }

    /// `posix_acl_valid`: known tags in the kernel's order, each base entry once, a mask
    /// wherever a named entry is, and only read, write and execute bits.
    fn check(&self) -> FsResult<()> {
        #[derive(PartialEq)]
        enum State {
            User,
            Group,
            Other,
            Done,
        }
        let mut state = None;
        let mut needs_mask = false;
        for e in &self.entries {
            if u32::from(e.perm) & !RWX != 0 {
                return Err(FsError::Invalid);
            }
            state = Some(match (e.tag, state) {
                (USER_OBJ, None) => State::User,
                (USER, Some(State::User)) if e.id != UNDEFINED_ID => {
                    needs_mask = true;
                    State::User
                }
                (GROUP_OBJ, Some(State::User)) => State::Group,
                (GROUP, Some(State::Group)) if e.id != UNDEFINED_ID => {
                    needs_mask = true;
                    State::Group
                }
                (MASK, Some(State::Group)) => State::Other,
                (OTHER, Some(State::Other)) => State::Done,
                (OTHER, Some(State::Group)) if !needs_mask => State::Done,
                _ => return Err(FsError::Invalid),
            });
        }
        match state {
            Some(State::Done) => Ok(()),
            _ => Err(FsError::Invalid),
        }
    }

    /// The xattr value, as the kernel writes it (`posix_acl_to_xattr`).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER + ENTRY * self.entries.len());
        out.extend_from_slice(&VERSION.to_le_bytes());
        for e in &self.entries {
            out.extend_from_slice(&e.tag.to_le_bytes());
            out.extend_from_slice(&e.perm.to_le_bytes());
            out.extend_from_slice(&e.id.to_le_bytes());
        }
        out
    }

    /// The ACL as text with numeric ids (`user::rw-,user:1000:r--,group::r--,mask::r--,
    /// other::r--`), as GNU tar stores it and `acl_from_text` reads it back.
    pub fn to_text(&self) -> String {
        let entries: Vec<String> = self
            .entries
            .iter()
            .map(|e| {
                let (tag, id) = match e.tag {
                    USER_OBJ => ("user", String::new()),
                    USER => ("user", e.id.to_string()),
                    GROUP_OBJ => ("group", String::new()),
                    GROUP => ("group", e.id.to_string()),
                    MASK => ("mask", String::new()),
                    _ => ("other", String::new()),
                };
                let bit = |b: u16, c: char| if e.perm & b != 0 { c } else { '-' };
                format!("{tag}:{id}:{}{}{}", bit(4, 'r'), bit(2, 'w'), bit(1, 'x'))
            })
            .collect();
        entries.join(",")
    }

    fn perm(&self, tag: u16) -> Option<u32> {
        self.entries
            .iter()
            .find(|e| e.tag == tag)
            .map(|e| u32::from(e.perm))
    }

    /// `posix_acl_equiv_mode`: the permission bits this ACL gives `mode` (the mask stands for
    /// the group bits), and whether the mode alone can say all of it (only the three base
    /// entries).
    fn equiv_mode(&self, mode: u32) -> (u32, bool) {
        let perm = |tag| self.perm(tag).unwrap_or(0);
        let group = self.perm(MASK).unwrap_or_else(|| perm(GROUP_OBJ));
        let bits = perm(USER_OBJ) << 6 | group << 3 | perm(OTHER);
        let minimal = self
            .entries
            .iter()
            .all(|e| matches!(e.tag, USER_OBJ | GROUP_OBJ | OTHER));
        ((mode & !PERMS) | bits, minimal)
    }

    /// `posix_acl_create_masq`: an inherited ACL limited by the mode the creator asked for,
    /// and that mode limited by the ACL; true when the ACL says more than the mode.
    fn create_masq(&mut self, mode: &mut u32) -> bool {
        let mut m = *mode & PERMS;
        let mut extended = false;
        for e in &mut self.entries {
            let p = u32::from(e.perm);
            match e.tag {
                USER_OBJ => {
                    let p = p & (m >> 6);
                    e.perm = p as u16;
                    m &= (p << 6) | !0o700;
                }
                USER | GROUP | MASK => extended = true,
                OTHER => {
                    let p = p & m;
                    e.perm = p as u16;
                    m &= p | !RWX;
                }
                _ => {}
            }
        }
        let group_tag = if self.perm(MASK).is_some() {
            MASK
        } else {
            GROUP_OBJ
        };
        if let Some(e) = self.entries.iter_mut().find(|e| e.tag == group_tag) {
            let p = u32::from(e.perm) & (m >> 3);
            e.perm = p as u16;
            m &= (p << 3) | !0o070;
        }
        *mode = (*mode & !PERMS) | (m & PERMS);
        extended
    }

    /// `__posix_acl_chmod`: the owner, group (the mask, if there is one) and other entries
    /// take the new mode's bits.
    fn chmod(&mut self, mode: u32) {
        let group_tag = if self.perm(MASK).is_some() {
            MASK
        } else {
            GROUP_OBJ
        };
        for e in &mut self.entries {
            let bits = match e.tag {
                USER_OBJ => (mode >> 6) & RWX,
                OTHER => mode & RWX,
                t if t == group_tag => (mode >> 3) & RWX,
                _ => continue,
            };
            e.perm = bits as u16;
        }
    }
}

/// What a new node gets from its parent (`posix_acl_create`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Inherited {
    /// The mode, permission bits masked by the parent's default ACL, or by the umask when the
    /// parent has none.
    pub mode: u32,
    /// Its access ACL, when it says more than the mode.
    pub access: Option<Vec<u8>>,
    /// Its default ACL (directories only): the parent's.
    pub default: Option<Vec<u8>>,
}

/// The mode and ACLs of a new node of `kind` asked for with `mode` by a caller with `umask`,
/// in a directory whose default ACL is `parent_default` (its xattr value, if any). The umask
/// applies only without a default ACL; symlinks take neither.
pub fn inherit(
    parent_default: Option<&[u8]>,
    kind: FileKind,
    mode: u32,
    umask: u32,
) -> FsResult<Inherited> {
    let none = |mode| Inherited {
        mode,
        access: None,
        default: None,
    };
    if kind == FileKind::Symlink {
        return Ok(none(mode));
    }
    let Some(mut acl) = parent_default.map(Acl::parse).transpose()?.flatten() else {
        return Ok(none(mode & !(umask & PERMS)));
    };
    let default = (kind == FileKind::Dir).then(|| acl.to_bytes());
    let mut mode = mode;
    let extended = acl.create_masq(&mut mode);
    Ok(Inherited {
        mode,
        access: extended.then(|| acl.to_bytes()),
        default,
    })
}

/// What setting access ACL `value` on a node of `mode` does (`posix_acl_update_mode`): the
/// new mode (the ACL's base entries; setgid cleared with `kill_sgid`, for a caller outside the
/// node's group without CAP_FSETID), and the value to store, `None` when the mode says all of
/// it (the ACL is then removed, as ext4 does).
pub fn set_access(value: &[u8], mode: u32, kill_sgid: bool) -> FsResult<(u32, Option<Vec<u8>>)> {
    // No entries: the ACL is removed and the mode stays.
    let Some(acl) = Acl::parse(value)? else {
        return Ok((mode, None));
    };
    let (mut mode, minimal) = acl.equiv_mode(mode);
    if kill_sgid {
        mode &= !libc::S_ISGID;
    }
    Ok((mode, (!minimal).then(|| acl.to_bytes())))
}

/// Checks a default ACL `value` for a node of `kind`: only directories have one (EACCES, as
/// ext4). `None` for an ACL of no entries, which removes it.
pub fn check_default(value: &[u8], kind: FileKind) -> FsResult<Option<Vec<u8>>> {
    let acl = Acl::parse(value)?;
    if kind != FileKind::Dir && acl.is_some() {
        return Err(FsError::Os(Errno::EACCES));
    }
    Ok(acl.map(|a| a.to_bytes()))
}

/// The access ACL `value` after a chmod to `mode` (`posix_acl_chmod`); `None` when it does not
/// parse (it was stored checked, so never).
pub fn chmod(value: &[u8], mode: u32) -> Option<Vec<u8>> {
    let mut acl = Acl::parse(value).ok()??;
    acl.chmod(mode);
    Some(acl.to_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An ACL value from (tag, perm, id) entries.
    fn value(entries: &[(u16, u16, u32)]) -> Vec<u8> {
        let acl = Acl {
            entries: entries
                .iter()
                .map(|&(tag, perm, id)| AclEntry { tag, perm, id })
                .collect(),
        };
        acl.to_bytes()
    }

    const U: u32 = UNDEFINED_ID;

    fn base(user: u16, group: u16, other: u16) -> Vec<u8> {
        value(&[
            (USER_OBJ, user, U),
            (GROUP_OBJ, group, U),
            (OTHER, other, U),
        ])
    }

    #[test]
    fn malformed_values_are_refused_as_the_kernel_does() {
        let invalid = Err(FsError::Invalid);
        assert_eq!(Acl::parse(b""), Ok(None));
        assert_eq!(Acl::parse(b"\x02\x00\x00"), invalid);
        assert_eq!(Acl::parse(b"\x02\x00\x00\x00\x01"), invalid);
        assert_eq!(
            Acl::parse(b"\x01\x00\x00\x00"),
            Err(FsError::Os(Errno::EOPNOTSUPP))
        );
        assert_eq!(Acl::parse(b"\x02\x00\x00\x00"), Ok(None));
        // Only an owner entry; owner and other without the group; a bad permission bit.
        assert_eq!(Acl::parse(&value(&[(USER_OBJ, 6, U)])), invalid);
        assert_eq!(
            Acl::parse(&value(&[(USER_OBJ, 6, U), (OTHER, 4, U)])),
            invalid
        );
        assert_eq!(
            Acl::parse(&value(&[
                (USER_OBJ, 8, U),
                (GROUP_OBJ, 4, U),
                (OTHER, 4, U)
            ])),
            invalid
        );
        // A named user needs a mask; entries out of order; an unknown tag.
        let named = [
            (USER_OBJ, 6, U),
            (USER, 4, 7),
            (GROUP_OBJ, 4, U),
            (OTHER, 4, U),
        ];
        assert_eq!(Acl::parse(&value(&named)), invalid);
        let out_of_order = [(GROUP_OBJ, 4, U), (USER_OBJ, 6, U), (OTHER, 4, U)];
        assert_eq!(Acl::parse(&value(&out_of_order)), invalid);
        let unknown = [
            (USER_OBJ, 6, U),
            (GROUP_OBJ, 4, U),
            (0x40, 4, U),
            (OTHER, 4, U),
        ];
        assert_eq!(Acl::parse(&value(&unknown)), invalid);
        let masked = [
            (USER_OBJ, 6, U),
            (USER, 4, 7),
            (GROUP_OBJ, 4, U),
            (MASK, 4, U),
            (OTHER, 4, U),
        ];
        assert!(Acl::parse(&value(&masked)).unwrap().is_some());
        assert!(Acl::parse(&base(7, 5, 0)).unwrap().is_some());
    }

    #[test]
    fn a_default_acl_masks_the_mode_and_the_umask_does_not_apply() {
        // setfacl -d -m u::r,g::r,o::- dir; touch dir/f (mode 0666, umask 077)
        let default = base(4, 4, 0);
        let f = inherit(Some(&default), FileKind::File, 0o100666, 0o077).unwrap();
        assert_eq!(f.mode, 0o100440);
        assert_eq!((f.access, f.default), (None, None));
        let d = inherit(Some(&default), FileKind::Dir, 0o777, 0o022).unwrap();
        assert_eq!(d.mode, 0o440);
        assert_eq!(d.default, Some(default.clone()));
        assert_eq!(d.access, None);
        // Without one the umask applies; symlinks take neither.
        let plain = inherit(None, FileKind::File, 0o100666, 0o027).unwrap();
        assert_eq!(plain.mode, 0o100640);
        let link = inherit(Some(&default), FileKind::Symlink, 0o777, 0o022).unwrap();
        assert_eq!(link.mode, 0o777);
    }

    #[test]
    fn named_entries_are_inherited_under_the_mask() {
        // setfacl -d -m u::rwx,g::rx,o::-,u:65534:rwx,g:65534:r dir
        let default = value(&[
            (USER_OBJ, 7, U),
            (USER, 7, 65534),
            (GROUP_OBJ, 5, U),
            (GROUP, 4, 65534),
            (MASK, 7, U),
            (OTHER, 0, U),
        ]);
        let f = inherit(Some(&default), FileKind::File, 0o666, 0o022).unwrap();
        assert_eq!(f.mode, 0o660);
        let want = value(&[
            (USER_OBJ, 6, U),
            (USER, 7, 65534),
            (GROUP_OBJ, 5, U),
            (GROUP, 4, 65534),
            (MASK, 6, U),
            (OTHER, 0, U),
        ]);
        assert_eq!(f.access, Some(want));
        let d = inherit(Some(&default), FileKind::Dir, 0o700, 0o022).unwrap();
        assert_eq!(d.mode, 0o700);
        assert_eq!(d.default, Some(default));
    }

    #[test]
    fn an_access_acl_sets_the_mode() {
        // setfacl -m u::r,g::r,o::- f: the mode says it all, nothing is stored.
        let (mode, store) = set_access(&base(4, 4, 0), 0o100644, false).unwrap();
        assert_eq!((mode, store), (0o100440, None));
        // A named user: the mask becomes the group bits and the ACL is kept.
        let named = value(&[
            (USER_OBJ, 4, U),
            (USER, 6, 65534),
            (GROUP_OBJ, 4, U),
            (MASK, 6, U),
            (OTHER, 0, U),
        ]);
        let (mode, store) = set_access(&named, 0o100440, false).unwrap();
        assert_eq!((mode, store), (0o100460, Some(named)));
        // Setgid goes for a caller outside the group without CAP_FSETID.
        let (mode, _) = set_access(&base(7, 5, 4), 0o102775, true).unwrap();
        assert_eq!(mode, 0o100754);
        let (mode, _) = set_access(&base(7, 5, 4), 0o102775, false).unwrap();
        assert_eq!(mode, 0o102754);
    }

    #[test]
    fn chmod_sets_the_mask_not_the_group_entry() {
        let acl = value(&[
            (USER_OBJ, 6, U),
            (USER, 7, 65534),
            (GROUP_OBJ, 6, U),
            (MASK, 7, U),
            (OTHER, 4, U),
        ]);
        let want = value(&[
            (USER_OBJ, 6, U),
            (USER, 7, 65534),
            (GROUP_OBJ, 6, U),
            (MASK, 4, U),
            (OTHER, 0, U),
        ]);
        assert_eq!(chmod(&acl, 0o640), Some(want));
        assert_eq!(chmod(&base(6, 4, 4), 0o751), Some(base(7, 5, 1)));
    }

    #[test]
    fn default_acls_only_on_directories() {
        let acl = base(7, 5, 0);
        assert_eq!(check_default(&acl, FileKind::Dir), Ok(Some(acl.clone())));
        assert_eq!(
            check_default(&acl, FileKind::File),
            Err(FsError::Os(Errno::EACCES))
        );
        assert_eq!(check_default(b"\x02\x00\x00\x00", FileKind::File), Ok(None));
    }
}
