//! Ceph RBD images through librados and librbd, loaded at run time with `dlopen` (never linked),
//! so fvol builds and runs on hosts without Ceph and only the rbd driver needs the libraries.
//!
//! The API is small: [`Cluster::connect`] → [`Cluster::io_ctx`] (a pool) → image management
//! ([`IoCtx::create_image`], [`IoCtx::remove_image`], [`IoCtx::list_images`],
//! [`IoCtx::image_exists`]) and [`IoCtx::open_image`] → [`Image`]: positional I/O, asynchronous
//! writes ([`Image::aio_write`], in `aio`), `flush`, and the advisory lock (`lock_exclusive`,
//! `lockers`, `break_lock`, `unlock`) that marks which host owns an image.
//!
//! Every handle keeps an `Arc` to its parent, so the cluster connection outlives its pools and
//! images however the caller drops them: an image is closed (`rbd_close`) before its pool
//! context is destroyed (`rados_ioctx_destroy`), and that before the connection shuts down
//! (`rados_shutdown`). All handles are `Send + Sync`; see the SAFETY comments at their `impl`s.
//!
//! Every failure is one [`RbdError`]: either the libraries are missing (the message names the
//! Debian package), or a call failed with an errno (the message names the call, pool and image).
//!
//! Image I/O never times out: librados waits for as long as the cluster is away (OSDs
//! restarting, peering, a partition), as the kernel's rbd client does, and every call then
//! completes. Each image counts its calls in flight ([`Image::waiting`]) and remembers when the
//! cluster refused this client as blocklisted ([`Image::fence`]).
use std::ffi::{CString, c_char, c_int, c_void};
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::ptr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use libloading::Library;

mod activity;
mod aio;
mod config;
mod snap;
mod watchers;
pub use activity::{EBLOCKLISTED, Fence, Waiting};
pub use aio::{AioDone, AioWrite};
pub use snap::SnapInfo;

use activity::Activity;

/// The sonames loaded at run time, and the Debian packages that ship them.
pub const LIBRADOS: (&str, &str) = ("librados.so.2", "librados2");
pub const LIBRBD: (&str, &str) = ("librbd.so.1", "librbd1");

/// Image feature bits (librbd's features.h).
pub const FEATURE_LAYERING: u64 = 1 << 0;
pub const FEATURE_EXCLUSIVE_LOCK: u64 = 1 << 2;

/// How long connecting and monitor commands may wait for an unreachable monitor before they
/// fail with ETIMEDOUT. OSD operations (image I/O) have no such bound.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// One error type for the module.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RbdError {
    /// librados or librbd could not be loaded (or lacks a symbol fvol needs).
    #[error(
        "cannot load {library}: {reason}; the rbd driver needs Ceph's client libraries: \
         install the Debian package {package} (`apt-get install librados2 librbd1`, or run \
         tools/install-deps.sh)"
    )]
    LibraryMissing {
        library: &'static str,
        package: &'static str,
        reason: String,
    },
    /// A librados/librbd call failed. `target` names what it was called on ("cluster ceph",
    /// "pool rbd", "pool rbd image vol1").
    #[error("{op} on {target} failed: {}", io::Error::from_raw_os_error(*errno))]
    Call {
        op: &'static str,
        target: String,
        errno: i32,
    },
}

impl RbdError {
    /// The (positive) errno of a failed call; `None` when the libraries are missing.
    pub fn errno(&self) -> Option<i32> {
        match self {
            RbdError::Call { errno, .. } => Some(*errno),
            RbdError::LibraryMissing { .. } => None,
        }
    }
}

impl From<RbdError> for io::Error {
    /// Keeps the message (op, pool, image) and the errno's kind; a missing library is `NotFound`.
    fn from(e: RbdError) -> io::Error {
        let kind = match e.errno() {
            Some(errno) => io::Error::from_raw_os_error(errno).kind(),
            None => io::ErrorKind::NotFound,
        };
        io::Error::new(kind, e)
    }
}

type RadosT = *mut c_void;
type IoCtxT = *mut c_void;
type ImageT = *mut c_void;

/// `rbd_image_spec_t` from librbd.h.
#[repr(C)]
struct ImageSpec {
    id: *mut c_char,
    name: *mut c_char,
}

/// The entry points fvol uses, resolved once. Signatures are librbd.h/librados.h of Ceph 16
/// (pacific); all of them exist unchanged since Ceph 14 (rbd_list2 is the newest, nautilus).
struct Api {
    rados_create2: unsafe extern "C" fn(*mut RadosT, *const c_char, *const c_char, u64) -> c_int,
    rados_conf_read_file: unsafe extern "C" fn(RadosT, *const c_char) -> c_int,
    rados_conf_parse_env: unsafe extern "C" fn(RadosT, *const c_char) -> c_int,
    rados_conf_set: unsafe extern "C" fn(RadosT, *const c_char, *const c_char) -> c_int,
    rados_connect: unsafe extern "C" fn(RadosT) -> c_int,
    rados_shutdown: unsafe extern "C" fn(RadosT),
    rados_ioctx_create: unsafe extern "C" fn(RadosT, *const c_char, *mut IoCtxT) -> c_int,
    rados_ioctx_destroy: unsafe extern "C" fn(IoCtxT),
    rbd_create2: unsafe extern "C" fn(IoCtxT, *const c_char, u64, u64, *mut c_int) -> c_int,
    rbd_remove: unsafe extern "C" fn(IoCtxT, *const c_char) -> c_int,
    rbd_list2: unsafe extern "C" fn(IoCtxT, *mut ImageSpec, *mut usize) -> c_int,
    rbd_image_spec_list_cleanup: unsafe extern "C" fn(*mut ImageSpec, usize),
    rbd_open: unsafe extern "C" fn(IoCtxT, *const c_char, *mut ImageT, *const c_char) -> c_int,
    rbd_close: unsafe extern "C" fn(ImageT) -> c_int,
    rbd_get_size: unsafe extern "C" fn(ImageT, *mut u64) -> c_int,
    rbd_get_features: unsafe extern "C" fn(ImageT, *mut u64) -> c_int,
    rbd_resize: unsafe extern "C" fn(ImageT, u64) -> c_int,
    rbd_read: unsafe extern "C" fn(ImageT, u64, usize, *mut c_char) -> isize,
    rbd_write: unsafe extern "C" fn(ImageT, u64, usize, *const c_char) -> isize,
    rbd_flush: unsafe extern "C" fn(ImageT) -> c_int,
    rbd_aio_create_completion:
        unsafe extern "C" fn(*mut c_void, aio::CallbackT, *mut aio::CompletionT) -> c_int,
    rbd_aio_write:
        unsafe extern "C" fn(ImageT, u64, usize, *const c_char, aio::CompletionT) -> c_int,
    rbd_aio_read: unsafe extern "C" fn(ImageT, u64, usize, *mut c_char, aio::CompletionT) -> c_int,
    rbd_aio_get_return_value: unsafe extern "C" fn(aio::CompletionT) -> isize,
    rbd_aio_release: unsafe extern "C" fn(aio::CompletionT),
    rbd_lock_exclusive: unsafe extern "C" fn(ImageT, *const c_char) -> c_int,
    rbd_unlock: unsafe extern "C" fn(ImageT, *const c_char) -> c_int,
    rbd_break_lock: unsafe extern "C" fn(ImageT, *const c_char, *const c_char) -> c_int,
    rbd_watchers_list: unsafe extern "C" fn(ImageT, *mut watchers::WatcherT, *mut usize) -> c_int,
    rbd_watchers_list_cleanup: unsafe extern "C" fn(*mut watchers::WatcherT, usize),
    rbd_config_image_list:
        unsafe extern "C" fn(ImageT, *mut config::ConfigOptionT, *mut c_int) -> c_int,
    rbd_config_image_list_cleanup: unsafe extern "C" fn(*mut config::ConfigOptionT, c_int),
    #[allow(clippy::type_complexity)]
    rbd_list_lockers: unsafe extern "C" fn(
        ImageT,
        *mut c_int,
        *mut c_char,
        *mut usize,
        *mut c_char,
        *mut usize,
        *mut c_char,
        *mut usize,
        *mut c_char,
        *mut usize,
    ) -> isize,
    /// Snapshots and clones (Ceph 16 and newer); `None` on an older librbd.
    snap: Option<snap::SnapApi>,
    /// Keeps the libraries mapped while the pointers above are in use: `Api` lives in a static
    /// and is never dropped, so they are never unloaded (Ceph's libraries do not support
    /// dlclose: their global state and threads would be left pointing into unmapped code).
    _libs: (Library, Library),
}

static API: OnceLock<Api> = OnceLock::new();
static LOADING: Mutex<()> = Mutex::new(());

/// Loads librados and librbd if that has not happened yet. A failure is not remembered, so a
/// daemon that started before the packages were installed succeeds on a later call.
fn api() -> Result<&'static Api, RbdError> {
    if let Some(api) = API.get() {
        return Ok(api);
    }
    let _serial = LOADING.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(api) = API.get() {
        return Ok(api);
    }
    let api = Api::load(LIBRADOS, LIBRBD)?;
    Ok(API.get_or_init(|| api))
}

/// Whether librados and librbd can be loaded here (`Err` says which package is missing).
pub fn check_libraries() -> Result<(), RbdError> {
    api().map(drop)
}

fn open_library((file, package): (&'static str, &'static str)) -> Result<Library, RbdError> {
    // SAFETY: loading runs the library's initialisers. librados/librbd are Ceph's own client
    // libraries (the files Debian's librados2/librbd1 install, found by soname through the
    // dynamic linker's normal search); their initialisers only set up static data and are
    // meant to run in any process that links them.
    unsafe { Library::new(file) }.map_err(|e| RbdError::LibraryMissing {
        library: file,
        package,
        reason: e.to_string(),
    })
}

impl Api {
    fn load(
        rados: (&'static str, &'static str),
        rbd: (&'static str, &'static str),
    ) -> Result<Api, RbdError> {
        // librados first: librbd needs it anyway, and its error names the right package.
        let lrados = open_library(rados)?;
        let lrbd = open_library(rbd)?;
        macro_rules! sym {
            ($lib:expr, $which:expr, $name:ident) => {
                // SAFETY: the field's type (inferred from the struct below) is the C signature
                // of `$name` in librados.h/librbd.h of every Ceph release since 14; the
                // pointer stays valid because the Library is stored in the same `Api` and
                // never unloaded.
                *unsafe { $lib.get(stringify!($name)) }.map_err(|e| RbdError::LibraryMissing {
                    library: $which.0,
                    package: $which.1,
                    reason: format!("{e} (a Ceph release older than 14/nautilus?)"),
                })?
            };
        }
        Ok(Api {
            rados_create2: sym!(lrados, rados, rados_create2),
            rados_conf_read_file: sym!(lrados, rados, rados_conf_read_file),
            rados_conf_parse_env: sym!(lrados, rados, rados_conf_parse_env),
            rados_conf_set: sym!(lrados, rados, rados_conf_set),
            rados_connect: sym!(lrados, rados, rados_connect),
            rados_shutdown: sym!(lrados, rados, rados_shutdown),
            rados_ioctx_create: sym!(lrados, rados, rados_ioctx_create),
            rados_ioctx_destroy: sym!(lrados, rados, rados_ioctx_destroy),
            rbd_create2: sym!(lrbd, rbd, rbd_create2),
            rbd_remove: sym!(lrbd, rbd, rbd_remove),
            rbd_list2: sym!(lrbd, rbd, rbd_list2),
            rbd_image_spec_list_cleanup: sym!(lrbd, rbd, rbd_image_spec_list_cleanup),
            rbd_open: sym!(lrbd, rbd, rbd_open),
            rbd_close: sym!(lrbd, rbd, rbd_close),
            rbd_get_size: sym!(lrbd, rbd, rbd_get_size),
            rbd_get_features: sym!(lrbd, rbd, rbd_get_features),
            rbd_resize: sym!(lrbd, rbd, rbd_resize),
            rbd_read: sym!(lrbd, rbd, rbd_read),
            rbd_write: sym!(lrbd, rbd, rbd_write),
            rbd_flush: sym!(lrbd, rbd, rbd_flush),
            rbd_aio_create_completion: sym!(lrbd, rbd, rbd_aio_create_completion),
            rbd_aio_write: sym!(lrbd, rbd, rbd_aio_write),
            rbd_aio_read: sym!(lrbd, rbd, rbd_aio_read),
            rbd_aio_get_return_value: sym!(lrbd, rbd, rbd_aio_get_return_value),
            rbd_aio_release: sym!(lrbd, rbd, rbd_aio_release),
            rbd_lock_exclusive: sym!(lrbd, rbd, rbd_lock_exclusive),
            rbd_unlock: sym!(lrbd, rbd, rbd_unlock),
            rbd_break_lock: sym!(lrbd, rbd, rbd_break_lock),
            rbd_watchers_list: sym!(lrbd, rbd, rbd_watchers_list),
            rbd_watchers_list_cleanup: sym!(lrbd, rbd, rbd_watchers_list_cleanup),
            rbd_config_image_list: sym!(lrbd, rbd, rbd_config_image_list),
            rbd_config_image_list_cleanup: sym!(lrbd, rbd, rbd_config_image_list_cleanup),
            rbd_list_lockers: sym!(lrbd, rbd, rbd_list_lockers),
            snap: snap::SnapApi::load(&lrbd),
            _libs: (lrados, lrbd),
        })
    }
}

/// Turns a C return value (negative errno on failure) into a `Result`.
fn check(ret: i64, op: &'static str, target: impl FnOnce() -> String) -> Result<u64, RbdError> {
    if ret < 0 {
        Err(RbdError::Call {
            op,
            target: target(),
            errno: i32::try_from(-ret).unwrap_or(libc::EIO),
        })
    } else {
        Ok(ret as u64)
    }
}

/// A string argument for C; one with a NUL inside is EINVAL, as librbd would say for a bad name.
fn c_string(
    s: &str,
    op: &'static str,
    target: impl FnOnce() -> String,
) -> Result<CString, RbdError> {
    CString::new(s).map_err(|_| RbdError::Call {
        op,
        target: target(),
        errno: libc::EINVAL,
    })
}

fn c_path(
    p: &Path,
    op: &'static str,
    target: impl FnOnce() -> String,
) -> Result<CString, RbdError> {
    use std::os::unix::ffi::OsStrExt;
    CString::new(p.as_os_str().as_bytes()).map_err(|_| RbdError::Call {
        op,
        target: target(),
        errno: libc::EINVAL,
    })
}

/// How to reach a cluster. `Default` is what the `ceph` command does without options: the conf
/// file from `$CEPH_CONF` or `/etc/ceph/ceph.conf`, user `client.admin`, cluster `ceph`, the
/// keyring the conf names.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// The ceph.conf to read; `None` searches `$CEPH_CONF`, `/etc/ceph/$cluster.conf`,
    /// `~/.ceph/$cluster.conf`, `./$cluster.conf`.
    pub conf: Option<PathBuf>,
    /// The cephx user, with or without `client.` (`"fvol"` means `client.fvol`); `None`: admin.
    pub id: Option<String>,
    /// Overrides the conf's `keyring`.
    pub keyring: Option<PathBuf>,
    /// The cluster name (`ceph` unless set): the `$cluster` in default paths.
    pub cluster: Option<String>,
    /// Bound on connecting (`client_mount_timeout`) and on monitor commands
    /// (`rados_mon_op_timeout`): with no monitor answering they fail with ETIMEDOUT after this
    /// long. OSD operations, image I/O included, never time out (`rados_osd_op_timeout=0`): an
    /// I/O that failed after a timeout could not be told apart from one that still lands later,
    /// and the filesystem above would have to give up on the image. These are set after the
    /// conf file is read, so they win.
    pub timeout: Duration,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            conf: None,
            id: None,
            keyring: None,
            cluster: None,
            timeout: DEFAULT_TIMEOUT,
        }
    }
}

/// A connection to a cluster (a `rados_t`). Cheap to clone; shut down when the last clone and
/// every pool context and image made from it are gone.
#[derive(Clone)]
pub struct Cluster {
    inner: Arc<ClusterInner>,
}

struct ClusterInner {
    api: &'static Api,
    handle: RadosT,
    /// "cluster ceph (conf /etc/ceph/ceph.conf, client.admin)", for error messages.
    label: String,
}

// SAFETY: librados has been thread-safe since v0.53 (tracker.ceph.com/issues/2525): a connected
// rados_t (a RadosClient with its own locks) may be used from any thread, concurrently. Its
// configuration calls are not thread-safe, and they happen only inside `Cluster::connect`,
// before the handle is shared. The pointer is only freed in Drop, which has exclusive access.
unsafe impl Send for ClusterInner {}
// SAFETY: as for Send: every call made through `&ClusterInner` after connecting
// (rados_ioctx_create) is one librados makes safe for concurrent use.
unsafe impl Sync for ClusterInner {}

impl Drop for ClusterInner {
    fn drop(&mut self) {
        // SAFETY: handle came from rados_create2 and is shut down exactly once, here. Every
        // IoCtx and Image holds an Arc to this ClusterInner, so none is still open.
        // rados_shutdown is also the way to free a handle whose connect failed.
        unsafe { (self.api.rados_shutdown)(self.handle) }
    }
}

impl fmt::Debug for Cluster {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Cluster").field(&self.inner.label).finish()
    }
}

impl Cluster {
    /// Reads the configuration and connects. Fails with `LibraryMissing` when librados/librbd
    /// are not installed, and with ETIMEDOUT after `config.timeout` when no monitor answers.
    pub fn connect(config: ClusterConfig) -> Result<Cluster, RbdError> {
        let api = api()?;
        let cluster = config.cluster.as_deref().unwrap_or("ceph");
        let user = match config.id.as_deref() {
            Some(id) if id.contains('.') => id.to_string(),
            Some(id) => format!("client.{id}"),
            None => "client.admin".to_string(),
        };
        let conf_label = match &config.conf {
            Some(p) => p.display().to_string(),
            None => match std::env::var_os("CEPH_CONF") {
                Some(p) => format!("$CEPH_CONF={}", p.to_string_lossy()),
                None => format!("default, /etc/ceph/{cluster}.conf"),
            },
        };
        let label = format!("cluster {cluster} (conf {conf_label}, {user})");
        let target = || label.clone();

        let c_cluster = c_string(cluster, "rados_create2", target)?;
        let c_user = c_string(&user, "rados_create2", target)?;
        let mut handle: RadosT = ptr::null_mut();
        // SAFETY: handle is a valid out-pointer; the strings are NUL-terminated and outlive the
        // call (librados copies them).
        let ret =
            unsafe { (api.rados_create2)(&mut handle, c_cluster.as_ptr(), c_user.as_ptr(), 0) };
        check(ret.into(), "rados_create2", target)?;
        // From here on Drop shuts the handle down, also when a later step fails.
        let inner = ClusterInner { api, handle, label };
        let target = || inner.label.clone();

        let conf = match &config.conf {
            Some(p) => Some(c_path(p, "rados_conf_read_file", target)?),
            None => None,
        };
        // SAFETY: handle is a live, unconnected rados_t that no other thread has seen; path is
        // NUL-terminated or null (null: search the default locations).
        let ret = unsafe {
            (api.rados_conf_read_file)(handle, conf.as_ref().map_or(ptr::null(), |c| c.as_ptr()))
        };
        check(ret.into(), "rados_conf_read_file", target)?;
        // SAFETY: as above; null means the variable CEPH_ARGS.
        let ret = unsafe { (api.rados_conf_parse_env)(handle, ptr::null()) };
        check(ret.into(), "rados_conf_parse_env (CEPH_ARGS)", target)?;

        let secs = config.timeout.as_secs().max(1).to_string();
        let mut settings = vec![
            ("client_mount_timeout", secs.clone()),
            ("rados_mon_op_timeout", secs),
            // Waits for the cluster, whatever ceph.conf says (see `ClusterConfig::timeout`).
            ("rados_osd_op_timeout", "0".to_owned()),
            // Breaking a lock must fence its holder, whatever the configuration says.
            ("rbd_blocklist_on_break_lock", "true".to_owned()),
            // librbd copies a write's bytes before `rbd_aio_write` returns, so the caller's
            // buffer is free at once (`Image::aio_write_copied`; an image or pool override
            // is seen at open).
            ("rbd_disable_zero_copy_writes", "true".to_owned()),
        ];
        if let Some(k) = &config.keyring {
            settings.push(("keyring", k.to_string_lossy().into_owned()));
        }
        for (option, value) in settings {
            let c_option = c_string(option, "rados_conf_set", target)?;
            let c_value = c_string(&value, "rados_conf_set", target)?;
            // SAFETY: handle is live and unconnected, not shared; both strings are
            // NUL-terminated and outlive the call (librados copies them).
            let ret = unsafe { (api.rados_conf_set)(handle, c_option.as_ptr(), c_value.as_ptr()) };
            check(ret.into(), "rados_conf_set", || {
                format!("{} (option {option}={value})", inner.label)
            })?;
        }

        // SAFETY: handle is live, configured and not shared; connect blocks at most
        // client_mount_timeout.
        let ret = unsafe { (api.rados_connect)(handle) };
        check(ret.into(), "rados_connect", target)?;
        Ok(Cluster {
            inner: Arc::new(inner),
        })
    }

    /// A context for the pool `pool` (ENOENT if there is none).
    pub fn io_ctx(&self, pool: &str) -> Result<IoCtx, RbdError> {
        let target = || format!("pool {pool}");
        let c_pool = c_string(pool, "rados_ioctx_create", target)?;
        let mut handle: IoCtxT = ptr::null_mut();
        // SAFETY: the cluster handle is connected and lives as long as self; pool is
        // NUL-terminated; handle is a valid out-pointer.
        let ret = unsafe {
            (self.inner.api.rados_ioctx_create)(self.inner.handle, c_pool.as_ptr(), &mut handle)
        };
        check(ret.into(), "rados_ioctx_create", target)?;
        Ok(IoCtx {
            inner: Arc::new(IoCtxInner {
                cluster: self.inner.clone(),
                handle,
                pool: pool.to_string(),
            }),
        })
    }
}

/// A pool context (a `rados_ioctx_t`): manages the pool's images and opens them.
#[derive(Clone)]
pub struct IoCtx {
    inner: Arc<IoCtxInner>,
}

struct IoCtxInner {
    /// Dropped after `handle` is destroyed (fields drop after `Drop::drop`).
    cluster: Arc<ClusterInner>,
    handle: IoCtxT,
    pool: String,
}

// SAFETY: operations through one rados_ioctx_t are thread-safe in librados; what is not is
// changing the context's settings (namespace, snapshot, locator key; librados.h says so at
// rados_ioctx_t), and this wrapper never changes them. Freed only in Drop (exclusive access).
unsafe impl Send for IoCtxInner {}
// SAFETY: see Send; every call through `&IoCtxInner` is an operation, not a settings change.
unsafe impl Sync for IoCtxInner {}

impl Drop for IoCtxInner {
    fn drop(&mut self) {
        // SAFETY: handle came from rados_ioctx_create and is destroyed once, here; every Image
        // opened from it holds an Arc to this IoCtxInner, so none is open any more, and the
        // cluster (self.cluster) is still connected until this returns.
        unsafe { (self.cluster.api.rados_ioctx_destroy)(self.handle) }
    }
}

impl fmt::Debug for IoCtx {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("IoCtx").field(&self.inner.pool).finish()
    }
}

impl IoCtx {
    pub fn pool(&self) -> &str {
        &self.inner.pool
    }

    fn image_target(&self, name: &str) -> String {
        format!("pool {} image {name}", self.inner.pool)
    }

    /// Creates an image of `size` bytes with 4 MiB objects (thin: nothing is allocated until
    /// written). EEXIST if the name is taken.
    ///
    /// The image gets only the `layering` feature, not librbd's default set: the default
    /// `exclusive-lock` feature (which `object-map` and `fast-diff` need) manages a lock on the
    /// same header object and name as the advisory lock of [`Image::lock_exclusive`], and while
    /// an advisory lock is held it can never acquire it, so every write, the holder's included,
    /// retries forever (no timeout applies).
    pub fn create_image(&self, name: &str, size: u64) -> Result<(), RbdError> {
        let target = || self.image_target(name);
        let c_name = c_string(name, "rbd_create2", target)?;
        let mut order: c_int = 0; // 0: the default object size
        // SAFETY: the ioctx is live for self's lifetime; name is NUL-terminated; order is a
        // valid in/out pointer.
        let ret = unsafe {
            (self.inner.cluster.api.rbd_create2)(
                self.inner.handle,
                c_name.as_ptr(),
                size,
                FEATURE_LAYERING,
                &mut order,
            )
        };
        check(ret.into(), "rbd_create2", target).map(drop)
    }

    /// Removes an image and its data. EBUSY while a client has it open (a watcher), ENOENT if
    /// there is none.
    pub fn remove_image(&self, name: &str) -> Result<(), RbdError> {
        let target = || self.image_target(name);
        let c_name = c_string(name, "rbd_remove", target)?;
        // SAFETY: the ioctx is live; name is NUL-terminated.
        let ret =
            unsafe { (self.inner.cluster.api.rbd_remove)(self.inner.handle, c_name.as_ptr()) };
        check(ret.into(), "rbd_remove", target).map(drop)
    }

    /// The names of the pool's images, sorted.
    pub fn list_images(&self) -> Result<Vec<String>, RbdError> {
        let api = self.inner.cluster.api;
        let target = || format!("pool {}", self.inner.pool);
        let mut max: usize = 64;
        loop {
            let mut specs: Vec<ImageSpec> = (0..max)
                .map(|_| ImageSpec {
                    id: ptr::null_mut(),
                    name: ptr::null_mut(),
                })
                .collect();
            let mut count = max;
            // SAFETY: specs has room for `count` entries, which librbd fills with strdup'ed
            // strings (or, if too few, sets count to the number needed and returns -ERANGE).
            let ret = unsafe { (api.rbd_list2)(self.inner.handle, specs.as_mut_ptr(), &mut count) };
            if ret == -libc::ERANGE && count > max {
                max = count + 16; // images may be created meanwhile
                continue;
            }
            check(ret.into(), "rbd_list2", target)?;
            let mut names: Vec<String> = specs[..count]
                .iter()
                .filter(|s| !s.name.is_null())
                // SAFETY: librbd set name to a NUL-terminated strdup'ed string for each of the
                // first `count` entries; it is read before the cleanup below frees it.
                .map(|s| {
                    unsafe { std::ffi::CStr::from_ptr(s.name) }
                        .to_string_lossy()
                        .into_owned()
                })
                .collect();
            // SAFETY: frees exactly the `count` entries librbd filled in (null-safe), once.
            unsafe { (api.rbd_image_spec_list_cleanup)(specs.as_mut_ptr(), count) };
            names.sort();
            return Ok(names);
        }
    }

    pub fn image_exists(&self, name: &str) -> Result<bool, RbdError> {
        Ok(self.list_images()?.iter().any(|n| n == name))
    }

    /// Opens an image for reading and writing (ENOENT if there is none).
    pub fn open_image(&self, name: &str) -> Result<Image, RbdError> {
        let target = || self.image_target(name);
        let c_name = c_string(name, "rbd_open", target)?;
        let mut handle: ImageT = ptr::null_mut();
        // SAFETY: the ioctx is live; name is NUL-terminated; handle is a valid out-pointer;
        // a null snapshot name opens the image's head (writable).
        let ret = unsafe {
            (self.inner.cluster.api.rbd_open)(
                self.inner.handle,
                c_name.as_ptr(),
                &mut handle,
                ptr::null(),
            )
        };
        check(ret.into(), "rbd_open", target)?;
        let mut image = Image {
            io: self.inner.clone(),
            handle,
            target: self.image_target(name),
            activity: Arc::default(),
            copies_writes: false,
        };
        // Anything but a confirmed "true" (an image or pool override) keeps the owned path.
        image.copies_writes = image
            .option_value("rbd_disable_zero_copy_writes")?
            .as_deref()
            == Some("true");
        Ok(image)
    }
}

/// Who holds an advisory lock on an image, as `rbd lock ls` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Locker {
    /// The holder's rados client, e.g. `client.4123`; unique per connection.
    pub client: String,
    /// The cookie the holder chose in `lock_exclusive`.
    pub cookie: String,
    /// The holder's network address, e.g. `127.0.0.1:0/3187462`.
    pub address: String,
    /// Exclusive (`lock_exclusive`) rather than shared (by another tool).
    pub exclusive: bool,
}

/// An open image (an `rbd_image_t`). Closed on drop.
pub struct Image {
    /// Dropped after the image is closed (fields drop after `Drop::drop`).
    io: Arc<IoCtxInner>,
    handle: ImageT,
    /// "pool rbd image vol1", for error messages.
    target: String,
    /// Its calls in flight and its fence; shared with the completions of asynchronous calls.
    activity: Arc<Activity>,
    /// librbd copies the bytes of a write before `rbd_aio_write` returns: the image's
    /// effective `rbd_disable_zero_copy_writes` is true (read at open).
    copies_writes: bool,
}

// SAFETY: librbd makes an open image safe to use from several threads at once: ImageCtx guards
// its state with its own locks (owner_lock, image_lock) and every I/O goes through its
// thread-safe dispatch queue. QEMU's rbd driver, rbd-nbd and go-ceph's ReadAt/WriteAt all issue
// concurrent I/O on one handle. The lock calls are librados class calls on the image's header
// object, equally thread-safe. Only rbd_close must not race with anything, and it runs in Drop,
// which has exclusive access.
unsafe impl Send for Image {}
// SAFETY: see Send: every call taking `&Image` (I/O, flush, size, lock operations) is one
// librbd allows concurrently on one handle.
unsafe impl Sync for Image {}

impl Drop for Image {
    fn drop(&mut self) {
        // SAFETY: handle came from rbd_open and is closed exactly once, here, with exclusive
        // access; its ioctx and cluster are still open (self.io drops after this).
        let ret = unsafe { (self.io.cluster.api.rbd_close)(self.handle) };
        if ret < 0 {
            log::warn!(
                "rbd_close on {}: {}",
                self.target,
                io::Error::from_raw_os_error(-ret)
            );
        }
    }
}

impl fmt::Debug for Image {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Image").field(&self.target).finish()
    }
}

/// librbd's calls return an int count: stay well below 2 GiB per call.
const MAX_IO: usize = 1 << 30;

impl Image {
    /// Whether librbd copies a write's bytes before `rbd_aio_write` returns (the image's
    /// effective `rbd_disable_zero_copy_writes`, read at open).
    pub fn copies_writes(&self) -> bool {
        self.copies_writes
    }

    fn api(&self) -> &'static Api {
        self.io.cluster.api
    }

    fn fail(&self, op: &'static str, errno: i32) -> RbdError {
        RbdError::Call {
            op,
            target: self.target.clone(),
            errno,
        }
    }

    /// "pool P image N", as in error messages.
    pub fn describe(&self) -> &str {
        &self.target
    }

    /// Calls in flight to which the cluster has answered nothing for more than `longer_than`
    /// (none answered since `Waiting::since`).
    pub fn waiting(&self, longer_than: Duration) -> Option<Waiting> {
        self.activity.waiting(longer_than)
    }

    /// Whether the cluster refused a call of this connection as blocklisted (someone broke this
    /// client's lock, or an operator blocklisted it): it will refuse every further one.
    pub fn fence(&self) -> Option<&Fence> {
        self.activity.fence()
    }

    /// The image's size in bytes.
    pub fn size(&self) -> Result<u64, RbdError> {
        let mut size = 0u64;
        let call = self.activity.call("rbd_get_size");
        // SAFETY: the image is open; size is a valid out-pointer.
        let ret = unsafe { (self.api().rbd_get_size)(self.handle, &mut size) };
        check(call.done(ret.into()), "rbd_get_size", || {
            self.target.clone()
        })?;
        Ok(size)
    }

    /// Changes the image's size (fvol only grows it: see `fs::image::fs::grow`).
    pub fn resize(&self, size: u64) -> Result<(), RbdError> {
        // SAFETY: the image is open; rbd_resize takes the handle and a size by value and
        // is safe alongside I/O on the same handle (librbd serializes it internally).
        let ret = unsafe { (self.api().rbd_resize)(self.handle, size) };
        check(ret.into(), "rbd_resize", || self.target.clone())?;
        Ok(())
    }

    /// The image's feature bits (`FEATURE_*`).
    pub fn features(&self) -> Result<u64, RbdError> {
        let mut features = 0u64;
        let call = self.activity.call("rbd_get_features");
        // SAFETY: the image is open; features is a valid out-pointer.
        let ret = unsafe { (self.api().rbd_get_features)(self.handle, &mut features) };
        check(call.done(ret.into()), "rbd_get_features", || {
            self.target.clone()
        })?;
        Ok(features)
    }

    /// Fills `out` from `offset`. Reading past the image's end is EINVAL.
    pub fn read_at(&self, mut offset: u64, mut out: &mut [u8]) -> Result<(), RbdError> {
        while !out.is_empty() {
            let len = out.len().min(MAX_IO);
            let call = self.activity.call("rbd_read");
            // SAFETY: the image is open; out is valid for writes of len bytes and librbd
            // writes at most len bytes into it before returning (the call is synchronous).
            let ret =
                unsafe { (self.api().rbd_read)(self.handle, offset, len, out.as_mut_ptr().cast()) };
            let n = check(call.done(ret as i64), "rbd_read", || self.target.clone())? as usize;
            if n == 0 || n > len {
                return Err(self.fail("rbd_read (past the image's end)", libc::EINVAL));
            }
            offset += n as u64;
            out = &mut out[n..];
        }
        Ok(())
    }

    /// Writes `data` at `offset`. Writing past the image's end is EINVAL. Durable once `flush`
    /// returns (librbd may cache writes, depending on `rbd_cache`).
    pub fn write_at(&self, mut offset: u64, mut data: &[u8]) -> Result<(), RbdError> {
        while !data.is_empty() {
            let len = data.len().min(MAX_IO);
            let call = self.activity.call("rbd_write");
            // SAFETY: the image is open; data is valid for reads of len bytes for the whole
            // (synchronous) call.
            let ret =
                unsafe { (self.api().rbd_write)(self.handle, offset, len, data.as_ptr().cast()) };
            let n = check(call.done(ret as i64), "rbd_write", || self.target.clone())? as usize;
            if n == 0 || n > len {
                return Err(self.fail("rbd_write (past the image's end)", libc::EINVAL));
            }
            offset += n as u64;
            data = &data[n..];
        }
        Ok(())
    }

    /// Makes every write that completed before the call durable.
    pub fn flush(&self) -> Result<(), RbdError> {
        let call = self.activity.call("rbd_flush");
        // SAFETY: the image is open.
        let ret = unsafe { (self.api().rbd_flush)(self.handle) };
        check(call.done(ret.into()), "rbd_flush", || self.target.clone()).map(drop)
    }

    /// Takes the image's advisory exclusive lock as (this connection, `cookie`). EBUSY if
    /// anyone else holds it, EEXIST if this connection already does with this cookie. Advisory:
    /// it stops other lockers, not other writers.
    ///
    /// EOPNOTSUPP on an image with the `exclusive-lock` feature (one `rbd create` made with
    /// librbd's defaults, not `create_image`): there the lock would make every write hang (see
    /// `create_image`). `rbd feature disable POOL/IMAGE object-map fast-diff exclusive-lock`
    /// (as applicable) makes such an image usable.
    pub fn lock_exclusive(&self, cookie: &str) -> Result<(), RbdError> {
        if self.features()? & FEATURE_EXCLUSIVE_LOCK != 0 {
            return Err(self.fail(
                "rbd_lock_exclusive (refused: the image has the exclusive-lock feature, whose \
                 managed lock conflicts with advisory locks and would block every write; \
                 disable it with `rbd feature disable` first)",
                libc::EOPNOTSUPP,
            ));
        }
        let c_cookie = c_string(cookie, "rbd_lock_exclusive", || self.target.clone())?;
        let call = self.activity.call("rbd_lock_exclusive");
        // SAFETY: the image is open; cookie is NUL-terminated and outlives the call.
        let ret = unsafe { (self.api().rbd_lock_exclusive)(self.handle, c_cookie.as_ptr()) };
        check(call.done(ret.into()), "rbd_lock_exclusive", || {
            format!("{} (cookie {cookie})", self.target)
        })
        .map(drop)
    }

    /// Releases this connection's lock with `cookie` (ENOENT if it holds none).
    pub fn unlock(&self, cookie: &str) -> Result<(), RbdError> {
        let c_cookie = c_string(cookie, "rbd_unlock", || self.target.clone())?;
        let call = self.activity.call("rbd_unlock");
        // SAFETY: the image is open; cookie is NUL-terminated and outlives the call.
        let ret = unsafe { (self.api().rbd_unlock)(self.handle, c_cookie.as_ptr()) };
        check(call.done(ret.into()), "rbd_unlock", || {
            format!("{} (cookie {cookie})", self.target)
        })
        .map(drop)
    }

    /// Removes another client's lock (`client` and `cookie` as `lockers` reports them; ENOENT
    /// if that lock is not held). With `rbd_blocklist_on_break_lock = true` (librbd's default,
    /// and set on every `Cluster`), the holder's connection is also blocklisted on the OSDs (for
    /// `rbd_blocklist_expire_seconds`, default: the mon's `mon_osd_blocklist_default_expire`,
    /// 1 h), so a holder that is still alive can no longer write: its I/O fails with ESHUTDOWN
    /// (errno 108) and it must reconnect. This is the fencing a takeover needs.
    pub fn break_lock(&self, client: &str, cookie: &str) -> Result<(), RbdError> {
        let target = || format!("{} (client {client}, cookie {cookie})", self.target);
        let c_client = c_string(client, "rbd_break_lock", target)?;
        let c_cookie = c_string(cookie, "rbd_break_lock", target)?;
        let call = self.activity.call("rbd_break_lock");
        // SAFETY: the image is open; both strings are NUL-terminated and outlive the call.
        let ret = unsafe {
            (self.api().rbd_break_lock)(self.handle, c_client.as_ptr(), c_cookie.as_ptr())
        };
        check(call.done(ret.into()), "rbd_break_lock", target).map(drop)
    }

    /// Who holds the image's advisory lock (empty if nobody).
    pub fn lockers(&self) -> Result<Vec<Locker>, RbdError> {
        let target = || self.target.clone();
        // Sizes start at 0 (librbd then returns -ERANGE with the sizes it needs); the lock can
        // change between the calls, so retry a few times.
        let (mut tag_len, mut clients_len, mut cookies_len, mut addrs_len) = (0, 0, 0, 0);
        for _ in 0..8 {
            let mut tag = vec![0u8; tag_len];
            let mut clients = vec![0u8; clients_len];
            let mut cookies = vec![0u8; cookies_len];
            let mut addrs = vec![0u8; addrs_len];
            let mut exclusive: c_int = 0;
            let call = self.activity.call("rbd_list_lockers");
            // SAFETY: the image is open; each buffer is valid for writes of the length passed
            // with it (librbd checks every length before writing anything, returning -ERANGE
            // with the needed lengths if one is short); the out-pointers are valid.
            let ret = unsafe {
                (self.api().rbd_list_lockers)(
                    self.handle,
                    &mut exclusive,
                    tag.as_mut_ptr().cast(),
                    &mut tag_len,
                    clients.as_mut_ptr().cast(),
                    &mut clients_len,
                    cookies.as_mut_ptr().cast(),
                    &mut cookies_len,
                    addrs.as_mut_ptr().cast(),
                    &mut addrs_len,
                )
            };
            let ret = call.done(ret as i64);
            if ret == -(libc::ERANGE as i64) {
                continue;
            }
            let n = check(ret, "rbd_list_lockers", target)? as usize;
            let split = |buf: &[u8], len: usize| -> Vec<String> {
                buf[..len.min(buf.len())]
                    .split(|b| *b == 0)
                    .take(n)
                    .map(|s| String::from_utf8_lossy(s).into_owned())
                    .collect()
            };
            let (clients, cookies, addrs) = (
                split(&clients, clients_len),
                split(&cookies, cookies_len),
                split(&addrs, addrs_len),
            );
            if clients.len() != n || cookies.len() != n || addrs.len() != n {
                return Err(self.fail("rbd_list_lockers (malformed answer)", libc::EIO));
            }
            return Ok(clients
                .into_iter()
                .zip(cookies)
                .zip(addrs)
                .map(|((client, cookie), address)| Locker {
                    client,
                    cookie,
                    address,
                    exclusive: exclusive != 0,
                })
                .collect());
        }
        Err(self.fail("rbd_list_lockers (lockers kept changing)", libc::EAGAIN))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_librbd_names_the_package() {
        let err = Api::load(LIBRADOS, ("libfvol-no-such-librbd.so.1", "librbd1"))
            .err()
            .map(|e| e.to_string());
        // On a host without librados the first library fails instead; both messages must say
        // which package to install.
        let msg = err.expect("a nonexistent library cannot load");
        assert!(
            msg.contains("librbd1") || msg.contains("librados2"),
            "message names no package: {msg}"
        );
        assert!(msg.contains("apt-get install"), "{msg}");

        let err = open_library(("libfvol-no-such-librbd.so.1", "librbd1")).unwrap_err();
        assert_eq!(err.errno(), None);
        let msg = err.to_string();
        assert!(
            msg.starts_with("cannot load libfvol-no-such-librbd.so.1: "),
            "{msg}"
        );
        assert!(msg.contains("install the Debian package librbd1"), "{msg}");
        assert_eq!(io::Error::from(err).kind(), io::ErrorKind::NotFound);
    }

    #[test]
    fn missing_librados_names_its_package() {
        let err = Api::load(("libfvol-no-such-librados.so.2", "librados2"), LIBRBD)
            .err()
            .expect("a nonexistent library cannot load");
        let msg = err.to_string();
        assert!(
            msg.contains("install the Debian package librados2"),
            "{msg}"
        );
        assert!(msg.contains("libfvol-no-such-librados.so.2"), "{msg}");
    }

    #[test]
    fn call_errors_name_the_operation_and_target() {
        let e = RbdError::Call {
            op: "rbd_open",
            target: "pool rbd image vol1".into(),
            errno: libc::ENOENT,
        };
        assert_eq!(e.errno(), Some(libc::ENOENT));
        let msg = e.to_string();
        assert!(
            msg.starts_with("rbd_open on pool rbd image vol1 failed: No such file or directory"),
            "{msg}"
        );
        assert_eq!(io::Error::from(e).kind(), io::ErrorKind::NotFound);
    }

    #[test]
    fn names_with_nul_are_einval() {
        let e = c_string("a\0b", "rbd_create", || "pool rbd image a".into()).unwrap_err();
        assert_eq!(e.errno(), Some(libc::EINVAL));
    }

    /// Where the libraries are installed (CI, developer machines with tools/install-deps.sh),
    /// they load and every symbol resolves; elsewhere this only checks the error.
    #[test]
    fn installed_libraries_load_or_say_what_is_missing() {
        match check_libraries() {
            Ok(()) => {}
            Err(e @ RbdError::LibraryMissing { .. }) => {
                assert!(e.to_string().contains("apt-get install"), "{e}")
            }
            Err(e) => panic!("unexpected {e}"),
        }
    }
}
