//! The redo journal of kept image volumes (docs/rbd.md, "A crash of the daemon"): what the
//! image filesystem acknowledged survives a crash of its handler. Each round runs a random
//! stream of operations on the real image filesystem, kept as the rbd driver keeps it
//! (`ImageFs::open_carried`), with durable commits (fsync) now and then; the handler then
//! "crashes" (dropped without a commit, the device keeping a random subset of its unflushed
//! writes, as librbd's writes in flight when a daemon is killed); a successor opens the image
//! with the predecessor's shared files and replays the journal. The tree it serves must equal
//! the tree served before the crash (the reference), and fsck and the usage counters must
//! agree with it. A damaged journal is refused by name, never skipped.
use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use fuse_tests::Rng;
use fvol::fs::image::{BlockDevice, CrashDevice, ImageFs, fsck};
use fvol::fs::memory::RootOwner;
use fvol::fs::quota::Limits;
use fvol::fs::resume::{Carry, NoHolder};
use fvol::fs::{Caller, FileKind, Ino, ROOT_INO, Rename, SetAttr, VolumeFs, XattrReply};

const ROOT: Caller = Caller {
    uid: 0,
    gid: 0,
    pid: 0,
    umask: 0o022,
};

const OWNER: RootOwner = RootOwner {
    uid: 0,
    gid: 0,
    mode: 0o755,
};

fn new_image(size: u64) -> (Arc<CrashDevice>, Arc<dyn BlockDevice>) {
    let device = Arc::new(CrashDevice::new(size));
    let dev: Arc<dyn BlockDevice> = device.clone();
    ImageFs::format(dev.clone(), OWNER, None).unwrap();
    (device, dev)
}

/// The shared files a handler leaves in the keeper (copies: each successor takes its own).
struct Kept(Vec<(String, OwnedFd)>);

impl Kept {
    fn copy(&self) -> Vec<(String, OwnedFd)> {
        (self.0.iter())
            .map(|(n, fd)| (n.clone(), fd.try_clone().unwrap()))
            .collect()
    }
    fn file(&self, name: &str) -> std::fs::File {
        let fd = self
            .0
            .iter()
            .find(|(n, _)| n == name)
            .unwrap()
            .1
            .try_clone();
        std::fs::File::from(fd.unwrap())
    }
}

/// A first handler of a kept volume.
fn first(dev: &Arc<dyn BlockDevice>) -> (ImageFs, Kept) {
    let mut carry = Carry::fresh(Arc::new(NoHolder));
    let fs = ImageFs::open_carried(dev.clone(), Limits::default(), &mut carry).unwrap();
    (fs, Kept(carry.take_outgoing()))
}

/// The successor after a crash of `fs`.
fn crash_and_resume(
    fs: ImageFs,
    device: &CrashDevice,
    dev: &Arc<dyn BlockDevice>,
    kept: &Kept,
    keep: u64,
) -> Result<ImageFs, fvol::fs::image::ImageError> {
    fs.abandon();
    device.crash(|i| (keep >> (i % 64)) & 1 == 1);
    let mut carry = Carry::resumed(kept.copy(), Vec::new(), Arc::new(NoHolder));
    ImageFs::open_carried(dev.clone(), Limits::default(), &mut carry)
}

/// What a node looks like from outside: kind, mode, owner, links, size, contents (files),
/// target (symlinks), xattrs, and the inode number (the kernel knows it).
#[derive(Debug, PartialEq, Eq)]
struct Seen {
    ino: Ino,
    kind: FileKind,
    perm: u16,
    uid: u32,
    nlink: u32,
    size: u64,
    blocks: u64,
    mtime: std::time::SystemTime,
    data: Vec<u8>,
    xattrs: BTreeMap<OsString, Vec<u8>>,
}

fn xattr_value(r: XattrReply) -> Vec<u8> {
    match r {
        XattrReply::Data(d) => d,
        XattrReply::Size(_) => panic!("asked for the value"),
    }
}

/// Every path of the tree with what it looks like.
fn walk(fs: &ImageFs) -> BTreeMap<String, Seen> {
    let mut out = BTreeMap::new();
    let mut todo = vec![(String::new(), ROOT_INO)];
    while let Some((path, dir)) = todo.pop() {
        let fh = fs.opendir(&ROOT, dir).unwrap();
        let mut names = Vec::new();
        fs.readdir(dir, fh, 0, false, &mut |e| {
            if e.name != "." && e.name != ".." {
                names.push(e.name);
            }
            true
        })
        .unwrap();
        fs.releasedir(dir, fh).unwrap();
        for name in names {
            let e = fs.lookup(&ROOT, dir, &name).unwrap();
            let a = e.attr;
            let p = format!("{path}/{}", name.to_string_lossy());
            let data = match a.kind {
                FileKind::File => {
                    let o = fs.open(&ROOT, a.ino, libc::O_RDONLY).unwrap();
                    let d = fs.read(a.ino, o.fh, 0, a.size as u32 + 1).unwrap();
                    fs.release(a.ino, o.fh).unwrap();
                    d
                }
                FileKind::Symlink => fs.readlink(a.ino).unwrap(),
                FileKind::Dir => {
                    todo.push((p.clone(), a.ino));
                    Vec::new()
                }
                _ => Vec::new(),
            };
            let mut xattrs = BTreeMap::new();
            if let XattrReply::Data(list) = fs.listxattr(a.ino, 65536).unwrap() {
                for n in list.split(|b| *b == 0).filter(|n| !n.is_empty()) {
                    let n = OsStr::from_bytes(n);
                    let v = xattr_value(fs.getxattr(a.ino, n, 65536).unwrap());
                    xattrs.insert(n.to_os_string(), v);
                }
            }
            fs.forget(a.ino, 1);
            out.insert(
                p,
                Seen {
                    ino: a.ino,
                    kind: a.kind,
                    perm: a.perm,
                    uid: a.uid,
                    nlink: a.nlink,
                    size: a.size,
                    blocks: a.blocks,
                    mtime: a.mtime,
                    data,
                    xattrs,
                },
            );
        }
    }
    out
}

/// Names used by the random streams: few, so that operations meet.
fn pick_name(rng: &mut Rng) -> OsString {
    OsString::from(format!("n{}", rng.below(12)))
}

/// A directory of the tree (the root or one of its subdirectories).
fn pick_dir(fs: &ImageFs, rng: &mut Rng) -> Ino {
    if rng.below(3) == 0 {
        return ROOT_INO;
    }
    match fs.lookup(&ROOT, ROOT_INO, &pick_name(rng)) {
        Ok(e) if e.attr.kind == FileKind::Dir => e.attr.ino,
        _ => ROOT_INO,
    }
}

/// One random operation; errors (a name taken, a directory not empty...) are part of the game.
fn random_op(fs: &ImageFs, rng: &mut Rng) {
    let dir = pick_dir(fs, rng);
    let name = pick_name(rng);
    let file = |fs: &ImageFs| {
        fs.lookup(&ROOT, dir, &name)
            .ok()
            .filter(|e| e.attr.kind == FileKind::File)
    };
    match rng.below(14) {
        0 => drop(fs.mkdir(&ROOT, dir, &name, 0o755)),
        1 | 2 => {
            if let Ok((e, o)) = fs.create(&ROOT, dir, &name, 0o644, libc::O_RDWR) {
                let len = rng.below(20_000) as usize;
                let data: Vec<u8> = (0..len).map(|i| (i as u64 ^ rng.0) as u8).collect();
                let at = rng.below(3) * 4000;
                let _ = fs.write(e.attr.ino, o.fh, at, &data, false);
                fs.release(e.attr.ino, o.fh).unwrap();
            }
        }
        3 => {
            // An append, as a log writer does.
            if let Some(e) = file(fs) {
                let o = fs.open(&ROOT, e.attr.ino, libc::O_RDWR).unwrap();
                let data = vec![rng.next_u64() as u8; 1 + rng.below(9000) as usize];
                fs.write(e.attr.ino, o.fh, e.attr.size, &data, false)
                    .unwrap();
                fs.release(e.attr.ino, o.fh).unwrap();
            }
        }
        4 => drop(fs.unlink(&ROOT, dir, &name)),
        5 => drop(fs.rmdir(&ROOT, dir, &name)),
        6 | 7 => {
            let to = pick_dir(fs, rng);
            let new_name = pick_name(rng);
            let flags = match rng.below(5) {
                0 => libc::RENAME_NOREPLACE,
                1 => libc::RENAME_EXCHANGE,
                2 => libc::RENAME_WHITEOUT,
                _ => 0,
            };
            let _ = fs.rename(&Rename {
                caller: ROOT,
                parent: dir,
                name: &name,
                new_parent: to,
                new_name: &new_name,
                flags,
            });
        }
        8 => {
            if let Some(e) = file(fs) {
                let change = SetAttr {
                    size: Some(rng.below(30_000)),
                    mode: Some(0o600 + rng.below(0o100) as u32),
                    ..Default::default()
                };
                fs.setattr(&ROOT, e.attr.ino, &change).unwrap();
            }
        }
        9 => {
            if let Ok(e) = fs.lookup(&ROOT, dir, &name) {
                let v = rng.next_u64().to_le_bytes();
                let x = OsString::from(format!("user.x{}", rng.below(3)));
                let _ = fs.setxattr(e.attr.ino, &x, &v, 0, false);
                if rng.below(2) == 0 {
                    let _ = fs.removexattr(e.attr.ino, OsStr::new("user.x0"));
                }
            }
        }
        10 => {
            if let Some(e) = file(fs) {
                let _ = fs.link(&ROOT, e.attr.ino, pick_dir(fs, rng), &pick_name(rng));
            }
        }
        11 => {
            let target = format!("target-{}", rng.below(1000));
            let _ = fs.symlink(&ROOT, dir, &name, std::path::Path::new(&target));
        }
        12 => {
            if let Some(e) = file(fs) {
                let o = fs.open(&ROOT, e.attr.ino, libc::O_RDWR).unwrap();
                let mode = match rng.below(2) {
                    0 => 0,
                    _ => libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                };
                let _ = fs.fallocate(e.attr.ino, o.fh, rng.below(10_000), 5000, mode);
                fs.release(e.attr.ino, o.fh).unwrap();
            }
        }
        _ => {
            // An fsync: a durable commit; what came before leaves the journal.
            fs.sync_all().unwrap();
        }
    }
}

fn check_clean(dev: &Arc<dyn BlockDevice>, fs: ImageFs, what: &str) {
    let usage = fs.usage();
    drop(fs);
    let report = fsck(dev.clone()).unwrap();
    assert!(report.problems.is_empty(), "{what}: {:?}", report.problems);
    assert_eq!(
        (report.data_bytes, report.inodes),
        (usage.bytes, usage.inodes),
        "{what}: usage counters against fsck"
    );
}

/// Random streams, a crash (some rounds crash again right after the replay, with more
/// operations in between), and the successor serves exactly the tree acknowledged before.
#[test]
fn replay_restores_every_acknowledged_change() {
    let mut replayed = 0;
    for seed in 0..25 {
        let mut rng = Rng(seed * 0x9e37_79b9_7f4a_7c15 + 7);
        let (device, dev) = new_image(64 << 20);
        let (mut fs, kept) = first(&dev);
        for crash in 0..1 + rng.below(3) {
            for _ in 0..rng.below(150) {
                random_op(&fs, &mut rng);
            }
            let before = walk(&fs);
            replayed += fs.redo_records();
            let keep = rng.next_u64();
            fs = crash_and_resume(fs, &device, &dev, &kept, keep)
                .unwrap_or_else(|e| panic!("seed {seed}, crash {crash}: {e}"));
            fs.handles_restored();
            let after = walk(&fs);
            for (path, seen) in &before {
                assert_eq!(
                    after.get(path),
                    Some(seen),
                    "seed {seed}, crash {crash}: {path}"
                );
            }
            assert_eq!(
                after.keys().collect::<Vec<_>>(),
                before.keys().collect::<Vec<_>>(),
                "seed {seed}, crash {crash}"
            );
            // Usage counts what the tree holds (each inode once, and the root).
            let mut inodes = BTreeMap::new();
            for seen in after.values() {
                inodes.insert(seen.ino, seen.blocks * 512);
            }
            let usage = fvol::fs::UsageSnapshot {
                bytes: inodes.values().sum(),
                inodes: inodes.len() as u64 + 1,
            };
            assert_eq!(fs.usage(), usage, "seed {seed}, crash {crash}: usage");
        }
        check_clean(&dev, fs, &format!("seed {seed}"));
    }
    // The rounds did replay (durable commits come often on small images).
    eprintln!("{replayed} records replayed");
    assert!(replayed > 100, "only {replayed} records replayed");
}

/// A file open without a name when the handler crashes stays readable through the handle the
/// kernel holds, with what was written to it after the last durable commit; released, it goes.
#[test]
fn an_open_unlinked_file_keeps_its_unsynced_data() {
    let (device, dev) = new_image(64 << 20);
    let (fs, kept) = first(&dev);
    let (e, o) = fs
        .create(&ROOT, ROOT_INO, OsStr::new("held"), 0o644, libc::O_RDWR)
        .unwrap();
    fs.sync_all().unwrap();
    fs.write(e.attr.ino, o.fh, 0, b"written, never synced", false)
        .unwrap();
    fs.unlink(&ROOT, ROOT_INO, OsStr::new("held")).unwrap();
    let fs = crash_and_resume(fs, &device, &dev, &kept, 0).unwrap();
    fs.restore_handle(o.fh, e.attr.ino, libc::O_RDWR, false)
        .unwrap();
    fs.handles_restored();
    assert_eq!(
        fs.read(e.attr.ino, o.fh, 0, 100).unwrap(),
        b"written, never synced"
    );
    assert!(fs.lookup(&ROOT, ROOT_INO, OsStr::new("held")).is_err());
    let inodes = fs.usage().inodes;
    fs.release(e.attr.ino, o.fh).unwrap();
    assert_eq!(fs.usage().inodes, inodes - 1);
    check_clean(&dev, fs, "after the release");
}

/// More data than the journal holds, never synced: the journal makes durable commits to keep
/// room (nothing fails), and a crash after it loses nothing.
#[test]
fn a_full_journal_commits_instead_of_failing() {
    let (device, dev) = new_image(256 << 20);
    let (fs, kept) = first(&dev);
    let (e, o) = fs
        .create(&ROOT, ROOT_INO, OsStr::new("big"), 0o644, libc::O_RDWR)
        .unwrap();
    let chunk: Vec<u8> = (0..1 << 20).map(|i| (i * 7 % 251) as u8).collect();
    for i in 0..100u64 {
        fs.write(e.attr.ino, o.fh, i << 20, &chunk, false).unwrap();
    }
    fs.release(e.attr.ino, o.fh).unwrap();
    let fs = crash_and_resume(fs, &device, &dev, &kept, 0).unwrap();
    fs.handles_restored();
    let e = fs.lookup(&ROOT, ROOT_INO, OsStr::new("big")).unwrap();
    assert_eq!(e.attr.size, 100 << 20);
    let o = fs.open(&ROOT, e.attr.ino, libc::O_RDONLY).unwrap();
    for i in [0u64, 37, 99] {
        assert!(fs.read(e.attr.ino, o.fh, i << 20, 1 << 20).unwrap() == chunk);
    }
    fs.release(e.attr.ino, o.fh).unwrap();
    check_clean(&dev, fs, "after 100 MiB");
}

/// A journal whose records do not check out, or of another layout, makes the successor refuse
/// the volume with an error that names the problem: never a silent loss.
#[test]
fn a_damaged_journal_is_refused_by_name() {
    for magic in [false, true] {
        let (device, dev) = new_image(64 << 20);
        let (fs, kept) = first(&dev);
        let (e, o) = fs
            .create(&ROOT, ROOT_INO, OsStr::new("f"), 0o644, libc::O_RDWR)
            .unwrap();
        fs.write(e.attr.ino, o.fh, 0, &[5u8; 5000], false).unwrap();
        let journal = kept.file("image-journal");
        // The live records lie between head and tail (header words 2 and 3).
        let word = |at: u64| {
            let mut w = [0u8; 8];
            journal.read_exact_at(&mut w, at).unwrap();
            u64::from_le_bytes(w)
        };
        let (head, tail) = (word(16), word(24));
        assert!(
            tail > head + 30,
            "no record is live: head {head}, tail {tail}"
        );
        let at = 4096 + head % (journal.metadata().unwrap().len() - 4096) + 30;
        if magic {
            journal.write_all_at(b"fvolrdo9", 0).unwrap();
        } else {
            let mut b = [0u8; 1];
            journal.read_exact_at(&mut b, at).unwrap();
            journal.write_all_at(&[!b[0]], at).unwrap();
        }
        let err = match crash_and_resume(fs, &device, &dev, &kept, 0) {
            Ok(_) => panic!("a damaged journal was accepted"),
            Err(e) => e.to_string(),
        };
        let want = if magic { "fvolrdo9" } else { "checksum" };
        assert!(err.contains("redo journal") && err.contains(want), "{err}");
    }
}

/// RENAME_EXCHANGE of a directory with one of its own descendants would put it inside its own
/// subtree: EINVAL, as for a plain rename.
#[test]
fn exchanging_a_directory_with_its_descendant_is_einval() {
    let (_device, dev) = new_image(64 << 20);
    let fs = ImageFs::open(dev, Limits::default()).unwrap();
    let a = fs.mkdir(&ROOT, ROOT_INO, OsStr::new("a"), 0o755).unwrap();
    let b = fs.mkdir(&ROOT, a.attr.ino, OsStr::new("b"), 0o755).unwrap();
    fs.mkdir(&ROOT, b.attr.ino, OsStr::new("c"), 0o755).unwrap();
    for (parent, name, new_parent, new_name) in [
        (b.attr.ino, "c", ROOT_INO, "a"),
        (ROOT_INO, "a", b.attr.ino, "c"),
    ] {
        let r = fs.rename(&Rename {
            caller: ROOT,
            parent,
            name: OsStr::new(name),
            new_parent,
            new_name: OsStr::new(new_name),
            flags: libc::RENAME_EXCHANGE,
        });
        assert!(
            matches!(r, Err(fvol::fs::FsError::Invalid)),
            "exchange {name} with {new_name}: {r:?}"
        );
    }
}
