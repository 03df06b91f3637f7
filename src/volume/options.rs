//! Volume options (`-o key=value`): parsing and the typed form drivers use.
use std::collections::BTreeMap;
use std::path::PathBuf;

use super::VolumeError;

/// The typed options. Which keys a driver accepts is its own `option_keys()`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VolumeOptions {
    /// Byte quota.
    pub size: Option<u64>,
    /// Inode quota.
    pub inodes: Option<u64>,
    /// Owner and mode of the volume root.
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub mode: Option<u32>,
    /// `local` only: an existing host directory to serve instead of ROOT/volumes/NAME/data.
    pub mount: Option<PathBuf>,
}

/// Parses raw options, allowing only `allowed` keys of `driver`.
pub fn parse_options(
    driver: &str,
    allowed: &[&str],
    raw: &BTreeMap<String, String>,
) -> Result<VolumeOptions, VolumeError> {
    let _ = (driver, allowed, raw);
    unimplemented!("helper A")
}

/// Splits `key=value` on the first `=` only.
pub fn split_key_value(text: &str) -> Result<(String, String), String> {
    let _ = text;
    unimplemented!("helper A")
}
