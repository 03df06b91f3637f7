//! What an open image is waiting for: calls into librbd in flight, since when the cluster last
//! answered one, and whether it answered that this client is fenced.
//!
//! Cheap enough for every call: two atomic updates and a monotonic clock read (vDSO, no system
//! call) when a call ends, a third update and a clock read when the first call starts after an
//! idle moment. `waiting` derives "no answer since T" from that: with calls in flight, T is the
//! later of the last completion and the start of the busy period.
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

/// librados' errno for a blocklisted client (`EBLOCKLISTED` is `ESHUTDOWN` in Ceph).
pub const EBLOCKLISTED: i32 = libc::ESHUTDOWN;

/// Milliseconds on a monotonic clock, from 1 (0 means "never").
fn now_ms() -> u64 {
    static BASE: OnceLock<Instant> = OnceLock::new();
    BASE.get_or_init(Instant::now).elapsed().as_millis() as u64 + 1
}

/// The wall-clock time of a `now_ms` reading.
fn wall(ms: u64) -> SystemTime {
    SystemTime::now() - Duration::from_millis(now_ms().saturating_sub(ms))
}

/// Calls in flight on one image, and its fence.
#[derive(Debug, Default)]
pub struct Activity {
    in_flight: AtomicU64,
    /// When `in_flight` last went from 0 to 1.
    busy_since: AtomicU64,
    /// When a call last completed.
    last_done: AtomicU64,
    fence: OnceLock<Fence>,
    /// Bytes of bounded reads in flight (`reserve_read`).
    read_bytes: AtomicU64,
}

/// The cluster has answered none of `operations` calls since `since`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Waiting {
    pub since: SystemTime,
    pub operations: u64,
}

/// This client was blocklisted: the cluster refuses every further call of this connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fence {
    pub since: SystemTime,
    /// The call that was refused first.
    pub call: &'static str,
}

impl Activity {
    /// A call starts; `end` must follow exactly once.
    pub fn begin(&self) {
        if self.in_flight.fetch_add(1, Ordering::AcqRel) == 0 {
            self.busy_since.store(now_ms(), Ordering::Release);
        }
    }

    /// A call ended with librbd's return value `ret` (negative errno on failure).
    pub fn end(&self, call: &'static str, ret: i64) {
        self.last_done.store(now_ms(), Ordering::Release);
        self.in_flight.fetch_sub(1, Ordering::AcqRel);
        if ret == -(EBLOCKLISTED as i64) {
            self.fence.get_or_init(|| Fence {
                since: SystemTime::now(),
                call,
            });
        }
    }

    /// A guard for a synchronous call: `begin` now, `end` with the value given to `done`, or
    /// with 0 if dropped without it.
    pub fn call(&self, name: &'static str) -> Call<'_> {
        self.begin();
        Call {
            activity: self,
            name,
            ret: 0,
        }
    }

    /// Calls in flight that have waited more than `longer_than` with no answer from the
    /// cluster to any call of this image.
    pub fn waiting(&self, longer_than: Duration) -> Option<Waiting> {
        let operations = self.in_flight.load(Ordering::Acquire);
        if operations == 0 {
            return None;
        }
        let since =
            (self.busy_since.load(Ordering::Acquire)).max(self.last_done.load(Ordering::Acquire));
        (now_ms().saturating_sub(since) > longer_than.as_millis() as u64).then(|| Waiting {
            since: wall(since),
            operations,
        })
    }

    pub fn fence(&self) -> Option<&Fence> {
        self.fence.get()
    }

    /// Counts `len` bytes of a read about to start, unless that would put more than `max` in
    /// flight; `release_read` when it completes.
    pub fn reserve_read(&self, len: usize, max: usize) -> bool {
        let (len, max) = (len as u64, max as u64);
        self.read_bytes
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n + len <= max).then_some(n + len)
            })
            .is_ok()
    }

    pub fn release_read(&self, len: usize) {
        if len > 0 {
            self.read_bytes.fetch_sub(len as u64, Ordering::AcqRel);
        }
    }
}

/// A synchronous call in flight (see `Activity::call`).
pub struct Call<'a> {
    activity: &'a Activity,
    name: &'static str,
    ret: i64,
}

impl Call<'_> {
    /// Records the call's return value and passes it on.
    pub fn done(mut self, ret: i64) -> i64 {
        self.ret = ret;
        ret
    }
}

impl Drop for Call<'_> {
    fn drop(&mut self) {
        self.activity.end(self.name, self.ret);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idle_is_not_waiting() {
        let a = Activity::default();
        assert_eq!(a.waiting(Duration::ZERO), None);
        a.call("rbd_read").done(0);
        assert_eq!(a.waiting(Duration::ZERO), None);
    }

    #[test]
    fn a_call_without_answer_waits_since_it_started() {
        let a = Activity::default();
        let before = SystemTime::now() - Duration::from_millis(5);
        let call = a.call("rbd_flush");
        std::thread::sleep(Duration::from_millis(20));
        let w = a.waiting(Duration::from_millis(10)).expect("waiting");
        assert_eq!(w.operations, 1);
        assert!(w.since >= before && w.since <= SystemTime::now(), "{w:?}");
        assert_eq!(a.waiting(Duration::from_secs(3600)), None);
        drop(call);
        assert_eq!(a.waiting(Duration::ZERO), None);
    }

    #[test]
    fn an_answer_to_another_call_counts_as_progress() {
        let a = Activity::default();
        let slow = a.call("rbd_read");
        std::thread::sleep(Duration::from_millis(30));
        a.call("rbd_write").done(0);
        // The busy period started 30 ms ago, but the cluster answered just now.
        assert_eq!(a.waiting(Duration::from_millis(25)), None);
        drop(slow);
    }

    #[test]
    fn reads_in_flight_are_bounded() {
        let a = Activity::default();
        assert!(a.reserve_read(40, 100));
        assert!(a.reserve_read(60, 100));
        assert!(!a.reserve_read(1, 100));
        a.release_read(60);
        assert!(a.reserve_read(50, 100));
        assert!(!a.reserve_read(20, 100));
    }

    #[test]
    fn blocklisted_is_a_fence_and_sticks() {
        let a = Activity::default();
        a.call("rbd_read").done(-(libc::EIO as i64));
        assert_eq!(a.fence(), None);
        a.call("rbd_aio_write").done(-(EBLOCKLISTED as i64));
        a.call("rbd_flush").done(-(EBLOCKLISTED as i64));
        assert_eq!(a.fence().map(|f| f.call), Some("rbd_aio_write"));
        a.call("rbd_read").done(0);
        assert!(a.fence().is_some());
    }
}
