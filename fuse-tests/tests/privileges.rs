//! The handler drops setuid/setgid on writes and truncates by unprivileged callers (the kernel
//! leaves it to the server under FUSE_HANDLE_KILLPRIV_V2, to spare a getxattr per write).
use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use fuse_tests::{Backend, TestSession};

fn mode(path: &std::path::Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

/// Runs a shell command as nobody.
fn as_nobody(script: &str) {
    let out = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "sh",
            "-c",
            script,
        ])
        .output()
        .expect("setpriv (util-linux)");
    assert!(
        out.status.success(),
        "{script}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn check(backend: Backend) {
    let s = TestSession::with(backend, Some(1 << 30), None);
    std::fs::set_permissions(s.mnt(), std::fs::Permissions::from_mode(0o777)).unwrap();
    for (name, start, after) in [
        ("w", 0o6777, 0o0777),
        ("t", 0o6777, 0o0777),
        ("l", 0o2767, 0o2767),
    ] {
        let path = s.path(name);
        std::fs::write(&path, b"data").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(start)).unwrap();
        assert_eq!(mode(&path), start);
        let script = match name {
            "t" => format!("truncate -s 1 {}", path.display()),
            _ => format!("printf x >> {}", path.display()),
        };
        as_nobody(&script);
        assert_eq!(
            mode(&path),
            after,
            "{backend:?} {name}: mode after an unprivileged change"
        );
    }
    // Root's own writes keep the bits, as on any Linux filesystem.
    let path = s.path("root");
    std::fs::write(&path, b"data").unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o4755)).unwrap();
    std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .map(|mut f| {
            std::io::Write::write_all(&mut f, b"x").unwrap();
        })
        .unwrap();
    assert_eq!(mode(&path), 0o4755);
}

#[test]
fn local() {
    check(Backend::Local);
}

#[test]
fn tmpfs() {
    check(Backend::Tmpfs);
}

#[test]
fn image() {
    check(Backend::Image);
}
