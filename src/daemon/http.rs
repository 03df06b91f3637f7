//! What the two front doors share: the CLI's API (`api_routes`) and the Docker volume plugin
//! (`plugin_routes`) serve the same volume operations (`VolumeService`) and differ only in the
//! shape of their answers (`FrontDoor`). Failures (`Failure`), the one mapping of error classes
//! to HTTP statuses (`status_for`), running a manager call (`Failure::run_blocking`) and the answer to an
//! unknown endpoint live here, once. Request bodies are read by `request_body`, also once.
use std::marker::PhantomData;
use std::path::PathBuf;
use std::sync::Arc;

use axum::http::{Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};

use super::request_body::BodyError;
use crate::model::ErrorClass;
use crate::volume::manager::{CreateRequest, PruneReport};
use crate::volume::progress::ProgressInfo;
use crate::volume::{RefId, VolumeError, VolumeInfo, VolumeManager};

/// The volume operations the front doors serve, with `VolumeManager`'s signatures. The
/// manager is the one real implementation; the trait lets the routing and error mapping be
/// tested without mounting anything.
pub trait VolumeService: Send + Sync + 'static {
    fn create(&self, req: CreateRequest) -> Result<VolumeInfo, VolumeError>;
    fn remove(&self, name: &str, force: bool) -> Result<(), VolumeError>;
    fn list(&self) -> Result<Vec<VolumeInfo>, VolumeError>;
    fn get(&self, name: &str) -> Result<VolumeInfo, VolumeError>;
    fn path(&self, name: &str) -> Result<PathBuf, VolumeError>;
    fn mount(&self, name: &str, reference: &RefId) -> Result<PathBuf, VolumeError>;
    fn unmount(&self, name: &str, reference: &RefId) -> Result<(), VolumeError>;
    fn release(&self, name: &str, reference: &RefId) -> Result<(), VolumeError>;
    fn release_all(&self, name: &str) -> Result<Vec<String>, VolumeError>;
    fn prune(&self) -> Result<PruneReport, VolumeError>;
    fn fsck(&self, name: &str) -> Result<String, VolumeError>;
    fn break_lock(&self, name: &str) -> Result<Vec<String>, VolumeError>;
    fn update(
        &self,
        name: &str,
        options: std::collections::BTreeMap<String, String>,
    ) -> Result<VolumeInfo, VolumeError>;
    fn snapshot(&self, op: SnapshotOp, name: &str, snap: &str) -> Result<Snapshots, VolumeError>;
    /// The long operation under way on `name`, if any (without waiting for its lock).
    fn progress(&self, name: &str) -> Result<Option<ProgressInfo>, VolumeError>;
    /// Export (`import` false: `file` is written) or import (`file` is read).
    fn transfer(
        &self,
        import: bool,
        name: &str,
        file: &std::path::Path,
    ) -> Result<serde_json::Value, VolumeError>;
}

/// A snapshot operation, for `VolumeService::snapshot`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SnapshotOp {
    Create,
    List,
    Remove,
    Restore,
}

/// What a snapshot operation answers: the snapshots it made or listed.
pub type Snapshots = Vec<crate::volume::snapshot::SnapshotInfo>;

impl VolumeService for VolumeManager {
    fn create(&self, req: CreateRequest) -> Result<VolumeInfo, VolumeError> {
        VolumeManager::create(self, req)
    }
    fn remove(&self, name: &str, force: bool) -> Result<(), VolumeError> {
        VolumeManager::remove(self, name, force)
    }
    fn list(&self) -> Result<Vec<VolumeInfo>, VolumeError> {
        VolumeManager::list(self)
    }
    fn get(&self, name: &str) -> Result<VolumeInfo, VolumeError> {
        VolumeManager::get(self, name)
    }
    fn path(&self, name: &str) -> Result<PathBuf, VolumeError> {
        VolumeManager::path(self, name)
    }
    fn progress(&self, name: &str) -> Result<Option<ProgressInfo>, VolumeError> {
        VolumeManager::progress(self, name)
    }
    fn mount(&self, name: &str, reference: &RefId) -> Result<PathBuf, VolumeError> {
        VolumeManager::mount(self, name, reference)
    }
    fn unmount(&self, name: &str, reference: &RefId) -> Result<(), VolumeError> {
        VolumeManager::unmount(self, name, reference)
    }
    fn release(&self, name: &str, reference: &RefId) -> Result<(), VolumeError> {
        VolumeManager::release(self, name, reference)
    }
    fn release_all(&self, name: &str) -> Result<Vec<String>, VolumeError> {
        VolumeManager::release_all(self, name)
    }
    fn prune(&self) -> Result<PruneReport, VolumeError> {
        VolumeManager::prune(self)
    }
    fn fsck(&self, name: &str) -> Result<String, VolumeError> {
        VolumeManager::fsck(self, name)
    }
    fn break_lock(&self, name: &str) -> Result<Vec<String>, VolumeError> {
        VolumeManager::break_lock(self, name)
    }
    fn update(
        &self,
        name: &str,
        options: std::collections::BTreeMap<String, String>,
    ) -> Result<VolumeInfo, VolumeError> {
        VolumeManager::update(self, name, options)
    }
    fn transfer(
        &self,
        import: bool,
        name: &str,
        file: &std::path::Path,
    ) -> Result<serde_json::Value, VolumeError> {
        let json = |v: Result<serde_json::Value, serde_json::Error>| {
            v.map_err(|e| VolumeError::io("answer", std::io::Error::other(e)))
        };
        match import {
            false => json(serde_json::to_value(self.export(name, file)?)),
            true => json(serde_json::to_value(self.import(name, file)?)),
        }
    }
    fn snapshot(&self, op: SnapshotOp, name: &str, snap: &str) -> Result<Snapshots, VolumeError> {
        match op {
            SnapshotOp::Create => self.snapshot_create(name, snap).map(|s| vec![s]),
            SnapshotOp::List => self.snapshot_list(name),
            SnapshotOp::Remove => self.snapshot_remove(name, snap).map(|()| Vec::new()),
            SnapshotOp::Restore => self.snapshot_restore(name, snap).map(|()| Vec::new()),
        }
    }
}

/// The one mapping from a class of error to an HTTP status, for both front doors: 400 for a
/// mistake in the request, 404 for something it names that does not exist, 409 for a clash
/// with the state of things, 503 for a backend that cannot be reached now, 500 for a failure
/// while serving a correct request.
pub fn status_for(class: ErrorClass) -> StatusCode {
    match class {
        ErrorClass::BadInput => StatusCode::BAD_REQUEST,
        ErrorClass::NotFound => StatusCode::NOT_FOUND,
        ErrorClass::Conflict => StatusCode::CONFLICT,
        ErrorClass::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        ErrorClass::Internal => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// What differs between the front doors.
pub trait FrontDoor: Send + Sync + 'static {
    /// How the door names itself in messages ("API", "plugin").
    const NAME: &'static str;
    /// Said after "unknown ... endpoint METHOD PATH", if anything.
    const UNKNOWN_ENDPOINT_HINT: &'static str = "";
    /// The message a user of this door reads for `err` (its text, unless the door has more to
    /// say).
    fn message(err: &VolumeError) -> String {
        err.to_string()
    }
    /// An error answer with this status and message, in the door's shape.
    fn error_response(status: StatusCode, message: String) -> Response;
}

/// A failed request, answered by the front door `D` (its status and its message).
pub struct Failure<D> {
    pub status: StatusCode,
    pub message: String,
    door: PhantomData<D>,
}

impl<D> std::fmt::Debug for Failure<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.status, self.message)
    }
}

impl<D: FrontDoor> Failure<D> {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Failure {
            status,
            message: message.into(),
            door: PhantomData,
        }
    }
}

impl<D: FrontDoor> From<BodyError> for Failure<D> {
    fn from(err: BodyError) -> Self {
        Failure::new(err.status, err.message)
    }
}

impl<D: FrontDoor> From<VolumeError> for Failure<D> {
    fn from(err: VolumeError) -> Self {
        Failure::new(status_for(err.class()), D::message(&err))
    }
}

impl<D: FrontDoor> IntoResponse for Failure<D> {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            log::error!("{}: {}", D::NAME, self.message);
        }
        D::error_response(self.status, self.message)
    }
}

impl<D: FrontDoor> Failure<D> {
    /// Runs a manager call on the blocking pool (manager calls mount filesystems and wait on
    /// them); its error is answered by the door `D`: `ApiError::run_blocking(...)`.
    pub async fn run_blocking<S, T, F>(service: Arc<S>, op: F) -> Result<T, Self>
    where
        S: VolumeService,
        T: Send + 'static,
        F: FnOnce(&S) -> Result<T, VolumeError> + Send + 'static,
    {
        match tokio::task::spawn_blocking(move || op(&service)).await {
            Ok(result) => result.map_err(Failure::from),
            Err(join_error) => Err(Failure::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("internal error: {join_error}"),
            )),
        }
    }
}

/// The fallback of both routers: a 404 naming the endpoint.
pub async fn unknown_endpoint<D: FrontDoor>(method: Method, uri: Uri) -> Failure<D> {
    Failure::new(
        StatusCode::NOT_FOUND,
        format!(
            "unknown {} endpoint {method} {}{}",
            D::NAME,
            uri.path(),
            D::UNKNOWN_ENDPOINT_HINT
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::driver::DriverError;
    use crate::store::StoreError;

    #[test]
    fn each_class_has_one_status() {
        for (class, status) in [
            (ErrorClass::BadInput, 400),
            (ErrorClass::NotFound, 404),
            (ErrorClass::Conflict, 409),
            (ErrorClass::Unavailable, 503),
            (ErrorClass::Internal, 500),
        ] {
            assert_eq!(status_for(class).as_u16(), status, "{class:?}");
        }
    }

    #[test]
    fn statuses_follow_the_class_of_error() {
        let cases = [
            (VolumeError::NotFound("v".into()), 404),
            (
                VolumeError::Conflict {
                    name: "v".into(),
                    what: "driver x".into(),
                },
                409,
            ),
            (
                VolumeError::InUse {
                    name: "v".into(),
                    holders: "cli".into(),
                },
                409,
            ),
            (
                VolumeError::InvalidName {
                    name: "-".into(),
                    reason: "bad".into(),
                },
                400,
            ),
            (VolumeError::InvalidOption("size=0".into()), 400),
            (VolumeError::InvalidLabel("too many".into()), 400),
            (VolumeError::InvalidTarget("x".into()), 400),
            (
                VolumeError::UnknownDriver {
                    given: "x".into(),
                    valid: "local".into(),
                },
                400,
            ),
            (
                VolumeError::io("mounting", std::io::Error::other("boom")),
                500,
            ),
            (VolumeError::Store(StoreError::Db("broken".into())), 500),
            (
                VolumeError::Mounted {
                    name: "v".into(),
                    holders: "cli".into(),
                    what: "fsck it",
                },
                409,
            ),
            (
                VolumeError::NoSuchReference {
                    name: "v".into(),
                    given: "cli".into(),
                    held: "plugin:a".into(),
                },
                404,
            ),
            (VolumeError::InvalidReference("x".into()), 400),
            // Driver errors carry their class.
            (DriverError::InvalidOption("size=0".into()).into(), 400),
            (
                DriverError::UnknownOption {
                    driver: "local",
                    key: "x".into(),
                    valid: vec!["size"],
                }
                .into(),
                400,
            ),
            (DriverError::InUse("image rbd/v is open".into()).into(), 409),
            (DriverError::conflict("created by someone else").into(), 409),
            (
                DriverError::failed(ErrorClass::NotFound, "pool ssd").into(),
                404,
            ),
            // A Ceph outage: the cluster does not answer.
            (
                DriverError::unavailable("rados_connect: Connection timed out").into(),
                503,
            ),
            (DriverError::internal("measuring").into(), 500),
            // An unfinished removal has the class of what stopped it.
            (
                VolumeError::RemovalUnfinished {
                    name: "v".into(),
                    source: Box::new(DriverError::unavailable("timed out").into()),
                },
                503,
            ),
        ];
        for (err, status) in cases {
            assert_eq!(status_for(err.class()).as_u16(), status, "{err}");
        }
    }
}
