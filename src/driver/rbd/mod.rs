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
mod snapshot;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use lock::Identity;

use super::options::{Kind, OptionSet, OptionSpec, option};
use super::{Activation, Created, DataHome, Driver, DriverContext, DriverError, NativeSnapshots};
use crate::fs::image::format::{FormatError, check_superblock};
use crate::fs::image::fs::ImageError;
use crate::fs::image::{BlockDevice, ImageFs, RbdDevice, fsck};
use crate::fs::memory::RootOwner;
use crate::fs::quota::{Limits, Resize, ResizeError};
use crate::fs::resume::Carry;
use crate::model::{ErrorClass, Usage, VolumeRecord};
use crate::sys::librbd::{Cluster, ClusterConfig, Image, IoCtx, RbdError};

const DEFAULT_POOL: &str = "rbd";
/// The kernel's readahead for rbd volumes: one RBD object.
const READAHEAD_KB: u32 = 4096;

pub struct RbdDriver;

/// The `rbd` driver's options. Secrets are never options: `keyring` is a path.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RbdOptions {
    pub pool: Option<String>,
    pub image: Option<String>,
    /// The image's size.
    pub size: Option<u64>,
    pub conf: Option<PathBuf>,
    /// The cephx user (`fvol` or `client.fvol`).
    pub id: Option<String>,
    pub keyring: Option<PathBuf>,
    pub cluster: Option<String>,
    pub inodes: Option<u64>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub mode: Option<u32>,
    /// How long an operation waits for a cluster that does not answer before it fails with
    /// ETIMEDOUT; `None`: as long as the cluster is away.
    pub io_timeout: Option<Duration>,
}

impl OptionSet for RbdOptions {
    const SCHEMA: &'static [OptionSpec<Self>] = &[
        option(
            "pool",
            Kind::CephName,
            "rbd",
            "the pool of the volume's image",
            |o, v| o.pool = v.name(),
        ),
        option(
            "image",
            Kind::CephName,
            "the volume's name",
            "the image; an existing fvol image is adopted (and rm then keeps it)",
            |o: &mut Self, v| o.image = v.name(),
        )
        .per_volume(),
        option(
            "size",
            Kind::Size,
            "none: required for a new image",
            "size of a new image, at least 4K; must match an adopted image's size if given. \
             `df` shows the image minus its metadata region (about 97 % of it)",
            |o, v| o.size = v.bytes(),
        ),
        option(
            "conf",
            Kind::Path,
            "$CEPH_CONF, else /etc/ceph/CLUSTER.conf",
            "the ceph.conf that says how to reach the cluster",
            |o, v| o.conf = v.path(),
        ),
        option(
            "id",
            Kind::CephName,
            "admin",
            "the cephx user (fvol or client.fvol)",
            |o, v| o.id = v.name(),
        ),
        option(
            "keyring",
            Kind::Path,
            "the conf's keyring",
            "the user's keyring file (never the key itself)",
            |o, v| o.keyring = v.path(),
        ),
        option(
            "cluster",
            Kind::CephName,
            "ceph",
            "the cluster name, the CLUSTER in the default paths",
            |o, v| o.cluster = v.name(),
        ),
        option(
            "inodes",
            Kind::Count,
            "what the metadata region holds",
            "inode quota; also sizes a new image's metadata region",
            |o, v| o.inodes = v.count(),
        ),
        option(
            "uid",
            Kind::Id,
            "0",
            "owner of the volume's root directory, set when the image is formatted",
            |o, v| o.uid = v.id(),
        ),
        option(
            "gid",
            Kind::Id,
            "0",
            "group of the volume's root directory, set when the image is formatted",
            |o, v| o.gid = v.id(),
        ),
        option(
            "mode",
            Kind::Mode,
            "755",
            "permissions of the volume's root directory, in octal, set when the image is \
             formatted",
            |o, v| o.mode = v.mode(),
        ),
        option(
            "io_timeout",
            Kind::Duration,
            "none: wait for as long as the cluster is away",
            "operations that wait longer than this for a cluster that does not answer fail \
             with ETIMEDOUT; the volume goes on by itself once the cluster is back \
             (docs/rbd.md, Outages)",
            |o, v| o.io_timeout = v.duration(),
        ),
    ];
}

/// Where a volume's image is.
struct Target {
    io: IoCtx,
    image: String,
}

impl Target {
    fn describe(&self) -> String {
        format!("image {}/{}", self.io.pool(), self.image)
    }

    /// The image's head, opened.
    fn open(&self) -> Result<Image, DriverError> {
        self.io.open_image(&self.image).map_err(err)
    }
}

/// What kind of failure a librados/librbd error is (see `ErrorClass`).
fn class_of(e: &RbdError) -> ErrorClass {
    let RbdError::Call { op, errno, .. } = e else {
        // The client libraries are not installed: nothing works until they are.
        return ErrorClass::Unavailable;
    };
    match *errno {
        // No monitor or OSD answered in time, or the connection went away.
        libc::ETIMEDOUT
        | libc::ECONNREFUSED
        | libc::ECONNRESET
        | libc::ECONNABORTED
        | libc::EHOSTUNREACH
        | libc::ENETUNREACH
        | libc::ENETDOWN
        | libc::ENOTCONN
        | libc::ESHUTDOWN
        | libc::ENOSPC
        | libc::EDQUOT => ErrorClass::Unavailable,
        // A conf file that is missing or wrong, credentials the cluster refuses.
        libc::ENOENT if op.starts_with("rados_conf") => ErrorClass::BadInput,
        libc::EINVAL | libc::EACCES | libc::EPERM => ErrorClass::BadInput,
        // A pool or image that does not exist.
        libc::ENOENT => ErrorClass::NotFound,
        libc::EEXIST | libc::EBUSY => ErrorClass::Conflict,
        _ => ErrorClass::Internal,
    }
}

fn err(e: RbdError) -> DriverError {
    DriverError::failed(class_of(&e), e.to_string())
}

/// An error of the filesystem on the image: an I/O error of the device (a cluster that stopped
/// answering is unavailable), an image that is not one fvol can use, or damage.
fn image_err(what: impl std::fmt::Display, e: ImageError) -> DriverError {
    let class = match &e {
        // `io_timeout=` gives up with TimedOut (no errno); a blocklisted client gets ESHUTDOWN.
        ImageError::Format(FormatError::Io(io)) => match io.raw_os_error() {
            Some(libc::ETIMEDOUT | libc::ESHUTDOWN | libc::ENOTCONN) => ErrorClass::Unavailable,
            _ if io.kind() == std::io::ErrorKind::TimedOut => ErrorClass::Unavailable,
            _ => ErrorClass::Internal,
        },
        ImageError::Format(
            FormatError::NotFormatted
            | FormatError::Foreign
            | FormatError::TooNew(_)
            | FormatError::TooOld(_),
        ) => ErrorClass::Conflict,
        ImageError::Format(FormatError::TooSmall(_)) => ErrorClass::BadInput,
        ImageError::Format(FormatError::Corrupt(_)) | ImageError::Metadata(_) => {
            ErrorClass::Internal
        }
    };
    DriverError::failed(class, format!("{what}: {e}"))
}

fn connect(rec: &VolumeRecord, r: &RbdOptions) -> Result<Target, DriverError> {
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
    pub(super) device: RbdDevice,
    cookie: String,
}

impl BlockDevice for LockedDevice {
    fn size(&self) -> u64 {
        self.device.size()
    }
    fn grow(&self, size: u64) -> std::io::Result<()> {
        self.device.grow(size)
    }
    fn read_at(&self, offset: u64, out: &mut [u8]) -> std::io::Result<()> {
        self.device.read_at(offset, out)
    }
    fn write_at(&self, offset: u64, data: &[u8]) -> std::io::Result<()> {
        self.device.write_at(offset, data)
    }
    fn submit_write(&self, offset: u64, data: &[u8]) -> std::io::Result<()> {
        self.device.submit_write(offset, data)
    }
    fn flush(&self) -> std::io::Result<()> {
        self.device.flush()
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
    wait_limit: Option<Duration>,
) -> Result<LockedDevice, DriverError> {
    let image = target.open()?;
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
            Some(libc::EBUSY) | Some(libc::EEXIST) => DriverError::conflict(format!(
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
    type Options = RbdOptions;
    const NAME: &'static str = "rbd";
    const SUMMARY: &'static str = "a filesystem kept whole inside a Ceph RBD image, read and \
        written through librbd, so the volume can move to another host (docs/rbd.md).";

    fn remote(&self) -> bool {
        true
    }

    fn io_wait_limit(&self, opts: &RbdOptions) -> Option<Duration> {
        opts.io_timeout
    }

    /// `size=` is the image's size; data may use its usable capacity.
    fn size_limit(&self, opts: &RbdOptions) -> Option<u64> {
        opts.size
            .and_then(|size| crate::fs::image::fs::usable_capacity(size, opts.inodes))
    }

    fn inode_limit(&self, opts: &RbdOptions) -> Option<u64> {
        opts.inodes
    }

    fn validate(&self, _ctx: &DriverContext, _opts: &RbdOptions) -> Result<(), DriverError> {
        crate::sys::librbd::check_libraries().map_err(err)
    }

    /// An image that exists is adopted; only one fvol creates is owned.
    /// The files are inside the image's filesystem, which outlives the mount.
    fn data_home(&self, _: &DriverContext, _: &VolumeRecord, _: &RbdOptions) -> DataHome {
        DataHome::InCore { persistent: true }
    }

    fn will_own_backing(
        &self,
        _ctx: &DriverContext,
        rec: &VolumeRecord,
        opts: &RbdOptions,
    ) -> Result<bool, DriverError> {
        let target = connect(rec, opts)?;
        Ok(!target.io.image_exists(&target.image).map_err(err)?)
    }

    fn create(
        &self,
        ctx: &DriverContext,
        rec: &VolumeRecord,
        opts: &RbdOptions,
    ) -> Result<Created, DriverError> {
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
            return Err(DriverError::conflict(format!(
                "{} was {what} by someone else while this volume was being created; try again",
                target.describe()
            )));
        }
        if exists {
            // Adoption: the image must already be an fvol filesystem; it is never formatted.
            let device = RbdDevice::new(target.open()?).map_err(err)?;
            check_superblock(&device)
                .map_err(|e| image_err(format!("cannot adopt {}", target.describe()), e.into()))?;
            if let Some(size) = opts.size.filter(|&s| s != device.size()) {
                return Err(DriverError::InvalidOption(format!(
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
            DriverError::InvalidOption(format!(
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
                .map_err(|e| image_err(format!("formatting {}", target.describe()), e))
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

    fn remove(
        &self,
        _ctx: &DriverContext,
        rec: &VolumeRecord,
        opts: &RbdOptions,
    ) -> Result<(), DriverError> {
        if !rec.owns_backing {
            return Ok(());
        }
        let target = connect(rec, opts)?;
        // librbd keeps an image whose snapshots have clones; fvol keeps the volume then.
        match snapshot::children(&target) {
            Ok(c) if !c.is_empty() => {
                return Err(DriverError::InUse(format!(
                    "volume {} has clones that share its data: {} (rbd clone v2 children); \
                     remove those volumes first (fvol rm CLONE)",
                    rec.name,
                    c.join(", ")
                )));
            }
            Err(e) if e.class() == ErrorClass::NotFound => return Ok(()),
            _ => {}
        }
        let image = target.open()?;
        // Our own handle watches too; any other watcher has the image open.
        if image.watcher_ids().map_err(err)?.len() > 1 {
            return Err(DriverError::InUse(format!(
                "volume {} is in use by another client of {} (open elsewhere); unmount it first",
                rec.name,
                target.describe()
            )));
        }
        drop(image);
        // `fvol rm -f` removes the volume's snapshots with it (the catalog asked first).
        snapshot::remove_all(&target)?;
        match target.io.remove_image(&target.image) {
            Ok(()) => Ok(()),
            Err(e) if e.errno() == Some(libc::ENOENT) => Ok(()),
            // librbd refuses before deleting anything while the image has watchers.
            Err(e) if e.errno() == Some(libc::EBUSY) => Err(DriverError::InUse(format!(
                "volume {} is in use by another client of {} (open elsewhere); unmount it first",
                rec.name,
                target.describe()
            ))),
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
        opts: &RbdOptions,
        _stored: Usage,
        carry: &mut Carry,
    ) -> Result<Activation, DriverError> {
        let target = connect(rec, opts)?;
        // A predecessor's lock (a restart, a crash) is a dead daemon's: broken, fencing it.
        let device: Arc<dyn BlockDevice> = Arc::new(lock(ctx, &target, rec, opts.io_timeout)?);
        // The data region caps the byte limit; a `size=` lowered by `fvol update` (the image
        // never shrinks) lowers it further.
        let limits = Limits {
            bytes: self.size_limit(opts),
            inodes: opts.inodes,
        };
        let fs = ImageFs::open_carried(device, limits, carry)
            .map_err(|e| image_err(target.describe(), e))?;
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

    /// `size=` is the image's size: a bigger one grows the image (and the filesystem in it);
    /// a smaller one lowers the quota to what an image of that size would hold, and the image
    /// keeps its size (shrinking it would move data; see docs/rbd.md, Resize).
    fn resize_to(&self, opts: &RbdOptions) -> Result<Resize, DriverError> {
        if let Some(size) = opts.size
            && self.size_limit(opts).is_none()
        {
            return Err(DriverError::InvalidOption(format!(
                "size={size} is too small for an rbd volume: an image holds an fvol filesystem \
                 from {}M",
                crate::fs::image::format::MIN_IMAGE >> 20
            )));
        }
        Ok(Resize {
            limits: Limits {
                bytes: self.size_limit(opts),
                inodes: opts.inodes,
            },
            image_size: opts.size,
        })
    }

    /// Grows the image and its filesystem when `size=` is above the image's size.
    fn resize_inactive(
        &self,
        ctx: &DriverContext,
        rec: &VolumeRecord,
        opts: &RbdOptions,
        to: &Resize,
    ) -> Result<(), DriverError> {
        let target = connect(rec, opts)?;
        let device = lock(ctx, &target, rec, None)?;
        if to.image_size.is_none_or(|size| size <= device.size()) {
            return Ok(());
        }
        let device: Arc<dyn BlockDevice> = Arc::new(device);
        let fs = ImageFs::open(
            device,
            Limits {
                bytes: None,
                inodes: opts.inodes,
            },
        )
        .map_err(|e| image_err(target.describe(), e))?;
        use crate::fs::VolumeFs;
        let grown = fs.resize(to);
        let synced = fs.sync_all();
        match grown {
            Ok(()) => {}
            Err(ResizeError::Fs(e)) => {
                return Err(DriverError::failed(
                    ErrorClass::Internal,
                    format!("growing {}: {e}", target.describe()),
                ));
            }
            Err(ResizeError::BelowUsage(used)) => {
                return Err(DriverError::failed(
                    ErrorClass::Conflict,
                    format!(
                        "{} holds {} bytes in {} inodes, more than the new limits allow",
                        target.describe(),
                        used.bytes,
                        used.inodes
                    ),
                ));
            }
            Err(ResizeError::PassthroughServed | ResizeError::BeyondCapacity(_)) => {
                unreachable!("an image is never passthrough, and grows without a capacity")
            }
        }
        synced.map_err(|e| {
            DriverError::failed(
                ErrorClass::Internal,
                format!("syncing {}: {e}", target.describe()),
            )
        })
    }

    fn native_snapshots(&self) -> Option<NativeSnapshots> {
        Some(snapshot::NATIVE)
    }

    fn snapshot_take(
        &self,
        ctx: &DriverContext,
        rec: &VolumeRecord,
        opts: &RbdOptions,
        snap: &str,
        hold: Option<super::Hold<'_>>,
    ) -> Result<(), DriverError> {
        self.take(ctx, rec, opts, snap, hold)
    }

    fn snapshot_remove(
        &self,
        _ctx: &DriverContext,
        rec: &VolumeRecord,
        opts: &RbdOptions,
        snap: &str,
    ) -> Result<(), DriverError> {
        self.remove_snapshot(rec, opts, snap)
    }

    fn snapshot_names(
        &self,
        _ctx: &DriverContext,
        rec: &VolumeRecord,
        opts: &RbdOptions,
    ) -> Result<Vec<String>, DriverError> {
        self.list_snapshots(rec, opts)
    }

    fn snapshot_restore(
        &self,
        ctx: &DriverContext,
        rec: &VolumeRecord,
        opts: &RbdOptions,
        snap: &str,
    ) -> Result<(), DriverError> {
        self.rollback(ctx, rec, opts, snap)
    }

    fn snapshot_open(
        &self,
        _ctx: &DriverContext,
        rec: &VolumeRecord,
        opts: &RbdOptions,
        snap: &str,
    ) -> Result<Arc<dyn crate::fs::VolumeFs>, DriverError> {
        self.open_at(rec, opts, snap)
    }

    fn clone_create(
        &self,
        ctx: &DriverContext,
        rec: &VolumeRecord,
        opts: &RbdOptions,
        source: &VolumeRecord,
        source_opts: &RbdOptions,
        snap: &str,
    ) -> Result<Created, DriverError> {
        self.clone_from(ctx, rec, opts, source, source_opts, snap)
    }

    fn fsck(
        &self,
        ctx: &DriverContext,
        rec: &VolumeRecord,
        opts: &RbdOptions,
    ) -> Result<String, DriverError> {
        let target = connect(rec, opts)?;
        let device: Arc<dyn BlockDevice> = Arc::new(lock(ctx, &target, rec, None)?);
        let report = fsck(device).map_err(|e| image_err(target.describe(), e))?;
        serde_json::to_string_pretty(&report).map_err(|e| DriverError::internal(e.to_string()))
    }

    fn break_lock(
        &self,
        _ctx: &DriverContext,
        rec: &VolumeRecord,
        opts: &RbdOptions,
    ) -> Result<Vec<String>, DriverError> {
        let target = connect(rec, opts)?;
        let image = target.open()?;
        let mut broken = Vec::new();
        for l in image.lockers().map_err(err)? {
            image.break_lock(&l.client, &l.cookie).map_err(err)?;
            broken.push(format!("{} ({}, {})", l.cookie, l.client, l.address));
        }
        Ok(broken)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_is_consistent() {
        super::super::options::assert_schema_consistent::<RbdOptions>();
    }

    #[test]
    fn an_unreachable_cluster_is_unavailable_not_bad_input() {
        let call = |op, errno| RbdError::Call {
            op,
            target: "cluster ceph".into(),
            errno,
        };
        let cases = [
            (
                call("rados_connect", libc::ETIMEDOUT),
                ErrorClass::Unavailable,
            ),
            (
                call("rados_connect", libc::ECONNREFUSED),
                ErrorClass::Unavailable,
            ),
            (
                call("rbd_create4", libc::ETIMEDOUT),
                ErrorClass::Unavailable,
            ),
            (
                call("rados_conf_read_file", libc::ENOENT),
                ErrorClass::BadInput,
            ),
            (call("rados_connect", libc::EACCES), ErrorClass::BadInput),
            (
                call("rados_ioctx_create", libc::ENOENT),
                ErrorClass::NotFound,
            ),
            (call("rbd_open", libc::ENOENT), ErrorClass::NotFound),
            (call("rbd_create4", libc::EEXIST), ErrorClass::Conflict),
            (call("rbd_read", libc::EIO), ErrorClass::Internal),
        ];
        for (e, class) in cases {
            assert_eq!(err(e.clone()).class(), class, "{e}");
        }
        let missing = RbdError::LibraryMissing {
            library: "librbd.so.1",
            package: "librbd1",
            reason: "not found".into(),
        };
        assert_eq!(err(missing).class(), ErrorClass::Unavailable);
    }
}
