//! Image snapshots and clones (librbd of Ceph 16, pacific, or newer): create, list, remove and
//! roll back snapshots, open an image read-only at one, and clone one with clone format 2 (the
//! child needs no protected snapshot and no flatten; a parent snapshot removed while children
//! use it moves to the trash namespace until the last child is gone).
use std::ffi::{CStr, c_char, c_int, c_void};
use std::ptr;

use libloading::Library;

use super::{Image, ImageT, IoCtx, IoCtxT, RbdError, c_string, check};

/// `rbd_snap_info_t`.
#[repr(C)]
pub(super) struct SnapInfoT {
    id: u64,
    size: u64,
    name: *const c_char,
}

/// `rbd_linked_image_spec_t`.
#[repr(C)]
pub(super) struct LinkedImageT {
    pool_id: i64,
    pool_name: *mut c_char,
    pool_namespace: *mut c_char,
    image_id: *mut c_char,
    image_name: *mut c_char,
    trash: bool,
}

type OptionsT = *mut c_void;
type ProgressFn = extern "C" fn(u64, u64, *mut c_void) -> c_int;

/// `RBD_SNAP_CREATE_SKIP_QUIESCE`: fvol holds its writes itself (the gate) and has no
/// quiesce watchers to ask.
const SNAP_CREATE_SKIP_QUIESCE: u32 = 1 << 0;
/// `RBD_IMAGE_OPTION_FEATURES` and `RBD_IMAGE_OPTION_CLONE_FORMAT` of librbd.h.
const IMAGE_OPTION_FEATURES: c_int = 1;
const IMAGE_OPTION_CLONE_FORMAT: c_int = 12;

/// The snapshot entry points; loaded apart from the rest, so that a Ceph older than 16 still
/// serves volumes and only snapshots fail, naming the release they need.
pub(super) struct SnapApi {
    rbd_snap_create2:
        unsafe extern "C" fn(ImageT, *const c_char, u32, ProgressFn, *mut c_void) -> c_int,
    rbd_snap_remove: unsafe extern "C" fn(ImageT, *const c_char) -> c_int,
    rbd_snap_rollback: unsafe extern "C" fn(ImageT, *const c_char) -> c_int,
    rbd_snap_list: unsafe extern "C" fn(ImageT, *mut SnapInfoT, *mut c_int) -> c_int,
    rbd_snap_list_end: unsafe extern "C" fn(*mut SnapInfoT),
    rbd_open_read_only:
        unsafe extern "C" fn(IoCtxT, *const c_char, *mut ImageT, *const c_char) -> c_int,
    rbd_image_options_create: unsafe extern "C" fn(*mut OptionsT),
    rbd_image_options_destroy: unsafe extern "C" fn(OptionsT),
    rbd_image_options_set_uint64: unsafe extern "C" fn(OptionsT, c_int, u64) -> c_int,
    rbd_clone3: unsafe extern "C" fn(
        IoCtxT,
        *const c_char,
        *const c_char,
        IoCtxT,
        *const c_char,
        OptionsT,
    ) -> c_int,
    rbd_list_children3: unsafe extern "C" fn(ImageT, *mut LinkedImageT, *mut usize) -> c_int,
    rbd_linked_image_spec_list_cleanup: unsafe extern "C" fn(*mut LinkedImageT, usize),
}

impl SnapApi {
    /// `None` when a symbol is missing (Ceph before 16).
    pub(super) fn load(lib: &Library) -> Option<SnapApi> {
        macro_rules! sym {
            ($name:ident) => {
                // SAFETY: the field's type (inferred from the struct) is the C signature of
                // `$name` in librbd.h of Ceph 16 and later; the Library is kept in the same
                // static `Api` as this struct and never unloaded.
                *unsafe { lib.get(stringify!($name)) }.ok()?
            };
        }
        Some(SnapApi {
            rbd_snap_create2: sym!(rbd_snap_create2),
            rbd_snap_remove: sym!(rbd_snap_remove),
            rbd_snap_rollback: sym!(rbd_snap_rollback),
            rbd_snap_list: sym!(rbd_snap_list),
            rbd_snap_list_end: sym!(rbd_snap_list_end),
            rbd_open_read_only: sym!(rbd_open_read_only),
            rbd_image_options_create: sym!(rbd_image_options_create),
            rbd_image_options_destroy: sym!(rbd_image_options_destroy),
            rbd_image_options_set_uint64: sym!(rbd_image_options_set_uint64),
            rbd_clone3: sym!(rbd_clone3),
            rbd_list_children3: sym!(rbd_list_children3),
            rbd_linked_image_spec_list_cleanup: sym!(rbd_linked_image_spec_list_cleanup),
        })
    }
}

fn snap_api(api: &'static super::Api) -> Result<&'static SnapApi, RbdError> {
    api.snap.as_ref().ok_or_else(|| RbdError::LibraryMissing {
        library: super::LIBRBD.0,
        package: super::LIBRBD.1,
        reason: "it lacks rbd_snap_create2 or rbd_clone3: snapshots and clones need Ceph 16 \
                 (pacific) or newer"
            .into(),
    })
}

extern "C" fn no_progress(_: u64, _: u64, _: *mut c_void) -> c_int {
    0
}

/// A snapshot as `rbd snap ls` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapInfo {
    pub id: u64,
    /// The image's size when it was taken.
    pub size: u64,
    pub name: String,
}

impl Image {
    fn snap_call(
        &self,
        op: &'static str,
        snap: &str,
        f: impl FnOnce(&SnapApi, *const c_char) -> c_int,
    ) -> Result<(), RbdError> {
        let api = snap_api(self.api())?;
        let target = || format!("{} snapshot {snap}", self.target);
        let c_snap = c_string(snap, op, target)?;
        let call = self.activity.call(op);
        let ret = f(api, c_snap.as_ptr());
        check(call.done(ret.into()), op, target).map(drop)
    }

    /// Takes snapshot `snap` of the image as it is now (every write completed before the call
    /// is in it). EEXIST if the name is taken.
    pub fn snap_create(&self, snap: &str) -> Result<(), RbdError> {
        self.snap_call("rbd_snap_create2", snap, |api, name| {
            // SAFETY: the image is open; name is NUL-terminated and outlives the call; the
            // progress callback is a plain function that ignores its (null) data pointer.
            unsafe {
                (api.rbd_snap_create2)(
                    self.handle,
                    name,
                    SNAP_CREATE_SKIP_QUIESCE,
                    no_progress,
                    ptr::null_mut(),
                )
            }
        })
    }

    /// Removes snapshot `snap` (ENOENT if there is none). One that clones use moves to the
    /// trash namespace and goes when its last clone does (clone format 2).
    pub fn snap_remove(&self, snap: &str) -> Result<(), RbdError> {
        self.snap_call("rbd_snap_remove", snap, |api, name| {
            // SAFETY: the image is open; name is NUL-terminated and outlives the call.
            unsafe { (api.rbd_snap_remove)(self.handle, name) }
        })
    }

    /// Makes the image's head what it was at snapshot `snap`. Nobody may be using the image.
    pub fn snap_rollback(&self, snap: &str) -> Result<(), RbdError> {
        self.snap_call("rbd_snap_rollback", snap, |api, name| {
            // SAFETY: the image is open; name is NUL-terminated and outlives the call.
            unsafe { (api.rbd_snap_rollback)(self.handle, name) }
        })
    }

    /// The image's snapshots (user namespace), oldest first.
    pub fn snap_list(&self) -> Result<Vec<SnapInfo>, RbdError> {
        let api = snap_api(self.api())?;
        let mut capacity: c_int = 16;
        for _ in 0..8 {
            let mut list: Vec<SnapInfoT> = (0..capacity)
                .map(|_| SnapInfoT {
                    id: 0,
                    size: 0,
                    name: ptr::null(),
                })
                .collect();
            // One slot more than asked for: librbd writes an end marker after the entries.
            list.push(SnapInfoT {
                id: 0,
                size: 0,
                name: ptr::null(),
            });
            let mut max = capacity;
            let call = self.activity.call("rbd_snap_list");
            // SAFETY: the image is open; `list` has room for `max` entries and the end marker
            // librbd writes after them (it returns -ERANGE with the count it needs otherwise).
            let ret = unsafe { (api.rbd_snap_list)(self.handle, list.as_mut_ptr(), &mut max) };
            let ret = call.done(ret.into());
            if ret == -(libc::ERANGE as i64) {
                capacity = max.max(capacity * 2);
                continue;
            }
            let n = check(ret, "rbd_snap_list", || self.target.clone())? as usize;
            let snaps = list[..n.min(list.len())]
                .iter()
                .filter(|s| !s.name.is_null())
                .map(|s| SnapInfo {
                    id: s.id,
                    size: s.size,
                    // SAFETY: librbd set name to a NUL-terminated string for each of the first
                    // n entries; it is read before rbd_snap_list_end frees it.
                    name: unsafe { CStr::from_ptr(s.name) }
                        .to_string_lossy()
                        .into_owned(),
                })
                .collect();
            // SAFETY: frees the names librbd allocated for this list, once; not read after.
            unsafe { (api.rbd_snap_list_end)(list.as_mut_ptr()) };
            return Ok(snaps);
        }
        Err(self.fail("rbd_snap_list (snapshots kept changing)", libc::EAGAIN))
    }

    /// The images cloned from any of this image's snapshots, as `POOL/IMAGE` (with
    /// ` (in the trash)` for one removed to the trash). The image must be open at its head.
    pub fn children(&self) -> Result<Vec<String>, RbdError> {
        let api = snap_api(self.api())?;
        let mut capacity = 8usize;
        for _ in 0..8 {
            let mut list: Vec<LinkedImageT> = (0..capacity)
                .map(|_| LinkedImageT {
                    pool_id: 0,
                    pool_name: ptr::null_mut(),
                    pool_namespace: ptr::null_mut(),
                    image_id: ptr::null_mut(),
                    image_name: ptr::null_mut(),
                    trash: false,
                })
                .collect();
            let mut count = capacity;
            let call = self.activity.call("rbd_list_children3");
            // SAFETY: the image is open; `list` holds `count` writable entries, and librbd
            // writes at most that many (-ERANGE with the count it needs otherwise).
            let ret =
                unsafe { (api.rbd_list_children3)(self.handle, list.as_mut_ptr(), &mut count) };
            let ret = call.done(ret.into());
            if ret == -(libc::ERANGE as i64) {
                capacity = count.max(capacity * 2);
                continue;
            }
            check(ret, "rbd_list_children3", || self.target.clone())?;
            let count = count.min(capacity);
            let text = |p: *mut c_char| match p.is_null() {
                true => String::new(),
                // SAFETY: a non-null field of a filled entry is a NUL-terminated string of
                // librbd's, read before the cleanup below frees it.
                false => unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned(),
            };
            let children = list[..count]
                .iter()
                .map(|c| {
                    let trash = if c.trash { " (in the trash)" } else { "" };
                    format!("{}/{}{trash}", text(c.pool_name), text(c.image_name))
                })
                .collect();
            // SAFETY: librbd filled the first `count` entries; released once, not read after.
            unsafe { (api.rbd_linked_image_spec_list_cleanup)(list.as_mut_ptr(), count) };
            return Ok(children);
        }
        Err(self.fail("rbd_list_children3 (children kept changing)", libc::EAGAIN))
    }
}

impl IoCtx {
    /// Opens image `name` read-only at snapshot `snap` (ENOENT if either is missing); writes
    /// fail with EROFS.
    pub fn open_image_at(&self, name: &str, snap: &str) -> Result<Image, RbdError> {
        let api = snap_api(self.inner.cluster.api)?;
        let target = || format!("{} snapshot {snap}", self.image_target(name));
        let c_name = c_string(name, "rbd_open_read_only", target)?;
        let c_snap = c_string(snap, "rbd_open_read_only", target)?;
        let mut handle: ImageT = ptr::null_mut();
        // SAFETY: the ioctx is live; both strings are NUL-terminated and outlive the call;
        // handle is a valid out-pointer.
        let ret = unsafe {
            (api.rbd_open_read_only)(
                self.inner.handle,
                c_name.as_ptr(),
                &mut handle,
                c_snap.as_ptr(),
            )
        };
        check(ret.into(), "rbd_open_read_only", target)?;
        Ok(Image {
            io: self.inner.clone(),
            handle,
            target: target(),
            activity: Default::default(),
            copies_writes: false,
        })
    }

    /// Makes image `child` in `into` a clone (format 2) of `parent@snap` of this pool: it
    /// shares the snapshot's data until written, and needs neither a protected snapshot nor
    /// a flatten. It gets only the `layering` feature (see `create_image`).
    pub fn clone_image(
        &self,
        parent: &str,
        snap: &str,
        into: &IoCtx,
        child: &str,
    ) -> Result<(), RbdError> {
        let api = snap_api(self.inner.cluster.api)?;
        let target = || {
            format!(
                "{} snapshot {snap} into {}",
                self.image_target(parent),
                into.image_target(child)
            )
        };
        let c_parent = c_string(parent, "rbd_clone3", target)?;
        let c_snap = c_string(snap, "rbd_clone3", target)?;
        let c_child = c_string(child, "rbd_clone3", target)?;
        let mut opts: OptionsT = ptr::null_mut();
        // SAFETY: opts is a valid out-pointer; the options are destroyed below, once.
        unsafe { (api.rbd_image_options_create)(&mut opts) };
        let set = |key, value| {
            // SAFETY: opts is live until destroyed below; both keys take a uint64.
            let ret = unsafe { (api.rbd_image_options_set_uint64)(opts, key, value) };
            check(ret.into(), "rbd_image_options_set_uint64", target)
        };
        let cloned = set(IMAGE_OPTION_FEATURES, super::FEATURE_LAYERING)
            .and_then(|_| set(IMAGE_OPTION_CLONE_FORMAT, 2))
            .and_then(|_| {
                // SAFETY: both ioctxs are live; the strings are NUL-terminated and outlive
                // the call; opts is live.
                let ret = unsafe {
                    (api.rbd_clone3)(
                        self.inner.handle,
                        c_parent.as_ptr(),
                        c_snap.as_ptr(),
                        into.inner.handle,
                        c_child.as_ptr(),
                        opts,
                    )
                };
                check(ret.into(), "rbd_clone3", target)
            });
        // SAFETY: opts came from rbd_image_options_create and is destroyed once, here.
        unsafe { (api.rbd_image_options_destroy)(opts) };
        cloned.map(drop)
    }
}
