//! Volumes: the manager API, the logic under it, and the errors users see.
pub mod bind;
pub mod core;
pub mod error;
pub mod events;
mod fault;
pub mod guard;
pub mod info;
pub mod limits;
pub mod manager;
pub mod name;
pub mod observe;
pub mod refs;

pub use crate::model::{DirIdentity, MountRef, RefKind, Usage, VolumeRecord, VolumeState};
pub use error::VolumeError;
pub use info::{ReferenceInfo, VolumeInfo, VolumeStatus};
pub use manager::VolumeManager;
pub use refs::RefId;
