//! `sys::librbd` and `RbdDevice` against a real single-node Ceph cluster (`tools/ceph.sh`).
//!
//! The cluster takes ~10 s to bootstrap, so the whole lifecycle runs in one test with one
//! cluster (`fuse_tests::ceph::TestCluster`), in phases; the fixture purges the cluster on drop, also when a phase panics. The
//! cluster gets its own directory under TMPDIR and a free port, so it never collides with a
//! developer's cluster or another test run. A host without Ceph fails the test with the reason
//! (run tools/install-deps.sh): CI installs Ceph, so a silent skip would hide a broken setup.
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use fuse_tests::ceph::{POOL, TestCluster, free_port};
use fvol::fs::image::{BlockDevice, RbdDevice, RegionBackend};
use fvol::sys::librbd::{Cluster, ClusterConfig, IoCtx, RbdError};

const MIB: u64 = 1 << 20;

fn errno(r: Result<impl std::fmt::Debug, RbdError>) -> i32 {
    match r {
        Ok(v) => panic!("expected an error, got {v:?}"),
        Err(e) => e.errno().unwrap_or_else(|| panic!("no errno in {e}")),
    }
}

fn pattern(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

/// Writes crossing a 4 KiB block, a 4 MiB object boundary, and ending at the image's end.
const WRITES: &[(u64, usize)] = &[
    (0, 512),
    (4095, 10),
    (4 * MIB - 3, 70_000),
    (64 * MIB - 4096, 4096),
];

#[test]
fn rbd_image_lifecycle_on_a_real_cluster() {
    let t = Instant::now();
    let ceph = TestCluster::start();
    let host_a = ceph.connect();
    let io_a = host_a.io_ctx(POOL).unwrap();
    let img = "fvol-test-img";

    create_and_list(&io_a, img);
    write_read_flush_reopen(&ceph, &io_a, img);
    exclusive_lock(&ceph, img);
    default_features_refuse_the_advisory_lock(&ceph, &io_a);
    redb_on_rbd(&io_a);
    async_writes(&ceph, &io_a);
    submitted_bytes_are_the_callers_at_once(&ceph, &io_a);
    remove(&io_a, img);
    eprintln!("lifecycle done in {:.1?}", t.elapsed());
}

fn create_and_list(io: &IoCtx, img: &str) {
    assert!(!io.image_exists(img).unwrap());
    io.create_image(img, 64 * MIB).unwrap();
    assert!(io.image_exists(img).unwrap());
    assert!(io.list_images().unwrap().contains(&img.to_string()));
    assert_eq!(errno(io.create_image(img, MIB)), libc::EEXIST);

    let e = io.open_image("fvol-no-such-image").unwrap_err();
    assert_eq!(e.errno(), Some(libc::ENOENT));
    let msg = e.to_string();
    assert!(
        msg.contains("rbd_open") && msg.contains("pool rbd image fvol-no-such-image"),
        "{msg}"
    );
    assert_eq!(io.pool(), POOL);
}

fn write_read_flush_reopen(ceph: &TestCluster, io: &IoCtx, img: &str) {
    let dev = RbdDevice::new(io.open_image(img).unwrap()).unwrap();
    assert_eq!(dev.size(), 64 * MIB);
    for (i, &(off, len)) in WRITES.iter().enumerate() {
        dev.write_at(off, &pattern(i as u8, len)).unwrap();
    }
    for (i, &(off, len)) in WRITES.iter().enumerate() {
        let mut buf = vec![0u8; len];
        dev.read_at(off, &mut buf).unwrap();
        assert!(buf == pattern(i as u8, len), "read-back at {off}+{len}");
    }
    let mut hole = vec![1u8; 8192];
    dev.read_at(32 * MIB, &mut hole).unwrap();
    assert!(
        hole.iter().all(|b| *b == 0),
        "never-written bytes read as zeros"
    );
    // the device checks ranges itself; the image refuses them too
    assert!(dev.write_at(64 * MIB - 1, &[0, 0]).is_err());
    assert!(dev.read_at(64 * MIB, &mut [0]).is_err());
    assert!(dev.image().write_at(64 * MIB, &[0]).is_err());
    dev.flush().unwrap();
    drop(dev);

    // reopen, through this connection and through another one
    let other = ceph.connect();
    for io in [io.clone(), other.io_ctx(POOL).unwrap()] {
        let image = io.open_image(img).unwrap();
        assert_eq!(image.size().unwrap(), 64 * MIB);
        for (i, &(off, len)) in WRITES.iter().enumerate() {
            let mut buf = vec![0u8; len];
            image.read_at(off, &mut buf).unwrap();
            assert!(buf == pattern(i as u8, len), "after reopen: {off}+{len}");
        }
    }
}

/// Two hosts (connections) contend for the advisory lock; the second breaks the first's lock,
/// which fences the first's whole connection.
fn exclusive_lock(ceph: &TestCluster, img: &str) {
    let host_a = ceph.connect();
    let io_a = host_a.io_ctx(POOL).unwrap();
    let a = io_a.open_image(img).unwrap();
    assert!(a.lockers().unwrap().is_empty());
    a.lock_exclusive("host-a").unwrap();
    assert_eq!(errno(a.lock_exclusive("host-a")), libc::EEXIST);
    a.write_at(0, b"owner a").unwrap();
    a.flush().unwrap();

    // another host: its lock attempt fails, and it sees who holds the lock
    let host_b = ceph.connect();
    let b = host_b.io_ctx(POOL).unwrap().open_image(img).unwrap();
    let e = b.lock_exclusive("host-b").unwrap_err();
    assert_eq!(e.errno(), Some(libc::EBUSY), "{e}");
    assert!(e.to_string().contains("cookie host-b"), "{e}");
    let lockers = b.lockers().unwrap();
    assert_eq!(lockers.len(), 1, "{lockers:?}");
    let holder = &lockers[0];
    assert_eq!(holder.cookie, "host-a");
    assert!(holder.client.starts_with("client."), "{holder:?}");
    assert!(holder.address.starts_with("127.0.0.1:"), "{holder:?}");
    assert!(holder.exclusive);
    assert_eq!(errno(b.unlock("host-a")), libc::ENOENT, "b holds no lock");

    // host b takes over: breaking the lock also fences host a (blocklisted)
    b.break_lock(&holder.client, &holder.cookie).unwrap();
    assert!(b.lockers().unwrap().is_empty());
    assert_eq!(
        errno(b.break_lock(&holder.client, &holder.cookie)),
        libc::ENOENT
    );
    b.lock_exclusive("host-b").unwrap();
    assert_eq!(b.lockers().unwrap()[0].cookie, "host-b");
    let t = Instant::now();
    let fenced = a.write_at(0, b"stale writer");
    eprintln!(
        "write by the fenced holder: {fenced:?} after {:.1?}",
        t.elapsed()
    );
    assert_eq!(
        errno(fenced),
        libc::ESHUTDOWN,
        "the old holder can still write"
    );
    // the blocklist covers the whole connection, not only that image
    assert_eq!(errno(io_a.list_images()), libc::ESHUTDOWN);
    b.write_at(0, b"new owner").unwrap();
    b.flush().unwrap();
    let mut buf = [0u8; 9];
    b.read_at(0, &mut buf).unwrap();
    assert_eq!(&buf, b"new owner");
    b.unlock("host-b").unwrap();
    assert!(b.lockers().unwrap().is_empty());
    let t = Instant::now();
    drop(a);
    eprintln!("closing the fenced image took {:.1?}", t.elapsed());
}

/// An image made with librbd's default features (here by the `rbd` command) has the
/// exclusive-lock feature, under which an advisory lock would block every write forever:
/// `lock_exclusive` refuses it instead.
fn default_features_refuse_the_advisory_lock(ceph: &TestCluster, io: &IoCtx) {
    let name = "fvol-test-default-features";
    fuse_tests::run_ok(Command::new("rbd").arg("-c").arg(ceph.conf()).args([
        "create",
        "--size",
        "8M",
        &format!("{POOL}/{name}"),
    ]));
    let image = io.open_image(name).unwrap();
    assert_ne!(
        image.features().unwrap() & fvol::sys::librbd::FEATURE_EXCLUSIVE_LOCK,
        0
    );
    let e = image.lock_exclusive("x").unwrap_err();
    assert_eq!(e.errno(), Some(libc::EOPNOTSUPP), "{e}");
    assert!(e.to_string().contains("exclusive-lock feature"), "{e}");
    assert!(image.lockers().unwrap().is_empty());
    image.write_at(0, b"still writable").unwrap();
    drop(image);
    io.remove_image(name).unwrap();
}

/// What the rbd driver will do: a redb database in a region of the image survives a reopen.
fn redb_on_rbd(io: &IoCtx) {
    const T: redb::TableDefinition<u64, &str> = redb::TableDefinition::new("t");
    let name = "fvol-test-redb";
    io.create_image(name, 16 * MIB).unwrap();
    let dev: Arc<dyn BlockDevice> = Arc::new(RbdDevice::new(io.open_image(name).unwrap()).unwrap());
    let region = RegionBackend::format(dev, 4096, 8 * MIB).unwrap();
    let db = redb::Database::builder()
        .create_with_backend(region)
        .unwrap();
    let tx = db.begin_write().unwrap();
    tx.open_table(T).unwrap().insert(7, "seven").unwrap();
    tx.commit().unwrap();
    drop(db);

    let dev: Arc<dyn BlockDevice> = Arc::new(RbdDevice::new(io.open_image(name).unwrap()).unwrap());
    let db = redb::Database::builder()
        .create_with_backend(RegionBackend::open(dev, 4096, 8 * MIB).unwrap())
        .unwrap();
    use redb::ReadableDatabase;
    let tx = db.begin_read().unwrap();
    let v = tx
        .open_table(T)
        .unwrap()
        .get(7)
        .unwrap()
        .map(|g| g.value().to_string());
    assert_eq!(v.as_deref(), Some("seven"));
    drop(tx);
    drop(db);
    io.remove_image(name).unwrap();
}

/// `submit_write` (rbd_aio_write): reads and later writes of an overlapping range wait for
/// it, so the last write wins and reads see it at once; flush makes all of them durable; a
/// fenced writer's failure is reported by flush, and stays.
fn async_writes(ceph: &TestCluster, io: &IoCtx) {
    let name = "fvol-test-aio";
    io.create_image(name, 64 * MIB).unwrap();
    let dev = RbdDevice::new(io.open_image(name).unwrap()).unwrap();
    for round in 0..20u8 {
        // Overlapping writes in flight together: 1 MiB at 0, then pieces across it.
        dev.submit_write(0, &pattern(round, MIB as usize)).unwrap();
        dev.submit_write(4096, &[round; 10_000]).unwrap();
        dev.submit_write(MIB - 100, &[round ^ 0xff; 200]).unwrap();
        let mut got = vec![0u8; (MIB + 100) as usize];
        dev.read_at(0, &mut got).unwrap();
        let mut want = pattern(round, MIB as usize);
        want[4096..14_096].fill(round);
        want.extend_from_slice(&[0; 100]);
        want[(MIB - 100) as usize..(MIB + 100) as usize].fill(round ^ 0xff);
        assert!(
            got == want,
            "round {round}: a read did not see the writes before it"
        );
    }
    // Many writes at once: more than the device keeps in flight (it waits for the oldest).
    for i in 0..80u64 {
        dev.submit_write(i * MIB / 2, &pattern(i as u8, (MIB / 2) as usize))
            .unwrap();
    }
    dev.flush().unwrap();
    drop(dev);
    let other = ceph.connect();
    let image = other.io_ctx(POOL).unwrap().open_image(name).unwrap();
    for i in (0..80u64).step_by(7) {
        let mut got = vec![0u8; (MIB / 2) as usize];
        image.read_at(i * MIB / 2, &mut got).unwrap();
        assert!(
            got == pattern(i as u8, (MIB / 2) as usize),
            "after flush: write {i}"
        );
    }

    // Fenced: another client breaks this one's lock (which blocklists it).
    let fenced_host = ceph.connect();
    let dev = RbdDevice::new(fenced_host.io_ctx(POOL).unwrap().open_image(name).unwrap()).unwrap();
    dev.image().lock_exclusive("doomed").unwrap();
    let holder = image.lockers().unwrap().remove(0);
    image.break_lock(&holder.client, &holder.cookie).unwrap();
    let _ = dev.submit_write(0, &[1; 4096]);
    let e = dev.flush().unwrap_err();
    eprintln!("flush after fencing: {e}");
    assert!(
        dev.flush().is_err(),
        "a failed write must fail every later flush"
    );
    assert!(dev.submit_write(8192, &[1; 4096]).is_err());
    drop(dev);
    drop(image);
    io.remove_image(name).unwrap();
}

/// `submit_write` returns with the bytes copied (librbd copies them before `rbd_aio_write`
/// returns): the caller overwrites its buffer at once and the image still gets what was
/// submitted. An image that overrides `rbd_disable_zero_copy_writes` gets a copy of fvol's:
/// with its cache off too, librbd then sends the caller's memory itself, so a device that
/// missed the override fails here (seen: "write 0 ... did not get the bytes submitted").
fn submitted_bytes_are_the_callers_at_once(ceph: &TestCluster, io: &IoCtx) {
    let name = "fvol-test-copied";
    io.create_image(name, 64 * MIB).unwrap();
    let check = |expect_librbd_copies: bool| {
        let image = io.open_image(name).unwrap();
        assert_eq!(image.copies_writes(), expect_librbd_copies);
        let dev = RbdDevice::new(image).unwrap();
        let mut buf = vec![0u8; MIB as usize];
        for i in 0..48u64 {
            buf.copy_from_slice(&pattern(i as u8 ^ expect_librbd_copies as u8, MIB as usize));
            dev.submit_write(i * MIB, &buf).unwrap();
            // What librbd still reads from the caller's memory would go out as this.
            buf.fill(0xa5);
        }
        dev.flush().unwrap();
        drop(dev);
        let other = ceph.connect();
        let image = other.io_ctx(POOL).unwrap().open_image(name).unwrap();
        for i in 0..48u64 {
            let mut got = vec![0u8; MIB as usize];
            image.read_at(i * MIB, &mut got).unwrap();
            assert!(
                got == pattern(i as u8 ^ expect_librbd_copies as u8, MIB as usize),
                "write {i} (librbd copies: {expect_librbd_copies}): the image did not get the \
                 bytes submitted"
            );
        }
    };
    check(true);
    for (option, value) in [
        ("rbd_disable_zero_copy_writes", "false"),
        ("rbd_cache", "false"),
    ] {
        fuse_tests::run_ok(Command::new("rbd").arg("-c").arg(ceph.conf()).args([
            "image-meta",
            "set",
            &format!("{POOL}/{name}"),
            &format!("conf_{option}"),
            value,
        ]));
    }
    check(false);
    io.remove_image(name).unwrap();
}

fn remove(io: &IoCtx, img: &str) {
    let open = io.open_image(img).unwrap();
    let t = Instant::now();
    let busy = io.remove_image(img);
    eprintln!("remove while open: {busy:?} after {:.1?}", t.elapsed());
    assert_eq!(errno(busy), libc::EBUSY);
    drop(open);
    io.remove_image(img).unwrap();
    assert!(!io.image_exists(img).unwrap());
    assert_eq!(errno(io.remove_image(img)), libc::ENOENT);
}

/// A cluster nobody answers for: connect fails after the timeout instead of hanging. Needs the
/// libraries but no cluster.
#[test]
fn unreachable_cluster_times_out() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("ceph.conf");
    std::fs::write(
        &conf,
        format!(
            "[global]\nmon host = v2:127.0.0.1:{}\nauth client required = none\n\
             log file = {}/client.log\nadmin socket = \n",
            free_port(),
            dir.path().display()
        ),
    )
    .unwrap();
    let t = Instant::now();
    let e = Cluster::connect(ClusterConfig {
        conf: Some(conf),
        timeout: Duration::from_secs(3),
        ..ClusterConfig::default()
    })
    .unwrap_err();
    eprintln!("{e} after {:.1?}", t.elapsed());
    assert!(
        t.elapsed() < Duration::from_secs(20),
        "took {:?}",
        t.elapsed()
    );
    let msg = e.to_string();
    assert!(
        msg.contains("rados_connect") && msg.contains("ceph.conf"),
        "{msg}"
    );
    assert_eq!(e.errno(), Some(libc::ETIMEDOUT), "{e}");
}

#[test]
fn missing_conf_file_is_an_error_naming_it() {
    let e = Cluster::connect(ClusterConfig {
        conf: Some("/nonexistent/fvol/ceph.conf".into()),
        ..ClusterConfig::default()
    })
    .unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("rados_conf_read_file") && msg.contains("/nonexistent/fvol/ceph.conf"),
        "{msg}"
    );
}
