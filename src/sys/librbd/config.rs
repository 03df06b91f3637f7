//! An open image's effective configuration (`rbd config image list`): the value of an option
//! after the image's and its pool's overrides of ceph.conf.
use std::ffi::{CStr, c_char, c_int};

use super::{Image, RbdError, check};

/// `rbd_config_option_t` of librbd.h (since Ceph 14): `name` and `value` are librbd's
/// allocations, released by `rbd_config_image_list_cleanup`.
#[repr(C)]
pub(super) struct ConfigOptionT {
    name: *mut c_char,
    value: *mut c_char,
    /// `rbd_config_source_t`: ceph.conf (0), the pool (1) or the image (2).
    source: c_int,
}

impl ConfigOptionT {
    fn empty() -> ConfigOptionT {
        ConfigOptionT {
            name: std::ptr::null_mut(),
            value: std::ptr::null_mut(),
            source: 0,
        }
    }
}

impl Image {
    /// The value librbd uses for `option` on this image (`None`: librbd has no such option).
    pub fn option_value(&self, option: &str) -> Result<Option<String>, RbdError> {
        let api = self.api();
        // librbd answers -ERANGE with the count it needs (about a hundred options).
        let mut capacity: c_int = 256;
        for _ in 0..4 {
            let mut list: Vec<ConfigOptionT> =
                (0..capacity).map(|_| ConfigOptionT::empty()).collect();
            let mut count = capacity;
            let call = self.activity.call("rbd_config_image_list");
            // SAFETY: the image is open; `list` holds `count` writable entries and librbd
            // writes at most that many (it returns -ERANGE with the count it needs otherwise).
            let ret =
                unsafe { (api.rbd_config_image_list)(self.handle, list.as_mut_ptr(), &mut count) };
            let ret = call.done(ret.into());
            if ret == -(libc::ERANGE as i64) {
                capacity = count.max(capacity * 2);
                continue;
            }
            check(ret, "rbd_config_image_list", || self.target.clone())?;
            let count = count.clamp(0, capacity);
            let value = list[..count as usize].iter().find_map(|o| {
                // SAFETY: librbd filled the first `count` entries with NUL-terminated strings
                // (or null), which live until the cleanup below.
                let name = unsafe { (!o.name.is_null()).then(|| CStr::from_ptr(o.name)) }?;
                (name.to_bytes() == option.as_bytes()).then(|| {
                    // SAFETY: as for the name.
                    let value = unsafe { (!o.value.is_null()).then(|| CStr::from_ptr(o.value)) };
                    value.map_or_else(String::new, |v| v.to_string_lossy().into_owned())
                })
            });
            // SAFETY: the first `count` entries are librbd's; released exactly once, here, and
            // not read afterwards.
            unsafe { (api.rbd_config_image_list_cleanup)(list.as_mut_ptr(), count) };
            return Ok(value);
        }
        Err(self.fail(
            "rbd_config_image_list (the options kept changing)",
            libc::EAGAIN,
        ))
    }
}
