//! `fvol daemon`: hosts the FUSE mounts and serves the API.
mod api_error;
pub mod api_routes;
mod error;
pub mod lock;
pub mod serve;
#[cfg(test)]
pub(crate) mod test_support;

use std::fs::DirBuilder;
use std::future::Future;
use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use nix::sys::stat::{Mode, umask};
use tokio::signal::unix::{SignalKind, signal};

pub use api_routes::cli_router;
pub use error::DaemonError;
use lock::DaemonLock;

use crate::api;
use crate::volume::VolumeManager;

/// Runs the daemon for `root` until SIGTERM or SIGINT; start-up errors are one line on stderr.
pub fn main(root: &Path) -> ExitCode {
    init_logging();
    match run(root) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("fvol daemon: {err}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging() {
    let env = env_logger::Env::default().default_filter_or("info");
    // Fails only if a logger is already set (as in tests): keep that one.
    let _ = env_logger::Builder::from_env(env).try_init();
}

pub fn run(root: &Path) -> Result<(), DaemonError> {
    // Traversable but not listable, like /var/lib/docker/volumes: users reach mountpoints
    // they know without seeing the others.
    DirBuilder::new()
        .recursive(true)
        .mode(0o711)
        .create(root)
        .map_err(|e| DaemonError::io(format!("creating {}", root.display()), e))?;
    let _lock = DaemonLock::acquire(root)?;
    // The filesystems create files with exactly the modes their callers ask for.
    umask(Mode::empty());
    raise_open_file_limit();

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| DaemonError::io("starting the async runtime", e))?;
    // Registered before the slow start-up steps so that a signal during them is not lost:
    // the daemon then stops as soon as it is serving.
    let shutdown = {
        let _context = runtime.enter();
        termination_signal().map_err(|e| DaemonError::io("installing signal handlers", e))?
    };

    let manager = Arc::new(VolumeManager::open(root)?);
    log::info!("recovering volumes under {}", root.display());
    if let Err(err) = manager.recover() {
        manager.shutdown();
        return Err(err.into());
    }

    let socket = api::socket_path(root);
    let served = runtime.block_on(async {
        let listener = serve::bind_socket(&socket)
            .map_err(|e| DaemonError::io(format!("listening on {}", socket.display()), e))?;
        log::info!("listening on {}", socket.display());
        serve::serve(listener, cli_router(manager.clone()), shutdown)
            .await
            .map_err(|e| DaemonError::io(format!("serving on {}", socket.display()), e))
    });
    // Waits for manager calls still running on the blocking pool.
    drop(runtime);

    log::info!("unmounting volumes");
    manager.shutdown();
    if let Err(err) = serve::remove_socket(&socket) {
        log::warn!("could not remove {}: {err}", socket.display());
    }
    log::info!("stopped");
    served
}

/// The local driver holds a descriptor for every inode the kernel knows (that is how hard
/// links and renames keep their identity), so the soft limit goes up to the hard one.
fn raise_open_file_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => {
            if let Err(e) = setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
                log::warn!("could not raise the open-file limit from {soft} to {hard}: {e}");
            }
        }
        Ok(_) => {}
        Err(e) => log::warn!("reading the open-file limit: {e}"),
    }
}

/// Completes on the first SIGTERM or SIGINT. Must be called inside the runtime.
fn termination_signal() -> io::Result<impl Future<Output = ()> + Send + 'static> {
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    Ok(async move {
        let name = tokio::select! {
            _ = terminate.recv() => "SIGTERM",
            _ = interrupt.recv() => "SIGINT",
        };
        log::info!("received {name}: no longer accepting requests");
    })
}
