//! The daemon's side of the keeper: one connection, one request at a time.
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::protocol::{self, Reader, Writer};
use crate::sys::fdpass;

/// How long a keeper just started may take to listen.
const START_TIMEOUT: Duration = Duration::from_secs(5);

/// One entry a volume has in the keeper.
#[derive(Debug)]
pub struct KeptEntry {
    pub key: String,
    pub data: Vec<u8>,
    pub fds: Vec<OwnedFd>,
}

/// A connection to the keeper of a root.
pub struct Keeper {
    conn: Mutex<OwnedFd>,
}

impl Keeper {
    /// Connects to the keeper of `root`, starting one (`fvol keeper`, from this very binary)
    /// if none answers. Only the daemon holding the root's lock may call this, so at most one
    /// keeper is ever started.
    pub fn connect_or_start(root: &Path) -> io::Result<Keeper> {
        let socket = root.join(super::SOCKET_FILE);
        if let Ok(conn) = fdpass::connect(&socket) {
            return Ok(Keeper::on(conn));
        }
        start(root)?;
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            match fdpass::connect(&socket) {
                Ok(conn) => return Ok(Keeper::on(conn)),
                Err(e) if Instant::now() > deadline => {
                    return Err(io::Error::new(
                        e.kind(),
                        format!(
                            "the keeper started for {} does not answer on {}: {e} (see {})",
                            root.display(),
                            socket.display(),
                            root.join(super::LOG_FILE).display()
                        ),
                    ));
                }
                Err(_) => std::thread::sleep(Duration::from_millis(10)),
            }
        }
    }

    fn on(conn: OwnedFd) -> Keeper {
        Keeper {
            conn: Mutex::new(conn),
        }
    }

    /// Stores `data` and `fds` as entry `key` of volume `vol`, replacing an entry of that key.
    /// With `watch`, `fds[0]` is the volume's FUSE connection: the keeper drops the volume
    /// once the kernel ends it.
    pub fn put(
        &self,
        vol: &str,
        key: &str,
        data: &[u8],
        fds: &[BorrowedFd<'_>],
        watch: bool,
    ) -> io::Result<()> {
        let flags = if watch { protocol::WATCH } else { 0 };
        let msg = Writer::new(protocol::PUT)
            .byte(flags)
            .field(vol.as_bytes())
            .field(key.as_bytes())
            .field(data);
        self.request(msg, fds).map(drop)
    }

    /// Drops entry `key` of volume `vol` (closing its descriptors); unknown ones are fine.
    pub fn remove(&self, vol: &str, key: &str) -> io::Result<()> {
        if key.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "an entry key is never empty",
            ));
        }
        let msg = Writer::new(protocol::DROP)
            .field(vol.as_bytes())
            .field(key.as_bytes());
        self.request(msg, &[]).map(drop)
    }

    /// Drops everything volume `vol` has in the keeper. Once this returns, the keeper holds
    /// none of its descriptors.
    pub fn drop_volume(&self, vol: &str) -> io::Result<()> {
        let msg = Writer::new(protocol::DROP).field(vol.as_bytes()).field(b"");
        self.request(msg, &[]).map(drop)
    }

    /// Every entry of volume `vol` (copies of its descriptors: the keeper keeps its own).
    pub fn get(&self, vol: &str) -> io::Result<Vec<KeptEntry>> {
        self.request(Writer::new(protocol::GET).field(vol.as_bytes()), &[])
    }

    /// The volumes the keeper holds something of.
    pub fn volumes(&self) -> io::Result<Vec<String>> {
        Ok(self
            .request(Writer::new(protocol::LIST), &[])?
            .into_iter()
            .map(|e| e.key)
            .collect())
    }

    fn request(&self, msg: Writer, fds: &[BorrowedFd<'_>]) -> io::Result<Vec<KeptEntry>> {
        let msg = msg.finish()?;
        let conn = self.conn.lock();
        fdpass::send(conn.as_fd(), &msg, fds)?;
        let mut items = Vec::new();
        let mut buf = vec![0u8; protocol::MAX_MESSAGE];
        loop {
            let (len, fds) = fdpass::recv(conn.as_fd(), &mut buf)?;
            if len == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::ConnectionAborted,
                    "the keeper closed the connection",
                ));
            }
            let (op, mut r) = Reader::new(&buf[..len])?;
            match op {
                protocol::ITEM => items.push(KeptEntry {
                    key: r.text()?.to_string(),
                    data: r.field()?.to_vec(),
                    fds,
                }),
                protocol::OK => return Ok(items),
                protocol::ERROR => {
                    let why = String::from_utf8_lossy(r.field()?).into_owned();
                    return Err(io::Error::other(format!("the keeper refused: {why}")));
                }
                other => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("unknown answer {other:#x} from the keeper"),
                    ));
                }
            }
        }
    }
}

/// Starts `fvol --root ROOT keeper` from this binary, logging to `ROOT/keeper.log`. A thread
/// reaps it should it exit while the daemon runs.
fn start(root: &Path) -> io::Result<()> {
    let log_path: PathBuf = root.join(super::LOG_FILE);
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(&log_path)
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", log_path.display())))?;
    let mut child = Command::new("/proc/self/exe")
        .arg("--root")
        .arg(root)
        .arg("keeper")
        .env_remove("FVOL_ROOT")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .map_err(|e| io::Error::new(e.kind(), format!("starting the keeper: {e}")))?;
    log::info!(
        "started the keeper (pid {}) for {}",
        child.id(),
        root.display()
    );
    std::thread::Builder::new()
        .name("keeper-reaper".into())
        .spawn(move || {
            let _ = child.wait();
        })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A keeper loop run in a thread, and a client talking to it.
    #[test]
    fn entries_round_trip_through_a_keeper() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_path_buf();
        let server_root = root.clone();
        let server = std::thread::spawn(move || super::super::server::run(&server_root));
        let deadline = Instant::now() + START_TIMEOUT;
        let conn = loop {
            match fdpass::connect(&root.join(super::super::SOCKET_FILE)) {
                Ok(c) => break c,
                Err(_) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10))
                }
                Err(e) => panic!("no keeper: {e}"),
            }
        };
        let keeper = Keeper::on(conn);
        let file = tempfile::tempfile().unwrap();
        keeper
            .put("v1", "conn", b"init", &[file.as_fd()], false)
            .unwrap();
        keeper
            .put("v1", "table", b"", &[file.as_fd()], false)
            .unwrap();
        keeper.put("v2", "x", b"2", &[], false).unwrap();
        assert_eq!(keeper.volumes().unwrap(), ["v1", "v2"]);
        let got = keeper.get("v1").unwrap();
        let keys: Vec<_> = got.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(keys, ["conn", "table"]);
        assert_eq!(got[0].data, b"init");
        assert_eq!(got[0].fds.len(), 1);
        keeper.remove("v1", "table").unwrap();
        assert_eq!(keeper.get("v1").unwrap().len(), 1);
        keeper.drop_volume("v1").unwrap();
        keeper.drop_volume("v2").unwrap();
        assert!(keeper.volumes().unwrap().is_empty());
        assert!(keeper.get("nothing").unwrap().is_empty());
        // A watched entry needs its descriptor.
        assert!(keeper.put("v3", "conn", b"", &[], true).is_err());
        // With nothing held and its only client gone, the keeper exits.
        drop(keeper);
        server.join().unwrap().unwrap();
    }
}
