//! A private dockerd for tests of the Docker volume plugin, stopped and deleted on drop.
//!
//! `DockerDaemon::start` runs `tools/docker-daemon.sh start` with its state in a temporary
//! directory (loopback only: no bridge, no iptables), then `tools/docker-image.sh` to make the
//! image `busybox:local` from Debian's busybox-static (no registry). Every `docker` command of
//! the test goes to it through `DOCKER_HOST`. Like every dockerd it looks for plugins in the
//! host-wide `/run/docker/plugins` and `/etc/docker/plugins`, so the tests register a private
//! driver name there and only one test binary starts a dockerd.
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// The image every test container runs.
pub const IMAGE: &str = "busybox:local";

fn tool(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tools")
        .join(name)
}

/// The first `name` on PATH.
pub fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

pub struct DockerDaemon {
    dir: TempDir,
    host: String,
}

impl DockerDaemon {
    /// Starts a private dockerd and builds the test image, or says why it cannot.
    pub fn start() -> Result<DockerDaemon, String> {
        let missing: Vec<_> = ["docker", "dockerd", "containerd", "runc", "busybox"]
            .into_iter()
            .filter(|cmd| which(cmd).is_none())
            .collect();
        if !missing.is_empty() {
            return Err(format!(
                "{} not found on PATH: install the Debian packages docker.io and busybox-static \
                 (tools/install-deps.sh does)",
                missing.join(", ")
            ));
        }
        let dir = tempfile::Builder::new()
            .prefix("fvol-docker-")
            .tempdir()
            .map_err(|e| format!("creating a directory for dockerd: {e}"))?;
        let host = format!("unix://{}/docker.sock", dir.path().display());
        let daemon = DockerDaemon { dir, host };
        let started = daemon.script("docker-daemon.sh", &["start"]);
        if !started.status.success() {
            return Err(format!(
                "tools/docker-daemon.sh start failed ({}):\n{}\ndockerd log:\n{}",
                started.status,
                String::from_utf8_lossy(&started.stderr),
                daemon.log_tail(30)
            ));
        }
        let image = daemon.script("docker-image.sh", &[IMAGE]);
        if !image.status.success() {
            return Err(format!(
                "tools/docker-image.sh failed ({}):\n{}",
                image.status,
                String::from_utf8_lossy(&image.stderr)
            ));
        }
        Ok(daemon)
    }

    /// Builds fvol's container image (`tools/fvol-image.sh`) from the binary under test.
    pub fn build_fvol_image(&self, tag: &str) {
        let out = Command::new(tool("fvol-image.sh"))
            .arg(tag)
            .env("DOCKER_HOST", &self.host)
            .env("FVOL_BIN", crate::daemon::fvol_bin())
            .stdin(Stdio::null())
            .output()
            .expect("running tools/fvol-image.sh");
        crate::stdout_of_success("tools/fvol-image.sh", out);
    }

    fn script(&self, name: &str, args: &[&str]) -> Output {
        Command::new(tool(name))
            .args(args)
            .env("FVOL_DOCKER_DIR", self.dir.path())
            .env("DOCKER_HOST", &self.host)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("running tools/{name}: {e}"))
    }

    /// `docker ARGS...` against this dockerd.
    pub fn docker<I, S>(&self, args: I) -> Output
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        Command::new("docker")
            .args(args)
            .env("DOCKER_HOST", &self.host)
            .stdin(Stdio::null())
            .output()
            .expect("spawn docker")
    }

    /// `docker ARGS...`, its stdout; panics with its stderr if it fails.
    pub fn docker_ok<I, S>(&self, args: I) -> String
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let args: Vec<_> = args
            .into_iter()
            .map(|a| a.as_ref().to_os_string())
            .collect();
        let out = self.docker(&args);
        crate::stdout_of_success(&format!("docker {args:?}"), out)
    }

    /// `docker ARGS...` expected to fail; returns its stderr.
    pub fn docker_err<I, S>(&self, args: I) -> String
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let args: Vec<_> = args
            .into_iter()
            .map(|a| a.as_ref().to_os_string())
            .collect();
        let out = self.docker(&args);
        assert!(
            !out.status.success(),
            "docker {args:?} succeeded but should have failed\nstdout: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    /// `docker volume inspect NAME`, the one element.
    pub fn inspect_volume(&self, name: &str) -> serde_json::Value {
        let out = self.docker_ok(["volume", "inspect", name]);
        let mut all: Vec<serde_json::Value> =
            serde_json::from_str(&out).unwrap_or_else(|e| panic!("inspect JSON: {e}\n{out}"));
        assert_eq!(all.len(), 1, "{out}");
        all.remove(0)
    }

    /// Kills dockerd with SIGKILL (its containers keep running under their shims) and waits
    /// until it is gone.
    pub fn kill(&self) {
        let pid_file = self.dir.path().join("docker.pid");
        let pid: i32 = std::fs::read_to_string(&pid_file)
            .unwrap_or_else(|e| panic!("{}: {e}", pid_file.display()))
            .trim()
            .parse()
            .expect("a pid in docker.pid");
        let pid = nix::unistd::Pid::from_raw(pid);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL).expect("kill dockerd");
        assert!(
            wait_until(Duration::from_secs(30), || {
                nix::sys::signal::kill(pid, None).is_err()
            }),
            "dockerd still there 30 s after SIGKILL"
        );
    }

    /// Starts dockerd again on the same state (after `kill`).
    pub fn restart(&self) {
        let started = self.script("docker-daemon.sh", &["start"]);
        assert!(
            started.status.success(),
            "tools/docker-daemon.sh start failed ({}):\n{}\ndockerd log:\n{}",
            started.status,
            String::from_utf8_lossy(&started.stderr),
            self.log_tail(30)
        );
    }

    /// The last `lines` lines of dockerd's log.
    pub fn log_tail(&self, lines: usize) -> String {
        let log = std::fs::read_to_string(self.dir.path().join("dockerd.log")).unwrap_or_default();
        let all: Vec<&str> = log.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

impl Drop for DockerDaemon {
    /// Stops dockerd (it kills running containers, calling the plugin's Unmount for their
    /// volumes: so drop it before the fvol daemon) and deletes its state.
    fn drop(&mut self) {
        let out = self.script("docker-daemon.sh", &["purge"]);
        if !out.status.success() {
            eprintln!(
                "tools/docker-daemon.sh purge failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

/// Polls `check` every 100 ms until it returns true or `timeout` passes; returns its last
/// answer.
pub fn wait_until(timeout: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if check() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
