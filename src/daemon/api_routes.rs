//! The CLI's HTTP API (`/v1/*`, see `crate::api`) over the volume manager.
use std::sync::Arc;

use super::http::{Failure, FrontDoor, SnapshotOp, Snapshots, VolumeService, unknown_endpoint};
use super::request_body::read_json;
use crate::api::{
    self, BreakLockResponse, Empty, ErrorBody, FsckResponse, InspectRequest, MountRequest,
    PathRequest, PathResponse, PruneResponse, RemoveRequest, RemoveResult, SnapshotRequest,
    TransferRequest, UnmountRequest, UnmountResponse, UpdateRequest, routes,
};
use crate::volume::manager::CreateRequest;
use crate::volume::{RefId, VolumeInfo, VolumeManager};
use axum::body::Body;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};

/// The CLI's front door: errors are `{"error": message}`.
pub struct Api;

impl FrontDoor for Api {
    const NAME: &'static str = "API";

    fn error_response(status: StatusCode, message: String) -> Response {
        (status, Json(ErrorBody { error: message })).into_response()
    }
}

/// A failed API request.
pub type ApiError = Failure<Api>;

/// The router the `fvol` command talks to on `ROOT/fvol.sock`; a stop request (`fvol daemon
/// --stop`) goes to `stop`.
pub fn cli_router(manager: Arc<VolumeManager>, stop: StopRequest) -> Router {
    router_for(manager).merge(
        Router::new()
            .route(routes::STOP, post(request_stop))
            .with_state(stop),
    )
}

/// Asks the daemon to stop for good: unmount every volume, then exit.
#[derive(Clone)]
pub struct StopRequest {
    pub requested: Arc<tokio::sync::watch::Sender<bool>>,
}

async fn request_stop(State(stop): State<StopRequest>, body: Body) -> ApiResult<Empty> {
    let _: Empty = read_json(body).await?;
    log::info!("stop requested: unmounting every volume");
    stop.requested.send_replace(true);
    Ok(Json(Empty {}))
}

pub(crate) fn router_for<S: VolumeService>(service: Arc<S>) -> Router {
    Router::new()
        .route(routes::CREATE, post(create::<S>))
        .route(routes::REMOVE, post(remove::<S>))
        .route(routes::LIST, post(list::<S>))
        .route(routes::INSPECT, post(inspect::<S>))
        .route(routes::PATH, post(path::<S>))
        .route(routes::MOUNT, post(mount::<S>))
        .route(routes::UNMOUNT, post(unmount::<S>))
        .route(routes::PRUNE, post(prune::<S>))
        .route(routes::FSCK, post(fsck::<S>))
        .route(routes::BREAK_LOCK, post(break_lock::<S>))
        .route(routes::UPDATE, post(update::<S>))
        .route(routes::PROGRESS, post(progress::<S>))
        .route(routes::EXPORT, post(export::<S>))
        .route(routes::IMPORT, post(import::<S>))
        .route(routes::SNAPSHOT_CREATE, post(snapshot_create::<S>))
        .route(routes::SNAPSHOT_LIST, post(snapshot_list::<S>))
        .route(routes::SNAPSHOT_REMOVE, post(snapshot_remove::<S>))
        .route(routes::SNAPSHOT_RESTORE, post(snapshot_restore::<S>))
        .fallback(unknown_endpoint::<Api>)
        .with_state(service)
}

type ApiResult<T> = Result<Json<T>, ApiError>;

async fn create<S: VolumeService>(
    State(service): State<Arc<S>>,
    body: Body,
) -> ApiResult<VolumeInfo> {
    let req: api::CreateRequest = read_json(body).await?;
    let req = CreateRequest {
        name: req.name,
        driver: req.driver,
        options: req.options,
        labels: req.labels,
    };
    let info = ApiError::run_blocking(service, move |volumes| volumes.create(req)).await?;
    log::info!("created volume {}", info.name);
    Ok(Json(info))
}

async fn remove<S: VolumeService>(
    State(service): State<Arc<S>>,
    body: Body,
) -> ApiResult<Vec<RemoveResult>> {
    let req: RemoveRequest = read_json(body).await?;
    let results = ApiError::run_blocking(service, move |volumes| {
        let results = req.names.into_iter().map(|name| {
            let error = volumes.remove(&name, req.force).err();
            match &error {
                None => log::info!("removed volume {name}"),
                Some(err) => log::info!("could not remove volume {name}: {err}"),
            }
            RemoveResult {
                name,
                error: error.map(|err| err.to_string()),
            }
        });
        Ok(results.collect())
    })
    .await?;
    Ok(Json(results))
}

async fn list<S: VolumeService>(
    State(service): State<Arc<S>>,
    body: Body,
) -> ApiResult<Vec<VolumeInfo>> {
    let Empty {} = read_json(body).await?;
    let volumes = ApiError::run_blocking(service, |volumes| volumes.list()).await?;
    Ok(Json(volumes))
}

async fn inspect<S: VolumeService>(
    State(service): State<Arc<S>>,
    body: Body,
) -> ApiResult<Vec<VolumeInfo>> {
    let req: InspectRequest = read_json(body).await?;
    let infos = ApiError::run_blocking(service, move |volumes| {
        req.names.iter().map(|name| volumes.get(name)).collect()
    })
    .await?;
    Ok(Json(infos))
}

async fn path<S: VolumeService>(
    State(service): State<Arc<S>>,
    body: Body,
) -> ApiResult<PathResponse> {
    let req: PathRequest = read_json(body).await?;
    let path = ApiError::run_blocking(service, move |volumes| volumes.path(&req.name)).await?;
    Ok(Json(PathResponse { path }))
}

async fn progress<S: VolumeService>(
    State(service): State<Arc<S>>,
    body: Body,
) -> ApiResult<Option<crate::volume::progress::ProgressInfo>> {
    let req: PathRequest = read_json(body).await?;
    let answer =
        ApiError::run_blocking(service, move |volumes| volumes.progress(&req.name)).await?;
    Ok(Json(answer))
}

async fn mount<S: VolumeService>(
    State(service): State<Arc<S>>,
    body: Body,
) -> ApiResult<PathResponse> {
    let req: MountRequest = read_json(body).await?;
    let reference = match (req.csi, req.target.as_deref()) {
        (false, target) => RefId::cli(target)?,
        (true, Some(target)) => RefId::csi(target)?,
        (true, None) => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "a csi reference needs a target: give \"target\" with \"csi\": true",
            ));
        }
    };
    let path = ApiError::run_blocking(service, move |volumes| volumes.mount(&req.name, &reference))
        .await?;
    Ok(Json(PathResponse { path }))
}

async fn unmount<S: VolumeService>(
    State(service): State<Arc<S>>,
    body: Body,
) -> ApiResult<UnmountResponse> {
    let req: UnmountRequest = read_json(body).await?;
    let chosen = [req.target.is_some(), req.reference.is_some(), req.all];
    if chosen.iter().filter(|c| **c).count() > 1 {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "give at most one of target, reference and all",
        ));
    }
    let name = req.name.clone();
    let released = if req.all {
        ApiError::run_blocking(service, move |volumes| volumes.release_all(&req.name)).await?
    } else {
        let reference = match &req.reference {
            Some(text) => RefId::parse(text)?,
            None => RefId::cli(req.target.as_deref())?,
        };
        let key = reference.key();
        ApiError::run_blocking(service, move |volumes| {
            volumes.release(&req.name, &reference)
        })
        .await?;
        vec![key]
    };
    log::info!("volume {name}: released {}", released.join(", "));
    Ok(Json(UnmountResponse { released }))
}

async fn prune<S: VolumeService>(
    State(service): State<Arc<S>>,
    body: Body,
) -> ApiResult<PruneResponse> {
    let Empty {} = read_json(body).await?;
    let report = ApiError::run_blocking(service, |volumes| volumes.prune()).await?;
    if !report.removed.is_empty() {
        log::info!("pruned volumes {}", report.removed.join(", "));
    }
    Ok(Json(PruneResponse {
        removed: report.removed,
        reclaimed_bytes: report.reclaimed_bytes,
    }))
}

async fn fsck<S: VolumeService>(
    State(service): State<Arc<S>>,
    body: Body,
) -> ApiResult<FsckResponse> {
    let req: PathRequest = read_json(body).await?;
    let report = ApiError::run_blocking(service, move |volumes| volumes.fsck(&req.name)).await?;
    Ok(Json(FsckResponse { report }))
}

async fn break_lock<S: VolumeService>(
    State(service): State<Arc<S>>,
    body: Body,
) -> ApiResult<BreakLockResponse> {
    let req: PathRequest = read_json(body).await?;
    let name = req.name.clone();
    let broken =
        ApiError::run_blocking(service, move |volumes| volumes.break_lock(&req.name)).await?;
    log::info!("broke locks on volume {name}: {}", broken.join(", "));
    Ok(Json(BreakLockResponse { broken }))
}

async fn update<S: VolumeService>(
    State(service): State<Arc<S>>,
    body: Body,
) -> ApiResult<VolumeInfo> {
    let req: UpdateRequest = read_json(body).await?;
    let info = ApiError::run_blocking(service, move |volumes| {
        volumes.update(&req.name, req.options)
    })
    .await?;
    Ok(Json(info))
}

async fn transfer<S: VolumeService>(
    service: Arc<S>,
    body: Body,
    import: bool,
) -> ApiResult<serde_json::Value> {
    let req: TransferRequest = read_json(body).await?;
    let answer = ApiError::run_blocking(service, move |volumes| {
        volumes.transfer(import, &req.name, &req.file)
    })
    .await?;
    Ok(Json(answer))
}

async fn export<S: VolumeService>(
    State(service): State<Arc<S>>,
    body: Body,
) -> ApiResult<serde_json::Value> {
    transfer(service, body, false).await
}

async fn import<S: VolumeService>(
    State(service): State<Arc<S>>,
    body: Body,
) -> ApiResult<serde_json::Value> {
    transfer(service, body, true).await
}

async fn snapshot_op<S: VolumeService>(
    service: Arc<S>,
    body: Body,
    op: SnapshotOp,
) -> Result<Snapshots, ApiError> {
    let req: SnapshotRequest = read_json(body).await?;
    let snap = match (op, req.snapshot) {
        (SnapshotOp::List, _) => String::new(),
        (_, Some(s)) => s,
        (_, None) => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "this snapshot request needs \"snapshot\": the snapshot's name",
            ));
        }
    };
    let name = req.name;
    ApiError::run_blocking(service, move |volumes| volumes.snapshot(op, &name, &snap)).await
}

async fn snapshot_create<S: VolumeService>(
    State(service): State<Arc<S>>,
    body: Body,
) -> ApiResult<crate::volume::snapshot::SnapshotInfo> {
    let mut made = snapshot_op(service, body, SnapshotOp::Create).await?;
    Ok(Json(made.remove(0)))
}

async fn snapshot_list<S: VolumeService>(
    State(service): State<Arc<S>>,
    body: Body,
) -> ApiResult<Snapshots> {
    Ok(Json(snapshot_op(service, body, SnapshotOp::List).await?))
}

async fn snapshot_remove<S: VolumeService>(
    State(service): State<Arc<S>>,
    body: Body,
) -> ApiResult<Empty> {
    snapshot_op(service, body, SnapshotOp::Remove).await?;
    Ok(Json(Empty {}))
}

async fn snapshot_restore<S: VolumeService>(
    State(service): State<Arc<S>>,
    body: Body,
) -> ApiResult<Empty> {
    snapshot_op(service, body, SnapshotOp::Restore).await?;
    Ok(Json(Empty {}))
}

#[cfg(test)]
mod tests {
    use axum::body::Bytes;
    use http_body_util::Full;
    use hyper::header::{CONTENT_TYPE, HOST};
    use hyper::{Request, StatusCode};

    use super::*;
    use crate::api::ErrorBody;
    use crate::api::transport::{RawResponse, send};
    use crate::daemon::test_support::TestServer;

    async fn post_raw(server: &TestServer, route: &str, body: &'static str) -> RawResponse {
        // Deliberately no Content-Type: the API must not require one.
        let request = Request::post(route)
            .header(HOST, "fvol")
            .body(Full::new(Bytes::from_static(body.as_bytes())))
            .unwrap();
        assert!(request.headers().get(CONTENT_TYPE).is_none());
        send(&server.socket, request).await.unwrap()
    }

    fn error_of(response: &RawResponse) -> String {
        serde_json::from_slice::<ErrorBody>(&response.body)
            .unwrap()
            .error
    }

    #[tokio::test]
    async fn accepts_a_request_without_content_type() {
        let server = TestServer::start();
        let response = post_raw(&server, routes::LIST, "{}").await;
        assert_eq!(response.status, StatusCode::OK);
        let volumes: Vec<VolumeInfo> = serde_json::from_slice(&response.body).unwrap();
        assert_eq!(volumes.len(), 1);
        assert_eq!(volumes[0].name, "data");
    }

    #[tokio::test]
    async fn empty_body_stands_for_an_empty_object() {
        let server = TestServer::start();
        let response = post_raw(&server, routes::PRUNE, "").await;
        assert_eq!(response.status, StatusCode::OK);
        let report: PruneResponse = serde_json::from_slice(&response.body).unwrap();
        assert_eq!(report.removed, ["old"]);
    }

    #[tokio::test]
    async fn malformed_body_is_a_bad_request() {
        let server = TestServer::start();
        let response = post_raw(&server, routes::PATH, "{}").await;
        assert_eq!(response.status, StatusCode::BAD_REQUEST);
        assert!(error_of(&response).contains("missing field `name`"));
        let response = post_raw(&server, routes::PATH, "{\"nom\": 1}").await;
        assert_eq!(response.status, StatusCode::BAD_REQUEST);
        assert!(error_of(&response).contains("unknown field `nom`"));
    }

    #[tokio::test]
    async fn bodies_of_another_json_type_are_refused_and_change_nothing() {
        let server = TestServer::start();
        for route in [
            routes::CREATE,
            routes::REMOVE,
            routes::LIST,
            routes::INSPECT,
            routes::PATH,
            routes::MOUNT,
            routes::UNMOUNT,
            routes::PRUNE,
            routes::FSCK,
            routes::BREAK_LOCK,
            routes::UPDATE,
            routes::SNAPSHOT_CREATE,
            routes::EXPORT,
            routes::IMPORT,
            routes::SNAPSHOT_LIST,
            routes::SNAPSHOT_REMOVE,
            routes::SNAPSHOT_RESTORE,
            routes::PROGRESS,
        ] {
            let response = post_raw(&server, route, "[]").await;
            assert_eq!(response.status, StatusCode::BAD_REQUEST, "{route}");
            let message = error_of(&response);
            assert!(
                message.starts_with("invalid request body: expected a JSON object {")
                    && message.ends_with("not an array"),
                "{route}: {message}"
            );
        }
        assert!(
            server.volumes.calls().is_empty(),
            "{:?}",
            server.volumes.calls()
        );
    }

    #[tokio::test]
    async fn inspect_names_the_missing_volume_with_404() {
        let server = TestServer::start();
        let response = post_raw(&server, routes::INSPECT, r#"{"names":["data","gone"]}"#).await;
        assert_eq!(response.status, StatusCode::NOT_FOUND);
        assert_eq!(error_of(&response), "no such volume: gone");
    }

    #[tokio::test]
    async fn in_use_is_a_conflict() {
        let server = TestServer::start();
        let response = post_raw(&server, routes::CREATE, r#"{"name":"busy"}"#).await;
        assert_eq!(response.status, StatusCode::CONFLICT);
    }

    #[tokio::test]
    async fn a_backend_that_does_not_answer_is_503() {
        let server = TestServer::start();
        let response = post_raw(&server, routes::CREATE, r#"{"name":"offline"}"#).await;
        assert_eq!(response.status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(error_of(&response).contains("timed out"));
    }

    #[tokio::test]
    async fn mount_references_name_the_target() {
        let server = TestServer::start();
        let plain = post_raw(&server, routes::MOUNT, r#"{"name":"data"}"#).await;
        assert_eq!(plain.status, StatusCode::OK);
        let bound = post_raw(
            &server,
            routes::MOUNT,
            r#"{"name":"data","target":"/mnt/x"}"#,
        )
        .await;
        assert_eq!(bound.status, StatusCode::OK);
        let unbound = post_raw(
            &server,
            routes::UNMOUNT,
            r#"{"name":"data","target":"/mnt/x"}"#,
        )
        .await;
        assert_eq!(unbound.status, StatusCode::OK);
        assert_eq!(
            server.volumes.calls(),
            [
                "mount data cli",
                "mount data cli:/mnt/x",
                "release data cli:/mnt/x"
            ]
        );
    }

    #[tokio::test]
    async fn csi_references_need_a_target() {
        let server = TestServer::start();
        let body = r#"{"name":"data","target":"/k/pod","csi":true}"#;
        let bound = post_raw(&server, routes::MOUNT, body).await;
        assert_eq!(bound.status, StatusCode::OK);
        let bare = post_raw(&server, routes::MOUNT, r#"{"name":"data","csi":true}"#).await;
        assert_eq!(bare.status, StatusCode::BAD_REQUEST);
        assert!(
            error_of(&bare).contains("needs a target"),
            "{}",
            error_of(&bare)
        );
        assert_eq!(server.volumes.calls(), ["mount data csi:/k/pod"]);
    }

    #[tokio::test]
    async fn relative_target_is_refused() {
        let server = TestServer::start();
        let response = post_raw(&server, routes::MOUNT, r#"{"name":"data","target":"mnt"}"#).await;
        assert_eq!(response.status, StatusCode::BAD_REQUEST);
        assert_eq!(
            error_of(&response),
            "invalid mount target: mnt is not an absolute path"
        );
        assert!(server.volumes.calls().is_empty());
    }

    #[tokio::test]
    async fn remove_reports_each_name() {
        let server = TestServer::start();
        let response = post_raw(&server, routes::REMOVE, r#"{"names":["data","gone"]}"#).await;
        assert_eq!(response.status, StatusCode::OK);
        let results: Vec<RemoveResult> = serde_json::from_slice(&response.body).unwrap();
        assert_eq!(results[0].error, None);
        assert_eq!(results[1].error.as_deref(), Some("no such volume: gone"));
    }

    #[tokio::test]
    async fn unknown_endpoint_is_a_json_404() {
        let server = TestServer::start();
        let response = post_raw(&server, "/v1/nope", "{}").await;
        assert_eq!(response.status, StatusCode::NOT_FOUND);
        assert_eq!(error_of(&response), "unknown API endpoint POST /v1/nope");
    }
}
