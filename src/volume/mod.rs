//! Volumes: the records kept in the catalog, the errors users see, and the manager API.
pub mod bind;
pub mod core;
pub mod error;
mod fault;
pub mod guard;
mod kept;
pub mod limits;
pub mod locks;
pub mod manager;
pub mod name;
pub mod options;
pub mod record;
pub mod refs;
pub mod size;

pub use error::VolumeError;
pub use manager::VolumeManager;
pub use record::{
    ClusterWaitStatus, DirIdentity, FencedStatus, MountPendingStatus, MountRef, RefKind,
    ReferenceInfo, Usage, VolumeInfo, VolumeRecord, VolumeState, VolumeStatus,
};
pub use refs::RefId;
