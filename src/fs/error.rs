//! The filesystem domain's one error type. `fuse::errno` maps it to an errno in one match.
use thiserror::Error;

pub type FsResult<T> = Result<T, FsError>;

#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
pub enum FsError {
    /// The quota (bytes or inodes) has no room for this.
    #[error("volume quota exceeded")]
    NoSpace,
    #[error("no such node or handle")]
    Stale,
    #[error("no such file or directory")]
    NotFound,
    #[error("invalid argument")]
    Invalid,
    #[error("operation not supported")]
    Unsupported,
    /// Anything the host reported, passed through as its errno.
    #[error("host error {0}")]
    Os(nix::errno::Errno),
}

impl From<nix::errno::Errno> for FsError {
    fn from(e: nix::errno::Errno) -> Self {
        FsError::Os(e)
    }
}

impl From<std::io::Error> for FsError {
    fn from(e: std::io::Error) -> Self {
        match e.raw_os_error() {
            Some(code) => FsError::Os(nix::errno::Errno::from_raw(code)),
            None => FsError::Os(nix::errno::Errno::EIO),
        }
    }
}
