//! local snapshots on a host filesystem that shares extents (XFS with reflinks): a snapshot, a
//! clone and a restore share the volume's extents instead of copying them, so they take no
//! host space until either side changes, and each side stays independent of the other.
use std::io::{Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::Command;

use fuse_tests::daemon::{TestDaemon, TestRoot, fuse_or_skip};
use fuse_tests::loopfs::LoopFs;

const BIG_MIB: u64 = 128;

/// Byte `i` of the big file: a pattern no block repeats in.
fn pattern(i: u64) -> u8 {
    (i.wrapping_mul(0x9e37_79b9) >> 13) as u8
}

fn write_big(path: &Path) {
    let mut f = std::fs::File::create(path).unwrap();
    let mut buf = vec![0u8; 1 << 20];
    for mib in 0..BIG_MIB {
        for (j, b) in buf.iter_mut().enumerate() {
            *b = pattern((mib << 20) + j as u64);
        }
        f.write_all(&buf).unwrap();
    }
    f.sync_all().unwrap();
}

fn assert_big_is_original(path: &Path) {
    let data = std::fs::read(path).unwrap();
    assert_eq!(data.len() as u64, BIG_MIB << 20, "{}", path.display());
    if let Some(i) = (0..data.len()).find(|&i| data[i] != pattern(i as u64)) {
        panic!("{}: byte {i} changed", path.display());
    }
}

/// Whether every extent of `path` is shared with another file (FIEMAP's SHARED flag, as
/// `filefrag -v` prints it), and how many extents it has.
fn all_extents_shared(path: &Path) -> (bool, usize) {
    let out = Command::new("filefrag")
        .arg("-v")
        .arg(path)
        .output()
        .unwrap();
    assert!(out.status.success(), "filefrag {}", path.display());
    let text = String::from_utf8_lossy(&out.stdout);
    // Extent lines start with "   N:" after the header line "ext: logical_offset: ...".
    let extents: Vec<&str> = text
        .lines()
        .filter(|l| {
            let t = l.trim_start();
            t.split(':')
                .next()
                .is_some_and(|n| n.parse::<u64>().is_ok())
        })
        .collect();
    assert!(!extents.is_empty(), "filefrag found no extents:\n{text}");
    (extents.iter().all(|l| l.contains("shared")), extents.len())
}

/// Free bytes of the host filesystem holding `dir`, after its writes are settled.
fn host_free(dir: &Path) -> u64 {
    let f = std::fs::File::open(dir).unwrap();
    nix::unistd::syncfs(&f).unwrap();
    let st = nix::sys::statvfs::statvfs(dir).unwrap();
    st.blocks_available() * st.fragment_size()
}

fn snapshot_method(d: &TestDaemon, vol: &str, snap: &str) -> String {
    let list: serde_json::Value =
        serde_json::from_str(&d.cli_ok(["snapshot", "ls", vol, "--format", "json"])).unwrap();
    let entry = list
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["Name"] == snap)
        .unwrap_or_else(|| panic!("{snap} not in {list}"));
    entry["Method"].as_str().unwrap().to_string()
}

#[test]
fn local_snapshots_clones_and_restores_share_extents_on_xfs() {
    if !fuse_or_skip("local_snapshots_clones_and_restores_share_extents_on_xfs") {
        return;
    }
    let xfs = LoopFs::xfs(2048);
    let root = TestRoot::new_in(xfs.path());
    let d = TestDaemon::start_at(&root);
    d.cli_ok(["create", "-o", "size=1G", "vol"]);
    let mp = d.mount("vol");
    write_big(&mp.join("big"));
    let backing = d.root().join("volumes/vol/data/big");
    let (shared, _) = all_extents_shared(&backing);
    assert!(
        !shared,
        "the volume's file shares extents before any snapshot"
    );

    // A snapshot: reflinked, so it takes (almost) no host space.
    let free_before = host_free(xfs.path());
    d.cli_ok(["snapshot", "create", "vol", "s1"]);
    let free_after = host_free(xfs.path());
    assert_eq!(snapshot_method(&d, "vol", "s1"), "reflink");
    let snap_big = d.root().join("snapshots/vol/s1/big");
    assert_big_is_original(&snap_big);
    let (shared, extents) = all_extents_shared(&snap_big);
    assert!(
        shared,
        "the snapshot's {extents} extents are not all shared"
    );
    let taken = free_before.saturating_sub(free_after);
    assert!(
        taken < (BIG_MIB << 20) / 8,
        "the snapshot took {taken} bytes of host space for a {BIG_MIB} MiB file: a copy"
    );

    // The volume changes; the snapshot does not.
    {
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(mp.join("big"))
            .unwrap();
        f.write_all_at(&[0xaa; 1 << 20], 0).unwrap();
        f.sync_all().unwrap();
    }
    assert_big_is_original(&snap_big);
    assert_eq!(
        std::fs::read(mp.join("big")).unwrap()[..1 << 20],
        [0xaa; 1 << 20]
    );

    // A clone of the snapshot shares its extents and is independent of it.
    d.cli_ok(["create", "--from", "vol@s1", "cl"]);
    let clone_big = d.root().join("volumes/cl/data/big");
    let (shared, extents) = all_extents_shared(&clone_big);
    assert!(shared, "the clone's {extents} extents are not all shared");
    let cmp = d.mount("cl");
    assert_big_is_original(&cmp.join("big"));
    {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .open(cmp.join("big"))
            .unwrap();
        f.seek(SeekFrom::Start(1 << 20)).unwrap();
        f.write_all(&[0x55; 4096]).unwrap();
        f.sync_all().unwrap();
    }
    assert_big_is_original(&snap_big);
    d.cli_ok(["unmount", "cl"]);

    // A restore brings the original back, reflinked again.
    d.cli_ok(["unmount", "vol"]);
    let free_before = host_free(xfs.path());
    d.cli_ok(["snapshot", "restore", "vol", "s1"]);
    let free_after = host_free(xfs.path());
    let taken = free_before.saturating_sub(free_after);
    assert!(
        taken < (BIG_MIB << 20) / 8,
        "the restore took {taken} bytes of host space for a {BIG_MIB} MiB file: a copy"
    );
    let mp = d.mount("vol");
    assert_big_is_original(&mp.join("big"));
    let used = d.inspect("vol")["Status"]["UsedBytes"].as_u64().unwrap();
    assert!(
        used >= BIG_MIB << 20,
        "a restored volume counts its shared extents as its own: used {used}"
    );
    d.cli_ok(["unmount", "vol"]);
}
