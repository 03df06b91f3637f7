//! Features pjdfstest barely touches, on every backend: xattrs, rename flags, device nodes and
//! FIFOs, SEEK_DATA/SEEK_HOLE, shared writable mmap (and its coherence with read and write),
//! and readdir of a large directory.
use std::os::fd::AsFd;
use std::os::unix::fs::{FileExt, FileTypeExt};
use std::process::Command;

use fuse_tests::{Backend, TestSession, run_ok};
use nix::fcntl::{AT_FDCWD, RenameFlags, renameat2};
use nix::sys::stat::{Mode, SFlag, makedev, mknod};
use nix::unistd::{Whence, lseek};

fn attr(args: &[&str]) -> std::process::Output {
    Command::new(args[0])
        .args(&args[1..])
        .output()
        .expect("attr tools (setfattr, getfattr)")
}

fn xattrs(s: &TestSession) {
    let f = s.path("x");
    std::fs::write(&f, b"").unwrap();
    let p = f.to_str().unwrap();
    run_ok(Command::new("setfattr").args(["-n", "user.color", "-v", "blue", p]));
    let got = run_ok(Command::new("getfattr").args(["--only-values", "-n", "user.color", p]));
    assert_eq!(got, "blue");
    let list = run_ok(Command::new("getfattr").args(["-d", p]));
    assert!(list.contains("user.color=\"blue\""), "{list}");
    // Removing it makes it absent.
    run_ok(Command::new("setfattr").args(["-x", "user.color", p]));
    assert!(!attr(&["getfattr", "-n", "user.color", p]).status.success());
}

fn rename_flags(s: &TestSession) {
    let (a, b) = (s.path("a"), s.path("b"));
    std::fs::write(&a, b"A").unwrap();
    std::fs::write(&b, b"B").unwrap();
    let err = renameat2(AT_FDCWD, &a, AT_FDCWD, &b, RenameFlags::RENAME_NOREPLACE).unwrap_err();
    assert_eq!(err, nix::errno::Errno::EEXIST);
    renameat2(AT_FDCWD, &a, AT_FDCWD, &b, RenameFlags::RENAME_EXCHANGE).unwrap();
    assert_eq!(std::fs::read(&a).unwrap(), b"B");
    assert_eq!(std::fs::read(&b).unwrap(), b"A");
    let c = s.path("c");
    renameat2(AT_FDCWD, &a, AT_FDCWD, &c, RenameFlags::RENAME_NOREPLACE).unwrap();
    assert!(!a.exists() && c.exists());
}

fn special_nodes(s: &TestSession) {
    let mode = Mode::from_bits_truncate(0o644);
    mknod(&s.path("fifo"), SFlag::S_IFIFO, mode, 0).unwrap();
    mknod(&s.path("chr"), SFlag::S_IFCHR, mode, makedev(1, 3)).unwrap();
    mknod(&s.path("blk"), SFlag::S_IFBLK, mode, makedev(7, 0)).unwrap();
    let t = |n: &str| std::fs::symlink_metadata(s.path(n)).unwrap().file_type();
    assert!(t("fifo").is_fifo());
    assert!(t("chr").is_char_device());
    assert!(t("blk").is_block_device());
    let rdev = std::os::unix::fs::MetadataExt::rdev(&std::fs::metadata(s.path("chr")).unwrap());
    assert_eq!(rdev, makedev(1, 3));
}

/// POSIX lets a filesystem report holes at its own granularity (zeros may count as data), so
/// each answer must land within 64 KiB before the exact offset, never after it.
fn seek_data_and_hole(s: &TestSession) {
    const GRAIN: i64 = 64 << 10;
    let f = std::fs::File::create(s.path("sparse")).unwrap();
    f.write_all_at(&[1u8; 4096], 1 << 20).unwrap();
    f.write_all_at(&[1u8; 4096], 3 << 20).unwrap();
    let fd = f.as_fd();
    let near =
        |got: i64, exact: i64| assert!(got <= exact && got > exact - GRAIN, "{got} vs {exact}");
    near(lseek(fd, 0, Whence::SeekData).unwrap(), 1 << 20);
    let hole = lseek(fd, 1 << 20, Whence::SeekHole).unwrap();
    assert!(
        ((1 << 20) + 4096..3 << 20).contains(&hole),
        "hole after the first block: {hole}"
    );
    near(lseek(fd, hole, Whence::SeekData).unwrap(), 3 << 20);
    let end = (3 << 20) + 4096;
    assert_eq!(lseek(fd, 3 << 20, Whence::SeekHole).unwrap(), end);
    assert_eq!(
        lseek(fd, end, Whence::SeekData).unwrap_err(),
        nix::errno::Errno::ENXIO
    );
}

fn shared_mmap(s: &TestSession) {
    let path = s.path("mapped");
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)
        .unwrap();
    f.set_len(8192).unwrap();
    let out = run_ok(Command::new("python3").arg("-c").arg(format!(
        "import mmap,os\nfd=os.open('{}',os.O_RDWR)\nm=mmap.mmap(fd,8192)\nm[100:105]=b'hello'\nm.flush()\nm.close()\nprint('ok')",
        path.display()
    )));
    assert_eq!(out.trim(), "ok");
    let mut buf = [0u8; 5];
    f.read_exact_at(&mut buf, 100).unwrap();
    assert_eq!(&buf, b"hello");
}

/// A shared mapping and read/write on other descriptors see each other's bytes at once, with
/// no msync: also where the kernel sends reads and writes straight to the handler (direct
/// I/O) while the mapping lives in its page cache.
fn mmap_coherent_with_read_and_write(s: &TestSession) {
    let script = r#"
import mmap, os, sys
p = sys.argv[1]
fd = os.open(p, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
os.ftruncate(fd, 8192)
m = mmap.mmap(fd, 8192)
assert m[0:5] == bytes(5)
w = os.open(p, os.O_RDWR)
os.pwrite(w, b'abcde', 0)
assert m[0:5] == b'abcde', ('the mapping after pwrite', m[0:5])
m[10:15] = b'vwxyz'
assert os.pread(w, 5, 10) == b'vwxyz', ('pread after a write to the mapping', os.pread(w, 5, 10))
r = os.open(p, os.O_RDONLY)
assert os.pread(r, 5, 10) == b'vwxyz'
os.pwrite(w, b'12345', 4096 + 10)
assert m[4106:4111] == b'12345', ('second page', m[4106:4111])
os.ftruncate(w, 100)
os.ftruncate(w, 8192)
assert m[0:15] == b'abcde\0\0\0\0\0vwxyz', m[0:15]
assert m[100:8192] == bytes(8092), 'the truncated part reads as zeros through the mapping'
print('ok')
"#;
    let path = s.path("coherent");
    let out = run_ok(Command::new("python3").arg("-c").arg(script).arg(&path));
    assert_eq!(out.trim(), "ok");
}

fn big_directory(s: &TestSession) {
    let dir = s.path("many");
    std::fs::create_dir(&dir).unwrap();
    for i in 0..3000 {
        std::fs::write(dir.join(format!("entry-with-a-longish-name-{i:05}")), b"").unwrap();
    }
    let mut names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    names.sort();
    names.dedup();
    assert_eq!(
        names.len(),
        3000,
        "every entry listed once across readdir calls"
    );
    // Deleting while listing (rm -r style) must not skip or repeat entries.
    for e in std::fs::read_dir(&dir).unwrap() {
        std::fs::remove_file(e.unwrap().path()).unwrap();
    }
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0);
    std::fs::remove_dir(&dir).unwrap();
}

fn all(backend: Backend) {
    let s = TestSession::with(backend, Some(1 << 30), None);
    xattrs(&s);
    rename_flags(&s);
    special_nodes(&s);
    seek_data_and_hole(&s);
    shared_mmap(&s);
    mmap_coherent_with_read_and_write(&s);
    big_directory(&s);
}

#[test]
fn local() {
    all(Backend::Local);
}

#[test]
fn local_passthrough() {
    let s = TestSession::with(Backend::Local, None, None);
    seek_data_and_hole(&s);
    shared_mmap(&s);
    mmap_coherent_with_read_and_write(&s);
}

#[test]
fn tmpfs() {
    all(Backend::Tmpfs);
}

#[test]
fn image() {
    all(Backend::Image);
}
