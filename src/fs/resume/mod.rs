//! What a volume's filesystem leaves for the handler that serves its FUSE connection after
//! this one (a restart, an upgrade or a crash of the daemon; see docs/architecture.md,
//! "Restarts"): the kernel keeps node ids, lookup counts and open handles across the change
//! of handler, so the successor must know them.
//!
//! - `Table`: records in shared memory (a memfd the keeper holds), written as the handler
//!   goes, so they are there whatever way it ends.
//! - `ResumableFs`: wraps any core; records open handles (the core re-creates them at the
//!   same numbers, `VolumeFs::restore_handle`) and answers a request the kernel sends again
//!   after a restart (`FUSE_NOTIFY_RESEND`) as its first run would have, if that run did it.
//! - `Carry`: what a core gets at activation: its tables (new, or its predecessor's), and the
//!   descriptors kept for it.
//! - `Holder`: where a core puts descriptors that must outlive the handler (an inode that
//!   lost its last name while open exists only as long as a descriptor of it does).
mod replay;
mod table;

use std::cell::Cell;
use std::io;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::sync::Arc;

pub use replay::{HANDLE_CAPACITY, HANDLE_FIELDS, ResumableFs};
pub use table::{Slot, Table};

use super::Ino;

/// Keeps descriptors for the next handler, by node id.
pub trait Holder: Send + Sync {
    /// Keeps `fd` (an inode that has no name but is open) for the next handler as `ino`'s.
    fn hold(&self, ino: Ino, fd: BorrowedFd<'_>) -> io::Result<()>;
    /// Drops what `hold` kept for `ino`.
    fn release(&self, ino: Ino);
}

/// Holds nothing: for volumes that do not outlive their handler.
pub struct NoHolder;

impl Holder for NoHolder {
    fn hold(&self, _ino: Ino, _fd: BorrowedFd<'_>) -> io::Result<()> {
        Ok(())
    }
    fn release(&self, _ino: Ino) {}
}

/// What a volume's handler keeps for its successor, and what it got from its predecessor:
/// handed to the core at activation and to the FUSE layer at mounting, each taking the
/// tables it needs by name.
pub struct Carry {
    /// The predecessor's state is here: restore it.
    pub resumed: bool,
    /// The state is kept for a successor.
    keep: bool,
    /// The predecessor's tables, by name, until taken.
    incoming: Vec<(String, OwnedFd)>,
    /// Tables made by this handler, for the keeper.
    outgoing: Vec<(String, OwnedFd)>,
    /// Descriptors the predecessor had kept (see `Holder`), by node id.
    pub held: Vec<(Ino, OwnedFd)>,
    pub holder: Arc<dyn Holder>,
}

impl Carry {
    /// Nothing is kept: the volume does not outlive its handler.
    pub fn none() -> Carry {
        Carry {
            resumed: false,
            keep: false,
            incoming: Vec::new(),
            outgoing: Vec::new(),
            held: Vec::new(),
            holder: Arc::new(NoHolder),
        }
    }

    /// A first activation whose state is kept for successors; `holder` keeps descriptors.
    pub fn fresh(holder: Arc<dyn Holder>) -> Carry {
        Carry {
            keep: true,
            holder,
            ..Carry::none()
        }
    }

    /// The successor of a handler that left the tables `incoming` (by name) and `held`.
    pub fn resumed(
        incoming: Vec<(String, OwnedFd)>,
        held: Vec<(Ino, OwnedFd)>,
        holder: Arc<dyn Holder>,
    ) -> Carry {
        Carry {
            resumed: true,
            keep: true,
            incoming,
            outgoing: Vec::new(),
            held,
            holder,
        }
    }

    /// Whether the state is kept for a successor.
    pub fn keeps(&self) -> bool {
        self.keep
    }

    /// Table `name` of records of `fields` words: the predecessor's when resuming, else a new
    /// one of `capacity` records; None when nothing is kept.
    pub fn table(&mut self, name: &str, fields: usize, capacity: u32) -> io::Result<Option<Table>> {
        if !self.keep {
            return Ok(None);
        }
        if self.resumed {
            let at = self.incoming.iter().position(|(n, _)| n == name);
            let Some(at) = at else {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("the previous handler left no table {name}"),
                ));
            };
            let (_, fd) = self.incoming.swap_remove(at);
            return Table::open(fd, fields).map(Some);
        }
        let table = Table::create(&format!("fvol-{name}"), fields, capacity)?;
        self.outgoing
            .push((name.to_string(), table.fd().try_clone_to_owned()?));
        Ok(Some(table))
    }

    /// A shared file (a memfd) the predecessor left as `name`, when resuming; else None, and
    /// the caller makes one and gives it to `keep_file`.
    pub fn take_file(&mut self, name: &str) -> io::Result<Option<OwnedFd>> {
        if !self.resumed {
            return Ok(None);
        }
        match self.incoming.iter().position(|(n, _)| n == name) {
            Some(at) => Ok(Some(self.incoming.swap_remove(at).1)),
            None => Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("the previous handler left no {name}"),
            )),
        }
    }

    /// `take_file` for a file a predecessor may not have left (one of an older version): None
    /// then too.
    pub fn take_file_if_left(&mut self, name: &str) -> io::Result<Option<OwnedFd>> {
        if !self.resumed {
            return Ok(None);
        }
        Ok(self
            .incoming
            .iter()
            .position(|(n, _)| n == name)
            .map(|at| self.incoming.swap_remove(at).1))
    }

    /// Keeps a shared file this handler made as `name`, for its successors.
    pub fn keep_file(&mut self, name: &str, fd: BorrowedFd<'_>) -> io::Result<()> {
        if self.keep {
            self.outgoing
                .push((name.to_string(), fd.try_clone_to_owned()?));
        }
        Ok(())
    }

    /// The tables made by this handler, for the keeper (once).
    pub fn take_outgoing(&mut self) -> Vec<(String, OwnedFd)> {
        std::mem::take(&mut self.outgoing)
    }
}

thread_local! {
    /// The request being served was sent again after a restart (see `with_resent`).
    static RESENT: Cell<bool> = const { Cell::new(false) };
}

/// Runs `f` for a request that the kernel sent again after a restart of the handler: a
/// predecessor may have carried it out already (see `ResumableFs`).
pub fn with_resent<T>(f: impl FnOnce() -> T) -> T {
    RESENT.with(|r| r.set(true));
    let out = f();
    RESENT.with(|r| r.set(false));
    out
}

fn resent() -> bool {
    RESENT.with(Cell::get)
}

/// Test-only stall points. With `FVOL_FAULT=<point>` in the daemon's environment, a request
/// reaching that point is never answered: its thread stops there (as if the daemon died while
/// serving it), so a test can kill the daemon with a request provably in flight and check
/// what the next daemon makes of it. Never set it in production.
///
/// Points: `before-read`, and `after-OP` (the operation was carried out, its answer not sent)
/// for OP in mkdir, mknod, symlink, link, create, unlink, rmdir, rename.
pub fn stall_point(point: &str) {
    static WANTED: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    let wanted = WANTED.get_or_init(|| std::env::var("FVOL_FAULT").ok());
    if wanted.as_deref() == Some(point) {
        log::error!("FVOL_FAULT={point}: leaving this request unanswered (a test's stall point)");
        loop {
            std::thread::park();
        }
    }
}
