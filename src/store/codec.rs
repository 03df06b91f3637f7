//! Catalog values: one schema-version byte, then the postcard encoding.
//!
//! postcard is positional: changing the fields of a stored type changes its encoding, so any
//! such change must bump that type's `SCHEMA` and teach its `upgrade` the old one (from a
//! frozen copy of the old type, as `VolumeRecordV1`).
use std::collections::BTreeMap;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::StoreError;
use crate::model::{MountRef, RefKind, Usage, VolumeRecord, VolumeState};

/// A type stored in the catalog, with the schema version it is written in.
pub(super) trait Stored: Serialize + DeserializeOwned {
    /// The schema byte values are written with.
    const SCHEMA: u8;

    /// Reads a value written with an older schema, or None if `version` is not one.
    fn upgrade(_version: u8, _body: &[u8]) -> Option<Result<Self, String>> {
        None
    }
}

/// Schema 1: usage as it has always been.
impl Stored for Usage {
    const SCHEMA: u8 = 1;
}

/// Schema 2 added `state` (create and rm intents) and `backing_identity` (the pinned `mount=`
/// directory) at the end, and `bind_mount_id` at the end of each `MountRef`; schema 1 records
/// are `Ready`, pin nothing, and their references have no recorded bind mount.
impl Stored for VolumeRecord {
    const SCHEMA: u8 = 2;

    fn upgrade(version: u8, body: &[u8]) -> Option<Result<Self, String>> {
        match version {
            1 => Some(postcard_body::<VolumeRecordV1>(body).map(VolumeRecord::from)),
            _ => None,
        }
    }
}

/// `VolumeRecord` as schema 1 stored it (fvol before create and rm intents). Frozen: never
/// change it, it describes bytes already on disk.
#[derive(Deserialize)]
struct VolumeRecordV1 {
    name: String,
    driver: String,
    options: BTreeMap<String, String>,
    labels: BTreeMap<String, String>,
    created_at: u64,
    mount_refs: BTreeMap<String, MountRefV1>,
    owns_backing: bool,
}

/// `MountRef` as schema 1 stored it. Frozen.
#[derive(Deserialize)]
struct MountRefV1 {
    kind: RefKind,
    target: Option<std::path::PathBuf>,
    since: u64,
}

impl From<MountRefV1> for MountRef {
    fn from(old: MountRefV1) -> MountRef {
        MountRef {
            kind: old.kind,
            target: old.target,
            since: old.since,
            bind_mount_id: None,
        }
    }
}

impl From<VolumeRecordV1> for VolumeRecord {
    fn from(old: VolumeRecordV1) -> VolumeRecord {
        VolumeRecord {
            name: old.name,
            driver: old.driver,
            options: old.options,
            labels: old.labels,
            created_at: old.created_at,
            mount_refs: old
                .mount_refs
                .into_iter()
                .map(|(id, r)| (id, r.into()))
                .collect(),
            owns_backing: old.owns_backing,
            // Schema 1 wrote a record only once the volume existed.
            state: VolumeState::Ready,
            backing_identity: None,
        }
    }
}

/// Fails only for values serde cannot represent (such as a non-UTF-8 path).
pub(super) fn encode<T: Stored>(what: &str, value: &T) -> Result<Vec<u8>, StoreError> {
    postcard::to_extend(value, vec![T::SCHEMA])
        .map_err(|e| StoreError::Db(format!("cannot encode {what}: {e}")))
}

/// Refuses an unknown schema byte, a value postcard cannot read, and trailing bytes.
pub(super) fn decode<T: Stored>(what: &str, bytes: &[u8]) -> Result<T, StoreError> {
    let corrupt = |reason: String| StoreError::Corrupt {
        what: what.to_string(),
        reason,
    };
    let (&version, body) = bytes
        .split_first()
        .ok_or_else(|| corrupt("the value is empty".to_string()))?;
    let decoded = if version == T::SCHEMA {
        postcard_body(body)
    } else {
        T::upgrade(version, body).ok_or_else(|| {
            corrupt(format!(
                "unknown schema version {version} (this fvol reads {} and older)",
                T::SCHEMA
            ))
        })?
    };
    decoded.map_err(corrupt)
}

/// The schema byte of a stored value, if it has one.
pub(super) fn schema_of(bytes: &[u8]) -> Option<u8> {
    bytes.first().copied()
}

fn postcard_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, String> {
    let (value, rest) = postcard::take_from_bytes(body).map_err(|e| format!("postcard: {e}"))?;
    if rest.is_empty() {
        Ok(value)
    } else {
        Err(format!("{} trailing bytes", rest.len()))
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    fn corrupt_reason(bytes: &[u8]) -> String {
        match decode::<Usage>("usage of \"v1\"", bytes) {
            Err(StoreError::Corrupt { what, reason }) => {
                assert_eq!(what, "usage of \"v1\"");
                reason
            }
            other => panic!("expected Corrupt, got {other:?}"),
        }
    }

    /// Stored enums only grow at the end: a variant's number is its encoding.
    #[test]
    fn reference_kinds_keep_their_numbers() {
        for (kind, byte) in [(RefKind::Cli, 0u8), (RefKind::Plugin, 1), (RefKind::Csi, 2)] {
            assert_eq!(postcard::to_allocvec(&kind).unwrap(), [byte], "{kind:?}");
        }
    }

    #[test]
    fn round_trip_and_refusals() {
        let usage = Usage {
            bytes: 1 << 40,
            inodes: 7,
            clean: true,
        };
        let bytes = encode("usage", &usage).unwrap();
        assert_eq!(bytes[0], 1);
        assert_eq!(decode::<Usage>("usage", &bytes).unwrap(), usage);

        assert!(corrupt_reason(&[]).contains("empty"));
        let mut other_version = bytes.clone();
        other_version[0] = 9;
        assert!(corrupt_reason(&other_version).contains("unknown schema version 9"));
        let mut trailing = bytes.clone();
        trailing.push(0);
        assert!(corrupt_reason(&trailing).contains("1 trailing bytes"));
        assert!(corrupt_reason(&bytes[..bytes.len() - 1]).contains("postcard"));
        assert!(corrupt_reason(&[1, 0, 0, 2]).contains("postcard"));
    }

    /// The bytes fvol wrote for this record and usage before schema 2 (captured from the
    /// encoder of that version), so the decoder is checked against real old data rather than
    /// against the frozen type alone.
    const RECORD_V1: &[u8] = &[
        1, 3, 111, 108, 100, 5, 108, 111, 99, 97, 108, 1, 4, 115, 105, 122, 101, 2, 49, 71, 1, 4,
        116, 101, 97, 109, 1, 97, 128, 226, 207, 170, 6, 1, 3, 99, 108, 105, 0, 0, 129, 226, 207,
        170, 6, 1,
    ];
    const USAGE_V1: &[u8] = &[1, 128, 64, 2, 1];

    pub(in crate::store) fn old_record() -> VolumeRecord {
        VolumeRecord {
            name: "old".to_string(),
            driver: "local".to_string(),
            options: BTreeMap::from([("size".to_string(), "1G".to_string())]),
            labels: BTreeMap::from([("team".to_string(), "a".to_string())]),
            created_at: 1_700_000_000,
            mount_refs: BTreeMap::from([(
                "cli".to_string(),
                MountRef {
                    kind: RefKind::Cli,
                    target: None,
                    since: 1_700_000_001,
                    bind_mount_id: None,
                },
            )]),
            owns_backing: true,
            state: VolumeState::Ready,
            backing_identity: None,
        }
    }

    pub(in crate::store) fn old_record_bytes() -> &'static [u8] {
        RECORD_V1
    }

    #[test]
    fn schema_1_values_still_decode() {
        assert_eq!(
            decode::<VolumeRecord>("volume \"old\"", RECORD_V1).unwrap(),
            old_record()
        );
        assert_eq!(
            decode::<Usage>("usage", USAGE_V1).unwrap(),
            Usage {
                bytes: 8192,
                inodes: 2,
                clean: true
            }
        );
        // Re-encoded, a record is schema 2 and keeps every field.
        let mut removing = old_record();
        removing.state = VolumeState::Removing;
        removing.mount_refs.get_mut("cli").unwrap().bind_mount_id = Some(7);
        removing.backing_identity = Some(crate::model::DirIdentity {
            ino: 12,
            handle: vec![1, 2, 3],
        });
        let bytes = encode("volume", &removing).unwrap();
        assert_eq!(schema_of(&bytes), Some(2));
        assert_eq!(decode::<VolumeRecord>("volume", &bytes).unwrap(), removing);
        // A schema 1 record with trailing bytes is still refused.
        let mut trailing = RECORD_V1.to_vec();
        trailing.push(0);
        let err = decode::<VolumeRecord>("volume", &trailing).unwrap_err();
        assert!(err.to_string().contains("1 trailing bytes"), "{err}");
    }

    #[cfg(unix)]
    #[test]
    fn non_utf8_path_is_an_error_not_a_panic() {
        use std::os::unix::ffi::OsStrExt;
        let mut rec = old_record();
        let path = std::path::Path::new(std::ffi::OsStr::from_bytes(b"/\xff"));
        rec.mount_refs.get_mut("cli").unwrap().target = Some(path.to_path_buf());
        let err = encode("volume \"v\"", &rec).unwrap_err().to_string();
        assert!(err.contains("cannot encode volume \"v\""), "{err}");
    }
}
