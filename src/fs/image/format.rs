//! The image's first block, and where everything else lies: what makes an image an fvol
//! filesystem.
//!
//! Layout (format 2):
//! - block 0: the superblock (`MAGIC`, the format version, the image size, the metadata region's
//!   size, where the data region starts, the block size, and a checksum over them);
//! - the metadata region, from `META_START`: a `RegionBackend` holding the redb database (inodes,
//!   directory entries, xattrs, extent maps, the free-space map, counters), of a size fixed when
//!   the image is formatted (`Layout::for_image`);
//! - the data region, from `data_start` (aligned to 4 MiB, the RBD object size) to the end of
//!   the image: file data in `BLOCK`-sized blocks, allocated as extents.
//!
//! Format 1 kept file data inside the database; fvol no longer reads it.
use std::io;

use thiserror::Error;

use super::BlockDevice;

pub const MAGIC: &[u8; 8] = b"FVOLIMG\x01";
pub const VERSION: u32 = 2;
/// The unit of allocation and of usage in the data region.
pub const BLOCK: u64 = 4096;
pub const META_START: u64 = 4096;
/// The data region starts on an RBD object boundary, so large writes split into few objects.
const DATA_ALIGN: u64 = 4 << 20;
/// The smallest image fvol formats.
pub const MIN_IMAGE: u64 = 16 << 20;

/// Bytes of metadata a file may use on average: its inode record, its name, a few extents and
/// xattrs, with the B-tree's slack (measured: about 110 for files with 20-character names).
const META_PER_INODE: u64 = 384;
/// redb's storage starts at 1 MiB and doubles; its last step must end inside the region, after
/// redb's own header pages (a few KiB per doubling; this is ample).
const META_SLACK: u64 = 1 << 20;
const META_MIN: u64 = 1 << 20;
/// Past 4 GiB redb grows by whole regions instead of doubling; stay below.
const META_MAX: u64 = 2 << 30;
/// By default the metadata may take up to this fraction of the image (1/40: 2.5 %).
const META_SHARE: u64 = 40;

#[derive(Debug, Error)]
pub enum FormatError {
    #[error("the image is not an fvol filesystem (no fvol superblock); it is left untouched")]
    NotFormatted,
    #[error("the image holds data that is not an fvol filesystem; fvol will not format over it")]
    Foreign,
    #[error("the fvol superblock is damaged ({0}); the image is left untouched")]
    Corrupt(String),
    #[error("the image was made by a newer fvol (format {0}, this one reads {VERSION})")]
    TooNew(u32),
    #[error(
        "the image has fvol format {0}, which this fvol no longer reads (it reads format \
         {VERSION}); it is left untouched: copy its files out with the fvol that made it"
    )]
    TooOld(u32),
    #[error("the image is too small for an fvol filesystem ({0} bytes, at least {MIN_IMAGE})")]
    TooSmall(u64),
    #[error("image I/O: {0}")]
    Io(#[from] io::Error),
}

/// Where the regions of a formatted image lie.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    pub image_size: u64,
    /// Bytes of the metadata region (its header block included), from `META_START`; at least
    /// `META_MIN + META_SLACK`.
    pub meta_size: u64,
    /// Start of the data region; block 0 of the data region is here.
    pub data_start: u64,
}

impl Layout {
    /// The layout for a new image of `image_size` bytes with an inode limit of `inodes`.
    ///
    /// The metadata region holds `usable` bytes of redb storage, a power of two (redb's storage
    /// starts at 1 MiB and doubles, so its last step fills exactly that), plus `META_SLACK`.
    /// Without `inodes`, `usable` is the largest power of two within 1/40 of the image and the
    /// inode limit follows from it; with `inodes`, the smallest that holds them. Either way the
    /// region is at most a quarter of the image.
    pub fn for_image(image_size: u64, inodes: Option<u64>) -> Result<Layout, FormatError> {
        if image_size < MIN_IMAGE {
            return Err(FormatError::TooSmall(image_size));
        }
        let floor_pow2 = |n: u64| {
            if n == 0 {
                0
            } else {
                1 << (63 - n.leading_zeros())
            }
        };
        let most = floor_pow2(image_size / 4 - META_SLACK).clamp(META_MIN, META_MAX);
        let usable = match inodes {
            None => floor_pow2(image_size / META_SHARE),
            // Room for the inodes within 7/8 of it (the rest is the margin; see `Room`).
            Some(n) => (n.saturating_mul(META_PER_INODE) / 7 * 8).next_power_of_two(),
        };
        Layout::new(image_size, usable.clamp(META_MIN, most) + META_SLACK)
    }

    fn new(image_size: u64, meta_size: u64) -> Result<Layout, FormatError> {
        let data_start = (META_START + meta_size).div_ceil(DATA_ALIGN) * DATA_ALIGN;
        if data_start + DATA_ALIGN > image_size {
            return Err(FormatError::TooSmall(image_size));
        }
        Ok(Layout {
            image_size,
            meta_size,
            data_start,
        })
    }

    /// Blocks in the data region.
    pub fn data_blocks(&self) -> u64 {
        (self.image_size - self.data_start) / BLOCK
    }

    /// Bytes files may hold: the whole data region.
    pub fn capacity(&self) -> u64 {
        self.data_blocks() * BLOCK
    }

    /// The inode count the metadata region was sized for.
    pub fn inodes(&self) -> u64 {
        ((self.meta_size - META_SLACK) / 8 * 7 / META_PER_INODE).max(1)
    }

    /// Device offset of data block `block`.
    pub fn block_offset(&self, block: u64) -> u64 {
        self.data_start + block * BLOCK
    }
}

/// FNV-1a: enough to tell a damaged superblock from a good one.
fn checksum(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
    })
}

/// Superblock fields (little endian): magic 0..8, version 8..12, image size 12..20, metadata
/// region size 20..28, data start 28..36, block size 36..40, checksum of 0..40 at 40..48.
const SUM_AT: usize = 40;

fn encode(layout: &Layout) -> [u8; 48] {
    let mut block = [0u8; 48];
    block[..8].copy_from_slice(MAGIC);
    block[8..12].copy_from_slice(&VERSION.to_le_bytes());
    block[12..20].copy_from_slice(&layout.image_size.to_le_bytes());
    block[20..28].copy_from_slice(&layout.meta_size.to_le_bytes());
    block[28..36].copy_from_slice(&layout.data_start.to_le_bytes());
    block[36..40].copy_from_slice(&(BLOCK as u32).to_le_bytes());
    let sum = checksum(&block[..SUM_AT]);
    block[SUM_AT..].copy_from_slice(&sum.to_le_bytes());
    block
}

fn u64_at(block: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(block[at..at + 8].try_into().expect("8 bytes"))
}

/// Writes the superblock of a new filesystem with `layout`. Refuses when the first block holds
/// anything but zeros: an image with data is never formatted over.
pub fn write_superblock(device: &dyn BlockDevice, layout: &Layout) -> Result<(), FormatError> {
    let mut first = vec![0u8; META_START as usize];
    device.read_at(0, &mut first)?;
    if first.iter().any(|&b| b != 0) {
        return Err(FormatError::Foreign);
    }
    device.write_at(0, &encode(layout))?;
    Ok(())
}

/// Rewrites the superblock of a filesystem whose image grew (`layout` differs only in
/// `image_size`), and flushes it.
pub fn rewrite_superblock(device: &dyn BlockDevice, layout: &Layout) -> Result<(), FormatError> {
    device.write_at(0, &encode(layout))?;
    device.flush()?;
    Ok(())
}

/// Checks the superblock of an existing filesystem and returns its layout.
pub fn check_superblock(device: &dyn BlockDevice) -> Result<Layout, FormatError> {
    let mut block = vec![0u8; META_START as usize];
    device.read_at(0, &mut block)?;
    if &block[..8] != MAGIC {
        return Err(if block.iter().all(|&b| b == 0) {
            FormatError::NotFormatted
        } else {
            FormatError::Foreign
        });
    }
    let version = u32::from_le_bytes(block[8..12].try_into().expect("4 bytes"));
    // Format 1 kept its checksum at 20..28 over 0..20.
    let (sum_at, valid) = match version {
        1 => (20, u64_at(&block, 20) == checksum(&block[..20])),
        _ => (SUM_AT, u64_at(&block, SUM_AT) == checksum(&block[..SUM_AT])),
    };
    if !valid {
        return Err(FormatError::Corrupt(format!(
            "checksum mismatch at byte {sum_at}"
        )));
    }
    match version {
        VERSION => {}
        v if v > VERSION => return Err(FormatError::TooNew(v)),
        v => return Err(FormatError::TooOld(v)),
    }
    let layout = Layout {
        image_size: u64_at(&block, 12),
        meta_size: u64_at(&block, 20),
        data_start: u64_at(&block, 28),
    };
    let block_size = u32::from_le_bytes(block[36..40].try_into().expect("4 bytes")) as u64;
    let bad = |what: String| Err(FormatError::Corrupt(what));
    if layout.image_size > device.size() {
        return bad(format!(
            "records {} bytes, the image has {}",
            layout.image_size,
            device.size()
        ));
    }
    if block_size != BLOCK
        || layout.meta_size < META_MIN + META_SLACK
        || layout.data_start < META_START + layout.meta_size
        || layout.data_start % BLOCK != 0
        || layout.data_start >= layout.image_size
    {
        return bad(format!(
            "impossible layout {layout:?}, block size {block_size}"
        ));
    }
    Ok(layout)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs::image::CrashDevice;

    #[test]
    fn format_then_check() {
        let d = CrashDevice::new(64 << 20);
        assert!(matches!(
            check_superblock(&d),
            Err(FormatError::NotFormatted)
        ));
        let layout = Layout::for_image(d.size(), None).unwrap();
        write_superblock(&d, &layout).unwrap();
        assert_eq!(check_superblock(&d).unwrap(), layout);
        assert!(
            matches!(write_superblock(&d, &layout), Err(FormatError::Foreign)),
            "never formats twice"
        );
    }

    #[test]
    fn damage_and_foreign_data_are_refused() {
        let d = CrashDevice::new(64 << 20);
        d.write_at(100, b"some filesystem").unwrap();
        assert!(matches!(check_superblock(&d), Err(FormatError::Foreign)));
        let layout = Layout::for_image(d.size(), None).unwrap();
        assert!(matches!(
            write_superblock(&d, &layout),
            Err(FormatError::Foreign)
        ));
        let d = CrashDevice::new(64 << 20);
        write_superblock(&d, &layout).unwrap();
        d.write_at(13, &[0xff]).unwrap();
        assert!(matches!(check_superblock(&d), Err(FormatError::Corrupt(_))));
    }

    /// A format-1 superblock (fvol before extents) is refused, naming its version.
    #[test]
    fn format_1_is_refused_by_version() {
        let d = CrashDevice::new(64 << 20);
        let mut block = [0u8; 28];
        block[..8].copy_from_slice(MAGIC);
        block[8..12].copy_from_slice(&1u32.to_le_bytes());
        block[12..20].copy_from_slice(&(64u64 << 20).to_le_bytes());
        let sum = checksum(&block[..20]);
        block[20..28].copy_from_slice(&sum.to_le_bytes());
        d.write_at(0, &block).unwrap();
        let err = check_superblock(&d).unwrap_err();
        assert!(matches!(err, FormatError::TooOld(1)), "{err}");
        assert!(err.to_string().contains("format 1"), "{err}");
    }

    #[test]
    fn layouts_leave_most_of_the_image_to_data() {
        for (size, min_share) in [(16u64 << 20, 0.7), (256 << 20, 0.95), (10 << 30, 0.97)] {
            let l = Layout::for_image(size, None).unwrap();
            let share = l.capacity() as f64 / size as f64;
            assert!(share >= min_share, "{size}: {l:?} gives data {share}");
            assert_eq!(l.data_start % DATA_ALIGN, 0);
            assert!(l.data_start >= META_START + l.meta_size);
        }
        assert!(matches!(
            Layout::for_image(1 << 20, None),
            Err(FormatError::TooSmall(_))
        ));
    }
}
