//! The thin adapter from fuser to `fs::VolumeFs`, and mounting.
mod adapter;
mod errno;
pub mod features;
mod refused;
mod session;
pub mod stats;

pub use adapter::FuseAdapter;
pub use errno::errno_of;
pub use session::{
    MountedFs, ServeOptions, Unmounted, abort_connection, detach_stale_mount, is_stale_mount,
    mount, waiting_requests,
};
