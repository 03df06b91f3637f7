//! A filesystem core mounted at a temporary directory, unmounted on drop.
use std::path::{Path, PathBuf};
use std::sync::Arc;

use fvol::fs::VolumeFs;
use fvol::fs::image::{FileDevice, ImageFs};
use fvol::fs::memory::{MemFs, RootOwner};
use fvol::fs::passthrough::{FdCache, PassthroughFs};
use fvol::fs::quota::Limits;
use fvol::fs::resume::{Carry, NoHolder};
use fvol::fuse::{MountedFs, ServeOptions};
use tempfile::TempDir;

/// Node descriptors a local session keeps open (the daemon keeps a share of its open-file
/// limit).
pub const LOCAL_NODE_DESCRIPTORS: usize = 16;

#[derive(Clone, Copy, Debug)]
pub enum Backend {
    Local,
    Tmpfs,
    /// The image filesystem (the rbd driver's) on a sparse image file.
    Image,
}

pub struct TestSession {
    pub backend: Backend,
    limits: Limits,
    // Field order matters: unmount before the directories go away.
    mounted: Option<MountedFs>,
    pub fs: Arc<dyn VolumeFs>,
    pub mountpoint: PathBuf,
    pub backing: PathBuf,
    _dir: TempDir,
}

impl TestSession {
    pub fn new(backend: Backend, limits: Limits) -> TestSession {
        TestSession::new_in(backend, limits, &std::env::temp_dir())
    }

    /// `new`, with the session's directories (backing store and mountpoint) under `base`.
    pub fn new_in(backend: Backend, limits: Limits, base: &Path) -> TestSession {
        // As the daemon does: else, once an earlier session's 16 MiB request buffers are
        // freed, the next session's come zeroed from the heap and this process's memory
        // (which memory tests measure) grows by them.
        fvol::sys::heap::pin_mmap_threshold(4 << 20);
        let dir = tempfile::Builder::new()
            .prefix("fvol-test-")
            .tempdir_in(base)
            .expect("tempdir");
        let backing = dir.path().join("data");
        let mountpoint = dir.path().join("mnt");
        std::fs::create_dir(&backing).unwrap();
        std::fs::create_dir(&mountpoint).unwrap();
        let (fs, passthrough) = open_fs(backend, limits, &backing, Start::Fresh);
        let mounted = mount(&fs, &mountpoint, passthrough);
        TestSession {
            backend,
            limits,
            mounted: Some(mounted),
            fs,
            mountpoint,
            backing,
            _dir: dir,
        }
    }

    /// Unmounts, syncs and opens the same backing store again as the daemon does at the next
    /// mount: a local volume starts from the usage recorded at rest (no rescan), an image from
    /// the counters on it. Not for tmpfs, whose data goes with the mount.
    pub fn remount(&mut self) {
        assert!(
            !matches!(self.backend, Backend::Tmpfs),
            "a tmpfs volume's data goes with its mount"
        );
        let mounted = self.mounted.take().expect("mounted");
        mounted.unmount().expect("unmount");
        self.fs.sync_all().expect("sync at unmount");
        let usage = self.fs.usage_at_rest();
        // The image file must be closed before it is opened again.
        let placeholder: Arc<dyn VolumeFs> = Arc::new(MemFs::new(Limits::default(), ROOT));
        drop(std::mem::replace(&mut self.fs, placeholder));
        let (fs, passthrough) = open_fs(
            self.backend,
            self.limits,
            &self.backing,
            Start::Recorded(usage),
        );
        self.fs = fs;
        self.mounted = Some(mount(&self.fs, &self.mountpoint, passthrough));
    }

    /// Unmounts for good (the backing store stays until the session is dropped).
    pub fn unmount(&mut self) {
        if let Some(m) = self.mounted.take() {
            m.unmount().expect("unmount");
        }
    }

    pub fn local(bytes: Option<u64>, inodes: Option<u64>) -> TestSession {
        TestSession::new(Backend::Local, Limits { bytes, inodes })
    }

    pub fn tmpfs(bytes: Option<u64>, inodes: Option<u64>) -> TestSession {
        TestSession::new(Backend::Tmpfs, Limits { bytes, inodes })
    }

    pub fn with(backend: Backend, bytes: Option<u64>, inodes: Option<u64>) -> TestSession {
        TestSession::new(backend, Limits { bytes, inodes })
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.mountpoint.join(rel)
    }

    pub fn mnt(&self) -> &Path {
        &self.mountpoint
    }

    /// A walk (see `walk`) of what the volume holds: of the backing directory for a local
    /// volume, through the mount for tmpfs and image (whose allocation only the mount shows).
    pub fn walk(&self) -> fvol::fs::UsageSnapshot {
        match self.backend {
            Backend::Local => walk(&self.backing),
            Backend::Tmpfs | Backend::Image => walk(&self.mountpoint),
        }
    }

    pub fn used_bytes(&self) -> u64 {
        self.fs.usage().bytes
    }

    /// The backend's allocation unit: the least a file's first byte costs.
    pub fn unit(&self) -> u64 {
        4096
    }

    /// What `du` says the volume really holds: of the backing directory for a local volume,
    /// of the mount for tmpfs (whose allocation only the mount shows).
    pub fn du(&self) -> u64 {
        let dir = match self.backend {
            Backend::Local => &self.backing,
            Backend::Tmpfs | Backend::Image => &self.mountpoint,
        };
        let out = crate::run_ok(
            std::process::Command::new("du")
                .args(["-s", "-B1"])
                .arg(dir),
        );
        out.split_whitespace().next().unwrap().parse().unwrap()
    }
}

/// Owner of the root of a new tmpfs or image volume.
const ROOT: RootOwner = RootOwner {
    uid: 0,
    gid: 0,
    mode: 0o755,
};

/// Where a filesystem's usage starts.
enum Start {
    /// A new, empty volume.
    Fresh,
    /// Opened again: the usage recorded at the last stop (local), or the image's own.
    Recorded(fvol::fs::UsageSnapshot),
}

/// The filesystem core of `backend` on `backing`, and whether it offers kernel passthrough.
fn open_fs(
    backend: Backend,
    limits: Limits,
    backing: &Path,
    start: Start,
) -> (Arc<dyn VolumeFs>, bool) {
    match backend {
        Backend::Local => {
            // Few node descriptors, so that most operations reach nodes that hold none
            // and reopen them from their file handles.
            let cache = Arc::new(FdCache::new(LOCAL_NODE_DESCRIPTORS));
            let usage = match start {
                Start::Fresh => None,
                Start::Recorded(usage) => Some(usage),
            };
            let fs = PassthroughFs::with_cache(backing, limits, usage, cache)
                .expect("open")
                .with_passthrough(true)
                .with_exclusive(true);
            let passthrough = fs.passthrough();
            (Arc::new(fs), passthrough)
        }
        Backend::Tmpfs => {
            // With a byte limit (as every daemon's tmpfs volume has), kept as the daemon
            // keeps it when a keeper runs: its data in shared memory (fs::memory::shared),
            // which these tests then exercise.
            let fs = match limits.bytes {
                Some(_) => {
                    let mut carry = Carry::fresh(Arc::new(NoHolder));
                    MemFs::kept(limits, ROOT, &mut carry, "test").expect("a tmpfs volume")
                }
                None => MemFs::new(limits, ROOT),
            };
            (Arc::new(fs), false)
        }
        Backend::Image => {
            let image = backing.join("image");
            let device = match start {
                Start::Fresh => {
                    // Big enough that the data region (most of the image, after the metadata
                    // region) covers the limit.
                    let size = limits
                        .bytes
                        .map_or(4 << 30, |b| (b + b / 8 + (16 << 20)).max(64 << 20));
                    let device = Arc::new(FileDevice::create(&image, size).unwrap());
                    ImageFs::format(device.clone(), ROOT, None).expect("format");
                    device
                }
                Start::Recorded(_) => Arc::new(FileDevice::open(&image).unwrap()),
            };
            (
                Arc::new(ImageFs::open(device, limits).expect("open image")),
                false,
            )
        }
    }
}

fn mount(fs: &Arc<dyn VolumeFs>, mountpoint: &Path, passthrough: bool) -> MountedFs {
    fvol::fuse::mount(
        fs.clone(),
        mountpoint,
        "test",
        ServeOptions {
            passthrough,
            exclusive: true,
            readahead_kb: None,
            threads: 4,
        },
        &mut fvol::fs::resume::Carry::none(),
    )
    .expect("mount")
}

/// What a tree holds, counted as `du` counts: allocated bytes (`st_blocks` × 512) and inodes,
/// each inode once however many names it has, the top directory included.
pub fn walk(top: &Path) -> fvol::fs::UsageSnapshot {
    use std::os::unix::fs::MetadataExt;
    let mut seen = std::collections::HashSet::new();
    let mut total = fvol::fs::UsageSnapshot::default();
    let mut dirs = vec![top.to_path_buf()];
    let mut count = |m: &std::fs::Metadata| {
        if seen.insert((m.dev(), m.ino())) {
            total.bytes += m.blocks() * 512;
            total.inodes += 1;
        }
    };
    count(&std::fs::symlink_metadata(top).expect("stat the top of the walk"));
    while let Some(dir) = dirs.pop() {
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) => panic!("reading {}: {e}", dir.display()),
        };
        for entry in entries {
            let path = entry.expect("directory entry").path();
            let m = std::fs::symlink_metadata(&path)
                .unwrap_or_else(|e| panic!("stat {}: {e}", path.display()));
            count(&m);
            if m.is_dir() {
                dirs.push(path);
            }
        }
    }
    total
}

impl Drop for TestSession {
    fn drop(&mut self) {
        if let Some(m) = self.mounted.take() {
            let _ = m.unmount();
        }
    }
}
