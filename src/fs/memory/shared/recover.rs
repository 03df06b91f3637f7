//! Taking over a kept tmpfs volume: its tree rebuilt from the shared node records, the
//! journal's names, xattrs and targets, and the arena's pages; link counts, parents, charges
//! and usage derived from them (so usage is exact whatever a crash cut short). Nodes without
//! a name stay until the handles the kernel still holds are restored, then those no handle
//! holds are freed (`free_unreachable`).
use std::collections::{BTreeMap, HashMap};
use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use nix::errno::Errno;

use super::arena::Owned;
use super::file::SharedPages;
use super::journal::State;
use super::{
    F_ATIME, F_CTIME, F_GID, F_INO, F_KIND, F_MTIME, F_PERM, F_RDEV, F_SIZE, F_UID, NodeRec,
    Shared, time_of,
};
use crate::fs::memory::filedata::FileData;
use crate::fs::memory::node::{Body, Meta, Node};
use crate::fs::memory::{MemFs, Tree, Trim, cost};
use crate::fs::quota::{Limits, Quota};
use crate::fs::{Fh, FileKind, FsError, FsResult, Ino, ROOT_INO, UsageSnapshot};

/// What a predecessor left besides the node records.
pub struct Found {
    pub state: State,
    pub owned: Vec<Owned>,
}

fn bad(what: String) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, what)
}

impl MemFs {
    /// The volume a predecessor left in `shared`.
    pub(in crate::fs::memory) fn recover(
        limits: Limits,
        shared: Arc<Shared>,
        found: Found,
    ) -> std::io::Result<MemFs> {
        let Found { mut state, owned } = found;
        // Nodes, from their records.
        struct Raw {
            rec: NodeRec,
            kind: FileKind,
            fields: Vec<u64>,
        }
        let mut raw: HashMap<Ino, Raw> = HashMap::new();
        for (slot, f) in shared.nodes.records() {
            let Some(kind) = FileKind::from_mode(f[F_KIND] as u32) else {
                log::warn!("tmpfs: a node record of unknown kind {:#o}", f[F_KIND]);
                shared.nodes.remove(slot);
                continue;
            };
            let rec = NodeRec {
                shared: shared.clone(),
                slot,
            };
            if let Some(old) = raw.insert(
                f[F_INO],
                Raw {
                    rec,
                    kind,
                    fields: f,
                },
            ) {
                shared.nodes.remove(old.rec.slot);
            }
        }
        if raw.get(&ROOT_INO).map(|r| r.kind) != Some(FileKind::Dir) {
            return Err(bad("the kept volume has no root directory".into()));
        }
        // Pages, by file; pages of no file go back.
        let mut pages: HashMap<Ino, BTreeMap<u64, u32>> = HashMap::new();
        let mut stray = Vec::new();
        for o in owned {
            if raw.get(&o.ino).is_some_and(|r| r.kind == FileKind::File) {
                if let Some(other) = pages.entry(o.ino).or_default().insert(o.index, o.page) {
                    stray.push(other);
                }
            } else {
                stray.push(o.page);
            }
        }
        shared.arena.release(&mut stray);

        // Names: link counts and parents. Entries naming no node are dropped.
        let mut nlink: HashMap<Ino, u32> = HashMap::new();
        let mut parent: HashMap<Ino, Ino> = HashMap::from([(ROOT_INO, ROOT_INO)]);
        state
            .dirs
            .retain(|dir, _| raw.get(dir).is_some_and(|r| r.kind == FileKind::Dir));
        for (&dir, entries) in &mut state.dirs {
            entries.retain(|_, ino| raw.contains_key(ino));
            for &ino in entries.values() {
                if raw[&ino].kind == FileKind::Dir {
                    parent.insert(ino, dir);
                    *nlink.entry(dir).or_default() += 1;
                } else {
                    *nlink.entry(ino).or_default() += 1;
                }
            }
        }

        let (mut bytes, mut inodes) = (0u64, 0u64);
        let mut nodes = HashMap::new();
        let mut highest = shared.journal.highest_ino();
        for (ino, Raw { rec, kind, fields }) in raw {
            highest = highest.max(ino);
            let links = match kind {
                FileKind::Dir if parent.contains_key(&ino) => {
                    2 + nlink.get(&ino).copied().unwrap_or(0)
                }
                FileKind::Dir => 0,
                _ => nlink.get(&ino).copied().unwrap_or(0),
            };
            let mut m = Meta::new(
                fields[F_PERM] as u32,
                fields[F_UID] as u32,
                fields[F_GID] as u32,
                links,
                fields[F_RDEV] as u32,
            );
            m.atime = time_of(fields[F_ATIME]);
            m.mtime = time_of(fields[F_MTIME]);
            m.ctime = time_of(fields[F_CTIME]);
            let xattrs = state.xattrs.remove(&ino).unwrap_or_default();
            for (name, value) in xattrs {
                let name = OsString::from_vec(name);
                m.xattr_bytes += cost::xattr(&name, value.len());
                m.xattrs.insert(name, value);
            }
            let body = match kind {
                FileKind::File => {
                    let map = pages.remove(&ino).unwrap_or_default();
                    let data =
                        SharedPages::recovered(shared.arena.clone(), ino, fields[F_SIZE], map);
                    bytes += data.allocated();
                    Body::File(FileData::Shared(data))
                }
                FileKind::Dir => {
                    let entries: BTreeMap<OsString, Ino> = state
                        .dirs
                        .remove(&ino)
                        .unwrap_or_default()
                        .into_iter()
                        .map(|(name, ino)| (OsString::from_vec(name), ino))
                        .collect();
                    m.entry_bytes = entries.keys().map(|n| cost::entry(n)).sum();
                    Body::Dir {
                        entries,
                        parent: parent.get(&ino).copied().unwrap_or(ino),
                    }
                }
                FileKind::Symlink => {
                    let target = state.targets.remove(&ino).unwrap_or_default();
                    m.target_bytes = cost::target(target.len());
                    Body::Symlink(target)
                }
                _ => Body::Special,
            };
            m.charged = cost::pages(kind, m.entry_bytes + m.xattr_bytes + m.target_bytes);
            bytes += m.charged;
            inodes += 1;
            let node = Node::new(ino, kind, m, body).with_rec(Some(rec));
            // The kernel's lookups are not carried (see `shared`); the root's never ends.
            if ino == ROOT_INO {
                node.lookups.store(1, Ordering::Relaxed);
            }
            nodes.insert(ino, Arc::new(node));
        }
        let nameless = nodes
            .values()
            .filter(|n| n.meta.lock().nlink == 0 && n.ino != ROOT_INO)
            .count();
        log::info!("tmpfs: took over {inodes} nodes ({nameless} without a name) and {bytes} bytes");
        Ok(MemFs {
            tree: parking_lot::RwLock::new(Tree {
                nodes,
                next_ino: highest,
            }),
            quota: Quota::new(limits, UsageSnapshot { bytes, inodes }),
            files: Default::default(),
            dirs: Default::default(),
            trim: Trim {
                pending: std::sync::atomic::AtomicU64::new(0),
            },
            shared: Some(shared),
        })
    }

    /// Re-creates handle `fh` of node `ino` a predecessor left open.
    pub(in crate::fs::memory) fn restore(&self, fh: Fh, ino: Ino, dir: bool) -> FsResult<()> {
        let node = self.node(ino)?;
        if dir {
            if node.kind != FileKind::Dir {
                return Err(FsError::Os(Errno::ENOTDIR));
            }
            node.open.fetch_add(1, Ordering::SeqCst);
            self.dirs.insert_at(fh, (node, Default::default()));
        } else {
            if node.kind == FileKind::Dir {
                return Err(FsError::Os(Errno::EISDIR));
            }
            node.open.fetch_add(1, Ordering::SeqCst);
            self.files.insert_at(fh, node);
        }
        Ok(())
    }

    /// After the handles were restored: nodes without a name that no handle holds are freed.
    /// The kernel may still name one (an `O_PATH` descriptor, a working directory): it then
    /// gets `ESTALE`, as the lookups that kept it before the restart are not carried.
    pub(in crate::fs::memory) fn free_unreachable(&self) {
        let nameless: Vec<Arc<Node>> = self
            .tree
            .read()
            .nodes
            .values()
            .filter(|n| n.ino != ROOT_INO && n.meta.lock().nlink == 0)
            .cloned()
            .collect();
        for node in nameless {
            self.release_if_unused(&node);
        }
    }
}
