//! The `local` driver: a host directory, `ROOT/volumes/NAME/data` or one given with
//! `-o mount=/abs/dir`. A directory fvol did not create is never deleted.
use std::fs;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use nix::sys::stat::Mode;
use nix::unistd::{Gid, Uid};

use super::options::{Kind, OptionSet, OptionSpec, option};
use super::{Activation, Created, DataHome, Driver, DriverContext, DriverError};
use crate::fs::UsageSnapshot;
use crate::fs::passthrough::{PassthroughFs, scan_dir};
use crate::fs::quota::Limits;
use crate::fs::resume::Carry;
use crate::model::{DirIdentity, Usage, VolumeRecord};
use crate::sys::pin;

/// The kernel's readahead for local volumes (the request size is 1 MiB).
const READAHEAD_KB: u32 = 4096;

pub struct LocalDriver;

/// The `local` driver's options.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LocalOptions {
    /// Byte quota.
    pub size: Option<u64>,
    /// Inode quota.
    pub inodes: Option<u64>,
    /// Owner and mode of the volume's root directory.
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub mode: Option<u32>,
    /// An existing host directory to serve instead of ROOT/volumes/NAME/data.
    pub mount: Option<PathBuf>,
}

impl OptionSet for LocalOptions {
    const SCHEMA: &'static [OptionSpec<Self>] = &[
        option(
            "size",
            Kind::Size,
            "no limit",
            "byte quota: 512M, 10G, 1.5g (binary units K, M, G, T, P; case-insensitive), at \
             least 4K; `df` shows it as the size",
            |o, v| o.size = v.bytes(),
        ),
        option(
            "inodes",
            Kind::Count,
            "no limit",
            "inode quota: files, directories, symlinks and device nodes (hard links are free)",
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
            "755 (a mount= directory keeps its own)",
            "permissions of the volume's root directory, in octal: 755, 1777",
            |o, v| o.mode = v.mode(),
        ),
        option(
            "mount",
            Kind::Path,
            "a new directory",
            "serve this existing host directory instead of a new one; data already there is \
             counted at create, and rm never deletes it. Refused: a path through a symlink, \
             system and shared directories, another fvol root, pseudo filesystems; uid=, gid= \
             and mode= never change a directory that is not empty (see docs/cli.md, mount=)",
            |o: &mut Self, v| o.mount = v.path(),
        )
        .per_volume(),
    ];
}

impl LocalDriver {
    fn data_dir(ctx: &DriverContext, name: &str, opts: &LocalOptions) -> PathBuf {
        match &opts.mount {
            Some(dir) => dir.clone(),
            None => ctx.volume_dir(name).join("data"),
        }
    }
}

fn io_err(what: &str, path: &Path) -> impl FnOnce(std::io::Error) -> DriverError {
    let context = format!("{what} {}", path.display());
    move |e| DriverError::io(context, e)
}

/// Trees a `mount=` directory may not be, or be inside: the host's own system, the kernel's
/// pseudo filesystems, and container engines' state. Serving one would let a container (or
/// the owner change of `uid=`/`mode=`) reach the host.
const SYSTEM_TREES: &[&str] = &[
    "/bin",
    "/boot",
    "/dev",
    "/etc",
    "/lib",
    "/lib32",
    "/lib64",
    "/libx32",
    "/proc",
    "/root",
    "/run",
    "/sbin",
    "/sys",
    "/usr",
    "/var/lib/docker",
    "/var/lib/containerd",
    "/var/lib/fvol",
    "/var/run",
];
/// Directories a `mount=` may be below but not be: they hold other users' trees.
const SHARED_DIRS: &[&str] = &[
    "/", "/home", "/mnt", "/media", "/opt", "/srv", "/tmp", "/var", "/var/lib", "/var/tmp",
];

/// Filesystems that are views of the kernel, not storage (statfs magic numbers).
const PSEUDO_FILESYSTEMS: &[(i64, &str)] = &[
    (0x9fa0, "proc"),
    (0x6265_6572, "sysfs"),
    (0x1cd1, "devpts"),
    (0x0027_e0eb, "cgroup"),
    (0x6367_7270, "cgroup2"),
    (0x7363_6673, "securityfs"),
    (0x6462_6720, "debugfs"),
    (0x7472_6163, "tracefs"),
    (0xcafe_4a11, "bpf"),
    (0x6573_5546, "fuse"),
    (0x6265_6570, "configfs"),
    (0xde5e_81e4, "efivarfs"),
    (0x6165_676c, "pstore"),
];

/// Opens a `mount=` directory once, refusing symlinks anywhere on its path, and checks it:
/// an existing directory, not a system tree, not on a pseudo filesystem, not overlapping the
/// fvol root or any other fvol root. Every later use goes through the returned descriptor.
fn open_mount_dir(ctx: &DriverContext, dir: &Path) -> Result<OwnedFd, DriverError> {
    let bad = |why: &str| DriverError::InvalidOption(format!("mount={}: {why}", dir.display()));
    let fd = pin::open_dir_for_reading_nofollow(dir).map_err(|e| match e.raw_os_error() {
        Some(libc::ELOOP) => bad(&pin::symlink_refusal(dir)),
        Some(libc::ENOTDIR) => bad("not a directory"),
        _ => bad(&format!("cannot use it: {e}")),
    })?;
    // The path the kernel reached, free of `..` and symlinks: what the rules below judge.
    let real = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()))
        .map_err(|e| bad(&format!("cannot resolve it: {e}")))?;
    if let Some(tree) = SYSTEM_TREES.iter().find(|t| real.starts_with(t)) {
        return Err(bad(&format!(
            "{} is a system directory; fvol serves no directory in {tree}, {}",
            real.display(),
            system_rule()
        )));
    }
    if SHARED_DIRS.iter().any(|d| real == Path::new(d)) {
        return Err(bad(&format!(
            "{} holds other users' directories; use a directory of its own below it, {}",
            real.display(),
            system_rule()
        )));
    }
    let fs_type = nix::sys::statfs::fstatfs(&fd)
        .map_err(|e| bad(&format!("cannot inspect it: {e}")))?
        .filesystem_type()
        .0 as i64;
    if let Some((_, name)) = PSEUDO_FILESYSTEMS.iter().find(|(m, _)| *m == fs_type) {
        return Err(bad(&format!(
            "it is on a {name} filesystem; fvol serves directories of disk or tmpfs filesystems"
        )));
    }
    let root = ctx.root.canonicalize().unwrap_or_else(|_| ctx.root.clone());
    if real.starts_with(&root) {
        return Err(bad(&format!("inside the fvol root {}", root.display())));
    }
    if root.starts_with(&real) {
        return Err(bad(&format!("contains the fvol root {}", root.display())));
    }
    if let Some(other) = real.ancestors().find(|a| is_fvol_root(a)) {
        return Err(bad(&format!(
            "inside another fvol root, {}, whose volumes are that daemon's",
            other.display()
        )));
    }
    Ok(fd)
}

fn system_rule() -> String {
    format!(
        "(refused: {} and anything below them; {} themselves)",
        SYSTEM_TREES.join(", "),
        SHARED_DIRS.join(", ")
    )
}

/// An fvol root holds a catalog and a daemon lock.
fn is_fvol_root(dir: &Path) -> bool {
    dir.join("fvol.redb").exists() && dir.join("fvol.lock").exists()
}

/// Which directory `fd` is: its inode and file handle.
fn identity_of(fd: &OwnedFd) -> Result<DirIdentity, DriverError> {
    let st =
        nix::sys::stat::fstat(fd).map_err(|e| DriverError::io("inspecting mount=", e.into()))?;
    let handle = crate::sys::handle::name_to_handle_at(fd.as_fd(), c"")
        .map(|(h, _)| h.to_bytes())
        .unwrap_or_default();
    Ok(DirIdentity {
        ino: st.st_ino,
        handle,
    })
}

/// `uid=`, `gid=` and `mode=` change an existing directory only while it is empty: fvol never
/// silently re-owns a tree that already holds someone's files.
fn apply_owner_and_mode(dir: &Path, fd: &OwnedFd, opts: &LocalOptions) -> Result<(), DriverError> {
    let st = nix::sys::stat::fstat(fd).map_err(|e| io_err("inspecting", dir)(e.into()))?;
    let owner_changes =
        opts.uid.is_some_and(|u| u != st.st_uid) || opts.gid.is_some_and(|g| g != st.st_gid);
    let mode_changes = opts.mode.is_some_and(|m| m != st.st_mode & 0o7777);
    if !owner_changes && !mode_changes {
        return Ok(());
    }
    let empty = std::fs::read_dir(format!("/proc/self/fd/{}", fd.as_raw_fd()))
        .map_err(io_err("reading", dir))?
        .next()
        .is_none();
    if !empty {
        return Err(DriverError::InvalidOption(format!(
            "mount={}: the directory is not empty and is owned by {}:{} with mode {:o}; fvol does \
             not change the owner or mode of an existing directory with files in it. Change it \
             yourself (chown/chmod), or drop uid=, gid= and mode=",
            dir.display(),
            st.st_uid,
            st.st_gid,
            st.st_mode & 0o7777
        )));
    }
    if owner_changes {
        nix::unistd::fchown(fd, opts.uid.map(Uid::from_raw), opts.gid.map(Gid::from_raw))
            .map_err(|e| io_err("changing owner of", dir)(e.into()))?;
    }
    if let Some(mode) = opts.mode {
        nix::sys::stat::fchmod(fd, Mode::from_bits_truncate(mode))
            .map_err(|e| io_err("changing mode of", dir)(e.into()))?;
    }
    Ok(())
}

impl Driver for LocalDriver {
    type Options = LocalOptions;
    const NAME: &'static str = "local";
    const SUMMARY: &'static str = "a host directory, ROOT/volumes/NAME/data or an existing one \
        given with mount=, served through FUSE with a quota.";

    fn size_limit(&self, opts: &LocalOptions) -> Option<u64> {
        opts.size
    }

    fn inode_limit(&self, opts: &LocalOptions) -> Option<u64> {
        opts.inodes
    }

    fn validate(&self, ctx: &DriverContext, opts: &LocalOptions) -> Result<(), DriverError> {
        match &opts.mount {
            Some(dir) => open_mount_dir(ctx, dir).map(drop),
            None => Ok(()),
        }
    }

    fn data_home(&self, ctx: &DriverContext, rec: &VolumeRecord, opts: &LocalOptions) -> DataHome {
        DataHome::HostDir {
            dir: LocalDriver::data_dir(ctx, &rec.name, opts),
            owned: opts.mount.is_none(),
        }
    }

    fn will_own_backing(
        &self,
        _ctx: &DriverContext,
        _rec: &VolumeRecord,
        opts: &LocalOptions,
    ) -> Result<bool, DriverError> {
        Ok(opts.mount.is_none())
    }

    fn create(
        &self,
        ctx: &DriverContext,
        rec: &VolumeRecord,
        opts: &LocalOptions,
    ) -> Result<Created, DriverError> {
        let dir = Self::data_dir(ctx, &rec.name, opts);
        let owns_backing = opts.mount.is_none();
        if owns_backing {
            crate::sys::create_dir_with_mode(&dir, 0o755).map_err(io_err("creating", &dir))?;
        }
        let measured = (|| -> Result<_, DriverError> {
            let fd = match owns_backing {
                // Under the private ROOT: no one else can change the path.
                true => {
                    pin::open_dir_for_reading_nofollow(&dir).map_err(io_err("opening", &dir))?
                }
                false => open_mount_dir(ctx, &dir)?,
            };
            apply_owner_and_mode(&dir, &fd, opts)?;
            let usage = scan_dir(&crate::sys::proc_fd_path_buf(fd.as_fd()))
                .map_err(|e| DriverError::internal(format!("measuring {}: {e}", dir.display())))?;
            let identity = (!owns_backing).then(|| identity_of(&fd)).transpose()?;
            Ok((usage, identity))
        })();
        // A failed create leaves nothing it made.
        if measured.is_err() && owns_backing {
            let _ = fs::remove_dir_all(&dir);
        }
        let (usage, backing_identity) = measured?;
        Ok(Created {
            backing_identity,
            owns_backing,
            usage: Usage {
                bytes: usage.bytes,
                inodes: usage.inodes,
                clean: true,
            },
        })
    }

    fn remove(
        &self,
        ctx: &DriverContext,
        rec: &VolumeRecord,
        _opts: &LocalOptions,
    ) -> Result<(), DriverError> {
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

    fn survives_restart(&self) -> bool {
        true
    }

    fn activate(
        &self,
        ctx: &DriverContext,
        rec: &VolumeRecord,
        opts: &LocalOptions,
        stored: Usage,
        carry: &mut Carry,
    ) -> Result<Activation, DriverError> {
        let dir = Self::data_dir(ctx, &rec.name, opts);
        // A `mount=` directory is served only if its path, resolved without symlinks, still
        // names the directory the volume was created on; then served through that descriptor.
        let pinned = match &opts.mount {
            Some(_) => {
                let fd = open_mount_dir(ctx, &dir)?;
                if let Some(want) = &rec.backing_identity
                    && identity_of(&fd)? != *want
                {
                    return Err(DriverError::InvalidOption(format!(
                        "mount={}: the path names another directory than the one volume {} \
                         was created on (it was moved or replaced); fvol serves only the \
                         original. Put it back, or create a new volume on the new directory",
                        dir.display(),
                        rec.name
                    )));
                }
                Some(fd)
            }
            None => None,
        };
        let dir = match &pinned {
            Some(fd) => crate::sys::proc_fd_path_buf(fd.as_fd()),
            None => dir,
        };
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
        let rescanned = start.is_none();
        let fs = PassthroughFs::new(&dir, limits, start)
            .and_then(|fs| fs.with_carry(carry, rescanned))
            .map_err(|e| DriverError::internal(format!("opening {}: {e}", dir.display())))?
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_is_consistent() {
        super::super::options::assert_schema_consistent::<LocalOptions>();
    }
}
