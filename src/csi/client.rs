//! The daemon's API as `fvol csi` uses it: the same JSON requests as the CLI (`crate::api`),
//! sent asynchronously, with the HTTP status of a refusal kept so that `status` can turn it
//! into a gRPC code.
use std::path::{Path, PathBuf};

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::header::{CONTENT_TYPE, HOST};
use hyper::{Request, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::api::transport::{SendError, send};
use crate::api::{self, ErrorBody, routes};
use crate::volume::VolumeInfo;

/// A request the daemon refused (`status` set: its HTTP status, `message`: its error text) or
/// could not be sent (`status` None: the daemon is not there, or broke the connection).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DaemonError {
    pub status: Option<StatusCode>,
    pub message: String,
}

impl std::fmt::Display for DaemonError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl DaemonError {
    pub fn is_not_found(&self) -> bool {
        self.status == Some(StatusCode::NOT_FOUND)
    }
}

/// What a snapshot list answers (`fvol snapshot ls --format json`).
pub type SnapshotInfo = crate::volume::snapshot::SnapshotInfo;

/// A client of one daemon, by its root.
#[derive(Clone, Debug)]
pub struct Daemon {
    root: PathBuf,
    socket: PathBuf,
}

impl Daemon {
    pub fn new(root: &Path) -> Daemon {
        Daemon {
            root: root.to_owned(),
            socket: api::socket_path(root),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    async fn call<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        route: &str,
        request: &Req,
    ) -> Result<Resp, DaemonError> {
        let unsent = |message: String| DaemonError {
            status: None,
            message,
        };
        let body = serde_json::to_vec(request).map_err(|e| unsent(format!("encoding: {e}")))?;
        let request = Request::post(route)
            .header(HOST, "fvol")
            .header(CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| unsent(format!("building the request: {e}")))?;
        let socket = self.socket.display();
        let response = send(&self.socket, request).await.map_err(|e| match e {
            SendError::Connect(e) => unsent(format!(
                "cannot connect to the fvol daemon at {socket}: {e} (is `fvol daemon` running \
                 with this --root?)"
            )),
            SendError::ConnectTimeout => unsent(format!(
                "timed out connecting to the fvol daemon at {socket}"
            )),
            SendError::Http(e) => unsent(format!("talking to the fvol daemon at {socket}: {e}")),
        })?;
        if response.status.is_success() {
            return serde_json::from_slice(&response.body)
                .map_err(|e| unsent(format!("unexpected answer from the fvol daemon: {e}")));
        }
        let message = match serde_json::from_slice::<ErrorBody>(&response.body) {
            Ok(ErrorBody { error }) => error,
            Err(_) => String::from_utf8_lossy(&response.body).into_owned(),
        };
        Err(DaemonError {
            status: Some(response.status),
            message,
        })
    }

    pub async fn create(&self, req: &api::CreateRequest) -> Result<VolumeInfo, DaemonError> {
        self.call(routes::CREATE, req).await
    }

    /// Removes one volume; `Ok` also when it was already gone.
    pub async fn remove(&self, name: &str) -> Result<(), DaemonError> {
        let req = api::RemoveRequest {
            names: vec![name.to_owned()],
            force: false,
        };
        let results: Vec<api::RemoveResult> = self.call(routes::REMOVE, &req).await?;
        match results.into_iter().next().and_then(|r| r.error) {
            None => Ok(()),
            Some(message) if message.starts_with("no such volume") => Ok(()),
            // The daemon answers 200 with each name's outcome; a refusal of rm is a
            // volume in use (or one marked for removal), which is a precondition.
            Some(message) => Err(DaemonError {
                status: Some(StatusCode::CONFLICT),
                message,
            }),
        }
    }

    pub async fn list(&self) -> Result<Vec<VolumeInfo>, DaemonError> {
        self.call(routes::LIST, &api::Empty {}).await
    }

    pub async fn inspect(&self, name: &str) -> Result<VolumeInfo, DaemonError> {
        let req = api::InspectRequest {
            names: vec![name.to_owned()],
        };
        let mut infos: Vec<VolumeInfo> = self.call(routes::INSPECT, &req).await?;
        infos.pop().ok_or_else(|| DaemonError {
            status: Some(StatusCode::NOT_FOUND),
            message: format!("no such volume: {name}"),
        })
    }

    /// Mounts the volume and bind-mounts it at `target` (reference `csi:TARGET`).
    pub async fn mount(&self, name: &str, target: &Path) -> Result<PathBuf, DaemonError> {
        let req = api::MountRequest {
            name: name.to_owned(),
            target: Some(target.to_owned()),
            csi: true,
        };
        let answer: api::PathResponse = self.call(routes::MOUNT, &req).await?;
        Ok(answer.path)
    }

    /// Drops `reference` (a text form, as `inspect` shows it) and the bind mount fvol made
    /// for it.
    pub async fn release(&self, name: &str, reference: String) -> Result<(), DaemonError> {
        let req = api::UnmountRequest {
            name: name.to_owned(),
            reference: Some(reference),
            ..Default::default()
        };
        let _: api::UnmountResponse = self.call(routes::UNMOUNT, &req).await?;
        Ok(())
    }

    pub async fn update(
        &self,
        name: &str,
        options: std::collections::BTreeMap<String, String>,
    ) -> Result<VolumeInfo, DaemonError> {
        let req = api::UpdateRequest {
            name: name.to_owned(),
            options,
        };
        self.call(routes::UPDATE, &req).await
    }

    pub async fn snapshot_create(
        &self,
        name: &str,
        snap: &str,
    ) -> Result<SnapshotInfo, DaemonError> {
        self.call(routes::SNAPSHOT_CREATE, &snapshot_req(name, Some(snap)))
            .await
    }

    pub async fn snapshot_list(&self, name: &str) -> Result<Vec<SnapshotInfo>, DaemonError> {
        self.call(routes::SNAPSHOT_LIST, &snapshot_req(name, None))
            .await
    }

    pub async fn snapshot_remove(&self, name: &str, snap: &str) -> Result<(), DaemonError> {
        let _: api::Empty = self
            .call(routes::SNAPSHOT_REMOVE, &snapshot_req(name, Some(snap)))
            .await?;
        Ok(())
    }
}

fn snapshot_req(name: &str, snap: Option<&str>) -> api::SnapshotRequest {
    api::SnapshotRequest {
        name: name.to_owned(),
        snapshot: snap.map(str::to_owned),
    }
}
