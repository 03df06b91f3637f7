//! Fixtures for the FUSE tests. Every fixture tears down what it set up on drop, so a failing
//! test leaves no stale mount or daemon behind.
//!
//! - `TestCluster`: a private single-node Ceph cluster (the rbd driver's tests).
//! - `TestSession`: one filesystem core mounted directly (no daemon), for filesystem tests.
//! - `TestDaemon`: a private `fvol daemon` on a temporary root, driven through the real CLI.
//! - `TestCsi`: a private `fvol csi` beside a daemon, with gRPC clients of it.
//! - `DockerDaemon`: a private dockerd (tests of the Docker volume plugin).
//! - `PluginClient`: speaks the Docker volume plugin protocol as dockerd does.
//! - `LoopFs`: a fresh ext4 or XFS filesystem on a loop device (tests that need its allocator
//!   or its reflinks).
//! - `direct_io`: O_DIRECT requests as a program makes them (buffer, offset, length), and fio.
pub mod ceph;
pub mod csi;
pub mod daemon;
pub mod direct_io;
pub mod docker;
pub mod loopfs;
pub mod plugin;
pub mod session;
pub mod suites;

pub use session::{Backend, TestSession};

/// A small deterministic generator (xorshift), so that a failure replays from its seed.
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

/// Deterministic pseudo-random bytes (xorshift), different for every seed.
pub fn random_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Runs a command and returns its stdout, panicking with its stderr if it failed.
pub fn run_ok(cmd: &mut std::process::Command) -> String {
    let out = cmd.output().expect("spawn");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The stdout of a command that must have succeeded; panics with everything it printed
/// otherwise. `what` names the command in the message.
pub fn stdout_of_success(what: &str, out: std::process::Output) -> String {
    assert!(
        out.status.success(),
        "{what} failed: {}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// True when the process can mount FUSE filesystems (root and /dev/fuse).
pub fn fuse_available() -> bool {
    nix::unistd::geteuid().is_root() && std::path::Path::new("/dev/fuse").exists()
}

/// Runs a shell script as nobody (uid and gid 65534, no supplementary groups), as an
/// unprivileged host user would.
pub fn as_nobody(script: &str) -> std::process::Output {
    std::process::Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "sh",
            "-c",
            script,
        ])
        .output()
        .expect("setpriv (util-linux)")
}
