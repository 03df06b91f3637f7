//! Unix seqpacket sockets that carry descriptors (SCM_RIGHTS): how the keeper and the daemon
//! hand FUSE connections and memfds to each other. Received descriptors are owned at once
//! (close-on-exec), so none leaks whatever happens to the message.
use std::io::{self, IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;

use nix::errno::Errno;
use nix::sys::socket::{
    self, AddressFamily, Backlog, ControlMessage, ControlMessageOwned, MsgFlags, SockFlag,
    SockType, UnixAddr,
};

/// The most descriptors one message carries.
pub const MAX_FDS: usize = 16;

/// A new seqpacket socket, unbound.
fn seqpacket() -> io::Result<OwnedFd> {
    Ok(socket::socket(
        AddressFamily::Unix,
        SockType::SeqPacket,
        SockFlag::SOCK_CLOEXEC,
        None,
    )?)
}

/// Closes every descriptor but stdin, stdout and stderr: for a process just started (the
/// keeper), which must not keep its parent's descriptors (pipes others wait on, locks) open.
pub fn close_inherited() {
    // SAFETY: called first thing in a new process's main, before anything in it owns a
    // descriptor above 2; close_range only closes, it touches no memory.
    let rc = unsafe { libc::close_range(3, libc::c_uint::MAX, 0) };
    if rc != 0 {
        log::debug!("close_range: {}", std::io::Error::last_os_error());
    }
}

/// A seqpacket socket listening at `path` (which must not exist).
pub fn listen(path: &Path) -> io::Result<OwnedFd> {
    let fd = seqpacket()?;
    socket::bind(fd.as_raw_fd(), &UnixAddr::new(path)?)?;
    socket::listen(&fd, Backlog::new(64)?)?;
    Ok(fd)
}

/// A connection to the seqpacket socket at `path`.
pub fn connect(path: &Path) -> io::Result<OwnedFd> {
    let fd = seqpacket()?;
    socket::connect(fd.as_raw_fd(), &UnixAddr::new(path)?)?;
    Ok(fd)
}

/// Two connected seqpacket sockets.
pub fn pair() -> io::Result<(OwnedFd, OwnedFd)> {
    Ok(socket::socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )?)
}

/// Accepts a connection on `listener`.
pub fn accept(listener: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    let fd = socket::accept4(listener.as_raw_fd(), SockFlag::SOCK_CLOEXEC)?;
    // SAFETY: accept4 just returned this new descriptor; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The uid of the process at the other end of `sock`.
pub fn peer_uid(sock: BorrowedFd<'_>) -> io::Result<u32> {
    let cred = socket::getsockopt(&sock, socket::sockopt::PeerCredentials)?;
    Ok(cred.uid())
}

/// Sends one message with `fds` attached (at most `MAX_FDS`).
pub fn send(sock: BorrowedFd<'_>, bytes: &[u8], fds: &[BorrowedFd<'_>]) -> io::Result<()> {
    if fds.len() > MAX_FDS {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "{} descriptors in one message, at most {MAX_FDS}",
                fds.len()
            ),
        ));
    }
    let raw: Vec<RawFd> = fds.iter().map(|f| f.as_raw_fd()).collect();
    let rights = [ControlMessage::ScmRights(&raw)];
    let cmsgs: &[ControlMessage] = if raw.is_empty() { &[] } else { &rights };
    let iov = [IoSlice::new(bytes)];
    loop {
        match socket::sendmsg::<()>(sock.as_raw_fd(), &iov, cmsgs, MsgFlags::MSG_NOSIGNAL, None) {
            Ok(n) if n == bytes.len() => return Ok(()),
            Ok(_) => return Err(io::Error::other("a seqpacket message was cut short")),
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// Receives one message into `buf`: its length (0 when the peer closed) and the descriptors
/// it carried. A message longer than `buf`, or with more than `MAX_FDS` descriptors, is an
/// error (its descriptors are closed).
pub fn recv(sock: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<(usize, Vec<OwnedFd>)> {
    let mut space = nix::cmsg_space!([RawFd; MAX_FDS]);
    loop {
        let mut iov = [IoSliceMut::new(buf)];
        let msg = match socket::recvmsg::<()>(
            sock.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::MSG_CMSG_CLOEXEC,
        ) {
            Ok(msg) => msg,
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        };
        let mut fds = Vec::new();
        for cmsg in msg.cmsgs()? {
            if let ControlMessageOwned::ScmRights(raw) = cmsg {
                for fd in raw {
                    // SAFETY: the kernel installed these descriptors in this process for this
                    // message; nothing else knows them yet.
                    fds.push(unsafe { OwnedFd::from_raw_fd(fd) });
                }
            }
        }
        let (len, flags) = (msg.bytes, msg.flags);
        if flags.intersects(MsgFlags::MSG_TRUNC | MsgFlags::MSG_CTRUNC) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "a message or its descriptors did not fit",
            ));
        }
        return Ok((len, fds));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Seek, Write};
    use std::os::fd::AsFd;

    #[test]
    fn descriptors_travel_with_their_message() {
        let (a, b) = pair().unwrap();
        let mut file = tempfile::tempfile().unwrap();
        file.write_all(b"kept").unwrap();
        send(a.as_fd(), b"hello", &[file.as_fd()]).unwrap();
        drop(file);
        let mut buf = [0u8; 64];
        let (len, fds) = recv(b.as_fd(), &mut buf).unwrap();
        assert_eq!(&buf[..len], b"hello");
        assert_eq!(fds.len(), 1);
        let mut got = std::fs::File::from(fds.into_iter().next().unwrap());
        got.rewind().unwrap();
        let mut text = String::new();
        got.read_to_string(&mut text).unwrap();
        assert_eq!(text, "kept");
        drop(a);
        assert_eq!(recv(b.as_fd(), &mut buf).unwrap().0, 0);
    }
}
