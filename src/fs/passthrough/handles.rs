//! Open files and directories, by handle number.
use std::fs::File;
use std::os::fd::OwnedFd;
use std::sync::Arc;

use parking_lot::Mutex;

use super::inodes::Inode;
pub use crate::fs::handles::HandleTable;

pub struct FileHandle {
    pub file: Arc<File>,
    pub inode: Arc<Inode>,
    pub writable: bool,
}

pub struct DirHandle {
    pub inode: Arc<Inode>,
    /// A readable descriptor of the directory; the lock covers its position.
    pub dir: Mutex<OwnedFd>,
}
