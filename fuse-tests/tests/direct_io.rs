//! Direct I/O (O_DIRECT) on every driver (issue 12): aligned requests work and are counted
//! against the quota (a direct write past the limit is short, then refused with ENOSPC),
//! misaligned ones fail as on the host's own kind of storage (EINVAL where it checks
//! alignment), and `fio --direct=1` runs clean.
//!
//! The references are real: a file on the host filesystem the local volume lives on, a kernel
//! tmpfs mount, and a loop block device (what a filesystem on an RBD image's block device
//! would see).
use std::collections::BTreeMap;
use std::path::Path;

use fuse_tests::daemon::fuse_or_skip;
use fuse_tests::{Backend, TestSession, direct_io};
use serde_json::{Value, json};

const MIB: u64 = 1 << 20;

/// A volume as each driver serves it. Local volumes with a byte limit are served by the
/// handler; without one, by kernel passthrough.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Volume {
    LocalQuota,
    LocalPassthrough,
    Tmpfs,
    Image,
}

const VOLUMES: [Volume; 4] = [
    Volume::LocalQuota,
    Volume::LocalPassthrough,
    Volume::Tmpfs,
    Volume::Image,
];

impl Volume {
    /// A session with a byte limit of `limit` (none for passthrough).
    fn session(self, limit: u64) -> TestSession {
        match self {
            Volume::LocalQuota => TestSession::with(Backend::Local, Some(limit), None),
            Volume::LocalPassthrough => TestSession::with(Backend::Local, None, None),
            Volume::Tmpfs => TestSession::with(Backend::Tmpfs, Some(limit), None),
            Volume::Image => TestSession::with(Backend::Image, Some(limit), None),
        }
    }
}

/// What the same requests give on the storage `volume` stands in for.
fn reference(volume: Volume, s: &TestSession) -> BTreeMap<String, Value> {
    match volume {
        // A host file beside the backing directory: the same filesystem.
        Volume::LocalQuota | Volume::LocalPassthrough => {
            let host = s.backing.parent().unwrap().join("host-file");
            let answers = direct_io::cases(&host);
            std::fs::remove_file(host).unwrap();
            answers
        }
        Volume::Tmpfs => direct_io::kernel_tmpfs_cases(),
        Volume::Image => direct_io::block_device_cases(),
    }
}

#[test]
fn aligned_direct_io_works_on_every_driver() {
    if !fuse_or_skip("aligned_direct_io_works_on_every_driver") {
        return;
    }
    for volume in VOLUMES {
        let s = volume.session(64 * MIB);
        let got = direct_io::aligned(&s.path("f"));
        assert_eq!(
            got,
            json!({"size": 2 * MIB, "direct_read_matches": true, "buffered_read_matches": true}),
            "{volume:?}"
        );
        // Counted: 1 MiB (overwritten in part) and two pages, with holes between.
        let data = MIB + 2 * 4096;
        let used = s.used_bytes();
        assert!(
            (data..data + MIB).contains(&used),
            "{volume:?}: used {used} after {data} bytes"
        );
        if matches!(s.backend, Backend::Local) {
            assert_eq!(used, s.du(), "{volume:?}: counted against du");
        }
    }
}

#[test]
fn misaligned_direct_io_fails_as_on_the_host() {
    if !fuse_or_skip("misaligned_direct_io_fails_as_on_the_host") {
        return;
    }
    for volume in VOLUMES {
        let s = volume.session(64 * MIB);
        let mut want = reference(volume, &s);
        let mut got = direct_io::cases(&s.path("f"));
        let unseen: &[&str] = match volume {
            Volume::LocalQuota | Volume::Image => &direct_io::ADDRESS_ONLY,
            Volume::LocalPassthrough => &direct_io::SETFL,
            Volume::Tmpfs => &[],
        };
        for case in unseen {
            want.remove(*case);
            got.remove(*case);
        }
        assert_eq!(got, want, "{volume:?} (the host's answers second)");
        // The references do check alignment, except tmpfs, which ignores it.
        let refused = want.values().filter(|v| **v == json!("EINVAL")).count();
        match volume {
            Volume::Tmpfs => assert_eq!(refused, 0, "{want:?}"),
            _ => assert!(refused >= 6, "{volume:?}: {want:?}"),
        }
    }
}

#[test]
fn a_direct_write_past_the_limit_is_short_then_refused() {
    if !fuse_or_skip("a_direct_write_past_the_limit_is_short_then_refused") {
        return;
    }
    const LIMIT: u64 = 8 * MIB;
    for volume in [Volume::LocalQuota, Volume::Tmpfs, Volume::Image] {
        let s = volume.session(LIMIT);
        let got = direct_io::fill(&s.path("f"));
        let written = got["written"].as_u64().unwrap();
        let results = got["results"].as_array().unwrap();
        // Full 1 MiB writes, then the one that reaches the limit (short if the limit falls
        // inside it), then ENOSPC.
        assert_eq!(results.last(), Some(&json!("ENOSPC")), "{volume:?}: {got}");
        let full = results.len().saturating_sub(2);
        assert!(
            results[..full].iter().all(|r| *r == json!(MIB)),
            "{volume:?}: {got}"
        );
        assert!(
            (LIMIT - MIB..=LIMIT).contains(&written),
            "{volume:?}: {written} bytes written under a limit of {LIMIT}: {got}"
        );
        assert_eq!(got["intact"], json!(true), "{volume:?}: {got}");
        let used = s.used_bytes();
        assert!(
            used >= written && used <= LIMIT,
            "{volume:?}: used {used} after {written} bytes direct, limit {LIMIT}"
        );
        if matches!(s.backend, Backend::Local) {
            assert_eq!(used, s.du(), "{volume:?}: counted against du");
        }
    }
}

#[test]
fn fio_direct_randrw_verifies_on_every_driver() {
    if !fuse_or_skip("fio_direct_randrw_verifies_on_every_driver") {
        return;
    }
    for volume in VOLUMES {
        let s = volume.session(64 * MIB);
        let file = s.path("fio");
        direct_io::fio_randrw(&file);
        let allocated = file_allocated(&file);
        assert!(
            allocated >= 16 * MIB,
            "{volume:?}: {allocated} bytes allocated"
        );
        let used = s.used_bytes();
        assert!(
            (allocated..allocated + MIB).contains(&used),
            "{volume:?}: used {used}, the file holds {allocated}"
        );
        if matches!(s.backend, Backend::Local) {
            assert_eq!(used, s.du(), "{volume:?}: counted against du");
        }
    }
}

fn file_allocated(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).unwrap().blocks() * 512
}
