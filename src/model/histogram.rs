//! A latency histogram that many threads record into without a lock: one atomic add per
//! bucket and one for the sum. Readers see each counter exactly; a reader racing a writer may
//! see the bucket before the sum (or the other way round), which Prometheus tolerates.
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the buckets, in microseconds: 10 µs to 10 s, roughly 1-2.5-5 steps. The
/// last bucket (+Inf) has no bound.
pub const BUCKET_BOUNDS_US: [u64; 19] = [
    10, 25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000,
    500_000, 1_000_000, 2_500_000, 5_000_000, 10_000_000,
];

/// Buckets, the +Inf one included.
pub const BUCKETS: usize = BUCKET_BOUNDS_US.len() + 1;

#[derive(Debug)]
pub struct Histogram {
    /// Observations per bucket (not cumulative; `snapshot` adds them up).
    counts: [AtomicU64; BUCKETS],
    sum_ns: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        Self::new()
    }
}

/// A histogram read at one moment.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HistogramSnapshot {
    /// Cumulative counts: `cumulative[i]` observations took at most `BUCKET_BOUNDS_US[i]`;
    /// the last one is the total.
    pub cumulative: Vec<u64>,
    pub sum_ns: u64,
}

impl HistogramSnapshot {
    pub fn count(&self) -> u64 {
        self.cumulative.last().copied().unwrap_or(0)
    }

    /// The bound of the bucket holding quantile `q` (0..=1), in microseconds; None when
    /// empty, and the largest bound when it falls in +Inf.
    pub fn quantile_us(&self, q: f64) -> Option<u64> {
        let total = self.count();
        if total == 0 {
            return None;
        }
        let rank = ((total as f64) * q).ceil().max(1.0) as u64;
        let bucket = self.cumulative.iter().position(|&c| c >= rank)?;
        Some(BUCKET_BOUNDS_US[bucket.min(BUCKET_BOUNDS_US.len() - 1)])
    }

    /// The observations since `earlier` (counters only grow).
    pub fn since(&self, earlier: &HistogramSnapshot) -> HistogramSnapshot {
        let cumulative = self
            .cumulative
            .iter()
            .enumerate()
            .map(|(i, c)| c.saturating_sub(earlier.cumulative.get(i).copied().unwrap_or(0)))
            .collect();
        HistogramSnapshot {
            cumulative,
            sum_ns: self.sum_ns.saturating_sub(earlier.sum_ns),
        }
    }
}

impl Histogram {
    pub const fn new() -> Histogram {
        Histogram {
            counts: [const { AtomicU64::new(0) }; BUCKETS],
            sum_ns: AtomicU64::new(0),
        }
    }

    /// Records one observation: two relaxed atomic adds.
    pub fn observe(&self, took: Duration) {
        let ns = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        self.counts[bucket_of(ns / 1_000)].fetch_add(1, Ordering::Relaxed);
        self.sum_ns.fetch_add(ns, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> HistogramSnapshot {
        let mut total = 0;
        let cumulative = self
            .counts
            .iter()
            .map(|c| {
                total += c.load(Ordering::Relaxed);
                total
            })
            .collect();
        HistogramSnapshot {
            cumulative,
            sum_ns: self.sum_ns.load(Ordering::Relaxed),
        }
    }
}

/// The bucket of an observation of `us` microseconds: the first whose bound is at least it.
fn bucket_of(us: u64) -> usize {
    BUCKET_BOUNDS_US.partition_point(|&bound| bound < us)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observations_land_in_the_first_bucket_that_holds_them() {
        assert_eq!(bucket_of(0), 0);
        assert_eq!(bucket_of(10), 0);
        assert_eq!(bucket_of(11), 1);
        assert_eq!(bucket_of(10_000_000), BUCKETS - 2);
        assert_eq!(bucket_of(10_000_001), BUCKETS - 1);
        let h = Histogram::new();
        h.observe(Duration::from_micros(5));
        h.observe(Duration::from_micros(30));
        h.observe(Duration::from_secs(60));
        let s = h.snapshot();
        assert_eq!(s.cumulative[0], 1);
        assert_eq!(s.cumulative[1], 1);
        assert_eq!(s.cumulative[2], 2);
        assert_eq!(s.count(), 3);
        assert_eq!(s.cumulative[BUCKETS - 2], 2);
        assert_eq!(s.sum_ns, 5_000 + 30_000 + 60_000_000_000);
    }

    #[test]
    fn quantiles_name_the_bucket_bound() {
        let h = Histogram::new();
        assert_eq!(h.snapshot().quantile_us(0.99), None);
        for _ in 0..99 {
            h.observe(Duration::from_micros(20));
        }
        h.observe(Duration::from_millis(3));
        let s = h.snapshot();
        assert_eq!(s.quantile_us(0.5), Some(25));
        assert_eq!(s.quantile_us(0.99), Some(25));
        assert_eq!(s.quantile_us(1.0), Some(5_000));
        let later = {
            h.observe(Duration::from_micros(300));
            h.snapshot()
        };
        let delta = later.since(&s);
        assert_eq!(delta.count(), 1);
        assert_eq!(delta.quantile_us(0.99), Some(500));
    }
}
