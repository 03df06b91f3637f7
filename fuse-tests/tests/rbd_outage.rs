//! rbd volumes through Ceph outages, on real single-node clusters (one per test, so the tests
//! run in parallel): the OSD frozen, the OSD killed, the monitor killed, each for 60 s, and a
//! daemon started while the whole cluster is down.
//!
//! In each, an application (`outage-writer`, a process) writes a checksummed record, fsyncs it
//! and reads it back, nonstop. Without `io_timeout` it sees no error at all: its calls wait for
//! the cluster and complete when it is back, and every record it was told is durable is intact
//! afterwards; fsck finds nothing wrong (also across a restart of the daemon while the cluster
//! is down). With `io_timeout=10s`, the calls that waited fail with
//! ETIMEDOUT and the writer goes on once the cluster is back, without a remount. A volume whose
//! client is blocklisted during the outage is fenced: it refuses writes, says so in `inspect`
//! and the log, and what it acknowledged before is intact. `fvol ls`, `inspect` and the other
//! volumes answer throughout.
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use fuse_tests::ceph::{POOL, TestCluster};
use fuse_tests::daemon::{TestDaemon, TestRoot, fuse_or_skip, stderr_of, stdout_of};
use nix::sys::signal::Signal;

/// How long each outage lasts.
const OUTAGE: Duration = Duration::from_secs(60);
/// The bound of the volume with `io_timeout`.
const BOUND: &str = "10s";
const RECORD: usize = 4096;
/// How long a test waits for something that should happen at once (an answer of the daemon)
/// or soon (records after the cluster is back): generous, for a loaded 2-CPU machine.
const PATIENCE: Duration = Duration::from_secs(120);
/// Records a writer must make before an outage and again after it.
const RECORDS: usize = 30;

const ETIMEDOUT: i32 = libc::ETIMEDOUT;

fn writer_bin() -> &'static str {
    env!("CARGO_BIN_EXE_outage-writer")
}

/// One line of a writer's log.
#[derive(Debug, Clone)]
enum Round {
    Ok,
    Err { step: String, errno: i32 },
}

/// An `outage-writer` process writing to `file` (on a volume), logging to `log`.
struct Writer {
    name: String,
    child: Child,
    log: PathBuf,
    stop: PathBuf,
}

impl Writer {
    fn start(name: &str, mountpoint: &Path, scratch: &Path) -> Writer {
        let file = mountpoint.join("records");
        let log = scratch.join(format!("{name}.log"));
        let stop = scratch.join(format!("{name}.stop"));
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new(writer_bin())
            .arg(&file)
            .arg(&stop)
            .arg(RECORD.to_string())
            .stdout(out)
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn outage-writer");
        Writer {
            name: name.to_owned(),
            child,
            log,
            stop,
        }
    }

    fn rounds(&self) -> Vec<Round> {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        text.lines()
            .filter_map(|line| {
                let f: Vec<&str> = line.split(' ').collect();
                match f.as_slice() {
                    ["ok", _, _] => Some(Round::Ok),
                    ["err", _, step, errno, _] => Some(Round::Err {
                        step: step.to_string(),
                        errno: errno.parse().ok()?,
                    }),
                    _ => None, // a line being written
                }
            })
            .collect()
    }

    fn oks(&self) -> usize {
        self.rounds()
            .iter()
            .filter(|r| matches!(r, Round::Ok))
            .count()
    }

    fn errors(&self) -> Vec<(String, i32)> {
        self.rounds()
            .into_iter()
            .filter_map(|r| match r {
                Round::Err { step, errno } => Some((step, errno)),
                Round::Ok => None,
            })
            .collect()
    }

    /// Waits until the writer has made `n` records in all.
    fn wait_for_records(&self, n: usize, why: &str) {
        wait_until(&format!("{}: {n} records ({why})", self.name), || {
            self.oks() >= n
        });
    }

    /// Stops the writer; returns how many records it was told are durable.
    fn stop(mut self) -> (usize, Vec<(String, i32)>) {
        std::fs::write(&self.stop, b"").unwrap();
        let deadline = Instant::now() + PATIENCE;
        while self.child.try_wait().unwrap().is_none() {
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("{}: the writer did not stop", self.name);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        (self.oks(), self.errors())
    }

    /// Checks the first `count` records of the writer's file (on `mountpoint` now).
    fn verify(file: &Path, count: usize) {
        let out = Command::new(writer_bin())
            .arg("--verify")
            .arg(file)
            .arg(RECORD.to_string())
            .arg(count.to_string())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}: {}",
            file.display(),
            stdout_of(&out)
        );
    }
}

impl Drop for Writer {
    /// Kills the writer, waiting for it a few seconds at most: one stuck in an uninterruptible
    /// wait on its volume dies only once the daemon (dropped after it) is gone.
    fn drop(&mut self) {
        let _ = std::fs::write(&self.stop, b"");
        let _ = self.child.kill();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline && matches!(self.child.try_wait(), Ok(None)) {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Notes in the test's output how long the test has run at `what` (to see where time goes).
fn phase(began: Instant, what: &str) {
    eprintln!("[{:6.1}s] {what}", began.elapsed().as_secs_f64());
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !done() {
        assert!(Instant::now() < deadline, "gave up waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Runs `fvol ARGS` and waits for its answer, `PATIENCE` at most: a daemon that does not
/// answer during an outage fails the test instead of hanging it.
fn cli_answers(root: &TestRoot, args: &[&str]) -> Output {
    let child = root
        .command(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut child = Some(child);
    let deadline = Instant::now() + PATIENCE;
    loop {
        if child.as_mut().unwrap().try_wait().unwrap().is_some() {
            return child.take().unwrap().wait_with_output().unwrap();
        }
        if Instant::now() > deadline {
            let mut c = child.take().unwrap();
            let _ = c.kill();
            let _ = c.wait();
            root.show_log_once("fvol did not answer");
            panic!("fvol {args:?} did not answer within {PATIENCE:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn inspect(root: &TestRoot, name: &str) -> serde_json::Value {
    let out = cli_answers(root, &["inspect", name]);
    assert!(out.status.success(), "inspect {name}: {}", stderr_of(&out));
    let text = stdout_of(&out);
    let mut all: Vec<serde_json::Value> =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("inspect JSON: {e}\n{text}"));
    all.remove(0)
}

/// `fvol ls` answers (the test fails if it does not, see `cli_answers`).
fn ls_answers(root: &TestRoot) -> String {
    let out = cli_answers(root, &["ls"]);
    assert!(out.status.success(), "ls: {}", stderr_of(&out));
    stdout_of(&out)
}

/// Waits until `inspect NAME` shows the volume waiting for its cluster; returns the field.
fn wait_for_cluster_wait(root: &TestRoot, name: &str) -> serde_json::Value {
    let mut seen = serde_json::Value::Null;
    wait_until(&format!("{name}: Status.ClusterWait in inspect"), || {
        seen = inspect(root, name)["Status"]["ClusterWait"].clone();
        !seen.is_null()
    });
    let since = seen["Since"].as_str().unwrap_or_default();
    assert!(
        fuse_tests::daemon::parse_rfc3339_utc(since).is_some(),
        "ClusterWait.Since is no time: {seen}"
    );
    assert!(seen["Operations"].as_u64().unwrap_or(0) >= 1, "{seen}");
    seen
}

/// A file written and fsynced on a volume that must keep answering (a local one).
fn write_durably(path: &Path, data: &[u8]) {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .custom_flags(libc::O_SYNC)
        .open(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    f.write_all(data).unwrap();
    f.sync_all().unwrap();
    assert_eq!(std::fs::read(path).unwrap(), data);
}

/// Sleeps until `OUTAGE` has passed since `began`.
fn until_outage_ends(began: Instant) {
    if let Some(left) = OUTAGE.checked_sub(began.elapsed()) {
        std::thread::sleep(left);
    }
}

/// `fvol mount NAME`, started in the background.
fn spawn_mount(root: &TestRoot, name: &str) -> Child {
    root.command(["mount", name])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn finish(child: Child, what: &str) -> Output {
    let mut child = Some(child);
    let deadline = Instant::now() + PATIENCE;
    loop {
        if child.as_mut().unwrap().try_wait().unwrap().is_some() {
            return child.take().unwrap().wait_with_output().unwrap();
        }
        assert!(Instant::now() < deadline, "{what} did not finish");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The rados client address holding the lock of `image` (the daemon's connection for it).
fn lock_holder_address(ceph: &TestCluster, image: &str) -> String {
    let img = ceph
        .connect()
        .io_ctx(POOL)
        .unwrap()
        .open_image(image)
        .unwrap();
    let lockers = img.lockers().unwrap();
    assert_eq!(lockers.len(), 1, "{lockers:?}");
    lockers[0].address.clone()
}

/// The OSD frozen (SIGSTOP) for 60 s, then resumed (SIGCONT), marked down meanwhile as the
/// other OSDs of a real cluster would report it; four rbd volumes and a local one on one
/// daemon:
/// - `wait` (no bound): its writer sees no error;
/// - `bounded` (`io_timeout=10s`): its writer gets ETIMEDOUT, then writes again;
/// - `fenced`: its client is blocklisted during the freeze, as a host taking the volume over
///   does: it refuses writes (EROFS) afterwards and reports the fence; its records up to the
///   fence are intact after `fvol break-lock` and a new mount;
/// - `late`: mounted during the freeze: the mount waits for the cluster (and then works),
///   while `ls`, `inspect` and the local volume keep answering.
#[test]
fn osd_frozen() {
    if !fuse_or_skip("osd_frozen") {
        return;
    }
    let t = Instant::now();
    let ceph = TestCluster::start();
    let d = TestDaemon::start();
    let root = d.root.clone();
    ceph.create_volume(&d, "wait", &["size=1G"]);
    ceph.create_volume(&d, "bounded", &["size=1G", &format!("io_timeout={BOUND}")]);
    ceph.create_volume(&d, "fenced", &["size=512M"]);
    ceph.create_volume(&d, "late", &["size=256M"]);
    d.cli_ok(["create", "local"]);
    let local = d.mount("local");
    let scratch = d.scratch_dir("writers");
    let writers: Vec<Writer> = ["wait", "bounded", "fenced"]
        .iter()
        .map(|name| Writer::start(name, &d.mount(name), &scratch))
        .collect();
    let [wait, bounded, fenced] = <[Writer; 3]>::try_from(writers).ok().unwrap();
    let fenced_client = lock_holder_address(&ceph, "fenced");
    for w in [&wait, &bounded, &fenced] {
        w.wait_for_records(RECORDS, "before the outage");
    }

    d.cli_ok(["snapshot", "create", "wait", "before"]);
    ceph.signal("osd.0", Signal::SIGSTOP);
    phase(t, "the OSD is frozen");
    let frozen = Instant::now();
    let before = (wait.oks(), bounded.oks());
    // The monitor still answers: blocklist the fenced volume's client, as `rbd lock rm` (or
    // `fvol break-lock`) on another host does before it takes the image over.
    let out = ceph.ceph(&["osd", "blocklist", "add", &fenced_client]);
    assert!(out.status.success(), "blocklist: {}", stderr_of(&out));

    // Mounting another rbd volume waits for the OSD; the daemon answers meanwhile.
    let late = spawn_mount(&root, "late");
    let listed = ls_answers(&root);
    assert!(
        listed.contains("wait") && listed.contains("local"),
        "{listed}"
    );
    wait_for_cluster_wait(&root, "wait");
    wait_for_cluster_wait(&root, "bounded");
    // `snapshot ls` checks the cluster's own list of snapshots within a bound: it answers,
    // with the snapshots as described (the second time at once: the first check still waits).
    for _ in 0..2 {
        let out = cli_answers(&root, &["snapshot", "ls", "wait", "--format", "json"]);
        assert!(out.status.success(), "snapshot ls: {}", stderr_of(&out));
        let listed: serde_json::Value = serde_json::from_str(&stdout_of(&out)).unwrap();
        assert_eq!(listed[0]["Name"], "before", "{listed}");
        assert!(listed[0]["Missing"].is_null(), "{listed}");
    }
    write_durably(
        &local.join("during-the-outage"),
        b"the local volume answers",
    );
    wait_until("bounded: an error after its bound", || {
        !bounded.errors().is_empty()
    });
    let mut late = Some(late);
    assert!(
        late.as_mut().unwrap().try_wait().unwrap().is_none(),
        "mounting `late` did not wait for the frozen OSD"
    );
    assert_eq!(
        wait.errors(),
        vec![],
        "the writer without a bound got errors"
    );
    // What the other OSDs of a real cluster report after 20 s without its heartbeats. Without
    // it the lone OSD here may keep a PG "laggy" once it resumes (its read lease ran out while
    // it was frozen, and nothing renews it): that PG's operations would wait for good.
    let out = ceph.ceph(&["osd", "down", "0"]);
    assert!(out.status.success(), "osd down: {}", stderr_of(&out));
    until_outage_ends(frozen);
    // Still answering at the end of the outage (a wedged daemon would hang here).
    ls_answers(&root);
    ceph.signal("osd.0", Signal::SIGCONT);
    eprintln!(
        "OSD resumed after {:.1?}; records before: wait {}, bounded {}",
        frozen.elapsed(),
        before.0,
        before.1
    );

    phase(t, "the OSD runs again");
    let out = finish(late.take().unwrap(), "mounting `late` after the outage");
    phase(t, "`late` mounted");
    assert!(out.status.success(), "mount late: {}", stderr_of(&out));
    let after = (wait.oks(), bounded.oks());
    wait.wait_for_records(after.0 + RECORDS, "after the outage");
    bounded.wait_for_records(after.1 + RECORDS, "after the outage, without a remount");
    wait_until("fenced: writes refused after the outage", || {
        fenced.errors().iter().any(|(_, e)| *e == libc::EROFS)
    });
    let st = inspect(&root, "fenced");
    let fence = &st["Status"]["Fenced"];
    assert!(
        fence["Reason"]
            .as_str()
            .is_some_and(|r| r.contains("blocklisted")),
        "{st}"
    );
    assert!(
        inspect(&root, "wait")["Status"]["Fenced"].is_null(),
        "a volume that was not blocklisted reports a fence"
    );
    wait_until("the log reports the wait and the fence", || {
        let log = d.log();
        log.contains("volume wait: waiting for its cluster")
            && log.contains("volume wait: its cluster answers again")
            && log.contains("volume fenced: fenced since")
    });

    phase(t, "writers went on, fence reported");
    let listed = d.cli_ok(["snapshot", "ls", "wait"]);
    assert!(
        listed.contains("before") && !listed.contains("missing"),
        "{listed}"
    );
    let (n, errors) = wait.stop();
    assert_eq!(errors, vec![], "wait: the writer got errors");
    Writer::verify(&d.mount("wait").join("records"), n);
    let (n_bounded, errors) = bounded.stop();
    assert!(
        errors.iter().all(|(_, errno)| *errno == ETIMEDOUT),
        "bounded: errors other than ETIMEDOUT: {errors:?}"
    );
    Writer::verify(&d.mount("bounded").join("records"), n_bounded);
    let (n_fenced, errors) = fenced.stop();
    // Changes are refused with EROFS; fsync, and a read the cluster refused, fail with EIO.
    assert!(
        errors.iter().all(|(step, errno)| *errno == libc::EROFS
            || (matches!(step.as_str(), "fsync" | "read") && *errno == libc::EIO)),
        "fenced: errors other than EROFS, or EIO from fsync or read: {errors:?}"
    );
    eprintln!(
        "records: wait {n}, bounded {n_bounded} (ETIMEDOUT after the bound), fenced {n_fenced}"
    );
    phase(t, "records checked");
    for name in ["wait", "bounded", "late", "fenced", "local"] {
        d.cli_ok(["unmount", name]);
    }
    phase(t, "unmounted");
    for name in ["wait", "bounded", "late"] {
        d.fsck_clean(name);
    }
    // The fenced connection could not release its lock: the image is taken over as after a
    // dead holder, with break-lock; everything acknowledged before the fence is there.
    let out = d.cli(["mount", "fenced"]);
    assert!(
        !out.status.success() && stderr_of(&out).contains("fvol break-lock"),
        "{}",
        stderr_of(&out)
    );
    phase(t, "checked");
    d.cli_ok(["break-lock", "fenced"]);
    let mp = d.mount("fenced");
    Writer::verify(&mp.join("records"), n_fenced);
    d.cli_ok(["unmount", "fenced"]);
    d.fsck_clean("fenced");
    drop(ceph);
}

/// The OSD killed (SIGKILL) and started again after 60 s: the writer waits, then goes on.
#[test]
fn osd_killed() {
    if !fuse_or_skip("osd_killed") {
        return;
    }
    let ceph = TestCluster::start();
    let d = TestDaemon::start();
    ceph.create_volume(&d, "wait", &["size=1G"]);
    let scratch = d.scratch_dir("writers");
    let wait = Writer::start("wait", &d.mount("wait"), &scratch);
    wait.wait_for_records(RECORDS, "before the outage");
    ceph.signal("osd.0", Signal::SIGKILL);
    let killed = Instant::now();
    wait_for_cluster_wait(&d.root, "wait");
    ls_answers(&d.root);
    until_outage_ends(killed);
    ceph.restart();
    eprintln!("OSD restarted after {:.1?}", killed.elapsed());
    let after = wait.oks();
    wait.wait_for_records(after + RECORDS, "after the outage");
    let (n, errors) = wait.stop();
    assert_eq!(errors, vec![], "the writer got errors");
    Writer::verify(&d.mount("wait").join("records"), n);
    d.cli_ok(["unmount", "wait"]);
    d.fsck_clean("wait");
    drop(ceph);
}

/// The monitor killed and started again after 60 s. Mounted volumes keep writing (their I/O
/// needs only the OSDs); mounting another volume needs the monitor, waits for it for 30 s and
/// fails with a clear error, and `ls`, and `inspect` and `path` of that volume, answer
/// meanwhile; it mounts once the monitor is back.
#[test]
fn mon_killed() {
    if !fuse_or_skip("mon_killed") {
        return;
    }
    let ceph = TestCluster::start();
    let d = TestDaemon::start();
    ceph.create_volume(&d, "wait", &["size=1G"]);
    ceph.create_volume(&d, "other", &["size=256M"]);
    let scratch = d.scratch_dir("writers");
    let wait = Writer::start("wait", &d.mount("wait"), &scratch);
    wait.wait_for_records(RECORDS, "before the outage");
    ceph.signal("mon.a", Signal::SIGKILL);
    let killed = Instant::now();
    let mut other = Some(spawn_mount(&d.root, "other"));
    ls_answers(&d.root);
    inspect(&d.root, "wait");
    // Nor do inspect and path of the volume whose mount waits: it shows as not mounted yet.
    assert_eq!(inspect(&d.root, "other")["Status"]["Mounted"], false);
    let path = cli_answers(&d.root, &["path", "other"]);
    assert!(path.status.success(), "path other: {}", stderr_of(&path));
    assert!(
        other.as_mut().unwrap().try_wait().unwrap().is_none(),
        "mounting `other` did not wait for the monitor"
    );
    let out = finish(other.take().unwrap(), "mounting `other` without a monitor");
    let err = stderr_of(&out);
    assert!(
        !out.status.success() && err.contains("rados_connect") && err.contains("timed out"),
        "mount without a monitor: {}\n{err}",
        out.status
    );
    let during = wait.oks();
    wait.wait_for_records(during + RECORDS, "while the monitor is away");
    until_outage_ends(killed);
    ceph.restart();
    eprintln!("monitor restarted after {:.1?}", killed.elapsed());
    d.mount("other");
    let after = wait.oks();
    wait.wait_for_records(after + RECORDS, "after the outage");
    let (n, errors) = wait.stop();
    assert_eq!(errors, vec![], "the writer got errors");
    Writer::verify(&d.mount("wait").join("records"), n);
    for name in ["wait", "other"] {
        d.cli_ok(["unmount", name]);
        d.fsck_clean(name);
    }
    drop(ceph);
}

/// A restart (SIGTERM, then a start) while the whole cluster is down: the new daemon serves at
/// once (its local volume, `ls`), and takes over the kept connection of the rbd volume in the
/// background once the cluster is back (`Status.MountPending` until then), without a statfs of
/// its own on that mount, which nobody serves meanwhile. The writer on the volume waits
/// through it all and sees no error; its bind target stays.
#[test]
fn restart_while_cluster_down() {
    if !fuse_or_skip("restart_while_cluster_down") {
        return;
    }
    let t = Instant::now();
    let ceph = TestCluster::start();
    let mut d = TestDaemon::start();
    ceph.create_volume(&d, "db", &["size=256M"]);
    d.cli_ok(["create", "local"]);
    let target = d.scratch_dir("db-target");
    let target_arg = target.to_str().unwrap().to_owned();
    let mp = d.mount("db");
    d.cli_ok(["mount", "db", "--target", &target_arg]);
    d.mount("local");
    let scratch = d.scratch_dir("writers");
    let writer = Writer::start("db", &mp, &scratch);
    writer.wait_for_records(RECORDS, "before the restart");
    let refs = inspect(&d.root, "db")["Status"]["MountRefs"].clone();
    assert!(d.terminate().success(), "{}", d.log());
    ceph.stop();
    phase(t, "the daemon stopped for a restart, then the cluster");

    let d = TestDaemon::start_at(&d.root);
    phase(t, "the next daemon answers");
    let local = inspect(&d.root, "local");
    assert_eq!(local["Status"]["Mounted"], true, "{local}");
    write_durably(
        &PathBuf::from(local["Mountpoint"].as_str().unwrap()).join("f"),
        b"the local volume works while the cluster is down",
    );
    let db = inspect(&d.root, "db");
    assert_eq!(db["Status"]["Mounted"], false, "{db}");
    assert_eq!(db["Status"]["MountRefs"], refs, "{db}");
    assert!(!db["Status"]["MountPending"].is_null(), "{db}");
    ls_answers(&d.root);

    ceph.restart();
    phase(t, "the cluster runs again");
    wait_until("db served again once the cluster is back", || {
        inspect(&d.root, "db")["Status"]["Mounted"] == true
    });
    assert!(
        d.log().contains("volume db: serving its mount again"),
        "the kept connection was not taken over\n{}",
        d.log()
    );
    let after = writer.oks();
    writer.wait_for_records(after + RECORDS, "after the take-over");
    let (n, errors) = writer.stop();
    assert_eq!(errors, vec![], "the writer got errors\n{}", d.log());
    Writer::verify(&mp.join("records"), n);
    assert!(target.join("records").exists(), "the bind target is gone");
    let db = inspect(&d.root, "db");
    assert_eq!(db["Status"]["MountRefs"], refs, "{db}");
    assert!(db["Status"]["MountPending"].is_null(), "{db}");
    d.cli_ok(["unmount", "db", "--target", &target_arg]);
    d.cli_ok(["unmount", "db"]);
    d.fsck_clean("db");
    drop(ceph);
}

/// A daemon started while the whole cluster is down serves at once: its local volume is
/// mounted and `ls` answers; the rbd volume shows `Status.MountPending`, and is mounted, with
/// its references and bind target, once the cluster is back.
#[test]
fn start_while_cluster_down() {
    if !fuse_or_skip("start_while_cluster_down") {
        return;
    }
    let ceph = TestCluster::start();
    let mut d = TestDaemon::start();
    ceph.create_volume(&d, "db", &["size=256M"]);
    d.cli_ok(["create", "local"]);
    let target = d.scratch_dir("db-target");
    let target_arg = target.to_str().unwrap().to_owned();
    let mp = d.mount("db");
    d.cli_ok(["mount", "db", "--target", &target_arg]);
    d.mount("local");
    let data = b"fsynced before the stop".repeat(1000);
    std::fs::write(mp.join("kept"), &data).unwrap();
    std::fs::File::open(mp.join("kept"))
        .unwrap()
        .sync_all()
        .unwrap();
    let refs = inspect(&d.root, "db")["Status"]["MountRefs"].clone();
    d.stop();
    ceph.stop();

    let d = TestDaemon::start_at(&d.root);
    let local = inspect(&d.root, "local");
    assert_eq!(local["Status"]["Mounted"], true, "{local}");
    write_durably(
        &PathBuf::from(local["Mountpoint"].as_str().unwrap()).join("f"),
        b"the local volume works while the cluster is down",
    );
    let db = inspect(&d.root, "db");
    assert_eq!(db["Status"]["Mounted"], false, "{db}");
    assert_eq!(db["Status"]["MountRefs"], refs, "{db}");
    assert!(!db["Status"]["MountPending"].is_null(), "{db}");
    ls_answers(&d.root);

    ceph.restart();
    wait_until("db mounted once the cluster is back", || {
        inspect(&d.root, "db")["Status"]["Mounted"] == true
    });
    let db = inspect(&d.root, "db");
    assert_eq!(db["Status"]["MountRefs"], refs, "{db}");
    assert!(db["Status"]["MountPending"].is_null(), "{db}");
    assert_eq!(std::fs::read(mp.join("kept")).unwrap(), data);
    assert_eq!(std::fs::read(target.join("kept")).unwrap(), data);
    d.cli_ok(["unmount", "db", "--target", &target_arg]);
    d.cli_ok(["unmount", "db"]);
    d.fsck_clean("db");
    drop(ceph);
}
