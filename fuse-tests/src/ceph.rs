//! `TestCluster`: a private single-node Ceph cluster (`tools/ceph.sh`) for the rbd tests.
//!
//! The cluster lives in its own directory `fvol-ceph-XXXX/` under TMPDIR and its mon listens on
//! a free loopback port, so it never collides with a developer's cluster or another test run.
//! Dropping it purges the cluster (daemons SIGKILLed, directory removed), also when a test
//! panics. A host without Ceph fails `start` with the reason (run tools/install-deps.sh): CI
//! installs Ceph, so a silent skip would hide a broken setup.
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use fvol::sys::librbd::{Cluster, ClusterConfig};

/// The pool `tools/ceph.sh` creates and initialises for RBD.
pub const POOL: &str = "rbd";

fn ceph_sh() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tools/ceph.sh")
}

/// A port nobody listens on right now (the kernel's pick for a throwaway listener).
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().unwrap().port()
}

/// A monitor address that accepts connections and never answers (librados then gives up after
/// the driver's connect timeout); the count of connections accepted so far. Accepted
/// connections stay open, unanswered, until the test process ends.
pub fn silent_monitor() -> (u16, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    let port = listener.local_addr().unwrap().port();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming() {
            held.push(stream);
            count.fetch_add(1, Ordering::SeqCst);
        }
    });
    (port, accepted)
}

/// Writes `dir/ceph.conf` naming the monitor at `port`, with no authentication (nothing to
/// read first); returns its path.
pub fn silent_conf(dir: &Path, port: u16) -> PathBuf {
    let conf = dir.join("ceph.conf");
    std::fs::write(
        &conf,
        format!(
            "[global]\nmon_host = 127.0.0.1:{port}\nauth_cluster_required = none\n\
             auth_service_required = none\nauth_client_required = none\n"
        ),
    )
    .unwrap();
    conf
}

/// A single-node cluster, purged on drop.
pub struct TestCluster {
    dir: tempfile::TempDir,
}

impl TestCluster {
    /// Bootstraps a new cluster (~10-20 s) with a 4 GiB sparse OSD; panics with the reason
    /// (and the OSD log's tail) when that fails.
    pub fn start() -> TestCluster {
        Self::start_with(false)
    }

    /// `start`, with a ceph-mgr too (about 4 s more): the space statistics of `ceph df`.
    pub fn start_with_mgr() -> TestCluster {
        Self::start_with(true)
    }

    fn start_with(mgr: bool) -> TestCluster {
        let dir = tempfile::Builder::new()
            .prefix("fvol-ceph-")
            .tempdir()
            .expect("tempdir");
        let cluster = TestCluster { dir };
        let t = Instant::now();
        let out = cluster
            .script()
            .arg("start")
            .env("FVOL_CEPH_MON_PORT", free_port().to_string())
            .env("FVOL_CEPH_SIZE", "4G")
            .env("FVOL_CEPH_MGR", if mgr { "1" } else { "0" })
            .output()
            .expect("spawn tools/ceph.sh");
        if !out.status.success() {
            let log = std::fs::read_to_string(cluster.dir.path().join("log/ceph-osd.0.log"))
                .unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(20).collect();
            panic!(
                "tools/ceph.sh start failed ({}); the rbd tests need a local Ceph cluster: \
                 install it with tools/install-deps.sh (Debian packages ceph-mon ceph-osd \
                 ceph-mgr ceph-common librbd1 librados2)\n--- stderr:\n{}\n--- osd log tail:\n{}",
                out.status,
                String::from_utf8_lossy(&out.stderr),
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
        eprintln!("cluster started in {:.1?}", t.elapsed());
        cluster
    }

    /// `tools/ceph.sh` on this cluster's directory.
    pub fn script(&self) -> Command {
        let mut c = Command::new(ceph_sh());
        c.env("FVOL_CEPH_DIR", self.dir.path());
        c
    }

    /// The cluster's directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The clients' ceph.conf (all a client needs).
    pub fn conf(&self) -> PathBuf {
        self.dir.path().join("ceph.conf")
    }

    /// `conf=PATH`, the option the rbd driver takes.
    pub fn conf_opt(&self) -> String {
        format!("conf={}", self.conf().display())
    }

    /// `fvol create -d rbd -o conf=... [-o EXTRA]... NAME` on daemon `d`.
    pub fn create_volume(&self, d: &crate::daemon::TestDaemon, name: &str, extra: &[&str]) {
        let mut args = vec!["create".to_string(), "-d".into(), "rbd".into()];
        args.extend(["-o".into(), self.conf_opt()]);
        for o in extra {
            args.extend(["-o".into(), o.to_string()]);
        }
        args.push(name.into());
        d.cli_ok(&args);
    }

    /// The pid of a daemon of the cluster: `mon.a` or `osd.0` (from its pid file).
    pub fn daemon_pid(&self, daemon: &str) -> Pid {
        let file = self.dir().join(format!("run/ceph-{daemon}.pid"));
        let text =
            std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        Pid::from_raw(text.trim().parse().expect("a pid"))
    }

    /// Sends `signal` to a daemon of the cluster (`mon.a`, `osd.0`): SIGSTOP freezes it,
    /// SIGCONT resumes it, SIGKILL kills it (`restart` starts it again).
    pub fn signal(&self, daemon: &str, signal: Signal) {
        let pid = self.daemon_pid(daemon);
        kill(pid, signal).unwrap_or_else(|e| panic!("{signal} to {daemon} ({pid}): {e}"));
    }

    /// Starts the daemons that are not running (after `signal(.., SIGKILL)` or `stop`) and
    /// waits until the pool takes I/O again.
    pub fn restart(&self) {
        let out = self
            .script()
            .arg("start")
            .output()
            .expect("tools/ceph.sh start");
        assert!(
            out.status.success(),
            "tools/ceph.sh start: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Stops every daemon of the cluster (SIGTERM); `restart` brings it back with its data.
    pub fn stop(&self) {
        let out = self
            .script()
            .arg("stop")
            .output()
            .expect("tools/ceph.sh stop");
        assert!(
            out.status.success(),
            "tools/ceph.sh stop: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Runs the `ceph` command on this cluster (it needs only the monitor).
    pub fn ceph(&self, args: &[&str]) -> Output {
        Command::new("ceph")
            .arg("-c")
            .arg(self.conf())
            .args(["--connect-timeout", "20"])
            .args(args)
            .output()
            .expect("spawn ceph")
    }

    /// A new connection, as another host would have.
    pub fn connect(&self) -> Cluster {
        Cluster::connect(ClusterConfig {
            conf: Some(self.conf()),
            timeout: Duration::from_secs(20),
            ..ClusterConfig::default()
        })
        .expect("connect to the test cluster")
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        match self.script().arg("purge").output() {
            Ok(out) if out.status.success() => {}
            Ok(out) => eprintln!(
                "tools/ceph.sh purge failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ),
            Err(e) => eprintln!("tools/ceph.sh purge: {e}"),
        }
    }
}
