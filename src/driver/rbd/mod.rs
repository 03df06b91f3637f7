//! The `rbd` driver: a filesystem kept whole inside a Ceph RBD image, read and written through
//! librbd (loaded at run time). Any host that reaches the cluster can mount the volume, which is
//! how a stateful container moves: name the image with `image=` to adopt it on another host.
//!
//! One writer at a time: activation takes an advisory exclusive lock on the image with a cookie
//! naming this host and daemon; another holder is refused with its name. A lock left by a dead
//! holder is broken only by `fvol break-lock NAME`, which also fences the old holder, except
//! the lock of a provably dead predecessor on this same host and root, which activation breaks
//! by itself (`lock`).
mod lock;

use std::sync::Arc;

use lock::Identity;

use super::{Activation, Created, Driver, DriverContext};
use crate::fs::image::format::check_superblock;
use crate::fs::image::{BlockDevice, ImageFs, RbdDevice, fsck};
use crate::fs::memory::RootOwner;
use crate::fs::quota::Limits;
use crate::fs::resume::Carry;
use crate::sys::librbd::{Cluster, ClusterConfig, Image, IoCtx, RbdError};
use crate::volume::options::VolumeOptions;
use crate::volume::{Usage, VolumeError, VolumeRecord};

const DEFAULT_POOL: &str = "rbd";
/// The kernel's readahead for rbd volumes: one RBD object.
const READAHEAD_KB: u32 = 4096;

pub struct RbdDriver;

/// Where a volume's image is.
struct Target {
    io: IoCtx,
    image: String,
}

impl Target {
    fn describe(&self) -> String {
        format!("image {}/{}", self.io.pool(), self.image)
    }
}

fn err(e: RbdError) -> VolumeError {
    VolumeError::Driver(e.to_string())
}

fn connect(rec: &VolumeRecord, opts: &VolumeOptions) -> Result<Target, VolumeError> {
    let r = &opts.rbd;
    let config = ClusterConfig {
        conf: r.conf.clone(),
        id: r.id.clone(),
        keyring: r.keyring.clone(),
        cluster: r.cluster.clone(),
        ..ClusterConfig::default()
    };
    let cluster = Cluster::connect(config).map_err(err)?;
    let io = cluster
        .io_ctx(r.pool.as_deref().unwrap_or(DEFAULT_POOL))
        .map_err(err)?;
    let image = r.image.clone().unwrap_or_else(|| rec.name.clone());
    Ok(Target { io, image })
}

/// Who holds the image's lock, for messages.
fn holders(image: &Image) -> String {
    match image.lockers() {
        Ok(l) if !l.is_empty() => l
            .iter()
            .map(|l| format!("{} ({}, {})", l.cookie, l.client, l.address))
            .collect::<Vec<_>>()
            .join(", "),
        _ => "another client".into(),
    }
}

/// An RBD device held under this daemon's advisory lock, released when the filesystem on it
/// is dropped (after its last commit).
#[derive(Debug)]
struct LockedDevice {
    device: RbdDevice,
    cookie: String,
}

impl BlockDevice for LockedDevice {
    fn size(&self) -> u64 {
        self.device.size()
    }
    fn read_at(&self, offset: u64, out: &mut [u8]) -> std::io::Result<()> {
        self.device.read_at(offset, out)
    }
    fn write_at(&self, offset: u64, data: &[u8]) -> std::io::Result<()> {
        self.device.write_at(offset, data)
    }
    fn submit_write(&self, offset: u64, data: Vec<u8>) -> std::io::Result<()> {
        self.device.submit_write(offset, data)
    }
    fn buffer(&self, capacity: usize) -> Vec<u8> {
        self.device.buffer(capacity)
    }
    fn flush(&self) -> std::io::Result<()> {
        self.device.flush()
    }
    fn release_buffers(&self) {
        self.device.release_buffers()
    }
    fn wait_limit(&self) -> Option<std::time::Duration> {
        self.device.wait_limit()
    }
    fn read_data(&self, offset: u64, out: &mut [u8]) -> std::io::Result<()> {
        self.device.read_data(offset, out)
    }
    fn fenced(&self) -> bool {
        self.device.fenced()
    }
    fn health(&self) -> crate::fs::Health {
        self.device.health()
    }
}

impl Drop for LockedDevice {
    fn drop(&mut self) {
        // No write of ours may land after the lock is gone.
        self.device.wait_all();
        if let Err(e) = self.device.image().unlock(&self.cookie) {
            log::warn!(
                "releasing the lock on {}: {e}",
                self.device.image().describe()
            );
        }
    }
}

/// Opens the image under an exclusive lock naming this host and daemon; `wait_limit` is the
/// device's (`io_timeout=`).
fn lock(
    ctx: &DriverContext,
    target: &Target,
    rec: &VolumeRecord,
    wait_limit: Option<std::time::Duration>,
) -> Result<LockedDevice, VolumeError> {
    let image = target.io.open_image(&target.image).map_err(err)?;
    let me = Identity::here(ctx);
    let cookie = me.cookie(std::process::id());
    let mut locked = image.lock_exclusive(&cookie);
    if let Err(e) = &locked
        && e.errno() == Some(libc::EBUSY)
        && lock::break_stale_own_locks(&image, &me)
    {
        locked = image.lock_exclusive(&cookie);
    }
    if let Err(e) = locked {
        return Err(match e.errno() {
            Some(libc::EBUSY) | Some(libc::EEXIST) => VolumeError::Driver(format!(
                "{} is in use by {}; if that holder is dead, run: fvol break-lock {}",
                target.describe(),
                holders(&image),
                rec.name
            )),
            _ => err(e),
        });
    }
    let device = RbdDevice::new(image)
        .map_err(err)?
        .with_wait_limit(wait_limit);
    Ok(LockedDevice { device, cookie })
}

impl Driver for RbdDriver {
    fn name(&self) -> &'static str {
        "rbd"
    }

    fn option_keys(&self) -> &'static [&'static str] {
        &[
            "pool",
            "image",
            "size",
            "conf",
            "id",
            "keyring",
            "cluster",
            "inodes",
            "uid",
            "gid",
            "mode",
            "io_timeout",
        ]
    }

    fn remote(&self) -> bool {
        true
    }

    /// `size=` is the image's size; data may use its usable capacity.
    fn size_limit(&self, opts: &VolumeOptions) -> Option<u64> {
        opts.size
            .and_then(|size| crate::fs::image::fs::usable_capacity(size, opts.inodes))
    }

    fn validate(&self, _ctx: &DriverContext, _opts: &VolumeOptions) -> Result<(), VolumeError> {
        crate::sys::librbd::check_libraries().map_err(err)
    }

    /// An image that exists is adopted; only one fvol creates is owned.
    fn will_own_backing(
        &self,
        _ctx: &DriverContext,
        rec: &VolumeRecord,
        opts: &VolumeOptions,
    ) -> Result<bool, VolumeError> {
        let target = connect(rec, opts)?;
        Ok(!target.io.image_exists(&target.image).map_err(err)?)
    }

    fn create(
        &self,
        ctx: &DriverContext,
        rec: &VolumeRecord,
        opts: &VolumeOptions,
    ) -> Result<Created, VolumeError> {
        let target = connect(rec, opts)?;
        let usage = Usage {
            bytes: 0,
            inodes: 0,
            clean: false,
        };
        let exists = target.io.image_exists(&target.image).map_err(err)?;
        // The create intent recorded whether fvol makes the image (see `will_own_backing`):
        // an image that appeared or vanished since must not be deleted or adopted by mistake.
        if exists == rec.owns_backing {
            let what = if exists { "created" } else { "removed" };
            return Err(VolumeError::Driver(format!(
                "{} was {what} by someone else while this volume was being created; try again",
                target.describe()
            )));
        }
        if exists {
            // Adoption: the image must already be an fvol filesystem; it is never formatted.
            let device =
                RbdDevice::new(target.io.open_image(&target.image).map_err(err)?).map_err(err)?;
            check_superblock(&device).map_err(|e| {
                VolumeError::Driver(format!("cannot adopt {}: {e}", target.describe()))
            })?;
            if let Some(size) = opts.size.filter(|&s| s != device.size()) {
                return Err(VolumeError::InvalidOption(format!(
                    "size={size} differs from the size of the existing {} ({} bytes); leave size= out to adopt it",
                    target.describe(),
                    device.size()
                )));
            }
            return Ok(Created {
                backing_identity: None,
                owns_backing: false,
                usage,
            });
        }
        let size = opts.size.ok_or_else(|| {
            VolumeError::InvalidOption(format!(
                "size= is required to create the new {} (for example -o size=10G)",
                target.describe()
            ))
        })?;
        target.io.create_image(&target.image, size).map_err(err)?;
        let root = RootOwner {
            uid: opts.uid.unwrap_or(0),
            gid: opts.gid.unwrap_or(0),
            mode: opts.mode.unwrap_or(0o755),
        };
        let formatted = lock(ctx, &target, rec, None).and_then(|device| {
            let device: Arc<dyn BlockDevice> = Arc::new(device);
            ImageFs::format(device, root, opts.inodes)
                .map_err(|e| VolumeError::Driver(e.to_string()))
        });
        if let Err(e) = formatted {
            let _ = target.io.remove_image(&target.image);
            return Err(e);
        }
        Ok(Created {
            backing_identity: None,
            owns_backing: true,
            usage,
        })
    }

    fn remove(&self, _ctx: &DriverContext, rec: &VolumeRecord) -> Result<(), VolumeError> {
        if !rec.owns_backing {
            return Ok(());
        }
        let opts = crate::volume::options::parse_options("rbd", self.option_keys(), &rec.options)?;
        let target = connect(rec, &opts)?;
        match target.io.remove_image(&target.image) {
            Ok(()) => Ok(()),
            Err(e) if e.errno() == Some(libc::ENOENT) => Ok(()),
            // librbd refuses before deleting anything while the image has watchers.
            Err(e) if e.errno() == Some(libc::EBUSY) => Err(VolumeError::InUse {
                name: rec.name.clone(),
                holders: format!("another client of {} (open elsewhere)", target.describe()),
            }),
            Err(e) => Err(err(e)),
        }
    }

    fn survives_restart(&self) -> bool {
        true
    }

    fn activate(
        &self,
        ctx: &DriverContext,
        rec: &VolumeRecord,
        opts: &VolumeOptions,
        _stored: Usage,
        carry: &mut Carry,
    ) -> Result<Activation, VolumeError> {
        let target = connect(rec, opts)?;
        // A predecessor's lock (a restart, a crash) is a dead daemon's: broken, fencing it.
        let device: Arc<dyn BlockDevice> = Arc::new(lock(ctx, &target, rec, opts.rbd.io_timeout)?);
        let limits = Limits {
            bytes: None,
            inodes: opts.inodes,
        };
        let fs = ImageFs::open_carried(device, limits, carry)
            .map_err(|e| VolumeError::Driver(format!("{}: {e}", target.describe())))?;
        let usage = crate::fs::VolumeFs::usage(&fs);
        Ok(Activation {
            fs: Arc::new(fs),
            usage: Usage {
                bytes: usage.bytes,
                inodes: usage.inodes,
                clean: false,
            },
            passthrough: false,
            ephemeral: false,
            exclusive: true,
            // Every read the kernel sends is a round trip to the cluster: sequential reads
            // need a window of several requests in flight (measured: 128 KiB reads at a
            // quarter of the speed of 4 MiB; docs/performance.md).
            readahead_kb: Some(READAHEAD_KB),
            // Requests wait on the network, not the CPU: enough threads for the readahead
            // window's requests to be in flight together.
            threads: super::cpu_threads().max(4),
        })
    }

    fn fsck(
        &self,
        ctx: &DriverContext,
        rec: &VolumeRecord,
        opts: &VolumeOptions,
    ) -> Result<String, VolumeError> {
        let target = connect(rec, opts)?;
        let device: Arc<dyn BlockDevice> = Arc::new(lock(ctx, &target, rec, None)?);
        let report =
            fsck(device).map_err(|e| VolumeError::Driver(format!("{}: {e}", target.describe())))?;
        serde_json::to_string_pretty(&report).map_err(|e| VolumeError::Driver(e.to_string()))
    }

    fn break_lock(
        &self,
        _ctx: &DriverContext,
        rec: &VolumeRecord,
        opts: &VolumeOptions,
    ) -> Result<Vec<String>, VolumeError> {
        let target = connect(rec, opts)?;
        let image = target.io.open_image(&target.image).map_err(err)?;
        let mut broken = Vec::new();
        for l in image.lockers().map_err(err)? {
            image.break_lock(&l.client, &l.cookie).map_err(err)?;
            broken.push(format!("{} ({}, {})", l.cookie, l.client, l.address));
        }
        Ok(broken)
    }
}
