//! What the controller and node services share: the capabilities fvol volumes have, where a
//! driver's volumes can be reached (topology), sizes per driver, and a volume as CSI sees it.
use std::collections::{BTreeMap, HashMap};

use tonic::Status;

use super::proto::volume_capability::AccessType;
use super::proto::volume_capability::access_mode::Mode;
use super::proto::{Topology, Volume, VolumeCapability, VolumeCondition};
use super::{NODE_KEY, status};
use crate::volume::VolumeInfo;

/// The parameter that chooses the driver (`fvol create -d`); `local` when absent.
pub const DRIVER_PARAMETER: &str = "driver";
/// Keys Kubernetes adds (`--extra-create-metadata`, ephemeral volumes); never fvol options.
pub const K8S_PREFIX: &str = "csi.storage.k8s.io/";
/// The volume context key of an ephemeral inline volume.
pub const EPHEMERAL_KEY: &str = "csi.storage.k8s.io/ephemeral";
/// The label of an ephemeral volume: it is removed at its unpublish.
pub const EPHEMERAL_LABEL: &str = "fvol.io/csi-ephemeral";
/// The volume context key that tells the node a volume's driver.
pub const DRIVER_CONTEXT: &str = "fvol.io/driver";

/// Filesystem types a mount capability may name: fvol volumes are FUSE filesystems of their
/// own, so only "none given" or fvol's own.
const FS_TYPES: &[&str] = &["", "fvol", "fuse.fvol"];

/// Checks one capability; the error says what is wrong and what is supported.
pub fn check_capability(cap: &VolumeCapability) -> Result<(), String> {
    match &cap.access_type {
        None => return Err("volume_capability has no access_type: give mount".into()),
        Some(AccessType::Block(_)) => {
            return Err(
                "block access is not supported: fvol volumes are filesystems; use \
                        access_type mount"
                    .into(),
            );
        }
        Some(AccessType::Mount(m)) => {
            if !FS_TYPES.contains(&m.fs_type.as_str()) {
                return Err(format!(
                    "fs_type {:?} is not supported: fvol volumes are fvol's own FUSE \
                     filesystems; give none (or \"fvol\")",
                    m.fs_type
                ));
            }
            if let Some(flag) = m.mount_flags.iter().find(|f| f.as_str() != "ro") {
                return Err(format!(
                    "mount flag {flag:?} is not supported: the only one is ro (fvol mounts \
                     are always nosuid,nodev)"
                ));
            }
        }
    }
    let mode = cap
        .access_mode
        .as_ref()
        .map(|m| Mode::try_from(m.mode).unwrap_or(Mode::Unknown))
        .unwrap_or(Mode::Unknown);
    match mode {
        Mode::SingleNodeWriter
        | Mode::SingleNodeReaderOnly
        | Mode::SingleNodeSingleWriter
        | Mode::SingleNodeMultiWriter => Ok(()),
        Mode::Unknown => Err("volume_capability has no access_mode: give one of \
                              SINGLE_NODE_WRITER, SINGLE_NODE_READER_ONLY"
            .into()),
        other => Err(format!(
            "access mode {} is not supported: an fvol volume is served by the daemon of one \
             node at a time; valid modes are SINGLE_NODE_WRITER, SINGLE_NODE_READER_ONLY, \
             SINGLE_NODE_SINGLE_WRITER, SINGLE_NODE_MULTI_WRITER",
            other.as_str_name()
        )),
    }
}

/// Checks a list of capabilities, at least one.
pub fn check_capabilities(caps: &[VolumeCapability]) -> Result<(), Status> {
    if caps.is_empty() {
        return Err(status::required("volume_capabilities"));
    }
    caps.iter()
        .try_for_each(check_capability)
        .map_err(status::invalid)
}

/// A capability that asks for read-only access.
pub fn read_only(cap: &VolumeCapability) -> bool {
    let mode = cap.access_mode.as_ref().map(|m| m.mode);
    let ro_flag = matches!(&cap.access_type, Some(AccessType::Mount(m)) if m.mount_flags.iter().any(|f| f == "ro"));
    mode == Some(Mode::SingleNodeReaderOnly as i32) || ro_flag
}

/// Whether a driver's volumes live on one node (local, tmpfs) or are reachable from every
/// node that reaches their cluster (rbd).
pub fn node_bound(driver: &str) -> bool {
    driver != "rbd"
}

/// The smallest quota a driver takes, and the one given when the CO asks for none.
pub fn size_limits(driver: &str) -> (u64, u64) {
    const MIB: u64 = 1 << 20;
    match driver {
        "rbd" => (16 * MIB, 1024 * MIB),
        "tmpfs" => (4096, 64 * MIB),
        _ => (4096, 1024 * MIB),
    }
}

pub fn node_topology(node_id: &str) -> Topology {
    Topology {
        segments: HashMap::from([(NODE_KEY.to_owned(), node_id.to_owned())]),
    }
}

/// Where a volume of `driver` can be used.
pub fn topology_of(driver: &str, node_id: &str) -> Vec<Topology> {
    match node_bound(driver) {
        true => vec![node_topology(node_id)],
        false => Vec::new(),
    }
}

/// The prefix of the volume context keys that carry an rbd volume's options to the nodes.
pub const OPTION_CONTEXT: &str = "fvol.io/option.";
/// The options of an rbd volume that say where its image is: what another node's daemon
/// needs to adopt it (`fvol create -d rbd -o image=...`).
const RBD_LOCATION: &[&str] = &[
    "pool",
    "image",
    "conf",
    "id",
    "keyring",
    "cluster",
    "io_timeout",
];
/// The label of a volume a node's daemon adopted for a stage: removed (its image kept) at
/// unstage.
pub const ADOPTED_LABEL: &str = "fvol.io/csi-adopted";

/// A volume as CSI sees it. An rbd volume's context carries where its image is, so that a
/// node whose daemon does not know it yet can adopt it at stage.
pub fn volume_of(info: &VolumeInfo, node_id: &str) -> Volume {
    let mut volume_context = HashMap::from([(DRIVER_CONTEXT.to_owned(), info.driver.clone())]);
    if info.driver == "rbd" {
        for key in RBD_LOCATION {
            if let Some(value) = info.options.get(*key) {
                volume_context.insert(format!("{OPTION_CONTEXT}{key}"), value.clone());
            }
        }
        volume_context
            .entry(format!("{OPTION_CONTEXT}image"))
            .or_insert_with(|| info.name.clone());
    }
    Volume {
        capacity_bytes: info.status.size_limit.unwrap_or(0) as i64,
        volume_id: info.name.clone(),
        volume_context,
        content_source: None,
        accessible_topology: topology_of(&info.driver, node_id),
    }
}

/// What a node's daemon needs to adopt a volume it does not know: its driver and the
/// options of its location, from the volume context; None for a volume of another driver
/// (local, tmpfs: bound to the node that made them).
pub fn adoption_of(
    context: &HashMap<String, String>,
) -> Option<(String, BTreeMap<String, String>)> {
    let driver = context.get(DRIVER_CONTEXT)?;
    if driver != "rbd" {
        return None;
    }
    let options: BTreeMap<String, String> = context
        .iter()
        .filter_map(|(k, v)| Some((k.strip_prefix(OPTION_CONTEXT)?.to_owned(), v.clone())))
        .filter(|(k, _)| RBD_LOCATION.contains(&k.as_str()))
        .collect();
    options
        .contains_key("image")
        .then(|| (driver.clone(), options))
}

/// Abnormal when the volume's Ceph cluster is away or refuses this host, or when it has
/// references but no handler serves its mount.
pub fn condition_of(info: &VolumeInfo) -> VolumeCondition {
    let s = &info.status;
    let abnormal = |message: String| VolumeCondition {
        abnormal: true,
        message,
    };
    if let Some(f) = &s.fenced {
        return abnormal(format!(
            "the Ceph cluster refuses this host since {}: {}; writes fail until the volume \
             is mounted again",
            f.since, f.reason
        ));
    }
    if let Some(w) = &s.cluster_wait {
        return abnormal(format!(
            "the Ceph cluster has not answered since {}; {} operations wait for it",
            w.since, w.operations
        ));
    }
    if let Some(p) = &s.mount_pending {
        return abnormal(format!(
            "not mounted: its mount waits for its backing store since {}: {}",
            p.since, p.error
        ));
    }
    if s.connection_ended {
        return abnormal(
            "its FUSE connection ended (aborted, or its handler failed): every access fails; \
             unpublish and unstage it, then stage it again"
                .into(),
        );
    }
    if !s.mount_refs.is_empty() && !s.mounted {
        return abnormal(
            "the volume has mount references but no handler serves it; see the fvol \
             daemon's log"
                .into(),
        );
    }
    VolumeCondition {
        abnormal: false,
        message: "healthy".into(),
    }
}

/// The daemon's references that may hold a bind of the volume at `path`, newest form first:
/// `csi:PATH`, then `cli:PATH`, which fvol csi took before the daemon kept CSI references
/// apart, so a volume staged or published then is still found and released after an upgrade.
pub fn references_at(path: &str) -> [String; 2] {
    [format!("csi:{path}"), format!("cli:{path}")]
}

/// Whether the volume holds a bind at `path`.
pub fn bound_at(info: &VolumeInfo, path: &str) -> bool {
    references_at(path)
        .iter()
        .any(|key| info.status.mount_refs.contains(key))
}

/// The options a volume's mutable parameters (a VolumeAttributesClass) may change after
/// create, as `fvol update` changes them; the size is the capacity, not a parameter.
pub const MUTABLE: &[&str] = &["inodes"];

/// Checks mutable parameters: only `MUTABLE` keys; their values are checked by the daemon.
pub fn mutable_options(
    params: &HashMap<String, String>,
) -> Result<BTreeMap<String, String>, Status> {
    let mut options = BTreeMap::new();
    for (key, value) in params {
        if !MUTABLE.contains(&key.as_str()) {
            return Err(status::invalid(format!(
                "mutable parameter {key:?} is not supported: valid mutable parameters are {} \
                 (a volume's size is its capacity_range)",
                MUTABLE.join(", ")
            )));
        }
        options.insert(key.clone(), value.clone());
    }
    Ok(options)
}

/// Splits CSI parameters (or an inline volume's attributes) into the driver and its options;
/// keys Kubernetes adds are dropped. The options are checked by the daemon, with the driver's
/// schema, so errors read as the CLI's.
pub fn driver_and_options(
    params: &HashMap<String, String>,
    default_driver: &str,
    size_allowed: bool,
) -> Result<(String, BTreeMap<String, String>), Status> {
    let mut driver = default_driver.to_owned();
    let mut options = BTreeMap::new();
    for (key, value) in params {
        if key.starts_with(K8S_PREFIX) || key == DRIVER_CONTEXT || key.starts_with(OPTION_CONTEXT) {
            continue;
        }
        match key.as_str() {
            DRIVER_PARAMETER => driver = value.clone(),
            "size" if !size_allowed => {
                return Err(status::invalid(
                    "parameter size is not taken: a volume's size is its capacity_range (a \
                     PersistentVolumeClaim's storage request)",
                ));
            }
            "from" => {
                return Err(status::invalid(
                    "parameter from is not taken: give volume_content_source (a \
                     PersistentVolumeClaim's dataSource) to clone a volume or snapshot",
                ));
            }
            _ => {
                options.insert(key.clone(), value.clone());
            }
        }
    }
    Ok((driver, options))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::csi::proto::volume_capability::{AccessMode, BlockVolume, MountVolume};

    fn cap(access_type: AccessType, mode: Mode) -> VolumeCapability {
        VolumeCapability {
            access_type: Some(access_type),
            access_mode: Some(AccessMode { mode: mode as i32 }),
        }
    }

    fn mount(fs_type: &str, flags: &[&str]) -> AccessType {
        AccessType::Mount(MountVolume {
            fs_type: fs_type.into(),
            mount_flags: flags.iter().map(|f| f.to_string()).collect(),
            volume_mount_group: String::new(),
        })
    }

    #[test]
    fn capabilities() {
        assert!(check_capability(&cap(mount("", &[]), Mode::SingleNodeWriter)).is_ok());
        assert!(check_capability(&cap(mount("fvol", &["ro"]), Mode::SingleNodeReaderOnly)).is_ok());
        let refused = |c: VolumeCapability| check_capability(&c).unwrap_err();
        assert!(
            refused(cap(
                AccessType::Block(BlockVolume {}),
                Mode::SingleNodeWriter
            ))
            .contains("block")
        );
        assert!(refused(cap(mount("ext4", &[]), Mode::SingleNodeWriter)).contains("fs_type"));
        assert!(refused(cap(mount("", &["noatime"]), Mode::SingleNodeWriter)).contains("noatime"));
        let multi = refused(cap(mount("", &[]), Mode::MultiNodeMultiWriter));
        assert!(
            multi.contains("MULTI_NODE_MULTI_WRITER") && multi.contains("SINGLE_NODE_WRITER"),
            "{multi}"
        );
        assert!(refused(cap(mount("", &[]), Mode::Unknown)).contains("access_mode"));
        assert!(read_only(&cap(mount("", &[]), Mode::SingleNodeReaderOnly)));
        assert!(read_only(&cap(mount("", &["ro"]), Mode::SingleNodeWriter)));
        assert!(!read_only(&cap(mount("", &[]), Mode::SingleNodeWriter)));
    }

    #[test]
    fn parameters() {
        let params: HashMap<String, String> = [
            ("driver", "tmpfs"),
            ("mode", "700"),
            ("csi.storage.k8s.io/pvc/name", "claim"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let (driver, options) = driver_and_options(&params, "local", false).unwrap();
        assert_eq!(driver, "tmpfs");
        assert_eq!(
            options,
            BTreeMap::from([("mode".to_owned(), "700".to_owned())])
        );
        let sized = HashMap::from([("size".to_owned(), "1G".to_owned())]);
        assert!(driver_and_options(&sized, "local", false).is_err());
        assert!(driver_and_options(&sized, "tmpfs", true).is_ok());
    }

    #[test]
    fn rbd_context_carries_the_image() {
        let context = HashMap::from([
            (DRIVER_CONTEXT.to_owned(), "rbd".to_owned()),
            (format!("{OPTION_CONTEXT}image"), "pvc-1".to_owned()),
            (format!("{OPTION_CONTEXT}pool"), "fast".to_owned()),
            (format!("{OPTION_CONTEXT}size"), "1G".to_owned()),
        ]);
        let (driver, options) = adoption_of(&context).unwrap();
        assert_eq!(driver, "rbd");
        assert_eq!(options.get("image").map(String::as_str), Some("pvc-1"));
        assert_eq!(options.get("pool").map(String::as_str), Some("fast"));
        assert!(!options.contains_key("size"), "only where the image is");
        let local = HashMap::from([(DRIVER_CONTEXT.to_owned(), "local".to_owned())]);
        assert!(adoption_of(&local).is_none());
    }

    fn info() -> VolumeInfo {
        serde_json::from_value(serde_json::json!({
            "Name": "v1", "Driver": "rbd", "Mountpoint": "/r/v1", "CreatedAt": "",
            "Labels": {}, "Options": {"pool": "rbd", "size": "1G"}, "Scope": "local",
            "Status": {"SizeLimit": 1, "UsedBytes": 0, "InodeLimit": null, "UsedInodes": 0,
                       "Mounted": true, "MountRefs": ["csi:/t"]}
        }))
        .unwrap()
    }

    #[test]
    fn conditions() {
        let healthy = info();
        assert!(!condition_of(&healthy).abnormal);
        let mut waiting = info();
        waiting.status.cluster_wait = serde_json::from_value(
            serde_json::json!({"Since": "2026-12-04T10:00:00Z", "Operations": 3}),
        )
        .unwrap();
        let c = condition_of(&waiting);
        assert!(
            c.abnormal && c.message.contains("has not answered since"),
            "{c:?}"
        );
        let mut pending = info();
        pending.status.mounted = false;
        pending.status.mount_pending = serde_json::from_value(
            serde_json::json!({"Since": "2026-12-04T10:00:00Z", "Error": "timed out"}),
        )
        .unwrap();
        let c = condition_of(&pending);
        assert!(c.abnormal && c.message.contains("timed out"), "{c:?}");
        let mut broken = info();
        broken.status.mounted = false;
        let c = condition_of(&broken);
        assert!(c.abnormal && c.message.contains("no handler"), "{c:?}");
        let mut ended = info();
        ended.status.connection_ended = true;
        let c = condition_of(&ended);
        assert!(
            c.abnormal && c.message.contains("connection ended"),
            "{c:?}"
        );
        let context = volume_of(&healthy, "n1").volume_context;
        assert_eq!(context[&format!("{OPTION_CONTEXT}image")], "v1");
        assert_eq!(context[&format!("{OPTION_CONTEXT}pool")], "rbd");
        assert!(!context.contains_key(&format!("{OPTION_CONTEXT}size")));
    }
}
