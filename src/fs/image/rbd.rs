//! A `BlockDevice` over a Ceph RBD image (through librbd, `crate::sys::librbd`).
use std::io;

use super::BlockDevice;
use super::device::check_range;
use crate::sys::librbd::{Image, RbdError};

/// An RBD image as a block device. Its size is the image's size when it was opened (fvol never
/// resizes an image under an open device); `flush` is `rbd_flush`.
///
/// I/O errors keep librbd's message (call, pool, image) and the errno's `io::ErrorKind`, but
/// not a raw errno, so the filesystem reports them as EIO, as a failing disk would.
#[derive(Debug)]
pub struct RbdDevice {
    image: Image,
    size: u64,
}

impl RbdDevice {
    pub fn new(image: Image) -> Result<RbdDevice, RbdError> {
        let size = image.size()?;
        Ok(RbdDevice { image, size })
    }

    /// The image, for what is not block I/O (its advisory lock).
    pub fn image(&self) -> &Image {
        &self.image
    }

    pub fn into_image(self) -> Image {
        self.image
    }
}

impl BlockDevice for RbdDevice {
    fn size(&self) -> u64 {
        self.size
    }
    fn read_at(&self, offset: u64, out: &mut [u8]) -> io::Result<()> {
        check_range(self.size, offset, out.len())?;
        Ok(self.image.read_at(offset, out)?)
    }
    fn write_at(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        check_range(self.size, offset, data.len())?;
        Ok(self.image.write_at(offset, data)?)
    }
    fn flush(&self) -> io::Result<()> {
        Ok(self.image.flush()?)
    }
}
