//! Reference-model test: random operation sequences run on a volume and on a plain directory
//! (the model) with a quota counter. After every step the two trees must hold the same names
//! and bytes, the volume's usage must match what `du` counts, and it must never exceed the
//! limit. The same sequences run against every backend. An operation the volume refuses for space must be one
//! that could not fit.
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::fd::AsFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use fuse_tests::{Backend, TestSession};
use nix::fcntl::{FallocateFlags, fallocate};
use proptest::prelude::*;

const LIMIT: u64 = 1 << 20;
const BLOCK: u64 = 4096;
const NAMES: [&str; 5] = ["a", "b", "c", "d/x", "d/y"];

#[derive(Clone, Debug)]
enum Op {
    Write {
        file: usize,
        offset: u64,
        len: usize,
        byte: u8,
    },
    Truncate {
        file: usize,
        size: u64,
    },
    Fallocate {
        file: usize,
        offset: u64,
        len: u64,
    },
    Unlink {
        file: usize,
    },
    Rename {
        from: usize,
        to: usize,
    },
    Link {
        from: usize,
        to: usize,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let file = 0..NAMES.len();
    prop_oneof![
        4 => (file.clone(), 0..300_000u64, 1..70_000usize, any::<u8>())
            .prop_map(|(file, offset, len, byte)| Op::Write { file, offset, len, byte }),
        1 => (file.clone(), 0..400_000u64).prop_map(|(file, size)| Op::Truncate { file, size }),
        1 => (file.clone(), 0..300_000u64, 1..200_000u64)
            .prop_map(|(file, offset, len)| Op::Fallocate { file, offset, len }),
        1 => file.clone().prop_map(|file| Op::Unlink { file }),
        1 => (file.clone(), file.clone()).prop_map(|(from, to)| Op::Rename { from, to }),
        1 => (file.clone(), file).prop_map(|(from, to)| Op::Link { from, to }),
    ]
}

/// Outcome of one operation: bytes done (writes), or the errno.
type Outcome = Result<u64, i32>;

fn errno(e: std::io::Error) -> i32 {
    e.raw_os_error().unwrap_or(-1)
}

fn apply(root: &Path, op: &Op) -> Outcome {
    let p = |i: usize| root.join(NAMES[i]);
    match *op {
        Op::Write {
            file,
            offset,
            len,
            byte,
        } => {
            let f = OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(p(file))
                .map_err(errno)?;
            f.write_at(&vec![byte; len], offset)
                .map(|n| n as u64)
                .map_err(errno)
        }
        Op::Truncate { file, size } => {
            let f = OpenOptions::new()
                .write(true)
                .open(p(file))
                .map_err(errno)?;
            f.set_len(size).map(|()| 0).map_err(errno)
        }
        Op::Fallocate { file, offset, len } => {
            let f = OpenOptions::new()
                .write(true)
                .open(p(file))
                .map_err(errno)?;
            fallocate(
                f.as_fd(),
                FallocateFlags::empty(),
                offset as i64,
                len as i64,
            )
            .map(|()| 0)
            .map_err(|e| e as i32)
        }
        Op::Unlink { file } => fs::remove_file(p(file)).map(|()| 0).map_err(errno),
        Op::Rename { from, to } => fs::rename(p(from), p(to)).map(|()| 0).map_err(errno),
        Op::Link { from, to } => fs::hard_link(p(from), p(to)).map(|()| 0).map_err(errno),
    }
}

/// A write the volume cut short is replayed on the model with the same length.
fn replay_on_model(op: &Op, volume: &Outcome) -> Op {
    match (op, volume) {
        (
            Op::Write {
                file, offset, byte, ..
            },
            Ok(n),
        ) => Op::Write {
            file: *file,
            offset: *offset,
            len: *n as usize,
            byte: *byte,
        },
        _ => op.clone(),
    }
}

fn snapshot(root: &Path) -> Vec<(String, Vec<u8>)> {
    NAMES
        .iter()
        .filter_map(|n| fs::read(root.join(n)).ok().map(|d| (n.to_string(), d)))
        .collect()
}

/// What a backend may charge beyond an operation's own blocks: none allocates more than the
/// 4 KiB blocks an operation touches.
fn slack(_backend: Backend) -> u64 {
    0
}

fn need(op: &Op) -> u64 {
    match *op {
        Op::Write { len, .. } => (len as u64).div_ceil(BLOCK) * BLOCK,
        Op::Fallocate { len, .. } => len.div_ceil(BLOCK) * BLOCK,
        _ => BLOCK,
    }
}

struct Model {
    _dir: tempfile::TempDir,
    root: PathBuf,
}

fn model() -> Model {
    // Under /tmp like the volume's backing directory, so allocation behaves the same.
    let dir = tempfile::Builder::new()
        .prefix("fvol-model-")
        .tempdir()
        .unwrap();
    let root = dir.path().join("data");
    fs::create_dir_all(root.join("d")).unwrap();
    Model { _dir: dir, root }
}

fn run(backend: Backend, ops: &[Op]) -> Result<(), TestCaseError> {
    let s = TestSession::with(backend, Some(LIMIT), None);
    fs::create_dir(s.path("d")).unwrap();
    let m = model();
    for (step, op) in ops.iter().enumerate() {
        let before = s.used_bytes();
        let got = apply(s.mnt(), op);
        let want = apply(&m.root, &replay_on_model(op, &got));
        match (&got, &want) {
            (Err(libc::ENOSPC), Ok(_)) => {
                prop_assert!(
                    before + need(op) + slack(backend) > LIMIT,
                    "step {step} {op:?}: refused but fits"
                );
                // Undo on the model what the volume refused (the model has no limit).
                let fresh = model();
                copy_tree(s.mnt(), &fresh.root);
                return check_tail(&s, &ops[step + 1..], fresh);
            }
            (Ok(n), Ok(_)) if matches!(op, Op::Write { len, .. } if (*n as usize) < *len) => {
                prop_assert!(
                    before + need(op) + slack(backend) > LIMIT,
                    "step {step} {op:?}: short but fits"
                );
            }
            _ => prop_assert_eq!(&got, &want, "step {} {:?}", step, op),
        }
        compare(&s, &m.root, step, op)?;
    }
    check_walk(&s)
}

/// After a divergence the model is rebuilt from the volume and the run goes on.
fn check_tail(s: &TestSession, ops: &[Op], m: Model) -> Result<(), TestCaseError> {
    for (step, op) in ops.iter().enumerate() {
        let got = apply(s.mnt(), op);
        if got == Err(libc::ENOSPC) {
            continue;
        }
        let _ = apply(&m.root, &replay_on_model(op, &got));
        prop_assert_eq!(
            snapshot(s.mnt()),
            snapshot(&m.root),
            "tail step {} {:?}",
            step,
            op
        );
        check_usage(s, step, op)?;
    }
    check_walk(s)
}

fn copy_tree(from: &Path, to: &Path) {
    for (name, data) in snapshot(from) {
        fs::File::create(to.join(&name))
            .unwrap()
            .write_all(&data)
            .unwrap();
    }
}

fn compare(s: &TestSession, model: &Path, step: usize, op: &Op) -> Result<(), TestCaseError> {
    prop_assert_eq!(
        snapshot(s.mnt()),
        snapshot(model),
        "contents after step {} {:?}",
        step,
        op
    );
    check_usage(s, step, op)
}

/// ext4 allocates extent-tree blocks at writeback, after the handler re-read the inode, so
/// `du` may run ahead by a block per fragmented file until the next operation on it.
/// A close's RELEASE reaches the handler asynchronously, so an unlinked file's space may come
/// back a moment after `du` stops counting it: allow that moment.
fn check_usage(
    s: &TestSession,
    step: usize,
    op: &dyn std::fmt::Debug,
) -> Result<(), TestCaseError> {
    let slack = NAMES.len() as u64 * BLOCK;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    let (mut used, mut real) = (s.used_bytes(), s.du());
    while !(used <= real && real <= used + slack) && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(5));
        (used, real) = (s.used_bytes(), s.du());
    }
    prop_assert!(
        used <= real && real <= used + slack,
        "usage {} vs du {} after step {} {:?}",
        used,
        real,
        step,
        op
    );
    prop_assert!(used <= LIMIT, "usage {} over the limit", used);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, max_shrink_iters: 200, ..ProptestConfig::default() })]

    #[test]
    fn local_volume_matches_model(ops in proptest::collection::vec(op(), 1..40)) {
        run(Backend::Local, &ops)?;
    }

    #[test]
    fn tmpfs_volume_matches_model(ops in proptest::collection::vec(op(), 1..40)) {
        run(Backend::Tmpfs, &ops)?;
    }

    #[test]
    fn image_volume_matches_model(ops in proptest::collection::vec(op(), 1..40)) {
        run(Backend::Image, &ops)?;
    }
}

#[test]
fn hard_link_survives_unlink_and_rename() {
    // A fixed sequence that the random one rarely hits: write, link, unlink the first name.
    let ops = [
        Op::Write {
            file: 0,
            offset: 0,
            len: 10_000,
            byte: 1,
        },
        Op::Link { from: 0, to: 3 },
        Op::Unlink { file: 0 },
        Op::Rename { from: 3, to: 1 },
    ];
    run(Backend::Local, &ops).unwrap();
    run(Backend::Tmpfs, &ops).unwrap();
    run(Backend::Image, &ops).unwrap();
}

// ACLs (issue 12), apart from the data model above: random sequences of ACL changes, chmods
// and creates with a umask run on a volume and on ext4 (the model). After every step both show
// the same modes and ACLs for every path, and the volume's counters match a walk of it.

/// Paths the ACL sequences touch; "d" and "d/e" are directories made at the start.
const ACL_PATHS: [&str; 7] = ["d", "d/e", "f", "d/f", "d/g", "d/e/f", "d/e/g"];
const ACL_SPECS: [&str; 8] = [
    "u::rwx,g::rx,o::-",
    "u::r,g::r,o::-",
    "u:65534:rwx",
    "g:65534:r",
    "m::rx",
    "u:65534:-,m::rwx",
    "o::rwx",
    "u::rw,g::-,o::r",
];
const ACL_MODES: [u32; 6] = [0o777, 0o666, 0o640, 0o750, 0o600, 0o2775];
const ACL_UMASKS: [u32; 4] = [0o000, 0o022, 0o027, 0o077];
const ACL_KINDS: [&str; 3] = ["file", "dir", "fifo"];

#[derive(Clone, Debug)]
enum AclOp {
    /// `setfacl -m SPEC PATH`
    Set {
        path: usize,
        spec: usize,
    },
    /// `setfacl -d -m SPEC PATH`
    SetDefault {
        path: usize,
        spec: usize,
    },
    /// `setfacl -b PATH`
    Strip {
        path: usize,
    },
    /// A create with this mode under this umask.
    Make {
        path: usize,
        kind: usize,
        mode: usize,
        umask: usize,
    },
    Chmod {
        path: usize,
        mode: usize,
    },
}

fn acl_op() -> impl Strategy<Value = AclOp> {
    let path = 0..ACL_PATHS.len();
    let spec = 0..ACL_SPECS.len();
    let mode = 0..ACL_MODES.len();
    prop_oneof![
        2 => (path.clone(), spec.clone()).prop_map(|(path, spec)| AclOp::Set { path, spec }),
        2 => (0..2usize, spec).prop_map(|(path, spec)| AclOp::SetDefault { path, spec }),
        1 => path.clone().prop_map(|path| AclOp::Strip { path }),
        4 => (path.clone(), 0..ACL_KINDS.len(), mode.clone(), 0..ACL_UMASKS.len())
            .prop_map(|(path, kind, mode, umask)| AclOp::Make { path, kind, mode, umask }),
        1 => (path, mode).prop_map(|(path, mode)| AclOp::Chmod { path, mode }),
    ]
}

/// Runs one ACL operation under `root`: whether it worked (or the errno of a create).
fn apply_acl(root: &Path, op: &AclOp) -> String {
    use std::process::Command;
    let p = |i: usize| root.join(ACL_PATHS[i]);
    let status = |cmd: &mut Command| {
        let ok = cmd.output().expect("spawn").status.success();
        if ok { "ok" } else { "failed" }.to_string()
    };
    match *op {
        AclOp::Set { path, spec } => status(
            Command::new("setfacl")
                .args(["-m", ACL_SPECS[spec]])
                .arg(p(path)),
        ),
        AclOp::SetDefault { path, spec } => status(
            Command::new("setfacl")
                .args(["-d", "-m", ACL_SPECS[spec]])
                .arg(p(path)),
        ),
        AclOp::Strip { path } => status(Command::new("setfacl").arg("-b").arg(p(path))),
        AclOp::Make {
            path,
            kind,
            mode,
            umask,
        } => {
            let out = Command::new(env!("CARGO_BIN_EXE_make-node"))
                .arg(format!("{:o}", ACL_UMASKS[umask]))
                .arg(ACL_KINDS[kind])
                .arg(format!("{:o}", ACL_MODES[mode]))
                .arg(p(path))
                .output()
                .expect("make-node");
            String::from_utf8_lossy(&out.stdout).trim().to_string()
        }
        AclOp::Chmod { path, mode } => {
            use std::os::unix::fs::PermissionsExt;
            let perms = fs::Permissions::from_mode(ACL_MODES[mode]);
            match fs::set_permissions(p(path), perms) {
                Ok(()) => "ok".into(),
                Err(e) => format!("errno {}", errno(e)),
            }
        }
    }
}

/// Each existing path's type and mode, and its ACLs as getfacl prints them.
fn acl_snapshot(root: &Path) -> Vec<String> {
    use std::os::unix::fs::MetadataExt;
    let mut lines = Vec::new();
    for name in ACL_PATHS {
        let Ok(meta) = fs::symlink_metadata(root.join(name)) else {
            continue;
        };
        lines.push(format!("{name} {:o}", meta.mode()));
        let out = std::process::Command::new("getfacl")
            .args(["-cp", "--"])
            .arg(root.join(name))
            .output()
            .expect("getfacl");
        lines.extend(
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .filter(|l| !l.is_empty())
                .map(|l| format!("  {l}")),
        );
    }
    lines
}

/// The volume's counters against a walk of its mount: bytes as `du` counts them (waiting a
/// moment for a release on its way), inodes one per node reached.
fn check_acl_counters(s: &TestSession, step: usize, op: &AclOp) -> Result<(), TestCaseError> {
    use std::os::unix::fs::MetadataExt;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    let (mut used, mut real) = (s.used_bytes(), s.du());
    while used != real && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(5));
        (used, real) = (s.used_bytes(), s.du());
    }
    prop_assert_eq!(used, real, "bytes used vs du after step {} {:?}", step, op);
    let mut inodes = std::collections::HashSet::new();
    let mut stack = vec![s.mnt().to_path_buf()];
    while let Some(dir) = stack.pop() {
        inodes.insert(fs::symlink_metadata(&dir).unwrap().ino());
        for e in fs::read_dir(&dir).unwrap() {
            let e = e.unwrap();
            inodes.insert(e.metadata().unwrap().ino());
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            }
        }
    }
    prop_assert_eq!(
        s.fs.usage().inodes,
        inodes.len() as u64,
        "inodes used vs a walk after step {} {:?}",
        step,
        op
    );
    Ok(())
}

fn run_acl(backend: Backend, ops: &[AclOp]) -> Result<(), TestCaseError> {
    let s = TestSession::with(backend, Some(LIMIT), None);
    let model = fuse_tests::loopfs::LoopFs::ext4(16);
    for root in [s.mnt(), model.path()] {
        for dir in ["d", "d/e"] {
            fs::create_dir(root.join(dir)).unwrap();
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(root.join(dir), fs::Permissions::from_mode(0o755)).unwrap();
        }
    }
    for (step, op) in ops.iter().enumerate() {
        let got = apply_acl(s.mnt(), op);
        let want = apply_acl(model.path(), op);
        prop_assert_eq!(&got, &want, "outcome of step {} {:?}", step, op);
        prop_assert_eq!(
            acl_snapshot(s.mnt()),
            acl_snapshot(model.path()),
            "modes and ACLs after step {} {:?}",
            step,
            op
        );
        check_acl_counters(&s, step, op)?;
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, max_shrink_iters: 100, ..ProptestConfig::default() })]

    #[test]
    fn local_volume_acls_match_ext4(ops in proptest::collection::vec(acl_op(), 1..30)) {
        run_acl(Backend::Local, &ops)?;
    }

    #[test]
    fn tmpfs_volume_acls_match_ext4(ops in proptest::collection::vec(acl_op(), 1..30)) {
        run_acl(Backend::Tmpfs, &ops)?;
    }

    #[test]
    fn image_volume_acls_match_ext4(ops in proptest::collection::vec(acl_op(), 1..30)) {
        run_acl(Backend::Image, &ops)?;
    }
}

// Direct I/O, renameat2 flags and fallocate modes (issue 12), apart from the data model above:
// random sequences of them run on a volume and on a plain directory of the host (the model).
// Aligned O_DIRECT reads and writes behave as buffered ones on the model. A fallocate mode the
// driver does not support must fail with EOPNOTSUPP and change nothing. After every step both
// hold the same names, kinds and bytes; after every sequence, synced, the volume's counters
// equal a walk of its backing store exactly (bytes and inodes).

/// fallocate modes the sequences use (what `fallocate(2)` accepts on ext4).
const IO_FALLOC_MODES: [i32; 8] = [
    0,
    libc::FALLOC_FL_KEEP_SIZE,
    libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
    // Refused by the VFS (punching needs KEEP_SIZE): EOPNOTSUPP everywhere.
    libc::FALLOC_FL_PUNCH_HOLE,
    libc::FALLOC_FL_ZERO_RANGE,
    libc::FALLOC_FL_ZERO_RANGE | libc::FALLOC_FL_KEEP_SIZE,
    libc::FALLOC_FL_COLLAPSE_RANGE,
    libc::FALLOC_FL_INSERT_RANGE,
];
const IO_RENAME_FLAGS: [u32; 4] = [
    0,
    libc::RENAME_NOREPLACE,
    libc::RENAME_EXCHANGE,
    libc::RENAME_WHITEOUT,
];

#[derive(Clone, Debug)]
enum IoOp {
    /// A buffered write (so that direct I/O meets data written through the page cache).
    Write {
        file: usize,
        offset: u64,
        len: usize,
        byte: u8,
    },
    /// An O_DIRECT write of whole blocks from an aligned buffer.
    DirectWrite {
        file: usize,
        block: u64,
        blocks: usize,
        byte: u8,
    },
    /// An O_DIRECT read of whole blocks into an aligned buffer; the outcome is a checksum.
    DirectRead {
        file: usize,
        block: u64,
        blocks: usize,
    },
    Truncate {
        file: usize,
        size: u64,
    },
    Fallocate {
        file: usize,
        offset: u64,
        len: u64,
        mode: usize,
    },
    Rename {
        from: usize,
        to: usize,
        flags: usize,
    },
    Link {
        from: usize,
        to: usize,
    },
    Unlink {
        file: usize,
    },
}

fn io_op() -> impl Strategy<Value = IoOp> {
    let file = 0..NAMES.len();
    // Offsets for collapse and insert (which need whole blocks) are block multiples half the
    // time.
    let offset = prop_oneof![0..300_000u64, (0..70u64).prop_map(|b| b * BLOCK)];
    let len = prop_oneof![1..200_000u64, (1..40u64).prop_map(|b| b * BLOCK)];
    prop_oneof![
        2 => (file.clone(), 0..300_000u64, 1..70_000usize, any::<u8>())
            .prop_map(|(file, offset, len, byte)| IoOp::Write { file, offset, len, byte }),
        3 => (file.clone(), 0..80u64, 1..17usize, any::<u8>())
            .prop_map(|(file, block, blocks, byte)| IoOp::DirectWrite { file, block, blocks, byte }),
        1 => (file.clone(), 0..80u64, 1..17usize)
            .prop_map(|(file, block, blocks)| IoOp::DirectRead { file, block, blocks }),
        1 => (file.clone(), 0..400_000u64).prop_map(|(file, size)| IoOp::Truncate { file, size }),
        3 => (file.clone(), offset, len, 0..IO_FALLOC_MODES.len())
            .prop_map(|(file, offset, len, mode)| IoOp::Fallocate { file, offset, len, mode }),
        3 => (file.clone(), file.clone(), 0..IO_RENAME_FLAGS.len())
            .prop_map(|(from, to, flags)| IoOp::Rename { from, to, flags }),
        1 => (file.clone(), file.clone()).prop_map(|(from, to)| IoOp::Link { from, to }),
        1 => file.prop_map(|file| IoOp::Unlink { file }),
    ]
}

/// A block-aligned buffer for O_DIRECT: `len` bytes inside a larger allocation.
struct Aligned {
    buf: Vec<u8>,
    at: usize,
    len: usize,
}

impl Aligned {
    fn new(len: usize) -> Aligned {
        let buf = vec![0u8; len + BLOCK as usize];
        let at = buf.as_ptr().align_offset(BLOCK as usize);
        Aligned { buf, at, len }
    }

    fn bytes(&mut self) -> &mut [u8] {
        &mut self.buf[self.at..self.at + self.len]
    }
}

/// Whether a fallocate mode reaches the driver and is carried out. The kernel's FUSE client
/// passes on only allocating, `PUNCH_HOLE` and `ZERO_RANGE` (each with or without
/// `KEEP_SIZE`), and refuses `COLLAPSE_RANGE` and `INSERT_RANGE` with EOPNOTSUPP itself; every
/// driver carries out what it passes on (a local volume on its host filesystem).
fn io_supports(_backend: Backend, mode: i32) -> bool {
    let passed_on =
        libc::FALLOC_FL_KEEP_SIZE | libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_ZERO_RANGE;
    mode & !passed_on == 0
}

fn io_apply(root: &Path, op: &IoOp, direct: bool) -> Outcome {
    use std::os::unix::fs::OpenOptionsExt;
    let p = |i: usize| root.join(NAMES[i]);
    let open = |i: usize, direct: bool, create: bool| {
        let mut o = OpenOptions::new();
        o.read(true).write(true).create(create).truncate(false);
        if direct {
            o.custom_flags(libc::O_DIRECT);
        }
        o.open(p(i)).map_err(errno)
    };
    match *op {
        IoOp::Write {
            file,
            offset,
            len,
            byte,
        } => open(file, false, true)?
            .write_at(&vec![byte; len], offset)
            .map(|n| n as u64)
            .map_err(errno),
        IoOp::DirectWrite {
            file,
            block,
            blocks,
            byte,
        } => {
            let f = open(file, direct, true)?;
            let mut buf = Aligned::new(blocks * BLOCK as usize);
            buf.bytes().fill(byte);
            f.write_at(buf.bytes(), block * BLOCK)
                .map(|n| n as u64)
                .map_err(errno)
        }
        IoOp::DirectRead {
            file,
            block,
            blocks,
        } => {
            let f = open(file, direct, false)?;
            let mut buf = Aligned::new(blocks * BLOCK as usize);
            let n = f.read_at(buf.bytes(), block * BLOCK).map_err(errno)?;
            let sum = buf.bytes()[..n]
                .iter()
                .fold(n as u64, |h, &b| h.wrapping_mul(31).wrapping_add(b as u64));
            Ok(sum)
        }
        IoOp::Truncate { file, size } => open(file, false, false)?
            .set_len(size)
            .map(|()| 0)
            .map_err(errno),
        IoOp::Fallocate {
            file,
            offset,
            len,
            mode,
        } => {
            let f = open(file, false, false)?;
            let flags = FallocateFlags::from_bits_retain(IO_FALLOC_MODES[mode]);
            fallocate(f.as_fd(), flags, offset as i64, len as i64)
                .map(|()| 0)
                .map_err(|e| e as i32)
        }
        IoOp::Rename { from, to, flags } => {
            let flags = nix::fcntl::RenameFlags::from_bits_retain(IO_RENAME_FLAGS[flags]);
            nix::fcntl::renameat2(
                nix::fcntl::AT_FDCWD,
                &p(from),
                nix::fcntl::AT_FDCWD,
                &p(to),
                flags,
            )
            .map(|()| 0)
            .map_err(|e| e as i32)
        }
        IoOp::Link { from, to } => fs::hard_link(p(from), p(to)).map(|()| 0).map_err(errno),
        IoOp::Unlink { file } => fs::remove_file(p(file)).map(|()| 0).map_err(errno),
    }
}

/// The model's outcome of `op` on `backend`: a mode the driver lacks fails there, unchanged;
/// and a volume is mounted `nodev`, so opening a whiteout (a device) fails with EACCES.
fn io_model(backend: Backend, model: &Path, op: &IoOp) -> Outcome {
    use std::os::unix::fs::FileTypeExt;
    let opened = match *op {
        IoOp::Write { file, .. }
        | IoOp::DirectWrite { file, .. }
        | IoOp::DirectRead { file, .. }
        | IoOp::Truncate { file, .. }
        | IoOp::Fallocate { file, .. } => Some(file),
        _ => None,
    };
    if let Some(file) = opened
        && fs::symlink_metadata(model.join(NAMES[file]))
            .is_ok_and(|m| m.file_type().is_char_device())
    {
        return Err(libc::EACCES);
    }
    if let IoOp::Fallocate { file, mode, .. } = *op
        && !io_supports(backend, IO_FALLOC_MODES[mode])
    {
        // The file must exist for the request to reach the driver.
        return match fs::symlink_metadata(model.join(NAMES[file])) {
            Ok(_) => Err(libc::EOPNOTSUPP),
            Err(e) => Err(errno(e)),
        };
    }
    io_apply(model, op, false)
}

/// Bytes an operation may need: what a refusal for space is checked against.
fn io_need(op: &IoOp) -> u64 {
    match *op {
        IoOp::Write { len, .. } => (len as u64).div_ceil(BLOCK) * BLOCK + BLOCK,
        IoOp::DirectWrite { blocks, .. } => blocks as u64 * BLOCK,
        IoOp::Fallocate { len, .. } => len.div_ceil(BLOCK) * BLOCK + BLOCK,
        _ => BLOCK,
    }
}

/// Each name's kind, device number, link count and bytes (a whiteout is a 0:0 character
/// device).
fn io_snapshot(root: &Path) -> Vec<String> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let mut out = Vec::new();
    for name in NAMES {
        let Ok(m) = fs::symlink_metadata(root.join(name)) else {
            continue;
        };
        let t = m.file_type();
        let line = if t.is_file() {
            let data = fs::read(root.join(name)).expect("read a regular file");
            let sum = data
                .iter()
                .fold(0u64, |h, &b| h.wrapping_mul(31).wrapping_add(b as u64));
            format!(
                "{name} file nlink {} size {} sum {sum:x}",
                m.nlink(),
                m.len()
            )
        } else if t.is_char_device() {
            format!("{name} char {:x}", m.rdev())
        } else {
            format!("{name} {t:?}")
        };
        out.push(line);
    }
    out
}

/// Makes the model hold what the volume holds (after the volume refused an operation the
/// model, which has no limit, carried out): regular files with their bytes and links, and
/// whiteouts.
fn io_mirror(volume: &Path) -> Model {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let m = model();
    let mut first_name = std::collections::HashMap::new();
    for name in NAMES {
        let Ok(meta) = fs::symlink_metadata(volume.join(name)) else {
            continue;
        };
        let to = m.root.join(name);
        if meta.file_type().is_char_device() {
            nix::sys::stat::mknod(
                &to,
                nix::sys::stat::SFlag::S_IFCHR,
                nix::sys::stat::Mode::empty(),
                0,
            )
            .expect("mknod a whiteout in the model");
            continue;
        }
        if let Some(first) = first_name.get(&meta.ino()) {
            fs::hard_link(m.root.join(first), &to).expect("link in the model");
            continue;
        }
        let f = fs::File::create(&to).expect("create in the model");
        f.write_all_at(&fs::read(volume.join(name)).expect("read"), 0)
            .expect("write in the model");
        f.set_len(meta.len()).expect("size in the model");
        first_name.insert(meta.ino(), name);
    }
    m
}

fn run_io(backend: Backend, ops: &[IoOp]) -> Result<(), TestCaseError> {
    let s = TestSession::with(backend, Some(LIMIT), None);
    fs::create_dir(s.path("d")).unwrap();
    let mut m = model();
    for (step, op) in ops.iter().enumerate() {
        let before = s.used_bytes();
        let got = io_apply(s.mnt(), op, true);
        let refused = match (&got, op) {
            (Err(libc::ENOSPC), _) => true,
            (Ok(n), IoOp::Write { len, .. }) => (*n as usize) < *len,
            (Ok(n), IoOp::DirectWrite { blocks, .. }) => (*n as usize) < blocks * BLOCK as usize,
            _ => false,
        };
        if refused {
            prop_assert!(
                before + io_need(op) > LIMIT,
                "step {} {:?}: refused for space ({:?}) but fits: {} used",
                step,
                op,
                got,
                before
            );
            m = io_mirror(s.mnt());
        } else {
            let want = io_model(backend, &m.root, op);
            prop_assert_eq!(&got, &want, "outcome of step {} {:?}", step, op);
        }
        prop_assert_eq!(
            io_snapshot(s.mnt()),
            io_snapshot(&m.root),
            "names, kinds and bytes after step {} {:?}",
            step,
            op
        );
        check_usage(&s, step, op)?;
    }
    check_walk(&s)
}

/// After a sequence, synced: the counters equal a walk of the backing store (local: the host
/// directory as `du` counts it; tmpfs and image: through the mount) exactly.
fn check_walk(s: &TestSession) -> Result<(), TestCaseError> {
    s.fs.sync_all().expect("sync");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let (mut counted, mut walked) = (s.fs.usage(), s.walk());
    while counted != walked && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(10));
        (counted, walked) = (s.fs.usage(), s.walk());
    }
    prop_assert_eq!(counted, walked, "counters against a walk at the end");
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, max_shrink_iters: 200, ..ProptestConfig::default() })]

    #[test]
    fn local_volume_io_modes_match_model(ops in proptest::collection::vec(io_op(), 1..40)) {
        run_io(Backend::Local, &ops)?;
    }

    #[test]
    fn tmpfs_volume_io_modes_match_model(ops in proptest::collection::vec(io_op(), 1..40)) {
        run_io(Backend::Tmpfs, &ops)?;
    }

    #[test]
    fn image_volume_io_modes_match_model(ops in proptest::collection::vec(io_op(), 1..40)) {
        run_io(Backend::Image, &ops)?;
    }
}
