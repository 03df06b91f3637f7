//! What the catalog keeps per volume.
use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// One volume as stored in the catalog. Usage is kept apart (see `Usage`) because it changes
/// far more often than the rest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeRecord {
    pub name: String,
    pub driver: String,
    /// The options exactly as the user gave them (validated at create).
    pub options: BTreeMap<String, String>,
    pub labels: BTreeMap<String, String>,
    /// Seconds since the Unix epoch.
    pub created_at: u64,
    /// Who holds the volume mounted, keyed by reference id. The FUSE mount lives while this is
    /// non-empty. Ids: `cli` (plain `fvol mount`), `cli:/abs/target` (`--target`), and
    /// `plugin:<ID>` (Docker/Pouch Mount IDs).
    pub mount_refs: BTreeMap<String, MountRef>,
    /// True when fvol created the backing store and so may delete it on `rm`.
    pub owns_backing: bool,
    /// Ready, or an unfinished create or rm.
    pub state: VolumeState,
    /// The identity of a `mount=` directory when the volume was created: the directory its
    /// path must still name for the volume to mount (a swapped path is refused).
    pub backing_identity: Option<DirIdentity>,
}

/// Where a volume is in its life. Only a `Ready` volume exists for users (ls, inspect, mount).
/// The other two are intents, committed before `create` or `rm` touches the backing store, so
/// that an error or a crash midway is finished (rm) or rolled back (create) by the next `rm` or
/// `create` of that name, or at the next start.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum VolumeState {
    #[default]
    Ready,
    /// `create` is making the backing store; `owns_backing` says whether it makes a new one.
    Creating,
    /// `rm` is deleting the backing store.
    Removing,
}

/// Which directory a path named: its inode number and file handle (the handle carries the
/// inode's generation, so a deleted and recreated directory does not match). Empty `handle`
/// where the host filesystem gives none.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirIdentity {
    pub ino: u64,
    pub handle: Vec<u8>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MountRef {
    pub kind: RefKind,
    /// Where the volume is bind-mounted for this reference, if anywhere.
    pub target: Option<PathBuf>,
    pub since: u64,
    /// The unique id of the bind mount fvol made at `target`: only that mount is ever
    /// detached there. None for references recorded before fvol kept it.
    pub bind_mount_id: Option<u64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RefKind {
    Cli,
    Plugin,
    /// Added after the other two: the catalog's encoding numbers variants in order.
    Csi,
}

/// Space and inodes in use. `clean` is false from activation until a clean deactivation,
/// so a crash leaves it false and the next activation rescans.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub bytes: u64,
    pub inodes: u64,
    pub clean: bool,
}
