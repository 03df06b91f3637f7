//! `fvol daemon`: hosts the FUSE mounts and serves the API.
pub mod api_routes;
pub mod config;
mod error;
pub mod events;
pub mod http;
pub mod lock;
pub mod metrics;
pub mod plugin;
pub mod plugin_routes;
mod private_root;
pub mod request_body;
pub mod serve;
#[cfg(test)]
pub(crate) mod test_support;
pub mod trusted_dir;

use std::future::Future;
use std::io;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use nix::sys::stat::{Mode, umask};
use tokio::signal::unix::{SignalKind, signal};

pub use api_routes::cli_router;
pub use error::DaemonError;
use lock::DaemonLock;
pub use plugin::PluginConfig;
pub use plugin_routes::plugin_router;

use crate::api;
use crate::volume::VolumeManager;
use crate::volume::manager::ManagerSettings;

/// How the daemon runs, from its flags.
#[derive(Clone, Debug, Default)]
pub struct Settings {
    /// Where the Docker volume plugin is served; None: not at all.
    pub plugin: Option<PluginConfig>,
    pub manager: ManagerSettings,
    /// TCP addresses serving `GET /metrics` (`--metrics-listen`); none by default.
    pub metrics_listen: Vec<std::net::SocketAddr>,
    /// Log lines as JSON objects (`--log-format json`).
    pub log_json: bool,
}

/// Runs the daemon for `root` until SIGTERM or SIGINT; start-up errors are one line on
/// stderr.
pub fn main(root: &Path, settings: Settings) -> ExitCode {
    init_logging(settings.log_json);
    match run(root, &settings) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("fvol daemon: {err}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(json: bool) {
    let env = env_logger::Env::default().default_filter_or("info");
    let mut builder = env_logger::Builder::from_env(env);
    if json {
        builder.format(|out, record| {
            use std::io::Write;
            let line = serde_json::json!({
                "time": humantime::format_rfc3339_micros(std::time::SystemTime::now()).to_string(),
                "level": record.level().as_str(),
                "target": record.target(),
                "message": record.args().to_string(),
            });
            writeln!(out, "{line}")
        });
    }
    // Fails only if a logger is already set (as in tests): keep that one.
    let _ = builder.try_init();
}

pub fn run(root: &Path, settings: &Settings) -> Result<(), DaemonError> {
    let plugin = settings.plugin.as_ref();
    // Before anything is created: a socket nobody can connect to is no start.
    let sockets = std::iter::once(api::socket_path(root)).chain(plugin.map(|p| p.socket.clone()));
    for socket in sockets {
        serve::check_socket_path(&socket).map_err(|e| DaemonError::io("cannot serve", e))?;
    }
    private_root::create(root)?;
    // Before the first file is created in it (the lock), and before any mode is changed.
    trusted_dir::check_trusted_dir(root, "catalog and API socket")
        .map_err(DaemonError::Untrusted)?;
    private_root::tighten(root)?;
    if let Some(config) = plugin {
        plugin::prepare_dirs(config)?;
    }
    let _lock = DaemonLock::acquire(root)?;
    // The filesystems create files with exactly the modes their callers ask for.
    umask(Mode::empty());
    let limits = serve::ServeLimits::for_open_file_limit(raise_open_file_limit());
    crate::sys::heap::pin_mmap_threshold(4 << 20);

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

    let manager = Arc::new(VolumeManager::open(root, settings.manager.clone())?);
    let keeper = start_keeper(root);
    if let Some(keeper) = &keeper {
        manager.set_keeper(keeper.clone());
    }
    // The stuck-handler metric (fusectl's `waiting`) and connection aborts need it.
    if let Err(err) = crate::fuse::mount_fusectl() {
        log::warn!(
            "FUSE control filesystem unavailable: {err}; fvol_fuse_requests_waiting is not reported"
        );
    }
    log::info!("recovering volumes under {}", root.display());
    if let Err(err) = manager.recover() {
        manager.shutdown();
        return Err(err.into());
    }

    let socket = api::socket_path(root);
    // Set by a stop request (`fvol daemon --stop`): unmount everything. A signal hands the
    // volumes over to the next daemon instead.
    let full_stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    // Both sockets are bound only now, after recovery: a client (Docker above all) never sees
    // a volume with references that is not mounted yet, except one whose cluster does not
    // answer within the grace of `VolumeManager::recover` (mounted once it does; a mount
    // request for it waits for that).
    let served = runtime.block_on(async {
        let listener = serve::bind_socket(&socket)
            .map_err(|e| DaemonError::io(format!("listening on {}", socket.display()), e))?;
        log::info!("listening on {}", socket.display());
        let metrics_listeners = metrics::bind(&settings.metrics_listen)
            .await
            .map_err(DaemonError::Metrics)?;
        let plugin = match plugin {
            Some(config) => {
                let registered = plugin::register(config)?;
                log_plugin(config);
                Some(registered)
            }
            None => None,
        };
        let (stop_requested, mut stop_wanted) = tokio::sync::watch::channel(false);
        let stop_request = api_routes::StopRequest {
            requested: Arc::new(stop_requested),
        };
        let full = full_stop.clone();
        let stop = Broadcast::new(async move {
            tokio::select! {
                () = shutdown => {}
                _ = stop_wanted.wait_for(|s| *s) => {
                    full.store(true, std::sync::atomic::Ordering::Relaxed);
                }
            }
        });
        for listener in metrics_listeners {
            let address = listener.local_addr().ok();
            log::info!(
                "serving metrics on http://{}/metrics",
                address.map_or("?".into(), |a| a.to_string())
            );
            let served = metrics::serve_tcp(listener, manager.clone(), stop.wait());
            tokio::spawn(async move {
                if let Err(e) = served.await {
                    log::error!("serving metrics: {e}");
                }
            });
        }
        notify_supervisor("READY=1");
        let api = cli_router(manager.clone(), stop_request)
            .merge(metrics::router(manager.clone()))
            .merge(events::router(manager.events(), stop.receiver()));
        let cli = async {
            serve::serve(listener, api, limits, stop.wait())
                .await
                .map_err(|e| DaemonError::io(format!("serving on {}", socket.display()), e))
        };
        let Some((plugin_listener, registration)) = plugin else {
            return cli.await.map(|()| None);
        };
        let served_plugin = async {
            serve::serve(
                plugin_listener,
                plugin_router(manager.clone()),
                limits,
                stop.wait(),
            )
            .await
            .map_err(|e| {
                let socket = registration.socket().display();
                DaemonError::io(format!("serving on {socket}"), e)
            })
        };
        tokio::try_join!(cli, served_plugin)?;
        Ok(Some(registration))
    });
    // Waits for manager calls still running on the blocking pool.
    drop(runtime);
    notify_supervisor("STOPPING=1");
    if keeper.is_some() && !full_stop.load(std::sync::atomic::Ordering::Relaxed) {
        // A restart or an upgrade: the next daemon serves the volumes again, and Docker's
        // calls meanwhile find the plugin's socket refusing (and retry), not gone.
        log::info!(
            "leaving volumes mounted for the next daemon (fvol daemon --stop unmounts them)"
        );
        manager.handover();
        log::info!("stopped; start fvol daemon again to serve the volumes");
        return served.map(drop);
    }
    // Docker must not find a plugin that no longer answers.
    let served = served.map(|registration| {
        if let Some(registration) = registration {
            registration.remove();
        }
    });

    log::info!("unmounting volumes");
    shutdown_within(manager, SHUTDOWN_GRACE);
    if let Err(err) = serve::remove_socket(&socket) {
        log::warn!("could not remove {}: {err}", socket.display());
    }
    log::info!("stopped");
    served
}

/// The keeper that holds volume connections across restarts of the daemon (see
/// `crate::keeper`), started if none runs. None, with the reason logged, where volumes cannot
/// outlive the daemon: then a stop unmounts them as before, and a crash leaves them stale.
fn start_keeper(root: &Path) -> Option<Arc<crate::keeper::Keeper>> {
    if let Some(release) = kernel_without_resend() {
        log::warn!(
            "Linux {release} cannot send a new handler the requests a stopped one left \
             (FUSE_NOTIFY_RESEND needs Linux 6.9): volumes do not survive a restart, upgrade \
             or crash of the daemon; a stop unmounts them and a crash leaves them stale until \
             the next start"
        );
        return None;
    }
    match crate::keeper::Keeper::connect_or_start(root) {
        Ok(keeper) => Some(Arc::new(keeper)),
        Err(e) => {
            log::error!(
                "no keeper ({e}): volumes do not survive a restart, upgrade or crash of the \
                 daemon"
            );
            None
        }
    }
}

/// The kernel's release if it is older than 6.9 (no FUSE_NOTIFY_RESEND).
fn kernel_without_resend() -> Option<String> {
    let release = nix::sys::utsname::uname()
        .ok()?
        .release()
        .to_string_lossy()
        .into_owned();
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    let major: u32 = parts.next()?.parse().ok()?;
    let minor: u32 = parts.next()?.parse().ok()?;
    ((major, minor) < (6, 9)).then_some(release)
}

/// Tells the service manager (systemd's `NOTIFY_SOCKET`, a unix datagram socket) how the
/// daemon stands; nothing without one.
fn notify_supervisor(state: &str) {
    use std::os::linux::net::SocketAddrExt;
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let addr = match path.as_encoded_bytes() {
        [b'@', name @ ..] => std::os::unix::net::SocketAddr::from_abstract_name(name),
        _ => std::os::unix::net::SocketAddr::from_pathname(&path),
    };
    let sent = addr.and_then(|addr| {
        let socket = std::os::unix::net::UnixDatagram::unbound()?;
        socket.send_to_addr(
            format!("{state}\nMAINPID={}", std::process::id()).as_bytes(),
            &addr,
        )
    });
    if let Err(e) = sent {
        log::warn!("telling the service manager {state}: {e}");
    }
}

/// Open files of every volume need real descriptors, and the local driver sizes its cache of
/// node descriptors from the limit (see `fs::passthrough::fdcache`), so the soft limit goes up
/// to the hard one before any volume is served. Returns the soft limit in force.
fn raise_open_file_limit() -> u64 {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            Ok(()) => hard,
            Err(e) => {
                log::warn!("could not raise the open-file limit from {soft} to {hard}: {e}");
                soft
            }
        },
        Ok((soft, _)) => soft,
        Err(e) => {
            log::warn!("reading the open-file limit: {e}");
            1024
        }
    }
}

/// How long unmounting at stop may take. A volume that a running container still uses cannot
/// end its FUSE connection (the container's mount namespace holds it), and waiting for it
/// would keep the daemon from stopping until that container does.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(20);

/// Unmounts every volume and records clean usage, but gives up after `grace`: the daemon then
/// exits anyway, as if killed. Data written is already on the host; the next start detaches
/// what is left, rescans the usage of volumes not stopped cleanly and mounts them again.
fn shutdown_within(manager: Arc<VolumeManager>, grace: Duration) {
    let (done, finished) = std::sync::mpsc::channel();
    let spawned = std::thread::Builder::new()
        .name("shutdown".into())
        .spawn(move || {
            manager.shutdown();
            // The last reference (the servers are gone): closes the catalog cleanly before
            // the daemon may exit.
            drop(manager);
            let _ = done.send(());
        });
    if let Err(e) = spawned {
        log::error!("cannot unmount volumes: starting a thread: {e}");
        return;
    }
    if finished.recv_timeout(grace).is_err() {
        log::error!(
            "volumes still not unmounted after {}s: a container (or another mount namespace) \
             still uses one; stopping anyway. Its users lose access to it; the next start \
             mounts it again. Stop the containers first for a clean stop.",
            grace.as_secs()
        );
    }
}

fn log_plugin(config: &PluginConfig) {
    let socket = config.socket.display();
    match (config.driver_name(), &config.spec) {
        (Some(name), Some(spec)) => log::info!(
            "serving the Docker volume plugin {name:?} on {socket}, registered in {}",
            spec.display()
        ),
        (Some(name), None) => log::info!("serving the Docker volume plugin {name:?} on {socket}"),
        (None, _) => log::info!(
            "serving the Docker volume plugin on {socket}; Docker finds it only through a \
             spec file (--plugin-spec) or in {}",
            crate::api::plugin::LEGACY_SOCKET_DIR
        ),
    }
}

/// One shutdown future for several servers.
struct Broadcast {
    stopped: tokio::sync::watch::Receiver<bool>,
}

impl Broadcast {
    /// Must be called inside the runtime.
    fn new(shutdown: impl Future<Output = ()> + Send + 'static) -> Broadcast {
        let (tx, stopped) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            shutdown.await;
            let _ = tx.send(true);
        });
        Broadcast { stopped }
    }

    /// True once the shutdown future has completed.
    fn receiver(&self) -> tokio::sync::watch::Receiver<bool> {
        self.stopped.clone()
    }

    /// Completes once the shutdown future has.
    fn wait(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut stopped = self.stopped.clone();
        async move {
            // An error means the sender is gone, which happens only after it sent.
            let _ = stopped.wait_for(|s| *s).await;
        }
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
