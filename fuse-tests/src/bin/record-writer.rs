//! Writes checksummed records to a file nonstop, each fsynced and read back, until a stop file
//! appears: the workload of a database that must see no error while fvol restarts under it.
//!
//! usage: record-writer FILE STOPFILE
//!
//! Each record: magic "FVRC", payload length (u32), sequence number (u64), payload (bytes
//! derived from the sequence number), FNV-1a of all that (u64); all little-endian. Appended
//! at the end of what is there. Any error ends the run with status 1 and the error on stderr.
//! On stop it prints `records N longest-ms MS` (MS: the longest write + fsync + read back).
//!
//! `record-writer --check FILE` checks a file written so: every record intact and numbered
//! in order; prints `records N`.
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::{Duration, Instant};

const MAGIC: &[u8; 4] = b"FVRC";

fn fnv1a(data: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in data {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// Record `seq`: between 100 bytes and 16 KiB of payload.
fn record(seq: u64) -> Vec<u8> {
    let len = 100 + (seq.wrapping_mul(7919) % 16_284) as usize;
    let mut out = Vec::with_capacity(16 + len + 8);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&(len as u32).to_le_bytes());
    out.extend_from_slice(&seq.to_le_bytes());
    let mut x = seq.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    for _ in 0..len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.push(x as u8);
    }
    let sum = fnv1a(&out);
    out.extend_from_slice(&sum.to_le_bytes());
    out
}

fn fail(what: String) -> ! {
    eprintln!("record-writer: {what}");
    std::process::exit(1);
}

fn check(path: &Path) -> u64 {
    let mut data = Vec::new();
    File::open(path)
        .and_then(|mut f| f.read_to_end(&mut data))
        .unwrap_or_else(|e| fail(format!("reading {}: {e}", path.display())));
    let (mut at, mut seq) = (0usize, 0u64);
    while at < data.len() {
        let want = record(seq);
        match data.get(at..at + want.len()) {
            Some(got) if got == want.as_slice() => {}
            _ => fail(format!(
                "record {seq} at offset {at} is damaged ({} bytes left)",
                data.len() - at
            )),
        }
        at += want.len();
        seq += 1;
    }
    seq
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() == 3 && args[1] == "--check" {
        println!("records {}", check(Path::new(&args[2])));
        return;
    }
    let [_, file, stop] = args.as_slice() else {
        fail("usage: record-writer FILE STOPFILE | --check FILE".into());
    };
    let mut f = OpenOptions::new()
        .create(true)
        .read(true)
        .append(true)
        .open(file)
        .unwrap_or_else(|e| fail(format!("opening {file}: {e}")));
    let mut at = f.metadata().map(|m| m.len()).unwrap_or(0);
    let (mut seq, mut longest) = (0u64, Duration::ZERO);
    if at != 0 {
        fail(format!("{file} is not empty"));
    }
    while !Path::new(stop).exists() {
        let rec = record(seq);
        let started = Instant::now();
        f.write_all(&rec)
            .unwrap_or_else(|e| fail(format!("writing record {seq}: {e}")));
        f.sync_all()
            .unwrap_or_else(|e| fail(format!("fsync after record {seq}: {e}")));
        let mut back = vec![0u8; rec.len()];
        f.read_exact_at(&mut back, at)
            .unwrap_or_else(|e| fail(format!("reading record {seq} back: {e}")));
        if back != rec {
            fail(format!("record {seq} read back differs"));
        }
        longest = longest.max(started.elapsed());
        at += rec.len() as u64;
        seq += 1;
    }
    println!("records {seq} longest-ms {}", longest.as_millis());
}
