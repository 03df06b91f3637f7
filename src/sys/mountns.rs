//! Which filesystems other mount namespaces hold, read from /proc: how the daemon tells a
//! container that still uses a volume (its mount namespace holds the volume's mount) from a
//! reference whose holder is gone.
//!
//! A namespace made by copying ours (`unshare -m`, a systemd unit with PrivateTmp) holds a
//! copy of every mount we had then, at the same paths; that is not a use of the volume. A
//! container's runtime bind-mounts the volume at a path of its own and drops the rest of the
//! host's mounts (pivot_root). So a namespace uses a filesystem when it has it mounted at a
//! path where this namespace does not.
//!
//! Reading /proc can block: another process's mount table waits for the kernel's namespace
//! lock, and a process stuck in a FUSE request can hold it or its own locks for as long as that
//! request lasts. So every read runs in a thread of its own and the caller waits at most
//! `READ_LIMIT`; a read still blocked makes later ones fail at once instead of piling up threads.
use std::collections::HashSet;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

/// How long a caller waits for the mount tables. Callers treat a failure as "maybe used", the
/// safe answer.
const READ_LIMIT: Duration = Duration::from_secs(3);

/// The /proc directories whose read has not come back yet (one blocked thread each at most).
static BLOCKED_READS: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

/// A filesystem's device number, as `major:minor` in mountinfo.
pub type DeviceNumber = (u32, u32);

/// A mount as mountinfo names it: device and mount point (mountinfo's escaped text).
type MountEntry = (DeviceNumber, String);

/// The mounts of this process's mount namespace and of every other one, as far as /proc
/// shows them (processes that exit while being read are skipped).
pub struct MountTable {
    own: HashSet<MountEntry>,
    others: HashSet<MountEntry>,
}

impl MountTable {
    /// The mount tables of /proc, or an error if reading them takes longer than `READ_LIMIT`.
    pub fn read() -> io::Result<MountTable> {
        MountTable::read_within(Path::new("/proc"), READ_LIMIT)
    }

    fn read_within(proc: &Path, limit: Duration) -> io::Result<MountTable> {
        {
            let mut blocked = BLOCKED_READS.lock().unwrap_or_else(|e| e.into_inner());
            if blocked.iter().any(|p| p == proc) {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("an earlier read of {} is still blocked", proc.display()),
                ));
            }
            blocked.push(proc.to_owned());
        }
        let (send, receive) = std::sync::mpsc::channel();
        let dir = proc.to_owned();
        let spawned = std::thread::Builder::new()
            .name("mountns-read".into())
            .spawn(move || {
                let table = MountTable::read_under(&dir);
                let mut blocked = BLOCKED_READS.lock().unwrap_or_else(|e| e.into_inner());
                blocked.retain(|p| p != &dir);
                let _ = send.send(table);
            });
        if let Err(e) = spawned {
            let mut blocked = BLOCKED_READS.lock().unwrap_or_else(|e| e.into_inner());
            blocked.retain(|p| p != proc);
            return Err(e);
        }
        receive.recv_timeout(limit).unwrap_or_else(|_| {
            Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "reading the mount tables in {} took over {} s (a process stuck in the kernel?)",
                    proc.display(),
                    limit.as_secs_f64()
                ),
            ))
        })
    }

    fn read_under(proc: &Path) -> io::Result<MountTable> {
        let own_ns = fs::read_link(proc.join("self/ns/mnt"))?;
        let own = entries(&fs::read_to_string(proc.join("self/mountinfo"))?);
        let mut seen = HashSet::from([own_ns]);
        let mut others = HashSet::new();
        for entry in fs::read_dir(proc)? {
            let Ok(entry) = entry else { continue };
            let name = entry.file_name();
            if !name.to_string_lossy().bytes().all(|b| b.is_ascii_digit()) {
                continue;
            }
            let pid_dir = entry.path();
            let Ok(ns) = fs::read_link(pid_dir.join("ns/mnt")) else {
                continue; // gone, or a kernel thread
            };
            if !seen.insert(ns) {
                continue;
            }
            if let Ok(mountinfo) = fs::read_to_string(pid_dir.join("mountinfo")) {
                others.extend(entries(&mountinfo));
            }
        }
        Ok(MountTable { own, others })
    }

    /// True when another namespace has `device` mounted at a path where ours has not.
    pub fn used_elsewhere(&self, device: DeviceNumber) -> bool {
        self.others
            .iter()
            .any(|entry| entry.0 == device && !self.own.contains(entry))
    }
}

fn entries(mountinfo: &str) -> HashSet<MountEntry> {
    mountinfo.lines().filter_map(entry_of_line).collect()
}

/// Fields 3 and 5 of a mountinfo line: `36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 ...`.
fn entry_of_line(line: &str) -> Option<MountEntry> {
    let mut fields = line.split(' ');
    let (major, minor) = fields.nth(2)?.split_once(':')?;
    let mount_point = fields.nth(1)?;
    Some((
        (major.parse().ok()?, minor.parse().ok()?),
        mount_point.to_owned(),
    ))
}

/// The device number of a `st_dev`.
pub fn device_number(dev: u64) -> DeviceNumber {
    (
        nix::sys::stat::major(dev) as u32,
        nix::sys::stat::minor(dev) as u32,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_fields() {
        let line = "36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue";
        assert_eq!(entry_of_line(line), Some(((98, 0), "/mnt2".to_owned())));
        assert_eq!(entry_of_line("garbage"), None);
        assert_eq!(entry_of_line("1 2 x:y / / rw - t s rw"), None);
    }

    /// Runs `script` in a child in a private mount namespace (a copy of ours) with $0 = `dir`;
    /// the child prints the device of what it mounted and sleeps until killed.
    fn in_private_namespace(script: &str, dir: &Path) -> (std::process::Child, DeviceNumber) {
        let mut child = std::process::Command::new("unshare")
            .args(["--mount", "--propagation", "private", "sh", "-c"])
            .arg(script)
            .arg(dir)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(child.stdout.take().unwrap()),
            &mut line,
        )
        .unwrap();
        (child, device_number(line.trim().parse().unwrap()))
    }

    #[test]
    fn a_namespace_is_told_from_a_copy_of_ours() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: needs root (unshare, mount)");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let (ours, theirs) = (dir.path().join("ours"), dir.path().join("theirs"));
        std::fs::create_dir(&ours).unwrap();
        std::fs::create_dir(&theirs).unwrap();
        // A tmpfs only the child has: used elsewhere.
        let (mut child, only_theirs) = in_private_namespace(
            r#"mount -t tmpfs fvol-test "$0/theirs" && stat -c %d "$0/theirs" && exec sleep 60"#,
            dir.path(),
        );
        let table = MountTable::read().unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(table.used_elsewhere(only_theirs));

        // A tmpfs of ours that the child's namespace copied, at the same path: not a use. Once
        // the child also binds it elsewhere, it is.
        nix::mount::mount(
            Some("fvol-test"),
            &ours,
            Some("tmpfs"),
            nix::mount::MsFlags::empty(),
            None::<&str>,
        )
        .unwrap();
        let dev = device_number(nix::sys::stat::stat(&ours).unwrap().st_dev);
        let (mut copy, _) =
            in_private_namespace(r#"stat -c %d "$0/ours" && exec sleep 60"#, dir.path());
        let copied = MountTable::read().unwrap();
        copy.kill().unwrap();
        copy.wait().unwrap();
        let (mut binder, _) = in_private_namespace(
            r#"mount --bind "$0/ours" "$0/theirs" && stat -c %d "$0/theirs" && exec sleep 60"#,
            dir.path(),
        );
        let bound = MountTable::read().unwrap();
        binder.kill().unwrap();
        binder.wait().unwrap();
        nix::mount::umount2(&ours, nix::mount::MntFlags::MNT_DETACH).unwrap();
        assert!(!copied.used_elsewhere(dev), "a copy counted as a use");
        assert!(bound.used_elsewhere(dev), "a bind elsewhere not counted");
    }

    /// A fake /proc whose one other process has a FIFO as its mount table: opening it blocks
    /// until a writer comes, as a read of a stuck process's table does.
    fn proc_with_a_blocking_table() -> (tempfile::TempDir, PathBuf) {
        let proc = tempfile::tempdir().unwrap();
        for (pid, ns) in [("self", "mnt:[1]"), ("42", "mnt:[2]")] {
            std::fs::create_dir_all(proc.path().join(pid).join("ns")).unwrap();
            std::os::unix::fs::symlink(ns, proc.path().join(pid).join("ns/mnt")).unwrap();
        }
        std::fs::write(proc.path().join("self/mountinfo"), "").unwrap();
        let fifo = proc.path().join("42/mountinfo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        (proc, fifo)
    }

    #[test]
    fn a_blocked_read_fails_after_the_limit_and_does_not_pile_up() {
        let (proc, fifo) = proc_with_a_blocking_table();
        let limit = Duration::from_millis(200);
        let err = MountTable::read_within(proc.path(), limit)
            .err()
            .expect("a blocked read");
        assert_eq!(err.kind(), io::ErrorKind::TimedOut, "{err}");
        // Still blocked: the next read fails without another thread.
        let err = MountTable::read_within(proc.path(), limit)
            .err()
            .expect("still blocked");
        assert!(err.to_string().contains("still blocked"), "{err}");
        // The table comes: the blocked thread ends, and reads work again.
        let line = "36 35 0:99 / /x rw - tmpfs t rw\n";
        std::fs::write(&fifo, line).unwrap();
        while BLOCKED_READS
            .lock()
            .unwrap()
            .iter()
            .any(|p| p == proc.path())
        {
            std::thread::sleep(Duration::from_millis(10));
        }
        std::fs::remove_file(&fifo).unwrap();
        std::fs::write(&fifo, line).unwrap();
        let table = MountTable::read_within(proc.path(), Duration::from_secs(60)).unwrap();
        assert!(table.used_elsewhere((0, 99)));
    }

    #[test]
    fn device_numbers_split_like_mountinfo() {
        let dev = nix::sys::stat::makedev(0, 57);
        assert_eq!(device_number(dev), (0, 57));
        let dev = nix::sys::stat::makedev(259, 3);
        assert_eq!(device_number(dev), (259, 3));
    }
}
