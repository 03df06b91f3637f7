//! `VolumeManager`: the one entry point for volume operations, used by the daemon's HTTP API
//! (CLI and Docker plugin alike).
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::core::{Core, Remount};
use super::export::{ExportInfo, ImportInfo};
use super::locks::Permits;
use super::name::{random_name, validate_name};
use super::snapshot::SnapshotInfo;
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
    /// How many volumes start-up mounts again at once (and, separately, how many tries on
    /// remote backing stores it runs at once); see `recover`.
    pub startup_mounts: usize,
}

/// `ManagerSettings::startup_mounts` by default: enough to overlap mounts that wait (a rescan
/// of a `mount=` directory, a slow disk), few enough not to swamp a small host.
pub const STARTUP_MOUNTS: usize = 8;

impl Default for ManagerSettings {
    fn default() -> Self {
        ManagerSettings {
            stale_ref_grace: Duration::from_secs(60),
            tmpfs_linger: Duration::from_secs(10),
            defaults: BTreeMap::new(),
            startup_mounts: STARTUP_MOUNTS,
        }
    }
}

/// Runs every operation on a volume under that volume's lock (see `Core`), so operations on
/// different volumes, `ls` and `inspect` never wait for each other. An upkeep thread persists
/// the usage of active volumes every few seconds, so a crash loses little (and the next start
/// rescans anyway), logs changes of their health, ends tmpfs volumes whose linger is over and
/// releases plugin references whose holders are gone.
pub struct VolumeManager {
    core: Arc<Core>,
    /// Set at a stop: background work ends.
    stop: Arc<AtomicBool>,
    defaults: BTreeMap<String, BTreeMap<String, String>>,
    /// Set before `stop` when the stop hands the volumes over to the next daemon.
    handing_over: Arc<AtomicBool>,
    /// Bounds the mounts of start-up on backing stores here.
    mounts_here: Permits,
    /// Bounds the tries of start-up on remote backing stores (mounts and settles).
    remote_tries: Arc<Permits>,
}

const TICK: Duration = Duration::from_secs(1);
const CHECKPOINT_EVERY: Duration = Duration::from_secs(5);
/// At most this long between two looks for orphaned plugin references.
const ORPHAN_CHECK_EVERY: Duration = Duration::from_secs(30);
/// How long start-up waits for the first try to mount each volume on a remote backing store
/// before it serves requests anyway (the tries go on in the background).
const REMOUNT_GRACE: Duration = Duration::from_secs(5);
/// Pause between tries to mount such a volume again while its backing store fails it.
const REMOUNT_RETRY: Duration = Duration::from_secs(5);

impl VolumeManager {
    /// Opens the catalog at `root/fvol.redb` (creating `root` if needed; private to root, see
    /// daemon::private_root). Does not mount.
    pub fn open(root: &Path, settings: ManagerSettings) -> Result<VolumeManager, VolumeError> {
        super::core::create_dir(&root.join("volumes"), 0o700)?;
        let store = Store::open(&root.join("fvol.redb"))?;
        let core = Arc::new(Core::new(
            root,
            store,
            crate::driver::registry(),
            settings.tmpfs_linger,
        ));
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
                    core.end_lingering();
                    core.watch_quota();
                    if checkpointed.elapsed() >= CHECKPOINT_EVERY {
                        // A settle pass may wait for writeback; it takes no lock of the core.
                        for fs in core.active_filesystems() {
                            fs.settle();
                        }
                        core.checkpoint();
                        checkpointed = Instant::now();
                    }
                    if orphans_checked.elapsed() >= orphan_check_every {
                        core.release_orphaned_plugin_refs(grace);
                        orphans_checked = Instant::now();
                    }
                }
            })
            .map_err(|e| VolumeError::io("starting the volume upkeep thread", e))?;
        Ok(VolumeManager {
            core,
            stop,
            defaults: settings.defaults,
            handing_over: Arc::new(AtomicBool::new(false)),
            mounts_here: Permits::new(settings.startup_mounts),
            remote_tries: Arc::new(Permits::new(settings.startup_mounts)),
        })
    }

    /// Detaches stale FUSE mounts left by a dead daemon and mounts again every volume that has
    /// mount references. Call once at start-up, before serving requests.
    ///
    /// Volumes whose backing store is here are mounted by a pool of `startup_mounts` threads,
    /// so many volumes come back about that many times faster than one by one, and no more
    /// than that many mounts (each a rescan, a FUSE session and its threads) run at once; this
    /// returns once all of them are done. Volumes on a remote backing store (a Ceph cluster)
    /// are settled (an unfinished create or rm) and mounted in the background, at most
    /// `startup_mounts` tries at once, mounts tried again every few seconds until their cluster
    /// answers; this waits for their first tries for `REMOUNT_GRACE` at most, so a cluster that
    /// is down holds back neither the API nor the other volumes.
    pub fn recover(&self) -> Result<(), VolumeError> {
        let deferred = self.core.recover()?;
        let (tried, first_tries) = std::sync::mpsc::channel();
        let count = deferred.settle.len() + deferred.mount.len();
        for name in deferred.settle {
            let (core, stop, tried) = (self.core.clone(), self.stop.clone(), tried.clone());
            let permits = self.remote_tries.clone();
            self.spawn(&name, "settle", move |name| {
                if !stop.load(Ordering::Relaxed) {
                    let _try = permits.acquire();
                    let _volume = core.locks.lock(name);
                    core.settle_deferred(name);
                }
                let _ = tried.send(());
            })?;
        }
        for name in deferred.mount {
            let (core, tried) = (self.core.clone(), tried.clone());
            let (stop, handing_over) = (self.stop.clone(), self.handing_over.clone());
            let permits = self.remote_tries.clone();
            self.spawn(&name, "mount", move |name| {
                remount_until_done(&core, name, &stop, &handing_over, &permits, || {
                    let _ = tried.send(());
                })
            })?;
        }
        self.mount_here(&deferred.mount_here);
        let deadline = Instant::now() + REMOUNT_GRACE;
        for _ in 0..count {
            let left = deadline.saturating_duration_since(Instant::now());
            if first_tries.recv_timeout(left).is_err() {
                log::warn!(
                    "serving requests while volumes on a cluster that does not answer yet are \
                     still being mounted (fvol inspect shows Status.MountPending) or settled"
                );
                break;
            }
        }
        Ok(())
    }

    /// Mounts `names` again (see `recover`), `startup_mounts` at once; a volume that fails is
    /// logged and left unmounted, as its references say it should be mounted.
    fn mount_here(&self, names: &[String]) {
        if names.is_empty() {
            return;
        }
        let next = std::sync::atomic::AtomicUsize::new(0);
        let mounted = std::sync::atomic::AtomicUsize::new(0);
        let workers = self.mounts_here.limit().min(names.len());
        std::thread::scope(|scope| {
            for _ in 0..workers {
                scope.spawn(|| {
                    while let Some(name) = names.get(next.fetch_add(1, Ordering::Relaxed)) {
                        let _mount = self.mounts_here.acquire();
                        let _volume = self.core.locks.lock(name);
                        match self.core.remount(name) {
                            Remount::Done => {
                                mounted.fetch_add(1, Ordering::Relaxed);
                            }
                            Remount::Failed(e) => {
                                log::error!("volume {name}: cannot mount it again: {e}")
                            }
                        }
                    }
                });
            }
        });
        log::info!(
            "start-up: mounted {} of {} volumes with references again, at most {} at once \
             (startup_mounts = {})",
            mounted.load(Ordering::Relaxed),
            names.len(),
            self.mounts_here.peak(),
            self.mounts_here.limit()
        );
    }

    fn spawn(
        &self,
        name: &str,
        what: &str,
        work: impl FnOnce(&str) + Send + 'static,
    ) -> Result<(), VolumeError> {
        let owned = name.to_owned();
        std::thread::Builder::new()
            .name(format!("{what}-{name}").chars().take(15).collect())
            .spawn(move || work(&owned))
            .map(drop)
            .map_err(|e| VolumeError::io(format!("starting a thread to {what} volume {name}"), e))
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
        let source = super::snapshot::take_source(&mut options);
        let Some(source) = source else {
            let _volume = self.core.locks.lock(&name);
            let rec = self.core.create(name, &driver, options, req.labels)?;
            return self.core.info(&rec);
        };
        // A clone: a new volume, filled with a copy of the source (see `snapshot`), with both
        // volumes' locks held, taken in name order (so two clones never wait for each other).
        let (src, _) = super::snapshot::parse_source(&source)?;
        let mut names = [name.as_str(), src.as_str()];
        names.sort_unstable();
        let _first = self.core.locks.lock(names[0]);
        let _second = (names[0] != names[1]).then(|| self.core.locks.lock(names[1]));
        if self.core.record(&name).is_ok() {
            return Err(VolumeError::Conflict {
                name,
                what: "that name; a clone is always a new volume".into(),
            });
        }
        // A clone starts with its source's size and inode limit unless others are given (a
        // missing source is reported by the steps below).
        if let Ok(src_rec) = self.core.record(&src) {
            for key in ["size", "inodes"] {
                if let Some(v) = src_rec.options.get(key) {
                    options.entry(key.to_string()).or_insert_with(|| v.clone());
                }
            }
        }
        if let Some(src_rec) = self.core.native_clone_source(&driver, &source)? {
            // The driver clones its own snapshot: nothing is copied.
            let (snap, temporary) = self.core.native_clone_snapshot(&src_rec, &source)?;
            let made =
                self.core
                    .create_from(name, &driver, options, req.labels, Some((&src_rec, &snap)));
            if temporary {
                self.core.drop_clone_snapshot(&src_rec, &snap);
            }
            return self.core.info(&made?);
        }
        let rec = self
            .core
            .create(name.clone(), &driver, options, req.labels)?;
        if let Err(e) = self.core.fill_from(&rec, &source) {
            if let Err(undo) = self.core.remove(&name) {
                log::warn!("volume {name}: removing the failed clone: {undo}");
            }
            return Err(e);
        }
        self.core.info(&rec)
    }

    /// A tar stream of the volume at one instant, written to `output` (see `super::export`).
    pub fn export(&self, name: &str, output: &Path) -> Result<ExportInfo, VolumeError> {
        validate_name(name)?;
        let _volume = self.core.locks.lock(name);
        self.core.export(name, output)
    }

    /// Unpacks the tar stream in `input` into the volume.
    pub fn import(&self, name: &str, input: &Path) -> Result<ImportInfo, VolumeError> {
        validate_name(name)?;
        let _volume = self.core.locks.lock(name);
        self.core.import(name, input)
    }

    /// Snapshot operations (see `super::snapshot`).
    pub fn snapshot_create(&self, name: &str, snap: &str) -> Result<SnapshotInfo, VolumeError> {
        validate_name(name)?;
        let _volume = self.core.locks.lock(name);
        self.core.snapshot_create(name, snap)
    }

    pub fn snapshot_list(&self, name: &str) -> Result<Vec<SnapshotInfo>, VolumeError> {
        validate_name(name)?;
        let _volume = self.core.locks.lock(name);
        self.core.snapshot_list_checked(name)
    }

    pub fn snapshot_remove(&self, name: &str, snap: &str) -> Result<(), VolumeError> {
        validate_name(name)?;
        let _volume = self.core.locks.lock(name);
        self.core.snapshot_remove(name, snap)
    }

    pub fn snapshot_restore(&self, name: &str, snap: &str) -> Result<(), VolumeError> {
        validate_name(name)?;
        let _volume = self.core.locks.lock(name);
        self.core.snapshot_restore(name, snap)
    }

    /// Changes the limits (`size=`, `inodes=`), mounted or not (see `super::resize`).
    pub fn update(
        &self,
        name: &str,
        options: BTreeMap<String, String>,
    ) -> Result<VolumeInfo, VolumeError> {
        validate_name(name)?;
        let _volume = self.core.locks.lock(name);
        let rec = self.core.update(name, options)?;
        self.core.info(&rec)
    }

    /// Refused while mounted. `force` only makes a missing volume not an error, as in Docker.
    /// A volume with snapshots is refused unless `force`, which removes them too.
    pub fn remove(&self, name: &str, force: bool) -> Result<(), VolumeError> {
        let _volume = self.core.locks.lock(name);
        let snapshots = match self.core.snapshot_list(name) {
            Ok(s) => s,
            Err(VolumeError::InvalidName { .. }) | Err(VolumeError::NotFound(_)) => Vec::new(),
            Err(e) => return Err(e),
        };
        if !snapshots.is_empty() && !force {
            let names: Vec<_> = snapshots.iter().map(|s| s.name.as_str()).collect();
            return Err(VolumeError::Refused(format!(
                "volume {name} has snapshots ({}); remove them first (fvol snapshot rm {name} \
                 SNAP), or remove the volume with its snapshots: fvol rm -f {name}",
                names.join(", ")
            )));
        }
        match self.core.remove(name) {
            Err(VolumeError::NotFound(_)) if force => Ok(()),
            Ok(_) if !snapshots.is_empty() => self.core.snapshot_remove_all(name),
            other => other.map(drop),
        }
    }

    pub fn list(&self) -> Result<Vec<VolumeInfo>, VolumeError> {
        let core = &self.core;
        core.records()?.iter().map(|r| core.info(r)).collect()
    }

    pub fn get(&self, name: &str) -> Result<VolumeInfo, VolumeError> {
        validate_name(name)?;
        let rec = self.core.record(name)?;
        self.core.info(&rec)
    }

    /// The mountpoint, whether or not the volume is mounted now.
    /// The long operation under way on `name` (its lock is held by it, so not taken here).
    pub fn progress(
        &self,
        name: &str,
    ) -> Result<Option<super::progress::ProgressInfo>, VolumeError> {
        validate_name(name)?;
        Ok(self.core.progress(name))
    }

    pub fn path(&self, name: &str) -> Result<PathBuf, VolumeError> {
        validate_name(name)?;
        self.core.record(name)?;
        Ok(self.core.mountpoint(name))
    }

    /// Adds `reference` (idempotent) and activates the FUSE mount if it is the first.
    /// A `cli:TARGET` reference also bind-mounts the volume at TARGET (the directory must
    /// exist).
    pub fn mount(&self, name: &str, reference: &RefId) -> Result<PathBuf, VolumeError> {
        validate_name(name)?;
        let _volume = self.core.locks.lock(name);
        self.core.mount(name, reference)
    }

    /// Drops `reference` and its bind mount; the FUSE mount ends with the last reference.
    /// A reference the volume does not hold is harmless (Docker may repeat an Unmount).
    pub fn unmount(&self, name: &str, reference: &RefId) -> Result<(), VolumeError> {
        validate_name(name)?;
        let _volume = self.core.locks.lock(name);
        self.core.release(name, reference).map(drop)
    }

    /// `unmount` for a user who named the reference: when the volume is mounted, but not
    /// for that reference, the answer is an error naming the references it does hold (not a
    /// silent success that leaves it mounted). Unmounting an unmounted volume is harmless.
    pub fn release(&self, name: &str, reference: &RefId) -> Result<(), VolumeError> {
        validate_name(name)?;
        let _volume = self.core.locks.lock(name);
        if self.core.release(name, reference)? {
            return Ok(());
        }
        let held: Vec<String> = self.core.record(name)?.mount_refs.into_keys().collect();
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
        let _volume = self.core.locks.lock(name);
        self.core.release_all(name)
    }

    /// Checks an unmounted volume's backing store and reports what it found (JSON).
    pub fn fsck(&self, name: &str) -> Result<String, VolumeError> {
        validate_name(name)?;
        let _volume = self.core.locks.lock(name);
        self.core.fsck(name)
    }

    /// Breaks locks a dead holder left on a volume's backing store; returns the holders.
    pub fn break_lock(&self, name: &str) -> Result<Vec<String>, VolumeError> {
        validate_name(name)?;
        let _volume = self.core.locks.lock(name);
        self.core.break_lock(name)
    }

    /// The event log (`fvol events`).
    pub fn events(&self) -> Arc<super::events::EventLog> {
        self.core.events()
    }

    /// What the daemon's metrics show, read at one moment.
    pub fn observe(&self) -> Result<super::observe::Observation, VolumeError> {
        self.core.observe()
    }

    /// Removes every volume with no mount reference (checked again under its lock: one
    /// mounted meanwhile is kept).
    pub fn prune(&self) -> Result<PruneReport, VolumeError> {
        let mut report = PruneReport::default();
        for rec in self.core.records()? {
            if !rec.mount_refs.is_empty() {
                continue;
            }
            let _volume = self.core.locks.lock(&rec.name);
            match self.core.record(&rec.name) {
                Ok(now) if now.mount_refs.is_empty() => {}
                _ => continue,
            }
            // A volume with snapshots stays: `rm -f` removes it with them.
            if !self.core.snapshot_list(&rec.name)?.is_empty() {
                continue;
            }
            report.reclaimed_bytes += self.core.remove(&rec.name)?;
            report.removed.push(rec.name);
        }
        Ok(report)
    }

    /// Keeps volume connections in `keeper` from now on, so that they outlive the daemon.
    /// Call before `recover`.
    pub fn set_keeper(&self, keeper: Arc<crate::keeper::Keeper>) {
        self.core.set_keeper(keeper);
    }

    /// Unmounts everything and persists usage as clean; references are kept so the next start
    /// mounts the same volumes again.
    pub fn shutdown(&self) {
        self.stop.store(true, Ordering::Relaxed);
        self.core.shutdown();
    }

    /// Stops serving and leaves every volume the keeper holds mounted for the next daemon
    /// (see `Core::handover`); the others are unmounted.
    pub fn handover(&self) {
        self.handing_over.store(true, Ordering::Relaxed);
        self.stop.store(true, Ordering::Relaxed);
        self.core.handover();
    }
}

/// Tries to mount `name` again until it is mounted or no longer wanted, or the daemon stops
/// (`handing_over`: for the next daemon); `first_try` runs once, after the first try.
fn remount_until_done(
    core: &Core,
    name: &str,
    stop: &AtomicBool,
    handing_over: &AtomicBool,
    permits: &Permits,
    first_try: impl FnOnce(),
) {
    let mut first_try = Some(first_try);
    let mut logged = false;
    while !stop.load(Ordering::Relaxed) {
        let outcome = {
            let _try = permits.acquire();
            let _volume = core.locks.lock(name);
            // Checked again under the lock: a stop meanwhile may have unmounted everything.
            if stop.load(Ordering::Relaxed) {
                return;
            }
            let outcome = core.remount(name);
            // A stop that began during the try did not see this volume active.
            if stop.load(Ordering::Relaxed) {
                match handing_over.load(Ordering::Relaxed) {
                    true => core.hand_over(name, core.keeper_holds(name)),
                    false => core.deactivate(name),
                }
                return;
            }
            outcome
        };
        if let Some(f) = first_try.take() {
            f();
        }
        match outcome {
            Remount::Done => return,
            Remount::Failed(e) if !logged => {
                log::error!(
                    "volume {name}: cannot mount it again yet: {e}; trying again every {} s \
                     until its backing store answers",
                    REMOUNT_RETRY.as_secs()
                );
                logged = true;
            }
            Remount::Failed(_) => {}
        }
        let until = Instant::now() + REMOUNT_RETRY;
        while Instant::now() < until && !stop.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}
