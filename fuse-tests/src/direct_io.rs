//! Direct I/O (O_DIRECT) as a program does it: a Python helper with page-aligned buffers
//! (anonymous mappings) and `os.preadv`/`os.pwritev`, so the test controls the buffer
//! address, the file offset and the length of every request; and `fio --direct=1`.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{run_ok, stdout_of_success};

const HELPER: &str = r#"
import errno, fcntl, json, mmap, os, random, sys

def attempt(f):
    try:
        return f()
    except OSError as e:
        return errno.errorcode[e.errno]

def aligned_buffer(size):
    buf = mmap.mmap(-1, size)  # page-aligned
    return buf, memoryview(buf)

def direct_read_all(fd, size, chunk):
    buf, mv = aligned_buffer(chunk)
    out = bytearray()
    while len(out) < size:
        n = os.preadv(fd, [mv[:chunk]], len(out))
        if n == 0:
            break
        out += buf[:n]
    return bytes(out)

def aligned(path):
    # Whole pages at page offsets: aligned for every rule. Holes in between, and overwrites.
    rnd = random.Random(12)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_DIRECT, 0o644)
    buf, mv = aligned_buffer(1 << 20)
    model = bytearray()
    for off, n in [(0, 1 << 20), ((1 << 20) + 8192, 4096), (8192, 12288), ((2 << 20) - 4096, 4096)]:
        data = rnd.randbytes(n)
        buf[:n] = data
        written = os.pwritev(fd, [mv[:n]], off)
        if written != n:
            return {"error": "short write of %d of %d bytes at %d" % (written, n, off)}
        if len(model) < off + n:
            model += bytes(off + n - len(model))
        model[off:off + n] = data
    back = direct_read_all(fd, len(model), 65536)
    os.close(fd)
    with open(path, "rb") as f:
        buffered = f.read()
    return {"size": len(model), "direct_read_matches": back == bytes(model),
            "buffered_read_matches": buffered == bytes(model)}

# name: (read or write, buffer offset, file offset, length)
CASES = {
    "aligned write": ("w", 0, 0, 4096),
    "aligned read": ("r", 0, 0, 4096),
    "sector write": ("w", 0, 4096, 512),
    "write at offset 1": ("w", 0, 1, 4096),
    "write at offset 256": ("w", 0, 256, 4096),
    "write of 100 bytes": ("w", 0, 0, 100),
    "write of 4097 bytes": ("w", 0, 0, 4097),
    "read at offset 1": ("r", 0, 1, 4096),
    "read at offset 256": ("r", 0, 256, 4096),
    "read of 100 bytes": ("r", 0, 0, 100),
    "read at offset 1 past the end": ("r", 0, (1 << 20) + 1, 4096),
    "empty write at offset 1": ("w", 0, 1, 0),
    "write from buffer + 1": ("w", 1, 0, 4096),
    "read into buffer + 1": ("r", 1, 0, 4096),
}

def cases(path):
    with open(path, "wb") as f:
        f.write(b"x" * 8192)
    fd = os.open(path, os.O_RDWR | os.O_DIRECT)
    buf, mv = aligned_buffer(1 << 16)
    out = {}
    for name, (op, at, off, n) in CASES.items():
        io = os.pwritev if op == "w" else os.preadv
        out[name] = attempt(lambda: io(fd, [mv[at:at + n]], off))
    os.close(fd)
    # O_DIRECT set and cleared after the open.
    fd = os.open(path, os.O_RDWR)
    fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) | os.O_DIRECT)
    out["write at offset 1 after setting O_DIRECT"] = attempt(lambda: os.pwritev(fd, [mv[:100]], 1))
    os.close(fd)
    fd = os.open(path, os.O_RDWR | os.O_DIRECT)
    fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_DIRECT)
    out["write at offset 1 after clearing O_DIRECT"] = attempt(lambda: os.pwritev(fd, [mv[:100]], 1))
    os.close(fd)
    return out

def fill(path):
    # 1 MiB direct writes until the volume refuses one; then the data is read back.
    chunk = 1 << 20
    data = random.Random(7).randbytes(chunk)
    buf, mv = aligned_buffer(chunk)
    buf[:] = data
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_DIRECT, 0o644)
    results, total = [], 0
    while len(results) < 100000:
        r = attempt(lambda: os.pwritev(fd, [mv[:chunk]], total))
        results.append(r)
        if isinstance(r, str):
            break
        total += r
    back = direct_read_all(fd, total, chunk)
    os.close(fd)
    intact = all(back[i:i + chunk] == data[:len(back[i:i + chunk])] for i in range(0, total, chunk))
    return {"written": total, "results": results, "intact": intact and len(back) == total}

print(json.dumps({"aligned": aligned, "cases": cases, "fill": fill}[sys.argv[1]](sys.argv[2])))
"#;

fn helper(command: &str, path: &Path) -> serde_json::Value {
    let out = Command::new("python3")
        .args(["-c", HELPER, command])
        .arg(path)
        .output()
        .expect("python3");
    let text = stdout_of_success(&format!("direct I/O helper {command} on {path:?}"), out);
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

/// Aligned direct writes (with holes and overwrites) at `path`, read back directly and through
/// the page cache: `{"size", "direct_read_matches", "buffered_read_matches"}` or `{"error"}`.
pub fn aligned(path: &Path) -> serde_json::Value {
    helper("aligned", path)
}

/// What each request of a fixed set, aligned and not, gives on a file at `path` opened with
/// O_DIRECT (or given it with fcntl): bytes done, or the errno's name.
pub fn cases(path: &Path) -> BTreeMap<String, serde_json::Value> {
    serde_json::from_value(helper("cases", path)).unwrap()
}

/// Direct 1 MiB writes at `path` until one fails: `{"written", "results", "intact"}`.
pub fn fill(path: &Path) -> serde_json::Value {
    helper("fill", path)
}

/// `fio --direct=1` random reads and writes, verified, on a 16 MiB file at `path`. Returns
/// fio's output; panics with it if fio failed.
pub fn fio_randrw(path: &Path) -> String {
    let out = Command::new("fio")
        .args([
            "--name=direct",
            "--direct=1",
            "--rw=randrw",
            "--bs=4k",
            "--size=16m",
            "--ioengine=psync",
            "--verify=crc32c",
            "--verify_state_save=0",
        ])
        .arg(format!("--filename={}", path.display()))
        .output()
        .expect("fio is installed");
    stdout_of_success(&format!("fio --direct=1 on {path:?}"), out)
}

/// Requests misaligned only in the caller's buffer address (or in how a request is split
/// into buffers): FUSE gives the handler offsets and lengths, never addresses, so a volume the
/// handler serves cannot refuse them (see docs/architecture.md, Direct I/O).
pub const ADDRESS_ONLY: [&str; 2] = ["write from buffer + 1", "read into buffer + 1"];

/// O_DIRECT changed with fcntl after the open: a kernel passthrough open keeps the backing
/// file it opened with the original flags, so the change does not reach the host.
pub const SETFL: [&str; 2] = [
    "write at offset 1 after setting O_DIRECT",
    "write at offset 1 after clearing O_DIRECT",
];

/// A kernel tmpfs, unmounted on drop.
struct HostTmpfs {
    dir: tempfile::TempDir,
}

impl HostTmpfs {
    fn new() -> HostTmpfs {
        let dir = tempfile::tempdir().unwrap();
        run_ok(
            Command::new("mount")
                .args(["-t", "tmpfs", "-o", "size=16m", "tmpfs"])
                .arg(dir.path()),
        );
        HostTmpfs { dir }
    }
}

impl Drop for HostTmpfs {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(self.dir.path(), nix::mount::MntFlags::MNT_DETACH);
    }
}

/// A loop block device on an 8 KiB file (the size `cases` writes), detached on drop. Its
/// directory is named as `tools/test` expects to clean up after a killed test.
struct LoopDevice {
    device: PathBuf,
    _dir: tempfile::TempDir,
}

impl LoopDevice {
    fn new() -> LoopDevice {
        let dir = tempfile::Builder::new()
            .prefix("fvol-loopfs-")
            .tempdir()
            .unwrap();
        let image = dir.path().join("image");
        std::fs::write(&image, vec![0u8; 8192]).unwrap();
        let device = run_ok(Command::new("losetup").args(["-f", "--show"]).arg(&image));
        LoopDevice {
            device: PathBuf::from(device.trim()),
            _dir: dir,
        }
    }
}

impl Drop for LoopDevice {
    fn drop(&mut self) {
        let _ = Command::new("losetup").arg("-d").arg(&self.device).status();
    }
}

/// `cases` on a kernel tmpfs.
pub fn kernel_tmpfs_cases() -> BTreeMap<String, serde_json::Value> {
    cases(&HostTmpfs::new().dir.path().join("f"))
}

/// `cases` on a block device (a loop device, 512-byte sectors): what a disk filesystem on an
/// RBD image's block device would answer.
pub fn block_device_cases() -> BTreeMap<String, serde_json::Value> {
    cases(&LoopDevice::new().device)
}
