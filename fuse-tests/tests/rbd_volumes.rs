//! The rbd driver end to end: volumes on RBD images of a real single-node Ceph cluster, served
//! by real daemons and driven through the CLI.
//!
//! One cluster for the whole binary (bootstrapping one takes ~15 s): a single test runs named
//! steps, each on its own volumes, and reports every failing step at the end. The cluster is
//! purged when the test ends, also when a step panics.
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fuse_tests::ceph::{POOL, TestCluster};
use fuse_tests::daemon::{TestDaemon, TestRoot, df_size, fuse_or_skip, stderr_of};
use fuse_tests::docker::wait_until;
use fuse_tests::{direct_io, suites};

const MIB: u64 = 1 << 20;
/// How long a start may take to settle an interrupted create or rm in the background.
const SETTLE: Duration = Duration::from_secs(60);

/// Files written (path relative to the mountpoint, contents).
type Files = Vec<(PathBuf, Vec<u8>)>;

/// Writes `data` to `path`, fsyncs the file and then its directory.
fn write_durably(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)?;
    f.write_all(data)?;
    f.sync_all()?;
    drop(f);
    let dir = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY)
        .open(path.parent().unwrap())?;
    dir.sync_all()
}

/// Reads the files back, then unmounts the volume, checks it clean and removes it.
fn verify_and_remove(d: &TestDaemon, name: &str, mp: &Path, files: &[(PathBuf, Vec<u8>)]) {
    check_files(mp, files);
    d.cli_ok(["unmount", name]);
    d.fsck_clean(name);
    d.cli_ok(["rm", name]);
}

fn io(ceph: &TestCluster) -> fvol::sys::librbd::IoCtx {
    ceph.connect().io_ctx(POOL).unwrap()
}

#[test]
fn rbd_volumes() {
    if !fuse_or_skip("rbd_volumes") {
        return;
    }
    let t = Instant::now();
    let ceph = TestCluster::start();
    type Step = fn(&TestCluster);
    let steps: &[(&str, Step)] = &[
        ("quota_and_df", quota_and_df),
        ("refusals", refusals),
        ("rm_deletes_the_image", rm_deletes_the_image),
        ("migration", migration),
        ("interrupted_create_and_rm", interrupted_create_and_rm),
        ("lock_conflict", lock_conflict),
        ("lock_kept_from_a_namesake", lock_kept_from_a_namesake),
        ("lock_of_an_earlier_boot", lock_of_an_earlier_boot),
        ("kill9_durability", kill9_durability),
        ("writes_through_restarts", writes_through_restarts),
        ("pjdfstest", pjdfstest),
        ("fsx", fsx),
        ("o_direct", o_direct),
        ("usage_drift", usage_drift),
        ("usage_through_crashes", usage_through_crashes),
    ];
    let only = std::env::var("FVOL_RBD_STEPS").ok();
    let mut failed = Vec::new();
    for (name, step) in steps {
        if let Some(only) = &only
            && !only.split(',').any(|s| s == *name)
        {
            continue;
        }
        let ts = Instant::now();
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| step(&ceph)));
        eprintln!(
            "step {name}: {} in {:.1?}",
            if r.is_ok() { "ok" } else { "FAILED" },
            ts.elapsed()
        );
        if r.is_err() {
            failed.push(*name);
        }
    }
    drop(ceph);
    eprintln!("rbd_volumes done in {:.1?}", t.elapsed());
    assert!(failed.is_empty(), "failed steps: {failed:?}");
}

/// df shows the usable capacity (the image minus its metadata region: at least 90 % of it),
/// inspect counts what is written against it, and filling it ends in a clean ENOSPC.
fn quota_and_df(ceph: &TestCluster) {
    let d = TestDaemon::start();
    ceph.create_volume(&d, "quota", &["size=256M"]);
    let mp = d.mount("quota");
    let size = df_size(&mp);
    assert!(
        (256 * MIB / 10 * 9..=256 * MIB).contains(&size),
        "df size {size} of a 256 MiB image"
    );
    let st = d.inspect("quota");
    let limit = st["Status"]["SizeLimit"].as_u64().unwrap();
    assert_eq!(limit, size, "{st}");
    let files = write_files(&mp, "q", 4, 8 * MIB as usize);
    let written: u64 = files.iter().map(|(_, d)| d.len() as u64).sum();
    let st = d.inspect("quota");
    let used = st["Status"]["UsedBytes"].as_u64().unwrap();
    assert!(
        used >= written && used < written + MIB,
        "used {used}, wrote {written}: {st}"
    );
    // Filling the rest ends in a clean ENOSPC, never an I/O error, at the limit.
    let out = std::process::Command::new("dd")
        .args(["if=/dev/zero", "bs=1M", "count=300"])
        .arg(format!("of={}", mp.join("fill").display()))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("No space left on device"), "{err}");
    let st = d.inspect("quota");
    let used = st["Status"]["UsedBytes"].as_u64().unwrap();
    assert!(
        used <= limit && used > limit / 10 * 9,
        "used {used} of {limit}"
    );
    d.cli_ok(["unmount", "quota"]);
    let report = d.fsck_clean("quota");
    assert_eq!(report["data_bytes"].as_u64(), Some(used), "{report}");
    d.cli_ok(["rm", "quota"]);
}

/// A foreign image, a damaged superblock and a missing size= are refused.
fn refusals(ceph: &TestCluster) {
    let d = TestDaemon::start();
    let io = io(ceph);
    // (a) an image made outside fvol, with data in its first block
    io.create_image("foreign", 64 * MIB).unwrap();
    let img = io.open_image("foreign").unwrap();
    let junk = fuse_tests::random_bytes(7, 8192);
    img.write_at(0, &junk).unwrap();
    img.flush().unwrap();
    drop(img);
    let out = d.cli([
        "create",
        "-d",
        "rbd",
        "-o",
        "image=foreign",
        "-o",
        &ceph.conf_opt(),
        "foreign-vol",
    ]);
    assert!(!out.status.success());
    assert!(
        stderr_of(&out).contains("not an fvol filesystem"),
        "{}",
        stderr_of(&out)
    );
    let mut back = vec![0u8; 8192];
    io.open_image("foreign")
        .unwrap()
        .read_at(0, &mut back)
        .unwrap();
    assert!(back == junk, "the foreign image was modified");
    assert!(io.image_exists("foreign").unwrap());
    io.remove_image("foreign").unwrap();

    // (b) an fvol image with a damaged superblock
    ceph.create_volume(&d, "dmg", &["size=64M"]);
    let mp = d.mount("dmg");
    std::fs::write(mp.join("a"), b"x").unwrap();
    d.cli_ok(["unmount", "dmg"]);
    let img = io.open_image("dmg").unwrap();
    let mut b = [0u8; 1];
    img.read_at(13, &mut b).unwrap();
    img.write_at(13, &[b[0] ^ 0xff]).unwrap();
    img.flush().unwrap();
    drop(img);
    let out = d.cli(["mount", "dmg"]);
    assert!(!out.status.success());
    assert!(stderr_of(&out).contains("damaged"), "{}", stderr_of(&out));
    let out = d.cli([
        "create",
        "-d",
        "rbd",
        "-o",
        "image=dmg",
        "-o",
        &ceph.conf_opt(),
        "dmg2",
    ]);
    assert!(!out.status.success());
    assert!(stderr_of(&out).contains("damaged"), "{}", stderr_of(&out));
    d.cli_ok(["rm", "dmg"]);

    // (c) a new image needs size=
    let out = d.cli(["create", "-d", "rbd", "-o", &ceph.conf_opt(), "nosize"]);
    assert!(!out.status.success());
    assert!(stderr_of(&out).contains("size="), "{}", stderr_of(&out));
    assert!(!io.image_exists("nosize").unwrap());
}

/// rm of a volume fvol created deletes its image.
fn rm_deletes_the_image(ceph: &TestCluster) {
    let d = TestDaemon::start();
    ceph.create_volume(&d, "gone", &["size=32M"]);
    let io = io(ceph);
    assert!(io.image_exists("gone").unwrap());
    let mp = d.mount("gone");
    std::fs::write(mp.join("f"), b"data").unwrap();
    d.cli_ok(["unmount", "gone"]);
    d.cli_ok(["rm", "gone"]);
    assert!(!io.image_exists("gone").unwrap());
}

fn write_files(mp: &Path, prefix: &str, n: usize, len: usize) -> Files {
    std::fs::create_dir_all(mp.join("data")).unwrap();
    (0..n)
        .map(|i| {
            let p = mp.join(format!("data/{prefix}-{i}"));
            let data = fuse_tests::random_bytes(i as u64 + 1, len + i * 4099);
            write_durably(&p, &data).unwrap();
            (p.strip_prefix(mp).unwrap().to_path_buf(), data)
        })
        .collect()
}

fn check_files(mp: &Path, files: &[(PathBuf, Vec<u8>)]) {
    for (rel, data) in files {
        let got = std::fs::read(mp.join(rel)).unwrap_or_else(|e| panic!("{rel:?}: {e}"));
        assert!(
            got == *data,
            "{rel:?}: contents differ ({} bytes)",
            got.len()
        );
    }
}

/// Daemon A writes, unmounts and stops; daemon B adopts the image and reads every byte.
fn migration(ceph: &TestCluster) {
    let mut a = TestDaemon::start();
    ceph.create_volume(&a, "mig", &["size=128M"]);
    let mp = a.mount("mig");
    let files = write_files(&mp, "m", 8, MIB as usize);
    a.cli_ok(["unmount", "mig"]);
    a.stop();

    let b = TestDaemon::start();
    ceph.create_volume(&b, "migrated", &["image=mig"]);
    let mp = b.mount("migrated");
    check_files(&mp, &files);
    b.cli_ok(["unmount", "migrated"]);
    b.cli_ok(["rm", "migrated"]);
    assert!(
        io(ceph).image_exists("mig").unwrap(),
        "rm of an adopted volume removed the image"
    );

    let a = TestDaemon::start_at(&a.root);
    let mp = a.mount("mig");
    check_files(&mp, &files);
    a.cli_ok(["unmount", "mig"]);
    a.cli_ok(["rm", "mig"]);
    assert!(!io(ceph).image_exists("mig").unwrap());
}

/// Runs `op` on a daemon that kills itself at the test-only crash point `point`, then starts
/// a daemon normally on the same root.
fn crash_at(root: &TestRoot, point: &str, op: &[&str]) -> TestDaemon {
    let mut d = TestDaemon::start_with_env(root, &[("FVOL_FAULT", point)]);
    let out = d.cli(op);
    assert!(
        !out.status.success(),
        "{op:?} succeeded: no crash at {point}"
    );
    d.kill9();
    assert!(root.log().contains(&format!("FVOL_FAULT={point}")));
    TestDaemon::start_at(root)
}

/// A daemon killed after a committed step of create or rm: the next start deletes the image of
/// a create it rolls back, keeps an adopted image, and finishes an rm. It settles rbd volumes
/// in the background (a cluster that does not answer holds nothing back), hence the waits.
fn interrupted_create_and_rm(ceph: &TestCluster) {
    let io = io(ceph);
    let conf = ceph.conf_opt();

    let root = TestRoot::new();
    let create = ["create", "-d", "rbd", "-o", &conf, "-o", "size=32M", "made"];
    let d = crash_at(&root, "create-after-data", &create);
    assert!(!d.cli(["inspect", "made"]).status.success());
    assert!(
        wait_until(SETTLE, || !io.image_exists("made").unwrap()),
        "the image of a rolled-back create is left"
    );
    d.cli_ok(create);
    d.cli_ok(["rm", "made"]);
    drop(d);

    let root = TestRoot::new();
    let mut owner = TestDaemon::start();
    ceph.create_volume(&owner, "adopted", &["size=32M"]);
    std::fs::write(owner.mount("adopted").join("f"), b"kept").unwrap();
    owner.cli_ok(["unmount", "adopted"]);
    owner.stop();
    let adopt = [
        "create",
        "-d",
        "rbd",
        "-o",
        &conf,
        "-o",
        "image=adopted",
        "adopter",
    ];
    let d = crash_at(&root, "create-after-data", &adopt);
    assert!(!d.cli(["inspect", "adopter"]).status.success());
    // The rollback is done once the name is free again (a create settles it first, under the
    // volume's lock); the adopted image must be there after it.
    d.cli_ok(["rm", "-f", "adopter"]);
    assert!(
        io.image_exists("adopted").unwrap(),
        "rolling back an adoption removed the image"
    );
    drop(d);
    let owner = TestDaemon::start_at(&owner.root);
    assert_eq!(
        std::fs::read(owner.mount("adopted").join("f")).unwrap(),
        b"kept"
    );
    owner.cli_ok(["unmount", "adopted"]);
    owner.cli_ok(["rm", "adopted"]);

    let root = TestRoot::new();
    let mut d = TestDaemon::start_at(&root);
    ceph.create_volume(&d, "removed", &["size=32M"]);
    d.stop();
    let d = crash_at(&root, "rm-after-intent", &["rm", "removed"]);
    assert!(!d.cli(["inspect", "removed"]).status.success());
    assert!(
        wait_until(SETTLE, || !io.image_exists("removed").unwrap()),
        "the start did not finish the rm"
    );
}

/// A second daemon is refused while A holds the lock, also after A died; break-lock lets it in.
fn lock_conflict(ceph: &TestCluster) {
    let mut a = TestDaemon::start();
    ceph.create_volume(&a, "lk", &["size=64M"]);
    let mp = a.mount("lk");
    let files = write_files(&mp, "l", 3, 100_000);

    let b = TestDaemon::start();
    ceph.create_volume(&b, "lk", &["image=lk"]);
    let a_root = a.root().display().to_string();
    let refused = |why: &str| {
        let out = b.cli(["mount", "lk"]);
        let err = stderr_of(&out);
        assert!(!out.status.success(), "{why}: B mounted a locked image");
        assert!(err.contains("fvol host="), "{why}: {err}");
        assert!(
            err.contains(&a_root),
            "{why}: holder's root not named: {err}"
        );
        assert!(err.contains("fvol break-lock"), "{why}: {err}");
    };
    refused("A alive");
    a.kill9();
    refused("A killed");
    let out = b.cli_ok(["break-lock", "lk"]);
    eprintln!("break-lock: {out}");
    let mp = b.mount("lk");
    verify_and_remove(&b, "lk", &mp, &files);
    io(ceph).remove_image("lk").unwrap();
}

/// A daemon with the same host name and the same root path, but in another pid namespace
/// (daemons in containers that share the host's name), cannot tell from A's pid whether A runs:
/// it must refuse A's lock, not break it (which would fence A, a live writer).
fn lock_kept_from_a_namesake(ceph: &TestCluster) {
    let a = TestDaemon::start();
    ceph.create_volume(&a, "ns", &["size=64M"]);
    let mp = a.mount("ns");
    let files = write_files(&mp, "n", 2, 50_000);

    // B: its own state directory, bind-mounted over A's root path in a private mount namespace,
    // in a new pid namespace (where A's pid does not exist); it adopts the image and mounts it.
    let b_dir = tempfile::tempdir().unwrap();
    let script = r#"set -u
mount --bind "$B_DIR" "$ROOT"
"$FVOL" --root "$ROOT" daemon --no-plugin >"$B_DIR/daemon.log" 2>&1 &
daemon=$!
for _ in $(seq 100); do [ -S "$ROOT/fvol.sock" ] && break; sleep 0.1; done
"$FVOL" --root "$ROOT" create -d rbd -o "$CONF_OPT" -o image=ns ns >/dev/null || exit 3
"$FVOL" --root "$ROOT" mount ns && echo MOUNTED
"$FVOL" --root "$ROOT" unmount ns >/dev/null 2>&1
kill "$daemon"; wait "$daemon"
exit 0
"#;
    let out = std::process::Command::new("unshare")
        .args([
            "--mount",
            "--propagation",
            "private",
            "--pid",
            "--fork",
            "--mount-proc",
        ])
        .args(["sh", "-c", script])
        .env("B_DIR", b_dir.path())
        .env("ROOT", a.root())
        .env("FVOL", fuse_tests::daemon::fvol_bin())
        .env("CONF_OPT", ceph.conf_opt())
        .output()
        .expect("unshare");
    let (stdout, err) = (String::from_utf8_lossy(&out.stdout), stderr_of(&out));
    assert!(
        out.status.success(),
        "B's script: {}\n{stdout}\n{err}",
        out.status
    );
    assert!(
        !stdout.contains("MOUNTED"),
        "B broke a live holder's lock:\n{err}"
    );
    assert!(err.contains("is in use by"), "{err}");
    assert!(err.contains(&a.root().display().to_string()), "{err}");

    // A was not fenced: it still writes durably, and reads what it wrote.
    write_durably(&mp.join("after"), b"still the writer").expect("A's write after B's try");
    verify_and_remove(&a, "ns", &mp, &files);
}

/// A lock this host and root took in an earlier boot (a crash, then a reboot): the daemon
/// breaks it by itself once its holder no longer watches the image, and refuses it while the
/// holder still does, whatever its pid (here 1, which runs in this boot).
fn lock_of_an_earlier_boot(ceph: &TestCluster) {
    let d = TestDaemon::start();
    ceph.create_volume(&d, "eb", &["size=64M"]);
    let files = write_files(&d.mount("eb"), "e", 2, 50_000);
    d.cli_ok(["unmount", "eb"]);

    // The earlier boot's holder, played by this process: its own connection and cookie.
    let host = nix::unistd::gethostname().unwrap().into_string().unwrap();
    let pidns = std::fs::read_link("/proc/self/ns/pid").unwrap();
    let cookie = format!(
        "fvol host={host} root={} boot=00000000-0000-0000-0000-000000000000 pidns={} pid=1",
        d.root().display(),
        pidns.display()
    );
    let holder = ceph.connect();
    let image = holder.io_ctx(POOL).unwrap().open_image("eb").unwrap();
    image.lock_exclusive(&cookie).unwrap();

    let out = d.cli(["mount", "eb"]);
    let err = stderr_of(&out);
    assert!(!out.status.success(), "mounted while the holder watches");
    assert!(
        err.contains("is in use by") && err.contains("boot=00000000"),
        "{err}"
    );

    // Closed: the lock stays, the watch goes.
    drop(image);
    let mp = d.mount("eb");
    verify_and_remove(&d, "eb", &mp, &files);
    // The holder was fenced (blocklisted): its connection is of no further use.
    drop(holder);
}

/// A kill -9: the writer's calls wait for the next daemon, which takes over the image's lock
/// from its dead predecessor (fencing it) and serves the same mount, the image at its last
/// durable commit plus what the redo journal holds (docs/rbd.md, "A crash of the daemon").
/// Every file fsynced before and after the crash is there, and the writer sees no error: the
/// file being written at the crash, not yet fsynced, is there too.
fn kill9_durability(ceph: &TestCluster) {
    let mut d = TestDaemon::start();
    ceph.create_volume(&d, "dur", &["size=128M"]);
    let mp = d.mount("dur");
    std::fs::create_dir(mp.join("w")).unwrap();
    let manifest: Arc<Mutex<Files>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (manifest, stop, mp) = (manifest.clone(), stop.clone(), mp.clone());
        std::thread::spawn(move || -> Vec<std::io::Error> {
            let mut errors = Vec::new();
            for i in 0.. {
                if stop.load(Ordering::Relaxed) || errors.len() > 1 {
                    break;
                }
                let rel = PathBuf::from(format!("w/f{i}"));
                let data = fuse_tests::random_bytes(1000 + i, 20_000 + (i as usize % 7) * 33_333);
                match write_durably(&mp.join(&rel), &data) {
                    Ok(()) => manifest.lock().unwrap().push((rel, data)),
                    Err(e) => errors.push(e),
                }
            }
            errors
        })
    };
    let written = || manifest.lock().unwrap().len();
    let wait_for = |n: usize| {
        let deadline = Instant::now() + Duration::from_secs(120);
        while written() < n {
            assert!(
                !writer.is_finished(),
                "the writer stopped after {} files",
                written()
            );
            assert!(Instant::now() < deadline, "the writer is too slow");
            std::thread::sleep(Duration::from_millis(5));
        }
    };
    wait_for(20);
    d.kill9();
    assert!(fuse_tests::daemon::is_mountpoint(&mp));
    let before = written();
    let d = TestDaemon::start_at(&d.root);
    wait_for(before + 10);
    stop.store(true, Ordering::Relaxed);
    let errors = writer.join().unwrap();
    assert!(
        errors.is_empty(),
        "the writer failed: {errors:?}\n{}",
        d.log()
    );
    let files = manifest.lock().unwrap().clone();
    eprintln!("{} files fsynced, {before} before kill -9", files.len());
    assert!(
        d.log()
            .contains("broke the stale lock of a dead predecessor"),
        "{}",
        d.log()
    );
    assert!(d.log().contains("resuming its connection"), "{}", d.log());
    verify_and_remove(&d, "dur", &mp, &files);
}

/// A writer of fsynced, checksummed records sees no error across planned restarts and crashes
/// of the daemon serving its rbd volume; afterwards every record is intact and the image is
/// clean.
fn writes_through_restarts(ceph: &TestCluster) {
    let root = TestRoot::new();
    let mut d = TestDaemon::start_at(&root);
    ceph.create_volume(&d, "rec", &["size=128M"]);
    let mp = d.mount("rec");
    let records = mp.join("records");
    let stop = root.scratch().join("stop");
    let mut writer = std::process::Command::new(env!("CARGO_BIN_EXE_record-writer"))
        .arg(&records)
        .arg(&stop)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let progress = |writer: &mut std::process::Child| {
        let from = std::fs::metadata(&records).map_or(0, |m| m.len());
        let deadline = Instant::now() + Duration::from_secs(120);
        while std::fs::metadata(&records).map_or(0, |m| m.len()) <= from {
            if let Some(status) = writer.try_wait().unwrap() {
                let mut err = String::new();
                use std::io::Read;
                let _ = writer.stderr.as_mut().unwrap().read_to_string(&mut err);
                panic!("the writer ended ({status}): {err}\n{}", root.log());
            }
            assert!(
                Instant::now() < deadline,
                "the writer stopped at {from} bytes"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    progress(&mut writer);
    // Planned restarts and SIGKILLs. A write acknowledged just before a kill, whose fsync the
    // next daemon answers, survives only through the redo journal in the keeper's memory
    // (docs/rbd.md, "A crash of the daemon"): without it the read back comes short.
    for planned in [true, false, false, true, false, false, false] {
        if planned {
            assert!(d.terminate().success(), "{}", root.log());
        } else {
            d.kill9();
        }
        d = TestDaemon::start_at(&root);
        progress(&mut writer);
    }
    std::fs::write(&stop, b"").unwrap();
    let out = writer.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the writer failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let check = std::process::Command::new(env!("CARGO_BIN_EXE_record-writer"))
        .arg("--check")
        .arg(&records)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&check.stdout)
            .split_whitespace()
            .nth(1),
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .nth(1),
        "every fsynced record is there"
    );
    d.cli_ok(["unmount", "rec"]);
    d.fsck_clean("rec");
    d.cli_ok(["rm", "rec"]);
}

fn pjdfstest(ceph: &TestCluster) {
    let d = TestDaemon::start();
    ceph.create_volume(&d, "pjd", &["size=256M"]);
    // pjdfstest binds unix sockets, whose paths may not exceed 108 bytes: it runs through a
    // bind mount at a short path (`fvol mount --target`), not under the test's deep root.
    let short = tempfile::Builder::new()
        .prefix("pjd")
        .tempdir_in("/tmp")
        .unwrap();
    let target = short.path().to_str().unwrap().to_owned();
    d.cli_ok(["mount", "pjd", "--target", &target]);
    let (failed, skipped, passed, text) = suites::pjdfstest(short.path());
    eprintln!("pjdfstest: {failed} failed, {skipped} skipped, {passed} passed");
    assert_eq!(failed, 0, "{text}");
    d.cli_ok(["unmount", "pjd", "--target", &target]);
    d.fsck_clean("pjd");
    d.cli_ok(["rm", "pjd"]);
}

fn fsx(ceph: &TestCluster) {
    let d = TestDaemon::start();
    ceph.create_volume(&d, "fsx", &["size=256M"]);
    let mp = d.mount("fsx");
    for seed in [1, 2, 3] {
        if let Err(text) = suites::fsx(&mp, seed, 10_000) {
            panic!("fsx seed {seed}:\n{text}");
        }
    }
    d.cli_ok(["unmount", "fsx"]);
    d.fsck_clean("fsx");
    d.cli_ok(["rm", "fsx"]);
}

/// UsedBytes and UsedInodes of a volume, from inspect.
fn used(d: &TestDaemon, name: &str) -> (u64, u64) {
    let st = d.inspect(name);
    let n = |k: &str| {
        st["Status"][k]
            .as_u64()
            .unwrap_or_else(|| panic!("{k}: {st}"))
    };
    (n("UsedBytes"), n("UsedInodes"))
}

/// Waits (generously) until the volume's usage is `want`: a closed file's release, and the
/// kernel's FORGET the image filesystem waits for, arrive a moment after the close.
fn wait_for_used(d: &TestDaemon, name: &str, want: (u64, u64), what: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while used(d, name) != want && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(used(d, name), want, "{what}");
}

/// O_DIRECT on a real RBD volume (issue 12). Aligned direct I/O and `fio --direct=1` work
/// and are counted; misaligned requests fail as on a block device; a direct write past the
/// limit is short, then refused.
fn o_direct(ceph: &TestCluster) {
    let d = TestDaemon::start();
    ceph.create_volume(&d, "direct", &["size=64M"]);
    let mp = d.mount("direct");
    let initial = used(&d, "direct");
    let aligned = direct_io::aligned(&mp.join("aligned"));
    assert_eq!(
        aligned,
        serde_json::json!({"size": 2 * MIB, "direct_read_matches": true, "buffered_read_matches": true})
    );
    let mut want = direct_io::block_device_cases();
    let mut got = direct_io::cases(&mp.join("cases"));
    for case in direct_io::ADDRESS_ONLY {
        want.remove(case);
        got.remove(case);
    }
    assert_eq!(got, want, "rbd (a block device's answers second)");
    direct_io::fio_randrw(&mp.join("fio"));
    let (bytes, _) = used(&d, "direct");
    assert!(
        bytes >= 16 * MIB + MIB,
        "used {bytes} after fio and 1 MiB more"
    );

    // Filling the rest with direct writes: short at the limit, then ENOSPC; all counted.
    let limit = d.inspect("direct")["Status"]["SizeLimit"].as_u64().unwrap();
    let fill = direct_io::fill(&mp.join("fill"));
    let results = fill["results"].as_array().unwrap();
    assert_eq!(results.last(), Some(&serde_json::json!("ENOSPC")), "{fill}");
    assert_eq!(fill["intact"], serde_json::json!(true), "{fill}");
    let written = fill["written"].as_u64().unwrap();
    let (full, _) = used(&d, "direct");
    assert!(
        full <= limit && full >= bytes + written && full + MIB > limit,
        "used {full} of {limit} after {written} bytes direct"
    );
    for f in ["fill", "fio", "aligned", "cases"] {
        std::fs::remove_file(mp.join(f)).unwrap();
    }
    wait_for_used(&d, "direct", initial, "after removing every file");

    d.cli_ok(["unmount", "direct"]);
    d.fsck_clean("direct");
    d.cli_ok(["rm", "direct"]);
}

/// Usage never drifts (issue 12.6; fuse-tests/tests/usage_drift.rs for the other drivers): after
/// a randomized multi-process run of mixed operations, the counters equal a walk through the
/// mount; a clean unmount records them, `fvol fsck` finds the same totals, and mounting again
/// changes nothing.
fn usage_drift(ceph: &TestCluster) {
    let d = TestDaemon::start();
    ceph.create_volume(&d, "drift", &["size=24M", "inodes=2000"]);
    let mp = d.mount("drift");
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    eprintln!("usage_drift: seed {seed}");
    let out = std::process::Command::new("/usr/bin/python3")
        .args(["-c", include_str!("usage_drift/workload.py")])
        .arg(&mp)
        .args([seed.to_string(), "4".into(), "1000".into(), "mixed".into()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "workload (seed {seed}): {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        stderr_of(&out)
    );
    let usage = |d: &TestDaemon| usage_of(d, "drift");
    let walked = walk_when_settled(&d, "drift", &mp);
    assert_eq!(usage(&d), walked, "seed {seed}: counters against a walk");
    d.cli_ok(["unmount", "drift"]);
    assert_eq!(usage(&d), walked, "seed {seed}: usage recorded at unmount");
    let report = d.fsck_clean("drift");
    assert_eq!(
        (report["data_bytes"].as_u64(), report["inodes"].as_u64()),
        (Some(walked.bytes), Some(walked.inodes)),
        "seed {seed}: fsck totals: {report}"
    );
    let mp = d.mount("drift");
    assert_eq!(usage(&d), walked, "seed {seed}: usage after mounting again");
    assert_eq!(
        fuse_tests::session::walk(&mp),
        walked,
        "seed {seed}: walk after mounting again"
    );
    d.cli_ok(["unmount", "drift"]);
    d.cli_ok(["rm", "drift"]);
}

/// The volume's counters, as `inspect` shows them.
fn usage_of(d: &TestDaemon, name: &str) -> fvol::fs::UsageSnapshot {
    let st = &d.inspect(name)["Status"];
    fvol::fs::UsageSnapshot {
        bytes: st["UsedBytes"].as_u64().unwrap(),
        inodes: st["UsedInodes"].as_u64().unwrap(),
    }
}

/// A walk through the mount, taken once the counters agree with it or after 10 s: the last
/// RELEASE and FORGET reach the handler a moment after a workload ends.
fn walk_when_settled(d: &TestDaemon, name: &str, mp: &Path) -> fvol::fs::UsageSnapshot {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut walked = fuse_tests::session::walk(mp);
    while usage_of(d, name) != walked && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
        walked = fuse_tests::session::walk(mp);
    }
    walked
}

/// Usage stays exact across crashes (issue 14): a randomized multi-process workload runs while
/// the daemon is killed (SIGKILL) and started again, five times; the workload sees no error,
/// and afterwards the counters equal a walk through the mount and fsck's totals.
fn usage_through_crashes(ceph: &TestCluster) {
    let root = TestRoot::new();
    let mut d = TestDaemon::start_at(&root);
    ceph.create_volume(&d, "crashes", &["size=24M", "inodes=2000"]);
    let mp = d.mount("crashes");
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    eprintln!("usage_through_crashes: seed {seed}");
    let mut work = std::process::Command::new("/usr/bin/python3")
        .args(["-c", include_str!("usage_drift/workload.py")])
        .arg(&mp)
        .args([seed.to_string(), "4".into(), "3000".into(), "mixed".into()])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut kills = 0;
    while kills < 5 && work.try_wait().unwrap().is_none() {
        // Pacing only: the kill lands somewhere in the run.
        std::thread::sleep(Duration::from_millis(500));
        d.kill9();
        d = TestDaemon::start_at(&root);
        kills += 1;
    }
    let out = work.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "workload (seed {seed}) across {kills} kills: {}\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        stderr_of(&out),
        root.log()
    );
    eprintln!("usage_through_crashes: {kills} kills during the workload");
    let usage = |d: &TestDaemon| usage_of(d, "crashes");
    let walked = walk_when_settled(&d, "crashes", &mp);
    assert_eq!(usage(&d), walked, "seed {seed}: counters against a walk");
    d.cli_ok(["unmount", "crashes"]);
    let report = d.fsck_clean("crashes");
    assert_eq!(
        (report["data_bytes"].as_u64(), report["inodes"].as_u64()),
        (Some(walked.bytes), Some(walked.inodes)),
        "seed {seed}: fsck totals: {report}"
    );
    d.cli_ok(["rm", "crashes"]);
}
