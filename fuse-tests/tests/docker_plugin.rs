//! fvol as a Docker volume plugin under a real dockerd, driven through the `docker` CLI.
//!
//! One private dockerd (`tools/docker-daemon.sh`) and one fvol daemon serving the plugin under
//! a private driver name (`fvol-test-PID`), registered by a spec file of its own in
//! `/etc/docker/plugins` that points at a socket in the test's root. The host's own `fvol`
//! plugin (`/run/docker/plugins/fvol.sock`, `/etc/docker/plugins/fvol.spec`) is never touched,
//! so the suite can run on a host where fvol serves Docker. Every dockerd test
//! lives in this one binary, as steps of one test that run in order. Each step runs even if
//! an earlier one failed (they use their own volumes); the test fails listing the failed steps.
//!
//! Needs root, /dev/fuse, and the Debian packages docker.io and busybox-static: without root
//! or FUSE it is skipped like every FUSE test; without docker it fails, saying what is missing.
use std::collections::BTreeSet;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;
use std::time::Duration;

use fuse_tests::ceph::{POOL, TestCluster};
use fuse_tests::daemon::{TestDaemon, TestRoot, fuse_or_skip, is_mountpoint, stderr_of};
use fuse_tests::docker::{DockerDaemon, IMAGE, wait_until};
use serde_json::{Value, json};

const MIB: u64 = 1 << 20;
/// The host's own plugin socket and spec file: the tests must never create or remove them.
const HOST_PLUGIN_FILES: [&str; 2] = [
    "/run/docker/plugins/fvol.sock",
    "/etc/docker/plugins/fvol.spec",
];
/// The daemon releases a plugin reference this old once no container uses its volume.
const STALE_REF_GRACE: Duration = Duration::from_secs(20);
/// How long a tmpfs volume keeps its data after its last Unmount.
const TMPFS_LINGER: Duration = Duration::from_secs(5);
/// How long Docker may take to call Unmount/Remove after a container ends.
const SETTLE: Duration = Duration::from_secs(20);

/// Field order is drop order: dockerd stops first (its containers' Unmounts reach fvol).
struct Env {
    docker: DockerDaemon,
    fvol: TestDaemon,
    root: TestRoot,
    plugin: PrivatePlugin,
}

/// The test's own driver name and the spec file that registers it with dockerd.
struct PrivatePlugin {
    driver: String,
    spec: PathBuf,
}

impl PrivatePlugin {
    fn new() -> PrivatePlugin {
        let driver = format!("fvol-test-{}", std::process::id());
        let spec = PathBuf::from(format!("/etc/docker/plugins/{driver}.spec"));
        PrivatePlugin { driver, spec }
    }

    /// `fvol daemon` arguments serving this plugin (its socket is ROOT/plugin.sock).
    fn daemon_args(&self) -> [String; 3] {
        [
            format!("--plugin-spec={}", self.spec.display()),
            format!("--stale-ref-grace={}", STALE_REF_GRACE.as_secs()),
            format!("--tmpfs-linger={}", TMPFS_LINGER.as_secs()),
        ]
    }

    fn start_daemon(&self, root: &TestRoot) -> TestDaemon {
        let daemon = TestDaemon::start_with_args(root, self.daemon_args());
        assert!(
            self.spec.exists(),
            "{} missing\n{}",
            self.spec.display(),
            root.log()
        );
        daemon
    }
}

impl Env {
    fn mountpoint(&self, name: &str) -> PathBuf {
        self.root.root().join("volumes").join(name).join("mnt")
    }

    fn fvol_names(&self) -> BTreeSet<String> {
        self.fvol
            .cli_ok(["ls", "-q"])
            .lines()
            .map(str::to_owned)
            .collect()
    }

    fn refs(&self, name: &str) -> Vec<String> {
        serde_json::from_value(self.fvol.inspect(name)["Status"]["MountRefs"].clone()).unwrap()
    }

    fn mounted(&self, name: &str) -> bool {
        self.fvol.inspect(name)["Status"]["Mounted"] == true
    }

    /// `docker run --rm --network none -v VOLUME:/data busybox:local sh -c SCRIPT`.
    fn run(&self, volume: &str, script: &str) -> String {
        self.docker.docker_ok([
            "run",
            "--rm",
            "--network",
            "none",
            "-v",
            &format!("{volume}:/data"),
            IMAGE,
            "sh",
            "-c",
            script,
        ])
    }

    /// Starts a container in the background that holds VOLUME at /data until killed.
    fn hold(&self, name: &str, volume: &str, script: &str) {
        self.docker.docker_ok([
            "run",
            "-d",
            "--name",
            name,
            "--network",
            "none",
            "-v",
            &format!("{volume}:/data"),
            IMAGE,
            "sh",
            "-c",
            &format!("{script}; exec sleep 600"),
        ]);
    }

    /// Waits until the volume's references are exactly `want` (sorted).
    fn wait_refs(&self, name: &str, want: impl Fn(&[String]) -> bool, what: &str) {
        let mut last = Vec::new();
        let ok = wait_until(SETTLE, || {
            last = self.refs(name);
            want(&last)
        });
        assert!(ok, "{name}: references never became {what}: {last:?}");
    }
}

/// One step of the end-to-end test.
type Step = fn(&mut Env);

fn plugin_refs(refs: &[String]) -> usize {
    refs.iter().filter(|r| r.starts_with("plugin:")).count()
}

fn status(docker_inspect: &Value) -> &Value {
    &docker_inspect["Status"]
}

#[test]
fn docker_volume_plugin_end_to_end() {
    if !fuse_or_skip("docker_volume_plugin_end_to_end") {
        return;
    }
    // dockerd and fvol create these; remove them at the end if they were not there before.
    let made_dirs: Vec<&str> = ["/etc/docker/plugins", "/run/docker/plugins", "/run/docker"]
        .into_iter()
        .filter(|dir| !std::path::Path::new(dir).exists())
        .collect();
    let docker = DockerDaemon::start().unwrap_or_else(|reason| {
        panic!("the Docker plugin tests need a working dockerd, and none could start: {reason}")
    });
    let host_files_before: Vec<bool> = HOST_PLUGIN_FILES
        .iter()
        .map(|f| std::path::Path::new(f).exists())
        .collect();
    let root = TestRoot::new();
    let plugin = PrivatePlugin::new();
    let fvol = plugin.start_daemon(&root);
    let mut env = Env {
        docker,
        fvol,
        root,
        plugin,
    };

    let steps: [(&str, Step); 17] = [
        ("create with and without options; bad options", create),
        ("ls and inspect", ls_and_inspect),
        ("quota and df in a container", quota_in_a_container),
        ("a second container reads the data", second_container_reads),
        (
            "two containers share a volume",
            two_containers_share_a_volume,
        ),
        ("anonymous volume with --rm", anonymous_volume),
        (
            "fvol restarted between container runs",
            restart_between_runs,
        ),
        (
            "fvol restarted under a running container",
            restart_under_a_container,
        ),
        (
            "a container writes through restarts, crashes and an upgrade of fvol",
            writes_through_restarts,
        ),
        (
            "a container writes to a tmpfs volume through restarts, crashes and an upgrade",
            tmpfs_writes_through_restarts,
        ),
        (
            "a volume cloned from another and from its snapshot (-o from=)",
            clone_from,
        ),
        ("tmpfs volume", tmpfs_volume),
        (
            "tmpfs volume filled from the image",
            tmpfs_volume_filled_from_the_image,
        ),
        (
            "rbd volume with the cluster from the configuration file",
            rbd_volume_from_the_configuration_file,
        ),
        (
            "dockerd killed under running containers",
            dockerd_killed_under_running_containers,
        ),
        ("docker volume rm", remove),
        (
            "fvol's image runs the daemon and a CSI node in a container",
            fvol_image,
        ),
    ];
    let mut failed = Vec::new();
    for (name, step) in steps {
        eprintln!("=== step: {name}");
        match catch_unwind(AssertUnwindSafe(|| step(&mut env))) {
            Ok(()) => eprintln!("=== step ok: {name}"),
            Err(_) => {
                eprintln!("=== step FAILED: {name}");
                failed.push(name);
            }
        }
    }
    if !failed.is_empty() {
        eprintln!("--- fvol daemon log:\n{}", env.root.log());
        eprintln!("--- dockerd log (tail):\n{}", env.docker.log_tail(40));
    }
    let spec = env.plugin.spec.clone();
    drop(env);
    for dir in made_dirs {
        // Only if empty: anything else there is not ours.
        let _ = std::fs::remove_dir(dir);
    }
    assert!(!spec.exists(), "{} left behind", spec.display());
    let host_files_after: Vec<bool> = HOST_PLUGIN_FILES
        .iter()
        .map(|f| std::path::Path::new(f).exists())
        .collect();
    assert_eq!(
        host_files_before, host_files_after,
        "the host's plugin files {HOST_PLUGIN_FILES:?} changed"
    );
    assert!(failed.is_empty(), "failed steps: {failed:?}");
}

fn create(env: &mut Env) {
    let d = &env.docker;
    assert_eq!(
        d.docker_ok(["volume", "create", "-d", &env.plugin.driver, "plain"]),
        "plain\n"
    );
    assert_eq!(
        d.docker_ok([
            "volume",
            "create",
            "-d",
            &env.plugin.driver,
            "-o",
            "size=64M",
            "-o",
            "inodes=1000",
            "quota",
        ]),
        "quota\n"
    );
    let info = env.fvol.inspect("quota");
    assert_eq!(info["Driver"], "local");
    assert_eq!(info["Options"], json!({"size": "64M", "inodes": "1000"}));
    assert_eq!(info["Status"]["SizeLimit"], 64 * MIB);
    assert_eq!(info["Status"]["InodeLimit"], 1000);
    assert_eq!(env.fvol.inspect("plain")["Options"], json!({}));

    // Errors reach the user: non-zero exit, fvol's message on stderr.
    let cases: [(&[&str], &[&str]); 4] = [
        (
            &["-o", "bogus=1"],
            &[
                "unknown option \"bogus\"",
                "valid options are: size, inodes, uid, gid, mode, mount",
            ],
        ),
        (&["-o", "size=lots"], &["invalid size \"lots\""]),
        (
            &["-o", "driver=nfs"],
            &[
                "unknown driver \"nfs\"",
                "valid drivers are local, tmpfs, rbd",
            ],
        ),
        (
            &["-o", "driver=tmpfs", "-o", "mount=/srv"],
            &["valid options are: size, inodes, uid, gid, mode"],
        ),
    ];
    for (opts, needles) in cases {
        let mut args = vec!["volume", "create", "-d", &env.plugin.driver];
        args.extend_from_slice(opts);
        args.push("bad");
        let err = d.docker_err(&args);
        for needle in needles {
            assert!(err.contains(needle), "{opts:?}: {needle:?} not in {err}");
        }
    }
    assert!(!env.fvol_names().contains("bad"));
    let docker_names = d.docker_ok(["volume", "ls", "-q"]);
    assert!(!docker_names.lines().any(|n| n == "bad"), "{docker_names}");
}

fn ls_and_inspect(env: &mut Env) {
    let d = &env.docker;
    let listed = d.docker_ok(["volume", "ls", "--format", "{{.Driver}} {{.Name}}"]);
    for name in ["plain", "quota"] {
        let line = format!("{} {name}", env.plugin.driver);
        assert!(
            listed.lines().any(|l| l == line),
            "{line:?} not in {listed}"
        );
    }
    let info = d.inspect_volume("quota");
    assert_eq!(info["Driver"], env.plugin.driver);
    assert_eq!(info["Name"], "quota");
    assert_eq!(info["Scope"], "local");
    assert_eq!(
        info["Mountpoint"],
        env.mountpoint("quota").to_str().unwrap()
    );
    assert_eq!(info["CreatedAt"], env.fvol.inspect("quota")["CreatedAt"]);
    let s = status(&info);
    assert_eq!(s["Driver"], "local");
    assert_eq!(s["SizeLimit"], 64 * MIB);
    assert_eq!(s["InodeLimit"], 1000);
    assert_eq!(s["UsedInodes"], 1);
    assert_eq!(s["Mounted"], false);
    assert_eq!(s["MountRefs"], json!([]));
}

fn quota_in_a_container(env: &mut Env) {
    let out = env.run(
        "quota",
        "echo hello > /data/hello && df -k /data && \
         dd if=/dev/zero of=/data/fill bs=1M count=100 2>&1; echo dd-exit=$?",
    );
    // busybox df -k: "Filesystem 1K-blocks Used Available Use% Mounted on", then the volume.
    let df = out
        .lines()
        .find(|l| l.ends_with(" /data"))
        .unwrap_or_else(|| panic!("no df line in {out}"));
    let total: u64 = df.split_whitespace().nth(1).unwrap().parse().unwrap();
    assert_eq!(total * 1024, 64 * MIB, "df inside the container: {df}");
    assert!(out.contains("No space left on device"), "{out}");
    assert!(out.contains("dd-exit=1"), "{out}");

    let s = status(&env.docker.inspect_volume("quota")).clone();
    let used = s["UsedBytes"].as_u64().unwrap();
    assert!(used > 63 * MIB && used <= 64 * MIB, "UsedBytes {used}");
    assert_eq!(s["UsedInodes"], 3);
    // The container is gone: so are its references and the mount.
    env.wait_refs("quota", |r| r.is_empty(), "empty");
    assert!(!env.mounted("quota"));
    assert!(!is_mountpoint(&env.mountpoint("quota")));
}

fn second_container_reads(env: &mut Env) {
    let out = env.run("quota", "cat /data/hello; wc -c < /data/fill; df -k /data");
    let mut lines = out.lines();
    assert_eq!(lines.next(), Some("hello"), "{out}");
    let size: u64 = lines.next().unwrap().trim().parse().unwrap();
    assert!(size > 63 * MIB && size < 64 * MIB, "fill has {size} bytes");
    let df = lines.find(|l| l.ends_with(" /data")).unwrap();
    let available: u64 = df.split_whitespace().nth(3).unwrap().parse().unwrap();
    assert!(available < 1024, "the volume should be full: {df}");
}

fn two_containers_share_a_volume(env: &mut Env) {
    let d = &env.docker;
    d.docker_ok([
        "volume",
        "create",
        "-d",
        &env.plugin.driver,
        "-o",
        "size=16M",
        "shared",
    ]);
    env.hold("fvol-first", "shared", "echo from-first > /data/s");
    let mp = env.mountpoint("shared");
    assert!(
        wait_until(SETTLE, || std::fs::read(mp.join("s")).is_ok()),
        "the first container never wrote"
    );
    env.wait_refs("shared", |r| plugin_refs(r) == 1, "one plugin reference");
    let first_ref = env.refs("shared");

    env.hold("fvol-second", "shared", "echo from-second > /data/t");
    env.wait_refs("shared", |r| plugin_refs(r) == 2, "two plugin references");
    let both = d.docker_ok(["exec", "fvol-second", "cat", "/data/s", "/data/t"]);
    assert_eq!(both, "from-first\nfrom-second\n");

    // Docker refuses to remove a volume in use, and so does fvol.
    let err = d.docker_err(["volume", "rm", "shared"]);
    assert!(err.contains("in use"), "{err}");
    let out = env.fvol.cli(["rm", "shared"]);
    assert!(!out.status.success());
    assert!(
        stderr_of(&out).contains("in use by plugin:"),
        "{}",
        stderr_of(&out)
    );

    // The second one goes: the first still has the volume, mounted.
    d.docker_ok(["rm", "-f", "fvol-second"]);
    env.wait_refs("shared", |r| plugin_refs(r) == 1, "one plugin reference");
    assert_eq!(env.refs("shared"), first_ref);
    assert!(env.mounted("shared") && is_mountpoint(&mp));
    let still = d.docker_ok(["exec", "fvol-first", "cat", "/data/t"]);
    assert_eq!(still, "from-second\n");

    // A CLI reference beside the plugin's: inspect shows both, and it holds the mount.
    env.fvol.cli_ok(["mount", "shared"]);
    let refs = env.refs("shared");
    assert!(
        refs.contains(&"cli".to_owned()) && plugin_refs(&refs) == 1,
        "{refs:?}"
    );
    d.docker_ok(["rm", "-f", "fvol-first"]);
    env.wait_refs("shared", |r| r == ["cli"], "[cli]");
    assert!(env.mounted("shared") && is_mountpoint(&mp));
    env.fvol.cli_ok(["unmount", "shared"]);
    assert!(!env.mounted("shared") && !is_mountpoint(&mp));

    d.docker_ok(["volume", "rm", "shared"]);
    assert!(!env.fvol_names().contains("shared"));
    assert!(!env.root.root().join("volumes/shared").exists());
}

fn anonymous_volume(env: &mut Env) {
    let d = &env.docker;
    let before = env.fvol_names();
    d.docker_ok([
        "run",
        "-d",
        "--rm",
        "--name",
        "fvol-anon",
        "--network",
        "none",
        "--volume-driver",
        &env.plugin.driver,
        "-v",
        "/data",
        IMAGE,
        "sh",
        "-c",
        "echo anon > /data/f; exec sleep 600",
    ]);
    let mut new = Vec::new();
    assert!(
        wait_until(SETTLE, || {
            new = env.fvol_names().difference(&before).cloned().collect();
            !new.is_empty()
        }),
        "no anonymous volume appeared in fvol"
    );
    assert_eq!(new.len(), 1, "{new:?}");
    let name = new.remove(0);
    assert!(
        name.len() == 64 && name.bytes().all(|b| b.is_ascii_hexdigit()),
        "{name}"
    );
    env.wait_refs(&name, |r| plugin_refs(r) == 1, "one plugin reference");
    let mounts = d.docker_ok(["exec", "fvol-anon", "grep", " /data ", "/proc/mounts"]);
    assert!(
        mounts.starts_with(&format!("fvol:{name} /data fuse")),
        "{mounts}"
    );
    assert!(
        d.docker_ok(["volume", "ls", "-q"])
            .lines()
            .any(|l| l == name)
    );

    // --rm: the container goes when it ends, and its anonymous volume with it.
    d.docker_ok(["kill", "fvol-anon"]);
    assert!(
        wait_until(SETTLE, || !env.fvol_names().contains(&name)),
        "anonymous volume {name} not removed"
    );
    assert!(
        !d.docker_ok(["volume", "ls", "-q"])
            .lines()
            .any(|l| l == name)
    );
    assert!(!env.root.root().join("volumes").join(&name).exists());
}

/// Stops the fvol daemon (SIGTERM) within `timeout` and starts it again on the same root.
fn restart_fvol(env: &mut Env, timeout: Duration) {
    let exit = env.fvol.stop_within(timeout);
    assert!(exit.success(), "fvol exit {exit}\n{}", env.root.log());
    assert!(
        !env.plugin.spec.exists(),
        "plugin spec file left after a clean stop"
    );
    env.fvol = env.plugin.start_daemon(&env.root);
}

fn restart_between_runs(env: &mut Env) {
    env.docker.docker_ok([
        "volume",
        "create",
        "-d",
        &env.plugin.driver,
        "-o",
        "size=32M",
        "durable",
    ]);
    let written = env.run(
        "durable",
        "dd if=/dev/urandom of=/data/blob bs=64k count=32 2>/dev/null && mkdir /data/dir && \
         echo small > /data/dir/small && md5sum /data/blob",
    );
    let used = env.fvol.inspect("durable")["Status"]["UsedBytes"].clone();

    restart_fvol(env, Duration::from_secs(10));

    let listed = env.docker.docker_ok(["volume", "ls", "-q"]);
    assert!(listed.lines().any(|l| l == "durable"), "{listed}");
    let info = env.docker.inspect_volume("durable");
    assert_eq!(status(&info)["UsedBytes"], used);
    assert_eq!(status(&info)["SizeLimit"], 32 * MIB);
    let read = env.run("durable", "md5sum /data/blob; cat /data/dir/small");
    assert_eq!(read, format!("{written}small\n"));
}

/// A container keeps its volume's FUSE connection alive from its own mount namespace, so fvol
/// cannot unmount it cleanly: the daemon stops anyway after its grace period. The container's
/// Mount ID survives; after the restart the volume is mounted again, and the container's
/// eventual Unmount releases it.
fn restart_under_a_container(env: &mut Env) {
    env.hold("fvol-through-restart", "durable", "true");
    env.wait_refs("durable", |r| plugin_refs(r) == 1, "one plugin reference");
    let held = env.refs("durable");

    restart_fvol(env, Duration::from_secs(40));

    assert_eq!(env.refs("durable"), held, "the Mount ID was lost");
    assert!(env.mounted("durable") && is_mountpoint(&env.mountpoint("durable")));
    // Other containers use it as before.
    let read = env.run("durable", "cat /data/dir/small");
    assert_eq!(read, "small\n");
    env.docker.docker_ok(["rm", "-f", "fvol-through-restart"]);
    env.wait_refs("durable", |r| r.is_empty(), "empty");
    assert!(!env.mounted("durable"));
}

/// A container that appends checksummed records, fsyncs each and reads it back, nonstop
/// (busybox's `sync FILE` is an fsync), until /data/stop exists; then prints how many.
const RECORD_WRITER: &str = r#"
i=0
while [ ! -e /data/stop ]; do
  rec="record $i $(head -c 32 /dev/urandom | md5sum | cut -c1-16)"
  sum=$(echo "$rec" | md5sum | cut -c1-32)
  echo "$rec $sum" >> /data/log || { echo "append failed at $i"; exit 1; }
  sync /data/log || { echo "fsync failed at $i"; exit 2; }
  last=$(tail -n 1 /data/log) || { echo "read failed at $i"; exit 3; }
  [ "$last" = "$rec $sum" ] || { echo "record $i read back as: $last"; exit 4; }
  i=$((i+1))
done
echo "wrote $i"
"#;

/// Checks every record of /data/log: numbered in order, checksum right; prints `ok N`.
const RECORD_CHECK: &str = r#"
n=0
while read -r w i p sum; do
  [ "$w" = record ] && [ "$i" = "$n" ] || { echo "line $n is not record $n: $w $i"; exit 1; }
  [ "$(echo "record $i $p" | md5sum | cut -c1-32)" = "$sum" ] || { echo "record $i damaged"; exit 1; }
  n=$((n+1))
done < /data/log
echo "ok $n"
"#;

/// Restarts, crashes and an upgrade of fvol are invisible to a running container: across 5
/// SIGTERM + start, 5 SIGKILL + start and a start of another binary, its writer sees no error
/// and every record it fsynced is there, intact. On a local volume here, on tmpfs in
/// `tmpfs_writes_through_restarts` and on rbd in `rbd_volume_from_the_configuration_file`.
fn writes_through_restarts(env: &mut Env) {
    writes_through_restarts_on(env, "local", true);
}

fn tmpfs_writes_through_restarts(env: &mut Env) {
    writes_through_restarts_on(env, "tmpfs", true);
}

/// `crashes`: SIGKILL rounds too (on rbd, what a killed daemon had acknowledged comes back from
/// the redo journal: docs/rbd.md, "A crash of the daemon").
fn writes_through_restarts_on(env: &mut Env, driver: &str, crashes: bool) {
    let volume = format!("records-{driver}");
    env.docker.docker_ok([
        "volume",
        "create",
        "-d",
        &env.plugin.driver,
        "-o",
        &format!("driver={driver}"),
        "-o",
        "size=64M",
        &volume,
    ]);
    assert_eq!(env.fvol.inspect(&volume)["Driver"], driver);
    env.docker.docker_ok([
        "run",
        "-d",
        "--name",
        "fvol-writer",
        "--network",
        "none",
        "-v",
        &format!("{volume}:/data"),
        IMAGE,
        "sh",
        "-c",
        RECORD_WRITER,
    ]);
    let log = env.mountpoint(&volume).join("log");
    let progress = |env: &Env| {
        let from = std::fs::metadata(&log).map_or(0, |m| m.len());
        let ok = wait_until(SETTLE, || {
            std::fs::metadata(&log).is_ok_and(|m| m.len() > from)
        });
        assert!(
            ok,
            "the writer stopped at {from} bytes\n{}",
            env.docker.docker_ok(["logs", "fvol-writer"])
        );
    };
    progress(env);
    // One per driver: the previous one may be the binary running now.
    let upgraded = env.root.scratch().join(format!("fvol-upgraded-{driver}"));
    std::fs::copy(fuse_tests::daemon::fvol_bin(), &upgraded).unwrap();
    for round in 0..11 {
        match round {
            0..5 => {
                let exit = env.fvol.terminate();
                assert!(exit.success(), "fvol exit {exit}\n{}", env.root.log());
                env.fvol = env.plugin.start_daemon(&env.root);
            }
            5..10 if !crashes => continue,
            5..10 => {
                env.fvol.kill9();
                env.fvol = env.plugin.start_daemon(&env.root);
            }
            _ => {
                assert!(env.fvol.terminate().success());
                env.fvol = TestDaemon::start_binary(&env.root, &upgraded, env.plugin.daemon_args());
            }
        }
        progress(env);
    }
    std::fs::write(env.mountpoint(&volume).join("stop"), b"").unwrap();
    let code = env.docker.docker_ok(["wait", "fvol-writer"]);
    let said = env.docker.docker_ok(["logs", "fvol-writer"]);
    assert_eq!(code.trim(), "0", "the writer failed: {said}");
    let written = said
        .trim()
        .strip_prefix("wrote ")
        .unwrap_or_else(|| panic!("{said}"));
    let checked = env.run(&volume, RECORD_CHECK);
    assert_eq!(checked.trim(), format!("ok {written}"));
    env.docker.docker_ok(["rm", "-f", "fvol-writer"]);
    env.wait_refs(&volume, |r| r.is_empty(), "empty");
    env.docker.docker_ok(["volume", "rm", &volume]);
}

/// `docker volume create -o from=NAME[@SNAP]`: a new volume with that content, independent of
/// its source; a source that does not exist is refused with fvol's message.
fn clone_from(env: &mut Env) {
    let d = &env.docker;
    let driver = env.plugin.driver.clone();
    d.docker_ok([
        "volume", "create", "-d", &driver, "-o", "size=32M", "origin",
    ]);
    env.run(
        "origin",
        "echo first > /data/f && mkdir /data/dir && echo x > /data/dir/g",
    );
    env.fvol.cli_ok(["snapshot", "create", "origin", "s1"]);
    env.run("origin", "echo second > /data/f");

    d.docker_ok([
        "volume",
        "create",
        "-d",
        &driver,
        "-o",
        "from=origin@s1",
        "at-s1",
    ]);
    d.docker_ok([
        "volume",
        "create",
        "-d",
        &driver,
        "-o",
        "from=origin",
        "at-now",
    ]);
    assert_eq!(env.run("at-s1", "cat /data/f /data/dir/g"), "first\nx\n");
    assert_eq!(env.run("at-now", "cat /data/f /data/dir/g"), "second\nx\n");
    // Independent both ways.
    env.run("at-s1", "echo clone > /data/f");
    env.run("origin", "echo third > /data/f");
    assert_eq!(env.run("at-s1", "cat /data/f"), "clone\n");
    assert_eq!(env.run("at-now", "cat /data/f"), "second\n");
    assert_eq!(env.run("origin", "cat /data/f"), "third\n");
    // A clone starts with its source's size unless given (docs/docker.md, *Clones*).
    assert_eq!(
        env.fvol.inspect("at-now")["Options"],
        json!({"size": "32M"})
    );
    d.docker_ok([
        "volume",
        "create",
        "-d",
        &driver,
        "-o",
        "from=origin",
        "-o",
        "size=64M",
        "big",
    ]);
    assert_eq!(env.fvol.inspect("big")["Options"], json!({"size": "64M"}));

    for (from, says) in [
        ("from=nowhere", "nowhere"),
        ("from=origin@nosnap", "nosnap"),
    ] {
        let err = d.docker_err(["volume", "create", "-d", &driver, "-o", from, "bad-clone"]);
        assert!(err.contains(says), "{from}: {says:?} not in {err}");
    }
    assert!(!env.fvol_names().contains("bad-clone"));

    for v in ["at-s1", "at-now", "big"] {
        d.docker_ok(["volume", "rm", v]);
    }
    env.fvol.cli_ok(["snapshot", "rm", "origin", "s1"]);
    d.docker_ok(["volume", "rm", "origin"]);
}

fn tmpfs_volume(env: &mut Env) {
    let d = &env.docker;
    d.docker_ok([
        "volume",
        "create",
        "-d",
        &env.plugin.driver,
        "-o",
        "driver=tmpfs",
        "-o",
        "size=8M",
        "scratch",
    ]);
    let info = env.fvol.inspect("scratch");
    assert_eq!(info["Driver"], "tmpfs");
    assert_eq!(info["Options"], json!({"size": "8M"}));
    let docker_info = d.inspect_volume("scratch");
    assert_eq!(status(&docker_info)["Driver"], "tmpfs");
    assert_eq!(status(&docker_info)["SizeLimit"], 8 * MIB);

    env.hold("fvol-tmpfs-holder", "scratch", "echo keep > /data/k");
    let mp = env.mountpoint("scratch");
    assert!(wait_until(SETTLE, || std::fs::read(mp.join("k")).is_ok()));
    let out = env.run(
        "scratch",
        "cat /data/k; df -k /data; dd if=/dev/zero of=/data/fill bs=1M count=20 2>&1; \
         echo dd-exit=$?",
    );
    assert!(out.starts_with("keep\n"), "{out}");
    let df = out.lines().find(|l| l.ends_with(" /data")).unwrap();
    assert_eq!(df.split_whitespace().nth(1), Some("8192"), "{df}");
    assert!(
        out.contains("No space left on device") && out.contains("dd-exit=1"),
        "{out}"
    );
    assert!(env.mounted("scratch"), "the holder still uses it");

    // The last container goes: so does the data.
    d.docker_ok(["rm", "-f", "fvol-tmpfs-holder"]);
    env.wait_refs("scratch", |r| r.is_empty(), "empty");
    // It lingers (--tmpfs-linger) for a Mount that does not come, then ends.
    assert!(
        wait_until(TMPFS_LINGER + SETTLE, || !env.mounted("scratch")),
        "tmpfs volume still mounted long after its last Unmount"
    );
    assert_eq!(status(&d.inspect_volume("scratch"))["UsedBytes"], 0);
    let after = env.run("scratch", "ls -A /data; echo end");
    assert_eq!(after, "end\n", "tmpfs data outlived its last container");
}

/// `-v VOLUME:/etc` on a new volume: Docker mounts it, copies the image's /etc into it,
/// unmounts it, then mounts it again for the container. The copy must reach the container.
fn tmpfs_volume_filled_from_the_image(env: &mut Env) {
    env.docker.docker_ok([
        "volume",
        "create",
        "-d",
        &env.plugin.driver,
        "-o",
        "driver=tmpfs",
        "-o",
        "size=8M",
        "copied-etc",
    ]);
    let out = env.docker.docker_ok([
        "run",
        "--rm",
        "--network",
        "none",
        "-v",
        "copied-etc:/etc",
        IMAGE,
        "sh",
        "-c",
        "cat /etc/passwd; stat -c %a /etc",
    ]);
    assert_eq!(out, "root:x:0:0:root:/root:/bin/sh\n755\n");
    // Dropped after the container, once the linger is over.
    env.wait_refs("copied-etc", |r| r.is_empty(), "empty");
    assert!(wait_until(TMPFS_LINGER + SETTLE, || !env.mounted("copied-etc")));
    env.docker.docker_ok(["volume", "rm", "copied-etc"]);
}

fn remove(env: &mut Env) {
    let d = &env.docker;
    let names = ["plain", "quota", "durable", "scratch"];
    let mut args = vec!["volume", "rm"];
    args.extend(names);
    d.docker_ok(&args);
    let left = env.fvol_names();
    for name in names {
        assert!(!left.contains(name), "{name} still in fvol: {left:?}");
        assert!(!env.root.root().join("volumes").join(name).exists());
    }
    let listed = d.docker_ok(["volume", "ls", "-q"]);
    assert!(listed.trim().is_empty(), "{listed}");
    let err = d.docker_err(["volume", "rm", "plain"]);
    assert!(err.contains("no such volume"), "{err}");
}

/// rbd through Docker: the fvol daemon's configuration file (`--config`, the test root's
/// `fvol.toml`) names the cluster in `[rbd]`, so a Docker user gives only the driver and a
/// size. The volume keeps the effective options, and its data lives in the cluster's image.
fn rbd_volume_from_the_configuration_file(env: &mut Env) {
    // A private cluster for this step alone (about 30 s to start).
    let ceph = TestCluster::start();
    let conf = ceph.conf();
    std::fs::write(
        env.root.config(),
        format!("[rbd]\nconf = \"{}\"\n", conf.display()),
    )
    .unwrap();
    restart_fvol(env, Duration::from_secs(10));
    let d = &env.docker;
    assert_eq!(
        d.docker_ok([
            "volume",
            "create",
            "-d",
            &env.plugin.driver,
            "-o",
            "driver=rbd",
            "-o",
            "size=64M",
            "db",
        ]),
        "db\n"
    );
    let info = env.fvol.inspect("db");
    assert_eq!(info["Driver"], "rbd");
    assert_eq!(info["Options"], json!({"conf": conf, "size": "64M"}));
    let io = ceph.connect().io_ctx(POOL).unwrap();
    assert!(io.image_exists("db").unwrap(), "no image db in pool {POOL}");

    let written = env.run(
        "db",
        "dd if=/dev/urandom of=/data/blob bs=64k count=32 2>/dev/null && sync && \
         md5sum /data/blob",
    );
    // Another container, after the first one's Unmount released the image.
    let read = env.run("db", "md5sum /data/blob; df -k /data");
    let mut lines = read.lines();
    assert_eq!(lines.next(), written.lines().next(), "{read}");
    let df = lines
        .find(|l| l.ends_with(" /data"))
        .unwrap_or_else(|| panic!("{read}"));
    let size_kib: u64 = df.split_whitespace().nth(1).unwrap().parse().unwrap();
    let limit = status(&d.inspect_volume("db"))["SizeLimit"]
        .as_u64()
        .unwrap();
    assert_eq!(size_kib * 1024, limit, "{df}");
    assert!(limit < 64 * MIB && limit > 56 * MIB, "{limit}");

    let inspected = d.inspect_volume("db");
    let s = status(&inspected);
    assert_eq!(s["Driver"], "rbd");
    assert_eq!(s["Options"], json!({"conf": conf, "size": "64M"}));
    assert!(s["UsedBytes"].as_u64().unwrap() >= 2 * MIB, "{s}");
    assert_eq!(s["Mounted"], false);

    // The CLI takes the same defaults.
    env.fvol
        .cli_ok(["create", "-d", "rbd", "-o", "size=32M", "db-cli"]);
    assert_eq!(
        env.fvol.inspect("db-cli")["Options"],
        json!({"conf": conf, "size": "32M"})
    );
    assert!(io.image_exists("db-cli").unwrap());
    env.fvol.cli_ok(["rm", "db-cli"]);

    // A container writing to an rbd volume through restarts, crashes and an upgrade.
    writes_through_restarts_on(env, "rbd", true);

    let d = &env.docker;
    d.docker_ok(["volume", "rm", "db"]);
    assert!(!env.fvol_names().contains("db"));
    assert!(
        !io.image_exists("db").unwrap(),
        "image db left in the cluster"
    );
    // The cluster goes with this step; so does the configuration that names it.
    std::fs::write(env.root.config(), "").unwrap();
}

/// After `kill -9` of dockerd and a restart, its dead containers never send their Unmounts:
/// fvol finds their references orphaned and releases them by itself.
fn dockerd_killed_under_running_containers(env: &mut Env) {
    let names = ["orphan-local", "orphan-tmpfs"];
    env.docker.docker_ok([
        "volume",
        "create",
        "-d",
        &env.plugin.driver,
        "-o",
        "size=8M",
        names[0],
    ]);
    env.docker.docker_ok([
        "volume",
        "create",
        "-d",
        &env.plugin.driver,
        "-o",
        "driver=tmpfs",
        "-o",
        "size=8M",
        names[1],
    ]);
    for (i, name) in names.iter().enumerate() {
        env.hold(&format!("fvol-killed-{i}"), name, "echo x > /data/x");
        env.wait_refs(name, |r| plugin_refs(r) == 1, "one plugin reference");
    }
    env.docker.kill();
    env.docker.restart();
    let released = wait_until(STALE_REF_GRACE * 3 + SETTLE, || {
        names
            .iter()
            .all(|name| env.refs(name).is_empty() && !env.mounted(name))
    });
    assert!(
        released,
        "references of dead containers kept: {:?}; docker ps: {}",
        names.map(|n| env.refs(n)),
        env.docker.docker_ok(["ps", "-a"])
    );
    // Docker keeps the dead containers' records (and so refuses to remove their volumes)
    // until they are removed; fvol has nothing left to release by then.
    env.docker
        .docker_ok(["rm", "-f", "fvol-killed-0", "fvol-killed-1"]);
    for name in names {
        env.docker.docker_ok(["volume", "rm", name]);
    }
    let left = env.fvol_names();
    assert!(names.iter().all(|n| !left.contains(*n)), "{left:?}");
}

/// The image deploy/kubernetes runs (`tools/fvol-image.sh`), as its node DaemonSet runs it:
/// `fvol daemon` in one container with /dev/fuse, and `fvol csi` beside it. A tmpfs volume is
/// created, staged and published through CSI from the host, and a writer inside the container
/// meets its quota at the publish target. (Kubernetes runs the container privileged; this host
/// lacks CAP_SYS_RESOURCE, which `--privileged` asks for, so the test grants what fvol uses:
/// CAP_SYS_ADMIN, /dev/fuse and no seccomp or AppArmor profile.)
fn fvol_image(env: &mut Env) {
    use fuse_tests::csi::CsiClient;
    use fvol::csi::proto::volume_capability::access_mode::Mode;
    use fvol::csi::proto::volume_capability::{AccessMode, AccessType, MountVolume};
    use fvol::csi::proto::*;

    let tag = format!("fvol-under-test:{}", std::process::id());
    env.docker.build_fvol_image(&tag);
    let container = format!("fvol-image-{}", std::process::id());
    let csi_dir = env.root.scratch_dir("image-csi");
    let docker = &env.docker;
    docker.docker_ok([
        "run",
        "-d",
        "--name",
        &container,
        "--network",
        "none",
        "--cap-add",
        "SYS_ADMIN",
        "--device",
        "/dev/fuse",
        "--security-opt",
        "seccomp=unconfined",
        "--security-opt",
        "apparmor=unconfined",
        "-v",
        &format!("{}:/csi", csi_dir.display()),
        &tag,
        "--root",
        "/var/lib/fvol",
        "daemon",
        "--no-plugin",
    ]);
    let fvol_in = |args: &[&str]| {
        let mut all = vec![
            "exec",
            container.as_str(),
            "fvol",
            "--root",
            "/var/lib/fvol",
        ];
        all.extend_from_slice(args);
        docker.docker(all)
    };
    let up = wait_until(Duration::from_secs(30), || {
        fvol_in(&["ls"]).status.success()
    });
    let logs = || String::from_utf8_lossy(&docker.docker(["logs", &container]).stderr).into_owned();
    assert!(up, "the daemon in the image did not answer:\n{}", logs());
    docker.docker_ok([
        "exec",
        "-d",
        &container,
        "fvol",
        "--root",
        "/var/lib/fvol",
        "csi",
        "--endpoint",
        "unix:///csi/csi.sock",
        "--node-id",
        "image-node",
    ]);
    let csi = CsiClient::connect(
        &csi_dir.join("csi.sock"),
        std::time::Instant::now() + Duration::from_secs(30),
        || Ok(()),
    );
    let probe = csi
        .run(csi.identity().probe(ProbeRequest {}))
        .expect("Probe")
        .into_inner();
    assert_eq!(probe.ready, Some(true), "{probe:?}");
    let capability = VolumeCapability {
        access_type: Some(AccessType::Mount(MountVolume::default())),
        access_mode: Some(AccessMode {
            mode: Mode::SingleNodeWriter as i32,
        }),
    };
    let created = csi
        .run(csi.controller().create_volume(CreateVolumeRequest {
            name: "pvc-in-image".into(),
            capacity_range: Some(CapacityRange {
                required_bytes: 8 * MIB as i64,
                limit_bytes: 0,
            }),
            volume_capabilities: vec![capability.clone()],
            parameters: [("driver".to_owned(), "tmpfs".to_owned())].into(),
            ..Default::default()
        }))
        .expect("CreateVolume")
        .into_inner()
        .volume
        .unwrap();
    let id = created.volume_id;
    let (staging, target) = (
        "/var/lib/kubelet/staging/pvc",
        "/var/lib/kubelet/pods/p/mount",
    );
    docker.docker_ok([
        "exec",
        &container,
        "mkdir",
        "-p",
        staging,
        "/var/lib/kubelet/pods/p",
    ]);
    csi.run(csi.node().node_stage_volume(NodeStageVolumeRequest {
        volume_id: id.clone(),
        staging_target_path: staging.into(),
        volume_capability: Some(capability.clone()),
        ..Default::default()
    }))
    .expect("NodeStageVolume");
    csi.run(csi.node().node_publish_volume(NodePublishVolumeRequest {
        volume_id: id.clone(),
        staging_target_path: staging.into(),
        target_path: target.into(),
        volume_capability: Some(capability),
        ..Default::default()
    }))
    .expect("NodePublishVolume");
    // A writer in the container meets the quota at the target, and df there shows it.
    let file = format!("{target}/fill");
    let out = docker.docker([
        "exec",
        &container,
        "dd",
        "if=/dev/zero",
        &format!("of={file}"),
        "bs=1M",
        "count=16",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("No space left on device"),
        "{stderr}"
    );
    let df = docker.docker_ok([
        "exec",
        &container,
        "df",
        "-B1",
        "--output=size,target",
        target,
    ]);
    assert!(df.contains(&format!("{} {target}", 8 * MIB)), "{df}");
    let stats = csi
        .run(csi.node().node_get_volume_stats(NodeGetVolumeStatsRequest {
            volume_id: id.clone(),
            volume_path: target.into(),
            ..Default::default()
        }))
        .expect("NodeGetVolumeStats")
        .into_inner();
    assert_eq!(stats.usage[0].total, 8 * MIB as i64, "{stats:?}");
    assert!(stats.usage[0].used > 7 * MIB as i64, "{stats:?}");
    csi.run(
        csi.node()
            .node_unpublish_volume(NodeUnpublishVolumeRequest {
                volume_id: id.clone(),
                target_path: target.into(),
            }),
    )
    .expect("NodeUnpublishVolume");
    csi.run(csi.node().node_unstage_volume(NodeUnstageVolumeRequest {
        volume_id: id.clone(),
        staging_target_path: staging.into(),
    }))
    .expect("NodeUnstageVolume");
    csi.run(
        csi.controller()
            .delete_volume(DeleteVolumeRequest { volume_id: id }),
    )
    .expect("DeleteVolume");
    docker.docker_ok(["rm", "-f", &container]);
    docker.docker_ok(["rmi", &tag]);
}
