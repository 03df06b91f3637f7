//! What the services share: the daemon's client, the node's id and the mode served.
use super::client::Daemon;

/// Which CSI services a `fvol csi` serves: Kubernetes runs the controller once (beside the
/// provisioner, resizer and snapshotter sidecars) and the node service on every node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    Controller,
    Node,
    Both,
}

impl Mode {
    pub fn controller(self) -> bool {
        matches!(self, Mode::Controller | Mode::Both)
    }

    pub fn node(self) -> bool {
        matches!(self, Mode::Node | Mode::Both)
    }
}

/// What every service reads.
pub struct Shared {
    pub daemon: Daemon,
    pub node_id: String,
    pub mode: Mode,
}
