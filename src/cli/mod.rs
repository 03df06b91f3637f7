//! The `fvol` command: `fvol daemon` runs the daemon; every other command is its client.
mod args;
pub(crate) mod client;
mod commands;
mod error;
mod events;
mod filter;
mod output;
mod progress;
mod template;
mod top;

use std::io::{self, Write};
use std::path::Path;
use std::process::ExitCode;

use clap::Parser;

pub use args::{Cli, Command, DaemonArgs, VolumeCommand};
pub use error::CliError;

pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => {
            let _ = err.print();
            // --help and --version are not failures.
            return if err.use_stderr() {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    // Relative to our working directory, not the daemon's.
    let root = match std::path::absolute(&cli.root) {
        Ok(root) => root,
        Err(err) => {
            eprintln!("fvol: invalid --root {}: {err}", cli.root.display());
            return ExitCode::FAILURE;
        }
    };
    match cli.command {
        Command::Daemon(args) if args.stop => match stop_daemon(&root) {
            Ok(()) => ExitCode::SUCCESS,
            Err(err) => {
                eprintln!("fvol daemon --stop: {err}");
                ExitCode::FAILURE
            }
        },
        Command::Daemon(args) => match daemon_settings(&root, args) {
            Ok(settings) => crate::daemon::main(&root, settings),
            Err(err) => {
                eprintln!("fvol daemon: {err}");
                ExitCode::FAILURE
            }
        },
        Command::Keeper => crate::keeper::main(&root),
        Command::Csi(args) => crate::csi::main(
            &root,
            crate::csi::Settings {
                endpoint: args.endpoint,
                node_id: args.node_id,
                mode: args.mode,
            },
        ),
        Command::Completions { shell } => {
            let mut command = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut command, "fvol", &mut io::stdout().lock());
            ExitCode::SUCCESS
        }
        Command::Manpages { dir } => match write_manpages(&dir) {
            Ok(()) => ExitCode::SUCCESS,
            Err(err) => {
                eprintln!("fvol manpages: {err}");
                ExitCode::FAILURE
            }
        },
        Command::Version => {
            let _ = io::stdout().lock().write_all(version_text().as_bytes());
            ExitCode::SUCCESS
        }
        Command::Volume(command) => match run(&root, command, &mut io::stdout().lock()) {
            Ok(()) => ExitCode::SUCCESS,
            Err(CliError::AlreadyReported) => ExitCode::FAILURE,
            Err(err) => {
                eprintln!("fvol: {err}");
                ExitCode::FAILURE
            }
        },
    }
}

/// `fvol.1` and `fvol-COMMAND.1` for every command, from the clap definitions.
fn write_manpages(dir: &Path) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let command = <Cli as clap::CommandFactory>::command();
    clap_mangen::generate_to(command, dir).map_err(|e| format!("{}: {e}", dir.display()))
}

/// `fvol version`: the version, the commit and what the running kernel's FUSE offers.
fn version_text() -> String {
    let features = crate::fuse::features::probe();
    format!(
        "fvol {} (commit {})\nkernel {}: FUSE {}\n",
        crate::daemon::metrics::VERSION,
        crate::daemon::metrics::COMMIT,
        features.kernel,
        features.describe()
    )
}

/// What the daemon flags and the configuration file ask for (a flag wins), with paths made
/// absolute against our working directory. Checked before the daemon changes anything.
fn daemon_settings(root: &Path, args: DaemonArgs) -> Result<crate::daemon::Settings, String> {
    let config_path = args
        .config
        .as_deref()
        .map(|p| {
            std::path::absolute(p).map_err(|e| format!("invalid --config {}: {e}", p.display()))
        })
        .transpose()?;
    let config = crate::daemon::config::load(config_path.as_deref(), &crate::driver::registry())?;
    let fallback = crate::volume::manager::ManagerSettings::default();
    let seconds = std::time::Duration::from_secs;
    let manager = crate::volume::manager::ManagerSettings {
        stale_ref_grace: args
            .stale_ref_grace
            .or(config.stale_ref_grace)
            .map_or(fallback.stale_ref_grace, seconds),
        tmpfs_linger: args
            .tmpfs_linger
            .or(config.tmpfs_linger)
            .map_or(fallback.tmpfs_linger, seconds),
        defaults: config.defaults,
        startup_mounts: args
            .startup_mounts
            .or(config.startup_mounts)
            .map_or(fallback.startup_mounts, |n| n as usize),
    };
    Ok(crate::daemon::Settings {
        metrics_listen: args.metrics_listen.clone(),
        log_json: args.log_format == args::LogFormat::Json,
        plugin: daemon_plugin(root, args)?,
        manager,
    })
}

/// The plugin configuration the daemon flags ask for (None: no plugin).
fn daemon_plugin(
    root: &Path,
    args: DaemonArgs,
) -> Result<Option<crate::daemon::PluginConfig>, String> {
    if args.no_plugin {
        return Ok(None);
    }
    let absolute = |path: Option<std::path::PathBuf>, flag: &str| {
        path.map(|p| {
            std::path::absolute(&p).map_err(|e| format!("invalid {flag} {}: {e}", p.display()))
        })
        .transpose()
    };
    let socket = absolute(args.plugin_socket, "--plugin-socket")?;
    let spec = absolute(args.plugin_spec, "--plugin-spec")?;
    Ok(Some(crate::daemon::PluginConfig::new(root, socket, spec)))
}

/// How long `fvol daemon --stop` waits for the daemon to unmount everything and exit.
const STOP_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);

/// Asks the daemon of `root` to stop for good, then waits until it has exited (its lock on
/// the root is free).
fn stop_daemon(root: &Path) -> Result<(), CliError> {
    let client = client::DaemonClient::new(root)?;
    let _: crate::api::Empty = client.call(crate::api::routes::STOP, &crate::api::Empty {})?;
    let deadline = std::time::Instant::now() + STOP_TIMEOUT;
    while crate::daemon::lock::is_held(root) {
        if std::time::Instant::now() > deadline {
            return Err(CliError::Message(format!(
                "the daemon of {} is still running {}s after it was asked to stop",
                root.display(),
                STOP_TIMEOUT.as_secs()
            )));
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    Ok(())
}

/// Runs one client command against the daemon of `root`, printing results to `out`.
pub fn run(root: &Path, command: VolumeCommand, out: &mut dyn Write) -> Result<(), CliError> {
    let client = client::DaemonClient::new(root)?;
    commands::run(command, &client, out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon::test_support::TestServer;

    #[test]
    fn daemon_flags_win_over_the_configuration_file() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("fvol.toml");
        std::fs::write(
            &config,
            "[daemon]\nstale_ref_grace = 300\ntmpfs_linger = 0\n[rbd]\nsize = \"1G\"\n",
        )
        .unwrap();
        let args = |stale_ref_grace| DaemonArgs {
            no_plugin: true,
            config: Some(config.clone()),
            stale_ref_grace,
            ..DaemonArgs::default()
        };
        let from_file = daemon_settings(dir.path(), args(None)).unwrap().manager;
        assert_eq!(from_file.stale_ref_grace.as_secs(), 300);
        assert_eq!(from_file.tmpfs_linger.as_secs(), 0);
        assert_eq!(from_file.defaults["rbd"]["size"], "1G");
        let flagged = daemon_settings(dir.path(), args(Some(7))).unwrap().manager;
        assert_eq!(flagged.stale_ref_grace.as_secs(), 7);
        assert_eq!(flagged.tmpfs_linger.as_secs(), 0);
        // Neither: the built-in defaults.
        std::fs::write(&config, "").unwrap();
        let neither = daemon_settings(dir.path(), args(None)).unwrap().manager;
        assert_eq!(neither.stale_ref_grace.as_secs(), 60);
        assert_eq!(neither.tmpfs_linger.as_secs(), 10);
        assert_eq!(neither.startup_mounts, 8);
    }

    /// Runs `fvol --root ROOT ARGS...` and returns its result and standard output.
    fn fvol(root: &Path, args: &[&str]) -> (Result<(), CliError>, String) {
        let root_arg = ["fvol", "--root", root.to_str().unwrap()];
        let cli = Cli::try_parse_from(root_arg.iter().chain(args)).unwrap();
        let Command::Volume(command) = cli.command else {
            panic!("not a client command: {args:?}");
        };
        let mut out = Vec::new();
        let result = run(root, command, &mut out);
        (result, String::from_utf8(out).unwrap())
    }

    #[test]
    fn without_a_daemon_says_how_to_start_one() {
        let root = tempfile::tempdir().unwrap();
        let (result, out) = fvol(root.path(), &["ls"]);
        let root = root.path().display();
        assert_eq!(
            result.unwrap_err().to_string(),
            format!(
                "cannot reach the fvol daemon at {root}/fvol.sock \
                 (is it running? start it with: fvol daemon --root {root})"
            )
        );
        assert_eq!(out, "");
    }

    #[test]
    fn bad_filter_fails_before_contacting_the_daemon() {
        let root = tempfile::tempdir().unwrap();
        let (result, _) = fvol(root.path(), &["ls", "--filter", "size=1"]);
        assert!(result.unwrap_err().to_string().contains("valid keys are"));
    }

    #[test]
    fn ls_prints_the_filtered_table() {
        let server = TestServer::start();
        let (result, out) = fvol(server.root.path(), &["ls"]);
        result.unwrap();
        assert!(out.lines().nth(1).unwrap().contains("data"), "{out}");
        let (result, out) = fvol(server.root.path(), &["ls", "-q", "--filter", "name=zzz"]);
        result.unwrap();
        assert_eq!(out, "");
        let (_, out) = fvol(
            server.root.path(),
            &["ls", "-q", "--filter", "dangling=true"],
        );
        assert_eq!(out, "data\n");
    }

    #[test]
    fn ls_json_is_the_array() {
        let server = TestServer::start();
        let (result, out) = fvol(server.root.path(), &["ls", "--format", "json"]);
        result.unwrap();
        let volumes: Vec<crate::volume::VolumeInfo> = serde_json::from_str(&out).unwrap();
        assert_eq!(volumes[0].name, "data");
        assert!(out.contains("\"MountRefs\""));
    }

    #[test]
    fn rm_prints_removed_names_and_fails_if_any_failed() {
        let server = TestServer::start();
        let (result, out) = fvol(server.root.path(), &["rm", "data", "gone", "old"]);
        assert!(matches!(result, Err(CliError::AlreadyReported)));
        assert_eq!(out, "data\nold\n");
    }

    #[test]
    fn prune_with_force_reports_what_went() {
        let server = TestServer::start();
        let (result, out) = fvol(server.root.path(), &["prune", "-f"]);
        result.unwrap();
        assert_eq!(
            out,
            "Deleted Volumes:\nold\n\nTotal reclaimed space: 1.5KiB\n"
        );
    }

    #[test]
    fn relative_mount_target_is_made_absolute() {
        let server = TestServer::start();
        let (result, out) = fvol(server.root.path(), &["mount", "data", "--target", "mnt"]);
        result.unwrap();
        assert_eq!(out, "/fvol/volumes/data/mnt\n");
        let (result, _) = fvol(server.root.path(), &["unmount", "data", "--target", "mnt"]);
        result.unwrap();
        let target = std::env::current_dir().unwrap().join("mnt");
        let target = target.display();
        assert_eq!(
            server.volumes.calls(),
            [
                format!("mount data cli:{target}"),
                format!("release data cli:{target}"),
            ]
        );
    }

    #[test]
    fn daemon_errors_come_back_as_their_message() {
        let server = TestServer::start();
        let (result, _) = fvol(server.root.path(), &["inspect", "data", "gone"]);
        assert_eq!(result.unwrap_err().to_string(), "no such volume: gone");
        let (result, _) = fvol(server.root.path(), &["path", "data"]);
        result.unwrap();
    }

    #[test]
    fn bad_option_is_named() {
        let root = tempfile::tempdir().unwrap();
        let (result, _) = fvol(root.path(), &["create", "v", "-o", "size"]);
        assert!(result.unwrap_err().to_string().contains("\"size\""));
    }
}
