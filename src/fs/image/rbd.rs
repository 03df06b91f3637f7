//! A `BlockDevice` over a Ceph RBD image (through librbd, `crate::sys::librbd`).
//!
//! Data writes (`submit_write`) are asynchronous (`rbd_aio_write`), up to `MAX_IN_FLIGHT` bytes
//! at a time. librbd orders neither overlapping writes in flight nor a read against an unfinished
//! write, so the device does: a read or write first waits for every earlier submitted write that
//! overlaps it. `flush` waits for all of them, then flushes the image. A failed write fails every
//! later flush and submit (the image may miss data that metadata would point at), until the
//! device is opened again.
//!
//! While the cluster is away, calls wait (librados never times them out). With a wait limit,
//! reads of file data and the wait for room give up after it (`TimedOut`); the calls they
//! started go on and complete when the cluster is back. Once the cluster refused this client as
//! blocklisted, the device is fenced: data calls fail at once.
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::BlockDevice;
use super::device::check_range;
use crate::fs::{ClusterWait, Fenced, Health};
use crate::sys::librbd::{AioDone, AioWrite, Image, RbdError};

/// Calls in flight with no answer from the cluster for this long count as waiting for it
/// (`health`): far longer than any I/O of a cluster that works.
pub const REPORT_WAIT_AFTER: Duration = Duration::from_secs(5);

/// Bytes of submitted writes in flight at most; a submit past it waits for the oldest.
const MAX_IN_FLIGHT: usize = 64 << 20;

/// An RBD image as a block device. Its size is the image's size when it was opened (fvol never
/// resizes an image under an open device); `flush` is `rbd_flush` after the writes in flight.
///
/// I/O errors keep librbd's message (call, pool, image) and the errno's `io::ErrorKind`, but
/// not a raw errno, so the filesystem reports them as EIO, as a failing disk would.
#[derive(Debug)]
pub struct RbdDevice {
    image: Image,
    /// Changes only by `grow`.
    size: AtomicU64,
    in_flight: Mutex<InFlight>,
    wait_limit: Option<Duration>,
}

#[derive(Debug, Default)]
struct InFlight {
    /// In submission order.
    writes: Vec<AioWrite>,
    bytes: usize,
    /// The first failure of a submitted write; sticky.
    failed: Option<RbdError>,
}

impl InFlight {
    /// Takes finished writes off the list, remembering the first failure.
    fn reap(&mut self) {
        let (done, pending): (Vec<_>, Vec<_>) = std::mem::take(&mut self.writes)
            .into_iter()
            .partition(|w| w.done().is_done());
        self.writes = pending;
        for w in done {
            self.bytes -= w.len();
            if let Err(e) = w.finish()
                && self.failed.is_none()
            {
                log::error!("{e}");
                self.failed = Some(e);
            }
        }
    }

    fn overlapping(&self, offset: u64, len: u64) -> Vec<AioDone> {
        self.writes
            .iter()
            .filter(|w| w.offset() < offset + len && offset < w.offset() + w.len() as u64)
            .map(|w| w.done().clone())
            .collect()
    }

    fn check(&self) -> io::Result<()> {
        match &self.failed {
            Some(e) => Err(io::Error::new(
                io::Error::from(e.clone()).kind(),
                format!("an earlier write failed: {e}"),
            )),
            None => Ok(()),
        }
    }
}

impl RbdDevice {
    pub fn new(image: Image) -> Result<RbdDevice, RbdError> {
        let size = image.size()?;
        Ok(RbdDevice {
            image,
            size: AtomicU64::new(size),
            in_flight: Mutex::new(InFlight::default()),
            wait_limit: None,
        })
    }

    /// How long callers wait for a cluster that does not answer (see `BlockDevice::wait_limit`).
    pub fn with_wait_limit(mut self, limit: Option<Duration>) -> RbdDevice {
        self.wait_limit = limit;
        self
    }

    fn deadline(&self) -> Option<Instant> {
        self.wait_limit.map(|limit| Instant::now() + limit)
    }

    fn timed_out(&self, what: &str) -> io::Error {
        io::Error::new(
            io::ErrorKind::TimedOut,
            format!(
                "{}: {what}: the cluster did not answer within {}s",
                self.image.describe(),
                self.wait_limit.unwrap_or_default().as_secs()
            ),
        )
    }

    /// Err once the cluster refused this client as blocklisted.
    fn check_fence(&self) -> io::Result<()> {
        match self.image.fence() {
            None => Ok(()),
            Some(f) => Err(io::Error::other(format!(
                "{}: this client is fenced (the cluster refused {} as blocklisted)",
                self.image.describe(),
                f.call
            ))),
        }
    }

    /// The image, for what is not block I/O (its advisory lock).
    pub fn image(&self) -> &Image {
        &self.image
    }

    /// Returns with the in-flight list locked and no unfinished write overlapping the range
    /// (waiting, unlocked, for those that do, until `deadline` at most).
    fn settle(
        &self,
        offset: u64,
        len: u64,
        deadline: Option<Instant>,
    ) -> io::Result<parking_lot::MutexGuard<'_, InFlight>> {
        loop {
            let mut f = self.in_flight.lock();
            f.reap();
            let waits = f.overlapping(offset, len);
            if waits.is_empty() {
                return Ok(f);
            }
            drop(f);
            for w in waits {
                if w.wait_until(deadline).is_none() {
                    return Err(self.timed_out("waiting for an earlier write of the range"));
                }
            }
        }
    }

    /// Waits for every write submitted so far; a failure is kept in the sticky state (and
    /// reported by the next `flush`). The writes stay listed until they are done, so that
    /// reads meanwhile still wait for them.
    pub fn wait_all(&self) {
        let waits: Vec<AioDone> = (self.in_flight.lock().writes.iter())
            .map(|w| w.done().clone())
            .collect();
        for w in waits {
            w.wait();
        }
        self.in_flight.lock().reap();
    }
}

impl BlockDevice for RbdDevice {
    fn size(&self) -> u64 {
        self.size.load(Ordering::Acquire)
    }
    fn grow(&self, size: u64) -> io::Result<()> {
        if size > self.size() {
            self.image.resize(size)?;
            self.size.store(size, Ordering::Release);
        }
        Ok(())
    }
    fn read_at(&self, offset: u64, out: &mut [u8]) -> io::Result<()> {
        check_range(self.size(), offset, out.len())?;
        drop(self.settle(offset, out.len() as u64, None)?);
        Ok(self.image.read_at(offset, out)?)
    }
    fn write_at(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        check_range(self.size(), offset, data.len())?;
        drop(self.settle(offset, data.len() as u64, None)?);
        Ok(self.image.write_at(offset, data)?)
    }
    fn read_data(&self, offset: u64, out: &mut [u8]) -> io::Result<()> {
        check_range(self.size(), offset, out.len())?;
        self.check_fence()?;
        let deadline = self.deadline();
        drop(self.settle(offset, out.len() as u64, deadline)?);
        match deadline {
            None => Ok(self.image.read_at(offset, out)?),
            Some(deadline) => {
                let left = deadline.saturating_duration_since(Instant::now());
                match self.image.read_within(offset, out, left) {
                    Err(e) if e.errno() == Some(libc::ETIMEDOUT) => {
                        Err(self.timed_out("reading file data"))
                    }
                    other => Ok(other?),
                }
            }
        }
    }
    fn submit_write(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        check_range(self.size(), offset, data.len())?;
        if data.is_empty() {
            return Ok(());
        }
        self.check_fence()?;
        let deadline = self.deadline();
        loop {
            let mut f = self.settle(offset, data.len() as u64, deadline)?;
            f.check()?;
            if f.bytes + data.len() > MAX_IN_FLIGHT
                && let Some(oldest) = f.writes.first().map(|w| w.done().clone())
            {
                drop(f);
                if oldest.wait_until(deadline).is_none() {
                    return Err(self.timed_out("waiting for room among the writes in flight"));
                }
                continue;
            }
            let len = data.len();
            let w = self.image.aio_write_copied(offset, data)?;
            f.bytes += len;
            f.writes.push(w);
            return Ok(());
        }
    }
    fn flush(&self) -> io::Result<()> {
        self.wait_all();
        self.in_flight.lock().check()?;
        Ok(self.image.flush()?)
    }
    fn wait_limit(&self) -> Option<Duration> {
        self.wait_limit
    }
    fn fenced(&self) -> bool {
        self.image.fence().is_some()
    }
    fn health(&self) -> Health {
        Health {
            cluster_wait: self.image.waiting(REPORT_WAIT_AFTER).map(|w| ClusterWait {
                since: w.since,
                operations: w.operations,
            }),
            fenced: self.image.fence().map(|f| Fenced {
                since: f.since,
                reason: format!(
                    "the cluster refused {} on {} from this client as blocklisted: another \
                     host broke its lock on the image (fvol break-lock, rbd lock rm) or an \
                     operator blocklisted it",
                    f.call,
                    self.image.describe()
                ),
            }),
        }
    }
}

impl Drop for RbdDevice {
    fn drop(&mut self) {
        // Every buffer must be released before the image closes.
        self.wait_all();
    }
}
