//! The keeper: a small process that holds, per volume, what must outlive the daemon (the FUSE
//! connection, the shared tables of its state, descriptors of open files that lost their last
//! name) and hands it to the next daemon. While it holds a volume's connection, the kernel
//! keeps the mount alive and its users' calls wait for a handler instead of failing.
//!
//! - `fvol keeper` runs `server::main`: no threads, no dependency on the rest of fvol but a
//!   few system calls (`sys::fdpass`), nothing that can fail on bad input but the one request.
//!   The daemon starts it when it finds none (`Keeper::connect_or_start`); it detaches into a
//!   session of its own, so it survives the daemon's death (SIGKILL included), and exits once
//!   it holds nothing and no daemon is connected.
//! - It listens on `ROOT/keeper.sock` (seqpacket, 0600 in a root-only directory, bound in a
//!   private directory and renamed into place like the API socket, see docs/security.md);
//!   each connection is checked to be root's (SO_PEERCRED).
//! - It watches each volume's FUSE connection: once the kernel ends it (the last unmount,
//!   even with no daemon running), the volume's entries are dropped.
//!
//! The protocol is stable across fvol versions (an upgraded daemon talks to the old keeper):
//! every message starts with `VERSION`, then an operation byte, then length-prefixed fields.
mod client;
mod protocol;
mod server;

pub use client::{Keeper, KeptEntry};
pub use server::main;

/// The keeper's socket in ROOT.
pub const SOCKET_FILE: &str = "keeper.sock";
/// The keeper's log in ROOT (its stderr).
pub const LOG_FILE: &str = "keeper.log";
