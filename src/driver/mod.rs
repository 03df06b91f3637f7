//! Backends. A `Driver` validates its options, prepares and removes the backing store, and
//! opens the filesystem that a FUSE session serves.
pub mod local;
pub mod rbd;
pub mod tmpfs;

use std::path::PathBuf;
use std::sync::Arc;

use crate::fs::VolumeFs;
use crate::fs::resume::Carry;
use crate::volume::options::VolumeOptions;
use crate::volume::{DirIdentity, Usage, VolumeError, VolumeRecord};

/// Where a driver may keep its files: `root/volumes/NAME/`.
#[derive(Clone, Debug)]
pub struct DriverContext {
    pub root: PathBuf,
}

impl DriverContext {
    pub fn volume_dir(&self, name: &str) -> PathBuf {
        self.root.join("volumes").join(name)
    }
}

/// What `Driver::create` made.
pub struct Created {
    /// True when fvol created the backing store (and so may delete it).
    pub owns_backing: bool,
    /// Usage of data already there (an adopted directory or image).
    pub usage: Usage,
    /// The identity of an adopted directory, checked at every activation.
    pub backing_identity: Option<DirIdentity>,
}

/// What a driver hands the core when a volume is activated.
pub struct Activation {
    pub fs: Arc<dyn VolumeFs>,
    /// The usage the filesystem started from (rescanned or taken from the catalog).
    pub usage: Usage,
    /// The filesystem hands out host files the kernel may read directly (FUSE passthrough).
    pub passthrough: bool,
    /// The data lives only while the volume is active (tmpfs).
    pub ephemeral: bool,
    /// Nothing but the handler changes the data (false for a `mount=` directory).
    pub exclusive: bool,
    /// The kernel's readahead window for the mount, when its default (128 KiB) is too small.
    pub readahead_kb: Option<u32>,
    /// Request threads serving the mount (see `cpu_threads`).
    pub threads: usize,
}

/// Request threads for a handler whose requests compute or wait on a local disk: one per CPU,
/// at least 2 (so one slow request does not stall the mount) and at most 8. More threads than
/// CPUs only add wake-ups: on 2 CPUs, 4 threads spent about twice the daemon CPU per metadata
/// request of 1, and were no faster than 2 (docs/performance.md).
pub fn cpu_threads() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get().clamp(2, 8))
}

pub trait Driver: Send + Sync {
    fn name(&self) -> &'static str;
    /// The option keys this driver accepts, for validation and error messages.
    fn option_keys(&self) -> &'static [&'static str];
    /// The byte limit when `size=` is not given.
    fn default_size(&self) -> Option<u64> {
        None
    }
    /// The byte limit the volume enforces, as `inspect` and the plugin show it.
    fn size_limit(&self, opts: &VolumeOptions) -> Option<u64> {
        opts.size.or(self.default_size())
    }
    /// The inode limit the volume enforces, as `inspect` shows it.
    fn inode_limit(&self, opts: &VolumeOptions) -> Option<u64> {
        opts.inodes
    }
    /// Whether the backing store is a remote service that may not answer for a long time (a
    /// Ceph cluster): start-up then mounts such volumes, and settles their unfinished creates
    /// and removals, in the background, so that they hold back nothing else.
    fn remote(&self) -> bool {
        false
    }
    /// Checks options beyond their syntax (paths, ranges). Changes nothing.
    fn validate(&self, ctx: &DriverContext, opts: &VolumeOptions) -> Result<(), VolumeError>;
    /// Whether `create` will make a new backing store, which fvol then owns and deletes on
    /// `rm`, rather than adopt one that exists. Asked before `create` and committed with the
    /// create intent, so that a create interrupted after that point can be rolled back.
    fn will_own_backing(
        &self,
        ctx: &DriverContext,
        rec: &VolumeRecord,
        opts: &VolumeOptions,
    ) -> Result<bool, VolumeError>;
    /// Prepares the backing store and measures what it already holds. Makes a new store
    /// exactly when `rec.owns_backing` (see `will_own_backing`), or fails. On error it leaves
    /// nothing behind that it made.
    fn create(
        &self,
        ctx: &DriverContext,
        rec: &VolumeRecord,
        opts: &VolumeOptions,
    ) -> Result<Created, VolumeError>;
    /// Deletes what `create` made; never touches a store fvol did not create. A store already
    /// gone is not an error (a removal may be finished twice). Fails with
    /// `VolumeError::InUse`, having deleted nothing, when the store is in use elsewhere.
    fn remove(&self, ctx: &DriverContext, rec: &VolumeRecord) -> Result<(), VolumeError>;
    /// Checks an inactive volume's backing store and reports what it found (JSON).
    fn fsck(
        &self,
        _ctx: &DriverContext,
        _rec: &VolumeRecord,
        _opts: &VolumeOptions,
    ) -> Result<String, VolumeError> {
        Err(VolumeError::Driver(format!(
            "fsck checks rbd volumes; driver {} has nothing to check",
            self.name()
        )))
    }
    /// Breaks locks others hold on the backing store; returns the holders it removed.
    fn break_lock(
        &self,
        _ctx: &DriverContext,
        _rec: &VolumeRecord,
        _opts: &VolumeOptions,
    ) -> Result<Vec<String>, VolumeError> {
        Err(VolumeError::Driver(format!(
            "driver {} takes no locks",
            self.name()
        )))
    }
    /// Whether the driver's filesystem keeps what a successor needs in the `Carry` it gets
    /// at activation, so its volumes outlive a restart of the daemon (see `fs::resume`).
    fn survives_restart(&self) -> bool {
        false
    }
    /// Opens the filesystem for serving. `stored` is the last persisted usage. A driver that
    /// `survives_restart` keeps its state in `carry` (and, when `carry.resumed`, takes over a
    /// predecessor's from it); others leave it alone.
    fn activate(
        &self,
        ctx: &DriverContext,
        rec: &VolumeRecord,
        opts: &VolumeOptions,
        stored: Usage,
        carry: &mut Carry,
    ) -> Result<Activation, VolumeError>;
}

/// All drivers this build knows, by name.
pub fn registry() -> Vec<Arc<dyn Driver>> {
    vec![
        Arc::new(local::LocalDriver),
        Arc::new(tmpfs::TmpfsDriver),
        Arc::new(rbd::RbdDriver),
    ]
}
