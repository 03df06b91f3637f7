//! One function per volume command: build the request, call the daemon, print the answer.
use std::collections::BTreeMap;
use std::io::{self, BufRead, Write};
use std::path::{Path, PathBuf};

use super::CliError;
use super::args::{
    CreateArgs, ListFormat, LsArgs, MountArgs, PruneArgs, RmArgs, SnapshotCommand, UnmountArgs,
    UpdateArgs, VolumeCommand,
};
use super::client::DaemonClient;
use super::filter::VolumeFilters;
use super::output::{human_size, snapshot_table, volume_table};
use super::progress::while_showing;
use super::template::Template;
use crate::api::{
    self, BreakLockResponse, Empty, FsckResponse, InspectRequest, MountRequest, PathRequest,
    PathResponse, PruneResponse, RemoveRequest, RemoveResult, SnapshotRequest, TransferRequest,
    UnmountRequest, UnmountResponse, routes,
};
use crate::volume::VolumeInfo;
use crate::volume::snapshot::SnapshotInfo;

const PRUNE_WARNING: &str = "WARNING! This will remove all volumes not used by at least one mount. Are you sure you want to continue? [y/N] ";

pub fn run(
    command: VolumeCommand,
    client: &DaemonClient,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    match command {
        VolumeCommand::Create(args) => create(client, args, out),
        VolumeCommand::Ls(args) => list(client, args, out),
        VolumeCommand::Inspect { names, format } => inspect(client, names, format, out),
        VolumeCommand::Rm(args) => remove(client, args, out),
        VolumeCommand::Prune(args) => prune(client, args, &mut io::stdin().lock(), out),
        VolumeCommand::Mount(args) => mount(client, args, out),
        VolumeCommand::Unmount(args) => unmount(client, args, out),
        VolumeCommand::Path { name } => path(client, name, out),
        VolumeCommand::Update(args) => update(client, args, out),
        VolumeCommand::Snapshot(command) => snapshot(client, command, out),
        VolumeCommand::Export {
            name,
            output,
            quiet,
        } => export(client, name, output, quiet, out),
        VolumeCommand::Import { name, file, quiet } => import(client, name, file, quiet, out),
        VolumeCommand::Events(args) => super::events::run(client, args, out),
        VolumeCommand::Top(args) => super::top::run(client, args),
        VolumeCommand::Fsck { name } => fsck(client, name, out),
        VolumeCommand::BreakLock { name } => break_lock(client, name, out),
    }
}

fn create(client: &DaemonClient, args: CreateArgs, out: &mut dyn Write) -> Result<(), CliError> {
    let mut options = key_values("option", &args.opts)?;
    if let Some(from) = args.from {
        options.insert(crate::volume::snapshot::FROM.into(), from);
    }
    let request = api::CreateRequest {
        name: args.name,
        driver: args.driver,
        options,
        labels: key_values("label", &args.labels)?,
    };
    // A clone copies its source (NAME, or NAME@SNAP's snapshot) into the new volume.
    let source = (request.options.get(crate::volume::snapshot::FROM))
        .map(|from| from.split('@').next().unwrap_or_default().to_string());
    let watched: Vec<&str> = request
        .name
        .iter()
        .chain(&source)
        .map(String::as_str)
        .collect();
    let info: VolumeInfo = match source {
        Some(_) => while_showing(client, &watched, args.quiet, || {
            client.call(routes::CREATE, &request)
        })?,
        None => client.call(routes::CREATE, &request)?,
    };
    write_out(out, &format!("{}\n", info.name))
}

/// The daemon writes the stream to FILE, or to a file under ROOT that is then copied to
/// stdout (the socket is root's, so the CLI may read it) and removed.
fn export(
    client: &DaemonClient,
    name: String,
    output: Option<PathBuf>,
    quiet: bool,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let (file, to_stdout) = match output {
        Some(path) => (absolute(path)?, false),
        None => (transfer_file(client, "export")?, true),
    };
    let request = TransferRequest {
        name,
        file: file.clone(),
    };
    let answer: Result<serde_json::Value, CliError> =
        while_showing(client, &[&request.name], quiet, || {
            client.call(routes::EXPORT, &request)
        });
    if to_stdout {
        let copied = answer.and_then(|_| {
            let mut f = std::fs::File::open(&file).map_err(io_err(&file))?;
            io::copy(&mut f, out).map_err(io_err(Path::new("stdout")))?;
            Ok(())
        });
        let _ = std::fs::remove_file(&file);
        return copied;
    }
    answer.map(drop)
}

fn import(
    client: &DaemonClient,
    name: String,
    file: Option<PathBuf>,
    quiet: bool,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let (file, temporary) = match file.filter(|f| f.as_os_str() != "-") {
        Some(path) => (absolute(path)?, false),
        None => {
            let tmp = transfer_file(client, "import")?;
            let mut f = std::fs::File::create(&tmp).map_err(io_err(&tmp))?;
            if let Err(e) = io::copy(&mut io::stdin().lock(), &mut f) {
                let _ = std::fs::remove_file(&tmp);
                return Err(io_err(Path::new("stdin"))(e));
            }
            (tmp, true)
        }
    };
    let request = TransferRequest {
        name,
        file: file.clone(),
    };
    let answer: Result<serde_json::Value, CliError> =
        while_showing(client, &[&request.name], quiet, || {
            client.call(routes::IMPORT, &request)
        });
    if temporary {
        let _ = std::fs::remove_file(&file);
    }
    let answer = answer?;
    write_out(
        out,
        &format!(
            "imported: the volume holds {} in {} inodes\n",
            human_size(answer["UsedBytes"].as_u64().unwrap_or(0)),
            answer["UsedInodes"].as_u64().unwrap_or(0)
        ),
    )
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> CliError + '_ {
    move |e| CliError::Message(format!("{}: {e}", path.display()))
}

/// A new file under ROOT/transfers for a stream on its way through stdin or stdout.
fn transfer_file(client: &DaemonClient, what: &str) -> Result<PathBuf, CliError> {
    let dir = client.root().join("transfers");
    crate::sys::create_dir_with_mode(&dir, 0o700).map_err(io_err(&dir))?;
    Ok(dir.join(format!("{what}-{}.tar", std::process::id())))
}

fn snapshot(
    client: &DaemonClient,
    command: SnapshotCommand,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let request = |name, snapshot| SnapshotRequest { name, snapshot };
    match command {
        SnapshotCommand::Create {
            name,
            snapshot,
            quiet,
        } => {
            let watched = name.clone();
            let info: SnapshotInfo = while_showing(client, &[&watched], quiet, || {
                client.call(routes::SNAPSHOT_CREATE, &request(name, Some(snapshot)))
            })?;
            write_out(
                out,
                &format!(
                    "{}@{}: {} by {}, writes held {} ms\n",
                    info.volume,
                    info.name,
                    human_size(info.bytes),
                    info.method,
                    info.held_ms
                ),
            )
        }
        SnapshotCommand::Ls { name, format } => {
            let all: Vec<SnapshotInfo> =
                client.call(routes::SNAPSHOT_LIST, &request(name, None))?;
            let text = match format {
                ListFormat::Json => pretty_json(&all)?,
                ListFormat::Table => snapshot_table(&all),
            };
            write_out(out, &text)
        }
        SnapshotCommand::Rm { name, snapshot } => {
            let Empty {} = client.call(routes::SNAPSHOT_REMOVE, &request(name, Some(snapshot)))?;
            Ok(())
        }
        SnapshotCommand::Restore { name, snapshot } => {
            let Empty {} = client.call(routes::SNAPSHOT_RESTORE, &request(name, Some(snapshot)))?;
            Ok(())
        }
    }
}

/// Prints the volume's new limits.
fn update(client: &DaemonClient, args: UpdateArgs, out: &mut dyn Write) -> Result<(), CliError> {
    let request = api::UpdateRequest {
        name: args.name,
        options: key_values("option", &args.opts)?,
    };
    let info: VolumeInfo = client.call(routes::UPDATE, &request)?;
    let limit = |l: Option<u64>, show: fn(u64) -> String| l.map_or("none".into(), show);
    write_out(
        out,
        &format!(
            "{}: size limit {}, inode limit {}\n",
            info.name,
            limit(info.status.size_limit, human_size),
            limit(info.status.inode_limit, |n| n.to_string())
        ),
    )
}

/// `-o`/`--label` values; a repeated key keeps its last value.
fn key_values(what: &str, specs: &[String]) -> Result<BTreeMap<String, String>, CliError> {
    specs
        .iter()
        .map(|spec| {
            split_key_value(spec)
                .map_err(|reason| CliError::Message(format!("invalid {what} {spec:?}: {reason}")))
        })
        .collect()
}

fn list(client: &DaemonClient, args: LsArgs, out: &mut dyn Write) -> Result<(), CliError> {
    let filters = VolumeFilters::parse(&args.filters)?;
    let mut volumes: Vec<VolumeInfo> = client.call(routes::LIST, &Empty {})?;
    volumes.retain(|volume| filters.matches(volume));
    let text = if args.quiet {
        volumes.iter().map(|v| format!("{}\n", v.name)).collect()
    } else {
        match args.format {
            ListFormat::Table => volume_table(&volumes),
            ListFormat::Json => pretty_json(&volumes)?,
        }
    };
    write_out(out, &text)
}

fn inspect(
    client: &DaemonClient,
    names: Vec<String>,
    format: Option<String>,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    // Checked before the daemon is asked.
    let template = format
        .as_deref()
        .map(Template::parse)
        .transpose()
        .map_err(|e| CliError::Message(format!("invalid --format: {e}")))?;
    let volumes: Vec<VolumeInfo> = client.call(routes::INSPECT, &InspectRequest { names })?;
    let Some(template) = template else {
        return write_out(out, &pretty_json(&volumes)?);
    };
    let mut text = String::new();
    for volume in &volumes {
        let value = serde_json::to_value(volume)
            .map_err(|e| CliError::Message(format!("formatting JSON: {e}")))?;
        let line = template
            .render(&value)
            .map_err(|e| CliError::Message(format!("invalid --format: {e}")))?;
        text.push_str(&line);
        text.push('\n');
    }
    write_out(out, &text)
}

/// Prints each removed name; each failure is reported on its own line and fails the command
/// only once all names have been tried.
fn remove(client: &DaemonClient, args: RmArgs, out: &mut dyn Write) -> Result<(), CliError> {
    let request = RemoveRequest {
        names: args.names,
        force: args.force,
    };
    let results: Vec<RemoveResult> = client.call(routes::REMOVE, &request)?;
    let mut any_failed = false;
    for result in results {
        match result.error {
            None => write_out(out, &format!("{}\n", result.name))?,
            Some(error) => {
                eprintln!("fvol: {error}");
                any_failed = true;
            }
        }
    }
    if any_failed {
        Err(CliError::AlreadyReported)
    } else {
        Ok(())
    }
}

fn prune(
    client: &DaemonClient,
    args: PruneArgs,
    input: &mut dyn BufRead,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    if !args.force && !confirm(PRUNE_WARNING, input, out)? {
        return Ok(());
    }
    let report: PruneResponse = client.call(routes::PRUNE, &Empty {})?;
    let mut text = String::new();
    if !report.removed.is_empty() {
        text.push_str("Deleted Volumes:\n");
        for name in &report.removed {
            text.push_str(name);
            text.push('\n');
        }
        text.push('\n');
    }
    text.push_str(&format!(
        "Total reclaimed space: {}\n",
        human_size(report.reclaimed_bytes)
    ));
    write_out(out, &text)
}

/// Asks on `out` and reads one line: only `y` or `yes` (any case) agrees; end of input is no.
fn confirm(prompt: &str, input: &mut dyn BufRead, out: &mut dyn Write) -> Result<bool, CliError> {
    write_out(out, prompt)?;
    let _ = out.flush();
    let mut answer = String::new();
    let read = input
        .read_line(&mut answer)
        .map_err(|e| CliError::Message(format!("reading the answer: {e}")))?;
    if read == 0 {
        write_out(out, "\n")?;
    }
    Ok(matches!(
        answer.trim().to_ascii_lowercase().as_str(),
        "y" | "yes"
    ))
}

fn mount(client: &DaemonClient, args: MountArgs, out: &mut dyn Write) -> Result<(), CliError> {
    let request = mount_request(args)?;
    let answer: PathResponse = client.call(routes::MOUNT, &request)?;
    write_out(out, &format!("{}\n", answer.path.display()))
}

fn unmount(client: &DaemonClient, args: UnmountArgs, out: &mut dyn Write) -> Result<(), CliError> {
    let request = UnmountRequest {
        name: args.name,
        target: args.target.map(absolute).transpose()?,
        reference: args.reference,
        all: args.all,
    };
    let answer: UnmountResponse = client.call(routes::UNMOUNT, &request)?;
    // Only --all can release what the user did not name.
    if request.all {
        for released in &answer.released {
            write_out(out, &format!("released {released}\n"))?;
        }
    }
    Ok(())
}

/// The daemon runs elsewhere: a relative target is resolved against our working directory.
fn mount_request(args: MountArgs) -> Result<MountRequest, CliError> {
    let target = match args.target {
        None => None,
        Some(target) => Some(absolute(target)?),
    };
    Ok(MountRequest {
        name: args.name,
        target,
        csi: false,
    })
}

fn absolute(path: PathBuf) -> Result<PathBuf, CliError> {
    std::path::absolute(&path)
        .map_err(|e| CliError::Message(format!("invalid path {}: {e}", path.display())))
}

fn fsck(client: &DaemonClient, name: String, out: &mut dyn Write) -> Result<(), CliError> {
    let answer: FsckResponse = client.call(routes::FSCK, &PathRequest { name: name.clone() })?;
    write_out(out, &format!("{}\n", answer.report))?;
    let clean = serde_json::from_str::<serde_json::Value>(&answer.report)
        .ok()
        .and_then(|r| r["problems"].as_array().map(|p| p.is_empty()))
        .unwrap_or(false);
    match clean {
        true => Ok(()),
        false => Err(CliError::Message(format!(
            "volume {name}: fsck found problems"
        ))),
    }
}

fn break_lock(client: &DaemonClient, name: String, out: &mut dyn Write) -> Result<(), CliError> {
    let answer: BreakLockResponse = client.call(routes::BREAK_LOCK, &PathRequest { name })?;
    match answer.broken.is_empty() {
        true => write_out(out, "no lock held\n"),
        false => write_out(out, &format!("broke: {}\n", answer.broken.join(", "))),
    }
}

fn path(client: &DaemonClient, name: String, out: &mut dyn Write) -> Result<(), CliError> {
    let answer: PathResponse = client.call(routes::PATH, &PathRequest { name })?;
    write_out(out, &format!("{}\n", answer.path.display()))
}

fn pretty_json<T: serde::Serialize>(value: &T) -> Result<String, CliError> {
    serde_json::to_string_pretty(value)
        .map(|json| json + "\n")
        .map_err(|e| CliError::Message(format!("formatting JSON: {e}")))
}

/// A closed pipe (`fvol ls | head`) is not an error worth reporting.
pub(super) fn write_out(out: &mut dyn Write, text: &str) -> Result<(), CliError> {
    match out.write_all(text.as_bytes()) {
        Err(e) if e.kind() != io::ErrorKind::BrokenPipe => {
            Err(CliError::Message(format!("writing output: {e}")))
        }
        _ => Ok(()),
    }
}

/// Splits `key=value` on the first `=` only; the error says what is wrong with the form.
fn split_key_value(text: &str) -> Result<(String, String), &'static str> {
    match text.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_string(), value.to_string())),
        Some(_) => Err("the key is empty; use the form key=value"),
        None => Err("no '='; use the form key=value"),
    }
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;

    use super::*;

    #[test]
    fn splits_on_first_equals() {
        let kv = |a: &str, b: &str| Ok((a.to_string(), b.to_string()));
        assert_eq!(split_key_value("o=size=100m"), kv("o", "size=100m"));
        assert_eq!(split_key_value("size=10G"), kv("size", "10G"));
        assert_eq!(split_key_value("label="), kv("label", ""));
        assert_eq!(split_key_value("a=b=c=d"), kv("a", "b=c=d"));
        assert!(split_key_value("size").unwrap_err().contains("no '='"));
        assert!(
            split_key_value("=10G")
                .unwrap_err()
                .contains("key is empty")
        );
        assert!(split_key_value("").is_err());
        let e = key_values("option", &["size".into()])
            .unwrap_err()
            .to_string();
        assert_eq!(e, "invalid option \"size\": no '='; use the form key=value");
    }

    fn ask(input: &str) -> (bool, String) {
        let mut out = Vec::new();
        let agreed = confirm("Sure? [y/N] ", &mut Cursor::new(input), &mut out).unwrap();
        (agreed, String::from_utf8(out).unwrap())
    }

    #[test]
    fn confirm_accepts_only_yes() {
        assert_eq!(ask("y\n"), (true, "Sure? [y/N] ".into()));
        assert!(ask("YES\n").0);
        assert!(!ask("\n").0);
        assert!(!ask("n\n").0);
        assert!(!ask("yep\n").0);
    }

    #[test]
    fn confirm_treats_end_of_input_as_no() {
        assert_eq!(ask(""), (false, "Sure? [y/N] \n".into()));
    }
}
