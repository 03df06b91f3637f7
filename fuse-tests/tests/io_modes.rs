//! Without a byte limit every open is served by kernel passthrough; with one, all I/O goes
//! through the handler. The kernel refuses to mix the two on one inode, so every mix of
//! readers and writers a program can make must open fine and see the same bytes, either way.
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;

use fuse_tests::{Backend, TestSession, run_ok};

fn read_all(f: &File, len: usize) -> Vec<u8> {
    let mut buf = vec![0u8; len];
    let n = f.read_at(&mut buf, 0).unwrap();
    buf.truncate(n);
    buf
}

fn reader_first_then_writer(s: TestSession) {
    std::fs::write(s.path("f"), b"old data").unwrap();
    let reader = File::open(s.path("f")).unwrap();
    let writer = OpenOptions::new().write(true).open(s.path("f")).unwrap();
    writer.write_all_at(b"new", 0).unwrap();
    assert_eq!(read_all(&reader, 8), b"new data");
    let second_reader = File::open(s.path("f")).unwrap();
    assert_eq!(read_all(&second_reader, 8), b"new data");
}

fn writer_first_then_reader(s: TestSession) {
    let writer = File::create(s.path("g")).unwrap();
    writer.write_all_at(b"abc", 0).unwrap();
    let reader = File::open(s.path("g")).unwrap();
    assert_eq!(read_all(&reader, 3), b"abc");
    writer.write_all_at(b"xyz", 0).unwrap();
    assert_eq!(read_all(&reader, 3), b"xyz");
    drop(writer);
    let reader2 = File::open(s.path("g")).unwrap();
    assert_eq!(read_all(&reader2, 3), b"xyz");
}

fn many_readers_and_writers_interleaved(s: TestSession) {
    std::fs::write(s.path("h"), vec![0u8; 4096]).unwrap();
    let mut handles = Vec::new();
    for i in 0..16u8 {
        let f = if i % 3 == 0 {
            let w = OpenOptions::new()
                .read(true)
                .write(true)
                .open(s.path("h"))
                .unwrap();
            w.write_all_at(&[i], i as u64).unwrap();
            w
        } else {
            File::open(s.path("h")).unwrap()
        };
        handles.push(f);
        if i % 5 == 4 {
            handles.remove(0);
        }
    }
    let data = std::fs::read(s.path("h")).unwrap();
    for i in (0..16u8).filter(|i| i % 3 == 0) {
        assert_eq!(data[i as usize], i);
    }
}

fn all(backend: Backend, limit: Option<u64>) {
    reader_first_then_writer(TestSession::with(backend, limit, None));
    writer_first_then_reader(TestSession::with(backend, limit, None));
    many_readers_and_writers_interleaved(TestSession::with(backend, limit, None));
}

#[test]
fn through_the_handler_with_a_quota() {
    all(Backend::Local, Some(1 << 30));
}

#[test]
fn through_kernel_passthrough_without_a_quota() {
    all(Backend::Local, None);
}

#[test]
fn in_memory() {
    all(Backend::Tmpfs, Some(1 << 30));
}

/// tmpfs data is memory already: reads and writes bypass the kernel's page cache, which would
/// hold a second copy of it (fincore counts the file's pages in the cache).
#[test]
fn in_memory_data_is_not_cached_twice() {
    let s = TestSession::with(Backend::Tmpfs, Some(1 << 30), None);
    let path = s.path("once");
    let data: Vec<u8> = (0..4u32 << 20).map(|i| (i % 251) as u8).collect();
    std::fs::write(&path, &data).unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), data);
    let cached = run_ok(
        std::process::Command::new("fincore")
            .args(["--bytes", "--noheadings", "--output", "RES"])
            .arg(&path),
    );
    assert_eq!(
        cached.trim(),
        "0",
        "page cache bytes of a 4 MiB file written and read"
    );
}

#[test]
fn passthrough_writes_are_counted_at_close() {
    let s = TestSession::local(None, None);
    let base = s.used_bytes();
    std::fs::write(s.path("p"), vec![1u8; 1 << 20]).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while s.used_bytes() != base + (1 << 20) && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    assert_eq!(s.used_bytes(), base + (1 << 20));
}
