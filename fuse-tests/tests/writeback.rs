//! Write-behind on local volumes with a byte quota (their writes go through the handler): a
//! sequential writer's data starts going to the host disk while it writes, not only at its
//! fsync. Seen through delayed allocation: `filefrag -v` flags an extent `delalloc` until its
//! writeback starts. A control file written on the host the same way stays delayed (the
//! kernel's own writeback waits 30 s), so the early start is fvol's.
//!
//! Alone in its test binary: a `sync` by a concurrent test would flush the control file too.
use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use fuse_tests::TestSession;

const MIB: usize = 1 << 20;

/// Whether any extent of `path` awaits allocation; `None` when `filefrag` cannot tell (a host
/// filesystem without FIEMAP).
fn delayed(path: &Path) -> Option<bool> {
    let out = Command::new("filefrag").arg("-v").arg(path).output().ok()?;
    if !out.status.success() {
        return None;
    }
    Some(String::from_utf8_lossy(&out.stdout).contains("delalloc"))
}

fn write_mib(f: &mut File, mib: usize) {
    let block: Vec<u8> = (0..MIB).map(|i| (i % 251) as u8).collect();
    for _ in 0..mib {
        f.write_all(&block).unwrap();
    }
}

#[test]
fn sequential_writes_reach_the_host_disk_before_fsync() {
    let s = TestSession::local(Some(1 << 30), None);
    let control = s.backing.join("control");
    let mut host = File::create(&control).unwrap();
    write_mib(&mut host, 16);
    if delayed(&control) != Some(true) {
        // The project's test command runs on ext4 (/tmp), where this must hold.
        assert!(
            std::env::var_os("FVOL_REQUIRE_FUSE").is_none(),
            "the host filesystem under {} shows no delayed allocation (filefrag): cannot \
             observe writeback",
            s.backing.display()
        );
        eprintln!(
            "skipping: no delayed allocation to observe under {}",
            s.backing.display()
        );
        return;
    }

    let mut volume_file = File::create(s.path("f")).unwrap();
    write_mib(&mut volume_file, 16);
    let backing_file = s.backing.join("f");
    let deadline = Instant::now() + Duration::from_secs(10);
    while delayed(&backing_file) != Some(false) {
        assert!(
            Instant::now() < deadline,
            "16 MiB written sequentially through the volume still await writeback on the host \
             after 10 s: {}",
            String::from_utf8_lossy(
                &Command::new("filefrag")
                    .arg("-v")
                    .arg(&backing_file)
                    .output()
                    .unwrap()
                    .stdout
            )
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        delayed(&control),
        Some(true),
        "the control file was written back too: something flushed the host filesystem, so \
         this run cannot tell fvol's write-behind from it"
    );
    volume_file.sync_all().unwrap();
    assert_eq!(std::fs::read(s.path("f")).unwrap().len(), 16 * MIB);
}
