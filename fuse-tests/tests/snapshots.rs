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
        let want: &[&str] = match ceph {
            Some(_) => &["rbd snapshot"],
            None => &["reflink", "copy"],
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
