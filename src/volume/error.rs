//! The errors of the volume domain. Each message names the problem and, where there is a
//! choice, the valid choices; each error has a class (`ErrorClass`), which decides how the
//! daemon answers it.
use thiserror::Error;

use crate::driver::DriverError;
use crate::model::ErrorClass;

#[derive(Debug, Error)]
pub enum VolumeError {
    #[error("invalid volume name {name:?}: {reason}")]
    InvalidName { name: String, reason: String },
    #[error("no such volume: {0}")]
    NotFound(String),
    #[error("volume {name} already exists with {what}; remove it first or use the same settings")]
    Conflict { name: String, what: String },
    #[error("unknown driver {given:?}: valid drivers are {valid}")]
    UnknownDriver { given: String, valid: String },
    #[error("invalid option: {0}")]
    InvalidOption(String),
    #[error("invalid label: {0}")]
    InvalidLabel(String),
    #[error("volume {name} is in use by {holders}; unmount it first")]
    InUse { name: String, holders: String },
    #[error("invalid mount target: {0}")]
    InvalidTarget(String),
    #[error("{0}")]
    InvalidReference(String),
    #[error(
        "volume {name} has no reference {given}; it is mounted for {held} (release one with \
         --ref REF, or all of them with --all)"
    )]
    NoSuchReference {
        name: String,
        given: String,
        held: String,
    },
    /// fsck and break-lock need the volume unmounted.
    #[error("volume {name} is mounted here (by {holders}); unmount it before you {what}")]
    Mounted {
        name: String,
        holders: String,
        what: &'static str,
    },
    /// An operation the volume's state does not allow now (a shrink below its usage, a
    /// snapshot of a passthrough-served volume, ...); nothing changed.
    #[error("{0}")]
    Refused(String),
    #[error("volume {volume} has no snapshot {snapshot}; fvol snapshot ls {volume} lists them")]
    SnapshotNotFound { volume: String, snapshot: String },
    #[error(transparent)]
    Driver(#[from] DriverError),
    /// `rm` failed after its intent was committed: the volume is gone for users and the
    /// removal is finished later.
    #[error(
        "{source}; volume {name} is marked for removal: run `fvol rm {name}` again to finish it \
         (the daemon also finishes it at its next start)"
    )]
    RemovalUnfinished {
        name: String,
        source: Box<VolumeError>,
    },
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

impl VolumeError {
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        VolumeError::Io {
            context: context.into(),
            source,
        }
    }

    pub fn class(&self) -> ErrorClass {
        match self {
            VolumeError::InvalidName { .. }
            | VolumeError::UnknownDriver { .. }
            | VolumeError::InvalidOption(_)
            | VolumeError::InvalidLabel(_)
            | VolumeError::InvalidTarget(_)
            | VolumeError::InvalidReference(_) => ErrorClass::BadInput,
            VolumeError::NotFound(_)
            | VolumeError::NoSuchReference { .. }
            | VolumeError::SnapshotNotFound { .. } => ErrorClass::NotFound,
            VolumeError::Conflict { .. }
            | VolumeError::InUse { .. }
            | VolumeError::Mounted { .. }
            | VolumeError::Refused(_) => ErrorClass::Conflict,
            VolumeError::Driver(e) => e.class(),
            // The removal goes on later; what stopped it now says what kind of failure it is
            // (a cluster that does not answer: unavailable).
            VolumeError::RemovalUnfinished { source, .. } => source.class(),
            VolumeError::Store(_) | VolumeError::Io { .. } => ErrorClass::Internal,
        }
    }

    /// The backing store is in use elsewhere, and nothing was changed.
    pub fn is_in_use(&self) -> bool {
        matches!(
            self,
            VolumeError::InUse { .. } | VolumeError::Driver(DriverError::InUse(_))
        )
    }
}
