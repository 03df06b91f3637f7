//! What `inspect`, `ls --format json` and the plugin's `Get` show of a volume.
use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// What `inspect`, `ls --format json` and the plugin's `Get` show.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct VolumeInfo {
    pub name: String,
    pub driver: String,
    pub mountpoint: PathBuf,
    /// RFC 3339, UTC.
    pub created_at: String,
    pub labels: BTreeMap<String, String>,
    pub options: BTreeMap<String, String>,
    pub scope: String,
    pub status: VolumeStatus,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct VolumeStatus {
    pub size_limit: Option<u64>,
    pub used_bytes: u64,
    pub inode_limit: Option<u64>,
    pub used_inodes: u64,
    pub mounted: bool,
    /// The reference ids (see `refs::RefId`).
    pub mount_refs: Vec<String>,
    /// Each reference with when it was taken, so a stale one can be told apart.
    #[serde(default)]
    pub references: Vec<ReferenceInfo>,
    /// The volume's I/O waits for its cluster (rbd), which has answered nothing since then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_wait: Option<ClusterWaitStatus>,
    /// The cluster refuses this host (rbd): the volume refuses writes until mounted again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fenced: Option<FencedStatus>,
    /// The volume has references but is not mounted yet: its activation at start-up waits for
    /// its cluster, and is tried again until it answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mount_pending: Option<MountPendingStatus>,
    /// Mounted, but its FUSE connection ended (aborted, or its handler failed): every access
    /// fails until the volume is unmounted and mounted again.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub connection_ended: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ClusterWaitStatus {
    /// RFC 3339, UTC: when the cluster last answered (or the wait began).
    pub since: String,
    /// Calls waiting for it.
    pub operations: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct FencedStatus {
    /// RFC 3339, UTC.
    pub since: String,
    pub reason: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct MountPendingStatus {
    /// RFC 3339, UTC: the first attempt.
    pub since: String,
    /// Why the last attempt failed.
    pub error: String,
}

/// One mount reference as `inspect` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ReferenceInfo {
    pub id: String,
    /// RFC 3339, UTC.
    pub since: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<PathBuf>,
}
