//! pjdfstest and fsx against a local volume with a quota.
use fuse_tests::{TestSession, suites};

#[test]
fn pjdfstest_has_no_failures() {
    let s = TestSession::local(Some(4 << 30), Some(1_000_000));
    let (failed, skipped, passed, text) = suites::pjdfstest(s.mnt());
    eprintln!("pjdfstest: {failed} failed, {skipped} skipped, {passed} passed");
    assert_eq!(failed, 0, "{text}");
    assert!(passed > 300, "too few cases ran: {text}");
}

#[test]
fn fsx_three_seeds() {
    let s = TestSession::local(Some(1 << 30), None);
    for seed in [1, 2, 3] {
        suites::fsx(s.mnt(), seed, 10_000, &[]).unwrap_or_else(|log| panic!("seed {seed}: {log}"));
    }
}
