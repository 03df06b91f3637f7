//! File data: read, write, truncate, fallocate, seek and copy, within the quota.
use std::sync::Arc;
use std::time::SystemTime;

use nix::errno::Errno;

use super::MemFs;
use super::filedata::FileData;
use super::node::{Body, Node};
use super::pages::PAGE;
use crate::fs::quota::plan_write;
use crate::fs::rules::{self, Seek};
use crate::fs::{FsError, FsResult};

fn pages_mut(body: &mut Body) -> FsResult<&mut FileData> {
    match body {
        Body::File(p) => Ok(p),
        Body::Dir { .. } => Err(FsError::Os(Errno::EISDIR)),
        _ => Err(FsError::Invalid),
    }
}

fn pages(body: &Body) -> FsResult<&FileData> {
    match body {
        Body::File(p) => Ok(p),
        Body::Dir { .. } => Err(FsError::Os(Errno::EISDIR)),
        _ => Err(FsError::Invalid),
    }
}

/// copy_file_range copies this much at a time.
const COPY_PIECE: u64 = 1 << 20;

impl MemFs {
    /// Hands the bytes to `send` while holding the node's data for reading, so that they can
    /// go out straight from the store (writers of this file wait for the copy to finish).
    pub(super) fn read_node(
        &self,
        node: &Node,
        offset: u64,
        size: u32,
        send: &mut dyn FnMut(&[u8]),
    ) -> FsResult<()> {
        pages(&node.body.read())?.read_with(offset, size as u64, send);
        let mut m = node.meta.lock();
        // relatime: atime moves when it is older than the last change.
        if m.atime <= m.mtime || m.atime <= m.ctime {
            m.atime = SystemTime::now();
            node.save(&m);
        }
        Ok(())
    }

    /// Writes what fits in the quota: everything, a page-aligned prefix, or nothing.
    pub(super) fn write_node(&self, node: &Node, offset: u64, data: &[u8]) -> FsResult<u32> {
        let mut body = node.body.write();
        let p = pages_mut(&mut body)?;
        let allocated = p.allocated_end(offset, offset + data.len() as u64);
        let (plan, _reservation) = self
            .quota
            .reserve_write(|avail| plan_write(offset, data.len() as u64, allocated, PAGE, avail))?;
        let grown = p.write(offset, &data[..plan.len as usize])?;
        self.quota.adjust(grown as i64, 0);
        node.save_size(p.size());
        let heap = p.take_heap_freed();
        drop(body);
        self.give_back(0, heap);
        let mut m = node.meta.lock();
        let now = SystemTime::now();
        m.mtime = now;
        m.ctime = now;
        node.save(&m);
        Ok(plan.len as u32)
    }

    /// Shrinking frees pages; growing makes a hole, which is free.
    pub(super) fn truncate_node(&self, node: &Node, size: u64) -> FsResult<()> {
        let (freed, heap) = {
            let mut body = node.body.write();
            let p = pages_mut(&mut body)?;
            let freed = p.truncate(size);
            node.save_size(size);
            (freed, p.take_heap_freed())
        };
        self.give_back(freed, heap);
        Ok(())
    }

    pub(super) fn fallocate_node(
        &self,
        node: &Node,
        offset: u64,
        len: u64,
        mode: i32,
    ) -> FsResult<()> {
        let keep_size = mode & libc::FALLOC_FL_KEEP_SIZE != 0;
        let mut body = node.body.write();
        let p = pages_mut(&mut body)?;
        let freed = match mode & !libc::FALLOC_FL_KEEP_SIZE {
            0 => {
                let need = plan_write(
                    offset,
                    len,
                    p.allocated_end(offset, offset + len),
                    PAGE,
                    u64::MAX,
                )
                .reserve;
                let _reservation = self.quota.reserve(need, 0)?;
                let grown = p.allocate(offset, len, keep_size)?;
                self.quota.adjust(grown as i64, 0);
                0
            }
            libc::FALLOC_FL_PUNCH_HOLE if keep_size => p.punch(offset, len),
            libc::FALLOC_FL_ZERO_RANGE => {
                let freed = p.punch(offset, len);
                if !keep_size {
                    p.extend_to(offset + len);
                }
                freed
            }
            _ => return Err(FsError::Unsupported),
        };
        node.save_size(p.size());
        let heap = p.take_heap_freed();
        drop(body);
        self.give_back(freed, heap);
        node.touch_ctime();
        Ok(())
    }

    pub(super) fn seek_node(&self, node: &Node, offset: i64, whence: i32) -> FsResult<i64> {
        let body = node.body.read();
        let p = pages(&body)?;
        let found = match rules::seek_request(offset, whence, p.size())? {
            Seek::At(at) => return Ok(at),
            Seek::Data(from) => p.seek_data(from),
            Seek::Hole(from) => p.seek_hole(from),
        };
        found.map(|o| o as i64).ok_or(FsError::Os(Errno::ENXIO))
    }

    pub(super) fn copy_range(
        &self,
        from: &Arc<Node>,
        off_in: u64,
        to: &Arc<Node>,
        off_out: u64,
        len: u64,
    ) -> FsResult<u32> {
        let len = len.min(1 << 30);
        let mut copied = 0u64;
        let mut piece = Vec::new();
        // A piece at a time, so that a big copy needs no buffer of its size; each piece is
        // read with the source unlocked again before the write (source and target may be the
        // same file). Piece by piece is right because the ranges never overlap: the kernel
        // refuses overlapping copies within a file (EINVAL) before asking the handler.
        while copied < len {
            let want = (len - copied).min(COPY_PIECE);
            pages(&from.body.read())?.read_with(off_in + copied, want, |d| {
                piece.clear();
                piece.extend_from_slice(d);
            });
            if piece.is_empty() {
                break;
            }
            let written = match self.write_node(to, off_out + copied, &piece) {
                Ok(n) => n as u64,
                // What was copied stands: a short copy, as with a short write.
                Err(_) if copied > 0 => break,
                Err(e) => return Err(e),
            };
            copied += written;
            if written < piece.len() as u64 {
                break;
            }
        }
        Ok(copied as u32)
    }

    /// Returns freed bytes to the quota, and heap memory to the system once enough of it was
    /// freed (mapped memory went back when it was discarded).
    pub(super) fn give_back(&self, bytes: u64, heap: u64) {
        if bytes > 0 {
            self.quota.adjust(-(bytes as i64), 0);
        }
        if heap > 0 {
            self.trim.freed(heap);
        }
    }
}
