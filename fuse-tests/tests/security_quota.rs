//! Attacks on the byte and inode quota (issue 11, findings 5 and 6), run as the attacker would:
//! root on the volume, or an unprivileged host user (`setpriv --reuid=65534`) on a volume whose
//! root is world-writable, on every backend.
//!
//! Finding 5: an inode that lost its last name, reached again (O_PATH and a reopen through
//! /proc, an open descriptor, a hard link, a rename over it), keeps its bytes counted for as
//! long as it exists, every write to it is admitted against the quota, and its space comes back
//! exactly once. tmpfs and image keep such an inode while the kernel knows it (the reopen
//! works, as on kernel tmpfs); the local driver gives its space back when no handle is open,
//! and from then on it is gone (the reopen gets ENOENT; see docs/architecture.md).
//!
//! Finding 6: what a tmpfs volume holds besides file data (names, inodes, xattrs, symlink
//! targets) counts against its quota, so a flood of them stops with ENOSPC while the daemon's
//! memory stays within the quota plus a fixed overhead.
use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fuse_tests::daemon::{TestDaemon, fuse_or_skip};
use fuse_tests::{Backend, TestSession};

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;

/// The attacker: makes `victim` (64 KiB), takes hold of its inode in the way `mode` names,
/// removes its last name, then writes 1 MiB at a time into the inode until a write fails or
/// `cap` bytes went in. Prints one JSON line, then keeps everything open until stdin closes.
/// If the inode cannot be reopened, the line is `{"gone": errno}`.
const ATTACKER: &str = r#"
import json, os, sys, time
mode, d, cap = sys.argv[1], sys.argv[2], int(sys.argv[3])
victim, other = os.path.join(d, "victim"), os.path.join(d, "other")
def make(path, size):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    os.write(fd, b"v" * size)
    os.close(fd)
def report(**kw):
    print(json.dumps(kw), flush=True)
    sys.stdin.read()
    sys.exit(0)
def reopen(opath):
    try:
        return os.open("/proc/self/fd/%d" % opath, os.O_RDWR)
    except OSError as e:
        report(gone=e.errno)
make(victim, 64 * 1024)
held = []
if mode == "opath_reopen":
    p = os.open(victim, os.O_PATH); held.append(p)
    os.unlink(victim)
    fd = reopen(p)
elif mode == "open_across_unlink":
    fd = os.open(victim, os.O_RDWR)
    os.unlink(victim)
elif mode == "reopen_after_last_close":
    p = os.open(victim, os.O_PATH); held.append(p)
    first = os.open(victim, os.O_RDWR)
    os.unlink(victim)
    os.close(first)
    time.sleep(0.3)  # the RELEASE of the last open handle reaches the handler
    fd = reopen(p)
elif mode == "hard_link_removed_while_open":
    os.link(victim, other)
    fd = os.open(other, os.O_RDWR)
    os.unlink(victim)
    os.unlink(other)
elif mode == "rename_over_open":
    fd = os.open(victim, os.O_RDWR)
    make(other, 8192)
    os.rename(other, victim)
elif mode == "rename_over_opath":
    p = os.open(victim, os.O_PATH); held.append(p)
    make(other, 8192)
    os.rename(other, victim)
    fd = reopen(p)
elif mode == "opath_hold":
    fd = os.open(victim, os.O_WRONLY)
    os.pwrite(fd, b"h" * cap, 0)
    os.close(fd)
    p = os.open(victim, os.O_PATH); held.append(p)
    os.unlink(victim)
    try:
        blocks = os.fstat(p).st_blocks
    except OSError as e:
        report(gone=e.errno)
    report(written=0, errno=0, nlink=0, held=blocks * 512)
else:
    sys.exit("unknown mode " + mode)
written, errno, buf = 0, 0, b"x" * (1 << 20)
while written < cap:
    try:
        n = os.pwrite(fd, buf[:cap - written], 64 * 1024 + written)
    except OSError as e:
        errno = e.errno
        break
    written += n
st = os.fstat(fd)
report(written=written, errno=errno, nlink=st.st_nlink, held=st.st_blocks * 512)
"#;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Who {
    Root,
    Nobody,
}

/// Starts the attacker as `who` on directory `dir`; it writes at most `cap` bytes.
fn attacker(who: Who, mode: &str, dir: &Path, cap: u64) -> Child {
    let mut cmd = match who {
        Who::Root => Command::new("/usr/bin/python3"),
        Who::Nobody => {
            let mut c = Command::new("setpriv");
            c.args([
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                "/usr/bin/python3",
            ]);
            c
        }
    };
    cmd.args(["-c", ATTACKER, mode])
        .arg(dir)
        .arg(cap.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 (and setpriv, util-linux)")
}

/// The attacker's report.
#[derive(Debug)]
enum Report {
    /// It wrote `written` bytes into the nameless inode until `errno` stopped it; the inode's
    /// link count and what it holds.
    Wrote {
        written: u64,
        errno: i32,
        nlink: u64,
        held: u64,
    },
    /// The nameless inode could not be reached again: the reopen (or stat) failed with this.
    Gone(i32),
}

impl Report {
    fn written(&self) -> u64 {
        match self {
            Report::Wrote { written, .. } => *written,
            Report::Gone(_) => 0,
        }
    }
}

/// Whether the nameless inode is reached again in `mode` on `backend`: the local driver gives
/// the space of a nameless inode without an open handle back at once, and the inode is then
/// gone; the other drivers keep it while the kernel knows it.
fn reachable(backend: Backend, mode: &str) -> bool {
    let reopens = matches!(
        mode,
        "opath_reopen" | "reopen_after_last_close" | "rename_over_opath" | "opath_hold"
    );
    !(reopens && matches!(backend, Backend::Local))
}

fn stderr_of(child: &mut Child) -> String {
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = std::io::Read::read_to_string(&mut e, &mut err);
    }
    let _ = child.wait();
    err
}

fn report_of(child: &mut Child, what: &str) -> Report {
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    if line.is_empty() {
        drop(child.stdin.take());
        panic!("{what}: the attacker failed: {}", stderr_of(child));
    }
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    let num = |k: &str| v[k].as_u64().unwrap_or_else(|| panic!("{what}: {line}"));
    if v.get("gone").is_some() {
        return Report::Gone(num("gone") as i32);
    }
    Report::Wrote {
        written: num("written"),
        errno: num("errno") as i32,
        nlink: num("nlink"),
        held: num("held"),
    }
}

/// Waits (generously) until `done` holds; `done` also describes the state for the message.
fn wait_for(what: &str, mut done: impl FnMut() -> (bool, String)) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (ok, state) = done();
        if ok {
            return;
        }
        assert!(Instant::now() < deadline, "{what}: {state}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits until UsedBytes is what the named files hold (`du`).
fn wait_exact(s: &TestSession, what: &str) {
    wait_for(what, || {
        let (used, named) = (s.used_bytes(), s.du());
        (used == named, format!("UsedBytes {used}, du {named}"))
    });
}

/// The most a volume holding `files` files may count: its limit, plus, on local, one block per
/// file for the extent tree a delayed-allocation host (ext4, xfs) adds at writeback, after the
/// handler admitted and counted the data (docs/architecture.md, "The bound"; a file's tree
/// needs a block past four extents, a second past ~340). Data never goes past the limit.
fn counted_bound(backend: Backend, limit: u64, files: u64) -> u64 {
    match backend {
        Backend::Local => limit + files * 4 * KIB,
        _ => limit,
    }
}

/// Tests that measure this process's memory run alone; every other test holds this shared.
static ALONE: std::sync::RwLock<()> = std::sync::RwLock::new(());

fn shared() -> std::sync::RwLockReadGuard<'static, ()> {
    ALONE.read().unwrap_or_else(|e| e.into_inner())
}

/// A session whose root the attacker may write to (and reach, as nobody).
fn session(backend: Backend, limit: u64) -> TestSession {
    let s = TestSession::with(backend, Some(limit), None);
    let open = |p: &Path, mode| std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode));
    open(s.mnt().parent().unwrap(), 0o755).unwrap();
    open(s.mnt(), 0o1777).unwrap();
    s
}

/// One attack on a fresh volume of 16 MiB holding one 1 MiB file that stays.
fn nameless_inode(backend: Backend, who: Who, mode: &str) {
    let limit = 16 * MIB;
    let s = session(backend, limit);
    std::fs::write(s.path("keep"), vec![1u8; MIB as usize]).unwrap();
    let what = format!("{backend:?} as {who:?}, {mode}");
    let mut child = attacker(who, mode, s.mnt(), 4 * limit);
    match report_of(&mut child, &what) {
        Report::Wrote {
            written,
            errno,
            nlink,
            held,
        } => {
            let used = s.used_bytes();
            // The flood was stopped at the quota: a short write, then ENOSPC.
            assert_eq!(
                errno,
                libc::ENOSPC,
                "{what}: the flood ended with errno {errno}"
            );
            assert!(
                written <= limit,
                "{what}: {} MiB went into a {} MiB volume (UsedBytes {used})",
                written / MIB,
                limit / MIB
            );
            assert_eq!(nlink, 0, "{what}: the inode still has a name");
            // What exists is counted: the named files (du) and the nameless inode.
            let named = s.du();
            assert!(
                used >= named + held && used <= counted_bound(backend, limit, 2),
                "{what}: UsedBytes {used} while named files hold {named} and the nameless inode {held}"
            );
            assert!(reachable(backend, mode), "{what}: reached again");
        }
        Report::Gone(errno) => {
            assert!(!reachable(backend, mode), "{what}: gone ({errno})");
            assert_eq!(
                errno,
                libc::ENOENT,
                "{what}: the reopen failed with {errno}"
            );
            // Nothing holds it: its space is back already.
            wait_exact(&s, &format!("{what}: usage of the gone inode"));
        }
    }
    // The attacker lets go: the space comes back exactly once, to what the names hold.
    drop(child.stdin.take());
    let status = child.wait().unwrap();
    assert!(status.success(), "{what}: attacker {status}");
    wait_exact(&s, &format!("{what}: usage after the last close"));
    assert!(
        s.used_bytes() <= 2 * MIB,
        "{what}: {} left counted",
        s.used_bytes()
    );
    // And the volume is usable again.
    let free = limit - s.used_bytes();
    std::fs::write(s.path("after"), vec![2u8; (free / 2) as usize])
        .unwrap_or_else(|e| panic!("{what}: a write after the attack: {e}"));
}

macro_rules! nameless_inode_tests {
    ($($name:ident => $backend:expr, $who:expr, $mode:expr;)*) => {$(
        #[test]
        fn $name() {
            if !fuse_or_skip(stringify!($name)) {
                return;
            }
            let _shared = shared();
            nameless_inode($backend, $who, $mode);
        }
    )*};
}

nameless_inode_tests! {
    local_opath_reopen_as_nobody => Backend::Local, Who::Nobody, "opath_reopen";
    local_opath_reopen_as_root => Backend::Local, Who::Root, "opath_reopen";
    local_open_across_unlink => Backend::Local, Who::Nobody, "open_across_unlink";
    local_reopen_after_last_close => Backend::Local, Who::Nobody, "reopen_after_last_close";
    local_hard_link_removed_while_open => Backend::Local, Who::Nobody, "hard_link_removed_while_open";
    local_rename_over_open => Backend::Local, Who::Nobody, "rename_over_open";
    local_rename_over_opath => Backend::Local, Who::Nobody, "rename_over_opath";
    tmpfs_opath_reopen_as_nobody => Backend::Tmpfs, Who::Nobody, "opath_reopen";
    tmpfs_opath_reopen_as_root => Backend::Tmpfs, Who::Root, "opath_reopen";
    tmpfs_open_across_unlink => Backend::Tmpfs, Who::Nobody, "open_across_unlink";
    tmpfs_reopen_after_last_close => Backend::Tmpfs, Who::Nobody, "reopen_after_last_close";
    tmpfs_hard_link_removed_while_open => Backend::Tmpfs, Who::Nobody, "hard_link_removed_while_open";
    tmpfs_rename_over_open => Backend::Tmpfs, Who::Nobody, "rename_over_open";
    tmpfs_rename_over_opath => Backend::Tmpfs, Who::Nobody, "rename_over_opath";
    image_opath_reopen_as_nobody => Backend::Image, Who::Nobody, "opath_reopen";
    image_opath_reopen_as_root => Backend::Image, Who::Root, "opath_reopen";
    image_open_across_unlink => Backend::Image, Who::Nobody, "open_across_unlink";
    image_reopen_after_last_close => Backend::Image, Who::Nobody, "reopen_after_last_close";
    image_hard_link_removed_while_open => Backend::Image, Who::Nobody, "hard_link_removed_while_open";
    image_rename_over_open => Backend::Image, Who::Nobody, "rename_over_open";
    image_rename_over_opath => Backend::Image, Who::Nobody, "rename_over_opath";
}

/// Many nameless inodes at once, each reached by a reopen and written: their sum is held to
/// the quota, and all of it comes back.
#[test]
fn many_nameless_inodes_share_one_quota() {
    if !fuse_or_skip("many_nameless_inodes_share_one_quota") {
        return;
    }
    let _shared = shared();
    for backend in [Backend::Local, Backend::Tmpfs, Backend::Image] {
        let limit = 8 * MIB;
        let s = session(backend, limit);
        let mut children = Vec::new();
        let mut written = 0;
        let dirs: Vec<_> = (0..4)
            .map(|i| {
                let d = s.path(&format!("d{i}"));
                std::fs::create_dir(&d).unwrap();
                std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o777)).unwrap();
                d
            })
            .collect();
        // One after the other, each holding its inode: the last ones meet the quota.
        for (i, d) in dirs.iter().enumerate() {
            let mut c = attacker(Who::Nobody, "opath_reopen", d, limit * 3 / 10);
            written += report_of(&mut c, &format!("{backend:?} attacker {i}")).written();
            children.push(c);
        }
        let used = s.used_bytes();
        assert!(
            written <= limit
                && used <= counted_bound(backend, limit, dirs.len() as u64)
                && used >= written,
            "{backend:?}: {written} bytes went into {limit}, UsedBytes {used}"
        );
        for mut c in children {
            drop(c.stdin.take());
            let _ = c.wait();
        }
        wait_exact(&s, &format!("{backend:?}: usage after the attackers left"));
        std::fs::write(s.path("after"), vec![3u8; (limit / 2) as usize]).unwrap();
    }
}

/// After a plain `rm` the space is usable at once, also right after the file's last close
/// (its RELEASE, and on tmpfs and image the kernel's FORGET, reach the handler a moment after
/// the unlink's reply; a write refused meanwhile waits for them). A nameless inode someone
/// still reaches stays counted, and what no longer fits beside it is refused; on the local
/// driver an inode nobody has open is gone at once, its space with it.
#[test]
fn removed_space_is_usable_at_once_and_held_space_is_not() {
    if !fuse_or_skip("removed_space_is_usable_at_once_and_held_space_is_not") {
        return;
    }
    let _shared = shared();
    for backend in [Backend::Local, Backend::Tmpfs, Backend::Image] {
        let limit = 4 * MIB;
        let s = session(backend, limit);
        let big = vec![5u8; (limit - 256 * KIB) as usize];
        for round in 0..20 {
            std::fs::write(s.path("big"), &big)
                .unwrap_or_else(|e| panic!("{backend:?} round {round}: {e}"));
            std::fs::remove_file(s.path("big")).unwrap();
        }
        let mut child = attacker(Who::Nobody, "opath_hold", s.mnt(), limit - 512 * KIB);
        let report = report_of(&mut child, &format!("{backend:?} opath_hold"));
        let over = std::fs::write(s.path("over"), &big[..MIB as usize]);
        match report {
            Report::Wrote { held, .. } => {
                assert!(
                    reachable(backend, "opath_hold"),
                    "{backend:?}: reached again"
                );
                let used = s.used_bytes();
                assert!(
                    used >= s.du() + held,
                    "{backend:?}: UsedBytes {used}, du {}, held {held}",
                    s.du()
                );
                let err = over.unwrap_err();
                assert_eq!(err.raw_os_error(), Some(libc::ENOSPC), "{backend:?}: {err}");
            }
            Report::Gone(errno) => {
                assert!(!reachable(backend, "opath_hold"), "{backend:?}: gone");
                assert_eq!(errno, libc::ENOENT);
                over.unwrap_or_else(|e| panic!("{backend:?}: the space of a gone inode: {e}"));
            }
        }
        drop(child.stdin.take());
        let _ = child.wait();
        wait_exact(&s, &format!("{backend:?}: usage after the holder left"));
        std::fs::remove_file(s.path("over")).ok();
        std::fs::write(s.path("big"), &big).unwrap();
    }
}

// ---------------------------------------------------------------------------------------
// Finding 6: floods of what a volume holds besides file data.

/// The flooder: in directory `dir`, makes as many of `mode` as the volume lets it (at most
/// `cap`), then prints `{"count": N, "errno": E}` (E is what stopped it, 0 if the cap did).
/// xattrs: 64 KiB user xattrs on one file (`size` bytes each); files: empty files; links:
/// hard links with 255-byte names; symlinks: symlinks with 4,000-byte targets; dirs:
/// directories; handles: `cap` open directory handles on `dir`, each read to its end, held
/// until stdin closes.
const FLOODER: &str = r#"
import json, os, sys
mode, d, cap, size = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
n, errno, held = 0, 0, []
def name(i, width):
    return ("%0" + str(width) + "d") % i
try:
    if mode == "xattrs":
        f = os.path.join(d, "x")
        os.close(os.open(f, os.O_CREAT | os.O_WRONLY, 0o644))
        while n < cap:
            os.setxattr(f, "user." + name(n, 8), b"v" * size)
            n += 1
    elif mode == "files":
        while n < cap:
            os.close(os.open(os.path.join(d, name(n, 8)), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
            n += 1
    elif mode == "links":
        f = os.path.join(d, "l")
        os.close(os.open(f, os.O_CREAT | os.O_WRONLY, 0o644))
        while n < cap:
            os.link(f, os.path.join(d, name(n, 255)))
            n += 1
    elif mode == "symlinks":
        while n < cap:
            os.symlink("t" * 4000, os.path.join(d, name(n, 8)))
            n += 1
    elif mode == "dirs":
        while n < cap:
            os.mkdir(os.path.join(d, name(n, 8)))
            n += 1
    elif mode == "handles":
        while n < cap:
            fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
            held.append(fd)
            os.listdir(fd)
            n += 1
    else:
        sys.exit("unknown mode " + mode)
except OSError as e:
    errno = e.errno
print(json.dumps({"count": n, "errno": errno}), flush=True)
if mode == "handles":
    sys.stdin.read()
"#;

fn flooder(mode: &str, dir: &Path, cap: u64, size: u64) -> Child {
    Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "/usr/bin/python3",
            "-c",
            FLOODER,
            mode,
        ])
        .arg(dir)
        .arg(cap.to_string())
        .arg(size.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("setpriv and python3")
}

/// Runs a flood to its end (or, for `handles`, until it holds them all); returns what it made,
/// what stopped it, and the flooder (still running for `handles`).
fn flood(mode: &str, dir: &Path, cap: u64, size: u64) -> (u64, i32, Child) {
    let mut child = flooder(mode, dir, cap, size);
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    if line.is_empty() {
        drop(child.stdin.take());
        panic!("flood {mode}: {}", stderr_of(&mut child));
    }
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    (
        v["count"].as_u64().unwrap(),
        v["errno"].as_i64().unwrap() as i32,
        child,
    )
}

/// Resident memory of process `pid`, in bytes.
fn rss_of(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap();
    kib * KIB
}

/// Memory a flood may add beyond the quota: allocator slack, the request threads' buffers,
/// the kernel's readdir replies. Fixed, and far below what the floods took before (hundreds
/// of MiB for a 4 MiB volume).
const FIXED_OVERHEAD: u64 = 24 * MIB;

fn full(errno: i32) -> bool {
    errno == libc::ENOSPC || errno == libc::EDQUOT
}

/// On a 4 MiB tmpfs volume (default mode 1777), floods of xattrs, empty files, long names,
/// long symlinks, directories and open directory handles by an unprivileged user each stop
/// with ENOSPC, UsedBytes shows what they hold, and the daemon's memory grows by at most the
/// quota plus a fixed overhead.
#[test]
fn tmpfs_floods_stop_at_the_quota_and_the_daemon_stays_small() {
    if !fuse_or_skip("tmpfs_floods_stop_at_the_quota_and_the_daemon_stays_small") {
        return;
    }
    let quota = 4 * MIB;
    let d = TestDaemon::start();
    let pid = d.pid().unwrap();
    d.cli_ok(["create", "-d", "tmpfs", "-o", "size=4M", "flood"]);
    let inode_limit = d.inspect("flood")["Status"]["InodeLimit"].as_u64();
    let target = d.scratch_dir("flood");
    for dir in [d.root.base(), &d.root.scratch()] {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    d.cli_ok(["mount", "flood", "--target", target.to_str().unwrap()]);
    let used = || d.inspect("flood")["Status"]["UsedBytes"].as_u64().unwrap();
    let inodes = || d.inspect("flood")["Status"]["UsedInodes"].as_u64().unwrap();
    // Warm up the request threads before the baseline.
    std::fs::write(target.join("warm"), vec![0u8; MIB as usize]).unwrap();
    std::fs::remove_file(target.join("warm")).unwrap();
    let empty = used();
    let base = rss_of(pid);
    let check_rss = |what: &str| {
        let grown = rss_of(pid).saturating_sub(base);
        eprintln!("{what}: the daemon grew by {} KiB", grown / KIB);
        assert!(
            grown <= quota + FIXED_OVERHEAD,
            "{what}: the daemon grew by {} MiB for a {} MiB volume",
            grown / MIB,
            quota / MIB
        );
    };
    for (mode, cap, size) in [
        ("xattrs", 4000, 64 * KIB),
        ("files", 100_000, 0),
        ("links", 100_000, 0),
        ("symlinks", 100_000, 0),
        ("dirs", 100_000, 0),
    ] {
        let dir = target.join(mode);
        std::fs::create_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        let (count, errno, mut child) = flood(mode, &dir, cap, size);
        let _ = child.wait();
        eprintln!("{mode}: {count} made, then errno {errno}");
        check_rss(mode);
        assert!(full(errno), "{mode}: {count} made, then errno {errno}");
        let (u, i) = (used(), inodes());
        assert!(u <= quota, "{mode}: UsedBytes {u}");
        // What the flood made is counted: the bytes filled up, or the inodes ran out.
        assert!(
            u + 64 * KIB > quota || Some(i) == inode_limit,
            "{mode}: {count} made, UsedBytes {u}, UsedInodes {i} of {inode_limit:?}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
        wait_for(&format!("{mode}: usage after the removal"), || {
            let u = used();
            (u == empty, format!("UsedBytes {u}, empty {empty}"))
        });
    }
    // A directory of many names, read through many open handles at once.
    let dir = target.join("listed");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("f"), b"").unwrap();
    for i in 0..2000 {
        std::fs::hard_link(dir.join("f"), dir.join(format!("{i:0>100}"))).unwrap();
    }
    let (count, errno, mut child) = flood("handles", &dir, 900, 0);
    assert_eq!((count, errno), (900, 0), "handles");
    check_rss("900 open handles on a directory of 2,000 names");
    drop(child.stdin.take());
    let _ = child.wait();
    // The default inode limit: one per 4 KiB of the size.
    assert_eq!(inode_limit, Some(quota / 4096), "InodeLimit");
}

/// The image filesystem (the rbd driver's) keeps names and xattrs in its metadata region: the
/// same floods end with ENOSPC (an xattr over 4,000 bytes with E2BIG) once the region or the
/// inode limit is full, and the handler's memory grows by at most the region's size plus a
/// fixed overhead. The handler runs in this process, so this test runs alone.
#[test]
fn image_floods_end_cleanly_and_memory_stays_bounded() {
    if !fuse_or_skip("image_floods_end_cleanly_and_memory_stays_bounded") {
        return;
    }
    let _alone = ALONE.write().unwrap_or_else(|e| e.into_inner());
    let s = session(Backend::Image, 16 * MIB);
    let region = 2 * MIB; // the metadata region of the session's 64 MiB image
    let me = std::process::id();
    std::fs::write(s.path("warm"), vec![0u8; MIB as usize]).unwrap();
    std::fs::remove_file(s.path("warm")).unwrap();
    let base = rss_of(me);
    let big = flood("xattrs", s.mnt(), 10, 64 * KIB);
    assert_eq!((big.0, big.1), (0, libc::E2BIG), "a 64 KiB xattr");
    drop(big.2);
    std::fs::remove_file(s.path("x")).unwrap();
    for (mode, cap, size) in [
        ("xattrs", 100_000, 4000),
        ("files", 100_000, 0),
        ("links", 100_000, 0),
        ("symlinks", 100_000, 0),
        ("dirs", 100_000, 0),
    ] {
        let dir = s.path(mode);
        std::fs::create_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        let (count, errno, mut child) = flood(mode, &dir, cap, size);
        let _ = child.wait();
        let grown = rss_of(me).saturating_sub(base);
        eprintln!(
            "image {mode}: {count} made, then errno {errno}; grew {} KiB",
            grown / KIB
        );
        assert!(full(errno), "{mode}: {count} made, then errno {errno}");
        assert!(
            grown <= region + FIXED_OVERHEAD,
            "image {mode}: the handler grew by {} MiB",
            grown / MIB
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
    // A directory of many names, read through many open handles at once: each handle keeps
    // where it stands, not a copy of the directory.
    let dir = s.path("listed");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("f"), b"").unwrap();
    for i in 0..2000 {
        std::fs::hard_link(dir.join("f"), dir.join(format!("{i:0>100}"))).unwrap();
    }
    let (count, errno, mut child) = flood("handles", &dir, 900, 0);
    assert_eq!((count, errno), (900, 0), "handles");
    let grown = rss_of(me).saturating_sub(base);
    eprintln!("image: 900 handles: grew {} KiB", grown / KIB);
    assert!(
        grown <= region + FIXED_OVERHEAD,
        "image: 900 open handles on a directory of 2,000 names: the handler grew by {} MiB",
        grown / MIB
    );
    drop(child.stdin.take());
    let _ = child.wait();
    // Still a working filesystem.
    std::fs::write(s.path("after"), vec![1u8; MIB as usize]).unwrap();
}
