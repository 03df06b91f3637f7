//! Why the daemon could not start (or stopped unexpectedly).
use std::io;

use thiserror::Error;

use crate::volume::VolumeError;

#[derive(Debug, Error)]
pub enum DaemonError {
    #[error("another fvol daemon (pid {pid}) is already running on {root}")]
    AlreadyRunning { pid: String, root: String },
    /// The plugin socket or spec file belongs to another live server.
    #[error("{0}")]
    PluginInUse(String),
    /// A directory the daemon would keep its files in can be changed by other users.
    #[error("{0}")]
    Untrusted(String),
    /// A `--metrics-listen` address could not be bound.
    #[error("{0}")]
    Metrics(String),
    #[error(transparent)]
    Volume(#[from] VolumeError),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
}

impl DaemonError {
    pub fn io(context: impl Into<String>, source: io::Error) -> Self {
        DaemonError::Io {
            context: context.into(),
            source,
        }
    }
}
