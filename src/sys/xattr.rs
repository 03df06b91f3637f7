//! Extended attributes by path. Callers pass `/proc/self/fd/N` of an O_PATH descriptor, which
//! reaches the inode itself (also for symlinks), since f*xattr refuse O_PATH descriptors.
use std::ffi::CStr;

use nix::errno::Errno;

fn check(ret: isize) -> Result<usize, Errno> {
    if ret < 0 {
        Err(Errno::last())
    } else {
        Ok(ret as usize)
    }
}

/// With an empty `buf`, returns the size the value needs.
pub fn get(path: &CStr, name: &CStr, buf: &mut [u8]) -> Result<usize, Errno> {
    // SAFETY: path and name are NUL-terminated; the kernel writes at most buf.len() bytes into
    // buf (a null pointer with size 0 asks for the size only).
    check(unsafe {
        libc::getxattr(
            path.as_ptr(),
            name.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    })
}

pub fn set(path: &CStr, name: &CStr, value: &[u8], flags: i32) -> Result<(), Errno> {
    // SAFETY: path and name are NUL-terminated; value is read for value.len() bytes.
    let ret = unsafe {
        libc::setxattr(
            path.as_ptr(),
            name.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            flags,
        )
    };
    check(ret as isize).map(drop)
}

/// With an empty `buf`, returns the size the list needs.
pub fn list(path: &CStr, buf: &mut [u8]) -> Result<usize, Errno> {
    // SAFETY: path is NUL-terminated; the kernel writes at most buf.len() bytes into buf.
    check(unsafe { libc::listxattr(path.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) })
}

pub fn remove(path: &CStr, name: &CStr) -> Result<(), Errno> {
    // SAFETY: path and name are NUL-terminated strings that outlive the call.
    let ret = unsafe { libc::removexattr(path.as_ptr(), name.as_ptr()) };
    check(ret as isize).map(drop)
}
