//! Serving an axum router on a unix socket (the CLI API and the Docker plugin API).
//!
//! - Binding: a socket is created and restricted to root inside a private directory, then
//!   renamed into place, so no other user can connect to it at any moment.
//! - Connections: only root's (checked with SO_PEERCRED on each, in case the socket's mode is
//!   ever changed by hand), at most `ServeLimits::max_connections` at once (the next ones are
//!   closed at once), each closed when it sends no request header for `header_timeout`, or
//!   when an answer cannot be written for `write_timeout`.
use std::fs::{DirBuilder, Permissions};
use std::future::Future;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use rand::Rng;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{Semaphore, watch};
use tokio::time::Sleep;

/// Binds `path` so that no user but root can ever connect to it: the socket is bound in a
/// fresh private directory beside `path` (0700, so nobody else can even reach it), made 0600
/// there, and only then renamed over `path`. The rename replaces a stale socket left by a
/// daemon that died (the caller has made sure no live one serves it) without following a
/// symlink. Must run inside a tokio runtime.
pub fn bind_socket(path: &Path) -> io::Result<UnixListener> {
    let (dir, name) = match (path.parent(), path.file_name()) {
        (Some(dir), Some(name)) => (dir, name.to_string_lossy()),
        _ => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "a socket path needs a directory and a file name",
            ));
        }
    };
    check_socket_path(path)?;
    let prefix = format!(".{name}.bind-");
    remove_stale_bind_dirs(dir, &prefix);
    let private = PrivateDir::create(dir, &prefix)?;
    let staged = private.path.join(&*name);
    let listener = if staged.as_os_str().len() < SUN_PATH_MAX {
        UnixListener::bind(&staged)?
    } else {
        // The staging directory made the path too long for `sun_path`: bind through a
        // descriptor of that directory, whose /proc name is short.
        let fd = nix::fcntl::open(
            &private.path,
            nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_DIRECTORY,
            nix::sys::stat::Mode::empty(),
        )?;
        UnixListener::bind(format!("/proc/self/fd/{}/{name}", fd.as_raw_fd()))?
    };
    std::fs::set_permissions(&staged, Permissions::from_mode(0o600))?;
    std::fs::rename(&staged, path)?;
    Ok(listener)
}

/// Bytes a unix socket path may have (`sun_path` is 108 bytes with its terminating NUL).
pub const SUN_PATH_MAX: usize = 108;

/// A socket path clients can connect to: shorter than `sun_path`. Checked before a daemon
/// starts anything, so a long `--root` fails at once and says what to change.
pub fn check_socket_path(path: &Path) -> io::Result<()> {
    let len = path.as_os_str().len();
    if len >= SUN_PATH_MAX {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "the socket path {} is {len} bytes long; a unix socket path must be at most {} \
                 bytes (sun_path): choose a shorter --root or socket path",
                path.display(),
                SUN_PATH_MAX - 1
            ),
        ));
    }
    Ok(())
}

/// A directory only root can enter, removed (with what is left in it) on drop.
struct PrivateDir {
    path: PathBuf,
}

impl PrivateDir {
    /// mkdir never follows a symlink and fails on an existing name, so the directory is new
    /// and the daemon's.
    fn create(parent: &Path, prefix: &str) -> io::Result<PrivateDir> {
        let suffix: u64 = rand::rng().random();
        let path = parent.join(format!("{prefix}{suffix:016x}"));
        DirBuilder::new().mode(0o700).create(&path)?;
        Ok(PrivateDir { path })
    }
}

impl Drop for PrivateDir {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.path) {
            log::warn!("could not remove {}: {e}", self.path.display());
        }
    }
}

/// Removes private bind directories that a daemon killed while binding left behind.
fn remove_stale_bind_dirs(dir: &Path, prefix: &str) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let daemon_uid = nix::unistd::geteuid().as_raw();
    for entry in entries.flatten() {
        let ours = entry.file_name().to_string_lossy().starts_with(prefix)
            && entry
                .metadata()
                .is_ok_and(|m| m.is_dir() && m.uid() == daemon_uid);
        if ours {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// Removes the socket file; a missing one is fine.
pub fn remove_socket(path: &Path) -> io::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Bounds on the connections of one server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServeLimits {
    /// Connections served at once; more are closed as soon as they are accepted.
    pub max_connections: usize,
    /// How long a connection may take to send a request's header, counted from the moment it
    /// opens or its previous answer was sent: an idle keep-alive connection is closed then.
    pub header_timeout: Duration,
    /// How long writing an answer may stall (a client that does not read it).
    pub write_timeout: Duration,
}

/// Connections per server at most, whatever the open-file limit.
pub const MAX_CONNECTIONS: usize = 256;
/// The fewest connections per server, however low the open-file limit.
const MIN_CONNECTIONS: usize = 16;

impl ServeLimits {
    /// The daemon's limits: at most `MAX_CONNECTIONS` per server, and no more than 1/16 of the
    /// open-file limit, so that the two servers together never take more than 1/8 of the
    /// descriptors FUSE opens need.
    pub fn for_open_file_limit(nofile: u64) -> ServeLimits {
        let share = usize::try_from(nofile / 16).unwrap_or(usize::MAX);
        ServeLimits {
            max_connections: share.clamp(MIN_CONNECTIONS, MAX_CONNECTIONS),
            header_timeout: Duration::from_secs(10),
            write_timeout: Duration::from_secs(10),
        }
    }
}

/// Serves until `shutdown` completes, then lets requests in flight finish (idle connections
/// are closed at once).
pub async fn serve(
    listener: UnixListener,
    router: Router,
    limits: ServeLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let (stop_connections, stopping) = watch::channel(false);
    let mut refusals = Refusals::default();
    let mut shutdown = pin!(shutdown);
    loop {
        let stream = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // EMFILE, ENFILE, ENOMEM, ECONNABORTED: the listener itself is fine, and
                    // retrying at once would spin while descriptors are short.
                    refusals.note(&format!("accepting a connection failed: {e}"));
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        if let Err(why) = check_peer(&stream) {
            refusals.note(&why);
            continue;
        }
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            refusals.note(&format!(
                "{} connections are open already (the most one server takes); closing new ones",
                limits.max_connections
            ));
            continue;
        };
        let service = TowerToHyperService::new(router.clone());
        let mut stopping = stopping.clone();
        tokio::spawn(async move {
            let io = TokioIo::new(StallTimeout::new(stream, limits.write_timeout));
            let mut builder = http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_timeout)
                .max_buf_size(MAX_BUF_SIZE);
            let mut conn = pin!(builder.serve_connection(io, service));
            let result = tokio::select! {
                result = conn.as_mut() => result,
                // The only change is to true (or the sender's end, at the same time).
                _ = stopping.changed() => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(e) = result {
                log::debug!("connection closed: {e}");
            }
            drop(permit);
        });
    }
    drop(listener);
    let _ = stop_connections.send(true);
    // Every connection holds a permit until it ends.
    let all = u32::try_from(limits.max_connections).unwrap_or(u32::MAX);
    let _ = permits.acquire_many(all).await;
    Ok(())
}

/// The read buffer of a connection, which bounds a request's header (hyper's default is
/// about 400 KiB; fvol's requests have a few short headers).
const MAX_BUF_SIZE: usize = 64 * 1024;

/// Only root, or the daemon's own user, may talk to the daemon. The socket's mode already
/// keeps others out; this holds even if someone loosens that mode by hand.
fn check_peer(stream: &UnixStream) -> Result<(), String> {
    let cred = stream
        .peer_cred()
        .map_err(|e| format!("cannot read the credentials of a connecting process: {e}"))?;
    let daemon_uid = nix::unistd::geteuid().as_raw();
    if cred.uid() == 0 || cred.uid() == daemon_uid {
        return Ok(());
    }
    Err(format!(
        "closed a connection from uid {} (pid {}): only root may use the daemon's sockets",
        cred.uid(),
        cred.pid().map_or("unknown".to_owned(), |p| p.to_string())
    ))
}

/// Logs refused connections without flooding the log: the first at once, then at most one
/// line a minute with how many more there were.
#[derive(Default)]
struct Refusals {
    last_logged: Option<Instant>,
    since: u64,
}

const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(60);

impl Refusals {
    fn note(&mut self, why: &str) {
        let now = Instant::now();
        match self.last_logged {
            Some(at) if now.duration_since(at) < REFUSAL_LOG_INTERVAL => self.since += 1,
            _ => {
                if self.since > 0 {
                    log::warn!("{why} ({} more refused in the last minute)", self.since);
                } else {
                    log::warn!("{why}");
                }
                self.last_logged = Some(now);
                self.since = 0;
            }
        }
    }
}

/// A stream whose writes fail with `TimedOut` once one has waited `limit` for the peer to
/// read: a client that never reads its answer cannot hold a connection forever.
struct StallTimeout {
    inner: UnixStream,
    limit: Duration,
    /// Armed while a write waits.
    stalled: Option<Pin<Box<Sleep>>>,
}

impl StallTimeout {
    fn new(inner: UnixStream, limit: Duration) -> StallTimeout {
        StallTimeout {
            inner,
            limit,
            stalled: None,
        }
    }

    /// After the inner stream returned Pending for a write: Pending until `limit` has passed
    /// since the first such return, then the error.
    fn poll_stall<T>(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<T>> {
        let limit = self.limit;
        let sleep = self
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        ready!(sleep.as_mut().poll(cx));
        Poll::Ready(Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("the client read nothing for {}s", limit.as_secs()),
        )))
    }

    fn written<T>(
        &mut self,
        cx: &mut Context<'_>,
        result: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        match result {
            Poll::Pending => self.poll_stall(cx),
            ready => {
                self.stalled = None;
                ready
            }
        }
    }
}

impl AsyncRead for StallTimeout {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for StallTimeout {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.written(cx, result)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.written(cx, result)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.inner).poll_flush(cx);
        this.written(cx, result)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.inner).poll_shutdown(cx);
        this.written(cx, result)
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::os::unix::fs::FileTypeExt;
    use std::os::unix::net::UnixStream as StdStream;

    use axum::routing::post;

    use super::*;

    #[test]
    fn connection_cap_follows_the_open_file_limit() {
        let cap = |n| ServeLimits::for_open_file_limit(n).max_connections;
        assert_eq!(cap(1024), 64);
        assert_eq!(cap(4096), 256);
        assert_eq!(cap(1 << 20), MAX_CONNECTIONS);
        assert_eq!(cap(64), MIN_CONNECTIONS);
        assert_eq!(cap(u64::MAX), MAX_CONNECTIONS);
    }

    #[tokio::test]
    async fn binds_0600_over_a_stale_socket_or_a_planted_symlink() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        // A stale socket, and a symlink someone planted: both replaced, the target untouched.
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        let listener = bind_socket(&path).unwrap();
        drop(listener);
        let target = dir.path().join("precious");
        std::fs::write(&target, b"data").unwrap();
        std::fs::remove_file(&path).unwrap();
        std::os::unix::fs::symlink(&target, &path).unwrap();
        let _listener = bind_socket(&path).unwrap();
        let meta = std::fs::symlink_metadata(&path).unwrap();
        assert!(meta.file_type().is_socket());
        assert_eq!(meta.permissions().mode() & 0o7777, 0o600);
        assert_eq!(std::fs::read(&target).unwrap(), b"data");
        // No private directory is left beside it.
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");
    }

    /// A path near `sun_path`'s limit binds (its staging name would be longer), and one past
    /// it is refused with a message that says the limit and what to change.
    #[tokio::test]
    async fn a_long_socket_path_binds_up_to_sun_path_and_is_refused_past_it() {
        let dir = tempfile::tempdir().unwrap();
        let pad = SUN_PATH_MAX - 1 - dir.path().as_os_str().len() - "/s.sock".len() - 1;
        let deep = dir.path().join("d".repeat(pad));
        std::fs::create_dir(&deep).unwrap();
        let path = deep.join("s.sock");
        assert_eq!(path.as_os_str().len(), SUN_PATH_MAX - 1);
        let _listener = bind_socket(&path).unwrap();
        let meta = std::fs::symlink_metadata(&path).unwrap();
        assert!(meta.file_type().is_socket());
        assert_eq!(meta.permissions().mode() & 0o7777, 0o600);
        std::os::unix::net::UnixStream::connect(&path).expect("a client reaches it");
        assert_eq!(std::fs::read_dir(&deep).unwrap().count(), 1);

        let longer = deep.join("s2.sock");
        let e = bind_socket(&longer).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        assert!(e.to_string().contains("at most 107 bytes"), "{e}");
        assert!(!longer.exists());
    }

    #[tokio::test]
    async fn leftover_private_dirs_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let leftover = dir.path().join(".s.sock.bind-0123456789abcdef");
        std::fs::create_dir(&leftover).unwrap();
        std::fs::write(leftover.join("s.sock"), b"").unwrap();
        let _listener = bind_socket(&dir.path().join("s.sock")).unwrap();
        assert!(!leftover.exists());
    }

    struct Server {
        _dir: tempfile::TempDir,
        socket: PathBuf,
        stop: Option<tokio::sync::oneshot::Sender<()>>,
        done: tokio::task::JoinHandle<io::Result<()>>,
    }

    impl Server {
        fn start(limits: ServeLimits) -> Server {
            let dir = tempfile::tempdir().unwrap();
            let socket = dir.path().join("s.sock");
            let listener = bind_socket(&socket).unwrap();
            let router = Router::new().route("/", post(|body: String| async move { body }));
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            let done = tokio::spawn(serve(listener, router, limits, async {
                let _ = stopped.await;
            }));
            Server {
                _dir: dir,
                socket,
                stop: Some(stop),
                done,
            }
        }

        async fn stop(mut self) {
            let _ = self.stop.take().unwrap().send(());
            self.done.await.unwrap().unwrap();
        }
    }

    const REQUEST: &[u8] = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi";

    /// Sends one request on `stream` and reads the answer's first bytes (blocking).
    fn ask(stream: &mut StdStream) -> String {
        stream.write_all(REQUEST).unwrap();
        let mut answer = [0u8; 256];
        let n = stream.read(&mut answer).unwrap();
        String::from_utf8_lossy(&answer[..n]).into_owned()
    }

    /// True once the server closed `stream` (read gives EOF or a reset), waiting at most 30 s.
    fn closed_by_server(stream: &mut StdStream) -> bool {
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let mut byte = [0u8; 1];
        match stream.read(&mut byte) {
            Ok(0) => true,
            Ok(_) => false,
            Err(e) => e.kind() == io::ErrorKind::ConnectionReset,
        }
    }

    fn limits(max_connections: usize, timeout: Duration) -> ServeLimits {
        ServeLimits {
            max_connections,
            header_timeout: timeout,
            write_timeout: timeout,
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn connections_over_the_cap_are_closed_and_the_others_served() {
        let server = Server::start(limits(4, Duration::from_secs(60)));
        let socket = server.socket.clone();
        tokio::task::spawn_blocking(move || {
            let mut held: Vec<StdStream> = (0..4)
                .map(|_| StdStream::connect(&socket).unwrap())
                .collect();
            // Each held one is served (so all four are accepted and counted) ...
            for stream in &mut held {
                assert!(ask(stream).starts_with("HTTP/1.1 200"));
            }
            // ... and a fifth is closed without an answer.
            let mut extra = StdStream::connect(&socket).unwrap();
            let _ = extra.write_all(REQUEST);
            assert!(closed_by_server(&mut extra));
            assert!(ask(&mut held[0]).starts_with("HTTP/1.1 200"));
            drop(held);
            // Once they are gone, new connections are served again.
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                let mut fresh = StdStream::connect(&socket).unwrap();
                let _ = fresh.write_all(REQUEST);
                let mut answer = [0u8; 64];
                let n = fresh.read(&mut answer).unwrap_or(0);
                if answer[..n].starts_with(b"HTTP/1.1 200") {
                    break;
                }
                assert!(Instant::now() < deadline, "never served again");
                std::thread::sleep(Duration::from_millis(20));
            }
        })
        .await
        .unwrap();
        server.stop().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn idle_and_slow_connections_are_closed() {
        let server = Server::start(limits(8, Duration::from_millis(300)));
        let socket = server.socket.clone();
        tokio::task::spawn_blocking(move || {
            // Silent from the start.
            let mut silent = StdStream::connect(&socket).unwrap();
            assert!(closed_by_server(&mut silent));
            // Half a header, then nothing.
            let mut slow = StdStream::connect(&socket).unwrap();
            slow.write_all(b"POST / HTTP/1.1\r\nHost: x\r\n").unwrap();
            assert!(closed_by_server(&mut slow));
            // Idle after a served request (keep-alive).
            let mut idle = StdStream::connect(&socket).unwrap();
            assert!(ask(&mut idle).starts_with("HTTP/1.1 200"));
            assert!(closed_by_server(&mut idle));
        })
        .await
        .unwrap();
        server.stop().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_huge_header_is_refused() {
        let server = Server::start(limits(8, Duration::from_secs(60)));
        let socket = server.socket.clone();
        tokio::task::spawn_blocking(move || {
            let mut stream = StdStream::connect(&socket).unwrap();
            let header = format!("POST / HTTP/1.1\r\nX-Big: {}\r\n", "x".repeat(100 * 1024));
            let _ = stream.write_all(header.as_bytes());
            let mut answer = [0u8; 64];
            let n = stream.read(&mut answer).unwrap();
            let answer = String::from_utf8_lossy(&answer[..n]).into_owned();
            assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");
        })
        .await
        .unwrap();
        server.stop().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_client_that_never_reads_is_dropped() {
        let server = Server::start(ServeLimits {
            max_connections: 8,
            header_timeout: Duration::from_secs(600),
            write_timeout: Duration::from_millis(300),
        });
        let socket = server.socket.clone();
        tokio::task::spawn_blocking(move || {
            // Pipelined requests with large answers that are never read: the server's writes
            // stall once the socket buffers are full, and it stops reading; the client's
            // writes then fail because the server closed the connection (not because the
            // client's own write timeout passed).
            let mut stream = StdStream::connect(&socket).unwrap();
            stream
                .set_write_timeout(Some(Duration::from_secs(60)))
                .unwrap();
            let body = vec![b'x'; 256 * 1024];
            let head = format!(
                "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
                body.len()
            );
            let error = (0..256)
                .find_map(|_| {
                    stream
                        .write_all(head.as_bytes())
                        .and_then(|()| stream.write_all(&body))
                        .err()
                })
                .expect("the server took 64 MiB it never answered");
            assert!(
                matches!(
                    error.kind(),
                    io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset
                ),
                "{error}"
            );
        })
        .await
        .unwrap();
        server.stop().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn shutdown_closes_idle_connections() {
        let server = Server::start(limits(8, Duration::from_secs(60)));
        let socket = server.socket.clone();
        let idle = tokio::task::spawn_blocking(move || StdStream::connect(&socket).unwrap())
            .await
            .unwrap();
        server.stop().await;
        tokio::task::spawn_blocking(move || {
            let mut idle = idle;
            assert!(closed_by_server(&mut idle));
        })
        .await
        .unwrap();
    }
}
