//! One daemon per ROOT: an exclusive `flock` on `ROOT/fvol.lock`, holding the owner's pid.
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

use super::DaemonError;

pub const LOCK_FILE: &str = "fvol.lock";

/// Held for the daemon's whole life; the kernel releases it when the process ends, however
/// it ends, so a crashed daemon never blocks the next one.
#[derive(Debug)]
pub struct DaemonLock {
    _file: Flock<File>,
}

impl DaemonLock {
    pub fn acquire(root: &Path) -> Result<DaemonLock, DaemonError> {
        let path = root.join(LOCK_FILE);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            // ROOT is checked to be root's alone, so no user can have planted a symlink here;
            // should one be there anyway, it is refused rather than followed.
            .custom_flags(libc::O_NOFOLLOW)
            .open(&path)
            .map_err(|e| DaemonError::io(format!("opening {}", path.display()), e))?;
        let mut locked = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(locked) => locked,
            Err((mut file, Errno::EWOULDBLOCK)) => {
                return Err(DaemonError::AlreadyRunning {
                    pid: read_pid(&mut file).unwrap_or_else(|| "unknown".to_owned()),
                    root: root.display().to_string(),
                });
            }
            Err((_, errno)) => {
                return Err(DaemonError::io(
                    format!("locking {}", path.display()),
                    errno.into(),
                ));
            }
        };
        // Truncate first: a shorter pid must not leave digits of an older, longer one.
        locked
            .set_len(0)
            .and_then(|()| writeln!(locked, "{}", std::process::id()))
            .map_err(|e| DaemonError::io(format!("writing {}", path.display()), e))?;
        Ok(DaemonLock { _file: locked })
    }
}

/// Whether a daemon holds the lock of `root` now.
pub fn is_held(root: &Path) -> bool {
    let Ok(file) = File::open(root.join(LOCK_FILE)) else {
        return false;
    };
    matches!(
        Flock::lock(file, FlockArg::LockSharedNonblock),
        Err((_, Errno::EWOULDBLOCK))
    )
}

fn read_pid(file: &mut File) -> Option<String> {
    let mut text = String::new();
    file.read_to_string(&mut text).ok()?;
    let pid = text.trim();
    (!pid.is_empty()).then(|| pid.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_lock_on_the_same_root_names_the_holder() {
        let root = tempfile::tempdir().unwrap();
        let _held = DaemonLock::acquire(root.path()).unwrap();
        let err = DaemonLock::acquire(root.path()).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "another fvol daemon (pid {}) is already running on {}",
                std::process::id(),
                root.path().display()
            )
        );
    }

    #[test]
    fn lock_is_free_again_once_dropped() {
        let root = tempfile::tempdir().unwrap();
        drop(DaemonLock::acquire(root.path()).unwrap());
        DaemonLock::acquire(root.path()).unwrap();
    }
}
