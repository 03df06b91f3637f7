//! What happened to volumes, for `fvol events`: each change the core makes is one `Event`,
//! kept in a bounded history (so `--since` works after the fact) and sent to every live
//! subscriber. Emitting takes a short lock and never blocks on a slow reader: a subscriber
//! that falls more than `LIVE_BACKLOG` events behind loses the oldest (and is told so).
use std::collections::{BTreeMap, VecDeque};
use std::time::{SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

/// Events kept for `--since`.
pub const HISTORY: usize = 4096;
/// Events a live subscriber may fall behind before it loses some.
const LIVE_BACKLOG: usize = 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EventType {
    Create,
    Remove,
    /// A reference was taken (attribute `reference`).
    Mount,
    /// A reference was released (attribute `reference`; `reason` when the daemon released
    /// it by itself).
    Unmount,
    /// The volume's limits changed (emitted by the resize operation).
    Resize,
    /// A snapshot was taken (emitted by the snapshot operation).
    Snapshot,
    /// The volume refused a request for space (ENOSPC or EDQUOT): once per episode, which ends
    /// when its usage goes down again.
    QuotaFull,
    /// A dead holder's lock on the backing store was broken (attribute `holders`).
    LockBroken,
    /// The volume's FUSE handler was started again for the references it had (daemon start).
    HandlerRestart,
}

impl EventType {
    pub const ALL: [EventType; 9] = [
        EventType::Create,
        EventType::Remove,
        EventType::Mount,
        EventType::Unmount,
        EventType::Resize,
        EventType::Snapshot,
        EventType::QuotaFull,
        EventType::LockBroken,
        EventType::HandlerRestart,
    ];

    pub fn name(self) -> &'static str {
        match self {
            EventType::Create => "create",
            EventType::Remove => "remove",
            EventType::Mount => "mount",
            EventType::Unmount => "unmount",
            EventType::Resize => "resize",
            EventType::Snapshot => "snapshot",
            EventType::QuotaFull => "quota-full",
            EventType::LockBroken => "lock-broken",
            EventType::HandlerRestart => "handler-restart",
        }
    }

    pub fn parse(text: &str) -> Result<EventType, String> {
        EventType::ALL
            .into_iter()
            .find(|t| t.name() == text)
            .ok_or_else(|| {
                let valid: Vec<&str> = EventType::ALL.iter().map(|t| t.name()).collect();
                format!(
                    "unknown event type {text:?}; valid types are: {}",
                    valid.join(", ")
                )
            })
    }
}

/// One event, as `fvol events --format json` prints it (one object a line).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Event {
    /// RFC 3339, UTC, nanoseconds.
    pub time: String,
    /// Nanoseconds since the Unix epoch.
    pub time_nano: u64,
    #[serde(rename = "Type")]
    pub kind: EventType,
    pub volume: String,
    pub driver: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub attributes: BTreeMap<String, String>,
}

/// Which events a reader wants: each given key must match, values of one key are alternatives.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EventFilter {
    pub volumes: Vec<String>,
    pub types: Vec<EventType>,
    /// Nanoseconds since the epoch, inclusive.
    pub since: Option<u64>,
    pub until: Option<u64>,
}

impl EventFilter {
    pub fn matches(&self, e: &Event) -> bool {
        (self.volumes.is_empty() || self.volumes.contains(&e.volume))
            && (self.types.is_empty() || self.types.contains(&e.kind))
            && self.since.is_none_or(|s| e.time_nano >= s)
            && self.until.is_none_or(|u| e.time_nano <= u)
    }
}

pub struct EventLog {
    history: Mutex<VecDeque<Event>>,
    live: broadcast::Sender<Event>,
}

impl Default for EventLog {
    fn default() -> Self {
        EventLog {
            history: Mutex::new(VecDeque::with_capacity(HISTORY)),
            live: broadcast::channel(LIVE_BACKLOG).0,
        }
    }
}

pub fn now_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

impl EventLog {
    pub fn emit(&self, kind: EventType, volume: &str, driver: &str, attributes: &[(&str, String)]) {
        let nanos = now_nanos();
        let time = UNIX_EPOCH + std::time::Duration::from_nanos(nanos);
        let event = Event {
            time: humantime::format_rfc3339_nanos(time).to_string(),
            time_nano: nanos,
            kind,
            volume: volume.to_owned(),
            driver: driver.to_owned(),
            attributes: attributes
                .iter()
                .map(|(k, v)| ((*k).to_owned(), v.clone()))
                .collect(),
        };
        // Under the lock, so a subscriber sees each event once: in its history copy or live.
        let mut history = self.history.lock();
        if history.len() == HISTORY {
            history.pop_front();
        }
        history.push_back(event.clone());
        // No receiver is not an error.
        let _ = self.live.send(event);
    }

    /// The events kept so far and the ones to come, without a gap or a repeat between them.
    pub fn subscribe(&self) -> (Vec<Event>, broadcast::Receiver<Event>) {
        let history = self.history.lock();
        (history.iter().cloned().collect(), self.live.subscribe())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn history_is_bounded_and_subscribers_see_each_event_once() {
        let log = EventLog::default();
        for i in 0..HISTORY + 10 {
            log.emit(EventType::Create, &format!("v{i}"), "local", &[]);
        }
        let (history, mut live) = log.subscribe();
        assert_eq!(history.len(), HISTORY);
        assert_eq!(history[0].volume, "v10");
        log.emit(
            EventType::Mount,
            "v1",
            "local",
            &[("reference", "cli".into())],
        );
        let next = live.try_recv().unwrap();
        assert_eq!(next.kind, EventType::Mount);
        assert_eq!(next.attributes["reference"], "cli");
        assert!(live.try_recv().is_err());
    }

    #[test]
    fn filters_and_types() {
        let log = EventLog::default();
        log.emit(EventType::QuotaFull, "a", "tmpfs", &[]);
        let (history, _) = log.subscribe();
        let e = &history[0];
        let json = serde_json::to_string(e).unwrap();
        assert!(json.contains("\"Type\":\"quota-full\""), "{json}");
        let all = EventFilter::default();
        assert!(all.matches(e));
        let other = EventFilter {
            volumes: vec!["b".into()],
            ..EventFilter::default()
        };
        assert!(!other.matches(e));
        let typed = EventFilter {
            types: vec![EventType::Create, EventType::QuotaFull],
            until: Some(e.time_nano),
            ..EventFilter::default()
        };
        assert!(typed.matches(e));
        assert!(EventType::parse("quota-full").is_ok());
        let err = EventType::parse("full").unwrap_err();
        assert!(
            err.contains("valid types are: create, remove, mount"),
            "{err}"
        );
        for t in EventType::ALL {
            assert_eq!(EventType::parse(t.name()), Ok(t));
            let json = serde_json::to_string(&t).unwrap();
            assert_eq!(json, format!("\"{}\"", t.name()));
        }
    }
}
