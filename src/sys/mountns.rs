//! Which filesystems other mount namespaces hold, read from /proc: how the daemon tells a
//! container that still uses a volume (its mount namespace holds the volume's mount) from a
//! reference whose holder is gone.
//!
//! A namespace made by copying ours (`unshare -m`, a systemd unit with PrivateTmp) holds a
//! copy of every mount we had then, at the same paths; that is not a use of the volume. A
//! container's runtime bind-mounts the volume at a path of its own and drops the rest of the
//! host's mounts (pivot_root). So a namespace uses a filesystem when it has it mounted at a
//! path where this namespace does not.
use std::collections::HashSet;
use std::fs;
use std::io;
use std::path::Path;

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
    pub fn read() -> io::Result<MountTable> {
        MountTable::read_under(Path::new("/proc"))
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

    #[test]
    fn device_numbers_split_like_mountinfo() {
        let dev = nix::sys::stat::makedev(0, 57);
        assert_eq!(device_number(dev), (0, 57));
        let dev = nix::sys::stat::makedev(259, 3);
        assert_eq!(device_number(dev), (259, 3));
    }
}
