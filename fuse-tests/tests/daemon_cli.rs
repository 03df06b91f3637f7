//! The fvol CLI against a real daemon: create, ls, inspect, mount, bind targets, prune, rm.
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use fuse_tests::daemon::{
    TestDaemon, df_size, fuse_or_skip, is_mountpoint, mount_fstype, parse_rfc3339_utc, unix_now,
};
use serde_json::{Value, json};

const MIB: u64 = 1 << 20;

fn lines(text: &str) -> Vec<&str> {
    text.lines().collect()
}

fn names_of(json_array: &str) -> Vec<String> {
    let all: Vec<Value> = serde_json::from_str(json_array).expect("JSON array");
    all.iter()
        .map(|v| v["Name"].as_str().unwrap().to_string())
        .collect()
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

fn ls_q(d: &TestDaemon, filters: &[&str]) -> Vec<String> {
    let mut args = vec!["ls", "-q"];
    for f in filters {
        args.extend(["--filter", f]);
    }
    sorted(d.cli_ok(&args).lines().map(str::to_string).collect())
}

fn s(v: &[&str]) -> Vec<String> {
    sorted(v.iter().map(|x| x.to_string()).collect())
}

#[test]
fn create_with_and_without_name() {
    if !fuse_or_skip("create_with_and_without_name") {
        return;
    }
    let d = TestDaemon::start();
    assert_eq!(d.cli_ok(["create", "named-1.x_y"]), "named-1.x_y\n");
    let out = d.cli_ok(["create"]);
    let anon = out.trim_end();
    assert_eq!(out, format!("{anon}\n"));
    assert_eq!(anon.len(), 64, "{anon:?}");
    assert!(
        anon.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')),
        "{anon:?}"
    );
    let other = d.cli_ok(["create"]);
    assert_ne!(other.trim_end(), anon, "random names must differ");
    assert_eq!(ls_q(&d, &[]), s(&["named-1.x_y", anon, other.trim_end()]));
    assert_eq!(d.inspect(anon)["Name"], anon);
    assert!(d.root().join("volumes").join(anon).join("data").is_dir());
}

/// The socket is the daemon's whole API, so only root may use it; the CLI finds it through
/// FVOL_ROOT as well as through --root.
#[test]
fn socket_is_private_and_found_through_fvol_root() {
    if !fuse_or_skip("socket_is_private_and_found_through_fvol_root") {
        return;
    }
    let d = TestDaemon::start();
    d.cli_ok(["create", "found"]);
    let socket = std::fs::metadata(d.root().join("fvol.sock")).unwrap();
    assert_eq!(socket.permissions().mode() & 0o7777, 0o600);
    let out = std::process::Command::new(fuse_tests::daemon::fvol_bin())
        .args(["ls", "-q"])
        .env("FVOL_ROOT", d.root())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "found\n");
}

#[test]
fn ls_table_quiet_json_and_filters() {
    if !fuse_or_skip("ls_table_quiet_json_and_filters") {
        return;
    }
    let d = TestDaemon::start();
    d.cli_ok(["create", "web", "-o", "size=64M", "--label", "tier=front"]);
    d.cli_ok(["create", "db", "--label", "tier=back", "--label", "keep="]);
    d.cli_ok(["create", "cache"]);
    d.mount("db");

    let table = d.cli_ok(["ls"]);
    let rows = lines(&table);
    assert_eq!(rows.len(), 4, "{table}");
    let header: Vec<&str> = rows[0].split("   ").filter(|c| !c.is_empty()).collect();
    assert_eq!(
        header.iter().map(|c| c.trim()).collect::<Vec<_>>(),
        ["DRIVER", "VOLUME NAME", "SIZE", "USED", "MOUNTED"],
        "{table}"
    );
    let row = |name: &str| -> Vec<&str> {
        rows[1..]
            .iter()
            .map(|r| r.split_whitespace().collect::<Vec<_>>())
            .find(|cols| cols[1] == name)
            .unwrap_or_else(|| panic!("{name} missing from\n{table}"))
    };
    let web = row("web");
    assert_eq!(
        (web[0], web[2], web[4]),
        ("local", "64MiB", "no"),
        "{table}"
    );
    let db = row("db");
    assert_eq!((db[0], db[2], db[4]), ("local", "-", "yes"), "{table}");
    assert_eq!(row("cache")[4], "no");

    assert_eq!(ls_q(&d, &[]), s(&["web", "db", "cache"]));
    // -q wins over --format.
    assert_eq!(
        sorted(
            d.cli_ok(["ls", "-q", "--format", "json"])
                .lines()
                .map(String::from)
                .collect()
        ),
        s(&["web", "db", "cache"])
    );

    let json_out = d.cli_ok(["ls", "--format", "json"]);
    assert_eq!(sorted(names_of(&json_out)), s(&["web", "db", "cache"]));
    let all: Vec<Value> = serde_json::from_str(&json_out).unwrap();
    for v in &all {
        let name = v["Name"].as_str().unwrap();
        assert_eq!(
            *v,
            d.inspect(name),
            "ls --format json and inspect differ for {name}"
        );
    }
    let filtered = d.cli_ok(["ls", "--format", "json", "--filter", "name=we"]);
    assert_eq!(names_of(&filtered), ["web"]);

    assert_eq!(ls_q(&d, &["name=e"]), s(&["web", "cache"]));
    assert_eq!(ls_q(&d, &["name=zzz"]), s(&[]));
    assert_eq!(ls_q(&d, &["name=web", "name=db"]), s(&["web", "db"]));
    assert_eq!(ls_q(&d, &["driver=local"]), s(&["web", "db", "cache"]));
    assert_eq!(ls_q(&d, &["driver=loc"]), s(&[]));
    assert_eq!(ls_q(&d, &["label=tier"]), s(&["web", "db"]));
    assert_eq!(ls_q(&d, &["label=tier=front"]), s(&["web"]));
    assert_eq!(ls_q(&d, &["label=tier=middle"]), s(&[]));
    assert_eq!(ls_q(&d, &["label=keep"]), s(&["db"]));
    assert_eq!(ls_q(&d, &["dangling=true"]), s(&["web", "cache"]));
    assert_eq!(ls_q(&d, &["dangling=false"]), s(&["db"]));
    assert_eq!(ls_q(&d, &["label=tier", "dangling=true"]), s(&["web"]));
    assert_eq!(
        ls_q(&d, &["name=d", "driver=local", "label=tier=back"]),
        s(&["db"])
    );

    d.cli_ok(["unmount", "db"]);
    assert_eq!(ls_q(&d, &["dangling=false"]), s(&[]));
}

#[test]
fn inspect_shows_every_field() {
    if !fuse_or_skip("inspect_shows_every_field") {
        return;
    }
    let d = TestDaemon::start();
    let before = unix_now();
    d.cli_ok([
        "create",
        "vol1",
        "-o",
        "size=64M",
        "-o",
        "inodes=1000",
        "--label",
        "a=1",
        "--label",
        "b=x=y",
    ]);
    let after = unix_now();
    let v = d.inspect("vol1");
    let mountpoint = d.root().join("volumes/vol1/mnt");
    assert_eq!(v["Name"], "vol1");
    assert_eq!(v["Driver"], "local");
    assert_eq!(v["Mountpoint"], mountpoint.to_str().unwrap());
    assert_eq!(v["Labels"], json!({"a": "1", "b": "x=y"}));
    assert_eq!(v["Options"], json!({"size": "64M", "inodes": "1000"}));
    assert_eq!(v["Scope"], "local");
    let created = v["CreatedAt"].as_str().expect("CreatedAt is a string");
    let secs = parse_rfc3339_utc(created)
        .unwrap_or_else(|| panic!("CreatedAt {created:?} is not YYYY-MM-DDTHH:MM:SSZ"));
    assert!(
        (before.saturating_sub(1)..=after + 1).contains(&secs),
        "CreatedAt {created} is not the creation time ({before}..{after})"
    );
    let st = &v["Status"];
    assert_eq!(st["SizeLimit"], 64 * MIB);
    assert_eq!(st["InodeLimit"], 1000);
    assert!(st["UsedBytes"].is_u64(), "{st}");
    assert_eq!(
        st["UsedInodes"], 1,
        "a new volume holds only its root: {st}"
    );
    assert_eq!(st["Mounted"], false);
    assert_eq!(st["MountRefs"], json!([]));
    let keys: Vec<&String> = v.as_object().unwrap().keys().collect();
    assert_eq!(
        sorted(keys.into_iter().cloned().collect()),
        s(&[
            "Name",
            "Driver",
            "Mountpoint",
            "CreatedAt",
            "Labels",
            "Options",
            "Scope",
            "Status"
        ])
    );

    // No limits: null.
    d.cli_ok(["create", "plain"]);
    let p = d.inspect("plain");
    assert_eq!(p["Status"]["SizeLimit"], Value::Null);
    assert_eq!(p["Status"]["InodeLimit"], Value::Null);
    assert_eq!(p["Labels"], json!({}));
    assert_eq!(p["Options"], json!({}));

    // `path` prints the mountpoint, mounted or not.
    assert_eq!(
        d.cli_ok(["path", "vol1"]),
        format!("{}\n", mountpoint.display())
    );
    // Several names: an array in order.
    let both: Vec<Value> = serde_json::from_str(&d.cli_ok(["inspect", "plain", "vol1"])).unwrap();
    assert_eq!(both.len(), 2);
    assert_eq!(
        (both[0]["Name"].clone(), both[1]["Name"].clone()),
        (json!("plain"), json!("vol1"))
    );
}

#[test]
fn mount_prints_mountpoint_and_df_shows_the_limit() {
    if !fuse_or_skip("mount_prints_mountpoint_and_df_shows_the_limit") {
        return;
    }
    let d = TestDaemon::start();
    d.cli_ok(["create", "vol1", "-o", "size=64M"]);
    let path = PathBuf::from(d.cli_ok(["path", "vol1"]).trim_end());
    assert!(!is_mountpoint(&path));
    let mp = d.mount("vol1");
    assert_eq!(mp, path);
    let fstype = mount_fstype(&mp).unwrap_or_default();
    assert!(fstype.starts_with("fuse"), "{}: {fstype:?}", mp.display());
    assert_eq!(df_size(&mp), 64 * MIB);
    // Sequential reads get a 4 MiB readahead window, not FUSE's 128 KiB default.
    let dev = std::fs::metadata(&mp).unwrap().dev();
    let knob = format!("/sys/class/bdi/{}:{}/read_ahead_kb", dev >> 8, dev & 0xff);
    assert_eq!(
        std::fs::read_to_string(&knob).unwrap().trim(),
        "4096",
        "{knob}"
    );
    let st = &d.inspect("vol1")["Status"];
    assert_eq!(st["Mounted"], true);
    assert_eq!(st["MountRefs"], json!(["cli"]));

    std::fs::write(mp.join("hello"), b"hello fvol").unwrap();
    assert_eq!(std::fs::read(mp.join("hello")).unwrap(), b"hello fvol");
    assert_eq!(
        std::fs::read(d.root().join("volumes/vol1/data/hello")).unwrap(),
        b"hello fvol"
    );
    // A second plain mount is the same reference.
    assert_eq!(d.mount("vol1"), mp);
    assert_eq!(d.inspect("vol1")["Status"]["MountRefs"], json!(["cli"]));

    assert_eq!(d.cli_ok(["unmount", "vol1"]), "");
    assert!(
        !is_mountpoint(&mp),
        "FUSE mount left after the last unmount"
    );
    let st = &d.inspect("vol1")["Status"];
    assert_eq!(st["Mounted"], false);
    assert_eq!(st["MountRefs"], json!([]));
    assert!(
        !mp.join("hello").exists(),
        "data visible through an unmounted mountpoint"
    );
    // Unmounting again is harmless.
    d.cli_ok(["unmount", "vol1"]);
    // Mount again: the data is still there.
    let mp = d.mount("vol1");
    assert_eq!(std::fs::read(mp.join("hello")).unwrap(), b"hello fvol");
    d.cli_ok(["umount", "vol1"]);
    assert!(!is_mountpoint(&mp));
}

#[test]
fn mount_target_bind_mounts_and_counts_as_a_reference() {
    if !fuse_or_skip("mount_target_bind_mounts_and_counts_as_a_reference") {
        return;
    }
    let d = TestDaemon::start();
    d.cli_ok(["create", "vol1", "-o", "size=64M"]);
    let t1 = d.scratch_dir("t1");
    let t2 = d.scratch_dir("t2");
    let mp = PathBuf::from(d.cli_ok(["path", "vol1"]).trim_end());

    let out = d.cli_ok(["mount", "vol1", "--target", t1.to_str().unwrap()]);
    assert_eq!(out, format!("{}\n", mp.display()));
    assert!(is_mountpoint(&mp), "FUSE mount missing");
    assert!(is_mountpoint(&t1), "bind mount missing at {}", t1.display());
    std::fs::write(t1.join("via-target"), b"written via target").unwrap();
    assert_eq!(
        std::fs::read(mp.join("via-target")).unwrap(),
        b"written via target"
    );
    std::fs::write(mp.join("via-mp"), b"m").unwrap();
    assert!(t1.join("via-mp").exists());
    assert_eq!(df_size(&t1), 64 * MIB);

    d.cli_ok(["mount", "vol1", "--target", t2.to_str().unwrap()]);
    d.cli_ok(["mount", "vol1"]);
    let refs = &d.inspect("vol1")["Status"]["MountRefs"];
    let mut refs: Vec<String> = refs
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap().to_string())
        .collect();
    refs.sort();
    assert_eq!(
        refs,
        sorted(vec![
            "cli".to_string(),
            format!("cli:{}", t1.display()),
            format!("cli:{}", t2.display()),
        ])
    );
    assert_eq!(ls_q(&d, &["dangling=false"]), s(&["vol1"]));

    // Releasing one target leaves the others.
    d.cli_ok(["unmount", "vol1", "--target", t1.to_str().unwrap()]);
    assert!(!is_mountpoint(&t1), "bind mount left at {}", t1.display());
    assert!(!t1.join("via-target").exists());
    assert!(is_mountpoint(&t2) && is_mountpoint(&mp));
    d.cli_ok(["unmount", "vol1"]);
    assert!(
        is_mountpoint(&mp),
        "the target reference must keep the volume mounted"
    );
    assert!(t2.join("via-target").exists());
    assert_eq!(
        d.inspect("vol1")["Status"]["MountRefs"],
        json!([format!("cli:{}", t2.display())])
    );
    // The last reference goes: everything is unmounted.
    d.cli_ok(["unmount", "vol1", "--target", t2.to_str().unwrap()]);
    assert!(!is_mountpoint(&t2));
    assert!(
        !is_mountpoint(&mp),
        "FUSE mount left after the last unmount"
    );
    assert_eq!(d.inspect("vol1")["Status"]["Mounted"], false);
    assert_eq!(
        std::fs::read(d.root().join("volumes/vol1/data/via-target")).unwrap(),
        b"written via target"
    );
}

#[test]
fn same_create_twice_is_idempotent() {
    if !fuse_or_skip("same_create_twice_is_idempotent") {
        return;
    }
    let d = TestDaemon::start();
    let args = ["create", "vol1", "-o", "size=64M", "-o", "mode=0750"];
    assert_eq!(d.cli_ok(args), "vol1\n");
    let first = d.inspect("vol1");
    let mp = d.mount("vol1");
    std::fs::write(mp.join("keep"), b"x").unwrap();
    assert_eq!(d.cli_ok(args), "vol1\n");
    let second = d.inspect("vol1");
    assert_eq!(first["CreatedAt"], second["CreatedAt"]);
    assert_eq!(first["Options"], second["Options"]);
    assert_eq!(second["Status"]["Mounted"], true);
    assert!(
        mp.join("keep").exists(),
        "the second create must not touch the data"
    );
    assert_eq!(ls_q(&d, &[]), s(&["vol1"]));
}

#[test]
fn prune_removes_only_unused_volumes() {
    if !fuse_or_skip("prune_removes_only_unused_volumes") {
        return;
    }
    let d = TestDaemon::start();
    for name in ["idle1", "busy", "idle2", "bound"] {
        d.cli_ok(["create", name]);
    }
    let mp = d.mount("busy");
    std::fs::write(mp.join("f"), vec![7u8; 100_000]).unwrap();
    let t = d.scratch_dir("t");
    d.cli_ok(["mount", "bound", "--target", t.to_str().unwrap()]);
    std::fs::write(d.root().join("volumes/idle1/data/f"), b"x").unwrap();

    // Without -f and with no answer (stdin is /dev/null): nothing happens.
    let out = d.cli_ok(["prune"]);
    assert!(out.contains("Are you sure"), "{out}");
    assert_eq!(ls_q(&d, &[]), s(&["idle1", "busy", "idle2", "bound"]));

    let out = d.cli_ok(["prune", "-f"]);
    let listed: Vec<&str> = out
        .lines()
        .skip_while(|l| *l != "Deleted Volumes:")
        .skip(1)
        .take_while(|l| !l.is_empty())
        .collect();
    assert_eq!(
        sorted(listed.iter().map(|x| x.to_string()).collect()),
        s(&["idle1", "idle2"]),
        "{out}"
    );
    assert!(out.contains("Total reclaimed space:"), "{out}");
    assert_eq!(ls_q(&d, &[]), s(&["bound", "busy"]));
    assert!(!d.root().join("volumes/idle1").exists());
    assert!(!d.root().join("volumes/idle2").exists());
    assert_eq!(std::fs::read(mp.join("f")).unwrap().len(), 100_000);
    assert!(is_mountpoint(&mp) && is_mountpoint(&t));

    // Nothing left to prune.
    let out = d.cli_ok(["prune", "-f"]);
    assert!(!out.contains("Deleted Volumes"), "{out}");
    assert_eq!(ls_q(&d, &[]), s(&["bound", "busy"]));
}

#[test]
fn rm_removes_an_unmounted_volume() {
    if !fuse_or_skip("rm_removes_an_unmounted_volume") {
        return;
    }
    let d = TestDaemon::start();
    d.cli_ok(["create", "vol1"]);
    d.cli_ok(["create", "vol2"]);
    let mp = d.mount("vol1");
    std::fs::create_dir(mp.join("dir")).unwrap();
    std::fs::write(mp.join("dir/f"), b"data").unwrap();
    d.cli_ok(["unmount", "vol1"]);
    assert_eq!(d.cli_ok(["rm", "vol1"]), "vol1\n");
    assert_eq!(ls_q(&d, &[]), s(&["vol2"]));
    assert!(
        !d.root().join("volumes/vol1").exists(),
        "volume directory left behind"
    );
    let out = d.cli(["inspect", "vol1"]);
    assert!(!out.status.success());
    // The name is free again, and the new volume is empty.
    d.cli_ok(["create", "vol1"]);
    let mp = d.mount("vol1");
    assert_eq!(std::fs::read_dir(&mp).unwrap().count(), 0);
    d.cli_ok(["unmount", "vol1"]);
    assert_eq!(d.cli_ok(["remove", "vol1", "vol2"]), "vol1\nvol2\n");
    assert_eq!(ls_q(&d, &[]), s(&[]));
}

#[test]
fn mount_dir_is_measured_served_and_kept() {
    if !fuse_or_skip("mount_dir_is_measured_served_and_kept") {
        return;
    }
    let d = TestDaemon::start();
    let dir = d.scratch_dir("existing");
    std::fs::create_dir(dir.join("sub")).unwrap();
    let payload: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(dir.join("sub/old"), &payload).unwrap();
    d.cli_ok([
        "create",
        "ext",
        "-o",
        &format!("mount={}", dir.display()),
        "-o",
        "size=64M",
    ]);
    let st = &d.inspect("ext")["Status"];
    assert_eq!(st["Mounted"], false);
    let used = st["UsedBytes"].as_u64().unwrap();
    assert!(used >= 200_000, "existing data not counted at create: {st}");
    assert!(st["UsedInodes"].as_u64().unwrap() >= 3, "{st}");

    let mp = d.mount("ext");
    assert_eq!(std::fs::read(mp.join("sub/old")).unwrap(), payload);
    std::fs::write(mp.join("new"), b"from the volume").unwrap();
    assert_eq!(std::fs::read(dir.join("new")).unwrap(), b"from the volume");
    d.cli_ok(["unmount", "ext"]);
    assert!(
        !d.root().join("volumes/ext/data").exists(),
        "mount= volumes have no data dir"
    );

    assert_eq!(d.cli_ok(["rm", "ext"]), "ext\n");
    assert_eq!(ls_q(&d, &[]), s(&[]));
    assert_eq!(std::fs::read(dir.join("sub/old")).unwrap(), payload);
    assert_eq!(std::fs::read(dir.join("new")).unwrap(), b"from the volume");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["new", "sub"]);
}

fn root_stat(mp: &Path) -> (u32, u32, u32) {
    let m = std::fs::metadata(mp).unwrap();
    (m.uid(), m.gid(), m.mode() & 0o7777)
}

#[test]
fn uid_gid_mode_set_the_volume_root() {
    if !fuse_or_skip("uid_gid_mode_set_the_volume_root") {
        return;
    }
    let d = TestDaemon::start();
    d.cli_ok([
        "create",
        "owned",
        "-o",
        "uid=1234",
        "-o",
        "gid=2345",
        "-o",
        "mode=0750",
    ]);
    let mp = d.mount("owned");
    assert_eq!(root_stat(&mp), (1234, 2345, 0o750));
    d.cli_ok(["unmount", "owned"]);

    d.cli_ok(["create", "sticky", "-o", "mode=1777"]);
    let mp = d.mount("sticky");
    assert_eq!(root_stat(&mp), (0, 0, 0o1777));
    d.cli_ok(["unmount", "sticky"]);

    d.cli_ok(["create", "default"]);
    let mp = d.mount("default");
    assert_eq!(root_stat(&mp), (0, 0, 0o755));
    d.cli_ok(["unmount", "default"]);

    // On a mount= directory too.
    let dir = d.scratch_dir("ext");
    d.cli_ok([
        "create",
        "ext",
        "-o",
        &format!("mount={}", dir.display()),
        "-o",
        "uid=42",
        "-o",
        "mode=700",
    ]);
    let mp = d.mount("ext");
    assert_eq!(root_stat(&mp), (42, 0, 0o700));
    assert_eq!(root_stat(&dir), (42, 0, 0o700));
}

/// The configuration file's driver sections give defaults for new volumes (`-o` wins), each
/// volume stores the options it was created with, and a later change of the file leaves
/// existing volumes as they were. Flags win over `[daemon]`.
#[test]
fn configuration_defaults_fill_in_options_and_are_kept_with_each_volume() {
    if !fuse_or_skip("configuration_defaults_fill_in_options_and_are_kept_with_each_volume") {
        return;
    }
    let root = fuse_tests::daemon::TestRoot::new();
    std::fs::write(
        root.config(),
        "[daemon]\ntmpfs_linger = 0\nstale_ref_grace = 120\n\n\
         [tmpfs]\nsize = \"8M\"\nmode = \"700\"\n\n[local]\ninodes = 500\n",
    )
    .unwrap();
    let mut d = TestDaemon::start_at(&root);
    d.cli_ok(["create", "-d", "tmpfs", "t-default"]);
    d.cli_ok(["create", "-d", "tmpfs", "-o", "size=16M", "t-given"]);
    d.cli_ok(["create", "l-default"]);
    let options = |d: &TestDaemon, name: &str| d.inspect(name)["Options"].clone();
    assert_eq!(
        options(&d, "t-default"),
        json!({"size": "8M", "mode": "700"})
    );
    assert_eq!(
        options(&d, "t-given"),
        json!({"size": "16M", "mode": "700"})
    );
    assert_eq!(options(&d, "l-default"), json!({"inodes": "500"}));
    assert_eq!(d.inspect("t-default")["Status"]["SizeLimit"], 8 * MIB);
    assert_eq!(d.inspect("l-default")["Status"]["InodeLimit"], 500);
    let mnt = d.mount("t-default");
    assert_eq!(df_size(&mnt), 8 * MIB);
    assert_eq!(std::fs::metadata(&mnt).unwrap().mode() & 0o7777, 0o700);
    d.cli_ok(["unmount", "t-default"]);
    // The same create again is the same volume; other options are a conflict, as ever.
    d.cli_ok(["create", "-d", "tmpfs", "t-default"]);
    d.cli_ok(["create", "-d", "tmpfs", "-o", "size=8M", "t-default"]);
    assert!(
        !d.cli(["create", "-d", "tmpfs", "-o", "size=9M", "t-default"])
            .status
            .success()
    );
    assert!(d.stop().success());

    // New defaults apply to new volumes only.
    std::fs::write(root.config(), "[tmpfs]\nsize = \"32M\"\n").unwrap();
    let d = TestDaemon::start_at(&root);
    d.cli_ok(["create", "-d", "tmpfs", "t-new"]);
    assert_eq!(options(&d, "t-new"), json!({"size": "32M"}));
    assert_eq!(
        options(&d, "t-default"),
        json!({"size": "8M", "mode": "700"})
    );
    let mnt = d.mount("t-default");
    assert_eq!(df_size(&mnt), 8 * MIB);
    d.cli_ok(["unmount", "t-default"]);
}
