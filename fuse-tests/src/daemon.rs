//! A private fvol daemon, stopped on drop.
//!
//! - `TestRoot`: a temporary directory `fvol-test-XXXX/` holding the daemon's root (`root/`)
//!   and a `scratch/` directory outside it (for `mount=` directories and bind targets). Cheap
//!   to clone; the directory goes when the last clone (and every daemon on it) is gone, after
//!   every mount under it has been lazily detached.
//! - `TestDaemon`: `fvol --root ROOT daemon --no-plugin` on a `TestRoot`, driven through the
//!   real CLI. Without `--no-plugin` every daemon would serve the Docker plugin on the one
//!   host-wide `/run/docker/plugins/fvol.sock`, and parallel tests would fight over it; tests of
//!   the plugin start theirs with `start_with_args` and a private `--plugin-spec`. Dropping it
//!   stops the daemon (SIGTERM, then SIGKILL) and detaches every mount left under the test
//!   directory (which ends the connections the keeper held, and so the keeper), so a
//!   panicking test leaks neither a process nor a mount. `stop` stops it for good (`fvol
//!   daemon --stop`), `terminate` for a restart (SIGTERM: the volumes stay mounted), `kill9`
//!   as a crash.
//!
//! The binary is `$FVOL_BIN`, or `<workspace>/target/release/fvol`.
use std::ffi::{OsStr, OsString};
use std::fs::{File, OpenOptions};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::mount::{MntFlags, umount2};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tempfile::TempDir;

/// How long a daemon may take to start serving, or to exit after a signal.
pub const DAEMON_TIMEOUT: Duration = Duration::from_secs(10);
const POLL: Duration = Duration::from_millis(20);
/// The daemon's stderr, appended to across restarts.
pub const LOG_FILE: &str = "daemon.log";
/// The configuration file of a `TestRoot`, beside its root (see `TestRoot::config`).
const CONFIG_FILE: &str = "fvol.toml";
/// Lines of the daemon's log a failing test prints.
const SHOWN_LOG_LINES: usize = 400;

/// The fvol binary under test.
pub fn fvol_bin() -> PathBuf {
    let bin = match std::env::var_os("FVOL_BIN") {
        Some(bin) if !bin.is_empty() => PathBuf::from(bin),
        _ => Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/release/fvol"),
    };
    assert!(
        bin.is_file(),
        "fvol binary {} not found: build it with `cargo build --release -p fvol` or set FVOL_BIN",
        bin.display()
    );
    bin
}

struct RootDir {
    dir: TempDir,
    /// Whether a failing test already printed the daemon's log.
    log_shown: std::sync::atomic::AtomicBool,
}

impl Drop for RootDir {
    /// The keeper goes too: a connection it holds with a request in flight would keep its
    /// mount (and the process waiting for that request) alive past the detach.
    fn drop(&mut self) {
        detach_mounts_under(self.dir.path());
        if let Some(pid) = keeper_of(&self.dir.path().join("root")) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
    }
}

/// A temporary test directory: the daemon root at `root()` and a `scratch()` directory beside
/// it (outside the root).
#[derive(Clone)]
pub struct TestRoot {
    inner: Arc<RootDir>,
}

impl Default for TestRoot {
    fn default() -> Self {
        Self::new()
    }
}

impl TestRoot {
    pub fn new() -> TestRoot {
        TestRoot::new_in(&std::env::temp_dir())
    }

    /// A root in a fresh directory under `parent` (a filesystem a test chose: XFS for reflinks).
    pub fn new_in(parent: &Path) -> TestRoot {
        let dir = tempfile::Builder::new()
            .prefix("fvol-test-")
            .tempdir_in(parent)
            .expect("tempdir");
        std::fs::create_dir(dir.path().join("root")).unwrap();
        std::fs::create_dir(dir.path().join("scratch")).unwrap();
        std::fs::write(dir.path().join(CONFIG_FILE), "").unwrap();
        TestRoot {
            inner: Arc::new(RootDir {
                dir,
                log_shown: Default::default(),
            }),
        }
    }

    /// The whole test directory (contains both the root and the scratch directory).
    pub fn base(&self) -> &Path {
        self.inner.dir.path()
    }

    /// The daemon's `--root`.
    pub fn root(&self) -> PathBuf {
        self.base().join("root")
    }

    /// A directory outside the root, for `mount=` directories and bind targets.
    pub fn scratch(&self) -> PathBuf {
        self.base().join("scratch")
    }

    /// Creates (if needed) and returns `scratch/rel`.
    pub fn scratch_dir(&self, rel: &str) -> PathBuf {
        let dir = self.scratch().join(rel);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    pub fn catalog(&self) -> PathBuf {
        self.root().join("fvol.redb")
    }

    /// The configuration file daemons on this root read (empty unless a test writes it): the
    /// fixtures pass it with `--config` unless the test gives its own, so that no test reads
    /// the host's /etc/fvol/fvol.toml.
    pub fn config(&self) -> PathBuf {
        self.base().join(CONFIG_FILE)
    }

    /// `args` with `--config config()` added unless they name a configuration file already.
    pub fn daemon_args<I, S>(&self, args: I) -> Vec<OsString>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut args: Vec<OsString> = args.into_iter().map(|a| a.as_ref().to_owned()).collect();
        let names_config = args
            .iter()
            .any(|a| a == "--config" || a.to_string_lossy().starts_with("--config="));
        if !names_config {
            args.push("--config".into());
            args.push(self.config().into());
        }
        args
    }

    /// The daemon's log so far (empty if it never ran).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.root().join(LOG_FILE)).unwrap_or_default()
    }

    /// The pid of the keeper of this root (`fvol --root ROOT keeper`), if one runs.
    pub fn keeper_pid(&self) -> Option<i32> {
        keeper_of(&self.root())
    }

    /// Kills the keeper of this root (SIGKILL) and waits until it is gone: the connections it
    /// held that no daemon serves end (their mounts go stale).
    pub fn kill_keeper(&self) {
        let Some(pid) = self.keeper_pid() else {
            return;
        };
        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        self.wait_for_no_keeper();
    }

    /// Waits (at most `DAEMON_TIMEOUT`) until no keeper runs for this root.
    pub fn wait_for_no_keeper(&self) {
        let deadline = Instant::now() + DAEMON_TIMEOUT;
        while self.keeper_pid().is_some() {
            assert!(
                Instant::now() < deadline,
                "the keeper of {} still runs",
                self.root().display()
            );
            std::thread::sleep(POLL);
        }
    }

    /// Prints the end of the daemon's log to stderr once (the test harness shows it with the
    /// failure): a test that fails must not lose what the daemon said.
    pub fn show_log_once(&self, why: &str) {
        use std::sync::atomic::Ordering;
        if self.inner.log_shown.swap(true, Ordering::Relaxed) {
            return;
        }
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        let tail = &lines[lines.len().saturating_sub(SHOWN_LOG_LINES)..];
        eprintln!(
            "--- {why}: daemon log {} (last {} of {} lines):\n{}\n--- end of daemon log",
            self.root().join(LOG_FILE).display(),
            tail.len(),
            lines.len(),
            tail.join("\n")
        );
    }

    /// A command running the fvol binary on this root.
    pub fn command<I, S>(&self, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut cmd = Command::new(fvol_bin());
        cmd.arg("--root")
            .arg(self.root())
            .args(args)
            .env_remove("FVOL_ROOT")
            .stdin(Stdio::null());
        cmd
    }

    /// Runs `fvol --root ROOT ARGS...` to completion.
    pub fn cli<I, S>(&self, args: I) -> Output
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.command(args).output().expect("spawn fvol")
    }

    /// Runs `fvol daemon --no-plugin` on this root expecting it to exit by itself (a start-up
    /// failure); kills it and panics if it is still running after `DAEMON_TIMEOUT`.
    pub fn run_daemon_to_exit(&self) -> Output {
        self.run_daemon_to_exit_with_args(["--no-plugin"])
    }

    /// `run_daemon_to_exit` with these daemon arguments instead of `--no-plugin`.
    pub fn run_daemon_to_exit_with_args<I, S>(&self, args: I) -> Output
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut child = self
            .command(["daemon"])
            .args(self.daemon_args(args))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn fvol daemon");
        let deadline = Instant::now() + DAEMON_TIMEOUT;
        loop {
            if child.try_wait().expect("wait").is_some() {
                return child.wait_with_output().expect("collect daemon output");
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let out = child.wait_with_output().expect("collect daemon output");
                detach_mounts_under(&self.root());
                panic!(
                    "fvol daemon on {} was expected to exit but kept running\n{}",
                    self.root().display(),
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            std::thread::sleep(POLL);
        }
    }
}

/// A running `fvol daemon` on a `TestRoot`.
pub struct TestDaemon {
    child: Option<Child>,
    /// Keeps the directory alive as long as this daemon object.
    pub root: TestRoot,
}

impl TestDaemon {
    /// Starts a daemon on a fresh temporary root.
    pub fn start() -> TestDaemon {
        TestDaemon::start_at(&TestRoot::new())
    }

    /// Starts a daemon (without the Docker plugin) on `root` (possibly one a previous daemon
    /// used) and waits until it answers `fvol ls`.
    pub fn start_at(root: &TestRoot) -> TestDaemon {
        TestDaemon::start_with_args(root, ["--no-plugin"])
    }

    /// Starts `fvol --root ROOT daemon ARGS...` and waits until it answers `fvol ls` (both of
    /// its sockets are listening by then). With no `--no-plugin` among ARGS it serves the
    /// Docker plugin: on `/run/docker/plugins/fvol.sock` unless ARGS say otherwise (tests must
    /// say otherwise: that path is the host's).
    pub fn start_with_args<I, S>(root: &TestRoot, args: I) -> TestDaemon
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut cmd = root.command(["daemon"]);
        cmd.args(root.daemon_args(args));
        TestDaemon::spawn(root, cmd)
    }

    /// Starts a daemon (without the Docker plugin) whose open-file limit, soft and hard, is
    /// `nofile`: prlimit(1) sets it and then runs the daemon in its own process.
    pub fn start_with_nofile(root: &TestRoot, nofile: u64) -> TestDaemon {
        TestDaemon::start_with_nofile_and_args(root, nofile, ["--no-plugin"])
    }

    /// `start_with_nofile` with these daemon arguments instead of `--no-plugin`.
    pub fn start_with_nofile_and_args<I, S>(root: &TestRoot, nofile: u64, args: I) -> TestDaemon
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut cmd = Command::new("prlimit");
        cmd.arg(format!("--nofile={nofile}:{nofile}"))
            .arg("--")
            .arg(fvol_bin())
            .arg("--root")
            .arg(root.root())
            .arg("daemon")
            .args(root.daemon_args(args))
            .env_remove("FVOL_ROOT")
            .stdin(Stdio::null());
        TestDaemon::spawn(root, cmd)
    }

    /// Starts a daemon (without the Docker plugin) with these extra environment variables
    /// (such as the test-only crash point `FVOL_FAULT`).
    pub fn start_with_env(root: &TestRoot, env: &[(&str, &str)]) -> TestDaemon {
        let mut cmd = root.command(["daemon"]);
        cmd.args(root.daemon_args(["--no-plugin"]));
        cmd.envs(env.iter().copied());
        TestDaemon::spawn(root, cmd)
    }

    /// Starts the daemon of another fvol binary `bin` (an upgrade) on `root`, with `args`.
    pub fn start_binary<I, S>(root: &TestRoot, bin: &Path, args: I) -> TestDaemon
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut cmd = Command::new(bin);
        cmd.arg("--root")
            .arg(root.root())
            .arg("daemon")
            .args(args)
            .env_remove("FVOL_ROOT")
            .stdin(Stdio::null());
        TestDaemon::spawn(root, cmd)
    }

    fn spawn(root: &TestRoot, mut cmd: Command) -> TestDaemon {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(root.root().join(LOG_FILE))
            .expect("open daemon log");
        let child = cmd
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn fvol daemon");
        let mut daemon = TestDaemon {
            child: Some(child),
            root: root.clone(),
        };
        daemon.wait_ready();
        daemon
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + DAEMON_TIMEOUT;
        loop {
            let child = self.child.as_mut().unwrap();
            if let Some(status) = child.try_wait().expect("wait") {
                self.child = None;
                panic!(
                    "fvol daemon exited during start-up ({status})\nlog:\n{}",
                    self.root.log()
                );
            }
            if self.cli(["ls", "-q"]).status.success() {
                return;
            }
            if Instant::now() > deadline {
                panic!(
                    "fvol daemon did not answer within {DAEMON_TIMEOUT:?}\nlog:\n{}",
                    self.root.log()
                );
            }
            std::thread::sleep(POLL);
        }
    }

    pub fn root(&self) -> PathBuf {
        self.root.root()
    }

    pub fn scratch_dir(&self, rel: &str) -> PathBuf {
        self.root.scratch_dir(rel)
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Runs `fvol --root ROOT ARGS...`.
    pub fn cli<I, S>(&self, args: I) -> Output
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.root.cli(args)
    }

    /// Runs `fvol --root ROOT ARGS...`, returns its stdout, panics with its stderr on failure.
    pub fn cli_ok<I, S>(&self, args: I) -> String
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let args: Vec<_> = args
            .into_iter()
            .map(|a| a.as_ref().to_os_string())
            .collect();
        let out = self.cli(&args);
        crate::stdout_of_success(&format!("fvol {args:?}"), out)
    }

    /// `fvol inspect NAME`, the first (only) element.
    pub fn inspect(&self, name: &str) -> serde_json::Value {
        let out = self.cli_ok(["inspect", name]);
        let mut all: Vec<serde_json::Value> =
            serde_json::from_str(&out).unwrap_or_else(|e| panic!("inspect JSON: {e}\n{out}"));
        assert_eq!(all.len(), 1, "{out}");
        all.remove(0)
    }

    /// `fvol fsck NAME` on an unmounted volume, which must succeed with no problems; its
    /// report.
    pub fn fsck_clean(&self, name: &str) -> serde_json::Value {
        let out = self.cli(["fsck", name]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "fsck {name}: {}\n{text}\n{}",
            out.status,
            stderr_of(&out)
        );
        let report: serde_json::Value =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("fsck JSON: {e}\n{text}"));
        assert_eq!(report["problems"], serde_json::json!([]), "{report}");
        report
    }

    /// `fvol mount NAME`, returning the mountpoint it printed.
    pub fn mount(&self, name: &str) -> PathBuf {
        PathBuf::from(self.cli_ok(["mount", name]).trim_end())
    }

    /// Stops the daemon for good (`fvol daemon --stop`: every volume is unmounted) and waits
    /// (at most `DAEMON_TIMEOUT`) for it to exit.
    pub fn stop(&mut self) -> ExitStatus {
        self.stop_within(DAEMON_TIMEOUT)
    }

    /// `stop`, waiting at most `timeout`. Should the daemon not take the request (its socket
    /// is gone), it gets SIGTERM instead.
    pub fn stop_within(&mut self, timeout: Duration) -> ExitStatus {
        let out = self.cli(["daemon", "--stop"]);
        let why = if out.status.success() {
            "`fvol daemon --stop`"
        } else {
            eprintln!(
                "fvol daemon --stop failed ({}); sending SIGTERM",
                crate::daemon::stderr_of(&out).trim()
            );
            self.signal(Signal::SIGTERM);
            "SIGTERM"
        };
        self.wait_exit(timeout, why)
    }

    /// Sends SIGTERM, a planned stop or restart: the daemon leaves its volumes mounted for the
    /// next one (held by the keeper) and exits; waits (at most `DAEMON_TIMEOUT`) for that.
    pub fn terminate(&mut self) -> ExitStatus {
        self.signal(Signal::SIGTERM);
        self.wait_exit(DAEMON_TIMEOUT, "SIGTERM")
    }

    fn signal(&self, signal: Signal) {
        let child = self.child.as_ref().expect("daemon already stopped");
        let _ = kill(Pid::from_raw(child.id() as i32), signal);
    }

    fn wait_exit(&mut self, timeout: Duration, why: &str) -> ExitStatus {
        let mut child = self.child.take().expect("daemon already stopped");
        match wait_timeout(&mut child, timeout) {
            Some(status) => status,
            None => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "fvol daemon did not exit within {timeout:?} of {why}\nlog:\n{}",
                    self.root.log()
                );
            }
        }
    }

    /// Sends SIGKILL and waits for the daemon to die. Its FUSE mounts stay, held by the
    /// keeper: calls on them wait for the next daemon.
    pub fn kill9(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("daemon already stopped");
        let _ = child.kill();
        child.wait().expect("wait for killed daemon")
    }

    /// The daemon's log so far.
    pub fn log(&self) -> String {
        self.root.log()
    }
}

impl Drop for TestDaemon {
    /// Only a daemon still running here is stopped and cleaned up after: one stopped by
    /// `stop()`/`kill9()` may have a successor on the same root whose mounts must stay.
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.root.show_log_once("the test failed");
        }
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
        if wait_timeout(&mut child, DAEMON_TIMEOUT).is_none() {
            let _ = child.kill();
            let _ = child.wait();
        }
        detach_mounts_under(self.root.base());
    }
}

fn wait_timeout(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return Some(status);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(POLL);
    }
}

/// The pid of the keeper of daemon root `root`, if one runs.
fn keeper_of(root: &Path) -> Option<i32> {
    let want = [OsStr::new("--root"), root.as_os_str(), OsStr::new("keeper")];
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: i32 = e.file_name().to_str()?.parse().ok()?;
        let cmdline = std::fs::read(e.path().join("cmdline")).ok()?;
        let args: Vec<&OsStr> = cmdline
            .split(|&b| b == 0)
            .map(std::os::unix::ffi::OsStrExt::from_bytes)
            .collect();
        args.windows(3).any(|w| w == want).then_some(pid)
    })
}

/// Undoes the octal escapes (`\040` for a space...) of /proc/self/mountinfo.
fn unescape_mount_path(field: &str) -> PathBuf {
    use std::os::unix::ffi::OsStringExt;
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len()
            && bytes[i + 1..i + 4]
                .iter()
                .all(|b| (b'0'..=b'7').contains(b))
        {
            let value = bytes[i + 1..i + 4]
                .iter()
                .fold(0u32, |acc, b| acc * 8 + u32::from(b - b'0'));
            out.push(value as u8);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    PathBuf::from(std::ffi::OsString::from_vec(out))
}

/// Every mountpoint of this mount namespace, in mount order (from /proc/self/mountinfo).
pub fn mountpoints() -> Vec<PathBuf> {
    let mut text = String::new();
    File::open("/proc/self/mountinfo")
        .and_then(|mut f| f.read_to_string(&mut text))
        .expect("read /proc/self/mountinfo");
    text.lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(unescape_mount_path)
        .collect()
}

/// True if something other than a volume's read-only guard is mounted at `path` right now:
/// the guard (an empty tmpfs `fvol-guard:NAME`) stays under every volume's mountpoint.
pub fn is_mountpoint(path: &Path) -> bool {
    mounts_at(path)
        .iter()
        .any(|(_, source)| !source.starts_with("fvol-guard:"))
}

/// The (fstype, source) of every mount at exactly `path`, bottom first (mount order).
pub fn mounts_at(path: &Path) -> Vec<(String, String)> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").expect("read /proc/self/mountinfo");
    text.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            if unescape_mount_path(fields.get(4)?) != path {
                return None;
            }
            let sep = fields.iter().position(|f| *f == "-")?;
            Some((
                fields.get(sep + 1)?.to_string(),
                fields.get(sep + 2)?.to_string(),
            ))
        })
        .collect()
}

/// The filesystem type of the mount at exactly `path` (from /proc/self/mountinfo), if any.
pub fn mount_fstype(path: &Path) -> Option<String> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    text.lines().rev().find_map(|line| {
        let fields: Vec<&str> = line.split(' ').collect();
        let mp = unescape_mount_path(fields.get(4)?);
        if mp != path {
            return None;
        }
        let sep = fields.iter().position(|f| *f == "-")?;
        fields.get(sep + 1).map(|s| s.to_string())
    })
}

/// Lazily detaches every mount at or under `dir`, deepest first.
pub fn detach_mounts_under(dir: &Path) {
    for _ in 0..3 {
        let mut under: Vec<PathBuf> = mountpoints()
            .into_iter()
            .filter(|m| m.starts_with(dir))
            .collect();
        if under.is_empty() {
            return;
        }
        under.sort_by_key(|m| std::cmp::Reverse(m.as_os_str().len()));
        under.dedup();
        for m in under {
            let _ = umount2(&m, MntFlags::MNT_DETACH);
        }
    }
}

/// False (after printing a note) when FUSE tests cannot run here; tests return early then.
pub fn fuse_or_skip(test: &str) -> bool {
    let ok = crate::fuse_available();
    // The project's test command sets FVOL_REQUIRE_FUSE: there a skip would be a pass that
    // tested nothing.
    if !ok && std::env::var_os("FVOL_REQUIRE_FUSE").is_some() {
        panic!("{test} needs root and /dev/fuse (FVOL_REQUIRE_FUSE is set)");
    }
    if !ok {
        eprintln!("skipping {test}: needs root and /dev/fuse");
    }
    ok
}

/// `du -sB1 PATH`: the bytes allocated under `path`.
pub fn du_bytes(path: &Path) -> u64 {
    let out = crate::run_ok(Command::new("du").arg("-sB1").arg(path));
    out.split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("du output: {out}"))
}

/// The size column of `df -B1 PATH`: the filesystem's total size in bytes.
pub fn df_size(path: &Path) -> u64 {
    let out = crate::run_ok(Command::new("df").arg("-B1").arg(path));
    out.lines()
        .nth(1)
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("df output: {out}"))
}

/// The stdout of a command as text.
pub fn stdout_of(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The stderr of a command as text.
pub fn stderr_of(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Seconds since the epoch of an RFC 3339 UTC time of the exact form
/// `YYYY-MM-DDTHH:MM:SSZ`, or None if `text` is not of that form or not a valid time.
pub fn parse_rfc3339_utc(text: &str) -> Option<u64> {
    let b = text.as_bytes();
    if b.len() != 20 {
        return None;
    }
    let shape = b"dddd-dd-ddTdd:dd:ddZ";
    let ok = b.iter().zip(shape).all(|(c, s)| match s {
        b'd' => c.is_ascii_digit(),
        _ => c == s,
    });
    if !ok {
        return None;
    }
    let num = |r: std::ops::Range<usize>| text[r].parse::<u64>().ok();
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, s) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let month_days = [
        31,
        if leap { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    if !(1970..=9999).contains(&y)
        || !(1..=12).contains(&mo)
        || d < 1
        || d > month_days[mo as usize - 1]
        || h > 23
        || mi > 59
        || s > 60
    {
        return None;
    }
    let days_before_year: u64 = (1970..y)
        .map(|yy| {
            if (yy % 4 == 0 && yy % 100 != 0) || yy % 400 == 0 {
                366
            } else {
                365
            }
        })
        .sum();
    let days_before_month: u64 = month_days[..mo as usize - 1].iter().sum();
    let days = days_before_year + days_before_month + d - 1;
    Some(days * 86_400 + h * 3600 + mi * 60 + s)
}

/// Now, in seconds since the epoch.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_parsing() {
        assert_eq!(parse_rfc3339_utc("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_rfc3339_utc("2000-03-01T00:00:01Z"), Some(951_868_801));
        assert_eq!(
            parse_rfc3339_utc("2024-02-29T12:34:56Z"),
            Some(1_709_210_096)
        );
        for bad in [
            "",
            "2024-02-30T00:00:00Z",
            "2024-02-29 12:34:56Z",
            "2024-02-29T12:34:56",
            "2024-02-29T12:34:56+00:00",
            "2024-13-01T00:00:00Z",
            "2024-02-29T24:00:00Z",
        ] {
            assert_eq!(parse_rfc3339_utc(bad), None, "{bad}");
        }
    }

    #[test]
    fn mountinfo_escapes() {
        assert_eq!(
            unescape_mount_path(r"/a\040b\134c\011"),
            PathBuf::from("/a b\\c\t")
        );
        assert_eq!(unescape_mount_path(r"/x\04"), PathBuf::from(r"/x\04"));
    }
}
