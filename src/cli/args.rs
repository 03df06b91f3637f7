//! The command line, as clap parses it.
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// The drivers and their options, from their schemas (`driver::help_text`), then examples.
fn create_help() -> String {
    format!(
        "{}\n\
         Defaults for any driver's options can be set in the daemon's configuration file \
         (fvol daemon --config).\n\n\
         Examples:\n  \
           fvol create data -o size=10G -o uid=1000 -o gid=1000\n  \
           fvol create -d tmpfs -o size=256M scratch\n  \
           fvol create -d rbd -o size=10G db\n  \
           fvol create --label project=web cache",
        crate::driver::help_text()
    )
}

const LS_HELP: &str = "\
Filters (--filter KEY=VALUE, repeatable; different keys must all match, values of one key are alternatives):
  name=TEXT        the name contains TEXT
  driver=DRIVER    the volume uses DRIVER
  label=KEY        the volume has label KEY
  label=KEY=VALUE  the volume has label KEY set to VALUE
  dangling=true    the volume has no mount reference (false: it has at least one)";

/// Volumes for containers, each its own FUSE filesystem with a quota.
///
/// Every command except `daemon` is a request to the daemon on ROOT/fvol.sock.
#[derive(Debug, Parser)]
#[command(name = "fvol", version)]
pub struct Cli {
    /// The daemon's state directory: catalog, volumes and the API socket
    #[arg(
        long,
        global = true,
        env = "FVOL_ROOT",
        default_value = "/var/lib/fvol",
        value_name = "DIR"
    )]
    pub root: PathBuf,
    #[command(subcommand)]
    pub command: Command,
}

/// `fvol csi`.
#[derive(Debug, Args)]
pub struct CsiArgs {
    /// Where to serve: unix:///PATH (the socket is made 0600, a stale one replaced)
    #[arg(long, env = "CSI_ENDPOINT", value_name = "unix:///PATH")]
    pub endpoint: String,
    /// This node's name, the value of the topology key fvol.io/node (Kubernetes: the node name)
    #[arg(long, env = "FVOL_NODE_ID", value_name = "NAME")]
    pub node_id: String,
    /// Which services to serve: the controller (once per cluster), the node service (on every
    /// node), or both
    #[arg(long, value_enum, default_value = "both")]
    pub mode: crate::csi::Mode,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon that hosts the volumes' filesystems and serves the API and the Docker
    /// volume plugin (until SIGTERM, which leaves the volumes mounted for the next daemon, or
    /// `fvol daemon --stop`, which unmounts them)
    #[command(after_help = daemon_help())]
    Daemon(DaemonArgs),
    /// Hold the daemon's FUSE connections across its restarts (started by the daemon)
    #[command(hide = true)]
    Keeper,
    /// Print the shell completion script for bash, zsh or fish
    #[command(after_help = COMPLETIONS_HELP)]
    Completions {
        #[arg(value_enum, value_name = "SHELL")]
        shell: clap_complete::Shell,
    },
    /// Write the man pages (fvol.1 and one per command) into a directory
    Manpages {
        #[arg(value_name = "DIR")]
        dir: PathBuf,
    },
    /// Print the version, the git commit and the kernel's FUSE features
    Version,
    /// Serve the Container Storage Interface (Kubernetes) over gRPC on a unix socket, as a
    /// client of the daemon (docs/csi.md)
    Csi(CsiArgs),
    #[command(flatten)]
    Volume(VolumeCommand),
}

const COMPLETIONS_HELP: &str = "\
Installing (tools/install does this):
  fvol completions bash > /usr/share/bash-completion/completions/fvol
  fvol completions zsh  > /usr/share/zsh/vendor-completions/_fvol
  fvol completions fish > /usr/share/fish/vendor_completions.d/fvol.fish";

const INSPECT_HELP: &str = "\
Formats (--format, as docker inspect -f):
  TEMPLATE        text with {{.Field}}, {{.Field.Sub}} and {{json .Field}}, printed once per
                  volume, e.g. '{{.Name}} {{.Status.UsedBytes}}'; numbers print as integers
  .Field.Sub      a field selector: the same as {{.Field.Sub}}
  Fields: Name, Driver, Mountpoint, CreatedAt, Labels, Options, Scope, Status (SizeLimit,
  UsedBytes, InodeLimit, UsedInodes, Mounted, MountRefs, References)";

/// The plugin and the configuration file; the sections and the options without defaults
/// come from the drivers' schemas.
fn daemon_help() -> String {
    let drivers = crate::driver::registry();
    let sections: Vec<String> = drivers.iter().map(|d| format!("[{}]", d.name())).collect();
    let per_volume: Vec<String> = drivers
        .iter()
        .flat_map(|d| d.doc().options)
        .filter(|o| o.per_volume)
        .map(|o| format!("{}=", o.name))
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    format!(
        "\
Docker volume plugin:
  By default the daemon also serves the Docker volume plugin protocol on
  /run/docker/plugins/fvol.sock, where dockerd finds it as driver `fvol`:
    docker volume create -d fvol -o size=1G data
    docker run -v data:/data IMAGE
  Two daemons on one host need distinct plugin sockets (or --no-plugin on all but one).
  `fvol daemon --stop` removes its plugin socket and spec file.

Restarts and upgrades:
  Volumes outlive the daemon: on SIGTERM (or a crash) their mounts stay, held by a small
  `fvol keeper` process, and calls on them wait until `fvol daemon` runs again, which serves
  them where they were (Linux 6.9 or later). `fvol daemon --stop` unmounts every volume and
  stops the daemon for good.

Configuration file (/etc/fvol/fvol.toml, or --config FILE; root's, not writable by others):
  [daemon]                          # flags override these
  stale_ref_grace = 60
  tmpfs_linger = 10
  startup_mounts = 8
  [rbd]                             # defaults for new rbd volumes' options
  conf = \"/etc/ceph/ceph.conf\"
  pool = \"rbd\"
  size = \"10G\"
  A section per driver ({}) takes that driver's options
  (see `fvol create --help`) except {}. An unknown section or key, or a bad value,
  stops the daemon with an error naming it. A volume keeps the options it was created
  with (defaults included, as `fvol inspect` shows them) when the file changes.",
        sections.join(", "),
        per_volume.join(" and ")
    )
}

/// `fvol daemon` flags.
#[derive(Debug, Default, Args)]
pub struct DaemonArgs {
    /// Serve the Docker volume plugin on this socket [default: /run/docker/plugins/fvol.sock,
    /// or ROOT/plugin.sock with --plugin-spec]
    #[arg(long, value_name = "PATH", conflicts_with = "no_plugin")]
    pub plugin_socket: Option<PathBuf>,
    /// Register the plugin with a spec file pointing at its socket, instead of relying on the
    /// socket directory [default: /etc/docker/plugins/fvol.spec]
    #[arg(
        long,
        value_name = "FILE",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "/etc/docker/plugins/fvol.spec",
        conflicts_with = "no_plugin"
    )]
    pub plugin_spec: Option<PathBuf>,
    /// Do not serve the Docker volume plugin
    #[arg(long)]
    pub no_plugin: bool,
    /// Stop the running daemon for good: unmount every volume, then exit (SIGTERM instead
    /// leaves the volumes mounted, waiting for the next daemon)
    #[arg(long, conflicts_with_all = [
        "plugin_socket", "plugin_spec", "no_plugin", "stale_ref_grace", "tmpfs_linger", "config"
    ])]
    pub stop: bool,
    /// Release a plugin reference by itself once it is this old and no container's mount
    /// namespace holds its volume any more (its holder is gone) [default: [daemon]
    /// stale_ref_grace of the configuration file, else 60]
    #[arg(long, value_name = "SECONDS",
          value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub stale_ref_grace: Option<u64>,
    /// Keep a tmpfs volume's data this long after its last Docker/Pouch Unmount, for the
    /// Mount that follows Docker's copy-up of image data into a new volume (0: drop at once)
    /// [default: [daemon] tmpfs_linger of the configuration file, else 10]
    #[arg(long, value_name = "SECONDS",
          value_parser = clap::value_parser!(u64).range(0..=3_600))]
    pub tmpfs_linger: Option<u64>,
    /// Mount this many volumes at once at start-up (those with references, mounted again
    /// before the daemon serves; rbd tries run apart, as many at once) [default: [daemon]
    /// startup_mounts of the configuration file, else 8]
    #[arg(long, value_name = "N",
          value_parser = clap::value_parser!(u64).range(1..=256))]
    pub startup_mounts: Option<u64>,
    /// The configuration file: defaults for each driver's options, and daemon settings; it
    /// must exist when given [default: /etc/fvol/fvol.toml, if it exists]
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Also serve Prometheus metrics (GET /metrics) on this TCP address, e.g. 127.0.0.1:9470
    /// (repeatable). Without it nothing listens on TCP; the API socket always serves
    /// /metrics
    #[arg(long, value_name = "IP:PORT",
          value_parser = crate::daemon::metrics::parse_listen_address)]
    pub metrics_listen: Vec<std::net::SocketAddr>,
    /// How log lines look on stderr: text, or json (one object a line: time, level, target,
    /// message)
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// `[TIME LEVEL target] message`
    #[default]
    Text,
    /// One JSON object per line
    Json,
}

/// The commands served by the daemon.
#[derive(Debug, Subcommand)]
pub enum VolumeCommand {
    /// Create a volume and print its name
    #[command(after_help = create_help())]
    Create(CreateArgs),
    /// List volumes
    #[command(visible_alias = "list", after_help = LS_HELP)]
    Ls(LsArgs),
    /// Show volumes in detail, as a JSON array, or formatted with --format
    #[command(after_help = INSPECT_HELP)]
    Inspect {
        #[arg(required = true, value_name = "NAME")]
        names: Vec<String>,
        /// A template or field selector applied to each volume (see below)
        #[arg(short, long, value_name = "TEMPLATE")]
        format: Option<String>,
    },
    /// Remove volumes, printing each name removed
    #[command(visible_alias = "remove")]
    Rm(RmArgs),
    /// Remove every volume that is not mounted
    Prune(PruneArgs),
    /// Mount a volume (held until `fvol unmount`) and print its mountpoint
    Mount(MountArgs),
    /// Release a mount made by `fvol mount` (with the same --target), or any reference
    #[command(visible_alias = "umount", after_help = UNMOUNT_HELP)]
    Unmount(UnmountArgs),
    /// Print the mountpoint of a volume, whether mounted or not
    Path {
        #[arg(value_name = "NAME")]
        name: String,
    },
    /// Write a tar stream of a volume at one instant (owners, modes, times, xattrs, hard
    /// links, holes), taken while containers write
    Export {
        #[arg(value_name = "NAME")]
        name: String,
        /// Write the stream to FILE instead of stdout
        #[arg(short, long, value_name = "FILE")]
        output: Option<PathBuf>,
        /// Show no progress (shown on a terminal only: bytes done, rate, time left)
        #[arg(short, long)]
        quiet: bool,
    },
    /// Fill a volume from a tar stream (FILE, or stdin with - or nothing); the quota holds
    Import {
        #[arg(value_name = "NAME")]
        name: String,
        #[arg(value_name = "FILE")]
        file: Option<PathBuf>,
        /// Show no progress (shown on a terminal only: bytes done, rate, time left)
        #[arg(short, long)]
        quiet: bool,
    },
    /// Take, list, remove and restore snapshots of a volume
    #[command(subcommand, after_help = SNAPSHOT_HELP)]
    Snapshot(SnapshotCommand),
    /// Change a volume's size or inode limit, mounted and in use or not
    #[command(after_help = UPDATE_HELP)]
    Update(UpdateArgs),
    /// Show what happens to volumes as it happens (and what happened, with --since)
    #[command(after_help = EVENTS_HELP)]
    Events(EventsArgs),
    /// A live view of the volumes: usage, operations, throughput and p99 latency, refreshed
    /// every second (keys: n u o r w l sort, q quits)
    Top(TopArgs),
    /// Check an unmounted rbd volume's image and print the report (non-zero exit if damaged)
    Fsck {
        #[arg(value_name = "NAME")]
        name: String,
    },
    /// Break the lock a dead host left on an rbd volume's image, so another can mount it.
    /// Make sure the holder is really gone: it is fenced off the cluster.
    BreakLock {
        #[arg(value_name = "NAME")]
        name: String,
    },
}

const SNAPSHOT_HELP: &str = "\
A snapshot is the volume at one instant, taken while containers write (their writes wait while
it is taken: an instant with reflinks, the copy time for a copy; snapshot ls shows both). It is
kept on the host under ROOT/snapshots and does not count against the volume's quota.
fvol create NEW --from NAME@SNAP makes a new volume from one (--from NAME: from the volume now).

Examples:
  fvol snapshot create data before-upgrade
  fvol snapshot ls data --format json
  fvol snapshot restore data before-upgrade   # the volume must be unmounted
  fvol snapshot rm data before-upgrade";

#[derive(Debug, Subcommand)]
pub enum SnapshotCommand {
    /// Take a snapshot of a volume, mounted and in use or not
    Create {
        #[arg(value_name = "NAME")]
        name: String,
        #[arg(value_name = "SNAP")]
        snapshot: String,
        /// Show no progress (shown on a terminal only: bytes done, rate, time left)
        #[arg(short, long)]
        quiet: bool,
    },
    /// List a volume's snapshots: when, how (reflink or copy), size, how long writes waited
    #[command(visible_alias = "list")]
    Ls {
        #[arg(value_name = "NAME")]
        name: String,
        /// Output format
        #[arg(long, value_enum, default_value = "table")]
        format: ListFormat,
    },
    /// Remove a snapshot
    #[command(visible_alias = "remove")]
    Rm {
        #[arg(value_name = "NAME")]
        name: String,
        #[arg(value_name = "SNAP")]
        snapshot: String,
    },
    /// Roll an unmounted volume back to a snapshot
    Restore {
        #[arg(value_name = "NAME")]
        name: String,
        #[arg(value_name = "SNAP")]
        snapshot: String,
    },
}

const UPDATE_HELP: &str = "\
Options (-o KEY=VALUE, as for create; only these two change):
  size=SIZE    the byte limit. Growing always works; shrinking works down to what the volume
               holds (below that it is refused, naming the smallest allowed size). A mounted
               volume has the new limit at once (df shows it). rbd: a bigger size grows the
               image and its filesystem online; a smaller one lowers the quota only (the image
               keeps its size)
  inodes=N     the inode limit, down to the inodes in use

Examples:
  fvol update data -o size=20G
  fvol update scratch -o size=128M -o inodes=50000";

#[derive(Debug, Args)]
pub struct UpdateArgs {
    #[arg(value_name = "NAME")]
    pub name: String,
    /// A new limit: size=SIZE or inodes=N
    #[arg(short = 'o', long = "opt", value_name = "KEY=VALUE", required = true)]
    pub opts: Vec<String>,
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    /// The volume's name (default: a random 64-hex-digit name)
    #[arg(value_name = "NAME")]
    pub name: Option<String>,
    /// The volume driver (default: local)
    #[arg(short, long, value_name = "DRIVER")]
    pub driver: Option<String>,
    /// A driver option (see below)
    #[arg(short = 'o', long = "opt", value_name = "KEY=VALUE")]
    pub opts: Vec<String>,
    /// Metadata to attach to the volume
    #[arg(long = "label", value_name = "KEY=VALUE")]
    pub labels: Vec<String>,
    /// Start with a copy of a volume (as it is now) or of one of its snapshots (the same as
    /// -o from=NAME[@SNAP])
    #[arg(long, value_name = "NAME[@SNAP]")]
    pub from: Option<String>,
    /// With --from: show no progress of the copy (shown on a terminal only)
    #[arg(short, long)]
    pub quiet: bool,
}

#[derive(Debug, Args)]
pub struct LsArgs {
    /// Print only the names
    #[arg(short, long)]
    pub quiet: bool,
    /// Show only the volumes that match (see below)
    #[arg(short, long = "filter", value_name = "KEY=VALUE")]
    pub filters: Vec<String>,
    /// Output format
    #[arg(long, value_enum, default_value_t = ListFormat::Table)]
    pub format: ListFormat,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ListFormat {
    /// Columns: DRIVER, VOLUME NAME, SIZE, USED, MOUNTED
    Table,
    /// A JSON array of the volumes, as `inspect` shows them
    Json,
}

const EVENTS_HELP: &str = "\
Events: create, remove, mount, unmount (with the reference), resize, snapshot, quota-full
  (a volume refused a write for space; once until its usage goes down), lock-broken,
  handler-restart (a volume mounted again at a daemon start).
Filters (--filter KEY=VALUE, repeatable; different keys must all match, values of one key are
alternatives):
  volume=NAME      events of volume NAME
  type=TYPE        events of this type
Times (--since, --until): RFC 3339 (2026-12-03T18:00:00Z), Unix seconds (1764784800), or a
  duration before now (10m, 1h30m). The daemon keeps its last 4096 events since it started.
Without --until, new events are printed as they happen until interrupted.";

#[derive(Debug, Args)]
pub struct EventsArgs {
    /// Show events from this time on, also those that already happened
    #[arg(long, value_name = "TIME")]
    pub since: Option<String>,
    /// Stop at this time (and print only what happened when it is in the past)
    #[arg(long, value_name = "TIME")]
    pub until: Option<String>,
    /// Show only the events that match (see below)
    #[arg(short, long = "filter", value_name = "KEY=VALUE")]
    pub filters: Vec<String>,
    /// Output format
    #[arg(long, value_enum, default_value_t = EventFormat::Text)]
    pub format: EventFormat,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum EventFormat {
    /// TIME TYPE VOLUME (driver=..., attributes)
    Text,
    /// One JSON object per event and line
    Json,
}

#[derive(Debug, Args)]
pub struct TopArgs {
    /// The first sort key (keys change it: n u o r w l)
    #[arg(long, value_enum, default_value_t = TopSort::Usage)]
    pub sort: TopSort,
    /// Seconds between refreshes
    #[arg(long, value_name = "SECONDS", default_value_t = 1.0)]
    pub interval: f64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum TopSort {
    /// The volume's name (key n)
    Name,
    /// Used bytes against the limit, fullest first (key u)
    Usage,
    /// Operations per second (key o)
    Ops,
    /// Bytes read per second (key r)
    Read,
    /// Bytes written per second (key w)
    Write,
    /// p99 latency (key l)
    Latency,
}

impl TopSort {
    pub fn name(self) -> &'static str {
        match self {
            TopSort::Name => "name",
            TopSort::Usage => "usage",
            TopSort::Ops => "ops",
            TopSort::Read => "read",
            TopSort::Write => "write",
            TopSort::Latency => "latency",
        }
    }

    pub fn for_key(key: char) -> Option<TopSort> {
        Some(match key {
            'n' => TopSort::Name,
            'u' => TopSort::Usage,
            'o' => TopSort::Ops,
            'r' => TopSort::Read,
            'w' => TopSort::Write,
            'l' => TopSort::Latency,
            _ => return None,
        })
    }
}

#[derive(Debug, Args)]
pub struct RmArgs {
    /// Remove mounted volumes too, dropping their mounts first
    #[arg(short, long)]
    pub force: bool,
    #[arg(required = true, value_name = "NAME")]
    pub names: Vec<String>,
}

#[derive(Debug, Args)]
pub struct PruneArgs {
    /// Do not ask for confirmation
    #[arg(short, long)]
    pub force: bool,
}

#[derive(Debug, Args)]
pub struct MountArgs {
    #[arg(value_name = "NAME")]
    pub name: String,
    /// Also bind-mount the volume on this existing directory
    #[arg(long, value_name = "DIR")]
    pub target: Option<PathBuf>,
}

const UNMOUNT_HELP: &str = "\
References:
  A volume stays mounted while it has a reference: `cli` (fvol mount), `cli:/dir`
  (fvol mount --target /dir), `plugin:ID` (a Docker or Pouch container) or `csi:/dir` (a
  Kubernetes stage or publish of `fvol csi`). `fvol inspect` lists them under
  Status.References with the time each was taken. The daemon also drops plugin references
  whose containers are gone (see docs/docker.md). --target releases only `cli:/dir`: a pod's
  `csi:/dir` is released by kubelet, or with --ref.";

#[derive(Debug, Args)]
pub struct UnmountArgs {
    #[arg(value_name = "NAME")]
    pub name: String,
    /// Release the bind mount made with `fvol mount --target DIR`
    #[arg(long, value_name = "DIR", conflicts_with_all = ["reference", "all"])]
    pub target: Option<PathBuf>,
    /// Release this reference, as `fvol inspect` shows it (e.g. plugin:ID)
    #[arg(long = "ref", value_name = "REF", conflicts_with = "all")]
    pub reference: Option<String>,
    /// Release every reference and unmount (lazily if the volume is still in use)
    #[arg(long)]
    pub all: bool,
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn create_help_lists_driver_and_options() {
        let mut command = Cli::command();
        let help = command
            .find_subcommand_mut("create")
            .unwrap()
            .render_help()
            .to_string();
        for needle in [
            "local", "tmpfs", "rbd", "size=", "inodes=", "uid=", "gid=", "mode=", "mount=",
            "pool=", "conf=",
        ] {
            assert!(help.contains(needle), "{needle} missing from:\n{help}");
        }
    }

    #[test]
    fn daemon_help_names_every_driver_section() {
        let mut command = Cli::command();
        let help = command
            .find_subcommand_mut("daemon")
            .unwrap()
            .render_help()
            .to_string();
        for driver in crate::driver::names() {
            assert!(help.contains(&format!("[{driver}]")), "{driver}: {help}");
        }
        assert!(help.contains("except image= and mount="), "{help}");
        let ours = &help[help.find("Docker volume plugin:").unwrap()..];
        assert!(ours.lines().all(|l| l.len() <= 100), "{ours}");
    }

    fn daemon_args(args: &[&str]) -> DaemonArgs {
        let cli = Cli::try_parse_from(["fvol", "daemon"].iter().chain(args)).unwrap();
        match cli.command {
            Command::Daemon(args) => args,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn daemon_plugin_flags() {
        let none = daemon_args(&[]);
        assert_eq!(
            (none.plugin_socket, none.plugin_spec, none.no_plugin),
            (None, None, false)
        );
        let spec = daemon_args(&["--plugin-spec"]);
        assert_eq!(
            spec.plugin_spec,
            Some(PathBuf::from("/etc/docker/plugins/fvol.spec"))
        );
        let both = daemon_args(&["--plugin-spec=/x/y.spec", "--plugin-socket", "/s.sock"]);
        assert_eq!(both.plugin_spec, Some(PathBuf::from("/x/y.spec")));
        assert_eq!(both.plugin_socket, Some(PathBuf::from("/s.sock")));
        assert!(daemon_args(&["--no-plugin"]).no_plugin);
        for bad in [
            &["daemon", "--no-plugin", "--plugin-spec"][..],
            &["daemon", "--no-plugin", "--plugin-socket", "/s"][..],
        ] {
            let err = Cli::try_parse_from(["fvol"].iter().chain(bad)).unwrap_err();
            assert!(err.to_string().contains("cannot be used with"), "{err}");
        }
    }

    #[test]
    fn root_option_is_accepted_after_the_subcommand() {
        let cli = Cli::try_parse_from(["fvol", "ls", "--root", "/tmp/r"]).unwrap();
        assert_eq!(cli.root, PathBuf::from("/tmp/r"));
    }
}
