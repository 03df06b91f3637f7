//! Logging of requests a volume refuses because it does not support them (an ioctl command,
//! poll, locks, passthrough): the first of each kind is logged, naming the volume and saying
//! that further ones are not, so that a program repeating one (e.g. an ioctl per file) cannot
//! flood the log.
use std::collections::HashSet;

use parking_lot::Mutex;

/// Distinct kinds remembered per volume; past this, one last line says that no more are
/// logged, so that a caller cycling through kinds cannot grow the set or the log.
const MAX_KINDS: usize = 256;

pub struct Refusals {
    volume: String,
    seen: Mutex<HashSet<(&'static str, u64)>>,
}

impl Refusals {
    pub fn new(volume: &str) -> Refusals {
        Refusals {
            volume: volume.to_string(),
            seen: Mutex::new(HashSet::new()),
        }
    }

    /// Notes one refused request of kind (`operation`, `detail`), e.g. ("ioctl", command);
    /// `what` describes it and `why` the answer given. Logs only the first of each kind.
    pub fn note(&self, operation: &'static str, detail: u64, what: impl FnOnce() -> String) {
        let mut seen = self.seen.lock();
        if seen.len() > MAX_KINDS || seen.contains(&(operation, detail)) {
            return;
        }
        if seen.len() == MAX_KINDS {
            seen.insert(("", 0));
            log::warn!(
                "volume {}: {MAX_KINDS} kinds of unsupported requests refused; no more \
                 are logged for this volume",
                self.volume
            );
            return;
        }
        seen.insert((operation, detail));
        log::warn!(
            "volume {}: refused {} (not supported); further ones are not logged for this \
             volume",
            self.volume,
            what()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_each_kind_once_and_is_bounded() {
        let r = Refusals::new("v");
        for _ in 0..3 {
            r.note("ioctl", 1, String::new);
            r.note("poll", 1, String::new);
        }
        assert_eq!(r.seen.lock().len(), 2);
        for cmd in 0..10_000 {
            r.note("ioctl", cmd, String::new);
        }
        assert_eq!(r.seen.lock().len(), MAX_KINDS + 1);
    }
}
