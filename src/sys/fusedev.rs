//! The FUSE device below fuser: mounting on a descriptor of our own (so that a successor can
//! serve the same connection), replacing a session's descriptor, kernel notifications fuser
//! does not send, and backing ids a predecessor registered.
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::path::Path;

use nix::fcntl::{OFlag, open};
use nix::mount::{MsFlags, mount};
use nix::sys::stat::Mode;

/// `FUSE_NOTIFY_RESEND` (Linux 6.9): the kernel queues again every request a handler read
/// but did not answer, with bit 63 of `unique` set.
const FUSE_NOTIFY_RESEND: i32 = 7;
/// `_IOW(229, 2, uint32_t)`: FUSE_DEV_IOC_BACKING_CLOSE.
const FUSE_DEV_IOC_BACKING_CLOSE: libc::c_ulong = 0x4004_e502;

/// A new, unmounted connection to the FUSE device.
pub fn open_device() -> io::Result<OwnedFd> {
    Ok(open(
        c"/dev/fuse",
        OFlag::O_RDWR | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?)
}

/// Mounts the FUSE connection `device` at `mountpoint` (nosuid, nodev), as root, with the
/// kernel options `options` after the ones every mount needs.
pub fn mount_device(
    device: BorrowedFd<'_>,
    mountpoint: &Path,
    source: &str,
    options: &str,
) -> io::Result<()> {
    let root_mode = nix::sys::stat::stat(mountpoint)?.st_mode;
    let data = format!(
        "fd={},rootmode={root_mode:o},user_id=0,group_id=0,{options}",
        device.as_raw_fd()
    );
    mount(
        Some(source),
        mountpoint,
        Some("fuse"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some(data.as_str()),
    )
    .map_err(|e| io::Error::other(format!("mount({}, {data}): {e}", mountpoint.display())))
}

/// Makes the descriptor number `target` name the open file of `with` from now on (dup3), so
/// that whoever reads and writes `target` (a fuser session) talks to that file instead. The
/// file `target` named before is closed.
pub fn replace_fd(target: BorrowedFd<'_>, with: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: `target` is a descriptor its owner keeps open across this call (the borrow says
    // so); dup3 atomically makes the same number refer to `with`'s open file, so the owner's
    // descriptor stays valid and still owned by it. Nothing else in the process can get this
    // number in between: there is no moment when it is closed.
    let rc = unsafe { libc::dup3(with.as_raw_fd(), target.as_raw_fd(), libc::O_CLOEXEC) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Asks the kernel to queue again the requests the connection's previous handler read but
/// never answered.
pub fn notify_resend(device: BorrowedFd<'_>) -> io::Result<()> {
    // struct fuse_out_header { len, error (the notification code), unique = 0 }.
    let mut header = [0u8; 16];
    header[0..4].copy_from_slice(&16u32.to_ne_bytes());
    header[4..8].copy_from_slice(&FUSE_NOTIFY_RESEND.to_ne_bytes());
    let written = nix::unistd::write(device, &header)?;
    if written != header.len() {
        return Err(io::Error::other("short write of a FUSE notification"));
    }
    Ok(())
}

/// Closes backing id `id` of the connection (registered by this handler or a predecessor).
pub fn close_backing(device: BorrowedFd<'_>, id: u32) -> io::Result<()> {
    // SAFETY: the ioctl reads one u32 from the pointer, which is valid for the call.
    let rc = unsafe {
        libc::ioctl(
            device.as_raw_fd(),
            FUSE_DEV_IOC_BACKING_CLOSE as _,
            &id as *const u32,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Takes ownership of backing id `id`, registered on the connection `reply` answers on by a
/// predecessor of this handler; dropping the result closes it.
pub fn adopt_backing_for_open(reply: &fuser::ReplyOpen, id: u32) -> fuser::BackingId {
    // SAFETY: `id` was registered on this very connection (the predecessor's table of backing
    // ids, kept with the connection) and nothing else owns it now: the adapter adopts each
    // id once and closes it only through the returned value.
    unsafe { reply.wrap_backing(id) }
}

/// `adopt_backing_for_open` for an answer to a create.
pub fn adopt_backing_for_create(reply: &fuser::ReplyCreate, id: u32) -> fuser::BackingId {
    // SAFETY: as in `adopt_backing_for_open`.
    unsafe { reply.wrap_backing(id) }
}
