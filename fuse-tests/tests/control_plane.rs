//! The control plane while a driver call hangs (issue 15): operations on one volume are
//! ordered, operations on different volumes never wait for each other, and `ls`, `inspect` and
//! `path` never wait for a driver call.
//!
//! The slow call is an rbd create whose monitor is a loopback listener that accepts TCP and
//! never says a word: librados waits for it until the driver's connect timeout (30 s). No
//! assertion is timed: the test checks the order of answers (every call on the local volumes
//! answered while the rbd create had not), then lets the create end by itself.
use std::process::{Child, Stdio};
use std::sync::atomic::Ordering;
use std::time::Duration;

use fuse_tests::ceph::{silent_conf, silent_monitor};
use fuse_tests::daemon::{TestDaemon, TestRoot, fuse_or_skip, is_mountpoint, stderr_of};
use fuse_tests::docker::wait_until;

/// Starts `fvol ARGS...` without waiting for it.
fn spawn_cli(root: &TestRoot, args: &[&str]) -> Child {
    root.command(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn fvol")
}

/// 100 calls on local volumes (25 each of create, ls, inspect and mount, interleaved) and
/// `inspect`/`path` of the volume whose create hangs all answer while an rbd create waits for a
/// monitor that never answers; that create answers only afterwards, with a 503-class error, and
/// leaves nothing behind.
#[test]
fn local_calls_answer_while_an_rbd_create_waits_for_a_silent_cluster() {
    if !fuse_or_skip("local_calls_answer_while_an_rbd_create_waits_for_a_silent_cluster") {
        return;
    }
    let (port, accepted) = silent_monitor();
    let d = TestDaemon::start();
    let conf = silent_conf(&d.scratch_dir("silent-ceph"), port);
    let conf_opt = format!("conf={}", conf.display());
    let mut slow = spawn_cli(
        &d.root,
        &[
            "create", "-d", "rbd", "-o", &conf_opt, "-o", "size=64M", "slow",
        ],
    );
    // The create is in its driver call once librados has connected to the monitor.
    assert!(
        wait_until(Duration::from_secs(60), || accepted.load(Ordering::SeqCst)
            > 0),
        "the rbd create never reached the monitor"
    );

    let mut mounted = Vec::new();
    for i in 0..25 {
        let name = format!("local{i}");
        d.cli_ok(["create", &name, "-o", "size=16M"]);
        let listed = d.cli_ok(["ls", "-q"]);
        assert!(listed.lines().any(|l| l == name), "{listed}");
        assert!(!listed.lines().any(|l| l == "slow"), "{listed}");
        assert_eq!(d.inspect(&name)["Name"], name.as_str());
        mounted.push(d.mount(&name));
    }
    // The volume being created is no volume yet: inspect and path answer at once that it does
    // not exist (they do not wait for its create).
    for args in [["inspect", "slow"], ["path", "slow"]] {
        let out = d.cli(args);
        assert!(!out.status.success(), "{args:?} found a volume mid-create");
        assert!(
            stderr_of(&out).contains("no such volume: slow"),
            "{args:?}: {}",
            stderr_of(&out)
        );
    }
    // Everything above answered before the create did.
    let early = slow.try_wait().unwrap();
    assert!(
        early.is_none(),
        "the rbd create answered ({early:?}) before the calls on local volumes finished: they \
         waited for it, or took longer than its connect timeout"
    );
    for mp in &mounted {
        assert!(is_mountpoint(mp), "{} not mounted", mp.display());
    }

    // The create ends by itself: the cluster is unavailable (503 through the API), and nothing
    // of it stays.
    let out = wait_for_exit(slow, Duration::from_secs(180));
    assert!(
        !out.status.success(),
        "the create succeeded without a cluster"
    );
    assert!(stderr_of(&out).contains("timed out"), "{}", stderr_of(&out));
    let listed = d.cli_ok(["ls", "-q"]);
    assert_eq!(listed.lines().count(), 25, "{listed}");
    assert!(!listed.lines().any(|l| l == "slow"), "{listed}");
    assert!(!d.root().join("volumes/slow").exists());
}

/// Waits (at most `timeout`) for `child` to exit and collects its output.
fn wait_for_exit(mut child: Child, timeout: Duration) -> std::process::Output {
    let exited = wait_until(timeout, || child.try_wait().unwrap().is_some());
    if !exited {
        let _ = child.kill();
        panic!("the command did not end within {timeout:?}");
    }
    child.wait_with_output().unwrap()
}
