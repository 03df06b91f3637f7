//! The Docker volume plugin endpoints (`crate::api::plugin`) over the volume manager.
//!
//! Docker's Mount IDs become mount references `plugin:<ID>` of the manager, which keeps a
//! persisted set per volume: a repeated Mount with a known ID changes nothing, an Unmount with
//! an unknown ID is harmless, and the FUSE mount ends when the set (CLI references included)
//! is empty. That serves Docker (a fresh ID per container) and PouchContainer (one ID per
//! volume) alike.
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::http::{Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde::Serialize;

use super::api_routes::VolumeService;
use super::request_body::{BodyError, read_json};
use crate::api::Empty;
use crate::api::plugin::{
    self, ActivateResponse, Capabilities, CapabilitiesResponse, CreateRequest, DRIVER_OPTION,
    ErrResponse, GetResponse, ListResponse, MountRequest, MountpointResponse, NameRequest,
    NoArguments, Status, Volume, routes,
};
use crate::volume::manager;
use crate::volume::{RefId, VolumeError, VolumeInfo, VolumeManager};

/// The router Docker (or PouchContainer) talks to on the plugin socket.
pub fn plugin_router(manager: Arc<VolumeManager>) -> Router {
    plugin_router_for(manager)
}

pub(crate) fn plugin_router_for<S: VolumeService>(service: Arc<S>) -> Router {
    Router::new()
        .route(routes::ACTIVATE, post(activate))
        .route(routes::CAPABILITIES, post(capabilities))
        .route(routes::CREATE, post(create::<S>))
        .route(routes::REMOVE, post(remove::<S>))
        .route(routes::MOUNT, post(mount::<S>))
        .route(routes::UNMOUNT, post(unmount::<S>))
        .route(routes::PATH, post(path::<S>))
        .route(routes::GET, post(get::<S>))
        .route(routes::LIST, post(list::<S>))
        .fallback(unknown_endpoint)
        .method_not_allowed_fallback(wrong_method)
        .with_state(service)
}

/// A success answer: 200, the plugin Content-Type, `T` as JSON.
struct Reply<T>(T);

impl<T: Serialize> IntoResponse for Reply<T> {
    fn into_response(self) -> Response {
        match serde_json::to_vec(&self.0) {
            Ok(body) => {
                (StatusCode::OK, [(CONTENT_TYPE, plugin::CONTENT_TYPE)], body).into_response()
            }
            Err(err) => PluginError::new(format!("internal error: encoding the answer: {err}"))
                .into_response(),
        }
    }
}

/// An error answer: `{"Err": message}` (Docker shows the message verbatim, whatever the
/// status), with 500 as the protocol has it, or a 4xx for a request body that was refused.
#[derive(Debug)]
pub struct PluginError {
    pub status: StatusCode,
    pub message: String,
}

impl PluginError {
    /// A 500, as the protocol answers every failure.
    fn new(message: String) -> PluginError {
        PluginError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            message,
        }
    }
}

impl From<BodyError> for PluginError {
    fn from(err: BodyError) -> Self {
        PluginError {
            status: err.status,
            message: err.message,
        }
    }
}

impl IntoResponse for PluginError {
    fn into_response(self) -> Response {
        let body = serde_json::to_vec(&ErrResponse { err: self.message })
            .unwrap_or_else(|_| br#"{"Err":"internal error"}"#.to_vec());
        (self.status, [(CONTENT_TYPE, plugin::CONTENT_TYPE)], body).into_response()
    }
}

/// The one mapping from volume errors to what a Docker user reads. The manager's messages
/// already say what is wrong; options are given with `docker volume create -o`, where the fvol
/// driver is an option too, so the messages about drivers and unknown options say so.
fn plugin_error(err: VolumeError) -> PluginError {
    let message = match &err {
        VolumeError::UnknownDriver { .. } => {
            format!("{err}; choose one with -o {DRIVER_OPTION}=NAME")
        }
        VolumeError::InvalidOption(text) if text.starts_with("unknown option") => {
            format!(
                "{err}; and {DRIVER_OPTION}=NAME chooses the fvol driver ({})",
                {
                    let names: Vec<_> =
                        crate::driver::registry().iter().map(|d| d.name()).collect();
                    names.join(", ")
                }
            )
        }
        _ => err.to_string(),
    };
    if !err.is_user_error() {
        log::error!("plugin: {message}");
    }
    PluginError::new(message)
}

type PluginResult<T> = Result<Reply<T>, PluginError>;

async fn activate(body: Body) -> PluginResult<ActivateResponse> {
    let NoArguments {} = read_json(body).await?;
    Ok(Reply(ActivateResponse {
        implements: vec!["VolumeDriver".to_owned()],
    }))
}

async fn capabilities(body: Body) -> PluginResult<CapabilitiesResponse> {
    let NoArguments {} = read_json(body).await?;
    Ok(Reply(CapabilitiesResponse {
        capabilities: Capabilities {
            scope: "local".to_owned(),
        },
    }))
}

async fn create<S: VolumeService>(
    State(service): State<Arc<S>>,
    body: Body,
) -> PluginResult<Empty> {
    let req: CreateRequest = read_json(body).await?;
    let mut options = req.opts.unwrap_or_default();
    // The fvol driver is chosen with an option; it is not an option of that driver, so the
    // driver never sees it and the catalog keeps the options without it (an identical
    // re-create then compares equal).
    let driver = options.remove(DRIVER_OPTION);
    let req = manager::CreateRequest {
        name: Some(req.name),
        driver,
        options,
        labels: BTreeMap::new(),
    };
    let info = run_blocking(service, move |volumes| volumes.create(req)).await?;
    log::info!("plugin: created volume {} ({})", info.name, info.driver);
    Ok(Reply(Empty {}))
}

async fn remove<S: VolumeService>(
    State(service): State<Arc<S>>,
    body: Body,
) -> PluginResult<Empty> {
    let req: NameRequest = read_json(body).await?;
    let name = req.name.clone();
    run_blocking(service, move |volumes| volumes.remove(&req.name, false)).await?;
    log::info!("plugin: removed volume {name}");
    Ok(Reply(Empty {}))
}

async fn mount<S: VolumeService>(
    State(service): State<Arc<S>>,
    body: Body,
) -> PluginResult<MountpointResponse> {
    let req: MountRequest = read_json(body).await?;
    let reference = RefId::plugin(&req.id).map_err(plugin_error)?;
    let log_ref = reference.key();
    let name = req.name.clone();
    let mountpoint =
        run_blocking(service, move |volumes| volumes.mount(&req.name, &reference)).await?;
    log::info!("plugin: volume {name} mounted for {log_ref}");
    Ok(Reply(MountpointResponse { mountpoint }))
}

async fn unmount<S: VolumeService>(
    State(service): State<Arc<S>>,
    body: Body,
) -> PluginResult<Empty> {
    let req: MountRequest = read_json(body).await?;
    let reference = RefId::plugin(&req.id).map_err(plugin_error)?;
    let log_ref = reference.key();
    let name = req.name.clone();
    run_blocking(service, move |volumes| {
        volumes.unmount(&req.name, &reference)
    })
    .await?;
    log::info!("plugin: volume {name} released by {log_ref}");
    Ok(Reply(Empty {}))
}

async fn path<S: VolumeService>(
    State(service): State<Arc<S>>,
    body: Body,
) -> PluginResult<MountpointResponse> {
    let req: NameRequest = read_json(body).await?;
    let info = run_blocking(service, move |volumes| volumes.get(&req.name)).await?;
    // The protocol's Path is where the volume is mounted: nothing while it is not.
    let mountpoint = match info.status.mounted {
        true => info.mountpoint,
        false => PathBuf::new(),
    };
    Ok(Reply(MountpointResponse { mountpoint }))
}

async fn get<S: VolumeService>(
    State(service): State<Arc<S>>,
    body: Body,
) -> PluginResult<GetResponse> {
    let req: NameRequest = read_json(body).await?;
    let info = run_blocking(service, move |volumes| volumes.get(&req.name)).await?;
    Ok(Reply(GetResponse {
        volume: volume_of(info, true),
    }))
}

async fn list<S: VolumeService>(
    State(service): State<Arc<S>>,
    body: Body,
) -> PluginResult<ListResponse> {
    let NoArguments {} = read_json(body).await?;
    let infos = run_blocking(service, |volumes| volumes.list()).await?;
    Ok(Reply(ListResponse {
        volumes: infos.into_iter().map(|i| volume_of(i, false)).collect(),
    }))
}

async fn unknown_endpoint(method: Method, uri: Uri) -> Response {
    let mut response = PluginError::new(format!(
        "unknown plugin endpoint {method} {}: fvol implements the VolumeDriver protocol",
        uri.path()
    ))
    .into_response();
    *response.status_mut() = StatusCode::NOT_FOUND;
    response
}

async fn wrong_method(method: Method, uri: Uri) -> Response {
    let mut response = PluginError::new(format!(
        "{method} {} is not allowed: plugin endpoints take POST",
        uri.path()
    ))
    .into_response();
    *response.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
    response
}

fn volume_of(info: VolumeInfo, with_status: bool) -> Volume {
    let status = Status {
        driver: info.driver,
        options: info.options,
        size_limit: info.status.size_limit,
        used_bytes: info.status.used_bytes,
        inode_limit: info.status.inode_limit,
        used_inodes: info.status.used_inodes,
        mounted: info.status.mounted,
        mount_refs: info.status.mount_refs,
    };
    Volume {
        name: info.name,
        mountpoint: info.mountpoint,
        created_at: info.created_at,
        status: with_status.then_some(status),
    }
}

/// Runs a manager call on the blocking pool: manager calls mount filesystems and wait on them.
async fn run_blocking<S, T, F>(service: Arc<S>, op: F) -> Result<T, PluginError>
where
    S: VolumeService,
    T: Send + 'static,
    F: FnOnce(&S) -> Result<T, VolumeError> + Send + 'static,
{
    match tokio::task::spawn_blocking(move || op(&service)).await {
        Ok(result) => result.map_err(plugin_error),
        Err(join_error) => Err(PluginError::new(format!("internal error: {join_error}"))),
    }
}

#[cfg(test)]
mod tests {
    use axum::body::Bytes;
    use http_body_util::Full;
    use hyper::Request;
    use hyper::header::{ACCEPT, HOST};
    use serde_json::{Value, json};

    use super::*;
    use crate::cli::client::{RawResponse, send};
    use crate::daemon::test_support::TestServer;

    /// As dockerd sends them: an Accept header, no Content-Type.
    async fn call(server: &TestServer, route: &str, body: &'static str) -> RawResponse {
        let request = Request::post(route)
            .header(HOST, "plugin")
            .header(ACCEPT, "application/vnd.docker.plugins.v1.2+json")
            .body(Full::new(Bytes::from_static(body.as_bytes())))
            .unwrap();
        let response = send(&server.socket, request).await.unwrap();
        assert_eq!(
            response.headers.get(CONTENT_TYPE).unwrap(),
            plugin::CONTENT_TYPE,
            "{route}"
        );
        response
    }

    async fn ok(server: &TestServer, route: &str, body: &'static str) -> Value {
        let response = call(server, route, body).await;
        let json: Value = serde_json::from_slice(&response.body).unwrap();
        assert_eq!(response.status, StatusCode::OK, "{route} {body}: {json}");
        json
    }

    async fn err(server: &TestServer, route: &str, body: &'static str) -> String {
        err_with(server, route, body, StatusCode::INTERNAL_SERVER_ERROR).await
    }

    async fn err_with(
        server: &TestServer,
        route: &str,
        body: &'static str,
        status: StatusCode,
    ) -> String {
        let response = call(server, route, body).await;
        assert_eq!(response.status, status, "{route} {body}");
        let answer: ErrResponse = serde_json::from_slice(&response.body).unwrap();
        answer.err
    }

    #[tokio::test]
    async fn activate_and_capabilities() {
        let server = TestServer::start_plugin();
        let activated = ok(&server, routes::ACTIVATE, "").await;
        assert_eq!(activated, json!({"Implements": ["VolumeDriver"]}));
        let caps = ok(&server, routes::CAPABILITIES, "{}").await;
        assert_eq!(caps, json!({"Capabilities": {"Scope": "local"}}));
    }

    #[tokio::test]
    async fn create_takes_the_driver_out_of_the_options() {
        let server = TestServer::start_plugin();
        let plain = r#"{"Name":"v1","Opts":null}"#;
        assert_eq!(ok(&server, routes::CREATE, plain).await, json!({}));
        let body = r#"{"Name":"v2","Opts":{"driver":"tmpfs","size":"1G"}}"#;
        assert_eq!(ok(&server, routes::CREATE, body).await, json!({}));
        assert_eq!(
            server.volumes.calls(),
            [
                "create v1 driver=None options={}",
                r#"create v2 driver=Some("tmpfs") options={"size": "1G"}"#,
            ]
        );
    }

    #[tokio::test]
    async fn get_list_and_path_shapes() {
        let server = TestServer::start_plugin();
        let got = ok(&server, routes::GET, r#"{"Name":"data"}"#).await;
        assert_eq!(
            got,
            json!({"Volume": {
                "Name": "data",
                "Mountpoint": "/fvol/volumes/data/mnt",
                "CreatedAt": "2024-01-01T00:00:00Z",
                "Status": {
                    "Driver": "local", "Options": {}, "UsedBytes": 0, "UsedInodes": 0,
                    "Mounted": false, "MountRefs": []
                }
            }})
        );
        let listed = ok(&server, routes::LIST, "{}").await;
        assert_eq!(
            listed,
            json!({"Volumes": [{
                "Name": "data",
                "Mountpoint": "/fvol/volumes/data/mnt",
                "CreatedAt": "2024-01-01T00:00:00Z"
            }]})
        );
        let idle = ok(&server, routes::PATH, r#"{"Name":"data"}"#).await;
        assert_eq!(idle, json!({"Mountpoint": ""}));
        let live = ok(&server, routes::PATH, r#"{"Name":"live"}"#).await;
        assert_eq!(live, json!({"Mountpoint": "/fvol/volumes/live/mnt"}));
    }

    #[tokio::test]
    async fn mount_ids_become_plugin_references() {
        let server = TestServer::start_plugin();
        let mounted = ok(&server, routes::MOUNT, r#"{"Name":"data","ID":"abc"}"#).await;
        assert_eq!(mounted, json!({"Mountpoint": "/fvol/volumes/data/mnt"}));
        let released = ok(&server, routes::UNMOUNT, r#"{"Name":"data","ID":"abc"}"#).await;
        assert_eq!(released, json!({}));
        assert_eq!(
            server.volumes.calls(),
            ["mount data plugin:abc", "unmount data plugin:abc"]
        );
        let missing = err(&server, routes::MOUNT, r#"{"Name":"data"}"#).await;
        assert!(missing.contains("no mount ID"), "{missing}");
        let control = err(&server, routes::UNMOUNT, r#"{"Name":"data","ID":"a\nb"}"#).await;
        assert!(control.contains("invalid mount ID"), "{control}");
    }

    #[tokio::test]
    async fn errors_are_500_with_err() {
        let server = TestServer::start_plugin();
        let gone = err(&server, routes::GET, r#"{"Name":"gone"}"#).await;
        assert_eq!(gone, "no such volume: gone");
        let busy = err(&server, routes::CREATE, r#"{"Name":"busy"}"#).await;
        assert!(busy.contains("in use"), "{busy}");
    }

    #[tokio::test]
    async fn bodies_of_the_wrong_shape_are_400_with_err() {
        let server = TestServer::start_plugin();
        let bad = StatusCode::BAD_REQUEST;
        let garbage = err_with(&server, routes::REMOVE, "{not json", bad).await;
        assert!(garbage.starts_with("invalid request body"), "{garbage}");
        let nameless = err_with(&server, routes::GET, "{}", bad).await;
        assert!(nameless.contains("missing field `Name`"), "{nameless}");
        for route in [
            routes::ACTIVATE,
            routes::CAPABILITIES,
            routes::LIST,
            routes::CREATE,
            routes::REMOVE,
            routes::MOUNT,
            routes::UNMOUNT,
            routes::PATH,
            routes::GET,
        ] {
            let message = err_with(&server, route, r#"["data"]"#, bad).await;
            assert!(
                message.starts_with("invalid request body: expected a JSON object {")
                    && message.ends_with("not an array"),
                "{route}: {message}"
            );
        }
        // Nothing reached the volumes.
        assert!(
            server.volumes.calls().is_empty(),
            "{:?}",
            server.volumes.calls()
        );
    }

    #[tokio::test]
    async fn unknown_endpoints_and_methods() {
        let server = TestServer::start_plugin();
        let response = call(&server, "/VolumeDriver.Nope", "{}").await;
        assert_eq!(response.status, StatusCode::NOT_FOUND);
        let answer: ErrResponse = serde_json::from_slice(&response.body).unwrap();
        assert!(answer.err.contains("/VolumeDriver.Nope"), "{}", answer.err);

        let request = Request::get(routes::LIST)
            .header(HOST, "plugin")
            .body(Full::new(Bytes::new()))
            .unwrap();
        let response = send(&server.socket, request).await.unwrap();
        assert_eq!(response.status, StatusCode::METHOD_NOT_ALLOWED);
        let answer: ErrResponse = serde_json::from_slice(&response.body).unwrap();
        assert!(answer.err.contains("POST"), "{}", answer.err);
    }

    #[test]
    fn messages_point_docker_users_at_the_driver_option() {
        let unknown_driver = plugin_error(VolumeError::UnknownDriver {
            given: "rbd".into(),
            valid: "local, tmpfs".into(),
        });
        assert_eq!(
            unknown_driver.message,
            "unknown driver \"rbd\": valid drivers are local, tmpfs; choose one with -o driver=NAME"
        );
        let raw = BTreeMap::from([("foo".to_owned(), "1".to_owned())]);
        let unknown_option =
            crate::volume::options::parse_options("local", &["size"], &raw).unwrap_err();
        let message = plugin_error(unknown_option).message;
        assert!(
            message.starts_with("invalid option: unknown option \"foo\" for driver local")
                && message.ends_with("driver=NAME chooses the fvol driver (local, tmpfs, rbd)"),
            "{message}"
        );
        let bad_value = plugin_error(VolumeError::InvalidOption("size: invalid size".into()));
        assert_eq!(bad_value.message, "invalid option: size: invalid size");
    }
}
