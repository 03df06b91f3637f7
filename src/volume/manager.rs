//! `VolumeManager`: the one entry point for volume operations, used by the daemon's HTTP API
//! (CLI and Docker plugin alike).
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::core::Core;
use super::name::{random_name, validate_name};
use super::{RefId, VolumeError, VolumeInfo};
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

/// How the manager runs.
#[derive(Clone, Debug)]
pub struct ManagerSettings {
    /// A plugin reference at least this old whose volume no other mount namespace holds is
    /// released by itself (see `Core::release_orphaned_plugin_refs`).
    pub stale_ref_grace: Duration,
    /// How long a tmpfs volume keeps its data after its last plugin Unmount, waiting for the
    /// next Mount (Docker's copy-up into a new volume is followed by the container's Mount).
    pub tmpfs_linger: Duration,
    /// Per driver, defaults for the options of new volumes (the configuration file, checked
    /// by each driver's schema). A create stores its options with these filled in, so a
    /// volume keeps its settings whatever the defaults become later.
    pub defaults: BTreeMap<String, BTreeMap<String, String>>,
}

impl Default for ManagerSettings {
    fn default() -> Self {
        ManagerSettings {
            stale_ref_grace: Duration::from_secs(60),
            tmpfs_linger: Duration::from_secs(10),
            defaults: BTreeMap::new(),
        }
    }
}

/// Serializes every operation on one `Core`. A background thread persists the usage of active
/// volumes every few seconds, so a crash loses little (and the next start rescans anyway), and
/// releases plugin references whose holders are gone.
pub struct VolumeManager {
    core: Arc<Mutex<Core>>,
    stop: Arc<AtomicBool>,
    defaults: BTreeMap<String, BTreeMap<String, String>>,
}

const TICK: Duration = Duration::from_secs(1);
const CHECKPOINT_EVERY: Duration = Duration::from_secs(5);
/// At most this long between two looks for orphaned plugin references.
const ORPHAN_CHECK_EVERY: Duration = Duration::from_secs(30);

impl VolumeManager {
    /// Opens the catalog at `root/fvol.redb` (creating `root` if needed; private to root, see
    /// daemon::private_root). Does not mount.
    pub fn open(root: &Path, settings: ManagerSettings) -> Result<VolumeManager, VolumeError> {
        super::core::create_dir(&root.join("volumes"), 0o700)?;
        let store = Store::open(&root.join("fvol.redb"))?;
        let core = Arc::new(Mutex::new(Core::new(
            root,
            store,
            crate::driver::registry(),
            settings.tmpfs_linger,
        )));
        let stop = Arc::new(AtomicBool::new(false));
        let (weak, flag) = (Arc::downgrade(&core), stop.clone());
        let grace = settings.stale_ref_grace;
        let orphan_check_every = ORPHAN_CHECK_EVERY.min(grace / 2).max(TICK);
        std::thread::Builder::new()
            .name("volume-upkeep".into())
            .spawn(move || {
                let (mut checkpointed, mut orphans_checked) = (Instant::now(), Instant::now());
                while !flag.load(Ordering::Relaxed) {
                    std::thread::sleep(TICK);
                    let Some(core) = weak.upgrade() else { return };
                    core.lock().end_lingering();
                    core.lock().watch_quota();
                    if checkpointed.elapsed() >= CHECKPOINT_EVERY {
                        core.lock().checkpoint_usage();
                        checkpointed = Instant::now();
                    }
                    if orphans_checked.elapsed() >= orphan_check_every {
                        core.lock().release_orphaned_plugin_refs(grace);
                        orphans_checked = Instant::now();
                    }
                }
            })
            .map_err(|e| VolumeError::io("starting the volume upkeep thread", e))?;
        Ok(VolumeManager {
            core,
            stop,
            defaults: settings.defaults,
        })
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
        // The options given win over the driver's defaults.
        let mut options = self.defaults.get(&driver).cloned().unwrap_or_default();
        options.extend(req.options);
        let mut core = self.core.lock();
        let rec = core.create(name, &driver, options, req.labels)?;
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

    /// Adds `reference` (idempotent) and activates the FUSE mount if it is the first.
    /// A `cli:TARGET` reference also bind-mounts the volume at TARGET (the directory must
    /// exist).
    pub fn mount(&self, name: &str, reference: &RefId) -> Result<PathBuf, VolumeError> {
        validate_name(name)?;
        self.core.lock().mount(name, reference)
    }

    /// Drops `reference` and its bind mount; the FUSE mount ends with the last reference.
    /// A reference the volume does not hold is harmless (Docker may repeat an Unmount).
    pub fn unmount(&self, name: &str, reference: &RefId) -> Result<(), VolumeError> {
        validate_name(name)?;
        self.core.lock().release(name, reference).map(drop)
    }

    /// `unmount` for a user who named the reference: when the volume is mounted, but not
    /// for that reference, the answer is an error naming the references it does hold (not a
    /// silent success that leaves it mounted). Unmounting an unmounted volume is harmless.
    pub fn release(&self, name: &str, reference: &RefId) -> Result<(), VolumeError> {
        validate_name(name)?;
        let mut core = self.core.lock();
        if core.release(name, reference)? {
            return Ok(());
        }
        let held: Vec<String> = core.record(name)?.mount_refs.into_keys().collect();
        if held.is_empty() {
            return Ok(());
        }
        Err(VolumeError::NoSuchReference {
            name: name.into(),
            given: reference.key(),
            held: held.join(", "),
        })
    }

    /// Drops every reference and unmounts (lazily if the mount is still in use); returns the
    /// references dropped.
    pub fn release_all(&self, name: &str) -> Result<Vec<String>, VolumeError> {
        validate_name(name)?;
        self.core.lock().release_all(name)
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

    /// The event log (`fvol events`).
    pub fn events(&self) -> Arc<super::events::EventLog> {
        self.core.lock().events()
    }

    /// What the daemon's metrics show, read at one moment.
    pub fn observe(&self) -> Result<super::observe::Observation, VolumeError> {
        self.core.lock().observe()
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

    /// Unmounts everything and persists usage as clean; references are kept so the next start
    /// mounts the same volumes again.
    pub fn shutdown(&self) {
        self.stop.store(true, Ordering::Relaxed);
        self.core.lock().shutdown();
    }
}
