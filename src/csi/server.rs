//! The gRPC server on a unix socket, and what the services share.
use std::io;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use tokio::net::UnixListener;
use tokio_stream::wrappers::UnixListenerStream;

use super::client::Daemon;
use super::controller::ControllerService;
use super::identity::IdentityService;
use super::node::NodeService;
use super::proto::controller_server::ControllerServer;
use super::proto::identity_server::IdentityServer;
use super::proto::node_server::NodeServer;
use super::shared::{Mode, Shared};

/// `fvol csi`'s settings.
#[derive(Clone, Debug)]
pub struct Settings {
    /// `unix:///path`, `unix:/path` or a path.
    pub endpoint: String,
    pub node_id: String,
    pub mode: Mode,
}

/// The socket path of an endpoint.
pub fn socket_of(endpoint: &str) -> Result<PathBuf, String> {
    let path = endpoint
        .strip_prefix("unix://")
        .or_else(|| endpoint.strip_prefix("unix:"))
        .unwrap_or(endpoint);
    let path = Path::new(path);
    if !path.is_absolute() {
        return Err(format!(
            "invalid endpoint {endpoint:?}: give unix:///ABSOLUTE/PATH (a unix socket; TCP is \
             not served)"
        ));
    }
    Ok(path.to_owned())
}

/// Binds the socket, replacing a stale socket (never another kind of file), mode 0600.
fn listen(socket: &Path) -> Result<UnixListener, String> {
    match std::fs::symlink_metadata(socket) {
        Ok(m) if m.file_type().is_socket() => std::fs::remove_file(socket)
            .map_err(|e| format!("removing the stale socket {}: {e}", socket.display()))?,
        Ok(_) => {
            return Err(format!(
                "{} exists and is not a socket; fvol csi replaces only a stale socket",
                socket.display()
            ));
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(format!("{}: {e}", socket.display())),
    }
    if let Some(dir) = socket.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    let listener =
        UnixListener::bind(socket).map_err(|e| format!("binding {}: {e}", socket.display()))?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| format!("{}: {e}", socket.display()))?;
    Ok(listener)
}

async fn serve(root: PathBuf, settings: Settings) -> Result<(), String> {
    if settings.node_id.is_empty() {
        return Err("--node-id must not be empty".into());
    }
    let socket = socket_of(&settings.endpoint)?;
    let shared = Arc::new(Shared {
        daemon: Daemon::new(&root),
        node_id: settings.node_id.clone(),
        mode: settings.mode,
    });
    let listener = listen(&socket)?;
    log::info!(
        "serving CSI ({:?}) for node {} on {}, through the daemon of {}",
        settings.mode,
        settings.node_id,
        socket.display(),
        root.display()
    );
    let identity = IdentityServer::new(IdentityService {
        shared: shared.clone(),
    });
    let controller = settings.mode.controller().then(|| {
        ControllerServer::new(ControllerService {
            shared: shared.clone(),
        })
    });
    let node = settings.mode.node().then(|| {
        NodeServer::new(NodeService {
            shared: shared.clone(),
        })
    });
    let stop = async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing a SIGTERM handler");
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        log::info!("stopping");
    };
    let result = tonic::transport::Server::builder()
        .add_service(identity)
        .add_optional_service(controller)
        .add_optional_service(node)
        .serve_with_incoming_shutdown(UnixListenerStream::new(listener), stop)
        .await
        .map_err(|e| format!("serving {}: {e}", socket.display()));
    let _ = std::fs::remove_file(&socket);
    result
}

/// `fvol csi`: serves until SIGTERM or SIGINT.
pub fn main(root: &Path, settings: Settings) -> ExitCode {
    let _ = env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .try_init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("fvol csi: starting the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve(root.to_owned(), settings)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("fvol csi: {e}");
            ExitCode::FAILURE
        }
    }
}
