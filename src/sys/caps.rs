//! Capabilities: what a FUSE caller may do that the kernel does not tell the handler, and a
//! thread-scoped drop of `CAP_FSETID` for the kernel passthrough backing files.
//!
//! Capability sets belong to a thread, not to the process, so `capset` here changes only the
//! calling request thread, and only for the duration of a closure.
use std::io;

/// Bit numbers from `linux/capability.h`.
pub const CAP_FSETID: u32 = 4;
pub const CAP_SYS_ADMIN: u32 = 21;

const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// The calling thread's capability sets (two words each, version 3).
fn get() -> io::Result<[CapData; 2]> {
    let mut header = CapHeader {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let mut data = [CapData::default(); 2];
    // SAFETY: the header and a two-element data array are what capget(2) writes for version 3;
    // both outlive the call.
    let rc = unsafe { libc::syscall(libc::SYS_capget, &mut header, data.as_mut_ptr()) };
    if rc == 0 {
        Ok(data)
    } else {
        Err(io::Error::last_os_error())
    }
}

fn set(data: &[CapData; 2]) -> io::Result<()> {
    let mut header = CapHeader {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    // SAFETY: capset(2) reads the header and a two-element array (version 3); pid 0 is the
    // calling thread, the only one it changes.
    let rc = unsafe { libc::syscall(libc::SYS_capset, &mut header, data.as_ptr()) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Runs `f` with `CAP_FSETID` out of this thread's effective set, then puts it back.
///
/// Why: a kernel passthrough backing file keeps the credentials of the thread that registered
/// it, and the host filesystem's write path clears setuid and setgid only for writers without
/// `CAP_FSETID`. Registered without it, every passthrough write clears them, as a write by an
/// unprivileged caller must (the handler never sees those writes to do it itself).
pub fn without_fsetid<T>(f: impl FnOnce() -> T) -> io::Result<T> {
    let saved = get()?;
    let mut reduced = saved;
    reduced[0].effective &= !(1 << CAP_FSETID);
    set(&reduced)?;
    let result = f();
    if let Err(e) = set(&saved) {
        // Only an effective bit was cleared, and it is still permitted: raising it again
        // cannot fail short of a kernel bug. A thread left without it clears bits more eagerly.
        log::error!("restoring CAP_FSETID on a request thread: {e}");
    }
    Ok(result)
}

/// Whether process `pid` (as the daemon's pid namespace sees it) is root with capability
/// `cap` in its effective set. Anything unknown (pid 0, a process gone, an unreadable status)
/// counts as unprivileged, which errs towards clearing privileges and hiding names.
pub fn caller_has(uid: u32, pid: u32, cap: u32) -> bool {
    if uid != 0 || pid == 0 {
        return false;
    }
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| effective_caps(&status))
        .is_some_and(|caps| caps & (1u64 << cap) != 0)
}

/// Whether the caller of a request (filesystem gid `gid`, process `pid`) is in group `group`:
/// its gid, or one of the supplementary groups of the process. An unreadable status counts as
/// not in the group, which errs towards clearing setgid.
pub fn caller_in_group(gid: u32, pid: u32, group: u32) -> bool {
    if gid == group {
        return true;
    }
    pid != 0
        && std::fs::read_to_string(format!("/proc/{pid}/status"))
            .ok()
            .is_some_and(|status| supplementary_groups(&status).any(|g| g == group))
}

/// The `Groups:` list of a `/proc/PID/status` text.
fn supplementary_groups(status: &str) -> impl Iterator<Item = u32> + '_ {
    status
        .lines()
        .find_map(|l| l.strip_prefix("Groups:"))
        .unwrap_or("")
        .split_whitespace()
        .filter_map(|g| g.parse().ok())
}

/// The `CapEff:` mask of a `/proc/PID/status` text.
fn effective_caps(status: &str) -> Option<u64> {
    let hex = status.lines().find_map(|l| l.strip_prefix("CapEff:"))?;
    u64::from_str_radix(hex.trim(), 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn effective_set_parsed_from_status() {
        let status = "Name:\tsh\nCapInh:\t0000000000000000\nCapEff:\t00000000a80425fb\n";
        let caps = effective_caps(status).unwrap();
        assert_ne!(caps & (1 << CAP_FSETID), 0);
        assert_eq!(caps & (1 << CAP_SYS_ADMIN), 0);
        assert_eq!(effective_caps("Name:\tsh\n"), None);
    }

    #[test]
    fn supplementary_groups_parsed_from_status() {
        let status = "Name:\tsh\nGroups:\t4 24 27 \nCapEff:\t0\n";
        assert_eq!(
            supplementary_groups(status).collect::<Vec<_>>(),
            [4, 24, 27]
        );
        assert_eq!(supplementary_groups("Groups:\n").count(), 0);
        assert!(caller_in_group(5, 0, 5));
        assert!(!caller_in_group(5, 0, 6));
        assert!(!caller_in_group(5, u32::MAX, 6));
    }

    #[test]
    fn unknown_callers_are_unprivileged() {
        assert!(!caller_has(0, 0, CAP_FSETID));
        assert!(!caller_has(1000, std::process::id(), CAP_FSETID));
        assert!(!caller_has(0, u32::MAX, CAP_FSETID));
    }

    #[test]
    fn fsetid_dropped_only_inside_the_closure() {
        let has = || get().unwrap()[0].effective & (1 << CAP_FSETID) != 0;
        let before = has();
        let inside = without_fsetid(has).unwrap();
        assert!(!inside);
        assert_eq!(has(), before);
    }
}
