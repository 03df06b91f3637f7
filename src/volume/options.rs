//! Volume options (`-o key=value`): parsing and the typed form drivers use.
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use super::VolumeError;
use super::size::parse_size;

/// The typed options. Which keys a driver accepts is its own `option_keys()`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VolumeOptions {
    /// Byte quota.
    pub size: Option<u64>,
    /// Inode quota.
    pub inodes: Option<u64>,
    /// Owner and mode of the volume root.
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub mode: Option<u32>,
    /// `local` only: an existing host directory to serve instead of ROOT/volumes/NAME/data.
    pub mount: Option<PathBuf>,
    /// `rbd` only: where the image is and how to reach the cluster.
    pub rbd: RbdOptions,
}

/// The `rbd` driver's options. Secrets are never options: `keyring` is a path.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RbdOptions {
    pub pool: Option<String>,
    pub image: Option<String>,
    pub conf: Option<PathBuf>,
    /// The cephx user (`fvol` or `client.fvol`).
    pub id: Option<String>,
    pub keyring: Option<PathBuf>,
    pub cluster: Option<String>,
    /// How long an operation waits for a cluster that does not answer before it fails with
    /// ETIMEDOUT; `None` (the default): as long as the cluster is away.
    pub io_timeout: Option<Duration>,
}

/// Parses raw options, allowing only `allowed` keys of `driver`.
pub fn parse_options(
    driver: &str,
    allowed: &[&str],
    raw: &BTreeMap<String, String>,
) -> Result<VolumeOptions, VolumeError> {
    let mut opts = VolumeOptions::default();
    for (key, value) in raw {
        if !allowed.contains(&key.as_str()) {
            let valid = if allowed.is_empty() {
                format!("driver {driver} takes no options")
            } else {
                format!("valid options are: {}", allowed.join(", "))
            };
            return Err(VolumeError::InvalidOption(format!(
                "unknown option {key:?} for driver {driver}; {valid}"
            )));
        }
        let bad = |form: &str| {
            VolumeError::InvalidOption(format!("{key}={value:?} is not valid: {form}"))
        };
        match key.as_str() {
            "size" => {
                let bytes = parse_size(value)
                    .map_err(|e| VolumeError::InvalidOption(format!("{key}: {e}")))?;
                opts.size = Some(bytes);
            }
            "inodes" => {
                let n = decimal(value)
                    .filter(|&n| n > 0)
                    .ok_or_else(|| bad("use a positive whole number, for example 100000"))?;
                opts.inodes = Some(n);
            }
            "uid" | "gid" => {
                // u32::MAX is chown's "leave unchanged", so it cannot name an owner.
                let id = decimal(value)
                    .and_then(|n| u32::try_from(n).ok())
                    .filter(|&n| n != u32::MAX)
                    .ok_or_else(|| {
                        bad("use a numeric id from 0 to 4294967294, for example 1000")
                    })?;
                if key == "uid" {
                    opts.uid = Some(id);
                } else {
                    opts.gid = Some(id);
                }
            }
            "mode" => {
                let mode = octal_mode(value).ok_or_else(|| {
                    bad("use octal permission bits from 0 to 7777, for example 755 or 1777")
                })?;
                opts.mode = Some(mode);
            }
            "mount" => opts.mount = Some(absolute(value).ok_or_else(|| bad(ABSOLUTE))?),
            "io_timeout" => {
                opts.rbd.io_timeout = Some(io_timeout(value).ok_or_else(|| {
                    bad(
                        "use a whole number of seconds, minutes or hours with its unit, from \
                         1s to 24h, for example 30s, 2m or 1h (without io_timeout, operations \
                         wait for as long as the cluster is away)",
                    )
                })?)
            }
            "conf" => opts.rbd.conf = Some(absolute(value).ok_or_else(|| bad(ABSOLUTE))?),
            "keyring" => opts.rbd.keyring = Some(absolute(value).ok_or_else(|| bad(ABSOLUTE))?),
            "pool" | "image" | "id" | "cluster" => {
                let name = ceph_name(value).ok_or_else(|| {
                    bad("use letters, digits and . _ - (no spaces, slashes or @), for example rbd")
                })?;
                let slot = match key.as_str() {
                    "pool" => &mut opts.rbd.pool,
                    "image" => &mut opts.rbd.image,
                    "id" => &mut opts.rbd.id,
                    _ => &mut opts.rbd.cluster,
                };
                *slot = Some(name);
            }
            // A driver listed a key this parser has no typed field for; never drop it silently.
            _ => {
                return Err(VolumeError::InvalidOption(format!(
                    "option {key:?} of driver {driver} is not supported by this version of fvol"
                )));
            }
        }
    }
    Ok(opts)
}

const ABSOLUTE: &str = "use an absolute host path, for example /srv/data";

fn absolute(text: &str) -> Option<PathBuf> {
    let path = PathBuf::from(text);
    path.is_absolute().then_some(path)
}

/// `N` + `s`, `m` or `h`, from 1 s to 24 h.
fn io_timeout(text: &str) -> Option<Duration> {
    let unit = match text.bytes().last()? {
        b's' => 1,
        b'm' => 60,
        b'h' => 3600,
        _ => return None,
    };
    let secs = decimal(&text[..text.len() - 1])?.checked_mul(unit)?;
    (1..=24 * 3600)
        .contains(&secs)
        .then(|| Duration::from_secs(secs))
}

/// A pool, image, user or cluster name: what Ceph accepts without quoting.
fn ceph_name(text: &str) -> Option<String> {
    let ok = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-');
    (!text.is_empty() && text.len() <= 255 && text.bytes().all(ok)).then(|| text.to_string())
}

/// Plain decimal digits only (no sign, no spaces), within u64.
fn decimal(text: &str) -> Option<u64> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// Octal digits only, at most 0o7777 (permission, setuid, setgid and sticky bits).
fn octal_mode(text: &str) -> Option<u32> {
    if text.is_empty() {
        return None;
    }
    text.bytes().try_fold(0u32, |acc, b| {
        let digit = match b {
            b'0'..=b'7' => u32::from(b - b'0'),
            _ => return None,
        };
        Some(acc * 8 + digit).filter(|&m| m <= 0o7777)
    })
}

/// Splits `key=value` on the first `=` only.
pub fn split_key_value(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_string(), value.to_string())),
        Some(_) => Err(format!(
            "invalid option {text:?}: the key is empty; use the form key=value"
        )),
        None => Err(format!(
            "invalid option {text:?}: no '='; use the form key=value"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOCAL: &[&str] = &["size", "inodes", "uid", "gid", "mode", "mount"];

    fn parse(pairs: &[(&str, &str)]) -> Result<VolumeOptions, VolumeError> {
        let raw = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        parse_options("local", LOCAL, &raw)
    }

    fn err(pairs: &[(&str, &str)]) -> String {
        match parse(pairs) {
            Err(VolumeError::InvalidOption(msg)) => msg,
            other => panic!("{pairs:?}: expected InvalidOption, got {other:?}"),
        }
    }

    #[test]
    fn splits_on_first_equals() {
        let kv = |a: &str, b: &str| Ok((a.to_string(), b.to_string()));
        assert_eq!(split_key_value("o=size=100m"), kv("o", "size=100m"));
        assert_eq!(split_key_value("size=10G"), kv("size", "10G"));
        assert_eq!(split_key_value("label="), kv("label", ""));
        assert_eq!(split_key_value("a=b=c=d"), kv("a", "b=c=d"));
        let e = split_key_value("size").unwrap_err();
        assert!(e.contains("\"size\"") && e.contains("key=value"), "{e}");
        let e = split_key_value("=10G").unwrap_err();
        assert!(e.contains("\"=10G\"") && e.contains("key=value"), "{e}");
        assert!(split_key_value("").is_err());
    }

    #[test]
    fn parses_all_options() {
        let opts = parse(&[
            ("size", "1.5G"),
            ("inodes", "100000"),
            ("uid", "1000"),
            ("gid", "0"),
            ("mode", "1777"),
            ("mount", "/srv/data"),
        ])
        .unwrap();
        assert_eq!(
            opts,
            VolumeOptions {
                size: Some(1_610_612_736),
                inodes: Some(100_000),
                uid: Some(1000),
                gid: Some(0),
                mode: Some(0o1777),
                mount: Some(PathBuf::from("/srv/data")),
                rbd: RbdOptions::default(),
            }
        );
        assert_eq!(parse(&[]).unwrap(), VolumeOptions::default());
    }

    #[test]
    fn rbd_options() {
        let raw: BTreeMap<String, String> = [
            ("pool", "ssd"),
            ("image", "db-1"),
            ("keyring", "/etc/ceph/k"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let keys = ["pool", "image", "keyring"];
        let opts = parse_options("rbd", &keys, &raw).unwrap();
        assert_eq!(opts.rbd.pool.as_deref(), Some("ssd"));
        assert_eq!(opts.rbd.keyring, Some(PathBuf::from("/etc/ceph/k")));
        for (k, v) in [
            ("pool", "a/b"),
            ("image", "x@snap"),
            ("image", ""),
            ("keyring", "rel/k"),
        ] {
            let raw = BTreeMap::from([(k.to_string(), v.to_string())]);
            assert!(parse_options("rbd", &keys, &raw).is_err(), "{k}={v}");
        }
    }

    #[test]
    fn io_timeouts() {
        let parse = |v: &str| {
            let raw = BTreeMap::from([("io_timeout".to_string(), v.to_string())]);
            parse_options("rbd", &["io_timeout"], &raw).map(|o| o.rbd.io_timeout)
        };
        for (text, secs) in [
            ("1s", 1),
            ("30s", 30),
            ("2m", 120),
            ("1h", 3600),
            ("24h", 86400),
        ] {
            assert_eq!(
                parse(text).unwrap(),
                Some(Duration::from_secs(secs)),
                "{text}"
            );
        }
        for text in [
            "", "30", "0s", "-5s", "1.5s", "90 s", "1m30s", "25h", "86401s", "s", "10ms", "1d",
        ] {
            let e = parse(text).unwrap_err().to_string();
            assert!(
                e.contains(&format!("io_timeout={text:?}")) && e.contains("30s, 2m or 1h"),
                "{text}: {e}"
            );
        }
    }

    #[test]
    fn unknown_option_lists_valid_ones_in_order() {
        assert_eq!(
            err(&[("foo", "1")]),
            "unknown option \"foo\" for driver local; valid options are: size, inodes, uid, gid, mode, mount"
        );
        let raw = BTreeMap::from([("size".to_string(), "1G".to_string())]);
        let e = parse_options(
            "tmpfs",
            &["inodes", "size"],
            &BTreeMap::from([("mode".to_string(), "755".to_string())]),
        )
        .unwrap_err()
        .to_string();
        assert_eq!(
            e,
            "invalid option: unknown option \"mode\" for driver tmpfs; valid options are: inodes, size"
        );
        let e = parse_options("bare", &[], &raw).unwrap_err().to_string();
        assert!(e.contains("takes no options"), "{e}");
    }

    #[test]
    fn modes() {
        for (text, want) in [
            ("755", 0o755),
            ("0755", 0o755),
            ("1777", 0o1777),
            ("07777", 0o7777),
            ("0", 0),
            ("700", 0o700),
        ] {
            assert_eq!(parse(&[("mode", text)]).unwrap().mode, Some(want), "{text}");
        }
        for text in [
            "", "0o755", "8", "99999", "17777", "-755", " 755", "7a", "0x1ff",
        ] {
            let e = err(&[("mode", text)]);
            assert!(e.contains("mode=") && e.contains("octal"), "{text}: {e}");
        }
    }

    #[test]
    fn bad_values_name_option_value_and_form() {
        let e = err(&[("size", "10X")]);
        assert!(e.starts_with("size: invalid size \"10X\""), "{e}");
        for v in ["", "0", "-1", "+5", "1.5", "abc", "99999999999999999999999"] {
            let e = err(&[("inodes", v)]);
            assert!(
                e.contains(&format!("inodes={v:?}")) && e.contains("positive"),
                "{e}"
            );
        }
        for v in ["", "-1", "4294967295", "4294967296", "root", "1e3"] {
            let e = err(&[("uid", v)]);
            assert!(
                e.contains(&format!("uid={v:?}")) && e.contains("numeric id"),
                "{e}"
            );
            assert!(err(&[("gid", v)]).contains("gid="));
        }
        for v in ["", "data", "./data", "srv/data"] {
            let e = err(&[("mount", v)]);
            assert!(
                e.contains(&format!("mount={v:?}")) && e.contains("absolute"),
                "{e}"
            );
        }
        assert!(err(&[("size", "")]).contains("size"));
    }

    #[test]
    fn allowed_key_without_parser_is_refused() {
        let raw = BTreeMap::from([("device".to_string(), "/dev/x".to_string())]);
        let e = parse_options("block", &["device"], &raw)
            .unwrap_err()
            .to_string();
        assert!(e.contains("\"device\""), "{e}");
    }
}
