//! A kept volume taken over by a new `MemFs` from its shared memory alone, as after a crash:
//! the first instance is dropped without any hand-over step.
use std::ffi::OsStr;
use std::os::fd::OwnedFd;
use std::path::Path;
use std::sync::Arc;

use crate::fs::memory::{MemFs, RootOwner};
use crate::fs::quota::Limits;
use crate::fs::resume::{Carry, NoHolder};
use crate::fs::*;

const ROOT: Caller = Caller {
    uid: 0,
    gid: 0,
    pid: 0,
    umask: 0,
};

fn limits() -> Limits {
    Limits {
        bytes: Some(64 << 20),
        inodes: None,
    }
}

fn owner() -> RootOwner {
    RootOwner {
        uid: 0,
        gid: 0,
        mode: 0o1777,
    }
}

fn n(s: &str) -> &OsStr {
    OsStr::new(s)
}

fn kept() -> (MemFs, Vec<(String, OwnedFd)>) {
    let mut carry = Carry::fresh(Arc::new(NoHolder));
    let fs = MemFs::kept(limits(), owner(), &mut carry, "test").unwrap();
    (fs, carry.take_outgoing())
}

/// A successor of the handler whose shared files are `files`.
fn take_over(files: &[(String, OwnedFd)]) -> MemFs {
    let incoming = files
        .iter()
        .map(|(name, fd)| (name.clone(), fd.try_clone().unwrap()))
        .collect();
    let mut carry = Carry::resumed(incoming, Vec::new(), Arc::new(NoHolder));
    MemFs::kept(limits(), owner(), &mut carry, "test").unwrap()
}

fn lookup(fs: &MemFs, path: &str) -> FsResult<Attr> {
    let mut ino = ROOT_INO;
    let mut attr = fs.getattr(ROOT_INO, None)?;
    for part in path.split('/') {
        attr = fs.lookup(&ROOT, ino, n(part))?.attr;
        ino = attr.ino;
    }
    Ok(attr)
}

fn read_all(fs: &MemFs, ino: Ino) -> Vec<u8> {
    let o = fs.open(&ROOT, ino, libc::O_RDONLY).unwrap();
    let data = fs.read(ino, o.fh, 0, 1 << 24).unwrap();
    fs.release(ino, o.fh).unwrap();
    data
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31) ^ seed)
        .collect()
}

#[test]
fn a_successor_finds_the_namespace_data_and_usage() {
    let (fs, files) = kept();
    let dir = fs.mkdir(&ROOT, ROOT_INO, n("d"), 0o750).unwrap().attr.ino;
    let (f, o) = fs.create(&ROOT, dir, n("f"), 0o640, 0).unwrap();
    let f = f.attr.ino;
    fs.write(f, o.fh, 0, &pattern(300_000, 1), false).unwrap();
    fs.write(f, o.fh, 5 << 20, b"far", false).unwrap();
    fs.release(f, o.fh).unwrap();
    fs.setxattr(f, n("user.tag"), b"value", 0, false).unwrap();
    VolumeFs::link(&fs, &ROOT, f, ROOT_INO, n("hard")).unwrap();
    let long = "t".repeat(300);
    fs.symlink(&ROOT, dir, n("long"), Path::new(&long)).unwrap();
    fs.symlink(&ROOT, ROOT_INO, n("short"), Path::new("x"))
        .unwrap();
    fs.mknod(&ROOT, ROOT_INO, n("fifo"), libc::S_IFIFO | 0o600, 0)
        .unwrap();
    fs.mkdir(&ROOT, dir, n("sub"), 0o700).unwrap();
    fs.rename(&Rename {
        caller: ROOT,
        parent: ROOT_INO,
        name: n("short"),
        new_parent: dir,
        new_name: n("moved"),
        flags: 0,
    })
    .unwrap();
    fs.rename(&Rename {
        caller: ROOT,
        parent: ROOT_INO,
        name: n("fifo"),
        new_parent: dir,
        new_name: n("fifo2"),
        flags: libc::RENAME_WHITEOUT,
    })
    .unwrap();
    // A file open without a name: kept while its handle is.
    let (g, og) = fs.create(&ROOT, ROOT_INO, n("gone"), 0o600, 0).unwrap();
    let g = g.attr.ino;
    fs.write(g, og.fh, 0, &pattern(40_000, 2), false).unwrap();
    fs.unlink(&ROOT, ROOT_INO, n("gone")).unwrap();
    // A file deleted for good, and a truncated one.
    let (t, ot) = fs.create(&ROOT, ROOT_INO, n("tmp"), 0o600, 0).unwrap();
    fs.write(t.attr.ino, ot.fh, 0, &[1; 10_000], false).unwrap();
    fs.setattr(
        &ROOT,
        t.attr.ino,
        &SetAttr {
            size: Some(5000),
            ..Default::default()
        },
    )
    .unwrap();
    fs.release(t.attr.ino, ot.fh).unwrap();
    let (u, ou) = fs.create(&ROOT, ROOT_INO, n("del"), 0o600, 0).unwrap();
    fs.write(u.attr.ino, ou.fh, 0, &[1; 20_000], false).unwrap();
    fs.release(u.attr.ino, ou.fh).unwrap();
    fs.unlink(&ROOT, ROOT_INO, n("del")).unwrap();
    fs.forget(u.attr.ino, 1);
    let usage = fs.usage();
    let before: Vec<Attr> = [
        "d", "d/f", "hard", "d/long", "d/moved", "d/fifo2", "fifo", "tmp",
    ]
    .iter()
    .map(|p| lookup(&fs, p).unwrap())
    .collect();
    drop(fs);

    let fs = take_over(&files);
    fs.restore_handle(og.fh, g, 0, false).unwrap();
    fs.handles_restored();
    assert_eq!(fs.usage(), usage, "usage derived again is the same");
    for (path, was) in [
        "d", "d/f", "hard", "d/long", "d/moved", "d/fifo2", "fifo", "tmp",
    ]
    .iter()
    .zip(&before)
    {
        let now = lookup(&fs, path).unwrap();
        assert_eq!(now, *was, "{path}");
    }
    assert!(lookup(&fs, "del").is_err());
    let data = read_all(&fs, f);
    assert_eq!(data[..300_000], pattern(300_000, 1)[..]);
    assert_eq!(&data[5 << 20..], b"far");
    assert_eq!(lookup(&fs, "d/f").unwrap().nlink, 2);
    assert_eq!(lookup(&fs, "d").unwrap().nlink, 3);
    assert!(matches!(
        fs.getxattr(f, n("user.tag"), 64).unwrap(),
        XattrReply::Data(v) if v == b"value"
    ));
    let link = lookup(&fs, "d/long").unwrap().ino;
    assert_eq!(fs.readlink(link).unwrap(), long.as_bytes());
    // The open file without a name is still there, and its space comes back at its close.
    assert_eq!(fs.read(g, og.fh, 0, 50_000).unwrap(), pattern(40_000, 2));
    fs.write(g, og.fh, 40_000, b"more", false).unwrap();
    let with_g = fs.usage();
    fs.release(g, og.fh).unwrap();
    fs.forget(g, 1);
    assert_eq!(fs.usage().bytes, with_g.bytes - 40_960);
    // Changes go on in the same memory, for the next successor.
    fs.mkdir(&ROOT, ROOT_INO, n("after"), 0o755).unwrap();
    let usage = fs.usage();
    drop(fs);
    let fs = take_over(&files);
    fs.handles_restored();
    assert_eq!(fs.usage(), usage);
    assert!(lookup(&fs, "after").is_ok());
    let new = fs
        .mkdir(&ROOT, ROOT_INO, n("newer"), 0o755)
        .unwrap()
        .attr
        .ino;
    assert!(new > g, "node ids are never reused");
}

#[test]
fn nodes_without_a_name_and_no_handle_are_freed_at_takeover() {
    let (fs, files) = kept();
    let base = fs.usage();
    let (f, o) = fs.create(&ROOT, ROOT_INO, n("f"), 0o600, 0).unwrap();
    fs.write(f.attr.ino, o.fh, 0, &[7; 8192], false).unwrap();
    fs.unlink(&ROOT, ROOT_INO, n("f")).unwrap();
    // The handle is not restored (its process ended with the old handler), and the kernel
    // forgot it: the successor frees it.
    drop(fs);
    let fs = take_over(&files);
    fs.forget(f.attr.ino, 1);
    fs.handles_restored();
    assert_eq!(fs.usage(), base);
}
