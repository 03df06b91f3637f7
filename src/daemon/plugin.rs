//! Where the Docker volume plugin is served and how Docker finds it: a socket in Docker's
//! legacy plugin directory (`/run/docker/plugins/NAME.sock`), or any socket plus a spec file
//! (`/etc/docker/plugins/NAME.spec` holding `unix://<socket>`). NAME is the driver name.
use std::fs::{DirBuilder, Permissions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rand::Rng;
use tokio::net::UnixListener;

use super::trusted_dir::check_trusted_dir;
use super::{DaemonError, serve};
use crate::api::plugin::{DRIVER_NAME, LEGACY_SOCKET_DIR, SPEC_DIR};

/// The plugin socket's file name inside ROOT when a spec file registers it.
pub const ROOT_SOCKET_FILE: &str = "plugin.sock";

/// `/run/docker/plugins/fvol.sock`.
pub fn default_socket() -> PathBuf {
    Path::new(LEGACY_SOCKET_DIR).join(format!("{DRIVER_NAME}.sock"))
}

/// `/etc/docker/plugins/fvol.spec`.
pub fn default_spec() -> PathBuf {
    Path::new(SPEC_DIR).join(format!("{DRIVER_NAME}.spec"))
}

/// How the daemon serves the plugin.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PluginConfig {
    /// The socket the plugin API listens on (absolute).
    pub socket: PathBuf,
    /// A spec file pointing Docker at `socket`: written once the socket listens, removed at
    /// stop.
    pub spec: Option<PathBuf>,
}

impl PluginConfig {
    /// From the daemon's flags: the socket defaults to the legacy one, or to `ROOT/plugin.sock`
    /// when a spec file registers it.
    pub fn new(root: &Path, socket: Option<PathBuf>, spec: Option<PathBuf>) -> PluginConfig {
        let socket = match (socket, &spec) {
            (Some(socket), _) => socket,
            (None, Some(_)) => root.join(ROOT_SOCKET_FILE),
            (None, None) => default_socket(),
        };
        PluginConfig { socket, spec }
    }

    /// The driver name Docker will know the plugin by (`docker volume create -d NAME`): the
    /// spec file's name, or the socket's when it is in the legacy directory; None when Docker
    /// cannot find it by itself.
    pub fn driver_name(&self) -> Option<String> {
        let stem = |p: &Path| p.file_stem().map(|s| s.to_string_lossy().into_owned());
        match &self.spec {
            Some(spec) => stem(spec),
            None if self.socket.parent() == Some(Path::new(LEGACY_SOCKET_DIR)) => {
                stem(&self.socket)
            }
            None => None,
        }
    }
}

/// The served socket (and spec file). `remove` (or dropping it) deletes them once this
/// daemon's listener is closed, unless another process serves them by then (a successor).
#[derive(Debug)]
pub struct Registration {
    socket: PathBuf,
    /// The spec file and the text this daemon wrote to it.
    spec: Option<(PathBuf, String)>,
    removed: bool,
}

impl Registration {
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Deletes the spec file and the socket, unless a successor serves them. Call it after
    /// closing the listener.
    pub fn remove(mut self) {
        self.remove_files();
    }

    fn remove_files(&mut self) {
        if std::mem::replace(&mut self.removed, true) {
            return;
        }
        // This daemon's listener is closed: whoever answers on the socket now is another
        // daemon, which owns the socket, and the spec file if it points there.
        if answers(&self.socket) {
            log::info!(
                "{} is served by another process now: left in place",
                self.socket.display()
            );
            return;
        }
        if let Some((spec, text)) = &self.spec {
            if std::fs::read_to_string(spec).is_ok_and(|now| now == *text) {
                if let Err(e) = std::fs::remove_file(spec) {
                    log::warn!("could not remove {}: {e}", spec.display());
                }
            }
        }
        let is_socket =
            std::fs::symlink_metadata(&self.socket).is_ok_and(|m| m.file_type().is_socket());
        if is_socket {
            if let Err(e) = serve::remove_socket(&self.socket) {
                log::warn!("could not remove {}: {e}", self.socket.display());
            }
        }
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.remove_files();
    }
}

/// Binds the plugin socket and writes the spec file. Refuses a socket or spec that another
/// live process serves (two daemons must choose different ones). Must run inside a tokio
/// runtime.
pub fn register(config: &PluginConfig) -> Result<(UnixListener, Registration), DaemonError> {
    let socket = &config.socket;
    prepare_dirs(config)?;
    check_socket_free(socket)?;
    if let Some(spec) = &config.spec {
        check_spec_free(spec, socket)?;
    }
    let listener = serve::bind_socket(socket)
        .map_err(|e| DaemonError::io(format!("listening on {}", socket.display()), e))?;
    let mut registration = Registration {
        socket: socket.clone(),
        spec: None,
        removed: false,
    };
    if let Some(spec) = &config.spec {
        let text = format!("unix://{}\n", socket.display());
        if let Err(e) = write_spec(spec, &text) {
            // Closed first, so that dropping `registration` removes the socket again.
            drop(listener);
            return Err(e);
        }
        registration.spec = Some((spec.clone(), text));
    }
    Ok((listener, registration))
}

/// Creates the socket's and the spec file's directories if missing (root's, 0755), and refuses
/// them unless only root can change them (see `trusted_dir`). The daemon calls it at start,
/// before anything is mounted or bound, and `register` again.
pub fn prepare_dirs(config: &PluginConfig) -> Result<(), DaemonError> {
    let dirs = [
        (config.socket.parent(), "Docker plugin socket"),
        (
            config.spec.as_deref().and_then(Path::parent),
            "Docker plugin spec file",
        ),
    ];
    for (dir, what) in dirs {
        if let Some(dir) = dir {
            create_dir(dir)?;
            check_trusted_dir(dir, what).map_err(DaemonError::Untrusted)?;
        }
    }
    Ok(())
}

fn create_dir(dir: &Path) -> Result<(), DaemonError> {
    DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(dir)
        .map_err(|e| DaemonError::io(format!("creating {}", dir.display()), e))
}

/// True when something accepts connections on `path`.
fn answers(path: &Path) -> bool {
    std::os::unix::net::UnixStream::connect(path).is_ok()
}

fn check_socket_free(socket: &Path) -> Result<(), DaemonError> {
    match std::fs::symlink_metadata(socket) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(DaemonError::io(format!("checking {}", socket.display()), e)),
        Ok(m) if !m.file_type().is_socket() => Err(DaemonError::PluginInUse(format!(
            "{} exists and is not a socket; choose another path with --plugin-socket",
            socket.display()
        ))),
        Ok(_) if answers(socket) => Err(DaemonError::PluginInUse(format!(
            "the plugin socket {} is served by another process (another fvol daemon?); \
             give this daemon its own with --plugin-socket PATH or --plugin-spec=FILE, \
             or run it with --no-plugin",
            socket.display()
        ))),
        // A stale socket left by a daemon that died: replaced.
        Ok(_) => Ok(()),
    }
}

fn check_spec_free(spec: &Path, socket: &Path) -> Result<(), DaemonError> {
    let Ok(text) = std::fs::read_to_string(spec) else {
        return Ok(());
    };
    let Some(other) = text.trim().strip_prefix("unix://").map(Path::new) else {
        return Ok(());
    };
    if other != socket && answers(other) {
        return Err(DaemonError::PluginInUse(format!(
            "the spec file {} registers a plugin that is running (at {}); \
             give this daemon its own with --plugin-spec=FILE, or run it with --no-plugin",
            spec.display(),
            other.display()
        )));
    }
    Ok(())
}

/// Writes the spec file whole or not at all, mode 0644: a new temporary file (never an
/// existing one, never through a symlink) renamed over it, which replaces whatever is there
/// without following it.
fn write_spec(spec: &Path, text: &str) -> Result<(), DaemonError> {
    let io_err = |e| DaemonError::io(format!("writing {}", spec.display()), e);
    let mut tmp_name = spec.as_os_str().to_owned();
    let suffix: u64 = rand::rng().random();
    tmp_name.push(format!(".tmp-{suffix:016x}"));
    let tmp = PathBuf::from(tmp_name);
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .custom_flags(libc::O_NOFOLLOW)
        .mode(0o644)
        .open(&tmp)
        .and_then(|mut f| {
            f.write_all(text.as_bytes())?;
            f.set_permissions(Permissions::from_mode(0o644))?;
            f.sync_all()
        });
    if let Err(e) = written.and_then(|()| std::fs::rename(&tmp, spec)) {
        let _ = std::fs::remove_file(&tmp);
        return Err(io_err(e));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults() {
        let root = Path::new("/var/lib/fvol");
        let legacy = PluginConfig::new(root, None, None);
        assert_eq!(legacy.socket, Path::new("/run/docker/plugins/fvol.sock"));
        assert_eq!(legacy.spec, None);
        assert_eq!(legacy.driver_name().as_deref(), Some("fvol"));

        let spec = PluginConfig::new(root, None, Some(default_spec()));
        assert_eq!(spec.socket, Path::new("/var/lib/fvol/plugin.sock"));
        assert_eq!(
            spec.spec.as_deref(),
            Some(Path::new("/etc/docker/plugins/fvol.spec"))
        );
        assert_eq!(spec.driver_name().as_deref(), Some("fvol"));

        let both = PluginConfig::new(
            root,
            Some("/run/x.sock".into()),
            Some("/etc/docker/plugins/quota.spec".into()),
        );
        assert_eq!(both.socket, Path::new("/run/x.sock"));
        assert_eq!(both.driver_name().as_deref(), Some("quota"));

        let elsewhere = PluginConfig::new(root, Some("/tmp/p.sock".into()), None);
        assert_eq!(elsewhere.driver_name(), None);
    }

    #[tokio::test]
    async fn registers_and_removes_socket_and_spec() {
        let dir = tempfile::tempdir().unwrap();
        let config = PluginConfig {
            socket: dir.path().join("run/p.sock"),
            spec: Some(dir.path().join("etc/p.spec")),
        };
        let (listener, registration) = register(&config).unwrap();
        let text = std::fs::read_to_string(config.spec.as_ref().unwrap()).unwrap();
        assert_eq!(text, format!("unix://{}\n", config.socket.display()));

        // A second server on the same socket is refused while the first one listens.
        let err = register(&config).unwrap_err().to_string();
        assert!(err.contains("--no-plugin"), "{err}");
        assert!(config.socket.exists(), "the refused one removed the socket");

        drop(listener);
        registration.remove();
        assert!(!config.socket.exists());
        assert!(!config.spec.as_ref().unwrap().exists());
    }

    #[tokio::test]
    async fn stale_socket_is_replaced_and_other_files_refused() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("p.sock");
        drop(std::os::unix::net::UnixListener::bind(&socket).unwrap());
        let config = PluginConfig {
            socket: socket.clone(),
            spec: None,
        };
        let (listener, registration) = register(&config).unwrap();
        drop(listener);
        drop(registration);
        assert!(!socket.exists());

        std::fs::write(&socket, b"precious").unwrap();
        let err = register(&config).unwrap_err().to_string();
        assert!(err.contains("is not a socket"), "{err}");
        assert_eq!(std::fs::read(&socket).unwrap(), b"precious");
    }

    #[tokio::test]
    async fn spec_of_a_live_plugin_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let first = PluginConfig {
            socket: dir.path().join("a.sock"),
            spec: Some(dir.path().join("p.spec")),
        };
        let (_listener, _registration) = register(&first).unwrap();
        let second = PluginConfig {
            socket: dir.path().join("b.sock"),
            spec: first.spec.clone(),
        };
        let err = register(&second).unwrap_err().to_string();
        assert!(err.contains("registers a plugin that is running"), "{err}");
        assert!(
            !second.socket.exists(),
            "the refused socket was left behind"
        );
    }

    #[tokio::test]
    async fn a_symlink_at_the_spec_path_is_replaced_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let precious = dir.path().join("precious");
        std::fs::write(&precious, b"data").unwrap();
        let spec = dir.path().join("p.spec");
        std::os::unix::fs::symlink(&precious, &spec).unwrap();
        let config = PluginConfig {
            socket: dir.path().join("p.sock"),
            spec: Some(spec.clone()),
        };
        let (_listener, _registration) = register(&config).unwrap();
        assert!(std::fs::symlink_metadata(&spec).unwrap().is_file());
        assert_eq!(std::fs::read(&precious).unwrap(), b"data");
        let mode = std::fs::metadata(&spec).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o644);
    }

    #[tokio::test]
    async fn a_directory_others_can_write_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let open = dir.path().join("open");
        std::fs::create_dir(&open).unwrap();
        std::fs::set_permissions(&open, Permissions::from_mode(0o777)).unwrap();
        let config = PluginConfig {
            socket: open.join("p.sock"),
            spec: None,
        };
        let err = register(&config).unwrap_err().to_string();
        assert!(
            err.contains("Docker plugin socket") && err.contains("writable"),
            "{err}"
        );
        assert!(!config.socket.exists());
        let config = PluginConfig {
            socket: dir.path().join("p.sock"),
            spec: Some(open.join("p.spec")),
        };
        let err = register(&config).unwrap_err().to_string();
        assert!(err.contains("Docker plugin spec file"), "{err}");
        assert!(!config.socket.exists());
    }

    #[tokio::test]
    async fn a_successors_files_are_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let config = PluginConfig {
            socket: dir.path().join("p.sock"),
            spec: Some(dir.path().join("p.spec")),
        };
        let (listener, old) = register(&config).unwrap();
        drop(listener);
        // A successor took over the (now stale) socket and rewrote the spec.
        let (_listener, _new) = register(&config).unwrap();
        old.remove();
        assert!(config.socket.exists());
        assert!(config.spec.as_ref().unwrap().exists());
    }
}
