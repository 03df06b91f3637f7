//! The Docker volume plugin protocol (served on the plugin socket, see `daemon::plugin`).
//!
//! Every endpoint is `POST /<Service>.<Method>` with a JSON body (possibly empty, and without a
//! Content-Type). Field names are PascalCase, as the protocol has them. Success is `200` with
//! the response type named below; failure is `500` with an [`ErrResponse`].
use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::RequestBody;

/// The driver name Docker knows fvol by: the socket `/run/docker/plugins/fvol.sock` or the spec
/// file `/etc/docker/plugins/fvol.spec`.
pub const DRIVER_NAME: &str = "fvol";
/// Where Docker looks for legacy plugin sockets (`NAME.sock`).
pub const LEGACY_SOCKET_DIR: &str = "/run/docker/plugins";
/// Where Docker looks for plugin spec files (`NAME.spec`, one `unix://` URL).
pub const SPEC_DIR: &str = "/etc/docker/plugins";
/// The Content-Type of every answer.
pub const CONTENT_TYPE: &str = "application/vnd.docker.plugins.v1+json";
/// The option of `Create` that picks the fvol driver (`local`, `tmpfs`); not a driver option.
pub const DRIVER_OPTION: &str = "driver";

/// The endpoint paths.
pub mod routes {
    /// (empty body) → [`super::ActivateResponse`]
    pub const ACTIVATE: &str = "/Plugin.Activate";
    /// [`super::CreateRequest`] → `{}`
    pub const CREATE: &str = "/VolumeDriver.Create";
    /// [`super::NameRequest`] → `{}`
    pub const REMOVE: &str = "/VolumeDriver.Remove";
    /// [`super::MountRequest`] → [`super::MountpointResponse`]
    pub const MOUNT: &str = "/VolumeDriver.Mount";
    /// [`super::MountRequest`] → `{}`
    pub const UNMOUNT: &str = "/VolumeDriver.Unmount";
    /// [`super::NameRequest`] → [`super::MountpointResponse`] (empty when not mounted)
    pub const PATH: &str = "/VolumeDriver.Path";
    /// [`super::NameRequest`] → [`super::GetResponse`]
    pub const GET: &str = "/VolumeDriver.Get";
    /// `{}` → [`super::ListResponse`]
    pub const LIST: &str = "/VolumeDriver.List";
    /// `{}` → [`super::CapabilitiesResponse`]
    pub const CAPABILITIES: &str = "/VolumeDriver.Capabilities";
}

/// The body of `Activate` (empty), `List` and `Capabilities` (`{}`): any object, its fields
/// ignored, as are fields Docker may add to the other requests in later versions.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
pub struct NoArguments {}

impl RequestBody for NoArguments {
    const SHAPE: &'static str = "{}";
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ActivateResponse {
    pub implements: Vec<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct CreateRequest {
    pub name: String,
    /// `-o KEY=VALUE` of `docker volume create`; `null` (or absent) means no options.
    #[serde(default)]
    pub opts: Option<BTreeMap<String, String>>,
}

impl RequestBody for CreateRequest {
    const SHAPE: &'static str = r#"{"Name": string, "Opts"?: {string: string} or null}"#;
}

/// For `Remove`, `Path` and `Get`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct NameRequest {
    pub name: String,
}

impl RequestBody for NameRequest {
    const SHAPE: &'static str = r#"{"Name": string}"#;
}

/// For `Mount` and `Unmount`. Docker sends a fresh ID per mount; PouchContainer the same ID
/// (the volume's UID) for every container.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct MountRequest {
    pub name: String,
    #[serde(default, rename = "ID")]
    pub id: String,
}

impl RequestBody for MountRequest {
    const SHAPE: &'static str = r#"{"Name": string, "ID": string}"#;
}

/// The answer of `Mount` and `Path`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct MountpointResponse {
    pub mountpoint: PathBuf,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct GetResponse {
    pub volume: Volume,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ListResponse {
    pub volumes: Vec<Volume>,
}

/// A volume as `Get` and `List` describe it (`List` leaves out `Status`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Volume {
    pub name: String,
    /// Where the volume is (or will be) mounted.
    pub mountpoint: PathBuf,
    /// RFC 3339, UTC (Docker decodes it into a Go `time.Time`).
    pub created_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<Status>,
}

/// What `docker volume inspect` shows under `Status`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Status {
    /// The fvol driver (`local`, `tmpfs`); Docker's own `Driver` is the plugin's name.
    pub driver: String,
    /// The options as given, without `driver`.
    pub options: BTreeMap<String, String>,
    /// Byte quota; absent when unlimited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_limit: Option<u64>,
    pub used_bytes: u64,
    /// Inode quota; absent when unlimited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inode_limit: Option<u64>,
    pub used_inodes: u64,
    pub mounted: bool,
    /// `plugin:<ID>` for every container (Docker) or volume (Pouch) holding it, `cli`,
    /// `cli:<target>` for `fvol mount`.
    pub mount_refs: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct CapabilitiesResponse {
    pub capabilities: Capabilities,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Capabilities {
    /// `local`: volumes of one host (Docker Swarm must not share them across nodes).
    pub scope: String,
}

/// The body of every error answer (with status 500). Docker shows `Err` to the user verbatim.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrResponse {
    #[serde(rename = "Err")]
    pub err: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opts_may_be_null_or_absent() {
        for body in [r#"{"Name":"v","Opts":null}"#, r#"{"Name":"v"}"#] {
            let req: CreateRequest = serde_json::from_str(body).unwrap();
            assert_eq!(req.name, "v");
            assert_eq!(req.opts, None);
        }
        let req: CreateRequest =
            serde_json::from_str(r#"{"Name":"v","Opts":{"size":"1G"}}"#).unwrap();
        assert_eq!(req.opts.unwrap()["size"], "1G");
    }

    #[test]
    fn mount_id_is_spelled_id() {
        let req: MountRequest = serde_json::from_str(r#"{"Name":"v","ID":"abc"}"#).unwrap();
        assert_eq!(req.id, "abc");
    }

    #[test]
    fn list_entries_leave_out_status() {
        let v = Volume {
            name: "v".into(),
            mountpoint: "/m".into(),
            created_at: "2024-01-01T00:00:00Z".into(),
            status: None,
        };
        assert_eq!(
            serde_json::to_string(&v).unwrap(),
            r#"{"Name":"v","Mountpoint":"/m","CreatedAt":"2024-01-01T00:00:00Z"}"#
        );
    }

    #[test]
    fn shapes() {
        let caps = CapabilitiesResponse {
            capabilities: Capabilities {
                scope: "local".into(),
            },
        };
        assert_eq!(
            serde_json::to_string(&caps).unwrap(),
            r#"{"Capabilities":{"Scope":"local"}}"#
        );
        let err = ErrResponse { err: "bad".into() };
        assert_eq!(serde_json::to_string(&err).unwrap(), r#"{"Err":"bad"}"#);
        let act = ActivateResponse {
            implements: vec!["VolumeDriver".into()],
        };
        assert_eq!(
            serde_json::to_string(&act).unwrap(),
            r#"{"Implements":["VolumeDriver"]}"#
        );
    }
}
