//! Snapshots and clones: `fvol snapshot create|ls|rm|restore` and `fvol create NEW --from
//! NAME[@SNAP]` (`-o from=` through Docker).
//!
//! A snapshot is a host directory tree, `ROOT/snapshots/VOLUME/SNAP/`, with its description
//! beside it (`SNAP.json`, written last: a snapshot exists once it is there). It is taken
//! while containers write: the volume's gate (`fs::gate`) holds every change, the changes in
//! flight finish first, so the copy is the volume at one instant (crash-consistent). The copy
//! is made from the host directory (local: `cp --reflink=auto`, reflinks where the host
//! filesystem has them) or from the filesystem core (tmpfs, rbd: `fs::tree_copy`), never
//! through the kernel mount. Writes are held for as long as the copy takes (`HeldMs`, shown
//! by `snapshot ls`): an instant for reflinks, the copy time for a copy; tmpfs holds them
//! only while it captures its tree and copies out from the capture (`VolumeFs::capture`).
//!
//! Snapshots live on the host's disk under ROOT, apart from the volume: they do not count
//! against its quota. A clone is a new volume filled with a copy: independent of its source
//! from the start, so removing either never touches the other.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Instant, SystemTime};

use serde::{Deserialize, Serialize};

use super::core::Core;
use super::events::EventType;
use super::{RefId, Usage, VolumeError, VolumeRecord};
use crate::driver::{DataHome, DriverError};
use crate::fs::tree_copy::{self, CoreSource};

/// One snapshot, as `snapshot ls` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct SnapshotInfo {
    pub name: String,
    pub volume: String,
    pub created_at: String,
    /// How it was taken, which says what it costs: `reflink` (local: extents shared with the
    /// volume until either changes), `copy` (a full copy, writes held throughout),
    /// `copy-on-write` (tmpfs: writes held for the capture only, the copy made after) or
    /// `rbd snapshot` (kept by the cluster).
    pub method: String,
    /// Bytes of file data it holds, and its files.
    pub bytes: u64,
    pub files: u64,
    /// How long the volume's writes were held while it was taken, in milliseconds.
    pub held_ms: u64,
    /// The backing store no longer holds it (an rbd snapshot removed outside fvol): only its
    /// description is left, which `snapshot rm` drops. Never stored, only shown.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub missing: bool,
}

fn find_snapshot(
    all: Vec<SnapshotInfo>,
    volume: &str,
    snap: &str,
) -> Result<SnapshotInfo, VolumeError> {
    all.into_iter()
        .find(|s| s.name == snap)
        .ok_or_else(|| VolumeError::SnapshotNotFound {
            volume: volume.into(),
            snapshot: snap.into(),
        })
}

/// Where `Core::copy_volume` puts a volume's tree.
pub(super) enum Sink<'a> {
    /// A new, empty host directory, which becomes the tree's root.
    Dir(&'a Path),
    /// A tar stream (`fs::tar_out`), written as the tree is read: nothing staged.
    Tar(&'a mut dyn std::io::Write),
}

impl Sink<'_> {
    fn fill(
        &mut self,
        source: &dyn tree_copy::TreeSource,
        done: &std::sync::atomic::AtomicU64,
    ) -> std::io::Result<tree_copy::CopyStats> {
        match self {
            Sink::Dir(dest) => tree_copy::copy_tree(source, dest, done),
            Sink::Tar(out) => crate::fs::tar_out::write_tar(source, &mut **out, done),
        }
    }
}

/// How long `snapshot ls` waits for a store to list the snapshots it holds.
const SNAPSHOT_CHECK_BOUND: std::time::Duration = std::time::Duration::from_secs(5);

/// The option of `create` that names the source of a clone.
pub const FROM: &str = "from";

fn snapshot_error(message: String) -> VolumeError {
    VolumeError::InvalidOption(message)
}

fn io(context: String) -> impl FnOnce(std::io::Error) -> VolumeError {
    move |e| VolumeError::io(context, e)
}

/// Runs a host command; its stderr is the error.
fn run(cmd: &mut Command, what: &str) -> Result<(), VolumeError> {
    let out = cmd
        .output()
        .map_err(io(format!("{what}: running {cmd:?}")))?;
    if out.status.success() {
        return Ok(());
    }
    Err(VolumeError::io(
        what.to_string(),
        std::io::Error::other(String::from_utf8_lossy(&out.stderr).trim().to_string()),
    ))
}

/// `cp -a` of the tree in `from` into the existing directory `to` (reflinks where the
/// filesystem has them; holes stay holes).
fn copy_tree(from: &Path, to: &Path, what: &str) -> Result<(), VolumeError> {
    run(
        Command::new("cp")
            .args([
                "-a",
                "--reflink=auto",
                "--sparse=always",
                "--no-target-directory",
            ])
            .arg(from.join("."))
            .arg(to),
        what,
    )
}

/// Whether the host filesystem of `dir` makes reflinks (Btrfs, XFS): the method
/// `cp --reflink=auto` then uses.
fn reflinks(dir: &Path) -> bool {
    const BTRFS: i64 = 0x9123_683e;
    const XFS: i64 = 0x5846_5342;
    nix::sys::statfs::statfs(dir)
        .map(|s| matches!(s.filesystem_type().0, BTRFS | XFS))
        .unwrap_or(false)
}

fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}

/// Parses `NAME[@SNAP]`.
pub fn parse_source(text: &str) -> Result<(String, Option<String>), VolumeError> {
    let (name, snap) = match text.split_once('@') {
        Some((n, s)) => (n, Some(s.to_string())),
        None => (text, None),
    };
    super::name::validate_name(name)?;
    if let Some(s) = &snap {
        validate_snapshot_name(s)?;
    }
    Ok((name.to_string(), snap))
}

fn validate_snapshot_name(snap: &str) -> Result<(), VolumeError> {
    super::name::validate_name(snap).map_err(|e| match e {
        VolumeError::InvalidName { name, reason } => {
            snapshot_error(format!("invalid snapshot name {name:?}: {reason}"))
        }
        other => other,
    })
}

impl Core {
    fn snapshots_dir(&self, volume: &str) -> PathBuf {
        self.driver_context().root.join("snapshots").join(volume)
    }

    /// Where the volume's files live, as its driver says.
    pub(super) fn data_home(&self, rec: &VolumeRecord) -> Result<DataHome, VolumeError> {
        Ok(self
            .driver(&rec.driver)?
            .data_home(self.driver_context(), rec)?)
    }

    pub fn snapshot_list(&self, volume: &str) -> Result<Vec<SnapshotInfo>, VolumeError> {
        self.record(volume)?;
        let dir = self.snapshots_dir(volume);
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(VolumeError::io(format!("reading {}", dir.display()), e)),
        };
        let mut all = Vec::new();
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().is_none_or(|e| e != "json") {
                continue;
            }
            let text = std::fs::read_to_string(&path)
                .map_err(io(format!("reading {}", path.display())))?;
            match serde_json::from_str::<SnapshotInfo>(&text) {
                Ok(info) => all.push(info),
                Err(e) => log::warn!("{}: unreadable, left out: {e}", path.display()),
            }
        }
        all.sort_by(|a, b| a.created_at.cmp(&b.created_at).then(a.name.cmp(&b.name)));
        Ok(all)
    }

    /// `snapshot_list`, each snapshot that a driver keeps itself checked against the driver's
    /// own list. A store that cannot answer within `SNAPSHOT_CHECK_BOUND` (a cluster that is
    /// down: its OSD reads never time out) or fails leaves the list as described, with a
    /// warning in the log; the check goes on in its own thread, and the volume gets no other
    /// until it ends.
    pub fn snapshot_list_checked(&self, volume: &str) -> Result<Vec<SnapshotInfo>, VolumeError> {
        let mut all = self.snapshot_list(volume)?;
        let rec = self.record(volume)?;
        let driver = self.driver(&rec.driver)?;
        let Some(native) = driver.native_snapshots() else {
            return Ok(all);
        };
        if !all.iter().any(|s| s.method == native.method) {
            return Ok(all);
        }
        if !self.snapshot_checks.lock().insert(volume.to_string()) {
            log::warn!("volume {volume}: its store has not answered the last snapshot check");
            return Ok(all);
        }
        let (tx, rx) = std::sync::mpsc::channel();
        let (checks, ctx, name) = (
            self.snapshot_checks.clone(),
            self.driver_context().clone(),
            volume.to_string(),
        );
        std::thread::spawn(move || {
            let _ = tx.send(driver.snapshot_names(&ctx, &rec));
            checks.lock().remove(&name);
        });
        match rx.recv_timeout(SNAPSHOT_CHECK_BOUND) {
            Ok(Ok(held)) => {
                for s in all.iter_mut().filter(|s| s.method == native.method) {
                    s.missing = !held.contains(&s.name);
                }
            }
            Ok(Err(e)) => log::warn!("volume {volume}: listing its snapshots in the store: {e}"),
            Err(_) => log::warn!(
                "volume {volume}: its store did not list its snapshots within {:?}; shown as \
                 described",
                SNAPSHOT_CHECK_BOUND
            ),
        }
        Ok(all)
    }

    /// `snapshot_info`, refusing a snapshot that the driver no longer holds.
    fn snapshot_present(&self, volume: &str, snap: &str) -> Result<SnapshotInfo, VolumeError> {
        validate_snapshot_name(snap)?;
        let info = find_snapshot(self.snapshot_list_checked(volume)?, volume, snap)?;
        if info.missing {
            return Err(VolumeError::Refused(format!(
                "snapshot {snap} of volume {volume} is gone from its backing store (removed \
                 outside fvol); `fvol snapshot rm {volume} {snap}` drops what is left of it"
            )));
        }
        Ok(info)
    }

    fn snapshot_info(&self, volume: &str, snap: &str) -> Result<SnapshotInfo, VolumeError> {
        validate_snapshot_name(snap)?;
        find_snapshot(self.snapshot_list(volume)?, volume, snap)
    }

    pub fn snapshot_create(&self, volume: &str, snap: &str) -> Result<SnapshotInfo, VolumeError> {
        validate_snapshot_name(snap)?;
        let rec = self.record(volume)?;
        if self.snapshot_list(volume)?.iter().any(|s| s.name == snap) {
            return Err(VolumeError::Refused(format!(
                "volume {volume} already has a snapshot {snap}; remove it first (fvol snapshot \
                 rm {volume} {snap}) or choose another name"
            )));
        }
        let dir = self.snapshots_dir(volume);
        super::core::create_dir(&dir, 0o700)?;
        let (method, stats, held) = match self.driver(&rec.driver)?.native_snapshots() {
            // The backing store keeps the snapshot; only its description is on the host.
            Some(native) => {
                let held = self.take_native(&rec, snap)?;
                let status = self.info(&rec)?.status;
                let stats = crate::fs::tree_copy::CopyStats {
                    bytes: status.used_bytes,
                    files: status.used_inodes,
                };
                (native.method, stats, held)
            }
            None => {
                let partial = dir.join(format!("{snap}.partial"));
                let _ = std::fs::remove_dir_all(&partial);
                super::core::create_dir(&partial, 0o755)?;
                let taken = match self.copy_volume(&rec, Sink::Dir(&partial)) {
                    Ok(t) => t,
                    Err(e) => {
                        let _ = std::fs::remove_dir_all(&partial);
                        return Err(e);
                    }
                };
                let tree = dir.join(snap);
                std::fs::rename(&partial, &tree)
                    .map_err(io(format!("naming {}", tree.display())))?;
                taken
            }
        };
        let info = SnapshotInfo {
            name: snap.into(),
            volume: volume.into(),
            created_at: now_rfc3339(),
            method: method.into(),
            bytes: stats.bytes,
            files: stats.files,
            held_ms: held.as_millis() as u64,
            missing: false,
        };
        let json = serde_json::to_vec_pretty(&info)
            .map_err(|e| VolumeError::io("snapshot description", std::io::Error::other(e)))?;
        let tmp = dir.join(format!("{snap}.json.tmp"));
        std::fs::write(&tmp, json).map_err(io(format!("writing {}", tmp.display())))?;
        std::fs::rename(&tmp, dir.join(format!("{snap}.json")))
            .map_err(io(format!("writing the description of {volume}@{snap}")))?;
        log::info!(
            "volume {volume}: snapshot {snap} taken by {method}, {} bytes, writes held {held:?}",
            stats.bytes
        );
        let attributes = [
            ("snapshot", info.name.clone()),
            ("method", info.method.clone()),
            ("bytes", info.bytes.to_string()),
            ("held_ms", info.held_ms.to_string()),
        ];
        self.emit(EventType::Snapshot, &rec, &attributes);
        Ok(info)
    }

    /// Takes the driver's own snapshot `snap` of the volume: if it is mounted here, with its
    /// writes held and its filesystem made durable first. Returns how long writes were held.
    fn take_native(
        &self,
        rec: &VolumeRecord,
        snap: &str,
    ) -> Result<std::time::Duration, VolumeError> {
        let driver = self.driver(&rec.driver)?;
        let ctx = self.driver_context();
        let Some(gate) = self.active_gate(&rec.name) else {
            driver.snapshot_take(ctx, rec, snap, None)?;
            return Ok(std::time::Duration::ZERO);
        };
        if !gate.holds_every_write() {
            return Err(passthrough_refused(&rec.name));
        }
        let held = std::cell::Cell::new(std::time::Duration::ZERO);
        let hold = |take: &mut dyn FnMut() -> Result<(), DriverError>| {
            let frozen = gate.freeze();
            let start = Instant::now();
            gate.inner().sync_all().map_err(|e| {
                DriverError::internal(format!("committing volume {}: {e:?}", rec.name))
            })?;
            let taken = take();
            held.set(start.elapsed());
            drop(frozen);
            taken
        };
        driver.snapshot_take(ctx, rec, snap, Some(&hold))?;
        Ok(held.get())
    }

    /// Copies what the driver's snapshot `snap` of `rec` holds into `dest`.
    fn copy_native(
        &self,
        rec: &VolumeRecord,
        snap: &str,
        sink: &mut Sink<'_>,
    ) -> Result<crate::fs::tree_copy::CopyStats, VolumeError> {
        let what = format!("copying volume {}@{snap}", rec.name);
        let total = self.info(rec).map_or(0, |i| i.status.used_bytes);
        let (_shown, done) = self.progress.counted(&rec.name, what.clone(), total);
        let fs = self
            .driver(&rec.driver)?
            .snapshot_open(self.driver_context(), rec, snap)?;
        sink.fill(&CoreSource(fs.as_ref()), &done).map_err(io(what))
    }

    /// A name for a snapshot fvol takes for itself and removes again (an export, a copy).
    fn temporary_snapshot(what: &str) -> String {
        let nanos = SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        format!("fvol-{what}-{nanos}")
    }

    /// A new, empty directory for a copy of `volume` that is not a snapshot (an export).
    pub(super) fn scratch_dir(&self, volume: &str, what: &str) -> Result<PathBuf, VolumeError> {
        let dir = self.snapshots_dir(volume);
        super::core::create_dir(&dir, 0o700)?;
        let nanos = SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let tmp = dir.join(format!(".{what}-{nanos}.partial"));
        super::core::create_dir(&tmp, 0o755)?;
        Ok(tmp)
    }

    /// Copies the volume's tree into `sink` as it is at one instant. Returns the method, what
    /// was copied and how long writes were held. A volume whose files are a host directory
    /// (local) is copied into a directory only (`export` stages it).
    pub(super) fn copy_volume(
        &self,
        rec: &VolumeRecord,
        mut sink: Sink<'_>,
    ) -> Result<
        (
            &'static str,
            crate::fs::tree_copy::CopyStats,
            std::time::Duration,
        ),
        VolumeError,
    > {
        let name = &rec.name;
        let driver = self.driver(&rec.driver)?;
        if let Some(native) = driver.native_snapshots() {
            // Writes are held only while the driver's snapshot is taken; the copy is made
            // from the snapshot, and the snapshot removed after.
            let snap = Self::temporary_snapshot("copy");
            let held = self.take_native(rec, &snap)?;
            let copied = self.copy_native(rec, &snap, &mut sink);
            if let Err(e) = driver.snapshot_remove(self.driver_context(), rec, &snap) {
                log::warn!("volume {name}: removing the temporary snapshot {snap}: {e}");
            }
            return Ok((native.method, copied?, held));
        }
        let gate = self.active_gate(name);
        if let Some(g) = &gate
            && !g.holds_every_write()
        {
            return Err(passthrough_refused(name));
        }
        let what = format!("copying volume {name}");
        let total = self.info(rec).map_or(0, |i| i.status.used_bytes);
        match self.data_home(rec)? {
            DataHome::HostDir { dir: data, .. } => {
                let Sink::Dir(dest) = sink else {
                    return Err(VolumeError::io(
                        what,
                        std::io::Error::other("a host directory is copied into a directory"),
                    ));
                };
                let method = if reflinks(dest) { "reflink" } else { "copy" };
                let copied = dest.to_path_buf();
                let _shown = (self.progress)
                    .measured(name, what.clone(), total, move || measure(&copied).bytes);
                let frozen = gate.as_ref().map(|g| g.freeze());
                let held = Instant::now();
                let copied = copy_tree(&data, dest, &what);
                if let Some(gate) = &gate {
                    gate.inner().host_copied();
                }
                copied?;
                let held = held.elapsed();
                drop(frozen);
                let stats = measure(dest);
                Ok((method, stats, held))
            }
            DataHome::InCore { persistent } => {
                let (_shown, done) = self.progress.counted(name, what.clone(), total);
                let Some(gate) = gate else {
                    return self.copy_inactive(rec, persistent, sink, &done);
                };
                let frozen = gate.freeze();
                let held = Instant::now();
                // A core that can capture its tree (tmpfs) holds the writes for the capture
                // only, and is copied from it while they go on.
                let captured = gate.inner().capture().map_err(|e| match e {
                    crate::fs::FsError::Os(nix::errno::Errno::EBUSY) => {
                        VolumeError::Refused(format!(
                            "volume {name} is being copied out by another snapshot, export or \
                             clone; try again when that is done"
                        ))
                    }
                    e => VolumeError::io(what.clone(), tree_copy::io_err(e)),
                })?;
                if let Some(captured) = captured {
                    let held = held.elapsed();
                    drop(frozen);
                    let stats = sink
                        .fill(captured.as_ref(), &done)
                        .map_err(io(what.clone()))?;
                    captured.finish().map_err(io(what))?;
                    return Ok(("copy-on-write", stats, held));
                }
                let stats = sink
                    .fill(&CoreSource(gate.inner().as_ref()), &done)
                    .map_err(io(what))?;
                let held = held.elapsed();
                drop(frozen);
                Ok(("copy", stats, held))
            }
        }
    }

    /// An unmounted volume whose data lives only while mounted (tmpfs) holds nothing; any
    /// other (rbd) is opened (and locked) for the copy, without a mount.
    fn copy_inactive(
        &self,
        rec: &VolumeRecord,
        persistent: bool,
        mut sink: Sink<'_>,
        done: &std::sync::atomic::AtomicU64,
    ) -> Result<
        (
            &'static str,
            crate::fs::tree_copy::CopyStats,
            std::time::Duration,
        ),
        VolumeError,
    > {
        if !persistent {
            return Err(VolumeError::Refused(format!(
                "volume {} is a {} volume that is not mounted: it holds no data to snapshot \
                 (its data lives only while it is mounted)",
                rec.name, rec.driver
            )));
        }
        let driver = self.driver(&rec.driver)?;
        let stored = self.store().usage(&rec.name)?;
        let activation = driver.activate(
            self.driver_context(),
            rec,
            stored,
            &mut crate::fs::resume::Carry::none(),
        )?;
        let stats = sink
            .fill(&CoreSource(activation.fs.as_ref()), done)
            .map_err(io(format!("copying volume {}", rec.name)))?;
        let _ = activation.fs.sync_all();
        Ok(("copy", stats, std::time::Duration::ZERO))
    }

    pub fn snapshot_remove(&self, volume: &str, snap: &str) -> Result<(), VolumeError> {
        let info = self.snapshot_info(volume, snap)?;
        let dir = self.snapshots_dir(volume);
        let rec = self.record(volume)?;
        let driver = self.driver(&rec.driver)?;
        if driver
            .native_snapshots()
            .is_some_and(|n| n.method == info.method)
        {
            // The backing store's snapshot first: a description never outlives it.
            driver.snapshot_remove(self.driver_context(), &rec, snap)?;
            std::fs::remove_file(dir.join(format!("{snap}.json")))
                .map_err(io(format!("removing {volume}@{snap}")))?;
            let _ = std::fs::remove_dir(&dir);
            return Ok(());
        }
        // The description first: from then on the snapshot is gone for users.
        std::fs::remove_file(dir.join(format!("{snap}.json")))
            .map_err(io(format!("removing {volume}@{snap}")))?;
        std::fs::remove_dir_all(dir.join(snap))
            .map_err(io(format!("removing the files of {volume}@{snap}")))?;
        let _ = std::fs::remove_dir(&dir);
        Ok(())
    }

    /// Removes every snapshot of `volume` (an `rm -f` of the volume).
    pub fn snapshot_remove_all(&self, volume: &str) -> Result<(), VolumeError> {
        let dir = self.snapshots_dir(volume);
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(VolumeError::io(format!("removing {}", dir.display()), e)),
        }
    }

    /// Rolls `volume` back to `snap`. The volume must be unmounted.
    pub fn snapshot_restore(&self, volume: &str, snap: &str) -> Result<(), VolumeError> {
        let rec = self.record(volume)?;
        let info = self.snapshot_present(volume, snap)?;
        if self.active_gate(volume).is_some() {
            let holders: Vec<_> = rec.mount_refs.keys().cloned().collect();
            return Err(VolumeError::Mounted {
                name: volume.into(),
                holders: holders.join(", "),
                what: "restore a snapshot (the containers using it would see their files \
                       change under them)",
            });
        }
        let driver = self.driver(&rec.driver)?;
        if driver
            .native_snapshots()
            .is_some_and(|n| n.method == info.method)
        {
            driver.snapshot_restore(self.driver_context(), &rec, snap)?;
            return self.forget_usage(volume);
        }
        let tree = self.snapshots_dir(volume).join(snap);
        self.replace_content(&rec, &tree)
    }

    /// Makes the unmounted volume `rec` hold exactly the tree `tree`.
    fn replace_content(&self, rec: &VolumeRecord, tree: &Path) -> Result<(), VolumeError> {
        let name = rec.name.clone();
        match self.data_home(rec)? {
            DataHome::InCore { persistent: false } => Err(VolumeError::Refused(format!(
                "volume {name} is a {} volume: its data lives only while it is mounted, so \
                 an unmounted one has nothing to roll back; copy the snapshot's files in \
                 (ROOT/snapshots/{name}/SNAP) after mounting it, or make a local or rbd \
                 volume from it (fvol create NEW --from {name}@SNAP)",
                rec.driver
            ))),
            DataHome::HostDir { owned: false, .. } => Err(VolumeError::Refused(format!(
                "volume {name} serves a mount= directory, which fvol never replaces; copy \
                     the snapshot's files back yourself"
            ))),
            DataHome::HostDir { dir: data, .. } => {
                let next = data.with_extension("restoring");
                let old = data.with_extension("old");
                let _ = std::fs::remove_dir_all(&next);
                let _ = std::fs::remove_dir_all(&old);
                super::core::create_dir(&next, 0o755)?;
                copy_tree(tree, &next, &format!("restoring volume {name}"))?;
                std::fs::rename(&data, &old).map_err(io(format!("restoring volume {name}")))?;
                if let Err(e) = std::fs::rename(&next, &data) {
                    let _ = std::fs::rename(&old, &data);
                    return Err(VolumeError::io(format!("restoring volume {name}"), e));
                }
                let _ = std::fs::remove_dir_all(&old);
                self.forget_usage(&name)
            }
            DataHome::InCore { persistent: true } => self.fill_through_mount(&name, tree, true),
        }
    }

    /// The next mount measures the volume's usage again.
    fn forget_usage(&self, name: &str) -> Result<(), VolumeError> {
        let stored = self.store().usage(name)?;
        self.store().set_usage(
            name,
            Usage {
                clean: false,
                ..stored
            },
        )?;
        Ok(())
    }

    /// Mounts the unmounted volume `name`, empties it if `clear`, copies `tree` in through
    /// the mount (so its quota holds) and unmounts it.
    fn fill_through_mount(&self, name: &str, tree: &Path, clear: bool) -> Result<(), VolumeError> {
        let mountpoint = self.mount(name, &RefId::Cli)?;
        let filled = (|| {
            if clear {
                for entry in std::fs::read_dir(&mountpoint)
                    .map_err(io(format!("reading {}", mountpoint.display())))?
                {
                    let path = entry
                        .map_err(io(format!("reading {}", mountpoint.display())))?
                        .path();
                    let removed = match path.is_dir() && !path.is_symlink() {
                        true => std::fs::remove_dir_all(&path),
                        false => std::fs::remove_file(&path),
                    };
                    removed.map_err(io(format!("emptying volume {name}")))?;
                }
            }
            copy_tree(tree, &mountpoint, &format!("filling volume {name}"))
        })();
        self.release(name, &RefId::Cli)?;
        filled
    }

    /// Whether a clone of `source` (`NAME` or `NAME@SNAP`) into a new volume of `driver` is
    /// made by the driver itself (the source is of the same driver, which keeps snapshots of
    /// its own); then the source's record.
    pub fn native_clone_source(
        &self,
        driver: &str,
        source: &str,
    ) -> Result<Option<VolumeRecord>, VolumeError> {
        let (src, _) = parse_source(source)?;
        let src_rec = self.record(&src)?;
        let native = self.driver(&src_rec.driver)?.native_snapshots();
        Ok(native.filter(|_| src_rec.driver == driver).map(|_| src_rec))
    }

    /// The snapshot a native clone of `source` starts from: `NAME@SNAP`'s, or one taken now
    /// (temporary: the second value says so; the driver keeps what its clones need).
    pub fn native_clone_snapshot(
        &self,
        src_rec: &VolumeRecord,
        source: &str,
    ) -> Result<(String, bool), VolumeError> {
        match parse_source(source)?.1 {
            Some(s) => {
                let info = self.snapshot_present(&src_rec.name, &s)?;
                let native = self.driver(&src_rec.driver)?.native_snapshots();
                if native.is_none_or(|n| n.method != info.method) {
                    return Err(snapshot_error(format!(
                        "from={source}: the snapshot was taken by {}, not by the driver",
                        info.method
                    )));
                }
                Ok((s, false))
            }
            None => {
                let snap = Self::temporary_snapshot("clone");
                self.take_native(src_rec, &snap)?;
                Ok((snap, true))
            }
        }
    }

    /// Removes the temporary snapshot a native clone started from.
    pub fn drop_clone_snapshot(&self, src_rec: &VolumeRecord, snap: &str) {
        let removed = self
            .driver(&src_rec.driver)
            .and_then(|d| Ok(d.snapshot_remove(self.driver_context(), src_rec, snap)?));
        if let Err(e) = removed {
            log::warn!(
                "volume {}: removing the temporary snapshot {snap}: {e}",
                src_rec.name
            );
        }
    }

    /// Fills the new, unmounted volume `rec` from `source` (`NAME` or `NAME@SNAP`).
    pub fn fill_from(&self, rec: &VolumeRecord, source: &str) -> Result<(), VolumeError> {
        let (src, snap) = parse_source(source)?;
        let src_rec = self.record(&src)?;
        let home = self.data_home(rec)?;
        if home == (DataHome::InCore { persistent: false }) {
            return Err(snapshot_error(format!(
                "from={source}: a {} volume holds data only while mounted, so it cannot \
                 start with a copy; use -d local or -d rbd",
                rec.driver
            )));
        }
        // A snapshot, or a copy of the volume as it is now (writes held while it is taken).
        let (tree, temporary) = match &snap {
            Some(s) => {
                let info = self.snapshot_info(&src, s)?;
                if let (Some(limit), _) = self.driver(&rec.driver)?.limits(&rec.options)?
                    && info.bytes > limit
                {
                    return Err(snapshot_error(format!(
                        "from={source}: the snapshot holds {} bytes, more than this volume's \
                         limit of {limit} bytes; give it a bigger size=",
                        info.bytes
                    )));
                }
                let src_driver = self.driver(&src_rec.driver)?;
                if src_driver
                    .native_snapshots()
                    .is_some_and(|n| n.method == info.method)
                {
                    // Kept by the source's backing store: copied out of it first.
                    let tmp = self.scratch_dir(&src, "clone")?;
                    if let Err(e) = self.copy_native(&src_rec, s, &mut Sink::Dir(&tmp)) {
                        let _ = std::fs::remove_dir_all(&tmp);
                        return Err(e);
                    }
                    (tmp.clone(), Some(tmp))
                } else {
                    (self.snapshots_dir(&src).join(s), None)
                }
            }
            None => {
                let dir = self.snapshots_dir(&src);
                super::core::create_dir(&dir, 0o700)?;
                let tmp = dir.join(format!(".clone-{}.partial", rec.name));
                let _ = std::fs::remove_dir_all(&tmp);
                super::core::create_dir(&tmp, 0o755)?;
                if let Err(e) = self.copy_volume(&src_rec, Sink::Dir(&tmp)) {
                    let _ = std::fs::remove_dir_all(&tmp);
                    return Err(e);
                }
                (tmp.clone(), Some(tmp))
            }
        };
        let filling = format!("filling volume {}", rec.name);
        let target = match &home {
            DataHome::HostDir { dir, .. } => dir.clone(),
            DataHome::InCore { .. } => self.mountpoint(&rec.name),
        };
        let _shown =
            (self.progress).measured(&rec.name, filling, measure(&tree).bytes, move || {
                measure(&target).bytes
            });
        let filled = match home {
            DataHome::HostDir {
                dir: data,
                owned: true,
            } => copy_tree(&tree, &data, &format!("filling volume {}", rec.name))
                .and_then(|()| self.forget_usage(&rec.name)),
            DataHome::HostDir { owned: false, .. } => Err(snapshot_error(format!(
                "from={source}: a mount= directory is served as it is; fvol copies into new \
                 directories only"
            ))),
            DataHome::InCore { .. } => self.fill_through_mount(&rec.name, &tree, false),
        };
        if let Some(tmp) = temporary {
            let _ = std::fs::remove_dir_all(tmp);
        }
        filled
    }
}

fn passthrough_refused(name: &str) -> VolumeError {
    VolumeError::Refused(format!(
        "volume {name} has no byte limit, so it is served with kernel passthrough, whose \
         writes fvol cannot hold for an instant; give it a size (fvol update {name} -o \
         size=SIZE, after an unmount) to snapshot it while mounted, or unmount it first"
    ))
}

/// Bytes and files of the tree at `dir` (the files `cp` wrote).
pub(super) fn measure(dir: &Path) -> crate::fs::tree_copy::CopyStats {
    let mut stats = crate::fs::tree_copy::CopyStats::default();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let Ok(meta) = e.path().symlink_metadata() else {
                continue;
            };
            stats.files += 1;
            if meta.is_dir() {
                stack.push(e.path());
            } else if meta.is_file() {
                stats.bytes += meta.len();
            }
        }
    }
    stats
}

/// Removes `from=` from a create's options: the source of a clone, if any.
pub fn take_source(options: &mut BTreeMap<String, String>) -> Option<String> {
    options.remove(FROM)
}
