//! The daemon's privilege boundary, attacked as the attacker would: an unprivileged host user
//! (`setpriv` to nobody) or root on a volume. docs/security.md lists each guarantee and the
//! test here that shows it.
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::{Command, Output};

use fuse_tests::daemon::{TestDaemon, TestRoot, fuse_or_skip, is_mountpoint, stderr_of};
use fuse_tests::{Backend, TestSession, as_nobody};

const NOBODY: u32 = 65534;

/// A test root whose scratch directory unprivileged users can reach (the daemon's root is
/// what the daemon makes of it).
fn open_test_root() -> TestRoot {
    let root = TestRoot::new();
    for dir in [root.base(), &root.scratch()] {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    root
}

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn chown(path: &Path, uid: u32) {
    std::os::unix::fs::chown(path, Some(uid), Some(uid)).unwrap();
}

/// Finding 2: nothing under ROOT is reachable by other users: not a volume's backing
/// directory, not its FUSE mountpoint, whatever the modes inside the volume are. Also after
/// an older fvol left ROOT and `ROOT/volumes` traversable (0711).
#[test]
fn volume_data_under_root_is_unreachable_by_host_users() {
    if !fuse_or_skip("volume_data_under_root_is_unreachable_by_host_users") {
        return;
    }
    let root = open_test_root();
    let mut d = TestDaemon::start_at(&root);
    d.cli_ok(["create", "vol", "-o", "size=64M", "-o", "mode=1777"]);
    let mp = d.mount("vol");
    std::fs::write(mp.join("secret"), b"container data").unwrap();
    chmod(&mp.join("secret"), 0o644);
    let data = d.root().join("volumes/vol/data");
    assert!(data.join("secret").exists());

    let attempts = |when: &str| {
        for path in [data.join("secret"), mp.join("secret")] {
            let out = as_nobody(&format!("cat '{}'", path.display()));
            assert!(
                !out.status.success(),
                "{when}: nobody read {} ({})",
                path.display(),
                String::from_utf8_lossy(&out.stdout)
            );
        }
        let out = as_nobody(&format!("ls '{}'", d_volumes(&root).display()));
        assert!(!out.status.success(), "{when}: nobody listed the volumes");
    };
    attempts("fresh root");

    // An older fvol made both 0711: the next start tightens them.
    d.stop();
    chmod(&root.root(), 0o711);
    chmod(&d_volumes(&root), 0o711);
    let d = TestDaemon::start_at(&root);
    for dir in [root.root(), d_volumes(&root)] {
        let mode = std::fs::metadata(&dir).unwrap().mode() & 0o7777;
        assert_eq!(mode, 0o700, "{} after a restart", dir.display());
    }
    attempts("after a restart on a 0711 root");
    drop(d);
}

fn d_volumes(root: &TestRoot) -> std::path::PathBuf {
    root.root().join("volumes")
}

/// Finding 2: a ROOT that another user could replace (a parent they own or can write) is
/// refused with the reason.
#[test]
fn a_root_users_could_replace_is_refused() {
    let root = open_test_root();
    let user_dir = root.scratch_dir("user");
    chown(&user_dir, NOBODY);
    let mut daemon = Command::new(fuse_tests::daemon::fvol_bin())
        .arg("--root")
        .arg(user_dir.join("fvol"))
        .arg("daemon")
        .args(root.daemon_args(["--no-plugin"]))
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let exited = fuse_tests::docker::wait_until(fuse_tests::daemon::DAEMON_TIMEOUT, || {
        daemon.try_wait().unwrap().is_some()
    });
    if !exited {
        let _ = daemon.kill();
        let _ = daemon.wait();
        panic!("the daemon started on a root under a directory nobody owns");
    }
    let out = daemon.wait_with_output().unwrap();
    assert!(!out.status.success());
    let err = stderr_of(&out);
    assert!(err.contains("owned by uid 65534"), "{err}");
}

/// Finding 4: a bind target whose path a user later turns into a symlink is not followed at
/// the next start; the volume is not mounted over the directory the symlink names.
#[test]
fn bind_target_swapped_for_a_symlink_is_not_followed_after_a_restart() {
    if !fuse_or_skip("bind_target_swapped_for_a_symlink_is_not_followed_after_a_restart") {
        return;
    }
    let root = open_test_root();
    let user_dir = root.scratch_dir("user");
    chown(&user_dir, NOBODY);
    let protected = root.scratch_dir("protected");
    chmod(&protected, 0o700);
    std::fs::write(protected.join("keys"), b"root only").unwrap();
    let target = user_dir.join("t");
    std::fs::create_dir(&target).unwrap();

    let mut d = TestDaemon::start_at(&root);
    d.cli_ok(["create", "vol"]);
    d.cli_ok(["mount", "vol", "--target", target.to_str().unwrap()]);
    assert!(is_mountpoint(&target));
    d.stop();
    assert!(!is_mountpoint(&target));

    let swap = format!(
        "rmdir '{t}' && ln -s '{p}' '{t}'",
        t = target.display(),
        p = protected.display()
    );
    let out = as_nobody(&swap);
    assert!(out.status.success(), "{}", stderr_of(&out));

    let d = TestDaemon::start_at(&root);
    assert!(
        !is_mountpoint(&protected),
        "the volume was mounted over the directory a user's symlink named"
    );
    assert_eq!(std::fs::read(protected.join("keys")).unwrap(), b"root only");
    assert!(root.log().contains("cannot bind it at"), "{}", root.log());
    drop(d);
}

/// Finding 4: `fvol mount --target` refuses a path through a symlink, naming the resolved
/// path, and a target inside the fvol root.
#[test]
fn bind_target_through_a_symlink_is_refused() {
    if !fuse_or_skip("bind_target_through_a_symlink_is_refused") {
        return;
    }
    let root = open_test_root();
    let real = root.scratch_dir("real");
    let link = root.scratch().join("link");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    let d = TestDaemon::start_at(&root);
    d.cli_ok(["create", "vol"]);
    let out = d.cli(["mount", "vol", "--target", link.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = stderr_of(&out);
    assert!(err.contains("symlink"), "{err}");
    assert!(err.contains(real.to_str().unwrap()), "{err}");
    assert!(!is_mountpoint(&real));
    let inside = d.root().join("volumes");
    let out = d.cli(["mount", "vol", "--target", inside.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(stderr_of(&out).contains("inside the fvol root"));
}

/// Finding 4: unmounting a reference detaches only the bind mount fvol made: when something
/// else is mounted at the target by then, it stays.
#[test]
fn unmount_never_detaches_a_mount_fvol_did_not_make() {
    if !fuse_or_skip("unmount_never_detaches_a_mount_fvol_did_not_make") {
        return;
    }
    let root = open_test_root();
    let target = root.scratch_dir("t");
    let d = TestDaemon::start_at(&root);
    d.cli_ok(["create", "vol"]);
    d.cli_ok(["mount", "vol", "--target", target.to_str().unwrap()]);
    // Someone else replaces fvol's bind with a mount of their own.
    nix::mount::umount2(&target, nix::mount::MntFlags::MNT_DETACH).unwrap();
    let status = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m", "other"])
        .arg(&target)
        .status()
        .unwrap();
    assert!(status.success());
    std::fs::write(target.join("theirs"), b"x").unwrap();
    d.cli_ok(["unmount", "vol", "--target", target.to_str().unwrap()]);
    let still = target.join("theirs").exists();
    let _ = nix::mount::umount2(&target, nix::mount::MntFlags::MNT_DETACH);
    assert!(still, "fvol unmount detached a tmpfs it had not mounted");
}

/// Finding 4: a `mount=` directory is pinned at create. A user who owns its parent cannot
/// redirect the volume later: neither with a symlink nor with another directory in its place.
#[test]
fn mount_dir_swapped_after_create_is_refused() {
    if !fuse_or_skip("mount_dir_swapped_after_create_is_refused") {
        return;
    }
    let root = open_test_root();
    let user_dir = root.scratch_dir("user");
    chown(&user_dir, NOBODY);
    let dir = user_dir.join("vol");
    std::fs::create_dir(&dir).unwrap();
    chown(&dir, NOBODY);
    let protected = root.scratch_dir("protected");
    chmod(&protected, 0o700);
    std::fs::write(protected.join("keys"), b"root only").unwrap();

    let d = TestDaemon::start_at(&root);
    let mount_opt = format!("mount={}", dir.display());
    d.cli_ok(["create", "vol", "-o", &mount_opt]);
    for (what, swap) in [
        (
            "a symlink",
            format!(
                "mv '{d}' '{d}.old' && ln -s '{p}' '{d}'",
                d = dir.display(),
                p = protected.display()
            ),
        ),
        (
            "another directory",
            format!("rm '{d}' && mkdir '{d}'", d = dir.display()),
        ),
    ] {
        let out = as_nobody(&swap);
        assert!(out.status.success(), "{what}: {}", stderr_of(&out));
        let out = d.cli(["mount", "vol"]);
        assert!(
            !out.status.success(),
            "the volume mounted after its mount= path became {what}"
        );
        let err = stderr_of(&out);
        assert!(
            err.contains("symlink") || err.contains("another directory"),
            "{err}"
        );
    }
    // The original, put back, mounts again.
    let out = as_nobody(&format!(
        "rmdir '{d}' && mv '{d}.old' '{d}'",
        d = dir.display()
    ));
    assert!(out.status.success(), "{}", stderr_of(&out));
    d.mount("vol");
    d.cli_ok(["unmount", "vol"]);
}

/// Finding 4: system directories, pseudo filesystems, shared parents and other fvol roots are
/// refused as `mount=`, with the rule in the message; so is a path through a symlink.
#[test]
fn mount_dir_rules() {
    let root = open_test_root();
    let d = TestDaemon::start_at(&root);
    let other = TestDaemon::start_at(&open_test_root());
    other.cli_ok(["create", "theirs"]);
    let theirs = other.root().join("volumes/theirs/data");
    let real = root.scratch_dir("real");
    let link = root.scratch().join("link");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    let cases: Vec<(String, &str)> = vec![
        ("/etc".into(), "system directory"),
        ("/etc/ssl".into(), "system directory"),
        ("/dev".into(), "system directory"),
        ("/sys/kernel".into(), "system directory"),
        ("/proc/1".into(), "system directory"),
        ("/usr/bin".into(), "system directory"),
        ("/".into(), "holds other users' directories"),
        ("/tmp".into(), "holds other users' directories"),
        ("/home".into(), "holds other users' directories"),
        (theirs.display().to_string(), "inside another fvol root"),
        (link.display().to_string(), "symlink"),
    ];
    for (i, (dir, why)) in cases.iter().enumerate() {
        let name = format!("v{i}x");
        let out = d.cli(["create", &name, "-o", &format!("mount={dir}")]);
        assert!(!out.status.success(), "mount={dir} was accepted");
        let err = stderr_of(&out);
        assert!(err.contains(why), "mount={dir}: {err}");
        assert!(!d.cli(["inspect", &name]).status.success());
    }
    drop(other);
}

/// Finding 4: `uid=`, `gid=` and `mode=` never re-own an existing directory that holds
/// files; an empty one is set as asked.
#[test]
fn mount_dir_with_files_is_never_re_owned() {
    let root = open_test_root();
    let d = TestDaemon::start_at(&root);
    let full = root.scratch_dir("full");
    std::fs::write(full.join("f"), b"x").unwrap();
    chown(&full, 1000);
    chmod(&full, 0o750);
    for opt in ["uid=0", "gid=0", "mode=777"] {
        let out = d.cli([
            "create",
            "vol",
            "-o",
            &format!("mount={}", full.display()),
            "-o",
            opt,
        ]);
        assert!(!out.status.success(), "{opt} accepted");
        assert!(stderr_of(&out).contains("not empty"), "{}", stderr_of(&out));
        let meta = std::fs::metadata(&full).unwrap();
        assert_eq!((meta.uid(), meta.mode() & 0o7777), (1000, 0o750), "{opt}");
    }
    // The same owner and mode as it has already: nothing to change, accepted.
    d.cli_ok([
        "create",
        "same",
        "-o",
        &format!("mount={}", full.display()),
        "-o",
        "uid=1000",
        "-o",
        "mode=750",
    ]);
    let empty = root.scratch_dir("empty");
    d.cli_ok([
        "create",
        "empty",
        "-o",
        &format!("mount={}", empty.display()),
        "-o",
        "uid=1000",
        "-o",
        "mode=700",
    ]);
    let meta = std::fs::metadata(&empty).unwrap();
    assert_eq!((meta.uid(), meta.mode() & 0o7777), (1000, 0o700));
}

/// Finding 10: `trusted.*` xattrs are listed only to callers with CAP_SYS_ADMIN, as on ext4.
fn trusted_names_hidden(backend: Backend) {
    let s = TestSession::with(backend, Some(64 << 20), None);
    chmod(s.mnt(), 0o777);
    let file = s.path("f");
    std::fs::write(&file, b"x").unwrap();
    chmod(&file, 0o666);
    for (name, value) in [("trusted.overlay.opaque", "y"), ("user.visible", "1")] {
        let status = Command::new("setfattr")
            .args(["-n", name, "-v", value])
            .arg(&file)
            .status()
            .unwrap();
        assert!(status.success(), "setfattr {name}");
    }
    let list = |out: Output| String::from_utf8_lossy(&out.stdout).into_owned();
    let as_root = list(
        Command::new("getfattr")
            .args(["-d", "-m", "-"])
            .arg(&file)
            .output()
            .unwrap(),
    );
    assert!(as_root.contains("trusted.overlay.opaque"), "{as_root}");
    let seen = list(as_nobody(&format!(
        "getfattr -d -m - '{}' ; python3 -c 'import os,sys; print(os.listxattr(sys.argv[1]))' '{}'",
        file.display(),
        file.display()
    )));
    assert!(seen.contains("user.visible"), "{backend:?}: {seen}");
    assert!(!seen.contains("trusted."), "{backend:?}: nobody saw {seen}");
}

#[test]
fn trusted_xattr_names_hidden_local() {
    trusted_names_hidden(Backend::Local);
}

#[test]
fn trusted_xattr_names_hidden_tmpfs() {
    trusted_names_hidden(Backend::Tmpfs);
}

#[test]
fn trusted_xattr_names_hidden_image() {
    trusted_names_hidden(Backend::Image);
}
