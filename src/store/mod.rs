//! The catalog: volumes, options, labels, mount references and usage, in one redb file.
use std::path::Path;

use thiserror::Error;

use crate::volume::{Usage, VolumeRecord};

#[derive(Debug, Error)]
pub enum StoreError {
    #[error("catalog {path}: {reason}")]
    Open { path: String, reason: String },
    #[error("catalog entry {what} is corrupt: {reason}")]
    Corrupt { what: String, reason: String },
    #[error("catalog: {0}")]
    Db(String),
}

pub struct Store {
    _db: redb::Database,
}

impl Store {
    /// Opens the catalog, creating it only when the file does not exist. A file that exists but
    /// cannot be read as an fvol catalog is an error; it is never recreated.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let _ = path;
        unimplemented!("helper A")
    }
    pub fn get(&self, name: &str) -> Result<Option<VolumeRecord>, StoreError> {
        let _ = name;
        unimplemented!("helper A")
    }
    pub fn list(&self) -> Result<Vec<VolumeRecord>, StoreError> {
        unimplemented!("helper A")
    }
    pub fn put(&self, rec: &VolumeRecord) -> Result<(), StoreError> {
        let _ = rec;
        unimplemented!("helper A")
    }
    /// Removes the volume and its usage.
    pub fn remove(&self, name: &str) -> Result<(), StoreError> {
        let _ = name;
        unimplemented!("helper A")
    }
    /// The last persisted usage; the default (all zero, not clean) when none was stored.
    pub fn usage(&self, name: &str) -> Result<Usage, StoreError> {
        let _ = name;
        unimplemented!("helper A")
    }
    pub fn set_usage(&self, name: &str, usage: Usage) -> Result<(), StoreError> {
        let _ = (name, usage);
        unimplemented!("helper A")
    }
}
