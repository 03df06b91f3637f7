//! Bad input: every refusal exits non-zero, prints one `fvol: ...` line naming the problem,
//! and changes nothing.
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Output;

use fuse_tests::daemon::{TestDaemon, TestRoot, fuse_or_skip, is_mountpoint, stderr_of, stdout_of};

/// What a refused command must leave as it was.
#[derive(Debug, PartialEq, Eq)]
struct Snapshot {
    names: String,
    volumes_json: String,
    volume_dirs: Vec<String>,
    /// (mtime in ns, size) of the catalog. Only taken while no volume is mounted: the daemon
    /// checkpoints the usage of mounted volumes every few seconds.
    catalog: Option<(i128, u64)>,
}

fn snapshot(d: &TestDaemon) -> Snapshot {
    let volumes_json = d.cli_ok(["ls", "--format", "json"]);
    let any_mounted = volumes_json.contains("\"Mounted\": true");
    let catalog = (!any_mounted).then(|| {
        let m = std::fs::metadata(d.root().join("fvol.redb")).unwrap();
        (
            i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()),
            m.size(),
        )
    });
    let mut volume_dirs: Vec<String> = std::fs::read_dir(d.root().join("volumes"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    volume_dirs.sort();
    Snapshot {
        names: d.cli_ok(["ls", "-q"]),
        volumes_json: without_usage(&volumes_json),
        volume_dirs,
        catalog,
    }
}

/// The listing without live usage, which a mounted volume's own activity moves (a close's
/// release reaches the handler after the close).
fn without_usage(json: &str) -> String {
    let mut volumes: serde_json::Value = serde_json::from_str(json).unwrap();
    for v in volumes.as_array_mut().unwrap() {
        let status = v["Status"].as_object_mut().unwrap();
        status.remove("UsedBytes");
        status.remove("UsedInodes");
    }
    volumes.to_string()
}

/// Checks a failed command's output: non-zero exit, nothing on stdout, exactly one stderr line
/// starting with `fvol:` and containing every needle. Returns that line.
fn assert_one_error_line(args: &[&str], out: &Output, needles: &[&str]) -> String {
    let err = stderr_of(out);
    assert!(
        !out.status.success(),
        "fvol {args:?} succeeded; stdout: {}",
        stdout_of(out)
    );
    assert_eq!(stdout_of(out), "", "fvol {args:?} printed on stdout");
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(
        lines.len(),
        1,
        "fvol {args:?}: expected one error line, got:\n{err}"
    );
    let line = lines[0];
    assert!(line.starts_with("fvol: "), "fvol {args:?}: {line}");
    for needle in needles {
        assert!(
            line.contains(needle),
            "fvol {args:?}: the error should mention {needle:?}: {line}"
        );
    }
    line.to_string()
}

/// Runs `fvol ARGS` expecting a refusal that names `needles` and changes nothing.
fn refused(d: &TestDaemon, args: &[&str], needles: &[&str]) -> String {
    let before = snapshot(d);
    let out = d.cli(args);
    let line = assert_one_error_line(args, &out, needles);
    assert_eq!(snapshot(d), before, "fvol {args:?} changed something");
    line
}

const NAME_RULE: &str = "[a-zA-Z0-9][a-zA-Z0-9_.-]+";

#[test]
fn invalid_names_are_refused() {
    if !fuse_or_skip("invalid_names_are_refused") {
        return;
    }
    let d = TestDaemon::start();
    d.cli_ok(["create", "ok"]);
    for name in ["a", "-x", "/x", "../x", "a/b", ".x", "a b", "../ok"] {
        let quoted = format!("{name:?}");
        let needles = ["invalid volume name", quoted.as_str(), NAME_RULE];
        refused(&d, &["create", "--", name], &needles);
        refused(&d, &["create", "-o", "size=1M", "--", name], &needles);
        refused(&d, &["mount", "--", name], &needles);
        refused(&d, &["path", "--", name], &needles);
        refused(&d, &["inspect", "--", name], &needles);
    }
    let long = "a".repeat(256);
    refused(&d, &["create", &long], &["invalid volume name", "255"]);
    assert!(!d.root().join("x").exists() && !d.root().join("volumes/x").exists());
}

/// `fvol create ""` names the volume explicitly, so it must be refused like any invalid name
/// (rather than falling back to a random name, as a missing name does).
#[test]
fn empty_name_is_refused() {
    if !fuse_or_skip("empty_name_is_refused") {
        return;
    }
    let d = TestDaemon::start();
    d.cli_ok(["create", "ok"]);
    refused(&d, &["create", ""], &["invalid volume name", "\"\""]);
    refused(&d, &["mount", ""], &["invalid volume name"]);
    refused(&d, &["path", ""], &["invalid volume name"]);
}

#[test]
fn conflicting_create_and_unknown_driver_are_refused() {
    if !fuse_or_skip("conflicting_create_and_unknown_driver_are_refused") {
        return;
    }
    let d = TestDaemon::start();
    d.cli_ok(["create", "vol1", "-o", "size=64M"]);
    refused(
        &d,
        &["create", "vol1", "-o", "size=32M"],
        &["vol1", "already exists", "64M"],
    );
    refused(&d, &["create", "vol1"], &["vol1", "already exists"]);
    refused(
        &d,
        &["create", "vol1", "-o", "size=64M", "-o", "inodes=10"],
        &["vol1", "already exists"],
    );
    refused(
        &d,
        &["create", "vol1", "-d", "nfs", "-o", "size=64M"],
        &["unknown driver", "nfs", "local"],
    );
    refused(
        &d,
        &["create", "vol2", "-d", "nfs"],
        &["unknown driver", "\"nfs\"", "local"],
    );
    refused(
        &d,
        &["create", "-d", "nfs"],
        &["unknown driver", "nfs", "local"],
    );
    // The same create again is fine, with or without naming the default driver.
    assert_eq!(d.cli_ok(["create", "vol1", "-o", "size=64M"]), "vol1\n");
    assert_eq!(
        d.cli_ok(["create", "vol1", "-d", "local", "-o", "size=64M"]),
        "vol1\n"
    );
    assert_eq!(d.cli_ok(["ls", "-q"]), "vol1\n");
}

#[test]
fn bad_options_are_refused() {
    if !fuse_or_skip("bad_options_are_refused") {
        return;
    }
    let d = TestDaemon::start();
    d.cli_ok(["create", "ok"]);
    refused(
        &d,
        &["create", "vol1", "-o", "foo=1"],
        &["\"foo\"", "size, inodes, uid, gid, mode, mount"],
    );
    for size in ["10X", "-1", "0", "", "1.5.5G"] {
        let opt = format!("size={size}");
        let quoted = format!("{size:?}");
        refused(
            &d,
            &["create", "vol1", "-o", &opt],
            &["size", &quoted, "512M"],
        );
        refused(&d, &["create", "-o", &opt], &["size", &quoted]);
    }
    for (opt, needles) in [
        ("inodes=0", &["inodes=\"0\"", "positive"][..]),
        ("uid=root", &["uid=\"root\"", "numeric"][..]),
        ("gid=-1", &["gid=\"-1\"", "numeric"][..]),
        ("mode=0999", &["mode=\"0999\"", "octal"][..]),
        ("size", &["\"size\"", "key=value"][..]),
        ("=1", &["\"=1\"", "key=value"][..]),
    ] {
        refused(&d, &["create", "vol1", "-o", opt], needles);
    }
    refused(
        &d,
        &["create", "vol1", "--label", "nolabel"],
        &["label", "key=value"],
    );
}

/// A volume needs at least one block (4096 bytes) and a whole number of bytes: `size=100` and
/// `size=1.5` made volumes of 100 bytes and 1 byte (issue 11, finding 9).
#[test]
fn sizes_below_one_block_are_refused() {
    if !fuse_or_skip("sizes_below_one_block_are_refused") {
        return;
    }
    let d = TestDaemon::start();
    for size in ["100", "1.5", "4095", "0.5K"] {
        let opt = format!("size={size}");
        for driver in ["local", "tmpfs"] {
            refused(
                &d,
                &["create", "-d", driver, "small", "-o", &opt],
                &[
                    &format!("size: invalid size {size:?}"),
                    "less than one block",
                    "the minimum is 4096 bytes",
                ],
            );
        }
    }
    refused(
        &d,
        &["create", "small", "-o", "size=4096.5"],
        &["\"4096.5\"", "must be whole", "1.5G"],
    );
    // Valid forms still work, fractions with a unit included.
    for (name, size, bytes) in [
        ("block", "4096", 4096),
        ("four-k", "4K", 4096),
        ("big", "1.5G", 1_610_612_736u64),
    ] {
        d.cli_ok(["create", name, "-o", &format!("size={size}")]);
        assert_eq!(d.inspect(name)["Status"]["SizeLimit"], bytes, "{size}");
    }
}

/// Labels and options are bounded in count and size, with errors that give the limit; 2 MB of
/// labels were accepted (issue 11, finding 9).
#[test]
fn oversized_labels_and_options_are_refused() {
    if !fuse_or_skip("oversized_labels_and_options_are_refused") {
        return;
    }
    let d = TestDaemon::start();
    let long_value = format!("k={}", "v".repeat(4097));
    refused(
        &d,
        &["create", "vol1", "--label", &long_value],
        &["invalid label", "\"k\"", "4097 bytes", "at most 4096 bytes"],
    );
    let long_key = format!("{}=v", "k".repeat(257));
    refused(
        &d,
        &["create", "vol1", "--label", &long_key],
        &["invalid label", "257 bytes", "at most 256 bytes"],
    );
    let many: Vec<String> = (0..65).map(|i| format!("k{i}=v")).collect();
    let mut args = vec!["create", "vol1"];
    for label in &many {
        args.extend(["--label", label]);
    }
    refused(&d, &args, &["65 labels given", "at most 64"]);
    // 64 labels of 1 KiB each are too many bytes together.
    let heavy: Vec<String> = (0..64)
        .map(|i| format!("k{i:02}={}", "v".repeat(1024)))
        .collect();
    let mut args = vec!["create", "vol1"];
    for label in &heavy {
        args.extend(["--label", label]);
    }
    refused(&d, &args, &["invalid label", "at most 65536 bytes"]);
    let long_mount = format!("mount=/{}", "d".repeat(4096));
    refused(
        &d,
        &["create", "vol1", "-o", &long_mount],
        &["invalid option", "\"mount\"", "at most 4096 bytes"],
    );
    // At the limits, accepted.
    let mut args = vec!["create", "vol1"];
    let fits: Vec<String> = (0..64)
        .map(|i| format!("k{i:02}={}", "v".repeat(1000)))
        .collect();
    for label in &fits {
        args.extend(["--label", label]);
    }
    d.cli_ok(&args);
    assert_eq!(d.inspect("vol1")["Labels"].as_object().unwrap().len(), 64);
}

#[test]
fn bad_mount_dirs_are_refused() {
    if !fuse_or_skip("bad_mount_dirs_are_refused") {
        return;
    }
    let d = TestDaemon::start();
    d.cli_ok(["create", "ok"]);
    let scratch = d.scratch_dir("s");
    let missing = scratch.join("nonexistent");
    let file = scratch.join("regular-file");
    std::fs::write(&file, b"not a dir").unwrap();
    let inside = d.root().join("inside");
    std::fs::create_dir(&inside).unwrap();
    let base = d.root.base().to_path_buf();
    let opt = |p: &Path| format!("mount={}", p.display());
    let cases: Vec<(String, Vec<String>)> = vec![
        (
            "mount=relative/dir".into(),
            vec!["relative/dir".into(), "absolute".into()],
        ),
        (
            "mount=/nonexistent".into(),
            vec!["/nonexistent".into(), "No such file".into()],
        ),
        (
            opt(&missing),
            vec![missing.display().to_string(), "No such file".into()],
        ),
        (
            opt(&file),
            vec![file.display().to_string(), "not a directory".into()],
        ),
        (
            opt(&inside),
            vec![inside.display().to_string(), "inside the fvol root".into()],
        ),
        (
            opt(&d.root().join("volumes/ok/data")),
            vec!["inside the fvol root".into()],
        ),
        (opt(&d.root()), vec!["inside the fvol root".into()]),
        (
            opt(&base),
            vec![base.display().to_string(), "contains the fvol root".into()],
        ),
        // A path that only reaches the root through `..`.
        (
            format!("mount={}/../../root/inside", scratch.display()),
            vec!["inside the fvol root".into()],
        ),
    ];
    for (o, needles) in &cases {
        let needles: Vec<&str> = needles.iter().map(String::as_str).collect();
        let line = refused(&d, &["create", "vol1", "-o", o], &needles);
        assert!(line.contains("mount="), "{line}");
    }
    assert_eq!(std::fs::read(&file).unwrap(), b"not a dir");
    assert!(!missing.exists());
    assert_eq!(std::fs::read_dir(&inside).unwrap().count(), 0);
}

#[test]
fn rm_of_a_mounted_volume_names_the_holder() {
    if !fuse_or_skip("rm_of_a_mounted_volume_names_the_holder") {
        return;
    }
    let d = TestDaemon::start();
    d.cli_ok(["create", "vol1"]);
    let mp = d.mount("vol1");
    std::fs::write(mp.join("f"), b"keep").unwrap();
    refused(&d, &["rm", "vol1"], &["vol1", "in use", "cli"]);
    // -f does not force a mounted volume out.
    refused(&d, &["rm", "-f", "vol1"], &["vol1", "in use", "cli"]);
    assert!(is_mountpoint(&mp));
    assert_eq!(std::fs::read(mp.join("f")).unwrap(), b"keep");

    let t = d.scratch_dir("t");
    let holder = format!("cli:{}", t.display());
    d.cli_ok(["unmount", "vol1"]);
    d.cli_ok(["mount", "vol1", "--target", t.to_str().unwrap()]);
    refused(&d, &["rm", "vol1"], &["vol1", "in use", &holder]);
    d.cli_ok(["unmount", "vol1", "--target", t.to_str().unwrap()]);
    assert_eq!(d.cli_ok(["rm", "vol1"]), "vol1\n");
}

#[test]
fn missing_volumes_are_reported() {
    if !fuse_or_skip("missing_volumes_are_reported") {
        return;
    }
    let d = TestDaemon::start();
    d.cli_ok(["create", "vol1"]);
    for args in [
        &["inspect", "gone"][..],
        &["mount", "gone"][..],
        &["path", "gone"][..],
        &["rm", "gone"][..],
        &["unmount", "gone"][..],
    ] {
        refused(&d, args, &["no such volume", "gone"]);
    }
    // rm -f of a missing volume is not an error (as in Docker).
    d.cli_ok(["rm", "-f", "gone"]);
    assert_eq!(d.cli_ok(["ls", "-q"]), "vol1\n");
}

#[test]
fn mount_on_a_missing_target_is_refused() {
    if !fuse_or_skip("mount_on_a_missing_target_is_refused") {
        return;
    }
    let d = TestDaemon::start();
    d.cli_ok(["create", "vol1"]);
    let file = d.scratch_dir("s").join("file");
    std::fs::write(&file, b"").unwrap();
    let mp = PathBuf::from(d.cli_ok(["path", "vol1"]).trim_end());
    refused(
        &d,
        &["mount", "vol1", "--target", "/nonexistent"],
        &["invalid mount target", "/nonexistent"],
    );
    refused(
        &d,
        &["mount", "vol1", "--target", file.to_str().unwrap()],
        &["invalid mount target", "not a directory"],
    );
    assert!(
        !is_mountpoint(&mp),
        "a refused mount left the volume mounted"
    );
    assert_eq!(d.inspect("vol1")["Status"]["Mounted"], false);

    // Also while already mounted: the existing reference is untouched.
    d.mount("vol1");
    refused(
        &d,
        &["mount", "vol1", "--target", "/nonexistent"],
        &["invalid mount target", "/nonexistent"],
    );
    assert_eq!(
        d.inspect("vol1")["Status"]["MountRefs"],
        serde_json::json!(["cli"])
    );
    assert!(is_mountpoint(&mp));
}

#[test]
fn bad_ls_filters_are_refused() {
    if !fuse_or_skip("bad_ls_filters_are_refused") {
        return;
    }
    let d = TestDaemon::start();
    d.cli_ok(["create", "vol1"]);
    refused(
        &d,
        &["ls", "--filter", "size=1"],
        &["\"size\"", "dangling, driver, label, name"],
    );
    refused(
        &d,
        &["ls", "--filter", "dangling=maybe"],
        &["dangling", "true or false"],
    );
    refused(&d, &["ls", "--filter", "name"], &["\"name\"", "KEY=VALUE"]);
}

#[test]
fn cli_without_a_daemon_says_how_to_start_one() {
    // Needs no FUSE, but runs the real binary.
    let root = TestRoot::new();
    for args in [
        &["ls"][..],
        &["create", "vol1"][..],
        &["inspect", "vol1"][..],
        &["mount", "vol1"][..],
    ] {
        let out = root.cli(args);
        let line = assert_one_error_line(
            args,
            &out,
            &["cannot reach the fvol daemon", "fvol.sock", "fvol daemon"],
        );
        assert!(
            line.contains(&format!("fvol daemon --root {}", root.root().display())),
            "{line}"
        );
    }
    // Nothing was created.
    assert_eq!(std::fs::read_dir(root.root()).unwrap().count(), 0);
}

fn random_bytes(len: usize) -> Vec<u8> {
    let mut buf = vec![0u8; len];
    std::fs::File::open("/dev/urandom")
        .unwrap()
        .read_exact(&mut buf)
        .unwrap();
    buf
}

#[test]
fn corrupt_catalog_is_refused_and_never_recreated() {
    if !fuse_or_skip("corrupt_catalog_is_refused_and_never_recreated") {
        return;
    }
    let root = TestRoot::new();
    let mut d = TestDaemon::start_at(&root);
    d.cli_ok(["create", "vol1"]);
    d.mount("vol1");
    assert!(d.stop().success());
    let catalog = root.catalog();
    let len = std::fs::metadata(&catalog).unwrap().len() as usize;
    assert!(len > 0);
    let good = std::fs::read(&catalog).unwrap();

    let garbage = random_bytes(len);
    for (what, bytes) in [
        ("random bytes", garbage.clone()),
        ("random page", random_bytes(4096)),
        ("empty file", Vec::new()),
        ("truncated catalog", good[..len / 2].to_vec()),
    ] {
        std::fs::write(&catalog, &bytes).unwrap();
        let copy = root.scratch().join("catalog.copy");
        std::fs::copy(&catalog, &copy).unwrap();
        let out = root.run_daemon_to_exit();
        let err = stderr_of(&out);
        assert!(!out.status.success(), "{what}: the daemon started\n{err}");
        assert!(
            err.contains("catalog") && err.contains(catalog.to_str().unwrap()),
            "{what}: the error should name the catalog {}: {err}",
            catalog.display()
        );
        let last = err.lines().last().unwrap_or_default();
        assert!(last.starts_with("fvol daemon: "), "{what}: {err}");
        assert_eq!(
            std::fs::read(&catalog).unwrap(),
            std::fs::read(&copy).unwrap(),
            "{what}: the catalog was changed"
        );
        assert_eq!(std::fs::read(&catalog).unwrap(), bytes);
        assert!(
            !is_mountpoint(&root.root().join("volumes/vol1/mnt")),
            "{what}: a volume was mounted"
        );
        assert!(
            !root.root().join("fvol.sock").exists(),
            "{what}: socket left"
        );
    }

    // The good catalog back: everything is as before.
    std::fs::write(&catalog, &good).unwrap();
    let d = TestDaemon::start_at(&root);
    assert_eq!(d.cli_ok(["ls", "-q"]), "vol1\n");
    assert_eq!(d.inspect("vol1")["Status"]["Mounted"], true);
}

/// A bad configuration file stops the daemon before it changes anything, with one line naming
/// the problem and the valid choices; an existing volume and its catalog stay as they were, and
/// a good file works again afterwards.
#[test]
fn bad_configuration_files_are_refused() {
    if !fuse_or_skip("bad_configuration_files_are_refused") {
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    let root = TestRoot::new();
    let mut d = TestDaemon::start_at(&root);
    d.cli_ok(["create", "-d", "tmpfs", "-o", "size=8M", "t1"]);
    let before = snapshot(&d);
    assert!(d.stop().success());
    let catalog = std::fs::read(root.catalog()).unwrap();
    let dir = root.scratch_dir("etc-fvol");
    let config = dir.join("fvol.toml");
    let set_mode = |path: &Path, mode: u32| {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap()
    };
    let refused_start = |what: &str, path: &Path, needles: &[&str]| {
        let out = root.run_daemon_to_exit_with_args([
            Path::new("--no-plugin"),
            Path::new("--config"),
            path,
        ]);
        let err = stderr_of(&out);
        assert!(!out.status.success(), "{what}: the daemon started\n{err}");
        let lines: Vec<&str> = err.lines().collect();
        assert_eq!(lines.len(), 1, "{what}: expected one line:\n{err}");
        assert!(lines[0].starts_with("fvol daemon: "), "{what}: {err}");
        for needle in needles {
            assert!(
                lines[0].contains(needle),
                "{what}: should name {needle:?}: {err}"
            );
        }
        assert_eq!(
            std::fs::read(root.catalog()).unwrap(),
            catalog,
            "{what}: the catalog changed"
        );
        assert!(!root.root().join("fvol.sock").exists(), "{what}: it served");
    };
    let cases: &[(&str, &str, &[&str])] = &[
        (
            "unknown section",
            "[ceph]\nconf = \"/etc/ceph/ceph.conf\"\n",
            &[
                "unknown section [ceph]",
                "[daemon], [local], [tmpfs], [rbd]",
            ],
        ),
        (
            "unknown driver option",
            "[rbd]\npol = \"rbd\"\n",
            &[
                "[rbd] pol",
                "unknown option \"pol\"",
                "valid options are: pool, image",
            ],
        ),
        (
            "unknown daemon key",
            "[daemon]\nlinger = 5\n",
            &[
                "unknown key \"linger\" in [daemon]",
                "stale_ref_grace, tmpfs_linger, startup_mounts",
            ],
        ),
        (
            "bad size",
            "[tmpfs]\nsize = \"lots\"\n",
            &["[tmpfs] size", "invalid size \"lots\""],
        ),
        (
            "relative conf",
            "[rbd]\nconf = \"ceph.conf\"\n",
            &["conf=\"ceph.conf\" is not valid", "absolute"],
        ),
        (
            "bad daemon value",
            "[daemon]\ntmpfs_linger = 99999\n",
            &["tmpfs_linger = 99999", "from 0 to 3600"],
        ),
        (
            "no mounts at once",
            "[daemon]\nstartup_mounts = 0\n",
            &[
                "startup_mounts = 0",
                "whole number of volumes from 1 to 256",
            ],
        ),
        (
            "a per-volume option",
            "[rbd]\nimage = \"shared\"\n",
            &["image=", "cannot have a default"],
        ),
        ("not TOML", "[rbd\n", &["not valid TOML"]),
    ];
    for (what, text, needles) in cases {
        std::fs::write(&config, text).unwrap();
        set_mode(&config, 0o644);
        let mut needles = needles.to_vec();
        let shown = config.display().to_string();
        needles.push(&shown);
        refused_start(what, &config, &needles);
    }

    // On a new root, nothing is made: the file is checked before the root is created.
    let fresh = TestRoot::new();
    std::fs::remove_dir(fresh.root()).unwrap();
    let out = fresh.run_daemon_to_exit_with_args([
        Path::new("--no-plugin"),
        Path::new("--config"),
        &config,
    ]);
    assert!(!out.status.success());
    assert!(!fresh.root().exists(), "a refused start created the root");

    // Only root may have written the file: refused when others may write it or its
    // directory, or when someone else owns it.
    std::fs::write(&config, "[tmpfs]\nsize = \"16M\"\n").unwrap();
    set_mode(&config, 0o666);
    refused_start(
        "a file others may write",
        &config,
        &["refusing to read the configuration file", "mode 0666"],
    );
    set_mode(&config, 0o644);
    std::os::unix::fs::chown(&config, Some(65534), None).unwrap();
    refused_start(
        "a file nobody owns",
        &config,
        &["owned by uid 65534, not root"],
    );
    std::os::unix::fs::chown(&config, Some(0), None).unwrap();
    set_mode(&dir, 0o777);
    refused_start(
        "a directory others may write",
        &config,
        &["refusing to read the configuration file in", "mode 0777"],
    );
    set_mode(&dir, 0o755);
    let link = dir.join("link.toml");
    std::os::unix::fs::symlink(&config, &link).unwrap();
    refused_start("a symlink", &link, &["is a symlink"]);
    // A file named with --config must exist (the default one may be missing).
    refused_start(
        "a missing file",
        &dir.join("none.toml"),
        &["none.toml", "No such file"],
    );

    // The good file: the daemon starts, and the volume is as it was.
    let d = TestDaemon::start_with_args(
        &root,
        [Path::new("--no-plugin"), Path::new("--config"), &config],
    );
    // (A start and stop rewrites the catalog file itself; what it holds is the same.)
    let after = snapshot(&d);
    assert_eq!(
        (after.names, after.volumes_json, after.volume_dirs),
        (before.names, before.volumes_json, before.volume_dirs)
    );
}

/// A root or plugin socket whose socket path would not fit `sun_path` stops the daemon before
/// it creates anything, with one line that names the path, the limit and what to change.
#[test]
fn socket_paths_longer_than_sun_path_are_refused_at_start() {
    // Needs no FUSE, but runs the real binary.
    let root = TestRoot::new();
    let base = root.scratch().join("d".repeat(100));
    std::fs::create_dir(&base).unwrap();
    let long_root = base.join("root");
    let plugin_socket = base.join("plugin.sock");
    let cases = [
        (long_root.clone(), vec!["--no-plugin".into()]),
        (
            root.root(),
            vec![
                "--plugin-socket".into(),
                plugin_socket.display().to_string(),
            ],
        ),
    ];
    for (at, daemon_args) in cases {
        let out = std::process::Command::new(fuse_tests::daemon::fvol_bin())
            .arg("--root")
            .arg(&at)
            .arg("daemon")
            .args(root.daemon_args(daemon_args))
            .env_remove("FVOL_ROOT")
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        let err = stderr_of(&out);
        assert!(!out.status.success(), "the daemon started on {at:?}\n{err}");
        let last = err.lines().last().unwrap_or_default();
        assert!(
            last.starts_with("fvol daemon: ")
                && last.contains("at most 107 bytes")
                && last.contains("shorter --root or socket path"),
            "{err}"
        );
    }
    assert!(!long_root.exists(), "the long root was created");
    assert!(!plugin_socket.exists());
    assert_eq!(std::fs::read_dir(root.root()).unwrap().count(), 0);
}
