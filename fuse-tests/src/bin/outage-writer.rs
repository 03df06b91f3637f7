//! The application of tests/rbd_outage.rs: writes checksummed records to one file, nonstop,
//! until a stop file appears. Each round writes record N at N × SIZE, fsyncs the file, drops
//! the range from the page cache and reads it back, so that every step reaches the volume's
//! handler. One line per round on stdout, flushed at once:
//! - `ok N MS`: record N is written, durable (fsync returned 0) and reads back intact;
//! - `err N STEP ERRNO MS`: STEP (`write`, `fsync`, `read`, `verify`) failed with ERRNO (0 for a
//!   record that read back wrong); record N is tried again after a pause.
//!
//! MS is the wall clock in milliseconds since the Unix epoch. Records are `N` (u64), an
//! FNV-1a checksum of the payload (u64), then the payload (xorshift bytes seeded by N), so
//! `verify` can check a file afterwards: `outage-writer --verify FILE SIZE COUNT`.
//! Usage: outage-writer FILE STOPFILE SIZE
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How long to pause after a failed step before the record is tried again.
const PAUSE: Duration = Duration::from_millis(200);

fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ *b as u64).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

fn record(n: u64, size: usize) -> Vec<u8> {
    let body = fuse_tests::random_bytes(n, size - 16);
    let mut r = Vec::with_capacity(size);
    r.extend_from_slice(&n.to_le_bytes());
    r.extend_from_slice(&fnv(&body).to_le_bytes());
    r.extend_from_slice(&body);
    r
}

fn now_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0)
}

fn errno(e: &std::io::Error) -> i32 {
    e.raw_os_error().unwrap_or(0)
}

/// One round for record `n`: the failing step and its errno, if any.
fn round(file: &File, n: u64, size: usize) -> Result<(), (&'static str, i32)> {
    let rec = record(n, size);
    let at = n * size as u64;
    file.write_all_at(&rec, at)
        .map_err(|e| ("write", errno(&e)))?;
    file.sync_all().map_err(|e| ("fsync", errno(&e)))?;
    // Clean pages after the fsync: dropping them makes the read below reach the handler.
    // SAFETY: a plain syscall on a descriptor this function borrows.
    unsafe {
        libc::posix_fadvise(
            file.as_raw_fd(),
            at as libc::off_t,
            size as libc::off_t,
            libc::POSIX_FADV_DONTNEED,
        )
    };
    let mut back = vec![0u8; size];
    file.read_exact_at(&mut back, at)
        .map_err(|e| ("read", errno(&e)))?;
    if back != rec {
        return Err(("verify", 0));
    }
    Ok(())
}

fn write_records(path: &Path, stop: &Path, size: usize) {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    let mut out = std::io::stdout().lock();
    let mut n = 0u64;
    while !stop.exists() {
        match round(&file, n, size) {
            Ok(()) => {
                let _ = writeln!(out, "ok {n} {}", now_ms());
                n += 1;
            }
            Err((step, errno)) => {
                let _ = writeln!(out, "err {n} {step} {errno} {}", now_ms());
                std::thread::sleep(PAUSE);
            }
        }
        let _ = out.flush();
    }
}

/// Checks records `0..count` of `path`; prints the first bad one and exits 1.
fn verify(path: &Path, size: usize, count: u64) {
    let file = File::open(path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    let mut back = vec![0u8; size];
    for n in 0..count {
        if let Err(e) = file.read_exact_at(&mut back, n * size as u64) {
            println!("record {n}: {e}");
            std::process::exit(1);
        }
        let body = &back[16..];
        let index = u64::from_le_bytes(back[..8].try_into().unwrap());
        let sum = u64::from_le_bytes(back[8..16].try_into().unwrap());
        if index != n || sum != fnv(body) || back != record(n, size) {
            println!("record {n}: damaged (index {index}, checksum {sum:#x})");
            std::process::exit(1);
        }
    }
    println!("{count} records intact");
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let size = |s: &str| -> usize {
        let n: usize = s.parse().expect("SIZE is a number of bytes");
        assert!(n >= 64, "SIZE is at least 64 bytes");
        n
    };
    match args.as_slice() {
        [flag, file, sz, count] if flag == "--verify" => verify(
            Path::new(file),
            size(sz),
            count.parse().expect("COUNT is a number"),
        ),
        [file, stop, sz] => write_records(Path::new(file), Path::new(stop), size(sz)),
        _ => {
            eprintln!("usage: outage-writer FILE STOPFILE SIZE | --verify FILE SIZE COUNT");
            std::process::exit(2);
        }
    }
}
