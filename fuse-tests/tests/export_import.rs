//! `fvol export` and `fvol import` on every driver (rbd on a real cluster): an export taken
//! while a writer appends holds whole records only; importing it gives an equal tree (file
//! types, owners, modes, times, xattrs, hard links, holes); a stream too big for the volume is
//! refused before anything is written.
use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt, symlink};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use fuse_tests::ceph::TestCluster;
use fuse_tests::daemon::{TestDaemon, fuse_or_skip, stderr_of};

const MIB: u64 = 1 << 20;
const RECORD: usize = 64;

/// xattrs by path, through fvol's own wrappers.
mod xattr {
    use std::ffi::{CString, OsString};
    use std::os::unix::ffi::{OsStrExt, OsStringExt};
    use std::path::Path;

    fn c(p: &[u8]) -> CString {
        CString::new(p).unwrap()
    }

    pub fn set(path: impl AsRef<Path>, name: &str, value: &[u8]) -> std::io::Result<()> {
        let path = c(path.as_ref().as_os_str().as_bytes());
        fvol::sys::xattr::set(&path, &c(name.as_bytes()), value, 0).map_err(Into::into)
    }

    pub fn list(path: &Path) -> std::io::Result<std::vec::IntoIter<OsString>> {
        let p = c(path.as_os_str().as_bytes());
        let mut buf = vec![0u8; 65536];
        let n = fvol::sys::xattr::list(&p, &mut buf)?;
        let names: Vec<OsString> = buf[..n]
            .split(|&b| b == 0)
            .filter(|n| !n.is_empty())
            .map(|n| OsString::from_vec(n.to_vec()))
            .collect();
        Ok(names.into_iter())
    }

    pub fn get(path: &Path, name: &OsString) -> std::io::Result<Option<Vec<u8>>> {
        let p = c(path.as_os_str().as_bytes());
        let mut buf = vec![0u8; 65536];
        let n = fvol::sys::xattr::get(&p, &c(name.as_bytes()), &mut buf)?;
        buf.truncate(n);
        Ok(Some(buf))
    }
}

fn populate(mp: &Path) {
    std::fs::create_dir_all(mp.join("dir/sub")).unwrap();
    std::fs::write(mp.join("dir/plain"), b"hello\n").unwrap();
    std::fs::write(mp.join("dir/sub/big"), vec![0xabu8; 20 << 20]).unwrap();
    // Sparse: data at 1 MiB and at 40 MiB of a 64 MiB file.
    let f = std::fs::File::create(mp.join("sparse")).unwrap();
    use std::os::unix::fs::FileExt;
    f.write_all_at(&[1u8; 8192], MIB).unwrap();
    f.write_all_at(&[2u8; 8192], 40 * MIB).unwrap();
    f.set_len(64 * MIB).unwrap();
    drop(f);
    std::fs::hard_link(mp.join("dir/plain"), mp.join("hardlink")).unwrap();
    symlink("dir/plain", mp.join("link")).unwrap();
    nix::unistd::mkfifo(
        &mp.join("fifo"),
        nix::sys::stat::Mode::from_bits_truncate(0o640),
    )
    .unwrap();
    nix::sys::stat::mknod(
        &mp.join("null"),
        nix::sys::stat::SFlag::S_IFCHR,
        nix::sys::stat::Mode::from_bits_truncate(0o666),
        nix::sys::stat::makedev(1, 3),
    )
    .unwrap();
    xattr::set(mp.join("dir/plain"), "user.colour", b"blue").unwrap();
    xattr::set(mp.join("dir"), "user.kind", b"directory").unwrap();
    std::os::unix::fs::chown(mp.join("dir/sub"), Some(1234), Some(5678)).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(mp.join("dir/plain"), std::fs::Permissions::from_mode(0o640)).unwrap();
    std::fs::set_permissions(mp.join("dir/sub"), std::fs::Permissions::from_mode(0o751)).unwrap();
    // A path longer than a tar header's 100 bytes.
    let long = mp.join("d".repeat(70)).join("f".repeat(70));
    std::fs::create_dir(long.parent().unwrap()).unwrap();
    std::fs::write(&long, b"long\n").unwrap();
    // POSIX ACLs: an access ACL on a file, a default ACL on a directory.
    for (args, path) in [
        (&["-m", "u:1234:rw,g:5678:r"][..], mp.join("dir/plain")),
        (&["-d", "-m", "u:1234:rwx"][..], mp.join("dir/sub")),
    ] {
        let out = Command::new("setfacl")
            .args(args)
            .arg(&path)
            .output()
            .unwrap();
        assert!(out.status.success(), "setfacl: {}", stderr_of(&out));
    }
    // A 1 GiB file of data (no holes), in 1 MiB pieces that differ.
    let mut huge = std::fs::File::create(mp.join("huge")).unwrap();
    for i in 0..1024u32 {
        let mut piece = vec![(i % 251) as u8; MIB as usize];
        piece[..4].copy_from_slice(&i.to_le_bytes());
        huge.write_all(&piece).unwrap();
    }
    drop(huge);
    let old = nix::sys::time::TimeSpec::new(1_000_000_000, 0);
    nix::sys::stat::utimensat(
        nix::fcntl::AT_FDCWD,
        &mp.join("dir/sub/big"),
        &old,
        &old,
        nix::sys::stat::UtimensatFlags::NoFollowSymlink,
    )
    .unwrap();
}

/// Every node under `root` (but `skip`) as text: type, mode, owner, size, mtime, content or
/// target, xattrs, and which names share an inode.
fn describe(root: &Path, skip: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut inodes: BTreeMap<u64, String> = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let path = e.unwrap().path();
            let rel = path.strip_prefix(root).unwrap().display().to_string();
            if rel == skip {
                continue;
            }
            let m = path.symlink_metadata().unwrap();
            let t = m.file_type();
            let what = if t.is_dir() {
                stack.push(path.clone());
                "dir".to_string()
            } else if t.is_symlink() {
                format!("link {}", std::fs::read_link(&path).unwrap().display())
            } else if t.is_file() {
                let data = std::fs::read(&path).unwrap();
                format!("file {:x}", fnv(&data))
            } else if t.is_fifo() {
                "fifo".into()
            } else if t.is_char_device() {
                format!("chr {}", m.rdev())
            } else {
                "other".into()
            };
            let mut xattrs: Vec<String> = match t.is_symlink() {
                true => Vec::new(),
                false => xattr::list(&path)
                    .unwrap()
                    .filter(|n| n.to_string_lossy().starts_with("user."))
                    .map(|n| {
                        let v = xattr::get(&path, &n).unwrap().unwrap_or_default();
                        format!("{}={}", n.to_string_lossy(), String::from_utf8_lossy(&v))
                    })
                    .collect(),
            };
            xattrs.sort();
            let mtime = if t.is_dir() { 0 } else { m.mtime() };
            let link = match (m.nlink() > 1 && !t.is_dir(), inodes.get(&m.ino())) {
                (true, Some(first)) => format!(" same as {first}"),
                (true, None) => {
                    inodes.insert(m.ino(), rel.clone());
                    String::new()
                }
                _ => String::new(),
            };
            out.insert(
                rel,
                format!(
                    "{what} mode {:o} {}:{} size {} mtime {mtime} {xattrs:?}{link}",
                    m.mode(),
                    m.uid(),
                    m.gid(),
                    if t.is_dir() { 0 } else { m.size() }
                ),
            );
        }
    }
    out
}

/// `getfacl`'s text for `path`, numeric ids, without its header.
fn acls(path: &Path) -> String {
    let out = Command::new("getfacl")
        .args(["-n", "--omit-header"])
        .arg(path)
        .output()
        .unwrap();
    assert!(out.status.success(), "getfacl: {}", stderr_of(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
    })
}

fn story(driver: &str, extra: &[String]) {
    let d = TestDaemon::start();
    let create = |name: &str, size: &str| {
        let mut args = vec!["create".to_string(), "-d".into(), driver.into()];
        for o in extra {
            args.extend(["-o".into(), o.clone()]);
        }
        args.extend(["-o".into(), format!("size={size}"), name.into()]);
        d.cli_ok(&args);
    };
    create("src", "1536M");
    let mp = d.mount("src");
    populate(&mp);

    // A writer appends whole records while the export is taken.
    let stop = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicU64::new(0));
    let writer = {
        let (stop, count, path) = (stop.clone(), count.clone(), mp.join("log"));
        std::thread::spawn(move || {
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .unwrap();
            while !stop.load(Ordering::Relaxed) {
                f.write_all(&[0x42u8; RECORD]).unwrap();
                count.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    let start = Instant::now();
    while count.load(Ordering::Relaxed) < 100 {
        assert!(start.elapsed() < Duration::from_secs(60));
        std::thread::sleep(Duration::from_millis(5));
    }
    let tar = d.scratch_dir("out").join("src.tar");
    d.cli_ok(["export", "src", "--output", tar.to_str().unwrap()]);
    // The file holds the volume's data: only its owner may read it (the daemon runs with
    // umask 0, which once made it 0666). A file that was there keeps its own mode.
    let mode_of = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode_of(&tar), 0o600, "mode of a new export file");
    let kept = tar.with_file_name("kept.tar");
    std::fs::write(&kept, b"old").unwrap();
    std::fs::set_permissions(&kept, std::fs::Permissions::from_mode(0o640)).unwrap();
    d.cli_ok(["export", "src", "--output", kept.to_str().unwrap()]);
    assert_eq!(mode_of(&kept), 0o640, "mode of an export file written over");
    assert!(std::fs::metadata(&kept).unwrap().len() > 3 << 20);
    std::fs::remove_file(&kept).unwrap();
    let stdout = d.cli(["export", "src"]);
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    assert!(stdout.status.success(), "{}", stderr_of(&stdout));
    assert!(stdout.stdout.len() > 3 << 20, "export to stdout");

    // Import into a new, mounted volume: the same tree, the log a whole number of records.
    create("dst", "1536M");
    let dmp = d.mount("dst");
    d.cli_ok(["import", "dst", tar.to_str().unwrap()]);
    assert_eq!(describe(&mp, "log"), describe(&dmp, "log"));
    for path in ["dir/plain", "dir/sub"] {
        assert_eq!(
            acls(&mp.join(path)),
            acls(&dmp.join(path)),
            "ACLs of {path}"
        );
        assert!(acls(&mp.join(path)).contains("1234"), "{path} has no ACL");
    }
    let log = std::fs::metadata(dmp.join("log")).unwrap().len();
    assert!(
        log > 0 && log.is_multiple_of(RECORD as u64),
        "the log has {log} bytes"
    );
    let sparse = std::fs::metadata(dmp.join("sparse")).unwrap();
    assert!(
        sparse.blocks() * 512 < 8 * MIB,
        "holes stay holes: {} bytes allocated",
        sparse.blocks() * 512
    );

    // A stream that names a file but not its directories: tar makes them, and they are not
    // writable by everyone (tar once ran with the daemon's umask 0 and made them 0777).
    let scratch = d.scratch_dir("implied");
    std::fs::create_dir_all(scratch.join("implied/dir")).unwrap();
    std::fs::write(scratch.join("implied/dir/file"), b"x").unwrap();
    let implied = scratch.join("implied.tar");
    let made = Command::new("tar")
        .arg("-cf")
        .arg(&implied)
        .arg("-C")
        .arg(&scratch)
        .arg("implied/dir/file")
        .status()
        .unwrap();
    assert!(made.success());
    d.cli_ok(["import", "dst", implied.to_str().unwrap()]);
    for dir in ["implied", "implied/dir"] {
        assert_eq!(mode_of(&dmp.join(dir)), 0o755, "mode of the implied {dir}");
    }

    // Too big for the volume: refused before anything is written.
    create("small", "16M");
    let smp = d.mount("small");
    let out = d.cli(["import", "small", tar.to_str().unwrap()]);
    let err = stderr_of(&out);
    assert!(!out.status.success(), "an import into a too small volume");
    assert!(err.contains("nothing was written"), "{err}");
    assert_eq!(std::fs::read_dir(&smp).unwrap().count(), 0, "{err}");
    let out = d.cli(["import", "small", "/no/such/stream.tar"]);
    assert!(!out.status.success());
    for v in ["src", "dst", "small"] {
        d.cli_ok(["unmount", v]);
        d.cli_ok(["rm", v]);
    }
}

#[test]
fn export_import_local() {
    if !fuse_or_skip("export_import_local") {
        return;
    }
    story("local", &[]);
}

#[test]
fn export_import_tmpfs() {
    if !fuse_or_skip("export_import_tmpfs") {
        return;
    }
    story("tmpfs", &[]);
}

#[test]
fn export_import_rbd() {
    if !fuse_or_skip("export_import_rbd") {
        return;
    }
    let ceph = TestCluster::start();
    story("rbd", &[ceph.conf_opt()]);
}
