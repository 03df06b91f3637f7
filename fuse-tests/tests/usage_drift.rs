//! Usage never drifts (issue 12.6): after a randomized multi-process run of mixed operations
//! (tests/usage_drift/workload.py), the quota's counters equal a walk of what the volume
//! holds, once everything is closed and synced, and again after a clean unmount and mount
//! (which trusts the recorded usage and does not rescan); and while the run goes on, the host
//! never holds more than the limit plus the bound docs/architecture.md states.
//!
//! The seed is printed; `FVOL_DRIFT_SEED=N` replays a run's operations (their interleaving is
//! the kernel's), `FVOL_DRIFT_OPS=N` changes the operations per process.
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use fuse_tests::loopfs::LoopExt4;
use fuse_tests::{Backend, TestSession};
use fvol::fs::UsageSnapshot;
use fvol::fs::quota::Limits;

const WORKLOAD: &str = include_str!("usage_drift/workload.py");
const LIMIT: u64 = 64 << 20;
const PROCS: u32 = 6;
const OPS: u32 = 2500;

fn seed() -> u64 {
    match std::env::var("FVOL_DRIFT_SEED") {
        Ok(s) => s.parse().expect("FVOL_DRIFT_SEED is a number"),
        Err(_) => {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                % 1_000_000_007
        }
    }
}

fn ops() -> u32 {
    std::env::var("FVOL_DRIFT_OPS").map_or(OPS, |s| s.parse().expect("FVOL_DRIFT_OPS"))
}

/// Runs the workload on `dir` and returns its report.
fn workload(dir: &Path, seed: u64, procs: u32, ops: u32) -> String {
    workload_mode(dir, seed, procs, ops, "mixed")
}

fn workload_mode(dir: &Path, seed: u64, procs: u32, ops: u32, mode: &str) -> String {
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

/// Waits (a generous while) until the counters equal the walk: the kernel's last RELEASE and
/// FORGET of what the run closed and removed reach the handler a moment after the run ends.
fn settled(s: &TestSession) -> Result<UsageSnapshot, (UsageSnapshot, UsageSnapshot)> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (counted, walked) = (s.fs.usage(), s.walk());
        if counted == walked {
            return Ok(counted);
        }
        if Instant::now() > deadline {
            return Err((counted, walked));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn check(backend: Backend) {
    let seed = seed();
    let ops = ops();
    eprintln!(
        "{backend:?}: seed {seed} (FVOL_DRIFT_SEED={seed} replays it), {PROCS} processes x {ops} operations"
    );
    let env = |k: &str, d: u64| std::env::var(k).map_or(d, |v| v.parse().unwrap());
    let limits = Limits {
        bytes: Some(env("FVOL_DRIFT_LIMIT", LIMIT)),
        inodes: Some(env("FVOL_DRIFT_INODES", 2000)),
    };
    let procs = env("FVOL_DRIFT_PROCS", PROCS as u64) as u32;
    let mut s = TestSession::with(backend, limits.bytes, limits.inodes);
    let report = workload(s.mnt(), seed, procs, ops);
    eprintln!("{backend:?}: {report}");
    s.fs.sync_all().expect("sync");
    let at_rest = settled(&s).unwrap_or_else(|(counted, walked)| {
        panic!("{backend:?} seed {seed}: counters {counted:?} but a walk finds {walked:?}")
    });
    eprintln!("{backend:?}: at rest {at_rest:?}");
    if !matches!(backend, Backend::Tmpfs) {
        s.remount();
        let (counted, walked) = (s.fs.usage(), s.walk());
        assert_eq!(
            counted, walked,
            "{backend:?} seed {seed}: after a remount, counters {counted:?} but a walk finds {walked:?}"
        );
        assert_eq!(
            counted, at_rest,
            "{backend:?} seed {seed}: the remount changed the usage"
        );
    }
}

#[test]
fn local_usage_matches_a_walk_after_a_stress_run() {
    check(Backend::Local);
}

#[test]
fn tmpfs_usage_matches_a_walk_after_a_stress_run() {
    check(Backend::Tmpfs);
}

#[test]
fn image_usage_matches_a_walk_after_a_stress_run() {
    check(Backend::Image);
}

/// Bytes the filesystem at `path` has in use.
fn host_used(path: &Path) -> u64 {
    let st = nix::sys::statvfs::statvfs(path).expect("statvfs");
    (st.blocks() - st.blocks_free()) * st.fragment_size()
}

#[test]
fn local_host_overshoot() {
    let seed = seed();
    let env = |k: &str, d: u64| std::env::var(k).map_or(d, |v| v.parse().unwrap());
    let limit = env("FVOL_DRIFT_LIMIT", LIMIT);
    let host = LoopExt4::new(512);
    let s = TestSession::new_in(
        Backend::Local,
        Limits {
            bytes: Some(limit),
            inodes: Some(2000),
        },
        host.path(),
    );
    let baseline = host_used(host.path());
    let stop = Arc::new(AtomicBool::new(false));
    let max = Arc::new(AtomicU64::new(0));
    let gap = Arc::new(AtomicU64::new(0));
    let sampler = {
        let (stop, max, path) = (stop.clone(), max.clone(), host.path().to_owned());
        let (gap, fs) = (gap.clone(), s.fs.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let used = host_used(&path).saturating_sub(baseline);
                let counted = fs.usage().bytes;
                max.fetch_max(used, Ordering::Relaxed);
                gap.fetch_max(used.saturating_sub(counted), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(1));
            }
        })
    };
    let settler = {
        let (stop, fs) = (stop.clone(), s.fs.clone());
        std::thread::spawn(move || {
            let mut last = Instant::now();
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(50));
                if last.elapsed() >= Duration::from_secs(5) {
                    fs.settle();
                    last = Instant::now();
                }
            }
        })
    };
    let procs = env("FVOL_DRIFT_PROCS", 8) as u32;
    let mode = std::env::var("FVOL_DRIFT_MODE").unwrap_or("churn".into());
    if std::env::var("FVOL_DRIFT_PAUSE").is_ok() {
        std::thread::sleep(Duration::from_secs(3));
    }
    let t0 = Instant::now();
    let report = workload_mode(s.mnt(), seed, procs, ops(), &mode);
    eprintln!("seed {seed} {mode} in {:?}: {report}", t0.elapsed());
    stop.store(true, Ordering::Relaxed);
    sampler.join().unwrap();
    settler.join().unwrap();
    let max = max.load(Ordering::Relaxed);
    eprintln!(
        "host ahead of the counter by at most {}",
        gap.load(Ordering::Relaxed)
    );
    eprintln!(
        "host held at most {max} bytes over its baseline: {} over the limit {limit}",
        max as i64 - limit as i64
    );
    s.fs.sync_all().unwrap();
    let at_rest = settled(&s);
    eprintln!(
        "at rest: {at_rest:?}, host {}",
        host_used(host.path()) - baseline
    );
}
