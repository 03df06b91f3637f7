//! pjdfstest and fsx (every operation, mmap included) against each backend: a local volume
//! with a quota (every byte through the handler), one without (kernel passthrough for file
//! I/O), and tmpfs.
use fuse_tests::{Backend, TestSession, suites};

fn pjdfstest(s: &TestSession) {
    let (failed, skipped, passed, text) = suites::pjdfstest(s.mnt());
    eprintln!("pjdfstest: {failed} failed, {skipped} skipped, {passed} passed");
    assert_eq!(failed, 0, "{text}");
    assert!(passed > 300, "too few cases ran: {text}");
}

fn fsx(s: &TestSession) {
    for seed in [1, 2, 3] {
        suites::fsx(s.mnt(), seed, 10_000).unwrap_or_else(|log| panic!("seed {seed}: {log}"));
    }
}

#[test]
fn pjdfstest_local_with_quota() {
    pjdfstest(&TestSession::local(Some(4 << 30), Some(1_000_000)));
}

#[test]
fn pjdfstest_local_passthrough() {
    pjdfstest(&TestSession::local(None, None));
}

#[test]
fn pjdfstest_tmpfs() {
    pjdfstest(&TestSession::with(
        Backend::Tmpfs,
        Some(1 << 30),
        Some(1_000_000),
    ));
}

#[test]
fn fsx_local_with_quota() {
    fsx(&TestSession::local(Some(1 << 30), None));
}

#[test]
fn fsx_local_passthrough() {
    fsx(&TestSession::local(None, None));
}

#[test]
fn fsx_tmpfs() {
    fsx(&TestSession::with(Backend::Tmpfs, Some(1 << 30), None));
}

/// Files of up to 8 MiB and operations of up to 1 MiB: tmpfs keeps big files in 2 MiB chunks
/// of mapped memory, so this crosses chunk boundaries and moves chunks between the heap and
/// mappings, with mmap reads and writes in between.
#[test]
fn fsx_tmpfs_big_files() {
    let s = TestSession::with(Backend::Tmpfs, Some(1 << 30), None);
    for seed in [1, 2, 3] {
        suites::fsx_sized(s.mnt(), seed, 10_000, 8 << 20, 1 << 20)
            .unwrap_or_else(|log| panic!("seed {seed}: {log}"));
    }
}

#[test]
fn pjdfstest_image() {
    pjdfstest(&TestSession::with(
        Backend::Image,
        Some(1 << 30),
        Some(1_000_000),
    ));
}

#[test]
fn fsx_image() {
    fsx(&TestSession::with(Backend::Image, Some(1 << 30), None));
}
