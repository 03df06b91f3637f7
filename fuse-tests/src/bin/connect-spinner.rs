//! The attacker of tests/security_sockets.rs: spins `connect()` on unix sockets until a stop
//! file appears, then prints one line per socket: `PATH connected=N refused=N denied=N
//! missing=N other=N` (`denied` is EACCES/EPERM, `missing` ENOENT). Run it as an unprivileged
//! user (setpriv); it holds no connection it makes, so a winning attempt costs the daemon
//! nothing but is counted.
//! Usage: connect-spinner STOPFILE SOCKET...
use std::io::ErrorKind;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Threads per socket: the window of the old code is a few microseconds wide.
const THREADS_PER_SOCKET: usize = 2;

#[derive(Default)]
struct Counts {
    connected: AtomicU64,
    refused: AtomicU64,
    denied: AtomicU64,
    missing: AtomicU64,
    other: AtomicU64,
}

fn spin(socket: &Path, stop: &Path, counts: &Counts) {
    let mut attempts: u64 = 0;
    loop {
        // The stop file is checked every 256 attempts: a stat per connect would halve the rate.
        if attempts.is_multiple_of(256) && stop.exists() {
            return;
        }
        attempts += 1;
        let counter = match UnixStream::connect(socket) {
            Ok(_) => &counts.connected,
            Err(e) => match e.kind() {
                ErrorKind::ConnectionRefused => &counts.refused,
                ErrorKind::PermissionDenied => &counts.denied,
                ErrorKind::NotFound => &counts.missing,
                _ => &counts.other,
            },
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

fn main() {
    let args: Vec<PathBuf> = std::env::args_os().skip(1).map(PathBuf::from).collect();
    let (stop, sockets) = args
        .split_first()
        .expect("usage: connect-spinner STOPFILE SOCKET...");
    let stop = Arc::new(stop.clone());
    let all: Vec<(PathBuf, Arc<Counts>)> = sockets
        .iter()
        .map(|s| (s.clone(), Arc::new(Counts::default())))
        .collect();
    let mut threads = Vec::new();
    for (socket, counts) in &all {
        for _ in 0..THREADS_PER_SOCKET {
            let (socket, counts, stop) = (socket.clone(), counts.clone(), stop.clone());
            threads.push(std::thread::spawn(move || spin(&socket, &stop, &counts)));
        }
    }
    for thread in threads {
        thread.join().expect("spinner thread");
    }
    for (socket, c) in &all {
        let n = |a: &AtomicU64| a.load(Ordering::Relaxed);
        println!(
            "{} connected={} refused={} denied={} missing={} other={}",
            socket.display(),
            n(&c.connected),
            n(&c.refused),
            n(&c.denied),
            n(&c.missing),
            n(&c.other)
        );
    }
}
