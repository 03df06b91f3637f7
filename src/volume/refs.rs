//! Mount references: who holds a volume mounted. A volume's FUSE mount lives while it has one.
//!
//! The catalog keys a volume's references by their text form (`RefId::key`), which is also
//! what users see and give back to `fvol unmount --ref`:
//! - `cli`: a plain `fvol mount NAME`;
//! - `cli:/abs/target`: `fvol mount NAME --target /abs/target`;
//! - `plugin:<ID>`: a Docker or Pouch `VolumeDriver.Mount` with that mount ID;
//! - `csi:/abs/target`: a stage or publish of `fvol csi` at that path. Kept apart from
//!   `cli:` so that `fvol unmount --target` cannot take a pod's volume away by accident, and
//!   `inspect` says who holds it.
use std::fmt;
use std::path::{Path, PathBuf};

use super::VolumeError;
use crate::model::RefKind;

/// The longest plugin mount ID accepted (Docker's are 64 hex digits, Pouch's a UUID).
pub const MAX_PLUGIN_ID_LEN: usize = 256;

#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RefId {
    /// `fvol mount NAME`.
    Cli,
    /// `fvol mount NAME --target PATH`; PATH is absolute.
    CliTarget(PathBuf),
    /// A plugin Mount with this ID (non-empty, bounded, no control characters).
    Plugin(String),
    /// A CSI stage or publish at PATH; PATH is absolute.
    Csi(PathBuf),
}

impl RefId {
    /// The reference of a CLI mount, with or without a target.
    pub fn cli(target: Option<&Path>) -> Result<RefId, VolumeError> {
        match target {
            None => Ok(RefId::Cli),
            Some(t) => absolute(t).map(RefId::CliTarget),
        }
    }

    /// The reference of a CSI stage or publish at `target`.
    pub fn csi(target: &Path) -> Result<RefId, VolumeError> {
        absolute(target).map(RefId::Csi)
    }

    /// The reference of a plugin Mount ID.
    pub fn plugin(id: &str) -> Result<RefId, VolumeError> {
        if id.is_empty() {
            return Err(VolumeError::InvalidReference(
                "the request has no mount ID: Mount and Unmount need an \"ID\" (Docker sends \
                 one since 1.13)"
                    .into(),
            ));
        }
        if id.len() > MAX_PLUGIN_ID_LEN || id.chars().any(char::is_control) {
            return Err(VolumeError::InvalidReference(format!(
                "invalid mount ID {id:?}: at most {MAX_PLUGIN_ID_LEN} bytes, no control \
                 characters"
            )));
        }
        Ok(RefId::Plugin(id.to_owned()))
    }

    /// Parses the text form (as `inspect` shows it).
    pub fn parse(text: &str) -> Result<RefId, VolumeError> {
        if text == "cli" {
            return Ok(RefId::Cli);
        }
        if let Some(target) = text.strip_prefix("cli:") {
            return RefId::cli(Some(Path::new(target)));
        }
        if let Some(id) = text.strip_prefix("plugin:") {
            return RefId::plugin(id);
        }
        if let Some(target) = text.strip_prefix("csi:") {
            return RefId::csi(Path::new(target));
        }
        Err(VolumeError::InvalidReference(format!(
            "invalid reference {text:?}: valid forms are cli, cli:/abs/target, plugin:ID and \
             csi:/abs/target, as `fvol inspect` shows them"
        )))
    }

    /// The text form, and the catalog's key.
    pub fn key(&self) -> String {
        self.to_string()
    }

    pub fn kind(&self) -> RefKind {
        match self {
            RefId::Cli | RefId::CliTarget(_) => RefKind::Cli,
            RefId::Plugin(_) => RefKind::Plugin,
            RefId::Csi(_) => RefKind::Csi,
        }
    }

    /// Where this reference binds the volume, if anywhere.
    pub fn target(&self) -> Option<&Path> {
        match self {
            RefId::CliTarget(t) | RefId::Csi(t) => Some(t),
            RefId::Cli | RefId::Plugin(_) => None,
        }
    }
}

fn absolute(target: &Path) -> Result<PathBuf, VolumeError> {
    match target.is_absolute() {
        true => Ok(target.to_path_buf()),
        false => Err(VolumeError::InvalidTarget(format!(
            "{} is not an absolute path",
            target.display()
        ))),
    }
}

impl fmt::Display for RefId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RefId::Cli => f.write_str("cli"),
            RefId::CliTarget(t) => write!(f, "cli:{}", t.display()),
            RefId::Plugin(id) => write!(f, "plugin:{id}"),
            RefId::Csi(t) => write!(f, "csi:{}", t.display()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_forms_round_trip() {
        for id in [
            RefId::Cli,
            RefId::CliTarget("/mnt/x y".into()),
            RefId::Plugin("abc123".into()),
            RefId::Csi("/var/lib/kubelet/pods/x/mount".into()),
        ] {
            assert_eq!(RefId::parse(&id.key()).unwrap(), id);
        }
    }

    #[test]
    fn bad_references_name_the_valid_forms() {
        for bad in [
            "",
            "cli:",
            "cli:rel/x",
            "plugin:",
            "docker:abc",
            "CLI",
            "csi:",
            "csi:rel",
        ] {
            let err = RefId::parse(bad).unwrap_err().to_string();
            assert!(
                err.contains("valid forms") || err.contains("absolute") || err.contains("mount ID"),
                "{bad:?}: {err}"
            );
        }
        let long = format!("plugin:{}", "a".repeat(MAX_PLUGIN_ID_LEN + 1));
        assert!(RefId::parse(&long).is_err());
        assert!(RefId::plugin("a\nb").is_err());
    }

    #[test]
    fn kinds() {
        assert_eq!(RefId::Cli.kind(), RefKind::Cli);
        assert_eq!(RefId::CliTarget("/x".into()).kind(), RefKind::Cli);
        assert_eq!(RefId::Plugin("x".into()).kind(), RefKind::Plugin);
    }
}
