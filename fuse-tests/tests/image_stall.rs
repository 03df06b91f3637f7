//! The image filesystem (the rbd driver's) on a device that stalls, as an RBD image does while
//! its cluster is away, in memory: every call the stall covers blocks until it is lifted, and
//! writes handed over while stalled complete after it, as librbd's asynchronous writes do.
//!
//! Without a wait limit, an operation waits for the device and completes; with one, it fails
//! with ETIMEDOUT (never EIO) and the filesystem goes on once the device answers, with nothing
//! it acknowledged lost: the metadata store never saw an error. A fenced device refuses changes
//! with EROFS and fsync with EIO. `tests/rbd_outage.rs` does the same on a real cluster.
use std::ffi::OsStr;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use fvol::fs::image::{BlockDevice, CrashDevice, ImageFs, fsck};
use fvol::fs::memory::RootOwner;
use fvol::fs::quota::Limits;
use fvol::fs::{Caller, FsError, Health, ROOT_INO, VolumeFs};
use nix::errno::Errno;

const ROOT: Caller = Caller {
    uid: 0,
    gid: 0,
    pid: 0,
    umask: 0,
};
const OWNER: RootOwner = RootOwner {
    uid: 0,
    gid: 0,
    mode: 0o755,
};
/// The wait limit of the bounded tests: short, the stalls here are lifted by the test.
const LIMIT: Duration = Duration::from_millis(300);

/// Which calls a stall holds back.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Stall {
    /// `read_at`, `read_data`, `flush`; `submit_write` is queued instead.
    all: bool,
    /// Only `write_at` (redb's page writes), so a durable commit stops inside redb.
    metadata_writes: bool,
}

#[derive(Debug)]
struct StallDevice {
    inner: CrashDevice,
    limit: Option<Duration>,
    stall: Mutex<Stall>,
    lifted: Condvar,
    /// Writes handed over while stalled, done when the stall is lifted.
    queued: Mutex<Vec<(u64, Vec<u8>)>>,
    fenced: AtomicBool,
}

impl StallDevice {
    fn new(inner: CrashDevice, limit: Option<Duration>) -> Arc<StallDevice> {
        Arc::new(StallDevice {
            inner,
            limit,
            stall: Mutex::new(Stall::default()),
            lifted: Condvar::new(),
            queued: Mutex::new(Vec::new()),
            fenced: AtomicBool::new(false),
        })
    }

    /// Sets the stall; lifting it first does the writes queued meanwhile (under the lock, so
    /// no write is queued after that).
    fn set(&self, stall: Stall) {
        let mut s = self.stall.lock().unwrap();
        *s = stall;
        if stall == Stall::default() {
            for (at, data) in self.queued.lock().unwrap().drain(..) {
                self.inner.write_at(at, &data).unwrap();
            }
        }
        self.lifted.notify_all();
    }

    /// Waits while `held` says the stall covers the call; gives up at `deadline`.
    fn pass(&self, held: impl Fn(&Stall) -> bool, deadline: Option<Instant>) -> io::Result<()> {
        let mut s = self.stall.lock().unwrap();
        while held(&s) {
            match deadline {
                None => s = self.lifted.wait(s).unwrap(),
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    s = self.lifted.wait_timeout(s, left).unwrap().0;
                    if Instant::now() >= d && held(&s) {
                        return Err(io::Error::new(io::ErrorKind::TimedOut, "stalled"));
                    }
                }
            }
        }
        if self.fenced.load(Ordering::SeqCst) {
            return Err(io::Error::other("fenced"));
        }
        Ok(())
    }
}

impl BlockDevice for StallDevice {
    fn size(&self) -> u64 {
        self.inner.size()
    }
    fn read_at(&self, offset: u64, out: &mut [u8]) -> io::Result<()> {
        self.pass(|s| s.all, None)?;
        self.inner.read_at(offset, out)
    }
    fn write_at(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        self.pass(|s| s.all || s.metadata_writes, None)?;
        self.inner.write_at(offset, data)
    }
    fn submit_write(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        let s = self.stall.lock().unwrap();
        if s.all {
            self.queued.lock().unwrap().push((offset, data.to_vec()));
            return Ok(());
        }
        drop(s);
        self.pass(|_| false, None)?;
        self.inner.submit_write(offset, data)
    }
    fn flush(&self) -> io::Result<()> {
        self.pass(|s| s.all, None)?;
        self.inner.flush()
    }
    fn wait_limit(&self) -> Option<Duration> {
        self.limit
    }
    fn read_data(&self, offset: u64, out: &mut [u8]) -> io::Result<()> {
        self.pass(|s| s.all, self.limit.map(|l| Instant::now() + l))?;
        self.inner.read_at(offset, out)
    }
    fn fenced(&self) -> bool {
        self.fenced.load(Ordering::SeqCst)
    }
    fn health(&self) -> Health {
        Health::default()
    }
}

/// Lifts the stall when dropped: a failing test must not leave the committer blocked, or
/// dropping the filesystem would wait for it forever.
struct Lift(Arc<StallDevice>);

impl Drop for Lift {
    fn drop(&mut self) {
        self.0.set(Stall::default());
    }
}

/// A formatted image on a stall device with `limit`, and the filesystem on it. Big enough that
/// its metadata stays below half its region (past that, a change first needs a durable commit,
/// which a stall holds back: see `room`).
fn volume(limit: Option<Duration>) -> (CrashDevice, Arc<StallDevice>, ImageFs) {
    let crash = CrashDevice::new(256 << 20);
    let dev = StallDevice::new(crash.clone(), limit);
    let as_dev: Arc<dyn BlockDevice> = dev.clone();
    ImageFs::format(as_dev.clone(), OWNER, None).unwrap();
    let fs = ImageFs::open(as_dev, Limits::default()).unwrap();
    (crash, dev, fs)
}

fn data(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31) ^ seed)
        .collect()
}

/// Creates `name` holding `data`; returns its inode and open handle.
fn create(fs: &ImageFs, name: &str, data: &[u8]) -> Result<(u64, u64), FsError> {
    let (e, o) = fs.create(&ROOT, ROOT_INO, OsStr::new(name), 0o644, libc::O_RDWR)?;
    let n = fs.write(e.attr.ino, o.fh, 0, data, false)?;
    assert_eq!(n as usize, data.len());
    Ok((e.attr.ino, o.fh))
}

fn read(fs: &ImageFs, ino: u64, fh: u64, len: usize) -> Result<Vec<u8>, FsError> {
    fs.read(ino, fh, 0, len as u32)
}

/// Crashes the device (every unflushed write lost) and checks that `files` are there, whole,
/// and fsck finds nothing wrong.
fn after_a_crash(fs: ImageFs, crash: &CrashDevice, files: &[(&str, Vec<u8>)]) {
    fs.abandon();
    crash.crash(|_| false);
    let dev: Arc<dyn BlockDevice> = Arc::new(crash.clone());
    let report = fsck(dev.clone()).unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    let fs = ImageFs::open(dev, Limits::default()).unwrap();
    for (name, want) in files {
        let e = fs.lookup(&ROOT, ROOT_INO, OsStr::new(name)).unwrap();
        let o = fs.open(&ROOT, e.attr.ino, libc::O_RDONLY).unwrap();
        let got = read(&fs, e.attr.ino, o.fh, want.len() + 1).unwrap();
        assert!(got == *want, "{name}: {} bytes differ", got.len());
    }
}

/// Runs `f` on another thread; the caller checks it is still waiting, then joins it.
fn in_background<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> std::thread::JoinHandle<T> {
    std::thread::spawn(f)
}

#[test]
fn without_a_bound_a_stall_waits_and_loses_nothing() {
    let (crash, dev, fs) = volume(None);
    let fs = Arc::new(fs);
    let _lift = Lift(dev.clone());
    let a = data(1, 100_000);
    let (ino, fh) = create(&fs, "a", &a).unwrap();
    fs.fsync(ino, fh, false).unwrap();

    dev.set(Stall {
        all: true,
        ..Stall::default()
    });
    let b = data(2, 300_000);
    let writer = {
        let (fs, b) = (fs.clone(), b.clone());
        in_background(move || {
            let (ino, fh) = create(&fs, "b", &b)?;
            fs.fsync(ino, fh, false)?;
            fs.release(ino, fh)
        })
    };
    let reader = {
        let fs = fs.clone();
        in_background(move || read(&fs, ino, fh, 100_000))
    };
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        !writer.is_finished() && !reader.is_finished(),
        "did not wait"
    );
    dev.set(Stall::default());
    writer.join().unwrap().expect("the write after the stall");
    assert!(reader.join().unwrap().expect("the read after the stall") == a);
    fs.release(ino, fh).unwrap();
    let fs = Arc::into_inner(fs).unwrap();
    after_a_crash(fs, &crash, &[("a", a), ("b", b)]);
}

/// With a limit: fsync and data reads fail with ETIMEDOUT while the device stalls, writes go
/// on; once it answers, the same calls succeed, and what was written is durable.
#[test]
fn with_a_bound_calls_fail_with_etimedout_and_the_volume_recovers() {
    let (crash, dev, fs) = volume(Some(LIMIT));
    let _lift = Lift(dev.clone());
    let a = data(3, 100_000);
    let (ino, fh) = create(&fs, "a", &a).unwrap();
    fs.fsync(ino, fh, false).unwrap();

    dev.set(Stall {
        all: true,
        ..Stall::default()
    });
    let b = data(4, 200_000);
    let (ino_b, fh_b) = create(&fs, "b", &b).expect("a write while there is room");
    let timed_out = Err(FsError::Os(Errno::ETIMEDOUT));
    assert_eq!(fs.fsync(ino_b, fh_b, false), timed_out);
    assert_eq!(read(&fs, ino, fh, 10).map(drop), timed_out);
    // What is in memory still answers.
    assert_eq!(fs.getattr(ino_b, None).unwrap().size, b.len() as u64);
    assert_eq!(fs.fsync(ino_b, fh_b, false), timed_out, "a second try");

    dev.set(Stall::default());
    fs.fsync(ino_b, fh_b, false)
        .expect("fsync once the device answers");
    assert!(read(&fs, ino, fh, a.len()).unwrap() == a);
    assert!(read(&fs, ino_b, fh_b, b.len()).unwrap() == b);
    let c = data(5, 5000);
    let (ino_c, fh_c) = create(&fs, "c", &c).unwrap();
    fs.fsync(ino_c, fh_c, false).unwrap();
    for (i, f) in [(ino, fh), (ino_b, fh_b), (ino_c, fh_c)] {
        fs.release(i, f).unwrap();
    }
    after_a_crash(fs, &crash, &[("a", a), ("b", b), ("c", c)]);
}

/// A durable commit that stalls inside redb's own writes holds the transaction lock: with a
/// limit, its caller and every other write give up after it (ETIMEDOUT) instead of waiting
/// behind it; the commit lands once the device answers.
#[test]
fn with_a_bound_a_commit_stalled_in_metadata_holds_back_no_one_longer() {
    let (crash, dev, fs) = volume(Some(LIMIT));
    let fs = Arc::new(fs);
    let _lift = Lift(dev.clone());
    let a = data(6, 50_000);
    let (ino, fh) = create(&fs, "a", &a).unwrap();
    dev.set(Stall {
        metadata_writes: true,
        ..Stall::default()
    });
    let timed_out = Err(FsError::Os(Errno::ETIMEDOUT));
    assert_eq!(fs.fsync(ino, fh, false), timed_out);
    // The commit holds the lock now (stalled in redb's page writes): changes give up.
    let changes = {
        let fs = fs.clone();
        in_background(move || {
            (0..3)
                .map(|i| create(&fs, &format!("x{i}"), b"x").map(drop))
                .collect::<Vec<_>>()
        })
    };
    let results = changes.join().unwrap();
    assert!(
        results.iter().all(|r| *r == timed_out),
        "changes during the stall: {results:?}"
    );
    dev.set(Stall::default());
    fs.fsync(ino, fh, false).unwrap();
    let b = data(7, 1000);
    let (ino_b, fh_b) = create(&fs, "b", &b).unwrap();
    fs.fsync(ino_b, fh_b, false).unwrap();
    fs.release(ino, fh).unwrap();
    fs.release(ino_b, fh_b).unwrap();
    let fs = Arc::into_inner(fs).unwrap();
    after_a_crash(fs, &crash, &[("a", a), ("b", b)]);
}

/// Once the device is fenced, every change fails with EROFS and fsync with EIO; what was
/// fsynced before is on the image.
#[test]
fn a_fenced_device_refuses_changes() {
    let (crash, dev, fs) = volume(None);
    let a = data(8, 30_000);
    let (ino, fh) = create(&fs, "a", &a).unwrap();
    fs.fsync(ino, fh, false).unwrap();
    dev.fenced.store(true, Ordering::SeqCst);
    let rofs = Err(FsError::Os(Errno::EROFS));
    assert_eq!(fs.write(ino, fh, 0, b"late", false).map(drop), rofs);
    assert_eq!(create(&fs, "b", b"b").map(drop), rofs);
    assert_eq!(
        fs.mkdir(&ROOT, ROOT_INO, OsStr::new("d"), 0o755).map(drop),
        rofs
    );
    assert_eq!(fs.unlink(&ROOT, ROOT_INO, OsStr::new("a")).map(drop), rofs);
    assert_eq!(fs.fsync(ino, fh, false), Err(FsError::Os(Errno::EIO)));
    fs.abandon();
    crash.crash(|_| false);
    dev.fenced.store(false, Ordering::SeqCst);
    let fs = ImageFs::open(Arc::new(crash.clone()), Limits::default()).unwrap();
    after_a_crash(fs, &crash, &[("a", a)]);
}
