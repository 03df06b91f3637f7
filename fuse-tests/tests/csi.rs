//! `fvol csi` against a real daemon, real FUSE mounts and real bind mounts: every RPC's
//! happy path, its idempotence and its error codes (docs/csi.md).
// The calls answer `Result<_, tonic::Status>`, tonic's own signature.
#![allow(clippy::result_large_err)]
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use fuse_tests::csi::TestCsi;
use fuse_tests::daemon::{TestDaemon, TestRoot, df_size, fuse_or_skip, is_mountpoint, stderr_of};
use fvol::csi::proto::volume_capability::access_mode::Mode;
use fvol::csi::proto::volume_capability::{AccessMode, AccessType, BlockVolume, MountVolume};
use fvol::csi::proto::*;
use tonic::{Code, Response, Status};

const MIB: i64 = 1 << 20;

fn cap(mode: Mode) -> VolumeCapability {
    VolumeCapability {
        access_type: Some(AccessType::Mount(MountVolume::default())),
        access_mode: Some(AccessMode { mode: mode as i32 }),
    }
}

fn rw() -> VolumeCapability {
    cap(Mode::SingleNodeWriter)
}

fn params(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn create_req(name: &str, bytes: i64, parameters: &[(&str, &str)]) -> CreateVolumeRequest {
    CreateVolumeRequest {
        name: name.into(),
        capacity_range: Some(CapacityRange {
            required_bytes: bytes,
            limit_bytes: 0,
        }),
        volume_capabilities: vec![rw()],
        parameters: params(parameters),
        ..Default::default()
    }
}

/// The code and message of a refusal; panics on success.
fn refused<T: std::fmt::Debug>(result: Result<Response<T>, Status>) -> (Code, String) {
    match result {
        Ok(r) => panic!("expected an error, got {:?}", r.into_inner()),
        Err(s) => (s.code(), s.message().to_owned()),
    }
}

fn ok<T>(what: &str, result: Result<Response<T>, Status>) -> T {
    match result {
        Ok(r) => r.into_inner(),
        Err(s) => panic!("{what}: {:?} {}", s.code(), s.message()),
    }
}

struct Setup {
    csi: TestCsi,
    d: TestDaemon,
}

fn setup() -> Setup {
    let root = TestRoot::new();
    let d = TestDaemon::start_at(&root);
    let csi = TestCsi::start(&root, "node-a");
    Setup { csi, d }
}

impl Setup {
    fn create(&self, name: &str, bytes: i64, parameters: &[(&str, &str)]) -> Volume {
        let req = create_req(name, bytes, parameters);
        ok(
            "CreateVolume",
            self.csi.run(self.csi.controller().create_volume(req)),
        )
        .volume
        .unwrap()
    }

    fn stage(&self, id: &str, staging: &Path) -> Result<Response<NodeStageVolumeResponse>, Status> {
        let req = NodeStageVolumeRequest {
            volume_id: id.into(),
            staging_target_path: staging.to_str().unwrap().into(),
            volume_capability: Some(rw()),
            ..Default::default()
        };
        self.csi.run(self.csi.node().node_stage_volume(req))
    }

    fn publish(
        &self,
        id: &str,
        staging: &Path,
        target: &Path,
        readonly: bool,
    ) -> Result<Response<NodePublishVolumeResponse>, Status> {
        let req = NodePublishVolumeRequest {
            volume_id: id.into(),
            staging_target_path: staging.to_str().unwrap().into(),
            target_path: target.to_str().unwrap().into(),
            volume_capability: Some(rw()),
            readonly,
            ..Default::default()
        };
        self.csi.run(self.csi.node().node_publish_volume(req))
    }

    fn unpublish(
        &self,
        id: &str,
        target: &Path,
    ) -> Result<Response<NodeUnpublishVolumeResponse>, Status> {
        let req = NodeUnpublishVolumeRequest {
            volume_id: id.into(),
            target_path: target.to_str().unwrap().into(),
        };
        self.csi.run(self.csi.node().node_unpublish_volume(req))
    }

    fn unstage(
        &self,
        id: &str,
        staging: &Path,
    ) -> Result<Response<NodeUnstageVolumeResponse>, Status> {
        let req = NodeUnstageVolumeRequest {
            volume_id: id.into(),
            staging_target_path: staging.to_str().unwrap().into(),
        };
        self.csi.run(self.csi.node().node_unstage_volume(req))
    }

    fn stats(&self, id: &str, path: &Path) -> Result<Response<NodeGetVolumeStatsResponse>, Status> {
        let req = NodeGetVolumeStatsRequest {
            volume_id: id.into(),
            volume_path: path.to_str().unwrap().into(),
            ..Default::default()
        };
        self.csi.run(self.csi.node().node_get_volume_stats(req))
    }

    fn expand(
        &self,
        id: &str,
        bytes: i64,
    ) -> Result<Response<ControllerExpandVolumeResponse>, Status> {
        let req = ControllerExpandVolumeRequest {
            volume_id: id.into(),
            capacity_range: Some(CapacityRange {
                required_bytes: bytes,
                limit_bytes: 0,
            }),
            ..Default::default()
        };
        self.csi
            .run(self.csi.controller().controller_expand_volume(req))
    }

    /// A staging directory (made, as the CO makes it) and a target path (left to the driver).
    fn paths(&self, tag: &str) -> (PathBuf, PathBuf) {
        let staging = self.d.scratch_dir(&format!("{tag}-staging"));
        let pods = self.d.scratch_dir(&format!("{tag}-pod"));
        (staging, pods.join("mount"))
    }
}

#[test]
fn identity() {
    if !fuse_or_skip("csi identity") {
        return;
    }
    let s = setup();
    let info = ok(
        "GetPluginInfo",
        s.csi
            .run(s.csi.identity().get_plugin_info(GetPluginInfoRequest {})),
    );
    assert_eq!(info.name, "csi.fvol.io");
    assert!(!info.vendor_version.is_empty());
    let caps = ok(
        "GetPluginCapabilities",
        s.csi.run(
            s.csi
                .identity()
                .get_plugin_capabilities(GetPluginCapabilitiesRequest {}),
        ),
    );
    let services: Vec<i32> = caps
        .capabilities
        .iter()
        .filter_map(|c| match &c.r#type {
            Some(plugin_capability::Type::Service(s)) => Some(s.r#type),
            _ => None,
        })
        .collect();
    for want in [
        plugin_capability::service::Type::ControllerService,
        plugin_capability::service::Type::VolumeAccessibilityConstraints,
    ] {
        assert!(
            services.contains(&(want as i32)),
            "{want:?} not in {services:?}"
        );
    }
    let probe = ok("Probe", s.csi.run(s.csi.identity().probe(ProbeRequest {})));
    assert_eq!(probe.ready, Some(true));
    let info = ok(
        "NodeGetInfo",
        s.csi.run(s.csi.node().node_get_info(NodeGetInfoRequest {})),
    );
    assert_eq!(info.node_id, "node-a");
    assert_eq!(
        info.accessible_topology
            .unwrap()
            .segments
            .get("fvol.io/node")
            .map(String::as_str),
        Some("node-a")
    );
    let node_caps = ok(
        "NodeGetCapabilities",
        s.csi.run(
            s.csi
                .node()
                .node_get_capabilities(NodeGetCapabilitiesRequest {}),
        ),
    );
    let rpcs: Vec<i32> = node_caps
        .capabilities
        .iter()
        .filter_map(|c| match &c.r#type {
            Some(node_service_capability::Type::Rpc(r)) => Some(r.r#type),
            _ => None,
        })
        .collect();
    use node_service_capability::rpc::Type as NodeRpc;
    for want in [
        NodeRpc::StageUnstageVolume,
        NodeRpc::GetVolumeStats,
        NodeRpc::ExpandVolume,
        NodeRpc::VolumeCondition,
    ] {
        assert!(rpcs.contains(&(want as i32)), "{want:?} not in {rpcs:?}");
    }
    // Without its daemon the driver is not ready, and says why.
    let Setup { csi, mut d } = s;
    d.stop();
    let (code, message) = refused(csi.run(csi.identity().probe(ProbeRequest {})));
    assert_eq!(code, Code::FailedPrecondition, "{message}");
    assert!(message.contains("fvol daemon"), "{message}");
}

#[test]
fn create_and_delete() {
    if !fuse_or_skip("csi create_and_delete") {
        return;
    }
    let s = setup();
    let v = s.create("pvc-one", 10 * MIB, &[]);
    assert_eq!(v.volume_id, "pvc-one");
    assert_eq!(v.capacity_bytes, 10 * MIB);
    assert_eq!(v.accessible_topology[0].segments["fvol.io/node"], "node-a");
    let info = s.d.inspect("pvc-one");
    assert_eq!(info["Driver"], "local");
    assert_eq!(info["Status"]["SizeLimit"], 10 * MIB);
    assert_eq!(info["Labels"]["fvol.io/csi-name"], "pvc-one");
    // Idempotent by name; a different capacity or driver is ALREADY_EXISTS.
    assert_eq!(s.create("pvc-one", 10 * MIB, &[]), v);
    let c = s.csi.controller();
    let (code, message) = refused(s.csi.run(c.clone().create_volume(create_req(
        "pvc-one",
        20 * MIB,
        &[],
    ))));
    assert_eq!(code, Code::AlreadyExists, "{message}");
    assert!(message.contains("capacity"), "{message}");
    let (code, _) = refused(s.csi.run(c.clone().create_volume(create_req(
        "pvc-one",
        10 * MIB,
        &[("driver", "tmpfs")],
    ))));
    assert_eq!(code, Code::AlreadyExists);
    // A name that is no fvol name gets a hashed one, and keeps its own as a label.
    let odd = s.create("my volume/1", 8 * MIB, &[]);
    assert!(odd.volume_id.starts_with("csi-"), "{}", odd.volume_id);
    assert_eq!(
        s.d.inspect(&odd.volume_id)["Labels"]["fvol.io/csi-name"],
        "my volume/1"
    );
    // No capacity: 1 GiB; a capacity in the middle of a block is rounded up.
    assert_eq!(s.create("pvc-default", 0, &[]).capacity_bytes, 1 << 30);
    assert_eq!(s.create("pvc-odd", 5000, &[]).capacity_bytes, 8192);
    // Parameters are the driver's options, checked by its schema: the CLI's words.
    let t = s.create("pvc-tmp", 4 * MIB, &[("driver", "tmpfs"), ("mode", "700")]);
    assert_eq!(s.d.inspect(&t.volume_id)["Options"]["mode"], "700");
    let cli = s.d.cli(["create", "-o", "colour=blue", "cli-bad"]);
    let cli_error = stderr_of(&cli);
    let (code, message) = refused(s.csi.run(c.clone().create_volume(create_req(
        "pvc-bad",
        MIB,
        &[("colour", "blue")],
    ))));
    assert_eq!(code, Code::InvalidArgument);
    assert!(
        cli_error.contains(&message),
        "CLI: {cli_error}\nCSI: {message}"
    );
    assert!(message.contains("valid options are"), "{message}");
    let (code, message) = refused(s.csi.run(c.clone().create_volume(create_req(
        "pvc-bad",
        MIB,
        &[("driver", "nfs")],
    ))));
    assert_eq!(code, Code::InvalidArgument);
    assert!(message.contains("valid drivers are"), "{message}");
    let (code, message) = refused(s.csi.run(c.clone().create_volume(create_req(
        "pvc-bad",
        MIB,
        &[("size", "1G")],
    ))));
    assert_eq!(code, Code::InvalidArgument);
    assert!(message.contains("capacity_range"), "{message}");
    // Kubernetes' own keys are not options.
    s.create("pvc-k8s", MIB, &[("csi.storage.k8s.io/pvc/name", "claim")]);
    // Missing fields, block access, unsupported modes: INVALID_ARGUMENT.
    let mut no_name = create_req("", MIB, &[]);
    no_name.name.clear();
    assert_eq!(
        refused(s.csi.run(c.clone().create_volume(no_name))).0,
        Code::InvalidArgument
    );
    let mut no_caps = create_req("pvc-x", MIB, &[]);
    no_caps.volume_capabilities.clear();
    assert_eq!(
        refused(s.csi.run(c.clone().create_volume(no_caps))).0,
        Code::InvalidArgument
    );
    let mut block = create_req("pvc-x", MIB, &[]);
    block.volume_capabilities[0].access_type = Some(AccessType::Block(BlockVolume {}));
    let (code, message) = refused(s.csi.run(c.clone().create_volume(block)));
    assert_eq!(code, Code::InvalidArgument);
    assert!(message.contains("block"), "{message}");
    let mut multi = create_req("pvc-x", MIB, &[]);
    multi.volume_capabilities = vec![cap(Mode::MultiNodeMultiWriter)];
    let (code, message) = refused(s.csi.run(c.clone().create_volume(multi)));
    assert_eq!(code, Code::InvalidArgument);
    assert!(message.contains("SINGLE_NODE_WRITER"), "{message}");
    // A capacity that cannot be met: OUT_OF_RANGE.
    let mut tiny = create_req("pvc-x", 0, &[]);
    tiny.capacity_range = Some(CapacityRange {
        required_bytes: 0,
        limit_bytes: 100,
    });
    assert_eq!(
        refused(s.csi.run(c.clone().create_volume(tiny))).0,
        Code::OutOfRange
    );
    // A local volume can only be on this node.
    let mut elsewhere = create_req("pvc-x", MIB, &[]);
    elsewhere.accessibility_requirements = Some(TopologyRequirement {
        requisite: vec![Topology {
            segments: params(&[("fvol.io/node", "node-b")]),
        }],
        preferred: vec![],
    });
    let (code, message) = refused(s.csi.run(c.clone().create_volume(elsewhere)));
    assert_eq!(code, Code::ResourceExhausted, "{message}");
    assert!(s.d.cli(["inspect", "pvc-x"]).status.code() == Some(1));
    // Delete: idempotent, a missing id is fine, no id is INVALID_ARGUMENT.
    let del = |id: &str| {
        s.csi.run(c.clone().delete_volume(DeleteVolumeRequest {
            volume_id: id.into(),
        }))
    };
    ok("DeleteVolume", del("pvc-one"));
    ok("DeleteVolume again", del("pvc-one"));
    ok("DeleteVolume of nothing", del("no such volume!"));
    assert_eq!(refused(del("")).0, Code::InvalidArgument);
    assert_eq!(s.d.cli(["inspect", "pvc-one"]).status.code(), Some(1));
}

#[test]
fn validate_list_get_capacity() {
    if !fuse_or_skip("csi validate_list_get_capacity") {
        return;
    }
    let s = setup();
    let c = s.csi.controller();
    for i in 0..5 {
        s.create(&format!("vol-{i}"), MIB, &[]);
    }
    let v = ValidateVolumeCapabilitiesRequest {
        volume_id: "vol-0".into(),
        volume_capabilities: vec![rw()],
        ..Default::default()
    };
    let answer = ok(
        "Validate",
        s.csi.run(c.clone().validate_volume_capabilities(v.clone())),
    );
    assert_eq!(answer.confirmed.unwrap().volume_capabilities, vec![rw()]);
    let mut multi = v.clone();
    multi.volume_capabilities = vec![cap(Mode::MultiNodeReaderOnly)];
    let answer = ok(
        "Validate",
        s.csi.run(c.clone().validate_volume_capabilities(multi)),
    );
    assert!(answer.confirmed.is_none());
    assert!(
        answer.message.contains("MULTI_NODE_READER_ONLY"),
        "{}",
        answer.message
    );
    let mut missing = v.clone();
    missing.volume_id = "vol-9".into();
    assert_eq!(
        refused(s.csi.run(c.clone().validate_volume_capabilities(missing))).0,
        Code::NotFound
    );
    let mut no_caps = v.clone();
    no_caps.volume_capabilities.clear();
    assert_eq!(
        refused(s.csi.run(c.clone().validate_volume_capabilities(no_caps))).0,
        Code::InvalidArgument
    );
    // Pages of 2, by id, each token naming the last id of its page.
    let list = |max: i32, token: &str| {
        s.csi.run(c.clone().list_volumes(ListVolumesRequest {
            max_entries: max,
            starting_token: token.into(),
        }))
    };
    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let page = ok("ListVolumes", list(2, &token));
        assert!(page.entries.len() <= 2);
        seen.extend(
            page.entries
                .iter()
                .map(|e| e.volume.as_ref().unwrap().volume_id.clone()),
        );
        if page.next_token.is_empty() {
            break;
        }
        token = page.next_token;
    }
    assert_eq!(seen, ["vol-0", "vol-1", "vol-2", "vol-3", "vol-4"]);
    // A token stays good when its volume is deleted meanwhile.
    let first = ok("ListVolumes", list(2, ""));
    ok(
        "Delete",
        s.csi.run(c.clone().delete_volume(DeleteVolumeRequest {
            volume_id: "vol-1".into(),
        })),
    );
    let rest = ok("ListVolumes", list(0, &first.next_token));
    assert_eq!(rest.entries.len(), 3);
    assert_eq!(refused(list(0, "invalid-token")).0, Code::Aborted);
    assert_eq!(refused(list(-1, "")).0, Code::InvalidArgument);
    // ControllerGetVolume, with its condition.
    let got = ok(
        "ControllerGetVolume",
        s.csi
            .run(c.clone().controller_get_volume(ControllerGetVolumeRequest {
                volume_id: "vol-2".into(),
            })),
    );
    assert_eq!(got.volume.unwrap().capacity_bytes, MIB);
    let status = got.status.unwrap();
    assert!(status.published_node_ids.is_empty());
    assert!(!status.volume_condition.unwrap().abnormal);
    assert_eq!(
        refused(
            s.csi
                .run(c.clone().controller_get_volume(ControllerGetVolumeRequest {
                    volume_id: "vol-9".into()
                }))
        )
        .0,
        Code::NotFound
    );
    // GetCapacity: the host's free space under ROOT, as statvfs (df) sees it (give or take
    // what other tests write meanwhile).
    let capacity = ok(
        "GetCapacity",
        s.csi
            .run(c.clone().get_capacity(GetCapacityRequest::default())),
    );
    let st = nix::sys::statvfs::statvfs(&s.d.root()).unwrap();
    let free = st.blocks_available() as i64 * st.fragment_size() as i64;
    assert!(
        (capacity.available_capacity - free).abs() < 512 * MIB,
        "{} vs {free}",
        capacity.available_capacity
    );
    let elsewhere = GetCapacityRequest {
        accessible_topology: Some(Topology {
            segments: params(&[("fvol.io/node", "node-b")]),
        }),
        ..Default::default()
    };
    assert_eq!(
        ok("GetCapacity", s.csi.run(c.clone().get_capacity(elsewhere))).available_capacity,
        0
    );
    let tmpfs = GetCapacityRequest {
        parameters: params(&[("driver", "tmpfs")]),
        ..Default::default()
    };
    assert!(ok("GetCapacity", s.csi.run(c.clone().get_capacity(tmpfs))).available_capacity > 0);
    let caps = ok(
        "ControllerGetCapabilities",
        s.csi.run(
            c.clone()
                .controller_get_capabilities(ControllerGetCapabilitiesRequest {}),
        ),
    );
    assert_eq!(caps.capabilities.len(), 11);
}

#[test]
fn stage_publish_quota_stats_unpublish() {
    if !fuse_or_skip("csi stage_publish_quota_stats_unpublish") {
        return;
    }
    let s = setup();
    let v = s.create("pvc-data", 8 * MIB, &[]);
    let id = &v.volume_id;
    let (staging, target) = s.paths("a");
    // Publish before stage is a precondition failure.
    let (code, message) = refused(s.publish(id, &staging, &target, false));
    assert_eq!(code, Code::FailedPrecondition, "{message}");
    ok("NodeStageVolume", s.stage(id, &staging));
    ok("NodeStageVolume again", s.stage(id, &staging));
    assert!(is_mountpoint(&staging));
    // A target through a symlink is refused: nothing is created or mounted where it points.
    let real = s.d.scratch_dir("a-real");
    let link = real.with_file_name("a-link");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    let (code, message) = refused(s.publish(id, &staging, &link.join("mount"), false));
    assert_eq!(code, Code::InvalidArgument, "{message}");
    assert!(message.contains("symlink"), "{message}");
    assert!(!real.join("mount").exists());
    ok("NodePublishVolume", s.publish(id, &staging, &target, false));
    ok(
        "NodePublishVolume again",
        s.publish(id, &staging, &target, false),
    );
    assert!(is_mountpoint(&target));
    assert_eq!(df_size(&target), 8 << 20);
    // The quota holds at the publish target.
    let mut f = std::fs::File::create(target.join("fill")).unwrap();
    let chunk = vec![7u8; 1 << 20];
    let mut written = 0u64;
    let err = loop {
        match f.write_all(&chunk) {
            Ok(()) => written += chunk.len() as u64,
            Err(e) => break e,
        }
    };
    assert_eq!(err.raw_os_error(), Some(libc::ENOSPC), "{err}");
    assert!(written <= 8 << 20);
    drop(f);
    // The stats are inspect's numbers.
    let stats = ok("NodeGetVolumeStats", s.stats(id, &target));
    let info = s.d.inspect(id);
    let bytes = &stats.usage[0];
    assert_eq!(bytes.unit, volume_usage::Unit::Bytes as i32);
    assert_eq!(bytes.total, info["Status"]["SizeLimit"].as_i64().unwrap());
    assert_eq!(bytes.used, info["Status"]["UsedBytes"].as_i64().unwrap());
    assert_eq!(bytes.available, bytes.total - bytes.used);
    let inodes = &stats.usage[1];
    assert_eq!(inodes.unit, volume_usage::Unit::Inodes as i32);
    assert_eq!(inodes.used, info["Status"]["UsedInodes"].as_i64().unwrap());
    assert!(!stats.volume_condition.unwrap().abnormal);
    assert_eq!(
        refused(s.stats(id, Path::new("/some/path"))).0,
        Code::NotFound
    );
    assert_eq!(
        refused(s.stats("no-such-volume", &target)).0,
        Code::NotFound
    );
    assert_eq!(refused(s.stats("", &target)).0, Code::InvalidArgument);
    // Published elsewhere read-only: writes fail with EROFS there, not at the first target.
    let ro_target = s.d.scratch_dir("b-pod").join("mount");
    ok(
        "NodePublishVolume ro",
        s.publish(id, &staging, &ro_target, true),
    );
    let err = std::fs::write(ro_target.join("x"), b"x").unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EROFS), "{err}");
    assert!(std::fs::read(ro_target.join("fill")).is_ok());
    // The same target read-write where it is read-only: ALREADY_EXISTS; read-only again: fine.
    assert_eq!(
        refused(s.publish(id, &staging, &ro_target, false)).0,
        Code::AlreadyExists
    );
    ok(
        "NodePublishVolume ro again",
        s.publish(id, &staging, &ro_target, true),
    );
    // The volume is in use: DeleteVolume is refused, naming who holds it.
    let c = s.csi.controller();
    let (code, message) = refused(s.csi.run(c.clone().delete_volume(DeleteVolumeRequest {
        volume_id: id.clone(),
    })));
    assert_eq!(code, Code::FailedPrecondition, "{message}");
    // A restart of the driver, and one of the daemon, lose nothing: the volume stays
    // published read-only and writable where it was, and unpublish and unstage find their
    // mounts.
    let Setup { mut csi, mut d } = s;
    csi.stop();
    d.terminate();
    let d = TestDaemon::start_at(&d.root.clone());
    let csi = TestCsi::start(&d.root, "node-a");
    let s = Setup { csi, d };
    std::fs::remove_file(target.join("fill")).unwrap();
    std::fs::write(target.join("after-restarts"), b"still here").unwrap();
    assert_eq!(
        std::fs::read(ro_target.join("after-restarts")).unwrap(),
        b"still here"
    );
    let err = std::fs::write(ro_target.join("x"), b"x").unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EROFS), "{err}");
    ok("stats after the restarts", s.stats(id, &target));
    ok("NodeUnpublishVolume", s.unpublish(id, &ro_target));
    ok("NodeUnpublishVolume", s.unpublish(id, &target));
    assert!(!target.exists(), "the driver removes the target it made");
    ok("NodeUnpublishVolume again", s.unpublish(id, &target));
    ok("NodeUnstageVolume", s.unstage(id, &staging));
    ok("NodeUnstageVolume again", s.unstage(id, &staging));
    assert!(!is_mountpoint(&staging));
    assert_eq!(s.d.inspect(id)["Status"]["Mounted"], false);
    assert_eq!(refused(s.unstage("", &staging)).0, Code::InvalidArgument);
    assert_eq!(
        refused(s.unpublish(id, Path::new(""))).0,
        Code::InvalidArgument
    );
    // Errors of stage: no volume, no path, no capability.
    assert_eq!(
        refused(s.stage("no-such-volume", &staging)).0,
        Code::NotFound
    );
    assert_eq!(refused(s.stage("", &staging)).0, Code::InvalidArgument);
    assert_eq!(refused(s.stage(id, Path::new(""))).0, Code::InvalidArgument);
    ok(
        "DeleteVolume",
        s.csi
            .run(s.csi.controller().delete_volume(DeleteVolumeRequest {
                volume_id: id.clone(),
            })),
    );
}

/// Stage and publish hold `csi:PATH` references, which `fvol unmount --target` does not take
/// away; a `cli:PATH` bind made by an fvol csi from before that is still found and released.
#[test]
fn references_are_the_csi_nodes_own() {
    if !fuse_or_skip("csi references_are_the_csi_nodes_own") {
        return;
    }
    let s = setup();
    let v = s.create("pvc-refs", 8 * MIB, &[]);
    let id = &v.volume_id;
    let name = s.d.inspect(id)["Name"].as_str().unwrap().to_owned();
    let (staging, target) = s.paths("refs");
    ok("NodeStageVolume", s.stage(id, &staging));
    ok("NodePublishVolume", s.publish(id, &staging, &target, false));
    let refs = |s: &Setup| -> Vec<String> {
        let info = s.d.inspect(id);
        let mut refs: Vec<String> = info["Status"]["MountRefs"]
            .as_array()
            .unwrap_or_else(|| panic!("no MountRefs: {info}"))
            .iter()
            .map(|r| r.as_str().unwrap().to_owned())
            .collect();
        refs.sort();
        refs
    };
    let csi_staging = format!("csi:{}", staging.display());
    let csi_target = format!("csi:{}", target.display());
    let mut want = vec![csi_staging.clone(), csi_target.clone()];
    want.sort();
    assert_eq!(refs(&s), want);
    // `fvol unmount --target` names cli references only: the pod keeps its volume, and the
    // error says who holds it.
    let out =
        s.d.cli(["unmount", &name, "--target", target.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "unmount --target took a pod's bind");
    assert!(stderr.contains(&csi_target), "{stderr}");
    assert!(is_mountpoint(&target));
    assert_eq!(refs(&s), want);
    // A stage made by an older fvol csi: the reference `cli:PATH`. Publish finds it, and
    // unstage releases it.
    let old_staging = s.d.scratch_dir("refs-old-staging");
    s.d.cli_ok(["mount", &name, "--target", old_staging.to_str().unwrap()]);
    let old_target = s.d.scratch_dir("refs-old-pod").join("mount");
    ok(
        "NodePublishVolume from an old stage",
        s.publish(id, &old_staging, &old_target, false),
    );
    ok("NodeUnpublishVolume", s.unpublish(id, &old_target));
    ok(
        "NodeUnstageVolume of an old stage",
        s.unstage(id, &old_staging),
    );
    assert!(!is_mountpoint(&old_staging));
    assert_eq!(refs(&s), want);
    ok("NodeUnpublishVolume", s.unpublish(id, &target));
    ok("NodeUnstageVolume", s.unstage(id, &staging));
    assert_eq!(refs(&s), Vec::<String>::new());
    assert_eq!(s.d.inspect(id)["Status"]["Mounted"], false);
}

#[test]
fn expansion_while_a_writer_runs() {
    if !fuse_or_skip("csi expansion_while_a_writer_runs") {
        return;
    }
    let s = setup();
    let v = s.create("pvc-grow", 4 * MIB, &[]);
    let id = v.volume_id.clone();
    let (staging, target) = s.paths("g");
    ok("stage", s.stage(&id, &staging));
    ok("publish", s.publish(&id, &staging, &target, false));
    assert_eq!(df_size(&target), 4 << 20);
    // A writer appends until it reaches 12 MiB, waiting whenever the quota stops it.
    let written = Arc::new(AtomicU64::new(0));
    let full_seen = Arc::new(AtomicBool::new(false));
    let writer = {
        let (written, full_seen, path) = (written.clone(), full_seen.clone(), target.join("log"));
        std::thread::spawn(move || {
            let mut f = std::fs::File::create(path).unwrap();
            let chunk = vec![1u8; 64 << 10];
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
            while written.load(Ordering::SeqCst) < 12 << 20 {
                assert!(
                    std::time::Instant::now() < deadline,
                    "the writer never got room"
                );
                match f.write(&chunk) {
                    Ok(n) => {
                        written.fetch_add(n as u64, Ordering::SeqCst);
                    }
                    Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => {
                        full_seen.store(true, Ordering::SeqCst);
                        std::thread::sleep(std::time::Duration::from_millis(20));
                    }
                    Err(e) => panic!("write: {e}"),
                }
            }
        })
    };
    while !full_seen.load(Ordering::SeqCst) {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let grown = ok("ControllerExpandVolume", s.expand(&id, 16 * MIB));
    assert_eq!(grown.capacity_bytes, 16 * MIB);
    assert!(!grown.node_expansion_required);
    writer.join().unwrap();
    assert!(written.load(Ordering::SeqCst) >= 12 << 20);
    assert_eq!(df_size(&target), 16 << 20);
    // NodeExpandVolume has nothing left to do, and says the size.
    let req = NodeExpandVolumeRequest {
        volume_id: id.clone(),
        volume_path: target.to_str().unwrap().into(),
        capacity_range: Some(CapacityRange {
            required_bytes: 16 * MIB,
            limit_bytes: 0,
        }),
        ..Default::default()
    };
    let answer = ok(
        "NodeExpandVolume",
        s.csi.run(s.csi.node().node_expand_volume(req.clone())),
    );
    assert_eq!(answer.capacity_bytes, 16 * MIB);
    let mut missing = req.clone();
    missing.volume_id = "no-such-volume".into();
    assert_eq!(
        refused(s.csi.run(s.csi.node().node_expand_volume(missing))).0,
        Code::NotFound
    );
    let mut no_path = req.clone();
    no_path.volume_path.clear();
    assert_eq!(
        refused(s.csi.run(s.csi.node().node_expand_volume(no_path))).0,
        Code::InvalidArgument
    );
    // Smaller than now is a no-op (CSI expands only); errors of expand.
    assert_eq!(
        ok("expand smaller", s.expand(&id, 8 * MIB)).capacity_bytes,
        16 * MIB
    );
    assert_eq!(
        refused(s.expand("no-such-volume", 8 * MIB)).0,
        Code::NotFound
    );
    assert_eq!(refused(s.expand("", 8 * MIB)).0, Code::InvalidArgument);
    let no_range = ControllerExpandVolumeRequest {
        volume_id: id.clone(),
        ..Default::default()
    };
    assert_eq!(
        refused(
            s.csi
                .run(s.csi.controller().controller_expand_volume(no_range))
        )
        .0,
        Code::InvalidArgument
    );
    ok("unpublish", s.unpublish(&id, &target));
    ok("unstage", s.unstage(&id, &staging));
}

#[test]
fn snapshot_then_clone() {
    if !fuse_or_skip("csi snapshot_then_clone") {
        return;
    }
    let s = setup();
    let c = s.csi.controller();
    let v = s.create("pvc-src", 8 * MIB, &[]);
    let id = v.volume_id.clone();
    let (staging, target) = s.paths("s");
    ok("stage", s.stage(&id, &staging));
    ok("publish", s.publish(&id, &staging, &target, false));
    std::fs::write(target.join("hello"), b"before").unwrap();
    let snap_req = CreateSnapshotRequest {
        source_volume_id: id.clone(),
        name: "snap-1".into(),
        ..Default::default()
    };
    let snap = ok(
        "CreateSnapshot",
        s.csi.run(c.clone().create_snapshot(snap_req.clone())),
    )
    .snapshot
    .unwrap();
    assert_eq!(snap.snapshot_id, "pvc-src@snap-1");
    assert_eq!(snap.source_volume_id, id);
    assert!(snap.ready_to_use);
    assert!(snap.creation_time.is_some());
    std::fs::write(target.join("hello"), b"after").unwrap();
    // Idempotent; the same name on another volume is ALREADY_EXISTS.
    let again = ok(
        "CreateSnapshot again",
        s.csi.run(c.clone().create_snapshot(snap_req.clone())),
    )
    .snapshot
    .unwrap();
    assert_eq!(again.snapshot_id, snap.snapshot_id);
    s.create("pvc-other", MIB, &[]);
    let mut other = snap_req.clone();
    other.source_volume_id = "pvc-other".into();
    assert_eq!(
        refused(s.csi.run(c.clone().create_snapshot(other))).0,
        Code::AlreadyExists
    );
    let mut no_name = snap_req.clone();
    no_name.name.clear();
    assert_eq!(
        refused(s.csi.run(c.clone().create_snapshot(no_name))).0,
        Code::InvalidArgument
    );
    let mut no_source = snap_req.clone();
    no_source.source_volume_id.clear();
    assert_eq!(
        refused(s.csi.run(c.clone().create_snapshot(no_source))).0,
        Code::InvalidArgument
    );
    let mut missing = snap_req.clone();
    missing.source_volume_id = "no-such-volume".into();
    missing.name = "snap-9".into();
    assert_eq!(
        refused(s.csi.run(c.clone().create_snapshot(missing))).0,
        Code::NotFound
    );
    // Listing: all, by id, by source, paged.
    ok(
        "CreateSnapshot 2",
        s.csi.run(c.clone().create_snapshot(CreateSnapshotRequest {
            source_volume_id: id.clone(),
            name: "snap-2".into(),
            ..Default::default()
        })),
    );
    let list =
        |req: ListSnapshotsRequest| ok("ListSnapshots", s.csi.run(c.clone().list_snapshots(req)));
    assert_eq!(list(ListSnapshotsRequest::default()).entries.len(), 2);
    let by_id = list(ListSnapshotsRequest {
        snapshot_id: "pvc-src@snap-2".into(),
        ..Default::default()
    });
    assert_eq!(by_id.entries.len(), 1);
    assert!(
        list(ListSnapshotsRequest {
            snapshot_id: "pvc-src@nope".into(),
            ..Default::default()
        })
        .entries
        .is_empty()
    );
    assert!(
        list(ListSnapshotsRequest {
            source_volume_id: "pvc-other".into(),
            ..Default::default()
        })
        .entries
        .is_empty()
    );
    let page = list(ListSnapshotsRequest {
        max_entries: 1,
        ..Default::default()
    });
    assert_eq!(page.entries.len(), 1);
    let rest = list(ListSnapshotsRequest {
        starting_token: page.next_token,
        ..Default::default()
    });
    assert_eq!(rest.entries.len(), 1);
    // A clone of the snapshot holds the data as it was; a clone of the volume as it is.
    let mut from_snap = create_req("pvc-clone", 8 * MIB, &[]);
    from_snap.volume_content_source = Some(VolumeContentSource {
        r#type: Some(volume_content_source::Type::Snapshot(
            volume_content_source::SnapshotSource {
                snapshot_id: snap.snapshot_id.clone(),
            },
        )),
    });
    let clone = ok(
        "CreateVolume from a snapshot",
        s.csi.run(c.clone().create_volume(from_snap.clone())),
    )
    .volume
    .unwrap();
    assert!(clone.content_source.is_some());
    let mut from_vol = create_req("pvc-copy", 8 * MIB, &[]);
    from_vol.volume_content_source = Some(VolumeContentSource {
        r#type: Some(volume_content_source::Type::Volume(
            volume_content_source::VolumeSource {
                volume_id: id.clone(),
            },
        )),
    });
    ok(
        "CreateVolume from a volume",
        s.csi.run(c.clone().create_volume(from_vol.clone())),
    );
    for (name, want) in [("pvc-clone", "before"), ("pvc-copy", "after")] {
        let (st, tg) = s.paths(name);
        ok("stage clone", s.stage(name, &st));
        ok("publish clone", s.publish(name, &st, &tg, false));
        assert_eq!(
            std::fs::read_to_string(tg.join("hello")).unwrap(),
            want,
            "{name}"
        );
        ok("unpublish clone", s.unpublish(name, &tg));
        ok("unstage clone", s.unstage(name, &st));
    }
    let mut gone = from_snap.clone();
    gone.name = "pvc-clone-2".into();
    gone.volume_content_source = Some(VolumeContentSource {
        r#type: Some(volume_content_source::Type::Snapshot(
            volume_content_source::SnapshotSource {
                snapshot_id: "pvc-src@nope".into(),
            },
        )),
    });
    assert_eq!(
        refused(s.csi.run(c.clone().create_volume(gone.clone()))).0,
        Code::NotFound
    );
    gone.volume_content_source = Some(VolumeContentSource {
        r#type: Some(volume_content_source::Type::Volume(
            volume_content_source::VolumeSource {
                volume_id: "nope-vol".into(),
            },
        )),
    });
    assert_eq!(
        refused(s.csi.run(c.clone().create_volume(gone))).0,
        Code::NotFound
    );
    // Delete: idempotent, odd ids are fine, no id is INVALID_ARGUMENT.
    let del = |id: &str| {
        s.csi.run(c.clone().delete_snapshot(DeleteSnapshotRequest {
            snapshot_id: id.into(),
        }))
    };
    ok("DeleteSnapshot", del("pvc-src@snap-1"));
    ok("DeleteSnapshot again", del("pvc-src@snap-1"));
    ok("DeleteSnapshot odd", del("not-a-snapshot-id"));
    assert_eq!(refused(del("")).0, Code::InvalidArgument);
    assert_eq!(list(ListSnapshotsRequest::default()).entries.len(), 1);
    ok("DeleteSnapshot 2", del("pvc-src@snap-2"));
    ok("unpublish", s.unpublish(&id, &target));
    ok("unstage", s.unstage(&id, &staging));
}

#[test]
fn ephemeral_tmpfs() {
    if !fuse_or_skip("csi ephemeral_tmpfs") {
        return;
    }
    let s = setup();
    let target = s.d.scratch_dir("eph-pod").join("scratch");
    let mut req = NodePublishVolumeRequest {
        volume_id: "csi-0123abcd".into(),
        target_path: target.to_str().unwrap().into(),
        volume_capability: Some(rw()),
        volume_context: params(&[
            ("csi.storage.k8s.io/ephemeral", "true"),
            ("csi.storage.k8s.io/pod.name", "web-0"),
            ("size", "4M"),
        ]),
        ..Default::default()
    };
    ok(
        "NodePublishVolume (ephemeral)",
        s.csi.run(s.csi.node().node_publish_volume(req.clone())),
    );
    ok(
        "NodePublishVolume (ephemeral) again",
        s.csi.run(s.csi.node().node_publish_volume(req.clone())),
    );
    assert_eq!(df_size(&target), 4 << 20);
    let info = s.d.inspect("csi-0123abcd");
    assert_eq!(info["Driver"], "tmpfs");
    std::fs::write(target.join("x"), b"scratch").unwrap();
    ok(
        "NodeUnpublishVolume (ephemeral)",
        s.unpublish("csi-0123abcd", &target),
    );
    assert!(!target.exists());
    assert_eq!(
        s.d.cli(["inspect", "csi-0123abcd"]).status.code(),
        Some(1),
        "removed at unpublish"
    );
    // Only tmpfs; options are checked as the CLI's.
    req.volume_context.insert("driver".into(), "local".into());
    let (code, message) = refused(s.csi.run(s.csi.node().node_publish_volume(req.clone())));
    assert_eq!(code, Code::InvalidArgument);
    assert!(message.contains("tmpfs"), "{message}");
    req.volume_context.remove("driver");
    req.volume_context.insert("colour".into(), "blue".into());
    let (code, message) = refused(s.csi.run(s.csi.node().node_publish_volume(req)));
    assert_eq!(code, Code::InvalidArgument);
    assert!(message.contains("valid options are"), "{message}");
}

/// Two daemons (two roots), as two nodes, on one real Ceph cluster: an rbd volume made
/// through node A's driver is staged on A, refused on B while A holds it (naming A), then
/// unstaged on A and staged on B, data and all.
#[test]
fn rbd_moves_between_nodes() {
    if !fuse_or_skip("csi rbd_moves_between_nodes") {
        return;
    }
    let ceph = fuse_tests::ceph::TestCluster::start_with_mgr();
    let a = setup();
    let root_b = TestRoot::new();
    let d_b = TestDaemon::start_at(&root_b);
    let csi_b = TestCsi::start(&root_b, "node-b");
    let b = Setup { csi: csi_b, d: d_b };
    let conf = ceph.conf().display().to_string();
    let v = a.create("pvc-rbd", 64 * MIB, &[("driver", "rbd"), ("conf", &conf)]);
    assert!(
        v.accessible_topology.is_empty(),
        "rbd volumes are reachable from every node"
    );
    assert_eq!(v.volume_context["fvol.io/option.image"], "pvc-rbd");
    // GetCapacity of rbd: what the pool can still take, as the cluster's manager says (`ceph
    // df`, max_avail): within the OSD's 4 GiB, and less once data is written (below).
    let capacity = |pool: &str| {
        let req = GetCapacityRequest {
            parameters: params(&[("driver", "rbd"), ("conf", &conf), ("pool", pool)]),
            ..Default::default()
        };
        a.csi.run(a.csi.controller().get_capacity(req))
    };
    let free_before = ok("GetCapacity rbd", capacity("rbd")).available_capacity;
    assert!(
        free_before > 1 << 30 && free_before <= 4 << 30,
        "pool rbd on a 4 GiB OSD: {free_before} bytes free"
    );
    let (code, message) = refused(capacity("no-such-pool"));
    assert_eq!(code, Code::NotFound, "{message}");
    assert!(message.contains("no-such-pool"), "{message}");
    let stage_with_context = |s: &Setup, staging: &Path| {
        let req = NodeStageVolumeRequest {
            volume_id: v.volume_id.clone(),
            staging_target_path: staging.to_str().unwrap().into(),
            volume_capability: Some(rw()),
            volume_context: v.volume_context.clone(),
            ..Default::default()
        };
        s.csi.run(s.csi.node().node_stage_volume(req))
    };
    let (staging_a, target_a) = a.paths("rbd");
    ok("stage on A", stage_with_context(&a, &staging_a));
    ok(
        "publish on A",
        a.publish(&v.volume_id, &staging_a, &target_a, false),
    );
    std::fs::write(target_a.join("moved"), b"from node a").unwrap();
    // 48 MiB written and fsynced reach the pool: the free space the cluster reports drops by
    // them once its statistics catch up (the OSD reports every 5 s).
    let mut big = std::fs::File::create(target_a.join("big")).unwrap();
    for _ in 0..48 {
        big.write_all(&[7u8; MIB as usize]).unwrap();
    }
    big.sync_all().unwrap();
    drop(big);
    let mut free_after = free_before;
    for _ in 0..120 {
        free_after = ok("GetCapacity rbd", capacity("rbd")).available_capacity;
        if free_after <= free_before - 40 * MIB {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    assert!(
        free_after <= free_before - 40 * MIB,
        "48 MiB written to pool rbd, yet its free space went only from {free_before} to \
         {free_after} bytes in a minute"
    );
    eprintln!("GetCapacity of pool rbd: {free_before} bytes, then {free_after} after 48 MiB");
    // B cannot take it while A holds it, and is told who does.
    let (staging_b, target_b) = b.paths("rbd");
    let (code, message) = refused(stage_with_context(&b, &staging_b));
    assert_eq!(code, Code::FailedPrecondition, "{message}");
    assert!(message.contains("fvol host="), "{message}");
    assert!(
        message.contains(&a.d.root().display().to_string()),
        "the holder's root: {message}"
    );
    // Unstaged on A, it moves to B.
    ok("unpublish on A", a.unpublish(&v.volume_id, &target_a));
    ok("unstage on A", a.unstage(&v.volume_id, &staging_a));
    ok("stage on B", stage_with_context(&b, &staging_b));
    ok(
        "publish on B",
        b.publish(&v.volume_id, &staging_b, &target_b, false),
    );
    assert_eq!(
        std::fs::read(target_b.join("moved")).unwrap(),
        b"from node a"
    );
    assert!(
        df_size(&target_b) > 32 << 20,
        "df shows the image's capacity"
    );
    let stats = ok("stats on B", b.stats(&v.volume_id, &target_b));
    assert!(!stats.volume_condition.unwrap().abnormal);
    // The cluster refuses B (its client blocklisted, as a host taking the image over does):
    // the volume's condition says so once B's daemon meets the fence.
    let holder = {
        let img = ceph
            .connect()
            .io_ctx("rbd")
            .unwrap()
            .open_image("pvc-rbd")
            .unwrap();
        let lockers = img.lockers().unwrap();
        assert_eq!(lockers.len(), 1, "{lockers:?}");
        lockers[0].address.clone()
    };
    let out = ceph.ceph(&["osd", "blocklist", "add", &holder]);
    assert!(out.status.success(), "blocklist: {}", stderr_of(&out));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let condition = loop {
        // A durable write makes the daemon reach the cluster (and fail).
        if let Ok(mut f) = std::fs::File::create(target_b.join("after-the-fence")) {
            let _ = f.write_all(b"refused").and_then(|()| f.sync_all());
        }
        let c = ok("stats on B", b.stats(&v.volume_id, &target_b))
            .volume_condition
            .unwrap();
        if c.abnormal {
            break c;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no abnormal condition: {c:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    assert!(
        condition.message.contains("refuses this host"),
        "{}",
        condition.message
    );
    let out = ceph.ceph(&["osd", "blocklist", "rm", &holder]);
    assert!(out.status.success(), "blocklist rm: {}", stderr_of(&out));
    ok("unpublish on B", b.unpublish(&v.volume_id, &target_b));
    ok("unstage on B", b.unstage(&v.volume_id, &staging_b));
    assert_eq!(
        b.d.cli(["inspect", "pvc-rbd"]).status.code(),
        Some(1),
        "B forgets what it adopted"
    );
    // Back on A (the fenced connection of B could not release its lock: broken as after a
    // host's crash), and deleted there with its image.
    a.d.cli_ok(["break-lock", "pvc-rbd"]);
    ok("stage on A again", stage_with_context(&a, &staging_a));
    ok("unstage on A again", a.unstage(&v.volume_id, &staging_a));
    ok(
        "DeleteVolume",
        a.csi
            .run(a.csi.controller().delete_volume(DeleteVolumeRequest {
                volume_id: v.volume_id.clone(),
            })),
    );
    let images =
        fuse_tests::run_ok(std::process::Command::new("rbd").args(["-c", &conf, "ls", "rbd"]));
    assert!(
        !images.lines().any(|l| l == "pvc-rbd"),
        "the image is removed: {images}"
    );
}

#[test]
fn controller_publish_and_modify() {
    if !fuse_or_skip("csi controller_publish_and_modify") {
        return;
    }
    let s = setup();
    let c = s.csi.controller();
    // A VolumeAttributesClass's parameters: inodes, at create and changed later.
    let mut req = create_req("pvc-mod", 8 * MIB, &[]);
    req.mutable_parameters = params(&[("inodes", "100")]);
    ok(
        "CreateVolume with mutable parameters",
        s.csi.run(c.clone().create_volume(req.clone())),
    );
    assert_eq!(s.d.inspect("pvc-mod")["Status"]["InodeLimit"], 100);
    let mut bad = req.clone();
    bad.name = "pvc-mod-2".into();
    bad.mutable_parameters = params(&[("mode", "700")]);
    let (code, message) = refused(s.csi.run(c.clone().create_volume(bad)));
    assert_eq!(code, Code::InvalidArgument);
    assert!(
        message.contains("valid mutable parameters are inodes"),
        "{message}"
    );
    let modify = |id: &str, pairs: &[(&str, &str)]| {
        s.csi.run(
            c.clone()
                .controller_modify_volume(ControllerModifyVolumeRequest {
                    volume_id: id.into(),
                    mutable_parameters: params(pairs),
                }),
        )
    };
    ok(
        "ControllerModifyVolume",
        modify("pvc-mod", &[("inodes", "500")]),
    );
    assert_eq!(s.d.inspect("pvc-mod")["Status"]["InodeLimit"], 500);
    ok("ControllerModifyVolume, nothing", modify("pvc-mod", &[]));
    let cli = stderr_of(&s.d.cli(["update", "pvc-mod", "-o", "inodes=lots"]));
    let (code, message) = refused(modify("pvc-mod", &[("inodes", "lots")]));
    assert_eq!(code, Code::InvalidArgument);
    assert!(cli.contains(&message), "CLI: {cli}\nCSI: {message}");
    assert_eq!(
        refused(modify("pvc-mod", &[("size", "1G")])).0,
        Code::InvalidArgument
    );
    assert_eq!(
        refused(modify("no-such-volume", &[("inodes", "5")])).0,
        Code::NotFound
    );
    assert_eq!(
        refused(modify("", &[("inodes", "5")])).0,
        Code::InvalidArgument
    );
    // ControllerPublish: nothing to attach; a local volume is reachable from its node only.
    let publish = |id: &str, node: &str, with_cap: bool| {
        s.csi.run(
            c.clone()
                .controller_publish_volume(ControllerPublishVolumeRequest {
                    volume_id: id.into(),
                    node_id: node.into(),
                    volume_capability: with_cap.then(rw),
                    ..Default::default()
                }),
        )
    };
    let answer = ok(
        "ControllerPublishVolume",
        publish("pvc-mod", "node-a", true),
    );
    assert!(answer.publish_context.is_empty());
    ok(
        "ControllerPublishVolume again",
        publish("pvc-mod", "node-a", true),
    );
    let (code, message) = refused(publish("pvc-mod", "node-b", true));
    assert_eq!(code, Code::NotFound);
    assert!(message.contains("node-a"), "{message}");
    assert_eq!(
        refused(publish("no-such-volume", "node-a", true)).0,
        Code::NotFound
    );
    assert_eq!(
        refused(publish("", "node-a", true)).0,
        Code::InvalidArgument
    );
    assert_eq!(
        refused(publish("pvc-mod", "", true)).0,
        Code::InvalidArgument
    );
    assert_eq!(
        refused(publish("pvc-mod", "node-a", false)).0,
        Code::InvalidArgument
    );
    let unpublish = |id: &str| {
        s.csi.run(
            c.clone()
                .controller_unpublish_volume(ControllerUnpublishVolumeRequest {
                    volume_id: id.into(),
                    node_id: "node-a".into(),
                }),
        )
    };
    ok("ControllerUnpublishVolume", unpublish("pvc-mod"));
    ok(
        "ControllerUnpublishVolume of nothing",
        unpublish("no-such-volume"),
    );
    assert_eq!(refused(unpublish("")).0, Code::InvalidArgument);
}

/// An rbd volume whose cluster stops answering (its only OSD frozen) while a process writes
/// to it: NodeGetVolumeStats reports the condition abnormal, saying the cluster has not
/// answered, and healthy again once the cluster is back and the write completed.
#[test]
fn rbd_condition_while_the_cluster_is_away() {
    if !fuse_or_skip("csi rbd_condition_while_the_cluster_is_away") {
        return;
    }
    let ceph = fuse_tests::ceph::TestCluster::start();
    let s = setup();
    let conf = ceph.conf().display().to_string();
    // This cluster runs no ceph-mgr, which keeps the space statistics: `ceph df` shows no
    // OSDs, and GetCapacity says so rather than answering a made-up number.
    let req = GetCapacityRequest {
        parameters: params(&[("driver", "rbd"), ("conf", &conf)]),
        ..Default::default()
    };
    let (code, message) = refused(s.csi.run(s.csi.controller().get_capacity(req)));
    assert_eq!(code, Code::Unavailable, "{message}");
    assert!(message.contains("ceph-mgr"), "{message}");
    let v = s.create("pvc-away", 64 * MIB, &[("driver", "rbd"), ("conf", &conf)]);
    let (staging, target) = s.paths("away");
    ok("stage", s.stage(&v.volume_id, &staging));
    ok("publish", s.publish(&v.volume_id, &staging, &target, false));
    let condition = |s: &Setup| {
        ok("stats", s.stats(&v.volume_id, &target))
            .volume_condition
            .unwrap()
    };
    assert!(!condition(&s).abnormal, "{:?}", condition(&s));

    ceph.signal("osd.0", nix::sys::signal::Signal::SIGSTOP);
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let file = target.join("during-the-outage");
    let writer = std::thread::spawn(move || {
        let mut f = std::fs::File::create(&file).unwrap();
        let written = f
            .write_all(b"waits for the cluster")
            .and_then(|()| f.sync_all());
        let _ = done_tx.send(());
        written
    });
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    let away = loop {
        let c = condition(&s);
        if c.abnormal {
            break c;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no abnormal condition while the cluster is away: {c:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(250));
    };
    assert!(
        away.message.contains("has not answered"),
        "{}",
        away.message
    );
    assert!(
        done_rx.try_recv().is_err(),
        "the write did not wait for the cluster"
    );
    // As in rbd_outage: the lone OSD is marked down before it resumes, so that no placement
    // group stays waiting on a read lease that ran out while it was frozen.
    let out = ceph.ceph(&["osd", "down", "0"]);
    assert!(out.status.success(), "osd down: {}", stderr_of(&out));
    ceph.signal("osd.0", nix::sys::signal::Signal::SIGCONT);
    done_rx
        .recv_timeout(std::time::Duration::from_secs(180))
        .expect("the write completes once the cluster is back");
    writer
        .join()
        .unwrap()
        .expect("the write waited, then succeeded");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while condition(&s).abnormal {
        assert!(
            std::time::Instant::now() < deadline,
            "still abnormal after the cluster came back: {:?}",
            condition(&s)
        );
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
    assert_eq!(
        std::fs::read(target.join("during-the-outage")).unwrap(),
        b"waits for the cluster"
    );
    ok("unpublish", s.unpublish(&v.volume_id, &target));
    ok("unstage", s.unstage(&v.volume_id, &staging));
}

/// A volume whose FUSE connection ended under its users (aborted through fusectl, as a failed
/// handler leaves it) is reported abnormal, in NodeGetVolumeStats and in inspect; unpublish,
/// unstage and a new stage bring it back with its data.
#[test]
fn a_volume_whose_connection_ended_is_abnormal_until_staged_again() {
    if !fuse_or_skip("csi a_volume_whose_connection_ended_is_abnormal_until_staged_again") {
        return;
    }
    use std::os::unix::fs::MetadataExt;
    let s = setup();
    let v = s.create("pvc-broken", 8 * MIB, &[]);
    let id = &v.volume_id;
    let (staging, target) = s.paths("broken");
    ok("NodeStageVolume", s.stage(id, &staging));
    ok("NodePublishVolume", s.publish(id, &staging, &target, false));
    std::fs::write(target.join("kept"), b"kept").unwrap();
    let stats = ok("NodeGetVolumeStats", s.stats(id, &target));
    assert!(!stats.volume_condition.unwrap().abnormal);
    assert!(s.d.inspect(id)["Status"].get("ConnectionEnded").is_none());

    let minor = nix::sys::stat::minor(std::fs::metadata(&staging).unwrap().dev());
    std::fs::write(format!("/sys/fs/fuse/connections/{minor}/abort"), "1").unwrap();
    let err = std::fs::read(target.join("kept")).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::ENOTCONN), "{err}");
    // The request loop sees the abort at its next read of the device.
    let mut condition = None;
    fuse_tests::docker::wait_until(std::time::Duration::from_secs(60), || {
        let c = ok("NodeGetVolumeStats", s.stats(id, &target))
            .volume_condition
            .unwrap();
        let abnormal = c.abnormal;
        condition = Some(c);
        abnormal
    });
    let condition = condition.unwrap();
    assert!(
        condition.abnormal && condition.message.contains("FUSE connection ended"),
        "{condition:?}"
    );
    assert_eq!(s.d.inspect(id)["Status"]["ConnectionEnded"], true);

    ok("NodeUnpublishVolume", s.unpublish(id, &target));
    ok("NodeUnstageVolume", s.unstage(id, &staging));
    ok("NodeStageVolume again", s.stage(id, &staging));
    ok(
        "NodePublishVolume again",
        s.publish(id, &staging, &target, false),
    );
    assert_eq!(std::fs::read(target.join("kept")).unwrap(), b"kept");
    let stats = ok("NodeGetVolumeStats", s.stats(id, &target));
    assert!(!stats.volume_condition.unwrap().abnormal);
    assert!(s.d.inspect(id)["Status"].get("ConnectionEnded").is_none());
    ok("NodeUnpublishVolume", s.unpublish(id, &target));
    ok("NodeUnstageVolume", s.unstage(id, &staging));
}
