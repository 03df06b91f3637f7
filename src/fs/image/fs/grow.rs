//! Online resize: new quota limits, and a bigger image with the data region grown into it.
//!
//! Growing, in this order: the device grows (`rbd_resize`; nothing refers to the new bytes
//! yet), then one durable transaction adds the new blocks to the free map and records the
//! data region's length (`DATA_BLOCKS`): that commit is the grow. Only then is the
//! superblock rewritten with the new image size. A crash before the commit leaves the old
//! filesystem on a bigger image (grown again by the next resize); a crash after it leaves a
//! superblock that is behind the counter, which `finish_grow` rewrites at the next open.
//! So the allocator never hands out a block that a durable state does not have.
//!
//! An image never shrinks (that would move data); a smaller `size=` only lowers the quota.
use std::sync::atomic::Ordering;

use super::alloc::{self, Run};
use super::store::{COUNTERS, Ctx, DATA_BLOCKS};
use super::{ImageError, Inner, meta};
use crate::fs::image::format::{self, BLOCK, Layout};
use crate::fs::quota::{Limits, Resize, ResizeError};
use crate::fs::{FsError, FsResult};

impl Inner {
    /// The data region's blocks now.
    pub(super) fn data_blocks(&self) -> u64 {
        self.data_blocks.load(Ordering::Acquire)
    }

    /// Files may hold this much: the whole data region.
    fn capacity(&self) -> u64 {
        self.data_blocks() * BLOCK
    }

    /// The quota for `limits` on a data region of `capacity` bytes (see `ImageFs::open`).
    pub(super) fn effective_limits(&self, limits: Limits, capacity: u64) -> Limits {
        Limits {
            bytes: Some(limits.bytes.map_or(capacity, |b| b.min(capacity))),
            inodes: Some(limits.inodes.unwrap_or(self.layout.inodes())),
        }
    }

    pub(super) fn resize_online(&self, to: &Resize) -> Result<(), ResizeError> {
        // Refused before the image changes; `set_limits` checks again, atomically.
        let used = self.quota.usage();
        if to.limits.bytes.is_some_and(|b| b < used.bytes)
            || to.limits.inodes.is_some_and(|i| i < used.inodes)
        {
            return Err(ResizeError::BelowUsage(used));
        }
        if let Some(size) = to.image_size {
            self.grow_image(size)?;
        }
        let limits = self.effective_limits(to.limits, self.capacity());
        self.quota
            .set_limits(limits)
            .map_err(ResizeError::BelowUsage)
    }

    /// Grows the image to `size` bytes and the data region to its end (nothing when it is
    /// that big already).
    fn grow_image(&self, size: u64) -> FsResult<()> {
        let grown = Layout {
            image_size: size,
            ..self.layout
        };
        let (old, new) = (self.data_blocks(), grown.data_blocks());
        if size <= self.layout.data_start || new <= old {
            return Ok(());
        }
        self.device.grow(size)?;
        // Committed, then made durable: the durable commit is the grow (a crash before it
        // loses the transaction with everything that used its blocks).
        self.transact(|t| {
            alloc::add_new_blocks(
                t,
                Run {
                    start: old,
                    len: new - old,
                },
            )?;
            t.tx.open_table(COUNTERS)
                .io()?
                .insert(DATA_BLOCKS, new)
                .io()?;
            Ok(())
        })?;
        self.commit_durably()?;
        self.data_blocks.store(new, Ordering::Release);
        format::rewrite_superblock(self.device.as_ref(), &grown).map_err(|e| match e {
            format::FormatError::Io(e) => FsError::from(e),
            _ => FsError::Os(nix::errno::Errno::EIO),
        })?;
        log::info!(
            "image grown to {size} bytes: {} data blocks (were {old})",
            new
        );
        Ok(())
    }

    /// At open: the data region's length, from `DATA_BLOCKS` (recorded from the superblock
    /// for an image that never grew), and a superblock that a crash left behind a grow's
    /// commit rewritten.
    pub(super) fn finish_grow(&self) -> Result<u64, ImageError> {
        let recorded = self
            .transact(|t| t.counter(DATA_BLOCKS))
            .map_err(|e| meta(format!("{e:?}")))?;
        let from_superblock = self.layout.data_blocks();
        if recorded == 0 {
            self.transact(|t| {
                let mut c = t.tx.open_table(COUNTERS).io()?;
                c.insert(DATA_BLOCKS, from_superblock).io()?;
                Ok(())
            })
            .and_then(|()| self.commit_durably())
            .map_err(|e| meta(format!("{e:?}")))?;
            return Ok(from_superblock);
        }
        if recorded > from_superblock {
            let grown = Layout {
                image_size: self.layout.data_start + recorded * BLOCK,
                ..self.layout
            };
            if grown.image_size > self.device.size() {
                return Err(meta(format!(
                    "the data region has {recorded} blocks, but the image ends at {} bytes",
                    self.device.size()
                )));
            }
            log::info!("image: finishing a grow to {} bytes", grown.image_size);
            format::rewrite_superblock(self.device.as_ref(), &grown)?;
        }
        Ok(recorded)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::fs::image::{BlockDevice, FileDevice, ImageFs, fsck};
    use crate::fs::memory::RootOwner;
    use crate::fs::{Caller, ROOT_INO, VolumeFs};

    const MIB: u64 = 1 << 20;

    fn fill(fs: &ImageFs, name: &str) -> u64 {
        let caller = Caller {
            uid: 0,
            gid: 0,
            pid: 1,
            umask: 0,
        };
        let (entry, opened) = fs
            .create(&caller, ROOT_INO, name.as_ref(), 0o644, libc::O_WRONLY)
            .unwrap();
        let chunk = vec![7u8; MIB as usize];
        let mut at = 0;
        loop {
            match fs.write(entry.attr.ino, opened.fh, at, &chunk, false) {
                Ok(n) => at += n as u64,
                Err(FsError::NoSpace) => break,
                Err(e) => panic!("{e:?}"),
            }
        }
        fs.release(entry.attr.ino, opened.fh).unwrap();
        at
    }

    fn resize(size: u64) -> Resize {
        Resize {
            limits: Limits::default(),
            image_size: Some(size),
        }
    }

    /// A grown image takes more data at once, durably; a superblock a crash left behind the
    /// grow's commit is rewritten at the next open; fsck finds nothing wrong either way.
    #[test]
    fn growing_adds_the_new_blocks_durably() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("image");
        let device: Arc<dyn BlockDevice> = Arc::new(FileDevice::create(&path, 32 * MIB).unwrap());
        let root = RootOwner {
            uid: 0,
            gid: 0,
            mode: 0o755,
        };
        ImageFs::format(device.clone(), root, None).unwrap();
        let old_layout = format::check_superblock(device.as_ref()).unwrap();
        let fs = ImageFs::open(device.clone(), Limits::default()).unwrap();
        let first = fill(&fs, "a");
        assert_eq!(first, old_layout.capacity());
        fs.resize(&resize(64 * MIB)).unwrap();
        assert_eq!(fs.limits().bytes, Some(fs.capacity()));
        let second = fill(&fs, "b");
        assert_eq!(first + second, fs.capacity());
        assert_eq!(fs.capacity(), old_layout.capacity() + 32 * MIB);
        // A smaller image size than the image's changes nothing.
        fs.resize(&resize(48 * MIB)).unwrap();
        assert_eq!(device.size(), 64 * MIB);
        fs.sync_all().unwrap();
        drop(fs);
        assert!(fsck(device.clone()).unwrap().problems.is_empty());

        // The crash between the grow's commit and its superblock.
        format::rewrite_superblock(device.as_ref(), &old_layout).unwrap();
        let report = fsck(device.clone()).unwrap();
        assert!(report.problems.is_empty(), "{:?}", report.problems);
        let fs = ImageFs::open(device.clone(), Limits::default()).unwrap();
        assert_eq!(fs.limits().bytes, Some(old_layout.capacity() + 32 * MIB));
        drop(fs);
        let grown = format::check_superblock(device.as_ref()).unwrap();
        assert_eq!(grown.image_size, 64 * MIB);
    }

    /// Limits below the usage are refused and change nothing; above it they hold at once.
    #[test]
    fn new_limits_hold_at_once_and_never_below_the_usage() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("image");
        let device: Arc<dyn BlockDevice> = Arc::new(FileDevice::create(&path, 32 * MIB).unwrap());
        let root = RootOwner {
            uid: 0,
            gid: 0,
            mode: 0o755,
        };
        ImageFs::format(device.clone(), root, None).unwrap();
        let fs = ImageFs::open(device, Limits::default()).unwrap();
        let limited = |bytes| Resize {
            limits: Limits {
                bytes: Some(bytes),
                inodes: None,
            },
            image_size: None,
        };
        fs.resize(&limited(4 * MIB)).unwrap();
        assert_eq!(fill(&fs, "a"), 4 * MIB);
        let before = fs.limits();
        assert!(matches!(
            fs.resize(&limited(2 * MIB)),
            Err(ResizeError::BelowUsage(u)) if u.bytes == 4 * MIB
        ));
        assert_eq!(fs.limits(), before);
        fs.resize(&limited(6 * MIB)).unwrap();
        assert_eq!(fill(&fs, "b"), 2 * MIB);
    }
}
