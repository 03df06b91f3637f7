//! Attacks on the byte and inode quota (issue 11, findings 5 and 6), run as the attacker would:
//! root on the volume, or an unprivileged host user (`setpriv --reuid=65534`) on a volume whose
//! root is world-writable, on every backend.
//!
//! Finding 5: an inode that lost its last name, reached again (O_PATH and a reopen through
//! /proc, an open descriptor, a hard link, a rename over it), keeps its bytes counted while it
//! exists, every write to it is admitted against the quota, and its space comes back exactly
//! once, after the last close and the kernel's FORGET.
//!
//! Finding 6: what a tmpfs volume holds besides file data (names, inodes, xattrs, symlink
//! targets) counts against its quota, so a flood of them stops with ENOSPC while the daemon's
//! memory stays within the quota plus a fixed overhead.
use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fuse_tests::daemon::fuse_or_skip;
use fuse_tests::{Backend, TestSession};

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;

/// The attacker: makes `victim` (64 KiB), takes hold of its inode in the way `mode` names,
/// removes its last name, then writes 1 MiB at a time into the inode until a write fails or
/// `cap` bytes went in. Prints one JSON line, then keeps everything open until stdin closes.
const ATTACKER: &str = r#"
import json, os, sys, time
mode, d, cap = sys.argv[1], sys.argv[2], int(sys.argv[3])
victim, other = os.path.join(d, "victim"), os.path.join(d, "other")
def make(path, size):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    os.write(fd, b"v" * size)
    os.close(fd)
def reopen(opath):
    return os.open("/proc/self/fd/%d" % opath, os.O_RDWR)
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
elif mode == "opath_hold":
    fd = os.open(victim, os.O_WRONLY)
    os.pwrite(fd, b"h" * cap, 0)
    os.close(fd)
    p = os.open(victim, os.O_PATH); held.append(p)
    os.unlink(victim)
    print(json.dumps({"written": 0, "errno": 0, "nlink": 0, "held": os.fstat(p).st_blocks * 512}), flush=True)
    sys.stdin.read()
    sys.exit(0)
elif mode == "rename_over_opath":
    p = os.open(victim, os.O_PATH); held.append(p)
    make(other, 8192)
    os.rename(other, victim)
    fd = reopen(p)
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
print(json.dumps({"written": written, "errno": errno, "nlink": st.st_nlink,
                  "held": st.st_blocks * 512}), flush=True)
sys.stdin.read()
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

/// The attacker's report: bytes it got into the nameless inode, the errno that stopped it,
/// the inode's link count and what it holds.
struct Report {
    written: u64,
    errno: i32,
    nlink: u64,
    held: u64,
}

fn report_of(child: &mut Child, what: &str) -> Report {
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    if line.is_empty() {
        let _ = child.stdin.take();
        let out = child.wait_with_output_of_stderr();
        panic!("{what}: the attacker failed: {out}");
    }
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    let num = |k: &str| v[k].as_u64().unwrap_or_else(|| panic!("{what}: {line}"));
    Report {
        written: num("written"),
        errno: num("errno") as i32,
        nlink: num("nlink"),
        held: num("held"),
    }
}

trait StderrOf {
    fn wait_with_output_of_stderr(&mut self) -> String;
}

impl StderrOf for Child {
    fn wait_with_output_of_stderr(&mut self) -> String {
        let mut err = String::new();
        if let Some(mut e) = self.stderr.take() {
            let _ = std::io::Read::read_to_string(&mut e, &mut err);
        }
        let _ = self.wait();
        err
    }
}

/// Waits (generously) until `done` holds, then returns its last value for the message.
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
    let r = report_of(&mut child, &what);
    let used = s.used_bytes();
    // The flood was stopped at the quota: a short write, then ENOSPC.
    assert_eq!(
        r.errno,
        libc::ENOSPC,
        "{what}: the flood ended with errno {}",
        r.errno
    );
    assert!(
        r.written <= limit,
        "{what}: {} MiB went into a {} MiB volume (UsedBytes {used})",
        r.written / MIB,
        limit / MIB
    );
    assert_eq!(r.nlink, 0, "{what}: the inode still has a name");
    // What exists is counted: the named files (du) and the nameless inode the attacker holds.
    let named = s.du();
    assert!(
        used >= named + r.held && used <= limit,
        "{what}: UsedBytes {used} while named files hold {named} and the nameless inode {}",
        r.held
    );
    // The attacker lets go: the space comes back exactly once, to what the names hold.
    drop(child.stdin.take());
    let status = child.wait().unwrap();
    assert!(status.success(), "{what}: attacker {status}");
    wait_for(&format!("{what}: usage after the last close"), || {
        let (used, named) = (s.used_bytes(), s.du());
        (used == named, format!("UsedBytes {used}, du {named}"))
    });
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
            written += report_of(&mut c, &format!("{backend:?} attacker {i}")).written;
            children.push(c);
        }
        let used = s.used_bytes();
        assert!(
            written <= limit && used <= limit && used >= written,
            "{backend:?}: {written} bytes went into {limit}, UsedBytes {used}"
        );
        for mut c in children {
            drop(c.stdin.take());
            let _ = c.wait();
        }
        wait_for(
            &format!("{backend:?}: usage after the attackers left"),
            || {
                let (used, named) = (s.used_bytes(), s.du());
                (used == named, format!("UsedBytes {used}, du {named}"))
            },
        );
        std::fs::write(s.path("after"), vec![3u8; (limit / 2) as usize]).unwrap();
    }
}

/// After a plain `rm` the space is usable at once (the kernel's FORGET, which gives it back,
/// reaches the handler a moment after the unlink's reply; a write refused meanwhile waits for
/// it). While someone still holds the nameless inode, it stays counted: the write is refused.
#[test]
fn removed_space_is_usable_at_once_and_held_space_is_not() {
    if !fuse_or_skip("removed_space_is_usable_at_once_and_held_space_is_not") {
        return;
    }
    for backend in [Backend::Local, Backend::Tmpfs, Backend::Image] {
        let limit = 4 * MIB;
        let s = session(backend, limit);
        let big = vec![5u8; (limit - 256 * KIB) as usize];
        for round in 0..20 {
            std::fs::write(s.path("big"), &big)
                .unwrap_or_else(|e| panic!("{backend:?} round {round}: {e}"));
            std::fs::remove_file(s.path("big")).unwrap();
        }
        // Someone holds the inode of a removed file: its space stays counted, and what no
        // longer fits beside it is refused.
        let mut child = attacker(Who::Nobody, "opath_hold", s.mnt(), limit - 512 * KIB);
        let r = report_of(&mut child, &format!("{backend:?} opath_hold"));
        let used = s.used_bytes();
        assert!(
            used >= s.du() + r.held,
            "{backend:?}: UsedBytes {used}, du {}, held {}",
            s.du(),
            r.held
        );
        let err = std::fs::write(s.path("over"), &big[..MIB as usize]).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ENOSPC), "{backend:?}: {err}");
        drop(child.stdin.take());
        let _ = child.wait();
        wait_for(&format!("{backend:?}: usage after the holder left"), || {
            let (used, named) = (s.used_bytes(), s.du());
            (used == named, format!("UsedBytes {used}, du {named}"))
        });
        std::fs::remove_file(s.path("over")).ok();
        std::fs::write(s.path("big"), &big).unwrap();
    }
}
