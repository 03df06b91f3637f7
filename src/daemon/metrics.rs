//! `GET /metrics`: the Prometheus text exposition of the volumes and the daemon, on the API
//! socket and, with `fvol daemon --metrics-listen ADDR`, on TCP. Nothing listens on TCP
//! unless asked. Names follow kubelet's `kubelet_volume_stats_*` under an `fvol_` prefix,
//! so dashboards made for those map one to one.
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::model::HistogramSnapshot;
use crate::model::histogram::BUCKET_BOUNDS_US;
use crate::volume::VolumeManager;
use crate::volume::observe::{Observation, VolumeObservation};

/// The route on both listeners.
pub const ROUTE: &str = "/metrics";

/// The version and commit the binary was built from.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
pub const COMMIT: &str = match option_env!("FVOL_GIT_COMMIT") {
    Some(commit) => commit,
    None => "unknown",
};

/// `GET /metrics` over the manager.
pub fn router(manager: Arc<VolumeManager>) -> Router {
    Router::new().route(ROUTE, get(scrape)).with_state(manager)
}

async fn scrape(State(manager): State<Arc<VolumeManager>>) -> Response {
    let observed = tokio::task::spawn_blocking(move || manager.observe()).await;
    match observed {
        Ok(Ok(observation)) => (
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            render(&observation),
        )
            .into_response(),
        Ok(Err(e)) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response(),
    }
}

/// Parses a `--metrics-listen` address: an IP address and a port.
pub fn parse_listen_address(text: &str) -> Result<SocketAddr, String> {
    text.parse().map_err(|_| {
        format!(
            "{text:?} is not an address to listen on: give an IP address and a port, as \
             127.0.0.1:9470, 0.0.0.0:9470 or [::1]:9470 (host names are not resolved)"
        )
    })
}

/// Binds every address (so a taken port stops the daemon before it serves anything).
pub async fn bind(addresses: &[SocketAddr]) -> Result<Vec<tokio::net::TcpListener>, String> {
    let mut listeners = Vec::new();
    for address in addresses {
        let listener = tokio::net::TcpListener::bind(address)
            .await
            .map_err(|e| format!("listening for metrics on {address}: {e}"))?;
        listeners.push(listener);
    }
    Ok(listeners)
}

/// Serves only `GET /metrics` on `listener` until `shutdown`.
pub async fn serve_tcp(
    listener: tokio::net::TcpListener,
    manager: Arc<VolumeManager>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = router(manager).fallback(|| async {
        (
            StatusCode::NOT_FOUND,
            format!("only GET {ROUTE} is served here\n"),
        )
    });
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

/// One metric family: its HELP and TYPE lines, then its samples.
struct Family<'a> {
    out: &'a mut String,
}

impl<'a> Family<'a> {
    fn new(out: &'a mut String, name: &str, kind: &str, help: &str) -> Family<'a> {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        Family { out }
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl std::fmt::Display) {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (key, val)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{key}=\"{}\"", escape(val));
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {value}");
    }

    fn histogram(&mut self, name: &str, labels: &[(&str, &str)], h: &HistogramSnapshot) {
        let bucket = format!("{name}_bucket");
        for (i, count) in h.cumulative.iter().enumerate() {
            let le = match BUCKET_BOUNDS_US.get(i) {
                Some(us) => seconds(*us as f64 / 1e6),
                None => "+Inf".to_owned(),
            };
            let mut with_le = labels.to_vec();
            with_le.push(("le", &le));
            self.sample(&bucket, &with_le, count);
        }
        self.sample(
            &format!("{name}_sum"),
            labels,
            seconds(h.sum_ns as f64 / 1e9),
        );
        self.sample(&format!("{name}_count"), labels, h.count());
    }
}

fn seconds(value: f64) -> String {
    format!("{value}")
}

fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The errno's name (ENOSPC), or its number.
fn errno_name(errno: i32) -> String {
    if errno as usize >= crate::volume::observe::MAX_ERRNO {
        return "other".into();
    }
    match nix::errno::Errno::from_raw(errno) {
        nix::errno::Errno::UnknownErrno => errno.to_string(),
        known => format!("{known:?}"),
    }
}

/// Per-volume gauges: (name, help, value of a volume if known).
type VolumeGauge = (
    &'static str,
    &'static str,
    fn(&VolumeObservation) -> Option<u64>,
);

const VOLUME_GAUGES: [VolumeGauge; 6] = [
    (
        "fvol_volume_stats_capacity_bytes",
        "Capacity of the volume in bytes: its byte limit, or the host filesystem's size \
         without one (as df shows it)",
        |v| v.bytes().map(|(capacity, _)| capacity),
    ),
    (
        "fvol_volume_stats_available_bytes",
        "Bytes available to the volume's users (as df shows it)",
        |v| v.bytes().map(|(_, available)| available),
    ),
    (
        "fvol_volume_stats_used_bytes",
        "Bytes the volume uses, as its quota counts them",
        |v| Some(v.used_bytes),
    ),
    (
        "fvol_volume_stats_inodes",
        "Inodes the volume may have: its inode limit, or what statfs reports without one",
        |v| v.inodes().map(|(inodes, _)| inodes),
    ),
    (
        "fvol_volume_stats_inodes_free",
        "Inodes the volume may still make",
        |v| v.inodes().map(|(_, free)| free),
    ),
    (
        "fvol_volume_stats_inodes_used",
        "Inodes the volume uses, as its quota counts them",
        |v| Some(v.used_inodes),
    ),
];

/// The exposition of `observed`.
pub fn render(observed: &Observation) -> String {
    let mut out = String::new();
    for (name, help, value) in VOLUME_GAUGES {
        let mut family = Family::new(&mut out, name, "gauge", help);
        for v in &observed.volumes {
            if let Some(value) = value(v) {
                family.sample(name, &[("volume", &v.name), ("driver", &v.driver)], value);
            }
        }
    }
    let mounted: Vec<&VolumeObservation> = observed
        .volumes
        .iter()
        .filter(|v| v.requests.is_some())
        .collect();
    {
        let name = "fvol_volume_mounted";
        let mut family = Family::new(
            &mut out,
            name,
            "gauge",
            "1 while the volume's FUSE filesystem is mounted, else 0",
        );
        for v in &observed.volumes {
            let up = u8::from(v.requests.is_some());
            family.sample(name, &[("volume", &v.name), ("driver", &v.driver)], up);
        }
    }
    {
        let name = "fvol_volume_operations_total";
        let mut family = Family::new(
            &mut out,
            name,
            "counter",
            "FUSE requests answered, by operation (each kind from its first request on)",
        );
        for v in &mounted {
            let stats = v.requests.as_ref().expect("mounted");
            for (op, h) in stats.latency.iter().filter(|(_, h)| h.count() > 0) {
                let labels = [
                    ("volume", &*v.name),
                    ("driver", &*v.driver),
                    ("op", op.name()),
                ];
                family.sample(name, &labels, h.count());
            }
        }
    }
    {
        let name = "fvol_volume_operation_duration_seconds";
        let mut family = Family::new(
            &mut out,
            name,
            "histogram",
            "How long the handler took to answer FUSE requests, by operation",
        );
        for v in &mounted {
            let stats = v.requests.as_ref().expect("mounted");
            for (op, h) in stats.latency.iter().filter(|(_, h)| h.count() > 0) {
                let labels = [
                    ("volume", &*v.name),
                    ("driver", &*v.driver),
                    ("op", op.name()),
                ];
                family.histogram(name, &labels, h);
            }
        }
    }
    type Counter = (
        &'static str,
        &'static str,
        fn(&crate::volume::observe::StatsSnapshot) -> u64,
    );
    let byte_counters: [Counter; 2] = [
        (
            "fvol_volume_read_bytes_total",
            "Bytes the handler read for callers (kernel passthrough reads never reach it)",
            |s| s.bytes_read,
        ),
        (
            "fvol_volume_written_bytes_total",
            "Bytes the handler wrote for callers (kernel passthrough writes never reach it)",
            |s| s.bytes_written,
        ),
    ];
    for (name, help, value) in byte_counters {
        let mut family = Family::new(&mut out, name, "counter", help);
        for v in &mounted {
            let stats = v.requests.as_ref().expect("mounted");
            family.sample(
                name,
                &[("volume", &v.name), ("driver", &v.driver)],
                value(stats),
            );
        }
    }
    {
        let name = "fvol_volume_quota_refusals_total";
        let mut family = Family::new(
            &mut out,
            name,
            "counter",
            "Requests answered ENOSPC or EDQUOT: the volume was full",
        );
        for v in &mounted {
            let stats = v.requests.as_ref().expect("mounted");
            for (errno, label) in [(libc::ENOSPC, "ENOSPC"), (libc::EDQUOT, "EDQUOT")] {
                let labels = [
                    ("volume", &*v.name),
                    ("driver", &*v.driver),
                    ("errno", label),
                ];
                family.sample(name, &labels, stats.errors_with(errno));
            }
        }
    }
    {
        let name = "fvol_volume_errors_total";
        let mut family = Family::new(
            &mut out,
            name,
            "counter",
            "FUSE requests answered with an error, by errno (ENOENT includes negative lookups)",
        );
        for v in &mounted {
            let stats = v.requests.as_ref().expect("mounted");
            for (errno, n) in &stats.errors {
                let errno = errno_name(*errno);
                let labels = [
                    ("volume", &*v.name),
                    ("driver", &*v.driver),
                    ("errno", &errno),
                ];
                family.sample(name, &labels, n);
            }
        }
    }
    {
        let name = "fvol_fuse_requests_in_flight";
        let mut family = Family::new(
            &mut out,
            name,
            "gauge",
            "FUSE requests the volume's handler is serving now",
        );
        for v in &mounted {
            let stats = v.requests.as_ref().expect("mounted");
            let labels = [("volume", &*v.name), ("driver", &*v.driver)];
            family.sample(name, &labels, stats.in_flight.max(0));
        }
    }
    {
        let name = "fvol_fuse_requests_waiting";
        let mut family = Family::new(
            &mut out,
            name,
            "gauge",
            "Requests the kernel has queued on the volume's FUSE connection and not had \
             answered (fusectl waiting); staying above 0 on an idle volume means a stuck \
             handler",
        );
        for v in &mounted {
            if let Some(waiting) = v.waiting {
                let labels = [("volume", &*v.name), ("driver", &*v.driver)];
                family.sample(name, &labels, waiting);
            }
        }
    }
    Family::new(
        &mut out,
        "fvol_mounted_volumes",
        "gauge",
        "Volumes whose FUSE filesystem is mounted",
    )
    .sample("fvol_mounted_volumes", &[], mounted.len());
    Family::new(&mut out, "fvol_volumes", "gauge", "Volumes in the catalog").sample(
        "fvol_volumes",
        &[],
        observed.volumes.len(),
    );
    Family::new(
        &mut out,
        "fvol_handler_restarts_total",
        "counter",
        "Volumes whose FUSE handler was started again at this daemon's start, for the \
         references they had: kept connections taken over, or mounts made anew",
    )
    .sample(
        "fvol_handler_restarts_total",
        &[],
        observed.handler_restarts,
    );
    Family::new(
        &mut out,
        "fvol_catalog_commit_duration_seconds",
        "histogram",
        "How long catalog commits took (each made durable with fsync)",
    )
    .histogram(
        "fvol_catalog_commit_duration_seconds",
        &[],
        &observed.commit_latency,
    );
    Family::new(
        &mut out,
        "fvol_build_info",
        "gauge",
        "The fvol version and git commit this daemon runs (always 1)",
    )
    .sample(
        "fvol_build_info",
        &[("version", VERSION), ("commit", COMMIT)],
        1,
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::volume::observe::Capacity;
    use crate::volume::observe::{Op, VolumeStats};

    fn observation() -> Observation {
        let stats = VolumeStats::default();
        stats.done(Op::Write, stats.start(), 0);
        stats.done(Op::Write, stats.start(), libc::ENOSPC);
        stats.written(4096);
        Observation {
            volumes: vec![
                VolumeObservation {
                    name: "data".into(),
                    driver: "local".into(),
                    size_limit: Some(1 << 20),
                    used_bytes: 4096,
                    used_inodes: 2,
                    statfs: Some(Capacity {
                        bytes: 1 << 20,
                        available_bytes: (1 << 20) - 4096,
                        inodes: 100,
                        free_inodes: 98,
                    }),
                    requests: Some(stats.snapshot()),
                    waiting: Some(0),
                    ..VolumeObservation::default()
                },
                VolumeObservation {
                    name: "idle".into(),
                    driver: "tmpfs".into(),
                    ..VolumeObservation::default()
                },
            ],
            handler_restarts: 1,
            commit_latency: crate::model::Histogram::new().snapshot(),
        }
    }

    #[test]
    fn renders_each_family_once_with_its_samples() {
        let text = render(&observation());
        for line in [
            "fvol_volume_stats_capacity_bytes{volume=\"data\",driver=\"local\"} 1048576",
            "fvol_volume_stats_available_bytes{volume=\"data\",driver=\"local\"} 1044480",
            "fvol_volume_stats_used_bytes{volume=\"idle\",driver=\"tmpfs\"} 0",
            "fvol_volume_stats_inodes_free{volume=\"data\",driver=\"local\"} 98",
            "fvol_volume_operations_total{volume=\"data\",driver=\"local\",op=\"write\"} 2",
            "fvol_volume_operation_duration_seconds_count{volume=\"data\",driver=\"local\",op=\"write\"} 2",
            "fvol_volume_quota_refusals_total{volume=\"data\",driver=\"local\",errno=\"ENOSPC\"} 1",
            "fvol_volume_errors_total{volume=\"data\",driver=\"local\",errno=\"ENOSPC\"} 1",
            "fvol_volume_written_bytes_total{volume=\"data\",driver=\"local\"} 4096",
            "fvol_volume_mounted{volume=\"idle\",driver=\"tmpfs\"} 0",
            "fvol_mounted_volumes 1",
            "fvol_handler_restarts_total 1",
            "fvol_catalog_commit_duration_seconds_bucket{le=\"+Inf\"} 0",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{line} missing from:\n{text}"
            );
        }
        // An unmounted volume without limits has no capacity.
        assert!(!text.contains("fvol_volume_stats_capacity_bytes{volume=\"idle\""));
        let types = text.lines().filter(|l| l.starts_with("# TYPE")).count();
        let helps = text.lines().filter(|l| l.starts_with("# HELP")).count();
        assert_eq!(types, helps);
    }

    #[test]
    fn bad_listen_addresses_are_named_with_the_valid_form() {
        assert!(parse_listen_address("127.0.0.1:9470").is_ok());
        assert!(parse_listen_address("[::1]:9470").is_ok());
        for bad in ["localhost:9470", "9470", "127.0.0.1", ""] {
            let e = parse_listen_address(bad).unwrap_err();
            assert!(e.contains("127.0.0.1:9470"), "{e}");
        }
    }

    #[test]
    fn errno_names() {
        assert_eq!(errno_name(libc::ENOSPC), "ENOSPC");
        assert_eq!(errno_name(libc::EDQUOT), "EDQUOT");
        assert_eq!(
            errno_name(crate::volume::observe::MAX_ERRNO as i32),
            "other"
        );
    }
}
