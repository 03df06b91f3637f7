//! Block devices: fixed-size byte arrays with reads, writes and a flush that makes every
//! earlier write durable. Any byte range may be read or written (no alignment).
//!
//! A device on a cluster may stall (nothing answers while the cluster is away). Its calls then
//! wait until it answers again; only the calls of the data path (`read_data`, room for
//! `submit_write`) and whoever waits for a durable commit give up after `wait_limit`, if the
//! device has one. Metadata I/O (`read_at`, `write_at`, `flush`, what redb does) never gives
//! up: redb stops using a database for good after any failed I/O.
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;

use crate::fs::Health;

pub trait BlockDevice: Send + Sync + std::fmt::Debug + 'static {
    /// Capacity in bytes; changes only by `grow`.
    fn size(&self) -> u64;
    /// Makes the device `size` bytes long (bigger only); what was there stays.
    fn grow(&self, size: u64) -> io::Result<()> {
        let _ = size;
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "this device cannot grow",
        ))
    }
    fn read_at(&self, offset: u64, out: &mut [u8]) -> io::Result<()>;
    fn write_at(&self, offset: u64, data: &[u8]) -> io::Result<()>;
    /// Starts writing `data` at `offset` and may return before it is done. The write is ordered
    /// before every later read or write of an overlapping range and is durable after the next
    /// `flush`; a failure may be reported by any later call, by the next `flush` at the latest.
    /// The device is done with `data` when it returns (it copied what it still needs).
    /// (No default: a wrapper must forward it, or it would silently turn synchronous.)
    fn submit_write(&self, offset: u64, data: &[u8]) -> io::Result<()>;
    /// Makes every write submitted or completed before the call durable.
    fn flush(&self) -> io::Result<()>;
    /// How long a caller may wait for a stalled device (`None`: as long as it takes): reads
    /// of file data (`read_data`), room for `submit_write`, and the wait for a durable commit
    /// then fail with `TimedOut`, while what they started goes on.
    fn wait_limit(&self) -> Option<Duration> {
        None
    }
    /// A read of file data: `read_at`, giving up with `TimedOut` after `wait_limit`.
    fn read_data(&self, offset: u64, out: &mut [u8]) -> io::Result<()> {
        self.read_at(offset, out)
    }
    /// Whether the store refuses this host for good (it was fenced). Cheap: asked before
    /// every change.
    fn fenced(&self) -> bool {
        false
    }
    /// What the device waits for, and its fence (for `inspect`).
    fn health(&self) -> Health {
        Health::default()
    }
}

pub(super) fn check_range(size: u64, offset: u64, len: usize) -> io::Result<()> {
    match offset.checked_add(len as u64) {
        Some(end) if end <= size => Ok(()),
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("range {offset}+{len} beyond the device's {size} bytes"),
        )),
    }
}

/// An image file on a host filesystem.
#[derive(Debug)]
pub struct FileDevice {
    file: File,
    size: AtomicU64,
}

impl FileDevice {
    /// Creates (or truncates) a sparse image of `size` bytes.
    pub fn create(path: &Path, size: u64) -> io::Result<FileDevice> {
        let file = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)?;
        file.set_len(size)?;
        Ok(FileDevice {
            file,
            size: AtomicU64::new(size),
        })
    }

    pub fn open(path: &Path) -> io::Result<FileDevice> {
        let file = File::options().read(true).write(true).open(path)?;
        let size = file.metadata()?.len();
        Ok(FileDevice {
            file,
            size: AtomicU64::new(size),
        })
    }
}

impl BlockDevice for FileDevice {
    fn size(&self) -> u64 {
        self.size.load(Ordering::Acquire)
    }
    fn grow(&self, size: u64) -> io::Result<()> {
        if size > self.size() {
            self.file.set_len(size)?;
            self.size.store(size, Ordering::Release);
        }
        Ok(())
    }
    fn read_at(&self, offset: u64, out: &mut [u8]) -> io::Result<()> {
        check_range(self.size(), offset, out.len())?;
        self.file.read_exact_at(out, offset)
    }
    fn write_at(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        check_range(self.size(), offset, data.len())?;
        self.file.write_all_at(data, offset)
    }
    fn submit_write(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        self.write_at(offset, data)
    }
    fn flush(&self) -> io::Result<()> {
        self.file.sync_data()
    }
}

/// A device in memory that models a crash: writes since the last flush sit in a volatile
/// cache, and `crash` loses them (all, or a chosen subset, as a disk cache may persist some
/// and not others). Afterwards the device holds exactly what was durable plus the kept writes.
#[derive(Debug, Clone)]
pub struct CrashDevice {
    inner: Arc<Mutex<CrashState>>,
}

#[derive(Debug)]
struct CrashState {
    durable: Vec<u8>,
    /// Writes not yet flushed, in order; reads see them on top of `durable`.
    volatile: Vec<(u64, Vec<u8>)>,
    flushes: u64,
    /// Writes and flushes so far.
    ops: u64,
    /// Once `ops` reaches this, the "power is off": writes and flushes are dropped silently.
    dead_at: Option<u64>,
}

impl CrashDevice {
    pub fn new(size: u64) -> CrashDevice {
        CrashDevice {
            inner: Arc::new(Mutex::new(CrashState {
                durable: vec![0; size as usize],
                volatile: Vec::new(),
                flushes: 0,
                ops: 0,
                dead_at: None,
            })),
        }
    }

    /// Loses every unflushed write for which `keep(index)` is false (index in write order), and
    /// turns the power back on.
    pub fn crash(&self, keep: impl Fn(usize) -> bool) {
        let mut s = self.inner.lock();
        s.dead_at = None;
        let volatile = std::mem::take(&mut s.volatile);
        for (i, (offset, data)) in volatile.into_iter().enumerate() {
            if keep(i) {
                let o = offset as usize;
                s.durable[o..o + data.len()].copy_from_slice(&data);
            }
        }
    }

    pub fn unflushed_writes(&self) -> usize {
        self.inner.lock().volatile.len()
    }

    pub fn flushes(&self) -> u64 {
        self.inner.lock().flushes
    }

    /// Writes and flushes so far (dropped ones included).
    pub fn ops(&self) -> u64 {
        self.inner.lock().ops
    }

    /// Cuts the power after `n` more writes or flushes: later ones are dropped without an
    /// error, as if the machine had died there while the process went on. `crash` then
    /// decides which of the writes before the cut that were not flushed survive.
    pub fn power_off_after(&self, n: u64) {
        let mut s = self.inner.lock();
        s.dead_at = Some(s.ops + n);
    }

    /// Whether a write or flush now is dropped (counting it).
    fn dropped(s: &mut CrashState) -> bool {
        s.ops += 1;
        s.dead_at.is_some_and(|at| s.ops > at)
    }
}

impl BlockDevice for CrashDevice {
    fn size(&self) -> u64 {
        self.inner.lock().durable.len() as u64
    }
    fn read_at(&self, offset: u64, out: &mut [u8]) -> io::Result<()> {
        let s = self.inner.lock();
        check_range(s.durable.len() as u64, offset, out.len())?;
        let o = offset as usize;
        out.copy_from_slice(&s.durable[o..o + out.len()]);
        let end = offset + out.len() as u64;
        for (at, data) in &s.volatile {
            let (from, to) = ((*at).max(offset), (at + data.len() as u64).min(end));
            if from < to {
                let src = &data[(from - at) as usize..(to - at) as usize];
                out[(from - offset) as usize..(to - offset) as usize].copy_from_slice(src);
            }
        }
        Ok(())
    }
    fn write_at(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        let mut s = self.inner.lock();
        check_range(s.durable.len() as u64, offset, data.len())?;
        if !Self::dropped(&mut s) {
            s.volatile.push((offset, data.to_vec()));
        }
        Ok(())
    }
    /// Volatile like any write until the next flush.
    fn submit_write(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        self.write_at(offset, data)
    }
    fn flush(&self) -> io::Result<()> {
        let mut s = self.inner.lock();
        if !Self::dropped(&mut s) {
            s.crash_keep_all();
            s.flushes += 1;
        }
        Ok(())
    }
}

impl CrashState {
    fn crash_keep_all(&mut self) {
        for (offset, data) in std::mem::take(&mut self.volatile) {
            let o = offset as usize;
            self.durable[o..o + data.len()].copy_from_slice(&data);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crash_loses_only_unflushed_writes() {
        let d = CrashDevice::new(64);
        d.write_at(0, b"durable").unwrap();
        d.flush().unwrap();
        d.write_at(0, b"VOLATILE").unwrap();
        let mut buf = [0u8; 8];
        d.read_at(0, &mut buf).unwrap();
        assert_eq!(&buf, b"VOLATILE");
        d.crash(|_| false);
        d.read_at(0, &mut buf).unwrap();
        assert_eq!(&buf[..7], b"durable");
    }

    #[test]
    fn ranges_are_checked() {
        let d = CrashDevice::new(16);
        assert!(d.write_at(10, &[0; 7]).is_err());
        assert!(d.read_at(u64::MAX, &mut [0; 1]).is_err());
    }

    #[test]
    fn file_device_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("img");
        let d = FileDevice::create(&path, 1 << 20).unwrap();
        d.write_at(4096, b"abc").unwrap();
        d.flush().unwrap();
        let d = FileDevice::open(&path).unwrap();
        assert_eq!(d.size(), 1 << 20);
        let mut buf = [0u8; 3];
        d.read_at(4096, &mut buf).unwrap();
        assert_eq!(&buf, b"abc");
    }
}
