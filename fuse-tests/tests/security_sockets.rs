//! The daemon's sockets against host users and bad requests (issue 11, findings 1 and 9): no
//! unprivileged process can ever connect to the API socket or the Docker plugin socket, not
//! even while the daemon starts; the daemon's files live only where no user can change them;
//! request bodies are checked for their shape and size; idle connections cannot take the
//! daemon's descriptors.
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use fuse_tests::daemon::{DAEMON_TIMEOUT, TestDaemon, TestRoot, fuse_or_skip, fvol_bin};
use fuse_tests::plugin::{PluginClient, PluginResponse};

const NOBODY: &str = "65534";
const STARTS: usize = 20;

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// What the attacker's spinner counted on one socket.
#[derive(Debug, Default)]
struct Attempts {
    connected: u64,
    denied: u64,
}

fn parse_spinner_line(line: &str) -> (String, Attempts) {
    let mut fields = line.split(' ');
    let path = fields.next().unwrap().to_owned();
    let mut attempts = Attempts::default();
    for field in fields {
        let (key, value) = field.split_once('=').unwrap();
        let value: u64 = value.parse().unwrap();
        match key {
            "connected" => attempts.connected = value,
            "denied" => attempts.denied = value,
            _ => {}
        }
    }
    (path, attempts)
}

/// 20 daemon starts (API socket and plugin socket with a spec file) while `nobody` spins
/// `connect()` on both socket paths: not one connection may succeed. The test directory is
/// world-traversable and ROOT is set to 0711 (the old default) before every start, and the
/// plugin socket lies in a 0755 directory, so only the sockets' own modes stand between the
/// attacker and the daemon.
#[test]
fn nobody_never_connects_to_a_starting_daemon() {
    if !fuse_or_skip("nobody_never_connects_to_a_starting_daemon") {
        return;
    }
    let root = TestRoot::new();
    chmod(root.base(), 0o755);
    let run = root.base().join("run");
    let etc = root.base().join("etc");
    for dir in [&run, &etc] {
        std::fs::create_dir(dir).unwrap();
        chmod(dir, 0o755);
    }
    let api_socket = root.root().join("fvol.sock");
    let plugin_socket = run.join("fvol.sock");
    let spec = etc.join("fvol.spec");
    let stop = root.base().join("stop-spinning");

    let spinner = Command::new("setpriv")
        .args([
            &format!("--reuid={NOBODY}"),
            &format!("--regid={NOBODY}"),
            "--clear-groups",
            env!("CARGO_BIN_EXE_connect-spinner"),
        ])
        .arg(&stop)
        .arg(&api_socket)
        .arg(&plugin_socket)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("setpriv (util-linux)");

    let daemon_args = [
        "--plugin-socket".to_owned(),
        plugin_socket.display().to_string(),
        format!("--plugin-spec={}", spec.display()),
    ];
    for _ in 0..STARTS {
        // As the old default; the daemon may make it stricter.
        chmod(&root.root(), 0o711);
        let mut daemon = TestDaemon::start_with_args(&root, &daemon_args);
        assert!(daemon.stop().success(), "log:\n{}", daemon.log());
    }

    std::fs::write(&stop, b"").unwrap();
    let out = spinner.wait_with_output().unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "spinner failed: {}\n{report}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let results: Vec<(String, Attempts)> = report.lines().map(parse_spinner_line).collect();
    assert_eq!(results.len(), 2, "{report}");
    for (path, attempts) in &results {
        assert_eq!(
            attempts.connected, 0,
            "nobody connected to {path} {} times during {STARTS} daemon starts\n{report}",
            attempts.connected
        );
        // The attack reached the socket while it existed (EACCES from its mode, or from ROOT
        // if the daemon made that private): it was tried, not just missed.
        assert!(
            attempts.denied > 0,
            "the spinner never reached {path}\n{report}"
        );
    }
}

/// A daemon with the plugin served on `base/run/fvol.sock` (never the host's plugin socket).
fn daemon_with_plugin(root: &TestRoot) -> (TestDaemon, PathBuf) {
    let run = root.base().join("run");
    std::fs::create_dir_all(&run).unwrap();
    let plugin_socket = run.join("fvol.sock");
    let daemon = TestDaemon::start_with_args(
        root,
        [Path::new("--plugin-socket"), plugin_socket.as_path()],
    );
    (daemon, plugin_socket)
}

/// A request body of another JSON type than an object, or with a misspelt field, is refused
/// with a 400 naming the expected shape, on both sockets, and creates nothing: `[]` made a
/// randomly named volume (issue 11, finding 9). A body over the size limit is refused too.
#[test]
fn bodies_of_the_wrong_shape_create_nothing() {
    if !fuse_or_skip("bodies_of_the_wrong_shape_create_nothing") {
        return;
    }
    let root = TestRoot::new();
    let (d, plugin_socket) = daemon_with_plugin(&root);
    let api = PluginClient::new(root.root().join("fvol.sock"));
    let plugin = PluginClient::new(&plugin_socket);

    let error_of = |response: &PluginResponse, field: &str| -> String {
        response.json()[field]
            .as_str()
            .unwrap_or_else(|| panic!("no {field} in {response:?}"))
            .to_owned()
    };
    for body in ["[]", "[\"v1\"]", "\"v1\"", "1", "null"] {
        let response = api.post("/v1/create", body);
        assert_eq!(response.status, 400, "{body}: {response:?}");
        let message = error_of(&response, "error");
        assert!(
            message.starts_with(
                r#"invalid request body: expected a JSON object {"name"?: string, "driver"?: string"#
            ),
            "{body}: {message}"
        );
        let response = plugin.post("/VolumeDriver.Create", body);
        assert_eq!(response.status, 400, "{body}: {response:?}");
        let message = error_of(&response, "Err");
        assert!(
            message.starts_with(
                r#"invalid request body: expected a JSON object {"Name": string, "Opts"?"#
            ),
            "{body}: {message}"
        );
    }
    let response = api.post("/v1/create", r#"{"nmae": "v1"}"#);
    assert_eq!(response.status, 400, "{response:?}");
    assert!(error_of(&response, "error").contains("unknown field `nmae`"));

    // 2 MB of labels: over the body limit before the label limits are even looked at.
    let labels: serde_json::Map<String, serde_json::Value> = (0..2048)
        .map(|i| (format!("k{i}"), "v".repeat(1024).into()))
        .collect();
    let body = serde_json::json!({"name": "v1", "labels": labels}).to_string();
    // The server answers 413 and closes before it has read the rest, so the client may see
    // the reset first (fuse_tests::plugin::RESET); either way nothing is created (below).
    let response = api.post("/v1/create", &body);
    if response.status != fuse_tests::plugin::RESET {
        assert_eq!(response.status, 413, "{response:?}");
        assert_eq!(
            error_of(&response, "error"),
            "request body too large: at most 1024 KiB"
        );
    }
    let response = api.post(
        "/v1/create",
        &serde_json::json!({"name": "v1", "labels": {"k": "v".repeat(5000)}}).to_string(),
    );
    assert_eq!(response.status, 400, "{response:?}");
    assert!(error_of(&response, "error").contains("label values are at most 4096 bytes"));
    let response = plugin.post(
        "/VolumeDriver.Create",
        r#"{"Name": "v1", "Opts": {"size": "100"}}"#,
    );
    assert!(
        error_of(&response, "Err").contains("the minimum is 4096 bytes"),
        "{response:?}"
    );

    assert_eq!(
        d.cli_ok(["ls", "-q"]),
        "",
        "a refused request created a volume"
    );
    // What Docker sends still works: an empty body, `{}`, `"Opts": null`.
    assert_eq!(
        plugin.ok("/Plugin.Activate", "")["Implements"][0],
        "VolumeDriver"
    );
    plugin.ok("/VolumeDriver.Capabilities", "{}");
    plugin.ok("/VolumeDriver.Create", r#"{"Name": "v1", "Opts": null}"#);
    assert_eq!(
        plugin.ok("/VolumeDriver.List", "{}")["Volumes"][0]["Name"],
        "v1"
    );
}

/// Open descriptors of process `pid`.
fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

/// How many of `streams` the other end has closed (EOF or reset); never blocks.
fn closed_count(streams: &[UnixStream]) -> usize {
    streams
        .iter()
        .filter(|s| {
            s.set_nonblocking(true).unwrap();
            let mut byte = [0u8; 1];
            let mut reader: &UnixStream = s;
            match reader.read(&mut byte) {
                Ok(0) => true,
                Ok(_) => false,
                Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
            }
        })
        .count()
}

/// Waits (at most 60 s) until `want(streams)` holds.
fn wait_until(what: &str, streams: &[UnixStream], want: impl Fn(usize) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let closed = closed_count(streams);
        if want(closed) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: {closed} of {} connections closed by the daemon after 60 s",
            streams.len()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Idle connections cannot take the daemon's descriptors: each server holds at most its cap
/// (64 under an open-file limit of 1024) and closes the rest at once; the ones it holds are
/// closed after the header timeout; then it answers again. 5,000 idle connections took 5,000
/// descriptors (issue 11, finding 9).
#[test]
fn idle_connections_do_not_exhaust_the_daemon() {
    if !fuse_or_skip("idle_connections_do_not_exhaust_the_daemon") {
        return;
    }
    const NOFILE: u64 = 1024;
    const CAP: usize = 64;
    const EXTRA: usize = 64;
    let root = TestRoot::new();
    let run = root.base().join("run");
    std::fs::create_dir_all(&run).unwrap();
    let plugin_socket = run.join("fvol.sock");
    let d = TestDaemon::start_with_nofile_and_args(
        &root,
        NOFILE,
        [Path::new("--plugin-socket"), plugin_socket.as_path()],
    );
    let pid = d.pid().unwrap();
    let api_socket = root.root().join("fvol.sock");
    let baseline = open_fds(pid);

    let api: Vec<UnixStream> = (0..CAP + EXTRA)
        .map(|_| UnixStream::connect(&api_socket).unwrap())
        .collect();
    let plugin: Vec<UnixStream> = (0..CAP + EXTRA)
        .map(|_| UnixStream::connect(&plugin_socket).unwrap())
        .collect();
    wait_until("over the cap", &api, |closed| closed >= EXTRA);
    wait_until("over the cap", &plugin, |closed| closed >= EXTRA);
    let held = open_fds(pid);
    assert!(
        held <= baseline + 2 * CAP + 8,
        "the daemon holds {held} descriptors with {} connections open, {baseline} before",
        2 * (CAP + EXTRA)
    );

    // The header timeout (10 s) closes the idle ones it held.
    wait_until("idle", &api, |closed| closed == CAP + EXTRA);
    wait_until("idle", &plugin, |closed| closed == CAP + EXTRA);
    drop((api, plugin));
    let deadline = Instant::now() + Duration::from_secs(60);
    while !d.cli(["ls", "-q"]).status.success() {
        assert!(Instant::now() < deadline, "the daemon no longer answers");
        std::thread::sleep(Duration::from_millis(50));
    }
    PluginClient::new(&plugin_socket).ok("/VolumeDriver.List", "{}");
    assert!(open_fds(pid) <= baseline + 8);
}

/// Runs `fvol --root ROOT daemon ARGS` expecting it to refuse to start; returns its stderr.
/// One that starts serving instead is stopped and the test fails.
fn refused_start(root: &Path, args: &[&str]) -> String {
    let mut child = Command::new(fvol_bin())
        .arg("--root")
        .arg(root)
        .arg("daemon")
        .args(args)
        .env_remove("FVOL_ROOT")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + DAEMON_TIMEOUT;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline || root.join("fvol.sock").exists() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(child.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            let out = child.wait_with_output().unwrap();
            panic!(
                "the daemon started on {} {args:?}:\n{}",
                root.display(),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success());
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The daemon keeps its catalog, lock, sockets and spec file only in directories no user but
/// root can change (or could have prepared): a user who owns ROOT's parent, or can write the
/// plugin socket's or spec file's directory, could otherwise plant a catalog of their own or a
/// symlink where root creates a file, or swap the socket Docker talks to.
#[test]
fn files_are_kept_only_where_no_user_can_change_them() {
    if !fuse_or_skip("files_are_kept_only_where_no_user_can_change_them") {
        return;
    }
    let root = TestRoot::new();
    let base = root.base();
    let user_dir = base.join("user");
    std::fs::create_dir(&user_dir).unwrap();
    chmod(&user_dir, 0o755);
    std::os::unix::fs::chown(&user_dir, Some(65534), Some(65534)).unwrap();
    let open_dir = base.join("open");
    std::fs::create_dir(&open_dir).unwrap();
    chmod(&open_dir, 0o1777);

    // ROOT in a directory a user owns, and ROOT writable by everyone.
    let in_user_dir = user_dir.join("root");
    let err = refused_start(&in_user_dir, &["--no-plugin"]);
    assert!(
        err.contains("refusing to keep the catalog and API socket in")
            && err.contains(&format!("{} is owned by uid 65534", user_dir.display())),
        "{err}"
    );
    let planted: Vec<_> = std::fs::read_dir(&in_user_dir).unwrap().collect();
    assert!(
        planted.is_empty(),
        "created in {}: {planted:?}",
        in_user_dir.display()
    );
    let err = refused_start(&open_dir, &["--no-plugin"]);
    assert!(
        err.contains("writable by users other than its owner (mode 1777)"),
        "{err}"
    );

    // ROOT through a symlink that lies in a user's directory (they could repoint it).
    let good = base.join("good");
    std::fs::create_dir(&good).unwrap();
    std::os::unix::fs::symlink(&good, user_dir.join("link")).unwrap();
    let err = refused_start(&user_dir.join("link"), &["--no-plugin"]);
    assert!(err.contains("owned by uid 65534"), "{err}");
    assert!(!good.join("fvol.redb").exists());

    // The plugin socket, or its spec file, where others may write.
    let socket = open_dir.join("fvol.sock");
    let socket_arg = socket.display().to_string();
    let err = refused_start(&root.root(), &["--plugin-socket", &socket_arg]);
    assert!(
        err.contains("refusing to keep the Docker plugin socket in"),
        "{err}"
    );
    assert!(!socket.exists());
    let spec = user_dir.join("fvol.spec");
    let spec_arg = format!("--plugin-spec={}", spec.display());
    let err = refused_start(&root.root(), &[&spec_arg]);
    assert!(
        err.contains("refusing to keep the Docker plugin spec file in"),
        "{err}"
    );
    assert!(!spec.exists());
}
