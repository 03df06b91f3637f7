//! Daemon restarts: clean stop, kill -9, changes behind fvol's back, one daemon per root.
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use fuse_tests::daemon::{TestDaemon, TestRoot, du_bytes, fuse_or_skip, is_mountpoint, stderr_of};
use serde_json::{Value, json};

const MIB: u64 = 1 << 20;

/// Writes `data` to `path` and fsyncs it, so that it survives the daemon being killed.
fn write_synced(path: &Path, data: &[u8]) {
    let mut f = std::fs::File::create(path).unwrap();
    f.write_all(data).unwrap();
    f.sync_all().unwrap();
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[3] ^ seed)
        .collect()
}

fn status(d: &TestDaemon, name: &str) -> Value {
    d.inspect(name)["Status"].clone()
}

fn used_bytes(d: &TestDaemon, name: &str) -> u64 {
    status(d, name)["UsedBytes"].as_u64().unwrap()
}

#[test]
fn clean_stop_unmounts_and_restart_mounts_again() {
    if !fuse_or_skip("clean_stop_unmounts_and_restart_mounts_again") {
        return;
    }
    let root = TestRoot::new();
    let mut d = TestDaemon::start_at(&root);
    d.cli_ok(["create", "vol1", "-o", "size=64M", "--label", "k=v"]);
    d.cli_ok(["create", "idle"]);
    let mp = d.mount("vol1");
    let big = pattern(3 * MIB as usize + 123, 1);
    std::fs::write(mp.join("big"), &big).unwrap();
    std::fs::create_dir(mp.join("dir")).unwrap();
    std::fs::write(mp.join("dir/small"), b"small").unwrap();
    std::os::unix::fs::symlink("../big", mp.join("dir/link")).unwrap();
    let before = d.inspect("vol1");
    let idle_before = d.inspect("idle");

    let exit = d.stop();
    assert!(exit.success(), "daemon exit {exit}\n{}", root.log());
    assert!(!is_mountpoint(&mp), "FUSE mount left after a clean stop");
    assert!(!mp.join("big").exists());
    assert!(!root.cli(["ls"]).status.success(), "the CLI still answers");

    let d = TestDaemon::start_at(&root);
    assert!(
        is_mountpoint(&mp),
        "volume with a reference not mounted again"
    );
    let after = d.inspect("vol1");
    assert_eq!(after["Status"]["Mounted"], true);
    assert_eq!(after["Status"]["MountRefs"], json!(["cli"]));
    assert_eq!(after["Status"]["UsedBytes"], before["Status"]["UsedBytes"]);
    assert_eq!(
        after["Status"]["UsedInodes"],
        before["Status"]["UsedInodes"]
    );
    assert_eq!(after, before, "inspect changed across a clean restart");
    assert_eq!(std::fs::read(mp.join("big")).unwrap(), big);
    assert_eq!(std::fs::read(mp.join("dir/small")).unwrap(), b"small");
    assert_eq!(
        std::fs::read_link(mp.join("dir/link")).unwrap(),
        Path::new("../big")
    );
    assert_eq!(
        d.inspect("idle"),
        idle_before,
        "an idle volume must stay unmounted"
    );
    assert!(!is_mountpoint(&d.root().join("volumes/idle/mnt")));
    // Still fully usable.
    std::fs::write(mp.join("later"), b"later").unwrap();
    d.cli_ok(["unmount", "vol1"]);
    assert!(!is_mountpoint(&mp));
}

#[test]
fn restart_restores_bind_targets() {
    if !fuse_or_skip("restart_restores_bind_targets") {
        return;
    }
    let root = TestRoot::new();
    let mut d = TestDaemon::start_at(&root);
    d.cli_ok(["create", "vol1"]);
    let t = root.scratch_dir("target");
    let target = t.to_str().unwrap();
    d.cli_ok(["mount", "vol1", "--target", target]);
    std::fs::write(t.join("f"), b"via target").unwrap();
    assert!(d.stop().success());
    assert!(!is_mountpoint(&t), "bind mount left after a clean stop");

    let d = TestDaemon::start_at(&root);
    assert!(is_mountpoint(&t), "bind mount not restored");
    assert_eq!(std::fs::read(t.join("f")).unwrap(), b"via target");
    assert_eq!(
        status(&d, "vol1")["MountRefs"],
        json!([format!("cli:{target}")])
    );
    d.cli_ok(["unmount", "vol1", "--target", target]);
    assert!(!is_mountpoint(&t));
    assert!(!is_mountpoint(&d.root().join("volumes/vol1/mnt")));
}

/// Without the keeper (killed too, as by a reboot of everything but the kernel's mounts), a
/// dead daemon's mounts are stale, and the next start replaces them. With the keeper, see
/// daemon_handover.rs.
#[test]
fn kill9_of_daemon_and_keeper_leaves_a_stale_mount_and_restart_recovers_it() {
    if !fuse_or_skip("kill9_of_daemon_and_keeper_leaves_a_stale_mount_and_restart_recovers_it") {
        return;
    }
    let root = TestRoot::new();
    let mut d = TestDaemon::start_at(&root);
    d.cli_ok(["create", "vol1", "-o", "size=64M"]);
    let mp = d.mount("vol1");
    let t = root.scratch_dir("target");
    d.cli_ok(["mount", "vol1", "--target", t.to_str().unwrap()]);
    let big = pattern(5 * MIB as usize + 7, 2);
    write_synced(&mp.join("big"), &big);
    std::fs::create_dir(mp.join("d")).unwrap();
    for i in 0..20 {
        write_synced(&mp.join(format!("d/f{i}")), &pattern(1000 * i, i as u8));
    }
    // Space freed before the crash must not be counted after it.
    write_synced(&mp.join("gone"), &pattern(2 * MIB as usize, 3));
    std::fs::remove_file(mp.join("gone")).unwrap();

    d.kill9();
    root.kill_keeper();
    for path in [&mp, &t] {
        // The connection ends when the last descriptor of it is released, which may come a
        // moment after the keeper is gone (one in flight in a socket is released by the
        // kernel's garbage collection): a request pending then ends with ECONNABORTED, and
        // every request after it with ENOTCONN.
        let deadline = Instant::now() + Duration::from_secs(10);
        let err = loop {
            let err = std::fs::metadata(path).expect_err("a dead daemon's mount must be stale");
            if err.raw_os_error() != Some(libc::ECONNABORTED) || Instant::now() > deadline {
                break err;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        assert_eq!(
            err.raw_os_error(),
            Some(libc::ENOTCONN),
            "stat {}: {err}",
            path.display()
        );
    }

    let d = TestDaemon::start_at(&root);
    std::fs::metadata(&mp).expect("mount is live again");
    assert!(is_mountpoint(&mp));
    assert_eq!(std::fs::read(mp.join("big")).unwrap(), big);
    for i in 0..20 {
        assert_eq!(
            std::fs::read(mp.join(format!("d/f{i}"))).unwrap(),
            pattern(1000 * i, i as u8)
        );
    }
    assert!(!mp.join("gone").exists());
    assert_eq!(
        std::fs::read(t.join("big")).unwrap(),
        big,
        "bind target not restored"
    );
    let st = status(&d, "vol1");
    assert_eq!(st["Mounted"], true);
    let data = d.root().join("volumes/vol1/data");
    assert_eq!(
        st["UsedBytes"].as_u64().unwrap(),
        du_bytes(&data),
        "usage after a crash must be the real allocation of {}",
        data.display()
    );
    // Root, big, d, d/f0..f19.
    assert_eq!(st["UsedInodes"], 23);
    // Usable, and the bind target can be released.
    std::fs::write(mp.join("after"), b"after").unwrap();
    d.cli_ok(["unmount", "vol1", "--target", t.to_str().unwrap()]);
    d.cli_ok(["unmount", "vol1"]);
    assert!(!is_mountpoint(&mp) && !is_mountpoint(&t));
}

#[test]
fn kill9_without_mounts_restarts_cleanly() {
    if !fuse_or_skip("kill9_without_mounts_restarts_cleanly") {
        return;
    }
    let root = TestRoot::new();
    let mut d = TestDaemon::start_at(&root);
    d.cli_ok(["create", "vol1", "--label", "a=b"]);
    let before = d.inspect("vol1");
    d.kill9();
    let d = TestDaemon::start_at(&root);
    assert_eq!(d.inspect("vol1"), before);
    let mp = d.mount("vol1");
    std::fs::write(mp.join("x"), b"x").unwrap();
}

#[test]
fn mount_dir_changed_while_down_is_reconciled() {
    if !fuse_or_skip("mount_dir_changed_while_down_is_reconciled") {
        return;
    }
    let root = TestRoot::new();
    let mut d = TestDaemon::start_at(&root);
    let dir = root.scratch_dir("ext");
    std::fs::write(dir.join("old"), b"old").unwrap();
    let idle_dir = root.scratch_dir("ext-idle");
    let mount_opt = |p: &Path| format!("mount={}", p.display());
    d.cli_ok(["create", "ext", "-o", &mount_opt(&dir)]);
    d.cli_ok(["create", "ext-idle", "-o", &mount_opt(&idle_dir)]);
    let mp = d.mount("ext");
    std::fs::write(mp.join("small"), b"small").unwrap();
    let before = used_bytes(&d, "ext");
    let idle_before = used_bytes(&d, "ext-idle");
    assert!(d.stop().success());

    // Behind fvol's back, while no daemon runs.
    write_synced(&dir.join("added"), &pattern(MIB as usize, 4));
    write_synced(&idle_dir.join("added"), &pattern(MIB as usize, 5));

    let d = TestDaemon::start_at(&root);
    let after = used_bytes(&d, "ext");
    assert!(
        after >= before + MIB,
        "usage not reconciled: {before} before, {after} after adding 1 MiB"
    );
    assert_eq!(
        std::fs::read(mp.join("added")).unwrap(),
        pattern(MIB as usize, 4)
    );
    assert_eq!(std::fs::read(mp.join("small")).unwrap(), b"small");

    // An unmounted mount= volume is measured again when it is next mounted.
    d.mount("ext-idle");
    let idle_after = used_bytes(&d, "ext-idle");
    assert!(
        idle_after >= idle_before + MIB,
        "usage not reconciled on mount: {idle_before} before, {idle_after} after adding 1 MiB"
    );
}

#[test]
fn second_daemon_on_the_same_root_is_refused() {
    if !fuse_or_skip("second_daemon_on_the_same_root_is_refused") {
        return;
    }
    let root = TestRoot::new();
    let d = TestDaemon::start_at(&root);
    d.cli_ok(["create", "vol1"]);
    let mp = d.mount("vol1");
    std::fs::write(mp.join("f"), b"f").unwrap();
    // Names and mount state, not live usage (the host's allocation may still settle).
    let before = d.cli_ok(["ls", "-q", "--filter", "dangling=false"]);

    let out = root.run_daemon_to_exit();
    assert!(!out.status.success(), "a second daemon started");
    let err = stderr_of(&out);
    assert!(
        err.contains("another fvol daemon") && err.contains("running"),
        "{err}"
    );
    let pid = d.pid().unwrap().to_string();
    assert!(
        err.contains(&pid),
        "the message should name the running daemon {pid}: {err}"
    );

    // The first daemon is unaffected.
    assert_eq!(d.cli_ok(["ls", "-q", "--filter", "dangling=false"]), before);
    assert!(is_mountpoint(&mp));
    assert_eq!(std::fs::read(mp.join("f")).unwrap(), b"f");
    d.cli_ok(["create", "vol2"]);
}

/// A start with 200 volumes that have references (after kill -9 of the daemon) mounts every
/// one of them again before it serves, a bounded number at once: with `--startup-mounts 3`,
/// the daemon's count of mounts in flight never passes 3, and more than one ran at once. The
/// data written before the kill is there.
#[test]
fn start_with_200_referenced_volumes_mounts_them_all_a_bounded_number_at_once() {
    if !fuse_or_skip("start_with_200_referenced_volumes_mounts_them_all_a_bounded_number_at_once") {
        return;
    }
    const VOLUMES: usize = 200;
    const BOUND: usize = 3;
    let root = TestRoot::new();
    let mut d = TestDaemon::start_at(&root);
    let mut mountpoints = Vec::new();
    for i in 0..VOLUMES {
        let name = format!("v{i:03}");
        d.cli_ok(["create", &name, "-o", "size=8M"]);
        let mp = d.mount(&name);
        write_synced(&mp.join("id"), name.as_bytes());
        mountpoints.push((name, mp));
    }
    // Without the keeper, so that start-up mounts every volume anew (with it, the next daemon
    // takes the kept connections over: daemon_handover.rs).
    d.kill9();
    root.kill_keeper();

    let bound = BOUND.to_string();
    let d = TestDaemon::start_with_args(&root, ["--no-plugin", "--startup-mounts", &bound]);
    for (name, mp) in &mountpoints {
        assert!(is_mountpoint(mp), "{name} not mounted again");
        assert_eq!(std::fs::read(mp.join("id")).unwrap(), name.as_bytes());
    }
    let mounted = d.cli_ok(["ls", "-q", "--filter", "dangling=false"]);
    assert_eq!(mounted.lines().count(), VOLUMES, "{mounted}");
    // "start-up: mounted 200 of 200 volumes with references again, at most K at once
    // (startup_mounts = 3)"
    let log = d.log();
    let line = log
        .lines()
        .find(|l| l.contains("start-up: mounted"))
        .unwrap_or_else(|| panic!("no start-up summary in the log:\n{log}"));
    eprintln!("{line}");
    assert!(
        line.contains(&format!(
            "mounted {VOLUMES} of {VOLUMES} volumes with references again"
        )) && line.contains(&format!("(startup_mounts = {BOUND})")),
        "{line}"
    );
    let at_once: usize = line
        .split("at most ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no count in {line}"));
    assert!(
        (2..=BOUND).contains(&at_once),
        "mounts at once: {at_once}, bound {BOUND}: {line}"
    );
}
