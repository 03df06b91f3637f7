//! Volumes: the records kept in the catalog, the errors users see, and the manager API.
pub mod bind;
pub mod core;
pub mod error;
mod fault;
pub mod guard;
mod kept;
pub mod limits;
pub mod manager;
pub mod name;
pub mod options;
pub mod record;
pub mod size;

pub use error::VolumeError;
pub use manager::VolumeManager;
pub use record::{
    DirIdentity, MountRef, RefKind, Usage, VolumeInfo, VolumeRecord, VolumeState, VolumeStatus,
};
