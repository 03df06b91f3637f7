//! The volume logic under `VolumeManager`: validation, driver dispatch, references, mounts.
//!
//! Invariants:
//! - a volume is active (its FUSE mount exists) exactly when its record has mount references,
//!   except between a failed activation and the next start-up;
//! - every reference with a target has a bind mount of the volume there while active;
//! - the catalog is written before a change is reported as done;
//! - `create` and `rm` commit an intent (`VolumeState::Creating`, `Removing`) before they
//!   touch the backing store, and only a `Ready` record is a volume for users; an intent
//!   left by an error or a crash is settled (`settle`) by the next create or rm of the name,
//!   or at start-up: a create is rolled back, an rm finished.
//!
//! Concurrency: every operation on a volume holds that volume's lock (`locks`, taken by the
//! caller: `VolumeManager`, start-up); nothing holds a lock over all volumes across a driver
//! call or an unmount. The map of active volumes is locked only to look an entry up, insert or
//! take it out, so `ls` and `inspect` answer while a volume waits for its backing store.
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;

use super::events::EventType;
use super::fault::crash_point;
use super::kept;
use super::locks::VolumeLocks;
use super::{
    ClusterWaitStatus, FencedStatus, MountPendingStatus, MountRef, RefId, RefKind, ReferenceInfo,
    Usage, VolumeError, VolumeInfo, VolumeRecord, VolumeState, VolumeStatus,
};
use crate::driver::{AnyDriver, DriverContext};
use crate::fs::gate::GatedFs;
use crate::fs::resume::Carry;
use crate::fs::{Health, UsageSnapshot, VolumeFs};
use crate::fuse::{
    Connection, MountedFs, ServeOptions, Unmounted, detach_stale_mount, is_stale_mount,
};
use crate::keeper::Keeper;
use crate::store::Store;

struct Active {
    fs: Arc<dyn VolumeFs>,
    /// The same filesystem behind its gate, which a snapshot closes for an instant.
    gated: Arc<GatedFs>,
    mount: MountedFs,
    /// The data goes with the mount (tmpfs).
    ephemeral: bool,
    /// The usage last written to the catalog.
    saved: Option<UsageSnapshot>,
    /// The health last logged (`checkpoint`).
    logged: Health,
    /// The keeper holds the connection: the volume outlives this daemon.
    kept: bool,
    /// The kernel reads and writes host files directly (usage is re-read only at close).
    passthrough: bool,
    /// Quota refusals seen so far, and the filesystem's space releases when the current
    /// episode of them began (a `quota-full` event each episode; it ends when space comes
    /// back: a release).
    quota_refusals_seen: u64,
    full_since: Option<u64>,
}

/// A volume with references whose mount at start-up waits for its backing store.
#[derive(Clone, Debug)]
struct PendingMount {
    since: SystemTime,
    error: String,
    /// The keeper holds its connection, still mounted, which the mount takes over (see
    /// `take_over`) instead of mounting anew.
    kept: bool,
}

pub struct Core {
    ctx: DriverContext,
    store: Store,
    drivers: Vec<Arc<dyn AnyDriver>>,
    /// Per-volume locks, held by whoever operates on a volume.
    pub locks: VolumeLocks,
    active: Mutex<HashMap<String, Active>>,
    pending: Mutex<HashMap<String, PendingMount>>,
    /// Ephemeral (tmpfs) volumes whose last plugin reference went, kept mounted with their
    /// data until the deadline (see `release`), unless a Mount comes first.
    lingering: Mutex<HashMap<String, Instant>>,
    tmpfs_linger: Duration,
    /// Holds connections across restarts of the daemon (unset: volumes end with it).
    keeper: OnceLock<Arc<Keeper>>,
    /// Volumes mounted again at start-up for the references they had (see `observe`).
    handler_restarts: AtomicU64,
    events: Arc<super::events::EventLog>,
    /// How far the long operations under way have got (`progress`).
    pub(super) progress: super::progress::ProgressBoard,
    /// Volumes whose snapshot check with their store has not answered yet
    /// (`snapshot_list_checked`): one at a time each, so an outage piles up no threads.
    pub(super) snapshot_checks: Arc<Mutex<std::collections::HashSet<String>>>,
}

/// How long a planned stop waits for the requests being served to finish before it hands the
/// connections over (later ones wait for the next daemon).
const SUSPEND_TIMEOUT: Duration = Duration::from_secs(5);

/// Why an activation failed: `in_driver` when the driver could not open the backing store.
struct ActivationError {
    error: VolumeError,
    in_driver: bool,
}

impl From<VolumeError> for ActivationError {
    fn from(error: VolumeError) -> ActivationError {
        ActivationError {
            error,
            in_driver: false,
        }
    }
}

impl From<crate::store::StoreError> for ActivationError {
    fn from(error: crate::store::StoreError) -> ActivationError {
        VolumeError::from(error).into()
    }
}

/// How a try to serve a kept connection again ended (`take_over`).
enum TakeOver {
    Served,
    /// It cannot be: the keeper lets it go, and the volume is mounted anew.
    Refused,
    /// The driver failed to activate the volume (its backing store does not answer): for a
    /// remote backing store, the connection stays kept and the take-over is tried again.
    Failed(VolumeError),
}

/// What start-up left for the caller to do, a bounded number at once (`Remount` each).
#[derive(Debug, Default)]
pub struct Deferred {
    /// Volumes with references to mount again whose backing store is here: mounted before
    /// the daemon serves requests.
    pub mount_here: Vec<String>,
    /// Unfinished creates and removals to settle, on a remote backing store (background).
    pub settle: Vec<String>,
    /// Volumes with references to mount again, on a remote backing store (background).
    pub mount: Vec<String>,
}

/// How a try to mount a volume again at start-up ended.
#[derive(Debug)]
pub enum Remount {
    /// Mounted, or no longer wanted (its references are gone, it is mounted already, or gone).
    Done,
    /// Its backing store failed it; tried again later.
    Failed(VolumeError),
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn rfc3339(secs: u64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + std::time::Duration::from_secs(secs)).to_string()
}

fn rfc3339_of(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

impl Core {
    pub fn new(
        root: &Path,
        store: Store,
        drivers: Vec<Arc<dyn AnyDriver>>,
        tmpfs_linger: Duration,
    ) -> Core {
        Core {
            ctx: DriverContext {
                root: root.to_path_buf(),
            },
            store,
            drivers,
            locks: VolumeLocks::default(),
            active: Mutex::new(HashMap::new()),
            pending: Mutex::new(HashMap::new()),
            lingering: Mutex::new(HashMap::new()),
            tmpfs_linger,
            keeper: OnceLock::new(),
            handler_restarts: AtomicU64::new(0),
            events: Arc::new(super::events::EventLog::default()),
            progress: Default::default(),
            snapshot_checks: Default::default(),
        }
    }

    /// The long operation under way on `name` (export, import, a copy), if any. Takes no
    /// volume lock: the operation holds it.
    pub fn progress(&self, name: &str) -> Option<super::progress::ProgressInfo> {
        self.progress.get(name)
    }

    /// Keeps the connections of volumes whose driver allows it in `keeper` from now on, so
    /// that they outlive this daemon (see `handover`). Set before `recover`.
    pub fn set_keeper(&self, keeper: Arc<Keeper>) {
        if self.keeper.set(keeper).is_err() {
            log::warn!("a keeper was set twice; keeping the first");
        }
    }

    fn keeper(&self) -> Option<&Arc<Keeper>> {
        self.keeper.get()
    }

    fn is_active(&self, name: &str) -> bool {
        self.active.lock().contains_key(name)
    }

    pub fn events(&self) -> Arc<super::events::EventLog> {
        self.events.clone()
    }

    pub(super) fn emit(&self, kind: EventType, rec: &VolumeRecord, attributes: &[(&str, String)]) {
        self.events.emit(kind, &rec.name, &rec.driver, attributes);
    }

    pub fn driver(&self, name: &str) -> Result<Arc<dyn AnyDriver>, VolumeError> {
        self.drivers
            .iter()
            .find(|d| d.name() == name)
            .cloned()
            .ok_or_else(|| {
                let valid: Vec<_> = self.drivers.iter().map(|d| d.name()).collect();
                VolumeError::UnknownDriver {
                    given: name.into(),
                    valid: valid.join(", "),
                }
            })
    }

    /// The volume `name`; an unfinished create or rm is no volume.
    pub fn record(&self, name: &str) -> Result<VolumeRecord, VolumeError> {
        self.store
            .get(name)?
            .filter(|rec| rec.state == VolumeState::Ready)
            .ok_or_else(|| VolumeError::NotFound(name.into()))
    }

    /// Every volume, in name order; unfinished creates and rms are left out.
    pub fn records(&self) -> Result<Vec<VolumeRecord>, VolumeError> {
        let mut records = self.store.list()?;
        records.retain(|rec| rec.state == VolumeState::Ready);
        Ok(records)
    }

    pub fn mountpoint(&self, name: &str) -> PathBuf {
        self.ctx.volume_dir(name).join("mnt")
    }

    /// What `inspect` shows. Never waits for a backing store: usage and health of an active
    /// volume are in memory.
    pub fn info(&self, rec: &VolumeRecord) -> Result<VolumeInfo, VolumeError> {
        let (size_limit, inode_limit) = self.driver(&rec.driver)?.limits(&rec.options)?;
        let live = (self.active.lock().get(&rec.name))
            .map(|a| (a.fs.usage(), a.fs.health(), a.mount.connection_ended()));
        let (usage, mounted, health, connection_ended) = match live {
            Some((usage, health, ended)) => (usage, true, health, ended),
            None => {
                let u = self.store.usage(&rec.name)?;
                let usage = crate::fs::UsageSnapshot {
                    bytes: u.bytes,
                    inodes: u.inodes,
                };
                (usage, false, Health::default(), false)
            }
        };
        let pending = self.pending.lock().get(&rec.name).cloned();
        Ok(VolumeInfo {
            name: rec.name.clone(),
            driver: rec.driver.clone(),
            mountpoint: self.mountpoint(&rec.name),
            created_at: rfc3339(rec.created_at),
            labels: rec.labels.clone(),
            options: rec.options.clone(),
            scope: "local".into(),
            status: VolumeStatus {
                size_limit,
                used_bytes: usage.bytes,
                inode_limit,
                used_inodes: usage.inodes,
                mounted,
                mount_refs: rec.mount_refs.keys().cloned().collect(),
                references: rec
                    .mount_refs
                    .iter()
                    .map(|(id, r)| ReferenceInfo {
                        id: id.clone(),
                        since: rfc3339(r.since),
                        target: r.target.clone(),
                    })
                    .collect(),
                cluster_wait: health.cluster_wait.map(|w| ClusterWaitStatus {
                    since: rfc3339_of(w.since),
                    operations: w.operations,
                }),
                fenced: health.fenced.map(|f| FencedStatus {
                    since: rfc3339_of(f.since),
                    reason: f.reason,
                }),
                mount_pending: pending.map(|p| MountPendingStatus {
                    since: rfc3339_of(p.since),
                    error: p.error,
                }),
                connection_ended,
            },
        })
    }

    /// Creates a volume; the same request again is a no-op returning the existing one.
    ///
    /// Steps: the `Creating` intent (commit), the directories and the backing store, then the
    /// `Ready` record with its usage (commit). An error undoes what was made; a crash leaves
    /// the intent, which the next start rolls back.
    pub fn create(
        &self,
        name: String,
        driver: &str,
        options: std::collections::BTreeMap<String, String>,
        labels: std::collections::BTreeMap<String, String>,
    ) -> Result<VolumeRecord, VolumeError> {
        self.create_from(name, driver, options, labels, None)
    }

    /// `create`, with the backing store made by the driver from snapshot `SNAP` of volume
    /// `source` when `clone` is `Some((source, SNAP))` (`Driver::clone_create`).
    pub fn create_from(
        &self,
        name: String,
        driver: &str,
        options: std::collections::BTreeMap<String, String>,
        labels: std::collections::BTreeMap<String, String>,
        clone: Option<(&VolumeRecord, &str)>,
    ) -> Result<VolumeRecord, VolumeError> {
        super::name::validate_name(&name)?;
        super::limits::check_new_volume(&options, &labels)?;
        let driver = self.driver(driver)?;
        driver.check_options(&options)?;
        match self.store.get(&name)? {
            Some(existing) if existing.state == VolumeState::Ready => {
                return if existing.driver != driver.name() {
                    Err(VolumeError::Conflict {
                        name,
                        what: format!("driver {}", existing.driver),
                    })
                } else if existing.options != options {
                    Err(VolumeError::Conflict {
                        name,
                        what: format!("options {:?}", existing.options),
                    })
                } else {
                    Ok(existing)
                };
            }
            // An earlier create or rm of this name did not finish: settle it first.
            Some(unfinished) => self.settle(&unfinished)?,
            None => {}
        }
        driver.validate(&self.ctx, &options)?;
        let mut rec = VolumeRecord {
            name: name.clone(),
            driver: driver.name().into(),
            options,
            labels,
            created_at: now(),
            mount_refs: Default::default(),
            owns_backing: false,
            state: VolumeState::Creating,
            backing_identity: None,
        };
        rec.owns_backing = driver.will_own_backing(&self.ctx, &rec)?;
        self.store.put(&rec)?;
        crash_point("create-after-intent");
        let created = create_dir(&self.ctx.volume_dir(&name), 0o700)
            .and_then(|()| self.prepare_mountpoint(&name))
            .and_then(|()| match clone {
                Some((source, snap)) => Ok(driver.clone_create(&self.ctx, &rec, source, snap)?),
                None => Ok(driver.create(&self.ctx, &rec)?),
            });
        let created = match created {
            Ok(created) => created,
            Err(e) => {
                // The driver left nothing behind: only the intent and directories remain.
                self.undo_create(&rec, false);
                return Err(e);
            }
        };
        crash_point("create-after-data");
        debug_assert_eq!(created.owns_backing, rec.owns_backing);
        rec.backing_identity = created.backing_identity;
        rec.state = VolumeState::Ready;
        if let Err(e) = self.store.put_with_usage(&rec, created.usage) {
            rec.state = VolumeState::Creating;
            self.undo_create(&rec, true);
            return Err(e.into());
        }
        self.emit(EventType::Create, &rec, &[]);
        Ok(rec)
    }

    /// Undoes a create that failed in this process; `rec` is its intent. With `made`, the
    /// backing store exists and goes too, but only once the catalog says `Creating` again: a
    /// commit of `Ready` that reported an error may still have landed. Whatever cannot be
    /// undone now stays as the intent, which the next start rolls back.
    fn undo_create(&self, rec: &VolumeRecord, made: bool) {
        let undone = (|| {
            if made {
                self.store.put(rec)?;
                self.driver(&rec.driver)?.remove(&self.ctx, rec)?;
            }
            self.store.remove(&rec.name)?;
            self.remove_volume_dir(&rec.name);
            Ok::<(), VolumeError>(())
        })();
        if let Err(e) = undone {
            log::warn!(
                "volume {}: undoing the failed create: {e}; it is rolled back at the next start",
                rec.name
            );
        }
    }

    /// Settles an intent an error or a crash left: rolls back a create (deleting what it made
    /// if fvol owns it) or finishes an rm. The data goes before the record, so a failure here
    /// leaves the intent to be settled again.
    fn settle(&self, rec: &VolumeRecord) -> Result<(), VolumeError> {
        let what = match rec.state {
            VolumeState::Ready => return Ok(()),
            VolumeState::Creating => "rolling back its unfinished create",
            VolumeState::Removing => "finishing its unfinished removal",
        };
        log::info!("volume {}: {what}", rec.name);
        self.driver(&rec.driver)?.remove(&self.ctx, rec)?;
        self.store.remove(&rec.name)?;
        self.remove_volume_dir(&rec.name);
        Ok(())
    }

    /// Makes the volume's mountpoint directory and mounts the read-only guard on it, unless
    /// the guard is there already (see `super::guard`). Called with no FUSE mount there.
    fn prepare_mountpoint(&self, name: &str) -> Result<(), VolumeError> {
        let mountpoint = self.mountpoint(name);
        let io = |e| VolumeError::io(format!("guarding {}", mountpoint.display()), e);
        if super::guard::is_mounted(&mountpoint).map_err(io)? {
            return Ok(());
        }
        create_dir(&mountpoint, 0o755)?;
        super::guard::ensure(&mountpoint, name).map_err(io)
    }

    /// Removes the guard, the empty mountpoint and the volume's directory, never following
    /// into a mount.
    fn remove_volume_dir(&self, name: &str) {
        let mountpoint = self.mountpoint(name);
        if let Err(e) = super::guard::remove(&mountpoint) {
            log::warn!("volume {name}: removing the guard of its mountpoint: {e}");
        }
        let _ = std::fs::remove_dir(&mountpoint);
        let _ = std::fs::remove_dir(self.ctx.volume_dir(name));
    }

    /// Removes a volume; returns the bytes freed.
    ///
    /// Steps: the `Removing` intent (commit), the backing store, then the record (commit).
    /// From the intent on, the volume is gone for users; an error or a crash leaves the
    /// intent, which the next rm of the name, or the next start, finishes.
    pub fn remove(&self, name: &str) -> Result<u64, VolumeError> {
        let mut rec = match self.store.get(name)? {
            Some(rec) if rec.state == VolumeState::Ready => rec,
            // Finishing an earlier rm is this rm's job; an unfinished create was never a
            // volume, so there is none to remove once it is rolled back.
            Some(unfinished) => {
                self.settle(&unfinished)?;
                return match unfinished.state {
                    VolumeState::Removing => Ok(0),
                    _ => Err(VolumeError::NotFound(name.into())),
                };
            }
            None => return Err(VolumeError::NotFound(name.into())),
        };
        if rec.mount_refs.is_empty() && self.lingering.lock().remove(name).is_some() {
            self.deactivate(name);
        }
        if !rec.mount_refs.is_empty() || self.is_active(name) {
            let holders: Vec<_> = rec.mount_refs.keys().cloned().collect();
            return Err(VolumeError::InUse {
                name: name.into(),
                holders: holders.join(", "),
            });
        }
        let freed = if rec.owns_backing {
            self.store.usage(name)?.bytes
        } else {
            0
        };
        let driver = self.driver(&rec.driver)?;
        rec.state = VolumeState::Removing;
        self.store.put(&rec)?;
        crash_point("rm-after-intent");
        if let Err(e) = driver.remove(&self.ctx, &rec) {
            return Err(self.removal_failed(rec, e.into()));
        }
        crash_point("rm-after-data");
        self.store
            .remove(name)
            .map_err(|e| unfinished(name, e.into()))?;
        self.remove_volume_dir(name);
        self.emit(
            EventType::Remove,
            &rec,
            &[("reclaimed_bytes", freed.to_string())],
        );
        Ok(freed)
    }

    /// The driver could not delete the backing store. When it deleted nothing (the store is in
    /// use elsewhere), the volume is kept: its intent is dropped again.
    fn removal_failed(&self, mut rec: VolumeRecord, e: VolumeError) -> VolumeError {
        if !e.is_in_use() {
            return unfinished(&rec.name, e);
        }
        rec.state = VolumeState::Ready;
        match self.store.put(&rec) {
            Ok(()) => e,
            Err(put) => {
                log::warn!("volume {}: keeping it after a refused rm: {put}", rec.name);
                unfinished(&rec.name, e)
            }
        }
    }

    /// Adds `reference` (idempotent) and activates the FUSE mount if it is the first. A
    /// `cli:TARGET` or `csi:TARGET` reference also bind-mounts the volume at TARGET (an existing
    /// directory).
    pub fn mount(&self, name: &str, reference: &RefId) -> Result<PathBuf, VolumeError> {
        let mut rec = self.record(name)?;
        let target = reference.target();
        let pinned = match target {
            Some(t) => Some(super::bind::open_target(t, &self.ctx.root)?),
            None => None,
        };
        let was_active = self.is_active(name);
        if !was_active {
            self.bring_up(&rec)?;
            // Binds made again for the references it had are recorded.
            rec = self.record(name)?;
        }
        let lingered = self.lingering.lock().remove(name);
        let keep_lingering = |core: &Core| {
            if let Some(deadline) = lingered {
                core.lingering.lock().insert(name.into(), deadline);
            }
        };
        let mountpoint = self.mountpoint(name);
        let key = reference.key();
        let already = rec.mount_refs.contains_key(&key);
        let mut bind_mount_id = None;
        if let (Some(t), Some(pinned), false) = (target, &pinned, already) {
            match super::bind::bind(&mountpoint, pinned, t) {
                Ok(id) => bind_mount_id = Some(id),
                Err(e) => {
                    if !was_active && rec.mount_refs.is_empty() {
                        self.deactivate(name);
                    }
                    keep_lingering(self);
                    return Err(e);
                }
            }
        }
        if !already {
            let r = MountRef {
                kind: reference.kind(),
                target: target.map(Path::to_path_buf),
                since: now(),
                bind_mount_id,
            };
            rec.mount_refs.insert(key, r);
            if let Err(e) = self.store.put(&rec) {
                if let Some(t) = target {
                    let _ = super::bind::detach(t, bind_mount_id);
                }
                if !was_active {
                    self.deactivate(name);
                }
                keep_lingering(self);
                return Err(e.into());
            }
            self.emit(EventType::Mount, &rec, &[("reference", reference.key())]);
        }
        Ok(mountpoint)
    }

    /// Drops `reference` and its bind mount; false when the volume does not hold it. The last
    /// reference deactivates the volume, except that an ephemeral (tmpfs) volume whose last
    /// reference was a plugin's lingers, data and all, for `tmpfs_linger`: Docker fills a
    /// new volume from the image (Mount, copy, Unmount) just before it mounts it again for
    /// the container, and that copy must reach the container.
    pub fn release(&self, name: &str, reference: &RefId) -> Result<bool, VolumeError> {
        let mut rec = self.record(name)?;
        let Some(r) = rec.mount_refs.remove(&reference.key()) else {
            return Ok(false);
        };
        if let Some(t) = &r.target {
            detach_target(name, t, r.bind_mount_id)?;
        }
        self.store.put(&rec)?;
        self.emit(EventType::Unmount, &rec, &[("reference", reference.key())]);
        if rec.mount_refs.is_empty() {
            self.forget_pending(name);
            let ephemeral = self.active.lock().get(name).is_some_and(|a| a.ephemeral);
            if ephemeral && r.kind == RefKind::Plugin && !self.tmpfs_linger.is_zero() {
                self.lingering
                    .lock()
                    .insert(name.into(), Instant::now() + self.tmpfs_linger);
            } else {
                self.deactivate(name);
            }
        }
        Ok(true)
    }

    /// Drops every reference, detaching their bind mounts (a bind mount that cannot be
    /// detached is logged, and its reference dropped all the same), then deactivates the
    /// volume: a mount still in use is detached lazily. Returns the references dropped.
    pub fn release_all(&self, name: &str) -> Result<Vec<String>, VolumeError> {
        let mut rec = self.record(name)?;
        let refs = std::mem::take(&mut rec.mount_refs);
        for r in refs.values() {
            if let Some(t) = &r.target
                && let Err(e) = detach_target(name, t, r.bind_mount_id)
            {
                log::warn!("volume {name}: {e}; dropping its reference anyway");
            }
        }
        self.store.put(&rec)?;
        self.forget_pending(name);
        for id in refs.keys() {
            self.emit(EventType::Unmount, &rec, &[("reference", id.clone())]);
        }
        self.deactivate(name);
        Ok(refs.into_keys().collect())
    }

    /// Deactivates the lingering volumes whose time is up. Skips a volume another operation
    /// holds (it is looked at again at the next call).
    pub fn end_lingering(&self) {
        let now = Instant::now();
        let due: Vec<String> = (self.lingering.lock().iter())
            .filter(|(_, deadline)| **deadline <= now)
            .map(|(name, _)| name.clone())
            .collect();
        for name in due {
            let Some(_volume) = self.locks.try_lock(&name) else {
                continue;
            };
            // A Mount may have come in between.
            if self.lingering.lock().remove(&name).is_none() {
                continue;
            }
            log::info!(
                "volume {name}: no Mount within {:?} of its last Unmount; its data goes",
                self.tmpfs_linger
            );
            self.deactivate(&name);
        }
    }

    /// Releases plugin references whose holder is gone: a reference at least `grace` old, on
    /// a volume that no other mount namespace uses (see `sys::mountns`). Docker and Pouch
    /// bind-mount a volume into each container's own mount namespace, so a container that
    /// still uses the volume always shows; `grace` covers the moments between a Mount and its
    /// container's start. CLI references are never released by themselves. Skips a volume
    /// another operation holds.
    pub fn release_orphaned_plugin_refs(&self, grace: Duration) {
        let oldest_kept = now().saturating_sub(grace.as_secs());
        let is_orphan_candidate =
            |r: &MountRef| r.kind == RefKind::Plugin && r.since <= oldest_kept;
        let devices: Vec<(String, u64)> = (self.active.lock().iter())
            .filter_map(|(name, a)| a.mount.device().map(|d| (name.clone(), d)))
            .collect();
        let mut candidates = Vec::new();
        for (name, device) in devices {
            match self.store.get(&name) {
                Ok(Some(rec)) if rec.mount_refs.values().any(is_orphan_candidate) => {
                    candidates.push((name, device))
                }
                _ => {}
            }
        }
        if candidates.is_empty() {
            return;
        }
        let mounts = match crate::sys::mountns::MountTable::read() {
            Ok(mounts) => mounts,
            Err(e) => {
                log::warn!("cannot read the mount namespaces in /proc: {e}");
                return;
            }
        };
        for (name, device) in candidates {
            if mounts.used_elsewhere(crate::sys::mountns::device_number(device)) {
                continue;
            }
            let Some(_volume) = self.locks.try_lock(&name) else {
                continue;
            };
            // Handed over to the next daemon meanwhile (a stop): its references go with it.
            if !self.is_active(&name) {
                continue;
            }
            // Read again under the volume's lock: a Mount may have come in between.
            let Ok(mut rec) = self.record(&name) else {
                continue;
            };
            let orphans: Vec<String> = (rec.mount_refs.iter())
                .filter(|(_, r)| is_orphan_candidate(r))
                .map(|(id, _)| id.clone())
                .collect();
            if orphans.is_empty() {
                continue;
            }
            for id in &orphans {
                rec.mount_refs.remove(id);
            }
            if let Err(e) = self.store.put(&rec) {
                log::warn!("volume {name}: releasing orphaned references: {e}");
                continue;
            }
            log::info!(
                "volume {name}: released {} (no container's mount namespace holds the volume)",
                orphans.join(", ")
            );
            for id in &orphans {
                let attributes = [("reference", id.clone()), ("reason", "orphaned".into())];
                self.emit(EventType::Unmount, &rec, &attributes);
            }
            if rec.mount_refs.is_empty() {
                self.forget_pending(&name);
                self.deactivate(&name);
            }
        }
    }

    fn activate(&self, rec: &VolumeRecord) -> Result<(), VolumeError> {
        self.activate_with(rec, None).map_err(|e| e.error)
    }

    /// Activates `rec`: mounts it, or with `kept` (the connection a previous daemon left in
    /// the keeper, and its carry) serves that connection again, whose mount is still there.
    fn activate_with(
        &self,
        rec: &VolumeRecord,
        kept: Option<(Connection, Carry)>,
    ) -> Result<(), ActivationError> {
        let driver = self.driver(&rec.driver)?;
        let stored = self.store.usage(&rec.name)?;
        let keeper = self.keeper().cloned().filter(|_| driver.survives_restart());
        let (mut carry, connection) = match (&keeper, kept) {
            (Some(_), Some((connection, carry))) => (carry, Some(connection)),
            (Some(keeper), None) => (kept::fresh(keeper, &rec.name), None),
            (None, _) => (Carry::none(), None),
        };
        let activation = driver
            .activate(&self.ctx, rec, stored, &mut carry)
            .map_err(|error| ActivationError {
                error: error.into(),
                in_driver: true,
            })?;
        let mountpoint = self.mountpoint(&rec.name);
        let serve = ServeOptions {
            passthrough: activation.passthrough,
            exclusive: activation.exclusive,
            readahead_kb: activation.readahead_kb,
            threads: activation.threads,
        };
        let resuming = connection.is_some();
        let gated = Arc::new(GatedFs::new(activation.fs.clone(), activation.passthrough));
        let fs: Arc<dyn crate::fs::VolumeFs> = gated.clone();
        let mount = match connection {
            Some(connection) => {
                crate::fuse::resume(fs, &mountpoint, &rec.name, serve, &mut carry, connection)
            }
            None => {
                if is_stale_mount(&mountpoint) {
                    detach_stale_mount(&mountpoint)
                        .map_err(|e| VolumeError::io("detaching a stale mount", e))?;
                }
                // The FUSE mount goes on top of the guard: whenever it is gone, the guard shows.
                self.prepare_mountpoint(&rec.name)?;
                crate::fuse::mount(fs, &mountpoint, &rec.name, serve, &mut carry)
            }
        }
        .map_err(|e| VolumeError::io(format!("mounting {}", mountpoint.display()), e))?;
        let kept = match &keeper {
            Some(keeper) if resuming => {
                if let Err(e) = kept::add_tables(keeper, &rec.name, &mut carry) {
                    log::warn!(
                        "volume {}: the keeper cannot hold its new tables ({e}): what they \
                         keep will not survive a crash of the daemon",
                        rec.name
                    );
                }
                true
            }
            Some(keeper) if mount.connection().resumable() => {
                match kept::register(keeper, &rec.name, &mount, &mut carry) {
                    Ok(()) => true,
                    Err(e) => {
                        log::warn!(
                            "volume {}: the keeper cannot hold it ({e}): it will not survive a \
                             restart of the daemon",
                            rec.name
                        );
                        let _ = keeper.drop_volume(&rec.name);
                        false
                    }
                }
            }
            _ => false,
        };
        // Not clean until a clean deactivation: a crash from here on means a rescan.
        self.store.set_usage(&rec.name, activation.usage)?;
        self.pending.lock().remove(&rec.name);
        self.active.lock().insert(
            rec.name.clone(),
            Active {
                fs: gated.clone(),
                gated,
                mount,
                ephemeral: activation.ephemeral,
                saved: None,
                logged: Health::default(),
                kept,
                passthrough: activation.passthrough,
                quota_refusals_seen: 0,
                full_since: None,
            },
        );
        Ok(())
    }

    /// The filesystem of an active volume.
    pub(super) fn active_fs(&self, name: &str) -> Option<Arc<dyn VolumeFs>> {
        self.active.lock().get(name).map(|a| a.fs.clone())
    }

    /// The gate of an active volume's filesystem (see `fs::gate`).
    pub(super) fn active_gate(&self, name: &str) -> Option<Arc<GatedFs>> {
        self.active.lock().get(name).map(|a| a.gated.clone())
    }

    pub(super) fn driver_context(&self) -> &DriverContext {
        &self.ctx
    }

    pub(super) fn store(&self) -> &Store {
        &self.store
    }

    /// Checks an unmounted volume's backing store (rbd); the report is JSON.
    pub fn fsck(&self, name: &str) -> Result<String, VolumeError> {
        let rec = self.record(name)?;
        self.refuse_if_active(&rec, "fsck")?;
        Ok(self.driver(&rec.driver)?.fsck(&self.ctx, &rec)?)
    }

    /// Breaks locks left on a volume's backing store by holders that are gone.
    pub fn break_lock(&self, name: &str) -> Result<Vec<String>, VolumeError> {
        let rec = self.record(name)?;
        self.refuse_if_active(&rec, "break its lock")?;
        let broken = self.driver(&rec.driver)?.break_lock(&self.ctx, &rec)?;
        if !broken.is_empty() {
            self.emit(
                EventType::LockBroken,
                &rec,
                &[("holders", broken.join(", "))],
            );
        }
        Ok(broken)
    }

    fn refuse_if_active(&self, rec: &VolumeRecord, what: &'static str) -> Result<(), VolumeError> {
        if self.is_active(&rec.name) {
            let holders: Vec<_> = rec.mount_refs.keys().cloned().collect();
            return Err(VolumeError::Mounted {
                name: rec.name.clone(),
                holders: holders.join(", "),
                what,
            });
        }
        Ok(())
    }

    /// Unmounts, syncs and records the usage, as clean if both worked: the next activation
    /// then trusts it instead of rescanning the tree.
    pub fn deactivate(&self, name: &str) {
        self.lingering.lock().remove(name);
        let Some(active) = self.active.lock().remove(name) else {
            return;
        };
        // Unmounted first, so that no request changes the usage after it is read; a mount
        // that was only detached (busy) may still be served, so its usage is not final.
        let device = active.mount.device();
        let ended = match active.mount.unmount() {
            Ok(Unmounted::Ended) => true,
            Ok(Unmounted::Detached) => false,
            Ok(Unmounted::Lingering) => end_unused_copies(name, device),
            Err(e) => {
                log::warn!("unmounting volume {name}: {e}");
                false
            }
        };
        // Ended for good (or ending with its last user): no successor takes it over.
        if active.kept {
            self.drop_kept(name);
        }
        let synced = active.fs.sync_all();
        if let Err(e) = &synced {
            log::warn!("syncing volume {name}: {e}; its usage is rescanned at its next mount");
        }
        let usage = active.fs.usage_at_rest();
        let usage = match active.ephemeral {
            // Its data went with the mount.
            true => Usage {
                bytes: 0,
                inodes: 0,
                clean: true,
            },
            false => Usage {
                bytes: usage.bytes,
                inodes: usage.inodes,
                clean: ended && synced.is_ok(),
            },
        };
        if let Err(e) = self.store.set_usage(name, usage) {
            log::warn!("saving usage of volume {name}: {e}");
        }
        // The volume's filesystem is gone: its freed heap goes back to the system now.
        drop(active.fs);
        drop(active.gated);
        crate::sys::heap::release_free_memory();
    }

    /// The filesystems of the active volumes.
    pub fn active_filesystems(&self) -> Vec<Arc<dyn VolumeFs>> {
        self.active.lock().values().map(|a| a.fs.clone()).collect()
    }

    /// Persists the usage of active volumes (still not clean), and logs what changed in
    /// their health (a wait for the cluster beginning or ending, a fence). Only changed usage
    /// is written, so an idle daemon does not touch the disk.
    pub fn checkpoint(&self) {
        let mut changed = Vec::new();
        for (name, a) in self.active.lock().iter_mut() {
            let u = a.fs.usage();
            if a.saved != Some(u) {
                changed.push((name.clone(), u));
            }
            let health = a.fs.health();
            log_health(name, &a.logged, &health);
            a.logged = health;
        }
        for (name, u) in changed {
            let usage = Usage {
                bytes: u.bytes,
                inodes: u.inodes,
                clean: false,
            };
            if self.store.set_usage(&name, usage).is_ok()
                && let Some(a) = self.active.lock().get_mut(&name)
            {
                a.saved = Some(u);
            }
        }
    }

    /// At start-up, before anything else runs: settles unfinished creates and rms and clears
    /// mounts a dead daemon left. Mounting referenced volumes again is left to the caller
    /// (`remount`, a bounded number at once), as is settling what needs a remote backing store
    /// (`Driver::remote`, in the background with `settle_deferred`).
    pub fn recover(&self) -> Result<Deferred, VolumeError> {
        let mut deferred = Deferred::default();
        for rec in self.store.list()? {
            if rec.state == VolumeState::Ready {
                continue;
            }
            if self.driver(&rec.driver).is_ok_and(|d| d.remote()) {
                deferred.settle.push(rec.name);
            } else if let Err(e) = self.settle(&rec) {
                log::error!(
                    "volume {}: {e}; it is tried again at the next start",
                    rec.name
                );
            }
        }
        let mut kept_names = self.kept_volumes();
        for rec in self.records()? {
            let mountpoint = self.mountpoint(&rec.name);
            let remote = self.driver(&rec.driver).is_ok_and(|d| d.remote());
            // First, and without touching the mount (no handler serves it yet): a volume whose
            // connection the keeper holds is served again as it is. On a remote backing store
            // that may not answer, in the background like the other mounts (`remount`); its
            // processes wait meanwhile.
            if kept_names.remove(&rec.name) {
                if remote && !rec.mount_refs.is_empty() {
                    self.pending.lock().insert(
                        rec.name.clone(),
                        PendingMount {
                            since: SystemTime::now(),
                            error: "the first try has not finished".into(),
                            kept: true,
                        },
                    );
                    deferred.mount.push(rec.name);
                    continue;
                }
                match self.take_over(&rec) {
                    TakeOver::Served => {
                        self.handler_restarted(&rec);
                        continue;
                    }
                    TakeOver::Refused | TakeOver::Failed(_) => self.let_go_of_kept(&rec.name),
                }
            }
            if is_stale_mount(&mountpoint) {
                log::info!("detaching stale mount {}", mountpoint.display());
                let _ = detach_stale_mount(&mountpoint);
            }
            // Also for unreferenced volumes made by a version without guards.
            if !is_stale_mount(&mountpoint)
                && let Err(e) = self.prepare_mountpoint(&rec.name)
            {
                log::error!("volume {}: {e}", rec.name);
            }
            for r in rec.mount_refs.values() {
                if let Some(t) = &r.target {
                    let _ = detach_target(&rec.name, t, r.bind_mount_id);
                }
            }
            if rec.mount_refs.is_empty() {
                continue;
            }
            // Pending until mounted: `bring_up` then binds its references' targets again.
            self.pending.lock().insert(
                rec.name.clone(),
                PendingMount {
                    since: SystemTime::now(),
                    error: "the first try has not finished".into(),
                    kept: false,
                },
            );
            match remote {
                true => deferred.mount.push(rec.name),
                false => deferred.mount_here.push(rec.name),
            }
        }
        // Kept for volumes that are gone or no longer referenced.
        for name in kept_names {
            self.drop_kept(&name);
        }
        Ok(deferred)
    }

    /// A kept connection that cannot be served again ends: the keeper lets go of it, so its
    /// mount is stale from now on (detached by whoever mounts the volume anew).
    fn let_go_of_kept(&self, name: &str) {
        self.drop_kept(name);
        // Usage handed over counted what ended with the connection (open files without a
        // name): measured again.
        self.forget_clean_usage(name);
    }

    /// Marks the recorded usage of `name` as not clean, so that its next activation measures
    /// it again.
    fn forget_clean_usage(&self, name: &str) {
        let marked = self
            .store
            .usage(name)
            .and_then(|u| self.store.set_usage(name, Usage { clean: false, ..u }));
        if let Err(e) = marked {
            log::warn!("volume {name}: marking its usage for a rescan: {e}");
        }
    }

    /// The volumes the keeper holds connections of.
    fn kept_volumes(&self) -> std::collections::BTreeSet<String> {
        let Some(keeper) = self.keeper() else {
            return Default::default();
        };
        match keeper.volumes() {
            Ok(names) => names.into_iter().collect(),
            Err(e) => {
                log::error!("asking the keeper what it holds: {e}");
                Default::default()
            }
        }
    }

    /// Drops what the keeper holds of `name`; once it is dropped, a mount no daemon serves is
    /// stale (its connection ended with the keeper's descriptor).
    fn drop_kept(&self, name: &str) {
        if let Some(keeper) = self.keeper()
            && let Err(e) = keeper.drop_volume(name)
        {
            log::error!("volume {name}: dropping it from the keeper: {e}");
        }
    }

    /// Serves again the connection of `rec` the keeper holds, if it is still the volume's
    /// mount and the volume is still referenced; then checks its bind targets (the binds
    /// outlive the daemon too). The caller holds the volume's lock (or runs start-up).
    fn take_over(&self, rec: &VolumeRecord) -> TakeOver {
        let Some(keeper) = self.keeper().cloned() else {
            return TakeOver::Refused;
        };
        if rec.mount_refs.is_empty() {
            return TakeOver::Refused;
        }
        let entries = match keeper.get(&rec.name) {
            Ok(entries) => entries,
            Err(e) => {
                log::error!("volume {}: asking the keeper for it: {e}", rec.name);
                return TakeOver::Refused;
            }
        };
        let (connection, carry) = match kept::take_over(&keeper, &rec.name, entries) {
            Ok(kept) => kept,
            Err(e) => {
                log::error!(
                    "volume {}: what the keeper holds of it is unusable: {e}",
                    rec.name
                );
                return TakeOver::Refused;
            }
        };
        // The kept connection must be the one mounted at the mountpoint (not one detached
        // from it meanwhile, whose last users end it).
        let mountpoint = self.mountpoint(&rec.name);
        let mounted_dev = crate::fuse::mount_dev_at(&mountpoint);
        if mounted_dev.is_none() || mounted_dev.as_deref() != Some(connection.dev.as_str()) {
            log::info!(
                "volume {}: its kept connection is no longer mounted at {}; mounting it anew",
                rec.name,
                mountpoint.display()
            );
            return TakeOver::Refused;
        }
        if let Err(e) = self.activate_with(rec, Some((connection, carry))) {
            log::error!(
                "volume {}: cannot serve its connection again: {}",
                rec.name,
                e.error
            );
            return match e.in_driver {
                true => TakeOver::Failed(e.error),
                false => TakeOver::Refused,
            };
        }
        log::info!("volume {}: serving its mount again", rec.name);
        // Binds made by the previous daemon are kernel mounts: still there unless someone
        // removed them; those are made again.
        let mut rec = rec.clone();
        let mut rebound = false;
        for r in rec.mount_refs.values_mut() {
            let Some(target) = r.target.clone() else {
                continue;
            };
            let there = super::bind::open_target(&target, &self.ctx.root)
                .ok()
                .and_then(|t| super::bind::mount_id_of(&t).ok());
            if there.is_some() && there == r.bind_mount_id {
                continue;
            }
            let bound = super::bind::open_target(&target, &self.ctx.root)
                .and_then(|pinned| super::bind::bind(&mountpoint, &pinned, &target));
            match bound {
                Ok(id) => {
                    r.bind_mount_id = Some(id);
                    rebound = true;
                }
                Err(e) => log::error!(
                    "volume {}: cannot bind it at {} again: {e}",
                    rec.name,
                    target.display()
                ),
            }
        }
        if rebound && let Err(e) = self.store.put(&rec) {
            log::error!("volume {}: recording its bind mounts: {e}", rec.name);
        }
        TakeOver::Served
    }

    /// The start-up steps `recover` does for a volume that is mounted anew, for one whose
    /// kept connection was let go in the background: the stale mount detached, the guard
    /// there, the binds a dead daemon left detached.
    fn clear_for_new_mount(&self, rec: &VolumeRecord) {
        let mountpoint = self.mountpoint(&rec.name);
        if is_stale_mount(&mountpoint) {
            log::info!("detaching stale mount {}", mountpoint.display());
            let _ = detach_stale_mount(&mountpoint);
        }
        if !is_stale_mount(&mountpoint)
            && let Err(e) = self.prepare_mountpoint(&rec.name)
        {
            log::error!("volume {}: {e}", rec.name);
        }
        for r in rec.mount_refs.values() {
            if let Some(t) = &r.target {
                let _ = detach_target(&rec.name, t, r.bind_mount_id);
            }
        }
    }

    /// Settles the unfinished create or rm of `name` left for the background (see
    /// `recover`); a failure is logged, and the next create or rm of the name, or the next
    /// start, tries again. The caller holds the volume's lock.
    pub fn settle_deferred(&self, name: &str) {
        match self.store.get(name) {
            Ok(Some(rec)) => {
                if let Err(e) = self.settle(&rec) {
                    log::error!(
                        "volume {name}: {e}; it is tried again by the next create or rm of \
                         the name, or at the next start"
                    );
                }
            }
            Ok(None) => {}
            Err(e) => log::error!("volume {name}: {e}"),
        }
    }

    /// One try to mount `name` again, with its bind targets, for the references it had at
    /// start-up (see `recover`). The caller holds the volume's lock.
    pub fn remount(&self, name: &str) -> Remount {
        let rec = match self.record(name) {
            Ok(rec) if !rec.mount_refs.is_empty() && !self.is_active(name) => rec,
            _ => {
                self.forget_pending(name);
                return Remount::Done;
            }
        };
        match self.bring_up(&rec) {
            Ok(()) => {
                self.handler_restarted(&rec);
                Remount::Done
            }
            Err(e) => {
                if let Some(p) = self.pending.lock().get_mut(name) {
                    p.error = e.to_string();
                }
                Remount::Failed(e)
            }
        }
    }

    /// Counts and tells that `rec`'s handler was started again at this daemon's start, for the
    /// references it had: its kept connection taken over, or its mount made anew.
    fn handler_restarted(&self, rec: &VolumeRecord) {
        self.handler_restarts.fetch_add(1, Ordering::Relaxed);
        self.emit(EventType::HandlerRestart, rec, &[]);
    }

    /// Activates `rec`. A volume start-up left to mount (see `recover`) gets the binds of its
    /// references back, and takes over its kept connection if it has one: one that cannot be
    /// taken over is let go and the volume mounted anew; one whose backing store fails it
    /// stays kept (its processes wait) for the next try, for its `io_timeout=` at most. The
    /// caller holds the volume's lock.
    fn bring_up(&self, rec: &VolumeRecord) -> Result<(), VolumeError> {
        let pending = self.pending.lock().get(&rec.name).cloned();
        if pending.as_ref().is_some_and(|p| p.kept) {
            let waited = pending.as_ref().map_or(Duration::ZERO, |p| {
                SystemTime::now()
                    .duration_since(p.since)
                    .unwrap_or_default()
            });
            // Its processes wait as long as its I/O would (`io_timeout=`, or for good).
            let bound = (self.driver(&rec.driver).ok())
                .and_then(|driver| driver.io_wait_limit(&rec.options));
            match self.take_over(rec) {
                TakeOver::Served => return Ok(()),
                TakeOver::Failed(e) if bound.is_none_or(|b| waited < b) => return Err(e),
                TakeOver::Failed(_) | TakeOver::Refused => {
                    if let Some(p) = self.pending.lock().get_mut(&rec.name) {
                        p.kept = false;
                    }
                    self.let_go_of_kept(&rec.name);
                    self.clear_for_new_mount(rec);
                }
            }
        }
        self.activate(rec)?;
        if pending.is_some() {
            log::info!("volume {}: mounted again", rec.name);
            self.rebind(rec.clone());
        }
        Ok(())
    }

    /// Forgets that `name` waits to be mounted (its references are gone); a kept connection
    /// it waited to take over ends.
    fn forget_pending(&self, name: &str) {
        let pending = self.pending.lock().remove(name);
        if pending.is_some_and(|p| p.kept) {
            self.let_go_of_kept(name);
        }
    }

    /// Binds an active volume at the targets of its references again (at start-up, when the
    /// binds a dead daemon left were detached), and records the new bind mounts.
    fn rebind(&self, mut rec: VolumeRecord) {
        let mountpoint = self.mountpoint(&rec.name);
        let mut rebound = false;
        for r in rec.mount_refs.values_mut() {
            let Some(target) = r.target.clone() else {
                continue;
            };
            let bound = super::bind::open_target(&target, &self.ctx.root)
                .and_then(|pinned| super::bind::bind(&mountpoint, &pinned, &target));
            match bound {
                Ok(id) => {
                    r.bind_mount_id = Some(id);
                    rebound = true;
                }
                Err(e) => log::error!(
                    "volume {}: cannot bind it at {} again: {e}",
                    rec.name,
                    target.display()
                ),
            }
        }
        if rebound && let Err(e) = self.store.put(&rec) {
            log::error!("volume {}: recording its bind mounts: {e}", rec.name);
        }
    }

    /// Emits `quota-full` for each mounted volume that refused a request for space since the
    /// last look, once per episode: the episode ends when space comes back (the quota counts
    /// each release of space), so a program retrying on a full volume makes one event. Read
    /// from counters the hot path keeps anyway, once a second.
    pub fn watch_quota(&self) {
        let mut full = Vec::new();
        for (name, a) in self.active.lock().iter_mut() {
            let releases = a.fs.releases();
            if a.full_since.is_some_and(|at| releases > at) {
                a.full_since = None;
            }
            let refusals = a.mount.stats().quota_refusals();
            if refusals > a.quota_refusals_seen {
                a.quota_refusals_seen = refusals;
                if a.full_since.is_none() {
                    a.full_since = Some(releases);
                    full.push((name.clone(), a.fs.usage()));
                }
            }
        }
        for (name, usage) in full {
            if let Ok(rec) = self.record(&name) {
                let attributes = [
                    ("used_bytes", usage.bytes.to_string()),
                    ("used_inodes", usage.inodes.to_string()),
                ];
                self.emit(EventType::QuotaFull, &rec, &attributes);
            }
        }
    }

    /// What the metrics show of every volume (see `observe`); no catalog write. Like
    /// `inspect`, never waits for a backing store or holds the map of active volumes across
    /// a filesystem call.
    pub fn observe(&self) -> Result<super::observe::Observation, VolumeError> {
        use super::observe::{Capacity, Observation, VolumeObservation};
        let mut volumes = Vec::new();
        for rec in self.records()? {
            let Ok((size_limit, inode_limit)) = self
                .driver(&rec.driver)
                .and_then(|d| Ok(d.limits(&rec.options)?))
            else {
                continue;
            };
            let mut seen = VolumeObservation {
                name: rec.name.clone(),
                driver: rec.driver.clone(),
                size_limit,
                inode_limit,
                ..VolumeObservation::default()
            };
            let live = (self.active.lock().get(&rec.name))
                .map(|a| (a.fs.clone(), a.mount.stats().snapshot(), a.mount.device()));
            match live {
                Some((fs, requests, device)) => {
                    let usage = fs.usage();
                    (seen.used_bytes, seen.used_inodes) = (usage.bytes, usage.inodes);
                    seen.statfs = fs.statfs().ok().map(|s| Capacity {
                        bytes: s.blocks * u64::from(s.frsize),
                        available_bytes: s.bavail * u64::from(s.frsize),
                        inodes: s.files,
                        free_inodes: s.ffree,
                    });
                    seen.requests = Some(requests);
                    seen.waiting = device.and_then(crate::fuse::waiting_requests);
                }
                None => {
                    let usage = self.store.usage(&rec.name)?;
                    (seen.used_bytes, seen.used_inodes) = (usage.bytes, usage.inodes);
                }
            }
            volumes.push(seen);
        }
        Ok(Observation {
            volumes,
            handler_restarts: self.handler_restarts.load(Ordering::Relaxed),
            commit_latency: crate::store::commit_latency(),
        })
    }

    /// Unmounts every active volume, each under its lock and all at once, so that one whose
    /// backing store does not answer does not keep the others from stopping cleanly;
    /// references stay so the next start mounts the same volumes. Whatever the keeper still
    /// holds (volumes that did not come back, or wait to be taken over) ends too.
    pub fn shutdown(&self) {
        let names: Vec<String> = self.active.lock().keys().cloned().collect();
        std::thread::scope(|scope| {
            for name in &names {
                scope.spawn(move || {
                    let _volume = self.locks.lock(name);
                    self.stop_volume(name);
                });
            }
        });
        for name in self.kept_volumes() {
            let _volume = self.locks.lock(&name);
            self.pending.lock().remove(&name);
            self.drop_kept(&name);
        }
    }

    /// Detaches the volume's binds and unmounts it, at a stop. The caller holds its lock.
    fn stop_volume(&self, name: &str) {
        if let Ok(rec) = self.record(name) {
            for r in rec.mount_refs.values() {
                if let Some(t) = &r.target {
                    let _ = detach_target(name, t, r.bind_mount_id);
                }
            }
        }
        self.deactivate(name);
    }

    /// Stops serving for the next daemon (a planned stop or upgrade): every referenced volume
    /// the keeper holds stays mounted, with its binds; the requests being served finish, later
    /// ones wait for the next daemon, and the usage is recorded, clean when it is exact. Other
    /// volumes are unmounted as at a full stop. Each volume under its lock, all at once.
    /// Kept connections not taken over yet (see `bring_up`) stay in the keeper as they are.
    pub fn handover(&self) {
        let names: Vec<String> = self.active.lock().keys().cloned().collect();
        // Only what the keeper really holds now (it may have been killed meanwhile).
        let held = self.kept_volumes();
        let held = &held;
        std::thread::scope(|scope| {
            for name in &names {
                scope.spawn(move || {
                    let _volume = self.locks.lock(name);
                    self.hand_over(name, held.contains(name));
                });
            }
        });
    }

    /// `handover` for one volume; `held`: the keeper holds it. The caller holds its lock.
    pub fn hand_over(&self, name: &str, held: bool) {
        let referenced = self.record(name).is_ok_and(|r| !r.mount_refs.is_empty());
        let kept = (self.active.lock().get(name)).is_some_and(|a| a.kept);
        if !kept || !held || !referenced {
            self.stop_volume(name);
            return;
        }
        let Some(active) = self.active.lock().remove(name) else {
            return;
        };
        self.lingering.lock().remove(name);
        let drained = active.mount.suspend(SUSPEND_TIMEOUT);
        if let Err(e) = active.fs.persist_for_successor() {
            log::warn!("volume {name}: making it durable for the next daemon: {e}");
        }
        if !drained {
            log::warn!(
                "volume {name}: requests still running after {}s; the next daemon rescans its \
                 usage",
                SUSPEND_TIMEOUT.as_secs()
            );
        }
        // All of it: open inodes without a name go on with the connection.
        let u = active.fs.usage();
        let usage = Usage {
            bytes: u.bytes,
            inodes: u.inodes,
            // The kernel's passthrough writes are counted only at close.
            clean: drained && !active.passthrough,
        };
        if let Err(e) = self.store.set_usage(name, usage) {
            log::warn!("saving usage of volume {name}: {e}");
        }
        log::info!("volume {name}: left mounted for the next daemon");
    }

    /// Whether the keeper holds `name` (asked only for a volume being handed over late).
    pub fn keeper_holds(&self, name: &str) -> bool {
        self.kept_volumes().contains(name)
    }
}

/// Logs what changed in a volume's health since `before`.
fn log_health(name: &str, before: &Health, now: &Health) {
    match (&before.cluster_wait, &now.cluster_wait) {
        (None, Some(w)) => log::warn!(
            "volume {name}: waiting for its cluster, which has answered nothing since {} \
             ({} operations waiting); they complete when it answers again",
            rfc3339_of(w.since),
            w.operations
        ),
        (Some(w), None) => log::info!(
            "volume {name}: its cluster answers again (it waited about {} s)",
            SystemTime::now()
                .duration_since(w.since)
                .unwrap_or(Duration::ZERO)
                .as_secs()
        ),
        _ => {}
    }
    if let (None, Some(f)) = (&before.fenced, &now.fenced) {
        log::error!(
            "volume {name}: fenced since {}: {}; it refuses writes (EROFS) and fsync (EIO) \
             until it is unmounted and mounted again",
            rfc3339_of(f.since),
            f.reason
        );
    }
}

/// Creates `dir` (and missing parents) with `mode`, whatever the process umask (the daemon
/// runs with umask 0).
pub fn create_dir(dir: &Path, mode: u32) -> Result<(), VolumeError> {
    crate::sys::create_dir_with_mode(dir, mode)
        .map_err(|e| VolumeError::io(format!("creating {}", dir.display()), e))
}

/// After an unmount whose connection lives on: when no other mount namespace uses the volume
/// (see `sys::mountns`), only copies of its mount keep the connection (namespaces made while
/// it was mounted), so it is aborted; a container that does use it keeps it. True when the
/// connection was ended.
fn end_unused_copies(name: &str, device: Option<u64>) -> bool {
    let Some(device) = device else { return false };
    let used = crate::sys::mountns::MountTable::read()
        .map(|mounts| mounts.used_elsewhere(crate::sys::mountns::device_number(device)));
    match used {
        Ok(false) => match crate::fuse::abort_connection(device) {
            Ok(()) => {
                log::info!(
                    "volume {name}: ended the connection that only copies of its mount kept"
                );
                true
            }
            Err(e) => {
                log::warn!("volume {name}: cannot end its connection: {e}");
                false
            }
        },
        Ok(true) => {
            log::warn!(
                "volume {name}: another mount namespace still uses it; it is served until \
                 that ends"
            );
            false
        }
        Err(e) => {
            log::warn!("volume {name}: cannot read the mount namespaces in /proc: {e}");
            false
        }
    }
}

/// Detaches the bind mount a reference made at `target`, and nothing else.
fn detach_target(name: &str, target: &Path, mount_id: Option<u64>) -> Result<(), VolumeError> {
    match super::bind::detach(target, mount_id)? {
        super::bind::Detached::Ours => {}
        super::bind::Detached::NotOurs(why) => {
            log::warn!("volume {name}: left {} alone: {why}", target.display())
        }
    }
    Ok(())
}

/// An rm that failed after its intent was committed.
fn unfinished(name: &str, source: VolumeError) -> VolumeError {
    VolumeError::RemovalUnfinished {
        name: name.into(),
        source: Box::new(source),
    }
}
