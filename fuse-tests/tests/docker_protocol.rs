//! The Docker volume plugin protocol against a real fvol daemon, without dockerd: requests as
//! dockerd and PouchContainer send them, on a plugin socket of the test's own (so these tests
//! run in parallel with each other and with a real dockerd's tests).
use std::path::{Path, PathBuf};

use fuse_tests::daemon::{
    TestDaemon, TestRoot, fuse_or_skip, is_mountpoint, parse_rfc3339_utc, stderr_of, unix_now,
};
use fuse_tests::plugin::{CONTENT_TYPE, PluginClient};
use serde_json::{Value, json};

const ACTIVATE: &str = "/Plugin.Activate";
const CREATE: &str = "/VolumeDriver.Create";
const REMOVE: &str = "/VolumeDriver.Remove";
const MOUNT: &str = "/VolumeDriver.Mount";
const UNMOUNT: &str = "/VolumeDriver.Unmount";
const PATH: &str = "/VolumeDriver.Path";
const GET: &str = "/VolumeDriver.Get";
const LIST: &str = "/VolumeDriver.List";
const CAPABILITIES: &str = "/VolumeDriver.Capabilities";

/// A daemon serving the plugin on `scratch/plugin.sock`, and a client of that socket.
struct Plugin {
    daemon: TestDaemon,
    client: PluginClient,
}

fn socket_of(root: &TestRoot) -> PathBuf {
    root.scratch().join("plugin.sock")
}

fn start_at(root: &TestRoot) -> Plugin {
    let socket = socket_of(root);
    let daemon = TestDaemon::start_with_args(root, [Path::new("--plugin-socket"), &socket]);
    Plugin {
        daemon,
        client: PluginClient::new(socket),
    }
}

fn start() -> Plugin {
    start_at(&TestRoot::new())
}

fn mountpoint(p: &Plugin, name: &str) -> PathBuf {
    p.daemon.root().join("volumes").join(name).join("mnt")
}

fn refs(p: &Plugin, name: &str) -> Value {
    p.daemon.inspect(name)["Status"]["MountRefs"].clone()
}

fn mounted(p: &Plugin, name: &str) -> bool {
    let fvol_says = p.daemon.inspect(name)["Status"]["Mounted"] == true;
    assert_eq!(
        fvol_says,
        is_mountpoint(&mountpoint(p, name)),
        "inspect and /proc/self/mountinfo disagree about {name}"
    );
    fvol_says
}

fn mount_body(name: &str, id: &str) -> String {
    json!({"Name": name, "ID": id}).to_string()
}

#[test]
fn every_endpoint_answers_in_the_protocols_shape() {
    if !fuse_or_skip("every_endpoint_answers_in_the_protocols_shape") {
        return;
    }
    let p = start();
    let c = &p.client;
    // dockerd sends Activate with an empty body, List and Capabilities with {}.
    assert_eq!(c.ok(ACTIVATE, ""), json!({"Implements": ["VolumeDriver"]}));
    assert_eq!(
        c.ok(CAPABILITIES, "{}"),
        json!({"Capabilities": {"Scope": "local"}})
    );
    assert_eq!(c.ok(LIST, "{}"), json!({"Volumes": []}));
    // Docker calls Get before Create: an error.
    assert_eq!(c.err(GET, r#"{"Name":"v1"}"#, 404), "no such volume: v1");
    assert_eq!(c.ok(CREATE, r#"{"Name":"v1","Opts":null}"#), json!({}));

    let mp = mountpoint(&p, "v1");
    let got = c.ok(GET, r#"{"Name":"v1"}"#);
    let volume = &got["Volume"];
    assert_eq!(volume["Name"], "v1");
    assert_eq!(volume["Mountpoint"], mp.to_str().unwrap());
    let created = parse_rfc3339_utc(volume["CreatedAt"].as_str().unwrap())
        .unwrap_or_else(|| panic!("CreatedAt is not RFC 3339: {volume}"));
    assert!(created.abs_diff(unix_now()) < 60, "{volume}");
    assert_eq!(
        volume["Status"],
        json!({
            "Driver": "local", "Options": {}, "UsedBytes": 4096, "UsedInodes": 1,
            "Mounted": false, "MountRefs": []
        }),
        "an unlimited local volume holding its root directory"
    );
    assert_eq!(
        c.ok(LIST, "{}"),
        json!({"Volumes": [{
            "Name": "v1", "Mountpoint": mp.to_str().unwrap(), "CreatedAt": volume["CreatedAt"]
        }]})
    );
    assert_eq!(c.ok(PATH, r#"{"Name":"v1"}"#), json!({"Mountpoint": ""}));

    let id = "a".repeat(64);
    assert_eq!(
        c.ok(MOUNT, &mount_body("v1", &id)),
        json!({"Mountpoint": mp.to_str().unwrap()})
    );
    assert!(mounted(&p, "v1"));
    std::fs::write(mp.join("f"), b"data").unwrap();
    assert_eq!(
        c.ok(PATH, r#"{"Name":"v1"}"#),
        json!({"Mountpoint": mp.to_str().unwrap()})
    );
    let status = &c.ok(GET, r#"{"Name":"v1"}"#)["Volume"]["Status"];
    assert_eq!(status["Mounted"], true);
    assert_eq!(status["MountRefs"], json!([format!("plugin:{id}")]));
    assert_eq!(status["UsedInodes"], 2);
    assert_eq!(c.ok(UNMOUNT, &mount_body("v1", &id)), json!({}));
    assert!(!mounted(&p, "v1"));
    assert_eq!(c.ok(REMOVE, r#"{"Name":"v1"}"#), json!({}));
    assert_eq!(c.err(GET, r#"{"Name":"v1"}"#, 404), "no such volume: v1");
    assert_eq!(c.err(PATH, r#"{"Name":"v1"}"#, 404), "no such volume: v1");
    assert_eq!(c.err(REMOVE, r#"{"Name":"v1"}"#, 404), "no such volume: v1");
    assert_eq!(
        c.err(MOUNT, &mount_body("v1", &id), 404),
        "no such volume: v1"
    );
    assert!(!p.daemon.root().join("volumes/v1").exists());
}

#[test]
fn requests_with_or_without_content_type() {
    if !fuse_or_skip("requests_with_or_without_content_type") {
        return;
    }
    let p = start();
    let c = &p.client;
    // No Content-Type (as dockerd), a JSON one, and an odd one: all are read as JSON.
    for (i, headers) in [
        &[][..],
        &["Content-Type: application/json"][..],
        &["Content-Type: text/plain"][..],
    ]
    .into_iter()
    .enumerate()
    {
        let body = format!(r#"{{"Name":"ct{i}"}}"#);
        let response = c.post_with_headers(CREATE, &body, headers);
        assert_eq!(response.status, 200, "{headers:?}: {response:?}");
        assert_eq!(response.content_type.as_deref(), Some(CONTENT_TYPE));
        assert_eq!(response.json(), json!({}));
    }
    // An empty body stands for {} where nothing is needed; where a name is, it is an error.
    assert_eq!(c.ok(LIST, "").as_object().unwrap().len(), 1);
    assert_eq!(c.ok(CAPABILITIES, "")["Capabilities"]["Scope"], "local");
    let nameless = c.bad_request(GET, "");
    assert!(nameless.contains("missing field `Name`"), "{nameless}");
    let garbage = c.bad_request(CREATE, "{\"Name\":");
    assert!(garbage.starts_with("invalid request body"), "{garbage}");
    let unknown = c.post("/VolumeDriver.Frobnicate", "{}");
    assert_eq!(unknown.status, 404);
    assert!(
        unknown.json()["Err"]
            .as_str()
            .unwrap()
            .contains("Frobnicate")
    );
}

#[test]
fn create_validates_options_like_the_cli() {
    if !fuse_or_skip("create_validates_options_like_the_cli") {
        return;
    }
    let p = start();
    let c = &p.client;
    let d = &p.daemon;
    let create = |name: &str, opts: Value| json!({"Name": name, "Opts": opts}).to_string();

    c.ok(
        CREATE,
        &create("sized", json!({"size": "64M", "inodes": "100"})),
    );
    let info = d.inspect("sized");
    assert_eq!(info["Driver"], "local");
    assert_eq!(info["Options"], json!({"size": "64M", "inodes": "100"}));
    assert_eq!(info["Status"]["SizeLimit"], 64 << 20);

    // driver= picks the fvol driver and is not stored as an option.
    let tmpfs = create("scratch", json!({"driver": "tmpfs", "size": "8M"}));
    c.ok(CREATE, &tmpfs);
    let info = d.inspect("scratch");
    assert_eq!(info["Driver"], "tmpfs");
    assert_eq!(info["Options"], json!({"size": "8M"}));
    let status = &c.ok(GET, r#"{"Name":"scratch"}"#)["Volume"]["Status"];
    assert_eq!(status["Driver"], "tmpfs");
    assert_eq!(status["SizeLimit"], 8 << 20);
    // The same create again is a no-op; different settings are refused.
    c.ok(CREATE, &tmpfs);
    let explicit_local = create(
        "sized",
        json!({"driver": "local", "size": "64M", "inodes": "100"}),
    );
    c.ok(CREATE, &explicit_local);
    let other_size = c.err(
        CREATE,
        &create("scratch", json!({"driver": "tmpfs", "size": "9M"})),
        409,
    );
    assert!(other_size.contains("already exists"), "{other_size}");
    let other_driver = c.err(CREATE, &create("scratch", json!({"size": "8M"})), 409);
    assert!(
        other_driver.contains("already exists with driver tmpfs"),
        "{other_driver}"
    );
    // The same values the CLI takes; the same errors, naming the valid choices.
    let bogus = c.err(CREATE, &create("bad", json!({"bogus": "1"})), 400);
    assert!(
        bogus.contains("unknown option \"bogus\" for driver local")
            && bogus.contains("valid options are: size, inodes, uid, gid, mode, mount")
            && bogus.contains("driver=NAME"),
        "{bogus}"
    );
    let tmpfs_mount = c.err(
        CREATE,
        &create("bad", json!({"driver": "tmpfs", "mount": "/srv"})),
        400,
    );
    assert!(
        tmpfs_mount.contains("valid options are: size, inodes, uid, gid, mode"),
        "{tmpfs_mount}"
    );
    let nfs = c.err(CREATE, &create("bad", json!({"driver": "nfs"})), 400);
    assert!(
        nfs.contains("unknown driver \"nfs\": valid drivers are local, tmpfs, rbd"),
        "{nfs}"
    );
    let size = c.err(CREATE, &create("bad", json!({"size": "lots"})), 400);
    assert!(size.contains("invalid size \"lots\""), "{size}");
    let cli = d.cli(["create", "-o", "size=lots", "bad"]);
    assert!(
        stderr_of(&cli).contains(&size),
        "the CLI says it differently: {}",
        stderr_of(&cli)
    );
    let name = c.err(CREATE, &create("-x", json!(null)), 400);
    assert!(name.contains("invalid volume name \"-x\""), "{name}");
    let names: Vec<String> = d.cli_ok(["ls", "-q"]).lines().map(str::to_owned).collect();
    assert_eq!(
        names,
        ["scratch", "sized"],
        "a refused create left something"
    );

    // Anonymous volumes have 64-hex names; Opts may be absent.
    let anonymous = "0123456789abcdef".repeat(4);
    c.ok(CREATE, &json!({"Name": anonymous}).to_string());
    assert_eq!(d.inspect(&anonymous)["Driver"], "local");
}

#[test]
fn pouch_sends_one_id_for_every_mount() {
    if !fuse_or_skip("pouch_sends_one_id_for_every_mount") {
        return;
    }
    let p = start();
    let c = &p.client;
    c.ok(CREATE, r#"{"Name":"pv"}"#);
    let uid = "6f1c1b5e-3d1a-4a7e-9c55-2f7f0a6b9d10";
    let mp = mountpoint(&p, "pv");
    for _ in 0..3 {
        let answer = c.ok(MOUNT, &mount_body("pv", uid));
        assert_eq!(answer["Mountpoint"], mp.to_str().unwrap());
    }
    assert_eq!(refs(&p, "pv"), json!([format!("plugin:{uid}")]));
    assert!(mounted(&p, "pv"));
    // One Unmount after the last container: unmounted, not "two left".
    c.ok(UNMOUNT, &mount_body("pv", uid));
    assert!(!mounted(&p, "pv"));
    assert_eq!(refs(&p, "pv"), json!([]));
    // Again: harmless, never below zero.
    c.ok(UNMOUNT, &mount_body("pv", uid));
    assert_eq!(refs(&p, "pv"), json!([]));
    c.ok(MOUNT, &mount_body("pv", uid));
    assert!(mounted(&p, "pv"), "a Mount after extra Unmounts must mount");
}

#[test]
fn docker_sends_one_id_per_container() {
    if !fuse_or_skip("docker_sends_one_id_per_container") {
        return;
    }
    let p = start();
    let c = &p.client;
    c.ok(CREATE, r#"{"Name":"dv"}"#);
    let (a, b) = ("a".repeat(64), "b".repeat(64));
    c.ok(MOUNT, &mount_body("dv", &a));
    c.ok(MOUNT, &mount_body("dv", &b));
    std::fs::write(mountpoint(&p, "dv").join("f"), b"shared").unwrap();
    assert_eq!(
        refs(&p, "dv"),
        json!([format!("plugin:{a}"), format!("plugin:{b}")])
    );
    c.ok(UNMOUNT, &mount_body("dv", &a));
    assert!(mounted(&p, "dv"), "unmounted while container b uses it");
    assert_eq!(refs(&p, "dv"), json!([format!("plugin:{b}")]));
    assert_eq!(
        std::fs::read(mountpoint(&p, "dv").join("f")).unwrap(),
        b"shared"
    );
    // An ID fvol never saw: harmless.
    c.ok(UNMOUNT, &mount_body("dv", &"c".repeat(64)));
    assert!(mounted(&p, "dv"));
    c.ok(UNMOUNT, &mount_body("dv", &b));
    assert!(!mounted(&p, "dv"));
    assert_eq!(c.ok(PATH, r#"{"Name":"dv"}"#), json!({"Mountpoint": ""}));
    // Mount and Unmount need an ID.
    let missing = c.err(MOUNT, r#"{"Name":"dv"}"#, 400);
    assert!(missing.contains("no mount ID"), "{missing}");
    assert!(!mounted(&p, "dv"));
}

#[test]
fn cli_and_plugin_references_share_one_set() {
    if !fuse_or_skip("cli_and_plugin_references_share_one_set") {
        return;
    }
    let p = start();
    let (c, d) = (&p.client, &p.daemon);
    c.ok(CREATE, r#"{"Name":"both"}"#);
    d.mount("both");
    let id = "d".repeat(64);
    c.ok(MOUNT, &mount_body("both", &id));
    assert_eq!(refs(&p, "both"), json!(["cli", format!("plugin:{id}")]));
    // Neither side may remove it while the other holds it.
    let out = d.cli(["rm", "both"]);
    assert!(!out.status.success());
    assert!(
        stderr_of(&out).contains(&format!("plugin:{id}")),
        "{}",
        stderr_of(&out)
    );
    let err = c.err(REMOVE, r#"{"Name":"both"}"#, 409);
    assert!(err.contains("in use by cli"), "{err}");
    c.ok(UNMOUNT, &mount_body("both", &id));
    assert!(mounted(&p, "both"), "the CLI reference still holds it");
    d.cli_ok(["unmount", "both"]);
    assert!(!mounted(&p, "both"));
    c.ok(REMOVE, r#"{"Name":"both"}"#);
    assert!(d.cli_ok(["ls", "-q"]).is_empty());
}

#[test]
fn mount_ids_survive_a_restart_and_mount_before_the_plugin_answers() {
    if !fuse_or_skip("mount_ids_survive_a_restart_and_mount_before_the_plugin_answers") {
        return;
    }
    let root = TestRoot::new();
    let mut p = start_at(&root);
    p.client
        .ok(CREATE, r#"{"Name":"kept","Opts":{"size":"16M"}}"#);
    p.client.ok(CREATE, r#"{"Name":"idle"}"#);
    let (a, b) = ("a".repeat(64), "b".repeat(64));
    p.client.ok(MOUNT, &mount_body("kept", &a));
    p.client.ok(MOUNT, &mount_body("kept", &b));
    let mp = mountpoint(&p, "kept");
    std::fs::write(mp.join("f"), b"before").unwrap();

    let exit = p.daemon.stop();
    assert!(exit.success(), "{exit}\n{}", root.log());
    assert!(
        !socket_of(&root).exists(),
        "plugin socket left after a clean stop"
    );
    assert!(!is_mountpoint(&mp));

    let p = start_at(&root);
    assert!(mounted(&p, "kept"));
    assert!(!mounted(&p, "idle"));
    assert_eq!(
        refs(&p, "kept"),
        json!([format!("plugin:{a}"), format!("plugin:{b}")])
    );
    assert_eq!(std::fs::read(mp.join("f")).unwrap(), b"before");
    // Recovery ran before the plugin socket was bound.
    let log = root.log();
    let second_start = log.rfind("recovering volumes").unwrap();
    let mounted_again = log[second_start..].find("Mounting").unwrap();
    let serving = log[second_start..]
        .find("serving the Docker volume plugin")
        .unwrap();
    assert!(mounted_again < serving, "{log}");

    p.client.ok(UNMOUNT, &mount_body("kept", &a));
    assert!(mounted(&p, "kept"));
    p.client.ok(UNMOUNT, &mount_body("kept", &b));
    assert!(!mounted(&p, "kept"));
}

#[test]
fn spec_file_registers_the_socket_and_goes_at_stop() {
    if !fuse_or_skip("spec_file_registers_the_socket_and_goes_at_stop") {
        return;
    }
    let root = TestRoot::new();
    let spec = root.scratch_dir("etc").join("fvol.spec");
    let spec_arg = format!("--plugin-spec={}", spec.display());
    // Without --plugin-socket, the socket is ROOT/plugin.sock.
    let mut d = TestDaemon::start_with_args(&root, [&spec_arg]);
    let socket = root.root().join("plugin.sock");
    assert_eq!(
        std::fs::read_to_string(&spec).unwrap(),
        format!("unix://{}\n", socket.display())
    );
    let c = PluginClient::new(&socket);
    assert_eq!(c.ok(ACTIVATE, ""), json!({"Implements": ["VolumeDriver"]}));
    assert!(d.log().contains(&format!(
        "serving the Docker volume plugin \"fvol\" on {}, registered in {}",
        socket.display(),
        spec.display()
    )));
    assert!(d.stop().success());
    assert!(!spec.exists(), "spec file left after a clean stop");
    assert!(!socket.exists(), "socket left after a clean stop");

    // With both flags: the spec points at the socket given.
    let other = root.scratch().join("other.sock");
    let mut d = TestDaemon::start_with_args(
        &root,
        [
            spec_arg.as_str(),
            "--plugin-socket",
            other.to_str().unwrap(),
        ],
    );
    assert_eq!(
        std::fs::read_to_string(&spec).unwrap(),
        format!("unix://{}\n", other.display())
    );
    PluginClient::new(&other).ok(CAPABILITIES, "{}");
    assert!(d.stop().success());
    assert!(!spec.exists() && !other.exists());
}

#[test]
fn two_daemons_cannot_share_a_plugin_socket() {
    if !fuse_or_skip("two_daemons_cannot_share_a_plugin_socket") {
        return;
    }
    let first = start();
    let socket = &first.client.socket;
    let second = TestRoot::new();
    let out = second.run_daemon_to_exit_with_args([Path::new("--plugin-socket"), socket]);
    assert!(!out.status.success());
    let err = stderr_of(&out);
    assert!(
        err.contains(&socket.display().to_string()) && err.contains("--no-plugin"),
        "{err}"
    );
    // The first one still serves it; and a second daemon without the plugin runs beside it.
    first.client.ok(ACTIVATE, "");
    let beside = TestDaemon::start_at(&second);
    beside.cli_ok(["ls"]);
    first.client.ok(LIST, "{}");
}

#[test]
fn any_reference_can_be_released_by_name_or_all_at_once() {
    if !fuse_or_skip("any_reference_can_be_released_by_name_or_all_at_once") {
        return;
    }
    let root = TestRoot::new();
    let p = start_at(&root);
    let (c, d) = (&p.client, &p.daemon);
    c.ok(CREATE, r#"{"Name":"held"}"#);
    let before = unix_now();
    let (a, b) = ("a".repeat(64), "b".repeat(64));
    c.ok(MOUNT, &mount_body("held", &a));
    c.ok(MOUNT, &mount_body("held", &b));
    let target = root.scratch().join("target");
    std::fs::create_dir(&target).unwrap();
    d.cli_ok([
        "mount".as_ref(),
        "held".as_ref(),
        "--target".as_ref(),
        target.as_os_str(),
    ]);

    // inspect says when each reference was taken.
    let references = d.inspect("held")["Status"]["References"].clone();
    let ids: Vec<&str> = references
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["Id"].as_str().unwrap())
        .collect();
    let cli_target = format!("cli:{}", target.display());
    assert_eq!(
        ids,
        [
            cli_target.as_str(),
            &format!("plugin:{a}"),
            &format!("plugin:{b}")
        ]
    );
    for r in references.as_array().unwrap() {
        let since = parse_rfc3339_utc(r["Since"].as_str().unwrap()).unwrap();
        assert!(since >= before && since <= unix_now(), "{r}");
    }

    // A plain unmount of a volume held by others is an error naming its references, and
    // changes nothing (it used to exit 0 and leave the volume mounted).
    let out = d.cli(["unmount", "held"]);
    assert!(!out.status.success());
    let err = stderr_of(&out);
    assert!(
        err.contains("no reference cli") && err.contains(&format!("plugin:{a}")),
        "{err}"
    );
    // So is an unknown or malformed --ref.
    let out = d.cli(["unmount", "held", "--ref", "plugin:nope"]);
    assert!(!out.status.success());
    assert!(stderr_of(&out).contains("no reference plugin:nope"));
    let out = d.cli(["unmount", "held", "--ref", "container:x"]);
    assert!(!out.status.success());
    assert!(
        stderr_of(&out)
            .contains("valid forms are cli, cli:/abs/target, plugin:ID and csi:/abs/target"),
        "{}",
        stderr_of(&out)
    );
    let out = d.cli(["unmount", "held", "--ref", "cli", "--all"]);
    assert!(!out.status.success());
    assert_eq!(
        refs(&p, "held"),
        json!([cli_target, format!("plugin:{a}"), format!("plugin:{b}")])
    );

    // --ref drops exactly that reference.
    d.cli_ok(["unmount", "held", "--ref", &format!("plugin:{a}")]);
    assert_eq!(refs(&p, "held"), json!([cli_target, format!("plugin:{b}")]));
    assert!(mounted(&p, "held"));

    // --all drops the rest, detaches the bind mount and unmounts, even while a process
    // keeps a file open in the volume (the mount is then detached lazily).
    let busy = std::fs::File::create(mountpoint(&p, "held").join("open")).unwrap();
    let out = d.cli_ok(["unmount", "held", "--all"]);
    assert_eq!(out, format!("released {cli_target}\nreleased plugin:{b}\n"));
    assert_eq!(refs(&p, "held"), json!([]));
    assert!(!mounted(&p, "held"));
    assert!(!is_mountpoint(&target), "the --target bind is left");
    drop(busy);
    c.ok(REMOVE, r#"{"Name":"held"}"#);
}

/// A "container": a process in a mount namespace of its own (a copy of the daemon's, so it
/// also holds copies of every other volume's mount) where the volume is bind-mounted at a path
/// of its own, as a container runtime does, until killed.
struct Holder(std::process::Child);

impl Holder {
    fn start(mountpoint: &Path, container_path: &Path) -> Holder {
        std::fs::create_dir_all(container_path).unwrap();
        let mut child = std::process::Command::new("unshare")
            .args(["--mount", "--propagation", "slave", "sh", "-c"])
            .arg(r#"mount --bind "$0" "$1" && cd "$1" && echo bound && exec sleep 600"#)
            .arg(mountpoint)
            .arg(container_path)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // Only once the bind is made does the volume show as used.
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(child.stdout.take().unwrap()),
            &mut line,
        )
        .unwrap();
        let holder = Holder(child);
        assert_eq!(line, "bound\n", "the holder's bind mount failed");
        holder
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn plugin_references_whose_holder_is_gone_are_released() {
    if !fuse_or_skip("plugin_references_whose_holder_is_gone_are_released") {
        return;
    }
    let root = TestRoot::new();
    let socket = socket_of(&root);
    let daemon = TestDaemon::start_with_args(
        &root,
        [
            "--plugin-socket".as_ref(),
            socket.as_os_str(),
            "--stale-ref-grace=2".as_ref(),
        ],
    );
    let p = Plugin {
        daemon,
        client: PluginClient::new(socket),
    };
    let (c, d) = (&p.client, &p.daemon);
    for name in ["live", "orphan", "cli-held"] {
        c.ok(CREATE, &json!({"Name": name}).to_string());
        c.ok(MOUNT, &mount_body(name, &format!("{name}-id")));
    }
    d.mount("cli-held");
    let live = Holder::start(
        &mountpoint(&p, "live"),
        &root.scratch().join("container-data"),
    );
    let gone = |name: &str| refs(&p, name) == json!([]);
    let released = fuse_tests::docker::wait_until(std::time::Duration::from_secs(30), || {
        gone("orphan") && refs(&p, "cli-held") == json!(["cli"])
    });
    assert!(
        released,
        "orphaned references not released: orphan {} cli-held {}\n{}",
        refs(&p, "orphan"),
        refs(&p, "cli-held"),
        d.log()
    );
    assert!(!mounted(&p, "orphan"), "released but still mounted");
    c.ok(REMOVE, r#"{"Name":"orphan"}"#);
    // Several more checks (one a second with this grace) see the holder of "live".
    std::thread::sleep(std::time::Duration::from_secs(5));
    assert_eq!(
        refs(&p, "live"),
        json!(["plugin:live-id"]),
        "a reference whose container still holds the volume was released"
    );
    assert!(mounted(&p, "live"));
    // The container goes: its reference follows.
    drop(live);
    assert!(
        fuse_tests::docker::wait_until(std::time::Duration::from_secs(30), || gone("live")),
        "live's reference kept after its holder went"
    );
    assert!(!mounted(&p, "live"));
    // The CLI reference is never released by itself.
    assert!(mounted(&p, "cli-held"));
}

/// A Ceph cluster that does not answer is a backend outage: both sockets answer 503 (the CLI's
/// API, and the plugin with the same status), not a mistake in the request (400). The monitor
/// address is a loopback listener that accepts connections and never says a word; librados
/// gives up after the driver's connect timeout (30 s).
#[test]
fn a_cluster_that_does_not_answer_is_503_on_both_sockets() {
    if !fuse_or_skip("a_cluster_that_does_not_answer_is_503_on_both_sockets") {
        return;
    }
    let (port, _) = fuse_tests::ceph::silent_monitor();
    let p = start();
    let conf = fuse_tests::ceph::silent_conf(&p.daemon.scratch_dir("silent-ceph"), port);
    let options = json!({"driver": "rbd", "conf": conf, "size": "64M"});
    let body = json!({"Name": "db", "Opts": options}).to_string();
    let message = p.client.err(CREATE, &body, 503);
    assert!(message.contains("timed out"), "{message}");

    let api = PluginClient::new(p.daemon.root().join("fvol.sock"));
    let options = json!({"conf": conf, "size": "64M"});
    let body = json!({"name": "db2", "driver": "rbd", "options": options}).to_string();
    let response = api.post("/v1/create", &body);
    assert_eq!(response.status, 503, "{response:?}");
    assert!(response.body.contains("timed out"), "{response:?}");
    // Nothing was created.
    assert_eq!(p.daemon.cli_ok(["ls", "-q"]), "");
}
