//! ROOT is private to the daemon: no user but root reaches anything under it.
//!
//! Volume data (`ROOT/volumes/NAME/data`) lives on a host filesystem that honours setuid bits
//! and device nodes, and a container's root can create both. If host users could reach it, a
//! setuid-root binary written by a container would run as root on the host (the shape of
//! Docker's CVE-2021-41091, which Docker closed the same way: a private parent directory).
//! So ROOT and `ROOT/volumes` are 0700 and root's; `trusted_dir` checks that no other user
//! can rename or replace ROOT or a directory above it.
//! Users reach a volume only where root bind-mounts it (`fvol mount --target`, containers).
use std::fs::{self, DirBuilder, Permissions};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::Path;

use super::DaemonError;

const PRIVATE: u32 = 0o700;

/// Creates ROOT (0700) if it is missing; changes nothing that exists and creates nothing in
/// it. Who may change ROOT is checked next (`trusted_dir`), before `tighten` changes a mode.
pub fn create(root: &Path) -> Result<(), DaemonError> {
    if !root.is_absolute() {
        return Err(DaemonError::io(
            format!("refusing fvol root {}", root.display()),
            std::io::Error::other("the fvol root must be an absolute path"),
        ));
    }
    if let Some(parent) = root.parent() {
        DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(parent)
            .map_err(|e| DaemonError::io(format!("creating {}", parent.display()), e))?;
    }
    make_dir(root)
}

fn make_dir(dir: &Path) -> Result<(), DaemonError> {
    match DirBuilder::new().mode(PRIVATE).create(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => {
            Err(DaemonError::io(format!("creating {}", dir.display()), e))
        }
        _ => Ok(()),
    }
}

/// Makes ROOT and `ROOT/volumes` root's directories with mode 0700, creating `volumes` and
/// tightening what an older fvol made more open (0711).
pub fn tighten(root: &Path) -> Result<(), DaemonError> {
    make_dir(&root.join("volumes"))?;
    for dir in [root.to_path_buf(), root.join("volumes")] {
        make_private(&dir)?;
    }
    Ok(())
}

/// Checks that `dir` is a directory of root's and gives it mode 0700.
fn make_private(dir: &Path) -> Result<(), DaemonError> {
    let io = |what: &str, e| DaemonError::io(format!("{what} {}", dir.display()), e);
    let meta = fs::metadata(dir).map_err(|e| io("inspecting", e))?;
    if !meta.is_dir() || meta.uid() != 0 {
        return Err(DaemonError::io(
            format!("refusing {}", dir.display()),
            std::io::Error::other(format!(
                "it must be a directory owned by root (found a {} owned by uid {})",
                if meta.is_dir() { "directory" } else { "file" },
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
        let root = base.path().join("a/root");
        create(&root).unwrap();
        tighten(&root).unwrap();
        for dir in [root.clone(), root.join("volumes")] {
            assert_eq!(fs::metadata(&dir).unwrap().mode() & 0o7777, 0o700);
        }
        // An older fvol's 0711 is tightened; create alone changes nothing.
        fs::set_permissions(root.join("volumes"), Permissions::from_mode(0o711)).unwrap();
        create(&root).unwrap();
        assert_eq!(fs::read_dir(&root).unwrap().count(), 1);
        assert_eq!(
            fs::metadata(root.join("volumes")).unwrap().mode() & 0o7777,
            0o711
        );
        tighten(&root).unwrap();
        assert_eq!(
            fs::metadata(root.join("volumes")).unwrap().mode() & 0o7777,
            0o700
        );
    }

    #[test]
    fn a_file_in_place_of_volumes_is_refused() {
        let base = tempfile::tempdir().unwrap();
        let root = base.path().join("root");
        fs::create_dir(&root).unwrap();
        fs::write(root.join("volumes"), b"x").unwrap();
        let err = tighten(&root).unwrap_err().to_string();
        assert!(err.contains("must be a directory owned by root"), "{err}");
    }
}
