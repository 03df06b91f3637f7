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

use super::options::{Kind, OptionSet, OptionSpec, option};
use super::{Activation, Created, DataHome, Driver, DriverContext, DriverError};
use crate::fs::memory::{MemFs, RootOwner, default_inode_limit};
use crate::fs::quota::Limits;
use crate::fs::resume::Carry;
use crate::model::{Usage, VolumeRecord};

/// As in PouchContainer.
pub const DEFAULT_SIZE: u64 = 64 << 20;
/// As kernel tmpfs: world-writable with the sticky bit.
const DEFAULT_MODE: u32 = 0o1777;

pub struct TmpfsDriver;

/// The `tmpfs` driver's options.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TmpfsOptions {
    pub size: Option<u64>,
    pub inodes: Option<u64>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub mode: Option<u32>,
}

impl OptionSet for TmpfsOptions {
    const SCHEMA: &'static [OptionSpec<Self>] = &[
        option(
            "size",
            Kind::Size,
            "64M",
            "byte quota, at least 4K: the memory the volume may hold; names, xattrs and long \
             symlink targets count too (docs/tmpfs.md)",
            |o, v| o.size = v.bytes(),
        ),
        option(
            "inodes",
            Kind::Count,
            "one per 4 KiB of size=",
            "inode quota: files, directories, symlinks and device nodes",
            |o, v| o.inodes = v.count(),
        ),
        option(
            "uid",
            Kind::Id,
            "0",
            "owner of the volume's root directory",
            |o, v| o.uid = v.id(),
        ),
        option(
            "gid",
            Kind::Id,
            "0",
            "group of the volume's root directory",
            |o, v| o.gid = v.id(),
        ),
        option(
            "mode",
            Kind::Mode,
            "1777",
            "permissions of the volume's root directory, in octal",
            |o, v| o.mode = v.mode(),
        ),
    ];
}

impl TmpfsDriver {
    fn size(opts: &TmpfsOptions) -> u64 {
        opts.size.unwrap_or(DEFAULT_SIZE)
    }
}

impl Driver for TmpfsDriver {
    type Options = TmpfsOptions;
    const NAME: &'static str = "tmpfs";
    const SUMMARY: &'static str = "memory held by the daemon, never written to disk. The data \
        lives while the volume is mounted: it is dropped at the last unmount (a few seconds \
        later after a Docker Unmount, see fvol daemon --tmpfs-linger) and at a daemon restart, \
        and the volume comes back empty.";

    fn size_limit(&self, opts: &TmpfsOptions) -> Option<u64> {
        Some(Self::size(opts))
    }

    /// Without `inodes=`: one inode per 4 KiB page of the size (see `memory::cost`).
    fn inode_limit(&self, opts: &TmpfsOptions) -> Option<u64> {
        Some(opts.inodes.unwrap_or(default_inode_limit(Self::size(opts))))
    }

    fn validate(&self, _ctx: &DriverContext, _opts: &TmpfsOptions) -> Result<(), DriverError> {
        Ok(())
    }

    /// The data exists only in memory, while the volume is mounted.
    fn data_home(&self, _: &DriverContext, _: &VolumeRecord, _: &TmpfsOptions) -> DataHome {
        DataHome::InCore { persistent: false }
    }

    fn will_own_backing(
        &self,
        _ctx: &DriverContext,
        _rec: &VolumeRecord,
        _opts: &TmpfsOptions,
    ) -> Result<bool, DriverError> {
        Ok(true)
    }

    fn create(
        &self,
        _ctx: &DriverContext,
        _rec: &VolumeRecord,
        _opts: &TmpfsOptions,
    ) -> Result<Created, DriverError> {
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

    fn remove(
        &self,
        _ctx: &DriverContext,
        _rec: &VolumeRecord,
        _opts: &TmpfsOptions,
    ) -> Result<(), DriverError> {
        Ok(())
    }

    fn survives_restart(&self) -> bool {
        true
    }

    fn activate(
        &self,
        _ctx: &DriverContext,
        rec: &VolumeRecord,
        opts: &TmpfsOptions,
        _stored: Usage,
        carry: &mut Carry,
    ) -> Result<Activation, DriverError> {
        let limits = Limits {
            bytes: Some(Self::size(opts)),
            inodes: self.inode_limit(opts),
        };
        let root = RootOwner {
            uid: opts.uid.unwrap_or(0),
            gid: opts.gid.unwrap_or(0),
            mode: opts.mode.unwrap_or(DEFAULT_MODE),
        };
        let fs = MemFs::kept(limits, root, carry, &rec.name).map_err(|e| {
            DriverError::internal(format!(
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_is_consistent() {
        super::super::options::assert_schema_consistent::<TmpfsOptions>();
    }
}
