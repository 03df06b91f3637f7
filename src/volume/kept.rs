//! A volume's entries in the keeper (see `crate::keeper`), which let its FUSE connection
//! outlive the daemon: `conn` (the connection and its INIT exchange, watched, so the keeper
//! drops the volume when the kernel ends it), `table:NAME` (the shared tables of
//! `fs::resume`), `held:INO` (descriptors of open inodes without a name).
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;

use crate::fs::Ino;
use crate::fs::resume::{Carry, Holder};
use crate::fuse::{Connection, MountedFs};
use crate::keeper::{Keeper, KeptEntry};

const CONN: &str = "conn";
const TABLE: &str = "table:";
const HELD: &str = "held:";

/// Keeps descriptors of open inodes without a name in the keeper, as `held:INO` of a volume.
struct KeeperHolder {
    keeper: Arc<Keeper>,
    volume: String,
}

impl Holder for KeeperHolder {
    fn hold(&self, ino: Ino, fd: BorrowedFd<'_>) -> io::Result<()> {
        self.keeper
            .put(&self.volume, &format!("{HELD}{ino}"), b"", &[fd], false)
    }

    fn release(&self, ino: Ino) {
        if let Err(e) = self.keeper.remove(&self.volume, &format!("{HELD}{ino}")) {
            log::warn!(
                "volume {}: dropping the kept descriptor of inode {ino}: {e}",
                self.volume
            );
        }
    }
}

/// A new volume's carry: its state is kept in `keeper` from the start.
pub fn fresh(keeper: &Arc<Keeper>, volume: &str) -> Carry {
    Carry::fresh(holder(keeper, volume))
}

fn holder(keeper: &Arc<Keeper>, volume: &str) -> Arc<dyn Holder> {
    Arc::new(KeeperHolder {
        keeper: keeper.clone(),
        volume: volume.to_string(),
    })
}

/// What a predecessor left of `volume` in the keeper: its connection, and the carry for the
/// filesystem that takes it over.
pub fn take_over(
    keeper: &Arc<Keeper>,
    volume: &str,
    entries: Vec<KeptEntry>,
) -> io::Result<(Connection, Carry)> {
    let mut connection = None;
    let mut tables = Vec::new();
    let mut held = Vec::new();
    for entry in entries {
        let Some(fd) = entry.fds.into_iter().next() else {
            continue;
        };
        if entry.key == CONN {
            connection = Some(Connection::decode(&entry.data, fd)?);
        } else if let Some(name) = entry.key.strip_prefix(TABLE) {
            tables.push((name.to_string(), fd));
        } else if let Some(ino) = entry.key.strip_prefix(HELD).and_then(|i| i.parse().ok()) {
            held.push((ino, fd));
        }
    }
    let connection = connection.ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::NotFound,
            "the keeper has no connection of it",
        )
    })?;
    Ok((
        connection,
        Carry::resumed(tables, held, holder(keeper, volume)),
    ))
}

/// Gives the keeper the tables a successor made that its predecessor had not left (one of an
/// older version: an rbd volume's redo journal), so that the next successor finds them.
pub fn add_tables(keeper: &Keeper, volume: &str, carry: &mut Carry) -> io::Result<()> {
    for (name, fd) in carry.take_outgoing() {
        keeper.put(volume, &format!("{TABLE}{name}"), b"", &[fd.as_fd()], false)?;
    }
    Ok(())
}

/// Gives the keeper what a successor needs of a volume mounted just now: the tables made for
/// it, then its connection (watched). Until the connection is there the volume is not kept,
/// so a crash in between leaves nothing half kept.
pub fn register(
    keeper: &Keeper,
    volume: &str,
    mounted: &MountedFs,
    carry: &mut Carry,
) -> io::Result<()> {
    for (name, fd) in carry.take_outgoing() {
        keeper.put(volume, &format!("{TABLE}{name}"), b"", &[fd.as_fd()], false)?;
    }
    let conn = mounted.connection();
    let device: &OwnedFd = &conn.device;
    keeper.put(volume, CONN, &conn.encode(), &[device.as_fd()], true)
}
