//! `VolumeManager`: the one entry point for volume operations, used by the daemon's HTTP API
//! (CLI and Docker plugin alike).
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::{VolumeError, VolumeInfo};

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

pub struct VolumeManager {
    _private: (),
}

impl VolumeManager {
    /// Opens the catalog at `root/fvol.redb` (creating `root` if needed). Does not mount.
    pub fn open(root: &Path) -> Result<VolumeManager, VolumeError> {
        let _ = root;
        unimplemented!()
    }
    /// Detaches stale FUSE mounts left by a dead daemon and mounts again every volume that has
    /// mount references. Call once at start-up, before serving requests.
    pub fn recover(&self) -> Result<(), VolumeError> {
        unimplemented!()
    }
    /// Idempotent for the same driver and options; a conflict otherwise.
    pub fn create(&self, req: CreateRequest) -> Result<VolumeInfo, VolumeError> {
        let _ = req;
        unimplemented!()
    }
    /// Refused while mounted unless `force`, which first drops every reference.
    pub fn remove(&self, name: &str, force: bool) -> Result<(), VolumeError> {
        let _ = (name, force);
        unimplemented!()
    }
    pub fn list(&self) -> Result<Vec<VolumeInfo>, VolumeError> {
        unimplemented!()
    }
    pub fn get(&self, name: &str) -> Result<VolumeInfo, VolumeError> {
        let _ = name;
        unimplemented!()
    }
    /// The mountpoint, whether or not the volume is mounted now.
    pub fn path(&self, name: &str) -> Result<PathBuf, VolumeError> {
        let _ = name;
        unimplemented!()
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
        let _ = (name, ref_id, target);
        unimplemented!()
    }
    /// Drops reference `ref_id` (unknown ids are harmless) and its bind mount; the FUSE mount
    /// ends with the last reference.
    pub fn unmount(&self, name: &str, ref_id: &str) -> Result<(), VolumeError> {
        let _ = (name, ref_id);
        unimplemented!()
    }
    /// Removes every volume with no mount reference.
    pub fn prune(&self) -> Result<PruneReport, VolumeError> {
        unimplemented!()
    }
    /// Unmounts everything and persists usage as clean; references are kept so the next start
    /// mounts the same volumes again.
    pub fn shutdown(&self) {}
}
