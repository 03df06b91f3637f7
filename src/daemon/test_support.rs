//! A stand-in for the volume manager and a server on a temporary socket, for tests of the API
//! and of the CLI against it.
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::thread::JoinHandle;

use parking_lot::Mutex;
use tempfile::TempDir;
use tokio::sync::oneshot;

use super::api_routes::router_for;
use super::http::VolumeService;
use super::plugin_routes::plugin_router_for;
use super::serve;
use crate::volume::manager::{CreateRequest, PruneReport};
use crate::volume::{RefId, VolumeError, VolumeInfo, VolumeStatus};

/// A volume as the manager would describe it, unmounted and without limits.
pub fn sample_volume(name: &str) -> VolumeInfo {
    VolumeInfo {
        name: name.to_owned(),
        driver: "local".to_owned(),
        mountpoint: PathBuf::from(format!("/fvol/volumes/{name}/mnt")),
        created_at: "2024-01-01T00:00:00Z".to_owned(),
        labels: BTreeMap::new(),
        options: BTreeMap::new(),
        scope: "local".to_owned(),
        status: VolumeStatus {
            size_limit: None,
            used_bytes: 0,
            inode_limit: None,
            used_inodes: 0,
            mounted: false,
            mount_refs: Vec::new(),
            references: Vec::new(),
            cluster_wait: None,
            fenced: None,
            mount_pending: None,
            connection_ended: false,
        },
    }
}

/// Knows the volumes `data`, `old` and `live` (mounted); `busy` is always in use, and the
/// backend of `offline` does not answer. Records creates, mounts and unmounts.
#[derive(Default)]
pub struct FakeVolumes {
    calls: Mutex<Vec<String>>,
}

impl FakeVolumes {
    pub fn calls(&self) -> Vec<String> {
        self.calls.lock().clone()
    }

    fn known(name: &str) -> Result<VolumeInfo, VolumeError> {
        match name {
            "data" | "old" => Ok(sample_volume(name)),
            "live" => {
                let mut info = sample_volume(name);
                info.status.mounted = true;
                info.status.mount_refs = vec!["plugin:a".to_owned()];
                Ok(info)
            }
            _ => Err(VolumeError::NotFound(name.to_owned())),
        }
    }
}

impl VolumeService for FakeVolumes {
    fn create(&self, req: CreateRequest) -> Result<VolumeInfo, VolumeError> {
        let name = req.name.unwrap_or_else(|| "generated".to_owned());
        self.calls.lock().push(format!(
            "create {name} driver={:?} options={:?}",
            req.driver, req.options
        ));
        if name == "busy" {
            return Err(VolumeError::InUse {
                name,
                holders: "cli".to_owned(),
            });
        }
        if name == "offline" {
            return Err(crate::driver::DriverError::unavailable(
                "rados_connect on cluster ceph failed: Connection timed out (os error 110)",
            )
            .into());
        }
        let mut info = sample_volume(&name);
        info.options = req.options;
        info.labels = req.labels;
        Ok(info)
    }
    fn remove(&self, name: &str, _force: bool) -> Result<(), VolumeError> {
        Self::known(name).map(drop)
    }
    fn list(&self) -> Result<Vec<VolumeInfo>, VolumeError> {
        Ok(vec![sample_volume("data")])
    }
    fn get(&self, name: &str) -> Result<VolumeInfo, VolumeError> {
        Self::known(name)
    }
    fn path(&self, name: &str) -> Result<PathBuf, VolumeError> {
        Self::known(name).map(|info| info.mountpoint)
    }
    fn mount(&self, name: &str, reference: &RefId) -> Result<PathBuf, VolumeError> {
        let info = Self::known(name)?;
        self.calls.lock().push(format!("mount {name} {reference}"));
        Ok(info.mountpoint)
    }
    fn unmount(&self, name: &str, reference: &RefId) -> Result<(), VolumeError> {
        Self::known(name)?;
        self.calls
            .lock()
            .push(format!("unmount {name} {reference}"));
        Ok(())
    }
    fn release(&self, name: &str, reference: &RefId) -> Result<(), VolumeError> {
        Self::known(name)?;
        self.calls
            .lock()
            .push(format!("release {name} {reference}"));
        Ok(())
    }
    fn release_all(&self, name: &str) -> Result<Vec<String>, VolumeError> {
        let info = Self::known(name)?;
        self.calls.lock().push(format!("release all of {name}"));
        Ok(info.status.mount_refs)
    }
    fn prune(&self) -> Result<PruneReport, VolumeError> {
        Ok(PruneReport {
            removed: vec!["old".to_owned()],
            reclaimed_bytes: 1536,
        })
    }
    fn fsck(&self, name: &str) -> Result<String, VolumeError> {
        Err(VolumeError::NotFound(name.to_owned()))
    }
    fn break_lock(&self, name: &str) -> Result<Vec<String>, VolumeError> {
        Err(VolumeError::NotFound(name.to_owned()))
    }
    fn update(
        &self,
        name: &str,
        _options: std::collections::BTreeMap<String, String>,
    ) -> Result<VolumeInfo, VolumeError> {
        Err(VolumeError::NotFound(name.to_owned()))
    }
    fn progress(
        &self,
        _name: &str,
    ) -> Result<Option<crate::volume::progress::ProgressInfo>, VolumeError> {
        Ok(None)
    }
    fn transfer(
        &self,
        _import: bool,
        name: &str,
        _file: &std::path::Path,
    ) -> Result<serde_json::Value, VolumeError> {
        Err(VolumeError::NotFound(name.to_owned()))
    }
    fn snapshot(
        &self,
        _op: super::http::SnapshotOp,
        name: &str,
        _snap: &str,
    ) -> Result<super::http::Snapshots, VolumeError> {
        Err(VolumeError::NotFound(name.to_owned()))
    }
}

/// Serves an API over `FakeVolumes` on a socket of a fresh temporary ROOT, on a thread of its
/// own (so synchronous CLI code can be its client). Stops when dropped.
pub struct TestServer {
    pub root: TempDir,
    pub socket: PathBuf,
    pub volumes: Arc<FakeVolumes>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl TestServer {
    /// The CLI API on `ROOT/fvol.sock`.
    pub fn start() -> TestServer {
        let root = tempfile::tempdir().unwrap();
        let socket = crate::api::socket_path(root.path());
        Self::serve(root, socket, router_for)
    }

    /// The Docker plugin API on `ROOT/plugin.sock`.
    pub fn start_plugin() -> TestServer {
        let root = tempfile::tempdir().unwrap();
        let socket = root.path().join("plugin.sock");
        Self::serve(root, socket, plugin_router_for)
    }

    fn serve(
        root: TempDir,
        socket: PathBuf,
        router_for: fn(Arc<FakeVolumes>) -> axum::Router,
    ) -> TestServer {
        let volumes = Arc::new(FakeVolumes::default());
        let router = router_for(volumes.clone());
        let (stop, stopped) = oneshot::channel::<()>();
        let (ready, is_ready) = std::sync::mpsc::channel();
        let socket_for_server = socket.clone();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let listener = serve::bind_socket(&socket_for_server).unwrap();
                ready.send(()).unwrap();
                let shutdown = async {
                    let _ = stopped.await;
                };
                let limits = serve::ServeLimits::for_open_file_limit(1 << 20);
                serve::serve(listener, router, limits, shutdown)
                    .await
                    .unwrap();
            });
        });
        is_ready.recv().unwrap();
        TestServer {
            root,
            socket,
            volumes,
            stop: Some(stop),
            thread: Some(thread),
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
