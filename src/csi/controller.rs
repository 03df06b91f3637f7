//! The Controller service: volumes and snapshots through the daemon's API, as `fvol create`,
//! `rm`, `update -o size=`, `snapshot create|ls|rm` and `create --from` make them.
use std::collections::BTreeMap;
use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::client::SnapshotInfo;
use super::ids::{self, NAME_LABEL};
use super::proto::controller_server::Controller;
use super::proto::controller_service_capability::{Rpc, Type as CapType, rpc};
use super::proto::volume_content_source::Type as Source;
use super::proto::*;
use super::shared::Shared;
use super::status::{self, Call};
use super::volumes::{self, DRIVER_PARAMETER};
use super::{NODE_KEY, mounts};
use crate::api;

pub struct ControllerService {
    pub shared: Arc<Shared>,
}

const CAPABILITIES: &[rpc::Type] = &[
    rpc::Type::CreateDeleteVolume,
    rpc::Type::PublishUnpublishVolume,
    rpc::Type::ModifyVolume,
    rpc::Type::ListVolumes,
    rpc::Type::GetCapacity,
    rpc::Type::CreateDeleteSnapshot,
    rpc::Type::ListSnapshots,
    rpc::Type::CloneVolume,
    rpc::Type::ExpandVolume,
    rpc::Type::GetVolume,
    rpc::Type::VolumeCondition,
];

impl ControllerService {
    fn node_id(&self) -> &str {
        &self.shared.node_id
    }

    /// The snapshot a content source names, checked to exist: `VOLUME@SNAPSHOT`.
    async fn source_option(&self, source: &VolumeContentSource) -> Result<String, Status> {
        match &source.r#type {
            Some(Source::Snapshot(s)) => {
                let missing = || status::not_found(format!("no snapshot {}", s.snapshot_id));
                let (volume, snap) = ids::snapshot_of(&s.snapshot_id).ok_or_else(missing)?;
                let list = self
                    .shared
                    .daemon
                    .snapshot_list(volume)
                    .await
                    .map_err(|e| status::from_daemon(Call::Other, e))?;
                if !list.iter().any(|i| i.name == snap) {
                    return Err(missing());
                }
                Ok(s.snapshot_id.clone())
            }
            Some(Source::Volume(v)) => {
                let missing = || status::not_found(format!("no volume {}", v.volume_id));
                let volume = ids::volume_of(&v.volume_id).ok_or_else(missing)?;
                self.shared
                    .daemon
                    .inspect(volume)
                    .await
                    .map_err(|e| status::from_daemon(Call::Other, e))?;
                Ok(volume.to_owned())
            }
            None => Err(status::invalid(
                "volume_content_source names neither a snapshot nor a volume",
            )),
        }
    }

    /// Every snapshot of every volume, as `(id, volume, info)`.
    async fn all_snapshots(&self) -> Result<Vec<(String, SnapshotInfo)>, Status> {
        let daemon = &self.shared.daemon;
        let volumes = daemon
            .list()
            .await
            .map_err(|e| status::from_daemon(Call::Other, e))?;
        let mut all = Vec::new();
        for v in volumes {
            match daemon.snapshot_list(&v.name).await {
                Ok(list) => all.extend(
                    list.into_iter()
                        .map(|s| (ids::snapshot_id(&s.volume, &s.name), s)),
                ),
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(status::from_daemon(Call::Other, e)),
            }
        }
        Ok(all)
    }
}

fn snapshot_of(id: String, info: &SnapshotInfo) -> Snapshot {
    let creation_time = humantime::parse_rfc3339_weak(&info.created_at)
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| prost_types::Timestamp {
            seconds: d.as_secs() as i64,
            nanos: d.subsec_nanos() as i32,
        });
    Snapshot {
        size_bytes: info.bytes as i64,
        snapshot_id: id,
        source_volume_id: info.volume.clone(),
        creation_time,
        ready_to_use: true,
    }
}

#[tonic::async_trait]
impl Controller for ControllerService {
    async fn create_volume(
        &self,
        request: Request<CreateVolumeRequest>,
    ) -> Result<Response<CreateVolumeResponse>, Status> {
        let req = request.into_inner();
        if req.name.is_empty() {
            return Err(status::required("name"));
        }
        volumes::check_capabilities(&req.volume_capabilities)?;
        let (driver, mut options) = volumes::driver_and_options(&req.parameters, "local", false)?;
        options.extend(volumes::mutable_options(&req.mutable_parameters)?);
        let (minimum, default) = volumes::size_limits(&driver);
        let size = ids::size_for(req.capacity_range.as_ref(), minimum, default)?;
        if volumes::node_bound(&driver)
            && let Some(reqs) = &req.accessibility_requirements
            && !reqs.requisite.is_empty()
            && !reqs
                .requisite
                .iter()
                .any(|t| t.segments.get(NODE_KEY).map(String::as_str) == Some(self.node_id()))
        {
            return Err(status::exhausted(format!(
                "a {driver} volume lives on the node whose daemon creates it, {}, which is \
                 not among the required topologies",
                self.node_id()
            )));
        }
        let name = ids::fvol_name(&req.name);
        let daemon = &self.shared.daemon;
        // Idempotent by name: the same request again answers the volume there.
        match daemon.inspect(&name).await {
            Ok(info) => {
                let mismatch = if info.driver != driver {
                    Some(format!("driver {}", info.driver))
                } else if info.status.size_limit != Some(size) {
                    Some(format!(
                        "a capacity of {} bytes (asked: {size})",
                        info.status.size_limit.unwrap_or(0)
                    ))
                } else {
                    options
                        .iter()
                        .find(|(k, v)| info.options.get(*k) != Some(*v))
                        .map(|(k, _)| {
                            format!(
                                "{k}={}",
                                info.options.get(k).map(String::as_str).unwrap_or("(unset)")
                            )
                        })
                };
                if let Some(what) = mismatch {
                    return Err(status::already_exists(format!(
                        "volume {name} (CSI name {:?}) already exists with {what}; delete it \
                         or ask for the same settings",
                        req.name
                    )));
                }
                let mut volume = volumes::volume_of(&info, self.node_id());
                volume.content_source = req.volume_content_source;
                return Ok(Response::new(CreateVolumeResponse {
                    volume: Some(volume),
                }));
            }
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(status::from_daemon(Call::Other, e)),
        }
        options.insert("size".into(), size.to_string());
        if let Some(source) = &req.volume_content_source {
            let from = self.source_option(source).await?;
            options.insert(crate::volume::snapshot::FROM.into(), from);
        }
        let create = api::CreateRequest {
            name: Some(name.clone()),
            driver: Some(driver),
            options,
            labels: BTreeMap::from([(NAME_LABEL.to_owned(), req.name.clone())]),
        };
        let info = daemon
            .create(&create)
            .await
            .map_err(|e| status::from_daemon(Call::Create, e))?;
        log::info!("CreateVolume {:?}: created volume {}", req.name, info.name);
        let mut volume = volumes::volume_of(&info, self.node_id());
        volume.content_source = req.volume_content_source;
        Ok(Response::new(CreateVolumeResponse {
            volume: Some(volume),
        }))
    }

    async fn delete_volume(
        &self,
        request: Request<DeleteVolumeRequest>,
    ) -> Result<Response<DeleteVolumeResponse>, Status> {
        let req = request.into_inner();
        if req.volume_id.is_empty() {
            return Err(status::required("volume_id"));
        }
        if let Some(name) = ids::volume_of(&req.volume_id) {
            self.shared
                .daemon
                .remove(name)
                .await
                .map_err(|e| status::from_daemon(Call::Other, e))?;
            log::info!("DeleteVolume: removed volume {name}");
        }
        Ok(Response::new(DeleteVolumeResponse {}))
    }

    /// Nothing to attach: the node's daemon reaches the volume's store itself. Checks that
    /// the node can: a local or tmpfs volume only on the node that made it (NOT_FOUND for any
    /// other, which cannot reach it); rbd from any node.
    async fn controller_publish_volume(
        &self,
        request: Request<ControllerPublishVolumeRequest>,
    ) -> Result<Response<ControllerPublishVolumeResponse>, Status> {
        let req = request.into_inner();
        if req.volume_id.is_empty() {
            return Err(status::required("volume_id"));
        }
        if req.node_id.is_empty() {
            return Err(status::required("node_id"));
        }
        let cap = req
            .volume_capability
            .as_ref()
            .ok_or_else(|| status::required("volume_capability"))?;
        volumes::check_capability(cap).map_err(status::invalid)?;
        let name = ids::volume_of(&req.volume_id)
            .ok_or_else(|| status::not_found(format!("no volume {}", req.volume_id)))?;
        let info = self
            .shared
            .daemon
            .inspect(name)
            .await
            .map_err(|e| status::from_daemon(Call::Other, e))?;
        if volumes::node_bound(&info.driver) && req.node_id != self.node_id() {
            return Err(status::not_found(format!(
                "node {} cannot reach volume {name}: a {} volume lives on node {}, whose \
                 daemon made it",
                req.node_id,
                info.driver,
                self.node_id()
            )));
        }
        Ok(Response::new(ControllerPublishVolumeResponse {
            publish_context: Default::default(),
        }))
    }

    /// Nothing was attached, so nothing to detach: success whatever the volume or node.
    async fn controller_unpublish_volume(
        &self,
        request: Request<ControllerUnpublishVolumeRequest>,
    ) -> Result<Response<ControllerUnpublishVolumeResponse>, Status> {
        let req = request.into_inner();
        if req.volume_id.is_empty() {
            return Err(status::required("volume_id"));
        }
        Ok(Response::new(ControllerUnpublishVolumeResponse {}))
    }

    /// A volume's mutable parameters (a VolumeAttributesClass): `inodes`, the inode quota,
    /// changed online as `fvol update -o inodes=N` changes it.
    async fn controller_modify_volume(
        &self,
        request: Request<ControllerModifyVolumeRequest>,
    ) -> Result<Response<ControllerModifyVolumeResponse>, Status> {
        let req = request.into_inner();
        if req.volume_id.is_empty() {
            return Err(status::required("volume_id"));
        }
        let options = volumes::mutable_options(&req.mutable_parameters)?;
        let name = ids::volume_of(&req.volume_id)
            .ok_or_else(|| status::not_found(format!("no volume {}", req.volume_id)))?;
        let daemon = &self.shared.daemon;
        daemon
            .inspect(name)
            .await
            .map_err(|e| status::from_daemon(Call::Other, e))?;
        if !options.is_empty() {
            daemon
                .update(name, options)
                .await
                .map_err(|e| status::from_daemon(Call::Other, e))?;
            log::info!("ControllerModifyVolume: volume {name} modified");
        }
        Ok(Response::new(ControllerModifyVolumeResponse {}))
    }

    async fn validate_volume_capabilities(
        &self,
        request: Request<ValidateVolumeCapabilitiesRequest>,
    ) -> Result<Response<ValidateVolumeCapabilitiesResponse>, Status> {
        let req = request.into_inner();
        if req.volume_id.is_empty() {
            return Err(status::required("volume_id"));
        }
        if req.volume_capabilities.is_empty() {
            return Err(status::required("volume_capabilities"));
        }
        let name = ids::volume_of(&req.volume_id)
            .ok_or_else(|| status::not_found(format!("no volume {}", req.volume_id)))?;
        self.shared
            .daemon
            .inspect(name)
            .await
            .map_err(|e| status::from_daemon(Call::Other, e))?;
        let refused: Vec<String> = req
            .volume_capabilities
            .iter()
            .filter_map(|c| volumes::check_capability(c).err())
            .collect();
        let answer = match refused.is_empty() {
            true => ValidateVolumeCapabilitiesResponse {
                confirmed: Some(validate_volume_capabilities_response::Confirmed {
                    volume_context: req.volume_context,
                    volume_capabilities: req.volume_capabilities,
                    parameters: req.parameters,
                }),
                message: String::new(),
            },
            false => ValidateVolumeCapabilitiesResponse {
                confirmed: None,
                message: refused.join("; "),
            },
        };
        Ok(Response::new(answer))
    }

    async fn list_volumes(
        &self,
        request: Request<ListVolumesRequest>,
    ) -> Result<Response<ListVolumesResponse>, Status> {
        let req = request.into_inner();
        let all = self
            .shared
            .daemon
            .list()
            .await
            .map_err(|e| status::from_daemon(Call::Other, e))?;
        let (page, next_token) = ids::page(
            all,
            |v| v.name.as_str(),
            req.max_entries,
            &req.starting_token,
        )?;
        let entries = page
            .iter()
            .map(|info| list_volumes_response::Entry {
                volume: Some(volumes::volume_of(info, self.node_id())),
                status: Some(list_volumes_response::VolumeStatus {
                    published_node_ids: published_on(info, self.node_id()),
                    volume_condition: Some(volumes::condition_of(info)),
                }),
            })
            .collect();
        Ok(Response::new(ListVolumesResponse {
            entries,
            next_token,
        }))
    }

    async fn controller_get_volume(
        &self,
        request: Request<ControllerGetVolumeRequest>,
    ) -> Result<Response<ControllerGetVolumeResponse>, Status> {
        let req = request.into_inner();
        if req.volume_id.is_empty() {
            return Err(status::required("volume_id"));
        }
        let name = ids::volume_of(&req.volume_id)
            .ok_or_else(|| status::not_found(format!("no volume {}", req.volume_id)))?;
        let info = self
            .shared
            .daemon
            .inspect(name)
            .await
            .map_err(|e| status::from_daemon(Call::Other, e))?;
        Ok(Response::new(ControllerGetVolumeResponse {
            volume: Some(volumes::volume_of(&info, self.node_id())),
            status: Some(controller_get_volume_response::VolumeStatus {
                published_node_ids: published_on(&info, self.node_id()),
                volume_condition: Some(volumes::condition_of(&info)),
            }),
        }))
    }

    /// Real free room where a new volume of the asked driver would keep its data: the host
    /// filesystem under ROOT (local), the host's available memory (tmpfs), the pool (rbd, as
    /// `ceph df` says). Quotas are not subtracted: fvol does not reserve a volume's quota up
    /// front.
    async fn get_capacity(
        &self,
        request: Request<GetCapacityRequest>,
    ) -> Result<Response<GetCapacityResponse>, Status> {
        let req = request.into_inner();
        req.volume_capabilities
            .iter()
            .try_for_each(volumes::check_capability)
            .map_err(status::invalid)?;
        let driver = req
            .parameters
            .get(DRIVER_PARAMETER)
            .map(String::as_str)
            .unwrap_or("local");
        if let Some(t) = &req.accessible_topology
            && volumes::node_bound(driver)
            && t.segments
                .get(NODE_KEY)
                .is_some_and(|n| n != self.node_id())
        {
            return Ok(Response::new(GetCapacityResponse {
                available_capacity: 0,
                ..Default::default()
            }));
        }
        let (minimum, _) = volumes::size_limits(driver);
        let available = match driver {
            "local" => mounts::free_space(self.shared.daemon.root())
                .map(|(bytes, _)| bytes)
                .map_err(|e| status::internal(format!("statvfs of the fvol root: {e}")))?,
            "tmpfs" => mounts::memory_available()
                .map_err(|e| status::internal(format!("reading /proc/meminfo: {e}")))?,
            "rbd" => rbd_pool_available(&req.parameters).await?,
            other => {
                return Err(status::invalid(format!(
                    "unknown driver {other:?}: valid drivers are local, tmpfs, rbd"
                )));
            }
        };
        Ok(Response::new(GetCapacityResponse {
            available_capacity: available.min(i64::MAX as u64) as i64,
            maximum_volume_size: None,
            minimum_volume_size: Some(minimum as i64),
        }))
    }

    async fn controller_get_capabilities(
        &self,
        _: Request<ControllerGetCapabilitiesRequest>,
    ) -> Result<Response<ControllerGetCapabilitiesResponse>, Status> {
        let capabilities = CAPABILITIES
            .iter()
            .map(|t| ControllerServiceCapability {
                r#type: Some(CapType::Rpc(Rpc { r#type: *t as i32 })),
            })
            .collect();
        Ok(Response::new(ControllerGetCapabilitiesResponse {
            capabilities,
        }))
    }

    async fn create_snapshot(
        &self,
        request: Request<CreateSnapshotRequest>,
    ) -> Result<Response<CreateSnapshotResponse>, Status> {
        let req = request.into_inner();
        if req.name.is_empty() {
            return Err(status::required("name"));
        }
        if req.source_volume_id.is_empty() {
            return Err(status::required("source_volume_id"));
        }
        let volume = ids::volume_of(&req.source_volume_id)
            .ok_or_else(|| status::not_found(format!("no volume {}", req.source_volume_id)))?;
        let snap = ids::fvol_name(&req.name);
        // Snapshot names are global in CSI: the same name on another volume is a conflict.
        for (id, info) in self.all_snapshots().await? {
            if info.name != snap {
                continue;
            }
            if info.volume == volume {
                return Ok(Response::new(CreateSnapshotResponse {
                    snapshot: Some(snapshot_of(id, &info)),
                }));
            }
            return Err(status::already_exists(format!(
                "snapshot {:?} already exists, of volume {}",
                req.name, info.volume
            )));
        }
        let info = self
            .shared
            .daemon
            .snapshot_create(volume, &snap)
            .await
            .map_err(|e| status::from_daemon(Call::Create, e))?;
        log::info!(
            "CreateSnapshot {:?}: snapshot {snap} of volume {volume}",
            req.name
        );
        Ok(Response::new(CreateSnapshotResponse {
            snapshot: Some(snapshot_of(ids::snapshot_id(volume, &snap), &info)),
        }))
    }

    async fn delete_snapshot(
        &self,
        request: Request<DeleteSnapshotRequest>,
    ) -> Result<Response<DeleteSnapshotResponse>, Status> {
        let req = request.into_inner();
        if req.snapshot_id.is_empty() {
            return Err(status::required("snapshot_id"));
        }
        if let Some((volume, snap)) = ids::snapshot_of(&req.snapshot_id) {
            match self.shared.daemon.snapshot_remove(volume, snap).await {
                Ok(()) => log::info!("DeleteSnapshot: removed {}", req.snapshot_id),
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(status::from_daemon(Call::Other, e)),
            }
        }
        Ok(Response::new(DeleteSnapshotResponse {}))
    }

    async fn list_snapshots(
        &self,
        request: Request<ListSnapshotsRequest>,
    ) -> Result<Response<ListSnapshotsResponse>, Status> {
        let req = request.into_inner();
        let daemon = &self.shared.daemon;
        let found = if !req.snapshot_id.is_empty() {
            match ids::snapshot_of(&req.snapshot_id) {
                None => Vec::new(),
                Some((volume, snap)) => match daemon.snapshot_list(volume).await {
                    Ok(list) => list
                        .into_iter()
                        .filter(|s| s.name == snap)
                        .map(|s| (req.snapshot_id.clone(), s))
                        .collect(),
                    Err(e) if e.is_not_found() => Vec::new(),
                    Err(e) => return Err(status::from_daemon(Call::Other, e)),
                },
            }
        } else if !req.source_volume_id.is_empty() {
            match ids::volume_of(&req.source_volume_id) {
                None => Vec::new(),
                Some(volume) => match daemon.snapshot_list(volume).await {
                    Ok(list) => list
                        .into_iter()
                        .map(|s| (ids::snapshot_id(&s.volume, &s.name), s))
                        .collect(),
                    Err(e) if e.is_not_found() => Vec::new(),
                    Err(e) => return Err(status::from_daemon(Call::Other, e)),
                },
            }
        } else {
            self.all_snapshots().await?
        };
        let found: Vec<_> = found
            .into_iter()
            .filter(|(_, s)| req.source_volume_id.is_empty() || s.volume == req.source_volume_id)
            .collect();
        let (page, next_token) = ids::page(
            found,
            |(id, _)| id.as_str(),
            req.max_entries,
            &req.starting_token,
        )?;
        let entries = page
            .into_iter()
            .map(|(id, info)| list_snapshots_response::Entry {
                snapshot: Some(snapshot_of(id, &info)),
            })
            .collect();
        Ok(Response::new(ListSnapshotsResponse {
            entries,
            next_token,
        }))
    }

    /// Online for every driver: the daemon changes the quota of a mounted volume at once
    /// (rbd: grows the image and the filesystem in it), so no node step is needed.
    async fn controller_expand_volume(
        &self,
        request: Request<ControllerExpandVolumeRequest>,
    ) -> Result<Response<ControllerExpandVolumeResponse>, Status> {
        let req = request.into_inner();
        if req.volume_id.is_empty() {
            return Err(status::required("volume_id"));
        }
        let Some(range) = req.capacity_range.as_ref() else {
            return Err(status::required("capacity_range"));
        };
        if let Some(cap) = &req.volume_capability {
            volumes::check_capability(cap).map_err(status::invalid)?;
        }
        let name = ids::volume_of(&req.volume_id)
            .ok_or_else(|| status::not_found(format!("no volume {}", req.volume_id)))?;
        let daemon = &self.shared.daemon;
        let info = daemon
            .inspect(name)
            .await
            .map_err(|e| status::from_daemon(Call::Other, e))?;
        let (minimum, default) = volumes::size_limits(&info.driver);
        let size = ids::size_for(Some(range), minimum, default)?;
        let current = info.status.size_limit.unwrap_or(0);
        let capacity = if size > current {
            let options = BTreeMap::from([("size".to_owned(), size.to_string())]);
            let info = daemon
                .update(name, options)
                .await
                .map_err(|e| status::from_daemon(Call::Other, e))?;
            log::info!("ControllerExpandVolume: volume {name} now has {size} bytes");
            info.status.size_limit.unwrap_or(size)
        } else {
            current
        };
        Ok(Response::new(ControllerExpandVolumeResponse {
            capacity_bytes: capacity as i64,
            node_expansion_required: false,
        }))
    }
}

/// What the rbd pool of `parameters` can still take, as the cluster says (`ceph df`: the
/// pool's `max_avail`, which counts its replication and the fullest OSD), asked with the
/// parameters' `conf`, `id`, `keyring` and `cluster`, as the rbd driver would connect.
async fn rbd_pool_available(
    parameters: &std::collections::HashMap<String, String>,
) -> Result<u64, Status> {
    let get = |k: &str| parameters.get(k).cloned();
    let pool = get("pool").unwrap_or_else(|| "rbd".into());
    let mut cmd = std::process::Command::new("ceph");
    for (flag, key) in [
        ("-c", "conf"),
        ("--id", "id"),
        ("--keyring", "keyring"),
        ("--cluster", "cluster"),
    ] {
        if let Some(v) = get(key) {
            cmd.arg(flag).arg(v);
        }
    }
    cmd.args(["--connect-timeout", "10", "df", "--format", "json"]);
    let out = tokio::task::spawn_blocking(move || cmd.output())
        .await
        .map_err(|e| status::internal(format!("running ceph df: {e}")))?
        .map_err(|e| {
            Status::unavailable(format!(
                "running `ceph df` to ask the cluster for pool {pool}'s free space: {e} (the \
                 ceph command, Debian's ceph-common, is needed for GetCapacity of rbd)"
            ))
        })?;
    if !out.status.success() {
        return Err(Status::unavailable(format!(
            "`ceph df` failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    let df: serde_json::Value = serde_json::from_slice(&out.stdout)
        .map_err(|e| status::internal(format!("`ceph df` answered no JSON: {e}")))?;
    pool_max_avail(&df, &pool)
}

/// The `max_avail` of `pool` in the JSON of `ceph df`.
fn pool_max_avail(df: &serde_json::Value, pool: &str) -> Result<u64, Status> {
    // The space statistics come from the cluster's manager; a cluster without one (such as
    // the tests' single-node cluster) reports no OSDs and no pools.
    if df["stats"]["num_osds"].as_u64() == Some(0) {
        return Err(Status::unavailable(
            "the Ceph cluster reports no space statistics (`ceph df` shows no OSDs): is a \
             ceph-mgr running?",
        ));
    }
    df["pools"]
        .as_array()
        .and_then(|pools| pools.iter().find(|p| p["name"] == pool))
        .and_then(|p| p["stats"]["max_avail"].as_u64())
        .ok_or_else(|| status::not_found(format!("the cluster has no pool {pool}")))
}

/// The node a volume with references is published on: the daemon's, ours.
fn published_on(info: &crate::volume::VolumeInfo, node_id: &str) -> Vec<String> {
    match info.status.mount_refs.is_empty() {
        true => Vec::new(),
        false => vec![node_id.to_owned()],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ceph_df_pool_space() {
        let df = serde_json::json!({
            "stats": {"total_bytes": 300, "num_osds": 3},
            "pools": [
                {"name": "meta", "id": 1, "stats": {"stored": 1, "max_avail": 7}},
                {"name": "rbd", "id": 2, "stats": {"stored": 5, "max_avail": 1234}}
            ]
        });
        assert_eq!(pool_max_avail(&df, "rbd").unwrap(), 1234);
        assert_eq!(
            pool_max_avail(&df, "gone").unwrap_err().code(),
            tonic::Code::NotFound
        );
        let no_mgr = serde_json::json!({"stats": {"num_osds": 0}, "pools": []});
        let err = pool_max_avail(&no_mgr, "rbd").unwrap_err();
        assert_eq!(err.code(), tonic::Code::Unavailable);
        assert!(err.message().contains("ceph-mgr"));
    }
}
