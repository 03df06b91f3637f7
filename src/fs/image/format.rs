//! The image's first block: what makes an image an fvol filesystem.
//!
//! Layout (version 1): block 0 holds the superblock (`MAGIC`, version, image size and a
//! checksum over them); the rest of the image, from `REGION_START`, is a `RegionBackend`
//! holding the filesystem's redb database. Nothing a second host needs lives anywhere else.
use std::io;

use thiserror::Error;

use super::BlockDevice;

pub const MAGIC: &[u8; 8] = b"FVOLIMG\x01";
pub const VERSION: u32 = 1;
pub const REGION_START: u64 = 4096;

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
    #[error("the image is too small for an fvol filesystem ({0} bytes)")]
    TooSmall(u64),
    #[error("image I/O: {0}")]
    Io(#[from] io::Error),
}

/// FNV-1a: enough to tell a damaged superblock from a good one.
fn checksum(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
    })
}

fn encode(size: u64) -> [u8; 32] {
    let mut block = [0u8; 32];
    block[..8].copy_from_slice(MAGIC);
    block[8..12].copy_from_slice(&VERSION.to_le_bytes());
    block[12..20].copy_from_slice(&size.to_le_bytes());
    let sum = checksum(&block[..20]);
    block[20..28].copy_from_slice(&sum.to_le_bytes());
    block
}

/// Writes the superblock of a new filesystem. Refuses when the first block holds anything but
/// zeros: an image with data is never formatted over.
pub fn write_superblock(device: &dyn BlockDevice) -> Result<(), FormatError> {
    let size = device.size();
    if size < 4 << 20 {
        return Err(FormatError::TooSmall(size));
    }
    let mut first = vec![0u8; REGION_START as usize];
    device.read_at(0, &mut first)?;
    if first.iter().any(|&b| b != 0) {
        return Err(FormatError::Foreign);
    }
    device.write_at(0, &encode(size))?;
    Ok(())
}

/// Checks the superblock of an existing filesystem.
pub fn check_superblock(device: &dyn BlockDevice) -> Result<(), FormatError> {
    let mut block = vec![0u8; REGION_START as usize];
    device.read_at(0, &mut block)?;
    if &block[..8] != MAGIC {
        return Err(if block.iter().all(|&b| b == 0) {
            FormatError::NotFormatted
        } else {
            FormatError::Foreign
        });
    }
    let stored = u64::from_le_bytes(block[20..28].try_into().expect("8 bytes"));
    if stored != checksum(&block[..20]) {
        return Err(FormatError::Corrupt("checksum mismatch".into()));
    }
    let version = u32::from_le_bytes(block[8..12].try_into().expect("4 bytes"));
    if version > VERSION {
        return Err(FormatError::TooNew(version));
    }
    let size = u64::from_le_bytes(block[12..20].try_into().expect("8 bytes"));
    if size > device.size() {
        return Err(FormatError::Corrupt(format!(
            "records {size} bytes, the image has {}",
            device.size()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs::image::CrashDevice;

    #[test]
    fn format_then_check() {
        let d = CrashDevice::new(8 << 20);
        assert!(matches!(
            check_superblock(&d),
            Err(FormatError::NotFormatted)
        ));
        write_superblock(&d).unwrap();
        check_superblock(&d).unwrap();
        assert!(
            matches!(write_superblock(&d), Err(FormatError::Foreign)),
            "never formats twice"
        );
    }

    #[test]
    fn damage_and_foreign_data_are_refused() {
        let d = CrashDevice::new(8 << 20);
        d.write_at(100, b"some filesystem").unwrap();
        assert!(matches!(check_superblock(&d), Err(FormatError::Foreign)));
        assert!(matches!(write_superblock(&d), Err(FormatError::Foreign)));
        let d = CrashDevice::new(8 << 20);
        write_superblock(&d).unwrap();
        d.write_at(13, &[0xff]).unwrap();
        assert!(matches!(check_superblock(&d), Err(FormatError::Corrupt(_))));
    }
}
