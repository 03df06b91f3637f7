//! Volumes: the manager API, the logic under it, and the errors users see.
pub mod bind;
pub mod core;
pub mod error;
pub mod events;
pub mod export;
mod fault;
pub mod guard;
pub mod info;
mod kept;
pub mod limits;
pub mod locks;
pub mod manager;
pub mod name;
pub mod observe;
pub mod progress;
pub mod refs;
pub mod resize;
pub mod snapshot;

pub use crate::model::{DirIdentity, MountRef, RefKind, Usage, VolumeRecord, VolumeState};
pub use error::VolumeError;
pub use info::{
    ClusterWaitStatus, FencedStatus, MountPendingStatus, ReferenceInfo, VolumeInfo, VolumeStatus,
};
pub use manager::VolumeManager;
pub use refs::RefId;
