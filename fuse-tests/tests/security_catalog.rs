//! The catalog survives a full disk and crashes (issue 11, findings 7 and 8):
//! - after a catalog write failed for lack of space, writes work again once space is back,
//!   without a restart, and nothing acknowledged is lost;
//! - a crash (kill -9) or an error at any step of `create` or `rm` leaves record and data
//!   consistent: both there and usable, or both gone;
//! - a clean stop (unmount, SIGTERM) syncs and records clean usage, and the next mount
//!   trusts it instead of rescanning the tree.
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use fuse_tests::daemon::{TestDaemon, TestRoot, fuse_or_skip, is_mountpoint, stderr_of, stdout_of};
use fuse_tests::loopfs::LoopFs;
use fuse_tests::run_ok;

const MIB: usize = 1 << 20;

fn used_bytes(d: &TestDaemon, name: &str) -> u64 {
    d.inspect(name)["Status"]["UsedBytes"].as_u64().unwrap()
}

fn names(d: &TestDaemon) -> Vec<String> {
    stdout_of(&d.cli(["ls", "-q"]))
        .lines()
        .map(str::to_owned)
        .collect()
}

fn write_synced(path: &Path, data: &[u8]) {
    let mut f = File::create(path).unwrap();
    f.write_all(data).unwrap();
    f.sync_all().unwrap();
}

/// Where the local driver keeps the data of the fvol-owned volume `name` under `root`: the
/// directory named `data` whose path below `root` names the volume, outside any mount. The one
/// place in these tests that knows the layout of ROOT.
fn local_data_dir(root: &Path, name: &str) -> PathBuf {
    fn walk(root: &Path, dir: &Path, name: &str, depth: usize, found: &mut Vec<PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if !entry.file_type().is_ok_and(|t| t.is_dir()) || is_mountpoint(&path) {
                continue;
            }
            let rel = path.strip_prefix(root).unwrap();
            if entry.file_name() == "data" && rel.iter().any(|c| c == name) {
                found.push(path);
            } else if depth > 0 {
                walk(root, &path, name, depth - 1, found);
            }
        }
    }
    let mut found = Vec::new();
    walk(root, root, name, 4, &mut found);
    assert!(
        found.len() <= 1,
        "several data directories for {name}: {found:?}"
    );
    // None (yet, or any more): where it would be, for assertions that it is gone.
    found
        .pop()
        .unwrap_or_else(|| root.join("volumes").join(name).join("data"))
}

/// Fills the filesystem holding `dir` until the host answers ENOSPC (as root, so the blocks
/// reserved for root go too); returns the file whose removal frees the space again.
fn fill(dir: &Path) -> PathBuf {
    let path = dir.join("filler");
    let mut f = File::create(&path).unwrap();
    let chunk = vec![0xa5u8; MIB];
    for size in [MIB, 4096, 512] {
        loop {
            match f.write(&chunk[..size]) {
                Ok(n) if n == size => continue,
                Ok(_) => break,
                Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
                Err(e) => panic!("filling {}: {e}", path.display()),
            }
        }
    }
    let _ = f.sync_all();
    path
}

/// A daemon root whose catalog lies on a small ext4 filesystem of its own (bind-mounted onto
/// ROOT/fvol.redb), so that filling that filesystem fails catalog writes and nothing else.
struct CatalogOnSmallDisk {
    daemon: TestDaemon,
    root: TestRoot,
    disk: LoopFs,
}

impl CatalogOnSmallDisk {
    fn new() -> CatalogOnSmallDisk {
        let disk = LoopFs::ext4(16);
        let root = TestRoot::new();
        let mut first = TestDaemon::start_at(&root);
        assert!(first.stop().success());
        let on_disk = disk.path().join("fvol.redb");
        std::fs::copy(root.catalog(), &on_disk).unwrap();
        run_ok(
            Command::new("mount")
                .arg("--bind")
                .arg(&on_disk)
                .arg(root.catalog()),
        );
        let daemon = TestDaemon::start_at(&root);
        CatalogOnSmallDisk { daemon, root, disk }
    }
}

/// Creates tmpfs volumes with a sizeable label until one fails (the catalog must grow and
/// cannot); returns the names created and the failure.
fn create_until_the_catalog_is_full(d: &TestDaemon) -> (Vec<String>, String, String) {
    let label = format!("note={}", "x".repeat(1000));
    let mut created = Vec::new();
    for i in 0..2000 {
        let name = format!("v{i:04}");
        let out = d.cli(["create", "-d", "tmpfs", "--label", &label, &name]);
        if !out.status.success() {
            return (created, name, stderr_of(&out));
        }
        created.push(name);
    }
    panic!("2000 creates on a full catalog disk all succeeded");
}

#[test]
fn catalog_writes_work_again_after_the_disk_was_full() {
    if !fuse_or_skip("catalog_writes_work_again_after_the_disk_was_full") {
        return;
    }
    let setup = CatalogOnSmallDisk::new();
    let d = &setup.daemon;
    d.cli_ok(["create", "before"]);
    let filler = fill(setup.disk.path());

    let (created, failed, err) = create_until_the_catalog_is_full(d);
    assert!(
        err.contains("catalog") && err.contains("No space left on device"),
        "the failure must name the catalog and the cause: {err}"
    );

    // Space is back: the same daemon creates, mounts, writes, unmounts and removes.
    std::fs::remove_file(&filler).unwrap();
    d.cli_ok(["create", "after", "-o", "size=16M"]);
    let mp = d.mount("after");
    std::fs::write(mp.join("f"), b"written after the disk was full").unwrap();
    d.cli_ok(["unmount", "after"]);
    d.cli_ok(["create", "gone"]);
    d.cli_ok(["rm", "gone"]);
    d.cli_ok(["rm", &created[0]]);

    // Nothing acknowledged was lost, the failed create left nothing, and a restart agrees.
    let mut expected: Vec<String> = created[1..].to_vec();
    expected.extend(["after".to_owned(), "before".to_owned()]);
    expected.sort();
    assert_eq!(names(d), expected);
    assert!(!d.cli(["inspect", &failed]).status.success());
    let mut d = setup.daemon;
    assert!(d.stop().success());
    let d = TestDaemon::start_at(&setup.root);
    assert_eq!(names(&d), expected);
    let mp = d.mount("after");
    assert_eq!(
        std::fs::read(mp.join("f")).unwrap(),
        b"written after the disk was full"
    );
    d.cli_ok(["create", &failed]);
}

#[test]
fn rm_on_a_full_catalog_disk_leaves_record_and_data_together() {
    if !fuse_or_skip("rm_on_a_full_catalog_disk_leaves_record_and_data_together") {
        return;
    }
    let setup = CatalogOnSmallDisk::new();
    let d = &setup.daemon;
    d.cli_ok(["create", "keep", "-o", "size=16M"]);
    let mp = d.mount("keep");
    std::fs::write(mp.join("f"), b"keep me").unwrap();
    d.cli_ok(["unmount", "keep"]);
    let data = local_data_dir(&setup.root.root(), "keep");
    assert!(data.join("f").exists(), "{} holds no f", data.display());

    let filler = fill(setup.disk.path());
    create_until_the_catalog_is_full(d);
    let rm = d.cli(["rm", "keep"]);

    // Whatever rm answered, record and data agree, now and after a restart.
    std::fs::remove_file(&filler).unwrap();
    let check = |d: &TestDaemon, when: &str| {
        if names(d).contains(&"keep".to_owned()) {
            let mp = d.mount("keep");
            let content = std::fs::read(mp.join("f"));
            assert!(
                content.as_deref().ok() == Some(b"keep me".as_slice()),
                "{when}: keep is listed but its data is {content:?} (rm said: {})",
                stderr_of(&rm)
            );
            d.cli_ok(["unmount", "keep"]);
        } else {
            // A removal the disk interrupted is finished by the next rm.
            let _ = d.cli(["rm", "keep"]);
            assert!(
                !data.exists(),
                "{when}: keep is gone but its data is still in {}",
                data.display()
            );
        }
    };
    check(d, "after space came back");
    let mut d = setup.daemon;
    assert!(d.stop().success());
    let d = TestDaemon::start_at(&setup.root);
    check(&d, "after a restart");
    d.cli_ok(["rm", "-f", "keep"]);
    assert!(!data.exists());
}

#[test]
fn a_failed_rm_hides_the_volume_until_a_later_rm_finishes_it() {
    if !fuse_or_skip("a_failed_rm_hides_the_volume_until_a_later_rm_finishes_it") {
        return;
    }
    let d = TestDaemon::start();
    d.cli_ok(["create", "vol", "-o", "size=16M"]);
    let mp = d.mount("vol");
    std::fs::write(mp.join("f"), b"data").unwrap();
    std::fs::create_dir(mp.join("busy")).unwrap();
    d.cli_ok(["unmount", "vol"]);
    // A mount inside the data makes its deletion fail halfway (rmdir: EBUSY).
    let busy = local_data_dir(&d.root(), "vol").join("busy");
    run_ok(
        Command::new("mount")
            .args(["-t", "tmpfs", "none"])
            .arg(&busy),
    );

    let out = d.cli(["rm", "vol"]);
    assert!(!out.status.success(), "rm succeeded over a busy directory");
    let err = stderr_of(&out);
    // Half deleted: the volume is gone for users, not served with half its data.
    assert!(
        !names(&d).contains(&"vol".to_owned()),
        "still listed after rm deleted part of its data ({err})"
    );
    assert!(err.contains("marked for removal"), "{err}");
    let out = d.cli(["mount", "vol"]);
    assert!(
        !out.status.success() && stderr_of(&out).contains("no such volume"),
        "mounting a half-removed volume: {}",
        stderr_of(&out)
    );
    // A create of the name finishes the removal first, and fails while it cannot.
    assert!(!d.cli(["create", "vol"]).status.success());

    nix::mount::umount2(&busy, nix::mount::MntFlags::MNT_DETACH).unwrap();
    d.cli_ok(["rm", "vol"]);
    assert!(!local_data_dir(&d.root(), "vol").exists());
    assert!(!d.cli(["rm", "vol"]).status.success(), "removed twice");
    d.cli_ok(["create", "vol"]);
    assert!(d.mount("vol").read_dir().unwrap().next().is_none());
}

/// Runs `op` (a CLI command) against a daemon that kills itself at `point`, then starts a
/// daemon normally on the same root.
fn crash_at(root: &TestRoot, point: &str, op: &[&str]) -> TestDaemon {
    let mut d = TestDaemon::start_with_env(root, &[("FVOL_FAULT", point)]);
    let out = d.cli(op);
    assert!(
        !out.status.success(),
        "fvol {op:?} succeeded: the daemon did not die at {point}"
    );
    let status = d.kill9();
    assert!(!status.success(), "{status}");
    assert!(
        root.log().contains(&format!("FVOL_FAULT={point}")),
        "the daemon did not reach {point}:\n{}",
        root.log()
    );
    TestDaemon::start_at(root)
}

/// A volume `vol` that was rolled back or removed: no record, no data, and its name is free.
fn assert_gone(d: &TestDaemon, data: &Path) {
    assert!(!names(d).contains(&"vol".to_owned()), "{:?}", names(d));
    assert!(!d.cli(["inspect", "vol"]).status.success());
    assert!(!data.exists(), "{} left behind", data.display());
    d.cli_ok(["create", "vol"]);
    let mp = d.mount("vol");
    assert!(
        mp.read_dir().unwrap().next().is_none(),
        "the new vol is not empty"
    );
}

#[test]
fn crash_during_create_is_rolled_back() {
    if !fuse_or_skip("crash_during_create_is_rolled_back") {
        return;
    }
    for point in ["create-after-intent", "create-after-data"] {
        let root = TestRoot::new();
        let d = crash_at(&root, point, &["create", "vol", "-o", "size=16M"]);
        assert_gone(&d, &local_data_dir(&root.root(), "vol"));
    }
}

#[test]
fn crash_during_create_keeps_an_adopted_directory() {
    if !fuse_or_skip("crash_during_create_keeps_an_adopted_directory") {
        return;
    }
    let root = TestRoot::new();
    let dir = root.scratch_dir("adopted");
    std::fs::write(dir.join("mine"), b"not fvol's").unwrap();
    let mount = format!("mount={}", dir.display());
    let d = crash_at(&root, "create-after-data", &["create", "vol", "-o", &mount]);
    assert!(!names(&d).contains(&"vol".to_owned()));
    assert_eq!(std::fs::read(dir.join("mine")).unwrap(), b"not fvol's");
    d.cli_ok(["create", "vol", "-o", &mount]);
    assert_eq!(
        std::fs::read(d.mount("vol").join("mine")).unwrap(),
        b"not fvol's"
    );
}

#[test]
fn crash_during_rm_is_finished() {
    if !fuse_or_skip("crash_during_rm_is_finished") {
        return;
    }
    for point in ["rm-after-intent", "rm-after-data"] {
        let root = TestRoot::new();
        let mut d = TestDaemon::start_at(&root);
        d.cli_ok(["create", "vol", "-o", "size=16M"]);
        std::fs::write(d.mount("vol").join("f"), b"data").unwrap();
        d.cli_ok(["unmount", "vol"]);
        let data = local_data_dir(&root.root(), "vol");
        assert!(data.join("f").exists());
        assert!(d.stop().success());

        let d = crash_at(&root, point, &["rm", "vol"]);
        assert_gone(&d, &data);
    }
}

/// Writes `count` small files into `dir`.
fn write_files(dir: &Path, count: usize) {
    for i in 0..count {
        std::fs::write(dir.join(format!("f{i:05}")), format!("file {i}")).unwrap();
    }
}

fn rescans(d: &TestDaemon, name: &str) -> usize {
    d.log()
        .matches(&format!("rescanning usage of volume {name}\n"))
        .count()
}

/// The usage the catalog holds for `name` (the daemon must be stopped).
fn stored_usage(root: &TestRoot, name: &str) -> fvol::volume::Usage {
    let store = fvol::store::Store::open(&root.catalog()).unwrap();
    store.usage(name).unwrap()
}

#[test]
fn clean_unmount_records_usage_and_the_next_mount_does_not_rescan() {
    if !fuse_or_skip("clean_unmount_records_usage_and_the_next_mount_does_not_rescan") {
        return;
    }
    let d = TestDaemon::start();
    d.cli_ok(["create", "many", "-o", "size=256M"]);
    write_files(&d.mount("many"), 2000);
    d.cli_ok(["unmount", "many"]);
    let recorded = used_bytes(&d, "many");
    assert!(recorded >= 2000 * 4096, "{recorded}");

    // Behind fvol's back: a rescan would count this, a trusted clean record does not.
    let data = local_data_dir(&d.root(), "many");
    write_synced(&data.join("behind"), &vec![1; MIB]);
    let mp = d.mount("many");
    assert!(mp.join("f01999").exists());
    assert_eq!(
        used_bytes(&d, "many"),
        recorded,
        "the mount after a clean unmount rescanned the tree (the unmount was not recorded clean)"
    );
    assert_eq!(rescans(&d, "many"), 0, "{}", d.log());
}

#[test]
fn sigterm_records_clean_usage_and_the_restart_does_not_rescan() {
    if !fuse_or_skip("sigterm_records_clean_usage_and_the_restart_does_not_rescan") {
        return;
    }
    let root = TestRoot::new();
    let mut d = TestDaemon::start_at(&root);
    d.cli_ok(["create", "many", "-o", "size=256M"]);
    write_files(&d.mount("many"), 2000);
    let recorded = used_bytes(&d, "many");
    assert!(d.stop().success());
    let usage = stored_usage(&root, "many");
    assert!(
        usage.clean && usage.bytes == recorded,
        "the stop recorded {usage:?}; expected clean usage of {recorded} bytes"
    );

    let data = local_data_dir(&root.root(), "many");
    write_synced(&data.join("behind"), &vec![1; MIB]);
    let mut d = TestDaemon::start_at(&root);
    assert_eq!(d.inspect("many")["Status"]["Mounted"], true);
    assert_eq!(used_bytes(&d, "many"), recorded, "the restart rescanned");
    assert_eq!(rescans(&d, "many"), 0, "{}", d.log());

    // Control: after a crash the usage is not trusted, and the rescan finds the file.
    d.kill9();
    let d = TestDaemon::start_at(&root);
    assert!(used_bytes(&d, "many") >= recorded + MIB as u64);
    assert_eq!(rescans(&d, "many"), 1, "{}", d.log());
}
