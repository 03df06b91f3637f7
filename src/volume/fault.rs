//! Crash points for tests. With `FVOL_FAULT=<point>` in its environment, the daemon kills
//! itself with SIGKILL (as `kill -9` would) when it reaches that step of a create or rm, so a
//! test can check what the next start makes of it. Test-only: never set it in production.
//!
//! Points: `create-after-intent`, `create-after-data`, `rm-after-intent`, `rm-after-data`.
use std::sync::OnceLock;

use nix::sys::signal::{Signal, raise};

const VARIABLE: &str = "FVOL_FAULT";

/// Dies here if the environment names this point.
pub fn crash_point(point: &str) {
    static WANTED: OnceLock<Option<String>> = OnceLock::new();
    let wanted = WANTED.get_or_init(|| std::env::var(VARIABLE).ok());
    if wanted.as_deref() == Some(point) {
        log::error!("{VARIABLE}={point}: killing the daemon here (a test's crash point)");
        let _ = raise(Signal::SIGKILL);
    }
}
