//! ROOT is private to the daemon: no user but root reaches anything under it.
//!
//! Volume data (`ROOT/volumes/NAME/data`) lives on a host filesystem that honours setuid bits
//! and device nodes, and a container's root can create both. If host users could reach it, a
//! setuid-root binary written by a container would run as root on the host (the shape of
//! Docker's CVE-2021-41091, which Docker closed the same way: a private parent directory).
//! So ROOT and `ROOT/volumes` are 0700 and root's, and every directory above ROOT must be
//! one no other user can rename or replace (root's, not writable by others unless sticky).
//! Users reach a volume only where root bind-mounts it (`fvol mount --target`, containers).
use std::fs::{self, DirBuilder, Permissions};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::Path;

use super::DaemonError;

const PRIVATE: u32 = 0o700;

/// Creates ROOT and `ROOT/volumes` (0700), tightens them if an older fvol made them more open,
/// and refuses a ROOT that a user other than root could swap out.
pub fn prepare(root: &Path) -> Result<(), DaemonError> {
    if !root.is_absolute() {
        return Err(refuse(root, "the fvol root must be an absolute path"));
    }
    for ancestor in root.ancestors().skip(1) {
        check_ancestor(root, ancestor)?;
    }
    for dir in [root.to_path_buf(), root.join("volumes")] {
        make_private(&dir)?;
    }
    Ok(())
}

fn refuse(root: &Path, why: &str) -> DaemonError {
    DaemonError::io(
        format!("refusing fvol root {}", root.display()),
        std::io::Error::other(why.to_string()),
    )
}

/// A directory above ROOT: if another user could rename entries in it, they could replace
/// ROOT (or a directory on the way) with one of their own between two start-ups.
fn check_ancestor(root: &Path, dir: &Path) -> Result<(), DaemonError> {
    let meta = match fs::symlink_metadata(dir) {
        Ok(m) => m,
        // Created below, by root, with the private mode.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(DaemonError::io(format!("inspecting {}", dir.display()), e)),
    };
    let mode = meta.mode();
    let sticky = mode & 0o1000 != 0;
    let others_write = mode & 0o022 != 0;
    if meta.file_type().is_symlink() {
        // A symlink owned by root in a root-only directory is root's own choice (/var/run).
        if meta.uid() == 0 {
            return Ok(());
        }
        return Err(refuse(
            root,
            &format!("{} is a symlink owned by uid {}", dir.display(), meta.uid()),
        ));
    }
    if meta.uid() != 0 {
        return Err(refuse(
            root,
            &format!(
                "{} is owned by uid {}, who could replace the fvol root; use a root-owned path",
                dir.display(),
                meta.uid()
            ),
        ));
    }
    if others_write && !sticky {
        return Err(refuse(
            root,
            &format!(
                "{} is writable by other users (mode {:o}), who could replace the fvol root",
                dir.display(),
                mode & 0o7777
            ),
        ));
    }
    Ok(())
}

/// Creates `dir` with mode 0700, or checks and tightens an existing one.
fn make_private(dir: &Path) -> Result<(), DaemonError> {
    let io = |what: &str, e| DaemonError::io(format!("{what} {}", dir.display()), e);
    match DirBuilder::new().mode(PRIVATE).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            DirBuilder::new()
                .recursive(true)
                .mode(0o755)
                .create(dir.parent().unwrap_or(dir))
                .map_err(|e| io("creating", e))?;
            DirBuilder::new()
                .mode(PRIVATE)
                .create(dir)
                .map_err(|e| io("creating", e))?;
        }
        Err(e) => return Err(io("creating", e)),
    }
    let meta = fs::symlink_metadata(dir).map_err(|e| io("inspecting", e))?;
    if !meta.is_dir() || meta.uid() != 0 {
        return Err(DaemonError::io(
            format!("refusing {}", dir.display()),
            std::io::Error::other(format!(
                "it must be a directory owned by root (found {} owned by uid {})",
                if meta.file_type().is_symlink() {
                    "a symlink"
                } else if meta.is_dir() {
                    "a directory"
                } else {
                    "a file"
                },
                meta.uid()
            )),
        ));
    }
    if meta.mode() & 0o7777 != PRIVATE {
        log::info!(
            "{}: mode {:o} -> {PRIVATE:o} (volume data is private to root)",
            dir.display(),
            meta.mode() & 0o7777
        );
        fs::set_permissions(dir, Permissions::from_mode(PRIVATE))
            .map_err(|e| io("changing the mode of", e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_and_volumes_become_private() {
        let base = tempfile::tempdir().unwrap();
        fs::set_permissions(base.path(), Permissions::from_mode(0o755)).unwrap();
        let root = base.path().join("a/root");
        prepare(&root).unwrap();
        for dir in [root.clone(), root.join("volumes")] {
            assert_eq!(fs::metadata(&dir).unwrap().mode() & 0o7777, 0o700);
        }
        // An older fvol's 0711 is tightened.
        fs::set_permissions(root.join("volumes"), Permissions::from_mode(0o711)).unwrap();
        prepare(&root).unwrap();
        assert_eq!(
            fs::metadata(root.join("volumes")).unwrap().mode() & 0o7777,
            0o700
        );
    }

    #[test]
    fn an_ancestor_others_can_write_is_refused() {
        let base = tempfile::tempdir().unwrap();
        let open = base.path().join("open");
        fs::create_dir(&open).unwrap();
        fs::set_permissions(&open, Permissions::from_mode(0o777)).unwrap();
        let err = prepare(&open.join("root")).unwrap_err().to_string();
        assert!(err.contains("writable by other users"), "{err}");
        // Sticky, as /tmp: others cannot rename root's entries.
        fs::set_permissions(&open, Permissions::from_mode(0o1777)).unwrap();
        prepare(&open.join("root")).unwrap();
    }

    #[test]
    fn a_symlinked_root_is_refused() {
        let base = tempfile::tempdir().unwrap();
        fs::set_permissions(base.path(), Permissions::from_mode(0o755)).unwrap();
        fs::create_dir(base.path().join("real")).unwrap();
        std::os::unix::fs::symlink(base.path().join("real"), base.path().join("root")).unwrap();
        let err = prepare(&base.path().join("root")).unwrap_err().to_string();
        assert!(err.contains("a symlink"), "{err}");
    }
}
