//! A snapshot of a kept tmpfs volume without holding its writes for the copy: with the gate
//! closed, the tree is captured (names, attributes, xattrs, targets and each file's page
//! table) and the pages it names are frozen in the arena (`shared::arena`); the gate opens and
//! the copy is made from the capture while the volume changes. Frozen pages are copied on
//! write, and pages the volume drops pass to the snapshot, until it is done (`finish`, or a
//! drop). Pages the snapshot holds are not the volume's: they do not count against its quota;
//! they take room in the arena (made for four times the byte limit) and host memory until the
//! copy is done. One snapshot at a time per volume.
use std::collections::HashMap;
use std::ffi::OsString;
use std::io;
use std::sync::Arc;

use super::MemFs;
use super::filedata::FileData;
use super::node::Body;
use super::shared::arena::{Arena, PAGE};
use crate::fs::tree_copy::{Capture, TreeSource};
use crate::fs::{Attr, FsError, FsResult, Ino, ROOT_INO};

const P: u64 = PAGE as u64;

/// Data handed to the copy in pieces of at most this many pages.
const PIECE_PAGES: usize = 256;

enum Held {
    Dir(Vec<(OsString, Ino)>),
    /// (page index, arena page), in index order.
    File(Vec<(u64, u32)>),
    Symlink(Vec<u8>),
    Other,
}

struct CapturedNode {
    attr: Attr,
    xattrs: Vec<(OsString, Vec<u8>)>,
    held: Held,
}

struct Captured {
    arena: Arc<Arena>,
    nodes: HashMap<Ino, CapturedNode>,
    /// Every page frozen, to thaw at the end.
    frozen: Vec<u32>,
    done: bool,
}

fn not_found() -> io::Error {
    io::Error::from_raw_os_error(libc::ENOENT)
}

impl MemFs {
    /// The tree at this instant (the gate holds every change); None for a volume not kept in
    /// an arena, which is copied with the gate closed.
    pub(super) fn capture_tree(&self) -> FsResult<Option<Box<dyn Capture>>> {
        let Some(shared) = &self.shared else {
            return Ok(None);
        };
        let tree = self.tree.read();
        let mut nodes = HashMap::new();
        let mut frozen = Vec::new();
        let mut todo = vec![ROOT_INO];
        while let Some(ino) = todo.pop() {
            if nodes.contains_key(&ino) {
                continue;
            }
            let node = tree.get(ino)?;
            let attr = node.attr();
            let xattrs = (node.meta.lock().xattrs.iter())
                .map(|(n, v)| (n.clone(), v.clone()))
                .collect();
            let held = match &*node.body.read() {
                Body::Dir { entries, .. } => {
                    todo.extend(entries.values().copied());
                    Held::Dir(entries.iter().map(|(n, &i)| (n.clone(), i)).collect())
                }
                Body::File(FileData::Shared(p)) => {
                    let pages = p.pages();
                    frozen.extend(pages.iter().map(|&(_, page)| page));
                    Held::File(pages)
                }
                // Not in the arena: no copy on write for it.
                Body::File(FileData::Own(_)) => return Ok(None),
                Body::Symlink(t) => Held::Symlink(t.clone()),
                Body::Special => Held::Other,
            };
            nodes.insert(ino, CapturedNode { attr, xattrs, held });
        }
        let arena = shared.arena().clone();
        if !arena.freeze(&frozen) {
            return Err(FsError::Os(nix::errno::Errno::EBUSY));
        }
        Ok(Some(Box::new(Captured {
            arena,
            nodes,
            frozen,
            done: false,
        })))
    }
}

impl Captured {
    fn node(&self, ino: Ino) -> io::Result<&CapturedNode> {
        self.nodes.get(&ino).ok_or_else(not_found)
    }

    fn thaw(&mut self) -> Result<(), String> {
        if std::mem::replace(&mut self.done, true) {
            return Ok(());
        }
        self.arena.thaw(&std::mem::take(&mut self.frozen))
    }
}

impl TreeSource for Captured {
    fn attr(&self, ino: Ino) -> io::Result<Attr> {
        Ok(self.node(ino)?.attr)
    }

    fn entries(&self, dir: Ino) -> io::Result<Vec<(OsString, Attr)>> {
        let Held::Dir(entries) = &self.node(dir)?.held else {
            return Err(io::Error::from_raw_os_error(libc::ENOTDIR));
        };
        entries
            .iter()
            .map(|(name, ino)| Ok((name.clone(), self.node(*ino)?.attr)))
            .collect()
    }

    fn readlink(&self, ino: Ino) -> io::Result<Vec<u8>> {
        match &self.node(ino)?.held {
            Held::Symlink(t) => Ok(t.clone()),
            _ => Err(io::Error::from_raw_os_error(libc::EINVAL)),
        }
    }

    fn xattrs(&self, ino: Ino) -> io::Result<Vec<(OsString, Vec<u8>)>> {
        Ok(self.node(ino)?.xattrs.clone())
    }

    /// Runs of consecutive pages, read from the frozen pages: nothing writes them in place
    /// and nothing releases them before `thaw`.
    fn data(
        &self,
        attr: &Attr,
        put: &mut dyn FnMut(u64, &[u8]) -> io::Result<()>,
    ) -> io::Result<()> {
        let Held::File(pages) = &self.node(attr.ino)?.held else {
            return Err(io::Error::from_raw_os_error(libc::EISDIR));
        };
        let mut piece = Vec::with_capacity(PIECE_PAGES * PAGE);
        let mut start = 0u64;
        for &(index, page) in pages {
            let at = index * P;
            if at >= attr.size {
                break;
            }
            let contiguous = start + piece.len() as u64 == at;
            if !piece.is_empty() && (!contiguous || piece.len() >= PIECE_PAGES * PAGE) {
                put(start, &piece)?;
                piece.clear();
            }
            if piece.is_empty() {
                start = at;
            }
            let len = (attr.size - at).min(P) as usize;
            piece.extend_from_slice(self.arena.bytes(page, 0, len));
        }
        if !piece.is_empty() {
            put(start, &piece)?;
        }
        Ok(())
    }
}

impl Capture for Captured {
    fn finish(mut self: Box<Self>) -> io::Result<()> {
        self.thaw().map_err(|why| {
            io::Error::other(format!(
                "the snapshot was abandoned and its copy thrown away: {why}; the volume's \
                 data is whole (its writes win over a snapshot); try again when less is \
                 written meanwhile"
            ))
        })
    }
}

impl Drop for Captured {
    /// A copy cut short (an error) lets go of the pages all the same.
    fn drop(&mut self) {
        let _ = self.thaw();
    }
}
