//! `fvol update NAME -o size= -o inodes=`: online resize on every driver (rbd on a real
//! cluster). While a writer appends, the ENOSPC boundary moves with each grow; shrinking
//! below the usage is refused with the smallest allowed size and changes nothing; an inode
//! limit is enforced at once; the catalog keeps the new options across a restart.
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use fuse_tests::ceph::TestCluster;
use fuse_tests::daemon::{TestDaemon, TestRoot, df_size, fuse_or_skip, stderr_of};

const MIB: u64 = 1 << 20;
const CHUNK: usize = 64 << 10;
/// Generous: conditions are waited for, never timed.
const PATIENCE: Duration = Duration::from_secs(120);

/// Appends to one file until stopped; on ENOSPC it keeps trying (every few ms), so it
/// writes again as soon as the volume has room.
struct Writer {
    written: Arc<AtomicU64>,
    /// ENOSPC answers so far.
    refused: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Writer {
    fn start(path: PathBuf) -> Writer {
        let written = Arc::new(AtomicU64::new(0));
        let refused = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (written, refused, stop) = (written.clone(), refused.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut f = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&path)
                    .unwrap();
                let chunk = vec![0x5au8; CHUNK];
                while !stop.load(Ordering::Relaxed) {
                    match f.write(&chunk) {
                        Ok(n) => {
                            written.fetch_add(n as u64, Ordering::Relaxed);
                        }
                        Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => {
                            refused.fetch_add(1, Ordering::Relaxed);
                            std::thread::sleep(Duration::from_millis(5));
                        }
                        Err(e) => panic!("write: {e}"),
                    }
                }
            })
        };
        Writer {
            written,
            refused,
            stop,
            thread: Some(thread),
        }
    }

    fn written(&self) -> u64 {
        self.written.load(Ordering::Relaxed)
    }

    /// Waits until the writer is refused for space (again), and returns what it wrote.
    fn wait_until_full(&self) -> u64 {
        let seen = self.refused.load(Ordering::Relaxed);
        wait_for("the writer to reach ENOSPC", || {
            self.refused.load(Ordering::Relaxed) > seen + 1
        });
        self.written()
    }

    fn finish(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().unwrap().join().unwrap();
    }
}

fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < PATIENCE, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn size_limit(d: &TestDaemon, name: &str) -> u64 {
    d.inspect(name)["Status"]["SizeLimit"]
        .as_u64()
        .unwrap_or_else(|| panic!("no size limit: {}", d.inspect(name)))
}

fn status(d: &TestDaemon, name: &str, key: &str) -> u64 {
    d.inspect(name)["Status"][key]
        .as_u64()
        .unwrap_or_else(|| panic!("no {key}: {}", d.inspect(name)))
}

fn update(d: &TestDaemon, name: &str, opts: &[&str]) -> std::process::Output {
    let mut args = vec!["update".to_string(), name.to_string()];
    for o in opts {
        args.extend(["-o".to_string(), o.to_string()]);
    }
    d.cli(&args)
}

fn update_ok(d: &TestDaemon, name: &str, opts: &[&str]) {
    let out = update(d, name, opts);
    assert!(out.status.success(), "update {opts:?}: {}", stderr_of(&out));
}

/// The update fails, saying `says`, and changes nothing: options, limits and df.
fn refused(d: &TestDaemon, name: &str, mp: Option<&Path>, opts: &[&str], says: &[&str]) {
    let before = d.inspect(name);
    let df = mp.map(df_size);
    let out = update(d, name, opts);
    let err = stderr_of(&out);
    assert!(!out.status.success(), "update {opts:?} should be refused");
    for s in says {
        assert!(
            err.contains(s),
            "update {opts:?}: {err:?} does not say {s:?}"
        );
    }
    let after = d.inspect(name);
    assert_eq!(before["Options"], after["Options"], "{err}");
    assert_eq!(before["Status"]["SizeLimit"], after["Status"]["SizeLimit"]);
    assert_eq!(
        before["Status"]["InodeLimit"],
        after["Status"]["InodeLimit"]
    );
    assert_eq!(df, mp.map(df_size), "df changed after a refused update");
}

/// How a driver's volumes are made and how their limits relate to `size=`.
struct Driver<'a> {
    name: &'static str,
    /// `create` options besides size=.
    extra: Vec<String>,
    /// The first size and the grown one, in MiB.
    small: u64,
    big: u64,
    ceph: Option<&'a TestCluster>,
}

impl Driver<'_> {
    fn create(&self, d: &TestDaemon, vol: &str, size_mib: u64) {
        let mut args = vec!["create".to_string(), "-d".into(), self.name.into()];
        for o in &self.extra {
            args.extend(["-o".into(), o.clone()]);
        }
        args.extend(["-o".into(), format!("size={size_mib}M"), vol.into()]);
        d.cli_ok(&args);
    }
}

/// The whole story on one driver.
fn resize_story(drv: &Driver<'_>) {
    let root = TestRoot::new();
    let mut d = TestDaemon::start_at(&root);
    let vol = "grow";
    drv.create(&d, vol, drv.small);
    let mp = d.mount(vol);
    let first_limit = size_limit(&d, vol);
    assert_eq!(df_size(&mp), first_limit, "df shows the limit");

    // A writer fills the volume; a grow lets it write again at once, up to the new limit.
    let writer = Writer::start(mp.join("log"));
    let full = writer.wait_until_full();
    assert!(
        full <= first_limit && full + 2 * MIB >= first_limit,
        "the writer stopped at {full} of {first_limit}"
    );
    update_ok(&d, vol, &[&format!("size={}M", drv.big)]);
    let grown_limit = size_limit(&d, vol);
    assert!(grown_limit > first_limit + (drv.big - drv.small) * MIB / 2);
    assert_eq!(
        df_size(&mp),
        grown_limit,
        "df shows the grown limit at once"
    );
    let full_again = writer.wait_until_full();
    assert!(
        full_again > first_limit && full_again + 2 * MIB >= grown_limit,
        "after the grow the writer stopped at {full_again} of {grown_limit}"
    );
    assert_eq!(
        d.inspect(vol)["Options"]["size"],
        serde_json::json!(format!("{}M", drv.big))
    );

    // Shrinking below the usage: refused, naming the usage and the smallest size allowed.
    let used = status(&d, vol, "UsedBytes");
    refused(
        &d,
        vol,
        Some(&mp),
        &[&format!("size={}M", drv.small)],
        &[
            "cannot shrink",
            "the smallest allowed is size=",
            &format!("{used} bytes"),
        ],
    );
    // The smallest allowed size it names is allowed.
    let out = update(&d, vol, &[&format!("size={}M", drv.small)]);
    let err = stderr_of(&out);
    let smallest = err
        .split("the smallest allowed is size=")
        .nth(1)
        .and_then(|s| s.split(|c: char| c == ';' || c.is_whitespace()).next())
        .unwrap_or_else(|| panic!("{err}"))
        .to_string();
    writer.finish();
    update_ok(&d, vol, &[&format!("size={smallest}")]);
    assert!(size_limit(&d, vol) >= used);
    assert_eq!(df_size(&mp), size_limit(&d, vol));
    // Room made (the log goes), the volume shrinks to the first size, and its boundary is
    // there again.
    std::fs::remove_file(mp.join("log")).unwrap();
    wait_for("the log's space to come back", || {
        status(&d, vol, "UsedBytes") < first_limit / 2
    });
    update_ok(&d, vol, &[&format!("size={}M", drv.small)]);
    assert_eq!(size_limit(&d, vol), first_limit);
    let writer = Writer::start(mp.join("log2"));
    let full = writer.wait_until_full();
    writer.finish();
    assert!(
        full <= first_limit,
        "{full} > {first_limit} after the shrink"
    );
    std::fs::remove_file(mp.join("log2")).unwrap();

    // Inodes: a new limit holds at once, both ways, and not below what is used.
    wait_for("the inodes to come back", || {
        status(&d, vol, "UsedInodes") <= 2
    });
    let used_inodes = status(&d, vol, "UsedInodes");
    update_ok(&d, vol, &[&format!("inodes={}", used_inodes + 3)]);
    assert_eq!(status(&d, vol, "InodeLimit"), used_inodes + 3);
    for i in 0..3 {
        std::fs::write(mp.join(format!("f{i}")), b"x").unwrap();
    }
    let e = std::fs::write(mp.join("one-too-many"), b"x").unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::ENOSPC), "{e}");
    refused(
        &d,
        vol,
        Some(&mp),
        &[&format!("inodes={}", used_inodes + 1)],
        &["the smallest allowed is inodes="],
    );
    update_ok(&d, vol, &["inodes=1000"]);
    std::fs::write(mp.join("one-too-many"), b"x").unwrap();

    // Bad input: a clear error, nothing changes.
    refused(&d, vol, Some(&mp), &["size=lots"], &["size"]);
    refused(
        &d,
        vol,
        Some(&mp),
        &["mode=700"],
        &["fixed when a volume is created", "size="],
    );
    refused(
        &d,
        vol,
        Some(&mp),
        &["colour=blue"],
        &["colour", "valid options are"],
    );
    let out = update(&d, "no-such-volume-here", &["size=1G"]);
    assert!(
        stderr_of(&out).contains("no such volume"),
        "{}",
        stderr_of(&out)
    );
    let out = d.cli(["update", vol]);
    assert!(!out.status.success(), "update without -o");

    // Unmounted: the new options are recorded and hold at the next mount, and across a
    // restart of the daemon.
    let limit = size_limit(&d, vol);
    d.cli_ok(["unmount", vol]);
    update_ok(&d, vol, &[&format!("size={}M", drv.big)]);
    assert!(size_limit(&d, vol) > limit);
    d.stop();
    let d = TestDaemon::start_at(&root);
    let opts = &d.inspect(vol)["Options"];
    assert_eq!(
        opts["size"],
        serde_json::json!(format!("{}M", drv.big)),
        "{opts}"
    );
    assert_eq!(opts["inodes"], serde_json::json!("1000"), "{opts}");
    let mp = d.mount(vol);
    assert_eq!(df_size(&mp), size_limit(&d, vol));
    if drv.name != "tmpfs" {
        assert!(
            mp.join("one-too-many").exists(),
            "the data outlived the resizes"
        );
    }
    let writer = Writer::start(mp.join("log3"));
    let full = writer.wait_until_full();
    writer.finish();
    assert!(
        full > first_limit && full <= size_limit(&d, vol),
        "after the restart the writer stopped at {full}"
    );
    d.cli_ok(["unmount", vol]);
    if drv.ceph.is_some() {
        let out = d.cli_ok(["fsck", vol]);
        let report: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(report["problems"], serde_json::json!([]), "{report}");
    }
    d.cli_ok(["rm", vol]);
}

#[test]
fn resize_local() {
    if !fuse_or_skip("resize_local") {
        return;
    }
    resize_story(&Driver {
        name: "local",
        extra: vec![],
        small: 8,
        big: 24,
        ceph: None,
    });
}

#[test]
fn resize_tmpfs() {
    if !fuse_or_skip("resize_tmpfs") {
        return;
    }
    resize_story(&Driver {
        name: "tmpfs",
        extra: vec![],
        small: 8,
        big: 24,
        ceph: None,
    });
}

/// A mounted tmpfs volume's shared memory (which keeps its data across daemon restarts) is
/// made at mount with room to grow: to four times its size, and at least 1 GiB more. Beyond
/// that an update is refused, changing nothing, and says how far it can go; within it, it
/// works, writes included.
#[test]
fn tmpfs_grows_within_its_shared_memory() {
    if !fuse_or_skip("tmpfs_grows_within_its_shared_memory") {
        return;
    }
    let d = TestDaemon::start();
    d.cli_ok(["create", "-d", "tmpfs", "-o", "size=8M", "scratch"]);
    let mp = d.mount("scratch");
    refused(
        &d,
        "scratch",
        Some(&mp),
        &["size=2G"],
        &["room for at most", "mounted again"],
    );
    update_ok(&d, "scratch", &["size=1G"]);
    assert_eq!(df_size(&mp), 1 << 30);
    std::fs::write(mp.join("big"), vec![7u8; 64 << 20]).unwrap();
    assert_eq!(std::fs::read(mp.join("big")).unwrap().len(), 64 << 20);
}

/// A local volume without a byte limit is served with kernel passthrough, which the quota
/// never sees: a byte limit for it takes an unmount, and the error says so.
#[test]
fn resize_local_without_a_limit() {
    if !fuse_or_skip("resize_local_without_a_limit") {
        return;
    }
    let d = TestDaemon::start();
    d.cli_ok(["create", "free"]);
    let mp = d.mount("free");
    std::fs::write(mp.join("a"), vec![1u8; 3 << 20]).unwrap();
    let out = update(&d, "free", &["size=16M"]);
    if !out.status.success() {
        assert!(stderr_of(&out).contains("unmount"), "{}", stderr_of(&out));
        assert_eq!(d.inspect("free")["Options"].get("size"), None);
        d.cli_ok(["unmount", "free"]);
        update_ok(&d, "free", &["size=16M"]);
    }
    // Either way the usage is counted: the next mount measures it.
    let mp = d.mount("free");
    assert_eq!(df_size(&mp), 16 * MIB);
    assert!(status(&d, "free", "UsedBytes") >= 3 << 20);
    refused(
        &d,
        "free",
        Some(&mp),
        &["size=1M"],
        &["smallest allowed is size="],
    );
}

#[test]
fn resize_rbd() {
    if !fuse_or_skip("resize_rbd") {
        return;
    }
    let ceph = TestCluster::start();
    let drv = Driver {
        name: "rbd",
        extra: vec![ceph.conf_opt()],
        small: 64,
        big: 160,
        ceph: Some(&ceph),
    };
    resize_story(&drv);
    // An unmounted rbd volume grows too (image and filesystem, before its next mount).
    let d = TestDaemon::start();
    drv.create(&d, "offline", 64);
    update_ok(&d, "offline", &["size=128M"]);
    let out = d.cli_ok(["fsck", "offline"]);
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["problems"], serde_json::json!([]), "{report}");
    let mp = d.mount("offline");
    assert_eq!(df_size(&mp), size_limit(&d, "offline"));
    std::fs::write(mp.join("big"), vec![7u8; 100 << 20]).unwrap();
    d.cli_ok(["unmount", "offline"]);
    d.cli_ok(["rm", "offline"]);
    // Too small for an image: refused, naming the minimum.
    drv.create(&d, "tiny", 32);
    refused(&d, "tiny", None, &["size=8M"], &["too small", "16M"]);
    d.cli_ok(["rm", "tiny"]);
}
