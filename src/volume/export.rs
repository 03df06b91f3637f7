//! `fvol export NAME` and `fvol import NAME`: a tar stream of a volume as it is at one
//! instant, and a volume filled from one.
//!
//! Export takes a copy as a snapshot does (writes held while it is made, see `snapshot`) and
//! writes it as a tar stream: owners (numeric), modes, times, xattrs and ACLs, hard links, and
//! sparse files (holes stay holes). A volume whose data lives in its core (tmpfs, rbd) is
//! streamed from the core or its capture (`fs::tar_out`), with nothing staged on the host; a
//! local volume is copied (reflinked where the host can) into a scratch directory, which GNU
//! tar writes out. Import unpacks such a stream into the volume through its
//! mount, so the quota holds: a stream whose data is known to exceed the room left is refused
//! before anything is written; otherwise tar stops at the quota, and the error says how far
//! it got.
use std::fs::File;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde::{Deserialize, Serialize};

use super::core::Core;
use super::snapshot::Sink;
use super::{RefId, VolumeError};
use crate::driver::DataHome;

/// What an export wrote.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ExportInfo {
    pub path: PathBuf,
    pub bytes: u64,
    /// How long the volume's writes were held while its copy was made, in milliseconds.
    pub held_ms: u64,
}

/// What an import added.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ImportInfo {
    pub used_bytes: u64,
    pub used_inodes: u64,
}

const TAR_KEEP: &[&str] = &[
    "--xattrs",
    "--xattrs-include=*",
    "--acls",
    "--numeric-owner",
    "--sparse",
];

/// Runs GNU tar; with `stdout`, tar's standard output goes there (`--file -`).
fn tar(args: &[&str], what: &str, stdout: Option<File>) -> Result<(), VolumeError> {
    let mut command = Command::new("tar");
    command.args(args);
    crate::sys::set_child_umask(&mut command, crate::sys::HELPER_UMASK);
    if let Some(file) = stdout {
        command.stdout(Stdio::from(file));
    }
    let out = command
        .output()
        .map_err(|e| VolumeError::io(format!("{what}: running tar"), e))?;
    if out.status.success() {
        return Ok(());
    }
    Err(VolumeError::io(
        what.to_string(),
        std::io::Error::other(String::from_utf8_lossy(&out.stderr).trim().to_string()),
    ))
}

/// The export's output file, opened before anything is copied. A new file is made `0600`,
/// as `docker save -o` makes its file: it holds the volume's data, and the daemon runs with
/// umask 0, so the default would be `0666`, readable and writable by every host user. An
/// existing file (or a pipe or a device) is written over and keeps its mode and owner.
fn open_output(output: &Path, out: &str) -> Result<File, VolumeError> {
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(output)
        .map_err(|e| VolumeError::io(format!("creating {out}"), e))
}

fn checked_path(path: &Path, what: &str) -> Result<String, VolumeError> {
    if !path.is_absolute() {
        return Err(VolumeError::InvalidOption(format!(
            "the {what} file must be an absolute path, not {}",
            path.display()
        )));
    }
    path.to_str().map(str::to_string).ok_or_else(|| {
        VolumeError::InvalidOption(format!("the {what} path {} is not UTF-8", path.display()))
    })
}

impl Core {
    pub fn export(&self, name: &str, output: &Path) -> Result<ExportInfo, VolumeError> {
        let rec = self.record(name)?;
        let out = checked_path(output, "output")?;
        let home = self.data_home(&rec)?;
        let file = open_output(output, &out)?;
        let what = format!("exporting volume {name}");
        let held = match home {
            DataHome::HostDir { .. } => {
                let stdout = file
                    .try_clone()
                    .map_err(|e| VolumeError::io(what.clone(), e))?;
                self.export_staged(&rec, output, stdout)?
            }
            DataHome::InCore { .. } => {
                let mut stream = std::io::BufWriter::with_capacity(1 << 20, &file);
                let (_, _, held) = self.copy_volume(&rec, Sink::Tar(&mut stream))?;
                stream
                    .into_inner()
                    .map_err(|e| VolumeError::io(what.clone(), e.into_error()))?;
                held
            }
        };
        // A pipe or a device has nothing to make durable (and refuses fsync).
        if file.metadata().is_ok_and(|m| m.is_file()) {
            file.sync_all().map_err(|e| VolumeError::io(what, e))?;
        }
        let bytes = std::fs::metadata(output).map_or(0, |m| m.len());
        Ok(ExportInfo {
            path: output.to_path_buf(),
            bytes,
            held_ms: held.as_millis() as u64,
        })
    }

    /// A volume whose files are a host directory: copied (reflinked where the host can) into
    /// a scratch directory at one instant, which GNU tar then writes to `stdout`.
    fn export_staged(
        &self,
        rec: &super::VolumeRecord,
        output: &Path,
        stdout: File,
    ) -> Result<std::time::Duration, VolumeError> {
        let name = &rec.name;
        let tmp = self.scratch_dir(name, "export")?;
        let exported = (|| {
            let (_, copied, held) = self.copy_volume(rec, Sink::Dir(&tmp))?;
            let written = output.to_path_buf();
            let _shown = (self.progress).measured(
                name,
                format!("writing volume {name} as a tar stream"),
                copied.bytes,
                move || std::fs::metadata(&written).map_or(0, |m| m.len()),
            );
            let dir = tmp.to_str().unwrap_or_default().to_string();
            let mut args = vec!["--create", "--file", "-", "--directory", &dir];
            args.extend(TAR_KEEP);
            args.push(".");
            tar(&args, &format!("exporting volume {name}"), Some(stdout))?;
            Ok(held)
        })();
        let _ = std::fs::remove_dir_all(&tmp);
        exported
    }

    pub fn import(&self, name: &str, input: &Path) -> Result<ImportInfo, VolumeError> {
        let rec = self.record(name)?;
        let file = checked_path(input, "input")?;
        let size = std::fs::metadata(input)
            .map_err(|e| VolumeError::io(format!("reading {file}"), e))?
            .len();
        let listing = Command::new("tar")
            .args(["--list", "--file", &file])
            .output()
            .map_err(|e| VolumeError::io("running tar", e))?;
        if !listing.status.success() {
            return Err(VolumeError::InvalidOption(format!(
                "{file} is not a tar stream fvol can read: {}",
                String::from_utf8_lossy(&listing.stderr).trim()
            )));
        }
        let entries = listing.stdout.iter().filter(|&&b| b == b'\n').count() as u64;
        // At least this much data: the stream less a header per entry and the end blocks.
        let data_at_least = size.saturating_sub(512 * (entries + 2) + 10240);
        let (limit, _) = self.driver(&rec.driver)?.limits(&rec.options)?;
        let used = self.info(&rec)?.status.used_bytes;
        if let Some(limit) = limit
            && data_at_least > limit.saturating_sub(used)
        {
            return Err(VolumeError::Refused(format!(
                "the stream holds at least {data_at_least} bytes of data, more than volume \
                 {name} has room for ({} of its {limit} bytes are free); nothing was written \
                 (fvol update {name} -o size=... makes room)",
                limit.saturating_sub(used)
            )));
        }
        let mounted_here = self.active_gate(name).is_none();
        let mountpoint = match mounted_here {
            true => self.mount(name, &RefId::Cli)?,
            false => self.mountpoint(name),
        };
        let dir = mountpoint.to_str().unwrap_or_default().to_string();
        let mut args = vec![
            "--extract",
            "--file",
            &file,
            "--directory",
            &dir,
            "--same-permissions",
            "--same-owner",
        ];
        args.extend(TAR_KEEP);
        let filled = mountpoint.clone();
        let shown = (self.progress).measured(
            name,
            format!("unpacking into volume {name}"),
            data_at_least,
            move || super::snapshot::measure(&filled).bytes,
        );
        let unpacked = tar(&args, &format!("importing into volume {name}"), None);
        drop(shown);
        let info = self.info(&rec)?;
        if mounted_here {
            self.release(name, &RefId::Cli)?;
        }
        match unpacked {
            Ok(()) => Ok(ImportInfo {
                used_bytes: info.status.used_bytes,
                used_inodes: info.status.used_inodes,
            }),
            Err(e) => Err(VolumeError::Refused(format!(
                "the import into volume {name} stopped: {e}; what was unpacked stays (the \
                 volume now holds {} bytes in {} inodes{})",
                info.status.used_bytes,
                info.status.used_inodes,
                info.status
                    .size_limit
                    .map(|l| format!(", of {l} bytes"))
                    .unwrap_or_default()
            ))),
        }
    }
}
