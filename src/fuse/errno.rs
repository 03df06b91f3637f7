//! The one place where filesystem errors become errnos.
use fuser::Errno;

use crate::fs::FsError;

pub fn errno_of(e: FsError) -> Errno {
    match e {
        FsError::NoSpace => Errno::ENOSPC,
        FsError::Stale => Errno::ESTALE,
        FsError::NotFound => Errno::ENOENT,
        FsError::Invalid => Errno::EINVAL,
        FsError::Unsupported => Errno::EOPNOTSUPP,
        FsError::Os(e) => Errno::from_i32(e as i32),
    }
}
