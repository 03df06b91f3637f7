//! Storage for filesystems kept in a block image (the `rbd` backend, and plain image files for
//! tests): a `BlockDevice` abstraction and redb's `StorageBackend` over a region of one, so
//! the image's metadata is a crash-consistent redb database.
pub mod backend;
pub mod device;
pub mod rbd;

pub use backend::RegionBackend;
pub use device::{BlockDevice, CrashDevice, FileDevice};
pub use rbd::RbdDevice;
