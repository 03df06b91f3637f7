//! The errors of the volume domain. Each message names the problem and, where there is a
//! choice, the valid choices.
use thiserror::Error;

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
    #[error("{0}")]
    Driver(String),
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

    /// True when the request itself was wrong (as opposed to a failure while serving it).
    pub fn is_user_error(&self) -> bool {
        !matches!(
            self,
            VolumeError::Store(_) | VolumeError::Io { .. } | VolumeError::RemovalUnfinished { .. }
        )
    }
}
