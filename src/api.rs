//! Request and response bodies of the daemon's HTTP API (JSON over `ROOT/fvol.sock`), in
//! [`plugin`] those of the Docker volume plugin protocol, and in [`transport`] the client side
//! of both sockets.
//!
//! Every endpoint is a `POST` with a JSON body. Success is `200` with the response type named
//! below; failure is a `4xx`/`5xx` with an [`ErrorBody`].
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub mod plugin;
pub mod transport;

/// The socket's file name inside ROOT.
pub const SOCKET_FILE: &str = "fvol.sock";

/// Where the daemon of `root` listens.
pub fn socket_path(root: &Path) -> PathBuf {
    root.join(SOCKET_FILE)
}

/// The endpoint paths, shared by server and client.
pub mod routes {
    /// [`super::CreateRequest`] → [`crate::volume::VolumeInfo`]
    pub const CREATE: &str = "/v1/create";
    /// [`super::RemoveRequest`] → one [`super::RemoveResult`] per name, in order (always 200).
    pub const REMOVE: &str = "/v1/remove";
    /// [`super::Empty`] → an array of `VolumeInfo`
    pub const LIST: &str = "/v1/list";
    /// [`super::InspectRequest`] → an array of `VolumeInfo`; 404 naming the first missing volume.
    pub const INSPECT: &str = "/v1/inspect";
    /// [`super::PathRequest`] → [`super::PathResponse`]
    pub const PATH: &str = "/v1/path";
    /// [`super::MountRequest`] → [`super::PathResponse`]
    pub const MOUNT: &str = "/v1/mount";
    /// [`super::UnmountRequest`] → [`super::UnmountResponse`]
    pub const UNMOUNT: &str = "/v1/unmount";
    /// [`super::Empty`] → [`super::PruneResponse`]
    pub const PRUNE: &str = "/v1/prune";
    /// `PathRequest` → `FsckResponse`.
    pub const FSCK: &str = "/v1/fsck";
    /// `PathRequest` → `BreakLockResponse`.
    pub const BREAK_LOCK: &str = "/v1/break-lock";
    /// [`super::Empty`] → [`super::Empty`]: the daemon stops for good once it answered,
    /// unmounting every volume (`fvol daemon --stop`).
    pub const STOP: &str = "/v1/stop";
    /// [`super::UpdateRequest`] → [`crate::volume::VolumeInfo`]
    pub const UPDATE: &str = "/v1/update";
    /// [`super::TransferRequest`] → [`crate::volume::export::ExportInfo`]
    pub const EXPORT: &str = "/v1/export";
    /// [`super::TransferRequest`] → [`crate::volume::export::ImportInfo`]
    pub const IMPORT: &str = "/v1/import";
    /// [`super::SnapshotRequest`] → [`crate::volume::snapshot::SnapshotInfo`]
    pub const SNAPSHOT_CREATE: &str = "/v1/snapshot/create";
    /// [`super::SnapshotRequest`] (no snapshot) → an array of `SnapshotInfo`
    pub const SNAPSHOT_LIST: &str = "/v1/snapshot/list";
    /// [`super::SnapshotRequest`] → [`super::Empty`]
    pub const SNAPSHOT_REMOVE: &str = "/v1/snapshot/remove";
    /// [`super::SnapshotRequest`] → [`super::Empty`]
    pub const SNAPSHOT_RESTORE: &str = "/v1/snapshot/restore";
    /// [`super::PathRequest`] → the `volume::progress::ProgressInfo` of the long operation
    /// under way on the volume (export, import, a copy), or `null`. Takes no volume lock.
    pub const PROGRESS: &str = "/v1/progress";
    /// [`super::EventsRequest`] → a stream of `volume::events::Event`, one JSON object a
    /// line, until `until` passes (or forever without it).
    pub const EVENTS: &str = "/v1/events";
}

/// A request body: a JSON object of this type's shape, which errors about the body show. The
/// daemon refuses any other JSON type (serde alone would read an array as the fields in
/// order) and, in fvol's own API, fields it does not know.
pub trait RequestBody: serde::de::DeserializeOwned {
    /// The expected object, as `{"field": type}`, `?` marking optional fields.
    const SHAPE: &'static str;
}

/// `{}`: the body of requests and responses that carry nothing.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Empty {}

impl RequestBody for Empty {
    const SHAPE: &'static str = "{}";
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateRequest {
    /// None: the daemon generates a name.
    #[serde(default)]
    pub name: Option<String>,
    /// None: `local`.
    #[serde(default)]
    pub driver: Option<String>,
    #[serde(default)]
    pub options: BTreeMap<String, String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

impl RequestBody for CreateRequest {
    const SHAPE: &'static str = r#"{"name"?: string, "driver"?: string, "options"?: {string: string}, "labels"?: {string: string}}"#;
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemoveRequest {
    pub names: Vec<String>,
    /// Drop every mount reference first instead of refusing a mounted volume.
    #[serde(default)]
    pub force: bool,
}

impl RequestBody for RemoveRequest {
    const SHAPE: &'static str = r#"{"names": [string], "force"?: boolean}"#;
}

/// The outcome of removing one volume: removed when `error` is absent.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoveResult {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InspectRequest {
    pub names: Vec<String>,
}

impl RequestBody for InspectRequest {
    const SHAPE: &'static str = r#"{"names": [string]}"#;
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PathRequest {
    pub name: String,
}

impl RequestBody for PathRequest {
    const SHAPE: &'static str = r#"{"name": string}"#;
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PathResponse {
    pub path: PathBuf,
}

/// For `/v1/mount`. The mount reference is `cli` without a target and `cli:<target>` with
/// one, so an unmount must name the same target as its mount.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MountRequest {
    pub name: String,
    /// Must be absolute (the CLI resolves a relative one against its working directory).
    #[serde(default)]
    pub target: Option<PathBuf>,
    /// The reference is `csi:<target>` (a stage or publish of `fvol csi`), not `cli:<target>`;
    /// needs `target`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub csi: bool,
}

impl RequestBody for MountRequest {
    const SHAPE: &'static str = r#"{"name": string, "target"?: string, "csi"?: bool}"#;
}

/// For `/v1/unmount`: which reference to drop. At most one of `target`, `reference` and `all`;
/// none drops `cli`. A reference the volume does not hold is an error (404).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UnmountRequest {
    pub name: String,
    /// Drops `cli:<target>`; must be absolute.
    #[serde(default)]
    pub target: Option<PathBuf>,
    /// Drops this reference, in the form `inspect` shows (`cli`, `cli:/t`, `plugin:ID`,
    /// `csi:/t`).
    #[serde(default)]
    pub reference: Option<String>,
    /// Drops every reference and unmounts.
    #[serde(default)]
    pub all: bool,
}

impl RequestBody for UnmountRequest {
    const SHAPE: &'static str =
        r#"{"name": string, "target"?: string, "reference"?: string, "all"?: bool}"#;
}

/// The references an unmount dropped.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnmountResponse {
    pub released: Vec<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PruneResponse {
    pub removed: Vec<String>,
    pub reclaimed_bytes: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FsckResponse {
    /// The driver's report, as JSON.
    pub report: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BreakLockResponse {
    pub broken: Vec<String>,
}

/// A change of a volume's limits (`fvol update`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateRequest {
    pub name: String,
    #[serde(default)]
    pub options: BTreeMap<String, String>,
}

impl RequestBody for UpdateRequest {
    const SHAPE: &'static str = r#"{"name": string, "options"?: {string: string}}"#;
}

/// A snapshot of a volume (`fvol snapshot ...`); `snapshot` is needed by all but list.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnapshotRequest {
    pub name: String,
    #[serde(default)]
    pub snapshot: Option<String>,
}

impl RequestBody for SnapshotRequest {
    const SHAPE: &'static str = r#"{"name": string, "snapshot"?: string}"#;
}

/// An export (written to `file`) or import (read from `file`); `file` is absolute.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransferRequest {
    pub name: String,
    pub file: PathBuf,
}

impl RequestBody for TransferRequest {
    const SHAPE: &'static str = r#"{"name": string, "file": string}"#;
}

/// The body of every error response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_request_fields_are_all_optional() {
        let req: CreateRequest = serde_json::from_str("{}").unwrap();
        assert_eq!(req, CreateRequest::default());
    }

    #[test]
    fn remove_result_omits_error_on_success() {
        let ok = RemoveResult {
            name: "v".into(),
            error: None,
        };
        assert_eq!(serde_json::to_string(&ok).unwrap(), r#"{"name":"v"}"#);
    }

    #[test]
    fn empty_is_an_empty_object() {
        assert_eq!(serde_json::to_string(&Empty {}).unwrap(), "{}");
    }
}

/// Which events `fvol events` wants: times in nanoseconds since the epoch (inclusive); each
/// filter given must match, values of one are alternatives.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventsRequest {
    #[serde(default)]
    pub since: Option<u64>,
    #[serde(default)]
    pub until: Option<u64>,
    #[serde(default)]
    pub volumes: Vec<String>,
    /// Event type names (`create`, `quota-full`, ...).
    #[serde(default)]
    pub types: Vec<String>,
}

impl RequestBody for EventsRequest {
    const SHAPE: &'static str =
        r#"{"since"?: integer, "until"?: integer, "volumes"?: [string], "types"?: [string]}"#;
}
