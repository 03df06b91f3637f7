//! Open files and directories, by handle number.
use std::fs::File;
use std::os::fd::OwnedFd;
use std::sync::{Arc, OnceLock};

use parking_lot::Mutex;

use super::inodes::Inode;
use super::writebehind::WriteBehind;
pub use crate::fs::handles::HandleTable;

pub struct FileHandle {
    pub file: Arc<File>,
    pub inode: Arc<Inode>,
    pub writable: bool,
    pub write_behind: Mutex<WriteBehind>,
    /// The alignment O_DIRECT I/O on the host file needs, found at its first direct request.
    pub direct_io_align: OnceLock<u64>,
}

pub struct DirHandle {
    pub inode: Arc<Inode>,
    /// A readable descriptor of the directory; the lock covers its position.
    pub dir: Mutex<OwnedFd>,
}
