//! Rollups: per-target aggregates of results over a minute, an hour or a day, with a small
//! latency histogram so percentiles survive aggregation.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use super::record::{from_ms, from_us, to_us};

/// Histogram buckets per power of two: bucket bounds grow by 2^(1/8) ≈ 1.09, so a quantile read
/// from the bucket's geometric middle is within 2^(1/16) − 1 ≈ 4.4 % of a latency in it.
const BUCKETS_PER_OCTAVE: f64 = 8.0;

/// The largest relative error of [`LatencyHistogram::quantile`] against the exact nearest-rank
/// quantile of the recorded latencies (for latencies of at least 1 µs).
pub const QUANTILE_RELATIVE_ERROR: f64 = 0.045;

/// Bytes of one encoded bucket: index (1) and count (8, little-endian).
const ENCODED_BUCKET: usize = 9;

/// A latency histogram with fixed logarithmic buckets (8 per power of two of microseconds, from
/// 1 µs to about an hour; longer latencies share the last bucket).
///
/// Fixed buckets make histograms of any two rollups mergeable, so an hour's percentiles are as
/// good as a minute's. Stored sparsely: 9 bytes per non-empty bucket.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LatencyHistogram {
    buckets: BTreeMap<u8, u64>,
}

impl LatencyHistogram {
    /// An empty histogram.
    pub fn new() -> Self {
        LatencyHistogram::default()
    }

    /// Records one latency.
    pub fn record(&mut self, latency: Duration) {
        *self.buckets.entry(bucket_of(latency)).or_default() += 1;
    }

    /// Adds every count of `other`.
    pub fn merge(&mut self, other: &LatencyHistogram) {
        for (&b, &n) in &other.buckets {
            *self.buckets.entry(b).or_default() += n;
        }
    }

    /// Latencies recorded.
    pub fn count(&self) -> u64 {
        self.buckets.values().sum()
    }

    /// The nearest-rank `q` quantile (`q` in 0..=1), read as the middle of its bucket; `None` if
    /// empty. See [`QUANTILE_RELATIVE_ERROR`].
    pub fn quantile(&self, q: f64) -> Option<Duration> {
        let count = self.count();
        if count == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * count as f64).ceil() as u64).clamp(1, count);
        let mut seen = 0;
        for (&b, &n) in &self.buckets {
            seen += n;
            if seen >= rank {
                return Some(middle_of(b));
            }
        }
        None
    }

    /// The stored form.
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.buckets.len() * ENCODED_BUCKET);
        for (&b, &n) in &self.buckets {
            out.push(b);
            out.extend_from_slice(&n.to_le_bytes());
        }
        out
    }

    /// Reads the stored form; `None` if it is malformed.
    pub(crate) fn decode(bytes: &[u8]) -> Option<Self> {
        if !bytes.len().is_multiple_of(ENCODED_BUCKET) {
            return None;
        }
        let mut buckets = BTreeMap::new();
        for chunk in bytes.chunks_exact(ENCODED_BUCKET) {
            let count = u64::from_le_bytes(chunk[1..].try_into().ok()?);
            *buckets.entry(chunk[0]).or_default() += count;
        }
        Some(LatencyHistogram { buckets })
    }
}

/// Bucket 0 holds latencies under 1 µs; bucket `i ≥ 1` holds `[2^((i−1)/8), 2^(i/8))` µs.
fn bucket_of(latency: Duration) -> u8 {
    let us = latency.as_micros();
    if us == 0 {
        return 0;
    }
    let index = ((us as f64).log2() * BUCKETS_PER_OCTAVE).floor() + 1.0;
    index.min(f64::from(u8::MAX)) as u8
}

/// The geometric middle of bucket `b`.
fn middle_of(b: u8) -> Duration {
    if b == 0 {
        return Duration::ZERO;
    }
    let us = ((f64::from(b) - 0.5) / BUCKETS_PER_OCTAVE).exp2();
    Duration::from_micros(us.round() as u64)
}

/// The granularity of a rollup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum Level {
    /// One row per target and UTC minute.
    Minute,
    /// One row per target and UTC hour.
    Hour,
    /// One row per target and UTC day.
    Day,
}

impl Level {
    /// Every level, finest first.
    pub const ALL: [Level; 3] = [Level::Minute, Level::Hour, Level::Day];

    /// The length of one bucket.
    pub fn step(self) -> Duration {
        Duration::from_millis(self.step_ms().unsigned_abs())
    }

    pub(crate) fn step_ms(self) -> i64 {
        match self {
            Level::Minute => 60_000,
            Level::Hour => 3_600_000,
            Level::Day => 86_400_000,
        }
    }

    /// The number stored for the level.
    pub(crate) fn code(self) -> i64 {
        match self {
            Level::Minute => 1,
            Level::Hour => 2,
            Level::Day => 3,
        }
    }

    /// The start of the bucket holding `ms`.
    pub(crate) fn bucket_start(self, ms: i64) -> i64 {
        ms.div_euclid(self.step_ms()) * self.step_ms()
    }

    /// A lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Minute => "1m",
            Level::Hour => "1h",
            Level::Day => "1d",
        }
    }
}

/// The aggregate of one target's results over one bucket of a [`Level`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Rollup {
    /// The target's name.
    pub target: String,
    /// The granularity.
    pub level: Level,
    /// The start of the bucket (UTC-aligned).
    pub start: SystemTime,
    /// Results in the bucket.
    pub count: u64,
    /// Failed results among them.
    pub failures: u64,
    /// Sum of their latencies (µs precision).
    pub latency_sum: Duration,
    /// The smallest latency.
    pub latency_min: Duration,
    /// The largest latency.
    pub latency_max: Duration,
    /// Their latencies, for percentiles.
    pub histogram: LatencyHistogram,
}

impl Rollup {
    /// The mean latency.
    pub fn mean(&self) -> Option<Duration> {
        (self.count > 0).then(|| self.latency_sum / u32::try_from(self.count).unwrap_or(u32::MAX))
    }

    /// The `q` latency quantile from the histogram, clamped to the exact min and max.
    pub fn quantile(&self, q: f64) -> Option<Duration> {
        self.histogram
            .quantile(q)
            .map(|d| d.clamp(self.latency_min, self.latency_max))
    }

    /// The share of results that passed, `None` if there were none.
    pub fn success_ratio(&self) -> Option<f64> {
        (self.count > 0).then(|| (self.count - self.failures) as f64 / self.count as f64)
    }
}

/// A rollup being accumulated in the writer, in stored units.
#[derive(Debug, Clone, Default)]
pub(crate) struct Aggregate {
    pub(crate) count: i64,
    pub(crate) failures: i64,
    pub(crate) sum_us: i64,
    pub(crate) min_us: i64,
    pub(crate) max_us: i64,
    pub(crate) histogram: LatencyHistogram,
}

impl Aggregate {
    /// Adds one result.
    pub(crate) fn add(&mut self, latency: Duration, failed: bool) {
        let us = to_us(latency);
        self.min_us = if self.count == 0 {
            us
        } else {
            self.min_us.min(us)
        };
        self.max_us = self.max_us.max(us);
        self.count += 1;
        self.failures += i64::from(failed);
        self.sum_us = self.sum_us.saturating_add(us);
        self.histogram.record(latency);
    }

    /// Adds another aggregate of the same bucket.
    pub(crate) fn merge(&mut self, other: &Aggregate) {
        if other.count == 0 {
            return;
        }
        self.min_us = if self.count == 0 {
            other.min_us
        } else {
            self.min_us.min(other.min_us)
        };
        self.max_us = self.max_us.max(other.max_us);
        self.count += other.count;
        self.failures += other.failures;
        self.sum_us = self.sum_us.saturating_add(other.sum_us);
        self.histogram.merge(&other.histogram);
    }

    /// The public form.
    pub(crate) fn into_rollup(self, target: String, level: Level, start_ms: i64) -> Rollup {
        Rollup {
            target,
            level,
            start: from_ms(start_ms),
            count: u64::try_from(self.count).unwrap_or(0),
            failures: u64::try_from(self.failures).unwrap_or(0),
            latency_sum: from_us(self.sum_us),
            latency_min: from_us(self.min_us),
            latency_max: from_us(self.max_us),
            histogram: self.histogram,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_are_within_the_stated_error_of_the_exact_ones() {
        let mut h = LatencyHistogram::new();
        let mut exact: Vec<u64> = (0..5000u64).map(|i| 1 + i * i % 7919 * 37).collect();
        for &us in &exact {
            h.record(Duration::from_micros(us));
        }
        exact.sort_unstable();
        for q in [0.0, 0.01, 0.5, 0.9, 0.95, 0.99, 1.0] {
            let rank = ((q * exact.len() as f64).ceil() as usize).clamp(1, exact.len());
            let want = exact[rank - 1] as f64;
            let got = h.quantile(q).unwrap().as_micros() as f64;
            assert!(
                (got - want).abs() <= want * QUANTILE_RELATIVE_ERROR + 1.0,
                "q{q}: got {got}, want {want}"
            );
        }
    }

    #[test]
    fn encoding_round_trips_and_merging_adds_counts() {
        let mut a = LatencyHistogram::new();
        let mut b = LatencyHistogram::new();
        for us in [0, 1, 2, 900, 1_000_000, u64::MAX / 4] {
            a.record(Duration::from_micros(us));
            b.record(Duration::from_micros(us * 3));
        }
        assert_eq!(LatencyHistogram::decode(&a.encode()), Some(a.clone()));
        assert_eq!(LatencyHistogram::decode(&[1, 2, 3]), None);
        a.merge(&b);
        assert_eq!(a.count(), 12);
    }

    #[test]
    fn buckets_start_on_utc_boundaries() {
        assert_eq!(Level::Minute.bucket_start(119_999), 60_000);
        assert_eq!(Level::Hour.bucket_start(-1), -3_600_000);
        assert_eq!(Level::Day.bucket_start(86_400_000), 86_400_000);
    }
}
