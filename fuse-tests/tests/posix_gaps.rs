//! POSIX gaps found by a conformance suite and a stress run (issue 12), on every backend:
//! SEEK_DATA/SEEK_HOLE outside the file answer as on the host, every way to make an inode is
//! counted and admitted against the inode quota (RENAME_WHITEOUT included), and a repeated
//! unsupported request is logged once per volume.
use std::collections::HashSet;
use std::os::fd::AsFd;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;
use std::process::Command;

use fuse_tests::daemon::{TestDaemon, fuse_or_skip};
use fuse_tests::{Backend, TestSession};
use nix::errno::Errno;
use nix::fcntl::{AT_FDCWD, RenameFlags, renameat2};
use nix::sys::stat::{Mode, SFlag, mknod};
use nix::unistd::{Whence, lseek};

const BACKENDS: [Backend; 3] = [Backend::Local, Backend::Tmpfs, Backend::Image];

/// What lseek answers on `path` for SEEK_DATA and SEEK_HOLE at offsets inside, at the edges of
/// and outside the file (negative ones included).
fn seek_answers(path: &Path) -> Vec<(&'static str, i64, Result<i64, Errno>)> {
    let file = std::fs::File::open(path).unwrap();
    let size = file.metadata().unwrap().len() as i64;
    let offsets = [
        i64::MIN,
        -(1 << 20),
        -4096,
        -1,
        0,
        1,
        size - 1,
        size,
        size + 1,
        1 << 40,
    ];
    let mut answers = Vec::new();
    for (label, whence) in [
        ("SEEK_DATA", Whence::SeekData),
        ("SEEK_HOLE", Whence::SeekHole),
    ] {
        for offset in offsets {
            answers.push((label, offset, lseek(file.as_fd(), offset, whence)));
        }
    }
    answers
}

#[test]
fn seek_data_and_hole_outside_the_file_answer_as_on_the_host() {
    if !fuse_or_skip("seek_data_and_hole_outside_the_file_answer_as_on_the_host") {
        return;
    }
    let host = tempfile::tempdir().unwrap();
    let data = vec![7u8; 8192];
    for (name, content) in [("full", &data[..]), ("empty", &[][..])] {
        std::fs::write(host.path().join(name), content).unwrap();
    }
    for backend in BACKENDS {
        let s = TestSession::with(backend, Some(64 << 20), None);
        for (name, content) in [("full", &data[..]), ("empty", &[][..])] {
            std::fs::write(s.path(name), content).unwrap();
            let want = seek_answers(&host.path().join(name));
            let got = seek_answers(&s.path(name));
            for (w, g) in want.iter().zip(&got) {
                assert_eq!(
                    g, w,
                    "{backend:?}: lseek on the {name} file (host answer second)"
                );
            }
            // The host is ext4, xfs or tmpfs here: all three say ENXIO outside the file.
            assert!(
                got.iter()
                    .filter(|(_, off, _)| *off < 0 || *off >= content.len() as i64)
                    .all(|(_, _, r)| *r == Err(Errno::ENXIO)),
                "{backend:?}: {got:?}"
            );
        }
    }
}

/// Inodes really in the volume, each counted once (hard links share one): for a local volume
/// its backing directory, for the others the mount.
fn real_inodes(s: &TestSession) -> u64 {
    let top = match s.backend {
        Backend::Local => s.backing.clone(),
        Backend::Tmpfs | Backend::Image => s.mnt().to_path_buf(),
    };
    let mut seen = HashSet::new();
    let mut stack = vec![top];
    while let Some(path) = stack.pop() {
        let meta = std::fs::symlink_metadata(&path).unwrap();
        seen.insert((meta.dev(), meta.ino()));
        if meta.is_dir() {
            for e in std::fs::read_dir(&path).unwrap() {
                stack.push(e.unwrap().path());
            }
        }
    }
    seen.len() as u64
}

/// What statfs says is used: files minus free files.
fn statfs_used_inodes(s: &TestSession) -> u64 {
    let st = nix::sys::statvfs::statvfs(s.mnt()).unwrap();
    st.files() as u64 - st.files_free() as u64
}

#[derive(Clone, Copy, Debug)]
enum Make {
    File,
    Dir,
    Symlink,
    Fifo,
    HardLink,
    Whiteout,
}

/// Makes one node of kind `how`, numbered `i`. Whiteouts rename a fresh file away, leaving a
/// 0:0 character device in its place (the test runs as root: the kernel wants CAP_MKNOD).
fn make(s: &TestSession, how: Make, i: usize) -> Result<(), Errno> {
    let errno = |e: std::io::Error| Errno::from_raw(e.raw_os_error().unwrap());
    let path = s.path(&format!("n{i}"));
    match how {
        Make::File => std::fs::write(&path, b"").map_err(errno),
        Make::Dir => std::fs::create_dir(&path).map_err(errno),
        Make::Symlink => std::os::unix::fs::symlink("target", &path).map_err(errno),
        Make::Fifo => mknod(&path, SFlag::S_IFIFO, Mode::from_bits_truncate(0o644), 0),
        Make::HardLink => {
            let first = s.path("first");
            if !first.exists() {
                std::fs::write(&first, b"").map_err(errno)?;
            }
            std::fs::hard_link(&first, &path).map_err(errno)
        }
        Make::Whiteout => {
            let gone = s.path(&format!("w{i}"));
            std::fs::write(&gone, b"").map_err(errno)?;
            let moved = s.path(&format!("moved{i}"));
            renameat2(
                AT_FDCWD,
                &gone,
                AT_FDCWD,
                &moved,
                RenameFlags::RENAME_WHITEOUT,
            )
        }
    }
}

/// O_TMPFILE makes an inode with no name: counted while it is open, or refused with
/// EOPNOTSUPP (making nothing).
fn tmpfile_is_counted_or_refused(s: &TestSession) {
    let before = s.fs.usage().inodes;
    let flags = nix::fcntl::OFlag::O_TMPFILE | nix::fcntl::OFlag::O_RDWR;
    match nix::fcntl::open(s.mnt(), flags, Mode::from_bits_truncate(0o600)) {
        Ok(fd) => {
            assert_eq!(
                s.fs.usage().inodes,
                before + 1,
                "{:?}: O_TMPFILE",
                s.backend
            );
            drop(fd);
            // The release reaches the handler a moment after the close.
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
            while s.fs.usage().inodes != before && std::time::Instant::now() < deadline {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
        }
        Err(e) => assert_eq!(e, Errno::EOPNOTSUPP, "{:?}: O_TMPFILE", s.backend),
    }
    assert_eq!(
        s.fs.usage().inodes,
        before,
        "{:?}: after O_TMPFILE",
        s.backend
    );
    assert_eq!(real_inodes(s), before);
}

#[test]
fn every_way_to_make_an_inode_is_counted_and_limited() {
    if !fuse_or_skip("every_way_to_make_an_inode_is_counted_and_limited") {
        return;
    }
    const LIMIT: u64 = 20;
    let kinds = [
        Make::Whiteout,
        Make::File,
        Make::Dir,
        Make::Symlink,
        Make::Fifo,
        Make::HardLink,
    ];
    for backend in BACKENDS {
        let s = TestSession::with(backend, None, Some(LIMIT));
        tmpfile_is_counted_or_refused(&s);
        let mut whiteouts = 0;
        for i in 0..60 {
            let how = kinds[i % kinds.len()];
            let result = make(&s, how, i);
            match result {
                Ok(()) => {
                    if let Make::Whiteout = how {
                        whiteouts += 1;
                        let meta = std::fs::symlink_metadata(s.path(&format!("w{i}"))).unwrap();
                        assert!(
                            meta.file_type().is_char_device() && meta.rdev() == 0,
                            "{backend:?}: a whiteout is a 0:0 character device"
                        );
                    }
                }
                Err(Errno::ENOSPC) | Err(Errno::EDQUOT) => {}
                Err(e) => panic!("{backend:?}: making {how:?} #{i}: {e}"),
            }
            let real = real_inodes(&s);
            let counted = s.fs.usage().inodes;
            assert_eq!(
                counted, real,
                "{backend:?}: after {how:?} #{i} ({result:?}) the volume counts {counted} inodes, \
                 it holds {real}"
            );
            assert_eq!(statfs_used_inodes(&s), counted, "{backend:?}: statfs");
            assert!(real <= LIMIT, "{backend:?}: {real} inodes, limit {LIMIT}");
        }
        assert_eq!(real_inodes(&s), LIMIT, "{backend:?}: the volume filled up");
        assert!(whiteouts > 0, "{backend:?}: no whiteout was made");
        // Full: a whiteout is refused like any other new inode, and the rename does not happen.
        std::fs::remove_file(s.path("n1")).unwrap();
        std::fs::write(s.path("last"), b"").unwrap();
        let refused = renameat2(
            AT_FDCWD,
            &s.path("last"),
            AT_FDCWD,
            &s.path("last-moved"),
            RenameFlags::RENAME_WHITEOUT,
        );
        assert!(
            matches!(refused, Err(Errno::ENOSPC) | Err(Errno::EDQUOT)),
            "{backend:?}: a whiteout on a full volume: {refused:?}"
        );
        assert!(s.path("last").is_file() && !s.path("last-moved").exists());
        assert_eq!(s.fs.usage().inodes, real_inodes(&s));
        assert_eq!(real_inodes(&s), LIMIT);
    }
}

/// Runs the same ioctl `times` times on `path` through python3's fcntl.ioctl and returns the
/// errno each failure gave (they all must fail).
fn repeat_ioctl(path: &Path, cmd: u32, times: usize) -> HashSet<i32> {
    let script = format!(
        "import fcntl, sys\n\
         fd = open(sys.argv[1], 'rb')\n\
         seen = set()\n\
         for _ in range({times}):\n\
         \x20   try:\n\
         \x20       fcntl.ioctl(fd, {cmd}, b'\\0' * 8)\n\
         \x20       seen.add(0)\n\
         \x20   except OSError as e:\n\
         \x20       seen.add(e.errno)\n\
         print(' '.join(str(e) for e in sorted(seen)))\n"
    );
    let out = fuse_tests::run_ok(Command::new("python3").arg("-c").arg(script).arg(path));
    out.split_whitespace().map(|e| e.parse().unwrap()).collect()
}

#[test]
fn a_repeated_unsupported_ioctl_is_logged_once_per_volume() {
    if !fuse_or_skip("a_repeated_unsupported_ioctl_is_logged_once_per_volume") {
        return;
    }
    const FS_IOC_GETVERSION: u32 = 0x8008_7601;
    const MADE_UP: u32 = 0x8008_7a42; // _IOR('z', 0x42, long): no filesystem knows it
    let d = TestDaemon::start();
    for (driver, name) in [("local", "loud"), ("tmpfs", "loudram")] {
        d.cli_ok(["create", "-d", driver, "-o", "size=16M", name]);
        let mnt = d.mount(name);
        let file = mnt.join("f");
        std::fs::write(&file, b"x").unwrap();
        for cmd in [FS_IOC_GETVERSION, MADE_UP] {
            let errnos = repeat_ioctl(&file, cmd, 1000);
            assert_eq!(
                errnos,
                HashSet::from([libc::ENOTTY]),
                "{driver}: ioctl {cmd:#x} must fail as an unknown ioctl does on the host"
            );
        }
    }
    let log = d.log();
    let ioctl_lines: Vec<&str> = log.lines().filter(|l| l.contains("ioctl")).collect();
    for name in ["loud", "loudram"] {
        for cmd in [FS_IOC_GETVERSION, MADE_UP] {
            let hex = format!("{cmd:#x}");
            let lines = ioctl_lines
                .iter()
                .filter(|l| l.contains(&format!("volume {name}:")) && l.contains(&hex))
                .count();
            assert_eq!(
                lines,
                1,
                "volume {name}, ioctl {hex}: one log line, then silence; {} ioctl lines in all, \
                 the first ones:\n{}",
                ioctl_lines.len(),
                ioctl_lines[..ioctl_lines.len().min(5)].join("\n")
            );
        }
    }
    // Other ioctls (python's isatty asks TCGETS) are logged once each too.
    let kinds: HashSet<(&str, &str)> = ioctl_lines
        .iter()
        .map(|l| {
            let volume = l.split("volume ").nth(1).unwrap_or("").split(':').next();
            let command = l.split("command ").nth(1).unwrap_or("").split(' ').next();
            (volume.unwrap_or(""), command.unwrap_or(""))
        })
        .collect();
    assert_eq!(kinds.len(), ioctl_lines.len(), "{}", ioctl_lines.join("\n"));
    assert!(
        ioctl_lines
            .iter()
            .all(|l| l.contains("further ones are not logged")),
        "{}",
        ioctl_lines.join("\n")
    );
}
