//! `VolumeManager`: the one entry point for volume operations, used by the daemon's HTTP API
//! (CLI and Docker plugin alike).
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use parking_lot::Mutex;

use super::core::Core;
use super::name::{random_name, validate_name};
use super::{VolumeError, VolumeInfo};
use crate::store::Store;

/// A create request as the CLI or the plugin gives it.
#[derive(Clone, Debug, Default)]
pub struct CreateRequest {
    /// None: generate a random 64-hex name.
    pub name: Option<String>,
    /// None: `local`.
    pub driver: Option<String>,
    pub options: BTreeMap<String, String>,
    pub labels: BTreeMap<String, String>,
}

#[derive(Clone, Debug, Default)]
pub struct PruneReport {
    pub removed: Vec<String>,
    pub reclaimed_bytes: u64,
}

/// Serializes every operation on one `Core`. A checkpoint thread persists the usage of active
/// volumes every few seconds, so a crash loses little (and the next start rescans anyway).
pub struct VolumeManager {
    core: Arc<Mutex<Core>>,
    stop: Arc<AtomicBool>,
}

const CHECKPOINT_EVERY: Duration = Duration::from_secs(5);

impl VolumeManager {
    /// Opens the catalog at `root/fvol.redb` (creating `root` if needed; private to root, see
    /// daemon::private_root). Does not mount.
    pub fn open(root: &Path) -> Result<VolumeManager, VolumeError> {
        super::core::create_dir(&root.join("volumes"), 0o700)?;
        let store = Store::open(&root.join("fvol.redb"))?;
        let core = Arc::new(Mutex::new(Core::new(
            root,
            store,
            crate::driver::registry(),
        )));
        let stop = Arc::new(AtomicBool::new(false));
        let (weak, flag) = (Arc::downgrade(&core), stop.clone());
        std::thread::Builder::new()
            .name("usage-checkpoint".into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    std::thread::sleep(CHECKPOINT_EVERY);
                    match weak.upgrade() {
                        Some(core) => core.lock().checkpoint_usage(),
                        None => return,
                    }
                }
            })
            .map_err(|e| VolumeError::io("starting the usage checkpoint thread", e))?;
        Ok(VolumeManager { core, stop })
    }

    /// Detaches stale FUSE mounts left by a dead daemon and mounts again every volume that has
    /// mount references. Call once at start-up, before serving requests.
    pub fn recover(&self) -> Result<(), VolumeError> {
        self.core.lock().recover()
    }

    /// Idempotent for the same driver and options; a conflict otherwise.
    pub fn create(&self, req: CreateRequest) -> Result<VolumeInfo, VolumeError> {
        // No name means a random one; an empty name is a bad name, not a request for one.
        let name = req.name.unwrap_or_else(random_name);
        let driver = req
            .driver
            .filter(|d| !d.is_empty())
            .unwrap_or_else(|| "local".into());
        let mut core = self.core.lock();
        let rec = core.create(name, &driver, req.options, req.labels)?;
        core.info(&rec)
    }

    /// Refused while mounted. `force` only makes a missing volume not an error, as in Docker.
    pub fn remove(&self, name: &str, force: bool) -> Result<(), VolumeError> {
        match self.core.lock().remove(name) {
            Err(VolumeError::NotFound(_)) if force => Ok(()),
            other => other.map(drop),
        }
    }

    pub fn list(&self) -> Result<Vec<VolumeInfo>, VolumeError> {
        let core = self.core.lock();
        core.records()?.iter().map(|r| core.info(r)).collect()
    }

    pub fn get(&self, name: &str) -> Result<VolumeInfo, VolumeError> {
        validate_name(name)?;
        let core = self.core.lock();
        let rec = core.record(name)?;
        core.info(&rec)
    }

    /// The mountpoint, whether or not the volume is mounted now.
    pub fn path(&self, name: &str) -> Result<PathBuf, VolumeError> {
        validate_name(name)?;
        let core = self.core.lock();
        core.record(name)?;
        Ok(core.mountpoint(name))
    }

    /// Adds reference `ref_id` (idempotent) and activates the FUSE mount if it is the first.
    /// With `target`, also bind-mounts the volume there (the directory must exist).
    /// Reference ids: `cli`, `cli:/abs/target`, `plugin:<ID>`.
    pub fn mount(
        &self,
        name: &str,
        ref_id: &str,
        target: Option<&Path>,
    ) -> Result<PathBuf, VolumeError> {
        validate_name(name)?;
        self.core.lock().mount(name, ref_id, target)
    }

    /// Drops reference `ref_id` (unknown ids are harmless) and its bind mount; the FUSE mount
    /// ends with the last reference.
    pub fn unmount(&self, name: &str, ref_id: &str) -> Result<(), VolumeError> {
        validate_name(name)?;
        self.core.lock().unmount(name, ref_id)
    }

    /// Checks an unmounted volume's backing store and reports what it found (JSON).
    pub fn fsck(&self, name: &str) -> Result<String, VolumeError> {
        validate_name(name)?;
        self.core.lock().fsck(name)
    }

    /// Breaks locks a dead holder left on a volume's backing store; returns the holders.
    pub fn break_lock(&self, name: &str) -> Result<Vec<String>, VolumeError> {
        validate_name(name)?;
        self.core.lock().break_lock(name)
    }

    /// Removes every volume with no mount reference.
    pub fn prune(&self) -> Result<PruneReport, VolumeError> {
        let mut core = self.core.lock();
        let mut report = PruneReport::default();
        for rec in core.records()? {
            if rec.mount_refs.is_empty() {
                report.reclaimed_bytes += core.remove(&rec.name)?;
                report.removed.push(rec.name);
            }
        }
        Ok(report)
    }

    /// Keeps volume connections in `keeper` from now on, so that they outlive the daemon.
    /// Call before `recover`.
    pub fn set_keeper(&self, keeper: Arc<crate::keeper::Keeper>) {
        self.core.lock().set_keeper(keeper);
    }

    /// Unmounts everything and persists usage as clean; references are kept so the next start
    /// mounts the same volumes again.
    pub fn shutdown(&self) {
        self.stop.store(true, Ordering::Relaxed);
        self.core.lock().shutdown();
    }

    /// Stops serving and leaves every volume the keeper holds mounted for the next daemon
    /// (see `Core::handover`); the others are unmounted.
    pub fn handover(&self) {
        self.stop.store(true, Ordering::Relaxed);
        self.core.lock().handover();
    }
}
