//! The daemon's sockets against host users: no unprivileged process can ever connect to the API
//! socket or the Docker plugin socket, not even while the daemon starts (issue 11, finding 1).
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};

use fuse_tests::daemon::{TestDaemon, TestRoot, fuse_or_skip};

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
