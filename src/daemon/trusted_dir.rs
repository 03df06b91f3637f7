//! Where the daemon may keep its files (catalog, lock, sockets, the plugin's spec file): only in
//! directories that no user but root can change. Anyone who could write such a directory, or
//! rename one above it, could plant a symlink or a file of their own where the root daemon is
//! about to create one (its catalog, say), or swap the daemon's socket for theirs.
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Anyone other than the owner may write.
const GROUP_OR_OTHER_WRITE: u32 = 0o022;
const STICKY: u32 = 0o1000;

/// What one directory's owner and mode allow, for `check`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DirStat {
    pub uid: u32,
    pub mode: u32,
}

/// Why a directory is not trusted, or None. `holds_files` is true for the directory the daemon
/// creates files in: there even a sticky bit is not enough, since a user could create a name
/// (say `fvol.redb`) before the daemon does. Above it, a sticky world-writable directory such
/// as /tmp is fine: no user can rename or remove another's entries in it.
pub fn untrusted_because(stat: DirStat, holds_files: bool, daemon_uid: u32) -> Option<String> {
    if stat.uid != 0 && stat.uid != daemon_uid {
        return Some(format!("is owned by uid {}, not root", stat.uid));
    }
    let writable_by_others = stat.mode & GROUP_OR_OTHER_WRITE != 0;
    if writable_by_others && (holds_files || stat.mode & STICKY == 0) {
        return Some(format!(
            "is writable by users other than its owner (mode {:04o})",
            stat.mode & 0o7777
        ));
    }
    None
}

/// Refuses `dir` unless it and every directory above it (symlinks resolved) belong to root (or
/// the daemon's own user) and only their owner can change them (above `dir`, a sticky
/// directory such as /tmp is allowed). A symlink on the way must belong to root too and lie in
/// such a directory: otherwise its owner could point it elsewhere later, and every path the
/// daemon builds from `dir` would follow. `what` names the files the daemon keeps there.
pub fn check_trusted_dir(dir: &Path, what: &str) -> Result<(), String> {
    check(dir, what, Use::Keep)
}

/// As `check_trusted_dir`, for a directory the daemon reads a file from that it trusts (its
/// configuration): the same rules, since a user who could change the directory could replace
/// the file.
pub fn check_trusted_source_dir(dir: &Path, what: &str) -> Result<(), String> {
    check(dir, what, Use::Read)
}

/// What the daemon does with the directory, for messages.
#[derive(Clone, Copy)]
enum Use {
    Keep,
    Read,
}

fn check(dir: &Path, what: &str, usage: Use) -> Result<(), String> {
    let what = &(what, usage);
    let daemon_uid = nix::unistd::geteuid().as_raw();
    let real = dir
        .canonicalize()
        .map_err(|e| format!("cannot resolve {}: {e}", dir.display()))?;
    check_chain(dir, &real, what, daemon_uid)?;
    let given =
        std::path::absolute(dir).map_err(|e| format!("cannot resolve {}: {e}", dir.display()))?;
    for link in given.ancestors() {
        let Ok(meta) = std::fs::symlink_metadata(link) else {
            continue;
        };
        if !meta.file_type().is_symlink() {
            continue;
        }
        if meta.uid() != 0 && meta.uid() != daemon_uid {
            let why = format!("is a symlink owned by uid {}, not root", meta.uid());
            return Err(refusal(dir, &real, link, what, &why));
        }
        if let Some(parent) = link.parent() {
            let parent = parent
                .canonicalize()
                .map_err(|e| format!("cannot resolve {}: {e}", parent.display()))?;
            check_chain_above(dir, &real, &parent, what, daemon_uid)?;
        }
    }
    Ok(())
}

/// `real` (the directory holding the files) and everything above it.
fn check_chain(dir: &Path, real: &Path, what: &(&str, Use), daemon_uid: u32) -> Result<(), String> {
    check_one(dir, real, real, true, what, daemon_uid)?;
    match real.parent() {
        Some(parent) => check_chain_above(dir, real, parent, what, daemon_uid),
        None => Ok(()),
    }
}

/// `from` and every directory above it, by the rule for directories above the files.
fn check_chain_above(
    dir: &Path,
    real: &Path,
    from: &Path,
    what: &(&str, Use),
    daemon_uid: u32,
) -> Result<(), String> {
    from.ancestors()
        .try_for_each(|path| check_one(dir, real, path, false, what, daemon_uid))
}

fn check_one(
    dir: &Path,
    real: &Path,
    path: &Path,
    holds_files: bool,
    what: &(&str, Use),
    daemon_uid: u32,
) -> Result<(), String> {
    let meta = std::fs::symlink_metadata(path)
        .map_err(|e| format!("cannot check {}: {e}", path.display()))?;
    let stat = DirStat {
        uid: meta.uid(),
        mode: meta.mode(),
    };
    match untrusted_because(stat, holds_files, daemon_uid) {
        Some(why) => Err(refusal(dir, real, path, what, &why)),
        None => Ok(()),
    }
}

fn refusal(dir: &Path, real: &Path, culprit: &Path, what: &(&str, Use), why: &str) -> String {
    let (what, usage) = *what;
    let shown: PathBuf = if dir == real {
        dir.to_owned()
    } else {
        PathBuf::from(format!("{} (= {})", dir.display(), real.display()))
    };
    let (verb, risk) = match usage {
        Use::Keep => (
            "keep",
            "put a file or symlink of their own where the root daemon creates one",
        ),
        Use::Read => ("read", "replace it with a file of their own"),
    };
    format!(
        "refusing to {verb} the {what} in {}: {} {why}; a user who can change it could {risk}. \
         Use a directory that only root can write (and whose parents only root can change), or \
         fix its owner and mode",
        shown.display(),
        culprit.display()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAEMON: u32 = 0;

    fn why(uid: u32, mode: u32, holds_files: bool) -> Option<String> {
        untrusted_because(DirStat { uid, mode }, holds_files, DAEMON)
    }

    #[test]
    fn owner_and_mode_rules() {
        for mode in [0o700, 0o711, 0o755, 0o750] {
            assert_eq!(why(0, mode, true), None, "{mode:o}");
            assert_eq!(why(0, mode, false), None, "{mode:o}");
        }
        // /tmp: fine above the directory holding the files, never as that directory.
        assert_eq!(why(0, 0o1777, false), None);
        assert!(why(0, 0o1777, true).unwrap().contains("mode 1777"));
        for mode in [0o775, 0o757, 0o777, 0o2775] {
            assert!(
                why(0, mode, false).unwrap().contains("writable"),
                "{mode:o}"
            );
        }
        assert!(why(1000, 0o700, true).unwrap().contains("uid 1000"));
        assert!(why(1000, 0o1777, false).unwrap().contains("uid 1000"));
        // The daemon's own user counts as root (a daemon run by another user for tests).
        assert_eq!(
            untrusted_because(
                DirStat {
                    uid: 1000,
                    mode: 0o700
                },
                true,
                1000
            ),
            None
        );
    }

    #[test]
    fn checks_every_directory_above() {
        let top = tempfile::tempdir().unwrap();
        let dir = top.path().join("a/b");
        std::fs::create_dir_all(&dir).unwrap();
        let set = |p: &Path, mode| {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap()
        };
        set(&top.path().join("a"), 0o755);
        set(&dir, 0o700);
        check_trusted_dir(&dir, "catalog").unwrap();

        set(&top.path().join("a"), 0o777);
        let err = check_trusted_dir(&dir, "catalog").unwrap_err();
        assert!(
            err.contains(&format!("{} is writable", top.path().join("a").display()))
                && err.contains("catalog"),
            "{err}"
        );
        set(&top.path().join("a"), 0o1777);
        check_trusted_dir(&dir, "catalog").unwrap();
        let err = check_trusted_dir(&top.path().join("a"), "catalog").unwrap_err();
        assert!(err.contains("mode 1777"), "{err}");

        // A symlink is judged by where it leads ...
        let link = top.path().join("link");
        std::os::unix::fs::symlink(top.path().join("a"), &link).unwrap();
        let err = check_trusted_dir(&link, "socket").unwrap_err();
        assert!(err.contains("(= "), "{err}");
        set(&top.path().join("a"), 0o755);
        check_trusted_dir(&link, "socket").unwrap();
        check_trusted_dir(&link.join("b"), "socket").unwrap();
        // ... and by where it lies: in a directory others may write, it could be repointed.
        let open = top.path().join("open");
        std::fs::create_dir(&open).unwrap();
        set(&open, 0o1777);
        let planted = open.join("link");
        std::os::unix::fs::symlink(&dir, &planted).unwrap();
        check_trusted_dir(&planted, "socket").unwrap();
        set(&open, 0o777);
        let err = check_trusted_dir(&planted, "socket").unwrap_err();
        assert!(
            err.contains(&format!("{} is writable", open.display())),
            "{err}"
        );
        if nix::unistd::geteuid().is_root() {
            set(&open, 0o1777);
            std::os::unix::fs::lchown(&planted, Some(65534), None).unwrap();
            let err = check_trusted_dir(&planted, "socket").unwrap_err();
            assert!(err.contains("symlink owned by uid 65534"), "{err}");
        }
    }
}
