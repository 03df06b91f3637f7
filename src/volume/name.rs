//! Volume names, by Docker's rule: `[a-zA-Z0-9][a-zA-Z0-9_.-]+`.
use super::VolumeError;

/// Accepts a name only if it matches Docker's rule (so it can never escape a directory).
pub fn validate_name(name: &str) -> Result<(), VolumeError> {
    let _ = name;
    unimplemented!("helper A")
}

/// A random 64-hex-digit name, as Docker gives anonymous volumes.
pub fn random_name() -> String {
    unimplemented!("helper A")
}
