//! The memory core's accounting, driven through `VolumeFs` as the kernel would (lookups,
//! forgets, opens and releases), without a mount.
use std::ffi::OsStr;
use std::path::Path;

use super::cost::{self, ENTRY_BYTES, XATTR_BYTES};
use super::pages::PAGE;
use super::{MemFs, RootOwner};
use crate::fs::quota::Limits;
use crate::fs::*;

const ROOT: Caller = Caller {
    uid: 0,
    gid: 0,
    pid: 0,
    umask: 0,
};

fn volume(bytes: u64, inodes: Option<u64>) -> MemFs {
    let owner = RootOwner {
        uid: 0,
        gid: 0,
        mode: 0o755,
    };
    MemFs::new(
        Limits {
            bytes: Some(bytes),
            inodes,
        },
        owner,
    )
}

fn name(s: &str) -> &OsStr {
    OsStr::new(s)
}

/// Creates `file` in the root with `len` bytes; returns its node id (one kernel lookup held,
/// no handle open).
fn file(fs: &MemFs, file: &str, len: usize) -> Ino {
    let (entry, opened) = fs.create(&ROOT, ROOT_INO, name(file), 0o644, 0).unwrap();
    if len > 0 {
        assert_eq!(
            fs.write(entry.attr.ino, opened.fh, 0, &vec![1; len], false)
                .unwrap() as usize,
            len
        );
    }
    fs.release(entry.attr.ino, opened.fh).unwrap();
    entry.attr.ino
}

#[test]
fn a_nameless_node_stays_counted_until_forgotten_and_closed() {
    let fs = volume(1 << 20, None);
    let base = fs.usage();
    let ino = file(&fs, "f", 8192);
    fs.unlink(&ROOT, ROOT_INO, name("f")).unwrap();
    // The kernel still knows it (an O_PATH descriptor): still counted, and it opens again.
    assert_eq!(fs.usage().bytes, base.bytes + 8192);
    let opened = fs.open(&ROOT, ino, libc::O_RDWR).unwrap();
    // Writes to it are admitted against the quota like any other.
    let free = (1 << 20) - fs.usage().bytes;
    let n = fs
        .write(
            ino,
            opened.fh,
            8192,
            &vec![2; (free + PAGE) as usize],
            false,
        )
        .unwrap();
    assert_eq!(n as u64, free, "short at the quota");
    assert_eq!(
        fs.write(ino, opened.fh, 8192 + free, &[2; 10], false),
        Err(FsError::NoSpace)
    );
    fs.release(ino, opened.fh).unwrap();
    assert_eq!(fs.usage().bytes, 1 << 20, "closed but still known: counted");
    fs.forget(ino, 1);
    assert_eq!(fs.usage(), base, "forgotten and closed: freed");
    // Once only: a late forget or a stale handle changes nothing.
    fs.forget(ino, 1);
    assert_eq!(fs.usage(), base);
}

#[test]
fn forget_before_the_last_close_frees_at_the_close() {
    let fs = volume(1 << 20, None);
    let base = fs.usage();
    let ino = file(&fs, "f", 4096);
    let opened = fs.open(&ROOT, ino, libc::O_RDWR).unwrap();
    fs.unlink(&ROOT, ROOT_INO, name("f")).unwrap();
    fs.forget(ino, 1);
    assert_eq!(fs.usage().bytes, base.bytes + 4096, "open: counted");
    fs.release(ino, opened.fh).unwrap();
    assert_eq!(fs.usage(), base);
}

#[test]
fn a_node_the_kernel_no_longer_knows_is_freed_at_its_unlink() {
    let fs = volume(1 << 20, None);
    let base = fs.usage();
    let ino = file(&fs, "f", 4096);
    fs.forget(ino, 1);
    fs.unlink(&ROOT, ROOT_INO, name("f")).unwrap();
    assert_eq!(fs.usage(), base);
}

#[test]
fn names_take_pages_of_their_directory() {
    let fs = volume(1 << 20, None);
    assert_eq!(fs.usage().bytes, PAGE, "the root directory's first page");
    let per_page = PAGE / (ENTRY_BYTES + 2);
    for i in 0..per_page {
        fs.mknod(
            &ROOT,
            ROOT_INO,
            name(&format!("f{i}")),
            libc::S_IFREG | 0o644,
            0,
        )
        .unwrap();
    }
    assert_eq!(fs.usage().bytes, PAGE, "{per_page} entries fit in it");
    fs.mknod(&ROOT, ROOT_INO, name("more"), libc::S_IFREG | 0o644, 0)
        .unwrap();
    assert_eq!(fs.usage().bytes, 2 * PAGE, "one more takes a page");
    let root = fs.getattr(ROOT_INO, None).unwrap();
    assert_eq!(root.blocks * 512, 2 * PAGE, "du sees it");
    fs.unlink(&ROOT, ROOT_INO, name("more")).unwrap();
    assert_eq!(fs.usage().bytes, PAGE, "a removed name gives it back");
    // A directory of its own costs its first page (its name takes f0's room in the root).
    fs.unlink(&ROOT, ROOT_INO, name("f0")).unwrap();
    fs.mkdir(&ROOT, ROOT_INO, name("d"), 0o755).unwrap();
    assert_eq!(fs.usage().bytes, 2 * PAGE);
}

#[test]
fn a_flood_of_names_stops_at_the_quota() {
    // A high inode limit: the bytes stop it.
    let fs = volume(64 * PAGE, Some(1 << 20));
    let long = "n".repeat(255);
    let mut made = 0u64;
    let err = loop {
        let n = format!("{long}{made}");
        let n = &n[n.len() - 255..];
        match fs.mknod(&ROOT, ROOT_INO, name(n), libc::S_IFREG | 0o644, 0) {
            Ok(_) => made += 1,
            Err(e) => break e,
        }
    };
    assert_eq!(err, FsError::NoSpace);
    assert!(fs.usage().bytes <= 64 * PAGE);
    let each = cost::entry(name(&long));
    assert!(
        made * each <= 64 * PAGE && (made + 8) * each > 63 * PAGE,
        "{made} names"
    );
    // Hard links are names too.
    let link = "l".repeat(255);
    assert_eq!(
        VolumeFs::link(&fs, &ROOT, ROOT_INO + 1, ROOT_INO, name(&link)).err(),
        Some(FsError::NoSpace)
    );
}

#[test]
fn the_default_inode_limit_stops_a_flood_of_empty_files() {
    let fs = volume(1 << 20, None);
    let limit = cost::default_inode_limit(1 << 20);
    let mut dirs = Vec::new();
    let err = loop {
        // Spread over directories so that the inodes, not the names, run out.
        let dir = match dirs.last() {
            Some(&(d, n)) if n < 4 => d,
            _ => match fs.mkdir(&ROOT, ROOT_INO, name(&format!("d{}", dirs.len())), 0o755) {
                Ok(e) => {
                    dirs.push((e.attr.ino, 0));
                    e.attr.ino
                }
                Err(e) => break e,
            },
        };
        let count = dirs.last_mut().unwrap();
        match fs.mknod(&ROOT, dir, name(&format!("f{}", count.1)), libc::S_IFREG, 0) {
            Ok(_) => count.1 += 1,
            Err(e) => break e,
        }
    };
    assert_eq!(err, FsError::NoSpace);
    assert!(fs.usage().inodes <= limit);
    assert!(fs.usage().bytes <= 1 << 20);
    assert_eq!(fs.statfs().unwrap().files, limit);
}

#[test]
fn xattrs_take_pages_and_a_flood_stops_at_the_quota() {
    let fs = volume(256 * PAGE, None);
    let ino = file(&fs, "f", 0);
    let base = fs.usage().bytes;
    fs.setxattr(ino, name("user.a"), b"x", 0, false).unwrap();
    assert_eq!(fs.usage().bytes, base + PAGE);
    assert_eq!(fs.getattr(ino, None).unwrap().blocks * 512, PAGE);
    let value = vec![7u8; 64 << 10];
    let mut made = 0;
    let err = loop {
        match fs.setxattr(ino, name(&format!("user.big{made}")), &value, 0, false) {
            Ok(()) => made += 1,
            Err(e) => break e,
        }
    };
    assert_eq!(err, FsError::NoSpace);
    assert!(made < 16, "{made} xattrs of 64 KiB in 1 MiB");
    assert!(fs.usage().bytes <= 256 * PAGE);
    // A refused value changed nothing; replacing a value by a smaller one gives back.
    assert!(matches!(
        fs.getxattr(ino, name(&format!("user.big{made}")), 0),
        Err(FsError::Os(nix::errno::Errno::ENODATA))
    ));
    let full = fs.usage().bytes;
    fs.setxattr(ino, name("user.big0"), b"small", 0, false)
        .unwrap();
    assert!(fs.usage().bytes <= full - 15 * PAGE);
    for i in 0..made {
        fs.removexattr(ino, name(&format!("user.big{i}"))).unwrap();
    }
    fs.removexattr(ino, name("user.a")).unwrap();
    assert_eq!(fs.usage().bytes, base);
    // An xattr's size counts its name and an overhead too.
    assert_eq!(cost::xattr(name("user.a"), 1), 7 + XATTR_BYTES);
}

#[test]
fn long_symlink_targets_take_a_page_and_a_removed_node_gives_all_back() {
    let fs = volume(1 << 20, None);
    let base = fs.usage();
    let short = fs
        .symlink(&ROOT, ROOT_INO, name("s"), Path::new("target"))
        .unwrap();
    assert_eq!(short.attr.blocks, 0);
    let long = "t".repeat(3000);
    let e = fs
        .symlink(&ROOT, ROOT_INO, name("l"), Path::new(&long))
        .unwrap();
    assert_eq!(e.attr.blocks * 512, PAGE);
    assert_eq!(fs.usage().bytes, base.bytes + PAGE);
    fs.setxattr(e.attr.ino, name("trusted.x"), &[1; 2000], 0, false)
        .unwrap();
    assert_eq!(fs.usage().bytes, base.bytes + 2 * PAGE);
    for (n, ino) in [("s", short.attr.ino), ("l", e.attr.ino)] {
        fs.unlink(&ROOT, ROOT_INO, name(n)).unwrap();
        fs.forget(ino, 1);
    }
    assert_eq!(fs.usage(), base);
}

#[test]
fn a_rename_needs_room_in_the_directory_that_gains_the_name() {
    let fs = volume(4 * PAGE, Some(100));
    let d = fs
        .mkdir(&ROOT, ROOT_INO, name("d"), 0o755)
        .unwrap()
        .attr
        .ino;
    // Fill the rest with names in d, then leave one name in the root.
    let mut i = 0;
    while fs
        .mknod(&ROOT, d, name(&format!("f{i}")), libc::S_IFREG, 0)
        .is_ok()
    {
        i += 1;
    }
    assert!(fs.usage().bytes <= 4 * PAGE);
    // Moving a name from d to the root needs no page more there: the root's page has room.
    let r = Rename {
        caller: ROOT,
        parent: d,
        name: name("f0"),
        new_parent: ROOT_INO,
        new_name: name("moved"),
        flags: 0,
    };
    fs.rename(&r).unwrap();
    // Within one directory, a longer name in the same page costs nothing more.
    let r = Rename {
        parent: ROOT_INO,
        name: name("moved"),
        new_parent: ROOT_INO,
        new_name: name("moved-again"),
        ..r
    };
    fs.rename(&r).unwrap();
    assert!(fs.usage().bytes <= 4 * PAGE);
}

/// A create refused because its directory needs a page that does not fit gives back the
/// inode it had charged without counting a release: the adapter tries a refused operation
/// again after each release, so one that counted its own refund was tried without end.
#[test]
fn a_create_refused_for_its_directory_page_releases_nothing() {
    let fs = volume(2 * PAGE, Some(100));
    for i in 0..15 {
        file(&fs, &format!("f{i:02}"), 0);
    }
    let (usage, releases) = (fs.usage(), fs.releases());
    let refused = fs.create(&ROOT, ROOT_INO, name("f15"), 0o644, 0);
    assert!(matches!(refused, Err(FsError::NoSpace)));
    assert_eq!(fs.usage(), usage);
    assert_eq!(fs.releases(), releases, "a refund is no release");
}
