//! `fvol top`: a terminal view of the volumes, refreshed every second from the daemon's
//! `/metrics`: per volume a usage bar against its limit, operations per second, read and
//! write throughput and the p99 latency of the last interval. Keys choose the sort.
use std::collections::BTreeMap;
use std::io;
use std::time::{Duration, Instant};

use ratatui::crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers};
use ratatui::layout::{Constraint, Layout};
use ratatui::style::{Modifier, Style};
use ratatui::text::Line;
use ratatui::widgets::{Cell, Paragraph, Row, Table};

use super::CliError;
use super::args::{TopArgs, TopSort};
use super::client::DaemonClient;
use super::output::human_size;

/// One volume as one scrape shows it.
#[derive(Clone, Debug, Default, PartialEq)]
struct VolumeSample {
    driver: String,
    used: f64,
    capacity: Option<f64>,
    operations: f64,
    read: f64,
    written: f64,
    /// Cumulative latency buckets summed over operations: (upper bound in seconds, count).
    buckets: BTreeMap<u64, f64>,
    mounted: bool,
}

/// What the view shows of a volume over one interval.
#[derive(Clone, Debug, PartialEq)]
struct TopRow {
    name: String,
    driver: String,
    used: f64,
    capacity: Option<f64>,
    ops_per_s: f64,
    read_per_s: f64,
    write_per_s: f64,
    /// Seconds; None without requests in the interval.
    p99: Option<f64>,
    mounted: bool,
}

/// The per-volume samples of a Prometheus exposition of fvol's metrics.
fn parse(text: &str) -> BTreeMap<String, VolumeSample> {
    let mut volumes: BTreeMap<String, VolumeSample> = BTreeMap::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Ok(value) = value.parse::<f64>() else {
            continue;
        };
        let (name, labels) = match series.split_once('{') {
            Some((name, rest)) => (name, rest.trim_end_matches('}')),
            None => (series, ""),
        };
        let labels: BTreeMap<&str, &str> = labels
            .split("\",")
            .filter_map(|l| l.split_once("=\""))
            .map(|(k, v)| (k, v.trim_end_matches('"')))
            .collect();
        let Some(volume) = labels.get("volume") else {
            continue;
        };
        let v = volumes.entry((*volume).to_owned()).or_default();
        if let Some(driver) = labels.get("driver") {
            v.driver = (*driver).to_owned();
        }
        match name {
            "fvol_volume_stats_used_bytes" => v.used = value,
            "fvol_volume_stats_capacity_bytes" => v.capacity = Some(value),
            "fvol_volume_operations_total" => v.operations += value,
            "fvol_volume_read_bytes_total" => v.read = value,
            "fvol_volume_written_bytes_total" => v.written = value,
            "fvol_volume_mounted" => v.mounted = value > 0.0,
            "fvol_volume_operation_duration_seconds_bucket" => {
                let le = match labels.get("le") {
                    Some(&"+Inf") => u64::MAX,
                    Some(le) => le.parse::<f64>().map_or(u64::MAX, |s| (s * 1e9) as u64),
                    None => continue,
                };
                *v.buckets.entry(le).or_default() += value;
            }
            _ => {}
        }
    }
    volumes
}

/// The rows for the interval from `before` to `now` (`secs` long). Counters that went down
/// (a volume mounted again) count from 0.
fn rows(
    before: &BTreeMap<String, VolumeSample>,
    now: &BTreeMap<String, VolumeSample>,
    secs: f64,
) -> Vec<TopRow> {
    let secs = secs.max(1e-3);
    now.iter()
        .map(|(name, v)| {
            let zero = VolumeSample::default();
            let b = before.get(name).unwrap_or(&zero);
            let delta = |now: f64, then: f64| if now >= then { now - then } else { now };
            let buckets: Vec<(u64, f64)> = v
                .buckets
                .iter()
                .map(|(le, c)| (*le, delta(*c, b.buckets.get(le).copied().unwrap_or(0.0))))
                .collect();
            let total = buckets.last().map_or(0.0, |(_, c)| *c);
            let p99 = (total > 0.0)
                .then(|| {
                    buckets
                        .iter()
                        .find(|(_, c)| *c >= total * 0.99)
                        .map(|(le, _)| *le as f64 / 1e9)
                })
                .flatten();
            TopRow {
                name: name.clone(),
                driver: v.driver.clone(),
                used: v.used,
                capacity: v.capacity,
                ops_per_s: delta(v.operations, b.operations) / secs,
                read_per_s: delta(v.read, b.read) / secs,
                write_per_s: delta(v.written, b.written) / secs,
                p99,
                mounted: v.mounted,
            }
        })
        .collect()
}

fn usage_ratio(r: &TopRow) -> f64 {
    r.capacity
        .map_or(0.0, |c| if c > 0.0 { r.used / c } else { 0.0 })
}

fn sort_rows(rows: &mut [TopRow], key: TopSort) {
    let desc = |a: f64, b: f64| b.partial_cmp(&a).unwrap_or(std::cmp::Ordering::Equal);
    match key {
        TopSort::Name => rows.sort_by(|a, b| a.name.cmp(&b.name)),
        TopSort::Usage => rows.sort_by(|a, b| desc(usage_ratio(a), usage_ratio(b))),
        TopSort::Ops => rows.sort_by(|a, b| desc(a.ops_per_s, b.ops_per_s)),
        TopSort::Read => rows.sort_by(|a, b| desc(a.read_per_s, b.read_per_s)),
        TopSort::Write => rows.sort_by(|a, b| desc(a.write_per_s, b.write_per_s)),
        TopSort::Latency => rows.sort_by(|a, b| {
            desc(a.p99.unwrap_or(-1.0), b.p99.unwrap_or(-1.0)).then(a.name.cmp(&b.name))
        }),
    }
}

fn latency(secs: Option<f64>) -> String {
    match secs {
        None => "-".into(),
        Some(s) if s >= 1.0 => format!("{s:.1}s"),
        Some(s) if s >= 1e-3 => format!("{:.1}ms", s * 1e3),
        Some(s) => format!("{:.0}µs", s * 1e6),
    }
}

fn rate(bytes_per_s: f64) -> String {
    format!("{}/s", human_size(bytes_per_s as u64))
}

const KEYS: &str = "sort: n name  u usage  o ops  r read  w write  l latency   q quit";

fn draw(frame: &mut ratatui::Frame, rows: &[TopRow], sort: TopSort, error: Option<&str>) {
    let [title, table_area] =
        Layout::vertical([Constraint::Length(2), Constraint::Fill(1)]).areas(frame.area());
    let status = match error {
        Some(e) => format!("fvol top: {e}"),
        None => format!(
            "fvol top: {} volumes, sorted by {}",
            rows.len(),
            sort.name()
        ),
    };
    frame.render_widget(
        Paragraph::new(vec![Line::from(status), Line::from(KEYS)]),
        title,
    );
    let header = Row::new([
        "VOLUME", "DRIVER", "USAGE", "USED", "SIZE", "OPS/S", "READ", "WRITE", "P99",
    ])
    .style(Style::default().add_modifier(Modifier::BOLD));
    let widths = [
        Constraint::Min(12),
        Constraint::Length(6),
        Constraint::Length(22),
        Constraint::Length(9),
        Constraint::Length(9),
        Constraint::Length(9),
        Constraint::Length(11),
        Constraint::Length(11),
        Constraint::Length(8),
    ];
    let table_rows = rows.iter().map(|r| {
        let ratio = usage_ratio(r).clamp(0.0, 1.0);
        let filled = (ratio * 14.0).round() as usize;
        let bar = match r.capacity {
            Some(_) => format!(
                "[{}{}] {:>3.0}%",
                "#".repeat(filled),
                " ".repeat(14 - filled),
                ratio * 100.0
            ),
            None => "no limit".into(),
        };
        let row = Row::new([
            Cell::from(r.name.clone()),
            Cell::from(r.driver.clone()),
            Cell::from(bar),
            Cell::from(human_size(r.used as u64)),
            Cell::from(r.capacity.map_or("-".into(), |c| human_size(c as u64))),
            Cell::from(format!("{:.0}", r.ops_per_s)),
            Cell::from(rate(r.read_per_s)),
            Cell::from(rate(r.write_per_s)),
            Cell::from(latency(r.p99)),
        ]);
        if r.mounted {
            row
        } else {
            row.style(Style::default().add_modifier(Modifier::DIM))
        }
    });
    frame.render_widget(Table::new(table_rows, widths).header(header), table_area);
}

/// Runs the view until `q`, Esc or Ctrl-C.
pub fn run(client: &DaemonClient, args: TopArgs) -> Result<(), CliError> {
    let interval = Duration::from_secs_f64(args.interval.max(0.2));
    // Fails here, before the screen is taken, if the daemon cannot be reached.
    let mut before = parse(&client.get_text(crate::daemon::metrics::ROUTE)?);
    let mut taken = Instant::now();
    let mut terminal = ratatui::init();
    let result = (|| -> io::Result<()> {
        let mut sort = args.sort;
        let mut shown = rows(&before, &before, 1.0);
        let mut error: Option<String> = None;
        let mut next = Instant::now();
        loop {
            if Instant::now() >= next {
                match client.get_text(crate::daemon::metrics::ROUTE) {
                    Ok(text) => {
                        let now = parse(&text);
                        shown = rows(&before, &now, taken.elapsed().as_secs_f64());
                        before = now;
                        taken = Instant::now();
                        error = None;
                    }
                    Err(e) => error = Some(e.to_string()),
                }
                next = Instant::now() + interval;
            }
            sort_rows(&mut shown, sort);
            terminal.draw(|f| draw(f, &shown, sort, error.as_deref()))?;
            let wait = next.saturating_duration_since(Instant::now());
            if event::poll(wait)?
                && let Event::Key(key) = event::read()?
                && key.kind == KeyEventKind::Press
            {
                match key.code {
                    KeyCode::Char('q') | KeyCode::Esc => return Ok(()),
                    KeyCode::Char('c') if key.modifiers.contains(KeyModifiers::CONTROL) => {
                        return Ok(());
                    }
                    KeyCode::Char(c) => {
                        if let Some(key) = TopSort::for_key(c) {
                            sort = key;
                        }
                    }
                    _ => {}
                }
            }
        }
    })();
    ratatui::restore();
    result.map_err(|e| CliError::Message(format!("fvol top: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    const BEFORE: &str = "\
fvol_volume_stats_used_bytes{volume=\"a\",driver=\"local\"} 100
fvol_volume_stats_capacity_bytes{volume=\"a\",driver=\"local\"} 1000
fvol_volume_mounted{volume=\"a\",driver=\"local\"} 1
fvol_volume_operations_total{volume=\"a\",driver=\"local\",op=\"write\"} 10
fvol_volume_written_bytes_total{volume=\"a\",driver=\"local\"} 4096
fvol_volume_operation_duration_seconds_bucket{volume=\"a\",driver=\"local\",op=\"write\",le=\"0.0001\"} 10
fvol_volume_operation_duration_seconds_bucket{volume=\"a\",driver=\"local\",op=\"write\",le=\"+Inf\"} 10
fvol_volume_stats_used_bytes{volume=\"b\",driver=\"tmpfs\"} 900
fvol_volume_stats_capacity_bytes{volume=\"b\",driver=\"tmpfs\"} 1000
";

    const AFTER: &str = "\
fvol_volume_stats_used_bytes{volume=\"a\",driver=\"local\"} 200
fvol_volume_stats_capacity_bytes{volume=\"a\",driver=\"local\"} 1000
fvol_volume_mounted{volume=\"a\",driver=\"local\"} 1
fvol_volume_operations_total{volume=\"a\",driver=\"local\",op=\"write\"} 110
fvol_volume_written_bytes_total{volume=\"a\",driver=\"local\"} 8192
fvol_volume_operation_duration_seconds_bucket{volume=\"a\",driver=\"local\",op=\"write\",le=\"0.0001\"} 100
fvol_volume_operation_duration_seconds_bucket{volume=\"a\",driver=\"local\",op=\"write\",le=\"0.001\"} 109
fvol_volume_operation_duration_seconds_bucket{volume=\"a\",driver=\"local\",op=\"write\",le=\"+Inf\"} 110
fvol_volume_stats_used_bytes{volume=\"b\",driver=\"tmpfs\"} 900
fvol_volume_stats_capacity_bytes{volume=\"b\",driver=\"tmpfs\"} 1000
";

    #[test]
    fn rates_and_p99_over_the_interval() {
        let rows = rows(&parse(BEFORE), &parse(AFTER), 2.0);
        let a = rows.iter().find(|r| r.name == "a").unwrap();
        assert_eq!(a.ops_per_s, 50.0);
        assert_eq!(a.write_per_s, 2048.0);
        assert_eq!(a.used, 200.0);
        // 100 requests in the interval: 90 under 100 µs, 9 under 1 ms, 1 slower.
        assert_eq!(a.p99, Some(0.001));
        let b = rows.iter().find(|r| r.name == "b").unwrap();
        assert_eq!((b.ops_per_s, b.p99), (0.0, None));
    }

    #[test]
    fn sorting() {
        let mut rows = rows(&parse(BEFORE), &parse(AFTER), 1.0);
        sort_rows(&mut rows, TopSort::Usage);
        assert_eq!(rows[0].name, "b");
        sort_rows(&mut rows, TopSort::Ops);
        assert_eq!(rows[0].name, "a");
        sort_rows(&mut rows, TopSort::Name);
        assert_eq!(rows[0].name, "a");
    }
}
