//! Mounting a `VolumeFs`, resuming a connection a previous handler served, and cleaning up
//! after a dead handler.
//!
//! fvol mounts on a /dev/fuse descriptor of its own and relays the connection's INIT through
//! fuser (`handshake`): the kernel's INIT request is read here and kept, fuser answers it on
//! one end of a socket pair, and its answer goes to the kernel (at a first mount) or is only
//! compared with the kept one (resuming: the kernel initializes a connection once). Then the
//! socket under fuser's descriptor number is replaced with the connection itself, and the
//! session is served as usual. So first mounts and resumes share one path, and fuser needs no
//! change. Request threads share the one descriptor (no FUSE_DEV_IOC_CLONE): the requests a
//! dead handler read but did not answer stay with that descriptor's open file, which the
//! keeper holds, and come back with `FUSE_NOTIFY_RESEND`.
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use fuser::{BackgroundSession, Config, Session, SessionACL};
use nix::errno::Errno;
use nix::mount::{MntFlags, umount2};

use super::FuseAdapter;
use super::backing::{self, Backings};
use super::handover::{Gate, Handover};
use super::stats::VolumeStats;
use crate::fs::VolumeFs;
use crate::fs::resume::{Carry, ResumableFs};
use crate::sys::{fdpass, fusedev};

/// How a volume is served.
#[derive(Clone, Copy, Debug)]
pub struct ServeOptions {
    /// Kernel passthrough for the opens the core offers it for.
    pub passthrough: bool,
    /// The handler is the only writer of the data, so the kernel may cache names and
    /// attributes for long: every change goes through it and it invalidates what it changes.
    pub exclusive: bool,
    /// The mount's readahead window (its bdi's `read_ahead_kb`), instead of the kernel's
    /// default of 128 KiB for FUSE (which `max_readahead` at init can only lower).
    pub readahead_kb: Option<u32>,
    /// Request threads, sharing the connection's descriptor.
    pub threads: usize,
}

impl ServeOptions {
    fn ttl(&self) -> Duration {
        // With others writing behind fvol (a `mount=` directory), changes show within 1 s.
        Duration::from_secs(if self.exclusive { 60 } else { 1 })
    }
}

/// How an unmount ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unmounted {
    /// The session ended: no request reaches the filesystem any more.
    Ended,
    /// The mount was busy and is detached lazily: its last users may still send requests.
    Detached,
    /// Unmounted here, but the connection lives on: another mount namespace still has a copy
    /// of the mount (or a request is stuck). It is served until that goes, or until
    /// `abort_connection`.
    Lingering,
}

/// A FUSE connection as a successor needs it: the device and the INIT exchange.
pub struct Connection {
    pub device: Arc<OwnedFd>,
    init_request: Vec<u8>,
    init_reply: Vec<u8>,
    /// The mount's device number ("major:minor", as in mountinfo).
    pub dev: String,
}

/// Offsets in the INIT messages (after the 40-byte in header and 16-byte out header).
const IN_FLAGS2: usize = 40 + 16;
const OUT_FLAGS: usize = 16 + 12;
const OUT_FLAGS2: usize = 16 + 32;
/// FUSE_HAS_RESEND (flags2 bit 7, Linux 6.9): the kernel queues unanswered requests again on
/// FUSE_NOTIFY_RESEND.
const HAS_RESEND: u32 = 1 << 7;

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    bytes
        .get(at..at + 4)
        .map_or(0, |b| u32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
}

impl Connection {
    /// Whether the kernel can send again what a dead handler did not answer: without it, a
    /// connection must not outlive its handler (those calls would wait forever).
    pub fn resumable(&self) -> bool {
        u32_at(&self.init_request, IN_FLAGS2) & HAS_RESEND != 0
    }

    /// The features the connection was initialized with (flags, flags2 << 32).
    fn negotiated(&self) -> u64 {
        u64::from(u32_at(&self.init_reply, OUT_FLAGS))
            | (u64::from(u32_at(&self.init_reply, OUT_FLAGS2)) << 32)
    }

    /// The INIT exchange and device number, for the keeper.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for part in [&self.init_request, &self.init_reply, self.dev.as_bytes()] {
            out.extend_from_slice(&(part.len() as u32).to_le_bytes());
            out.extend_from_slice(part);
        }
        out
    }

    /// What `encode` made, with the connection's device.
    pub fn decode(data: &[u8], device: OwnedFd) -> io::Result<Connection> {
        let bad = || io::Error::new(io::ErrorKind::InvalidData, "a kept connection is damaged");
        let mut rest = data;
        let mut parts = Vec::new();
        for _ in 0..3 {
            let len = rest.get(..4).ok_or_else(bad)?;
            let len = u32::from_le_bytes([len[0], len[1], len[2], len[3]]) as usize;
            let part = rest.get(4..4 + len).ok_or_else(bad)?;
            parts.push(part.to_vec());
            rest = &rest[4 + len..];
        }
        let dev = String::from_utf8(parts.pop().unwrap_or_default()).map_err(|_| bad())?;
        let init_reply = parts.pop().unwrap_or_default();
        let init_request = parts.pop().unwrap_or_default();
        Ok(Connection {
            device: Arc::new(device),
            init_request,
            init_reply,
            dev,
        })
    }
}

/// How long an unmount waits for its session to end. It ends at once unless another mount
/// namespace still has the mount, or a request is stuck in the backing store.
const SESSION_END_WAIT: Duration = Duration::from_secs(5);

/// A live FUSE mount. Dropping it unmounts, unless it was suspended for a successor.
pub struct MountedFs {
    session: Option<BackgroundSession>,
    mountpoint: PathBuf,
    gate: Arc<Gate>,
    connection: Connection,
    /// The mount's device number (`st_dev`), by which other mount namespaces' mounts of it
    /// are recognised. None if it could not be read.
    device: Option<u64>,
    /// What its requests did.
    stats: Arc<VolumeStats>,
}

impl MountedFs {
    pub fn stats(&self) -> &Arc<VolumeStats> {
        &self.stats
    }

    pub fn mountpoint(&self) -> &Path {
        &self.mountpoint
    }

    /// The session ended while the volume stays mounted: its connection was aborted (fusectl)
    /// or its request loop failed, so every access of the mount fails (ENOTCONN).
    pub fn connection_ended(&self) -> bool {
        self.session.as_ref().is_none_or(|s| s.guard.is_finished())
    }

    pub fn connection(&self) -> &Connection {
        &self.connection
    }

    pub fn device(&self) -> Option<u64> {
        self.device
    }

    /// Unmounts and waits for the request threads to end.
    pub fn unmount(mut self) -> io::Result<Unmounted> {
        self.unmount_inner()
    }

    /// Stops serving for a successor: waits (at most `timeout`) for the requests being served
    /// to finish, and leaves later ones unanswered, for the kernel to send to the successor.
    /// The mount stays. Returns whether every request in progress finished.
    pub fn suspend(mut self, timeout: Duration) -> bool {
        let drained = self.gate.close(timeout);
        // The threads park or block on the device until the process exits.
        drop(self.session.take());
        drained
    }

    /// A busy mount (EBUSY) is detached lazily instead, so it never outlives its owner: it
    /// disappears from the namespace now and the connection ends with its last user. The wait
    /// for the session to end is bounded, so a copy of the mount in another namespace never
    /// blocks the caller (the joining thread ends with the session).
    fn unmount_inner(&mut self) -> io::Result<Unmounted> {
        let Some(session) = self.session.take() else {
            return Ok(Unmounted::Ended);
        };
        match umount2(&self.mountpoint, MntFlags::empty()) {
            // The kernel ends the connection, unless another mount namespace (a container)
            // still has the mount (or a request is stuck): then the threads serve it until its
            // last user is gone, `abort_connection`, or this process exits.
            Ok(()) => {
                let deadline = std::time::Instant::now() + SESSION_END_WAIT;
                while !session.guard.is_finished() && std::time::Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(5));
                }
                if !session.guard.is_finished() {
                    log::warn!(
                        "{}: unmounted, but its FUSE connection did not end within {:?}: \
                         another mount namespace still has the mount, or a request is stuck",
                        self.mountpoint.display(),
                        SESSION_END_WAIT
                    );
                    return Ok(Unmounted::Lingering);
                }
                if session.join().is_err() {
                    log::warn!("{}: a request thread panicked", self.mountpoint.display());
                }
                Ok(Unmounted::Ended)
            }
            Err(e) => {
                log::warn!(
                    "unmounting {}: {e}; detaching it",
                    self.mountpoint.display()
                );
                // Served by the session's threads for as long as its last users need it.
                drop(session);
                detach_stale_mount(&self.mountpoint).map(|()| Unmounted::Detached)
            }
        }
    }
}

impl Drop for MountedFs {
    fn drop(&mut self) {
        if let Err(e) = self.unmount_inner() {
            log::warn!("unmounting {}: {e}", self.mountpoint.display());
        }
    }
}

/// Mounts `fs` at `mountpoint` (allow_other, default_permissions) and serves it in the
/// background, keeping what a successor needs in `carry`.
pub fn mount(
    fs: Arc<dyn VolumeFs>,
    mountpoint: &Path,
    name: &str,
    serve: ServeOptions,
    carry: &mut Carry,
) -> io::Result<MountedFs> {
    // As fuser logged it (the log's readers look for it).
    log::info!("Mounting {}", mountpoint.display());
    let device = fusedev::open_device()?;
    fusedev::mount_device(
        device.as_fd(),
        mountpoint,
        &format!("fvol:{name}"),
        "default_permissions,allow_other",
    )?;
    let started = (|| {
        let init_request = read_init(&device)?;
        let dev = mount_dev_at(mountpoint).unwrap_or_default();
        let connection = Connection {
            device: Arc::new(device),
            init_request,
            init_reply: Vec::new(),
            dev,
        };
        serve_connection(fs, mountpoint, name, serve, carry, connection, false)
    })();
    if started.is_err() {
        let _ = umount2(mountpoint, MntFlags::MNT_DETACH);
    }
    let mounted = started?;
    if let (Some(kb), Some(dev)) = (serve.readahead_kb, mounted.device)
        && let Err(e) = set_readahead(dev, kb)
    {
        log::warn!(
            "{}: cannot set the readahead to {kb} KiB: {e}",
            mountpoint.display()
        );
    }
    Ok(mounted)
}

/// Serves `connection`, which a previous handler served (its mount is at `mountpoint`): the
/// open handles it recorded are restored and the requests it left unanswered sent again.
pub fn resume(
    fs: Arc<dyn VolumeFs>,
    mountpoint: &Path,
    name: &str,
    serve: ServeOptions,
    carry: &mut Carry,
    connection: Connection,
) -> io::Result<MountedFs> {
    let mounted = serve_connection(fs, mountpoint, name, serve, carry, connection, true)?;
    fusedev::notify_resend(mounted.connection.device.as_fd())?;
    Ok(mounted)
}

fn serve_connection(
    fs: Arc<dyn VolumeFs>,
    mountpoint: &Path,
    name: &str,
    serve: ServeOptions,
    carry: &mut Carry,
    mut connection: Connection,
    resuming: bool,
) -> io::Result<MountedFs> {
    let handles = carry.table(
        "handles",
        crate::fs::resume::HANDLE_FIELDS,
        crate::fs::resume::HANDLE_CAPACITY,
    )?;
    let fs = Arc::new(ResumableFs::new(fs, handles));
    let backings = Backings::new(
        Some(connection.device.clone()),
        carry.table("backing", backing::FIELDS, backing::CAPACITY)?,
    );
    if resuming {
        let (restored, lost) = fs.restore_handles();
        let backing_ids = backings.restore();
        log::info!(
            "volume {name}: resuming its connection with {restored} open handles \
             ({lost} lost) and {backing_ids} passthrough files"
        );
    }
    let stats = Arc::new(VolumeStats::default());
    let mut adapter = FuseAdapter::new(fs, name, serve.ttl(), serve.passthrough, stats.clone())
        .with_backings(backings);
    if resuming {
        adapter = adapter.resuming(connection.negotiated());
    }
    let gate = Arc::new(Gate::default());
    let (session, reply) = handshake(
        Handover::new(adapter, gate.clone()),
        &connection.init_request,
        serve.threads,
    )?;
    if resuming {
        if reply != connection.init_reply {
            log::warn!(
                "volume {name}: this build would initialize the connection differently \
                 (flags {:#x}) from how it was (flags {:#x}); serving it as it was",
                u64::from(u32_at(&reply, OUT_FLAGS))
                    | (u64::from(u32_at(&reply, OUT_FLAGS2)) << 32),
                connection.negotiated()
            );
        }
    } else {
        write_all(&connection.device, &reply)?;
        connection.init_reply = reply;
    }
    fusedev::replace_fd(session.as_fd(), connection.device.as_fd())?;
    let session = session.spawn()?;
    let device = device_number(&connection.dev).or_else(|| {
        // Answered by the session already serving.
        nix::sys::stat::stat(mountpoint)
            .inspect_err(|e| {
                log::warn!(
                    "{}: cannot read its device number: {e}",
                    mountpoint.display()
                )
            })
            .ok()
            .map(|st| st.st_dev)
    });
    Ok(MountedFs {
        session: Some(session),
        mountpoint: mountpoint.to_path_buf(),
        gate,
        connection,
        device,
        stats,
    })
}

/// A device number as mountinfo spells it ("major:minor").
fn device_number(dev: &str) -> Option<u64> {
    let (major, minor) = dev.split_once(':')?;
    Some(nix::sys::stat::makedev(
        major.parse().ok()?,
        minor.parse().ok()?,
    ))
}

/// Runs fuser's handshake on a socket carrying `init_request`; returns the session (still on
/// the socket) and fuser's answer.
fn handshake<F: fuser::Filesystem>(
    fs: F,
    init_request: &[u8],
    threads: usize,
) -> io::Result<(Session<F>, Vec<u8>)> {
    let (ours, theirs) = fdpass::pair()?;
    write_all(&ours, init_request)?;
    // fuser reads one INIT; should it want another, it reads the end of the stream instead.
    nix::sys::socket::shutdown(ours.as_raw_fd(), nix::sys::socket::Shutdown::Write)?;
    let mut config = Config::default();
    config.acl = SessionACL::All;
    config.n_threads = Some(threads.max(1));
    config.clone_fd = false;
    let session = Session::from_fd(fs, theirs, SessionACL::All, config)?;
    let mut reply = vec![0u8; 4096];
    let len = nix::unistd::read(&ours, &mut reply)?;
    reply.truncate(len);
    if len < 16 || u32_at(&reply, 4) != 0 {
        return Err(io::Error::other(format!(
            "fuser refused the connection's INIT (answer of {len} bytes)"
        )));
    }
    Ok((session, reply))
}

fn write_all(fd: &OwnedFd, bytes: &[u8]) -> io::Result<()> {
    let n = nix::unistd::write(fd, bytes)?;
    if n != bytes.len() {
        return Err(io::Error::other("a FUSE message was written short"));
    }
    Ok(())
}

/// Reads the kernel's INIT request, the first thing a new connection sends.
fn read_init(device: &OwnedFd) -> io::Result<Vec<u8>> {
    // The kernel refuses reads smaller than a request could be.
    let mut buf = vec![0u8; (16 << 20) + 4096];
    let len = loop {
        match nix::unistd::read(device, &mut buf) {
            Ok(len) => break len,
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
    };
    const FUSE_INIT: u32 = 26;
    if len < IN_FLAGS2 + 4 || u32_at(&buf, 4) != FUSE_INIT {
        return Err(io::Error::other(
            "the kernel's first FUSE request is not INIT",
        ));
    }
    buf.truncate(len);
    buf.shrink_to_fit();
    Ok(buf)
}

/// The device number of the topmost FUSE mount at `path`, from mountinfo (no request to the
/// mount, which may have no handler yet).
pub fn mount_dev_at(path: &Path) -> Option<String> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let want = escape_mount_path(path);
    info.lines().rev().find_map(|line| {
        let fields: Vec<&str> = line.split(' ').collect();
        let sep = fields.iter().position(|f| *f == "-")?;
        let is_fuse = fields.get(sep + 1)?.starts_with("fuse");
        (fields.get(4) == Some(&want.as_str()) && is_fuse).then(|| fields[2].to_string())
    })
}

/// A path as mountinfo spells it: space, tab, newline and backslash as octal escapes.
fn escape_mount_path(path: &Path) -> String {
    use std::os::unix::ffi::OsStrExt;
    let mut out = String::new();
    for &b in path.as_os_str().as_bytes() {
        match b {
            b' ' | b'\t' | b'\n' | b'\\' => out.push_str(&format!("\\{b:03o}")),
            _ => out.push(b as char),
        }
    }
    out
}

/// Sets the readahead window of the filesystem with device number `dev` (its bdi in sysfs).
fn set_readahead(dev: u64, kb: u32) -> io::Result<()> {
    let (major, minor) = (nix::sys::stat::major(dev), nix::sys::stat::minor(dev));
    let knob = format!("/sys/class/bdi/{major}:{minor}/read_ahead_kb");
    std::fs::write(&knob, kb.to_string())
        .map_err(|e| io::Error::new(e.kind(), format!("{knob}: {e}")))
}

/// Where the kernel's FUSE control filesystem is mounted (systemd mounts it at boot).
const FUSECTL: &str = "/sys/fs/fuse/connections";

/// Aborts the FUSE connection of the filesystem with device number `device`: every mount of
/// it, in every namespace, then fails with ENOTCONN and its session ends. For a connection
/// that only copies of the mount in other namespaces keep alive. Mounts the control
/// filesystem where it belongs if it is not there yet.
pub fn abort_connection(device: u64) -> io::Result<()> {
    // A FUSE superblock's device is anonymous (major 0); its minor is the connection's number.
    let abort = Path::new(FUSECTL)
        .join(nix::sys::stat::minor(device).to_string())
        .join("abort");
    if !abort.exists() {
        mount_fusectl()?;
    }
    std::fs::write(&abort, "1")
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", abort.display())))
}

/// Mounts the FUSE control filesystem where it belongs unless it is there already. systemd
/// mounts it at boot; a host without systemd may not have it, and without it neither the
/// `waiting` counter of a connection (the stuck-handler metric) nor an abort works.
pub fn mount_fusectl() -> io::Result<()> {
    if !Path::new(FUSECTL).is_dir() {
        return Err(io::Error::other(format!(
            "{FUSECTL} does not exist (no FUSE control filesystem)"
        )));
    }
    let mounted = nix::sys::statfs::statfs(FUSECTL)
        .is_ok_and(|fs| fs.filesystem_type() == FUSECTL_SUPER_MAGIC);
    if !mounted {
        nix::mount::mount(
            Some("fusectl"),
            FUSECTL,
            Some("fusectl"),
            nix::mount::MsFlags::empty(),
            None::<&str>,
        )
        .map_err(|e| io::Error::other(format!("mounting fusectl on {FUSECTL}: {e}")))?;
    }
    Ok(())
}

/// Requests the kernel has queued for the FUSE connection of the filesystem with device number
/// `device` and not yet had answered (fusectl's `waiting`): a number that stays up while the
/// volume is idle shows a stuck handler. None without the control filesystem.
pub fn waiting_requests(device: u64) -> Option<u64> {
    let waiting = Path::new(FUSECTL)
        .join(nix::sys::stat::minor(device).to_string())
        .join("waiting");
    std::fs::read_to_string(waiting).ok()?.trim().parse().ok()
}

const FUSECTL_SUPER_MAGIC: nix::sys::statfs::FsType = nix::sys::statfs::FsType(0x6573_5543);

/// True when `path` is a FUSE mount whose handler is gone ("Transport endpoint is not
/// connected"). Never call it on a mount whose connection the keeper holds: with no handler
/// serving it, the statfs waits for one.
pub fn is_stale_mount(path: &Path) -> bool {
    // statfs, not stat: stat may be answered from the kernel's attribute cache for as long as
    // the dead mount's TTL; statfs always asks the (gone) handler.
    matches!(nix::sys::statfs::statfs(path), Err(Errno::ENOTCONN))
}

/// Detaches the FUSE mount at `path` (lazily, so busy users do not block it): only when the
/// top mount there is a FUSE mount, live or stale. The volume's guard under it stays, and an
/// unmount that already happened never takes the guard away in its place.
pub fn detach_stale_mount(path: &Path) -> io::Result<()> {
    match nix::sys::statfs::statfs(path) {
        Err(Errno::ENOTCONN) => {}
        Ok(fs) if fs.filesystem_type() == nix::sys::statfs::FUSE_SUPER_MAGIC => {}
        _ => return Ok(()),
    }
    // umount2 on a path takes only the top mount of the stack there.
    match umount2(path, MntFlags::MNT_DETACH) {
        Ok(()) | Err(Errno::EINVAL) | Err(Errno::ENOENT) => Ok(()),
        Err(e) => Err(e.into()),
    }
}
