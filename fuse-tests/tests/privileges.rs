//! A caller without CAP_FSETID who changes a file's data loses its setuid bit, and its setgid
//! bit where group-exec is set, on every driver and in every I/O mode: buffered and direct
//! writes, kernel passthrough (a local volume without a byte limit), truncate and fallocate
//! (every mode). Root's own changes keep the bits, as on any Linux filesystem.
use std::os::unix::fs::PermissionsExt;

use fuse_tests::{Backend, TestSession};

fn mode(path: &std::path::Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

/// Runs a shell command as nobody; it must succeed.
fn as_nobody(script: &str) {
    let out = fuse_tests::as_nobody(script);
    assert!(
        out.status.success(),
        "{script}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The unprivileged changes of file data, each as a shell command on `$F`.
const CHANGES: &[(&str, &str)] = &[
    ("append", "printf x >> \"$F\""),
    (
        "overwrite",
        "printf y | dd of=\"$F\" conv=notrunc status=none",
    ),
    (
        "direct write",
        "dd if=/dev/zero of=\"$F\" bs=4096 count=1 oflag=direct conv=notrunc status=none",
    ),
    (
        "copy_file_range",
        "python3 -c 'import os,sys; f=os.open(sys.argv[1], os.O_RDWR); \\
         os.copy_file_range(f, f, 100, 0, 4096)' \"$F\"",
    ),
    ("truncate", "truncate -s 1 \"$F\""),
    ("fallocate", "fallocate -l 65536 \"$F\""),
    (
        "fallocate keep-size",
        "fallocate -n -o 65536 -l 4096 \"$F\"",
    ),
    ("punch hole", "fallocate -p -o 0 -l 4096 \"$F\""),
    ("zero range", "fallocate -z -o 0 -l 4096 \"$F\""),
];

fn check(backend: Backend, byte_limit: Option<u64>) {
    let s = TestSession::with(backend, byte_limit, None);
    std::fs::set_permissions(s.mnt(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let mut wrong = Vec::new();
    for (i, (what, script)) in CHANGES.iter().enumerate() {
        for (start, after) in [(0o6777, 0o0777), (0o2767, 0o2767)] {
            let path = s.path(&format!("f{i}-{start:o}"));
            std::fs::write(&path, vec![7u8; 8192]).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(start)).unwrap();
            assert_eq!(mode(&path), start);
            as_nobody(&format!("F='{}'; {script}", path.display()));
            let got = mode(&path);
            if got != after {
                wrong.push(format!("{what}: {start:o} became {got:o}, want {after:o}"));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "{backend:?} (byte limit {byte_limit:?}), unprivileged changes:\n{}",
        wrong.join("\n")
    );
    // Root's own writes keep the bits, as on any Linux filesystem; except through kernel
    // passthrough, whose backing files write without CAP_FSETID for every caller (POSIX lets
    // a write clear them; docs/security.md).
    let root_keeps = !(matches!(backend, Backend::Local) && byte_limit.is_none());
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
    let want = if root_keeps { 0o4755 } else { 0o0755 };
    assert_eq!(mode(&path), want, "{backend:?}: root's own write");
}

#[test]
fn local() {
    check(Backend::Local, Some(1 << 30));
}

/// Without a byte limit, opens use kernel passthrough: the handler never sees the writes.
#[test]
fn local_passthrough() {
    check(Backend::Local, None);
}

#[test]
fn tmpfs() {
    check(Backend::Tmpfs, Some(1 << 30));
}

#[test]
fn image() {
    check(Backend::Image, Some(1 << 30));
}
