//! How far the long operations on a volume have got (export, import, copy-based snapshots and
//! clones), for `fvol` to show on a terminal while it waits for them.
//!
//! Invariants: at most one operation per volume is tracked (they all hold the volume's lock);
//! an entry lives exactly as long as its `Tracked` guard; reading progress takes no volume
//! lock, only this registry's, which no one holds across I/O (a `measure` runs outside it).
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

/// What `fvol` shows: a step, and bytes done of bytes expected (`total` 0: unknown).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ProgressInfo {
    pub step: String,
    pub done: u64,
    pub total: u64,
}

/// Bytes done, counted by the operation or measured when asked (what an external program such
/// as tar or cp has written so far).
enum Done {
    Counted(Arc<AtomicU64>),
    Measured(Arc<dyn Fn() -> u64 + Send + Sync>),
}

struct Step {
    step: String,
    done: Done,
    total: u64,
}

#[derive(Default)]
pub struct ProgressBoard {
    steps: Mutex<HashMap<String, Arc<Step>>>,
}

/// Removes its volume's entry when dropped.
pub struct Tracked<'a> {
    board: &'a ProgressBoard,
    volume: String,
}

impl Drop for Tracked<'_> {
    fn drop(&mut self) {
        self.board.steps.lock().remove(&self.volume);
    }
}

impl ProgressBoard {
    /// Tracks a step whose bytes the caller counts in the returned counter.
    pub fn counted(&self, volume: &str, step: String, total: u64) -> (Tracked<'_>, Arc<AtomicU64>) {
        let counter = Arc::new(AtomicU64::new(0));
        let tracked = self.put(volume, step, Done::Counted(counter.clone()), total);
        (tracked, counter)
    }

    /// Tracks a step whose bytes `measure` tells when someone asks.
    pub fn measured(
        &self,
        volume: &str,
        step: String,
        total: u64,
        measure: impl Fn() -> u64 + Send + Sync + 'static,
    ) -> Tracked<'_> {
        self.put(volume, step, Done::Measured(Arc::new(measure)), total)
    }

    fn put(&self, volume: &str, step: String, done: Done, total: u64) -> Tracked<'_> {
        let step = Arc::new(Step { step, done, total });
        self.steps.lock().insert(volume.to_string(), step);
        Tracked {
            board: self,
            volume: volume.to_string(),
        }
    }

    /// The step under way on `volume`, if any.
    pub fn get(&self, volume: &str) -> Option<ProgressInfo> {
        let step = self.steps.lock().get(volume).cloned()?;
        let done = match &step.done {
            Done::Counted(c) => c.load(Ordering::Relaxed),
            Done::Measured(measure) => measure(),
        };
        Some(ProgressInfo {
            step: step.step.clone(),
            done,
            total: step.total,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_step_shows_while_tracked_and_goes_with_its_guard() {
        let board = ProgressBoard::default();
        assert_eq!(board.get("v"), None);
        {
            let (_t, counter) = board.counted("v", "copying".into(), 100);
            counter.fetch_add(40, Ordering::Relaxed);
            assert_eq!(
                board.get("v"),
                Some(ProgressInfo {
                    step: "copying".into(),
                    done: 40,
                    total: 100
                })
            );
            assert_eq!(board.get("w"), None);
        }
        assert_eq!(board.get("v"), None);
        let _t = board.measured("v", "writing".into(), 0, || 7);
        assert_eq!(board.get("v").unwrap().done, 7);
    }
}
