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
    let out = Command::new("/usr/bin/python3")
        .args(["-c", WORKLOAD])
        .arg(dir)
        .arg(seed.to_string())
        .arg(procs.to_string())
        .arg(ops.to_string())
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
