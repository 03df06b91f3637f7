//! Mounting a `VolumeFs` and cleaning up after a dead handler.
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use fuser::{BackgroundSession, Config, MountOption, SessionACL};
use nix::errno::Errno;
use nix::mount::{MntFlags, umount2};

use super::FuseAdapter;
use crate::fs::VolumeFs;

/// How a volume is served.
#[derive(Clone, Copy, Debug)]
pub struct ServeOptions {
    /// Kernel passthrough for the opens the core offers it for.
    pub passthrough: bool,
    /// The handler is the only writer of the data, so the kernel may cache names and
    /// attributes for long: every change goes through it and it invalidates what it changes.
    pub exclusive: bool,
    /// The mount's readahead window (its bdi's `read_ahead_kb`), instead of the kernel's
    /// default of 128 KiB for FUSE (which `max_readahead` at init can only lower).
    pub readahead_kb: Option<u32>,
    /// Request threads, each with its own /dev/fuse descriptor.
    pub threads: usize,
}

impl ServeOptions {
    fn ttl(&self) -> Duration {
        // With others writing behind fvol (a `mount=` directory), changes show within 1 s.
        Duration::from_secs(if self.exclusive { 60 } else { 1 })
    }
}

/// How an unmount ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unmounted {
    /// The session ended: no request reaches the filesystem any more.
    Ended,
    /// The mount was busy and is detached lazily: its last users may still send requests.
    Detached,
}

/// A live FUSE mount. Dropping it unmounts.
pub struct MountedFs {
    session: Option<BackgroundSession>,
    mountpoint: PathBuf,
}

impl MountedFs {
    pub fn mountpoint(&self) -> &Path {
        &self.mountpoint
    }

    /// Unmounts and waits for the request threads to end.
    pub fn unmount(mut self) -> io::Result<Unmounted> {
        self.unmount_inner()
    }

    /// A busy mount (EBUSY) is detached lazily instead, so it never outlives its owner: it
    /// disappears from the namespace now and the connection ends with its last user.
    fn unmount_inner(&mut self) -> io::Result<Unmounted> {
        let Some(session) = self.session.take() else {
            return Ok(Unmounted::Ended);
        };
        match session.umount_and_join() {
            Ok(()) => Ok(Unmounted::Ended),
            Err(e) => {
                log::warn!(
                    "unmounting {}: {e}; detaching it",
                    self.mountpoint.display()
                );
                detach_stale_mount(&self.mountpoint).map(|()| Unmounted::Detached)
            }
        }
    }
}

impl Drop for MountedFs {
    fn drop(&mut self) {
        if let Err(e) = self.unmount_inner() {
            log::warn!("unmounting {}: {e}", self.mountpoint.display());
        }
    }
}

/// Mounts `fs` at `mountpoint` (allow_other, default_permissions) and serves it in the
/// background.
pub fn mount(
    fs: Arc<dyn VolumeFs>,
    mountpoint: &Path,
    name: &str,
    serve: ServeOptions,
) -> io::Result<MountedFs> {
    let mut config = Config::default();
    config.mount_options = vec![
        MountOption::FSName(format!("fvol:{name}")),
        MountOption::Subtype("fvol".into()),
        MountOption::DefaultPermissions,
    ];
    config.acl = SessionACL::All;
    config.n_threads = Some(serve.threads.max(1));
    config.clone_fd = true;
    let adapter = FuseAdapter::new(fs, name, serve.ttl(), serve.passthrough);
    let session = fuser::spawn_mount(adapter, mountpoint, &config)?;
    let mounted = MountedFs {
        session: Some(session),
        mountpoint: mountpoint.to_path_buf(),
    };
    if let Some(kb) = serve.readahead_kb
        && let Err(e) = set_readahead(mountpoint, kb)
    {
        log::warn!(
            "{}: cannot set the readahead to {kb} KiB: {e}",
            mountpoint.display()
        );
    }
    Ok(mounted)
}

/// Sets the readahead window of the filesystem mounted at `path` (its bdi in sysfs, named by
/// the mount's device number). The stat is answered by the session already serving.
fn set_readahead(path: &Path, kb: u32) -> io::Result<()> {
    let dev = nix::sys::stat::stat(path)?.st_dev;
    let (major, minor) = (nix::sys::stat::major(dev), nix::sys::stat::minor(dev));
    let knob = format!("/sys/class/bdi/{major}:{minor}/read_ahead_kb");
    std::fs::write(&knob, kb.to_string())
        .map_err(|e| io::Error::new(e.kind(), format!("{knob}: {e}")))
}

/// True when `path` is a FUSE mount whose handler is gone ("Transport endpoint is not
/// connected").
pub fn is_stale_mount(path: &Path) -> bool {
    // statfs, not stat: stat may be answered from the kernel's attribute cache for as long as
    // the dead mount's TTL; statfs always asks the (gone) handler.
    matches!(nix::sys::statfs::statfs(path), Err(Errno::ENOTCONN))
}

/// Detaches the FUSE mount at `path` (lazily, so busy users do not block it): only when the
/// top mount there is a FUSE mount, live or stale. The volume's guard under it stays, and an
/// unmount that already happened never takes the guard away in its place.
pub fn detach_stale_mount(path: &Path) -> io::Result<()> {
    match nix::sys::statfs::statfs(path) {
        Err(Errno::ENOTCONN) => {}
        Ok(fs) if fs.filesystem_type() == nix::sys::statfs::FUSE_SUPER_MAGIC => {}
        _ => return Ok(()),
    }
    // umount2 on a path takes only the top mount of the stack there.
    match umount2(path, MntFlags::MNT_DETACH) {
        Ok(()) | Err(Errno::EINVAL) | Err(Errno::ENOENT) => Ok(()),
        Err(e) => Err(e.into()),
    }
}
