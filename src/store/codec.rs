//! Catalog values: one schema-version byte, then the postcard encoding.
//!
//! postcard is positional: changing the fields of a stored type changes its encoding, so any
//! such change must bump `SCHEMA` (and teach `decode` the old one).
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::StoreError;
use crate::volume::{Usage, VolumeRecord};

/// 2: mount references record their bind mount's id, volumes their pinned `mount=` directory.
const SCHEMA: u8 = 2;

/// A catalog value, and how it reads the encodings of older schemas.
pub(super) trait Versioned: Serialize + DeserializeOwned {
    /// `Some` for an older `version` this type can still read.
    fn decode_old(version: u8, body: &[u8]) -> Option<Result<(Self, &[u8]), postcard::Error>>;
}

impl Versioned for Usage {
    fn decode_old(version: u8, body: &[u8]) -> Option<Result<(Self, &[u8]), postcard::Error>> {
        // Unchanged since schema 1.
        (version == 1).then(|| postcard::take_from_bytes(body))
    }
}

impl Versioned for VolumeRecord {
    fn decode_old(version: u8, body: &[u8]) -> Option<Result<(Self, &[u8]), postcard::Error>> {
        (version == 1).then(|| {
            postcard::take_from_bytes::<v1::VolumeRecord>(body).map(|(r, rest)| (r.into(), rest))
        })
    }
}

/// Schema 1 records, read and upgraded.
mod v1 {
    use std::collections::BTreeMap;
    use std::path::PathBuf;

    use serde::Deserialize;

    use crate::volume::{self, RefKind};

    #[derive(Deserialize)]
    #[cfg_attr(test, derive(serde::Serialize))]
    pub struct VolumeRecord {
        pub(super) name: String,
        pub(super) driver: String,
        pub(super) options: BTreeMap<String, String>,
        pub(super) labels: BTreeMap<String, String>,
        pub(super) created_at: u64,
        pub(super) mount_refs: BTreeMap<String, MountRef>,
        pub(super) owns_backing: bool,
    }

    #[derive(Deserialize)]
    #[cfg_attr(test, derive(serde::Serialize))]
    pub(super) struct MountRef {
        pub(super) kind: RefKind,
        pub(super) target: Option<PathBuf>,
        pub(super) since: u64,
    }

    impl From<VolumeRecord> for volume::VolumeRecord {
        fn from(r: VolumeRecord) -> Self {
            let refs = r.mount_refs.into_iter().map(|(id, m)| {
                let upgraded = volume::MountRef {
                    kind: m.kind,
                    target: m.target,
                    since: m.since,
                    bind_mount_id: None,
                };
                (id, upgraded)
            });
            volume::VolumeRecord {
                name: r.name,
                driver: r.driver,
                options: r.options,
                labels: r.labels,
                created_at: r.created_at,
                mount_refs: refs.collect(),
                owns_backing: r.owns_backing,
                backing_identity: None,
            }
        }
    }
}

/// Fails only for values serde cannot represent (such as a non-UTF-8 path).
pub(super) fn encode<T: Serialize>(what: &str, value: &T) -> Result<Vec<u8>, StoreError> {
    postcard::to_extend(value, vec![SCHEMA])
        .map_err(|e| StoreError::Db(format!("cannot encode {what}: {e}")))
}

/// Refuses an unknown schema byte, a value postcard cannot read, and trailing bytes.
pub(super) fn decode<T: Versioned>(what: &str, bytes: &[u8]) -> Result<T, StoreError> {
    let corrupt = |reason: String| StoreError::Corrupt {
        what: what.to_string(),
        reason,
    };
    match bytes.split_first() {
        None => Err(corrupt("the value is empty".to_string())),
        Some((&version, body)) => {
            let decoded = match version {
                SCHEMA => postcard::take_from_bytes(body),
                _ => T::decode_old(version, body).ok_or_else(|| {
                    corrupt(format!(
                        "unknown schema version {version} (this fvol reads up to {SCHEMA})"
                    ))
                })?,
            };
            let (value, rest) = decoded.map_err(|e| corrupt(format!("postcard: {e}")))?;
            if rest.is_empty() {
                Ok(value)
            } else {
                Err(corrupt(format!("{} trailing bytes", rest.len())))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::volume::Usage;

    fn corrupt_reason(bytes: &[u8]) -> String {
        match decode::<Usage>("usage of \"v1\"", bytes) {
            Err(StoreError::Corrupt { what, reason }) => {
                assert_eq!(what, "usage of \"v1\"");
                reason
            }
            other => panic!("expected Corrupt, got {other:?}"),
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
        assert_eq!(bytes[0], SCHEMA);
        assert_eq!(decode::<Usage>("usage", &bytes).unwrap(), usage);

        assert!(corrupt_reason(&[]).contains("empty"));
        let mut other_version = bytes.clone();
        other_version[0] = 9;
        assert!(corrupt_reason(&other_version).contains("unknown schema version 9"));
        let mut trailing = bytes.clone();
        trailing.push(0);
        assert!(corrupt_reason(&trailing).contains("1 trailing bytes"));
        assert!(corrupt_reason(&bytes[..bytes.len() - 1]).contains("postcard"));
        assert!(corrupt_reason(&[SCHEMA, 0, 0, 2]).contains("postcard"));
    }

    #[test]
    fn schema_1_records_are_upgraded() {
        use std::collections::BTreeMap;
        let old = v1::VolumeRecord {
            name: "v1".into(),
            driver: "local".into(),
            options: BTreeMap::from([("size".into(), "1G".into())]),
            labels: BTreeMap::new(),
            created_at: 7,
            mount_refs: BTreeMap::from([(
                "cli:/t".into(),
                v1::MountRef {
                    kind: crate::volume::RefKind::Cli,
                    target: Some("/t".into()),
                    since: 8,
                },
            )]),
            owns_backing: true,
        };
        let bytes = postcard::to_extend(&old, vec![1]).unwrap();
        let rec: VolumeRecord = decode("volume", &bytes).unwrap();
        assert_eq!(rec.name, "v1");
        assert_eq!(rec.backing_identity, None);
        let r = &rec.mount_refs["cli:/t"];
        assert_eq!((r.since, r.bind_mount_id), (8, None));
        assert_eq!(r.target.as_deref(), Some(std::path::Path::new("/t")));
        // Usage did not change between the schemas.
        let usage = Usage {
            bytes: 1,
            inodes: 2,
            clean: true,
        };
        let old_usage = postcard::to_extend(&usage, vec![1]).unwrap();
        assert_eq!(decode::<Usage>("usage", &old_usage).unwrap(), usage);
    }

    #[cfg(unix)]
    #[test]
    fn non_utf8_path_is_an_error_not_a_panic() {
        use std::os::unix::ffi::OsStrExt;
        let path = std::path::Path::new(std::ffi::OsStr::from_bytes(b"/\xff"));
        let err = encode("volume \"v\"", &path).unwrap_err().to_string();
        assert!(err.contains("cannot encode volume \"v\""), "{err}");
    }
}
