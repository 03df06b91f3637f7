//! The volume logic under `VolumeManager`: validation, driver dispatch, references, mounts.
//!
//! Invariants:
//! - a volume is active (its FUSE mount exists) exactly when its record has mount references,
//!   except between a failed activation and the next start-up;
//! - every reference with a target has a bind mount of the volume there while active;
//! - the catalog is written before a change is reported as done.
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use nix::mount::{MsFlags, mount};

use super::options::{VolumeOptions, parse_options};
use super::{MountRef, RefKind, Usage, VolumeError, VolumeInfo, VolumeRecord, VolumeStatus};
use crate::driver::{Driver, DriverContext};
use crate::fs::{UsageSnapshot, VolumeFs};
use crate::fuse::{MountedFs, ServeOptions, detach_stale_mount, is_stale_mount};
use crate::store::Store;

struct Active {
    fs: Arc<dyn VolumeFs>,
    mount: MountedFs,
    /// The data goes with the mount (tmpfs).
    ephemeral: bool,
    /// The usage last written to the catalog.
    saved: Option<UsageSnapshot>,
}

pub struct Core {
    ctx: DriverContext,
    store: Store,
    drivers: Vec<Arc<dyn Driver>>,
    active: HashMap<String, Active>,
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

impl Core {
    pub fn new(root: &Path, store: Store, drivers: Vec<Arc<dyn Driver>>) -> Core {
        Core {
            ctx: DriverContext {
                root: root.to_path_buf(),
            },
            store,
            drivers,
            active: HashMap::new(),
        }
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

    pub fn record(&self, name: &str) -> Result<VolumeRecord, VolumeError> {
        self.store
            .get(name)?
            .ok_or_else(|| VolumeError::NotFound(name.into()))
    }

    pub fn records(&self) -> Result<Vec<VolumeRecord>, VolumeError> {
        Ok(self.store.list()?)
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
    pub fn create(
        &mut self,
        name: String,
        driver: &str,
        options: std::collections::BTreeMap<String, String>,
        labels: std::collections::BTreeMap<String, String>,
    ) -> Result<VolumeRecord, VolumeError> {
        super::name::validate_name(&name)?;
        let driver = self.driver(driver)?;
        let opts = parse_options(driver.name(), driver.option_keys(), &options)?;
        if let Some(existing) = self.store.get(&name)? {
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
        driver.validate(&self.ctx, &opts)?;
        let mut rec = VolumeRecord {
            name: name.clone(),
            driver: driver.name().into(),
            options,
            labels,
            created_at: now(),
            mount_refs: Default::default(),
            owns_backing: false,
        };
        create_dir(&self.ctx.volume_dir(&name), 0o711)?;
        create_dir(&self.mountpoint(&name), 0o755)?;
        let created = match driver.create(&self.ctx, &rec, &opts) {
            Ok(c) => c,
            Err(e) => {
                self.remove_volume_dir(&name);
                return Err(e);
            }
        };
        rec.owns_backing = created.owns_backing;
        let saved = self
            .store
            .put(&rec)
            .and_then(|()| self.store.set_usage(&name, created.usage));
        if let Err(e) = saved {
            let _ = driver.remove(&self.ctx, &rec);
            let _ = self.store.remove(&name);
            self.remove_volume_dir(&name);
            return Err(e.into());
        }
        Ok(rec)
    }

    /// Removes the empty mountpoint and the volume's directory, never following into a mount.
    fn remove_volume_dir(&self, name: &str) {
        let _ = std::fs::remove_dir(self.mountpoint(name));
        let _ = std::fs::remove_dir(self.ctx.volume_dir(name));
    }

    pub fn remove(&mut self, name: &str) -> Result<u64, VolumeError> {
        let rec = self.record(name)?;
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
        self.driver(&rec.driver)?.remove(&self.ctx, &rec)?;
        self.store.remove(name)?;
        self.remove_volume_dir(name);
        Ok(freed)
    }

    /// Adds a reference, activating the volume and bind-mounting `target` as needed.
    pub fn mount(
        &mut self,
        name: &str,
        ref_id: &str,
        target: Option<&Path>,
    ) -> Result<PathBuf, VolumeError> {
        let mut rec = self.record(name)?;
        if let Some(t) = target {
            check_target(t)?;
        }
        let was_active = self.active.contains_key(name);
        if !was_active {
            self.activate(&rec)?;
        }
        let mountpoint = self.mountpoint(name);
        let already = rec.mount_refs.contains_key(ref_id);
        if let (Some(t), false) = (target, already) {
            if let Err(e) = bind(&mountpoint, t) {
                if !was_active && rec.mount_refs.is_empty() {
                    self.deactivate(name);
                }
                return Err(e);
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
            };
            rec.mount_refs.insert(ref_id.to_string(), r);
            if let Err(e) = self.store.put(&rec) {
                if let Some(t) = target {
                    let _ = detach_stale_mount(t);
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
            detach_stale_mount(t)
                .map_err(|e| VolumeError::io(format!("unmounting {}", t.display()), e))?;
        }
        self.store.put(&rec)?;
        if rec.mount_refs.is_empty() {
            self.deactivate(name);
        }
        Ok(())
    }

    fn activate(&mut self, rec: &VolumeRecord) -> Result<(), VolumeError> {
        let (driver, opts) = self.options(rec)?;
        let stored = self.store.usage(&rec.name)?;
        let activation = driver.activate(&self.ctx, rec, &opts, stored)?;
        let mountpoint = self.mountpoint(&rec.name);
        if is_stale_mount(&mountpoint) {
            detach_stale_mount(&mountpoint)
                .map_err(|e| VolumeError::io("detaching a stale mount", e))?;
        }
        create_dir(&mountpoint, 0o755)?;
        let serve = ServeOptions {
            passthrough: activation.passthrough,
            exclusive: activation.exclusive,
            readahead_kb: activation.readahead_kb,
            threads: activation.threads,
        };
        let mount = crate::fuse::mount(activation.fs.clone(), &mountpoint, &rec.name, serve)
            .map_err(|e| VolumeError::io(format!("mounting {}", mountpoint.display()), e))?;
        // Not clean until a clean deactivation: a crash from here on means a rescan.
        self.store.set_usage(&rec.name, activation.usage)?;
        self.active.insert(
            rec.name.clone(),
            Active {
                fs: activation.fs,
                mount,
                ephemeral: activation.ephemeral,
                saved: None,
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

    /// Syncs, unmounts and records the usage as clean.
    pub fn deactivate(&mut self, name: &str) {
        let Some(active) = self.active.remove(name) else {
            return;
        };
        let synced = active.fs.sync_all();
        let usage = active.fs.usage_at_rest();
        if let Err(e) = active.mount.unmount() {
            log::warn!("unmounting volume {name}: {e}");
        }
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
                clean: synced.is_ok(),
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

    /// At start-up: clears mounts a dead daemon left and mounts referenced volumes again.
    pub fn recover(&mut self) -> Result<(), VolumeError> {
        for rec in self.store.list()? {
            let mountpoint = self.mountpoint(&rec.name);
            let targets = rec.mount_refs.values().filter_map(|r| r.target.clone());
            for path in std::iter::once(mountpoint.clone()).chain(targets.clone()) {
                if is_stale_mount(&path) {
                    log::info!("detaching stale mount {}", path.display());
                    let _ = detach_stale_mount(&path);
                }
            }
            if rec.mount_refs.is_empty() {
                continue;
            }
            if let Err(e) = self.activate(&rec) {
                log::error!("volume {}: cannot mount it again: {e}", rec.name);
                continue;
            }
            for target in targets {
                if let Err(e) = bind(&mountpoint, &target) {
                    log::error!(
                        "volume {}: cannot bind it at {} again: {e}",
                        rec.name,
                        target.display()
                    );
                }
            }
        }
        Ok(())
    }

    /// Unmounts everything; references stay so the next start mounts the same volumes.
    pub fn shutdown(&mut self) {
        let names: Vec<String> = self.active.keys().cloned().collect();
        for name in names {
            if let Ok(rec) = self.record(&name) {
                for t in rec.mount_refs.values().filter_map(|r| r.target.as_ref()) {
                    let _ = detach_stale_mount(t);
                }
            }
            self.deactivate(&name);
        }
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

fn check_target(target: &Path) -> Result<(), VolumeError> {
    if !target.is_absolute() {
        return Err(VolumeError::InvalidTarget(format!(
            "{} is not an absolute path",
            target.display()
        )));
    }
    match std::fs::metadata(target) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => Err(VolumeError::InvalidTarget(format!(
            "{} is not a directory",
            target.display()
        ))),
        Err(e) => Err(VolumeError::InvalidTarget(format!(
            "{}: {e}",
            target.display()
        ))),
    }
}

fn bind(source: &Path, target: &Path) -> Result<(), VolumeError> {
    if is_stale_mount(target) {
        let _ = detach_stale_mount(target);
    }
    mount(
        Some(source),
        target,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(|e| VolumeError::io(format!("bind-mounting at {}", target.display()), e.into()))
}
