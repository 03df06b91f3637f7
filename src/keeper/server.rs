//! `fvol keeper`: one thread, one poll loop. It holds entries (bytes and descriptors) per
//! volume for the daemon, and drops a volume whose FUSE connection the kernel ended (looked
//! at after every wake-up of the loop, at least once a second, without waiting on it: see
//! `ended_connections`).
use std::collections::BTreeMap;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

use super::protocol::{self, Reader, Writer};
use crate::sys::fdpass;

/// A keeper that was started but never got a client gives up after this long.
const UNUSED_FOR: Duration = Duration::from_secs(30);
/// How long an answer may take to be sent before the client is dropped.
const SEND_TIMEOUT: Duration = Duration::from_secs(5);
/// Entries held at most (a bound on the memory a confused client can make it use).
const MAX_ENTRIES: usize = 1 << 20;

struct Entry {
    data: Vec<u8>,
    fds: Vec<OwnedFd>,
    /// `fds[0]` is the volume's FUSE connection.
    watch: bool,
}

#[derive(Default)]
struct Held {
    volumes: BTreeMap<String, BTreeMap<String, Entry>>,
    entries: usize,
}

impl Held {
    fn drop_volume(&mut self, vol: &str) -> bool {
        match self.volumes.remove(vol) {
            Some(entries) => {
                self.entries -= entries.len();
                true
            }
            None => false,
        }
    }
}

fn log(what: std::fmt::Arguments<'_>) {
    let now = humantime::format_rfc3339_seconds(std::time::SystemTime::now());
    eprintln!("{now} fvol keeper[{}]: {what}", std::process::id());
}

/// `fvol keeper`: detaches into a session of its own (no terminal's signals reach it, and
/// the daemon's death leaves it alone) and runs until it holds nothing and no daemon is
/// connected.
pub fn main(root: &Path) -> ExitCode {
    fdpass::close_inherited();
    let _ = nix::unistd::setsid();
    let _ = std::env::set_current_dir("/");
    match run(root) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log(format_args!("{e}"));
            ExitCode::FAILURE
        }
    }
}

/// The keeper's loop for `root`.
pub fn run(root: &Path) -> io::Result<()> {
    let socket = root.join(super::SOCKET_FILE);
    if fdpass::connect(&socket).is_ok() {
        // Another keeper serves this root already.
        return Ok(());
    }
    let listener = bind(&socket).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("cannot listen on {}: {e}", socket.display()),
        )
    })?;
    log(format_args!("holding volumes for {}", root.display()));
    let mut held = Held::default();
    let mut clients: Vec<OwnedFd> = Vec::new();
    let started = Instant::now();
    let mut ever_connected = false;
    loop {
        if held.volumes.is_empty()
            && clients.is_empty()
            && (ever_connected || started.elapsed() > UNUSED_FOR)
        {
            break;
        }
        let (ready_listener, ready_clients) = {
            let mut fds = vec![PollFd::new(listener.as_fd(), PollFlags::POLLIN)];
            fds.extend(
                clients
                    .iter()
                    .map(|c| PollFd::new(c.as_fd(), PollFlags::POLLIN)),
            );
            match poll(&mut fds, PollTimeout::from(1000u16)) {
                Ok(_) => {}
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => {
                    log(format_args!("poll: {e}"));
                    std::thread::sleep(Duration::from_millis(100));
                    continue;
                }
            }
            let ready_listener = is_ready(&fds[0]);
            let ready_clients: Vec<usize> = (0..clients.len())
                .filter(|&i| is_ready(&fds[1 + i]))
                .collect();
            (ready_listener, ready_clients)
        };
        let ended = ended_connections(&held);
        for vol in ended {
            if held.drop_volume(&vol) {
                log(format_args!(
                    "volume {vol}: its FUSE connection ended; dropped"
                ));
            }
        }
        // Clients that hung up or misbehaved, removed after the loop (indices stay valid).
        let mut gone = Vec::new();
        for i in ready_clients {
            if !serve_one(&clients[i], &mut held) {
                gone.push(i);
            }
        }
        for i in gone.into_iter().rev() {
            clients.remove(i);
        }
        if ready_listener {
            match accept(&listener) {
                Ok(client) => {
                    ever_connected = true;
                    clients.push(client);
                }
                Err(e) => log(format_args!("refused a connection: {e}")),
            }
        }
    }
    let _ = std::fs::remove_file(&socket);
    log(format_args!("nothing left to hold; exiting"));
    Ok(())
}

fn is_ready(fd: &PollFd<'_>) -> bool {
    fd.revents().is_some_and(|r| !r.is_empty())
}

/// The volumes whose FUSE connection the kernel ended (it reports `POLLERR` then).
///
/// Looked at without waiting, never in the blocking poll: a poller of a FUSE descriptor sleeps
/// on the connection's request queue and is woken by every request queued, whatever events it
/// asked for. Watching there cost every request of every volume a wake-up of this process,
/// about half of a small write's or a create's time on two cores. A zero timeout registers
/// no waiter.
fn ended_connections(held: &Held) -> Vec<String> {
    let mut fds = Vec::new();
    let mut watched = Vec::new();
    for (vol, entries) in &held.volumes {
        for e in entries.values().filter(|e| e.watch) {
            if let Some(fd) = e.fds.first() {
                fds.push(PollFd::new(fd.as_fd(), PollFlags::empty()));
                watched.push(vol);
            }
        }
    }
    if fds.is_empty() || !matches!(poll(&mut fds, PollTimeout::ZERO), Ok(n) if n > 0) {
        return Vec::new();
    }
    watched
        .into_iter()
        .zip(&fds)
        .filter(|(_, fd)| is_ready(fd))
        .map(|(vol, _)| vol.clone())
        .collect()
}

/// Accepts a connection from root only.
fn accept(listener: &OwnedFd) -> io::Result<OwnedFd> {
    let client = fdpass::accept(listener.as_fd())?;
    match fdpass::peer_uid(client.as_fd())? {
        0 => {}
        uid => return Err(io::Error::other(format!("uid {uid} is not root"))),
    }
    nix::sys::socket::setsockopt(
        &client,
        nix::sys::socket::sockopt::SendTimeout,
        &nix::sys::time::TimeVal::new(SEND_TIMEOUT.as_secs() as i64, 0),
    )?;
    Ok(client)
}

/// Serves one request of `client`; false when the client is gone or must be dropped.
fn serve_one(client: &OwnedFd, held: &mut Held) -> bool {
    let mut buf = vec![0u8; protocol::MAX_MESSAGE];
    let (len, fds) = match fdpass::recv(client.as_fd(), &mut buf) {
        Ok((0, _)) => return false,
        Ok(got) => got,
        Err(e) => {
            log(format_args!("dropping a client: {e}"));
            return false;
        }
    };
    let answered = match handle(&buf[..len], fds, held, client) {
        Ok(()) => send(client, Writer::new(protocol::OK)),
        Err(e) => send(
            client,
            Writer::new(protocol::ERROR).field(e.to_string().as_bytes()),
        ),
    };
    if let Err(e) = &answered {
        log(format_args!("dropping a client: {e}"));
    }
    answered.is_ok()
}

fn send(client: &OwnedFd, message: Writer) -> io::Result<()> {
    fdpass::send(client.as_fd(), &message.finish()?, &[])
}

/// Carries out one request (items of a GET or LIST are sent here; the final OK or ERROR by
/// the caller).
fn handle(message: &[u8], fds: Vec<OwnedFd>, held: &mut Held, client: &OwnedFd) -> io::Result<()> {
    let (op, mut r) = Reader::new(message)?;
    match op {
        protocol::PUT => {
            let flags = r.byte()?;
            let vol = r.text()?;
            let key = r.text()?;
            let data = r.field()?.to_vec();
            if vol.is_empty() {
                return Err(io::Error::other("an entry needs a volume name"));
            }
            let watch = flags & protocol::WATCH != 0;
            if watch && fds.is_empty() {
                return Err(io::Error::other("a watched entry needs its connection"));
            }
            let entries = held.volumes.entry(vol.to_string()).or_default();
            let new = !entries.contains_key(key);
            if new && held.entries >= MAX_ENTRIES {
                return Err(io::Error::other(format!(
                    "the keeper holds {MAX_ENTRIES} entries already"
                )));
            }
            entries.insert(key.to_string(), Entry { data, fds, watch });
            held.entries += usize::from(new);
            Ok(())
        }
        protocol::DROP => {
            let vol = r.text()?;
            let key = r.text()?;
            if key.is_empty() {
                held.drop_volume(vol);
            } else if let Some(entries) = held.volumes.get_mut(vol)
                && entries.remove(key).is_some()
            {
                held.entries -= 1;
                if entries.is_empty() {
                    held.volumes.remove(vol);
                }
            }
            Ok(())
        }
        protocol::GET => {
            let vol = r.text()?;
            if let Some(entries) = held.volumes.get(vol) {
                for (key, e) in entries {
                    let item = Writer::new(protocol::ITEM)
                        .field(key.as_bytes())
                        .field(&e.data)
                        .finish()?;
                    let fds: Vec<_> = e.fds.iter().map(|f| f.as_fd()).collect();
                    fdpass::send(client.as_fd(), &item, &fds)?;
                }
            }
            Ok(())
        }
        protocol::LIST => {
            for vol in held.volumes.keys() {
                let item = Writer::new(protocol::ITEM)
                    .field(vol.as_bytes())
                    .field(b"")
                    .finish()?;
                fdpass::send(client.as_fd(), &item, &[])?;
            }
            Ok(())
        }
        other => Err(io::Error::other(format!(
            "unknown keeper operation {other:#x}"
        ))),
    }
}

/// Listens at `socket` so that nobody but root can ever connect: bound in a fresh 0700
/// directory beside it, made 0600 there, then renamed into place (replacing a dead keeper's
/// socket without following a symlink).
fn bind(socket: &Path) -> io::Result<OwnedFd> {
    let dir = socket.parent().unwrap_or(Path::new("/"));
    let private: PathBuf = dir.join(format!(
        ".{}.bind-{}",
        super::SOCKET_FILE,
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&private);
    std::fs::DirBuilder::new().mode(0o700).create(&private)?;
    let staged = private.join(super::SOCKET_FILE);
    let bound = fdpass::listen(&staged).and_then(|fd| {
        std::fs::set_permissions(&staged, std::fs::Permissions::from_mode(0o600))?;
        std::fs::rename(&staged, socket)?;
        Ok(fd)
    });
    let _ = std::fs::remove_dir_all(&private);
    bound
}
