//! The `tmpfs` driver: a volume whose data lives only in the handler's memory.
//!
//! Lifetime: the data exists while the volume has at least one mount reference. At the last
//! unmount it is dropped and its memory returned, as Docker and Pouch do for tmpfs volumes;
//! the volume itself (name, options, labels) stays in the catalog and comes back empty. A
//! restart of the daemon (a stop, an upgrade or a crash) keeps it: the data lives in shared
//! memory the keeper holds (`fs::memory::shared`). Nothing is ever written to disk.
//!
//! Names, inodes, xattrs and long symlink targets count against the size as well as data (they
//! are the daemon's memory too), and the inode limit defaults to one per 4 KiB of the size.
use std::sync::Arc;

use super::{Activation, Created, Driver, DriverContext};
use crate::fs::memory::{MemFs, RootOwner, default_inode_limit};
use crate::fs::quota::Limits;
use crate::fs::resume::Carry;
use crate::volume::options::VolumeOptions;
use crate::volume::{Usage, VolumeError, VolumeRecord};

/// As in PouchContainer.
pub const DEFAULT_SIZE: u64 = 64 << 20;
/// As kernel tmpfs: world-writable with the sticky bit.
const DEFAULT_MODE: u32 = 0o1777;

pub struct TmpfsDriver;

impl Driver for TmpfsDriver {
    fn name(&self) -> &'static str {
        "tmpfs"
    }

    fn option_keys(&self) -> &'static [&'static str] {
        &["size", "inodes", "uid", "gid", "mode"]
    }

    fn default_size(&self) -> Option<u64> {
        Some(DEFAULT_SIZE)
    }

    /// Without `inodes=`: one inode per 4 KiB page of the size (see `memory::cost`).
    fn inode_limit(&self, opts: &VolumeOptions) -> Option<u64> {
        let size = opts.size.unwrap_or(DEFAULT_SIZE);
        Some(opts.inodes.unwrap_or(default_inode_limit(size)))
    }

    fn validate(&self, _ctx: &DriverContext, _opts: &VolumeOptions) -> Result<(), VolumeError> {
        Ok(())
    }

    fn will_own_backing(
        &self,
        _ctx: &DriverContext,
        _rec: &VolumeRecord,
        _opts: &VolumeOptions,
    ) -> Result<bool, VolumeError> {
        Ok(true)
    }

    fn create(
        &self,
        _ctx: &DriverContext,
        _rec: &VolumeRecord,
        _opts: &VolumeOptions,
    ) -> Result<Created, VolumeError> {
        Ok(Created {
            backing_identity: None,
            owns_backing: true,
            usage: Usage {
                bytes: 0,
                inodes: 0,
                clean: true,
            },
        })
    }

    fn remove(&self, _ctx: &DriverContext, _rec: &VolumeRecord) -> Result<(), VolumeError> {
        Ok(())
    }

    fn survives_restart(&self) -> bool {
        true
    }

    fn activate(
        &self,
        _ctx: &DriverContext,
        rec: &VolumeRecord,
        opts: &VolumeOptions,
        _stored: Usage,
        carry: &mut Carry,
    ) -> Result<Activation, VolumeError> {
        let limits = Limits {
            bytes: Some(opts.size.unwrap_or(DEFAULT_SIZE)),
            inodes: self.inode_limit(opts),
        };
        let root = RootOwner {
            uid: opts.uid.unwrap_or(0),
            gid: opts.gid.unwrap_or(0),
            mode: opts.mode.unwrap_or(DEFAULT_MODE),
        };
        let fs = MemFs::kept(limits, root, carry, &rec.name).map_err(|e| {
            VolumeError::Driver(format!(
                "keeping tmpfs volume {} in shared memory: {e}",
                rec.name
            ))
        })?;
        let usage = crate::fs::VolumeFs::usage(&fs);
        Ok(Activation {
            fs: Arc::new(fs),
            usage: Usage {
                bytes: usage.bytes,
                inodes: usage.inodes,
                clean: false,
            },
            passthrough: false,
            ephemeral: true,
            exclusive: true,
            readahead_kb: None,
            threads: super::cpu_threads(),
        })
    }
}
