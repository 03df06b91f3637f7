//! What operators see (#17): the daemon's Prometheus metrics on its API socket and on TCP,
//! checked with `promtool check metrics` and against `fvol inspect` as operations happen on
//! real FUSE mounts of real daemons, for every driver (rbd on a private Ceph cluster).
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use fuse_tests::ceph::{TestCluster, free_port};
use fuse_tests::daemon::{TestDaemon, TestRoot, fuse_or_skip, stderr_of};

const MIB: u64 = 1 << 20;

/// One sample: its name, its labels and its value.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// The samples of a Prometheus text exposition (label values without escapes, as volume
/// names have none).
fn parse(text: &str) -> Vec<Sample> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|line| {
            let (series, value) = line.rsplit_once(' ').expect(line);
            let (name, labels) = match series.split_once('{') {
                Some((name, rest)) => (name, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            let labels = labels
                .split(',')
                .filter(|l| !l.is_empty())
                .map(|l| {
                    let (k, v) = l.split_once('=').expect(l);
                    (k.to_string(), v.trim_matches('"').to_string())
                })
                .collect();
            Sample {
                name: name.to_string(),
                labels,
                value: value.parse().unwrap_or_else(|_| panic!("value of {line}")),
            }
        })
        .collect()
}

/// The metrics as read at one moment.
struct Metrics {
    text: String,
    samples: Vec<Sample>,
}

impl Metrics {
    fn new(text: String) -> Metrics {
        let samples = parse(&text);
        Metrics { text, samples }
    }

    /// The sum of the samples named `name` that carry all of `labels`; None if there is none.
    fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let matching: Vec<f64> = self
            .samples
            .iter()
            .filter(|s| s.name == name)
            .filter(|s| {
                labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|s| s.value)
            .collect();
        (!matching.is_empty()).then(|| matching.iter().sum())
    }

    /// Like `get`, 0 when absent (a counter not yet started).
    fn count(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.get(name, labels).unwrap_or(0.0)
    }
}

/// The body of an HTTP/1.0 GET of `path` on `stream`, which must answer 200.
fn http_get(mut stream: impl Read + Write, path: &str) -> String {
    write!(stream, "GET {path} HTTP/1.0\r\nHost: fvol\r\n\r\n").unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    let (head, body) = answer.split_once("\r\n\r\n").expect("an HTTP answer");
    assert!(
        head.starts_with("HTTP/1.0 200") || head.starts_with("HTTP/1.1 200"),
        "{head}\n{body}"
    );
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: text/plain; version=0.0.4"),
        "{head}"
    );
    body.to_string()
}

/// `GET /metrics` on the daemon's API socket.
fn scrape(d: &TestDaemon) -> Metrics {
    let stream = UnixStream::connect(d.root().join("fvol.sock")).unwrap();
    Metrics::new(http_get(stream, "/metrics"))
}

/// `promtool check metrics` on the exposition: no errors, no lint problems.
fn promtool_check(text: &str) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian package prometheus; tools/install-deps.sh installs it)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics: {}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn dd(args: &[&str]) -> std::process::Output {
    Command::new("dd").args(args).output().expect("dd")
}

/// Waits (generously) until `cond` holds for a fresh scrape; returns that scrape.
fn scrape_until(d: &TestDaemon, what: &str, cond: impl Fn(&Metrics) -> bool) -> Metrics {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let m = scrape(d);
        if cond(&m) {
            return m;
        }
        assert!(Instant::now() < deadline, "{what} never held:\n{}", m.text);
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The driver-independent checks on volume `name` (a byte limit of `size`), created on `d` with
/// `driver` and not yet mounted.
fn metrics_follow_operations(d: &TestDaemon, name: &str, driver: &str, image_size: u64) {
    // The limit inspect shows (an rbd image keeps some of its size for its own metadata).
    let size = d.inspect(name)["Status"]["SizeLimit"].as_u64().unwrap();
    assert!(size <= image_size);
    let vol = [("volume", name), ("driver", driver)];
    let before = scrape(d);
    promtool_check(&before.text);
    assert_eq!(
        before.get("fvol_volume_mounted", &vol),
        Some(0.0),
        "{}",
        before.text
    );
    assert_eq!(
        before.get("fvol_volume_stats_capacity_bytes", &vol),
        Some(size as f64)
    );
    assert!(before.count("fvol_catalog_commit_duration_seconds_count", &[]) >= 1.0);
    let info = before.get("fvol_build_info", &[]).expect("build info");
    assert_eq!(info, 1.0);

    let mp = d.mount(name);
    let file = mp.join("f");
    let out = dd(&[
        "if=/dev/urandom",
        &format!("of={}", file.display()),
        "bs=64k",
        "count=16",
        "conv=fsync",
    ]);
    assert!(out.status.success(), "{}", stderr_of(&out));
    // O_DIRECT: the reads reach the handler whatever the page cache holds.
    let out = dd(&[
        &format!("if={}", file.display()),
        "of=/dev/null",
        "bs=64k",
        "iflag=direct",
    ]);
    assert!(out.status.success(), "{}", stderr_of(&out));
    assert!(std::fs::metadata(mp.join("missing")).is_err());

    let m = scrape(d);
    promtool_check(&m.text);
    assert_eq!(m.get("fvol_volume_mounted", &vol), Some(1.0));
    assert!(m.count("fvol_mounted_volumes", &[]) >= 1.0);
    let written = m.count("fvol_volume_written_bytes_total", &vol);
    let read = m.count("fvol_volume_read_bytes_total", &vol);
    assert!(written >= MIB as f64, "written {written}\n{}", m.text);
    assert!(read >= MIB as f64, "read {read}\n{}", m.text);
    let writes = m.count(
        "fvol_volume_operations_total",
        &[("volume", name), ("op", "write")],
    );
    assert!(writes >= 1.0, "{}", m.text);
    let histogram_count = m.count(
        "fvol_volume_operation_duration_seconds_count",
        &[("volume", name), ("op", "write")],
    );
    assert_eq!(writes, histogram_count);
    let inf = m.count(
        "fvol_volume_operation_duration_seconds_bucket",
        &[("volume", name), ("op", "write"), ("le", "+Inf")],
    );
    assert_eq!(writes, inf);
    assert!(
        m.count(
            "fvol_volume_operations_total",
            &[("volume", name), ("op", "create")]
        ) >= 1.0
    );
    assert!(
        m.count(
            "fvol_volume_errors_total",
            &[("volume", name), ("errno", "ENOENT")]
        ) >= 1.0
    );
    assert_eq!(
        m.get(
            "fvol_volume_quota_refusals_total",
            &[("volume", name), ("errno", "ENOSPC")]
        ),
        Some(0.0)
    );
    assert_eq!(
        m.get("fvol_fuse_requests_in_flight", &vol),
        Some(0.0),
        "{}",
        m.text
    );
    // Nothing is stuck: the kernel's queue for the connection drains.
    scrape_until(d, "no request waiting", |m| {
        m.get("fvol_fuse_requests_waiting", &vol) == Some(0.0)
    });

    // The usage the metrics show is what inspect shows.
    let status = &d.inspect(name)["Status"];
    let m = scrape(d);
    let used = status["UsedBytes"].as_u64().unwrap();
    assert_eq!(
        m.get("fvol_volume_stats_used_bytes", &vol),
        Some(used as f64),
        "{status}"
    );
    let inodes = status["UsedInodes"].as_u64().unwrap();
    assert_eq!(
        m.get("fvol_volume_stats_inodes_used", &vol),
        Some(inodes as f64)
    );
    let (capacity, available) = (
        m.get("fvol_volume_stats_capacity_bytes", &vol).unwrap(),
        m.get("fvol_volume_stats_available_bytes", &vol).unwrap(),
    );
    assert_eq!(capacity, size as f64);
    assert!(available <= capacity - MIB as f64, "{available}");

    // Filling the volume: the refusals are counted.
    let out = dd(&[
        "if=/dev/zero",
        &format!("of={}", mp.join("fill").display()),
        "bs=64k",
        &format!("count={}", size / (64 << 10) + 1),
    ]);
    assert!(!out.status.success(), "more than {size} bytes fit");
    let m = scrape(d);
    promtool_check(&m.text);
    let refusals = m.count(
        "fvol_volume_quota_refusals_total",
        &[("volume", name), ("errno", "ENOSPC")],
    );
    assert!(refusals >= 1.0, "{}", m.text);
    assert_eq!(
        refusals,
        m.count(
            "fvol_volume_errors_total",
            &[("volume", name), ("errno", "ENOSPC")]
        )
    );
    assert_eq!(
        m.get("fvol_volume_stats_available_bytes", &vol),
        Some(0.0),
        "{}",
        m.text
    );

    // One quota-full event for the episode, whatever the number of refusals.
    let out = dd(&[
        "if=/dev/zero",
        &format!("of={}", mp.join("more").display()),
        "bs=64k",
        "count=4",
    ]);
    assert!(!out.status.success());
    let full = wait_for_events(
        d,
        &[
            "--filter",
            "type=quota-full",
            "--filter",
            &format!("volume={name}"),
        ],
        1,
    );
    assert_eq!(full[0]["Driver"], driver);

    d.cli_ok(["unmount", name]);
    let m = scrape(d);
    assert_eq!(m.get("fvol_volume_mounted", &vol), Some(0.0));
    assert_eq!(
        m.get("fvol_volume_operations_total", &vol),
        None,
        "counters go with the mount"
    );
}

fn start_with_metrics(root: &TestRoot, port: u16) -> TestDaemon {
    TestDaemon::start_with_args(
        root,
        [
            "--no-plugin",
            "--metrics-listen",
            &format!("127.0.0.1:{port}"),
        ],
    )
}

#[test]
fn metrics_local() {
    if !fuse_or_skip("metrics_local") {
        return;
    }
    let d = TestDaemon::start();
    d.cli_ok(["create", "-o", "size=4M", "data"]);
    metrics_follow_operations(&d, "data", "local", 4 * MIB);
}

#[test]
fn metrics_tmpfs() {
    if !fuse_or_skip("metrics_tmpfs") {
        return;
    }
    let d = TestDaemon::start();
    d.cli_ok(["create", "-d", "tmpfs", "-o", "size=4M", "scratch"]);
    metrics_follow_operations(&d, "scratch", "tmpfs", 4 * MIB);
}

#[test]
fn metrics_rbd() {
    if !fuse_or_skip("metrics_rbd") {
        return;
    }
    let ceph = TestCluster::start();
    let d = TestDaemon::start();
    d.cli_ok([
        "create",
        "-d",
        "rbd",
        "-o",
        &ceph.conf_opt(),
        "-o",
        "size=16M",
        "db",
    ]);
    metrics_follow_operations(&d, "db", "rbd", 16 * MIB);
    d.cli_ok(["rm", "db"]);
}

#[test]
fn metrics_on_tcp_only_when_asked() {
    if !fuse_or_skip("metrics_on_tcp_only_when_asked") {
        return;
    }
    let root = TestRoot::new();
    let mut d = TestDaemon::start(); // no --metrics-listen
    assert_eq!(
        tcp_sockets_of(d.pid().unwrap()),
        0,
        "a daemon without --metrics-listen listens on TCP"
    );
    d.stop();
    let port = free_port();
    let d = start_with_metrics(&root, port);
    d.cli_ok(["create", "-o", "size=1M", "vv"]);
    let stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    let m = Metrics::new(http_get(stream, "/metrics"));
    promtool_check(&m.text);
    assert_eq!(
        m.get("fvol_volume_stats_capacity_bytes", &[("volume", "vv")]),
        Some(MIB as f64)
    );
    // Only the address given: one TCP socket, and only /metrics on it.
    assert_eq!(tcp_sockets_of(d.pid().unwrap()), 1);
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        stream,
        "POST /v1/volumes/create HTTP/1.0\r\nHost: x\r\nContent-Length: 2\r\n\r\n{{}}"
    )
    .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    assert!(
        answer.contains(" 404 ") && answer.contains("only GET /metrics"),
        "{answer}"
    );
    assert!(d.cli_ok(["ls", "-q"]).lines().eq(["vv"]));
}

#[test]
fn bad_metrics_addresses_are_refused() {
    let root = TestRoot::new();
    for bad in ["localhost:9470", "9470", "1.2.3:80"] {
        let out = root.run_daemon_to_exit_with_args(["--no-plugin", "--metrics-listen", bad]);
        let err = stderr_of(&out);
        assert!(!out.status.success());
        assert!(
            err.contains("127.0.0.1:9470") && err.contains(bad),
            "{bad}: {err}"
        );
    }
    // A port in use stops the daemon, naming the address.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = taken.local_addr().unwrap().to_string();
    if !fuse_or_skip("bad_metrics_addresses_are_refused") {
        return;
    }
    let out = root.run_daemon_to_exit_with_args(["--no-plugin", "--metrics-listen", &address]);
    let err = stderr_of(&out);
    assert!(!out.status.success());
    assert!(
        err.contains(&format!("listening for metrics on {address}")),
        "{err}"
    );
}

/// TCP sockets (listening or not) the process holds: its socket inodes found in
/// /proc/net/tcp and tcp6.
fn tcp_sockets_of(pid: u32) -> usize {
    let inodes: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter_map(|l| {
            let l = l.to_string_lossy().into_owned();
            Some(
                l.strip_prefix("socket:[")?
                    .trim_end_matches(']')
                    .to_string(),
            )
        })
        .collect();
    ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter(|p| Path::new(p).exists())
        .flat_map(|p| {
            std::fs::read_to_string(p)
                .unwrap()
                .lines()
                .skip(1)
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .filter(|line| {
            line.split_whitespace()
                .nth(9)
                .is_some_and(|inode| inodes.iter().any(|i| i == inode))
        })
        .count()
}

fn repo() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// `fvol ARGS` without a daemon.
fn fvol(args: &[&str]) -> std::process::Output {
    Command::new(fuse_tests::daemon::fvol_bin())
        .args(args)
        .output()
        .expect("fvol")
}

#[test]
fn ls_sizes_inspect_format_and_json_logs() {
    if !fuse_or_skip("ls_sizes_inspect_format_and_json_logs") {
        return;
    }
    let root = TestRoot::new();
    let d = TestDaemon::start_with_args(&root, ["--no-plugin", "--log-format", "json"]);
    d.cli_ok(["create", "-o", "size=64M", "data"]);
    d.cli_ok(["create", "-d", "tmpfs", "scratch"]);
    let mp = d.mount("data");
    std::fs::write(mp.join("f"), vec![7u8; 3 << 20]).unwrap();

    // ls: SIZE and USED in human units; bytes in JSON.
    let table = d.cli_ok(["ls"]);
    let header: Vec<&str> = table
        .lines()
        .next()
        .unwrap()
        .split("   ")
        .map(str::trim)
        .collect();
    assert_eq!(
        header,
        ["DRIVER", "VOLUME NAME", "SIZE", "USED", "MOUNTED"],
        "{table}"
    );
    let row = table.lines().find(|l| l.contains("data")).unwrap();
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(cells[..3], ["local", "data", "64MiB"], "{table}");
    assert!(
        cells[3].ends_with("MiB") && cells[3].starts_with('3'),
        "{table}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&d.cli_ok(["ls", "--format", "json"])).unwrap();
    let used = json
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["Name"] == "data")
        .unwrap()["Status"]["UsedBytes"]
        .as_u64()
        .unwrap();
    assert!(used >= 3 << 20, "{json}");

    // inspect --format: templates and field selectors, numbers as integers.
    let used_text = d.cli_ok(["inspect", "--format", "{{.Status.UsedBytes}}", "data"]);
    assert_eq!(used_text, format!("{used}\n"));
    assert_eq!(
        d.cli_ok(["inspect", "-f", ".Status.SizeLimit", "data"]),
        "67108864\n"
    );
    let two = d.cli_ok([
        "inspect",
        "-f",
        "{{.Name}} {{.Driver}} {{json .Status.Mounted}}",
        "data",
        "scratch",
    ]);
    assert_eq!(two, "data local true\nscratch tmpfs false\n");
    let out = d.cli(["inspect", "-f", "{{.Status.Used}}", "data"]);
    let err = stderr_of(&out);
    assert!(!out.status.success());
    assert!(
        err.contains("no field \"Used\" in .Status; valid fields are:")
            && err.contains("UsedBytes"),
        "{err}"
    );
    let out = d.cli(["inspect", "-f", "{{range .Labels}}", "data"]);
    assert!(
        stderr_of(&out).contains("{{.Field}}"),
        "{}",
        stderr_of(&out)
    );

    // --log-format json: every line the daemon logged is one JSON object.
    d.cli_ok(["unmount", "data"]);
    let log = root.log();
    let lines: Vec<&str> = log.lines().collect();
    assert!(lines.len() >= 3, "{log}");
    for line in lines {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(
            v["time"].is_string() && v["level"].is_string() && v["message"].is_string(),
            "{line}"
        );
    }
    assert!(log.contains("listening on"), "{log}");
    let out = root.run_daemon_to_exit_with_args(["--no-plugin", "--log-format", "yaml"]);
    let err = stderr_of(&out);
    assert!(err.contains("[possible values: text, json]"), "{err}");
}

#[test]
fn version_completions_man_pages_and_install() {
    let out = fvol(&["version"]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success());
    assert!(
        text.starts_with("fvol 0.") && text.contains("(commit "),
        "{text}"
    );
    assert!(
        text.contains("FUSE passthrough ")
            && text.contains("resend ")
            && text.contains("io_uring "),
        "{text}"
    );

    for shell in ["bash", "zsh", "fish"] {
        let out = fvol(&["completions", shell]);
        assert!(out.status.success(), "{shell}");
        let script = String::from_utf8_lossy(&out.stdout).into_owned();
        for word in ["inspect", "metrics-listen", "completions"] {
            assert!(script.contains(word), "{shell}: {word}");
        }
    }
    // The bash script is valid bash and completes subcommands.
    let bash = String::from_utf8(fvol(&["completions", "bash"]).stdout).unwrap();
    let out = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "{bash}\nCOMP_WORDS=(fvol ins); COMP_CWORD=1; _fvol fvol ins fvol; echo \"${{COMPREPLY[@]}}\""
        ))
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "inspect",
        "{}",
        stderr_of(&out)
    );
    let out = fvol(&["completions", "tcsh"]);
    assert!(stderr_of(&out).contains("[possible values: bash, elvish, fish, powershell, zsh]"));

    let dir = tempfile::tempdir().unwrap();
    let out = fvol(&["manpages", dir.path().to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr_of(&out));
    for page in ["fvol.1", "fvol-daemon.1", "fvol-inspect.1", "fvol-ls.1"] {
        let text = std::fs::read_to_string(dir.path().join(page)).unwrap();
        assert!(text.contains(".TH"), "{page}");
    }
    let daemon_page = std::fs::read_to_string(dir.path().join("fvol-daemon.1")).unwrap();
    assert!(daemon_page.contains("metrics\\-listen"), "{daemon_page}");

    // tools/install into a staging directory, and back out again.
    let stage = tempfile::tempdir().unwrap();
    let install = |extra: &[&str]| {
        let out = Command::new(repo().join("tools/install"))
            .args(["--bin", fuse_tests::daemon::fvol_bin().to_str().unwrap()])
            .args(["--destdir", stage.path().to_str().unwrap()])
            .args(extra)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", stderr_of(&out));
    };
    install(&[]);
    let s = stage.path();
    for path in [
        "usr/local/bin/fvol",
        "usr/local/share/man/man1/fvol.1",
        "usr/local/share/man/man1/fvol-daemon.1",
        "usr/local/share/bash-completion/completions/fvol",
        "usr/local/share/zsh/vendor-completions/_fvol",
        "usr/local/share/fish/vendor_completions.d/fvol.fish",
        "etc/systemd/system/fvol.service",
    ] {
        assert!(s.join(path).is_file(), "{path} not installed");
    }
    let unit = std::fs::read_to_string(s.join("etc/systemd/system/fvol.service")).unwrap();
    // tools/fvol.service: ready when recovered, and a stop signals the daemon only (the
    // keeper holding the volumes' connections stays).
    for line in [
        "ExecStart=/usr/local/bin/fvol --root /var/lib/fvol daemon",
        "Type=notify",
        "KillMode=process",
        "Before=docker.service",
    ] {
        assert!(unit.contains(line), "{line} not in the unit:\n{unit}");
    }
    install(&["--uninstall"]);
    let left: Vec<_> = walk(s);
    assert!(left.is_empty(), "left behind: {left:?}");
}

/// The files under `dir`.
fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else {
            files.push(path);
        }
    }
    files
}

/// The events `fvol events --since 1h --until now ARGS` prints (JSON), waiting (generously)
/// until there are `n`; then checks that no more come within another look.
fn wait_for_events(d: &TestDaemon, args: &[&str], n: usize) -> Vec<serde_json::Value> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let now = format!("{}", fuse_tests::daemon::unix_now() + 1);
        let mut all = vec![
            "events", "--since", "1h", "--until", &now, "--format", "json",
        ];
        all.extend_from_slice(args);
        let out = d.cli_ok(&all);
        let events: Vec<serde_json::Value> = out
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect();
        if events.len() >= n {
            assert_eq!(events.len(), n, "{out}");
            return events;
        }
        assert!(
            Instant::now() < deadline,
            "fewer than {n} events {args:?}:\n{out}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `fvol events --format json ARGS` running, its lines read by a thread.
struct EventStream {
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<serde_json::Value>,
}

impl EventStream {
    fn start(d: &TestDaemon, args: &[&str]) -> EventStream {
        let mut child = d
            .root
            .command(["events", "--format", "json"].iter().chain(args))
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                let event = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
                if tx.send(event).is_err() {
                    return;
                }
            }
        });
        EventStream { child, lines }
    }

    /// The next event, waiting generously for it.
    fn next(&self) -> serde_json::Value {
        self.lines
            .recv_timeout(Duration::from_secs(30))
            .expect("an event within 30 s")
    }
}

impl Drop for EventStream {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn events_follow_operations(driver: &str) {
    let root = TestRoot::new();
    let mut d = TestDaemon::start_at(&root);
    let name = format!("ev-{driver}");
    // --since: what happened before the stream was open shows too, so nothing is missed.
    let stream = EventStream::start(
        &d,
        &["--since", "1h", "--filter", &format!("volume={name}")],
    );
    // An event of another volume does not show.
    d.cli_ok(["create", "-d", driver, "-o", "size=1M", "other"]);
    d.cli_ok(["create", "-d", driver, "-o", "size=1M", &name]);
    let target = root.scratch_dir("target");
    d.cli_ok(["mount", &name, "--target", target.to_str().unwrap()]);
    let mp = d.mount(&name);
    for file in ["a", "b"] {
        let out = dd(&[
            "if=/dev/zero",
            &format!("of={}", mp.join(file).display()),
            "bs=64k",
            "count=32",
        ]);
        assert!(!out.status.success(), "2 MiB fit in 1 MiB");
    }
    let expect = |e: serde_json::Value, kind: &str, reference: Option<&str>| {
        assert_eq!(e["Type"], kind, "{e}");
        assert_eq!(e["Volume"], name.as_str(), "{e}");
        assert_eq!(e["Driver"], driver, "{e}");
        if let Some(r) = reference {
            assert_eq!(e["Attributes"]["reference"], r, "{e}");
        }
        assert!(e["TimeNano"].as_u64().unwrap() > 0);
    };
    let cli_target = format!("cli:{}", target.display());
    expect(stream.next(), "create", None);
    expect(stream.next(), "mount", Some(&cli_target));
    expect(stream.next(), "mount", Some("cli"));
    expect(stream.next(), "quota-full", None);
    // Space back: the episode ends, and the next refusal is a new one.
    std::fs::remove_file(mp.join("a")).unwrap();
    let full = || {
        wait_for_events(
            &d,
            &[
                "--filter",
                &format!("volume={name}"),
                "--filter",
                "type=quota-full",
            ],
            1,
        )
    };
    full();
    let out = dd(&[
        "if=/dev/zero",
        &format!("of={}", mp.join("c").display()),
        "bs=64k",
        "count=32",
    ]);
    assert!(!out.status.success());
    expect(stream.next(), "quota-full", None);
    // fvol update: a refused shrink changes nothing and makes no event; a resize makes one,
    // with the new option and the limit it enforces.
    let shrink = d.cli(["update", &name, "-o", "size=4K"]);
    assert!(!shrink.status.success(), "{shrink:?}");
    d.cli_ok(["update", &name, "-o", "size=2M"]);
    let resized = stream.next();
    expect(resized.clone(), "resize", None);
    assert_eq!(resized["Attributes"]["size"], "2M", "{resized}");
    assert_eq!(
        resized["Attributes"]["size_limit"],
        (2u64 << 20).to_string(),
        "{resized}"
    );
    // fvol snapshot create: one event naming the snapshot; ls and rm of snapshots make none.
    d.cli_ok(["snapshot", "create", &name, "s1"]);
    let taken = stream.next();
    expect(taken.clone(), "snapshot", None);
    assert_eq!(taken["Attributes"]["snapshot"], "s1", "{taken}");
    assert!(taken["Attributes"]["method"].is_string(), "{taken}");
    d.cli_ok(["snapshot", "ls", &name]);
    d.cli_ok(["unmount", &name]);
    expect(stream.next(), "unmount", Some("cli"));
    let resizes = wait_for_events(
        &d,
        &[
            "--filter",
            &format!("volume={name}"),
            "--filter",
            "type=resize",
            "--filter",
            "type=snapshot",
        ],
        2,
    );
    let kinds: Vec<&str> = resizes
        .iter()
        .map(|e| e["Type"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["resize", "snapshot"]);

    // After the fact: --since, and the type filter.
    let mounts = wait_for_events(
        &d,
        &["--filter", "type=mount", "--filter", "type=unmount"],
        3,
    );
    let kinds: Vec<&str> = mounts.iter().map(|e| e["Type"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["mount", "mount", "unmount"]);

    // A restart mounts the volume again for its reference: handler-restart.
    drop(stream);
    d.stop();
    let d = TestDaemon::start_at(&root);
    let restarted = wait_for_events(&d, &["--filter", "type=handler-restart"], 1);
    assert_eq!(restarted[0]["Volume"], name.as_str());
    // A planned restart (SIGTERM): the keeper holds the connection and the next daemon takes
    // it over instead of mounting anew; that is a handler restart too, counted and told.
    let mut d = d;
    d.terminate();
    let d = TestDaemon::start_at(&root);
    let restarted = wait_for_events(&d, &["--filter", "type=handler-restart"], 1);
    assert_eq!(restarted[0]["Volume"], name.as_str());
    let m = scrape(&d);
    assert_eq!(
        m.get("fvol_handler_restarts_total", &[]),
        Some(1.0),
        "{}",
        m.text
    );
    let stream = EventStream::start(
        &d,
        &["--since", "1h", "--filter", &format!("volume={name}")],
    );
    d.cli_ok(["unmount", &name, "--all"]);
    // The history comes first.
    expect(stream.next(), "handler-restart", None);
    expect(stream.next(), "unmount", Some(&cli_target));
    d.cli_ok(["snapshot", "rm", &name, "s1"]);
    d.cli_ok(["rm", &name]);
    expect(stream.next(), "remove", None);
}

#[test]
fn events_local() {
    if fuse_or_skip("events_local") {
        events_follow_operations("local");
    }
}

#[test]
fn events_tmpfs() {
    if fuse_or_skip("events_tmpfs") {
        events_follow_operations("tmpfs");
    }
}

#[test]
fn bad_event_requests_name_the_valid_choices() {
    let root = TestRoot::new();
    for (args, wanted) in [
        (
            &["--filter", "name=x"][..],
            "valid filters are volume=NAME and type=TYPE",
        ),
        (
            &["--filter", "type=full"][..],
            "valid types are: create, remove, mount, unmount",
        ),
        (&["--since", "yesterday"][..], "RFC 3339"),
        (
            &["--since", "100", "--until", "50"][..],
            "--since is after --until",
        ),
    ] {
        // Refused before the daemon is asked: none runs here.
        let out = root.cli(["events"].iter().chain(args));
        assert!(!out.status.success());
        assert!(
            stderr_of(&out).contains(wanted),
            "{args:?}: {}",
            stderr_of(&out)
        );
    }
}

/// A private tmux server (its own socket), killed on drop.
struct Tmux {
    socket: String,
}

impl Tmux {
    /// `name` tells the servers of this process's tests apart.
    fn new(name: &str) -> Tmux {
        Tmux {
            socket: format!("fvol-test-{}-{name}", std::process::id()),
        }
    }

    fn run(&self, args: &[&str]) -> std::process::Output {
        Command::new("tmux")
            .arg("-L")
            .arg(&self.socket)
            .args(args)
            .output()
            .expect("tmux (Debian package tmux; tools/install-deps.sh installs it)")
    }

    /// Starts `command` in the session "top", in a detached terminal of `columns` x 20.
    fn start(&self, columns: u16, command: &[&str]) {
        let _ = self.run(&["kill-session", "-t", "top"]);
        let columns = columns.to_string();
        let mut args = vec!["new-session", "-d", "-s", "top", "-x", &columns, "-y", "20"];
        args.extend_from_slice(command);
        // Killing the last session ends the server, asynchronously: a new session asked for
        // meanwhile reaches the dying server ("server exited unexpectedly"). Ask again.
        let mut out = self.run(&args);
        for _ in 0..50 {
            if out.status.success() || !stderr_of(&out).contains("server exited") {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
            out = self.run(&args);
        }
        assert!(out.status.success(), "{}", stderr_of(&out));
    }

    fn pane(&self) -> String {
        String::from_utf8_lossy(&self.run(&["capture-pane", "-p", "-t", "top"]).stdout).into_owned()
    }

    /// The pane once `cond` holds for it, waiting generously.
    fn pane_when(&self, what: &str, cond: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let pane = self.pane();
            if cond(&pane) {
                return pane;
            }
            assert!(Instant::now() < deadline, "{what} never showed:\n{pane}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.run(&["kill-server"]);
    }
}

/// The volume names in the order the view lists them.
fn listed(pane: &str) -> Vec<String> {
    pane.lines()
        .skip_while(|l| !l.starts_with("VOLUME"))
        .skip(1)
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .collect()
}

fn row_of<'a>(pane: &'a str, name: &str) -> Vec<&'a str> {
    pane.lines()
        .find(|l| l.starts_with(name))
        .map(|l| l.split_whitespace().collect())
        .unwrap_or_default()
}

#[test]
fn top_under_tmux() {
    if !fuse_or_skip("top_under_tmux") {
        return;
    }
    let d = TestDaemon::start();
    d.cli_ok(["create", "-d", "tmpfs", "-o", "size=8M", "zulu"]);
    d.cli_ok(["create", "-o", "size=64M", "alpha"]);
    let full = d.mount("zulu");
    std::fs::write(full.join("f"), vec![1u8; 6 << 20]).unwrap();
    let busy = d.mount("alpha");

    let tmux = Tmux::new("top");
    let command = format!(
        "{} --root {} top",
        fuse_tests::daemon::fvol_bin().display(),
        d.root().display()
    );
    tmux.start(140, &[&command]);

    // Sorted by usage at first: the fuller volume on top, with its bar and sizes.
    let pane = tmux.pane_when("both volumes", |p| listed(p).len() == 2);
    assert_eq!(listed(&pane), ["zulu", "alpha"], "{pane}");
    assert!(pane.contains("sorted by usage"), "{pane}");
    let zulu = row_of(&pane, "zulu");
    assert_eq!(zulu[1], "tmpfs", "{pane}");
    assert!(
        pane.lines().any(|l| l.starts_with("zulu")
            && l.contains("75%")
            && l.contains("6MiB")
            && l.contains("8MiB")),
        "{pane}"
    );

    // Writes on alpha show as operations, throughput and a p99 latency.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (stop, path) = (stop.clone(), busy.join("w"));
        std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                std::fs::write(&path, vec![2u8; 256 << 10]).unwrap();
            }
        })
    };
    tmux.run(&["send-keys", "-t", "top", "o"]);
    // Counted from the right: OPS/S, READ, WRITE and P99 are the last four columns.
    let pane = tmux.pane_when("alpha busy, sorted by ops", |p| {
        let alpha = row_of(p, "alpha");
        let n = alpha.len();
        p.contains("sorted by ops") && n > 4 && alpha[n - 4] != "0" && alpha[n - 1] != "-"
    });
    assert_eq!(listed(&pane), ["alpha", "zulu"], "{pane}");
    let alpha = row_of(&pane, "alpha");
    let write = alpha[alpha.len() - 2];
    assert!(
        write.ends_with("/s") && write != "0B/s",
        "write column: {pane}"
    );
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    writer.join().unwrap();

    tmux.run(&["send-keys", "-t", "top", "n"]);
    let pane = tmux.pane_when("sorted by name", |p| p.contains("sorted by name"));
    assert_eq!(listed(&pane), ["alpha", "zulu"], "{pane}");
    tmux.run(&["send-keys", "-t", "top", "u"]);
    let pane = tmux.pane_when("sorted by usage", |p| p.contains("sorted by usage"));
    assert_eq!(listed(&pane), ["zulu", "alpha"], "{pane}");

    // q leaves the view: the session (the command) ends.
    tmux.run(&["send-keys", "-t", "top", "q"]);
    let deadline = Instant::now() + Duration::from_secs(30);
    while tmux.run(&["has-session", "-t", "top"]).status.success() {
        assert!(
            Instant::now() < deadline,
            "fvol top did not end on q:\n{}",
            tmux.pane()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A private Prometheus server that scrapes `127.0.0.1:target` every second; killed on drop.
struct Prometheus {
    child: std::process::Child,
    port: u16,
}

impl Prometheus {
    fn start(root: &TestRoot, target: u16) -> Prometheus {
        let dir = root.scratch_dir("prometheus");
        let config = dir.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
                 scrape_configs:\n  - job_name: fvol\n    static_configs:\n\
                 \x20     - targets: ['127.0.0.1:{target}']\n"
            ),
        )
        .unwrap();
        let port = free_port();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus (Debian package prometheus; tools/install-deps.sh installs it)");
        Prometheus { child, port }
    }

    /// The samples of an instant query (its `data.result`), or None while Prometheus does not
    /// answer yet. A query Prometheus refuses (bad PromQL) fails the test.
    fn query(&self, promql: &str) -> Option<Vec<serde_json::Value>> {
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        let encoded: String = promql
            .bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect();
        write!(
            stream,
            "GET /api/v1/query?query={encoded} HTTP/1.0\r\nHost: prometheus\r\n\r\n"
        )
        .ok()?;
        let mut answer = String::new();
        stream.read_to_string(&mut answer).ok()?;
        let (head, body) = answer.split_once("\r\n\r\n")?;
        if head.contains(" 503 ") {
            return None; // still starting
        }
        let v: serde_json::Value =
            serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"));
        assert_eq!(v["status"], "success", "{promql}: {body}");
        Some(v["data"]["result"].as_array().unwrap().clone())
    }

    /// Waits (generously) for `promql` to give a result for which `cond` holds; returns it.
    fn query_until(
        &self,
        promql: &str,
        cond: impl Fn(&[serde_json::Value]) -> bool,
    ) -> Vec<serde_json::Value> {
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let result = self.query(promql);
            if let Some(r) = &result
                && cond(r)
            {
                return r.clone();
            }
            assert!(
                Instant::now() < deadline,
                "{promql}: never as expected: {result:?}"
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The example PromQL of docs/operations.md, as (comment, expression) pairs.
fn documented_promql() -> Vec<(String, String)> {
    let doc = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../docs/operations.md"
    ))
    .unwrap();
    let block = doc
        .split("```promql\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("a promql block in docs/operations.md");
    let mut examples = Vec::new();
    let mut comment = String::new();
    for line in block.lines() {
        match line.strip_prefix("# ") {
            Some(c) => comment = c.to_string(),
            None if !line.trim().is_empty() => {
                examples.push((std::mem::take(&mut comment), line.to_string()))
            }
            None => {}
        }
    }
    examples
}

fn has_volume(result: &[serde_json::Value], name: &str) -> bool {
    result.iter().any(|s| s["metric"]["volume"] == name)
}

/// The example queries of docs/operations.md, evaluated by a real Prometheus scraping a real
/// daemon: each one is valid PromQL over metric names and labels fvol exports, and each
/// answers what its comment says for a volume driven into that state.
#[test]
fn documented_promql_answers_on_real_metrics() {
    if !fuse_or_skip("documented_promql_answers_on_real_metrics") {
        return;
    }
    let examples = documented_promql();
    assert_eq!(examples.len(), 5, "{examples:?}");
    let root = TestRoot::new();
    let metrics_port = free_port();
    let d = start_with_metrics(&root, metrics_port);
    d.cli_ok(["create", "-o", "size=1M", "full"]);
    let mp = d.mount("full");
    let prometheus = Prometheus::start(&root, metrics_port);
    // Scraped once at 0 refusals, so that the refusal below is an increase.
    prometheus.query_until("fvol_volume_quota_refusals_total{volume=\"full\"}", |r| {
        !r.is_empty()
    });
    // 960 KiB of 1 MiB, then a write that does not fit: ENOSPC.
    let out = dd(&[
        "if=/dev/urandom",
        &format!("of={}", mp.join("a").display()),
        "bs=64k",
        "count=15",
        "conv=fsync",
    ]);
    assert!(out.status.success(), "{}", stderr_of(&out));
    let out = dd(&[
        "if=/dev/zero",
        &format!("of={}", mp.join("b").display()),
        "bs=128k",
        "count=1",
    ]);
    assert!(!out.status.success(), "128 KiB more fit in 1 MiB");
    // Writes go on (overwrites within what is allocated), so the write latency has a rate.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (stop, path) = (stop.clone(), mp.join("a"));
        std::thread::spawn(move || {
            use std::os::unix::fs::FileExt;
            let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                f.write_all_at(&[7u8; 4096], 0).unwrap();
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    let volume_query = |expr: &str| -> Vec<serde_json::Value> {
        prometheus.query_until(expr, |r| has_volume(r, "full"))
    };
    for (comment, expr) in &examples {
        if expr.contains("used_bytes / fvol_volume_stats_capacity_bytes > 0.9") {
            let r = volume_query(expr);
            let ratio: f64 = r[0]["value"][1].as_str().unwrap().parse().unwrap();
            assert!(ratio > 0.9 && ratio <= 1.0, "{comment}: {r:?}");
        } else if expr.contains("op=\"write\"") {
            // Finite once two scrapes saw writes.
            let r = prometheus.query_until(expr, |r| {
                r.iter().any(|s| {
                    s["metric"]["volume"] == "full"
                        && s["value"][1]
                            .as_str()
                            .unwrap()
                            .parse::<f64>()
                            .is_ok_and(f64::is_finite)
                })
            });
            assert!(has_volume(&r, "full"), "{comment}: {r:?}");
        } else if expr.contains("quota_refusals") {
            volume_query(expr);
        } else if expr.contains("fuse_requests_waiting") {
            // A healthy handler: the series is there, the alert is not.
            let (base, _) = expr.rsplit_once('>').unwrap();
            volume_query(base.trim());
            let r = prometheus.query(expr).unwrap();
            assert!(!has_volume(&r, "full"), "{comment}: {r:?}");
        } else if expr.contains("catalog_commit") {
            // The daemon's series is there (the creates committed); a commit under 100 ms on
            // this disk is not a matter for this test, so only the query without its threshold.
            let (base, _) = expr.rsplit_once('>').unwrap();
            prometheus.query_until(base.trim(), |r| !r.is_empty());
        } else {
            panic!("docs/operations.md has an example this test does not know: {expr}");
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    writer.join().unwrap();
}

/// Long operations show how far they got on a terminal (under tmux), and nothing in scripts
/// or with --quiet.
#[test]
fn progress_shows_on_a_terminal_only() {
    if !fuse_or_skip("progress_shows_on_a_terminal_only") {
        return;
    }
    let root = TestRoot::new();
    let d = TestDaemon::start_at(&root);
    d.cli_ok(["create", "-d", "tmpfs", "-o", "size=1G", "big"]);
    d.cli_ok(["create", "-d", "tmpfs", "-o", "size=1G", "copy"]);
    let mp = d.mount("big");
    let data: Vec<u8> = (0..512u32 << 20).map(|i| (i % 251) as u8 + 1).collect();
    std::fs::write(mp.join("f"), &data).unwrap();
    drop(data);
    d.mount("copy");
    let tar = root.scratch_dir("out").join("big.tar");
    let fvol = format!(
        "{} --root {}",
        fuse_tests::daemon::fvol_bin().display(),
        d.root().display()
    );
    let tmux = Tmux::new("progress");
    let on_terminal = |script: &str| -> String {
        let shell = format!("{script}; echo exit=$?; sleep 600");
        tmux.start(150, &["sh", "-c", &shell]);
        tmux.pane_when("the command's end", |p| p.contains("exit="))
    };

    // The export goes into a pipe read slowly, so that it lasts seconds whatever the speed
    // of the machine (the CLI shows what it polls every 200 ms).
    let fifo = root.scratch_dir("slow").join("big.tar");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let reader = {
        let fifo = fifo.clone();
        std::thread::spawn(move || {
            use std::io::Read;
            let mut f = std::fs::File::open(&fifo).unwrap();
            let mut buf = vec![0u8; 1 << 20];
            let mut total = 0u64;
            loop {
                let n = f.read(&mut buf).unwrap();
                if n == 0 {
                    return total;
                }
                // 5 ms per MiB: 512 MiB take at least 2.5 s.
                if (total + n as u64) >> 20 > total >> 20 {
                    std::thread::sleep(Duration::from_millis(5));
                }
                total += n as u64;
            }
        })
    };
    let pane = on_terminal(&format!("{fvol} export big --output {}", fifo.display()));
    assert!(pane.contains("exit=0"), "{pane}");
    assert!(
        pane.contains("copying volume big: ") && pane.contains("/s"),
        "the copy's bytes and rate:\n{pane}"
    );
    assert!(
        reader.join().unwrap() > 512 << 20,
        "the stream through the pipe"
    );
    let out = d.cli(["export", "big", "--output", tar.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr_of(&out));
    let pane = on_terminal(&format!("{fvol} import copy {}", tar.display()));
    assert!(pane.contains("exit=0"), "{pane}");
    assert!(pane.contains("unpacking into volume copy: "), "{pane}");

    // --quiet on a terminal, and no terminal: nothing but the answer.
    let pane = on_terminal(&format!(
        "{fvol} export big --quiet --output {}",
        tar.display()
    ));
    assert!(
        pane.contains("exit=0") && !pane.contains("copying"),
        "{pane}"
    );
    let out = d.cli(["export", "big", "--output", tar.to_str().unwrap()]);
    assert!(out.status.success() && out.stderr.is_empty(), "{out:?}");
}
