//! The Node service: stage is the volume's FUSE mount with a bind at the staging path,
//! publish a bind at the target (read-only when asked). Both are the daemon's mount
//! references `csi:PATH`, kept in its catalog and bound again at its restarts; so unstage and
//! unpublish find what to undo after a restart of `fvol csi`, and are no-ops once it is undone.
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::ids;
use super::mounts;
use super::proto::node_server::Node;
use super::proto::node_service_capability::{Rpc, Type as CapType, rpc};
use super::proto::volume_usage::Unit;
use super::proto::*;
use super::shared::Shared;
use super::status::{self, Call};
use super::volumes::{self, EPHEMERAL_KEY, EPHEMERAL_LABEL};
use crate::api;
use crate::volume::VolumeInfo;

pub struct NodeService {
    pub shared: Arc<Shared>,
}

const CAPABILITIES: &[rpc::Type] = &[
    rpc::Type::StageUnstageVolume,
    rpc::Type::GetVolumeStats,
    rpc::Type::ExpandVolume,
    rpc::Type::VolumeCondition,
];

fn required_path<'a>(field: &str, path: &'a str) -> Result<&'a Path, Status> {
    if path.is_empty() {
        return Err(status::required(field));
    }
    let p = Path::new(path);
    if !p.is_absolute() {
        return Err(status::invalid(format!(
            "{field} {path:?} is not an absolute path"
        )));
    }
    Ok(p)
}

impl NodeService {
    /// The volume an id names; NOT_FOUND when there is none.
    async fn volume(&self, id: &str) -> Result<VolumeInfo, Status> {
        let name =
            ids::volume_of(id).ok_or_else(|| status::not_found(format!("no volume {id}")))?;
        self.shared
            .daemon
            .inspect(name)
            .await
            .map_err(|e| status::from_daemon(Call::Other, e))
    }

    /// Drops the daemon's reference for a bind at `path`; nothing to drop is fine.
    async fn unbind(&self, name: &str, path: &Path) -> Result<(), Status> {
        for reference in volumes::references_at(&path.to_string_lossy()) {
            match self.shared.daemon.release(name, reference).await {
                Ok(()) => return Ok(()),
                Err(e) if e.is_not_found() => continue,
                Err(e) => return Err(status::from_daemon(Call::Other, e)),
            }
        }
        Ok(())
    }

    /// Binds the volume at `target` (created if missing) and makes it read-only if asked.
    async fn bind(&self, name: &str, target: &Path, read_only: bool) -> Result<(), Status> {
        let created = mounts::ensure_dir(target).map_err(status::invalid)?;
        if let Err(e) = self.shared.daemon.mount(name, target).await {
            if created {
                let _ = mounts::remove_dir(target);
            }
            return Err(status::from_daemon(Call::Other, e));
        }
        if read_only && let Err(e) = mounts::remount_read_only(target) {
            let _ = self.unbind(name, target).await;
            return Err(status::internal(e));
        }
        Ok(())
    }

    /// A volume this node's daemon does not know, but whose context says where its image
    /// is (rbd): adopted, as `fvol create -d rbd -o image=...` adopts an image. None: the
    /// context names no such volume.
    async fn adopt(&self, req: &NodeStageVolumeRequest) -> Option<Result<VolumeInfo, Status>> {
        let (driver, options) = volumes::adoption_of(&req.volume_context)?;
        let name = ids::volume_of(&req.volume_id)?.to_owned();
        let create = api::CreateRequest {
            name: Some(name.clone()),
            driver: Some(driver),
            options,
            labels: BTreeMap::from([(volumes::ADOPTED_LABEL.to_owned(), "true".to_owned())]),
        };
        log::info!("NodeStageVolume: adopting volume {name} from its volume context");
        Some(
            self.shared
                .daemon
                .create(&create)
                .await
                .map_err(|e| status::from_daemon(Call::Other, e)),
        )
    }

    /// An ephemeral inline volume: made for this publish from its attributes (tmpfs only).
    async fn publish_ephemeral(
        &self,
        req: &NodePublishVolumeRequest,
        target: &Path,
        read_only: bool,
    ) -> Result<(), Status> {
        let (driver, options) = volumes::driver_and_options(&req.volume_context, "tmpfs", true)?;
        if driver != "tmpfs" {
            return Err(status::invalid(format!(
                "ephemeral inline volumes are tmpfs volumes: driver {driver:?} is not taken \
                 (leave it out, or give tmpfs)"
            )));
        }
        let name = ids::fvol_name(&req.volume_id);
        let create = api::CreateRequest {
            name: Some(name.clone()),
            driver: Some(driver),
            options,
            labels: BTreeMap::from([
                (ids::NAME_LABEL.to_owned(), req.volume_id.clone()),
                (EPHEMERAL_LABEL.to_owned(), "true".to_owned()),
            ]),
        };
        self.shared
            .daemon
            .create(&create)
            .await
            .map_err(|e| status::from_daemon(Call::Create, e))?;
        self.bind(&name, target, read_only).await?;
        log::info!(
            "NodePublishVolume: ephemeral volume {name} at {}",
            target.display()
        );
        Ok(())
    }
}

#[tonic::async_trait]
impl Node for NodeService {
    async fn node_stage_volume(
        &self,
        request: Request<NodeStageVolumeRequest>,
    ) -> Result<Response<NodeStageVolumeResponse>, Status> {
        let req = request.into_inner();
        if req.volume_id.is_empty() {
            return Err(status::required("volume_id"));
        }
        let staging = required_path("staging_target_path", &req.staging_target_path)?;
        let cap = req
            .volume_capability
            .as_ref()
            .ok_or_else(|| status::required("volume_capability"))?;
        volumes::check_capability(cap).map_err(status::invalid)?;
        let info = match self.volume(&req.volume_id).await {
            Ok(info) => info,
            Err(e) if e.code() == tonic::Code::NotFound => self.adopt(&req).await.ok_or(e)??,
            Err(e) => return Err(e),
        };
        if volumes::bound_at(&info, &req.staging_target_path) {
            return Ok(Response::new(NodeStageVolumeResponse {}));
        }
        self.bind(&info.name, staging, false).await?;
        log::info!(
            "NodeStageVolume: volume {} at {}",
            info.name,
            staging.display()
        );
        Ok(Response::new(NodeStageVolumeResponse {}))
    }

    async fn node_unstage_volume(
        &self,
        request: Request<NodeUnstageVolumeRequest>,
    ) -> Result<Response<NodeUnstageVolumeResponse>, Status> {
        let req = request.into_inner();
        if req.volume_id.is_empty() {
            return Err(status::required("volume_id"));
        }
        let staging = required_path("staging_target_path", &req.staging_target_path)?;
        if let Some(name) = ids::volume_of(&req.volume_id) {
            self.unbind(name, staging).await?;
            // A volume adopted for the stage is forgotten again (its image stays), so that
            // another node can take it over.
            if let Ok(info) = self.shared.daemon.inspect(name).await
                && info.labels.contains_key(volumes::ADOPTED_LABEL)
                && info.status.mount_refs.is_empty()
            {
                self.shared
                    .daemon
                    .remove(name)
                    .await
                    .map_err(|e| status::from_daemon(Call::Other, e))?;
                log::info!("NodeUnstageVolume: forgot adopted volume {name} (its image stays)");
            }
        }
        Ok(Response::new(NodeUnstageVolumeResponse {}))
    }

    async fn node_publish_volume(
        &self,
        request: Request<NodePublishVolumeRequest>,
    ) -> Result<Response<NodePublishVolumeResponse>, Status> {
        let req = request.into_inner();
        if req.volume_id.is_empty() {
            return Err(status::required("volume_id"));
        }
        let target = required_path("target_path", &req.target_path)?;
        let cap = req
            .volume_capability
            .as_ref()
            .ok_or_else(|| status::required("volume_capability"))?;
        volumes::check_capability(cap).map_err(status::invalid)?;
        let read_only = req.readonly || volumes::read_only(cap);
        if req.volume_context.get(EPHEMERAL_KEY).map(String::as_str) == Some("true") {
            self.publish_ephemeral(&req, target, read_only).await?;
            return Ok(Response::new(NodePublishVolumeResponse {}));
        }
        let staging = required_path("staging_target_path", &req.staging_target_path)?;
        let info = self.volume(&req.volume_id).await?;
        if volumes::bound_at(&info, &req.target_path) {
            // Published already: the same again is fine, and a read-only publish whose bind
            // the daemon made again read-write (after a reboot) is made read-only again; a
            // read-write publish where a read-only one is, is a conflict.
            return match mounts::mounted_read_only(target) {
                Some(true) if !read_only => Err(status::already_exists(format!(
                    "volume {} is published read-only at {}; unpublish it first",
                    info.name, req.target_path
                ))),
                Some(false) if read_only => {
                    mounts::remount_read_only(target).map_err(status::internal)?;
                    Ok(Response::new(NodePublishVolumeResponse {}))
                }
                _ => Ok(Response::new(NodePublishVolumeResponse {})),
            };
        }
        if !volumes::bound_at(&info, &req.staging_target_path) {
            return Err(status::precondition(format!(
                "volume {} is not staged at {}: NodeStageVolume comes first",
                info.name,
                staging.display()
            )));
        }
        self.bind(&info.name, target, read_only).await?;
        log::info!(
            "NodePublishVolume: volume {} at {}{}",
            info.name,
            target.display(),
            if read_only { " (read-only)" } else { "" }
        );
        Ok(Response::new(NodePublishVolumeResponse {}))
    }

    async fn node_unpublish_volume(
        &self,
        request: Request<NodeUnpublishVolumeRequest>,
    ) -> Result<Response<NodeUnpublishVolumeResponse>, Status> {
        let req = request.into_inner();
        if req.volume_id.is_empty() {
            return Err(status::required("volume_id"));
        }
        let target = required_path("target_path", &req.target_path)?;
        let name = ids::volume_of(&req.volume_id)
            .map(str::to_owned)
            .unwrap_or_else(|| ids::fvol_name(&req.volume_id));
        let info = match self.shared.daemon.inspect(&name).await {
            Ok(info) => Some(info),
            Err(e) if e.is_not_found() => None,
            Err(e) => return Err(status::from_daemon(Call::Other, e)),
        };
        if let Some(info) = &info {
            self.unbind(&info.name, target).await?;
        }
        mounts::remove_dir(target).map_err(status::precondition)?;
        // An ephemeral volume ends with its publish.
        if let Some(info) = info
            && info.labels.get(EPHEMERAL_LABEL).map(String::as_str) == Some("true")
        {
            self.shared
                .daemon
                .remove(&info.name)
                .await
                .map_err(|e| status::from_daemon(Call::Other, e))?;
            log::info!(
                "NodeUnpublishVolume: removed ephemeral volume {}",
                info.name
            );
        }
        Ok(Response::new(NodeUnpublishVolumeResponse {}))
    }

    /// The quota's numbers, as `fvol inspect` shows them, and the volume's condition.
    async fn node_get_volume_stats(
        &self,
        request: Request<NodeGetVolumeStatsRequest>,
    ) -> Result<Response<NodeGetVolumeStatsResponse>, Status> {
        let req = request.into_inner();
        if req.volume_id.is_empty() {
            return Err(status::required("volume_id"));
        }
        if req.volume_path.is_empty() {
            return Err(status::required("volume_path"));
        }
        let info = self.volume(&req.volume_id).await?;
        if !volumes::bound_at(&info, &req.volume_path) {
            return Err(status::not_found(format!(
                "volume {} is not published or staged at {}",
                info.name, req.volume_path
            )));
        }
        let s = &info.status;
        let fs = nix::sys::statvfs::statvfs(Path::new(&req.volume_path)).ok();
        let bytes_total = s.size_limit.unwrap_or_else(|| {
            fs.as_ref()
                .map(|f| f.blocks() * f.fragment_size())
                .unwrap_or(0)
        });
        let inodes_total = s
            .inode_limit
            .unwrap_or_else(|| fs.as_ref().map(|f| f.files()).unwrap_or(0));
        let usage = |unit: Unit, total: u64, used: u64| VolumeUsage {
            available: total.saturating_sub(used) as i64,
            total: total as i64,
            used: used as i64,
            unit: unit as i32,
        };
        Ok(Response::new(NodeGetVolumeStatsResponse {
            usage: vec![
                usage(Unit::Bytes, bytes_total, s.used_bytes),
                usage(Unit::Inodes, inodes_total, s.used_inodes),
            ],
            volume_condition: Some(volumes::condition_of(&info)),
        }))
    }

    /// Nothing to do on the node: ControllerExpandVolume changed the quota of the mounted
    /// volume already. Answers the volume's size.
    async fn node_expand_volume(
        &self,
        request: Request<NodeExpandVolumeRequest>,
    ) -> Result<Response<NodeExpandVolumeResponse>, Status> {
        let req = request.into_inner();
        if req.volume_id.is_empty() {
            return Err(status::required("volume_id"));
        }
        if req.volume_path.is_empty() {
            return Err(status::required("volume_path"));
        }
        let info = self.volume(&req.volume_id).await?;
        if !volumes::bound_at(&info, &req.volume_path) {
            return Err(status::not_found(format!(
                "volume {} is not published or staged at {}",
                info.name, req.volume_path
            )));
        }
        if let Some(range) = &req.capacity_range {
            let wanted = range.required_bytes.max(0) as u64;
            let size = info.status.size_limit.unwrap_or(0);
            if wanted > size {
                return Err(status::precondition(format!(
                    "volume {} has {size} bytes, less than the {wanted} asked: expand it with \
                     ControllerExpandVolume, which resizes it online",
                    info.name
                )));
            }
        }
        Ok(Response::new(NodeExpandVolumeResponse {
            capacity_bytes: info.status.size_limit.unwrap_or(0) as i64,
        }))
    }

    async fn node_get_capabilities(
        &self,
        _: Request<NodeGetCapabilitiesRequest>,
    ) -> Result<Response<NodeGetCapabilitiesResponse>, Status> {
        let capabilities = CAPABILITIES
            .iter()
            .map(|t| NodeServiceCapability {
                r#type: Some(CapType::Rpc(Rpc { r#type: *t as i32 })),
            })
            .collect();
        Ok(Response::new(NodeGetCapabilitiesResponse { capabilities }))
    }

    async fn node_get_info(
        &self,
        _: Request<NodeGetInfoRequest>,
    ) -> Result<Response<NodeGetInfoResponse>, Status> {
        Ok(Response::new(NodeGetInfoResponse {
            node_id: self.shared.node_id.clone(),
            max_volumes_per_node: 0,
            accessible_topology: Some(volumes::node_topology(&self.shared.node_id)),
        }))
    }
}
