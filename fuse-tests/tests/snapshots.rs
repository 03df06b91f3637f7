//! Snapshots and clones on every driver (rbd on a real cluster): snapshots taken while
//! writers append numbered, checksummed records each hold a gap-free prefix of every log;
//! a clone and its source are independent both ways; restore needs an unmounted volume and
//! rolls it back; `rm` of a volume with snapshots is refused, `rm -f` removes them too.
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use fuse_tests::ceph::TestCluster;
use fuse_tests::daemon::{TestDaemon, fuse_or_skip, stderr_of};

const RECORD: usize = 64;
const WRITERS: u64 = 3;
const PATIENCE: Duration = Duration::from_secs(120);
/// The writer ids of the round-robin writer's three files.
const ROUND_ROBIN: u64 = 10;

fn checksum(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
    })
}

/// Record `seq` of writer `w`: writer, sequence number, filler, checksum of the rest.
fn record(w: u64, seq: u64) -> [u8; RECORD] {
    let mut r = [0u8; RECORD];
    r[..8].copy_from_slice(&w.to_le_bytes());
    r[8..16].copy_from_slice(&seq.to_le_bytes());
    for (i, b) in r[16..RECORD - 8].iter_mut().enumerate() {
        *b = (seq as u8).wrapping_add(i as u8);
    }
    let sum = checksum(&r[..RECORD - 8]);
    r[RECORD - 8..].copy_from_slice(&sum.to_le_bytes());
    r
}

/// The number of records in `log`, which must be exactly records 0, 1, 2, ... of writer `w`.
fn check_log(log: &Path, w: u64) -> u64 {
    let data = std::fs::read(log).unwrap_or_else(|e| panic!("{}: {e}", log.display()));
    assert_eq!(
        data.len() % RECORD,
        0,
        "{}: {} bytes, a torn record",
        log.display(),
        data.len()
    );
    for (seq, r) in data.chunks(RECORD).enumerate() {
        assert_eq!(
            r,
            record(w, seq as u64),
            "{}: record {seq} is not writer {w}'s",
            log.display()
        );
    }
    (data.len() / RECORD) as u64
}

struct Writers {
    stop: Arc<AtomicBool>,
    counts: Vec<Arc<AtomicU64>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Writers {
    /// Each writer appends its records to `dir/wN.log`, one write(2) per record.
    fn start(dir: &Path) -> Writers {
        let stop = Arc::new(AtomicBool::new(false));
        let mut counts = Vec::new();
        let mut threads = Vec::new();
        // One more writer appends its records round-robin to three files: at every instant
        // their counts are c0 >= c1 >= c2 >= c0 - 1, which only a copy of one instant keeps
        // (a file copied later would have gained records).
        {
            let count = Arc::new(AtomicU64::new(0));
            counts.push(count.clone());
            let stop = stop.clone();
            let mut files: Vec<std::fs::File> = (0..3)
                .map(|i| {
                    std::fs::OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(dir.join(format!("r{i}.log")))
                        .unwrap()
                })
                .collect();
            threads.push(std::thread::spawn(move || {
                let mut seq = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let i = (seq % 3) as usize;
                    let n = files[i]
                        .write(&record(ROUND_ROBIN + i as u64, seq / 3))
                        .unwrap();
                    assert_eq!(n, RECORD, "a short append");
                    seq += 1;
                    count.store(seq / 3, Ordering::Relaxed);
                }
            }));
        }
        for w in 0..WRITERS {
            let count = Arc::new(AtomicU64::new(0));
            counts.push(count.clone());
            let (stop, path) = (stop.clone(), dir.join(format!("w{w}.log")));
            threads.push(std::thread::spawn(move || {
                let mut f = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .unwrap();
                let mut seq = 0;
                while !stop.load(Ordering::Relaxed) {
                    let n = f.write(&record(w, seq)).unwrap();
                    assert_eq!(n, RECORD, "a short append");
                    seq += 1;
                    count.store(seq, Ordering::Relaxed);
                }
            }));
        }
        Writers {
            stop,
            counts,
            threads,
        }
    }

    fn wait_for_records(&self, at_least: u64) {
        let start = Instant::now();
        while self
            .counts
            .iter()
            .any(|c| c.load(Ordering::Relaxed) < at_least)
        {
            assert!(start.elapsed() < PATIENCE, "the writers do not write");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn finish(self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            t.join().unwrap();
        }
    }
}

fn snapshot_dir(d: &TestDaemon, vol: &str, snap: &str) -> PathBuf {
    d.root().join("snapshots").join(vol).join(snap)
}

/// Where snapshot `snap` of `vol` can be read: its tree on the host, or, for a snapshot the
/// cluster keeps (rbd), a mounted clone of it (`view-SNAP`, made on first use).
fn snapshot_view(d: &TestDaemon, ceph: Option<&TestCluster>, vol: &str, snap: &str) -> PathBuf {
    let Some(ceph) = ceph else {
        return snapshot_dir(d, vol, snap);
    };
    let view = format!("view-{snap}");
    if d.cli(["inspect", &view]).status.success() {
        return d.mount(&view);
    }
    create(
        d,
        "rbd",
        &[ceph.conf_opt()],
        &view,
        Some(&format!("{vol}@{snap}")),
    );
    d.mount(&view)
}

fn fails_saying(out: std::process::Output, says: &[&str]) {
    let err = stderr_of(&out);
    assert!(!out.status.success(), "should fail: {err}");
    for s in says {
        assert!(err.contains(s), "{err:?} does not say {s:?}");
    }
}

fn create(d: &TestDaemon, driver: &str, extra: &[String], name: &str, from: Option<&str>) {
    let mut args = vec!["create".to_string(), "-d".into(), driver.into()];
    for o in extra {
        args.extend(["-o".into(), o.clone()]);
    }
    args.extend(["-o".into(), "size=256M".into()]);
    if let Some(f) = from {
        args.extend(["--from".into(), f.into()]);
    }
    args.push(name.into());
    d.cli_ok(&args);
}

fn story(driver: &str, extra: &[String], ceph: Option<&TestCluster>) {
    let d = TestDaemon::start();
    let vol = "src";
    create(&d, driver, extra, vol, None);
    let mp = d.mount(vol);

    // Snapshots while three writers append.
    let writers = Writers::start(&mp);
    let mut taken = Vec::new();
    for (i, snap) in ["s1", "s2", "s3"].iter().enumerate() {
        writers.wait_for_records(50 * (i as u64 + 1));
        d.cli_ok(["snapshot", "create", vol, snap]);
        taken.push(*snap);
    }
    writers.finish();
    let mut last = vec![0u64; WRITERS as usize];
    for snap in &taken {
        let dir = snapshot_view(&d, ceph, vol, snap);
        let c: Vec<u64> = (0..3)
            .map(|i| check_log(&dir.join(format!("r{i}.log")), ROUND_ROBIN + i))
            .collect();
        assert!(
            c[0] >= c[1] && c[1] >= c[2] && c[2] + 1 >= c[0],
            "{snap} is not one instant: the round-robin files hold {c:?} records"
        );
        for w in 0..WRITERS {
            let n = check_log(&dir.join(format!("w{w}.log")), w);
            assert!(n >= last[w as usize], "{snap}: writer {w} went back");
            assert!(n >= 50, "{snap}: writer {w} has {n} records");
            last[w as usize] = n;
        }
    }
    let listed: serde_json::Value =
        serde_json::from_str(&d.cli_ok(["snapshot", "ls", vol, "--format", "json"])).unwrap();
    let names: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["Name"].as_str().unwrap())
        .collect();
    assert_eq!(names, taken, "{listed}");
    for s in listed.as_array().unwrap() {
        let want: &[&str] = match (driver, ceph) {
            (_, Some(_)) => &["rbd snapshot"],
            ("tmpfs", None) => &["copy-on-write"],
            _ => &["reflink", "copy"],
        };
        assert!(want.contains(&s["Method"].as_str().unwrap()), "{s}");
        assert!(
            s["Bytes"].as_u64().unwrap() >= 3 * 50 * RECORD as u64,
            "{s}"
        );
        assert!(s["HeldMs"].is_u64(), "{s}");
    }
    if let Some(ceph) = ceph {
        // Real librbd snapshots of the volume's image, nothing on the host.
        let io = ceph.connect().io_ctx("rbd").unwrap();
        let image = io.open_image(vol).unwrap();
        let snaps: Vec<String> = image
            .snap_list()
            .unwrap()
            .into_iter()
            .map(|s| s.name)
            .collect();
        assert_eq!(snaps, taken, "rbd snap ls of {vol}");
        assert!(!snapshot_dir(&d, vol, "s1").exists());

        // A snapshot removed in the cluster, outside fvol: `snapshot ls` says it is missing,
        // restore and clone refuse it by name, and `snapshot rm` drops what is left.
        d.cli_ok(["snapshot", "create", vol, "gone"]);
        let out = Command::new("rbd")
            .arg("-c")
            .arg(ceph.conf())
            .args(["snap", "rm", &format!("rbd/{vol}@gone")])
            .output()
            .unwrap();
        assert!(out.status.success(), "rbd snap rm: {}", stderr_of(&out));
        let listed: serde_json::Value =
            serde_json::from_str(&d.cli_ok(["snapshot", "ls", vol, "--format", "json"])).unwrap();
        for s in listed.as_array().unwrap() {
            let gone = s["Name"] == "gone";
            assert_eq!(s["Missing"].as_bool().unwrap_or(false), gone, "{s}");
        }
        assert!(
            d.cli_ok(["snapshot", "ls", vol])
                .contains("rbd snapshot (missing)"),
            "the table does not say the snapshot is missing"
        );
        let says = [
            "snapshot gone",
            "gone from its backing store",
            "snapshot rm",
        ];
        fails_saying(d.cli(["snapshot", "restore", vol, "gone"]), &says);
        fails_saying(
            d.cli([
                "create",
                "-d",
                "rbd",
                "-o",
                &ceph.conf_opt(),
                "--from",
                "src@gone",
                "nope",
            ]),
            &says,
        );
        assert!(!d.cli(["inspect", "nope"]).status.success());
        d.cli_ok(["snapshot", "rm", vol, "gone"]);
        assert!(!d.cli_ok(["snapshot", "ls", vol]).contains("gone"));
    }
    let table = d.cli_ok(["snapshot", "ls", vol]);
    assert!(
        table.contains("WRITES HELD") && table.contains("s2"),
        "{table}"
    );
    fails_saying(
        d.cli(["snapshot", "create", vol, "s1"]),
        &["already has a snapshot s1"],
    );
    fails_saying(
        d.cli(["snapshot", "create", vol, "bad/name"]),
        &["invalid snapshot name"],
    );
    fails_saying(
        d.cli(["snapshot", "rm", vol, "nope"]),
        &["no snapshot nope"],
    );

    // A clone from a snapshot, and one from the volume as it is now: independent both ways.
    let clone_driver = if driver == "tmpfs" { "local" } else { driver };
    let clone_extra: &[String] = if driver == "tmpfs" { &[] } else { extra };
    create(&d, clone_driver, clone_extra, "clone", Some("src@s1"));
    create(&d, clone_driver, clone_extra, "now", Some("src"));
    let cmp = d.mount("clone");
    for w in 0..WRITERS {
        let n = check_log(&cmp.join(format!("w{w}.log")), w);
        assert_eq!(
            n,
            check_log(
                &snapshot_view(&d, ceph, vol, "s1").join(format!("w{w}.log")),
                w
            )
        );
    }
    if let Some(ceph) = ceph {
        // Clones are clone v2 children of the source's image: no flatten, no protection.
        let out = Command::new("rbd")
            .arg("-c")
            .arg(ceph.conf())
            .args(["info", "clone"])
            .output()
            .unwrap();
        let info = String::from_utf8_lossy(&out.stdout);
        assert!(info.contains("parent: rbd/src@s1"), "{info}");
        assert!(info.contains("clone-child"), "{info}");
        assert!(!info.contains("protected: True"), "{info}");
    }
    std::fs::write(cmp.join("only-in-clone"), b"c").unwrap();
    std::fs::write(mp.join("only-in-source"), b"s").unwrap();
    assert!(!mp.join("only-in-clone").exists());
    assert!(!cmp.join("only-in-source").exists());
    std::fs::write(cmp.join("w0.log"), b"changed in the clone").unwrap();
    check_log(&mp.join("w0.log"), 0);
    let nmp = d.mount("now");
    assert_eq!(
        check_log(&nmp.join("w1.log"), 1),
        check_log(&mp.join("w1.log"), 1)
    );
    if driver == "tmpfs" {
        fails_saying(
            d.cli(["create", "-d", "tmpfs", "--from", "src@s1", "tmpclone"]),
            &["tmpfs", "only while mounted"],
        );
    }

    // Restore: refused while mounted, saying so; then the volume is s1 again.
    fails_saying(d.cli(["snapshot", "restore", vol, "s1"]), &["unmount it"]);
    if driver == "tmpfs" {
        d.cli_ok(["unmount", vol]);
        fails_saying(d.cli(["snapshot", "restore", vol, "s1"]), &["tmpfs"]);
    } else {
        std::fs::write(mp.join("w2.log"), b"damage").unwrap();
        d.cli_ok(["unmount", vol]);
        d.cli_ok(["snapshot", "restore", vol, "s1"]);
        let mp = d.mount(vol);
        assert!(!mp.join("only-in-source").exists());
        for w in 0..WRITERS {
            assert_eq!(
                check_log(&mp.join(format!("w{w}.log")), w),
                check_log(
                    &snapshot_view(&d, ceph, vol, "s1").join(format!("w{w}.log")),
                    w
                )
            );
        }
        d.cli_ok(["unmount", vol]);
    }

    // rm: refused while snapshots exist; -f removes them with the volume. Clones stay.
    fails_saying(d.cli(["rm", vol]), &["has snapshots", "fvol rm -f"]);
    d.cli_ok(["snapshot", "rm", vol, "s3"]);
    assert!(!snapshot_dir(&d, vol, "s3").exists());
    if ceph.is_some() {
        // Clones share the image's data (clone v2): the source stays while they exist.
        fails_saying(
            d.cli(["rm", "-f", vol]),
            &["has clones", "rbd/clone", "fvol rm"],
        );
        for view in ["view-s1", "view-s2", "view-s3"] {
            d.cli_ok(["unmount", view]);
            d.cli_ok(["rm", view]);
        }
        d.cli_ok(["unmount", "clone"]);
        d.cli_ok(["unmount", "now"]);
        d.cli_ok(["rm", "clone", "now"]);
        d.cli_ok(["rm", "-f", vol]);
        assert!(!d.root().join("snapshots").join(vol).exists());
        return;
    }
    d.cli_ok(["rm", "-f", vol]);
    assert!(!d.root().join("snapshots").join(vol).exists());
    assert_eq!(
        check_log(&cmp.join("w1.log"), 1),
        check_log(&cmp.join("w1.log"), 1)
    );
    d.cli_ok(["unmount", "clone"]);
    d.cli_ok(["unmount", "now"]);
    d.cli_ok(["rm", "clone", "now"]);
}

#[test]
fn snapshots_local() {
    if !fuse_or_skip("snapshots_local") {
        return;
    }
    story("local", &[], None);
}

#[test]
fn snapshots_tmpfs() {
    if !fuse_or_skip("snapshots_tmpfs") {
        return;
    }
    story("tmpfs", &[], None);
}

#[test]
fn snapshots_rbd() {
    if !fuse_or_skip("snapshots_rbd") {
        return;
    }
    let ceph = TestCluster::start();
    story("rbd", &[ceph.conf_opt()], Some(&ceph));
}

/// Bytes `len` long that differ by `seed` and along the file (so a page out of place shows).
fn pattern(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| ((i as u32 / 4096).wrapping_mul(31) as u8) ^ (i as u8) ^ seed)
        .collect()
}

fn punch(path: &Path, offset: i64, len: i64) {
    use std::os::fd::AsRawFd;
    let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    let mode = libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE;
    // SAFETY: fallocate on a descriptor we own; no memory is passed.
    let r = unsafe { libc::fallocate(f.as_raw_fd(), mode, offset, len) };
    assert_eq!(
        r,
        0,
        "punching {}: {}",
        path.display(),
        std::io::Error::last_os_error()
    );
}

fn write_at(path: &Path, offset: u64, data: &[u8]) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    f.write_all_at(data, offset).unwrap();
}

/// Every regular file under `dir` (one level) by name, with its content.
fn contents(dir: &Path) -> std::collections::BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_type().unwrap().is_file())
        .map(|e| {
            let name = e.file_name().into_string().unwrap();
            (name, std::fs::read(e.path()).unwrap())
        })
        .collect()
}

/// The changes the tmpfs test makes while a snapshot is copied out, to `dir`.
fn change(dir: &Path, big: usize) {
    let big_path = dir.join("a-big");
    write_at(&big_path, (big - (1 << 20)) as u64, &pattern(9, 1 << 20));
    punch(&big_path, 64 << 20, 1 << 20);
    write_at(&dir.join("f-over"), 4096 + 100, &pattern(7, 64 << 10));
    std::fs::OpenOptions::new()
        .write(true)
        .open(dir.join("f-trunc"))
        .unwrap()
        .set_len(1000)
        .unwrap();
    punch(&dir.join("f-punch"), 1 << 20, 1 << 20);
    punch(&dir.join("f-punch"), 100, 50);
    std::fs::remove_file(dir.join("f-unlink")).unwrap();
    std::fs::write(dir.join("g-new"), pattern(5, 3 << 20)).unwrap();
    std::fs::rename(dir.join("g-new"), dir.join("f-renamed-over")).unwrap();
    std::fs::write(dir.join("h-new"), b"after").unwrap();
}

/// tmpfs holds writes only while it captures its tree, then copies out while the volume
/// changes (copy on write): files overwritten, truncated, punched, unlinked and renamed over
/// while the copy runs leave the snapshot exactly as the volume was, the volume has the new
/// content, and its usage is that of a twin volume changed the same way without a snapshot.
#[test]
fn tmpfs_snapshot_copies_on_write() {
    if !fuse_or_skip("tmpfs_snapshot_copies_on_write") {
        return;
    }
    let d = TestDaemon::start();
    let big = 128 << 20;
    let mut mounts = Vec::new();
    for vol in ["cow", "twin"] {
        d.cli_ok(["create", "-d", "tmpfs", "-o", "size=512M", vol]);
        let mp = d.mount(vol);
        std::fs::write(mp.join("a-big"), pattern(1, big)).unwrap();
        for (i, name) in ["f-over", "f-trunc", "f-punch", "f-unlink", "f-renamed-over"]
            .iter()
            .enumerate()
        {
            std::fs::write(mp.join(name), pattern(10 + i as u8, 4 << 20)).unwrap();
        }
        mounts.push(mp);
    }
    let (mp, twin) = (&mounts[0], &mounts[1]);
    let before = contents(mp);

    // The copy goes in name order: the changes start once `a-big` is being copied out.
    let mut snap = d
        .root
        .command(["snapshot", "create", "cow", "s1"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let copying = d.root().join("snapshots/cow/s1.partial/a-big");
    let start = Instant::now();
    while !copying.exists() && snap.try_wait().unwrap().is_none() {
        assert!(start.elapsed() < PATIENCE, "the snapshot does not start");
        std::thread::sleep(Duration::from_millis(1));
    }
    change(mp, big);
    let during = snap.try_wait().unwrap().is_none();
    let out = snap.wait_with_output().unwrap();
    assert!(out.status.success(), "snapshot: {}", stderr_of(&out));
    eprintln!("the changes were made while the snapshot was copied out: {during}");
    change(twin, big);

    let held = contents(&snapshot_dir(&d, "cow", "s1"));
    assert_eq!(
        held.keys().collect::<Vec<_>>(),
        before.keys().collect::<Vec<_>>()
    );
    for (name, data) in &before {
        assert!(
            held[name] == *data,
            "the snapshot's {name} is not as it was"
        );
    }
    let now = contents(mp);
    let want = contents(twin);
    assert_eq!(
        now.keys().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>()
    );
    for (name, data) in &want {
        assert!(now[name] == *data, "the volume's {name} is not as written");
    }
    let used = |vol: &str| d.inspect(vol)["Status"]["UsedBytes"].as_u64().unwrap();
    // A close's RELEASE reaches the handler after close returns, and an unlinked file's pages
    // go only then: the two volumes settle before they compare.
    let same_usage = || {
        let settled =
            fuse_tests::docker::wait_until(Duration::from_secs(60), || used("cow") == used("twin"));
        assert!(
            settled,
            "usage differs from the twin's: {} against {}",
            used("cow"),
            used("twin")
        );
    };
    same_usage();

    // Again, with the volume emptied while it is copied out: the snapshot holds it all and
    // the volume is left empty (the pages went to the snapshot, then back).
    let second = contents(mp);
    let mut snap = d
        .root
        .command(["snapshot", "create", "cow", "s2"])
        .spawn()
        .unwrap();
    let copying = d.root().join("snapshots/cow/s2.partial/a-big");
    while !copying.exists() && snap.try_wait().unwrap().is_none() {
        std::thread::sleep(Duration::from_millis(1));
    }
    for name in second.keys() {
        std::fs::remove_file(mp.join(name)).unwrap();
    }
    assert!(snap.wait().unwrap().success());
    let held = contents(&snapshot_dir(&d, "cow", "s2"));
    assert!(
        held == second,
        "the second snapshot is not the volume as it was"
    );
    for name in want.keys() {
        std::fs::remove_file(twin.join(name)).unwrap();
    }
    same_usage();
    d.cli_ok(["unmount", "cow"]);
    d.cli_ok(["unmount", "twin"]);
}

/// A second snapshot, an export and a clone of a tmpfs volume that is being copied out wait
/// for that copy to end (the volume's lock), then succeed: none is refused.
#[test]
fn tmpfs_copies_out_wait_their_turn() {
    if !fuse_or_skip("tmpfs_copies_out_wait_their_turn") {
        return;
    }
    let d = TestDaemon::start();
    d.cli_ok(["create", "-d", "tmpfs", "-o", "size=512M", "busy"]);
    let mp = d.mount("busy");
    std::fs::write(mp.join("a-big"), pattern(3, 192 << 20)).unwrap();
    std::fs::write(mp.join("small"), pattern(4, 4096)).unwrap();
    let want = contents(&mp);

    let spawn = |args: &[&str]| {
        d.root
            .command(args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let first = spawn(&["snapshot", "create", "busy", "s1"]);
    let copying = d.root().join("snapshots/busy/s1.partial/a-big");
    let start = Instant::now();
    while !copying.exists() {
        assert!(start.elapsed() < PATIENCE, "the snapshot does not start");
        std::thread::sleep(Duration::from_millis(1));
    }
    let tar = d.root().join("busy.tar");
    let tar_arg = tar.to_str().unwrap().to_string();
    let others = [
        spawn(&["snapshot", "create", "busy", "s2"]),
        spawn(&["export", "busy", "--output", &tar_arg]),
        spawn(&["create", "--from", "busy", "clone"]),
    ];
    let out = first.wait_with_output().unwrap();
    assert!(out.status.success(), "snapshot s1: {}", stderr_of(&out));
    for (what, child) in ["snapshot s2", "export", "clone"].iter().zip(others) {
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{what}: {}", stderr_of(&out));
    }
    for snap in ["s1", "s2"] {
        assert!(
            contents(&snapshot_dir(&d, "busy", snap)) == want,
            "snapshot {snap} is not the volume"
        );
    }
    assert!(
        contents(&d.mount("clone")) == want,
        "the clone is not the volume"
    );
    let unpacked = d.root().join("unpacked");
    std::fs::create_dir(&unpacked).unwrap();
    let status = std::process::Command::new("tar")
        .args(["-xf", &tar_arg, "-C"])
        .arg(&unpacked)
        .status()
        .unwrap();
    assert!(status.success());
    assert!(contents(&unpacked) == want, "the export is not the volume");
    d.cli_ok(["unmount", "busy"]);
    d.cli_ok(["unmount", "clone"]);
}
