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

/// One observation: `Some(true)` when the volume's file left delayed allocation within 10 s while
/// the control file stayed delayed; `None` when the control file did not stay delayed (something
/// flushed the host filesystem, or it does not delay allocation), so nothing can be concluded.
fn observe(s: &TestSession, attempt: usize) -> Option<bool> {
    let control = s.backing.join(format!("control{attempt}"));
    let mut host = File::create(&control).unwrap();
    write_mib(&mut host, 16);
    if delayed(&control) != Some(true) {
        return None;
    }
    let name = format!("f{attempt}");
    let mut volume_file = File::create(s.path(&name)).unwrap();
    write_mib(&mut volume_file, 16);
    let backing_file = s.backing.join(&name);
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut written_back = false;
    while Instant::now() < deadline {
        if delayed(&backing_file) == Some(false) {
            written_back = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    if delayed(&control) != Some(true) {
        return None;
    }
    volume_file.sync_all().unwrap();
    assert_eq!(std::fs::read(s.path(&name)).unwrap().len(), 16 * MIB);
    Some(written_back)
}

#[test]
fn sequential_writes_reach_the_host_disk_before_fsync() {
    let s = TestSession::local(Some(1 << 30), None);
    for attempt in 0..3 {
        match observe(&s, attempt) {
            Some(written_back) => {
                assert!(
                    written_back,
                    "16 MiB written sequentially through the volume still await writeback on \
                     the host after 10 s, while the write-behind should have started it"
                );
                return;
            }
            None => eprintln!("attempt {attempt}: the control file did not stay delayed; again"),
        }
    }
    // The project's test command runs on ext4 (/tmp), where this must be observable.
    assert!(
        std::env::var_os("FVOL_REQUIRE_FUSE").is_none(),
        "three attempts without a control file that stayed in delayed allocation under {}: \
         cannot observe writeback there",
        s.backing.display()
    );
    eprintln!(
        "skipping: no delayed allocation to observe under {}",
        s.backing.display()
    );
}
