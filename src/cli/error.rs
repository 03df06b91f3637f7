//! What `fvol` reports as `fvol: <message>` before exiting 1.
use std::path::Path;

use thiserror::Error;

#[derive(Debug, Error)]
pub enum CliError {
    #[error(
        "cannot reach the fvol daemon at {socket} (is it running? start it with: fvol daemon --root {root})"
    )]
    DaemonUnreachable { socket: String, root: String },
    /// A failure in the user's request, the daemon's answer or the transport, as a sentence.
    #[error("{0}")]
    Message(String),
    /// The command already printed its own `fvol: ...` lines (as `rm` does per volume) and
    /// only the exit status is left to set.
    #[error("some operations failed")]
    AlreadyReported,
}

impl CliError {
    pub fn unreachable(socket: &Path, root: &Path) -> Self {
        CliError::DaemonUnreachable {
            socket: socket.display().to_string(),
            root: root.display().to_string(),
        }
    }
}

impl From<String> for CliError {
    fn from(message: String) -> Self {
        CliError::Message(message)
    }
}
