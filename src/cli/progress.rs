//! Progress of a long operation (export, import, a copy-based snapshot or clone), shown on
//! stderr while the call runs: bytes done, rate and time left. Only on a terminal and without
//! `--quiet`: scripts see nothing. The daemon tells how far it got (`routes::PROGRESS`);
//! asking takes no volume lock, so it never waits for the operation it watches.
use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::client::DaemonClient;
use crate::api::{PathRequest, routes};
use crate::volume::progress::ProgressInfo;

/// How often the daemon is asked.
const POLL: Duration = Duration::from_millis(200);

/// Runs `call`, showing the progress the daemon reports for any of `volumes` meanwhile.
pub fn while_showing<T>(
    client: &DaemonClient,
    volumes: &[&str],
    quiet: bool,
    call: impl FnOnce() -> T,
) -> T {
    if quiet || !std::io::stderr().is_terminal() {
        return call();
    }
    let done = AtomicBool::new(false);
    std::thread::scope(|scope| {
        let watcher = scope.spawn(|| watch(client.root(), volumes, &done));
        let answer = call();
        done.store(true, Ordering::Relaxed);
        let _ = watcher.join();
        answer
    })
}

fn watch(root: &std::path::Path, volumes: &[&str], done: &AtomicBool) {
    // Its own client: a client's runtime serves one thread.
    let Ok(client) = DaemonClient::new(root) else {
        return;
    };
    let mut shown: Option<(String, ProgressBar)> = None;
    while !done.load(Ordering::Relaxed) {
        let now = volumes.iter().find_map(|name| {
            let request = PathRequest {
                name: (*name).to_string(),
            };
            client
                .call::<_, Option<ProgressInfo>>(routes::PROGRESS, &request)
                .ok()
                .flatten()
        });
        if let Some(p) = now {
            if shown.as_ref().is_none_or(|(step, _)| *step != p.step) {
                if let Some((_, bar)) = shown.take() {
                    bar.finish();
                }
                shown = Some((p.step.clone(), bar_for(&p)));
            }
            if let Some((_, bar)) = &shown {
                if p.total > 0 && p.done > p.total {
                    bar.set_length(p.done);
                }
                bar.set_position(p.done);
            }
        }
        std::thread::sleep(POLL);
    }
    if let Some((_, bar)) = shown {
        bar.finish();
    }
}

fn bar_for(p: &ProgressInfo) -> ProgressBar {
    let (bar, template) = match p.total {
        0 => (
            ProgressBar::new_spinner(),
            "{spinner} {msg}: {bytes} at {bytes_per_sec}, {elapsed}",
        ),
        total => (
            ProgressBar::new(total),
            "{msg}: {bytes} of {total_bytes} [{bar:30}] {bytes_per_sec}, {eta} left",
        ),
    };
    bar.set_draw_target(ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(p.step.clone());
    bar
}
