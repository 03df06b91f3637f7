//! A device that reads through to a read-only one (an image opened at a snapshot) and keeps
//! every write in memory: opening a filesystem taken mid-use recovers it (redb's repair,
//! orphans), and those writes must not reach the snapshot. Only what opening and reading
//! write lands here: a few pages of metadata.
use std::collections::HashMap;
use std::io;
use std::sync::Arc;

use parking_lot::Mutex;

use super::BlockDevice;
use super::device::check_range;

const PAGE: u64 = 4096;

#[derive(Debug)]
pub struct OverlayDevice {
    base: Arc<dyn BlockDevice>,
    /// Written pages, by page number.
    pages: Mutex<HashMap<u64, Box<[u8]>>>,
}

impl OverlayDevice {
    pub fn new(base: Arc<dyn BlockDevice>) -> OverlayDevice {
        OverlayDevice {
            base,
            pages: Mutex::new(HashMap::new()),
        }
    }

    /// Lays the written pages over `out`, which holds the base's bytes from `offset`.
    fn patch(&self, offset: u64, out: &mut [u8]) {
        let pages = self.pages.lock();
        if pages.is_empty() || out.is_empty() {
            return;
        }
        let end = offset + out.len() as u64;
        for n in offset / PAGE..end.div_ceil(PAGE) {
            let Some(page) = pages.get(&n) else { continue };
            let start = (n * PAGE).max(offset);
            let stop = ((n + 1) * PAGE).min(end);
            out[(start - offset) as usize..(stop - offset) as usize]
                .copy_from_slice(&page[(start - n * PAGE) as usize..(stop - n * PAGE) as usize]);
        }
    }
}

impl BlockDevice for OverlayDevice {
    fn size(&self) -> u64 {
        self.base.size()
    }
    fn read_at(&self, offset: u64, out: &mut [u8]) -> io::Result<()> {
        self.base.read_at(offset, out)?;
        self.patch(offset, out);
        Ok(())
    }
    fn read_data(&self, offset: u64, out: &mut [u8]) -> io::Result<()> {
        self.base.read_data(offset, out)?;
        self.patch(offset, out);
        Ok(())
    }
    fn write_at(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        check_range(self.size(), offset, data.len())?;
        let end = offset + data.len() as u64;
        for n in offset / PAGE..end.div_ceil(PAGE) {
            let start = (n * PAGE).max(offset);
            let stop = ((n + 1) * PAGE).min(end);
            let mut pages = self.pages.lock();
            if !pages.contains_key(&n) {
                drop(pages);
                let len = PAGE.min(self.size() - n * PAGE) as usize;
                let mut page = vec![0u8; len];
                self.read_at(n * PAGE, &mut page)?;
                pages = self.pages.lock();
                pages.entry(n).or_insert(page.into_boxed_slice());
            }
            let page = pages.get_mut(&n).expect("inserted above");
            page[(start - n * PAGE) as usize..(stop - n * PAGE) as usize]
                .copy_from_slice(&data[(start - offset) as usize..(stop - offset) as usize]);
        }
        Ok(())
    }
    fn submit_write(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        self.write_at(offset, data)
    }
    /// Nothing written here is ever to be durable.
    fn flush(&self) -> io::Result<()> {
        Ok(())
    }
    fn wait_limit(&self) -> Option<std::time::Duration> {
        self.base.wait_limit()
    }
    fn health(&self) -> crate::fs::Health {
        self.base.health()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs::image::FileDevice;

    #[test]
    fn writes_stay_in_memory_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("img");
        std::fs::write(&path, vec![7u8; 3 * PAGE as usize + 100]).unwrap();
        let base: Arc<dyn BlockDevice> = Arc::new(FileDevice::open(&path).unwrap());
        let o = OverlayDevice::new(base);
        o.write_at(PAGE - 10, &[1u8; 20]).unwrap();
        o.write_at(3 * PAGE + 90, &[2u8; 10]).unwrap();
        let mut all = vec![0u8; 3 * PAGE as usize + 100];
        o.read_at(0, &mut all).unwrap();
        let mut want = vec![7u8; 3 * PAGE as usize + 100];
        want[PAGE as usize - 10..PAGE as usize + 10].fill(1);
        want[3 * PAGE as usize + 90..].fill(2);
        assert_eq!(all, want);
        assert!(o.write_at(3 * PAGE + 95, &[0u8; 10]).is_err());
        assert_eq!(
            std::fs::read(&path).unwrap(),
            vec![7u8; 3 * PAGE as usize + 100]
        );
    }
}
