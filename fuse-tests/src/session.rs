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
    // Field order matters: unmount before the directories go away.
    mounted: Option<MountedFs>,
    pub fs: Arc<dyn VolumeFs>,
    pub mountpoint: PathBuf,
    pub backing: PathBuf,
    _dir: TempDir,
}

impl TestSession {
    pub fn new(backend: Backend, limits: Limits) -> TestSession {
        let dir = tempfile::Builder::new()
            .prefix("fvol-test-")
            .tempdir()
            .expect("tempdir");
        let backing = dir.path().join("data");
        let mountpoint = dir.path().join("mnt");
        std::fs::create_dir(&backing).unwrap();
        std::fs::create_dir(&mountpoint).unwrap();
        let (fs, passthrough): (Arc<dyn VolumeFs>, bool) = match backend {
            Backend::Local => {
                // Few node descriptors, so that most operations reach nodes that hold none
                // and reopen them from their file handles.
                let cache = Arc::new(FdCache::new(LOCAL_NODE_DESCRIPTORS));
                let fs = PassthroughFs::with_cache(&backing, limits, None, cache)
                    .expect("open")
                    .with_passthrough(true)
                    .with_exclusive(true);
                let passthrough = fs.passthrough();
                (Arc::new(fs), passthrough)
            }
            Backend::Tmpfs => {
                let root = RootOwner {
                    uid: 0,
                    gid: 0,
                    mode: 0o755,
                };
                // With a byte limit (as every daemon's tmpfs volume has), kept as the daemon
                // keeps it when a keeper runs: its data in shared memory
                // (fs::memory::shared), which these tests then exercise.
                let fs = match limits.bytes {
                    Some(_) => {
                        let mut carry = Carry::fresh(Arc::new(NoHolder));
                        MemFs::kept(limits, root, &mut carry, "test").expect("a tmpfs volume")
                    }
                    None => MemFs::new(limits, root),
                };
                (Arc::new(fs), false)
            }
            Backend::Image => {
                let root = RootOwner {
                    uid: 0,
                    gid: 0,
                    mode: 0o755,
                };
                // Big enough that the data region (most of the image, after the metadata
                // region) covers the limit.
                let size = limits
                    .bytes
                    .map_or(4 << 30, |b| (b + b / 8 + (16 << 20)).max(64 << 20));
                let device = Arc::new(FileDevice::create(&backing.join("image"), size).unwrap());
                ImageFs::format(device.clone(), root, None).expect("format");
                (
                    Arc::new(ImageFs::open(device, limits).expect("open image")),
                    false,
                )
            }
        };
        let mounted = fvol::fuse::mount(
            fs.clone(),
            &mountpoint,
            "test",
            ServeOptions {
                passthrough,
                exclusive: true,
                readahead_kb: None,
                threads: 4,
            },
            &mut fvol::fs::resume::Carry::none(),
        )
        .expect("mount");
        TestSession {
            backend,
            mounted: Some(mounted),
            fs,
            mountpoint,
            backing,
            _dir: dir,
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

impl Drop for TestSession {
    fn drop(&mut self) {
        if let Some(m) = self.mounted.take() {
            let _ = m.unmount();
        }
    }
}
