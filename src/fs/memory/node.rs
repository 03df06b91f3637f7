//! Nodes of the in-memory tree.
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::sync::atomic::{AtomicU32, AtomicU64};
use std::time::SystemTime;

use parking_lot::{Mutex, RwLock};

use super::filedata::FileData;
use super::pages::PAGE;
use super::shared::NodeRec;
use crate::fs::{Attr, FileKind, Ino};

pub struct Meta {
    /// Permission bits, including setuid, setgid and sticky.
    pub perm: u32,
    pub uid: u32,
    pub gid: u32,
    pub nlink: u32,
    pub rdev: u32,
    pub atime: SystemTime,
    pub mtime: SystemTime,
    pub ctime: SystemTime,
    pub xattrs: BTreeMap<OsString, Vec<u8>>,
    /// Metadata this node holds besides file data (see `cost`): a directory's entries, its
    /// xattrs, a long symlink target; and the bytes of pages it is charged for them.
    pub entry_bytes: u64,
    pub xattr_bytes: u64,
    pub target_bytes: u64,
    pub charged: u64,
    /// Its data and inode were given back (no name, open handle or kernel lookup left).
    pub freed: bool,
}

pub enum Body {
    File(FileData),
    Dir {
        entries: BTreeMap<OsString, Ino>,
        parent: Ino,
    },
    Symlink(Vec<u8>),
    Special,
}

pub struct Node {
    pub ino: Ino,
    pub kind: FileKind,
    pub meta: Mutex<Meta>,
    pub body: RwLock<Body>,
    pub lookups: AtomicU64,
    pub open: AtomicU32,
    /// Its record in shared memory, for a volume that outlives its handler.
    pub rec: Option<NodeRec>,
}

impl Node {
    pub fn new(ino: Ino, kind: FileKind, meta: Meta, body: Body) -> Node {
        Node {
            ino,
            kind,
            meta: Mutex::new(meta),
            body: RwLock::new(body),
            lookups: AtomicU64::new(0),
            open: AtomicU32::new(0),
            rec: None,
        }
    }

    /// The node with its shared record (see `shared`).
    pub fn with_rec(mut self, rec: Option<NodeRec>) -> Node {
        self.rec = rec;
        self
    }

    /// Stores `m` (this node's meta, locked) in the node's shared record, if it has one.
    pub fn save(&self, m: &Meta) {
        if let Some(r) = &self.rec {
            r.save(m);
        }
    }

    pub fn save_size(&self, size: u64) {
        if let Some(r) = &self.rec {
            r.save_size(size);
        }
    }

    pub fn attr(&self) -> Attr {
        let (size, data) = match &*self.body.read() {
            Body::File(p) => (p.size(), p.allocated()),
            Body::Dir { .. } => (0, 0),
            Body::Symlink(t) => (t.len() as u64, 0),
            Body::Special => (0, 0),
        };
        let m = self.meta.lock();
        // A directory's size is its pages, as on ext4.
        let size = match self.kind {
            FileKind::Dir => m.charged.max(PAGE),
            _ => size,
        };
        Attr {
            ino: self.ino,
            size,
            blocks: (data + m.charged) / 512,
            atime: m.atime,
            mtime: m.mtime,
            ctime: m.ctime,
            kind: self.kind,
            perm: m.perm as u16,
            nlink: m.nlink,
            uid: m.uid,
            gid: m.gid,
            rdev: m.rdev,
            blksize: PAGE as u32,
        }
    }

    pub fn touch_ctime(&self) {
        let mut m = self.meta.lock();
        m.ctime = SystemTime::now();
        self.save(&m);
    }

    /// A directory's contents changed.
    pub fn touch_dir(&self) {
        let mut m = self.meta.lock();
        let now = SystemTime::now();
        m.mtime = now;
        m.ctime = now;
        self.save(&m);
    }
}

impl Meta {
    pub fn new(perm: u32, uid: u32, gid: u32, nlink: u32, rdev: u32) -> Meta {
        let now = SystemTime::now();
        Meta {
            perm: perm & 0o7777,
            uid,
            gid,
            nlink,
            rdev,
            atime: now,
            mtime: now,
            ctime: now,
            xattrs: BTreeMap::new(),
            entry_bytes: 0,
            xattr_bytes: 0,
            target_bytes: 0,
            charged: 0,
            freed: false,
        }
    }
}
