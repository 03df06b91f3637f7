//! A private `fvol csi` beside a `TestDaemon`, and gRPC clients of it; stopped on drop.
//!
//! `TestCsi::start` runs `fvol --root ROOT csi --endpoint unix://BASE/csi-NODE.sock --node-id
//! NODE --mode both` (the socket beside the daemon's root, in the test directory) and waits
//! until it answers `Probe`. The clients are tonic's, generated from the same proto as the
//! server (`fvol::csi::proto`); `run` drives one call to its end on the fixture's runtime.
use std::fs::OpenOptions;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fvol::csi::proto::controller_client::ControllerClient;
use fvol::csi::proto::identity_client::IdentityClient;
use fvol::csi::proto::node_client::NodeClient;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tonic::transport::{Channel, Endpoint, Uri};

use crate::daemon::{TestRoot, fvol_bin};

const START_TIMEOUT: Duration = Duration::from_secs(10);

/// gRPC clients of a CSI socket, and the runtime their calls run on.
pub struct CsiClient {
    runtime: tokio::runtime::Runtime,
    channel: Channel,
}

impl CsiClient {
    /// Connects to `socket`, trying until `deadline`; `alive` says why to stop trying early
    /// (the server exited), with its error.
    pub fn connect(
        socket: &Path,
        deadline: Instant,
        mut alive: impl FnMut() -> Result<(), String>,
    ) -> CsiClient {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let channel = loop {
            if let Err(why) = alive() {
                panic!("{why}");
            }
            if socket.exists()
                && let Ok(channel) = runtime.block_on(connect(socket))
            {
                break channel;
            }
            assert!(
                Instant::now() < deadline,
                "nothing listened on {} in time",
                socket.display()
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        CsiClient { runtime, channel }
    }

    pub fn identity(&self) -> IdentityClient<Channel> {
        IdentityClient::new(self.channel.clone())
    }

    pub fn controller(&self) -> ControllerClient<Channel> {
        ControllerClient::new(self.channel.clone())
    }

    pub fn node(&self) -> NodeClient<Channel> {
        NodeClient::new(self.channel.clone())
    }

    /// Runs one call to its end.
    pub fn run<F: Future>(&self, call: F) -> F::Output {
        self.runtime.block_on(call)
    }
}

/// A running `fvol csi` and a channel to it.
pub struct TestCsi {
    child: Option<Child>,
    pub socket: PathBuf,
    pub node_id: String,
    log: PathBuf,
    client: CsiClient,
    root: TestRoot,
}

impl TestCsi {
    /// `fvol csi --mode both` for the daemon of `root`, as node `node_id`.
    pub fn start(root: &TestRoot, node_id: &str) -> TestCsi {
        TestCsi::start_with_mode(root, node_id, "both")
    }

    pub fn start_with_mode(root: &TestRoot, node_id: &str, mode: &str) -> TestCsi {
        let socket = root.base().join(format!("csi-{node_id}.sock"));
        let log = root.base().join(format!("csi-{node_id}.log"));
        let log_file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("open csi log");
        let child = Command::new(fvol_bin())
            .arg("--root")
            .arg(root.root())
            .arg("csi")
            .arg("--endpoint")
            .arg(format!("unix://{}", socket.display()))
            .arg("--node-id")
            .arg(node_id)
            .arg("--mode")
            .arg(mode)
            .env_remove("FVOL_ROOT")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .expect("spawn fvol csi");
        let mut child = Some(child);
        let client = CsiClient::connect(&socket, Instant::now() + START_TIMEOUT, || {
            match child.as_mut().unwrap().try_wait().unwrap() {
                Some(status) => Err(format!(
                    "fvol csi exited during start-up ({status})\nlog:\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                )),
                None => Ok(()),
            }
        });
        TestCsi {
            child,
            socket,
            node_id: node_id.to_owned(),
            log,
            client,
            root: root.clone(),
        }
    }

    pub fn identity(&self) -> IdentityClient<Channel> {
        self.client.identity()
    }

    pub fn controller(&self) -> ControllerClient<Channel> {
        self.client.controller()
    }

    pub fn node(&self) -> NodeClient<Channel> {
        self.client.node()
    }

    /// Runs one call to its end.
    pub fn run<F: Future>(&self, call: F) -> F::Output {
        self.client.run(call)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The test directory this runs in.
    pub fn root(&self) -> &TestRoot {
        &self.root
    }

    /// Stops it (SIGTERM) and waits: a restart of the driver is `stop` then `start`.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
            let deadline = Instant::now() + START_TIMEOUT;
            loop {
                if child.try_wait().unwrap().is_some() {
                    break;
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

impl Drop for TestCsi {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("---- fvol csi log ({}):\n{}", self.node_id, self.log());
        }
        self.stop();
    }
}

async fn connect(socket: &Path) -> Result<Channel, tonic::transport::Error> {
    let socket = socket.to_owned();
    Endpoint::try_from("http://fvol.csi")
        .unwrap()
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let socket = socket.clone();
            async move {
                let stream = tokio::net::UnixStream::connect(socket).await?;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
            }
        }))
        .await
}
