//! Usage never drifts (issue 12.6). After a randomized multi-process run of mixed operations
//! (tests/usage_drift/workload.py) the quota's counters equal a walk of what the volume holds
//! (local: the backing directory, as `du` counts it; tmpfs and image: through the mount, whose
//! `st_blocks` show each driver's own cost), once everything is closed and synced; again after a
//! clean unmount and mount, which trusts the recorded usage and does not rescan; and the image
//! passes its own fsck with the same totals. While the runs go on, the host filesystem under a
//! local volume never holds more than the limit plus the bound docs/architecture.md states.
//!
//! Each test prints its seed; `FVOL_DRIFT_SEED=N` replays a run's operations (their
//! interleaving is the kernel's), `FVOL_DRIFT_OPS=N` sets the operations per process.
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use fuse_tests::loopfs::LoopFs;
use fuse_tests::{Backend, TestSession};
use fvol::fs::UsageSnapshot;
use fvol::fs::quota::Limits;

const WORKLOAD: &str = include_str!("usage_drift/workload.py");
/// Small enough that the mixed runs reach it (files grow to 4 MiB).
const MIXED_LIMIT: u64 = 24 << 20;
const MIXED_PROCS: u32 = 6;
const MIXED_OPS: u32 = 2000;
const CHURN_LIMIT: u64 = 64 << 20;
const CHURN_PROCS: u32 = 8;
const CHURN_FILES: u32 = 100;
/// What the host may hold beyond the limit (docs/architecture.md, "Quota accounting"): the
/// extent-tree blocks ext4 adds at writeback to files written since the last settle pass.
/// Measured here: at most two blocks.
const HOST_SLACK: u64 = 1 << 20;
/// How often the daemon settles (its usage checkpoint).
const SETTLE_EVERY: Duration = Duration::from_secs(5);

fn seed() -> u64 {
    match std::env::var("FVOL_DRIFT_SEED") {
        Ok(s) => s.parse().expect("FVOL_DRIFT_SEED is a number"),
        Err(_) => {
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
            now.unwrap().as_nanos() as u64 % 1_000_000_007
        }
    }
}

fn ops(default: u32) -> u32 {
    std::env::var("FVOL_DRIFT_OPS").map_or(default, |s| s.parse().expect("FVOL_DRIFT_OPS"))
}

/// Runs the workload (`mixed` or `churn`) on `dir` and returns its report.
fn workload(dir: &Path, seed: u64, procs: u32, ops: u32, mode: &str) -> String {
    let out = Command::new("/usr/bin/python3")
        .args(["-c", WORKLOAD])
        .arg(dir)
        .arg(seed.to_string())
        .arg(procs.to_string())
        .arg(ops.to_string())
        .arg(mode)
        .output()
        .expect("python3");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "workload (seed {seed}) failed: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// The counters once they equal the walk: the kernel's last RELEASE and FORGET of what the
/// run closed and removed reach the handler a moment after the run ends. Panics with both if
/// they do not within a generous while.
fn settled(s: &TestSession, what: &str) -> UsageSnapshot {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (counted, walked) = (s.fs.usage(), s.walk());
        if counted == walked {
            return counted;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: the counters say {counted:?} but a walk finds {walked:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Settles the filesystem as the daemon does while it runs (every 5 s), until dropped.
struct Settler {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Settler {
    fn start(s: &TestSession) -> Settler {
        let stop = Arc::new(AtomicBool::new(false));
        let (flag, fs) = (stop.clone(), s.fs.clone());
        let thread = std::thread::spawn(move || {
            let mut last = Instant::now();
            while !flag.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(20));
                let every = std::env::var("FVOL_DRIFT_SETTLE_MS")
                    .map_or(SETTLE_EVERY, |v| Duration::from_millis(v.parse().unwrap()));
                if last.elapsed() >= every {
                    fs.settle();
                    last = Instant::now();
                }
            }
        });
        Settler {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Settler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Samples how much the filesystem at `path` holds beyond `baseline`, until `finish`: the
/// least of the last few samples (a millisecond apart), as ext4's free-space counters count a
/// range twice for a moment while writeback allocates it (its free count drops before its
/// delayed-allocation reservation does), which is no space held.
struct HostSampler {
    stop: Arc<AtomicBool>,
    max: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
}

fn host_used(path: &Path) -> u64 {
    let st = nix::sys::statvfs::statvfs(path).expect("statvfs");
    (st.blocks() - st.blocks_free()) * st.fragment_size()
}

impl HostSampler {
    fn start(path: &Path, baseline: u64) -> HostSampler {
        let stop = Arc::new(AtomicBool::new(false));
        let max = Arc::new(AtomicU64::new(0));
        let (flag, top, path) = (stop.clone(), max.clone(), path.to_owned());
        let thread = std::thread::spawn(move || {
            let mut last = std::collections::VecDeque::from([0; 5]);
            while !flag.load(Ordering::Relaxed) {
                last.pop_front();
                last.push_back(host_used(&path).saturating_sub(baseline));
                top.fetch_max(*last.iter().min().unwrap(), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(1));
            }
        });
        HostSampler {
            stop,
            max,
            thread: Some(thread),
        }
    }

    /// The most the host held beyond the baseline.
    fn finish(self) -> u64 {
        let max = self.max.clone();
        drop(self);
        max.load(Ordering::Relaxed)
    }
}

impl Drop for HostSampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A local volume on a fresh ext4 filesystem of its own, so that what the host holds is that
/// filesystem's usage; and that usage before the run.
fn local_on_ext4(limits: Limits) -> (LoopFs, TestSession, u64) {
    let host = LoopFs::ext4(512);
    let s = TestSession::new_in(Backend::Local, limits, host.path());
    // The empty root directory is in the baseline and in the counters.
    let baseline = host_used(host.path()) - s.fs.usage().bytes;
    (host, s, baseline)
}

fn check_host(what: &str, seed: u64, held: u64, limit: u64) {
    eprintln!(
        "{what}: the host held at most {held} bytes, {} over the limit {limit}",
        held as i64 - limit as i64
    );
    assert!(
        held <= limit + HOST_SLACK,
        "{what} seed {seed}: the host held {held} bytes, more than the limit {limit} plus {HOST_SLACK}"
    );
}

/// A mixed run, then: counters equal a walk at rest (sync first), and after a remount.
fn mixed_run(mut s: TestSession, seed: u64) -> TestSession {
    let backend = s.backend;
    let ops = ops(MIXED_OPS);
    eprintln!(
        "{backend:?}: seed {seed} (FVOL_DRIFT_SEED={seed} replays it), {MIXED_PROCS} processes x {ops} operations"
    );
    let report = {
        let _settler = Settler::start(&s);
        workload(s.mnt(), seed, MIXED_PROCS, ops, "mixed")
    };
    eprintln!("{backend:?}: {report}");
    s.fs.sync_all().expect("sync");
    let what = format!("{backend:?} seed {seed}, at rest");
    let at_rest = settled(&s, &what);
    eprintln!("{backend:?}: at rest {at_rest:?}");
    if !matches!(backend, Backend::Tmpfs) {
        s.remount();
        let (counted, walked) = (s.fs.usage(), s.walk());
        assert_eq!(
            counted, walked,
            "{backend:?} seed {seed}: after a clean unmount and mount, the counters say {counted:?} but a walk finds {walked:?}"
        );
        assert_eq!(
            counted, at_rest,
            "{backend:?} seed {seed}: the mount changed the usage"
        );
    }
    s
}

fn mixed_limits() -> Limits {
    Limits {
        bytes: Some(MIXED_LIMIT),
        inodes: Some(2000),
    }
}

#[test]
fn local_usage_matches_a_walk_after_a_stress_run() {
    let seed = seed();
    let (host, s, baseline) = local_on_ext4(mixed_limits());
    let sampler = HostSampler::start(host.path(), baseline);
    let s = mixed_run(s, seed);
    check_host("local, mixed", seed, sampler.finish(), MIXED_LIMIT);
    drop(s);
}

#[test]
fn tmpfs_usage_matches_a_walk_after_a_stress_run() {
    let s = TestSession::new(Backend::Tmpfs, mixed_limits());
    mixed_run(s, seed());
}

#[test]
fn image_usage_matches_a_walk_after_a_stress_run() {
    let seed = seed();
    let s = TestSession::new(Backend::Image, mixed_limits());
    let mut s = mixed_run(s, seed);
    // The image filesystem's own check agrees, with the same totals.
    let usage = s.fs.usage();
    s.unmount();
    s.fs.sync_all().expect("sync");
    let device = fvol::fs::image::FileDevice::open(&s.backing.join("image")).expect("image");
    let report = fvol::fs::image::fsck(Arc::new(device)).expect("fsck");
    assert!(
        report.problems.is_empty(),
        "seed {seed}: fsck: {:?}",
        report.problems
    );
    assert_eq!(
        (report.data_bytes, report.inodes, report.orphans),
        (usage.bytes, usage.inodes, 0),
        "seed {seed}: fsck's totals (bytes, inodes, orphans) against the counters"
    );
}

/// Eight processes fill a 64 MiB local volume with files of up to 4 MiB and delete them again
/// (some while open), over and over: the host never holds more than the limit plus the bound.
/// Space came back to the quota before the host freed it (an inode's last close waits for its
/// writeback in flight): the host held up to 7 MiB more than the limit.
#[test]
fn local_host_stays_within_the_limit_under_churn() {
    let seed = seed();
    let limits = Limits {
        bytes: Some(CHURN_LIMIT),
        inodes: None,
    };
    let (host, s, baseline) = local_on_ext4(limits);
    let files = ops(CHURN_FILES);
    eprintln!("churn: seed {seed}, {CHURN_PROCS} processes x {files} files");
    let sampler = HostSampler::start(host.path(), baseline);
    let report = {
        let _settler = Settler::start(&s);
        workload(s.mnt(), seed, CHURN_PROCS, files, "churn")
    };
    eprintln!("churn: {report}");
    check_host("local, churn", seed, sampler.finish(), CHURN_LIMIT);
    s.fs.sync_all().expect("sync");
    settled(&s, &format!("local churn seed {seed}, at rest"));
}

/// The daemon settles a running volume by itself: a file written in many extents, whose extent
/// block ext4 adds only when it writes the data back, is counted within a few seconds without
/// an unmount or an fsync; and a clean unmount records exactly what the directory holds.
#[test]
fn daemon_settles_local_usage_while_mounted() {
    use fuse_tests::daemon::{TestDaemon, fuse_or_skip};
    use std::os::unix::fs::FileExt;
    if !fuse_or_skip("daemon_settles_local_usage_while_mounted") {
        return;
    }
    let d = TestDaemon::start();
    d.cli_ok(["create", "settled", "-o", "size=64M"]);
    let mp = d.mount("settled");
    let backing = d.root().join("volumes/settled/data");
    let f = std::fs::File::create(mp.join("sparse")).unwrap();
    // Every other block: 200 extents, more than the inode holds.
    for i in 0..200u64 {
        f.write_at(&[7u8; 4096], 2 * i * 4096).unwrap();
    }
    drop(f);
    // The host writes the data back (and allocates the extent block) behind fvol's back:
    // syncfs of the host filesystem only (a sync of all would wait for every FUSE mount).
    nix::unistd::syncfs(std::fs::File::open(&backing).unwrap()).unwrap();
    counts_what_the_directory_holds(&d, &backing, "mounted and idle for a minute");
    d.cli_ok(["unmount", "settled"]);
    assert_eq!(
        counted_usage(&d),
        fuse_tests::session::walk(&backing),
        "usage recorded at a clean unmount"
    );
    d.mount("settled");
    assert_eq!(
        counted_usage(&d),
        fuse_tests::session::walk(&backing),
        "usage after mounting again"
    );
}

/// A restart does not lose what is still to settle: a file written in many extents just
/// before a SIGTERM, whose extent block ext4 adds only when it writes the data back, is counted
/// by the next daemon, which took the connection over with the usage recorded clean.
#[test]
fn daemon_settles_local_usage_across_a_restart() {
    use fuse_tests::daemon::{TestDaemon, fuse_or_skip};
    use std::os::unix::fs::FileExt;
    if !fuse_or_skip("daemon_settles_local_usage_across_a_restart") {
        return;
    }
    let mut d = TestDaemon::start();
    d.cli_ok(["create", "settled", "-o", "size=64M"]);
    let mp = d.mount("settled");
    let backing = d.root().join("volumes/settled/data");
    let f = std::fs::File::create(mp.join("sparse")).unwrap();
    // Every other block: 200 extents, more than the inode holds.
    for i in 0..200u64 {
        f.write_at(&[7u8; 4096], 2 * i * 4096).unwrap();
    }
    // Open across the restart, as a process would keep it: a process of its own, since this
    // one starts the next daemon, and that exec would close a file of the volume (a FLUSH that
    // waits for that very daemon: docs/architecture.md, "Limits").
    let mut holder = std::process::Command::new("sh")
        .args([
            "-c",
            r#"exec 3<>"$0" && echo open && read _ && printf 'still open' >&3"#,
        ])
        .arg(mp.join("sparse"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut said = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(holder.stdout.take().unwrap()),
        &mut said,
    )
    .unwrap();
    assert_eq!(said, "open\n");
    drop(f);
    assert!(d.terminate().success(), "{}", d.log());
    let d = TestDaemon::start_at(&d.root);
    // The host writes the data back (and allocates the extent block) behind the new daemon's
    // back: syncfs of the host filesystem only (a sync of all would wait for the volume's
    // handler, and for any other FUSE mount on the machine).
    let host = std::fs::File::open(&backing).unwrap();
    nix::unistd::syncfs(&host).unwrap();
    assert!(
        d.log().contains("volume settled: serving its mount again"),
        "{}",
        d.log()
    );
    counts_what_the_directory_holds(&d, &backing, "a minute after the restart");
    use std::io::Write;
    holder.stdin.take().unwrap().write_all(b"\n").unwrap();
    assert!(
        holder.wait().unwrap().success(),
        "the open file failed after the restart"
    );
    d.cli_ok(["unmount", "settled"]);
    assert_eq!(
        counted_usage(&d),
        fuse_tests::session::walk(&backing),
        "usage recorded at a clean unmount"
    );
}

/// A create refused for space gives up with ENOSPC. On tmpfs the new node's inode was charged,
/// then given back when its directory had no room for one more entry, and that counted as a
/// release, which sent the refused create round again, forever: the stress run hung with the
/// handler spinning. Fails (after a generous wait) instead of hanging if it comes back.
#[test]
fn tmpfs_create_refused_for_space_gives_up() {
    let s = TestSession::tmpfs(Some(64 << 10), None);
    std::fs::create_dir(s.path("d")).unwrap();
    // Seven short names fill the directory's first page; an eighth needs a second one.
    for i in 0..7 {
        std::fs::File::create(s.path(&format!("d/f{i}"))).unwrap();
    }
    let mut fill = std::fs::File::create(s.path("fill")).unwrap();
    loop {
        use std::io::Write;
        match fill.write(&[1u8; 4096]) {
            Ok(_) => continue,
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
            Err(e) => panic!("filling the volume: {e}"),
        }
    }
    let (tx, rx) = std::sync::mpsc::channel();
    let path = s.path("d/eighth");
    std::thread::spawn(move || {
        let _ = tx.send(std::fs::File::create(path).map(drop));
    });
    match rx.recv_timeout(Duration::from_secs(30)) {
        Ok(result) => {
            let err = result.expect_err("the eighth name does not fit");
            assert_eq!(err.raw_os_error(), Some(libc::ENOSPC), "{err}");
        }
        Err(_) => {
            // The handler is still retrying: unmounting would wait for it, and the create
            // would keep the process from exiting. Abort the connection (the create fails
            // with ENOTCONN) and leave the mount to the process's exit.
            abort_fuse_connection(s.mnt());
            std::mem::forget(s);
            panic!("a create refused for space was still not answered after 30 s");
        }
    }
}

/// Aborts the FUSE connection of the mount at `mountpoint` (found in mountinfo, without
/// touching the mount, which may not answer).
fn abort_fuse_connection(mountpoint: &Path) {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let mnt = mountpoint.to_str().unwrap();
    let Some(line) = info.lines().find(|l| l.split(' ').nth(4) == Some(mnt)) else {
        return;
    };
    let minor = line.split(' ').nth(2).and_then(|d| d.split(':').nth(1));
    if let Some(minor) = minor {
        let _ = std::fs::write(format!("/sys/fs/fuse/connections/{minor}/abort"), "1");
    }
}

/// The usage the daemon counts for volume "settled".
fn counted_usage(d: &fuse_tests::daemon::TestDaemon) -> UsageSnapshot {
    let st = &d.inspect("settled")["Status"];
    UsageSnapshot {
        bytes: st["UsedBytes"].as_u64().unwrap(),
        inodes: st["UsedInodes"].as_u64().unwrap(),
    }
}

/// Waits (a minute at most) until the daemon counts what a walk of `backing` finds.
fn counts_what_the_directory_holds(
    d: &fuse_tests::daemon::TestDaemon,
    backing: &std::path::Path,
    when: &str,
) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (counted, walked) = (counted_usage(d), fuse_tests::session::walk(backing));
        if counted == walked {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{when}, the daemon counts {counted:?} but the directory holds {walked:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}
