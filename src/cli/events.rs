//! `fvol events`: the request (times and filters checked before the daemon is asked), and
//! each event printed as it arrives.
use std::io::Write;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::CliError;
use super::args::{EventFormat, EventsArgs};
use super::client::DaemonClient;
use super::commands::write_out;
use crate::api::{EventsRequest, routes};
use crate::volume::events::{Event, EventType};

pub fn run(client: &DaemonClient, args: EventsArgs, out: &mut dyn Write) -> Result<(), CliError> {
    let request = request(&args, SystemTime::now()).map_err(CliError::Message)?;
    client.stream_lines(routes::EVENTS, &request, &mut |line| {
        let text = match args.format {
            EventFormat::Json => format!("{line}\n"),
            EventFormat::Text => {
                let event: Event = serde_json::from_str(line).map_err(|e| {
                    CliError::Message(format!("unexpected event from the fvol daemon: {e}"))
                })?;
                text_line(&event)
            }
        };
        write_out(out, &text)?;
        // Each event shows as it happens, also through a pipe.
        let _ = out.flush();
        Ok(())
    })
}

/// `TIME TYPE VOLUME (driver=DRIVER, key=value...)`, as `docker events` prints them.
fn text_line(e: &Event) -> String {
    let mut attributes = vec![format!("driver={}", e.driver)];
    attributes.extend(e.attributes.iter().map(|(k, v)| format!("{k}={v}")));
    format!(
        "{} volume {} {} ({})\n",
        e.time,
        e.kind.name(),
        e.volume,
        attributes.join(", ")
    )
}

fn request(args: &EventsArgs, now: SystemTime) -> Result<EventsRequest, String> {
    let since = args
        .since
        .as_deref()
        .map(|t| parse_time("--since", t, now))
        .transpose()?;
    let until = args
        .until
        .as_deref()
        .map(|t| parse_time("--until", t, now))
        .transpose()?;
    if let (Some(s), Some(u)) = (since, until)
        && s > u
    {
        return Err("--since is after --until: nothing can match".into());
    }
    let mut request = EventsRequest {
        since,
        until,
        ..EventsRequest::default()
    };
    for filter in &args.filters {
        match filter.split_once('=') {
            Some(("volume", name)) if !name.is_empty() => request.volumes.push(name.into()),
            Some(("type", kind)) => {
                EventType::parse(kind).map_err(|e| format!("invalid filter {filter:?}: {e}"))?;
                request.types.push(kind.into());
            }
            _ => {
                return Err(format!(
                    "invalid filter {filter:?}: valid filters are volume=NAME and type=TYPE"
                ));
            }
        }
    }
    Ok(request)
}

/// Nanoseconds since the epoch of an RFC 3339 time, Unix seconds, or a duration before `now`.
fn parse_time(flag: &str, text: &str, now: SystemTime) -> Result<u64, String> {
    let at = if let Ok(t) = humantime::parse_rfc3339_weak(text) {
        t
    } else if let Ok(secs) = text.parse::<f64>()
        && secs.is_finite()
        && secs >= 0.0
    {
        UNIX_EPOCH + Duration::from_secs_f64(secs)
    } else if let Ok(ago) = humantime::parse_duration(text) {
        now.checked_sub(ago).unwrap_or(UNIX_EPOCH)
    } else {
        return Err(format!(
            "invalid {flag} {text:?}: give a time as RFC 3339 (2026-12-03T18:00:00Z), Unix \
             seconds (1764784800) or a duration before now (10m, 1h30m)"
        ));
    };
    let nanos = at.duration_since(UNIX_EPOCH).unwrap_or_default().as_nanos();
    Ok(u64::try_from(nanos).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(since: Option<&str>, until: Option<&str>, filters: &[&str]) -> EventsArgs {
        EventsArgs {
            since: since.map(Into::into),
            until: until.map(Into::into),
            filters: filters.iter().map(|f| f.to_string()).collect(),
            format: EventFormat::Text,
        }
    }

    #[test]
    fn times_in_three_forms() {
        let now = UNIX_EPOCH + Duration::from_secs(10_000);
        let nanos = |s: u64| s * 1_000_000_000;
        assert_eq!(
            parse_time("--since", "1970-01-01T00:00:10Z", now),
            Ok(nanos(10))
        );
        assert_eq!(parse_time("--since", "100", now), Ok(nanos(100)));
        assert_eq!(parse_time("--since", "10m", now), Ok(nanos(10_000 - 600)));
        let e = parse_time("--since", "yesterday", now).unwrap_err();
        assert!(e.contains("RFC 3339") && e.contains("10m"), "{e}");
    }

    #[test]
    fn filters_are_checked_and_name_the_valid_ones() {
        let now = SystemTime::now();
        let r = request(
            &args(None, None, &["volume=a", "type=mount", "type=quota-full"]),
            now,
        )
        .unwrap();
        assert_eq!(r.volumes, ["a"]);
        assert_eq!(r.types, ["mount", "quota-full"]);
        let e = request(&args(None, None, &["name=a"]), now).unwrap_err();
        assert!(
            e.contains("valid filters are volume=NAME and type=TYPE"),
            "{e}"
        );
        let e = request(&args(None, None, &["type=full"]), now).unwrap_err();
        assert!(e.contains("valid types are: create, remove"), "{e}");
        assert!(request(&args(Some("100"), Some("50"), &[]), now).is_err());
    }
}
