//! tmpfs volumes through the daemon: the data lives while any mount reference does, is dropped
//! at the last unmount and at a stop for good (`fvol daemon --stop`; a restart keeps it, see
//! daemon_handover.rs), and the volume itself stays.
use std::path::Path;

use fuse_tests::daemon::{TestDaemon, df_size, fuse_or_skip};

fn used(d: &TestDaemon, name: &str) -> u64 {
    d.inspect(name)["Status"]["UsedBytes"].as_u64().unwrap()
}

#[test]
fn defaults_and_options() {
    if !fuse_or_skip("defaults_and_options") {
        return;
    }
    let d = TestDaemon::start();
    d.cli_ok(["create", "-d", "tmpfs", "scratch"]);
    let info = d.inspect("scratch");
    assert_eq!(info["Driver"], "tmpfs");
    assert_eq!(
        info["Status"]["SizeLimit"],
        64 << 20,
        "size defaults to 64 MiB"
    );
    let mnt = d.mount("scratch");
    assert_eq!(df_size(&mnt), 64 << 20);
    let mode = std::fs::metadata(&mnt).unwrap();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode.permissions()) & 0o7777,
        0o1777
    );
    d.cli_ok([
        "create",
        "-d",
        "tmpfs",
        "-o",
        "size=1M",
        "-o",
        "mode=0700",
        "-o",
        "uid=65534",
        "small",
    ]);
    let small = d.mount("small");
    let meta = std::fs::metadata(&small).unwrap();
    assert_eq!(std::os::unix::fs::MetadataExt::uid(&meta), 65534);
    assert_eq!(df_size(&small), 1 << 20);
    let out = d.cli(["create", "-d", "tmpfs", "-o", "mount=/tmp", "bad"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("size, inodes, uid, gid, mode"), "{err}");
}

#[test]
fn data_lives_while_any_reference_does() {
    if !fuse_or_skip("data_lives_while_any_reference_does") {
        return;
    }
    let d = TestDaemon::start();
    d.cli_ok(["create", "-d", "tmpfs", "-o", "size=16M", "shared"]);
    let target = d.scratch_dir("target");
    let mnt = d.mount("shared");
    d.cli_ok(["mount", "shared", "--target", target.to_str().unwrap()]);
    std::fs::write(mnt.join("keep"), vec![1u8; 1 << 20]).unwrap();
    assert_eq!(std::fs::read(target.join("keep")).unwrap().len(), 1 << 20);
    d.cli_ok(["unmount", "shared"]);
    assert_eq!(
        std::fs::read(target.join("keep")).unwrap().len(),
        1 << 20,
        "one reference left: the data stays"
    );
    assert!(used(&d, "shared") >= 1 << 20);
    d.cli_ok(["unmount", "shared", "--target", target.to_str().unwrap()]);
    assert_eq!(
        used(&d, "shared"),
        0,
        "last reference gone: the data is dropped"
    );
    let mnt = d.mount("shared");
    assert!(!mnt.join("keep").exists(), "the volume comes back empty");
    assert_eq!(
        d.inspect("shared")["Options"]["size"],
        "16M",
        "the volume itself stays"
    );
}

#[test]
fn restart_starts_it_empty() {
    if !fuse_or_skip("restart_starts_it_empty") {
        return;
    }
    let mut d = TestDaemon::start();
    d.cli_ok(["create", "-d", "tmpfs", "--label", "k=v", "ram"]);
    let mnt = d.mount("ram");
    std::fs::write(mnt.join("f"), b"gone after restart").unwrap();
    // A stop for good (a SIGTERM restart keeps the data: daemon_handover.rs).
    d.stop();
    let d = TestDaemon::start_at(&d.root.clone());
    let info = d.inspect("ram");
    assert_eq!(info["Labels"]["k"], "v");
    assert_eq!(
        info["Status"]["Mounted"], true,
        "its reference survives the restart"
    );
    assert!(!Path::new(&mnt).join("f").exists(), "but its data does not");
}
