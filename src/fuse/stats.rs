//! What a volume's FUSE requests did: counts and latency per operation, bytes read and
//! written, errors by errno, requests in flight. Recorded by the adapter on every request
//! with relaxed atomic adds only (no lock, no allocation), read by the daemon's `/metrics`.
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Instant;

use crate::model::{Histogram, HistogramSnapshot};

/// The FUSE operations counted, one histogram each.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Lookup,
    Getattr,
    Setattr,
    Readlink,
    Mknod,
    Mkdir,
    Unlink,
    Rmdir,
    Symlink,
    Rename,
    Link,
    Open,
    Read,
    Write,
    Release,
    Fsync,
    Opendir,
    Readdir,
    Releasedir,
    Fsyncdir,
    Statfs,
    Setxattr,
    Getxattr,
    Listxattr,
    Removexattr,
    Access,
    Create,
    Fallocate,
    Lseek,
    CopyFileRange,
    /// Requests refused as unsupported (ioctl, poll, locks, bmap, flush).
    Unsupported,
}

impl Op {
    pub const ALL: [Op; 31] = [
        Op::Lookup,
        Op::Getattr,
        Op::Setattr,
        Op::Readlink,
        Op::Mknod,
        Op::Mkdir,
        Op::Unlink,
        Op::Rmdir,
        Op::Symlink,
        Op::Rename,
        Op::Link,
        Op::Open,
        Op::Read,
        Op::Write,
        Op::Release,
        Op::Fsync,
        Op::Opendir,
        Op::Readdir,
        Op::Releasedir,
        Op::Fsyncdir,
        Op::Statfs,
        Op::Setxattr,
        Op::Getxattr,
        Op::Listxattr,
        Op::Removexattr,
        Op::Access,
        Op::Create,
        Op::Fallocate,
        Op::Lseek,
        Op::CopyFileRange,
        Op::Unsupported,
    ];

    /// The `op` label.
    pub fn name(self) -> &'static str {
        match self {
            Op::Lookup => "lookup",
            Op::Getattr => "getattr",
            Op::Setattr => "setattr",
            Op::Readlink => "readlink",
            Op::Mknod => "mknod",
            Op::Mkdir => "mkdir",
            Op::Unlink => "unlink",
            Op::Rmdir => "rmdir",
            Op::Symlink => "symlink",
            Op::Rename => "rename",
            Op::Link => "link",
            Op::Open => "open",
            Op::Read => "read",
            Op::Write => "write",
            Op::Release => "release",
            Op::Fsync => "fsync",
            Op::Opendir => "opendir",
            Op::Readdir => "readdir",
            Op::Releasedir => "releasedir",
            Op::Fsyncdir => "fsyncdir",
            Op::Statfs => "statfs",
            Op::Setxattr => "setxattr",
            Op::Getxattr => "getxattr",
            Op::Listxattr => "listxattr",
            Op::Removexattr => "removexattr",
            Op::Access => "access",
            Op::Create => "create",
            Op::Fallocate => "fallocate",
            Op::Lseek => "lseek",
            Op::CopyFileRange => "copy_file_range",
            Op::Unsupported => "unsupported",
        }
    }
}

/// Errnos counted one by one; a larger one counts as the last.
pub const MAX_ERRNO: usize = 134;

/// A volume's request counters, shared by the adapter's threads and the metrics reader.
pub struct VolumeStats {
    latency: [Histogram; Op::ALL.len()],
    errors: [AtomicU64; MAX_ERRNO + 1],
    bytes_read: AtomicU64,
    bytes_written: AtomicU64,
    in_flight: AtomicI64,
}

impl Default for VolumeStats {
    fn default() -> Self {
        VolumeStats {
            latency: [const { Histogram::new() }; Op::ALL.len()],
            errors: [const { AtomicU64::new(0) }; MAX_ERRNO + 1],
            bytes_read: AtomicU64::new(0),
            bytes_written: AtomicU64::new(0),
            in_flight: AtomicI64::new(0),
        }
    }
}

/// A request being served, from `VolumeStats::start` to `VolumeStats::done`.
#[must_use]
pub struct Started(Instant);

/// The counters read at one moment.
#[derive(Clone, Debug, Default)]
pub struct StatsSnapshot {
    /// Per operation (in `Op::ALL` order), its latency histogram; its count is the number of
    /// requests answered.
    pub latency: Vec<(Op, HistogramSnapshot)>,
    /// (errno, answers) for every errno answered at least once.
    pub errors: Vec<(i32, u64)>,
    pub bytes_read: u64,
    pub bytes_written: u64,
    pub in_flight: i64,
}

impl StatsSnapshot {
    pub fn errors_with(&self, errno: i32) -> u64 {
        self.errors
            .iter()
            .find(|(e, _)| *e == errno)
            .map_or(0, |(_, n)| *n)
    }

    pub fn operations(&self) -> u64 {
        self.latency.iter().map(|(_, h)| h.count()).sum()
    }
}

impl VolumeStats {
    pub fn start(&self) -> Started {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        Started(Instant::now())
    }

    /// Records a request answered with `errno` (0: success). Called before the reply is sent,
    /// so a caller that sees the answer also sees it counted.
    pub fn done(&self, op: Op, started: Started, errno: i32) {
        self.latency[op as usize].observe(started.0.elapsed());
        if errno != 0 {
            let slot = usize::try_from(errno).unwrap_or(MAX_ERRNO).min(MAX_ERRNO);
            self.errors[slot].fetch_add(1, Ordering::Relaxed);
        }
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
    }

    pub fn read(&self, bytes: usize) {
        self.bytes_read.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    pub fn written(&self, bytes: u64) {
        self.bytes_written.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Answers with ENOSPC or EDQUOT so far: the quota refusals.
    pub fn quota_refusals(&self) -> u64 {
        self.errors[libc::ENOSPC as usize].load(Ordering::Relaxed)
            + self.errors[libc::EDQUOT as usize].load(Ordering::Relaxed)
    }

    pub fn snapshot(&self) -> StatsSnapshot {
        StatsSnapshot {
            latency: Op::ALL
                .iter()
                .map(|&op| (op, self.latency[op as usize].snapshot()))
                .collect(),
            errors: self
                .errors
                .iter()
                .enumerate()
                .filter_map(|(errno, n)| {
                    let n = n.load(Ordering::Relaxed);
                    (n > 0).then_some((errno as i32, n))
                })
                .collect(),
            bytes_read: self.bytes_read.load(Ordering::Relaxed),
            bytes_written: self.bytes_written.load(Ordering::Relaxed),
            in_flight: self.in_flight.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ops_are_in_their_own_order() {
        for (i, op) in Op::ALL.iter().enumerate() {
            assert_eq!(*op as usize, i, "{op:?}");
        }
    }

    #[test]
    fn counts_answers_errors_and_bytes() {
        let stats = VolumeStats::default();
        let t = stats.start();
        assert_eq!(stats.snapshot().in_flight, 1);
        stats.done(Op::Write, t, libc::ENOSPC);
        stats.done(Op::Read, stats.start(), 0);
        stats.done(Op::Lookup, stats.start(), 10_000);
        stats.read(4096);
        stats.written(10);
        let s = stats.snapshot();
        assert_eq!(s.in_flight, 0);
        assert_eq!(s.operations(), 3);
        assert_eq!(s.errors_with(libc::ENOSPC), 1);
        assert_eq!(s.errors_with(MAX_ERRNO as i32), 1);
        assert_eq!((s.bytes_read, s.bytes_written), (4096, 10));
        assert_eq!(stats.quota_refusals(), 1);
    }
}
