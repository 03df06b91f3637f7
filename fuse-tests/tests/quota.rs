//! Quota boundaries through a real FUSE mount, the same tests for every backend.
use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::{FileExt, MetadataExt};

use fuse_tests::{Backend, TestSession};
use nix::fcntl::{FallocateFlags, fallocate};

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;

/// Asserts the invariant every test relies on: usage is what `du` counts, and never more than
/// the limit.
fn check_usage(s: &TestSession, limit: u64) {
    let used = s.used_bytes();
    assert_eq!(used, s.du(), "usage must equal what du counts");
    assert!(used <= limit, "usage {used} exceeds the limit {limit}");
}

/// Waits for usage to reach `want`: a close's RELEASE reaches the handler asynchronously, so
/// space of a file unlinked right after its close comes back a moment later.
fn wait_usage(s: &TestSession, want: u64) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while s.used_bytes() != want && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    assert_eq!(s.used_bytes(), want);
}

fn no_space(e: &std::io::Error) -> bool {
    e.raw_os_error() == Some(libc::ENOSPC)
}

macro_rules! quota_tests {
    ($($module:ident => $backend:expr),*) => {$(
        mod $module {
            use super::*;

            fn session(bytes: Option<u64>, inodes: Option<u64>) -> TestSession {
                TestSession::with($backend, bytes, inodes)
            }

        #[test]
        fn exact_fill_then_enospc() {
            let limit = MIB;
            let s = session(Some(limit), None);
            let free = limit - s.used_bytes();
            let mut f = File::create(s.path("fill")).unwrap();
            let n = f.write(&vec![7u8; free as usize]).unwrap();
            assert_eq!(n as u64, free, "a write that exactly fits is whole");
            assert_eq!(s.used_bytes(), limit);
            let err = f.write(&[1]).unwrap_err();
            assert!(no_space(&err), "next write: {err}");
            check_usage(&s, limit);
        }

        #[test]
        fn write_that_partly_fits_is_short_then_enospc() {
            let limit = MIB;
            let s = session(Some(limit), None);
            let free = limit - s.used_bytes();
            let mut f = File::create(s.path("big")).unwrap();
            let n = f.write(&vec![1u8; (free + 64 * KIB) as usize]).unwrap();
            assert_eq!(n as u64, free, "short write of what fits");
            let err = f.write(&[1u8; 4096]).unwrap_err();
            assert!(no_space(&err), "{err}");
            check_usage(&s, limit);
            // What was written reads back.
            assert_eq!(std::fs::read(s.path("big")).unwrap().len() as u64, free);
        }

        #[test]
        fn fallocate_is_limited_and_punch_hole_frees() {
            let limit = MIB;
            let s = session(Some(limit), None);
            let f = File::create(s.path("f")).unwrap();
            let err = fallocate(f.as_fd(), FallocateFlags::empty(), 0, (2 * MIB) as i64).unwrap_err();
            assert_eq!(err, nix::errno::Errno::ENOSPC);
            assert_eq!(
                f.metadata().unwrap().len(),
                0,
                "a refused fallocate changes nothing"
            );
            fallocate(f.as_fd(), FallocateFlags::empty(), 0, (512 * KIB) as i64).unwrap();
            let after_alloc = s.used_bytes();
            assert!(after_alloc >= 512 * KIB);
            let punch = FallocateFlags::FALLOC_FL_PUNCH_HOLE | FallocateFlags::FALLOC_FL_KEEP_SIZE;
            fallocate(f.as_fd(), punch, 0, (256 * KIB) as i64).unwrap();
            assert_eq!(s.used_bytes(), after_alloc - 256 * KIB);
            check_usage(&s, limit);
        }

        /// Overwrites of allocated blocks allocate nothing, so they succeed at a full quota
        /// (the local driver skips its look at the host's allocation for blocks it knows are
        /// allocated); once a punch hole, a truncate or an open with O_TRUNC took blocks
        /// away, writing them is limited again, exactly.
        #[test]
        fn overwrites_are_free_until_allocation_is_taken_away() {
            let limit = MIB;
            let s = session(Some(limit), None);
            let f = OpenOptions::new().create(true).read(true).write(true).open(s.path("f")).unwrap();
            f.write_all_at(&vec![1u8; (256 * KIB) as usize], 0).unwrap();
            f.sync_all().unwrap();
            // Fills what is left, so the quota is full.
            let fill = |name: &str| {
                let free = limit - s.used_bytes();
                let mut g = File::create(s.path(name)).unwrap();
                assert_eq!(g.write(&vec![7u8; free as usize]).unwrap() as u64, free);
                assert_eq!(s.used_bytes(), limit, "{name} fills the quota");
            };
            let refused = |offset: u64, what: &str| {
                let err = f.write_at(&[9u8; 4096], offset).unwrap_err();
                assert!(no_space(&err), "write at {offset} after {what}: {err}");
                assert_eq!(s.used_bytes(), limit, "a refused write after {what} takes nothing");
            };
            fill("fill1");
            for round in 0..3u8 {
                for i in (0..22u64).rev() {
                    f.write_all_at(&[round; 4096], i * 12 * KIB).unwrap();
                }
            }
            f.write_all_at(&vec![2u8; (256 * KIB) as usize], 0).unwrap();
            assert_eq!(s.used_bytes(), limit, "overwrites allocate nothing");

            let punch = FallocateFlags::FALLOC_FL_PUNCH_HOLE | FallocateFlags::FALLOC_FL_KEEP_SIZE;
            fallocate(f.as_fd(), punch, (64 * KIB) as i64, (64 * KIB) as i64).unwrap();
            assert_eq!(s.used_bytes(), limit - 64 * KIB, "the punch hole gives its blocks back");
            fill("fill2");
            refused(64 * KIB, "a punch hole");
            refused(124 * KIB, "a punch hole");
            f.write_all_at(&[3u8; 4096], 60 * KIB).unwrap();
            f.write_all_at(&[3u8; 4096], 128 * KIB).unwrap();

            f.set_len(32 * KIB).unwrap();
            assert_eq!(s.used_bytes(), limit - (256 - 32 - 64) * KIB, "the truncate gives blocks back");
            fill("fill3");
            f.set_len(256 * KIB).unwrap();
            refused(32 * KIB, "a truncate");
            refused(200 * KIB, "a truncate");
            f.write_all_at(&[4u8; 4096], 0).unwrap();

            drop(OpenOptions::new().write(true).truncate(true).open(s.path("f")).unwrap());
            assert_eq!(s.used_bytes(), limit - 32 * KIB, "O_TRUNC gives the blocks back");
            fill("fill4");
            refused(0, "an open with O_TRUNC");
            refused(28 * KIB, "an open with O_TRUNC");
            check_usage(&s, limit);
        }

        #[test]
        fn truncate_frees_and_extension_is_a_free_hole() {
            let limit = MIB;
            let s = session(Some(limit), None);
            let base = s.used_bytes();
            std::fs::write(s.path("t"), vec![3u8; (256 * KIB) as usize]).unwrap();
            assert_eq!(s.used_bytes(), base + 256 * KIB);
            let f = OpenOptions::new().write(true).open(s.path("t")).unwrap();
            f.set_len(64 * KIB).unwrap();
            assert_eq!(
                s.used_bytes(),
                base + 64 * KIB,
                "shrinking gives space back"
            );
            f.set_len(10 * MIB).unwrap();
            assert_eq!(
                s.used_bytes(),
                base + 64 * KIB,
                "extending makes a hole, which is free"
            );
            // Filling the hole is limited like any write.
            let err = f.write_all_at(&vec![1u8; (2 * MIB) as usize], 4 * MIB);
            assert!(err.is_err_and(|e| no_space(&e) || e.kind() == ErrorKind::WriteZero));
            check_usage(&s, limit);
        }

        #[test]
        fn sparse_files_use_only_written_blocks() {
            let limit = MIB;
            let s = session(Some(limit), None);
            let base = s.used_bytes();
            let f = File::create(s.path("sparse")).unwrap();
            f.write_all_at(b"x", 100 * MIB).unwrap();
            assert_eq!(f.metadata().unwrap().len(), 100 * MIB + 1);
            assert_eq!(s.used_bytes(), base + s.unit(), "one byte costs one allocation unit");
            let data = nix::unistd::lseek(f.as_fd(), 0, nix::unistd::Whence::SeekData).unwrap();
            assert_eq!(
                data as u64,
                100 * MIB / s.unit() * s.unit(),
                "SEEK_DATA finds the written block"
            );
            check_usage(&s, limit);
        }

        #[test]
        fn hard_links_count_once() {
            let limit = MIB;
            let s = session(Some(limit), None);
            std::fs::write(s.path("a"), vec![1u8; (128 * KIB) as usize]).unwrap();
            let before = s.used_bytes();
            std::fs::hard_link(s.path("a"), s.path("b")).unwrap();
            assert_eq!(s.used_bytes(), before);
            assert_eq!(
                std::fs::metadata(s.path("a")).unwrap().ino(),
                std::fs::metadata(s.path("b")).unwrap().ino(),
                "one inode number for both names"
            );
            std::fs::remove_file(s.path("a")).unwrap();
            assert_eq!(
                s.used_bytes(),
                before,
                "the data lives on under its other name"
            );
            std::fs::remove_file(s.path("b")).unwrap();
            wait_usage(&s, before - 128 * KIB);
            check_usage(&s, limit);
        }

        #[test]
        fn copy_file_range_is_limited() {
            let limit = MIB;
            let s = session(Some(limit), None);
            std::fs::write(s.path("src"), vec![9u8; (600 * KIB) as usize]).unwrap();
            let src = File::open(s.path("src")).unwrap();
            let dst = File::create(s.path("dst")).unwrap();
            let (mut off_in, mut off_out) = (0i64, 0i64);
            let mut copied = 0u64;
            let err = loop {
                match nix::fcntl::copy_file_range(
                    src.as_fd(),
                    Some(&mut off_in),
                    dst.as_fd(),
                    Some(&mut off_out),
                    (600 * KIB - copied) as usize,
                ) {
                    Ok(0) => panic!("copy finished although it cannot fit"),
                    Ok(n) => copied += n as u64,
                    Err(e) => break e,
                }
            };
            assert_eq!(err, nix::errno::Errno::ENOSPC);
            assert!(copied < 600 * KIB);
            assert_eq!(
                std::fs::read(s.path("dst")).unwrap(),
                vec![9u8; copied as usize]
            );
            check_usage(&s, limit);
        }

        #[test]
        fn unlink_frees_and_open_unlinked_frees_at_last_close() {
            let limit = MIB;
            let s = session(Some(limit), None);
            let base = s.used_bytes();
            std::fs::write(s.path("gone"), vec![1u8; (256 * KIB) as usize]).unwrap();
            std::fs::remove_file(s.path("gone")).unwrap();
            wait_usage(&s, base);
            let mut open = File::create(s.path("held")).unwrap();
            open.write_all(&vec![2u8; (256 * KIB) as usize]).unwrap();
            std::fs::remove_file(s.path("held")).unwrap();
            assert_eq!(
                s.used_bytes(),
                base + 256 * KIB,
                "still open: still counted"
            );
            drop(open);
            wait_usage(&s, base);
        }

        #[test]
        fn eight_concurrent_writers_never_exceed_the_limit() {
            let limit = 8 * MIB;
            let s = session(Some(limit), None);
            // All files exist before any writer starts: creating a name needs room too.
            let files: Vec<File> = (0..8)
                .map(|i| File::create(s.path(&format!("w{i}"))).unwrap())
                .collect();
            let written: u64 = std::thread::scope(|scope| {
                let writers: Vec<_> = files
                    .into_iter()
                    .enumerate()
                    .map(|(i, mut f)| {
                        scope.spawn(move || {
                            let mut total = 0u64;
                            let chunk = vec![i as u8; (64 * KIB) as usize];
                            loop {
                                match f.write(&chunk) {
                                    Ok(n) => total += n as u64,
                                    Err(e) if no_space(&e) => return total,
                                    Err(e) => panic!("writer {i}: {e}"),
                                }
                            }
                        })
                    })
                    .collect();
                let mut peak = 0;
                while writers.iter().any(|w| !w.is_finished()) {
                    peak = peak.max(s.used_bytes());
                    assert!(
                        peak <= limit,
                        "usage {peak} over the limit during the writes"
                    );
                }
                writers.into_iter().map(|w| w.join().unwrap()).sum()
            });
            check_usage(&s, limit);
            assert!(
                written <= limit && written >= limit - 8 * 64 * KIB - s.unit(),
                "written {written}"
            );
        }

        #[test]
        fn inode_limit_applies_to_every_kind_of_node() {
            let s = session(None, Some(5));
            // The root is one inode; four more fit.
            File::create(s.path("f1")).unwrap();
            std::fs::create_dir(s.path("d1")).unwrap();
            std::os::unix::fs::symlink("f1", s.path("l1")).unwrap();
            nix::unistd::mkfifo(
                &s.path("p1"),
                nix::sys::stat::Mode::from_bits_truncate(0o644),
            )
            .unwrap();
            let full = |r: std::io::Result<()>| assert!(r.is_err_and(|e| no_space(&e)));
            full(File::create(s.path("f2")).map(drop));
            full(std::fs::create_dir(s.path("d2")));
            full(std::os::unix::fs::symlink("f1", s.path("l2")));
            let fifo = nix::unistd::mkfifo(
                &s.path("p2"),
                nix::sys::stat::Mode::from_bits_truncate(0o644),
            );
            assert_eq!(fifo.unwrap_err(), nix::errno::Errno::ENOSPC);
            std::fs::hard_link(s.path("f1"), s.path("h1")).unwrap();
            std::fs::remove_file(s.path("p1")).unwrap();
            File::create(s.path("f3")).unwrap();
            assert_eq!(s.fs.usage().inodes, 5);
        }

        #[test]
        fn statfs_reports_the_limit_as_the_filesystem() {
            let limit = 64 * MIB;
            let s = session(Some(limit), Some(1000));
            std::fs::write(s.path("data"), vec![1u8; (3 * MIB) as usize]).unwrap();
            let st = nix::sys::statvfs::statvfs(s.mnt()).unwrap();
            let frsize = st.fragment_size();
            assert_eq!(st.blocks() * frsize, limit);
            assert_eq!(st.blocks_available() * frsize, limit - s.used_bytes());
            assert_eq!(st.files(), 1000);
            assert_eq!(st.files_free(), 1000 - s.fs.usage().inodes);
            let df = fuse_tests::run_ok(
                std::process::Command::new("df")
                    .args(["-B1", "--output=size,used,avail"])
                    .arg(s.mnt()),
            );
            let nums: Vec<u64> = df
                .lines()
                .nth(1)
                .unwrap()
                .split_whitespace()
                .map(|n| n.parse().unwrap())
                .collect();
            assert_eq!(nums, vec![limit, s.used_bytes(), limit - s.used_bytes()]);
        }
        }
    )*};
}

quota_tests!(local => Backend::Local, tmpfs => Backend::Tmpfs, image => Backend::Image);
