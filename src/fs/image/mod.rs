//! Filesystems kept in a block image (the `rbd` backend, and plain image files for tests): a
//! `BlockDevice` abstraction, redb's `StorageBackend` over a region of one, the image format,
//! and the filesystem itself.
pub mod backend;
pub mod device;
pub mod format;
pub mod fs;
pub mod overlay;
pub mod rbd;

pub use backend::RegionBackend;
pub use device::{BlockDevice, CrashDevice, FileDevice};
pub use fs::{FsckReport, ImageError, ImageFs, fsck};
pub use rbd::RbdDevice;
