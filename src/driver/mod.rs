//! Backends. A driver owns its typed options (a schema, see `options`), its errors and its
//! serving settings; it validates options, prepares and removes the backing store, and opens
//! the filesystem that a FUSE session serves.
//!
//! Adding a driver: a module implementing `Driver` (with its `OptionSet`) and its line in
//! `registry()`. Help, docs, error messages and the configuration file follow from them.
pub mod error;
pub mod local;
pub mod options;
pub mod rbd;
pub mod size;
pub mod tmpfs;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

pub use error::DriverError;
use options::{Check, DriverDoc, OptionInfo, OptionSet};

use crate::fs::VolumeFs;
pub use crate::fs::quota::{Limits, Resize};
use crate::fs::resume::Carry;
use crate::model::{DirIdentity, Usage, VolumeRecord};

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

/// What a driver hands the core when a volume is activated: the filesystem, and how the
/// driver wants it served.
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

/// Where a volume's files can be reached from outside its FUSE mount: what snapshots, clones,
/// exports and restores copy from and into (`volume::snapshot`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DataHome {
    /// A host directory, copied with `cp` (reflinks where the host has them). `owned`: fvol
    /// made it and may replace or fill it (a restore, a clone); a directory fvol adopted
    /// (`mount=`) is never replaced.
    HostDir { dir: PathBuf, owned: bool },
    /// Only inside the filesystem core: copied out of the core, filled through the mount.
    /// `persistent`: the data outlives the mount (an image); otherwise it exists only while
    /// the volume is mounted (tmpfs).
    InCore { persistent: bool },
}

/// A driver's own snapshots (see `Driver::native_snapshots`), as `snapshot ls` names them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NativeSnapshots {
    /// The method `snapshot ls` shows, e.g. `rbd snapshot`.
    pub method: &'static str,
}

/// Runs its argument with a mounted volume's writes held and its filesystem durable (see
/// `Driver::snapshot_take`).
pub type Hold<'a> =
    &'a dyn Fn(&mut dyn FnMut() -> Result<(), DriverError>) -> Result<(), DriverError>;

fn no_native<D: Driver + ?Sized>() -> DriverError {
    DriverError::failed(
        crate::model::ErrorClass::BadInput,
        format!("driver {} keeps no snapshots of its own", D::NAME),
    )
}

/// Request threads for a handler whose requests compute or wait on a local disk: one per CPU,
/// at least 2 (so one slow request does not stall the mount) and at most 8. More threads than
/// CPUs only add wake-ups: on 2 CPUs, 4 threads spent about twice the daemon CPU per metadata
/// request of 1, and were no faster than 2 (docs/performance.md).
pub fn cpu_threads() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get().clamp(2, 8))
}

/// One backend, with its typed options. Every method gets the options parsed by the schema.
pub trait Driver: Send + Sync + 'static {
    type Options: OptionSet;
    /// The name users give with `-d` (or `-o driver=` through Docker).
    const NAME: &'static str;
    /// What the driver is, for help and docs: one or two sentences.
    const SUMMARY: &'static str;

    /// The byte limit the volume enforces, as `inspect` and the plugin show it.
    fn size_limit(&self, opts: &Self::Options) -> Option<u64>;
    /// The inode limit the volume enforces, as `inspect` shows it.
    fn inode_limit(&self, opts: &Self::Options) -> Option<u64>;
    /// Whether the backing store is a remote service that may not answer for a long time (a
    /// Ceph cluster): start-up then mounts such volumes, and settles their unfinished creates
    /// and removals, in the background, so that they hold back nothing else.
    fn remote(&self) -> bool {
        false
    }
    /// How long a volume's I/O waits for its backing store before failing (`None`: for
    /// good). A kept connection whose take-over keeps failing is let go after this long.
    fn io_wait_limit(&self, _opts: &Self::Options) -> Option<Duration> {
        None
    }
    /// Checks options beyond their syntax (paths, ranges, libraries). Changes nothing.
    fn validate(&self, ctx: &DriverContext, opts: &Self::Options) -> Result<(), DriverError>;
    /// Whether `create` will make a new backing store, which fvol then owns and deletes on
    /// `rm`, rather than adopt one that exists. Asked before `create` and committed with the
    /// create intent, so that a create interrupted after that point can be rolled back.
    fn will_own_backing(
        &self,
        ctx: &DriverContext,
        rec: &VolumeRecord,
        opts: &Self::Options,
    ) -> Result<bool, DriverError>;
    /// Prepares the backing store and measures what it already holds. Makes a new store
    /// exactly when `rec.owns_backing` (see `will_own_backing`), or fails. On error it leaves
    /// nothing behind that it made.
    fn create(
        &self,
        ctx: &DriverContext,
        rec: &VolumeRecord,
        opts: &Self::Options,
    ) -> Result<Created, DriverError>;
    /// Deletes what `create` made; never touches a store fvol did not create. A store already
    /// gone is not an error (a removal may be finished twice). Fails with
    /// `DriverError::InUse`, having deleted nothing, when the store is in use elsewhere.
    fn remove(
        &self,
        ctx: &DriverContext,
        rec: &VolumeRecord,
        opts: &Self::Options,
    ) -> Result<(), DriverError>;
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
        opts: &Self::Options,
        stored: Usage,
        carry: &mut Carry,
    ) -> Result<Activation, DriverError>;
    /// What a volume with these options enforces, for an online resize (`fvol update`): its
    /// limits, and for an image the size it must have. Fails when the options cannot be
    /// those of an existing volume of this driver.
    fn resize_to(&self, opts: &Self::Options) -> Result<Resize, DriverError> {
        Ok(Resize {
            limits: Limits {
                bytes: self.size_limit(opts),
                inodes: self.inode_limit(opts),
            },
            image_size: None,
        })
    }
    /// Applies a resize to an inactive volume's backing store (`rec` has the new options).
    /// Nothing to do unless the store itself changes (an image grows).
    fn resize_inactive(
        &self,
        _ctx: &DriverContext,
        _rec: &VolumeRecord,
        _opts: &Self::Options,
        _to: &Resize,
    ) -> Result<(), DriverError> {
        Ok(())
    }
    /// Where the volume's files live for copies made outside its mount (see `DataHome`).
    fn data_home(&self, ctx: &DriverContext, rec: &VolumeRecord, opts: &Self::Options) -> DataHome;
    /// Whether the backing store takes snapshots itself (`volume::snapshot` then uses the
    /// `snapshot_*` and `clone_create` hooks below instead of copies), and what one costs.
    fn native_snapshots(&self) -> Option<NativeSnapshots> {
        None
    }
    /// Takes snapshot `snap` of the backing store. `hold` is `Some` when the volume is mounted
    /// here: the driver prepares (outside the hold) and runs the snapshot itself through
    /// `hold`, which holds the volume's writes and makes its filesystem durable around it, and
    /// must not lock the store; otherwise the driver makes sure nobody else writes meanwhile.
    fn snapshot_take(
        &self,
        _ctx: &DriverContext,
        _rec: &VolumeRecord,
        _opts: &Self::Options,
        _snap: &str,
        _hold: Option<Hold<'_>>,
    ) -> Result<(), DriverError> {
        Err(no_native::<Self>())
    }
    /// Removes snapshot `snap`; one already gone is not an error.
    fn snapshot_remove(
        &self,
        _ctx: &DriverContext,
        _rec: &VolumeRecord,
        _opts: &Self::Options,
        _snap: &str,
    ) -> Result<(), DriverError> {
        Err(no_native::<Self>())
    }
    /// The names of the snapshots the backing store holds now, so that `snapshot ls` can tell
    /// one removed outside fvol.
    fn snapshot_names(
        &self,
        _ctx: &DriverContext,
        _rec: &VolumeRecord,
        _opts: &Self::Options,
    ) -> Result<Vec<String>, DriverError> {
        Err(no_native::<Self>())
    }
    /// Rolls the inactive volume's backing store back to snapshot `snap`.
    fn snapshot_restore(
        &self,
        _ctx: &DriverContext,
        _rec: &VolumeRecord,
        _opts: &Self::Options,
        _snap: &str,
    ) -> Result<(), DriverError> {
        Err(no_native::<Self>())
    }
    /// The volume's filesystem as it is in snapshot `snap`, to read (what opening it changes
    /// stays in memory).
    fn snapshot_open(
        &self,
        _ctx: &DriverContext,
        _rec: &VolumeRecord,
        _opts: &Self::Options,
        _snap: &str,
    ) -> Result<Arc<dyn VolumeFs>, DriverError> {
        Err(no_native::<Self>())
    }
    /// `create` for a clone: makes the new volume `rec`'s backing store from snapshot `snap`
    /// of `source` (a volume of this driver, with options `source_opts`), sharing its data.
    fn clone_create(
        &self,
        _ctx: &DriverContext,
        _rec: &VolumeRecord,
        _opts: &Self::Options,
        _source: &VolumeRecord,
        _source_opts: &Self::Options,
        _snap: &str,
    ) -> Result<Created, DriverError> {
        Err(no_native::<Self>())
    }
    /// Checks an inactive volume's backing store and reports what it found (JSON).
    fn fsck(
        &self,
        _ctx: &DriverContext,
        _rec: &VolumeRecord,
        _opts: &Self::Options,
    ) -> Result<String, DriverError> {
        Err(DriverError::failed(
            crate::model::ErrorClass::BadInput,
            format!(
                "fsck checks rbd volumes; driver {} has nothing to check",
                Self::NAME
            ),
        ))
    }
    /// Breaks locks others hold on the backing store; returns the holders it removed.
    fn break_lock(
        &self,
        _ctx: &DriverContext,
        _rec: &VolumeRecord,
        _opts: &Self::Options,
    ) -> Result<Vec<String>, DriverError> {
        Err(DriverError::failed(
            crate::model::ErrorClass::BadInput,
            format!("driver {} takes no locks", Self::NAME),
        ))
    }
}

/// A driver as the volume core uses it: the options are the catalog's text, parsed by the
/// driver's schema on every call (calls are control-plane operations, never I/O). Implemented
/// for every `Driver`.
pub trait AnyDriver: Send + Sync {
    fn name(&self) -> &'static str;
    /// The driver and its options, for help and docs.
    fn doc(&self) -> DriverDoc;
    /// See `Driver::remote`.
    fn remote(&self) -> bool;
    /// See `Driver::io_wait_limit`; `None` too for options that do not parse.
    fn io_wait_limit(&self, options: &BTreeMap<String, String>) -> Option<Duration>;
    /// Checks the form of a new volume's options: known keys, values of their kinds.
    fn check_options(&self, options: &BTreeMap<String, String>) -> Result<(), DriverError>;
    /// Checks a new volume's options in full: their form, then what they name
    /// (`Driver::validate`). Changes nothing.
    fn validate(
        &self,
        ctx: &DriverContext,
        options: &BTreeMap<String, String>,
    ) -> Result<(), DriverError>;
    /// Checks a default for one option (from the configuration file).
    fn check_default(&self, key: &str, value: &str) -> Result<(), DriverError>;
    /// The byte and inode limits a volume with these options enforces.
    fn limits(
        &self,
        options: &BTreeMap<String, String>,
    ) -> Result<(Option<u64>, Option<u64>), DriverError>;
    fn will_own_backing(
        &self,
        ctx: &DriverContext,
        rec: &VolumeRecord,
    ) -> Result<bool, DriverError>;
    /// See `Driver::resize_to`.
    fn resize_to(&self, options: &BTreeMap<String, String>) -> Result<Resize, DriverError>;
    /// See `Driver::resize_inactive`.
    fn resize_inactive(
        &self,
        ctx: &DriverContext,
        rec: &VolumeRecord,
        to: &Resize,
    ) -> Result<(), DriverError>;
    fn create(&self, ctx: &DriverContext, rec: &VolumeRecord) -> Result<Created, DriverError>;
    fn remove(&self, ctx: &DriverContext, rec: &VolumeRecord) -> Result<(), DriverError>;
    /// See `Driver::survives_restart`.
    fn survives_restart(&self) -> bool;
    fn activate(
        &self,
        ctx: &DriverContext,
        rec: &VolumeRecord,
        stored: Usage,
        carry: &mut Carry,
    ) -> Result<Activation, DriverError>;
    /// See `Driver::data_home`.
    fn data_home(&self, ctx: &DriverContext, rec: &VolumeRecord) -> Result<DataHome, DriverError>;
    /// See `Driver::native_snapshots`.
    fn native_snapshots(&self) -> Option<NativeSnapshots>;
    fn snapshot_take(
        &self,
        ctx: &DriverContext,
        rec: &VolumeRecord,
        snap: &str,
        hold: Option<Hold<'_>>,
    ) -> Result<(), DriverError>;
    fn snapshot_remove(
        &self,
        ctx: &DriverContext,
        rec: &VolumeRecord,
        snap: &str,
    ) -> Result<(), DriverError>;
    fn snapshot_names(
        &self,
        ctx: &DriverContext,
        rec: &VolumeRecord,
    ) -> Result<Vec<String>, DriverError>;
    fn snapshot_restore(
        &self,
        ctx: &DriverContext,
        rec: &VolumeRecord,
        snap: &str,
    ) -> Result<(), DriverError>;
    fn snapshot_open(
        &self,
        ctx: &DriverContext,
        rec: &VolumeRecord,
        snap: &str,
    ) -> Result<Arc<dyn VolumeFs>, DriverError>;
    /// See `Driver::clone_create`; `source` is a volume of this driver.
    fn clone_create(
        &self,
        ctx: &DriverContext,
        rec: &VolumeRecord,
        source: &VolumeRecord,
        snap: &str,
    ) -> Result<Created, DriverError>;
    fn fsck(&self, ctx: &DriverContext, rec: &VolumeRecord) -> Result<String, DriverError>;
    fn break_lock(
        &self,
        ctx: &DriverContext,
        rec: &VolumeRecord,
    ) -> Result<Vec<String>, DriverError>;
}

fn stored<D: Driver>(options: &BTreeMap<String, String>) -> Result<D::Options, DriverError> {
    options::parse(D::NAME, options, Check::Stored)
}

impl<D: Driver> AnyDriver for D {
    fn name(&self) -> &'static str {
        D::NAME
    }

    fn remote(&self) -> bool {
        Driver::remote(self)
    }

    fn io_wait_limit(&self, options: &BTreeMap<String, String>) -> Option<Duration> {
        let opts = stored::<D>(options).ok()?;
        Driver::io_wait_limit(self, &opts)
    }

    fn survives_restart(&self) -> bool {
        Driver::survives_restart(self)
    }

    fn doc(&self) -> DriverDoc {
        DriverDoc {
            name: D::NAME,
            summary: D::SUMMARY,
            options: D::Options::SCHEMA
                .iter()
                .map(|s| s.info)
                .collect::<Vec<OptionInfo>>(),
        }
    }

    fn check_options(&self, options: &BTreeMap<String, String>) -> Result<(), DriverError> {
        options::parse::<D::Options>(D::NAME, options, Check::New).map(drop)
    }

    fn validate(
        &self,
        ctx: &DriverContext,
        options: &BTreeMap<String, String>,
    ) -> Result<(), DriverError> {
        let opts = options::parse(D::NAME, options, Check::New)?;
        Driver::validate(self, ctx, &opts)
    }

    fn check_default(&self, key: &str, value: &str) -> Result<(), DriverError> {
        options::check_default::<D::Options>(D::NAME, key, value)
    }

    fn limits(
        &self,
        options: &BTreeMap<String, String>,
    ) -> Result<(Option<u64>, Option<u64>), DriverError> {
        let opts = stored::<D>(options)?;
        Ok((self.size_limit(&opts), self.inode_limit(&opts)))
    }

    fn will_own_backing(
        &self,
        ctx: &DriverContext,
        rec: &VolumeRecord,
    ) -> Result<bool, DriverError> {
        Driver::will_own_backing(self, ctx, rec, &stored::<D>(&rec.options)?)
    }

    fn resize_to(&self, options: &BTreeMap<String, String>) -> Result<Resize, DriverError> {
        Driver::resize_to(self, &stored::<D>(options)?)
    }

    fn resize_inactive(
        &self,
        ctx: &DriverContext,
        rec: &VolumeRecord,
        to: &Resize,
    ) -> Result<(), DriverError> {
        Driver::resize_inactive(self, ctx, rec, &stored::<D>(&rec.options)?, to)
    }

    fn create(&self, ctx: &DriverContext, rec: &VolumeRecord) -> Result<Created, DriverError> {
        Driver::create(self, ctx, rec, &stored::<D>(&rec.options)?)
    }

    fn remove(&self, ctx: &DriverContext, rec: &VolumeRecord) -> Result<(), DriverError> {
        Driver::remove(self, ctx, rec, &stored::<D>(&rec.options)?)
    }

    fn activate(
        &self,
        ctx: &DriverContext,
        rec: &VolumeRecord,
        stored_usage: Usage,
        carry: &mut Carry,
    ) -> Result<Activation, DriverError> {
        Driver::activate(
            self,
            ctx,
            rec,
            &stored::<D>(&rec.options)?,
            stored_usage,
            carry,
        )
    }

    fn data_home(&self, ctx: &DriverContext, rec: &VolumeRecord) -> Result<DataHome, DriverError> {
        Ok(Driver::data_home(
            self,
            ctx,
            rec,
            &stored::<D>(&rec.options)?,
        ))
    }

    fn native_snapshots(&self) -> Option<NativeSnapshots> {
        Driver::native_snapshots(self)
    }

    fn snapshot_take(
        &self,
        ctx: &DriverContext,
        rec: &VolumeRecord,
        snap: &str,
        hold: Option<Hold<'_>>,
    ) -> Result<(), DriverError> {
        Driver::snapshot_take(self, ctx, rec, &stored::<D>(&rec.options)?, snap, hold)
    }

    fn snapshot_remove(
        &self,
        ctx: &DriverContext,
        rec: &VolumeRecord,
        snap: &str,
    ) -> Result<(), DriverError> {
        Driver::snapshot_remove(self, ctx, rec, &stored::<D>(&rec.options)?, snap)
    }

    fn snapshot_names(
        &self,
        ctx: &DriverContext,
        rec: &VolumeRecord,
    ) -> Result<Vec<String>, DriverError> {
        Driver::snapshot_names(self, ctx, rec, &stored::<D>(&rec.options)?)
    }

    fn snapshot_restore(
        &self,
        ctx: &DriverContext,
        rec: &VolumeRecord,
        snap: &str,
    ) -> Result<(), DriverError> {
        Driver::snapshot_restore(self, ctx, rec, &stored::<D>(&rec.options)?, snap)
    }

    fn snapshot_open(
        &self,
        ctx: &DriverContext,
        rec: &VolumeRecord,
        snap: &str,
    ) -> Result<Arc<dyn VolumeFs>, DriverError> {
        Driver::snapshot_open(self, ctx, rec, &stored::<D>(&rec.options)?, snap)
    }

    fn clone_create(
        &self,
        ctx: &DriverContext,
        rec: &VolumeRecord,
        source: &VolumeRecord,
        snap: &str,
    ) -> Result<Created, DriverError> {
        let opts = stored::<D>(&rec.options)?;
        let source_opts = stored::<D>(&source.options)?;
        Driver::clone_create(self, ctx, rec, &opts, source, &source_opts, snap)
    }

    fn fsck(&self, ctx: &DriverContext, rec: &VolumeRecord) -> Result<String, DriverError> {
        Driver::fsck(self, ctx, rec, &stored::<D>(&rec.options)?)
    }

    fn break_lock(
        &self,
        ctx: &DriverContext,
        rec: &VolumeRecord,
    ) -> Result<Vec<String>, DriverError> {
        Driver::break_lock(self, ctx, rec, &stored::<D>(&rec.options)?)
    }
}

/// All drivers this build knows, in the order help and docs list them; the first is the
/// default.
pub fn registry() -> Vec<Arc<dyn AnyDriver>> {
    vec![
        Arc::new(local::LocalDriver),
        Arc::new(tmpfs::TmpfsDriver),
        Arc::new(rbd::RbdDriver),
    ]
}

/// The name of the driver a volume gets when none is given.
pub fn default_driver() -> &'static str {
    registry()[0].name()
}

/// Every driver's name, for messages.
pub fn names() -> Vec<&'static str> {
    registry().iter().map(|d| d.name()).collect()
}

/// The drivers and their options as `fvol create --help` shows them.
pub fn help_text() -> String {
    let docs: Vec<DriverDoc> = registry().iter().map(|d| d.doc()).collect();
    options::render_help(&docs, 100)
}

/// The drivers and their options as the docs show them (see the test below).
pub fn markdown_tables() -> String {
    let docs: Vec<DriverDoc> = registry().iter().map(|d| d.doc()).collect();
    options::render_markdown(&docs)
}

#[cfg(test)]
mod tests {
    use super::*;

    const BEGIN: &str = "<!-- BEGIN driver options: generated from the drivers' schemas";
    const END: &str = "<!-- END driver options -->";

    /// The option tables in docs/cli.md and docs/docker.md are `markdown_tables()`, between
    /// the markers. With FVOL_WRITE_DOCS=1 the test writes them there instead.
    #[test]
    fn docs_tables_match_the_schemas() {
        let want = markdown_tables();
        for doc in ["docs/cli.md", "docs/docker.md"] {
            let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(doc);
            let text = std::fs::read_to_string(&path).unwrap();
            let begin = text
                .find(BEGIN)
                .unwrap_or_else(|| panic!("{doc}: no line starting {BEGIN:?}"));
            let body = begin + text[begin..].find('\n').unwrap() + 1;
            let end = text[body..]
                .find(END)
                .map(|i| body + i)
                .unwrap_or_else(|| panic!("{doc}: no {END:?}"));
            let have = text[body..end].trim_matches('\n');
            if have == want.trim_matches('\n') {
                continue;
            }
            if std::env::var_os("FVOL_WRITE_DOCS").is_some() {
                let new = format!(
                    "{}\n{}\n\n{}",
                    &text[..body],
                    want.trim_matches('\n'),
                    &text[end..]
                );
                std::fs::write(&path, new).unwrap();
                continue;
            }
            panic!(
                "{doc}: the option tables differ from the drivers' schemas; run \
                 FVOL_WRITE_DOCS=1 cargo test -p fvol --lib docs_tables to update them. \
                 Expected:\n{want}"
            );
        }
    }

    #[test]
    fn help_lists_every_driver_and_option() {
        let help = help_text();
        for driver in registry() {
            assert!(help.contains(driver.name()), "{help}");
            for info in driver.doc().options {
                assert!(help.contains(&format!("  {}=", info.name)), "{help}");
            }
        }
        assert!(help.lines().all(|l| l.len() <= 100), "{help}");
    }

    #[test]
    fn names_are_distinct_and_local_is_the_default() {
        let names = names();
        let unique: std::collections::BTreeSet<_> = names.iter().collect();
        assert_eq!(unique.len(), names.len());
        assert_eq!(default_driver(), "local");
    }
}
