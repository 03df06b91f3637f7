//! Snapshots and clones of rbd volumes with librbd: a snapshot is an RBD snapshot of the
//! volume's image (named as the fvol snapshot), a clone is a clone (format 2) of one, sharing
//! its data until either side writes. Taking one costs a durable commit and `rbd_snap_create`
//! while writes are held (`volume::snapshot`), whatever the volume holds; afterwards the
//! cluster keeps the old version of every object the volume changes (copy-on-write), so a
//! snapshot occupies cluster space as the volume diverges from it, never the volume's quota.
use std::sync::Arc;

use super::{RbdDriver, RbdOptions, Target, connect, err, image_err, lock};
use crate::driver::{Created, DriverContext, DriverError, NativeSnapshots};
use crate::fs::VolumeFs;
use crate::fs::image::overlay::OverlayDevice;
use crate::fs::image::{BlockDevice, ImageFs, RbdDevice};
use crate::fs::quota::Limits;
use crate::model::{ErrorClass, Usage, VolumeRecord};

pub(super) const NATIVE: NativeSnapshots = NativeSnapshots {
    method: "rbd snapshot",
};

impl RbdDriver {
    pub(super) fn take(
        &self,
        ctx: &DriverContext,
        rec: &VolumeRecord,
        opts: &RbdOptions,
        snap: &str,
        hold: Option<crate::driver::Hold<'_>>,
    ) -> Result<(), DriverError> {
        let target = connect(rec, opts)?;
        if let Some(hold) = hold {
            // Mounted here: this daemon holds the lock. The image is opened before the hold,
            // so writes wait only for the commit and the snapshot itself.
            let image = target.open()?;
            return hold(&mut || image.snap_create(snap).map_err(|e| snap_err(&target, e)));
        }
        // Not mounted here: the lock keeps every other writer out while the snapshot is taken;
        // the image holds the filesystem as its last holder committed it.
        let device = lock(ctx, &target, rec, None)?;
        device
            .device
            .image()
            .snap_create(snap)
            .map_err(|e| snap_err(&target, e))
    }

    pub(super) fn remove_snapshot(
        &self,
        rec: &VolumeRecord,
        opts: &RbdOptions,
        snap: &str,
    ) -> Result<(), DriverError> {
        let target = connect(rec, opts)?;
        let image = target.open()?;
        match image.snap_remove(snap) {
            Err(e) if e.errno() == Some(libc::ENOENT) => Ok(()),
            other => other.map_err(|e| snap_err(&target, e)),
        }
    }

    /// The image's snapshots, by name (fvol's temporary ones among them).
    pub(super) fn list_snapshots(
        &self,
        rec: &VolumeRecord,
        opts: &RbdOptions,
    ) -> Result<Vec<String>, DriverError> {
        let target = connect(rec, opts)?;
        let image = target.open()?;
        let snaps = image.snap_list().map_err(|e| snap_err(&target, e))?;
        Ok(snaps.into_iter().map(|s| s.name).collect())
    }

    pub(super) fn rollback(
        &self,
        ctx: &DriverContext,
        rec: &VolumeRecord,
        opts: &RbdOptions,
        snap: &str,
    ) -> Result<(), DriverError> {
        let target = connect(rec, opts)?;
        let device = lock(ctx, &target, rec, None)?;
        device
            .device
            .image()
            .snap_rollback(snap)
            .map_err(|e| snap_err(&target, e))
    }

    pub(super) fn open_at(
        &self,
        rec: &VolumeRecord,
        opts: &RbdOptions,
        snap: &str,
    ) -> Result<Arc<dyn VolumeFs>, DriverError> {
        let target = connect(rec, opts)?;
        let image = target
            .io
            .open_image_at(&target.image, snap)
            .map_err(|e| snap_err(&target, e))?;
        let base: Arc<dyn BlockDevice> = Arc::new(RbdDevice::new(image).map_err(err)?);
        let device: Arc<dyn BlockDevice> = Arc::new(OverlayDevice::new(base));
        let fs = ImageFs::open(device, Limits::default())
            .map_err(|e| image_err(format!("{}@{snap}", target.describe()), e))?;
        Ok(Arc::new(fs))
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn clone_from(
        &self,
        ctx: &DriverContext,
        rec: &VolumeRecord,
        opts: &RbdOptions,
        source: &VolumeRecord,
        source_opts: &RbdOptions,
        snap: &str,
    ) -> Result<Created, DriverError> {
        let parent = connect(source, source_opts)?;
        let child = connect(rec, opts)?;
        if !rec.owns_backing {
            return Err(DriverError::InvalidOption(format!(
                "{} exists; a clone is always a new image (leave image= out or name a new one)",
                child.describe()
            )));
        }
        let parent_size = parent
            .io
            .open_image_at(&parent.image, snap)
            .and_then(|i| i.size())
            .map_err(|e| snap_err(&parent, e))?;
        if let Some(size) = opts.size.filter(|&s| s < parent_size) {
            return Err(DriverError::InvalidOption(format!(
                "size={size} is smaller than the image of {} ({parent_size} bytes), which a \
                 clone starts with; leave size= out or give at least that",
                source.name
            )));
        }
        parent
            .io
            .clone_image(&parent.image, snap, &child.io, &child.image)
            .map_err(|e| snap_err(&parent, e))?;
        let grown = match opts.size.filter(|&s| s > parent_size) {
            Some(_) => {
                let to = crate::driver::Driver::resize_to(self, opts)?;
                crate::driver::Driver::resize_inactive(self, ctx, rec, opts, &to)
            }
            None => Ok(()),
        };
        if let Err(e) = grown {
            let _ = child.io.remove_image(&child.image);
            return Err(e);
        }
        Ok(Created {
            owns_backing: true,
            usage: Usage {
                bytes: 0,
                inodes: 0,
                clean: false,
            },
            backing_identity: None,
        })
    }
}

/// The clones made from the image's snapshots, which keep it from being removed.
pub(super) fn children(target: &Target) -> Result<Vec<String>, DriverError> {
    let image = target.open()?;
    image.children().map_err(err)
}

/// Removes every snapshot of the image (before the image itself goes).
pub(super) fn remove_all(target: &Target) -> Result<(), DriverError> {
    let image = target.open()?;
    for s in image.snap_list().map_err(err)? {
        match image.snap_remove(&s.name) {
            Err(e) if e.errno() != Some(libc::ENOENT) => return Err(snap_err(target, e)),
            _ => {}
        }
    }
    Ok(())
}

fn snap_err(target: &Target, e: crate::sys::librbd::RbdError) -> DriverError {
    let class = match e.errno() {
        Some(libc::ENOENT) => ErrorClass::NotFound,
        Some(libc::EEXIST) => ErrorClass::Conflict,
        _ => super::class_of(&e),
    };
    DriverError::failed(class, format!("{}: {e}", target.describe()))
}
