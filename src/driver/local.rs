//! The `local` driver: a host directory, `ROOT/volumes/NAME/data` or one given with
//! `-o mount=/abs/dir`. A directory fvol did not create is never deleted.
use std::fs;
use std::os::unix::fs::{PermissionsExt, chown};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{Activation, Created, Driver, DriverContext};
use crate::fs::UsageSnapshot;
use crate::fs::passthrough::{PassthroughFs, scan_dir};
use crate::fs::quota::Limits;
use crate::volume::options::VolumeOptions;
use crate::volume::{Usage, VolumeError, VolumeRecord};

/// The kernel's readahead for local volumes (the request size is 1 MiB).
const READAHEAD_KB: u32 = 4096;

pub struct LocalDriver;

impl LocalDriver {
    fn data_dir(ctx: &DriverContext, name: &str, opts: &VolumeOptions) -> PathBuf {
        match &opts.mount {
            Some(dir) => dir.clone(),
            None => ctx.volume_dir(name).join("data"),
        }
    }
}

fn io_err(what: &str, path: &Path) -> impl FnOnce(std::io::Error) -> VolumeError {
    let context = format!("{what} {}", path.display());
    move |e| VolumeError::io(context, e)
}

/// A `mount=` directory must exist, be a directory, and not overlap ROOT (either way round
/// would expose fvol's own state, or a volume inside itself).
fn check_mount_dir(ctx: &DriverContext, dir: &Path) -> Result<(), VolumeError> {
    let bad = |why: &str| VolumeError::InvalidOption(format!("mount={}: {why}", dir.display()));
    let meta = fs::metadata(dir).map_err(|e| bad(&format!("cannot use it: {e}")))?;
    if !meta.is_dir() {
        return Err(bad("not a directory"));
    }
    let dir = dir.canonicalize().map_err(|e| bad(&e.to_string()))?;
    let root = ctx.root.canonicalize().unwrap_or_else(|_| ctx.root.clone());
    if dir.starts_with(&root) {
        return Err(bad(&format!("inside the fvol root {}", root.display())));
    }
    if root.starts_with(&dir) {
        return Err(bad(&format!("contains the fvol root {}", root.display())));
    }
    Ok(())
}

fn apply_owner_and_mode(dir: &Path, opts: &VolumeOptions) -> Result<(), VolumeError> {
    if opts.uid.is_some() || opts.gid.is_some() {
        chown(dir, opts.uid, opts.gid).map_err(io_err("changing owner of", dir))?;
    }
    if let Some(mode) = opts.mode {
        fs::set_permissions(dir, fs::Permissions::from_mode(mode))
            .map_err(io_err("changing mode of", dir))?;
    }
    Ok(())
}

impl Driver for LocalDriver {
    fn name(&self) -> &'static str {
        "local"
    }

    fn option_keys(&self) -> &'static [&'static str] {
        &["size", "inodes", "uid", "gid", "mode", "mount"]
    }

    fn validate(&self, ctx: &DriverContext, opts: &VolumeOptions) -> Result<(), VolumeError> {
        match &opts.mount {
            Some(dir) => check_mount_dir(ctx, dir),
            None => Ok(()),
        }
    }

    fn will_own_backing(
        &self,
        _ctx: &DriverContext,
        _rec: &VolumeRecord,
        opts: &VolumeOptions,
    ) -> Result<bool, VolumeError> {
        Ok(opts.mount.is_none())
    }

    fn create(
        &self,
        ctx: &DriverContext,
        rec: &VolumeRecord,
        opts: &VolumeOptions,
    ) -> Result<Created, VolumeError> {
        let dir = Self::data_dir(ctx, &rec.name, opts);
        let owns_backing = opts.mount.is_none();
        if owns_backing {
            crate::volume::core::create_dir(&dir, 0o755)?;
        }
        let usage = apply_owner_and_mode(&dir, opts).and_then(|()| {
            scan_dir(&dir)
                .map_err(|e| VolumeError::Driver(format!("measuring {}: {e}", dir.display())))
        });
        // A failed create leaves nothing it made.
        if usage.is_err() && owns_backing {
            let _ = fs::remove_dir_all(&dir);
        }
        let usage = usage?;
        Ok(Created {
            owns_backing,
            usage: Usage {
                bytes: usage.bytes,
                inodes: usage.inodes,
                clean: true,
            },
        })
    }

    fn remove(&self, ctx: &DriverContext, rec: &VolumeRecord) -> Result<(), VolumeError> {
        if !rec.owns_backing {
            return Ok(());
        }
        let dir = ctx.volume_dir(&rec.name).join("data");
        match fs::remove_dir_all(&dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err("removing", &dir)(e)),
        }
    }

    fn activate(
        &self,
        ctx: &DriverContext,
        rec: &VolumeRecord,
        opts: &VolumeOptions,
        stored: Usage,
    ) -> Result<Activation, VolumeError> {
        let dir = Self::data_dir(ctx, &rec.name, opts);
        if opts.mount.is_some() {
            check_mount_dir(ctx, &dir)?;
        }
        // A directory fvol owns changes only through fvol, so a clean record is exact; a
        // `mount=` directory may have been changed behind fvol's back, so it is rescanned.
        let start = (stored.clean && rec.owns_backing).then_some(UsageSnapshot {
            bytes: stored.bytes,
            inodes: stored.inodes,
        });
        if start.is_none() {
            log::info!("rescanning usage of volume {}", rec.name);
        }
        let limits = Limits {
            bytes: opts.size,
            inodes: opts.inodes,
        };
        let fs = PassthroughFs::new(&dir, limits, start)
            .map_err(|e| VolumeError::Driver(format!("opening {}: {e}", dir.display())))?
            .with_passthrough(true)
            .with_exclusive(rec.owns_backing);
        let passthrough = fs.passthrough();
        let usage = fs.usage_now();
        Ok(Activation {
            fs: Arc::new(fs),
            usage: Usage {
                bytes: usage.bytes,
                inodes: usage.inodes,
                clean: false,
            },
            passthrough,
            ephemeral: false,
            exclusive: rec.owns_backing,
            // Sequential reads keep several 1 MiB requests in flight, as the host disk's own
            // readahead would (the FUSE default of 128 KiB sends one small read at a time).
            readahead_kb: Some(READAHEAD_KB),
            threads: super::cpu_threads(),
        })
    }
}
