//! The thin adapter from fuser to `fs::VolumeFs`, and mounting.
mod adapter;
mod backing;
mod errno;
pub mod features;
mod handover;
mod refused;
mod session;
pub mod stats;

pub use adapter::FuseAdapter;
pub use errno::errno_of;
pub use session::{
    Connection, MountedFs, ServeOptions, Unmounted, abort_connection, detach_stale_mount,
    is_stale_mount, mount, mount_dev_at, mount_fusectl, resume, waiting_requests,
};
