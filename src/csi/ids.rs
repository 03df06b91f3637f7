//! How CSI's names, ids, tokens and capacities become fvol's.
//!
//! - A volume id is the fvol volume's name. CreateVolume's `name` is used as it is when it is
//!   a valid fvol name (Kubernetes' `pvc-<uid>` is), else `csi-` and a hash of it; the CSI
//!   name is kept in the label `fvol.io/csi-name` either way.
//! - A snapshot id is `VOLUME@SNAPSHOT`, the form `fvol create --from` takes; SNAPSHOT comes
//!   from CreateSnapshot's `name` by the same rule.
//! - A list's next token is `after:ID`: the next page starts after that id in id order, so a
//!   token stays good when volumes are added or that id is removed meanwhile.
use super::proto::CapacityRange;
use super::status;
use crate::volume::name::validate_name;

/// The label that keeps a volume's CSI name.
pub const NAME_LABEL: &str = "fvol.io/csi-name";

/// The longest CSI name used as it is (CSI names may be 128 bytes, csi-sanity's are).
const MAX_DIRECT: usize = 128;

/// The fvol name for a CSI name (volume or snapshot).
pub fn fvol_name(csi_name: &str) -> String {
    if csi_name.len() <= MAX_DIRECT && validate_name(csi_name).is_ok() {
        return csi_name.to_owned();
    }
    format!("csi-{}", hash_hex(csi_name))
}

/// 128 bits of FNV-1a (two 64-bit lanes with different offsets), as hex: a stable name, not
/// a secret.
fn hash_hex(text: &str) -> String {
    let lane = |offset: u64| {
        text.bytes().fold(offset, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
        })
    };
    format!(
        "{:016x}{:016x}",
        lane(0xcbf2_9ce4_8422_2325),
        lane(0x6c62_272e_07bb_0142)
    )
}

/// A volume id that names a volume that may exist; None: no volume can have this id.
pub fn volume_of(id: &str) -> Option<&str> {
    validate_name(id).ok().map(|()| id)
}

/// `(volume, snapshot)` of a snapshot id; None: no snapshot can have this id.
pub fn snapshot_of(id: &str) -> Option<(&str, &str)> {
    let (volume, snap) = id.split_once('@')?;
    (validate_name(volume).is_ok() && validate_name(snap).is_ok()).then_some((volume, snap))
}

pub fn snapshot_id(volume: &str, snap: &str) -> String {
    format!("{volume}@{snap}")
}

/// One page of `ids` (sorted) from `starting_token`, at most `max_entries` (0: all), and the
/// token of the next page (empty: none).
pub fn page<T>(
    mut items: Vec<T>,
    id_of: impl Fn(&T) -> &str,
    max_entries: i32,
    starting_token: &str,
) -> Result<(Vec<T>, String), tonic::Status> {
    if max_entries < 0 {
        return Err(status::invalid(format!(
            "max_entries is {max_entries}; it must be 0 (no limit) or more"
        )));
    }
    items.sort_by(|a, b| id_of(a).cmp(id_of(b)));
    if !starting_token.is_empty() {
        let Some(after) = starting_token.strip_prefix("after:") else {
            return Err(status::aborted(format!(
                "starting_token {starting_token:?} was not given by this driver: tokens are \
                 the next_token of a previous answer"
            )));
        };
        items.retain(|item| id_of(item) > after);
    }
    let max = max_entries as usize;
    if max == 0 || items.len() <= max {
        return Ok((items, String::new()));
    }
    items.truncate(max);
    let next = format!("after:{}", id_of(&items[max - 1]));
    Ok((items, next))
}

/// Bytes are counted in blocks of this size.
pub const BLOCK: u64 = 4096;

/// The byte quota for a capacity range: `required_bytes` rounded up to a whole block (at
/// least `minimum`), else `default` within `limit_bytes`. OUT_OF_RANGE when no such size is
/// within `limit_bytes`.
pub fn size_for(
    range: Option<&CapacityRange>,
    minimum: u64,
    default: u64,
) -> Result<u64, tonic::Status> {
    let (required, limit) = match range {
        Some(r) => (r.required_bytes, r.limit_bytes),
        None => (0, 0),
    };
    if required < 0 || limit < 0 {
        return Err(status::invalid(format!(
            "capacity_range has a negative size (required_bytes {required}, limit_bytes \
             {limit})"
        )));
    }
    let (required, limit) = (required as u64, limit as u64);
    if limit > 0 && required > limit {
        return Err(status::invalid(format!(
            "capacity_range asks for required_bytes {required}, more than its limit_bytes \
             {limit}"
        )));
    }
    let wanted = match (required, limit) {
        (0, 0) => default,
        (0, limit) => default.min(limit),
        (required, _) => required,
    };
    let size = wanted.max(minimum).div_ceil(BLOCK) * BLOCK;
    if limit > 0 && size > limit {
        let fits = limit / BLOCK * BLOCK;
        if fits < minimum.max(required) {
            return Err(status::out_of_range(format!(
                "no size fits capacity_range (required_bytes {required}, limit_bytes \
                 {limit}): the smallest volume of this driver is {minimum} bytes, in whole \
                 blocks of {BLOCK}"
            )));
        }
        return Ok(fits);
    }
    if size > i64::MAX as u64 {
        return Err(status::out_of_range(format!(
            "{size} bytes is more than a volume can have"
        )));
    }
    Ok(size)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(required_bytes: i64, limit_bytes: i64) -> CapacityRange {
        CapacityRange {
            required_bytes,
            limit_bytes,
        }
    }

    #[test]
    fn names() {
        assert_eq!(fvol_name("pvc-1234-abcd"), "pvc-1234-abcd");
        let hashed = fvol_name("my volume/1");
        assert!(hashed.starts_with("csi-") && hashed.len() == 36, "{hashed}");
        assert_eq!(hashed, fvol_name("my volume/1"));
        assert_ne!(hashed, fvol_name("my volume/2"));
        assert!(validate_name(&hashed).is_ok());
        assert!(fvol_name(&"a".repeat(200)).starts_with("csi-"));
        assert_eq!(snapshot_of("vol@snap"), Some(("vol", "snap")));
        assert_eq!(snapshot_of("vol"), None);
        assert_eq!(snapshot_of("v/x@snap"), None);
        assert_eq!(volume_of("a b"), None);
    }

    #[test]
    fn sizes() {
        let g = 1 << 30;
        assert_eq!(size_for(None, 4096, g).unwrap(), g);
        assert_eq!(size_for(Some(&range(10, 0)), 4096, g).unwrap(), 4096);
        assert_eq!(size_for(Some(&range(5000, 0)), 4096, g).unwrap(), 8192);
        assert_eq!(size_for(Some(&range(0, 8192)), 4096, g).unwrap(), 8192);
        assert_eq!(
            size_for(Some(&range(5000, 6000)), 4096, g)
                .unwrap_err()
                .code(),
            tonic::Code::OutOfRange
        );
        assert_eq!(size_for(Some(&range(4096, 6000)), 4096, g).unwrap(), 4096);
        assert_eq!(
            size_for(Some(&range(0, 100)), 4096, g).unwrap_err().code(),
            tonic::Code::OutOfRange
        );
        assert_eq!(
            size_for(Some(&range(-1, 0)), 4096, g).unwrap_err().code(),
            tonic::Code::InvalidArgument
        );
        assert_eq!(
            size_for(Some(&range(10, 5)), 4096, g).unwrap_err().code(),
            tonic::Code::InvalidArgument
        );
    }

    #[test]
    fn pages() {
        let ids: Vec<String> = ["c", "a", "b", "d"].iter().map(|s| s.to_string()).collect();
        let (first, next) = page(ids.clone(), |s| s.as_str(), 2, "").unwrap();
        assert_eq!(first, ["a", "b"]);
        assert_eq!(next, "after:b");
        let (rest, next) = page(ids.clone(), |s| s.as_str(), 0, "after:b").unwrap();
        assert_eq!(rest, ["c", "d"]);
        assert_eq!(next, "");
        assert_eq!(
            page(ids, |s| s.as_str(), 0, "x").unwrap_err().code(),
            tonic::Code::Aborted
        );
    }
}
