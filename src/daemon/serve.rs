//! Serving any axum router on a unix socket (the CLI API now, the Docker plugin API later).
use std::fs::Permissions;
use std::future::Future;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use axum::Router;
use tokio::net::UnixListener;

/// Binds `path`, replacing a stale socket left by a daemon that died (the caller holds the
/// daemon lock, so no live daemon owns it), and restricts it to the owner.
/// Must run inside a tokio runtime.
pub fn bind_socket(path: &Path) -> io::Result<UnixListener> {
    remove_socket(path)?;
    let listener = UnixListener::bind(path)?;
    // The socket is briefly more open than 0600 (the daemon's umask is 0), but ROOT is 0700.
    std::fs::set_permissions(path, Permissions::from_mode(0o600))?;
    Ok(listener)
}

/// Serves until `shutdown` completes, then lets requests in flight finish.
pub async fn serve(
    listener: UnixListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
}

/// Removes the socket file; a missing one is fine.
pub fn remove_socket(path: &Path) -> io::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}
