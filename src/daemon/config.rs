//! The daemon's configuration file: `/etc/fvol/fvol.toml`, or `fvol daemon --config PATH`.
//!
//! ```toml
//! [daemon]
//! stale_ref_grace = 60     # seconds (--stale-ref-grace)
//! tmpfs_linger = 10        # seconds (--tmpfs-linger)
//! startup_mounts = 8       # volumes mounted at once at start-up (--startup-mounts)
//!
//! [rbd]                    # defaults for the options of new rbd volumes
//! conf = "/etc/ceph/ceph.conf"
//! pool = "rbd"
//! id = "admin"
//! size = "10G"
//!
//! [tmpfs]
//! size = "256M"
//! ```
//!
//! A section per driver holds defaults for its options, checked by the driver's schema as the
//! values of a new volume's options; options that name one volume's store (`mount=`, `image=`)
//! have none. A flag given to `fvol daemon` overrides `[daemon]`. Every unknown section or key,
//! and every bad value, stops the daemon before it changes anything, naming it and the valid
//! choices. The file is trusted input, so it must be root's: owned by root, writable only by
//! it, in directories only root can change (as ROOT must be).
use std::collections::BTreeMap;
use std::io::Read;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::driver::AnyDriver;

/// Where the daemon looks when `--config` is not given; a missing file there is no error.
pub const DEFAULT_PATH: &str = "/etc/fvol/fvol.toml";

/// The settings of `[daemon]`: name, range, unit, what it is.
const DAEMON_KEYS: &[(&str, u64, u64, &str, &str)] = &[
    (
        "stale_ref_grace",
        1,
        86_400,
        "seconds",
        "how old a plugin reference must be before the daemon releases it by itself",
    ),
    (
        "tmpfs_linger",
        0,
        3_600,
        "seconds",
        "how long a tmpfs volume keeps its data after its last plugin Unmount",
    ),
    (
        "startup_mounts",
        1,
        256,
        "volumes",
        "how many volumes start-up mounts again at once",
    ),
];

/// What the file says. Empty when there is no file.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Config {
    /// `[daemon] stale_ref_grace`, in seconds.
    pub stale_ref_grace: Option<u64>,
    /// `[daemon] tmpfs_linger`, in seconds.
    pub tmpfs_linger: Option<u64>,
    /// `[daemon] startup_mounts`.
    pub startup_mounts: Option<u64>,
    /// Per driver, the default of each option the section gives.
    pub defaults: BTreeMap<String, BTreeMap<String, String>>,
}

/// Reads and checks the configuration: `path` when given (it must exist), else
/// `DEFAULT_PATH` if it exists.
pub fn load(
    path: Option<&Path>,
    drivers: &[std::sync::Arc<dyn AnyDriver>],
) -> Result<Config, String> {
    let (path, explicit) = match path {
        Some(path) => (path.to_path_buf(), true),
        None => (PathBuf::from(DEFAULT_PATH), false),
    };
    match read_trusted(&path, explicit)? {
        Some(text) => parse(&text, drivers).map_err(|e| format!("{}: {e}", path.display())),
        None => Ok(Config::default()),
    }
}

/// The file's text, after checking that only root could have written it. None when the
/// default file does not exist.
fn read_trusted(path: &Path, explicit: bool) -> Result<Option<String>, String> {
    let shown = path.display();
    let opened = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path);
    let mut file = match opened {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => return Ok(None),
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            return Err(format!(
                "the configuration file {shown} is a symlink; give the file itself \
                 (--config {})",
                std::fs::canonicalize(path)
                    .map(|p| p.display().to_string())
                    .unwrap_or_else(|_| "PATH".into())
            ));
        }
        Err(e) => return Err(format!("cannot read the configuration file {shown}: {e}")),
    };
    let meta = file
        .metadata()
        .map_err(|e| format!("cannot inspect the configuration file {shown}: {e}"))?;
    if !meta.is_file() {
        return Err(format!(
            "the configuration file {shown} is not a regular file"
        ));
    }
    let daemon_uid = nix::unistd::geteuid().as_raw();
    let why = if meta.uid() != 0 && meta.uid() != daemon_uid {
        Some(format!("is owned by uid {}, not root", meta.uid()))
    } else if meta.mode() & 0o022 != 0 {
        Some(format!(
            "is writable by users other than its owner (mode {:04o})",
            meta.mode() & 0o7777
        ))
    } else {
        None
    };
    if let Some(why) = why {
        return Err(format!(
            "refusing to read the configuration file {shown}: it {why}; a user who can change \
             it could choose what the root daemon does. Make it root's and not writable by \
             others (chown root {shown}; chmod go-w {shown})"
        ));
    }
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    super::trusted_dir::check_trusted_source_dir(dir, "configuration file")?;
    let mut text = String::new();
    file.read_to_string(&mut text)
        .map_err(|e| format!("cannot read the configuration file {shown}: {e}"))?;
    Ok(Some(text))
}

/// Parses and checks the file's text (the caller names the file in errors).
pub fn parse(text: &str, drivers: &[std::sync::Arc<dyn AnyDriver>]) -> Result<Config, String> {
    let table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
        // One line: where, then what (toml's own text draws the line over several).
        let at = e.span().map_or(String::new(), |span| {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
            format!(" at line {line}, column {column}")
        });
        let what: Vec<&str> = e.message().lines().map(str::trim).collect();
        format!("not valid TOML{at}: {}", what.join("; "))
    })?;
    let mut sections = vec!["daemon"];
    sections.extend(drivers.iter().map(|d| d.name()));
    let mut config = Config::default();
    for (name, value) in &table {
        let toml::Value::Table(section) = value else {
            return Err(format!(
                "{name} = ... is outside any section; put it in one of [{}]",
                sections.join("], [")
            ));
        };
        if name == "daemon" {
            parse_daemon(section, &mut config)?;
            continue;
        }
        let Some(driver) = drivers.iter().find(|d| d.name() == name) else {
            return Err(format!(
                "unknown section [{name}]; valid sections are [{}]",
                sections.join("], [")
            ));
        };
        let mut defaults = BTreeMap::new();
        for (key, value) in section {
            let text = match value {
                toml::Value::String(s) => s.clone(),
                toml::Value::Integer(n) => n.to_string(),
                other => {
                    return Err(format!(
                        "[{name}] {key} is a {}: give the value as a string, for example \
                         {key} = \"...\"",
                        other.type_str()
                    ));
                }
            };
            driver
                .check_default(key, &text)
                .map_err(|e| format!("[{name}] {key}: {e}"))?;
            defaults.insert(key.clone(), text);
        }
        config.defaults.insert(name.clone(), defaults);
    }
    Ok(config)
}

fn parse_daemon(section: &toml::Table, config: &mut Config) -> Result<(), String> {
    for (key, value) in section {
        let Some((_, min, max, unit, _)) = DAEMON_KEYS.iter().find(|(k, ..)| k == key) else {
            let valid: Vec<_> = DAEMON_KEYS.iter().map(|(k, ..)| *k).collect();
            return Err(format!(
                "unknown key {key:?} in [daemon]; valid keys are {}",
                valid.join(", ")
            ));
        };
        let number = value
            .as_integer()
            .and_then(|n| u64::try_from(n).ok())
            .filter(|n| (*min..=*max).contains(n))
            .ok_or_else(|| {
                let given = match value.as_integer() {
                    Some(n) => n.to_string(),
                    None => format!("a {}", value.type_str()),
                };
                format!(
                    "[daemon] {key} = {given} is not valid: use a whole number of {unit} \
                     from {min} to {max}, for example {key} = {}",
                    (*min).max(10).min(*max)
                )
            })?;
        match key.as_str() {
            "stale_ref_grace" => config.stale_ref_grace = Some(number),
            "tmpfs_linger" => config.tmpfs_linger = Some(number),
            _ => config.startup_mounts = Some(number),
        }
    }
    Ok(())
}

/// The `[daemon]` keys with what they mean, for docs and help.
pub fn daemon_keys() -> impl Iterator<Item = (&'static str, u64, u64, &'static str, &'static str)> {
    DAEMON_KEYS.iter().copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(text: &str) -> Result<Config, String> {
        parse(text, &crate::driver::registry())
    }

    #[test]
    fn sections_and_values() {
        let config = parsed(
            r#"
            [daemon]
            stale_ref_grace = 120
            tmpfs_linger = 0
            startup_mounts = 3

            [rbd]
            conf = "/etc/ceph/ceph.conf"
            pool = "ssd"
            id = "fvol"
            size = "10G"

            [tmpfs]
            size = "256M"
            inodes = 1000
            "#,
        )
        .unwrap();
        assert_eq!(config.stale_ref_grace, Some(120));
        assert_eq!(config.tmpfs_linger, Some(0));
        assert_eq!(config.startup_mounts, Some(3));
        assert_eq!(config.defaults["rbd"]["conf"], "/etc/ceph/ceph.conf");
        assert_eq!(config.defaults["rbd"]["size"], "10G");
        assert_eq!(config.defaults["tmpfs"]["inodes"], "1000");
        assert_eq!(parsed("").unwrap(), Config::default());
    }

    #[test]
    fn unknown_names_are_refused_naming_the_valid_ones() {
        let e = parsed("[ceph]\nconf = \"/x\"\n").unwrap_err();
        assert_eq!(
            e,
            "unknown section [ceph]; valid sections are [daemon], [local], [tmpfs], [rbd]"
        );
        let e = parsed("[rbd]\npol = \"rbd\"\n").unwrap_err();
        assert!(
            e.starts_with("[rbd] pol: invalid option: unknown option \"pol\" for driver rbd")
                && e.contains("valid options are: pool, image, size, conf"),
            "{e}"
        );
        let e = parsed("[daemon]\nlinger = 5\n").unwrap_err();
        assert_eq!(
            e,
            "unknown key \"linger\" in [daemon]; valid keys are stale_ref_grace, tmpfs_linger, \
             startup_mounts"
        );
        let e = parsed("size = \"1G\"\n").unwrap_err();
        assert!(e.contains("outside any section"), "{e}");
    }

    #[test]
    fn bad_values_name_the_problem() {
        let e = parsed("[rbd]\nsize = \"10X\"\n").unwrap_err();
        assert!(
            e.starts_with("[rbd] size: invalid option: size: invalid size \"10X\""),
            "{e}"
        );
        let e = parsed("[rbd]\nconf = \"ceph.conf\"\n").unwrap_err();
        assert!(
            e.contains("conf=\"ceph.conf\" is not valid") && e.contains("absolute"),
            "{e}"
        );
        let e = parsed("[tmpfs]\nsize = \"100\"\n").unwrap_err();
        assert!(e.contains("less than one block"), "{e}");
        let e = parsed("[tmpfs]\nsize = 1.5\n").unwrap_err();
        assert!(e.contains("as a string"), "{e}");
        let e = parsed("[daemon]\ntmpfs_linger = 7200\n").unwrap_err();
        assert!(e.contains("from 0 to 3600"), "{e}");
        let e = parsed("[daemon]\nstale_ref_grace = \"60\"\n").unwrap_err();
        assert!(e.contains("whole number of seconds"), "{e}");
        let e = parsed("[daemon]\nstartup_mounts = 0\n").unwrap_err();
        assert!(e.contains("whole number of volumes from 1 to 256"), "{e}");
        let e = parsed("[rbd]\nimage = \"shared\"\n").unwrap_err();
        assert!(e.contains("cannot have a default"), "{e}");
        let e = parsed("[local]\nmount = \"/srv/x\"\n").unwrap_err();
        assert!(e.contains("cannot have a default"), "{e}");
        let e = parsed("[rbd\n").unwrap_err();
        assert_eq!(
            e,
            "not valid TOML at line 1, column 5: invalid table header; expected `.`, `]`"
        );
        let e = parsed("[rbd]\nsize = \"1G\"\nsize = \"2G\"\n").unwrap_err();
        assert!(
            e.starts_with("not valid TOML at line 3") && !e.contains('\n'),
            "{e}"
        );
    }

    #[test]
    fn the_file_must_be_roots_and_exist_when_named() {
        use std::os::unix::fs::PermissionsExt;
        let set = |p: &Path, mode| {
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap()
        };
        let dir = tempfile::tempdir().unwrap();
        let drivers = crate::driver::registry();
        let missing = dir.path().join("none.toml");
        let e = load(Some(&missing), &drivers).unwrap_err();
        assert!(e.contains("none.toml") && e.contains("No such file"), "{e}");

        let file = dir.path().join("fvol.toml");
        std::fs::write(&file, "[tmpfs]\nsize = \"1G\"\n").unwrap();
        set(&file, 0o644);
        assert_eq!(
            load(Some(&file), &drivers).unwrap().defaults["tmpfs"]["size"],
            "1G"
        );
        set(&file, 0o666);
        let e = load(Some(&file), &drivers).unwrap_err();
        assert!(
            e.contains("writable by users other than its owner (mode 0666)"),
            "{e}"
        );
        set(&file, 0o644);
        set(dir.path(), 0o777);
        let e = load(Some(&file), &drivers).unwrap_err();
        assert!(
            e.contains("refusing to read the configuration file in"),
            "{e}"
        );
        set(dir.path(), 0o700);
        let link = dir.path().join("link.toml");
        std::os::unix::fs::symlink(&file, &link).unwrap();
        let e = load(Some(&link), &drivers).unwrap_err();
        assert!(e.contains("is a symlink"), "{e}");
        if nix::unistd::geteuid().is_root() {
            std::os::unix::fs::chown(&file, Some(65534), None).unwrap();
            let e = load(Some(&file), &drivers).unwrap_err();
            assert!(e.contains("owned by uid 65534"), "{e}");
        }
    }
}
