//! redb's `StorageBackend` over a region of a block device, so a redb database can live inside
//! an image. redb treats its storage as a growable file; the region gives it room up to the
//! region's capacity and keeps the current length in a one-block header.
//!
//! Layout of the region: block 0 holds `MAGIC` and the length (u64, little endian); redb's bytes
//! start at block 1. The header is written on `set_len` and becomes durable with redb's next
//! `sync_data`, which redb always issues before it commits anything that relies on the length.
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;

use super::BlockDevice;

const HEADER: u64 = 4096;
const MAGIC: &[u8; 8] = b"FVOLRDB1";

#[derive(Debug)]
pub struct RegionBackend {
    device: Arc<dyn BlockDevice>,
    start: u64,
    capacity: u64,
    len: Mutex<u64>,
    /// `len`, for watchers outside redb (`RegionBackend::watch`).
    watched: Arc<AtomicU64>,
}

/// The length of a region's database, as its backend last set it, and the region's capacity.
#[derive(Clone, Debug)]
pub struct RegionWatch {
    len: Arc<AtomicU64>,
    capacity: u64,
}

impl RegionWatch {
    pub fn len(&self) -> u64 {
        self.len.load(Ordering::Relaxed)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn capacity(&self) -> u64 {
        self.capacity
    }
}

impl RegionBackend {
    /// Formats `[start, start + size)` as an empty region.
    pub fn format(device: Arc<dyn BlockDevice>, start: u64, size: u64) -> io::Result<Self> {
        let region = Self::new(device, start, size, 0)?;
        region.write_header(0)?;
        region.device.flush()?;
        Ok(region)
    }

    /// Opens a region `format` made; an unformatted one is an error naming the problem.
    pub fn open(device: Arc<dyn BlockDevice>, start: u64, size: u64) -> io::Result<Self> {
        let mut header = [0u8; 16];
        device.read_at(start, &mut header)?;
        if &header[..8] != MAGIC {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "no metadata region at this offset (not formatted by fvol, or damaged)",
            ));
        }
        let len = u64::from_le_bytes(header[8..16].try_into().expect("8 bytes"));
        Self::new(device, start, size, len)
    }

    fn new(device: Arc<dyn BlockDevice>, start: u64, size: u64, len: u64) -> io::Result<Self> {
        let capacity = size
            .checked_sub(HEADER)
            .filter(|_| start + size <= device.size());
        let Some(capacity) = capacity else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "region does not fit the device",
            ));
        };
        if len > capacity {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "region length beyond its capacity",
            ));
        }
        Ok(RegionBackend {
            device,
            start,
            capacity,
            len: Mutex::new(len),
            watched: Arc::new(AtomicU64::new(len)),
        })
    }

    /// A handle that keeps telling the database's length after redb took the backend.
    pub fn watch(&self) -> RegionWatch {
        RegionWatch {
            len: self.watched.clone(),
            capacity: self.capacity,
        }
    }

    fn write_header(&self, len: u64) -> io::Result<()> {
        let mut header = [0u8; 16];
        header[..8].copy_from_slice(MAGIC);
        header[8..].copy_from_slice(&len.to_le_bytes());
        self.device.write_at(self.start, &header)
    }

    fn check(&self, offset: u64, len: usize) -> io::Result<()> {
        match offset.checked_add(len as u64) {
            Some(end) if end <= *self.len.lock() => Ok(()),
            _ => Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "beyond the end of the region",
            )),
        }
    }
}

impl redb::StorageBackend for RegionBackend {
    fn len(&self) -> io::Result<u64> {
        Ok(*self.len.lock())
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> io::Result<()> {
        self.check(offset, out.len())?;
        self.device.read_at(self.start + HEADER + offset, out)
    }

    fn set_len(&self, new_len: u64) -> io::Result<()> {
        if new_len > self.capacity {
            return Err(io::Error::new(
                io::ErrorKind::StorageFull,
                format!("metadata region full ({} bytes)", self.capacity),
            ));
        }
        let mut len = self.len.lock();
        if new_len > *len {
            // New bytes must read as zero; the device may hold old data there.
            let zeros = vec![0u8; 1 << 20];
            let mut at = *len;
            while at < new_len {
                let n = (new_len - at).min(zeros.len() as u64) as usize;
                self.device
                    .write_at(self.start + HEADER + at, &zeros[..n])?;
                at += n as u64;
            }
        }
        self.write_header(new_len)?;
        *len = new_len;
        self.watched.store(new_len, Ordering::Relaxed);
        Ok(())
    }

    fn sync_data(&self) -> io::Result<()> {
        self.device.flush()
    }

    fn write(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        self.check(offset, data.len())?;
        self.device.write_at(self.start + HEADER + offset, data)
    }
}

#[cfg(test)]
mod tests {
    use redb::{Database, Durability, ReadableDatabase, TableDefinition};

    use super::*;
    use crate::fs::image::CrashDevice;

    const T: TableDefinition<u64, u64> = TableDefinition::new("t");

    fn put(db: &Database, k: u64, durability: Durability) {
        let mut tx = db.begin_write().unwrap();
        tx.set_durability(durability).unwrap();
        tx.open_table(T).unwrap().insert(k, k * 10).unwrap();
        tx.commit().unwrap();
    }

    fn keys(db: &Database) -> Vec<u64> {
        let tx = db.begin_read().unwrap();
        let t = tx.open_table(T).unwrap();
        use redb::ReadableTable;
        t.iter().unwrap().map(|e| e.unwrap().0.value()).collect()
    }

    #[test]
    fn database_survives_reopen() {
        let dev = Arc::new(CrashDevice::new(8 << 20));
        let region = RegionBackend::format(dev.clone(), 4096, 4 << 20).unwrap();
        let db = Database::builder().create_with_backend(region).unwrap();
        put(&db, 1, Durability::Immediate);
        drop(db);
        let db = Database::builder()
            .create_with_backend(RegionBackend::open(dev, 4096, 4 << 20).unwrap())
            .unwrap();
        assert_eq!(keys(&db), vec![1]);
    }

    /// A crash at any point loses at most what was not yet durable, and never leaves redb
    /// unreadable, whatever subset of the volatile writes the "disk" happened to keep.
    #[test]
    fn crash_keeps_the_last_durable_commit() {
        for pattern in 0..24u64 {
            let dev = Arc::new(CrashDevice::new(8 << 20));
            let region = RegionBackend::format(dev.clone(), 0, 4 << 20).unwrap();
            let db = Database::builder().create_with_backend(region).unwrap();
            put(&db, 1, Durability::Immediate);
            put(&db, 2, Durability::None);
            put(&db, 3, Durability::None);
            std::mem::forget(db); // a crash: no clean close
            dev.crash(|i| (pattern >> (i % 6)) & 1 == 1);
            let reopened = RegionBackend::open(dev.clone(), 0, 4 << 20).unwrap();
            let db = Database::builder().create_with_backend(reopened).unwrap();
            let got = keys(&db);
            assert!(
                got.starts_with(&[1]),
                "pattern {pattern}: durable key lost: {got:?}"
            );
        }
    }

    /// A region of a power of two plus 1 MiB (as `Layout` sizes them) takes redb's last
    /// doubling step: growth never fails while the length is at most half the region.
    #[test]
    fn last_doubling_step_fits_the_region() {
        const BIG: TableDefinition<u64, &[u8]> = TableDefinition::new("big");
        let size = (8 << 20) + (1 << 20);
        let dev = Arc::new(CrashDevice::new(size + 4096));
        let region = RegionBackend::format(dev, 0, size).unwrap();
        let watch = region.watch();
        let db = Database::builder().create_with_backend(region).unwrap();
        let value = vec![7u8; 3000];
        let mut k = 0u64;
        while watch.len() <= watch.capacity() / 2 {
            let tx = db.begin_write().unwrap();
            {
                let mut t = tx.open_table(BIG).unwrap();
                for _ in 0..64 {
                    t.insert(k, value.as_slice()).unwrap();
                    k += 1;
                }
            }
            tx.commit().unwrap();
        }
        assert!(watch.len() <= watch.capacity(), "{watch:?}");
        assert!(
            watch.len() > 8 << 20,
            "the last step is the power of two: {watch:?}"
        );
    }

    #[test]
    fn unformatted_region_is_refused() {
        let dev = Arc::new(CrashDevice::new(1 << 20));
        let err = RegionBackend::open(dev, 0, 1 << 20).unwrap_err();
        assert!(err.to_string().contains("not formatted"), "{err}");
    }

    #[test]
    fn full_region_reports_storage_full() {
        let dev = Arc::new(CrashDevice::new(1 << 20));
        let region = RegionBackend::format(dev, 0, 1 << 20).unwrap();
        let err = redb::StorageBackend::set_len(&region, 2 << 20).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::StorageFull);
    }
}
