//! Volumes outlive the daemon: across SIGTERM + start (a planned restart), SIGKILL + start (a
//! crash) and a stop for good, what processes using a volume see (docs/architecture.md,
//! "Restarts"). Without Docker: the volume is used through `fvol mount`'s mountpoint and bind
//! target.
//!
//! Local and tmpfs volumes here (a tmpfs volume's data lives in shared memory the keeper
//! holds, docs/tmpfs.md "Lifetime"); rbd volumes in rbd_volumes.rs (`kill9_durability`,
//! `writes_through_restarts`, on a real cluster), and the image filesystem's side of a
//! restart in image_crash.rs.
use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fuse_tests::daemon::{TestDaemon, TestRoot, du_bytes, fuse_or_skip, is_mountpoint};
use serde_json::Value;

const MIB: usize = 1 << 20;
/// How long a condition that must come true may take (generous: a loaded machine).
const PATIENCE: Duration = Duration::from_secs(60);

#[derive(Clone, Copy, Debug)]
enum Restart {
    /// SIGTERM, then a new daemon.
    Planned,
    /// SIGKILL, then a new daemon.
    Crash,
    /// SIGTERM, then the daemon of another binary (a copy of this one elsewhere on disk).
    Upgrade,
}

/// Stops `d` as `how` says and starts a new daemon on `root` in its place.
fn restart(d: &mut TestDaemon, root: &TestRoot, how: Restart) {
    match how {
        Restart::Planned | Restart::Upgrade => {
            let exit = d.terminate();
            assert!(exit.success(), "daemon exit {exit}\n{}", root.log());
        }
        Restart::Crash => {
            d.kill9();
        }
    }
    *d = match how {
        Restart::Upgrade => {
            let upgraded = root.scratch().join("fvol-upgraded");
            if !upgraded.exists() {
                std::fs::copy(fuse_tests::daemon::fvol_bin(), &upgraded).unwrap();
            }
            TestDaemon::start_binary(root, &upgraded, ["--no-plugin"])
        }
        _ => TestDaemon::start_at(root),
    };
}

/// The drivers whose volumes outlive the daemon without a cluster (rbd: rbd_volumes.rs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Driver {
    Local,
    Tmpfs,
}

impl Driver {
    /// Creates volume `name` of this driver, with `options` (`-o`) if any.
    fn create(self, d: &TestDaemon, name: &str, options: Option<&str>) {
        let mut args = vec!["create", name];
        if self == Driver::Tmpfs {
            args.extend(["-d", "tmpfs"]);
        }
        if let Some(o) = options {
            args.extend(["-o", o]);
        }
        d.cli_ok(args);
    }

    /// Where `du` counts what volume `name` holds: the local driver's backing directory; a
    /// tmpfs volume's own mountpoint `mp` (its pages and metadata show in `st_blocks`).
    fn counted_at(self, d: &TestDaemon, name: &str, mp: &Path) -> PathBuf {
        match self {
            Driver::Local => d.root().join("volumes").join(name).join("data"),
            Driver::Tmpfs => mp.to_path_buf(),
        }
    }
}

/// The memory volume `vol`'s data memfd holds, as process `pid` sees it.
fn memfd_bytes(pid: u32, vol: &str) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    let want = format!("/memfd:fvol-data-{vol} ");
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?;
    let fd = fds.filter_map(|e| e.ok()).find(|e| {
        std::fs::read_link(e.path()).is_ok_and(|l| l.to_string_lossy().starts_with(&want))
    })?;
    Some(std::fs::metadata(fd.path()).ok()?.blocks() * 512)
}

/// How many memfds of volume `vol`'s data process `pid` holds.
fn data_memfds(pid: u32, vol: &str) -> usize {
    let want = format!("memfd:fvol-data-{vol} ");
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|fds| {
            fds.filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
                .filter(|l| l.to_string_lossy().starts_with(&format!("/{want}")))
                .count()
        })
        .unwrap_or(0)
}

fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !cond() {
        assert!(Instant::now() < deadline, "still waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn status(d: &TestDaemon, name: &str) -> Value {
    d.inspect(name)["Status"].clone()
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[3] ^ seed)
        .collect()
}

/// The record writer: appends fsynced, checksummed records to `file` until `stop` exists.
fn start_writer(file: &Path, stop: &Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_record-writer"))
        .arg(file)
        .arg(stop)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("record-writer")
}

fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).map_or(0, |m| m.len())
}

/// Waits until the writer has written past its current end again; fails at once with what
/// it said if it ended.
fn wait_for_progress(writer: &mut Child, file: &Path) {
    let from = file_len(file);
    wait_until(&format!("the writer to go on past {from} bytes"), || {
        if let Some(status) = writer.try_wait().unwrap() {
            let mut err = String::new();
            if let Some(stderr) = writer.stderr.as_mut() {
                let _ = stderr.read_to_string(&mut err);
            }
            panic!("the writer ended ({status}): {err}");
        }
        file_len(file) > from
    });
}

#[test]
fn a_writer_sees_no_error_across_restarts_and_crashes() {
    if !fuse_or_skip("a_writer_sees_no_error_across_restarts_and_crashes") {
        return;
    }
    use Restart::*;
    let restarts = [Crash, Planned, Crash, Planned, Crash, Planned];
    writer_across_restarts(Driver::Local, &restarts);
}

/// A tmpfs volume's data stays with it (in the keeper's shared memory) across 5 planned
/// restarts, 5 crashes and an upgrade; every fsynced record is intact afterwards.
#[test]
fn tmpfs_a_writer_sees_no_error_across_restarts_crashes_and_an_upgrade() {
    if !fuse_or_skip("tmpfs_a_writer_sees_no_error_across_restarts_crashes_and_an_upgrade") {
        return;
    }
    use Restart::*;
    let restarts = [
        Planned, Crash, Planned, Crash, Planned, Crash, Planned, Crash, Planned, Crash, Upgrade,
    ];
    writer_across_restarts(Driver::Tmpfs, &restarts);
}

fn writer_across_restarts(driver: Driver, restarts: &[Restart]) {
    let root = TestRoot::new();
    let mut d = TestDaemon::start_at(&root);
    driver.create(&d, "vol", Some("size=256M"));
    let target = root.scratch_dir("target");
    d.cli_ok(["mount", "vol", "--target", target.to_str().unwrap()]);
    let records = target.join("records");
    let stop = root.scratch().join("stop");
    let mut writer = start_writer(&records, &stop);
    wait_for_progress(&mut writer, &records);
    for &how in restarts {
        restart(&mut d, &root, how);
        wait_for_progress(&mut writer, &records);
    }
    std::fs::write(&stop, b"").unwrap();
    let out = writer.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the writer failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        root.log()
    );
    let written: u64 = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .expect("the writer's report");
    let check = Command::new(env!("CARGO_BIN_EXE_record-writer"))
        .arg("--check")
        .arg(&records)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    let intact: u64 = String::from_utf8_lossy(&check.stdout)
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap();
    assert_eq!(intact, written, "every fsynced record is there, intact");
    // The quota stayed exact through it all.
    let data = driver.counted_at(&d, "vol", &target);
    assert_eq!(
        status(&d, "vol")["UsedBytes"].as_u64().unwrap(),
        du_bytes(&data)
    );
    assert!(is_mountpoint(&target));
    d.cli_ok(["unmount", "vol", "--target", target.to_str().unwrap()]);
    assert!(!is_mountpoint(&target));
}

/// Requests a daemon had carried out (or was carrying out) but not answered when it died are
/// answered by the next one, with the result the first run had.
#[test]
fn requests_in_flight_at_a_crash_get_their_answer_from_the_next_daemon() {
    if !fuse_or_skip("requests_in_flight_at_a_crash_get_their_answer_from_the_next_daemon") {
        return;
    }
    requests_in_flight(Driver::Local);
}

#[test]
fn tmpfs_requests_in_flight_at_a_crash_get_their_answer_from_the_next_daemon() {
    if !fuse_or_skip("tmpfs_requests_in_flight_at_a_crash_get_their_answer_from_the_next_daemon") {
        return;
    }
    requests_in_flight(Driver::Tmpfs);
}

fn requests_in_flight(driver: Driver) {
    // (stall point, shell command run in the volume, what must hold afterwards)
    type Check = fn(&Path) -> bool;
    let cases: [(&str, &str, Check); 6] = [
        ("before-read", "cat before", |_| true),
        ("after-mkdir", "mkdir made", |mp| mp.join("made").is_dir()),
        // noclobber: an exclusive create.
        ("after-create", "set -C; echo new > fresh", |mp| {
            std::fs::read(mp.join("fresh")).unwrap() == b"new\n"
        }),
        ("after-unlink", "rm before", |mp| {
            !mp.join("before").exists()
        }),
        ("after-rename", "mv before after", |mp| {
            !mp.join("before").exists() && mp.join("after").exists()
        }),
        ("after-symlink", "ln -s somewhere link", |mp| {
            std::fs::read_link(mp.join("link")).unwrap() == Path::new("somewhere")
        }),
    ];
    for (point, command, holds) in cases {
        let root = TestRoot::new();
        let mut d = TestDaemon::start_at(&root);
        driver.create(&d, "vol", Some("size=64M"));
        let mp = d.mount("vol");
        std::fs::write(mp.join("before"), b"contents").unwrap();
        // The daemon that stalls at `point` takes over (after a planned restart), so that
        // only the command below reaches it.
        assert!(d.terminate().success());
        d = TestDaemon::start_with_env(&root, &[("FVOL_FAULT", point)]);
        let child = Command::new("sh")
            .arg("-c")
            .arg(command)
            .current_dir(&mp)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        wait_until(&format!("the daemon to reach {point}"), || {
            root.log().contains(&format!("FVOL_FAULT={point}"))
        });
        d.kill9();
        d = TestDaemon::start_at(&root);
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{point}: `{command}` failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            root.log()
        );
        if point == "before-read" {
            assert_eq!(out.stdout, b"contents");
        }
        assert!(holds(&mp), "{point}: `{command}` did not do its work");
        assert!(
            root.log().contains("resuming its connection"),
            "{}",
            root.log()
        );
        d.cli_ok(["unmount", "vol"]);
    }
}

/// Open files, an unlinked open file, a shared mapping, an open directory being read and a
/// directory descriptor all stay valid across each kind of restart; on a volume with a byte
/// limit (every read and write served by the handler) and on one without (kernel
/// passthrough: the successor must reuse the connection's backing ids).
#[test]
fn open_files_mappings_and_directories_survive_restarts() {
    if !fuse_or_skip("open_files_mappings_and_directories_survive_restarts") {
        return;
    }
    open_files_across(
        Driver::Local,
        &[
            (Restart::Planned, true),
            (Restart::Crash, true),
            (Restart::Planned, false),
            (Restart::Crash, false),
        ],
    );
}

/// The same on tmpfs (always with a byte limit), where the files' data itself must carry
/// over, and an upgrade.
#[test]
fn tmpfs_open_files_mappings_and_directories_survive_restarts() {
    if !fuse_or_skip("tmpfs_open_files_mappings_and_directories_survive_restarts") {
        return;
    }
    open_files_across(
        Driver::Tmpfs,
        &[
            (Restart::Planned, true),
            (Restart::Crash, true),
            (Restart::Upgrade, true),
        ],
    );
}

fn open_files_across(driver: Driver, cases: &[(Restart, bool)]) {
    for &(how, limit) in cases {
        let root = TestRoot::new();
        let mut d = TestDaemon::start_at(&root);
        match limit {
            true => driver.create(&d, "vol", Some("size=128M")),
            false => driver.create(&d, "vol", None),
        };
        let mp = d.mount("vol");
        // Close one file first, so the kernel knows it need not FLUSH (see
        // a_connection_not_taken_over_ends_and_the_usage_is_measured_again).
        std::fs::write(mp.join("closed"), b"").unwrap();

        // An open file, and one open without a name.
        let mut open = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(mp.join("open"))
            .unwrap();
        open.write_all(&pattern(MIB, 1)).unwrap();
        let nameless = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(mp.join("nameless"))
            .unwrap();
        nameless.write_all_at(&pattern(3 * MIB, 2), 0).unwrap();
        std::fs::remove_file(mp.join("nameless")).unwrap();
        let with_nameless = status(&d, "vol")["UsedBytes"].as_u64().unwrap();

        // A directory being read, in several getdents calls.
        std::fs::create_dir(mp.join("many")).unwrap();
        for i in 0..5000 {
            File::create(mp.join(format!("many/entry-{i:05}"))).unwrap();
        }
        let mut listing = std::fs::read_dir(mp.join("many")).unwrap();
        let mut seen: Vec<String> = (&mut listing)
            .take(10)
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();

        // A directory held open, used by name after the restart.
        std::fs::create_dir(mp.join("held")).unwrap();
        let held = File::open(mp.join("held")).unwrap();

        // A shared mapping, written before and after the restart by one process.
        let go = root.scratch().join("go");
        let mapper = Command::new("python3")
            .arg("-c")
            .arg(MAPPER)
            .arg(mp.join("mapped"))
            .arg(&go)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        wait_until("the mapping to be written", || {
            std::fs::read(mp.join("mapped")).is_ok_and(|b| b.starts_with(b"before"))
        });

        restart(&mut d, &root, how);

        std::fs::write(&go, b"").unwrap();
        let out = mapper.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{how:?}: the mapping: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mapped = std::fs::read(mp.join("mapped")).unwrap();
        assert_eq!(&mapped[..6], b"before", "{how:?}");
        assert_eq!(&mapped[4096..4101], b"after", "{how:?}");

        seen.extend(listing.map(|e| e.unwrap().file_name().into_string().unwrap()));
        seen.sort();
        let expected: Vec<String> = (0..5000).map(|i| format!("entry-{i:05}")).collect();
        assert_eq!(
            seen, expected,
            "{how:?}: the directory read across the restart"
        );

        // A second open of the same file (with passthrough: the inode's backing id).
        let again = File::open(mp.join("open")).unwrap();
        let mut first = vec![0u8; 16];
        again.read_exact_at(&mut first, 0).unwrap();
        assert_eq!(first, pattern(MIB, 1)[..16], "{how:?}");
        drop(again);
        open.write_all(&pattern(MIB, 3)).unwrap();
        open.sync_all().unwrap();
        let mut all = Vec::new();
        File::open(mp.join("open"))
            .unwrap()
            .read_to_end(&mut all)
            .unwrap();
        assert_eq!(all[..MIB], pattern(MIB, 1)[..], "{how:?} {limit}");
        assert_eq!(all[MIB..], pattern(MIB, 3)[..], "{how:?} {limit}");

        let mut back = vec![0u8; 3 * MIB];
        nameless.read_exact_at(&mut back, 0).unwrap();
        assert!(back == pattern(3 * MIB, 2), "{how:?}: the unlinked file");
        nameless.write_all_at(b"more", 3 * MIB as u64).unwrap();
        nameless.sync_all().unwrap();

        let fd = nix::fcntl::openat(
            &held,
            "inside",
            nix::fcntl::OFlag::O_CREAT | nix::fcntl::OFlag::O_WRONLY,
            nix::sys::stat::Mode::from_bits_truncate(0o644),
        )
        .unwrap();
        drop(fd);
        assert!(mp.join("held/inside").exists(), "{how:?}");

        // The unlinked file still counts until its last close, then its space comes back.
        let data = driver.counted_at(&d, "vol", &mp);
        let counted = status(&d, "vol")["UsedBytes"].as_u64().unwrap();
        assert!(
            counted >= with_nameless,
            "{how:?}: {counted} < {with_nameless}"
        );
        drop(nameless);
        wait_until("the unlinked file's space to come back", || {
            status(&d, "vol")["UsedBytes"].as_u64().unwrap() == du_bytes(&data)
        });
        drop(held);
        drop(open);
        d.cli_ok(["unmount", "vol"]);
    }
}

/// A process that maps ARGV[1] shared, writes "before" through the mapping, waits for the
/// file ARGV[2], writes "after" at 4096, syncs and unmaps.
const MAPPER: &str = r#"
import mmap, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o644)
os.ftruncate(fd, 8192)
m = mmap.mmap(fd, 8192)
m[0:6] = b'before'
m.flush()
while not os.path.exists(sys.argv[2]):
    time.sleep(0.02)
assert m[0:6] == b'before'
m[4096:4101] = b'after'
m.flush()
m.close()
os.close(fd)
"#;

/// What must still end: a volume unmounted by its last reference, and every volume at a stop
/// for good (`fvol daemon --stop`); the keeper then holds nothing and exits.
#[test]
fn unmounts_and_a_stop_for_good_still_end_volumes() {
    if !fuse_or_skip("unmounts_and_a_stop_for_good_still_end_volumes") {
        return;
    }
    stop_for_good(Driver::Local);
}

/// On tmpfs a stop for good also drops the data (the next start mounts the volumes empty),
/// and a volume unmounted by its last reference ends with its data: the keeper and the
/// daemon let go of its memory.
#[test]
fn tmpfs_unmounts_and_a_stop_for_good_still_end_volumes() {
    if !fuse_or_skip("tmpfs_unmounts_and_a_stop_for_good_still_end_volumes") {
        return;
    }
    stop_for_good(Driver::Tmpfs);
}

fn stop_for_good(driver: Driver) {
    let root = TestRoot::new();
    let mut d = TestDaemon::start_at(&root);
    for name in ["va", "vb", "gone"] {
        driver.create(&d, name, Some("size=64M"));
    }
    let target = root.scratch_dir("t");
    let (a, b, gone) = (d.mount("va"), d.mount("vb"), d.mount("gone"));
    d.cli_ok(["mount", "vb", "--target", target.to_str().unwrap()]);
    std::fs::write(a.join("f"), b"a").unwrap();
    std::fs::write(target.join("f"), b"b").unwrap();
    std::fs::write(gone.join("f"), vec![1u8; 4 << 20]).unwrap();
    if driver == Driver::Tmpfs {
        let keeper = root.keeper_pid().expect("a keeper") as u32;
        assert_eq!(data_memfds(keeper, "gone"), 1, "the keeper holds the data");
        assert_eq!(data_memfds(d.pid().unwrap(), "gone"), 1);
    }
    d.cli_ok(["unmount", "gone"]);
    assert!(!is_mountpoint(&gone));
    if driver == Driver::Tmpfs {
        // Its memory is returned: nobody holds its data any more.
        let keeper = root.keeper_pid().expect("a keeper") as u32;
        wait_until("the keeper to let go of the data", || {
            data_memfds(keeper, "gone") == 0
        });
        wait_until("the daemon to let go of the data", || {
            data_memfds(d.pid().unwrap(), "gone") == 0
        });
        assert_eq!(data_memfds(keeper, "va"), 1);
        let again = d.mount("gone");
        assert!(!again.join("f").exists(), "the data came back");
        d.cli_ok(["unmount", "gone"]);
    }

    // Across a crash, only the referenced volumes come back.
    restart(&mut d, &root, Restart::Crash);
    assert!(!is_mountpoint(&gone), "an unmounted volume came back");
    assert_eq!(std::fs::read(a.join("f")).unwrap(), b"a");

    let exit = d.stop();
    assert!(exit.success(), "{exit}\n{}", root.log());
    for mp in [&a, &b, &target] {
        assert!(!is_mountpoint(mp), "{} still mounted", mp.display());
    }
    root.wait_for_no_keeper();

    // References stay: the next start mounts the volumes again, with their data (tmpfs:
    // empty, its data ended with the stop).
    let d = TestDaemon::start_at(&root);
    assert!(is_mountpoint(&a) && is_mountpoint(&target));
    match driver {
        Driver::Local => assert_eq!(std::fs::read(target.join("f")).unwrap(), b"b"),
        Driver::Tmpfs => assert!(!target.join("f").exists() && !a.join("f").exists()),
    }
    drop(d);
}

/// A crashed daemon's kept mounts, and its keeper, are cleaned up by a test's teardown (the
/// last unmount ends the connection even with no daemon).
#[test]
fn kept_mounts_of_a_killed_daemon_end_with_their_last_unmount() {
    if !fuse_or_skip("kept_mounts_of_a_killed_daemon_end_with_their_last_unmount") {
        return;
    }
    let root = TestRoot::new();
    let base: PathBuf = root.base().to_path_buf();
    {
        let mut d = TestDaemon::start_at(&root);
        d.cli_ok(["create", "vol"]);
        let mp = d.mount("vol");
        std::fs::write(mp.join("f"), b"f").unwrap();
        d.kill9();
        assert!(is_mountpoint(&mp), "the keeper holds the mount");
        assert!(root.keeper_pid().is_some());
        fuse_tests::daemon::detach_mounts_under(&base);
    }
    root.wait_for_no_keeper();
    drop(root);
    assert!(!base.exists(), "{} left behind", base.display());
}

/// Context switches of process `pid` so far (voluntary and not).
fn context_switches(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .filter(|l| l.contains("ctxt_switches:"))
        .map(|l| l.split_whitespace().last().unwrap().parse::<u64>().unwrap())
        .sum()
}

/// The keeper holds every connection but must never wait on one: a poller of a FUSE
/// descriptor is woken by every request queued, so a keeper that watched its connections in
/// its blocking poll took a wake-up per request of every volume (half of a small write's speed
/// on two cores). It looks at them without waiting instead, after each wake-up of its loop.
#[test]
fn requests_do_not_wake_the_keeper() {
    if !fuse_or_skip("requests_do_not_wake_the_keeper") {
        return;
    }
    let root = TestRoot::new();
    let d = TestDaemon::start_at(&root);
    d.cli_ok(["create", "vol"]);
    let mp = d.mount("vol");
    let keeper = root.keeper_pid().expect("a keeper") as u32;
    const FILES: u64 = 2000;
    let before = context_switches(keeper);
    for i in 0..FILES {
        let f = mp.join(format!("f{i}"));
        std::fs::write(&f, b"x").unwrap();
        std::fs::remove_file(&f).unwrap();
    }
    let woken = context_switches(keeper) - before;
    // Each round trip is at least four requests (lookup, create, write, release, unlink...).
    assert!(
        woken < FILES / 10,
        "the keeper was woken {woken} times during {FILES} creates and unlinks"
    );
}

/// A workload for the quota test: appends, truncates, unlinks (some of files still open) in
/// DIR until STOP exists, writing its operation count to OPS every 10 operations; `ENOENT` and
/// `ENOSPC` are expected (the names collide, the volume fills), any other error fails it. At
/// the end it prints how many `ENOSPC` it met. Files stay under 4 appends of 64 KiB (a full
/// one is truncated), so that ext4 keeps their extents in the inode: it allocates extent-tree
/// blocks at writeback, after the handler counted the file, which `du` sees before fvol does
/// (docs/architecture.md, "Host metadata"); that lag is another matter than restarts.
const CHURN: &str = r#"
import errno, os, random, sys
d, stop, ops_file, seed = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
r = random.Random(seed)
os.makedirs(d, exist_ok=True)
ops = full = 0
while not os.path.exists(stop):
    name = os.path.join(d, "f%d" % r.randrange(8))
    act = r.random()
    try:
        if act < 0.85:
            fd = os.open(name, os.O_WRONLY | os.O_CREAT, 0o644)
            try:
                size = os.fstat(fd).st_size
                if size >= 4 * 65536:
                    os.ftruncate(fd, 0)
                else:
                    os.pwrite(fd, os.urandom(65536), size)
                    if r.random() < 0.3:
                        os.fsync(fd)
            finally:
                os.close(fd)
        elif act < 0.95:
            os.unlink(name)
        else:
            fd = os.open(name, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                os.unlink(name)
                os.pwrite(fd, os.urandom(65536), 0)
            finally:
                os.close(fd)
    except OSError as e:
        if e.errno not in (errno.ENOENT, errno.ENOSPC):
            raise
        full += e.errno == errno.ENOSPC
    ops += 1
    if ops % 10 == 0:
        with open(ops_file, "w") as f:
            f.write(str(ops))
print(full)
"#;

/// The quota stays exact through crashes under concurrent writers: after 10 SIGKILL + start
/// cycles UsedBytes equals what `du` counts, and neither ever passed the limit meanwhile.
#[test]
fn quota_stays_exact_across_crashes_under_concurrent_writers() {
    if !fuse_or_skip("quota_stays_exact_across_crashes_under_concurrent_writers") {
        return;
    }
    quota_across_crashes(Driver::Local);
}

/// The same on tmpfs: the usage a successor derives from the shared memory it takes over
/// (pages, names, nodes) is what the volume holds, whatever a crash cut short.
#[test]
fn tmpfs_quota_stays_exact_across_crashes_under_concurrent_writers() {
    if !fuse_or_skip("tmpfs_quota_stays_exact_across_crashes_under_concurrent_writers") {
        return;
    }
    quota_across_crashes(Driver::Tmpfs);
}

fn quota_across_crashes(driver: Driver) {
    const LIMIT: u64 = 4 << 20;
    let root = TestRoot::new();
    let mut d = TestDaemon::start_at(&root);
    driver.create(&d, "vol", Some("size=4M"));
    let mp = d.mount("vol");
    let data = driver.counted_at(&d, "vol", &mp);
    let stop = root.scratch().join("stop");
    let ops_of = |i: usize| root.scratch().join(format!("ops-{i}"));
    let mut writers: Vec<Child> = (0..4)
        .map(|i| {
            Command::new("python3")
                .arg("-c")
                .arg(CHURN)
                .arg(mp.join(format!("w{i}")))
                .arg(&stop)
                .arg(ops_of(i))
                .arg(i.to_string())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let total_ops = || -> u64 {
        (0..4)
            .map(|i| {
                std::fs::read_to_string(ops_of(i))
                    .ok()
                    .and_then(|s| s.parse::<u64>().ok())
                    .unwrap_or(0)
            })
            .sum()
    };
    // What the host holds, sampled all along: never past the limit. Local: `du` of the
    // backing directory. tmpfs: the memory the volume's data memfd holds (the keeper's copy
    // of it, which lives across the crashes): `du` through the mount is no snapshot (it walks
    // the files while the writers truncate, unlink and write them, so it can add a file's
    // old size to another's new one), and it stalls in every restart.
    let keeper = root.keeper_pid().expect("a keeper");
    let sampling = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let sampler = {
        let (data, sampling) = (data.clone(), sampling.clone());
        std::thread::spawn(move || {
            let mut most = 0;
            while sampling.load(std::sync::atomic::Ordering::Relaxed) {
                let bytes = match driver {
                    Driver::Local => {
                        let du = Command::new("du").arg("-sB1").arg(&data).output();
                        du.ok().and_then(|o| {
                            let text = String::from_utf8_lossy(&o.stdout).into_owned();
                            text.split_whitespace().next()?.parse::<u64>().ok()
                        })
                    }
                    Driver::Tmpfs => memfd_bytes(keeper as u32, "vol"),
                };
                most = most.max(bytes.unwrap_or(0));
                std::thread::sleep(Duration::from_millis(50));
            }
            most
        })
    };
    for _ in 0..10 {
        let before = total_ops();
        wait_until("the writers to make progress", || {
            for (i, w) in writers.iter_mut().enumerate() {
                if let Some(status) = w.try_wait().unwrap() {
                    let mut err = String::new();
                    if let Some(stderr) = w.stderr.as_mut() {
                        let _ = stderr.read_to_string(&mut err);
                    }
                    panic!("writer {i} ended ({status}): {err}");
                }
            }
            total_ops() > before + 200
        });
        restart(&mut d, &root, Restart::Crash);
        let used = status(&d, "vol")["UsedBytes"].as_u64().unwrap();
        assert!(used <= LIMIT, "UsedBytes {used} past the limit {LIMIT}");
        eprintln!(
            "after a crash: UsedBytes {used}, {} operations",
            total_ops()
        );
    }
    std::fs::write(&stop, b"").unwrap();
    let mut refused = 0;
    for (i, w) in writers.into_iter().enumerate() {
        let out = w.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "writer {i}: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            root.log()
        );
        refused += String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse::<u64>()
            .unwrap();
    }
    assert!(refused > 0, "the writers never filled the volume");
    sampling.store(false, std::sync::atomic::Ordering::Relaxed);
    let most = sampler.join().unwrap();
    assert!(
        most <= LIMIT,
        "the host held {most} bytes, past the limit {LIMIT}"
    );
    assert!(most > 0, "nothing measured");
    wait_until("UsedBytes to equal du", || {
        status(&d, "vol")["UsedBytes"].as_u64().unwrap() == du_bytes(&data)
    });
    let measured = match driver {
        Driver::Local => "rescanning usage of volume vol",
        Driver::Tmpfs => "tmpfs: took over",
    };
    assert!(root.log().matches(measured).count() >= 10, "{}", root.log());
}

/// An upgrade: the next daemon is another binary (here a copy of this one, elsewhere on disk),
/// and serves the same mounts and open files.
#[test]
fn an_upgrade_to_another_binary_serves_the_same_mounts() {
    if !fuse_or_skip("an_upgrade_to_another_binary_serves_the_same_mounts") {
        return;
    }
    upgrade(Driver::Local);
}

#[test]
fn tmpfs_an_upgrade_to_another_binary_serves_the_same_mounts() {
    if !fuse_or_skip("tmpfs_an_upgrade_to_another_binary_serves_the_same_mounts") {
        return;
    }
    upgrade(Driver::Tmpfs);
}

fn upgrade(driver: Driver) {
    let root = TestRoot::new();
    let mut d = TestDaemon::start_at(&root);
    driver.create(&d, "vol", Some("size=64M"));
    let mp = d.mount("vol");
    // A close first, so the kernel knows it need not FLUSH: this process holds `open` when
    // it starts the next daemon, whose exec closes it (see
    // a_connection_not_taken_over_ends_and_the_usage_is_measured_again).
    std::fs::write(mp.join("closed"), b"").unwrap();
    let mut open = File::create(mp.join("open")).unwrap();
    open.write_all(b"old binary\n").unwrap();
    let upgraded = root.scratch().join("fvol-upgraded");
    std::fs::copy(fuse_tests::daemon::fvol_bin(), &upgraded).unwrap();
    assert!(d.terminate().success());
    d = TestDaemon::start_binary(&root, &upgraded, ["--no-plugin"]);
    open.write_all(b"new binary\n").unwrap();
    open.sync_all().unwrap();
    assert_eq!(
        std::fs::read(mp.join("open")).unwrap(),
        b"old binary\nnew binary\n"
    );
    assert!(
        root.log().contains("resuming its connection"),
        "{}",
        root.log()
    );
    drop(open);
    let exit = d.stop();
    assert!(exit.success());
    assert!(!is_mountpoint(&mp));
}

/// The daemon tells its service manager `READY=1` once its volumes are served and its sockets
/// listen (systemd's `Type=notify`).
#[test]
fn the_daemon_tells_its_service_manager_when_it_is_ready() {
    if !fuse_or_skip("the_daemon_tells_its_service_manager_when_it_is_ready") {
        return;
    }
    let root = TestRoot::new();
    let path = root.scratch().join("notify.sock");
    let socket = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
    let mut d = TestDaemon::start_with_env(&root, &[("NOTIFY_SOCKET", path.to_str().unwrap())]);
    socket.set_read_timeout(Some(PATIENCE)).unwrap();
    let mut buf = [0u8; 256];
    let n = socket.recv(&mut buf).unwrap();
    let message = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(message.starts_with("READY=1\n"), "{message}");
    assert!(
        message.contains(&format!("MAINPID={}", d.pid().unwrap())),
        "{message}"
    );
    assert!(d.terminate().success());
    let n = socket.recv(&mut buf).unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("STOPPING=1"));
}

/// Without its keeper (killed while the daemon ran), a stop unmounts the volumes as before,
/// rather than leave mounts nobody holds; the next start mounts them again.
#[test]
fn without_its_keeper_a_stop_unmounts_as_before() {
    if !fuse_or_skip("without_its_keeper_a_stop_unmounts_as_before") {
        return;
    }
    let root = TestRoot::new();
    let mut d = TestDaemon::start_at(&root);
    d.cli_ok(["create", "vol"]);
    let mp = d.mount("vol");
    std::fs::write(mp.join("f"), b"data").unwrap();
    root.kill_keeper();
    assert!(d.terminate().success());
    assert!(!is_mountpoint(&mp), "a mount left with nobody to hold it");
    let d = TestDaemon::start_at(&root);
    assert_eq!(std::fs::read(mp.join("f")).unwrap(), b"data");
    drop(d);
}

/// A kept connection the next daemon cannot take over (its mount was detached meanwhile) ends;
/// the usage handed over counted what ended with it (an open file without a name), so the
/// volume is measured again.
#[test]
fn a_connection_not_taken_over_ends_and_the_usage_is_measured_again() {
    if !fuse_or_skip("a_connection_not_taken_over_ends_and_the_usage_is_measured_again") {
        return;
    }
    let root = TestRoot::new();
    let mut d = TestDaemon::start_at(&root);
    d.cli_ok(["create", "vol", "-o", "size=64M"]);
    let mp = d.mount("vol");
    // A close on the volume first: until its FLUSH is answered (ENOSYS: never again), every
    // close sends one, and with no daemon it waits, such as the close of `nameless` at the
    // exec of the next daemon this process starts.
    std::fs::write(mp.join("closed"), b"").unwrap();
    let nameless = File::create(mp.join("gone")).unwrap();
    nameless.write_all_at(&pattern(4 * MIB, 9), 0).unwrap();
    std::fs::remove_file(mp.join("gone")).unwrap();
    assert!(d.terminate().success());
    // Someone detaches the volume's mount while no daemon runs.
    nix::mount::umount2(&mp, nix::mount::MntFlags::MNT_DETACH).unwrap();
    let d = TestDaemon::start_at(&root);
    assert!(is_mountpoint(&mp));
    let data = d.root().join("volumes/vol/data");
    assert_eq!(
        status(&d, "vol")["UsedBytes"].as_u64().unwrap(),
        du_bytes(&data),
        "{}",
        root.log()
    );
    drop(nameless);
}

/// A daemon killed (SIGKILL) while a tmpfs snapshot is being copied out, after the volume
/// overwrote and dropped frozen pages (which the snapshot then held): the successor has the
/// volume as written, its usage as before the kill, and the memory of the pages the snapshot
/// held given back (the data memfd holds the files' pages, no more).
#[test]
fn tmpfs_snapshot_cut_short_by_a_crash() {
    if !fuse_or_skip("tmpfs_snapshot_cut_short_by_a_crash") {
        return;
    }
    let root = TestRoot::new();
    let mut d = TestDaemon::start_at(&root);
    Driver::Tmpfs.create(&d, "vol", Some("size=512M"));
    let mp = d.mount("vol");
    let fill = |seed: u8, len: usize| -> Vec<u8> {
        (0..len)
            .map(|i| (i / 4096) as u8 ^ (i as u8) ^ seed)
            .collect()
    };
    std::fs::write(mp.join("a-big"), fill(1, 128 * MIB)).unwrap();
    std::fs::write(mp.join("b-over"), fill(2, 8 * MIB)).unwrap();
    let mut snap = root
        .command(["snapshot", "create", "vol", "s1"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let copying = d.root().join("snapshots/vol/s1.partial/a-big");
    wait_until("the copy-out", || {
        copying.exists() || snap.try_wait().unwrap().is_some()
    });
    let new = fill(3, 8 * MIB);
    File::options()
        .write(true)
        .open(mp.join("b-over"))
        .unwrap()
        .write_all_at(&new, 0)
        .unwrap();
    File::options()
        .write(true)
        .open(mp.join("a-big"))
        .unwrap()
        .set_len(32 * MIB as u64)
        .unwrap();
    let during = snap.try_wait().unwrap().is_none();
    let used = status(&d, "vol")["UsedBytes"].as_u64().unwrap();
    d.kill9();
    let _ = snap.wait();
    eprintln!("killed while the snapshot was copied out: {during}");

    let d = TestDaemon::start_at(&root);
    assert!(std::fs::read(mp.join("b-over")).unwrap() == new);
    assert!(std::fs::read(mp.join("a-big")).unwrap() == fill(1, 128 * MIB)[..32 * MIB]);
    assert_eq!(status(&d, "vol")["UsedBytes"].as_u64().unwrap(), used);
    let keeper = root.keeper_pid().expect("a keeper") as u32;
    assert_eq!(
        memfd_bytes(keeper, "vol"),
        Some(40 * MIB as u64),
        "the data memfd holds the files' 40 MiB of pages only"
    );
    assert!(!d.root().join("snapshots/vol/s1.json").exists());
    d.cli_ok(["unmount", "vol"]);
}
