//! The local driver under a small open-file limit. Nodes know their host inode by file handle
//! and hold a descriptor only while in use, so a volume serves many more files than the daemon
//! has descriptors, with exact usage; and a host inode number reused while the kernel still
//! names the freed inode's node gives the new file a node of its own (whether the old inode
//! was removed through the volume or behind its back). The reuse tests keep their data on a
//! fresh ext4 filesystem, whose allocator hands a freed number out again at the next create.
use std::collections::HashSet;
use std::fs::File;
use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use fuse_tests::daemon::{TestDaemon, TestRoot, du_bytes, fuse_or_skip};
use fuse_tests::loopfs::LoopFs;
use nix::fcntl::{OFlag, open};
use nix::sys::stat::Mode;

/// The daemon's open-file limit, soft and hard.
const NOFILE: u64 = 256;
/// Files per test, several times the limit.
const FILES: usize = 2000;
const DIRS: usize = 4;
const MIB: usize = 1 << 20;

fn limited_daemon() -> TestDaemon {
    let d = TestDaemon::start_with_nofile(&TestRoot::new(), NOFILE);
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", d.pid().unwrap())).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    let fields: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(
        fields[3..5],
        [NOFILE.to_string(), NOFILE.to_string()],
        "the daemon runs with another limit: {line}"
    );
    d
}

/// Descriptors the daemon has open now.
fn daemon_fds(d: &TestDaemon) -> usize {
    std::fs::read_dir(format!("/proc/{}/fd", d.pid().unwrap()))
        .unwrap()
        .count()
}

fn usage(d: &TestDaemon, name: &str) -> (u64, u64) {
    let status = d.inspect(name)["Status"].clone();
    (
        status["UsedBytes"].as_u64().unwrap(),
        status["UsedInodes"].as_u64().unwrap(),
    )
}

/// Inodes under `dir` (itself included), each once.
fn count_inodes(dir: &Path) -> u64 {
    let mut seen = HashSet::new();
    let mut stack = vec![dir.to_path_buf()];
    seen.insert(std::fs::symlink_metadata(dir).unwrap().ino());
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let entry = entry.unwrap();
            let meta = entry.metadata().unwrap();
            seen.insert(meta.ino());
            if meta.is_dir() {
                stack.push(entry.path());
            }
        }
    }
    seen.len() as u64
}

/// Usage is exactly what the backing directory holds, plus `extra` (bytes, inodes) of open
/// unlinked files.
fn assert_exact(d: &TestDaemon, name: &str, data: &Path, extra: (u64, u64), when: &str) {
    let want = (du_bytes(data) + extra.0, count_inodes(data) + extra.1);
    assert_eq!(usage(d, name), want, "usage {when} (bytes, inodes)");
}

/// Waits for the usage to reach `want`: RELEASE reaches the daemon a moment after `close`.
fn wait_usage(d: &TestDaemon, name: &str, want: (u64, u64)) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while usage(d, name) != want && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert_eq!(usage(d, name), want);
}

fn content(i: usize) -> Vec<u8> {
    let len = 1000 * (i % 7 + 1) + i;
    (0..len).map(|b| (b ^ i) as u8).collect()
}

fn open_path(path: &Path) -> OwnedFd {
    open(path, OFlag::O_PATH | OFlag::O_CLOEXEC, Mode::empty()).unwrap()
}

fn no_emfile_in_log(d: &TestDaemon) {
    let log = d.log();
    assert!(
        !log.contains("Too many open files") && !log.contains("EMFILE"),
        "the daemon ran out of descriptors:\n{log}"
    );
}

#[test]
fn many_more_files_than_descriptors() {
    if !fuse_or_skip("many_more_files_than_descriptors") {
        return;
    }
    let d = limited_daemon();
    d.cli_ok(["create", "many", "-o", "size=1G", "-o", "inodes=100000"]);
    let mp = d.mount("many");
    let data = d.root().join("volumes/many/data");
    let base = usage(&d, "many");
    assert_exact(&d, "many", &data, (0, 0), "at the start");

    // An open file, unlinked: it must stay counted while its node goes cold.
    let mut held = File::create(mp.join("held")).unwrap();
    held.write_all(&vec![3u8; MIB]).unwrap();
    std::fs::remove_file(mp.join("held")).unwrap();

    // Open directories, and an O_PATH descriptor per file: the kernel names every node
    // throughout (it never forgets them).
    let mut kept: Vec<OwnedFd> = Vec::new();
    let dirs: Vec<PathBuf> = (0..DIRS).map(|k| mp.join(format!("d{k}"))).collect();
    for dir in &dirs {
        std::fs::create_dir(dir).unwrap();
        kept.push(open(dir, OFlag::O_RDONLY | OFlag::O_DIRECTORY, Mode::empty()).unwrap());
    }
    std::fs::create_dir(mp.join("links")).unwrap();
    let path = |i: usize| dirs[i % DIRS].join(format!("f{i}"));
    let link = |i: usize| mp.join("links").join(format!("l{i}"));
    let renamed = |i: usize| dirs[i % DIRS].join(format!("r{i}"));
    for i in 0..FILES {
        std::fs::write(path(i), content(i)).unwrap();
        kept.push(open_path(&path(i)));
    }
    assert!(
        daemon_fds(&d) < NOFILE as usize,
        "the daemon holds {} descriptors",
        daemon_fds(&d)
    );

    // Every name again: attributes, distinct inode numbers, listings (READDIRPLUS looks up).
    let mut inos = HashSet::new();
    for i in 0..FILES {
        let meta = std::fs::metadata(path(i)).unwrap();
        assert_eq!(meta.len(), content(i).len() as u64, "f{i}");
        assert!(inos.insert(meta.ino()), "f{i} shares an inode number");
    }
    let listed: usize = dirs
        .iter()
        .map(|dir| std::fs::read_dir(dir).unwrap().count())
        .sum();
    assert_eq!(listed, FILES);

    // LINK, RENAME, OPEN and SETATTR of nodes that are mostly cold by now.
    for i in 0..FILES {
        std::fs::hard_link(path(i), link(i)).unwrap();
    }
    for i in 0..FILES {
        let (a, b) = (
            std::fs::metadata(path(i)).unwrap(),
            std::fs::metadata(link(i)).unwrap(),
        );
        assert_eq!((a.ino(), a.nlink()), (b.ino(), 2), "f{i} and its link");
        std::fs::rename(path(i), renamed(i)).unwrap();
    }
    for i in 0..FILES {
        assert_eq!(std::fs::read(link(i)).unwrap(), content(i), "l{i}");
        if i % 7 == 0 {
            let perms = std::fs::Permissions::from_mode(0o600);
            std::fs::set_permissions(renamed(i), perms).unwrap();
            assert_eq!(std::fs::metadata(link(i)).unwrap().mode() & 0o777, 0o600);
        }
    }

    // The open unlinked file still works through its handle and is still counted.
    assert_eq!(held.metadata().unwrap().nlink(), 0);
    held.write_all(&vec![4u8; MIB]).unwrap();
    held.sync_all().unwrap();
    let held_usage = (held.metadata().unwrap().blocks() * 512, 1);
    assert!(held_usage.0 >= 2 * MIB as u64);
    assert_exact(
        &d,
        "many",
        &data,
        held_usage,
        "with every file linked twice",
    );

    // Last names go: unlink the renamed originals, then rename links over each other
    // (each replaced inode loses its last name), then unlink the rest.
    for i in 0..FILES {
        std::fs::remove_file(renamed(i)).unwrap();
    }
    assert_exact(
        &d,
        "many",
        &data,
        held_usage,
        "after unlinking the originals",
    );
    for i in (0..FILES).step_by(2) {
        std::fs::rename(link(i), link(i + 1)).unwrap();
        assert_eq!(std::fs::read(link(i + 1)).unwrap(), content(i));
    }
    assert_exact(
        &d,
        "many",
        &data,
        held_usage,
        "after renames over last names",
    );
    for i in (0..FILES).step_by(2) {
        std::fs::remove_file(link(i + 1)).unwrap();
    }
    assert_exact(&d, "many", &data, held_usage, "after unlinking every file");

    // Its last close gives the open unlinked file's space back.
    drop(held);
    drop(kept);
    for dir in &dirs {
        std::fs::remove_dir(dir).unwrap();
    }
    std::fs::remove_dir(mp.join("links")).unwrap();
    wait_usage(&d, "many", base);
    assert_exact(&d, "many", &data, (0, 0), "at the end");
    no_emfile_in_log(&d);
}

#[test]
fn reused_inode_number_gets_a_new_node() {
    if !fuse_or_skip("reused_inode_number_gets_a_new_node") {
        return;
    }
    // Declared first, dropped last: the daemon lets go of it before it is unmounted.
    let host = LoopFs::ext4(256);
    let d = limited_daemon();
    let data = host.path().join("reuse");
    std::fs::create_dir(&data).unwrap();
    let data_arg = format!("mount={}", data.display());
    d.cli_ok(["create", "reuse", "-o", &data_arg, "-o", "size=256M"]);
    let mp = d.mount("reuse");
    std::fs::write(mp.join("old"), b"old contents").unwrap();
    // The kernel keeps naming the old node through this descriptor.
    let old = open_path(&mp.join("old"));
    let old_node = std::fs::metadata(mp.join("old")).unwrap().ino();
    let old_host = std::fs::symlink_metadata(data.join("old")).unwrap().ino();

    // More new nodes than the daemon keeps descriptors for: the old node goes cold, and
    // nothing keeps its host inode alive once its name is gone.
    for i in 0..2 * NOFILE {
        std::fs::write(mp.join(format!("f{i}")), b"").unwrap();
    }
    std::fs::remove_file(mp.join("old")).unwrap();
    let reused = (0..FILES).find_map(|i| {
        let name = format!("new{i}");
        std::fs::write(mp.join(&name), format!("new contents {i}")).unwrap();
        let host = std::fs::symlink_metadata(data.join(&name)).unwrap().ino();
        (host == old_host).then_some((name, i))
    });
    let Some((name, i)) = reused else {
        panic!("the host did not reuse inode {old_host} in {FILES} creates");
    };

    let new = std::fs::metadata(mp.join(&name)).unwrap();
    assert_ne!(new.ino(), old_node, "the new file got the old file's node");
    assert_eq!(
        std::fs::read(mp.join(&name)).unwrap(),
        format!("new contents {i}").as_bytes()
    );
    // The old node's host inode is gone: opening it through the kernel's reference fails
    // cleanly (it was removed: ENOENT), and the new file is unaffected.
    let err = File::open(format!("/proc/self/fd/{}", old.as_raw_fd())).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::ENOENT), "{err}");
    std::fs::write(mp.join(&name), b"rewritten").unwrap();
    assert_eq!(std::fs::read(mp.join(&name)).unwrap(), b"rewritten");
    assert_eq!(std::fs::metadata(mp.join(&name)).unwrap().ino(), new.ino());
    drop(old);

    assert_exact(&d, "reuse", &data, (0, 0), "after the reuse");
    std::fs::remove_file(mp.join(&name)).unwrap();
    assert_exact(&d, "reuse", &data, (0, 0), "after removing the new file");
    no_emfile_in_log(&d);
}

#[test]
fn inode_replaced_behind_the_volume_is_found_again() {
    if !fuse_or_skip("inode_replaced_behind_the_volume_is_found_again") {
        return;
    }
    let host = LoopFs::ext4(256);
    let d = limited_daemon();
    let dir = host.path().join("shared");
    std::fs::create_dir(&dir).unwrap();
    let dir_arg = format!("mount={}", dir.display());
    d.cli_ok(["create", "shared", "-o", &dir_arg, "-o", "size=256M"]);
    let mp = d.mount("shared");
    std::fs::write(mp.join("a"), b"first").unwrap();
    let old = open_path(&mp.join("a"));
    let old_node = std::fs::metadata(mp.join("a")).unwrap().ino();
    let old_host = std::fs::symlink_metadata(dir.join("a")).unwrap().ino();
    for i in 0..2 * NOFILE {
        std::fs::write(mp.join(format!("f{i}")), b"").unwrap();
    }

    // Another writer replaces "a" in the host directory by a file that reuses its number.
    std::fs::remove_file(dir.join("a")).unwrap();
    let reused = (0..FILES).find(|i| {
        let name = dir.join(format!("x{i}"));
        std::fs::write(&name, format!("second {i}")).unwrap();
        std::fs::symlink_metadata(&name).unwrap().ino() == old_host
    });
    let Some(i) = reused else {
        panic!("the host did not reuse inode {old_host} in {FILES} creates");
    };
    std::fs::rename(dir.join(format!("x{i}")), dir.join("a")).unwrap();

    // The kernel's cached name still leads to the old node: the daemon answers ESTALE, the
    // kernel looks "a" up again and reaches the new inode, as a node of its own.
    let want = format!("second {i}");
    assert_eq!(std::fs::read(mp.join("a")).unwrap(), want.as_bytes());
    let new = std::fs::metadata(mp.join("a")).unwrap();
    assert_ne!(new.ino(), old_node, "the new file got the old file's node");
    assert_eq!(new.len(), want.len() as u64);
    let err = File::open(format!("/proc/self/fd/{}", old.as_raw_fd())).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::ESTALE), "{err}");
    drop(old);
    no_emfile_in_log(&d);
}

#[test]
fn open_files_take_descriptors_from_the_cache() {
    if !fuse_or_skip("open_files_take_descriptors_from_the_cache") {
        return;
    }
    let d = limited_daemon();
    d.cli_ok(["create", "open", "-o", "size=256M"]);
    let mp = d.mount("open");
    let data = d.root().join("volumes/open/data");
    let count = NOFILE as usize + 100;
    for i in 0..count {
        std::fs::write(mp.join(format!("f{i}")), content(i)).unwrap();
    }
    let idle = daemon_fds(&d);

    // Open files need real descriptors: the daemon gives up cached ones for them, up to its
    // limit; beyond it an open fails with EMFILE and nothing else does.
    let mut open = Vec::new();
    let mut refused = None;
    for i in 0..count {
        match File::options()
            .read(true)
            .write(true)
            .open(mp.join(format!("f{i}")))
        {
            Ok(f) => open.push((i, f)),
            Err(e) => {
                refused = Some((i, e));
                break;
            }
        }
    }
    let (at, err) = refused.expect("every open succeeded past the daemon's limit");
    assert_eq!(err.raw_os_error(), Some(libc::EMFILE), "open {at}: {err}");
    assert!(
        open.len() + 64 > NOFILE as usize,
        "only {} files opened (the daemon held {idle} descriptors before)",
        open.len()
    );
    for (i, f) in &open {
        use std::os::unix::fs::FileExt;
        let mut buf = vec![0; content(*i).len()];
        f.read_exact_at(&mut buf, 0).unwrap();
        assert_eq!(buf, content(*i), "f{i}");
        f.write_all_at(b"x", 0).unwrap();
    }
    drop(open);
    for i in 0..count {
        let mut want = content(i);
        if i < at {
            want[0] = b'x';
        }
        assert_eq!(
            std::fs::read(mp.join(format!("f{i}"))).unwrap(),
            want,
            "f{i}"
        );
    }
    assert_exact(&d, "open", &data, (0, 0), "after the opens");
}

/// Mounts inside a `mount=` directory: their nodes have no usable handle (another device, or
/// another mount of the same filesystem), so they keep their descriptors as before.
#[test]
fn nodes_on_other_mounts_keep_their_descriptors() {
    use nix::mount::{MsFlags, mount};
    if !fuse_or_skip("nodes_on_other_mounts_keep_their_descriptors") {
        return;
    }
    let d = limited_daemon();
    let dir = d.scratch_dir("outer");
    let (tmpfs, bound, elsewhere) = (
        dir.join("tmpfs"),
        dir.join("bound"),
        d.scratch_dir("elsewhere"),
    );
    std::fs::create_dir(&tmpfs).unwrap();
    std::fs::create_dir(&bound).unwrap();
    let none: Option<&str> = None;
    mount(
        Some("tmpfs"),
        &tmpfs,
        Some("tmpfs"),
        MsFlags::empty(),
        Some("size=16m"),
    )
    .unwrap();
    mount(Some(&elsewhere), &bound, none, MsFlags::MS_BIND, none).unwrap();
    let dir_arg = format!("mount={}", dir.display());
    d.cli_ok(["create", "nested", "-o", &dir_arg]);
    let mp = d.mount("nested");

    let mut kept = Vec::new();
    for sub in ["tmpfs", "bound"] {
        std::fs::write(mp.join(sub).join("a"), sub).unwrap();
        kept.push((sub, open_path(&mp.join(sub).join("a"))));
    }
    // Many new nodes elsewhere, while the two directories stay in use: an evictable "a" would
    // lose its descriptor.
    for i in 0..2 * NOFILE {
        std::fs::write(mp.join(format!("f{i}")), b"").unwrap();
        for sub in ["tmpfs", "bound"] {
            assert!(!mp.join(sub).join(format!("none{i}")).exists());
        }
    }
    for sub in ["tmpfs", "bound"] {
        let inner = mp.join(sub);
        // Links within the mount work, and its last name goes.
        std::fs::hard_link(inner.join("a"), inner.join("b")).unwrap();
        std::fs::remove_file(inner.join("a")).unwrap();
        std::fs::remove_file(inner.join("b")).unwrap();
    }
    for i in 0..2 * NOFILE {
        std::fs::write(mp.join(format!("g{i}")), b"").unwrap();
    }
    for (sub, fd) in &kept {
        // Its last name went while no handle was open: its space came back, and the node gave
        // up its descriptor with it, so nothing reopens the inode to write to it uncounted.
        let path = format!("/proc/self/fd/{}", fd.as_raw_fd());
        let err = std::fs::read(&path).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ENOENT), "{sub}: {err}");
    }
    drop(kept);
    no_emfile_in_log(&d);
    // Dropping the daemon detaches every mount under its test directory, these two included.
}
