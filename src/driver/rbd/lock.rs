//! Whose lock is it: the identity a daemon writes into its lock cookie, and when a lock left by
//! an earlier daemon on this host and root may be broken without `fvol break-lock`.
//!
//! The cookie is `fvol host=HOST root=ROOT boot=BOOT_ID pidns=pid:[N] pid=PID`. Host name and
//! root path say "a daemon of this root on a host of this name", which is not unique: cloned
//! machines keep their name, and daemons in containers that share the host's name each have
//! their own pid namespace. So a lock with this host and root is a dead predecessor's only when
//! - it was taken in this boot of the kernel and this pid namespace, and its pid no longer runs
//!   (one daemon per root at a time: a kill -9 leaves such a lock); or
//! - otherwise (a lock from before a reboot, or from another pid namespace or machine of the
//!   same name), its holder no longer watches the image: librbd watches every open image, and
//!   the OSD drops the watch of a client that stopped answering after 30 s.
//!
//! Any other lock, and every lock of another host or root, is broken only by `fvol break-lock`.
//! A broken lock's holder is fenced (`Image::break_lock`), so even a wrong guess cannot leave
//! two writers.
use crate::driver::DriverContext;
use crate::sys::librbd::Image;

/// This daemon's place: what its cookie says besides the pid.
#[derive(Debug)]
pub struct Identity {
    host: String,
    root: String,
    /// Empty when the kernel does not say (then no lock counts as this boot's).
    boot: String,
    pidns: String,
}

/// What the rest of a cookie after host and root says.
#[derive(Debug, PartialEq, Eq)]
struct Taken<'a> {
    boot: &'a str,
    pidns: &'a str,
    pid: i32,
}

impl Identity {
    pub fn here(ctx: &DriverContext) -> Identity {
        let host = nix::unistd::gethostname()
            .map(|h| h.to_string_lossy().into_owned())
            .unwrap_or_default();
        let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
            .map(|b| b.trim().to_owned())
            .unwrap_or_default();
        let pidns = std::fs::read_link("/proc/self/ns/pid")
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default();
        Identity {
            host,
            root: ctx.root.display().to_string(),
            boot,
            pidns,
        }
    }

    pub fn cookie(&self, pid: u32) -> String {
        format!(
            "{}boot={} pidns={} pid={pid}",
            self.place(),
            self.boot,
            self.pidns
        )
    }

    /// The start of every cookie of a daemon of this root on a host of this name.
    fn place(&self) -> String {
        format!("fvol host={} root={} ", self.host, self.root)
    }

    /// Whether the lock with `cookie` is a dead predecessor's (module doc). `pid_alive` and
    /// `watching` (does the holder still watch the image) are asked only when needed.
    fn predecessor_dead(
        &self,
        cookie: &str,
        pid_alive: impl FnOnce(i32) -> bool,
        watching: impl FnOnce() -> bool,
    ) -> bool {
        let Some(taken) = cookie.strip_prefix(&self.place()).and_then(parse) else {
            return false;
        };
        let same_kernel_view =
            !self.boot.is_empty() && taken.boot == self.boot && taken.pidns == self.pidns;
        if same_kernel_view {
            !pid_alive(taken.pid)
        } else {
            !watching()
        }
    }
}

/// `boot=B pidns=N pid=P`.
fn parse(rest: &str) -> Option<Taken<'_>> {
    let mut fields = rest.split(' ');
    let boot = fields.next()?.strip_prefix("boot=")?;
    let pidns = fields.next()?.strip_prefix("pidns=")?;
    let pid = fields.next()?.strip_prefix("pid=")?.parse().ok()?;
    fields
        .next()
        .is_none()
        .then_some(Taken { boot, pidns, pid })
}

fn pid_alive(pid: i32) -> bool {
    pid as u32 == std::process::id()
        || nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok()
}

/// Breaks the locks on `image` that dead predecessors of this daemon left (module doc).
/// Returns whether it broke any.
pub fn break_stale_own_locks(image: &Image, me: &Identity) -> bool {
    let Ok(lockers) = image.lockers() else {
        return false;
    };
    let mut broke = false;
    for l in lockers {
        // A holder that cannot be matched to a watcher counts as watching.
        let watching = || {
            let id = l
                .client
                .strip_prefix("client.")
                .and_then(|n| n.parse().ok());
            match (id, image.watcher_ids()) {
                (Some(id), Ok(ids)) => ids.contains(&id),
                _ => true,
            }
        };
        if !me.predecessor_dead(&l.cookie, pid_alive, watching) {
            continue;
        }
        match image.break_lock(&l.client, &l.cookie) {
            Ok(()) => {
                log::warn!(
                    "{}: broke the stale lock of a dead predecessor: {} ({}, {})",
                    image.describe(),
                    l.cookie,
                    l.client,
                    l.address
                );
                broke = true;
            }
            Err(e) => log::warn!("{}: breaking {}: {e}", image.describe(), l.cookie),
        }
    }
    broke
}

#[cfg(test)]
mod tests {
    use super::*;

    fn me() -> Identity {
        Identity {
            host: "h1".into(),
            root: "/var/lib/fvol".into(),
            boot: "b-now".into(),
            pidns: "pid:[1]".into(),
        }
    }

    /// The verdict on `cookie`, with the holder's pid running or not and watching or not;
    /// panics if a question is asked that the rule says must not matter.
    fn dead(cookie: &str, pid: Option<bool>, watching: Option<bool>) -> bool {
        me().predecessor_dead(
            cookie,
            |_| pid.expect("pid asked"),
            || watching.expect("watchers asked"),
        )
    }

    #[test]
    fn cookie_round_trips() {
        let c = me().cookie(42);
        assert_eq!(
            c,
            "fvol host=h1 root=/var/lib/fvol boot=b-now pidns=pid:[1] pid=42"
        );
        assert_eq!(
            c.strip_prefix(&me().place()).and_then(parse),
            Some(Taken {
                boot: "b-now",
                pidns: "pid:[1]",
                pid: 42
            })
        );
    }

    #[test]
    fn same_boot_and_namespace_the_pid_decides() {
        let c = me().cookie(42);
        assert!(dead(&c, Some(false), None));
        assert!(!dead(&c, Some(true), None));
    }

    #[test]
    fn another_boot_or_namespace_the_watch_decides() {
        for c in [
            "fvol host=h1 root=/var/lib/fvol boot=b-before pidns=pid:[1] pid=42",
            "fvol host=h1 root=/var/lib/fvol boot=b-now pidns=pid:[7] pid=42",
        ] {
            assert!(!dead(c, None, Some(true)), "{c}");
            assert!(dead(c, None, Some(false)), "{c}");
        }
    }

    #[test]
    fn other_hosts_roots_and_forms_are_never_ours() {
        for c in [
            "fvol host=h2 root=/var/lib/fvol boot=b-now pidns=pid:[1] pid=42",
            "fvol host=h1 root=/srv/fvol boot=b-now pidns=pid:[1] pid=42",
            "fvol host=h1 root=/var/lib/fvol pid=42",
            "fvol host=h1 root=/var/lib/fvol boot=b-now pidns=pid:[1] pid=x",
            "fvol host=h1 root=/var/lib/fvol boot=b-now pidns=pid:[1] pid=42 more",
            "someone else",
        ] {
            assert!(!dead(c, None, None), "{c}");
        }
    }

    #[test]
    fn an_unknown_boot_never_counts_as_this_one() {
        let mut me = me();
        me.boot.clear();
        let c = me.cookie(42);
        assert!(!me.predecessor_dead(&c, |_| panic!("pid asked"), || true));
    }
}
