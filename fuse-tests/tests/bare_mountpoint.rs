//! The volume's mountpoint never accepts writes when no fvol filesystem is mounted on it: a
//! read-only guard lies under the FUSE mount and shows whenever the FUSE mount is gone (issue
//! 12, point 7).
use std::fs::OpenOptions;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use fuse_tests::daemon::{TestDaemon, TestRoot, detach_mounts_under, fuse_or_skip, mounts_at};
use nix::sys::statfs::{FUSE_SUPER_MAGIC, fstatfs};

/// What the attempts to create a file at the mountpoint saw.
#[derive(Default, Debug)]
struct Attempts {
    in_volume: u64,
    on_host: u64,
    errors: std::collections::BTreeMap<i32, u64>,
}

/// Creates `path` again and again until `stop`, as root, sorting each outcome.
fn spin_creating(path: &Path, stop: &AtomicBool) -> Attempts {
    let mut seen = Attempts::default();
    while !stop.load(Ordering::Relaxed) {
        match OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
        {
            Ok(file) => match fstatfs(&file) {
                Ok(fs) if fs.filesystem_type() == FUSE_SUPER_MAGIC => seen.in_volume += 1,
                _ => seen.on_host += 1,
            },
            Err(e) => {
                *seen
                    .errors
                    .entry(e.raw_os_error().unwrap_or(0))
                    .or_default() += 1
            }
        }
    }
    seen
}

/// EROFS comes from the guard; ENOTCONN from a dead connection, and ECONNABORTED from one
/// whose last descriptor closed while the request waited in it (the kernel ends queued
/// requests so). Any other error, or a success outside the volume, is a hole.
fn only_guard_and_fuse(errors: &std::collections::BTreeMap<i32, u64>) -> bool {
    errors
        .keys()
        .all(|e| [libc::EROFS, libc::ENOTCONN, libc::ECONNABORTED].contains(e))
}

#[test]
fn a_writer_never_reaches_the_host_directory_while_a_restart_replaces_a_stale_mount() {
    if !fuse_or_skip(
        "a_writer_never_reaches_the_host_directory_while_a_restart_replaces_a_stale_mount",
    ) {
        return;
    }
    let root = TestRoot::new();
    let mut d = TestDaemon::start_at(&root);
    d.cli_ok(["create", "vol1", "-o", "size=64M"]);
    let mp = d.mount("vol1");
    // Several crashes, so that the writers get many chances at the moment of the replacement.
    let mut seen = Vec::new();
    for round in 0..3 {
        // The keeper too: its connection would keep the mount alive (calls wait, see
        // daemon_handover.rs); here the mount must go stale and be replaced.
        d.kill9();
        root.kill_keeper();
        let name = format!("x{round}");
        let stop = Arc::new(AtomicBool::new(false));
        let writers: Vec<_> = (0..2)
            .map(|_| {
                let (path, stop) = (mp.join(&name), stop.clone());
                std::thread::spawn(move || spin_creating(&path, &stop))
            })
            .collect();
        d = TestDaemon::start_at(&root);
        // The volume is served again: wait until the writers have reached it.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while std::fs::metadata(mp.join(&name)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "no create reached the volume"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        stop.store(true, Ordering::Relaxed);
        seen.extend(writers.into_iter().map(|w| w.join().unwrap()));
    }
    d.stop();
    detach_mounts_under(root.base());

    let host: Vec<_> = std::fs::read_dir(&mp)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(
        host.is_empty(),
        "files landed in the bare host directory {}: {host:?}; attempts: {seen:?}",
        mp.display()
    );
    for s in &seen {
        assert_eq!(s.on_host, 0, "a create succeeded outside the volume: {s:?}");
        assert!(only_guard_and_fuse(&s.errors), "unexpected errors: {s:?}");
    }
}

fn create_error(path: &Path) -> Option<i32> {
    OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .err()
        .and_then(|e| e.raw_os_error())
}

#[test]
fn an_unmounted_volume_refuses_writes_and_rm_takes_its_guard_away() {
    if !fuse_or_skip("an_unmounted_volume_refuses_writes_and_rm_takes_its_guard_away") {
        return;
    }
    let d = TestDaemon::start();
    d.cli_ok(["create", "vol1"]);
    let mp = d.root().join("volumes/vol1/mnt");
    // Never mounted yet: already guarded.
    assert_eq!(create_error(&mp.join("x")), Some(libc::EROFS));

    assert_eq!(d.mount("vol1"), mp);
    std::fs::write(mp.join("in-volume"), b"data").unwrap();
    d.cli_ok(["unmount", "vol1"]);
    assert_eq!(create_error(&mp.join("x")), Some(libc::EROFS));
    assert_eq!(
        std::fs::create_dir(mp.join("d"))
            .unwrap_err()
            .raw_os_error(),
        Some(libc::EROFS)
    );
    assert_eq!(
        std::fs::read_dir(&mp).unwrap().count(),
        0,
        "the guard is empty"
    );

    // Mounting again stacks the volume on the same single guard.
    d.mount("vol1");
    assert_eq!(std::fs::read(mp.join("in-volume")).unwrap(), b"data");
    let stack = mounts_at(&mp);
    assert_eq!(stack.len(), 2, "one guard, one FUSE mount: {stack:?}");
    assert!(stack[0].1.starts_with("fvol-guard:") && stack[1].0.starts_with("fuse"));
    d.cli_ok(["unmount", "vol1"]);

    d.cli_ok(["rm", "vol1"]);
    let vol_dir = d.root().join("volumes/vol1");
    assert!(mounts_at(&mp).is_empty(), "{:?}", mounts_at(&mp));
    assert!(!vol_dir.exists(), "{} left behind", vol_dir.display());
}

#[test]
fn a_restart_guards_volumes_made_without_a_guard() {
    if !fuse_or_skip("a_restart_guards_volumes_made_without_a_guard") {
        return;
    }
    let root = TestRoot::new();
    let mut d = TestDaemon::start_at(&root);
    d.cli_ok(["create", "idle"]);
    d.cli_ok(["create", "used"]);
    d.mount("used");
    d.stop();
    // As an older version left them: no guard anywhere.
    detach_mounts_under(&root.root().join("volumes"));
    let d = TestDaemon::start_at(&root);
    for name in ["idle", "used"] {
        let mp = root.root().join(format!("volumes/{name}/mnt"));
        let guards = mounts_at(&mp)
            .iter()
            .filter(|(_, source)| source.starts_with("fvol-guard:"))
            .count();
        assert_eq!(guards, 1, "{name}: {:?}", mounts_at(&mp));
    }
    assert_eq!(
        create_error(&root.root().join("volumes/idle/mnt/x")),
        Some(libc::EROFS)
    );
    drop(d);
}

#[test]
fn a_busy_unmount_detaches_the_volume_and_keeps_the_guard() {
    if !fuse_or_skip("a_busy_unmount_detaches_the_volume_and_keeps_the_guard") {
        return;
    }
    let d = TestDaemon::start();
    d.cli_ok(["create", "vol1"]);
    let mp = d.mount("vol1");
    // An open file keeps the mount busy: the unmount detaches it lazily instead.
    let busy = std::fs::File::create(mp.join("open")).unwrap();
    d.cli_ok(["unmount", "vol1"]);
    let stack = mounts_at(&mp);
    assert_eq!(stack.len(), 1, "only the guard is left: {stack:?}");
    assert!(stack[0].1.starts_with("fvol-guard:"), "{stack:?}");
    assert_eq!(create_error(&mp.join("x")), Some(libc::EROFS));
    drop(busy);
    d.cli_ok(["rm", "vol1"]);
    assert!(mounts_at(&mp).is_empty(), "{:?}", mounts_at(&mp));
}
