//! A file's bytes, wherever the volume keeps them: in the handler's own memory (`Pages`), or
//! for a volume that outlives its handler, in the shared arena the keeper holds
//! (`shared::file::SharedPages`). Both count in 4 KiB pages and behave alike.
use super::pages::Pages;
use super::shared::file::SharedPages;
use crate::fs::FsResult;

pub enum FileData {
    Own(Pages),
    Shared(SharedPages),
}

impl Default for FileData {
    fn default() -> Self {
        FileData::Own(Pages::default())
    }
}

macro_rules! both {
    ($self:expr, $p:ident => $e:expr) => {
        match $self {
            FileData::Own($p) => $e,
            FileData::Shared($p) => $e,
        }
    };
}

impl FileData {
    pub fn size(&self) -> u64 {
        both!(self, p => p.size)
    }

    /// Grows the size to `size` if it is below (a hole).
    pub fn extend_to(&mut self, size: u64) {
        both!(self, p => p.size = p.size.max(size))
    }

    pub fn allocated(&self) -> u64 {
        both!(self, p => p.allocated())
    }

    pub fn allocated_end(&self, offset: u64, limit: u64) -> u64 {
        both!(self, p => p.allocated_end(offset, limit))
    }

    pub fn read_with<R>(&self, offset: u64, len: u64, f: impl FnOnce(&[u8]) -> R) -> R {
        both!(self, p => p.read_with(offset, len, f))
    }

    /// Writes `data` at `offset`; returns the bytes newly allocated.
    pub fn write(&mut self, offset: u64, data: &[u8]) -> FsResult<u64> {
        match self {
            FileData::Own(p) => Ok(p.write(offset, data)),
            FileData::Shared(p) => p.write(offset, data),
        }
    }

    pub fn allocate(&mut self, offset: u64, len: u64, keep_size: bool) -> FsResult<u64> {
        match self {
            FileData::Own(p) => Ok(p.allocate(offset, len, keep_size)),
            FileData::Shared(p) => p.allocate(offset, len, keep_size),
        }
    }

    pub fn punch(&mut self, offset: u64, len: u64) -> u64 {
        both!(self, p => p.punch(offset, len))
    }

    pub fn truncate(&mut self, size: u64) -> u64 {
        both!(self, p => p.truncate(size))
    }

    pub fn seek_data(&self, offset: u64) -> Option<u64> {
        both!(self, p => p.seek_data(offset))
    }

    pub fn seek_hole(&self, offset: u64) -> Option<u64> {
        both!(self, p => p.seek_hole(offset))
    }

    pub fn clear(&mut self) -> u64 {
        both!(self, p => p.clear())
    }

    /// Heap bytes freed since the last call (shared pages go back at once).
    pub fn take_heap_freed(&mut self) -> u64 {
        match self {
            FileData::Own(p) => p.take_heap_freed(),
            FileData::Shared(_) => 0,
        }
    }
}
