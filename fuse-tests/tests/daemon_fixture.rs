//! The `TestDaemon` fixture itself: whatever a test does, it leaves no daemon and no mount.
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

use fuse_tests::daemon::{TestDaemon, TestRoot, fuse_or_skip, is_mountpoint, mountpoints};

fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    mountpoints()
        .into_iter()
        .filter(|m| m.starts_with(dir))
        .collect()
}

/// True while a process `pid` runs with `needle` in its command line.
fn runs(pid: u32, needle: &str) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|c| String::from_utf8_lossy(&c).contains(needle))
        .unwrap_or(false)
}

#[test]
fn a_panicking_test_leaves_no_daemon_and_no_mount() {
    if !fuse_or_skip("a_panicking_test_leaves_no_daemon_and_no_mount") {
        return;
    }
    let mut seen = None;
    let result = catch_unwind(AssertUnwindSafe(|| {
        let d = TestDaemon::start();
        d.cli_ok(["create", "vol1"]);
        let mp = d.mount("vol1");
        let t = d.scratch_dir("t");
        d.cli_ok(["mount", "vol1", "--target", t.to_str().unwrap()]);
        assert!(is_mountpoint(&mp) && is_mountpoint(&t));
        seen = Some((d.root.base().to_path_buf(), d.pid().unwrap()));
        panic!("deliberate panic with a daemon and two mounts");
    }));
    assert!(result.is_err());
    let (base, pid) = seen.unwrap();
    assert_eq!(mounts_under(&base), Vec::<PathBuf>::new());
    assert!(!base.exists(), "{} left behind", base.display());
    assert!(
        !runs(pid, base.to_str().unwrap()),
        "daemon {pid} still running"
    );
}

#[test]
fn stale_mounts_of_a_killed_daemon_are_detached_on_drop() {
    if !fuse_or_skip("stale_mounts_of_a_killed_daemon_are_detached_on_drop") {
        return;
    }
    let mut seen = None;
    let result = catch_unwind(AssertUnwindSafe(|| {
        let mut d = TestDaemon::start();
        d.cli_ok(["create", "vol1"]);
        let mp = d.mount("vol1");
        let t = d.scratch_dir("t");
        d.cli_ok(["mount", "vol1", "--target", t.to_str().unwrap()]);
        seen = Some(d.root.base().to_path_buf());
        d.kill9();
        d.root.kill_keeper();
        assert!(std::fs::metadata(&mp).is_err());
        panic!("deliberate panic with stale mounts");
    }));
    assert!(result.is_err());
    let base = seen.unwrap();
    assert_eq!(mounts_under(&base), Vec::<PathBuf>::new());
    assert!(!base.exists(), "{} left behind", base.display());
}

#[test]
fn dropping_a_stopped_daemon_keeps_its_successors_mounts() {
    if !fuse_or_skip("dropping_a_stopped_daemon_keeps_its_successors_mounts") {
        return;
    }
    let root = TestRoot::new();
    let mut d = TestDaemon::start_at(&root);
    d.cli_ok(["create", "vol1"]);
    let mp = d.mount("vol1");
    d.stop();
    // Replacing `d` drops the stopped daemon after its successor has started.
    d = TestDaemon::start_at(&root);
    assert!(is_mountpoint(&mp), "the successor's mount was detached");
    std::fs::write(mp.join("f"), b"f").unwrap();
    let base = root.base().to_path_buf();
    drop(d);
    assert_eq!(mounts_under(&base), Vec::<PathBuf>::new());
    assert!(base.exists(), "the root must live while a TestRoot does");
    drop(root);
    assert!(!base.exists());
}
