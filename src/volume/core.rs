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
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use super::fault::crash_point;
use super::kept;
use super::options::{VolumeOptions, parse_options};
use super::{
    MountRef, RefKind, Usage, VolumeError, VolumeInfo, VolumeRecord, VolumeState, VolumeStatus,
};
use crate::driver::{Driver, DriverContext};
use crate::fs::resume::Carry;
use crate::fs::{UsageSnapshot, VolumeFs};
use crate::fuse::{MountedFs, ServeOptions, Unmounted, detach_stale_mount, is_stale_mount};
use crate::keeper::{Keeper, KeptEntry};
use crate::store::Store;

struct Active {
    fs: Arc<dyn VolumeFs>,
    mount: MountedFs,
    /// The data goes with the mount (tmpfs).
    ephemeral: bool,
    /// The usage last written to the catalog.
    saved: Option<UsageSnapshot>,
    /// The keeper holds the connection: the volume outlives this daemon.
    kept: bool,
    /// The kernel reads and writes host files directly (usage is re-read only at close).
    passthrough: bool,
}

pub struct Core {
    ctx: DriverContext,
    store: Store,
    drivers: Vec<Arc<dyn Driver>>,
    active: HashMap<String, Active>,
    /// Holds connections across restarts of the daemon (None: volumes end with it).
    keeper: Option<Arc<Keeper>>,
}

/// How long a planned stop waits for the requests being served to finish before it hands the
/// connections over (later ones wait for the next daemon).
const SUSPEND_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn rfc3339(secs: u64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + std::time::Duration::from_secs(secs)).to_string()
}

impl Core {
    pub fn new(root: &Path, store: Store, drivers: Vec<Arc<dyn Driver>>) -> Core {
        Core {
            ctx: DriverContext {
                root: root.to_path_buf(),
            },
            store,
            drivers,
            active: HashMap::new(),
            keeper: None,
        }
    }

    /// Keeps the connections of volumes whose driver allows it in `keeper` from now on, so
    /// that they outlive this daemon (see `handover`). Set before `recover`.
    pub fn set_keeper(&mut self, keeper: Arc<Keeper>) {
        self.keeper = Some(keeper);
    }

    pub fn driver(&self, name: &str) -> Result<Arc<dyn Driver>, VolumeError> {
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

    fn options(&self, rec: &VolumeRecord) -> Result<(Arc<dyn Driver>, VolumeOptions), VolumeError> {
        let driver = self.driver(&rec.driver)?;
        let opts = parse_options(driver.name(), driver.option_keys(), &rec.options)?;
        Ok((driver, opts))
    }

    pub fn mountpoint(&self, name: &str) -> PathBuf {
        self.ctx.volume_dir(name).join("mnt")
    }

    pub fn info(&self, rec: &VolumeRecord) -> Result<VolumeInfo, VolumeError> {
        let (driver, opts) = self.options(rec)?;
        let (usage, mounted) = match self.active.get(&rec.name) {
            Some(a) => (a.fs.usage(), true),
            None => {
                let u = self.store.usage(&rec.name)?;
                (
                    crate::fs::UsageSnapshot {
                        bytes: u.bytes,
                        inodes: u.inodes,
                    },
                    false,
                )
            }
        };
        Ok(VolumeInfo {
            name: rec.name.clone(),
            driver: rec.driver.clone(),
            mountpoint: self.mountpoint(&rec.name),
            created_at: rfc3339(rec.created_at),
            labels: rec.labels.clone(),
            options: rec.options.clone(),
            scope: "local".into(),
            status: VolumeStatus {
                size_limit: driver.size_limit(&opts),
                used_bytes: usage.bytes,
                inode_limit: driver.inode_limit(&opts),
                used_inodes: usage.inodes,
                mounted,
                mount_refs: rec.mount_refs.keys().cloned().collect(),
            },
        })
    }

    /// Creates a volume; the same request again is a no-op returning the existing one.
    ///
    /// Steps: the `Creating` intent (commit), the directories and the backing store, then the
    /// `Ready` record with its usage (commit). An error undoes what was made; a crash leaves
    /// the intent, which the next start rolls back.
    pub fn create(
        &mut self,
        name: String,
        driver: &str,
        options: std::collections::BTreeMap<String, String>,
        labels: std::collections::BTreeMap<String, String>,
    ) -> Result<VolumeRecord, VolumeError> {
        super::name::validate_name(&name)?;
        super::limits::check_new_volume(&options, &labels)?;
        let driver = self.driver(driver)?;
        let opts = parse_options(driver.name(), driver.option_keys(), &options)?;
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
        driver.validate(&self.ctx, &opts)?;
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
        rec.owns_backing = driver.will_own_backing(&self.ctx, &rec, &opts)?;
        self.store.put(&rec)?;
        crash_point("create-after-intent");
        let created = create_dir(&self.ctx.volume_dir(&name), 0o700)
            .and_then(|()| self.prepare_mountpoint(&name))
            .and_then(|()| driver.create(&self.ctx, &rec, &opts));
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

    /// Settles every intent in the catalog (at start-up); one that fails is logged and stays.
    fn settle_all(&self) -> Result<(), VolumeError> {
        for rec in self.store.list()? {
            if rec.state != VolumeState::Ready
                && let Err(e) = self.settle(&rec)
            {
                log::error!(
                    "volume {}: {e}; it is tried again at the next start",
                    rec.name
                );
            }
        }
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
    pub fn remove(&mut self, name: &str) -> Result<u64, VolumeError> {
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
        if !rec.mount_refs.is_empty() || self.active.contains_key(name) {
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
            return Err(self.removal_failed(rec, e));
        }
        crash_point("rm-after-data");
        self.store
            .remove(name)
            .map_err(|e| unfinished(name, e.into()))?;
        self.remove_volume_dir(name);
        Ok(freed)
    }

    /// The driver could not delete the backing store. When it deleted nothing (the store is in
    /// use elsewhere), the volume is kept: its intent is dropped again.
    fn removal_failed(&self, mut rec: VolumeRecord, e: VolumeError) -> VolumeError {
        if !matches!(e, VolumeError::InUse { .. }) {
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

    /// Adds a reference, activating the volume and bind-mounting `target` as needed.
    pub fn mount(
        &mut self,
        name: &str,
        ref_id: &str,
        target: Option<&Path>,
    ) -> Result<PathBuf, VolumeError> {
        let mut rec = self.record(name)?;
        let pinned = match target {
            Some(t) => Some(super::bind::open_target(t, &self.ctx.root)?),
            None => None,
        };
        let was_active = self.active.contains_key(name);
        if !was_active {
            self.activate(&rec)?;
        }
        let mountpoint = self.mountpoint(name);
        let already = rec.mount_refs.contains_key(ref_id);
        let mut bind_mount_id = None;
        if let (Some(t), Some(pinned), false) = (target, &pinned, already) {
            match super::bind::bind(&mountpoint, pinned, t) {
                Ok(id) => bind_mount_id = Some(id),
                Err(e) => {
                    if !was_active && rec.mount_refs.is_empty() {
                        self.deactivate(name);
                    }
                    return Err(e);
                }
            }
        }
        if !already {
            let kind = if ref_id.starts_with("plugin:") {
                RefKind::Plugin
            } else {
                RefKind::Cli
            };
            let r = MountRef {
                kind,
                target: target.map(Path::to_path_buf),
                since: now(),
                bind_mount_id,
            };
            rec.mount_refs.insert(ref_id.to_string(), r);
            if let Err(e) = self.store.put(&rec) {
                if let Some(t) = target {
                    let _ = super::bind::detach(t, bind_mount_id);
                }
                if !was_active {
                    self.deactivate(name);
                }
                return Err(e.into());
            }
        }
        Ok(mountpoint)
    }

    /// Drops a reference (unknown ones are harmless); the last one deactivates the volume.
    pub fn unmount(&mut self, name: &str, ref_id: &str) -> Result<(), VolumeError> {
        let mut rec = self.record(name)?;
        let Some(r) = rec.mount_refs.remove(ref_id) else {
            return Ok(());
        };
        if let Some(t) = &r.target {
            detach_target(name, t, r.bind_mount_id)?;
        }
        self.store.put(&rec)?;
        if rec.mount_refs.is_empty() {
            self.deactivate(name);
        }
        Ok(())
    }

    fn activate(&mut self, rec: &VolumeRecord) -> Result<(), VolumeError> {
        self.activate_with(rec, None)
    }

    /// Activates `rec`: mounts it, or with `kept` (what a previous daemon left of it in the
    /// keeper) serves its connection again, whose mount is still there.
    fn activate_with(
        &mut self,
        rec: &VolumeRecord,
        kept: Option<Vec<KeptEntry>>,
    ) -> Result<(), VolumeError> {
        let (driver, opts) = self.options(rec)?;
        let stored = self.store.usage(&rec.name)?;
        let keeper = self.keeper.clone().filter(|_| driver.survives_restart());
        let (mut carry, connection) = match (&keeper, kept) {
            (Some(keeper), Some(entries)) => {
                let (connection, carry) = kept::take_over(keeper, &rec.name, entries)
                    .map_err(|e| VolumeError::io("taking over its connection", e))?;
                (carry, Some(connection))
            }
            (Some(keeper), None) => (kept::fresh(keeper, &rec.name), None),
            (None, _) => (Carry::none(), None),
        };
        let activation = driver.activate(&self.ctx, rec, &opts, stored, &mut carry)?;
        let mountpoint = self.mountpoint(&rec.name);
        let serve = ServeOptions {
            passthrough: activation.passthrough,
            exclusive: activation.exclusive,
            readahead_kb: activation.readahead_kb,
            threads: activation.threads,
        };
        let resuming = connection.is_some();
        let fs = activation.fs.clone();
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
            Some(_) if resuming => true,
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
        self.active.insert(
            rec.name.clone(),
            Active {
                fs: activation.fs,
                mount,
                ephemeral: activation.ephemeral,
                saved: None,
                kept,
                passthrough: activation.passthrough,
            },
        );
        Ok(())
    }

    /// Checks an unmounted volume's backing store (rbd); the report is JSON.
    pub fn fsck(&self, name: &str) -> Result<String, VolumeError> {
        let rec = self.record(name)?;
        self.refuse_if_active(&rec, "fsck")?;
        let (driver, opts) = self.options(&rec)?;
        driver.fsck(&self.ctx, &rec, &opts)
    }

    /// Breaks locks left on a volume's backing store by holders that are gone.
    pub fn break_lock(&self, name: &str) -> Result<Vec<String>, VolumeError> {
        let rec = self.record(name)?;
        self.refuse_if_active(&rec, "break its lock")?;
        let (driver, opts) = self.options(&rec)?;
        driver.break_lock(&self.ctx, &rec, &opts)
    }

    fn refuse_if_active(&self, rec: &VolumeRecord, what: &str) -> Result<(), VolumeError> {
        if self.active.contains_key(&rec.name) {
            let holders: Vec<_> = rec.mount_refs.keys().cloned().collect();
            return Err(VolumeError::Driver(format!(
                "volume {} is mounted here (by {}); unmount it before you {what}",
                rec.name,
                holders.join(", ")
            )));
        }
        Ok(())
    }

    /// Unmounts, syncs and records the usage, as clean if both worked: the next activation
    /// then trusts it instead of rescanning the tree.
    pub fn deactivate(&mut self, name: &str) {
        let Some(active) = self.active.remove(name) else {
            return;
        };
        // Unmounted first, so that no request changes the usage after it is read; a mount
        // that was only detached (busy) may still be served, so its usage is not final.
        let ended = match active.mount.unmount() {
            Ok(Unmounted::Ended) => true,
            Ok(Unmounted::Detached) => false,
            Err(e) => {
                log::warn!("unmounting volume {name}: {e}");
                false
            }
        };
        if active.kept
            && let Some(keeper) = &self.keeper
            && let Err(e) = keeper.drop_volume(name)
        {
            log::warn!("volume {name}: dropping it from the keeper: {e}");
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
        crate::sys::heap::release_free_memory();
    }

    /// Persists the usage of active volumes (still not clean).
    /// Only changed usage is written, so an idle daemon does not touch the disk.
    pub fn checkpoint_usage(&mut self) {
        for (name, a) in &mut self.active {
            let u = a.fs.usage();
            if a.saved == Some(u) {
                continue;
            }
            let usage = Usage {
                bytes: u.bytes,
                inodes: u.inodes,
                clean: false,
            };
            if self.store.set_usage(name, usage).is_ok() {
                a.saved = Some(u);
            }
        }
    }

    /// At start-up: settles unfinished creates and rms, clears mounts a dead daemon left and
    /// mounts referenced volumes again.
    pub fn recover(&mut self) -> Result<(), VolumeError> {
        self.settle_all()?;
        let mut kept_names = self.kept_volumes();
        for mut rec in self.records()? {
            let mountpoint = self.mountpoint(&rec.name);
            // First, and without touching the mount (no handler serves it yet): a volume whose
            // connection the keeper holds is served again as it is.
            if kept_names.remove(&rec.name) {
                if self.take_over(&mut rec) {
                    continue;
                }
                self.drop_kept(&rec.name);
                // Usage handed over counted what ended with the connection (open files
                // without a name): measured again.
                self.forget_clean_usage(&rec.name);
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
            if let Err(e) = self.activate(&rec) {
                log::error!("volume {}: cannot mount it again: {e}", rec.name);
                continue;
            }
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
        // Kept for volumes that are gone or no longer referenced.
        for name in kept_names {
            self.drop_kept(&name);
        }
        Ok(())
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
        let Some(keeper) = &self.keeper else {
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
        if let Some(keeper) = &self.keeper
            && let Err(e) = keeper.drop_volume(name)
        {
            log::error!("volume {name}: dropping it from the keeper: {e}");
        }
    }

    /// Serves again the connection of `rec` the keeper holds, if it is still the volume's
    /// mount and the volume is still referenced; then checks its bind targets (the binds
    /// outlive the daemon too). False when it cannot be taken over.
    fn take_over(&mut self, rec: &mut VolumeRecord) -> bool {
        let Some(keeper) = self.keeper.clone() else {
            return false;
        };
        if rec.mount_refs.is_empty() {
            return false;
        }
        let entries = match keeper.get(&rec.name) {
            Ok(entries) => entries,
            Err(e) => {
                log::error!("volume {}: asking the keeper for it: {e}", rec.name);
                return false;
            }
        };
        // The kept connection must be the one mounted at the mountpoint (not one detached
        // from it meanwhile, whose last users end it).
        let mountpoint = self.mountpoint(&rec.name);
        let mounted_dev = crate::fuse::mount_dev_at(&mountpoint);
        let kept_dev = entries
            .iter()
            .find(|e| e.key == "conn")
            .and_then(|e| {
                crate::fuse::Connection::decode(&e.data, e.fds.first()?.try_clone().ok()?).ok()
            })
            .map(|c| c.dev);
        if mounted_dev.is_none() || mounted_dev != kept_dev {
            log::info!(
                "volume {}: its kept connection is no longer mounted at {}; mounting it anew",
                rec.name,
                mountpoint.display()
            );
            return false;
        }
        if let Err(e) = self.activate_with(rec, Some(entries)) {
            log::error!(
                "volume {}: cannot serve its connection again: {e}",
                rec.name
            );
            return false;
        }
        log::info!("volume {}: serving its mount again", rec.name);
        // Binds made by the previous daemon are kernel mounts: still there unless someone
        // removed them; those are made again.
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
        if rebound && let Err(e) = self.store.put(rec) {
            log::error!("volume {}: recording its bind mounts: {e}", rec.name);
        }
        true
    }

    /// Stops serving for the next daemon (a planned stop or upgrade): every volume the keeper
    /// holds stays mounted, with its binds; the requests being served finish, later ones wait
    /// for the next daemon, and the usage is recorded, clean when it is exact. Other volumes
    /// are unmounted as at a full stop.
    pub fn handover(&mut self) {
        let names: Vec<String> = self.active.keys().cloned().collect();
        // Only what the keeper really holds now (it may have been killed meanwhile).
        let held = self.kept_volumes();
        for name in names {
            if !self.active.get(&name).is_some_and(|a| a.kept) || !held.contains(&name) {
                self.stop_volume(&name);
                continue;
            }
            let Some(active) = self.active.remove(&name) else {
                continue;
            };
            let drained = active.mount.suspend(SUSPEND_TIMEOUT);
            if let Err(e) = active.fs.persist_for_successor() {
                log::warn!("volume {name}: making it durable for the next daemon: {e}");
            }
            if !drained {
                log::warn!(
                    "volume {name}: requests still running after {}s; the next daemon rescans \
                     its usage",
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
            if let Err(e) = self.store.set_usage(&name, usage) {
                log::warn!("saving usage of volume {name}: {e}");
            }
            log::info!("volume {name}: left mounted for the next daemon");
        }
    }

    /// Unmounts everything; references stay so the next start mounts the same volumes.
    pub fn shutdown(&mut self) {
        let names: Vec<String> = self.active.keys().cloned().collect();
        for name in names {
            self.stop_volume(&name);
        }
        // Whatever the keeper still holds (volumes that failed to come back) ends too.
        for name in self.kept_volumes() {
            self.drop_kept(&name);
        }
    }

    /// Detaches the volume's binds and unmounts it, at a stop.
    fn stop_volume(&mut self, name: &str) {
        if let Ok(rec) = self.record(name) {
            for r in rec.mount_refs.values() {
                if let Some(t) = &r.target {
                    let _ = detach_target(name, t, r.bind_mount_id);
                }
            }
        }
        self.deactivate(name);
    }
}

/// Creates `dir` (and missing parents) with `mode`, whatever the process umask (the daemon
/// runs with umask 0).
pub fn create_dir(dir: &Path, mode: u32) -> Result<(), VolumeError> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    let io = |e| VolumeError::io(format!("creating {}", dir.display()), e);
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(mode)
        .create(dir)
        .map_err(io)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode)).map_err(io)
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
