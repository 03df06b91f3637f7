//! Crash consistency of the image filesystem (the rbd driver's), on a device that loses
//! unflushed writes, in the style of redb's crash tests. Each round runs a random stream of
//! operations; a file enters the manifest only after its fsync returned. Then the device
//! "crashes", keeping a random subset of the writes it had not flushed. After reopening, every
//! manifest file must read back byte for byte, fsck must find nothing wrong, and the usage
//! counters must match the data.
use std::ffi::OsStr;
use std::sync::Arc;

use fvol::fs::image::{BlockDevice, CrashDevice, ImageFs, fsck};
use fvol::fs::memory::RootOwner;
use fvol::fs::quota::Limits;
use fvol::fs::{Caller, ROOT_INO, VolumeFs};

const ROOT: Caller = Caller {
    uid: 0,
    gid: 0,
    pid: 0,
};

/// A small deterministic generator (xorshift), so failures replay from the round number.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn bytes(rng: &mut Rng, len: usize) -> Vec<u8> {
    (0..len).map(|_| rng.next() as u8).collect()
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
    data
}

fn round(seed: u64) {
    let mut rng = Rng(seed * 0x9e37_79b9_7f4a_7c15 + 1);
    let device = Arc::new(CrashDevice::new(48 << 20));
    let dev: Arc<dyn BlockDevice> = device.clone();
    ImageFs::format(
        dev.clone(),
        RootOwner {
            uid: 0,
            gid: 0,
            mode: 0o755,
        },
        None,
    )
    .unwrap();
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
    std::mem::forget(fs);
    let keep = rng.next();
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
    let err = ImageFs::format(
        dev.clone(),
        RootOwner {
            uid: 0,
            gid: 0,
            mode: 0o755,
        },
        None,
    )
    .unwrap_err();
    assert!(err.to_string().contains("will not format"), "{err}");
    let clean = Arc::new(CrashDevice::new(16 << 20));
    let clean_dev: Arc<dyn BlockDevice> = clean.clone();
    ImageFs::format(
        clean_dev.clone(),
        RootOwner {
            uid: 0,
            gid: 0,
            mode: 0o755,
        },
        None,
    )
    .unwrap();
    clean.write_at(9, &[0xee]).unwrap();
    let err = ImageFs::open(clean_dev, Limits::default()).err().unwrap();
    assert!(err.to_string().contains("damaged"), "{err}");
}

/// Filling an image ends in a clean ENOSPC (a short write, then NoSpace), never in an I/O
/// error from the storage underneath, and the image stays consistent and usable.
#[test]
fn filling_an_image_ends_in_enospc() {
    for size in [64u64 << 20, 256 << 20] {
        let device = Arc::new(CrashDevice::new(size));
        let dev: Arc<dyn BlockDevice> = device.clone();
        ImageFs::format(
            dev.clone(),
            RootOwner {
                uid: 0,
                gid: 0,
                mode: 0o755,
            },
            None,
        )
        .unwrap();
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
