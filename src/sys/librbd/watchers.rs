//! Who has an image open: every librbd client that opens an image watches its header object
//! until it closes it, or until the OSD gives up on a client that stopped answering (30 s,
//! `osd_client_watch_timeout`). A lock holder that no longer watches is gone.
use std::ffi::c_char;

use super::{Image, RbdError, check};

/// `rbd_image_watcher_t` of librbd.h (since Ceph 13): `addr` is librbd's `strdup`, released by
/// `rbd_watchers_list_cleanup`.
#[repr(C)]
pub(super) struct WatcherT {
    addr: *mut c_char,
    id: i64,
    cookie: u64,
}

impl WatcherT {
    fn empty() -> WatcherT {
        WatcherT {
            addr: std::ptr::null_mut(),
            id: 0,
            cookie: 0,
        }
    }
}

impl Image {
    /// The rados client ids of the image's watchers (`client.4123` watches as 4123).
    pub fn watcher_ids(&self) -> Result<Vec<i64>, RbdError> {
        let api = self.api();
        let mut capacity = 8;
        // librbd answers -ERANGE with the count it needs; the watchers can change in between.
        for _ in 0..8 {
            let mut list: Vec<WatcherT> = (0..capacity).map(|_| WatcherT::empty()).collect();
            let mut count = capacity;
            let call = self.activity.call("rbd_watchers_list");
            // SAFETY: the image is open; `list` holds `count` writable entries and librbd writes
            // at most that many (it returns -ERANGE with the count it needs otherwise).
            let ret =
                unsafe { (api.rbd_watchers_list)(self.handle, list.as_mut_ptr(), &mut count) };
            let ret = call.done(ret.into());
            if ret == -(libc::ERANGE as i64) {
                capacity = count.max(capacity * 2);
                continue;
            }
            check(ret, "rbd_watchers_list", || self.target.clone())?;
            let count = count.min(capacity);
            let ids = list[..count].iter().map(|w| w.id).collect();
            // SAFETY: librbd filled the first `count` entries (each `addr` its own allocation);
            // they are released exactly once, here, and not read afterwards.
            unsafe { (api.rbd_watchers_list_cleanup)(list.as_mut_ptr(), count) };
            return Ok(ids);
        }
        Err(self.fail("rbd_watchers_list (watchers kept changing)", libc::EAGAIN))
    }
}
