//! Mounting a `VolumeFs` and cleaning up after a dead handler.
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use fuser::{BackgroundSession, Config, MountOption, SessionACL};
use nix::errno::Errno;
use nix::mount::{MntFlags, umount2};

use super::FuseAdapter;
use super::stats::VolumeStats;
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
    /// Unmounted here, but the connection lives on: another mount namespace still has a copy
    /// of the mount (or a request is stuck). It is served until that goes, or until
    /// `abort_connection`.
    Lingering,
}

/// How long an unmount waits for its session to end. It ends at once unless another mount
/// namespace still has the mount, or a request is stuck in the backing store.
const SESSION_END_WAIT: Duration = Duration::from_secs(5);

/// A live FUSE mount. Dropping it unmounts.
pub struct MountedFs {
    session: Option<BackgroundSession>,
    mountpoint: PathBuf,
    /// The mount's device number (`st_dev`), by which other mount namespaces' mounts of it
    /// are recognised. None if it could not be read at mount time.
    device: Option<u64>,
    /// What its requests did.
    stats: Arc<VolumeStats>,
}

impl MountedFs {
    pub fn stats(&self) -> &Arc<VolumeStats> {
        &self.stats
    }

    pub fn mountpoint(&self) -> &Path {
        &self.mountpoint
    }

    pub fn device(&self) -> Option<u64> {
        self.device
    }

    /// Unmounts and waits for the request threads to end.
    pub fn unmount(mut self) -> io::Result<Unmounted> {
        self.unmount_inner()
    }

    /// A busy mount (EBUSY) is detached lazily instead, so it never outlives its owner: it
    /// disappears from the namespace now and the connection ends with its last user. The wait
    /// for the session to end is bounded, so a copy of the mount in another namespace never
    /// blocks the caller (the joining thread ends with the session).
    fn unmount_inner(&mut self) -> io::Result<Unmounted> {
        let Some(session) = self.session.take() else {
            return Ok(Unmounted::Ended);
        };
        let (ended_tx, ended) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("fuse-unmount".into())
            .spawn(move || {
                let _ = ended_tx.send(session.umount_and_join());
            })?;
        match ended.recv_timeout(SESSION_END_WAIT) {
            Ok(Ok(())) => Ok(Unmounted::Ended),
            Ok(Err(e)) => {
                log::warn!(
                    "unmounting {}: {e}; detaching it",
                    self.mountpoint.display()
                );
                detach_stale_mount(&self.mountpoint).map(|()| Unmounted::Detached)
            }
            Err(_) => {
                log::warn!(
                    "{}: unmounted, but its FUSE connection did not end within {:?}: another \
                     mount namespace still has the mount, or a request is stuck",
                    self.mountpoint.display(),
                    SESSION_END_WAIT
                );
                Ok(Unmounted::Lingering)
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
    let stats = Arc::new(VolumeStats::default());
    let adapter = FuseAdapter::new(fs, name, serve.ttl(), serve.passthrough, stats.clone());
    let session = fuser::spawn_mount(adapter, mountpoint, &config)?;
    // Answered by the session already serving.
    let device = match nix::sys::stat::stat(mountpoint) {
        Ok(st) => Some(st.st_dev),
        Err(e) => {
            log::warn!(
                "{}: cannot read its device number: {e}",
                mountpoint.display()
            );
            None
        }
    };
    let mounted = MountedFs {
        session: Some(session),
        mountpoint: mountpoint.to_path_buf(),
        device,
        stats,
    };
    if let (Some(kb), Some(dev)) = (serve.readahead_kb, device)
        && let Err(e) = set_readahead(dev, kb)
    {
        log::warn!(
            "{}: cannot set the readahead to {kb} KiB: {e}",
            mountpoint.display()
        );
    }
    Ok(mounted)
}

/// Sets the readahead window of the filesystem with device number `dev` (its bdi in sysfs).
fn set_readahead(dev: u64, kb: u32) -> io::Result<()> {
    let (major, minor) = (nix::sys::stat::major(dev), nix::sys::stat::minor(dev));
    let knob = format!("/sys/class/bdi/{major}:{minor}/read_ahead_kb");
    std::fs::write(&knob, kb.to_string())
        .map_err(|e| io::Error::new(e.kind(), format!("{knob}: {e}")))
}

/// Where the kernel's FUSE control filesystem is mounted (systemd mounts it at boot).
const FUSECTL: &str = "/sys/fs/fuse/connections";

/// Aborts the FUSE connection of the filesystem with device number `device`: every mount of
/// it, in every namespace, then fails with ENOTCONN and its session ends. For a connection
/// that only copies of the mount in other namespaces keep alive. Mounts the control
/// filesystem where it belongs if it is not there yet.
pub fn abort_connection(device: u64) -> io::Result<()> {
    // A FUSE superblock's device is anonymous (major 0); its minor is the connection's number.
    let abort = Path::new(FUSECTL)
        .join(nix::sys::stat::minor(device).to_string())
        .join("abort");
    if !Path::new(FUSECTL).is_dir() {
        return Err(io::Error::other(format!(
            "{FUSECTL} does not exist (no FUSE control filesystem)"
        )));
    }
    if !abort.exists() {
        let mounted = nix::sys::statfs::statfs(FUSECTL)
            .is_ok_and(|fs| fs.filesystem_type() == FUSECTL_SUPER_MAGIC);
        if !mounted {
            nix::mount::mount(
                Some("fusectl"),
                FUSECTL,
                Some("fusectl"),
                nix::mount::MsFlags::empty(),
                None::<&str>,
            )
            .map_err(|e| io::Error::other(format!("mounting fusectl on {FUSECTL}: {e}")))?;
        }
    }
    std::fs::write(&abort, "1")
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", abort.display())))
}

/// Requests the kernel has queued for the FUSE connection of the filesystem with device number
/// `device` and not yet had answered (fusectl's `waiting`): a number that stays up while the
/// volume is idle shows a stuck handler. None without the control filesystem.
pub fn waiting_requests(device: u64) -> Option<u64> {
    let waiting = Path::new(FUSECTL)
        .join(nix::sys::stat::minor(device).to_string())
        .join("waiting");
    std::fs::read_to_string(waiting).ok()?.trim().parse().ok()
}

const FUSECTL_SUPER_MAGIC: nix::sys::statfs::FsType = nix::sys::statfs::FsType(0x6573_5543);

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
