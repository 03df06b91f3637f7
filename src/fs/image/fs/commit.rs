//! Who makes durable commits, and how callers wait for them.
//!
//! One thread per filesystem (the committer) makes every durable commit once the filesystem is
//! open; `fsync` and the others ask for one and wait for a commit that *started* after they
//! asked (any number of requests share one commit). On a device with a wait limit, a caller
//! stops waiting after it and gets ETIMEDOUT, while the commit goes on and lands once the
//! cluster answers: a commit abandoned halfway would make redb give up on the database for
//! good, and lose what earlier non-durable commits had acknowledged.
//!
//! Requests are numbered; a commit covers every request made before it started (`target`), so
//! a request is done once a commit with `target` at least its number succeeded, and failed once
//! every commit that covered it failed.
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use crate::fs::FsError;

#[derive(Default)]
pub struct Commits {
    state: Mutex<State>,
    wake: Condvar,
}

#[derive(Default)]
struct State {
    /// Requests so far.
    requested: u64,
    /// Requests covered by a finished commit, successful or not.
    handled: u64,
    /// Requests covered by a successful one.
    succeeded: u64,
    /// The error of the last failed commit.
    failed: Option<FsError>,
    /// The committer runs (between `start` and its exit after `stop`).
    running: bool,
    stop: bool,
    /// At the stop, commit what was asked for before leaving (not after `abandon`).
    final_commit: bool,
}

/// Why a caller got no durable commit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Waited {
    /// None finished within the wait limit; one is still under way.
    TimedOut,
    /// The commit that covered the request failed with this.
    Failed(FsError),
    /// There is no committer (not started yet, or stopped): commit in the caller's thread.
    NotRunning,
}

/// What the committer should do next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Work {
    /// The requests a commit started now covers.
    pub target: u64,
    /// Someone asked for a commit (else this is the periodic tick).
    pub requested: bool,
}

impl Commits {
    /// The committer is about to run: requests go to it from now on.
    pub fn start(&self) {
        let mut s = self.state.lock();
        s.running = true;
        s.stop = false;
    }

    /// Asks the committer to leave; with `final_commit`, after committing what was asked for.
    pub fn stop(&self, final_commit: bool) {
        let mut s = self.state.lock();
        s.stop = true;
        s.final_commit = final_commit;
        self.wake.notify_all();
    }

    /// Asks for a durable commit that starts after this call, and waits for it: `limit` at
    /// most (`None`: as long as it takes).
    pub fn request_and_wait(&self, limit: Option<Duration>) -> Result<(), Waited> {
        let mut s = self.state.lock();
        if !s.running {
            return Err(Waited::NotRunning);
        }
        s.requested += 1;
        let ticket = s.requested;
        self.wake.notify_all();
        let deadline = limit.map(|l| Instant::now() + l);
        loop {
            if s.succeeded >= ticket {
                return Ok(());
            }
            if s.handled >= ticket {
                return Err(Waited::Failed(
                    s.failed.unwrap_or(FsError::Os(nix::errno::Errno::EIO)),
                ));
            }
            if !s.running {
                return Err(Waited::NotRunning);
            }
            match deadline {
                None => self.wake.wait(&mut s),
                Some(d) => {
                    if self.wake.wait_until(&mut s, d).timed_out()
                        && s.succeeded < ticket
                        && s.handled < ticket
                    {
                        return Err(Waited::TimedOut);
                    }
                }
            }
        }
    }

    /// Asks for a durable commit soon, without waiting (one due by the interval).
    pub fn nudge(&self) {
        let mut s = self.state.lock();
        if s.running && s.requested == s.handled {
            s.requested += 1;
            self.wake.notify_all();
        }
    }

    /// The committer: waits for a request, `tick` at most. `None` once it is stopped and has
    /// nothing left to do (it no longer runs from then on).
    pub fn next_work(&self, tick: Duration) -> Option<Work> {
        let mut s = self.state.lock();
        if s.requested == s.handled && !s.stop {
            self.wake.wait_for(&mut s, tick);
        }
        if s.requested > s.handled && (!s.stop || s.final_commit) {
            return Some(Work {
                target: s.requested,
                requested: true,
            });
        }
        if s.stop {
            s.running = false;
            self.wake.notify_all();
            return None;
        }
        Some(Work {
            target: s.handled,
            requested: false,
        })
    }

    /// The committer made the commit of `work`, with `result`.
    pub fn finish(&self, work: Work, result: Result<(), FsError>) {
        let mut s = self.state.lock();
        s.handled = s.handled.max(work.target);
        match result {
            Ok(()) => s.succeeded = s.succeeded.max(work.target),
            Err(e) => s.failed = Some(e),
        }
        self.wake.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use nix::errno::Errno;

    use super::*;

    const TICK: Duration = Duration::from_millis(20);

    /// A committer thread that runs `commit` for each piece of work, until stopped.
    fn committer(
        commits: &Arc<Commits>,
        commit: impl Fn(Work) -> Result<(), FsError> + Send + 'static,
    ) -> std::thread::JoinHandle<Vec<Work>> {
        commits.start();
        let commits = commits.clone();
        std::thread::spawn(move || {
            let mut done = Vec::new();
            while let Some(work) = commits.next_work(TICK) {
                if work.requested {
                    let r = commit(work);
                    commits.finish(work, r);
                    done.push(work);
                }
            }
            done
        })
    }

    #[test]
    fn without_a_committer_the_caller_commits() {
        let c = Commits::default();
        assert_eq!(c.request_and_wait(None), Err(Waited::NotRunning));
    }

    #[test]
    fn a_request_waits_for_a_commit_that_started_after_it() {
        let c = Arc::new(Commits::default());
        let t = committer(&c, |_| Ok(()));
        for _ in 0..3 {
            c.request_and_wait(None).unwrap();
        }
        c.stop(true);
        let done = t.join().unwrap();
        assert_eq!(done.iter().map(|w| w.target).collect::<Vec<_>>(), [1, 2, 3]);
    }

    #[test]
    fn a_failed_commit_fails_its_requests_and_the_next_one_is_tried_again() {
        let c = Arc::new(Commits::default());
        let fail = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let t = {
            let fail = fail.clone();
            committer(&c, move |_| {
                match fail.load(std::sync::atomic::Ordering::SeqCst) {
                    true => Err(FsError::Os(Errno::EIO)),
                    false => Ok(()),
                }
            })
        };
        assert_eq!(
            c.request_and_wait(None),
            Err(Waited::Failed(FsError::Os(Errno::EIO)))
        );
        fail.store(false, std::sync::atomic::Ordering::SeqCst);
        c.request_and_wait(None).unwrap();
        c.stop(true);
        t.join().unwrap();
    }

    /// A caller with a limit gets TimedOut while the commit goes on; the next caller after it
    /// finished is served by a new commit.
    #[test]
    fn a_limited_wait_times_out_while_the_commit_goes_on() {
        let c = Arc::new(Commits::default());
        let (release, gate) = std::sync::mpsc::channel::<()>();
        let gate = Mutex::new(gate);
        let t = committer(&c, move |w| {
            if w.target == 1 {
                gate.lock().recv().unwrap();
            }
            Ok(())
        });
        assert_eq!(
            c.request_and_wait(Some(Duration::from_millis(50))),
            Err(Waited::TimedOut)
        );
        release.send(()).unwrap();
        c.request_and_wait(Some(Duration::from_secs(60))).unwrap();
        c.stop(true);
        let done = t.join().unwrap();
        assert_eq!(done.iter().map(|w| w.target).collect::<Vec<_>>(), [1, 2]);
    }

    #[test]
    fn the_stop_commits_what_was_asked_unless_abandoned() {
        for final_commit in [true, false] {
            let c = Arc::new(Commits::default());
            c.start();
            c.nudge();
            c.stop(final_commit);
            let mut works = Vec::new();
            while let Some(w) = c.next_work(TICK) {
                c.finish(w, Ok(()));
                works.push(w);
            }
            assert_eq!(works.len(), final_commit as usize, "{final_commit}");
            assert_eq!(c.request_and_wait(None), Err(Waited::NotRunning));
        }
    }
}
