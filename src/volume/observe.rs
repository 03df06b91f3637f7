//! What the daemon's metrics (and `fvol top`) read of the volumes: limits, usage, what df
//! shows, and for a mounted volume the counters of its FUSE requests. Read under the core's
//! lock without touching the catalog's disk, so a scrape costs one statfs per mounted volume.
pub use crate::fuse::stats::{MAX_ERRNO, Op, StatsSnapshot, VolumeStats};
use crate::model::HistogramSnapshot;

/// One volume as the metrics show it.
#[derive(Clone, Debug, Default)]
pub struct VolumeObservation {
    pub name: String,
    pub driver: String,
    pub size_limit: Option<u64>,
    pub inode_limit: Option<u64>,
    pub used_bytes: u64,
    pub used_inodes: u64,
    /// What statfs on the mounted volume answers (df): (capacity, available) bytes and
    /// (inodes, free inodes). None while unmounted.
    pub statfs: Option<Capacity>,
    /// The request counters of the mounted volume's FUSE session.
    pub requests: Option<StatsSnapshot>,
    /// fusectl's `waiting` of its FUSE connection: requests queued and not yet answered.
    pub waiting: Option<u64>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Capacity {
    pub bytes: u64,
    pub available_bytes: u64,
    pub inodes: u64,
    pub free_inodes: u64,
}

impl VolumeObservation {
    /// (capacity, available) bytes: from statfs while mounted, else from the byte limit.
    pub fn bytes(&self) -> Option<(u64, u64)> {
        match (&self.statfs, self.size_limit) {
            (Some(c), _) => Some((c.bytes, c.available_bytes)),
            (None, Some(limit)) => Some((limit, limit.saturating_sub(self.used_bytes))),
            (None, None) => None,
        }
    }

    /// (inodes, free inodes): from statfs while mounted, else from the inode limit.
    pub fn inodes(&self) -> Option<(u64, u64)> {
        match (&self.statfs, self.inode_limit) {
            (Some(c), _) => Some((c.inodes, c.free_inodes)),
            (None, Some(limit)) => Some((limit, limit.saturating_sub(self.used_inodes))),
            (None, None) => None,
        }
    }
}

/// Everything the daemon's metrics show, read at one moment.
#[derive(Clone, Debug, Default)]
pub struct Observation {
    pub volumes: Vec<VolumeObservation>,
    /// Volumes whose FUSE handler was started again for references they already had (at a
    /// daemon start), since this daemon started.
    pub handler_restarts: u64,
    pub commit_latency: HistogramSnapshot,
}
