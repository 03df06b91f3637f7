//! A fresh filesystem on a loop device, for tests that depend on how the host allocates
//! (ext4 hands out the lowest free inode number of a group, so a freed number comes back at
//! the next create) or on what it can do (XFS shares extents: reflinks), which a shared /tmp
//! with an unknown history does not guarantee.
//! Unmounted (lazily, if something still uses it) and detached on drop.
use std::path::{Path, PathBuf};
use std::process::Command;

use nix::mount::{MntFlags, umount2};
use tempfile::TempDir;

use crate::run_ok;

pub struct LoopFs {
    mountpoint: PathBuf,
    device: String,
    _dir: TempDir,
}

impl LoopFs {
    /// A sparse image of `mib` MiB, formatted ext4 with 4 KiB blocks and mounted.
    pub fn ext4(mib: u64) -> LoopFs {
        LoopFs::new(mib, &["mkfs.ext4", "-q", "-F", "-b", "4096"])
    }

    /// A sparse image of `mib` MiB, formatted XFS with reflinks (shared extents) and mounted.
    pub fn xfs(mib: u64) -> LoopFs {
        LoopFs::new(mib, &["mkfs.xfs", "-q", "-f", "-m", "reflink=1"])
    }

    /// A sparse image of `mib` MiB, formatted by `mkfs` (program and arguments; the image
    /// path is appended) and mounted.
    fn new(mib: u64, mkfs: &[&str]) -> LoopFs {
        let dir = tempfile::Builder::new()
            .prefix("fvol-loopfs-")
            .tempdir()
            .expect("tempdir");
        let image = dir.path().join("image");
        std::fs::File::create(&image)
            .and_then(|f| f.set_len(mib << 20))
            .expect("image file");
        run_ok(Command::new(mkfs[0]).args(&mkfs[1..]).arg(&image));
        let device = run_ok(Command::new("losetup").args(["-f", "--show"]).arg(&image))
            .trim()
            .to_owned();
        let mountpoint = dir.path().join("mnt");
        std::fs::create_dir(&mountpoint).unwrap();
        let fs = LoopFs {
            mountpoint,
            device,
            _dir: dir,
        };
        run_ok(Command::new("mount").arg(&fs.device).arg(&fs.mountpoint));
        fs
    }

    pub fn path(&self) -> &Path {
        &self.mountpoint
    }
}

impl Drop for LoopFs {
    fn drop(&mut self) {
        let _ = umount2(&self.mountpoint, MntFlags::MNT_DETACH);
        // A device still in use (lazily unmounted) is detached when it is released.
        let _ = Command::new("losetup").arg("-d").arg(&self.device).status();
    }
}
