//! The guard under every volume's mountpoint: an empty, read-only tmpfs mounted at
//! `ROOT/volumes/NAME/mnt` before the volume's FUSE mount, which is stacked on top of it.
//!
//! It is a kernel mount, so it outlives the daemon: whenever no FUSE mount is on top (the
//! volume is unmounted, or a dead daemon's stale mount was detached), the mountpoint shows the
//! guard, where every write fails with EROFS and reads find nothing. The bare host directory
//! under it is never reachable through the mountpoint.
//!
//! Invariant: at most one guard per mountpoint, and only the guard is ever under the FUSE
//! mount. FUSE unmounts and detaches act on the top mount only, so they never take it away;
//! only `remove` (rm of the volume) does.
use std::io;
use std::path::Path;

use nix::mount::{MntFlags, MsFlags, mount, umount2};

const SOURCE_PREFIX: &str = "fvol-guard:";

/// Mounts the guard at `mountpoint` unless one is already there (a restart, an upgrade from a
/// version without guards creates it here). Must be called with no FUSE mount at the path.
pub fn ensure(mountpoint: &Path, volume: &str) -> io::Result<()> {
    if stack_at(mountpoint)?.iter().any(|m| m.is_guard) {
        return Ok(());
    }
    mount(
        Some(format!("{SOURCE_PREFIX}{volume}").as_str()),
        mountpoint,
        Some("tmpfs"),
        MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        Some("size=4k,nr_inodes=1,mode=0555"),
    )
    .map_err(|e| {
        io::Error::other(format!(
            "mounting the guard at {}: {e}",
            mountpoint.display()
        ))
    })
}

/// Unmounts the guard(s) at `mountpoint` while a guard is the top mount there; leaves anything
/// else (a FUSE mount still on top) alone.
pub fn remove(mountpoint: &Path) -> io::Result<()> {
    // Bounded: each round takes one mount away.
    for _ in 0..8 {
        let stack = stack_at(mountpoint)?;
        let Some(top) = top_of(&stack) else {
            return Ok(());
        };
        if !top.is_guard {
            return Ok(());
        }
        match umount2(mountpoint, MntFlags::MNT_DETACH) {
            Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// True when a guard is mounted at `mountpoint` (at any level of its stack).
pub fn is_mounted(mountpoint: &Path) -> io::Result<bool> {
    Ok(stack_at(mountpoint)?.iter().any(|m| m.is_guard))
}

#[derive(Debug, PartialEq)]
struct StackedMount {
    id: u64,
    parent: u64,
    is_guard: bool,
}

/// The mount that nothing else at the same path is mounted on.
fn top_of(stack: &[StackedMount]) -> Option<&StackedMount> {
    stack
        .iter()
        .find(|m| !stack.iter().any(|other| other.parent == m.id))
}

/// The mounts whose mount point is `mountpoint`, from /proc/self/mountinfo.
fn stack_at(mountpoint: &Path) -> io::Result<Vec<StackedMount>> {
    let info = std::fs::read_to_string("/proc/self/mountinfo")?;
    Ok(parse_stack(&info, &escape(mountpoint)))
}

fn parse_stack(info: &str, escaped_mountpoint: &str) -> Vec<StackedMount> {
    info.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            if fields.get(4) != Some(&escaped_mountpoint) {
                return None;
            }
            let sep = fields.iter().position(|f| *f == "-")?;
            let fstype = fields.get(sep + 1)?;
            let source = fields.get(sep + 2)?;
            Some(StackedMount {
                id: fields.first()?.parse().ok()?,
                parent: fields.get(1)?.parse().ok()?,
                is_guard: *fstype == "tmpfs" && source.starts_with(SOURCE_PREFIX),
            })
        })
        .collect()
}

/// A path as mountinfo spells it: space, tab, newline and backslash as octal escapes.
fn escape(path: &Path) -> String {
    use std::os::unix::ffi::OsStrExt;
    let mut out = String::new();
    for &b in path.as_os_str().as_bytes() {
        match b {
            b' ' | b'\t' | b'\n' | b'\\' => out.push_str(&format!("\\{b:03o}")),
            _ => out.push(b as char),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const INFO: &str = "\
22 1 0:21 / /r rw - ext4 /dev/sda rw
40 22 0:50 / /r/volumes/a/mnt ro,nosuid - tmpfs fvol-guard:a ro,size=4k
41 40 0:51 / /r/volumes/a/mnt rw - fuse.fvol fvol:a rw
42 22 0:52 / /r/volumes/b\\040c/mnt ro - tmpfs fvol-guard:b ro
43 22 0:53 / /r/volumes/d/mnt ro - tmpfs other ro
";

    #[test]
    fn finds_the_guard_under_a_fuse_mount_and_the_top() {
        let stack = parse_stack(INFO, "/r/volumes/a/mnt");
        assert_eq!(stack.len(), 2);
        assert!(stack[0].is_guard && !stack[1].is_guard);
        assert_eq!(top_of(&stack).map(|m| m.id), Some(41));
    }

    #[test]
    fn matches_escaped_paths_and_only_its_own_source() {
        let escaped = escape(Path::new("/r/volumes/b c/mnt"));
        assert_eq!(escaped, "/r/volumes/b\\040c/mnt");
        assert!(parse_stack(INFO, &escaped)[0].is_guard);
        assert!(!parse_stack(INFO, "/r/volumes/d/mnt")[0].is_guard);
        assert!(parse_stack(INFO, "/r/volumes/e/mnt").is_empty());
    }
}
