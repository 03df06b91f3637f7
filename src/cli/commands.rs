//! One function per volume command: build the request, call the daemon, print the answer.
use std::collections::BTreeMap;
use std::io::{self, BufRead, Write};
use std::path::PathBuf;

use super::CliError;
use super::args::{
    CreateArgs, ListFormat, LsArgs, MountArgs, PruneArgs, RmArgs, UnmountArgs, VolumeCommand,
};
use super::client::DaemonClient;
use super::filter::VolumeFilters;
use super::output::{human_size, volume_table};
use super::template::Template;
use crate::api::{
    self, BreakLockResponse, Empty, FsckResponse, InspectRequest, MountRequest, PathRequest,
    PathResponse, PruneResponse, RemoveRequest, RemoveResult, UnmountRequest, UnmountResponse,
    routes,
};
use crate::volume::VolumeInfo;

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
        VolumeCommand::Events(args) => super::events::run(client, args, out),
        VolumeCommand::Top(args) => super::top::run(client, args),
        VolumeCommand::Fsck { name } => fsck(client, name, out),
        VolumeCommand::BreakLock { name } => break_lock(client, name, out),
    }
}

fn create(client: &DaemonClient, args: CreateArgs, out: &mut dyn Write) -> Result<(), CliError> {
    let request = api::CreateRequest {
        name: args.name,
        driver: args.driver,
        options: key_values("option", &args.opts)?,
        labels: key_values("label", &args.labels)?,
    };
    let info: VolumeInfo = client.call(routes::CREATE, &request)?;
    write_out(out, &format!("{}\n", info.name))
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
