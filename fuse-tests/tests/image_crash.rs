//! Crash consistency and capacity of the image filesystem (the rbd driver's), on a device that
//! loses unflushed writes, in the style of redb's crash tests. Each round runs a random stream
//! of operations; a file enters the manifest only after its fsync returned. Then the device
//! "crashes", keeping a random subset of the writes it had not flushed. After reopening, every
//! manifest file must read back byte for byte, fsck must find nothing wrong, and the usage
//! counters must match the data. Targeted tests cover the ordering rules of the data region:
//! freed blocks are not reused before a durable commit, and a crash at any write of a commit
//! never leaves metadata that maps unwritten data.
use std::ffi::OsStr;
use std::sync::Arc;

use fuse_tests::Rng;
use fvol::fs::image::{BlockDevice, CrashDevice, ImageFs, fsck};
use fvol::fs::memory::RootOwner;
use fvol::fs::quota::Limits;
use fvol::fs::{Caller, ROOT_INO, VolumeFs};

const ROOT: Caller = Caller {
    uid: 0,
    gid: 0,
    pid: 0,
    umask: 0,
};

fn bytes(rng: &mut Rng, len: usize) -> Vec<u8> {
    (0..len).map(|_| rng.next_u64() as u8).collect()
}

fn read_all(fs: &ImageFs, name: &str) -> Vec<u8> {
    let entry = fs
        .lookup(&ROOT, ROOT_INO, OsStr::new(name))
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    let opened = fs.open(&ROOT, entry.attr.ino, libc::O_RDONLY).unwrap();
    let data = fs
        .read(entry.attr.ino, opened.fh, 0, entry.attr.size as u32)
        .unwrap();
    fs.release(entry.attr.ino, opened.fh).unwrap();
    fs.forget(entry.attr.ino, 1);
    data
}

const OWNER: RootOwner = RootOwner {
    uid: 0,
    gid: 0,
    mode: 0o755,
};

/// A formatted in-memory image of `size` bytes: the device (to crash it) and the same as a
/// `BlockDevice`.
fn new_image(size: u64) -> (Arc<CrashDevice>, Arc<dyn BlockDevice>) {
    let device = Arc::new(CrashDevice::new(size));
    let dev: Arc<dyn BlockDevice> = device.clone();
    ImageFs::format(dev.clone(), OWNER, None).unwrap();
    (device, dev)
}

/// Creates `name` in the root with `data`, fsynced if asked.
fn write_file(fs: &ImageFs, name: &str, data: &[u8], fsync: bool) -> fvol::fs::FsResult<()> {
    let (e, o) = fs.create(&ROOT, ROOT_INO, OsStr::new(name), 0o644, libc::O_RDWR)?;
    let mut off = 0;
    while off < data.len() {
        let n = (data.len() - off).min(1 << 20);
        off += fs.write(e.attr.ino, o.fh, off as u64, &data[off..off + n], false)? as usize;
    }
    if fsync {
        fs.fsync(e.attr.ino, o.fh, false)?;
    }
    fs.release(e.attr.ino, o.fh)?;
    // As the kernel does when it evicts the inode: a file it no longer knows is deleted at
    // its unlink.
    fs.forget(e.attr.ino, 1);
    Ok(())
}

fn exists(fs: &ImageFs, name: &str) -> bool {
    fs.lookup(&ROOT, ROOT_INO, OsStr::new(name)).is_ok()
}

fn fsck_clean(dev: &Arc<dyn BlockDevice>, what: &str) -> fvol::fs::image::FsckReport {
    let report = fsck(dev.clone()).unwrap();
    assert!(
        report.problems.is_empty(),
        "{what}: fsck: {:?}",
        report.problems
    );
    report
}

fn round(seed: u64) {
    let mut rng = Rng(seed * 0x9e37_79b9_7f4a_7c15 + 1);
    let (device, dev) = new_image(48 << 20);
    let fs = ImageFs::open(dev.clone(), Limits::default()).unwrap();
    let mut manifest: Vec<(String, Vec<u8>)> = Vec::new();
    let mut scratch: Vec<String> = Vec::new();
    for op in 0..(20 + rng.below(40)) {
        let name = format!("f{seed}-{op}");
        match rng.below(4) {
            // A file written and fsynced: it must survive.
            0 | 1 => {
                let len = rng.below(200_000) as usize + 1;
                let data = bytes(&mut rng, len);
                let (e, o) = fs
                    .create(&ROOT, ROOT_INO, OsStr::new(&name), 0o644, libc::O_RDWR)
                    .unwrap();
                let mut off = 0;
                while off < data.len() {
                    let n = (data.len() - off).min(1 << 17);
                    off += fs
                        .write(e.attr.ino, o.fh, off as u64, &data[off..off + n], false)
                        .unwrap() as usize;
                }
                fs.fsync(e.attr.ino, o.fh, false).unwrap();
                fs.release(e.attr.ino, o.fh).unwrap();
                manifest.push((name, data));
            }
            // A file written but never fsynced: it may or may not survive, but must not harm.
            2 => {
                let len = rng.below(100_000) as usize + 1;
                let data = bytes(&mut rng, len);
                let (e, o) = fs
                    .create(&ROOT, ROOT_INO, OsStr::new(&name), 0o644, libc::O_RDWR)
                    .unwrap();
                fs.write(e.attr.ino, o.fh, rng.below(50_000), &data, false)
                    .unwrap();
                fs.release(e.attr.ino, o.fh).unwrap();
                scratch.push(name);
            }
            // Churn: unlink or truncate an unsynced file.
            _ => {
                if let Some(victim) = scratch.pop() {
                    if rng.below(2) == 0 {
                        fs.unlink(&ROOT, ROOT_INO, OsStr::new(&victim)).unwrap();
                    } else {
                        let e = fs.lookup(&ROOT, ROOT_INO, OsStr::new(&victim)).unwrap();
                        let change = fvol::fs::SetAttr {
                            size: Some(rng.below(10_000)),
                            ..Default::default()
                        };
                        fs.setattr(&ROOT, e.attr.ino, &change).unwrap();
                    }
                }
            }
        }
    }
    // The crash: no clean close, and the device keeps an arbitrary subset of unflushed writes.
    fs.abandon();
    let keep = rng.next_u64();
    device.crash(|i| (keep >> (i % 64)) & 1 == 1);

    let report = fsck(dev.clone()).unwrap();
    assert!(
        report.problems.is_empty(),
        "round {seed}: fsck after the crash: {:?}",
        report.problems
    );
    let fs = ImageFs::open(dev.clone(), Limits::default()).unwrap();
    for (name, data) in &manifest {
        assert!(
            read_all(&fs, name) == *data,
            "round {seed}: fsynced file {name} changed"
        );
    }
    fs.sync_all().unwrap();
    drop(fs);
    let report = fsck(dev).unwrap();
    assert!(
        report.problems.is_empty(),
        "round {seed}: fsck after reopening: {:?}",
        report.problems
    );
    assert_eq!(report.orphans, 0, "round {seed}: orphans survive a mount");
}

#[test]
fn fsynced_data_survives_any_crash() {
    for seed in 0..30 {
        round(seed);
    }
}

#[test]
fn foreign_and_damaged_images_are_refused() {
    let device = Arc::new(CrashDevice::new(16 << 20));
    let dev: Arc<dyn BlockDevice> = device.clone();
    let err = ImageFs::open(dev.clone(), Limits::default()).err().unwrap();
    assert!(err.to_string().contains("not an fvol filesystem"), "{err}");
    device.write_at(1000, b"EXT4 or anything else").unwrap();
    let err = ImageFs::format(dev.clone(), OWNER, None).unwrap_err();
    assert!(err.to_string().contains("will not format"), "{err}");
    let (clean, clean_dev) = new_image(16 << 20);
    clean.write_at(9, &[0xee]).unwrap();
    let err = ImageFs::open(clean_dev, Limits::default()).err().unwrap();
    assert!(err.to_string().contains("damaged"), "{err}");
}

/// Filling an image ends in a clean ENOSPC (a short write, then NoSpace), never in an I/O
/// error from the storage underneath, and the image stays consistent and usable.
#[test]
fn filling_an_image_ends_in_enospc() {
    for size in [64u64 << 20, 256 << 20] {
        let (_device, dev) = new_image(size);
        let fs = ImageFs::open(dev.clone(), Limits::default()).unwrap();
        let capacity = fs.statfs().unwrap().blocks * 4096;
        let chunk = vec![7u8; 1 << 20];
        let (mut file, mut written) = (0, 0u64);
        'fill: loop {
            let name = format!("fill{file}");
            let (e, o) = fs
                .create(&ROOT, ROOT_INO, OsStr::new(&name), 0o644, libc::O_RDWR)
                .unwrap();
            for i in 0..16u64 {
                match fs.write(e.attr.ino, o.fh, i << 20, &chunk, false) {
                    Ok(n) => written += n as u64,
                    Err(fvol::fs::FsError::NoSpace) => break 'fill,
                    Err(err) => panic!("image of {size} bytes: {err:?} after {written} bytes"),
                }
            }
            fs.release(e.attr.ino, o.fh).unwrap();
            file += 1;
        }
        assert!(written > capacity * 9 / 10, "{written} of {capacity} bytes");
        fs.sync_all().unwrap();
        drop(fs);
        let report = fsck(dev).unwrap();
        assert!(report.problems.is_empty(), "{:?}", report.problems);
    }
}

/// df shows the data region: all of the image but its metadata region (and the superblock),
/// at least 90 % of any image of 256 MiB or more.
#[test]
fn capacity_is_most_of_the_image() {
    for size in [256u64 << 20, 1 << 30] {
        let (_device, dev) = new_image(size);
        let fs = ImageFs::open(dev.clone(), Limits::default()).unwrap();
        let st = fs.statfs().unwrap();
        let capacity = st.blocks * st.frsize as u64;
        assert!(
            capacity >= size / 10 * 9 && capacity < size,
            "{capacity} of {size}"
        );
        assert!(st.files > 0 && st.ffree < st.files, "{st:?}");
    }
}

/// After filling an image and deleting everything (without a sync), the space is usable
/// again at once: the blocks the deletes freed wait for a durable commit, which the next
/// write that needs them makes.
#[test]
fn space_freed_by_deletes_is_reused() {
    let (device, dev) = new_image(64 << 20);
    let fs = ImageFs::open(dev.clone(), Limits::default()).unwrap();
    let capacity = fs.statfs().unwrap().blocks * 4096;
    let data = bytes(&mut Rng(5), (capacity - (1 << 20)) as usize);
    write_file(&fs, "big", &data, true).unwrap();
    fs.unlink(&ROOT, ROOT_INO, OsStr::new("big")).unwrap();
    let flushes = device.flushes();
    write_file(&fs, "again", &data, false).unwrap();
    assert!(
        device.flushes() > flushes,
        "reusing the freed blocks needed a durable commit first"
    );
    assert!(read_all(&fs, "again") == data);
    fs.sync_all().unwrap();
    drop(fs);
    fsck_clean(&dev, "after reuse");
}

/// A file deleted by a commit that was not durable is whole after a crash, even when another
/// file was written meanwhile and the disk kept every write: its blocks were not reused.
/// When only its blocks are free, a write that needs them first makes the delete durable.
#[test]
fn freed_blocks_are_not_reused_before_a_durable_commit() {
    for tight in [false, true] {
        let (device, dev) = new_image(64 << 20);
        let fs = ImageFs::open(dev.clone(), Limits::default()).unwrap();
        let mut rng = Rng(7 + tight as u64);
        let a = bytes(&mut rng, 4 << 20);
        // Small enough when not tight that no periodic durable commit comes in between.
        let b = bytes(&mut rng, if tight { 4 << 20 } else { 1 << 20 });
        write_file(&fs, "a", &a, true).unwrap();
        if tight {
            // Leave only 2 MiB free besides a's blocks.
            let st = fs.statfs().unwrap();
            let filler = bytes(&mut rng, ((st.bfree * 4096) - (2 << 20)) as usize);
            write_file(&fs, "filler", &filler, true).unwrap();
        }
        fs.unlink(&ROOT, ROOT_INO, OsStr::new("a")).unwrap();
        let flushes = device.flushes();
        write_file(&fs, "b", &b, false).unwrap();
        let synced = device.flushes() > flushes;
        assert_eq!(
            synced, tight,
            "a durable commit only when a's blocks were needed"
        );
        fs.abandon();
        device.crash(|_| true);
        fsck_clean(&dev, "after the crash");
        let fs = ImageFs::open(dev.clone(), Limits::default()).unwrap();
        if tight {
            assert!(!exists(&fs, "a"), "the delete was made durable");
        } else {
            assert!(read_all(&fs, "a") == a, "a's blocks were reused");
        }
        // b: whatever part of it a durable commit covered, and nothing but its own data.
        if exists(&fs, "b") {
            let got = read_all(&fs, "b");
            assert!(got[..] == b[..got.len()], "b holds foreign data");
        }
        drop(fs);
        fsck_clean(&dev, "after reopening");
    }
}

/// The power fails at every write or flush of a write + fsync in turn (the disk keeping a
/// random part of what was not flushed): the metadata never maps data that did not reach the
/// disk. The file is absent, or holds a prefix of its data (what a durable commit covered: on
/// this small image redb starts past half its metadata region, where commits are made durable
/// between writes, see `room`), and all of it once the fsync returned; the file fsynced before
/// is intact; fsck is clean.
#[test]
fn crash_at_any_point_of_a_commit() {
    let a = bytes(&mut Rng(11), 300_000);
    let b = bytes(&mut Rng(12), 2_500_000);
    // How many writes and flushes the write + fsync of b takes.
    let steps = {
        let (device, dev) = new_image(64 << 20);
        let fs = ImageFs::open(dev, Limits::default()).unwrap();
        write_file(&fs, "a", &a, true).unwrap();
        let before = device.ops();
        write_file(&fs, "b", &b, true).unwrap();
        device.ops() - before
    };
    assert!(steps > 3, "{steps} device operations");
    for cut in 0..=steps {
        let (device, dev) = new_image(64 << 20);
        let fs = ImageFs::open(dev.clone(), Limits::default()).unwrap();
        write_file(&fs, "a", &a, true).unwrap();
        device.power_off_after(cut);
        write_file(&fs, "b", &b, true).unwrap();
        fs.abandon();
        let mut rng = Rng(cut + 1);
        let keep = rng.next_u64();
        device.crash(|i| (keep >> (i % 64)) & 1 == 1);
        fsck_clean(&dev, &format!("cut after {cut} of {steps}"));
        let fs = ImageFs::open(dev.clone(), Limits::default()).unwrap();
        assert!(read_all(&fs, "a") == a, "cut {cut}: a changed");
        if exists(&fs, "b") {
            let got = read_all(&fs, "b");
            assert!(
                got.len() <= b.len() && got[..] == b[..got.len()],
                "cut {cut}: b has {} bytes, not its data",
                got.len()
            );
        }
        if cut == steps {
            assert!(
                read_all(&fs, "b") == b,
                "the fsync completed before the cut"
            );
        }
    }
}

/// Filling the metadata region (names and xattrs, no inode limit) ends in a clean ENOSPC,
/// never in a stopped database; deleting makes room again.
#[test]
fn full_metadata_is_a_clean_enospc() {
    let (_device, dev) = new_image(16 << 20);
    let limits = Limits {
        bytes: None,
        inodes: Some(1 << 40),
    };
    let fs = ImageFs::open(dev.clone(), limits).unwrap();
    let value = vec![b'x'; 2000];
    let mut made = 0;
    let err = loop {
        let name = format!("{made:0>200}");
        match fs.mknod(&ROOT, ROOT_INO, OsStr::new(&name), libc::S_IFREG | 0o644, 0) {
            Ok(e) => match fs.setxattr(e.attr.ino, OsStr::new("user.pad"), &value, 0, false) {
                Ok(()) => made += 1,
                Err(e) => break e,
            },
            Err(e) => break e,
        }
        assert!(made < 1_000_000, "metadata never filled");
    };
    assert_eq!(err, fvol::fs::FsError::NoSpace, "after {made} files");
    assert!(made > 100, "only {made} files");
    // Still a working filesystem: a sync, reads, deletes.
    fs.sync_all().unwrap();
    for i in 0..made {
        fs.unlink(&ROOT, ROOT_INO, OsStr::new(&format!("{i:0>200}")))
            .unwrap();
    }
    fs.sync_all().unwrap();
    fs.sync_all().unwrap();
    fs.mknod(
        &ROOT,
        ROOT_INO,
        OsStr::new("after"),
        libc::S_IFREG | 0o644,
        0,
    )
    .expect("room again after deleting everything");
    fs.sync_all().unwrap();
    drop(fs);
    let report = fsck_clean(&dev, "after filling the metadata");
    assert!(
        report.metadata_bytes <= report.metadata_capacity,
        "{report:?}"
    );
}

/// A file of more extents than one transaction unmaps (4,096) is truncated and deleted in
/// steps; a crash in the middle of the delete leaves an orphan the next open finishes off.
#[test]
fn long_extent_lists_go_in_steps() {
    let (device, dev) = new_image(64 << 20);
    let fs = ImageFs::open(dev.clone(), Limits::default()).unwrap();
    let (e, o) = fs
        .create(&ROOT, ROOT_INO, OsStr::new("sparse"), 0o644, libc::O_RDWR)
        .unwrap();
    let extents = 9000u64;
    for i in 0..extents {
        // Every other block: each write is its own extent.
        let n = fs
            .write(
                e.attr.ino,
                o.fh,
                i * 8192,
                &[(i % 251) as u8 + 1; 4096],
                false,
            )
            .unwrap();
        assert_eq!(n, 4096);
    }
    assert_eq!(fs.usage().bytes, extents * 4096);
    // Truncate to the first 100 extents.
    let change = fvol::fs::SetAttr {
        size: Some(100 * 8192),
        ..Default::default()
    };
    fs.setattr(&ROOT, e.attr.ino, &change).unwrap();
    assert_eq!(fs.getattr(e.attr.ino, None).unwrap().size, 100 * 8192);
    assert_eq!(fs.usage().bytes, 100 * 4096);
    let head = fs.read(e.attr.ino, o.fh, 99 * 8192, 8192).unwrap();
    assert!(head[..4096].iter().all(|b| *b == 100) && head[4096..].iter().all(|b| *b == 0));
    // Write past the new end again (fresh blocks; the old ones were freed).
    for i in 100..extents {
        fs.write(e.attr.ino, o.fh, i * 8192, &[7; 4096], false)
            .unwrap();
    }
    fs.sync_all().unwrap();
    // Unlinked while open: deleted at the last close, in steps. Crash before that.
    fs.unlink(&ROOT, ROOT_INO, OsStr::new("sparse")).unwrap();
    fs.sync_all().unwrap();
    fs.abandon();
    device.crash(|_| true);
    let report = fsck_clean(&dev, "open orphan");
    assert_eq!(report.orphans, 1);
    let fs = ImageFs::open(dev.clone(), Limits::default()).unwrap();
    assert_eq!(fs.usage().bytes, 0);
    drop(fs);
    let report = fsck_clean(&dev, "after the orphan's deletion");
    assert_eq!((report.orphans, report.data_bytes), (0, 0));
}

/// What nobody fsynced becomes durable by itself once the volume is idle for the commit
/// interval (5 s, as ext4's journal commit): a crash after that loses nothing.
#[test]
fn idle_changes_are_committed_within_the_interval() {
    let (device, dev) = new_image(64 << 20);
    let fs = ImageFs::open(dev.clone(), Limits::default()).unwrap();
    let data = bytes(&mut Rng(21), 200_000);
    write_file(&fs, "unsynced", &data, false).unwrap();
    std::thread::sleep(std::time::Duration::from_secs(7));
    fs.abandon();
    device.crash(|_| false);
    fsck_clean(&dev, "after the crash");
    let fs = ImageFs::open(dev.clone(), Limits::default()).unwrap();
    assert!(read_all(&fs, "unsynced") == data);
}

/// A punch without KEEP_SIZE is refused (as by Linux) and changes nothing; with it, the range
/// reads as zeros and its whole blocks are freed.
#[test]
fn punching_a_hole() {
    let (_device, dev) = new_image(64 << 20);
    let fs = ImageFs::open(dev.clone(), Limits::default()).unwrap();
    let data = bytes(&mut Rng(31), 64 << 10);
    write_file(&fs, "f", &data, false).unwrap();
    let e = fs.lookup(&ROOT, ROOT_INO, OsStr::new("f")).unwrap();
    let o = fs.open(&ROOT, e.attr.ino, libc::O_RDWR).unwrap();
    let punch = libc::FALLOC_FL_PUNCH_HOLE;
    assert!(fs.fallocate(e.attr.ino, o.fh, 0, 64 << 10, punch).is_err());
    assert!(read_all(&fs, "f") == data);
    let keep = punch | libc::FALLOC_FL_KEEP_SIZE;
    fs.fallocate(e.attr.ino, o.fh, 1000, 20_000, keep).unwrap();
    let mut want = data.clone();
    want[1000..21_000].fill(0);
    assert!(read_all(&fs, "f") == want);
    // Blocks 1..5 (4 KiB each) were whole inside the range: freed.
    assert_eq!(fs.usage().bytes, (16 - 4) * 4096);
    fs.release(e.attr.ino, o.fh).unwrap();
    fs.sync_all().unwrap();
    drop(fs);
    fsck_clean(&dev, "after punching");
}

/// A successor after a crash (`ImageFs::open_carried` with its predecessor's tables, the way a
/// restarted daemon opens an rbd volume whose mount the keeper held): a file the kernel holds
/// open without a name stays readable until its handle is released, a file made after the last
/// durable commit comes back from the redo journal with its inode number (the kernel knows
/// it), and inode numbers are not reused.
#[test]
fn a_successor_keeps_what_the_kernel_holds_and_reuses_no_inode_number() {
    use fvol::fs::resume::{Carry, NoHolder};
    let (device, dev) = new_image(64 << 20);
    let limits = Limits::default();
    let mut first = Carry::fresh(Arc::new(NoHolder));
    let fs = ImageFs::open_carried(dev.clone(), limits, &mut first).unwrap();
    let tables = first.take_outgoing();
    // An open file without a name, made durable.
    let (entry, opened) = fs
        .create(&ROOT, ROOT_INO, OsStr::new("held"), 0o644, libc::O_RDWR)
        .unwrap();
    fs.write(entry.attr.ino, opened.fh, 0, b"kept while open", false)
        .unwrap();
    fs.unlink(&ROOT, ROOT_INO, OsStr::new("held")).unwrap();
    fs.fsync(entry.attr.ino, opened.fh, false).unwrap();
    // A file made after that, never made durable: replayed from the journal.
    let (lost, _) = fs
        .create(&ROOT, ROOT_INO, OsStr::new("lost"), 0o644, libc::O_RDWR)
        .unwrap();
    fs.abandon();
    device.crash(|_| false);

    let mut second = Carry::resumed(tables, Vec::new(), Arc::new(NoHolder));
    let fs = ImageFs::open_carried(dev.clone(), limits, &mut second).unwrap();
    fs.restore_handle(opened.fh, entry.attr.ino, libc::O_RDWR, false)
        .unwrap();
    fs.handles_restored();
    assert_eq!(
        fs.read(entry.attr.ino, opened.fh, 0, 100).unwrap(),
        b"kept while open"
    );
    let replayed = fs.lookup(&ROOT, ROOT_INO, OsStr::new("lost")).unwrap();
    assert_eq!(replayed.attr.ino, lost.attr.ino);
    let (new, _) = fs
        .create(&ROOT, ROOT_INO, OsStr::new("new"), 0o644, libc::O_RDWR)
        .unwrap();
    assert!(
        new.attr.ino > lost.attr.ino,
        "inode {} of a lost file handed out again",
        new.attr.ino
    );
    // Released, the nameless inode goes.
    let before = fs.usage().inodes;
    fs.release(entry.attr.ino, opened.fh).unwrap();
    fs.forget(entry.attr.ino, 1);
    assert_eq!(fs.usage().inodes, before - 1);
    fs.sync_all().unwrap();
    drop(fs);
    assert!(fsck(dev).unwrap().problems.is_empty());
}
